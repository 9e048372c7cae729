//! The rows a filtered scan kept of retained batches, gathered into runs.
//!
//! A re-scan rule reads the same retained batches at every emission. Its
//! filtered scans ([`super::cache_scan_filters`]) evaluate their filter once
//! per batch; they also keep the rows that passed, projected and gathered
//! into *runs* of consecutive batches, with their derived projections
//! applied (what a run keeps is the scan's output, computed once). An
//! emission then copies no row it copied before, and pays per run rather
//! than per retained batch.
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
//! them would give.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::kernels::aggregate::{max, min};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};

use super::{within, CachedFilter, Selection, SlotExec};

/// Most batches in one run. Eviction cuts the oldest run; what it still
/// holds is gathered again (from the filter's kept selections, without
/// evaluating it), so this bounds that work per emission.
pub(super) const MAX_RUN_BATCHES: usize = 16;

/// The kept rows of consecutive identified batches.
#[derive(Debug)]
pub(super) struct KeptRun {
    /// The batches, in slot order.
    ids: Vec<u64>,
    /// `None` for a scan with time bounds (gathered again when read).
    rows: Option<Vec<RecordBatch>>,
    /// Least and greatest value of the scan's time-bounds column among the
    /// rows (`None`: no row has one, or the scan has no time bounds).
    times: Option<(i64, i64)>,
}

impl KeptRun {
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
    batches: Vec<RecordBatch>,
    ids: Vec<u64>,
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
        batches: Vec<RecordBatch>,
        ids: Vec<u64>,
        bounds: Option<(usize, (i64, i64))>,
        batch_size: usize,
    ) -> Self {
        let previous = filter
            .take_runs()
            .into_iter()
            .map(|run| (run.ids[0], run))
            .collect();
        KeptScan {
            schema: scan.scanned_schema(),
            scan,
            filter,
            batches,
            ids,
            position: 0,
            previous,
            bounds,
            batch_size,
            ready: VecDeque::new(),
        }
    }

    /// The previous run starting at the current position, if the slot
    /// holds all of its batches from there.
    fn reusable(&mut self) -> Option<Arc<KeptRun>> {
        let run = self.previous.remove(&self.ids[self.position])?;
        self.ids[self.position..]
            .starts_with(&run.ids)
            .then_some(run)
    }

    /// A new run from the current position: up to [`MAX_RUN_BATCHES`]
    /// batches or a session batch of rows, and never into the start of a
    /// previous run (that one may be reused). Returns it and its rows.
    fn gather(&self) -> Result<(KeptRun, Vec<RecordBatch>)> {
        let start = self.position;
        let mut end = start;
        let mut gathered = 0;
        let mut rows = Vec::new();
        let mut coalescer = BatchCoalescer::new(self.schema.clone(), self.batch_size);
        while end < self.ids.len() && end - start < MAX_RUN_BATCHES && gathered < self.batch_size
        {
            if end > start && self.previous.contains_key(&self.ids[end]) {
                break;
            }
            gathered += self.push(&mut coalescer, end)?;
            rows.extend(std::iter::from_fn(|| coalescer.next_completed_batch()));
            end += 1;
        }
        rows.extend(self.finish(coalescer)?);
        let rows = rows
            .into_iter()
            .map(|b| self.scan.derive(b))
            .collect::<Result<Vec<_>>>()?;
        let times = match self.bounds {
            Some((column, _)) => time_range(&rows, column)?,
            None => None,
        };
        let run = KeptRun {
            ids: self.ids[start..end].to_vec(),
            rows: self.bounds.is_none().then(|| rows.clone()),
            times,
        };
        Ok((run, rows))
    }

    /// The rows of the `count` batches from the current position, again.
    fn regather(&self, count: usize) -> Result<Vec<RecordBatch>> {
        let mut coalescer = BatchCoalescer::new(self.schema.clone(), self.batch_size);
        let mut rows = Vec::new();
        for at in self.position..self.position + count {
            self.push(&mut coalescer, at)?;
            rows.extend(std::iter::from_fn(|| coalescer.next_completed_batch()));
        }
        rows.extend(self.finish(coalescer)?);
        rows.into_iter().map(|b| self.scan.derive(b)).collect()
    }

    /// Push the kept rows of the batch at slot position `at`; returns how
    /// many.
    fn push(&self, coalescer: &mut BatchCoalescer, at: usize) -> Result<usize> {
        let (batch, selected) = self
            .scan
            .scan(self.batches[at].clone(), Some(self.ids[at]), None)?;
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

    /// Queue the rows of `run` (`rows`, when just gathered) within this
    /// execution's time bounds.
    fn emit(&mut self, run: &KeptRun, rows: Option<Vec<RecordBatch>>) -> Result<()> {
        let Some((column, range)) = self.bounds.filter(|(_, r)| *r != (i64::MIN, i64::MAX)) else {
            let rows = match rows.or_else(|| run.rows.clone()) {
                Some(rows) => rows,
                None => self.regather(run.ids.len())?,
            };
            self.ready.extend(rows);
            return Ok(());
        };
        let (after, through) = range;
        let whole = match run.times {
            None => return Ok(()),
            Some((least, greatest)) if greatest <= after || least > through => return Ok(()),
            Some((least, greatest)) => least > after && greatest <= through,
        };
        let rows = match rows.or_else(|| run.rows.clone()) {
            Some(rows) => rows,
            None => self.regather(run.ids.len())?,
        };
        if whole {
            self.ready.extend(rows);
            return Ok(());
        }
        for batch in &rows {
            match within(batch, column, range)? {
                Selection::None => {}
                Selection::All => self.ready.push_back(batch.clone()),
                Selection::Rows(keep) => self.ready.push_back(filter_record_batch(batch, &keep)?),
            }
        }
        Ok(())
    }

    fn advance(&mut self) -> Result<()> {
        let (run, rows) = match self.reusable() {
            Some(run) => (run, None),
            None => {
                let (run, rows) = self.gather()?;
                (Arc::new(run), Some(rows))
            }
        };
        self.emit(&run, rows)?;
        self.position += run.ids.len();
        self.filter.keep_run(run);
        Ok(())
    }
}

impl Iterator for KeptScan {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            if self.position >= self.ids.len() {
                return None;
            }
            if let Err(e) = self.advance() {
                self.position = self.ids.len();
                return Some(Err(e));
            }
        }
    }
}

/// Least and greatest non-null value of nanosecond timestamp `column`.
fn time_range(batches: &[RecordBatch], column: usize) -> Result<Option<(i64, i64)>> {
    let mut range: Option<(i64, i64)> = None;
    for batch in batches {
        let times = batch
            .column(column)
            .as_primitive_opt::<TimestampNanosecondType>()
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "column {column} of a delta scan is not a nanosecond timestamp"
                ))
            })?;
        if let (Some(least), Some(greatest)) = (min(times), max(times)) {
            range = Some(match range {
                None => (least, greatest),
                Some((l, g)) => (l.min(least), g.max(greatest)),
            });
        }
    }
    Ok(range)
}
