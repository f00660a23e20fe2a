//! The whole pipeline in one process: all six services on one backend (and the extractor when
//! extracts are configured), as `choreo up` runs them.

use choreo_backend::Backend;
use choreo_domain::FileState;
use choreo_ports::{FileQuery, PortError, Ports, Queue};
use choreo_runtime::{ServiceSpec, Settings};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The six services, in pipeline order.
pub const SERVICES: [ServiceSpec; 6] = [
    choreo_ingestor::SPEC,
    choreo_validator::SPEC,
    choreo_quarantine::SPEC,
    choreo_crawler::SPEC,
    choreo_transformer::SPEC,
    choreo_auditor::SPEC,
];

/// A backend and the configuration its services run with.
#[derive(Clone)]
pub struct Pipeline {
    pub settings: Arc<Settings>,
    /// What the services use.
    pub backend: Backend,
    /// What the command line uses to watch and feed the pipeline: a connection of its own on AWS, so
    /// that the API calls counted on `backend` are the services' alone.
    pub monitor: Backend,
}

/// Files per dataset and state.
pub type Summary = Vec<(String, FileState, u64)>;

impl Pipeline {
    pub async fn open(settings: Settings) -> Result<Pipeline, PortError> {
        let backend = Backend::open(&settings.config).await?;
        let monitor = match &backend {
            Backend::Local(_) => backend.clone(),
            Backend::Aws(_) => Backend::open(&settings.config).await?,
        };
        Ok(Pipeline {
            settings: Arc::new(settings),
            backend,
            monitor,
        })
    }

    /// Starts every service (and the backend's notification source) until `shutdown` fires. Wait on
    /// the returned tracker to let them drain.
    pub fn start(&self, shutdown: &CancellationToken) -> TaskTracker {
        let backend = self.backend.clone();
        self.start_with(shutdown, self.backend.ports(), move |name| {
            backend.queue(name)
        })
    }

    /// As [`Pipeline::start`], with the services given `ports` and `queue` instead of the backend's
    /// own: tests wrap them to inject duplicates and faults.
    pub fn start_with(
        &self,
        shutdown: &CancellationToken,
        ports: Ports,
        queue: impl Fn(&str) -> Arc<dyn Queue>,
    ) -> TaskTracker {
        let tasks = TaskTracker::new();
        for spec in self.specs() {
            let queue = queue((spec.queue)(&self.settings.config));
            tasks.spawn(spec.run(
                self.settings.clone(),
                ports.clone(),
                queue,
                shutdown.clone(),
            ));
        }
        let (backend, s) = (self.backend.clone(), shutdown.clone());
        tasks.spawn(async move { backend.run_sources(s).await });
        tasks.close();
        tasks
    }

    /// The services this configuration runs: the six, and the extractor when extracts are
    /// configured (without them it would only wait on an empty queue).
    pub fn specs(&self) -> Vec<ServiceSpec> {
        let mut specs = SERVICES.to_vec();
        if !self.settings.config.extracts.is_empty() {
            specs.push(choreo_extractor::SPEC);
        }
        specs
    }

    /// Idle: no object waiting to be notified, no message in any work queue, and no file outside a
    /// terminal state. Dead-letter queues may hold messages: they wait for an operator.
    pub async fn is_idle(&self) -> Result<bool, PortError> {
        if self.monitor.pending_sources().await? > 0 {
            return Ok(false);
        }
        for q in self.settings.config.running_queues() {
            if self.monitor.queue(q).depth().await?.total() > 0 {
                return Ok(false);
            }
        }
        Ok(self
            .summary()
            .await?
            .iter()
            .all(|(_, state, _)| state.is_terminal()))
    }

    /// Resolves once the pipeline has been idle for two checks in a row (or `shutdown` fires).
    pub async fn wait_until_idle(&self, shutdown: &CancellationToken) -> Result<(), PortError> {
        let check =
            Duration::from_millis(self.settings.config.runtime.scan_interval_ms.max(100) * 2);
        let mut idle_checks = 0;
        while idle_checks < 2 {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(check) => {}
            }
            idle_checks = if self.is_idle().await? {
                idle_checks + 1
            } else {
                0
            };
        }
        Ok(())
    }

    pub async fn summary(&self) -> Result<Summary, PortError> {
        self.monitor.ports().state.counts().await
    }

    /// Resumes the FAILED files `scope` names: see [`choreo_runtime::retry`].
    pub async fn retry(
        &self,
        scope: &choreo_runtime::retry::RetryScope,
    ) -> Result<choreo_runtime::retry::RetryReport, choreo_runtime::retry::RetryError> {
        let ports = self.monitor.ports();
        let publisher = choreo_runtime::Publisher::new(ports.bus.clone());
        choreo_runtime::retry::retry(
            ports.state.as_ref(),
            &publisher,
            &self.settings.config,
            scope,
        )
        .await
    }

    /// Every file record matching the filters, following pages.
    pub async fn files(
        &self,
        dataset: Option<String>,
        state: Option<FileState>,
    ) -> Result<Vec<choreo_domain::FileRecord>, PortError> {
        let query = FileQuery {
            dataset,
            state,
            limit: 500,
            after: None,
        };
        self.monitor.ports().state.list_all(query).await
    }
}
