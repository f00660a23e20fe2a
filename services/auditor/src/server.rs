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
//! hyper's HTTP/1 connection builder is used directly, as `axum::serve` does inside, because
//! `axum::serve` offers neither a header-read timeout nor a connection limit.

use crate::api::{Api, router};
use axum::Router;
use choreo_domain::config::BackendKind;
use choreo_runtime::ServiceContext;
use choreo_runtime::service::Background;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the server lets clients hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to send a request's headers.
    pub header_read_timeout: Duration,
    /// At shutdown, how long requests in flight get to finish.
    pub drain: Duration,
}

impl Limits {
    pub fn from_config(ops: &choreo_domain::config::Operations) -> Limits {
        Limits {
            max_connections: ops.max_connections.max(1),
            header_read_timeout: Duration::from_secs(ops.header_read_timeout_secs.max(1)),
            drain: Duration::from_secs(ops.request_timeout_secs.max(1)),
        }
    }
}

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
            tracing::error!(listen, %error, "DashboardBindError");
            return;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a.to_string(),
        Err(_) => listen,
    };
    tracing::info!(addr, "dashboard listening");
    if config
        .operations
        .api_token
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        tracing::warn!("operations.api_token is not set: every API route answers 401");
    }
    let addr_file = (config.backend == BackendKind::Local).then(|| addr_file(&config.data_dir));
    if let Some(path) = &addr_file
        && let Err(error) = write_atomically(path, &addr)
    {
        tracing::warn!(path = %path.display(), %error, "DashboardAddrFileError");
    }
    let app = router(Api {
        ports: ctx.ports.clone(),
        config: Arc::new(config.clone()),
    });
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

/// Listens on `listen` (`host:port`) with an accept queue as long as the connection cap (within
/// 64..=1024): past the cap clients wait there, and a short queue keeps a client arriving behind a
/// flood from waiting for the whole flood's headers to time out first.
pub async fn bind(listen: &str, max_connections: usize) -> std::io::Result<TcpListener> {
    let backlog = max_connections.clamp(64, 1024) as u32;
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted server rebinds its port at once.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Serves `app` on `listener` within `limits` until `shutdown` fires; then stops accepting, lets
/// requests in flight finish (for at most `limits.drain`) and returns.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        // A free slot first: at the cap, connections wait in the accept queue, not in this process.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, say: pause rather than spin, and try again.
                    tracing::warn!(%error, "DashboardAcceptError");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let (shutdown, drain) = (shutdown.clone(), limits.drain);
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                // Closed, timed out, or a client error: nothing to report.
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(drain, connection).await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Writes beside and renames, so a reader never sees half an address.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("addr.tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}
