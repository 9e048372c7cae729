//! Errors of correlation at run time: ingesting a batch, folding state,
//! emitting windows. (A rule that cannot be planned is a `RuleError` at
//! compile time.) Each names the step that failed.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum CorrelationError {
    #[error("{context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: DataFusionError,
    },
    #[error("{context}: {source}")]
    Arrow {
        context: &'static str,
        #[source]
        source: ArrowError,
    },
    /// A plan produced what the engine does not expect of it.
    #[error("{0}")]
    Unexpected(&'static str),
}

/// Name the step a DataFusion or Arrow error comes from.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, CorrelationError>;
}

impl<T> Context<T> for Result<T, DataFusionError> {
    fn context(self, context: &'static str) -> Result<T, CorrelationError> {
        self.map_err(|source| CorrelationError::Query { context, source })
    }
}

impl<T> Context<T> for Result<T, ArrowError> {
    fn context(self, context: &'static str) -> Result<T, CorrelationError> {
        self.map_err(|source| CorrelationError::Arrow { context, source })
    }
}
