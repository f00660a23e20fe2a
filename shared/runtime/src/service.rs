//! What a service is given to build its handler from.

use crate::{Consumer, ConsumerSettings, Handler, Publisher, Settings};
use choreo_domain::{Config, Stage};
use choreo_ports::{Ports, Queue};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A service's work besides its consumer (the auditor's HTTP server and sweeps): it runs until the
/// token fires.
pub type Background = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One service's wiring: its stage, its queue, how to build its handler, and what else it runs. Each
/// service crate exports one as `SPEC`; `choreo up` runs all six, a service binary runs its own.
#[derive(Clone, Copy)]
pub struct ServiceSpec {
    pub stage: Stage,
    pub queue: fn(&Config) -> &str,
    pub build: fn(&ServiceContext) -> Arc<dyn Handler>,
    pub background: Option<fn(ServiceContext, CancellationToken) -> Background>,
}

impl ServiceSpec {
    /// Runs the service — its consumer and its background work — until `shutdown` fires, then
    /// drains the consumer.
    pub async fn run(
        self,
        settings: Arc<Settings>,
        ports: Ports,
        queue: Arc<dyn Queue>,
        shutdown: CancellationToken,
    ) {
        let ctx = ServiceContext::new(settings.clone(), ports, queue.clone());
        let background = self
            .background
            .map(|start| tokio::spawn(start(ctx.clone(), shutdown.clone())));
        let consumer = Consumer::new(
            self.stage.as_str(),
            queue,
            (self.build)(&ctx),
            ConsumerSettings::from_config(&settings.config),
        );
        consumer.run(shutdown).await;
        if let Some(task) = background
            && let Err(e) = task.await
        {
            choreo_telemetry::events::emit(crate::events::BackgroundTaskPanicked {
                stage: self.stage,
                error: &e,
            });
        }
    }
}

/// The configuration, the backend's ports, and the service's own queue (for its timers).
#[derive(Clone)]
pub struct ServiceContext {
    pub settings: Arc<Settings>,
    pub ports: Ports,
    pub queue: Arc<dyn Queue>,
    pub publisher: Publisher,
}

impl ServiceContext {
    pub fn new(settings: Arc<Settings>, ports: Ports, queue: Arc<dyn Queue>) -> Self {
        let publisher = Publisher::new(ports.bus.clone());
        ServiceContext {
            settings,
            ports,
            queue,
            publisher,
        }
    }
}
