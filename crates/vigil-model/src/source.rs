//! Event sources: which kinds of events Vigil reads, and where a raw message
//! came from.
//!
//! A [`RawMessage`] is one unit of input (one Kafka record, or one line of a
//! replayed file) before decoding. Its [`Origin`] travels with every event it
//! yields, into alerts and dead-letter records, so any output can be traced
//! back to the exact input that caused it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kinds of event stream Vigil understands. Each is one SQL table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Kubernetes API-server audit events (audit.k8s.io/v1 Event / EventList).
    K8sAudit,
    /// Falco JSON output alerts.
    Falco,
    /// Cilium Tetragon JSON events.
    Tetragon,
}

impl SourceKind {
    /// Every source, in a stable order.
    pub const ALL: [SourceKind; 3] = [
        SourceKind::K8sAudit,
        SourceKind::Falco,
        SourceKind::Tetragon,
    ];

    /// The SQL table name rules use for this source.
    pub fn table_name(self) -> &'static str {
        match self {
            SourceKind::K8sAudit => "k8s_audit",
            SourceKind::Falco => "falco",
            SourceKind::Tetragon => "tetragon",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.table_name())
    }
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceKind::ALL
            .into_iter()
            .find(|k| k.table_name() == s)
            .ok_or_else(|| {
                format!("unknown source {s:?}: expected one of k8s_audit, falco, tetragon")
            })
    }
}

/// Where a raw message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A Kafka record.
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A line of a replayed file (1-based); `path` is `-` for stdin.
    File { path: String, line: u64 },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}@{offset}"),
            Origin::File { path, line } => write!(f, "{path}:{line}"),
        }
    }
}

/// One undecoded input message.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub source: SourceKind,
    pub payload: Vec<u8>,
    pub origin: Origin,
    /// Broker/producer timestamp in milliseconds, used as event time only
    /// when the event carries no time of its own.
    pub timestamp_ms: Option<i64>,
    /// Already processed before a restart: re-read only to rebuild
    /// correlation state. Per-event rules, dead letters and late-event
    /// reports skip it (they were produced the first time).
    pub state_only: bool,
}
