//! Liveness and readiness, as served on `/healthz` and `/readyz`.
//!
//! *Live*: the process is up and its HTTP server answers.
//!
//! *Ready* (all of):
//! 1. the rules are loaded and compiled;
//! 2. the consumer has joined its group: it received an assignment from a
//!    rebalance (possibly empty: an instance beyond the partition count is
//!    a healthy standby) and no revocation since;
//! 3. the consume loop polled the source within the last
//!    `http.ready_max_poll_gap_ms` (a loop stuck in delivery retries, i.e.
//!    back-pressure from a broker that does not acknowledge, stops
//!    polling and turns unready);
//! 4. no stop was requested (draining on SIGTERM).
//!
//! Every state is an atomic: the pipeline, the consumer's rebalance
//! callback and the HTTP handlers touch it without locks.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shared readiness state.
#[derive(Debug)]
pub struct Health {
    rules_loaded: AtomicBool,
    assigned: AtomicBool,
    stopping: AtomicBool,
    /// Wall-clock ms of the last poll; 0 = never.
    last_poll_ms: AtomicI64,
    max_poll_gap: Duration,
}

/// Why the service is not ready (the body of a 503 on `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady(pub Vec<String>);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Health {
    pub fn new(max_poll_gap: Duration) -> Health {
        Health {
            rules_loaded: AtomicBool::new(false),
            assigned: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            last_poll_ms: AtomicI64::new(0),
            max_poll_gap,
        }
    }

    pub fn set_rules_loaded(&self, loaded: bool) {
        self.rules_loaded.store(loaded, Ordering::Relaxed);
    }

    /// A rebalance assigned partitions (`true`) or revoked them (`false`).
    pub fn set_assigned(&self, assigned: bool) {
        self.assigned.store(assigned, Ordering::Relaxed);
    }

    /// The consume loop is about to poll the source.
    pub fn polled(&self) {
        self.last_poll_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Ready, or every reason it is not.
    pub fn readiness(&self) -> Result<(), NotReady> {
        self.readiness_at(now_ms())
    }

    fn readiness_at(&self, now_ms: i64) -> Result<(), NotReady> {
        let mut reasons = Vec::new();
        if !self.rules_loaded.load(Ordering::Relaxed) {
            reasons.push("rules not loaded".to_string());
        }
        if !self.assigned.load(Ordering::Relaxed) {
            reasons.push("no partition assignment from the consumer group yet".to_string());
        }
        match self.last_poll_ms.load(Ordering::Relaxed) {
            0 => reasons.push("the source was never polled".to_string()),
            last => {
                let gap = now_ms.saturating_sub(last);
                if gap > self.max_poll_gap.as_millis() as i64 {
                    reasons.push(format!(
                        "no poll of the source for {gap} ms (limit {} ms): output delivery is probably blocked",
                        self.max_poll_gap.as_millis()
                    ));
                }
            }
        }
        if self.stopping.load(Ordering::Relaxed) {
            reasons.push("stopping".to_string());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(NotReady(reasons))
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new(Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_rules_assignment_and_a_recent_poll() {
        let h = Health::new(Duration::from_secs(10));
        let err = h.readiness_at(1_000_000).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err:?}");
        h.set_rules_loaded(true);
        h.set_assigned(true);
        h.last_poll_ms.store(1_000_000, Ordering::Relaxed);
        assert_eq!(h.readiness_at(1_005_000), Ok(()));
        let err = h.readiness_at(1_010_001).unwrap_err();
        assert!(
            err.0[0].contains("no poll of the source for 10001 ms"),
            "{err:?}"
        );
        h.set_assigned(false);
        assert!(h.readiness_at(1_005_000).unwrap_err().0[0].contains("assignment"));
        h.set_assigned(true);
        h.set_stopping();
        assert_eq!(
            h.readiness_at(1_005_000).unwrap_err().0,
            vec!["stopping".to_string()]
        );
    }
}
