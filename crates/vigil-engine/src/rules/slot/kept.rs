//! The rows a filtered scan kept of retained batches, gathered into runs.
//!
//! A re-scan rule reads the same retained batches at every emission. Its
//! filtered scans ([`super::cache_scan_filters`]) evaluate their filter once
//! per batch; they also keep the rows that passed, projected and gathered
//! into *runs* of consecutive batches. An emission then copies no row it
//! copied before, and pays per run rather than per retained batch. A run
//! knows the time range of its rows, so a delta scan skips, or takes whole,
//! every run outside or inside its bounds.
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
    rows: Vec<RecordBatch>,
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
            schema: scan.properties.eq_properties.schema().clone(),
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
    /// previous run (that one may be reused).
    fn gather(&self) -> Result<KeptRun> {
        let start = self.position;
        let mut coalescer = BatchCoalescer::new(self.schema.clone(), self.batch_size);
        let mut rows = Vec::new();
        let (mut end, mut gathered) = (start, 0);
        while end < self.ids.len() && end - start < MAX_RUN_BATCHES && gathered < self.batch_size
        {
            if end > start && self.previous.contains_key(&self.ids[end]) {
                break;
            }
            let (batch, selected) =
                self.scan
                    .scan(self.batches[end].clone(), Some(self.ids[end]), None)?;
            match selected {
                Selection::None => {}
                Selection::All => {
                    gathered += batch.num_rows();
                    coalescer.push_batch(batch)?;
                }
                Selection::Rows(keep) => {
                    gathered += keep.true_count();
                    coalescer.push_batch_with_filter(batch, &keep)?;
                }
            }
            rows.extend(std::iter::from_fn(|| coalescer.next_completed_batch()));
            end += 1;
        }
        coalescer.finish_buffered_batch()?;
        rows.extend(std::iter::from_fn(|| coalescer.next_completed_batch()));
        let times = match self.bounds {
            Some((column, _)) => time_range(&rows, column)?,
            None => None,
        };
        Ok(KeptRun {
            ids: self.ids[start..end].to_vec(),
            rows,
            times,
        })
    }

    /// Queue the rows of `run` within this execution's time bounds.
    fn emit(&mut self, run: &KeptRun) -> Result<()> {
        let Some((column, range)) = self.bounds.filter(|(_, r)| *r != (i64::MIN, i64::MAX)) else {
            self.ready.extend(run.rows.iter().cloned());
            return Ok(());
        };
        let (after, through) = range;
        match run.times {
            None => {}
            Some((least, greatest)) if greatest <= after || least > through => {}
            Some((least, greatest)) if least > after && greatest <= through => {
                self.ready.extend(run.rows.iter().cloned())
            }
            Some(_) => {
                for batch in &run.rows {
                    match within(batch, column, range)? {
                        Selection::None => {}
                        Selection::All => self.ready.push_back(batch.clone()),
                        Selection::Rows(keep) => {
                            self.ready.push_back(filter_record_batch(batch, &keep)?)
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn advance(&mut self) -> Result<()> {
        let run = match self.reusable() {
            Some(run) => run,
            None => Arc::new(self.gather()?),
        };
        self.position += run.ids.len();
        self.emit(&run)?;
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
