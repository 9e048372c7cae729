//! The rows a filtered scan kept of retained batches, gathered into runs.
//!
//! A re-scan rule reads the same retained batches at every emission. Its
//! filtered scans ([`super::cache_scan_filters`]) evaluate their filter once
//! per batch; they also keep the rows that passed, projected and gathered
//! into *runs* of consecutive batches, with their derived projections
//! applied (what a run keeps is the scan's output, computed once). An
//! emission then copies no row of a full run again, and pays per run
//! rather than per retained batch.
//!
//! A scan with time bounds (a delta scan's trigger side) keeps only each
//! run's time range: it reads the rows of the runs its bounds reach, the
//! new events, and skips the others; keeping its rows, which every later
//! emission skips, would only hold memory.
//!
//! Invariant: a run holds exactly the scan's output, before time bounds, for
//! the batches it names, in slot order. It is reused only where the slot
//! holds those batches consecutively and in that order. Batch identities
//! name batches that never change, so its rows are those a new scan of
//! them would give. Two of its batches merged into one (side by side, in
//! order) are renamed as that one: its rows are theirs, in the same order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::aggregate::{max, min};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};

use super::{CachedFilter, Contents, Lineage, Selection, SlotExec};

/// Most batches in one run. Eviction cuts the oldest run; what it still
/// holds is gathered again (from the filter's kept selections, without
/// evaluating it), so this bounds that work per emission.
pub(super) const MAX_RUN_BATCHES: usize = 16;

/// The kept rows of consecutive identified batches.
#[derive(Debug)]
pub(super) struct KeptRun {
    /// The batches, in slot order.
    ids: Vec<u64>,
    /// `None` for a scan with time bounds: those of its rows within the
    /// bounds are read again from the batches.
    rows: Option<Vec<RecordBatch>>,
    /// Least and greatest value of the time-bounds column among the kept
    /// rows (`None`: no row has one, or the scan has no time bounds).
    times: Option<(i64, i64)>,
    /// How many rows it kept.
    kept: usize,
}

/// What a run takes in of the batches after some slot position: `what`
/// of their kept rows, for this many batches and kept rows.
struct Taken<T> {
    what: T,
    batches: usize,
    kept: usize,
}

/// The runs of the last execution (in slot order) with the batches merged
/// since named as the batch they became: within a run, its rows stay as
/// they are; across two runs, the two become one run holding the rows of
/// both, if it is not too long (otherwise their batches are gathered
/// again).
fn renamed(runs: Vec<Arc<KeptRun>>, lineage: &Lineage) -> Vec<Arc<KeptRun>> {
    if lineage.is_empty() {
        return runs;
    }
    let mut renamed: Vec<Arc<KeptRun>> = Vec::with_capacity(runs.len());
    for run in runs {
        let run = run.renamed(lineage);
        match renamed
            .last()
            .and_then(|before| before.joined(&run, lineage))
        {
            Some(joined) => *renamed.last_mut().expect("a run before") = Arc::new(joined),
            None => renamed.push(run),
        }
    }
    renamed
}

impl KeptRun {
    /// The run with batches merged since it was gathered named as the
    /// batch they became (their rows, in order, are that batch's).
    fn renamed(self: Arc<Self>, lineage: &Lineage) -> Arc<Self> {
        let ids = lineage.rename(&self.ids);
        if ids.len() == self.ids.len() {
            return self;
        }
        Arc::new(KeptRun {
            ids,
            rows: self.rows.clone(),
            times: self.times,
            kept: self.kept,
        })
    }

    /// This run and `next`, the run after it, as one, when a batch of each
    /// was merged into one batch and the run is not too long.
    fn joined(&self, next: &KeptRun, lineage: &Lineage) -> Option<KeptRun> {
        let both: Vec<u64> = self.ids.iter().chain(&next.ids).copied().collect();
        let ids = lineage.rename(&both);
        if ids.len() == both.len() || ids.len() > MAX_RUN_BATCHES {
            return None;
        }
        let rows = match (&self.rows, &next.rows) {
            (Some(a), Some(b)) => Some(a.iter().chain(b).cloned().collect()),
            (None, None) => None,
            _ => return None,
        };
        let times = match (self.times, next.times) {
            (Some(a), Some(b)) => Some(widen(Some(a), b)),
            (a, b) => a.or(b),
        };
        Some(KeptRun {
            ids,
            rows,
            times,
            kept: self.kept + next.kept,
        })
    }

    #[cfg(test)]
    pub(super) fn batches(&self) -> usize {
        self.ids.len()
    }
}

/// The output of a filtered scan over identified batches: runs reused
/// where the slot still holds them, gathered anew elsewhere, as the stream
/// is polled.
pub(super) struct KeptScan {
    scan: SlotExec,
    filter: Arc<CachedFilter>,
    schema: SchemaRef,
    /// The slot's batches, every one identified.
    contents: Arc<Contents>,
    /// The next slot position to read.
    position: usize,
    /// The runs of the previous execution, by their first batch.
    previous: HashMap<u64, Arc<KeptRun>>,
    /// The time-bounds column and the range of this execution.
    bounds: Option<(usize, (i64, i64))>,
    batch_size: usize,
    ready: VecDeque<RecordBatch>,
}

impl KeptScan {
    pub(super) fn new(
        scan: SlotExec,
        filter: Arc<CachedFilter>,
        contents: Arc<Contents>,
        bounds: Option<(usize, (i64, i64))>,
        batch_size: usize,
    ) -> Self {
        let previous = renamed(filter.take_runs(), &contents.lineage)
            .into_iter()
            .map(|run| (run.ids[0], run))
            .collect();
        KeptScan {
            schema: scan.scanned.clone(),
            scan,
            filter,
            contents,
            position: 0,
            previous,
            bounds,
            batch_size,
            ready: VecDeque::new(),
        }
    }

    /// The identities of the slot's batches, in slot order.
    fn ids(&self) -> &[u64] {
        self.contents.ids.as_deref().unwrap_or_default()
    }

    /// The previous run starting at the current position, if the slot
    /// holds all of its batches from there.
    fn reusable(&mut self) -> Option<Arc<KeptRun>> {
        let first = self.ids()[self.position];
        let run = self.previous.remove(&first)?;
        self.ids()[self.position..]
            .starts_with(&run.ids)
            .then_some(run)
    }

    /// Whether `run`, reusable at the current position, ended at the
    /// slot's end with room left and batches were retained after it: it
    /// is extended with them, so runs grow to their size instead of one
    /// run per emission.
    fn extendable(&self, run: &KeptRun) -> bool {
        let next = self.position + run.ids.len();
        let room = run.ids.len() < MAX_RUN_BATCHES && run.kept < self.batch_size;
        room && next < self.ids().len() && !self.previous.contains_key(&self.ids()[next])
    }

    /// How many batches from slot position `start` a run that already
    /// holds `batches` batches and `gathered` kept rows takes in: up to
    /// [`MAX_RUN_BATCHES`] or a session batch of kept rows, and never into
    /// the start of a previous run (that one may be reused). `kept(at)`
    /// gives the rows kept of the batch at slot position `at`.
    fn run_length(
        &self,
        start: usize,
        (batches, mut gathered): (usize, usize),
        mut kept: impl FnMut(usize) -> Result<usize>,
    ) -> Result<usize> {
        let mut end = start;
        while end < self.ids().len()
            && batches + end - start < MAX_RUN_BATCHES
            && gathered < self.batch_size
        {
            if batches + end > start && self.previous.contains_key(&self.ids()[end]) {
                break;
            }
            gathered += kept(end)?;
            end += 1;
        }
        Ok(end - start)
    }

    /// A new run from the current position, holding its rows (a scan
    /// without time bounds) in one batch of exactly their size.
    fn gather(&self) -> Result<KeptRun> {
        let taken = self.gather_from(self.position, (0, 0))?;
        Ok(KeptRun {
            ids: self.ids()[self.position..self.position + taken.batches].to_vec(),
            rows: Some(taken.what),
            times: None,
            kept: taken.kept,
        })
    }

    /// The kept rows of the batches from slot position `start` that a run
    /// holding `(batches, kept)` takes in, derived, in one batch.
    fn gather_from(
        &self,
        start: usize,
        (batches, already): (usize, usize),
    ) -> Result<Taken<Vec<RecordBatch>>> {
        let (mut scanned, mut kept) = (Vec::new(), 0);
        let length = self.run_length(start, (batches, already), |at| {
            let (batch, selected) = self.scan.scan(
                self.contents.batches[at].clone(),
                Some(self.ids()[at]),
                None,
            )?;
            let n = match &selected {
                Selection::None => 0,
                Selection::All => batch.num_rows(),
                Selection::Rows(keep) => keep.true_count(),
            };
            scanned.push((batch, selected));
            kept += n;
            Ok(n)
        })?;
        let mut coalescer = BatchCoalescer::new(self.schema.clone(), kept.max(1));
        for (batch, selected) in scanned {
            match selected {
                Selection::None => {}
                Selection::All => coalescer.push_batch(batch)?,
                Selection::Rows(keep) => coalescer.push_batch_with_filter(batch, &keep)?,
            }
        }
        let rows = self
            .finish(coalescer)?
            .into_iter()
            .map(|b| self.scan.derive(b))
            .collect::<Result<Vec<_>>>()?;
        Ok(Taken {
            what: rows,
            batches: length,
            kept,
        })
    }

    /// `run` with the batches retained after it taken in: their kept rows
    /// gathered and derived, and appended to the run's rows (or their time
    /// range widening the run's, for a scan with time bounds). The run's
    /// own batches are not read again.
    fn extend(&self, run: &KeptRun) -> Result<KeptRun> {
        let next = self.position + run.ids.len();
        let held = (run.ids.len(), run.kept);
        let (rows, times, (batches, kept)) = match (&run.rows, self.bounds) {
            (Some(rows), _) => {
                let new = self.gather_from(next, held)?;
                let rows = concat(rows.iter().chain(&new.what))?;
                (Some(rows), None, (new.batches, new.kept))
            }
            (None, Some((column, _))) => {
                let new = self.measure_from(next, held, column)?;
                let times = match new.what {
                    Some(added) => Some(widen(run.times, added)),
                    None => run.times,
                };
                (None, times, (new.batches, new.kept))
            }
            // A run without rows is made by a scan with time bounds only.
            (None, None) => return self.gather(),
        };
        Ok(KeptRun {
            ids: self.ids()[self.position..next + batches].to_vec(),
            rows,
            times,
            kept: run.kept + kept,
        })
    }

    /// A new run from the current position, holding only the time range of
    /// its kept rows in time-bounds column `column`.
    fn measure(&self, column: usize) -> Result<KeptRun> {
        let taken = self.measure_from(self.position, (0, 0), column)?;
        Ok(KeptRun {
            ids: self.ids()[self.position..self.position + taken.batches].to_vec(),
            rows: None,
            times: taken.what,
            kept: taken.kept,
        })
    }

    /// The time range, in column `column`, of the kept rows of the batches
    /// from slot position `start` that a run holding `(batches, kept)`
    /// takes in.
    fn measure_from(
        &self,
        start: usize,
        (batches, already): (usize, usize),
        column: usize,
    ) -> Result<Taken<Option<(i64, i64)>>> {
        let mut times: Option<(i64, i64)> = None;
        let mut kept = 0;
        let length = self.run_length(start, (batches, already), |at| {
            let (batch, selected) = self.scan.scan(
                self.contents.batches[at].clone(),
                Some(self.ids()[at]),
                None,
            )?;
            let column = match selected {
                Selection::None => return Ok(0),
                Selection::All => batch.column(column).clone(),
                Selection::Rows(keep) => {
                    datafusion::arrow::compute::filter(batch.column(column), &keep)?
                }
            };
            if let Some(range) = time_range(&column)? {
                times = Some(widen(times, range));
            }
            kept += column.len();
            Ok(column.len())
        })?;
        Ok(Taken {
            what: times,
            batches: length,
            kept,
        })
    }

    /// Push the kept rows of the batch at slot position `at` (within
    /// `bounds`, if given); returns how many.
    fn push(
        &self,
        coalescer: &mut BatchCoalescer,
        at: usize,
        bounds: Option<(usize, (i64, i64))>,
    ) -> Result<usize> {
        let (batch, selected) = self.scan.scan(
            self.contents.batches[at].clone(),
            Some(self.ids()[at]),
            bounds,
        )?;
        Ok(match selected {
            Selection::None => 0,
            Selection::All => {
                let n = batch.num_rows();
                coalescer.push_batch(batch)?;
                n
            }
            Selection::Rows(keep) => {
                let n = keep.true_count();
                coalescer.push_batch_with_filter(batch, &keep)?;
                n
            }
        })
    }

    fn finish(&self, mut coalescer: BatchCoalescer) -> Result<Vec<RecordBatch>> {
        coalescer.finish_buffered_batch()?;
        Ok(std::iter::from_fn(|| coalescer.next_completed_batch()).collect())
    }

    /// Queue the rows of `run`, at the current position, within this
    /// execution's time bounds: a run the bounds do not reach is skipped;
    /// of one they reach, only the rows within them are copied.
    fn emit(&mut self, run: &KeptRun) -> Result<()> {
        if let Some(rows) = &run.rows {
            self.ready.extend(rows.iter().cloned());
            return Ok(());
        }
        let (after, through) = self.bounds.map_or((i64::MIN, i64::MAX), |(_, range)| range);
        let every_time = (after, through) == (i64::MIN, i64::MAX);
        match run.times {
            _ if every_time => {}
            None => return Ok(()),
            Some((least, greatest)) if greatest <= after || least > through => return Ok(()),
            Some(_) => {}
        }
        let mut coalescer = BatchCoalescer::new(self.schema.clone(), self.batch_size);
        for at in self.position..self.position + run.ids.len() {
            self.push(&mut coalescer, at, self.bounds)?;
            self.ready
                .extend(std::iter::from_fn(|| coalescer.next_completed_batch()));
        }
        let rest = self.finish(coalescer)?;
        self.ready.extend(rest);
        Ok(())
    }

    fn advance(&mut self) -> Result<()> {
        let run = match (self.reusable(), self.bounds) {
            (Some(run), _) if self.extendable(&run) => Arc::new(self.extend(&run)?),
            (Some(run), _) => run,
            (None, None) => Arc::new(self.gather()?),
            (None, Some((column, _))) => Arc::new(self.measure(column)?),
        };
        self.emit(&run)?;
        self.position += run.ids.len();
        self.filter.keep_run(run);
        Ok(())
    }
}

/// A scan dropped before its end (a hash join whose build side is empty
/// does not read its probe side) leaves the runs of the last execution it
/// did not reach for the next one, in slot order, instead of gathering
/// their batches again then.
impl Drop for KeptScan {
    fn drop(&mut self) {
        if self.previous.is_empty() {
            return;
        }
        let at: HashMap<u64, usize> = self.ids()[self.position..]
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, self.position + i))
            .collect();
        let previous = std::mem::take(&mut self.previous);
        let ids = self.ids();
        let mut left: Vec<(usize, Arc<KeptRun>)> = previous
            .into_iter()
            .filter_map(|(first, run)| Some((*at.get(&first)?, run)))
            .filter(|(start, run)| ids[*start..].starts_with(&run.ids))
            .collect();
        left.sort_by_key(|(start, _)| *start);
        for (_, run) in left {
            self.filter.keep_run(run);
        }
    }
}

impl Iterator for KeptScan {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            if self.position >= self.ids().len() {
                return None;
            }
            if let Err(e) = self.advance() {
                self.position = self.ids().len();
                return Some(Err(e));
            }
        }
    }
}

/// `batches` as one batch (none when there are none).
fn concat<'a>(batches: impl Iterator<Item = &'a RecordBatch>) -> Result<Vec<RecordBatch>> {
    let batches: Vec<&RecordBatch> = batches.collect();
    match batches.as_slice() {
        [] => Ok(Vec::new()),
        [one] => Ok(vec![(*one).clone()]),
        [first, ..] => Ok(vec![datafusion::arrow::compute::concat_batches(
            &first.schema(),
            batches.iter().copied(),
        )?]),
    }
}

/// Least and greatest non-null value of a nanosecond timestamp array.
fn time_range(times: &ArrayRef) -> Result<Option<(i64, i64)>> {
    let times = times
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| {
            DataFusionError::Internal(
                "the time-bounds column of a delta scan is not a nanosecond timestamp".into(),
            )
        })?;
    Ok(min(times).zip(max(times)))
}

/// `range` widened to take in `(least, greatest)`.
fn widen(range: Option<(i64, i64)>, (least, greatest): (i64, i64)) -> (i64, i64) {
    match range {
        None => (least, greatest),
        Some((l, g)) => (l.min(least), g.max(greatest)),
    }
}
