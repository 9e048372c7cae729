//! What a stopping service still waits for.
//!
//! On SIGTERM the service finishes its batch, delivers and commits it,
//! leaves its consumer group and flushes its producer. Each of those waits
//! on the broker, some bounded only by librdkafka's own timeouts (a
//! consumer's close waits for its group coordinator without end when none
//! answers: confluentinc/librdkafka#3740). So that a slow stop says why,
//! each such wait is registered here while it lasts ([`waiting`]), and
//! from the stop request on a thread of its own logs the waits still
//! pending ([`report_from_now`]). A thread, not a task: it reports even
//! when every async worker is blocked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a stop that has not finished is reported.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The waits in progress, by registration number (so oldest first).
static WAITS: Mutex<BTreeMap<u64, &'static str>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

fn waits() -> MutexGuard<'static, BTreeMap<u64, &'static str>> {
    // The map stays consistent whatever panicked while holding it.
    WAITS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A wait in progress; it ends when this is dropped.
#[must_use = "the wait ends when this is dropped"]
pub struct Waiting(u64);

impl Drop for Waiting {
    fn drop(&mut self) {
        waits().remove(&self.0);
    }
}

/// Register a wait (`what` the service waits for) until the returned guard
/// is dropped.
pub fn waiting(what: &'static str) -> Waiting {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    waits().insert(id, what);
    Waiting(id)
}

/// The waits in progress, oldest first.
pub fn pending() -> Vec<&'static str> {
    waits().values().copied().collect()
}

/// From now on, every [`REPORT_EVERY`], log what the stop still waits for.
/// The thread ends with the process.
pub fn report_from_now() {
    let started = Instant::now();
    let spawned = std::thread::Builder::new()
        .name("stop-report".into())
        .spawn(move || loop {
            std::thread::sleep(REPORT_EVERY);
            tracing::warn!(
                elapsed_s = started.elapsed().as_secs(),
                waiting_for = ?pending(),
                "still stopping"
            );
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the thread that reports a slow stop");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_pending_until_its_guard_is_dropped() {
        // Other tests of this process may register waits of their own.
        let first = waiting("the first test wait");
        let second = waiting("the second test wait");
        let mine = |p: Vec<&'static str>| -> Vec<&'static str> {
            p.into_iter().filter(|w| w.ends_with("test wait")).collect()
        };
        assert_eq!(
            mine(pending()),
            ["the first test wait", "the second test wait"]
        );
        drop(first);
        assert_eq!(mine(pending()), ["the second test wait"]);
        drop(second);
        assert!(mine(pending()).is_empty());
    }
}
