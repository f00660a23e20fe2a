use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = choreo::cli::Cli::parse();
    choreo_telemetry::init(
        "choreo",
        choreo_telemetry::LogFormat::from_env(),
        "warn,choreo=info",
    );
    choreo_runtime::limits::raise_fd_limit();
    match choreo::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
