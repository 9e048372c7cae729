//! The error type of Kafka I/O.

use rdkafka::error::KafkaError;

/// What went wrong talking to Kafka, with what Vigil was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A librdkafka call failed.
    #[error("{doing}: {source}")]
    Kafka {
        doing: String,
        #[source]
        source: KafkaError,
    },
    /// A topic Vigil needs but never creates is missing.
    #[error("the {what} {topic:?} does not exist: create it ({create_with})")]
    MissingTopic {
        what: String,
        topic: String,
        create_with: String,
    },
    /// Records the broker did not acknowledge after every retry.
    #[error("{undelivered} record(s) still undelivered after {attempts} attempts")]
    Undelivered { undelivered: usize, attempts: u32 },
    /// The checkpoint topic could not be read to its end in time.
    #[error("timed out reading the checkpoint topic {topic:?} ({position} of {high})")]
    CheckpointTimeout {
        topic: String,
        position: i64,
        high: i64,
    },
    /// The state topic stopped delivering before its end.
    #[error("reading the state topic {topic:?} partition {partition} stalled at offset {position} of {high}")]
    StateTimeout {
        topic: String,
        partition: i32,
        position: i64,
        high: i64,
    },
    /// A blocking librdkafka call's task panicked or was cancelled.
    #[error("{doing}: {source}")]
    Task {
        doing: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// Exactly-once: offsets to commit without the group's metadata.
    #[error("consumer offsets to commit without the group's metadata")]
    NoGroupMetadata,
    /// The Kafka settings are invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Attach what Vigil was doing to a librdkafka error.
pub(crate) trait Doing<T> {
    fn doing(self, doing: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> Doing<T> for Result<T, KafkaError> {
    fn doing(self, doing: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kafka {
            doing: doing(),
            source,
        })
    }
}

impl<T> Doing<T> for Result<T, tokio::task::JoinError> {
    fn doing(self, doing: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Task {
            doing: doing(),
            source,
        })
    }
}
