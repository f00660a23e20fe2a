//! What happens to each received message, as `tower` layers around the stage's [`Handler`]:
//!
//! ```text
//! TraceContext   the message's span, a child of the trace its attributes carry
//!  └ Settle      counts it, times it, and acknowledges it or gives it back to the queue
//!     └ KeepInvisible  renews its visibility while the layers inside run
//!        └ Retry        in-process retries of transient errors, with backoff
//!           └ CatchPanic  a panic becomes a permanent error
//!              └ the handler
//! ```
//!
//! Each layer is one decision of the consumer's at-least-once contract (see [`crate::consumer`]),
//! testable and reorderable on its own. There is no timeout layer: a handler's time is bounded by
//! its work (a validator reads files of any size), and a handler that hangs keeps only its own
//! message, which the heartbeat keeps invisible, and one permit of the consumer's concurrency.

use crate::events::{
    HandlerPanicked, HandlerRetry, MessageDeadLettered, MessageHandled, MessageReceived,
    MessageRejected, MessageRetryLater, VisibilityExtendError,
};
use crate::{Handler, HandlerError};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use choreo_domain::event::{ATTR_AWS_TRACE_HEADER, ATTR_TRACEPARENT};
use choreo_ports::{Queue, ReceivedMessage};
use choreo_telemetry::events::emit;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::task::AbortOnDropHandle;
use tower::retry::{Policy, RetryLayer};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};
use tracing::Instrument;

/// A message as it passes through the layers (shared: a retry hands the same one in again).
pub type Request = Arc<ReceivedMessage>;

/// The whole pipeline of one consumer: it always completes, having acknowledged the message or
/// given it back.
pub type Pipeline = BoxCloneSyncService<Request, (), Infallible>;

/// What the layers need to know of their consumer.
#[derive(Clone)]
pub struct Settings {
    pub stage: &'static str,
    pub queue: Arc<dyn Queue>,
    /// Visibility timeout given at receive, renewed while the handler runs.
    pub visibility: Duration,
    /// In-process attempts for transient errors before the message is given back.
    pub retry_attempts: usize,
    /// First backoff delay between attempts (doubling, with jitter).
    pub retry_min_delay: Duration,
    /// The queue's `maxReceiveCount`.
    pub max_receive_count: u32,
    /// Where handled messages' receipts go to be deleted in batches.
    pub acks: UnboundedSender<String>,
}

/// Builds the pipeline around `handler`.
pub fn pipeline(settings: Settings, handler: Arc<dyn Handler>) -> Pipeline {
    let retry = Transient {
        stage: settings.stage,
        builder: ExponentialBuilder::default()
            .with_min_delay(settings.retry_min_delay)
            .with_max_times(settings.retry_attempts)
            .with_jitter(),
        backoff: None,
    };
    let service = ServiceBuilder::new()
        .layer_fn(|inner| TraceContext {
            inner,
            stage: settings.stage,
            queue: settings.queue.clone(),
        })
        .layer_fn(|inner| Settle {
            inner,
            settings: settings.clone(),
        })
        .layer_fn(|inner| KeepInvisible {
            inner,
            stage: settings.stage,
            queue: settings.queue.clone(),
            visibility: settings.visibility,
        })
        .layer(RetryLayer::new(retry))
        .layer_fn(|inner| CatchPanic {
            inner,
            stage: settings.stage,
        })
        .service(HandlerService(handler));
    BoxCloneSyncService::new(service)
}

/// The stage's handler as the innermost service.
#[derive(Clone)]
struct HandlerService(Arc<dyn Handler>);

impl Service<Request> for HandlerService {
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: Request) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move { handler.handle(&message).await })
    }
}

/// A handler that panics fails permanently: it would panic again on the same message, so it is not
/// retried in process, and it must not take the consumer's task (and the message's fate) with it.
#[derive(Clone)]
struct CatchPanic<S> {
    inner: S,
    stage: &'static str,
}

impl<S> Service<Request> for CatchPanic<S>
where
    S: Service<Request, Response = (), Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, message: Request) -> Self::Future {
        let (stage, run) = (self.stage, self.inner.call(message));
        Box::pin(async move {
            match std::panic::AssertUnwindSafe(run).catch_unwind().await {
                Ok(result) => result,
                Err(payload) => {
                    let what = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    emit(HandlerPanicked {
                        stage,
                        panic: &what,
                    });
                    Err(HandlerError::Permanent(format!(
                        "the handler panicked: {what}"
                    )))
                }
            }
        })
    }
}

/// Retries transient errors in process, with exponential backoff and jitter. `tower` clones the
/// policy for each message, and a clone starts with no backoff spent: each message gets its own.
struct Transient {
    stage: &'static str,
    builder: ExponentialBuilder,
    backoff: Option<ExponentialBackoff>,
}

impl Clone for Transient {
    fn clone(&self) -> Self {
        Transient {
            stage: self.stage,
            builder: self.builder,
            backoff: None,
        }
    }
}

impl Policy<Request, (), HandlerError> for Transient {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _: &mut Request,
        result: &mut Result<(), HandlerError>,
    ) -> Option<Self::Future> {
        let Err(error) = result else { return None };
        if !error.is_transient() {
            return None;
        }
        let builder = self.builder;
        let after = self.backoff.get_or_insert_with(|| builder.build()).next()?;
        emit(HandlerRetry {
            stage: self.stage,
            error,
            after,
        });
        Some(tokio::time::sleep(after))
    }

    fn clone_request(&mut self, message: &Request) -> Option<Request> {
        Some(message.clone())
    }
}

/// Renews the message's visibility every half timeout while the layers inside run. The renewals
/// end with the work they cover, however that work ends (dropping the handle aborts them).
#[derive(Clone)]
struct KeepInvisible<S> {
    inner: S,
    stage: &'static str,
    queue: Arc<dyn Queue>,
    visibility: Duration,
}

impl<S> Service<Request> for KeepInvisible<S>
where
    S: Service<Request, Response = (), Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, message: Request) -> Self::Future {
        let (stage, queue, visibility) = (self.stage, self.queue.clone(), self.visibility);
        let receipt = message.receipt.clone();
        let run = self.inner.call(message);
        Box::pin(async move {
            let _heartbeat = AbortOnDropHandle::new(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(visibility / 2).await;
                    if let Err(e) = queue.change_visibility(&receipt, visibility).await {
                        emit(VisibilityExtendError { stage, error: &e });
                    }
                }
            }));
            run.await
        })
    }
}

/// Settles the message by its outcome: handled, it is acknowledged (deleted once its effects are
/// durable); a transient error gives it back after a pause that grows with each delivery; a
/// permanent one gives it back at once, so that its receives run out into the dead-letter queue.
/// Each outcome is an event: the logs and the metrics.
#[derive(Clone)]
struct Settle<S> {
    inner: S,
    settings: Settings,
}

impl<S> Service<Request> for Settle<S>
where
    S: Service<Request, Response = (), Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<(), Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The handler is always ready (the consumer's permits bound the work).
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, message: Request) -> Self::Future {
        let s = self.settings.clone();
        emit(MessageReceived {
            stage: s.stage,
            message_id: &message.id,
            receive_count: message.receive_count,
        });
        let started = std::time::Instant::now();
        let run = self.inner.call(message.clone());
        Box::pin(async move {
            let result = run.await;
            let (stage, message_id, duration) = (s.stage, message.id.as_str(), started.elapsed());
            let pause = match &result {
                Ok(()) => {
                    emit(MessageHandled {
                        stage,
                        message_id,
                        duration,
                    });
                    // A closed channel means the consumer is gone; the message will come back.
                    let _ = s.acks.send(message.receipt.clone());
                    return Ok(());
                }
                Err(HandlerError::Transient(error)) => {
                    let pause = Duration::from_secs(2u64.pow(message.receive_count.min(6)))
                        .min(s.visibility);
                    emit(MessageRetryLater {
                        stage,
                        message_id,
                        duration,
                        error,
                        pause,
                    });
                    pause
                }
                Err(HandlerError::Permanent(error)) => {
                    emit(MessageRejected {
                        stage,
                        message_id,
                        duration,
                        error,
                        receives_before_dead_letter: s
                            .max_receive_count
                            .saturating_sub(message.receive_count),
                    });
                    Duration::ZERO
                }
            };
            if message.receive_count >= s.max_receive_count {
                emit(MessageDeadLettered {
                    stage,
                    message_id,
                    receive_count: message.receive_count,
                });
            }
            let _ = s.queue.change_visibility(&message.receipt, pause).await;
            Ok(())
        })
    }
}

/// Runs the layers inside in the message's span: named and attributed as OpenTelemetry's messaging
/// conventions say for a consumer's processing of one message, a child of the trace the message's
/// attributes carry; `choreo.stage` also picks the service it is exported under.
#[derive(Clone)]
struct TraceContext<S> {
    inner: S,
    stage: &'static str,
    queue: Arc<dyn Queue>,
}

impl<S> Service<Request> for TraceContext<S>
where
    S: Service<Request, Response = (), Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<(), Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, message: Request) -> Self::Future {
        let span = tracing::info_span!(
            "process",
            otel.name = format!("{} process", self.queue.name()),
            otel.kind = "consumer",
            choreo.stage = self.stage,
            messaging.system = self.queue.messaging_system(),
            messaging.operation.type = "process",
            messaging.destination.name = self.queue.name(),
            messaging.message.id = %message.id,
            choreo.receive_count = message.receive_count,
        );
        choreo_telemetry::set_parent_from(
            &span,
            message.attributes.get(ATTR_TRACEPARENT).map(String::as_str),
            message
                .attributes
                .get(ATTR_AWS_TRACE_HEADER)
                .map(String::as_str),
        );
        // The inner layers' synchronous parts (the received event) run in the span too.
        let run = span.in_scope(|| self.inner.call(message));
        Box::pin(run.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Request {
        Arc::new(ReceivedMessage {
            id: "m-1".into(),
            receipt: "r-1".into(),
            body: "{}".into(),
            attributes: Default::default(),
            receive_count: 1,
            sent_at: choreo_domain::clock::now(),
            first_received_at: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn each_message_gets_its_own_transient_retries_and_permanent_errors_none() {
        let policy = Transient {
            stage: "test",
            builder: ExponentialBuilder::default().with_max_times(2),
            backoff: None,
        };
        let (mut first, mut req) = (policy.clone(), message());
        let mut busy = Err(HandlerError::Transient("busy".into()));
        assert!(first.retry(&mut req, &mut busy).is_some());
        assert!(first.retry(&mut req, &mut busy).is_some());
        assert!(first.retry(&mut req, &mut busy).is_none(), "two retries");
        assert!(first.retry(&mut req, &mut Ok(())).is_none());

        // The policy tower clones for the next message has its retries still.
        let mut second = policy.clone();
        assert!(second.retry(&mut req, &mut busy).is_some());
        let mut poison = Err(HandlerError::Permanent("poison".into()));
        assert!(policy.clone().retry(&mut req, &mut poison).is_none());
    }
}
