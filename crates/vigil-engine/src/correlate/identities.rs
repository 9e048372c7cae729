//! The identities of the events correlation state names, by sequence
//! number.
//!
//! Events are numbered in the order they are taken in, so the table is two
//! vectors sorted by number: an append per event, a binary search per
//! lookup, and a compaction in place when unreferenced identities are
//! collected. Per identity that is its number, its fields and its id's
//! text, without the nodes of a `BTreeMap` and an allocation per id (about
//! half as much again; identities are the bulk of correlation's memory
//! after the retained events, docs/benchmarks.md, stop 39).

use std::ops::Deref;

use super::RetainedIdentity;

/// Identities by sequence number.
///
/// Invariant: `seqs` is strictly increasing, `entries[i]` is the identity
/// numbered `seqs[i]`, and its event id is `ids[entries[i].id]`.
#[derive(Debug, Default)]
pub(super) struct Identities {
    seqs: Vec<u64>,
    entries: Vec<Entry>,
    /// The event ids, one after another: one allocation for all of them,
    /// not one each among the short-lived allocations of every batch.
    ids: String,
}

#[derive(Debug)]
struct Entry {
    /// Where its event id is in `ids`.
    id: std::ops::Range<usize>,
    identity: RetainedIdentity,
}

/// An identity as the table lends it: its event id, and the rest.
#[derive(Debug, Clone, Copy)]
pub(super) struct IdentityRef<'a> {
    pub(super) event_id: &'a str,
    identity: &'a RetainedIdentity,
}

impl Deref for IdentityRef<'_> {
    type Target = RetainedIdentity;

    fn deref(&self) -> &RetainedIdentity {
        self.identity
    }
}

impl Identities {
    /// Register the identity numbered `seq`, of the event `event_id`.
    /// Numbers come in increasing order; one that does not (never given by
    /// the correlator) is still put in its place, at the cost of a shift.
    pub(super) fn insert(&mut self, seq: u64, event_id: &str, identity: RetainedIdentity) {
        let start = self.ids.len();
        self.ids.push_str(event_id);
        let entry = Entry {
            id: start..self.ids.len(),
            identity,
        };
        if self.seqs.last().is_none_or(|&last| last < seq) {
            self.seqs.push(seq);
            self.entries.push(entry);
            return;
        }
        match self.seqs.binary_search(&seq) {
            // The replaced id's text stays in `ids` until the next `retain`.
            Ok(at) => self.entries[at] = entry,
            Err(at) => {
                self.seqs.insert(at, seq);
                self.entries.insert(at, entry);
            }
        }
    }

    pub(super) fn get(&self, seq: &u64) -> Option<IdentityRef<'_>> {
        let entry = &self.entries[self.seqs.binary_search(seq).ok()?];
        Some(IdentityRef {
            event_id: &self.ids[entry.id.clone()],
            identity: &entry.identity,
        })
    }

    /// Keep the identities whose number `keep` accepts; the ids of the
    /// others are let go too. When most are gone, the vectors give back the
    /// room they no longer need.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let mut kept = 0;
        let mut ids = String::new();
        for at in 0..self.seqs.len() {
            if keep(self.seqs[at]) {
                let id = std::mem::replace(&mut self.entries[at].id, 0..0);
                let start = ids.len();
                ids.push_str(&self.ids[id]);
                self.entries[at].id = start..ids.len();
                self.seqs.swap(kept, at);
                self.entries.swap(kept, at);
                kept += 1;
            }
        }
        self.seqs.truncate(kept);
        self.entries.truncate(kept);
        self.ids = ids;
        if self.seqs.capacity() > 4 * kept {
            self.seqs.shrink_to(2 * kept);
            self.entries.shrink_to(2 * kept);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.seqs.len()
    }

    pub(super) fn clear(&mut self) {
        *self = Identities::default();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::super::Stream;
    use super::*;

    fn identity(seq: u64) -> RetainedIdentity {
        RetainedIdentity {
            stream: Arc::new(Stream::File { path: "f".into() }),
            position: seq as i64,
            event_time: 0,
            upstream: None,
        }
    }

    fn ids(table: &Identities, upto: u64) -> Vec<(u64, String)> {
        (0..upto)
            .filter_map(|s| table.get(&s).map(|i| (s, i.event_id.to_string())))
            .collect()
    }

    proptest! {
        /// Against a `BTreeMap` doing the same: inserts (in order, and now
        /// and then out of order or again, with another id), then
        /// collections.
        #[test]
        fn behaves_as_a_sorted_map(
            inserts in proptest::collection::vec(0u64..200, 0..150),
            collections in proptest::collection::vec(1u64..5, 0..4),
        ) {
            let mut table = Identities::default();
            let mut model = std::collections::BTreeMap::new();
            for (n, seq) in inserts.into_iter().enumerate() {
                table.insert(seq, &format!("e{seq}-{n}"), identity(seq));
                model.insert(seq, format!("e{seq}-{n}"));
            }
            for modulus in collections {
                table.retain(|s| s % modulus == 0);
                model.retain(|s, _| s % modulus == 0);
                prop_assert_eq!(table.len(), model.len());
                let expected: Vec<(u64, String)> = model.clone().into_iter().collect();
                prop_assert_eq!(ids(&table, 200), expected);
            }
            let expected: Vec<(u64, String)> = model.into_iter().collect();
            prop_assert_eq!(ids(&table, 200), expected);
        }
    }

    #[test]
    fn room_is_given_back_when_most_are_collected() {
        let mut table = Identities::default();
        for seq in 0..10_000 {
            table.insert(seq, &format!("e{seq}"), identity(seq));
        }
        table.retain(|s| s % 100 == 0);
        assert_eq!(table.len(), 100);
        assert!(table.seqs.capacity() <= 200, "{}", table.seqs.capacity());
        assert!(table.entries.capacity() <= 200);
        assert_eq!(table.get(&500).unwrap().event_id, "e500");
        assert_eq!(table.get(&500).unwrap().position, 500);
        assert_eq!(
            table.ids,
            (0..10_000)
                .step_by(100)
                .map(|s| format!("e{s}"))
                .collect::<String>()
        );
        assert!(table.get(&501).is_none());
    }
}
