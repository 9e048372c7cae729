//! Event-time watermarks.
//!
//! Each input partition (a Kafka topic-partition, or a replayed file)
//! reports the event times it delivers. A partition's watermark is its
//! highest event time minus the allowed out-of-orderness; the overall
//! watermark is the minimum over partitions that are not idle, and never
//! moves backwards. A partition that delivered nothing for `idle_timeout`
//! (wall-clock time) stops holding the watermark back, so a quiet partition
//! does not stall detections; it counts again as soon as it delivers.
//!
//! When every partition is idle, the stream as a whole went quiet: then
//! event time is taken to keep pace with wall-clock time since each
//! partition's last event (its highest event time plus the wall-clock time
//! elapsed since it delivered), so the last windows of a quiet stream still
//! close about `idle_timeout` after its last event instead of waiting for
//! the next one. This assumes event time tracks wall-clock time, as it
//! does for live audit and runtime events; a replayed backlog of old events
//! is unaffected while it flows.
//!
//! An event is late when its event time is below the overall watermark at
//! arrival: windows it belongs to may already have been emitted.

use std::collections::BTreeMap;
use std::time::Duration;

/// Tracks the watermark over a set of input partitions.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    lateness_ns: i64,
    idle_timeout_ns: i64,
    /// partition -> (highest event time, wall-clock time of its last event)
    partitions: BTreeMap<String, (i64, i64)>,
    current: Option<i64>,
}

impl WatermarkTracker {
    pub fn new(allowed_lateness: Duration, idle_timeout: Duration) -> Self {
        WatermarkTracker {
            lateness_ns: allowed_lateness.as_nanos() as i64,
            idle_timeout_ns: idle_timeout.as_nanos() as i64,
            partitions: BTreeMap::new(),
            current: None,
        }
    }

    /// The current watermark (`None` before any event).
    pub fn watermark(&self) -> Option<i64> {
        self.current
    }

    /// Whether an event with this time would be late now.
    pub fn is_late(&self, event_time_ns: i64) -> bool {
        self.current.is_some_and(|w| event_time_ns < w)
    }

    /// Record an event of `partition` at wall-clock time `now_ns`.
    pub fn observe(&mut self, partition: &str, event_time_ns: i64, now_ns: i64) {
        match self.partitions.get_mut(partition) {
            Some((max, seen)) => {
                *max = (*max).max(event_time_ns);
                *seen = now_ns;
            }
            None => {
                self.partitions
                    .insert(partition.to_string(), (event_time_ns, now_ns));
            }
        }
    }

    /// A partition that will deliver: until it does (or goes idle), it
    /// holds the watermark where it is.
    pub fn register(&mut self, partition: &str, now_ns: i64) {
        self.partitions
            .entry(partition.to_string())
            .or_insert((i64::MIN, now_ns));
    }

    /// Recompute the watermark at wall-clock time `now_ns`; returns it.
    pub fn advance(&mut self, now_ns: i64) -> Option<i64> {
        let active = self
            .partitions
            .values()
            .filter(|(_, seen)| now_ns.saturating_sub(*seen) < self.idle_timeout_ns)
            .map(|(max, _)| *max);
        // With every partition idle, event time advances with the wall
        // clock from the freshest partition (one that never delivered does
        // not count).
        let candidate = match active.min() {
            // A registered partition that has not delivered yet.
            Some(i64::MIN) => None,
            Some(m) => Some(m),
            None => self
                .partitions
                .values()
                .filter(|(max, _)| *max != i64::MIN)
                .map(|(max, seen)| max.saturating_add(now_ns.saturating_sub(*seen).max(0)))
                .max(),
        }
        .map(|m| m.saturating_sub(self.lateness_ns));
        self.current = match (self.current, candidate) {
            (Some(c), Some(n)) => Some(c.max(n)),
            (c, n) => c.or(n),
        };
        self.current
    }

    /// Move the watermark to the end of time (end of a replayed input):
    /// every open window closes.
    pub fn finish(&mut self) -> i64 {
        self.current = Some(i64::MAX);
        i64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn minimum_over_partitions_minus_lateness_and_monotonic() {
        let mut w = WatermarkTracker::new(Duration::from_secs(5), Duration::from_secs(60));
        assert_eq!(w.advance(0), None);
        w.observe("p0", 100 * S, 0);
        w.observe("p1", 50 * S, 0);
        assert_eq!(w.advance(0), Some(45 * S));
        w.observe("p1", 200 * S, 0);
        assert_eq!(w.advance(0), Some(95 * S));
        // An old event does not move it back.
        w.observe("p0", 10 * S, 0);
        assert_eq!(w.advance(0), Some(95 * S));
        assert!(w.is_late(94 * S));
        assert!(!w.is_late(95 * S));
    }

    #[test]
    fn idle_partitions_stop_holding_it_back() {
        let mut w = WatermarkTracker::new(Duration::ZERO, Duration::from_secs(10));
        w.observe("quiet", 10 * S, 0);
        w.observe("busy", 100 * S, 0);
        assert_eq!(w.advance(S), Some(10 * S));
        w.observe("busy", 300 * S, 20 * S);
        // 20 s later the quiet partition is idle.
        assert_eq!(w.advance(20 * S), Some(300 * S));
        assert_eq!(
            w.advance(21 * S),
            Some(300 * S),
            "one partition is still active: no wall-clock advance"
        );
        // It delivers again: it counts again, but the watermark never regresses.
        w.observe("quiet", 20 * S, 21 * S);
        assert_eq!(w.advance(21 * S), Some(300 * S));
        assert!(w.is_late(20 * S));
    }

    #[test]
    fn a_quiet_stream_advances_with_the_wall_clock() {
        let mut w = WatermarkTracker::new(Duration::from_secs(2), Duration::from_secs(10));
        // Event time 1000 s arrives at wall-clock 5 s; another partition at 990 s.
        w.observe("a", 1000 * S, 5 * S);
        w.observe("b", 990 * S, 4 * S);
        assert_eq!(w.advance(6 * S), Some(988 * S));
        // b is idle (10 s silent), a is not: a alone holds it, no wall-clock advance.
        assert_eq!(w.advance(14 * S), Some(998 * S));
        // At wall-clock 16 s both are idle: a kept pace for 11 s (to 1011 s),
        // b for 12 s (to 1002 s); the fresher one counts, minus lateness.
        assert_eq!(w.advance(16 * S), Some(1009 * S));
        assert_eq!(w.advance(20 * S), Some(1013 * S));
        // New input counts again; the watermark does not move back.
        w.observe("a", 1001 * S, 21 * S);
        assert_eq!(w.advance(21 * S), Some(1013 * S));
    }

    #[test]
    fn a_registered_partition_holds_it_back_until_it_delivers_or_idles() {
        let mut w = WatermarkTracker::new(Duration::ZERO, Duration::from_secs(10));
        w.register("p1", 0);
        w.observe("p0", 100 * S, 0);
        assert_eq!(w.advance(S), None, "p1 has not delivered");
        w.observe("p1", 40 * S, 2 * S);
        assert_eq!(w.advance(2 * S), Some(40 * S));
        // A registered partition that never delivers stops counting when idle.
        let mut w = WatermarkTracker::new(Duration::ZERO, Duration::from_secs(10));
        w.register("silent", 0);
        w.observe("p0", 100 * S, 5 * S);
        assert_eq!(w.advance(6 * S), None);
        assert_eq!(w.advance(11 * S), Some(100 * S));
    }

    #[test]
    fn finish_closes_everything() {
        let mut w = WatermarkTracker::new(Duration::ZERO, Duration::from_secs(1));
        w.observe("a", 5, 0);
        assert_eq!(w.finish(), i64::MAX);
        assert!(w.is_late(i64::MAX - 1));
    }
}
