use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = choreo::cli::Cli::parse();
    let stages = choreo_domain::Stage::SERVICES.map(choreo_domain::Stage::as_str);
    choreo_telemetry::init(
        choreo_telemetry::Process::Pipeline(&stages),
        choreo_telemetry::LogFormat::from_env(),
        "warn,choreo=info",
    );
    choreo_runtime::limits::raise_fd_limit();
    let code = match choreo::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    // The spans of the last moments (a drain after SIGTERM) go out before the process does.
    choreo_telemetry::shutdown();
    std::process::exit(code);
}
