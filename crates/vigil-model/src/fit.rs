//! Output records that fit the record limit: no input may stall delivery.
//!
//! A record larger than the producer or broker accepts would be retried
//! forever, so one event carrying a few huge fields (a user agent, a URI,
//! an object name) could blind the detector. Before a record is produced,
//! its largest parts are cut until it fits, and the cut is marked in the
//! record; what cannot be made to fit is reported by the caller as a small
//! dead letter naming it.

/// A record that cannot be made to fit even with its parts cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {bytes} bytes even with its largest parts cut, over the record limit of {limit} bytes")]
pub struct RecordTooLarge {
    /// What the record is (`alert <id> of rule <rule>`, `dead letter`, ...).
    pub what: String,
    pub bytes: usize,
    pub limit: usize,
}

/// Text kept of a value cut to nothing useful: below this, cutting more
/// would not make a record fit.
pub const MIN_KEPT_BYTES: usize = 256;

/// Marker appended to cut text.
pub const CUT_MARK: &str = "…[cut]";

/// `text` cut to at most `keep` bytes (at a character boundary), marked.
pub fn cut_text(text: &str, keep: usize) -> String {
    let end = text
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|i| *i <= keep)
        .last()
        .unwrap_or(0);
    format!("{}{CUT_MARK}", &text[..end])
}

/// How much of a part of `size` serialized bytes to keep so that a record
/// `excess` bytes over its limit fits (with room for the cut mark and the
/// note of the cut).
pub fn keep_for(size: usize, excess: usize) -> usize {
    size.saturating_sub(excess + 128).max(MIN_KEPT_BYTES / 2)
}

/// A record's JSON within the limit, and whether parts were cut for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    pub json: String,
    pub cut: bool,
}
