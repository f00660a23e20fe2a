//! What a service is given to build its handler from.

use crate::{Consumer, ConsumerSettings, Handler, Publisher, Settings};
use choreo_domain::{Config, Stage};
use choreo_ports::{Ports, Queue};
use std::sync::Arc;

/// One service's wiring: its stage, its queue, and how to build its handler. Each service crate
/// exports one as `SPEC`; `choreo up` runs all six, a service binary runs its own.
#[derive(Clone, Copy)]
pub struct ServiceSpec {
    pub stage: Stage,
    pub queue: fn(&Config) -> &str,
    pub build: fn(&ServiceContext) -> Arc<dyn Handler>,
}

impl ServiceSpec {
    /// The service's consumer, reading `queue` (which must be the one `self.queue` names).
    pub fn consumer(
        &self,
        settings: &Arc<Settings>,
        ports: Ports,
        queue: Arc<dyn Queue>,
    ) -> Consumer {
        let ctx = ServiceContext::new(settings.clone(), ports, queue.clone());
        Consumer::new(
            self.stage.as_str(),
            queue,
            (self.build)(&ctx),
            ConsumerSettings::from_config(&settings.config),
        )
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
