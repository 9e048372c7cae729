//! Which retained batches were merged into which, since the scans last ran.
//!
//! Correlation merges small retained batches into larger ones
//! (`correlate::ingest`, `push_compacting`). A merged batch is a new batch
//! with a new identity, so a filtered scan would evaluate its filter on it
//! again, and gather and derive its kept rows again, although it holds
//! exactly the rows of two batches the scan already knows. A [`Lineage`]
//! records each merge; a scan then puts together the merged batch's
//! selection from its parts' selections, and renames the parts in its kept
//! runs where they stand side by side.
//!
//! Invariant: a merge `(earlier, later) → into` records that batch `into`
//! is the rows of `earlier` followed by the rows of `later`, unchanged. A
//! scan's filter and derived projections are deterministic and row by row,
//! so their results on `into` are their results on the parts, in that
//! order.

use std::collections::HashMap;

/// A batch merged from two: their identities and row counts, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Merge {
    pub earlier: (u64, usize),
    pub later: (u64, usize),
}

/// The merges made since the scans of the batches last ran.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    /// By the identity of the merged batch.
    merged: HashMap<u64, Merge>,
    /// The merged batch each earlier part went into.
    into_by_earlier: HashMap<u64, u64>,
}

impl Lineage {
    /// Batch `into` is `earlier`'s rows followed by `later`'s (identity
    /// and row count of each).
    pub fn record(&mut self, earlier: (u64, usize), later: (u64, usize), into: u64) {
        self.merged.insert(into, Merge { earlier, later });
        self.into_by_earlier.insert(earlier.0, into);
    }

    pub fn is_empty(&self) -> bool {
        self.merged.is_empty()
    }

    /// The parts batch `into` was merged from.
    pub(super) fn parts(&self, into: u64) -> Option<Merge> {
        self.merged.get(&into).copied()
    }

    /// `ids` (consecutive batches) with every two that were merged, side by
    /// side and in order, replaced by the batch they were merged into, as
    /// often as merges of merged batches allow. Parts that are not side by
    /// side stay as they are.
    pub(crate) fn rename(&self, ids: &[u64]) -> Vec<u64> {
        let mut renamed: Vec<u64> = Vec::with_capacity(ids.len());
        for &id in ids {
            renamed.push(id);
            // The batch just pushed may complete a merge with the one
            // before it, and the result a merge with the one before that.
            while let [.., earlier, later] = renamed[..] {
                let Some(&into) = self.into_by_earlier.get(&earlier) else {
                    break;
                };
                if self.merged[&into].later.0 != later {
                    break;
                }
                renamed.truncate(renamed.len() - 2);
                renamed.push(into);
            }
        }
        renamed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_parts_side_by_side_are_renamed_also_when_merged_again() {
        let mut lineage = Lineage::default();
        lineage.record((1, 3), (2, 3), 10);
        lineage.record((10, 6), (3, 5), 11);
        lineage.record((4, 1), (5, 1), 12);
        assert_eq!(lineage.rename(&[0, 1, 2, 3, 4, 5, 6]), [0, 11, 12, 6]);
        assert_eq!(lineage.rename(&[1, 2]), [10]);
        // Parts apart, or out of order, are not a merged batch.
        assert_eq!(lineage.rename(&[1, 3, 2]), [1, 3, 2]);
        assert_eq!(lineage.rename(&[2, 1]), [2, 1]);
        // One part alone (the other in another run) stays.
        assert_eq!(lineage.rename(&[0, 1]), [0, 1]);
        assert_eq!(lineage.rename(&[2, 3]), [2, 3]);
        assert_eq!(
            lineage.parts(11),
            Some(Merge {
                earlier: (10, 6),
                later: (3, 5)
            })
        );
        assert_eq!(lineage.parts(1), None);
        assert!(!lineage.is_empty());
        assert!(Lineage::default().rename(&[1, 2]) == [1, 2]);
    }
}
