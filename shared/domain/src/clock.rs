//! The pipeline's wall clock.
//!
//! Every timestamp the pipeline writes or compares — leases, windows, a message's visibility, a
//! record's history — is read from [`now`], so a test can run a stage on a clock it controls: on
//! tokio's paused clock, a window of ten minutes closes in milliseconds. Outside tests `now` is
//! [`Utc::now`].
//!
//! The override is per thread, like tokio's own paused clock (one runtime, one thread, in a
//! `#[tokio::test(start_paused = true)]`). Code that hands work to another thread reads the time
//! before it does.

use chrono::{DateTime, Utc};
use std::cell::RefCell;

type Source = Box<dyn Fn() -> DateTime<Utc>>;

thread_local! {
    static SOURCE: RefCell<Option<Source>> = const { RefCell::new(None) };
}

/// The current time: [`Utc::now`], unless this thread's clock was replaced by [`set_source`].
pub fn now() -> DateTime<Utc> {
    SOURCE.with(|s| s.borrow().as_ref().map_or_else(Utc::now, |f| f()))
}

/// [`now`] in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    now().timestamp_millis()
}

/// Whether this thread reads a clock other than the system's.
pub fn is_replaced() -> bool {
    SOURCE.with(|s| s.borrow().is_some())
}

/// Replaces this thread's clock with `source` until the guard is dropped. For tests.
pub fn set_source(source: impl Fn() -> DateTime<Utc> + 'static) -> Replaced {
    SOURCE.with(|s| *s.borrow_mut() = Some(Box::new(source)));
    Replaced(std::marker::PhantomData)
}

/// Restores the system clock on this thread when dropped. Not `Send`: it belongs to its thread.
#[must_use = "the clock is restored when this is dropped"]
pub struct Replaced(std::marker::PhantomData<*const ()>);

impl Drop for Replaced {
    fn drop(&mut self) {
        SOURCE.with(|s| *s.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_replaced_clock_is_read_until_its_guard_drops() {
        let fixed = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        assert!(!is_replaced());
        {
            let _guard = set_source(move || fixed);
            assert!(is_replaced());
            assert_eq!(now(), fixed);
            assert_eq!(now_ms(), fixed.timestamp_millis());
            // Other threads keep the system clock.
            let elsewhere = std::thread::spawn(now).join().unwrap();
            assert!(elsewhere > Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
            assert!(elsewhere < fixed);
        }
        assert!(!is_replaced());
        assert!(now() < fixed);
    }
}
