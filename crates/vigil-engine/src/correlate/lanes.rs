//! Correlation split by rule, for `placement = "repartition"`
//! (docs/architecture.md#repartitioned-correlation).
//!
//! Each correlation rule is a lane: a [`Correlator`] of that rule alone.
//! The two stages of the repartitioned placement use the lanes for two
//! different things:
//!
//! - **route** (first stage, over the source partitions an instance owns):
//!   the rows of a batch each rule can use (its own pre-filter) and each
//!   row's correlation key, to forward the event to the repartition
//!   partition of that key;
//! - **ingest** (second stage, over the repartition partitions an instance
//!   owns): the events forwarded for a rule go into that rule's lane only.
//!   Another rule may key the same event differently, so it may sit in
//!   another partition for that rule: a shared state would give the rule a
//!   partial view of keys another instance owns.
//!
//! Invariants: a lane's state only ever holds events forwarded for its
//! rule; an event taken once from a repartition partition is not taken
//! again from it (see [`RuleLanes::admit`]).

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;

use super::key::KeyEncoder;
use super::*;
use crate::rules::definitions::Definitions;

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

struct Lane {
    rule: Arc<str>,
    correlator: Correlator,
    encoders: BTreeMap<SourceKind, KeyEncoder>,
}

/// The correlation rules, one [`Correlator`] each.
pub struct RuleLanes {
    lanes: Vec<Lane>,
    /// (repartition partition, lane, upstream partition) → the highest
    /// upstream offset taken: within one repartition partition, a lane's
    /// events of one upstream partition arrive in offset order, so a lower
    /// or equal offset is a re-delivery.
    taken: HashMap<(String, usize, String), i64>,
}

impl RuleLanes {
    /// Compile each correlation rule on its own.
    pub async fn compile(
        rules: Vec<Rule>,
        settings: &CorrelationSettings,
        definitions: &Definitions,
    ) -> Result<RuleLanes, Vec<RuleError>> {
        let shared = Arc::new(SharedConditions::default());
        let mut lanes = Vec::with_capacity(rules.len());
        let mut errors = Vec::new();
        for rule in rules {
            let id: Arc<str> = rule.meta.id.as_str().into();
            let path = rule.path.clone();
            match Correlator::compile(vec![rule], settings.clone(), &shared, definitions).await {
                Ok(correlator) => match encoders(&correlator) {
                    Ok(encoders) => lanes.push(Lane {
                        rule: id,
                        correlator,
                        encoders,
                    }),
                    Err(e) => errors.push(RuleError {
                        path,
                        line: None,
                        message: format!("encoding its correlation key: {e}"),
                    }),
                },
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(RuleLanes {
                lanes,
                taken: HashMap::new(),
            })
        } else {
            Err(errors)
        }
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.lanes.iter().flat_map(|l| l.correlator.rules())
    }

    pub fn rule_count(&self) -> usize {
        self.lanes.len()
    }

    /// Whether some lane's rule reads `source`.
    pub fn reads(&self, source: SourceKind) -> bool {
        self.lanes.iter().any(|l| l.correlator.reads(source))
    }

    /// The lane of a rule id.
    pub fn lane_of(&self, rule: &str) -> Option<usize> {
        self.lanes.iter().position(|l| &*l.rule == rule)
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
        for lane in &mut self.lanes {
            let Some(encoder) = lane.encoders.get(&decoded.source) else {
                continue;
            };
            match lane_rows(&mut lane.correlator, encoder, decoded).await {
                Ok(rows) => routed.extend(rows.into_iter().map(|(row, key)| RoutedRow {
                    rule: lane.rule.clone(),
                    row,
                    key,
                })),
                Err(e) => failures.push((lane.rule.to_string(), e.to_string())),
            }
        }
        (routed, failures)
    }

    /// Second stage: whether to take an event forwarded for `lane` in the
    /// repartition record at `record`, first consumed at `upstream`; `false`
    /// for a re-delivery of an event already taken.
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

    /// Second stage: events forwarded for `lane` into its state (see
    /// [`Correlator::ingest_forwarded`]).
    pub async fn ingest(
        &mut self,
        lane: usize,
        decoded: &DecodedBatch,
        messages: &[RawMessage],
        upstream: &[Origin],
        now_ns: i64,
    ) -> Result<Vec<LateEvent>, CorrelationError> {
        self.lanes[lane]
            .correlator
            .ingest_forwarded(decoded, messages, upstream, now_ns)
            .await
    }

    /// A watermark mark of an upstream partition, for every lane.
    pub fn observe_mark(&mut self, partition: &str, event_time_ns: i64, now_ns: i64) {
        for lane in &mut self.lanes {
            lane.correlator
                .observe_mark(partition, event_time_ns, now_ns);
        }
    }

    /// Advance every lane (see [`Correlator::advance`]).
    pub async fn advance(
        &mut self,
        now_ns: i64,
        detected_at_ns: i64,
    ) -> (Vec<Alert>, Vec<(String, String)>) {
        let mut out = (Vec::new(), Vec::new());
        for lane in &mut self.lanes {
            let (alerts, failures) = lane.correlator.advance(now_ns, detected_at_ns).await;
            out.0.extend(alerts);
            out.1.extend(failures);
        }
        out
    }

    /// Close every window of every lane (end of a replayed input).
    pub async fn finish(&mut self, detected_at_ns: i64) -> (Vec<Alert>, Vec<(String, String)>) {
        let mut out = (Vec::new(), Vec::new());
        for lane in &mut self.lanes {
            let (alerts, failures) = lane.correlator.finish(detected_at_ns).await;
            out.0.extend(alerts);
            out.1.extend(failures);
        }
        out
    }

    /// The lowest watermark of the lanes (`None` before any event or mark).
    pub fn watermark(&self) -> Option<i64> {
        self.lanes
            .iter()
            .filter_map(|l| l.correlator.watermark())
            .min()
    }

    /// The lanes' counters, summed (the watermark: the lowest).
    pub fn stats(&self) -> CorrelationStats {
        let mut total = CorrelationStats::default();
        for lane in &self.lanes {
            let s = lane.correlator.stats();
            total.retained_events += s.retained_events;
            total.state_rows += s.state_rows;
            total.event_identities += s.event_identities;
            total.late_events += s.late_events;
            total.evicted_early += s.evicted_early;
            total.evicted_state_rows += s.evicted_state_rows;
            total.suppressed_alerts += s.suppressed_alerts;
            total.rows_evaluated += s.rows_evaluated;
        }
        total.watermark = self.watermark();
        total
    }

    pub fn take_evaluations(&mut self) -> Vec<(String, Duration, usize)> {
        self.lanes
            .iter_mut()
            .flat_map(|l| l.correlator.take_evaluations())
            .collect()
    }

    /// Lowest offset per partition any lane still needs (see
    /// [`Correlator::retained_offsets`]).
    pub fn retained_offsets(&self) -> BTreeMap<(String, i32), i64> {
        let mut out = Offsets::new();
        for lane in &self.lanes {
            merge_offsets(&mut out, &lane.correlator.retained_offsets());
        }
        out
    }

    pub fn emitted_watermarks(&self) -> BTreeMap<String, i64> {
        self.lanes
            .iter()
            .flat_map(|l| l.correlator.emitted_watermarks())
            .collect()
    }

    pub fn restore_emitted(&mut self, emitted: &BTreeMap<String, i64>) {
        for lane in &mut self.lanes {
            lane.correlator.restore_emitted(emitted);
        }
    }

    pub fn set_time_budget(&mut self, limit: Duration) {
        for lane in &mut self.lanes {
            lane.correlator.set_time_budget(limit);
        }
    }

    /// Forget all state (see [`Correlator::reset`]).
    pub fn reset(&mut self) {
        for lane in &mut self.lanes {
            lane.correlator.reset();
        }
        self.taken.clear();
    }
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
    let mut rows = Vec::new();
    for batch in correlator.pre_filter(decoded).await? {
        let column = batch
            .column_by_name(ROW_COLUMN)
            .ok_or(CorrelationError::Unexpected(
                "the pre-filter has no row column",
            ))?;
        rows.extend(column.as_primitive::<UInt32Type>().values().iter().copied());
    }
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
