//! Vigil's detection engine: rules written in SQL, planned once with
//! DataFusion and run per micro-batch.
//!
//! * [`rules`]: rule files and packs (overlays, lists, macros, lookups,
//!   exceptions), the per-event [`rules::RuleEngine`] and its DataFusion
//!   extensions (the batch slot, shared conditions, the time budget);
//! * [`correlate`]: windowed correlation with event-time watermarks;
//! * [`functions`]: the SQL functions rules use (the `vigil-functions`
//!   crate, re-exported here);
//! * [`detect`]: decode → per-event rules → correlation for one batch;
//! * [`observe`]: what detection reports, for whoever keeps metrics.
//!
//! It reads sources through `vigil-sources` and speaks the data model of
//! `vigil-model`; it knows nothing of Kafka, HTTP or telemetry export.

pub mod correlate;
pub mod detect;
pub mod forward;
pub mod observe;
pub mod rules;

/// The SQL functions rules use: the `vigil-functions` crate, at the path
/// the engine's modules and its users have always named.
pub use vigil_functions as functions;

// The model and the sources under the paths the engine's modules use.
pub use vigil_model::{alert, dead_letter, source};
pub use vigil_sources::{decode, schema};
