//! Serving HTTP within limits: the operations endpoint ([`crate::ops`]) and the auditor's dashboard.
//!
//! A port reachable by anyone must not let a client hold unbounded resources: at most
//! `max_connections` connections are served at once (the rest wait in the system's accept queue,
//! costing this process nothing), and a connection that has not sent a request's headers within
//! `header_read_timeout` is closed. hyper's HTTP/1 builder is used directly, as `axum::serve` does
//! inside, because `axum::serve` offers neither limit. The auditor's dashboard
//! (`choreo_auditor::server`) is served by the same loop.

use axum::Router;
use choreo_telemetry::events::emit;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
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
    /// The operators' limits (`[operations]`), which every HTTP surface of a process shares.
    pub fn from_config(ops: &choreo_domain::config::Operations) -> Limits {
        Limits {
            max_connections: ops.max_connections.max(1),
            header_read_timeout: Duration::from_secs(ops.header_read_timeout_secs.max(1)),
            drain: Duration::from_secs(ops.request_timeout_secs.max(1)),
        }
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
pub async fn serve(
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
                    emit(crate::events::HttpAcceptError { error });
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
