//! `[correlation]`: event time and state settings (docs/configuration.md).

use std::time::Duration;

use serde::Deserialize;

/// Settings of event time and state (`[correlation]` in the configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationSettings {
    /// How far out of order events may arrive and still count.
    #[serde(default = "default_lateness_ms")]
    pub allowed_lateness_ms: u64,
    /// A partition silent this long (wall clock) stops holding the
    /// watermark back.
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
    /// Upper bound on retained events over all sources.
    #[serde(default = "default_max_retained")]
    pub max_retained_events: usize,
    /// Upper bound on the state rows (one per group and window, roughly)
    /// of incremental rules, over all rules.
    #[serde(default = "default_max_state_rows")]
    pub max_state_rows: usize,
    /// Most events an alert names (the earliest by event time, then id).
    #[serde(default = "default_max_alert_events")]
    pub max_alert_events: usize,
    /// Evaluate aggregation rules incrementally (partial aggregation per
    /// batch); `false` re-scans retained events for every rule.
    #[serde(default = "default_incremental")]
    pub incremental: bool,
    /// Re-scan rules whose `window_end` is one scan's `event_time`, plus
    /// or minus a constant (the trigger of a sequence), read from that scan
    /// only the events due in the range being emitted (`delta.rs`);
    /// `false` re-scans every retained event.
    #[serde(default = "default_delta_rescan")]
    pub delta_rescan: bool,
    /// Which instances of a consumer group run the correlation rules.
    #[serde(default)]
    pub placement: Placement,
    /// With `placement = "leader"`: the leader is replaced when it has not
    /// renewed its lease for this long (see `leader`).
    #[serde(default = "default_lease_timeout_ms")]
    pub lease_timeout_ms: u64,
}

/// Where correlation runs when several instances share a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Every instance correlates the events of the partitions it owns.
    /// Complete with one instance, or when every event a rule correlates
    /// by one key is in one partition (the keying contract: see
    /// docs/operations.md#scaling).
    #[default]
    PerInstance,
    /// One instance of the group, elected through a one-partition lease
    /// topic (`topics.correlation_lease`), runs every correlation rule over
    /// every partition of the source topics; all instances run the
    /// per-event rules on the partitions they own. When the leader dies,
    /// another instance takes the lease and rebuilds the state from the
    /// leader's checkpoint.
    Leader,
    /// Two stages through the broker (docs/architecture.md#repartitioned-correlation):
    /// every instance runs the per-event rules on the source partitions it
    /// owns and forwards each event a correlation rule can use to the
    /// partition of `topics.repartition` its correlation key hashes to;
    /// a second consumer group (`<group_id>-correlate`) over that topic
    /// gives each instance the keys of its partitions, and it correlates
    /// only those. No instance reads every event.
    Repartition,
}

fn default_lateness_ms() -> u64 {
    5_000
}
fn default_idle_ms() -> u64 {
    30_000
}
fn default_max_retained() -> usize {
    2_000_000
}
fn default_max_state_rows() -> usize {
    2_000_000
}
fn default_max_alert_events() -> usize {
    100
}
fn default_incremental() -> bool {
    true
}
fn default_delta_rescan() -> bool {
    true
}
fn default_lease_timeout_ms() -> u64 {
    10_000
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        CorrelationSettings {
            allowed_lateness_ms: default_lateness_ms(),
            idle_timeout_ms: default_idle_ms(),
            max_retained_events: default_max_retained(),
            max_state_rows: default_max_state_rows(),
            max_alert_events: default_max_alert_events(),
            incremental: default_incremental(),
            delta_rescan: default_delta_rescan(),
            placement: Placement::default(),
            lease_timeout_ms: default_lease_timeout_ms(),
        }
    }
}

/// Milliseconds as a [`Duration`].
pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
