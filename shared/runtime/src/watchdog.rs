//! Lost-timer recovery: a loop, run by one replica of a stage at a time, that finds work whose poll
//! timer stopped.
//!
//! The crawler poller and the transform launcher drive long work with delayed messages to their own
//! queue, and every poll renews a lease. A timer can still be lost — its queue purged, the message
//! dead-lettered after repeated crashes — and then nothing would poll the work again. Its lease then
//! expires, which is what the stage's watchdog pass looks for: work in a waiting state whose lease
//! lapsed gets its timer sent again (see each stage's `recover`).

use crate::ServiceContext;
use crate::events::{LostTimersRecovered, WatchdogPassError};
use crate::periodic::UnderLease;
use choreo_ports::PortError;
use choreo_telemetry::events::emit;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a watchdog looks, given the lease time: a lost timer is noticed at most about
/// `lease + lease / 3` after the last poll.
pub fn interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_secs(1))
}

/// Runs `pass` every [`interval`] of the configured lease until `shutdown`, on one replica at a time
/// (the lease `watchdog:<name>`, held across a few intervals so a dead replica's is taken over).
/// `pass` returns how many timers it sent again.
pub async fn run<F, Fut>(
    ctx: ServiceContext,
    name: &'static str,
    shutdown: CancellationToken,
    pass: F,
) where
    F: Fn(ServiceContext) -> Fut,
    Fut: Future<Output = Result<usize, PortError>>,
{
    let every = interval(Duration::from_secs(ctx.settings.config.runtime.lease_secs));
    let holder = format!("{name}-{}", uuid::Uuid::new_v4());
    UnderLease::new(format!("watchdog:{name}"), holder, every, Duration::ZERO)
        .run(ctx.ports.state.as_ref(), shutdown, || async {
            match pass(ctx.clone()).await {
                Ok(0) => {}
                Ok(n) => emit(LostTimersRecovered {
                    watchdog: name,
                    timers: n,
                }),
                Err(e) => emit(WatchdogPassError {
                    watchdog: name,
                    error: &e,
                }),
            }
        })
        .await;
}
