//! Backend selection, and the body of every service binary.
//!
//! [`Backend::open`] turns the configuration's `backend` into the ports the services use. [`serve`] is
//! what a service's `main` calls: load the configuration, open the backend, run the one consumer until
//! SIGTERM or Ctrl-C, drain, exit; with `[telemetry] listen` set, it also serves `/metrics`,
//! `/health` and `/ready` ([`start_ops`]).

use choreo_aws::AwsBackend;
use choreo_domain::config::BackendKind;
use choreo_domain::{Config, Stage};
use choreo_local::LocalBackend;
use choreo_ports::{PortError, Ports, Queue, QueueDepth};
use choreo_runtime::{ServiceSpec, Settings, ops};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The adapters behind the ports.
#[derive(Clone)]
pub enum Backend {
    /// SQLite and directories, in this process.
    Local(LocalBackend),
    /// S3, SQS, SNS, DynamoDB and Glue.
    Aws(AwsBackend),
}

impl Backend {
    pub async fn open(config: &Config) -> Result<Backend, PortError> {
        match config.backend {
            BackendKind::Local => Ok(Backend::Local(LocalBackend::open(config)?)),
            BackendKind::Aws => Ok(Backend::Aws(AwsBackend::connect(config).await)),
        }
    }

    pub fn ports(&self) -> Ports {
        match self {
            Backend::Local(b) => b.ports(),
            Backend::Aws(b) => b.ports(),
        }
    }

    pub fn queue(&self, name: &str) -> Arc<dyn Queue> {
        match self {
            Backend::Local(b) => b.queue(name),
            Backend::Aws(b) => b.queue(name),
        }
    }

    /// Creates the resources the pipeline needs (idempotent); the local backend creates its own on
    /// open. Returns what was done, a line per kind of resource.
    pub async fn bootstrap(&self) -> Result<Vec<String>, PortError> {
        match self {
            Backend::Local(_) => Ok(vec![
                "local backend: the database, queues and bucket directories exist".to_string(),
            ]),
            Backend::Aws(b) => Ok(b.bootstrap().await?.steps),
        }
    }

    /// Runs what the backend needs besides the services: on the local backend, the scanner that
    /// turns files written into the input bucket's directory into notifications (S3 does that itself).
    pub async fn run_sources(&self, shutdown: CancellationToken) {
        match self {
            Backend::Local(b) => b.watch_input_bucket(shutdown).await,
            Backend::Aws(_) => shutdown.cancelled().await,
        }
    }

    /// Objects written into the input bucket that have not been notified yet (zero on AWS, where S3
    /// notifies by itself).
    pub async fn pending_sources(&self) -> Result<usize, PortError> {
        match self {
            // A scan of its own: it notifies what is stable and counts what is not yet.
            Backend::Local(b) => b.scan_once().await.map(|r| r.sent + r.pending),
            Backend::Aws(_) => Ok(0),
        }
    }

    /// Prices the AWS API calls made from now on by what they carry, for [`Backend::api_bill`]
    /// (nothing to do on local).
    pub fn price_api_calls(&self) {
        if let Backend::Aws(b) = self {
            b.calls().price_bodies();
        }
    }

    /// AWS API calls made through this backend, with what they are billed (none on local).
    pub fn api_bill(&self) -> Option<choreo_aws::cost::Bill> {
        match self {
            Backend::Local(_) => None,
            Backend::Aws(b) => Some(b.calls().bill()),
        }
    }

    /// Depth of every work queue and dead-letter queue, by name.
    pub async fn depths(&self, config: &Config) -> Result<Vec<(String, QueueDepth)>, PortError> {
        let mut out = Vec::new();
        for q in config.all_queues() {
            for name in [q.to_string(), choreo_domain::config::Queues::dlq_of(q)] {
                let depth = self.queue(&name).depth().await?;
                out.push((name, depth));
            }
        }
        Ok(out)
    }
}

/// The whole `main` of a service binary. The configuration file comes from `CHOREO_CONFIG` (optional;
/// `CHOREO_*` variables override it). Run as `<binary> job-worker`, it is instead the child in which
/// the local job runner runs a built-in transform (`choreo_local::worker`).
pub async fn serve(spec: ServiceSpec) -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some(choreo_local::worker::WORKER_COMMAND) {
        std::process::exit(choreo_local::worker::serve_worker().await);
    }
    choreo_telemetry::init(
        choreo_telemetry::Process::Stage(spec.stage.as_str()),
        choreo_telemetry::LogFormat::from_env(),
        "info",
    );
    choreo_runtime::limits::raise_fd_limit();
    let file = std::env::var_os("CHOREO_CONFIG").map(PathBuf::from);
    let settings = Arc::new(Settings::load(file.as_deref())?);
    let backend = Backend::open(&settings.config).await?;
    let shutdown = choreo_runtime::shutdown::on_signals();
    let queue_name = (spec.queue)(&settings.config);
    let ops_stop = CancellationToken::new();
    start_ops(&settings.config, &backend, &[queue_name], &ops_stop).await;
    let queue = backend.queue(queue_name);
    if spec.stage == Stage::Ingestor {
        let (b, s) = (backend.clone(), shutdown.clone());
        tokio::spawn(async move { b.run_sources(s).await });
    }
    spec.run(settings, backend.ports(), queue, shutdown).await;
    ops_stop.cancel();
    choreo_telemetry::shutdown();
    Ok(())
}

/// Serves `/metrics`, `/health` and `/ready` at `[telemetry] listen` when it is set
/// ([`choreo_runtime::ops`]), ready when the `queues` named and the state store answer, until
/// `stop` fires: callers fire it once the drain after SIGTERM is over, so that `/health` and
/// `/metrics` answer while the last messages finish. Installs the metrics recorder first, so call
/// it before the services start. Returns the bound address; `None` when not configured or not
/// bound (logged).
pub async fn start_ops(
    config: &Config,
    backend: &Backend,
    queues: &[&str],
    stop: &CancellationToken,
) -> Option<std::net::SocketAddr> {
    let listen = config.telemetry.listen.as_deref()?;
    let readiness = ops::Readiness {
        queues: queues.iter().map(|name| backend.queue(name)).collect(),
        state: backend.ports().state,
    };
    let limits = choreo_runtime::http::Limits::from_config(&config.operations);
    ops::start(listen, readiness, limits, stop.clone()).await
}
