//! What a first stage of the repartitioned placement forwards of a
//! first-seen rule's rows (docs/architecture.md#repartitioned-correlation).
//!
//! The group's state of a combination is in one second-stage lane, which
//! judges the rows forwarded to it in event-time order
//! (`correlate::fold_lane`). Forwarding every row would send most of the
//! audit log again for a rule such as `k8s.serviceaccount_new_client`, so
//! each instance forwards only the rows that can change the lane's
//! verdict on a later row:
//!
//! - the first row of a combination it reads;
//! - a row earlier than every row of the combination it forwarded (read
//!   out of order, e.g. a backlog read partition by partition): it may be
//!   the group's earliest, and so the one to alert on;
//! - a row at least a [`step`] after the last one it forwarded, so the
//!   lane's last-seen time lags the truth by less than a step: a
//!   combination then becomes new again up to a step early (an alert
//!   repeated), never late (one missed), the bound a restore has too.
//!
//! Invariant: entries are forgotten once the last forwarded row is past
//! the history (the next row is forwarded as a first one), and past the
//! bound (the memory bound of the rule's first-seen state, see
//! `FirstSeenStorage::memory_bound`) the oldest tenth is; forgetting only
//! forwards more.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::first_seen::{
    duration_seconds, seconds, step, Combination, PassThrough, DEFAULT_MAX_ENTRIES,
};
use crate::rules::FirstSeenMeta;

/// Times (seconds) of the rows of one combination forwarded.
#[derive(Debug, Clone, Copy)]
struct Forwarded {
    earliest: u32,
    last: u32,
}

/// One first-seen rule's forwarding filter in a first stage.
#[derive(Debug)]
pub struct ForwardFilter {
    history: u32,
    forwarded: HashMap<Combination, Forwarded, BuildHasherDefault<PassThrough>>,
    latest: u32,
    next_sweep: u32,
    max_entries: usize,
}

impl ForwardFilter {
    pub fn new(meta: &FirstSeenMeta) -> ForwardFilter {
        ForwardFilter {
            history: duration_seconds(meta.history),
            forwarded: HashMap::default(),
            latest: 0,
            next_sweep: 0,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// Whether to forward a row of `combination` for an event at
    /// `event_time_ns` (see the module doc); remembered if so.
    pub fn forward(&mut self, combination: Combination, event_time_ns: i64) -> bool {
        let at = seconds(event_time_ns);
        self.latest = self.latest.max(at);
        let step = step(self.history);
        let forward = match self.forwarded.get_mut(&combination) {
            None => {
                self.forwarded.insert(
                    combination,
                    Forwarded {
                        earliest: at,
                        last: at,
                    },
                );
                true
            }
            Some(f) if at < f.earliest => {
                f.earliest = at;
                true
            }
            Some(f) if at >= f.last.saturating_add(step) => {
                f.last = at;
                true
            }
            Some(_) => false,
        };
        self.sweep_if_due();
        forward
    }

    fn sweep_if_due(&mut self) {
        let over_bound = self.forwarded.len() > self.max_entries;
        if self.latest < self.next_sweep && !over_bound {
            return;
        }
        self.next_sweep = self.latest.saturating_add(step(self.history));
        let horizon = self.latest.saturating_sub(self.history);
        self.forwarded.retain(|_, f| f.last >= horizon);
        if self.forwarded.len() > self.max_entries {
            let mut times: Vec<u32> = self.forwarded.values().map(|f| f.last).collect();
            let tenth = times.len() / 10;
            let cut = *times.select_nth_unstable(tenth).1;
            self.forwarded.retain(|_, f| f.last > cut);
        }
    }

    /// Forget everything (between independent inputs).
    pub fn clear(&mut self) {
        self.forwarded.clear();
        self.latest = 0;
        self.next_sweep = 0;
    }

    /// At most `max` entries (at least 10): forgetting only forwards more.
    pub(crate) fn with_max_entries(mut self, max: usize) -> ForwardFilter {
        self.max_entries = max.max(10);
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S: i64 = 1_000_000_000;

    fn filter() -> ForwardFilter {
        // A day of history: a step is 5,400 s.
        ForwardFilter::new(&FirstSeenMeta {
            columns: vec!["user".into()],
            history: Duration::from_secs(86_400),
            learning: Duration::ZERO,
        })
    }

    #[test]
    fn the_first_an_earlier_and_a_step_later_row_are_forwarded() {
        let mut f = filter();
        let c = [1, 2];
        let forwarded: Vec<bool> = [150, 160, 120, 130, 150 + 5_399, 150 + 5_400, 150 + 5_401]
            .into_iter()
            .map(|t| f.forward(c, t * S))
            .collect();
        assert_eq!(
            forwarded,
            vec![true, false, true, false, false, true, false],
            "first; within the step; earlier than any forwarded; not earlier; \
             just short of a step; a step past the last forwarded; just after"
        );
        assert!(f.forward([3, 4], 200 * S), "another combination is its own");
    }

    #[test]
    fn past_the_history_or_the_bound_a_combination_is_forwarded_again() {
        let mut f = filter();
        assert!(f.forward([1, 0], 0));
        assert!(f.forward([2, 0], 90_000 * S), "a day later, a sweep");
        assert!(f.forward([1, 0], 90_001 * S), "forgotten past the history");

        let mut f = filter().with_max_entries(10);
        for i in 0..20u64 {
            f.forward([i, 0], i as i64 * S);
        }
        assert!(f.forwarded.len() <= 10, "{}", f.forwarded.len());
        assert!(f.forward([0, 0], 30 * S), "the oldest was forgotten");
    }
}
