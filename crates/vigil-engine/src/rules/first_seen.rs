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
//!   combination new again, never hide one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

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
    pub entries: usize,
    pub forgotten_early: u64,
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
        }
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
                self.bound();
                true
            }
        };
        let learned = self
            .observed_since
            .is_some_and(|since| at >= since.saturating_add(self.learning));
        match (is_new, learned) {
            (false, _) => Verdict::Seen,
            (true, true) => Verdict::New,
            (true, false) => Verdict::Learning,
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

    fn forget_before(&mut self, horizon: u32) -> usize {
        let before = self.seen.len();
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
        before - self.seen.len()
    }

    /// Past the bound, forget the oldest tenth: every entry older than
    /// the tenth's cut time, then entries at the cut time while fewer than a
    /// tenth are gone (a tenth to a fifth in all).
    fn bound(&mut self) {
        if self.seen.len() <= self.max_entries {
            return;
        }
        let mut times: Vec<u32> = self.seen.values().map(|e| e.last_seen).collect();
        let tenth = times.len() / 10;
        let cut = *times.select_nth_unstable(tenth).1;
        drop(times);
        let mut to_forget = tenth;
        let before = self.seen.len();
        let changes = &mut self.changes;
        self.seen.retain(|combination, entry| {
            let forget = entry.last_seen < cut || (entry.last_seen == cut && to_forget > 0);
            if forget {
                to_forget = to_forget.saturating_sub(1);
                changes.push(StateChange::Forgotten {
                    combination: *combination,
                });
            }
            !forget
        });
        self.forgotten_early += (before - self.seen.len()) as u64;
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
                }
                StateChange::Forgotten { combination } => {
                    self.seen.remove(&combination);
                }
                StateChange::ObservedSince { at } => {
                    self.observed_since = Some(self.observed_since.map_or(at, |s| s.min(at)));
                }
            }
        }
        self.next_sweep = 0;
    }

    /// Take over what `old` (the state of the rule a reload replaces, of
    /// the same columns) has seen; this rule's history and learning apply.
    pub fn carry_from(&mut self, old: FirstSeen) {
        self.seen = old.seen;
        self.observed_since = old.observed_since;
        self.latest = old.latest;
        self.forgotten_early = old.forgotten_early;
        self.changes = old.changes;
        self.next_sweep = 0;
    }

    /// Forget everything (between independent inputs).
    pub fn clear(&mut self) {
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
        };
        *self = fresh;
    }

    pub fn stats(&self) -> FirstSeenStats {
        FirstSeenStats {
            entries: self.seen.len(),
            forgotten_early: self.forgotten_early,
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
