//! Work done every so often by one replica of a service at a time: the stages' watchdogs, the
//! auditor's sweep and its alert delivery. Each round first takes a lease; a replica that does not
//! get it skips the round, and one that died holding it is replaced once the lease lapses.

use crate::events::PeriodicLeaseError;
use choreo_ports::{LeaseOutcome, StateStore};
use choreo_telemetry::events::emit;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A round every `every`, under the lease `lease`.
#[derive(Debug, Clone)]
pub struct UnderLease {
    /// The lease's name: one holder of it across replicas.
    pub lease: String,
    /// This replica's name for itself.
    pub holder: String,
    /// Time between rounds (the first comes one `every` after the start).
    pub every: Duration,
    /// How long a round holds the lease: a few rounds, so that the replica doing the work keeps it
    /// (each round renews it) and another takes over soon after it dies.
    pub hold: Duration,
}

impl UnderLease {
    /// Rounds every `every` under `lease`, which a round holds for three rounds plus `slack` (time
    /// a long round may take beyond its interval).
    pub fn new(lease: impl Into<String>, holder: String, every: Duration, slack: Duration) -> Self {
        UnderLease {
            lease: lease.into(),
            holder,
            every,
            hold: every * 3 + slack,
        }
    }

    /// Runs `round` every `every` until `shutdown`, in the rounds this replica holds the lease.
    /// A round's own errors are its business: it reports them and the next round tries again.
    pub async fn run<F, Fut>(
        &self,
        state: &dyn StateStore,
        shutdown: CancellationToken,
        mut round: F,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            match state
                .acquire_lease(&self.lease, &self.holder, self.hold)
                .await
            {
                Ok(LeaseOutcome::Acquired { .. }) => round().await,
                Ok(LeaseOutcome::Held { .. }) => {}
                Err(e) => emit(PeriodicLeaseError {
                    lease: &self.lease,
                    error: &e,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_domain::Config;
    use choreo_local::LocalBackend;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn one_replica_at_a_time_runs_the_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let backend = LocalBackend::open(&config).unwrap();
        let state = backend.ports().state;
        let schedule = |holder: &str| UnderLease {
            lease: "test:rounds".into(),
            holder: holder.into(),
            every: Duration::from_secs(1),
            hold: Duration::from_secs(3600),
        };
        let (a, b) = (schedule("a"), schedule("b"));
        let rounds = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let shutdown = CancellationToken::new();
        let run = |schedule: &'static str, i: usize| {
            let schedule = if schedule == "a" { &a } else { &b };
            let (rounds, state, shutdown) = (&rounds, &state, shutdown.clone());
            async move {
                let stop = &shutdown.clone();
                schedule
                    .run(state.as_ref(), shutdown, || async move {
                        rounds[i].fetch_add(1, Ordering::SeqCst);
                        if rounds
                            .iter()
                            .map(|r| r.load(Ordering::SeqCst))
                            .sum::<usize>()
                            == 10
                        {
                            stop.cancel();
                        }
                    })
                    .await;
            }
        };
        // Paused time: the ten seconds pass in milliseconds.
        let start = tokio::time::Instant::now();
        tokio::join!(run("a", 0), run("b", 1));
        let (a, b) = (
            rounds[0].load(Ordering::SeqCst),
            rounds[1].load(Ordering::SeqCst),
        );
        assert!(a == 0 || b == 0, "both replicas ran rounds: {a} and {b}");
        assert!(
            start.elapsed() >= Duration::from_secs(10),
            "a round a second"
        );
    }
}
