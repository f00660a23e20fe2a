//! The operations endpoint of a service process, at `[telemetry] listen`: what Prometheus, ECS and
//! docker-compose ask of it.
//!
//! | route | answers |
//! |---|---|
//! | `GET /metrics` | every metric of the process, Prometheus text (`choreo_telemetry::metrics`) |
//! | `GET /health` | 200 while the process runs: the liveness check |
//! | `GET /ready` | 200 when each of its services' queues answers a depth query and the state store a read; 503 with the first failure otherwise |
//!
//! A service binary serves one for its service; `choreo up` one for all six, ready when all are.
//! No token guards it: it shows counts and queue names, never a file's content or key, and it sits
//! on a port that is not the dashboard's. It is served within the operators' HTTP limits
//! ([`crate::http`]). An address that cannot be bound is logged and the process runs on without it:
//! the pipeline's work must not depend on being watched.

use crate::http::{self, Limits};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use choreo_ports::{Queue, StateStore};
use choreo_telemetry::events::emit;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long `/ready` waits for its answers: within the health-check timeouts of ECS (5 s by
/// default) and compose, so a hung dependency reads as "not ready" rather than as no answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// A batch id no batch has: reading it costs the store one key lookup.
const PROBE_BATCH: &str = "choreo-ready-probe";

/// What `/ready` asks: the queues the process consumes, and the state store.
#[derive(Clone)]
pub struct Readiness {
    pub queues: Vec<Arc<dyn Queue>>,
    pub state: Arc<dyn StateStore>,
}

impl Readiness {
    /// `Ok` when every queue answers a depth query and the store a read, else what failed first.
    pub async fn check(&self) -> Result<(), String> {
        let probe = async {
            for queue in &self.queues {
                queue
                    .depth()
                    .await
                    .map_err(|e| format!("queue {}: {e}", queue.name()))?;
            }
            self.state
                .get_batch(PROBE_BATCH)
                .await
                .map_err(|e| format!("state store: {e}"))?;
            Ok(())
        };
        match tokio::time::timeout(READY_TIMEOUT, probe).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {} s",
                READY_TIMEOUT.as_secs_f32()
            )),
        }
    }
}

/// The three routes, without a socket (tests call it with `oneshot`).
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(Arc::new(readiness))
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            choreo_telemetry::metrics::CONTENT_TYPE,
        )],
        choreo_telemetry::metrics::render(),
    )
        .into_response()
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    match readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => {
            // Short: a health-check log keeps the first bytes; the cause is in the process's log.
            let mut reason: String = reason.chars().take(300).collect();
            reason.push('\n');
            (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
        }
    }
}

/// Installs the metrics recorder, binds `listen` and serves the endpoint until `shutdown` fires
/// (on a task of its own). Returns the bound address (the port of `host:0` is the system's
/// choice), or `None` when the address cannot be bound, which is logged.
pub async fn start(
    listen: &str,
    readiness: Readiness,
    limits: Limits,
    shutdown: CancellationToken,
) -> Option<SocketAddr> {
    choreo_telemetry::metrics::install();
    let listener = match http::bind(listen, limits.max_connections).await {
        Ok(l) => l,
        Err(error) => {
            emit(crate::events::OpsBindError { listen, error });
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    emit(crate::events::OpsListening { addr });
    tokio::spawn(http::serve(listener, router(readiness), limits, shutdown));
    Some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use axum::body::Body;
    use axum::http::Request;
    use choreo_ports::{OutgoingMessage, PeekedMessage, PortError, QueueDepth, ReceivedMessage};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A queue whose every call fails, as one does when its service is unreachable.
    struct Unreachable;

    #[async_trait]
    impl Queue for Unreachable {
        fn name(&self) -> &str {
            "gone"
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> Result<Vec<ReceivedMessage>, PortError> {
            Err(refused())
        }
        async fn delete(&self, _: &str) -> Result<(), PortError> {
            Err(refused())
        }
        async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), PortError> {
            Err(refused())
        }
        async fn send(&self, _: OutgoingMessage, _: Duration) -> Result<(), PortError> {
            Err(refused())
        }
        async fn depth(&self) -> Result<QueueDepth, PortError> {
            Err(refused())
        }
        async fn peek(&self, _: usize) -> Result<Vec<PeekedMessage>, PortError> {
            Err(refused())
        }
        async fn purge(&self) -> Result<u64, PortError> {
            Err(refused())
        }
    }

    fn refused() -> PortError {
        PortError::transient("depth", "gone", "connection refused")
    }

    async fn get_path(app: Router, path: &str) -> (StatusCode, String, Option<String>) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            content_type,
        )
    }

    fn local() -> (tempfile::TempDir, choreo_local::LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let config = choreo_domain::Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let backend = choreo_local::LocalBackend::open(&config).unwrap();
        (dir, backend)
    }

    #[tokio::test]
    async fn ready_when_queue_and_store_answer_and_503_with_the_reason_when_not() {
        let (_dir, backend) = local();
        let state = backend.ports().state;
        let ready = router(Readiness {
            queues: vec![backend.queue("choreo-validate")],
            state: state.clone(),
        });
        assert_eq!(get_path(ready, "/ready").await.0, StatusCode::OK);

        let down = router(Readiness {
            queues: vec![backend.queue("choreo-validate"), Arc::new(Unreachable)],
            state,
        });
        let (status, body, _) = get_path(down.clone(), "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("queue gone: "), "{body}");
        assert!(body.contains("connection refused"), "{body}");
        // Not ready is still alive: ECS must not replace a task for a dependency's outage.
        assert_eq!(get_path(down, "/health").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        choreo_telemetry::metrics::install();
        metrics::counter!("choreo_ops_test_total", "stage" => "validator").increment(1);
        let (_dir, backend) = local();
        let app = router(Readiness {
            queues: vec![],
            state: backend.ports().state,
        });
        let (status, body, content_type) = get_path(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            content_type.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(
            body.contains("choreo_ops_test_total{stage=\"validator\"} 1"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn an_address_in_use_is_logged_and_returns_none() {
        let (_dir, backend) = local();
        let readiness = Readiness {
            queues: vec![],
            state: backend.ports().state,
        };
        let limits = Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(1),
            drain: Duration::from_secs(1),
        };
        let shutdown = CancellationToken::new();
        let addr = start("127.0.0.1:0", readiness.clone(), limits, shutdown.clone())
            .await
            .expect("a free port binds");
        let again = start(&addr.to_string(), readiness, limits, shutdown.clone()).await;
        assert_eq!(again, None);
        shutdown.cancel();
    }
}
