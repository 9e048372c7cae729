//! First-seen ("new terms") state of a per-event rule with
//! `-- first_seen: <columns>` (see [`FirstSeenMeta`]).
//!
//! Per rule, a map from a value combination to the event time it was last
//! seen. A row is new when its combination has no entry, or its entry is
//! older than `history` before the row's event. Every row refreshes its
//! combination, alerting or not, so a combination in regular use never
//! becomes new again.
//!
//! Invariants:
//! * a combination is stored as the first 128 bits of its BLAKE3 hash (24
//!   bytes an entry with its two times), so 10 million combinations take
//!   about 420 MB: an attacker who wants their first action to look seen
//!   needs a second preimage of that hash, not a collision of a fast
//!   non-cryptographic one;
//! * no alert before the rule has observed `learning` of event time from
//!   the first event of its source it saw (before that every combination
//!   is new);
//! * times are whole seconds: histories are days long;
//! * the changes a durable store needs ([`StateChange`]) are recorded when
//!   a combination is first stored, when its last-seen time has moved at
//!   least a [`step`] past the time last recorded, and when it is
//!   forgotten. A restored entry can thus be older than the truth by less
//!   than one step: it expires early (a repeated alert), never late (a
//!   missed one);
//! * entries past `history` are forgotten by sweeps every
//!   [`step`] of event time; past [`FirstSeen::max_entries`] the
//!   oldest tenth is forgotten early (counted in
//!   [`FirstSeenStats::forgotten_early`]), which can only make a
//!   combination new again, never hide one;
//! * with a spill store ([`FirstSeenStorage::spill`]), memory holds at
//!   most `memory_entries`: past it the oldest tenth moves to the store
//!   (not forgotten, no change recorded), and a combination missing from
//!   memory is looked up there. Memory is authoritative where both hold a
//!   combination. A failed read or write of the store counts in
//!   [`FirstSeenStats::spill_failures`] and loses the entries concerned,
//!   which, as above, can only make a combination new again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use vigil_state::{SpillStore, SpillTable};

use crate::rules::FirstSeenMeta;

/// Entries per rule, at most, by default (about 420 MB at the limit).
pub const DEFAULT_MAX_ENTRIES: usize = 10_000_000;

/// A value combination: the first 128 bits of its BLAKE3 hash.
pub type Combination = [u64; 2];

/// What becomes of a row of a first-seen rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen in the history: alert.
    New,
    /// Seen in the history.
    Seen,
    /// New, but the rule is still learning what is usual: no alert.
    Learning,
}

/// A change to persist (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    /// The combination was last seen at `at` (seconds since the epoch).
    Seen { combination: Combination, at: u32 },
    /// The combination is forgotten.
    Forgotten { combination: Combination },
    /// The earliest event time the rule has observed (seconds).
    ObservedSince { at: u32 },
}

/// Counts for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirstSeenStats {
    /// Combinations held, in memory and spilled (one read back from the
    /// store counts twice until the store's next write drops its copy).
    pub entries: usize,
    /// Of those, spilled to the store.
    pub spilled: usize,
    pub forgotten_early: u64,
    pub spill_failures: u64,
}

impl std::ops::Add for FirstSeenStats {
    type Output = FirstSeenStats;
    fn add(self, other: FirstSeenStats) -> FirstSeenStats {
        FirstSeenStats {
            entries: self.entries + other.entries,
            spilled: self.spilled + other.spilled,
            forgotten_early: self.forgotten_early + other.forgotten_early,
            spill_failures: self.spill_failures + other.spill_failures,
        }
    }
}

/// Where the first-seen states of an engine keep their combinations.
#[derive(Debug, Clone)]
pub struct FirstSeenStorage {
    /// Combinations one state (a rule, or a rule in one repartition
    /// partition) holds at most, in memory and spilled together.
    pub max_entries: usize,
    /// Where combinations beyond memory go; `None`: memory only.
    pub spill: Option<SpillStorage>,
}

/// A spill store and how much each state keeps in memory before it.
#[derive(Debug, Clone)]
pub struct SpillStorage {
    pub store: SpillStore,
    /// Combinations one state keeps in memory (at least 10).
    pub memory_entries: usize,
}

impl FirstSeenStorage {
    /// Combinations one state keeps in memory at most.
    pub fn memory_bound(&self) -> usize {
        self.spill
            .as_ref()
            .map_or(self.max_entries, |s| s.memory_entries.min(self.max_entries))
    }
}

impl Default for FirstSeenStorage {
    fn default() -> Self {
        FirstSeenStorage {
            max_entries: DEFAULT_MAX_ENTRIES,
            spill: None,
        }
    }
}

/// A state's part of the spill store.
#[derive(Debug)]
struct Spill {
    table: SpillTable,
    memory_entries: usize,
    /// Keys whose spilled copy must go at the next write: read back into
    /// memory, or forgotten while restoring.
    stale: Vec<u128>,
    failures: u64,
}

impl Spill {
    fn failed(&mut self, error: &vigil_state::Error) {
        self.failures += 1;
        // Powers of two: a failing disk must not flood the log.
        if self.failures.is_power_of_two() {
            tracing::warn!(error = %error, failures = self.failures, "first-seen spill store failed: the entries concerned are lost, so their combinations may alert again");
        }
    }
}

fn key(combination: &Combination) -> u128 {
    (u128::from(combination[0]) << 64) | u128::from(combination[1])
}

fn combination_of(key: u128) -> Combination {
    [(key >> 64) as u64, key as u64]
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    last_seen: u32,
    /// The last-seen time last recorded as a change.
    recorded: u32,
}

/// Combinations are hashes already: the map's hash is their words XORed.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    /// `[u64; 2]` hashes its words as one slice of 16 bytes (after its
    /// length, through `write_usize`).
    fn write(&mut self, bytes: &[u8]) {
        for word in bytes.chunks(8) {
            let mut padded = [0u8; 8];
            padded[..word.len()].copy_from_slice(word);
            self.0 ^= u64::from_le_bytes(padded);
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
    }
    fn write_usize(&mut self, _len: usize) {}
}

/// The first-seen state of one rule.
#[derive(Debug)]
pub struct FirstSeen {
    columns: Vec<String>,
    history: u32,
    learning: u32,
    seen: HashMap<Combination, Entry, BuildHasherDefault<PassThrough>>,
    observed_since: Option<u32>,
    latest: u32,
    next_sweep: u32,
    max_entries: usize,
    forgotten_early: u64,
    changes: Vec<StateChange>,
    spill: Option<Spill>,
}

/// Seconds since the epoch of an event time in nanoseconds, clamped to
/// `u32` (1970 to 2106).
pub fn seconds(event_time_ns: i64) -> u32 {
    (event_time_ns.div_euclid(1_000_000_000)).clamp(0, i64::from(u32::MAX)) as u32
}

/// 1/16 of the history, at least a minute: how far a last-seen time moves
/// before it is recorded again, and how much event time passes between
/// sweeps of expired entries.
pub(crate) fn step(history: u32) -> u32 {
    (history / 16).max(60)
}

pub(crate) fn duration_seconds(d: std::time::Duration) -> u32 {
    d.as_secs().min(u64::from(u32::MAX)) as u32
}

impl FirstSeen {
    pub fn new(meta: &FirstSeenMeta) -> FirstSeen {
        FirstSeen {
            columns: meta.columns.clone(),
            history: duration_seconds(meta.history),
            learning: duration_seconds(meta.learning),
            seen: HashMap::default(),
            observed_since: None,
            latest: 0,
            next_sweep: 0,
            max_entries: DEFAULT_MAX_ENTRIES,
            forgotten_early: 0,
            changes: Vec::new(),
            spill: None,
        }
    }

    /// Keep combinations as `storage` says; `label` names the state's
    /// table in the spill store (a rule, or a rule and partition).
    pub fn with_storage(mut self, storage: &FirstSeenStorage, label: &str) -> FirstSeen {
        self = self.with_max_entries(storage.max_entries);
        self.spill = storage.spill.as_ref().map(|s| Spill {
            table: s.store.table(label),
            memory_entries: s.memory_entries.max(10),
            stale: Vec::new(),
            failures: 0,
        });
        self
    }

    /// At most `max` entries (at least 10); see the module doc.
    pub fn with_max_entries(mut self, max: usize) -> FirstSeen {
        self.max_entries = max.max(10);
        self
    }

    /// The output columns whose values make a combination.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Whether `other` keeps combinations of the same columns (its state
    /// can be carried over a rule reload).
    pub fn same_columns(&self, other: &FirstSeen) -> bool {
        self.columns == other.columns
    }

    /// Take the output rows of the rule, the event of row `i` at
    /// `event_time_ns(i)`: which of them are new (to alert on). Every row
    /// is remembered, in order.
    pub fn admit_batch(
        &mut self,
        batch: &RecordBatch,
        event_time_ns: impl Fn(usize) -> i64,
    ) -> Result<BooleanArray, ArrowError> {
        let combinations = combinations(&self.columns, batch)?;
        Ok(combinations
            .into_iter()
            .enumerate()
            .map(|(i, c)| Some(self.admit(c, event_time_ns(i)) == Verdict::New))
            .collect())
    }

    /// Take one row, of combination `combination`, for an event at
    /// `event_time_ns`: what it is; the row is remembered.
    pub fn admit(&mut self, combination: Combination, event_time_ns: i64) -> Verdict {
        self.observe(event_time_ns);
        let at = seconds(event_time_ns);
        self.latest = self.latest.max(at);
        let verdict = self.remember(combination, at);
        self.sweep_if_due();
        verdict
    }

    /// When the rule began observing its source, if it has.
    pub fn observed_since(&self) -> Option<u32> {
        self.observed_since
    }

    /// Second stage: an instance of the group began observing the rule's
    /// source at `at`; the group learns from the earliest such time.
    pub fn observed_from(&mut self, at: u32) {
        if self.observed_since.is_none_or(|since| at < since) {
            self.observed_since = Some(at);
            self.changes.push(StateChange::ObservedSince { at });
        }
    }

    /// The rule's source delivered events from `event_time_ns` on: the
    /// learning period runs from the first such time (a rule whose rows
    /// are rare learns from its source's first event, not its own first
    /// row, which may be the attack). Later, earlier times do not move it:
    /// one old event must not end the learning.
    pub fn observe(&mut self, event_time_ns: i64) {
        if self.observed_since.is_none() {
            let at = seconds(event_time_ns);
            self.observed_since = Some(at);
            self.changes.push(StateChange::ObservedSince { at });
        }
    }

    fn remember(&mut self, combination: Combination, at: u32) -> Verdict {
        if !self.seen.contains_key(&combination) {
            self.read_back(combination);
        }
        let step = step(self.history);
        let is_new = match self.seen.get_mut(&combination) {
            Some(entry) => {
                let new = at > entry.last_seen.saturating_add(self.history);
                if at > entry.last_seen {
                    entry.last_seen = at;
                    if new || at >= entry.recorded.saturating_add(step) {
                        entry.recorded = at;
                        self.changes.push(StateChange::Seen { combination, at });
                    }
                }
                new
            }
            None => {
                self.seen.insert(
                    combination,
                    Entry {
                        last_seen: at,
                        recorded: at,
                    },
                );
                self.changes.push(StateChange::Seen { combination, at });
                true
            }
        };
        self.bound();
        let learned = self
            .observed_since
            .is_some_and(|since| at >= since.saturating_add(self.learning));
        match (is_new, learned) {
            (false, _) => Verdict::Seen,
            (true, true) => Verdict::New,
            (true, false) => Verdict::Learning,
        }
    }

    /// Bring a spilled combination back into memory, if it is spilled.
    fn read_back(&mut self, combination: Combination) {
        let Some(spill) = self.spill.as_mut().filter(|s| !s.table.is_empty()) else {
            return;
        };
        let key = key(&combination);
        match spill.table.get(key) {
            Ok(Some(last_seen)) => {
                spill.stale.push(key);
                self.seen.insert(
                    combination,
                    Entry {
                        last_seen,
                        recorded: last_seen,
                    },
                );
            }
            Ok(None) => {}
            Err(e) => spill.failed(&e),
        }
    }

    /// Forget the entries past the history once a sweep is due.
    fn sweep_if_due(&mut self) {
        if self.latest < self.next_sweep {
            return;
        }
        self.next_sweep = self.latest.saturating_add(step(self.history));
        let horizon = self.latest.saturating_sub(self.history);
        self.forget_before(horizon);
    }

    fn forget_before(&mut self, horizon: u32) {
        let changes = &mut self.changes;
        self.seen.retain(|combination, entry| {
            let keep = entry.last_seen >= horizon;
            if !keep {
                changes.push(StateChange::Forgotten {
                    combination: *combination,
                });
            }
            keep
        });
        if let Some(spill) = self.spill.as_mut().filter(|s| !s.table.is_empty()) {
            match spill.table.remove_before(horizon) {
                Ok(keys) => {
                    self.forget_spilled(keys);
                }
                Err(e) => spill.failed(&e),
            }
        }
    }

    /// Record spilled keys removed from the store as forgotten, but for
    /// those memory holds again (their spilled copy was stale).
    fn forget_spilled(&mut self, keys: Vec<u128>) -> usize {
        let forgotten = keys
            .into_iter()
            .map(combination_of)
            .filter(|c| !self.seen.contains_key(c))
            .map(|combination| StateChange::Forgotten { combination });
        let before = self.changes.len();
        self.changes.extend(forgotten);
        self.changes.len() - before
    }

    /// Past memory's bound, the oldest tenth of memory goes: to the spill
    /// store if there is one, else it is forgotten. Past the store's share
    /// of `max_entries`, its oldest tenth is forgotten.
    fn bound(&mut self) {
        let memory_bound = self
            .spill
            .as_ref()
            .map_or(self.max_entries, |s| s.memory_entries);
        if self.seen.len() <= memory_bound.min(self.max_entries) {
            return;
        }
        let oldest = self.take_oldest_tenth();
        let Some(spill) = self.spill.as_mut() else {
            self.forgotten_early += oldest.len() as u64;
            self.changes.extend(
                oldest
                    .into_iter()
                    .map(|(combination, _)| StateChange::Forgotten { combination }),
            );
            return;
        };
        let entries: Vec<(u128, u32)> = oldest.iter().map(|(c, at)| (key(c), *at)).collect();
        let stale = std::mem::take(&mut spill.stale);
        if let Err(e) = spill.table.put(&entries, &stale) {
            // Lost here, still in the state topic: a restart restores them.
            spill.failed(&e);
            self.forgotten_early += entries.len() as u64;
        }
        let spilled = spill.table.len() as usize;
        if spilled + self.seen.len() > self.max_entries {
            match spill.table.remove_oldest(spilled / 10) {
                Ok(keys) => {
                    let forgotten = self.forget_spilled(keys);
                    self.forgotten_early += forgotten as u64;
                }
                Err(e) => spill.failed(&e),
            }
        }
    }

    /// Take the oldest tenth of memory: every entry older than the
    /// tenth's cut time, then entries at the cut time while fewer than a
    /// tenth are taken (a tenth to a fifth in all).
    fn take_oldest_tenth(&mut self) -> Vec<(Combination, u32)> {
        let mut times: Vec<u32> = self.seen.values().map(|e| e.last_seen).collect();
        let tenth = times.len() / 10;
        let cut = *times.select_nth_unstable(tenth).1;
        drop(times);
        let mut to_take = tenth;
        let mut taken = Vec::with_capacity(tenth * 2);
        self.seen.retain(|combination, entry| {
            let take = entry.last_seen < cut || (entry.last_seen == cut && to_take > 0);
            if take {
                to_take = to_take.saturating_sub(1);
                taken.push((*combination, entry.last_seen));
            }
            !take
        });
        taken
    }

    /// Changes since the last call, to persist (see the module doc).
    pub fn take_changes(&mut self) -> Vec<StateChange> {
        std::mem::take(&mut self.changes)
    }

    /// Apply persisted changes (in the order they were recorded) to a
    /// fresh state. Nothing is recorded as a change again.
    pub fn restore(&mut self, changes: impl IntoIterator<Item = StateChange>) {
        for change in changes {
            match change {
                StateChange::Seen { combination, at } => {
                    let entry = self.seen.entry(combination).or_insert(Entry {
                        last_seen: at,
                        recorded: at,
                    });
                    entry.last_seen = entry.last_seen.max(at);
                    entry.recorded = entry.last_seen;
                    self.latest = self.latest.max(at);
                    if self.spill.is_some() {
                        self.bound();
                    }
                }
                StateChange::Forgotten { combination } => {
                    self.seen.remove(&combination);
                    if let Some(spill) = self.spill.as_mut().filter(|s| !s.table.is_empty()) {
                        spill.stale.push(key(&combination));
                    }
                }
                StateChange::ObservedSince { at } => {
                    self.observed_since = Some(self.observed_since.map_or(at, |s| s.min(at)));
                }
            }
        }
        self.remove_stale();
        self.next_sweep = 0;
    }

    /// Remove the stale spilled copies now: a forgotten combination must
    /// not be read back.
    fn remove_stale(&mut self) {
        if let Some(spill) = self.spill.as_mut().filter(|s| !s.stale.is_empty()) {
            let stale = std::mem::take(&mut spill.stale);
            if let Err(e) = spill.table.remove(&stale) {
                spill.failed(&e);
            }
        }
    }

    /// Take over what `old` (the state of the rule a reload replaces, of
    /// the same columns) has seen; this rule's history and learning apply.
    pub fn carry_from(&mut self, old: FirstSeen) {
        self.seen = old.seen;
        self.observed_since = old.observed_since;
        self.latest = old.latest;
        self.forgotten_early = old.forgotten_early;
        self.changes = old.changes;
        // The old state's spilled entries come with it (this state's own
        // table is empty and dropped).
        if old.spill.is_some() || self.spill.is_none() {
            self.spill = old.spill;
        }
        self.next_sweep = 0;
    }

    /// Forget everything (between independent inputs).
    pub fn clear(&mut self) {
        if let Some(spill) = self.spill.as_mut() {
            spill.stale.clear();
            if let Err(e) = spill.table.clear() {
                spill.failed(&e);
            }
        }
        let fresh = FirstSeen {
            columns: std::mem::take(&mut self.columns),
            history: self.history,
            learning: self.learning,
            seen: HashMap::default(),
            observed_since: None,
            latest: 0,
            next_sweep: 0,
            max_entries: self.max_entries,
            forgotten_early: 0,
            changes: Vec::new(),
            spill: self.spill.take(),
        };
        *self = fresh;
    }

    pub fn stats(&self) -> FirstSeenStats {
        let spilled = self.spill.as_ref().map_or(0, |s| s.table.len() as usize);
        FirstSeenStats {
            entries: self.seen.len() + spilled,
            spilled,
            forgotten_early: self.forgotten_early,
            spill_failures: self.spill.as_ref().map_or(0, |s| s.failures),
        }
    }
}

/// The combination of `columns`' values in each row of `batch`: each
/// value as text (strings as they are, other types as Arrow displays
/// them), null-marked and length-delimited, so that no two different value
/// lists hash the same input (`["a,b"]` is not `["a", "b"]`).
pub fn combinations(
    columns: &[String],
    batch: &RecordBatch,
) -> Result<Vec<Combination>, ArrowError> {
    let options = FormatOptions::default();
    let arrays = columns
        .iter()
        .map(|column| Ok(batch.column(batch.schema().index_of(column)?).as_ref()))
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let formatters = arrays
        .iter()
        .map(|array| ArrayFormatter::try_new(*array, &options))
        .collect::<Result<Vec<_>, _>>()?;
    // One hasher, reset per row: a hasher per row (about 2 KB each) made
    // this a tenth of a whole-pack replay, most of it allocating and
    // zeroing them (issue 21). `reset` keeps the derived key.
    let mut hasher = blake3::Hasher::new_derive_key("vigil first_seen combination v1");
    let mut text = String::new();
    (0..batch.num_rows())
        .map(|row| {
            hasher.reset();
            for (array, formatter) in arrays.iter().zip(&formatters) {
                hash_value(&mut hasher, *array, formatter, row, &mut text)?;
            }
            Ok(words(hasher.finalize().as_bytes()))
        })
        .collect()
}

/// Add one value to a row's combination: a null mark, or a length and the
/// value's text (`text` is scratch space for non-string values).
fn hash_value(
    hasher: &mut blake3::Hasher,
    array: &dyn Array,
    formatter: &ArrayFormatter<'_>,
    row: usize,
    text: &mut String,
) -> Result<(), ArrowError> {
    if array.is_null(row) {
        hasher.update(&[0]);
        return Ok(());
    }
    let bytes = match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).as_bytes(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).as_bytes(),
        DataType::Utf8View => array.as_string_view().value(row).as_bytes(),
        _ => {
            text.clear();
            std::fmt::Write::write_fmt(text, format_args!("{}", formatter.value(row)))
                .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
            text.as_bytes()
        }
    };
    hasher.update(&[1]);
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
    Ok(())
}

/// A combination as 32 hex digits (state records, forwarded rows).
pub fn combination_hex(combination: &Combination) -> String {
    format!("{:016x}{:016x}", combination[0], combination[1])
}

/// The combination of [`combination_hex`]'s text.
pub fn parse_combination(text: &str) -> Option<Combination> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let word = |range: std::ops::Range<usize>| u64::from_str_radix(&text[range], 16).ok();
    Some([word(0..16)?, word(16..32)?])
}

fn words(bytes: &[u8; 32]) -> Combination {
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    [word(0), word(8)]
}

#[cfg(test)]
#[path = "first_seen_tests.rs"]
mod tests;
