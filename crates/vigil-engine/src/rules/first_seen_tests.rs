use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{Field, Schema};

use super::*;

const DAY: i64 = 86_400 * 1_000_000_000;

fn rule(history_days: u64, learning_days: u64) -> FirstSeen {
    FirstSeen::new(&FirstSeenMeta {
        columns: vec!["user".into(), "namespace".into()],
        history: Duration::from_secs(history_days * 86_400),
        learning: Duration::from_secs(learning_days * 86_400),
    })
}

type Row<'a> = (Option<&'a str>, Option<&'a str>, &'a str);

/// Output rows with these user, namespace and pod columns.
fn rows(values: &[Row]) -> RecordBatch {
    let column = |f: for<'a> fn(&Row<'a>) -> Option<&'a str>| {
        Arc::new(values.iter().map(f).collect::<StringArray>()) as _
    };
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user", DataType::Utf8, true),
            Field::new("namespace", DataType::Utf8, true),
            Field::new("pod", DataType::Utf8, true),
        ])),
        vec![column(|r| r.0), column(|r| r.1), column(|r| Some(r.2))],
    )
    .unwrap()
}

/// The combination of a row of `user` and `namespace`.
fn row(user: &str, namespace: &str) -> Combination {
    let columns = ["user".to_string(), "namespace".to_string()];
    combinations(&columns, &rows(&[(Some(user), Some(namespace), "ignored")])).unwrap()[0]
}

/// How many of `changes` forget a combination.
fn forgotten(changes: &[StateChange]) -> usize {
    changes
        .iter()
        .filter(|c| matches!(c, StateChange::Forgotten { .. }))
        .count()
}

/// Day `d` of a stream starting 2026-01-01.
fn day(d: f64) -> i64 {
    1_767_225_600 * 1_000_000_000 + (d * DAY as f64) as i64
}

#[test]
fn a_combination_is_new_once_then_seen_while_in_use() {
    let mut state = rule(14, 1);
    assert_eq!(
        state.admit(row("alice", "dev"), day(0.0)),
        Verdict::Learning
    );
    assert_eq!(
        state.admit(row("alice", "prod"), day(0.5)),
        Verdict::Learning
    );
    // Learned: a new namespace for alice is new, a known one is not.
    assert_eq!(
        state.admit(row("alice", "kube-system"), day(1.0)),
        Verdict::New
    );
    assert_eq!(
        state.admit(row("alice", "kube-system"), day(1.1)),
        Verdict::Seen
    );
    assert_eq!(state.admit(row("alice", "dev"), day(2.0)), Verdict::Seen);

    // Used every 10 days, never new again; unused for 15, new again.
    assert_eq!(state.admit(row("alice", "dev"), day(12.0)), Verdict::Seen);
    assert_eq!(state.admit(row("alice", "dev"), day(22.0)), Verdict::Seen);
    assert_eq!(state.admit(row("alice", "prod"), day(15.6)), Verdict::New);
}

#[test]
fn a_batch_is_admitted_row_by_row_by_its_combination_columns_only() {
    let mut state = rule(14, 0);
    let batch = rows(&[
        (Some("alice"), Some("dev"), "a"),
        (Some("alice"), Some("dev"), "b"),
        (Some("x,y"), Some("z"), "c"),
        (Some("x"), Some("y,z"), "d"),
        (None, Some("dev"), "e"),
        (Some("null"), Some("dev"), "f"),
        (None, Some("dev"), "g"),
    ]);
    let new = state
        .admit_batch(&batch, |i| day(i as f64 / 100.0))
        .unwrap();
    let new: Vec<bool> = new.iter().map(Option::unwrap).collect();
    // The second alice/dev row (another pod) is seen; delimited values
    // differ; a null is its own value, not the text "null".
    assert_eq!(new, [true, false, true, true, true, true, false]);
}

#[test]
fn values_of_other_types_are_combined_as_text() {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("code", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![
            Some(403),
            Some(403),
            Some(200),
            None,
        ]))],
    )
    .unwrap();
    let c = combinations(&["code".into()], &batch).unwrap();
    assert_eq!(c[0], c[1]);
    assert_ne!(c[0], c[2]);
    assert_ne!(c[2], c[3]);
    assert!(combinations(&["missing".into()], &batch).is_err());
}

#[test]
fn restored_changes_remember_what_was_seen_and_when_learning_began() {
    let mut state = rule(14, 1);
    state.admit(row("alice", "dev"), day(0.0));
    state.admit(row("bob", "dev"), day(0.5));
    let changes = state.take_changes();
    assert!(state.take_changes().is_empty(), "changes are taken once");
    let mut restored = rule(14, 1);
    restored.restore(changes);
    assert!(
        restored.take_changes().is_empty(),
        "a restore records nothing"
    );
    // Learning began at day 0, not at the restore.
    assert_eq!(restored.admit(row("carol", "dev"), day(1.0)), Verdict::New);
    assert_eq!(restored.admit(row("bob", "dev"), day(1.0)), Verdict::Seen);
    assert_eq!(restored.stats().entries, 3);
}

#[test]
fn a_restored_time_is_early_by_less_than_a_step_never_late() {
    let mut state = rule(16, 0);
    // Refreshed every half day, recorded once a step (1 day) has passed
    // since the last record: at days 0, 1 and 2, not at 2.4.
    for t in [0.0, 0.5, 1.0, 1.5, 2.0, 2.4] {
        state.admit(row("alice", "dev"), day(t));
    }
    let changes = state.take_changes();
    let recorded: Vec<u32> = changes
        .iter()
        .filter_map(|c| match c {
            StateChange::Seen { at, .. } => Some(*at),
            _ => None,
        })
        .collect();
    assert_eq!(recorded, [0.0, 1.0, 2.0].map(|d| seconds(day(d))));
    let mut restored = rule(16, 0);
    restored.restore(changes.clone());
    assert_eq!(
        restored.admit(row("alice", "dev"), day(17.9)),
        Verdict::Seen
    );
    // 16.2 days after the recorded time, 15.8 after the true one: the
    // restored state expired it early (a repeated alert, not a miss).
    assert_eq!(state.admit(row("alice", "dev"), day(18.2)), Verdict::Seen);
    let mut restored = rule(16, 0);
    restored.restore(changes);
    assert_eq!(restored.admit(row("alice", "dev"), day(18.2)), Verdict::New);
}

#[test]
fn sweeps_forget_what_the_history_no_longer_holds() {
    let mut state = rule(1, 0);
    for i in 0..100 {
        state.admit(row(&format!("u{i}"), "dev"), day(0.0));
    }
    state.take_changes();
    state.admit(row("late", "dev"), day(1.5));
    assert_eq!(
        state.stats().entries,
        1,
        "day-0 entries are past a 1-day history"
    );
    let forgotten = forgotten(&state.take_changes());
    assert_eq!(forgotten, 100);
    assert_eq!(state.stats().forgotten_early, 0);
}

#[test]
fn past_the_bound_the_oldest_are_forgotten_first() {
    let mut state = rule(14, 0).with_max_entries(100);
    for i in 0..100 {
        state.admit(row(&format!("u{i}"), "dev"), day(i as f64 / 100.0));
    }
    assert_eq!(state.stats().entries, 100);
    state.admit(row("one-more", "dev"), day(1.0));
    let stats = state.stats();
    assert!(stats.entries <= 91 && stats.entries >= 81, "{stats:?}");
    assert_eq!(stats.forgotten_early as usize, 101 - stats.entries);
    // The newest are still seen, the oldest are new again.
    assert_eq!(state.admit(row("u99", "dev"), day(1.0)), Verdict::Seen);
    assert_eq!(state.admit(row("u0", "dev"), day(1.0)), Verdict::New);
}

#[test]
fn the_map_hash_is_the_combinations_words() {
    use std::hash::BuildHasher;
    let combination: Combination = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];
    let hash = BuildHasherDefault::<PassThrough>::default().hash_one(combination);
    assert_eq!(hash, combination[0] ^ combination[1]);
}

/// Combinations are kept in state across restarts: each row's is the
/// documented hash of its own values alone, whatever rows come before it.
#[test]
fn each_rows_combination_is_the_hash_of_its_own_values() {
    let batch = rows(&[
        (Some("alice"), Some("dev"), "a"),
        (None, Some("prod"), "b"),
        (Some("alice"), Some("dev"), "c"),
    ]);
    let columns = ["user".to_string(), "namespace".to_string()];
    let all = combinations(&columns, &batch).unwrap();
    let expected = |user: Option<&str>, namespace: &str| {
        let mut h = blake3::Hasher::new_derive_key("vigil first_seen combination v1");
        match user {
            None => h.update(&[0]),
            Some(u) => h
                .update(&[1])
                .update(&(u.len() as u64).to_le_bytes())
                .update(u.as_bytes()),
        };
        h.update(&[1])
            .update(&(namespace.len() as u64).to_le_bytes())
            .update(namespace.as_bytes());
        words(h.finalize().as_bytes())
    };
    assert_eq!(
        all,
        vec![
            expected(Some("alice"), "dev"),
            expected(None, "prod"),
            expected(Some("alice"), "dev"),
        ]
    );
    assert_eq!(all[0], row("alice", "dev"));
}

/// A state that keeps `memory` combinations in memory and spills the rest
/// to a store in `dir`, holding `max` at most.
fn spilling(dir: &tempfile::TempDir, memory: usize, max: usize) -> FirstSeen {
    let store = vigil_state::SpillStore::create(dir.path(), 1 << 20).unwrap();
    let storage = FirstSeenStorage {
        max_entries: max,
        spill: Some(SpillStorage {
            store,
            memory_entries: memory,
        }),
    };
    rule(14, 0).with_storage(&storage, "t.rule")
}

fn users(state: &mut FirstSeen, range: std::ops::Range<usize>, at: impl Fn(usize) -> i64) {
    for i in range {
        state.admit(row(&format!("u{i}"), "dev"), at(i));
    }
}

#[test]
fn spilled_combinations_stay_seen_while_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = spilling(&dir, 100, 10_000);
    users(&mut state, 0..1000, |i| day(i as f64 / 1000.0));
    let stats = state.stats();
    assert_eq!(stats.entries, 1000, "{stats:?}");
    assert!(stats.spilled >= 900, "{stats:?}");
    assert_eq!(stats.forgotten_early, 0);
    // Every one is still seen, the oldest read back from the store.
    for i in 0..1000 {
        let verdict = state.admit(row(&format!("u{i}"), "dev"), day(1.0));
        assert_eq!(verdict, Verdict::Seen, "u{i}");
    }
    assert_eq!(state.admit(row("new", "dev"), day(1.0)), Verdict::New);
    assert!(state.seen.len() <= 100, "memory holds {}", state.seen.len());
    // Spilling is not forgetting: no change says a combination is gone.
    assert_eq!(forgotten(&state.take_changes()), 0);
    assert_eq!(state.stats().spill_failures, 0);
}

#[test]
fn spilled_combinations_expire_with_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = spilling(&dir, 10, 10_000);
    users(&mut state, 0..100, |_| day(0.0));
    assert!(state.stats().spilled >= 90);
    state.take_changes();
    state.admit(row("later", "dev"), day(15.0));
    let forgotten = forgotten(&state.take_changes());
    assert_eq!(forgotten, 100);
    assert_eq!(state.stats().entries, 1);
    assert_eq!(state.admit(row("u0", "dev"), day(15.0)), Verdict::New);
}

#[test]
fn past_the_bound_the_oldest_spilled_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = spilling(&dir, 10, 100);
    users(&mut state, 0..200, |i| day(i as f64 / 1000.0));
    let stats = state.stats();
    assert!(stats.entries <= 100, "{stats:?}");
    assert_eq!(stats.forgotten_early as usize, 200 - stats.entries);
    assert_eq!(state.admit(row("u199", "dev"), day(1.0)), Verdict::Seen);
    assert_eq!(state.admit(row("u0", "dev"), day(1.0)), Verdict::New);
}

#[test]
fn a_restore_spills_past_memory_and_never_reads_back_a_forgotten_combination() {
    let mut changes: Vec<StateChange> = (0..50)
        .map(|i| StateChange::Seen {
            combination: row(&format!("u{i}"), "dev"),
            at: seconds(day(i as f64 / 100.0)),
        })
        .collect();
    changes.push(StateChange::Forgotten {
        combination: row("u0", "dev"),
    });
    changes.push(StateChange::ObservedSince {
        at: seconds(day(0.0)),
    });
    let dir = tempfile::tempdir().unwrap();
    let mut state = spilling(&dir, 10, 10_000);
    state.restore(changes);
    let stats = state.stats();
    assert_eq!(stats.entries, 49, "{stats:?}");
    assert!(state.seen.len() <= 10);
    assert_eq!(state.admit(row("u1", "dev"), day(1.0)), Verdict::Seen);
    assert_eq!(state.admit(row("u0", "dev"), day(1.0)), Verdict::New);
}

#[test]
fn a_reload_carries_the_spilled_combinations() {
    let dir = tempfile::tempdir().unwrap();
    let store = vigil_state::SpillStore::create(dir.path(), 1 << 20).unwrap();
    let storage = FirstSeenStorage {
        max_entries: 10_000,
        spill: Some(SpillStorage {
            store,
            memory_entries: 10,
        }),
    };
    let mut old = rule(14, 0).with_storage(&storage, "t.rule");
    users(&mut old, 0..100, |_| day(0.0));
    let mut new = rule(14, 0).with_storage(&storage, "t.rule");
    new.carry_from(old);
    assert_eq!(new.stats().entries, 100);
    assert_eq!(new.admit(row("u0", "dev"), day(1.0)), Verdict::Seen);
}

/// An in-memory redb backend whose writes fail once `fail` is set.
#[derive(Debug)]
struct FailingBackend {
    inner: redb::backends::InMemoryBackend,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl FailingBackend {
    fn check(&self) -> Result<(), redb::BackendError> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("disk full (test)").into());
        }
        Ok(())
    }
}

impl redb::StorageBackend for FailingBackend {
    fn len(&self) -> Result<u64, redb::BackendError> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), redb::BackendError> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), redb::BackendError> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), redb::BackendError> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), redb::BackendError> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

/// A store that stops taking writes costs the entries it could not take,
/// counted, and nothing else: no error reaches the rule, and a lost
/// combination is new again, never hidden.
#[test]
fn a_failing_spill_store_loses_only_what_it_could_not_take_and_counts_it() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backend = FailingBackend {
        inner: redb::backends::InMemoryBackend::new(),
        fail: fail.clone(),
    };
    let storage = FirstSeenStorage {
        max_entries: 10_000,
        spill: Some(SpillStorage {
            store: vigil_state::SpillStore::with_backend(backend, 1 << 20).unwrap(),
            memory_entries: 10,
        }),
    };
    let mut state = rule(14, 0).with_storage(&storage, "t.rule");
    users(&mut state, 0..20, |i| day(i as f64 / 1000.0));
    assert!(state.stats().spilled > 0);
    assert_eq!(state.stats().spill_failures, 0);
    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    users(&mut state, 20..40, |i| day(i as f64 / 1000.0));
    let stats = state.stats();
    assert!(stats.spill_failures > 0, "{stats:?}");
    assert!(stats.forgotten_early > 0, "{stats:?}");
    assert!(state.seen.len() <= 10, "memory stays bounded");
    // The newest are still in memory; what the failed writes held is new.
    assert_eq!(state.admit(row("u39", "dev"), day(1.0)), Verdict::Seen);
    let verdicts: Vec<Verdict> = (20..30)
        .map(|i| state.admit(row(&format!("u{i}"), "dev"), day(1.0)))
        .collect();
    assert!(verdicts.contains(&Verdict::New), "{verdicts:?}");
}
