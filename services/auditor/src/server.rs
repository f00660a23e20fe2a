//! Serving the API and dashboard beside the auditor's consumer, until shutdown.
//!
//! The server is exposed to whoever can reach its port, so what a client can hold is bounded:
//! at most `operations.max_connections` connections are served at once (the rest wait in the
//! system's accept queue, costing this process nothing), a connection that has not sent a request's
//! headers within `header_read_timeout_secs` is closed, and a request that takes longer than
//! `request_timeout_secs` is answered 503 ([`crate::api::router`]). Thousands of half-sent requests
//! therefore cost a bounded number of file descriptors and buffers, and the rest of the process (the
//! input scanner, the queues' database) keeps the descriptors it needs.
//!
//! The serving loop is the one every service's ops endpoint uses ([`choreo_runtime::http`]).

use crate::api::{Api, router};
use crate::events::{
    ApiTokenMissing, DashboardAddrFileError, DashboardBindError, DashboardListening,
};
use choreo_domain::config::BackendKind;
use choreo_runtime::ServiceContext;
use choreo_runtime::http::{bind, serve as serve_http};
use choreo_runtime::service::Background;
use choreo_telemetry::events::emit;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use choreo_runtime::http::Limits;

/// The file, in the local backend's data directory, that holds the address the dashboard was bound
/// to (`host:port`), so that `choreo up` and tests find a port chosen by the system.
pub const ADDR_FILE: &str = "auditor.addr";

pub fn addr_file(data_dir: &Path) -> PathBuf {
    data_dir.join(ADDR_FILE)
}

/// The auditor's background work: the HTTP server when `operations.listen` is set.
pub fn background(ctx: ServiceContext, shutdown: CancellationToken) -> Background {
    Box::pin(serve(ctx, shutdown))
}

/// Binds `operations.listen` and serves until `shutdown` fires, letting requests in flight finish.
/// An address that cannot be bound is logged and the pipeline runs on without a dashboard: the
/// dashboard is for people, the pipeline's work must not depend on it.
async fn serve(ctx: ServiceContext, shutdown: CancellationToken) {
    let config = &ctx.settings.config;
    let Some(listen) = config.operations.listen.clone() else {
        return;
    };
    let listener = match bind(&listen, config.operations.max_connections).await {
        Ok(l) => l,
        Err(error) => {
            emit(DashboardBindError {
                listen: &listen,
                error,
            });
            return;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a.to_string(),
        Err(_) => listen,
    };
    emit(DashboardListening { addr: &addr });
    if config
        .operations
        .api_token
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        emit(ApiTokenMissing);
    }
    let addr_file = (config.backend == BackendKind::Local).then(|| addr_file(&config.data_dir));
    if let Some(path) = &addr_file
        && let Err(error) = write_atomically(path, &addr)
    {
        emit(DashboardAddrFileError { path, error });
    }
    let app = router(Api::new(ctx.ports.clone(), Arc::new(config.clone())));
    serve_http(
        listener,
        app,
        Limits::from_config(&config.operations),
        shutdown,
    )
    .await;
    if let Some(path) = addr_file {
        // A stale address would send the next reader to a port nobody serves.
        let _ = std::fs::remove_file(path);
    }
}

/// Writes beside and renames, so a reader never sees half an address.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("addr.tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}
