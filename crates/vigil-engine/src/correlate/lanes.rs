//! Correlation split by rule and partition, for `placement =
//! "repartition"` (docs/architecture.md#repartitioned-correlation).
//!
//! The two stages of the repartitioned placement use them for two
//! different things:
//!
//! - **route** (first stage, over the source partitions an instance owns):
//!   one [`Correlator`] per rule (a *router*) finds the rows of a batch the
//!   rule can use (its own pre-filter) and each row's correlation key, to
//!   forward the event to the repartition partition of that key;
//! - **ingest** (second stage, over the repartition partitions an instance
//!   owns): one [`Correlator`] per rule and repartition partition (a
//!   *lane*, compiled when the partition first brings the rule an event)
//!   takes the events forwarded for that rule in that partition. Another
//!   rule may key the same event differently, so its partition for that
//!   rule may be another's. Each lane has the partition's event time (its
//!   marks) and its own emission watermark, so a partition can move to
//!   another instance with what was emitted for it (see
//!   [`RuleLanes::assign`]).
//!
//! The second stage also folds the alerts of per-event rules with
//! `-- suppress`, and keeps the state of first-seen rules ([`FoldLane`],
//! one per rule and repartition partition), which the first stage forwards
//! by suppression key or combination: so one instance folds every alert of
//! a key, and one decides whether a combination is new.
//!
//! Invariants: a lane's state only ever holds events forwarded for its
//! rule through its partition; an event taken once from a partition is not
//! taken again from it (see [`RuleLanes::admit`]).

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;

use super::fold_lane::{FoldLane, SeenRow};
use super::key::KeyEncoder;
use super::*;
use crate::rules::definitions::Definitions;
use crate::rules::engine::FirstSeenChanges;
use crate::rules::first_seen::{FirstSeenStats, FirstSeenStorage, StateChange};
use crate::rules::RuleMeta;

/// One event a rule can use, and its correlation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedRow {
    pub rule: Arc<str>,
    /// Row of the decoded batch (its `events[row]` names the message).
    pub row: u32,
    /// The row's key bytes ([`KeyEncoder`]): equal for events the rule
    /// correlates.
    pub key: Vec<u8>,
}

struct Router {
    rule: Arc<str>,
    correlator: Correlator,
    encoders: BTreeMap<SourceKind, KeyEncoder>,
}

/// The correlation rules: a router each, and their lanes per partition.
pub struct RuleLanes {
    rules: Vec<Rule>,
    routers: Vec<Router>,
    settings: CorrelationSettings,
    definitions: Arc<Definitions>,
    time_budget: Option<Duration>,
    /// (repartition partition `"topic/partition"`, rule index) → its lane.
    lanes: BTreeMap<(String, usize), Correlator>,
    /// The per-event rules that fold their alerts (`-- suppress`) or keep
    /// first-seen state; the lane index of `folding[i]` is
    /// `rules.len() + i`.
    folding: Vec<RuleMeta>,
    /// (repartition partition, lane index) → its fold lane.
    fold_lanes: BTreeMap<(String, usize), FoldLane>,
    /// Where the fold lanes' first-seen states keep their combinations.
    first_seen_storage: FirstSeenStorage,
    /// Per repartition partition: the marks read so far (upstream
    /// partition → highest event time), given to a lane when it is made.
    marks: HashMap<String, BTreeMap<String, i64>>,
    /// Per repartition partition: how far each rule had emitted for it
    /// when it was assigned here, given to a lane when it is made.
    restored: HashMap<String, BTreeMap<String, i64>>,
    /// (repartition partition, rule index, upstream partition) → the
    /// highest upstream offset taken: within one repartition partition, a
    /// rule's events of one upstream partition arrive in offset order, so
    /// a lower or equal offset is a re-delivery.
    taken: HashMap<(String, usize, String), i64>,
}

impl RuleLanes {
    /// Compile each correlation rule on its own (its router).
    pub async fn compile(
        rules: Vec<Rule>,
        settings: &CorrelationSettings,
        definitions: &Arc<Definitions>,
    ) -> Result<RuleLanes, Vec<RuleError>> {
        let mut routers = Vec::with_capacity(rules.len());
        let mut errors = Vec::new();
        for rule in &rules {
            match compile_one(rule, settings, definitions).await {
                Ok(correlator) => match encoders(&correlator) {
                    Ok(encoders) => routers.push(Router {
                        rule: rule.meta.id.as_str().into(),
                        correlator,
                        encoders,
                    }),
                    Err(e) => errors.push(RuleError {
                        path: rule.path.clone(),
                        line: None,
                        message: format!("encoding its correlation key: {e}"),
                    }),
                },
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RuleLanes {
            rules,
            routers,
            settings: settings.clone(),
            definitions: definitions.clone(),
            time_budget: None,
            lanes: BTreeMap::new(),
            folding: Vec::new(),
            fold_lanes: BTreeMap::new(),
            first_seen_storage: FirstSeenStorage::default(),
            marks: HashMap::new(),
            restored: HashMap::new(),
            taken: HashMap::new(),
        })
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether some rule reads `source`.
    pub fn reads(&self, source: SourceKind) -> bool {
        self.routers.iter().any(|r| r.correlator.reads(source))
    }

    /// The index of a rule id.
    pub fn lane_of(&self, rule: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.meta.id == rule)
    }

    /// Fold the alerts of these per-event rules (`-- suppress`), and keep
    /// their first-seen state (`-- first_seen`), in the second stage: the
    /// first stage forwards them (see [`FoldLane`]).
    pub fn fold_alerts_of(&mut self, rules: Vec<RuleMeta>) {
        self.folding = rules
            .into_iter()
            .filter(|m| m.suppress.is_some() || m.first_seen.is_some())
            .collect();
    }

    /// Where the fold lanes made from now on keep their first-seen
    /// combinations (set before any input).
    pub fn set_first_seen_storage(&mut self, storage: FirstSeenStorage) {
        self.first_seen_storage = storage;
    }

    /// Whether some lane keeps first-seen state (restored per partition
    /// from the state topic, see [`RuleLanes::restore_first_seen`]).
    pub fn keeps_first_seen(&self) -> bool {
        self.folding.iter().any(|m| m.first_seen.is_some())
    }

    /// Whether the alerts of some rule of `source` are forwarded to be
    /// folded.
    pub fn folds_from(&self, source: SourceKind) -> bool {
        self.folding.iter().any(|m| m.source == source)
    }

    /// The lane index of a per-event rule whose alerts are folded here.
    pub fn fold_lane_of(&self, rule: &str) -> Option<usize> {
        let i = self.folding.iter().position(|m| m.id == rule)?;
        Some(self.rules.len() + i)
    }

    /// Second stage: an alert forwarded to fold lane `lane` through the
    /// repartition record at `record`, its event first consumed at
    /// `upstream` at `event_time_ns`; `seen` for a first-seen rule's row.
    pub(crate) fn hold(
        &mut self,
        lane: usize,
        (record, upstream): (&Origin, &Origin),
        alert: Alert,
        seen: Option<SeenRow>,
        event_time_ns: i64,
        now_ns: i64,
    ) {
        let Origin::Kafka {
            topic,
            partition,
            offset,
        } = record
        else {
            return;
        };
        let fold = self.fold_lane((topic, *partition), lane, now_ns);
        fold.hold(
            alert,
            seen,
            (event_time_ns, &partition_of(upstream)),
            *offset,
            now_ns,
        );
    }

    /// The fold lane of rule `lane` in repartition partition
    /// `(topic, partition)`, made when missing: with the partition's marks
    /// so far and what was released for it.
    fn fold_lane(
        &mut self,
        (topic, partition): (&str, i32),
        lane: usize,
        now_ns: i64,
    ) -> &mut FoldLane {
        let name = format!("{topic}/{partition}");
        let key = (name.clone(), lane);
        if !self.fold_lanes.contains_key(&key) {
            let meta = self.folding[lane - self.rules.len()].clone();
            let mut fold = FoldLane::new(
                meta,
                (topic.to_string(), partition),
                ms(self.settings.allowed_lateness_ms),
                ms(self.settings.idle_timeout_ms),
            );
            fold.store_first_seen(&self.first_seen_storage, &name);
            if let Some(w) = self.restored.get(&name).and_then(|e| e.get(fold.rule_id())) {
                fold.restore_released(*w);
            }
            for (upstream, t) in self.marks.get(&name).into_iter().flatten() {
                fold.observe_mark(upstream, *t, now_ns);
            }
            self.fold_lanes.insert(key.clone(), fold);
        }
        self.fold_lanes.get_mut(&key).expect("inserted above")
    }

    /// Second stage: how far each rule emitted for repartition partition
    /// `(topic, partition)`, as changelogged to the state topic, merged
    /// with what its committed offset's metadata said (the later wins),
    /// before its lanes take events. A broker may drop the metadata; the
    /// state topic keeps it.
    pub fn restore_emitted(
        &mut self,
        (topic, partition): (&str, i32),
        emitted: &BTreeMap<String, i64>,
    ) {
        let name = format!("{topic}/{partition}");
        let restored = self.restored.entry(name.clone()).or_default();
        keep_later(restored, emitted.clone());
        for ((p, _), fold) in self.fold_lanes.iter_mut() {
            if *p == name {
                if let Some(w) = emitted.get(fold.rule_id()) {
                    fold.restore_released(*w);
                }
            }
        }
    }

    /// Second stage: the changelogged first-seen state of rule `rule` in
    /// repartition partition `(topic, partition)`, restored into its lane
    /// before the lane takes an alert. `false` when no lane here keeps
    /// first-seen state for that rule (a rule removed since).
    pub fn restore_first_seen(
        &mut self,
        (topic, partition): (&str, i32),
        rule: &str,
        changes: Vec<StateChange>,
    ) -> bool {
        let Some(lane) = self.fold_lane_of(rule) else {
            return false;
        };
        if self.folding[lane - self.rules.len()].first_seen.is_none() {
            return false;
        }
        self.fold_lane((topic, partition), lane, crate::detect::now_ns())
            .restore_first_seen(changes);
        true
    }

    /// The lanes' first-seen changes since the last call, by rule and
    /// repartition partition.
    pub fn take_first_seen_changes(&mut self) -> Vec<FirstSeenChanges> {
        let mut out = Vec::new();
        for ((partition, _), fold) in &mut self.fold_lanes {
            let changes = fold.take_first_seen_changes();
            if changes.is_empty() {
                continue;
            }
            let number = partition.rsplit_once('/').and_then(|(_, p)| p.parse().ok());
            out.push(FirstSeenChanges {
                rule: Arc::from(fold.rule_id()),
                partition: number,
                changes,
            });
        }
        out
    }

    /// The lanes' first-seen state, summed; `None` when no rule keeps any.
    pub fn first_seen_stats(&self) -> Option<FirstSeenStats> {
        if !self.keeps_first_seen() {
            return None;
        }
        Some(
            self.fold_lanes
                .values()
                .filter_map(FoldLane::first_seen_stats)
                .fold(FirstSeenStats::default(), |a, b| a + b),
        )
    }

    /// First stage: the rows of `decoded` each rule can use, with their
    /// keys. A rule that fails is reported (rule id, error) and the others
    /// go on.
    pub async fn route(
        &mut self,
        decoded: &DecodedBatch,
    ) -> (Vec<RoutedRow>, Vec<(String, String)>) {
        let mut routed = Vec::new();
        let mut failures = Vec::new();
        for router in &mut self.routers {
            let Some(encoder) = router.encoders.get(&decoded.source) else {
                continue;
            };
            match lane_rows(&mut router.correlator, encoder, decoded).await {
                Ok(rows) => routed.extend(rows.into_iter().map(|(row, key)| RoutedRow {
                    rule: router.rule.clone(),
                    row,
                    key,
                })),
                Err(e) => failures.push((router.rule.to_string(), e.to_string())),
            }
        }
        (routed, failures)
    }

    /// Second stage: the repartition partitions (`"topic/partition"`) now
    /// assigned here, each with how far each rule had emitted for it (from
    /// its committed offset's metadata). The state of every other
    /// partition is dropped: its events are another instance's now. A
    /// partition newly assigned is read again from its committed offset,
    /// and its lanes start from what was emitted for it, so no window is
    /// emitted twice from a partial re-read. Returns the partitions new
    /// here (whose first-seen state is to be restored).
    pub fn assign(&mut self, assigned: BTreeMap<String, BTreeMap<String, i64>>) -> Vec<String> {
        self.lanes.retain(|(p, _), _| assigned.contains_key(p));
        self.fold_lanes.retain(|(p, _), _| assigned.contains_key(p));
        self.taken.retain(|(p, _, _), _| assigned.contains_key(p));
        self.marks.retain(|p, _| assigned.contains_key(p));
        self.restored.retain(|p, _| assigned.contains_key(p));
        let mut new = Vec::new();
        for (partition, emitted) in assigned {
            let kept = self.lanes.keys().any(|(p, _)| *p == partition)
                || self.fold_lanes.keys().any(|(p, _)| *p == partition);
            if kept {
                continue;
            }
            match self.restored.get_mut(&partition) {
                // Assigned before and still without lanes: keep what the
                // state topic restored, whatever the metadata says now.
                Some(restored) => keep_later(restored, emitted),
                None => {
                    self.restored.insert(partition.clone(), emitted);
                    new.push(partition);
                }
            }
        }
        new
    }

    /// Second stage: whether to take an event forwarded for rule `lane` in
    /// the repartition record at `record`, first consumed at `upstream`;
    /// `false` for a re-delivery of an event already taken.
    pub fn admit(&mut self, lane: usize, record: &Origin, upstream: &Origin) -> bool {
        let (Origin::Kafka { .. }, Origin::Kafka { offset, .. }) = (record, upstream) else {
            return true;
        };
        let key = (partition_of(record), lane, partition_of(upstream));
        match self.taken.get_mut(&key) {
            Some(highest) if *highest >= *offset => false,
            Some(highest) => {
                *highest = *offset;
                true
            }
            None => {
                self.taken.insert(key, *offset);
                true
            }
        }
    }

    /// Second stage: events forwarded for rule `lane` through repartition
    /// partition `partition` into that lane's state (see
    /// [`Correlator::ingest_forwarded`]).
    pub async fn ingest(
        &mut self,
        lane: usize,
        partition: &str,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        upstream: &[Origin],
        now_ns: i64,
    ) -> Result<Vec<LateEvent>, CorrelationError> {
        let correlator = self.lane(partition, lane, now_ns).await?;
        correlator
            .ingest_forwarded(decoded, messages, upstream, now_ns)
            .await
    }

    /// The lane of (`partition`, rule `lane`), made when missing: with the
    /// partition's marks so far and what was emitted for it.
    async fn lane(
        &mut self,
        partition: &str,
        lane: usize,
        now_ns: i64,
    ) -> Result<&mut Correlator, CorrelationError> {
        let key = (partition.to_string(), lane);
        if !self.lanes.contains_key(&key) {
            let mut correlator = compile_one(&self.rules[lane], &self.settings, &self.definitions)
                .await
                .map_err(|e| {
                    CorrelationError::Compile(
                        e.into_iter()
                            .map(|e| e.message)
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                })?;
            if let Some(limit) = self.time_budget {
                correlator.set_time_budget(limit);
            }
            // Open suppression periods hold the partition's offset, so a
            // lane made again after a move rebuilds them (with the
            // emission watermarks restored, `RuleLanes::restore_emitted`).
            correlator.hold_for_suppression(true);
            if let Some(emitted) = self.restored.get(partition) {
                correlator.restore_emitted_rebuilding(emitted);
            }
            for (upstream, t) in self.marks.get(partition).into_iter().flatten() {
                correlator.observe_mark(upstream, *t, now_ns);
            }
            self.lanes.insert(key.clone(), correlator);
        }
        Ok(self.lanes.get_mut(&key).expect("inserted above"))
    }

    /// A watermark mark read from repartition partition `partition`: for
    /// its lanes (and those made later).
    pub fn observe_mark(
        &mut self,
        partition: &str,
        upstream: &str,
        event_time_ns: i64,
        now_ns: i64,
    ) {
        let marks = self.marks.entry(partition.to_string()).or_default();
        let t = marks.entry(upstream.to_string()).or_insert(event_time_ns);
        *t = (*t).max(event_time_ns);
        for ((p, _), lane) in self.lanes.iter_mut() {
            if p == partition {
                lane.observe_mark(upstream, event_time_ns, now_ns);
            }
        }
        for ((p, _), fold) in self.fold_lanes.iter_mut() {
            if p == partition {
                fold.observe_mark(upstream, event_time_ns, now_ns);
            }
        }
    }

    /// Second stage: repartition partition `partition`, new here, reads
    /// rows of every partition of `upstream`: each holds its lanes'
    /// watermark back until it delivers a mark or goes idle. The first
    /// stage announces them too, but a partition re-read from a committed
    /// offset past those announcements would otherwise let the partitions
    /// not read yet make its rows late.
    pub fn announce_upstream(&mut self, partition: &str, upstream: &[String], now_ns: i64) {
        for u in upstream {
            self.observe_mark(partition, u, i64::MIN, now_ns);
        }
    }

    /// Advance every lane (see [`Correlator::advance`]).
    pub async fn advance(
        &mut self,
        now_ns: i64,
        detected_at_ns: i64,
    ) -> (Vec<Alert>, Vec<(String, String)>) {
        let mut out = (Vec::new(), Vec::new());
        for lane in self.lanes.values_mut() {
            let (alerts, failures) = lane.advance(now_ns, detected_at_ns).await;
            out.0.extend(alerts);
            out.1.extend(failures);
        }
        for fold in self.fold_lanes.values_mut() {
            out.0.extend(fold.advance(now_ns));
        }
        out
    }

    /// Close every window of every lane (end of a replayed input).
    pub async fn finish(&mut self, detected_at_ns: i64) -> (Vec<Alert>, Vec<(String, String)>) {
        let mut out = (Vec::new(), Vec::new());
        for lane in self.lanes.values_mut() {
            let (alerts, failures) = lane.finish(detected_at_ns).await;
            out.0.extend(alerts);
            out.1.extend(failures);
        }
        for fold in self.fold_lanes.values_mut() {
            out.0.extend(fold.finish());
        }
        out
    }

    /// The lowest watermark of the lanes (`None` before any).
    pub fn watermark(&self) -> Option<i64> {
        let folds = self.fold_lanes.values().filter_map(FoldLane::watermark);
        self.lanes
            .values()
            .filter_map(Correlator::watermark)
            .chain(folds)
            .min()
    }

    /// The lanes' counters, summed (the watermark: the lowest).
    pub fn stats(&self) -> CorrelationStats {
        let mut total = CorrelationStats::default();
        for lane in self.lanes.values() {
            let s = lane.stats();
            total.retained_events += s.retained_events;
            total.state_rows += s.state_rows;
            total.event_identities += s.event_identities;
            total.late_events += s.late_events;
            total.evicted_early += s.evicted_early;
            total.evicted_state_rows += s.evicted_state_rows;
            total.suppressed_alerts += s.suppressed_alerts;
            total.rows_evaluated += s.rows_evaluated;
        }
        // Alerts waiting to be folded are events held too.
        let held: usize = self.fold_lanes.values().map(FoldLane::held_alerts).sum();
        total.retained_events += held;
        total.watermark = self.watermark();
        total
    }

    pub fn take_evaluations(&mut self) -> Vec<(String, RuleRun)> {
        self.lanes
            .values_mut()
            .flat_map(Correlator::take_evaluations)
            .collect()
    }

    /// Lowest offset per partition any lane still needs (see
    /// [`Correlator::retained_offsets`]).
    pub fn retained_offsets(&self) -> BTreeMap<(String, i32), i64> {
        let mut out = Offsets::new();
        for lane in self.lanes.values() {
            merge_offsets(&mut out, &lane.retained_offsets());
        }
        for fold in self.fold_lanes.values() {
            fold.retained_offsets(&mut out);
        }
        out
    }

    /// Per repartition partition, how far each rule emitted for it (what
    /// was restored, for rules with no lane there yet): stored with the
    /// partition's committed offset.
    pub fn emitted_by_partition(&self) -> BTreeMap<String, BTreeMap<String, i64>> {
        let mut out: BTreeMap<String, BTreeMap<String, i64>> = self
            .restored
            .iter()
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        for ((partition, _), lane) in &self.lanes {
            out.entry(partition.clone())
                .or_default()
                .extend(lane.emitted_watermarks());
        }
        for ((partition, _), fold) in &self.fold_lanes {
            if let Some(w) = fold.released() {
                out.entry(partition.clone())
                    .or_default()
                    .insert(fold.rule_id().to_string(), w);
            }
        }
        out
    }

    /// Emission watermarks by rule (the lowest over partitions), for the
    /// checkpoint.
    pub fn emitted_watermarks(&self) -> BTreeMap<String, i64> {
        let mut out: BTreeMap<String, i64> = BTreeMap::new();
        let folds = self
            .fold_lanes
            .values()
            .filter_map(|f| f.released().map(|w| (f.rule_id().to_string(), w)));
        for (rule, w) in self
            .lanes
            .values()
            .flat_map(Correlator::emitted_watermarks)
            .chain(folds)
        {
            let e = out.entry(rule).or_insert(w);
            *e = (*e).min(w);
        }
        out
    }

    pub fn set_time_budget(&mut self, limit: Duration) {
        self.time_budget = Some(limit);
        for router in &mut self.routers {
            router.correlator.set_time_budget(limit);
        }
        for lane in self.lanes.values_mut() {
            lane.set_time_budget(limit);
        }
    }

    /// Forget all state (between independent inputs).
    pub fn reset(&mut self) {
        self.lanes.clear();
        self.fold_lanes.clear();
        self.marks.clear();
        self.restored.clear();
        self.taken.clear();
    }
}

/// Merge emission watermarks into `into`, keeping the later of each rule's.
fn keep_later(into: &mut BTreeMap<String, i64>, from: BTreeMap<String, i64>) {
    for (rule, w) in from {
        let e = into.entry(rule).or_insert(w);
        *e = (*e).max(w);
    }
}

/// A correlator of `rule` alone.
async fn compile_one(
    rule: &Rule,
    settings: &CorrelationSettings,
    definitions: &Definitions,
) -> Result<Correlator, Vec<RuleError>> {
    let shared = Arc::new(SharedConditions::default());
    Correlator::compile(vec![rule.clone()], settings.clone(), &shared, definitions).await
}

/// The key encoder of every table a lane's rule reads.
fn encoders(
    correlator: &Correlator,
) -> datafusion::error::Result<BTreeMap<SourceKind, KeyEncoder>> {
    let mut out = BTreeMap::new();
    for (_, key) in correlator.keys() {
        for source in correlator.retained.keys() {
            if let Some(encoder) = key.encoder(*source)? {
                out.insert(*source, encoder);
            }
        }
    }
    Ok(out)
}

/// The rows of `decoded` a one-rule correlator's pre-filter keeps, with
/// their keys.
async fn lane_rows(
    correlator: &mut Correlator,
    encoder: &KeyEncoder,
    decoded: &DecodedBatch,
) -> Result<Vec<(u32, Vec<u8>)>, CorrelationError> {
    if !correlator.retained.contains_key(&decoded.source) || decoded.batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let rows = correlator.pre_filtered_rows(decoded)?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let picked = take_record_batch(&decoded.batch, &UInt32Array::from(rows.clone()))
        .context("picking the rows to route")?;
    let keys = encoder
        .encode(&picked)
        .context("encoding the correlation keys")?;
    Ok(rows.into_iter().zip(keys).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition assigned again before any lane was made for it keeps
    /// the watermarks the state topic restored, though the offsets'
    /// metadata (dropped by some brokers) says nothing.
    #[tokio::test]
    async fn restored_watermarks_outlive_a_reassignment_with_empty_metadata() {
        let settings = CorrelationSettings::default();
        let mut lanes = RuleLanes::compile(Vec::new(), &settings, &Arc::default())
            .await
            .unwrap();
        let assigned = |p: &str| BTreeMap::from([(p.to_string(), BTreeMap::new())]);
        assert_eq!(lanes.assign(assigned("r/3")), vec!["r/3".to_string()]);
        lanes.restore_emitted(("r", 3), &BTreeMap::from([("k8s.x".to_string(), 42)]));
        assert!(lanes.assign(assigned("r/3")).is_empty(), "not new again");
        assert_eq!(
            lanes.emitted_by_partition()["r/3"],
            BTreeMap::from([("k8s.x".to_string(), 42)])
        );
        assert_eq!(
            lanes.assign(BTreeMap::new()),
            Vec::<String>::new(),
            "revoked"
        );
        assert!(lanes.emitted_by_partition().is_empty());
    }
}
