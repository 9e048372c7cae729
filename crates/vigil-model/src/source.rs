//! Event sources: which kinds of events Vigil reads, and where a raw message
//! came from.
//!
//! A [`RawMessage`] is one unit of input (one Kafka record, or one line of a
//! replayed file) before decoding. Its [`Origin`] travels with every event it
//! yields, into alerts and dead-letter records, so any output can be traced
//! back to the exact input that caused it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A kind of event stream Vigil reads, named by its SQL table. Each is one
/// table, one Kafka topic and one decoder: the sources crate's registry
/// (`vigil_sources::registry`) holds what Vigil knows about each one, and
/// is where a source is added. The model only names sources.
///
/// A `SourceKind` is a table name: two are equal when their names are, and
/// they order by name. Names parsed from text (a rule header, a test case,
/// a dead letter read back) are interned, one copy per distinct name; the
/// registry says whether a name is a source Vigil can read.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKind(&'static str);

#[allow(non_upper_case_globals)]
impl SourceKind {
    /// Kubernetes API-server audit events (audit.k8s.io/v1 Event / EventList).
    pub const K8sAudit: SourceKind = SourceKind("k8s_audit");
    /// Falco JSON output alerts.
    pub const Falco: SourceKind = SourceKind("falco");
    /// Cilium Tetragon JSON events.
    pub const Tetragon: SourceKind = SourceKind("tetragon");

    /// The source whose table is `table` (a registry entry's name).
    pub const fn named(table: &'static str) -> SourceKind {
        SourceKind(table)
    }

    /// The SQL table name rules use for this source.
    pub fn table_name(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Why a text is not a source name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSourceName(pub String);

impl fmt::Display for BadSourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid source name {:?}: a table name is lowercase letters, digits and _",
            self.0
        )
    }
}

impl std::error::Error for BadSourceName {}

impl FromStr for SourceKind {
    type Err = BadSourceName;
    /// Any table-name-shaped text; whether Vigil reads such a source is
    /// the registry's to say.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shaped = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !shaped {
            return Err(BadSourceName(s.to_string()));
        }
        Ok(SourceKind(intern(s)))
    }
}

/// One `'static` copy per distinct name. Names come from configuration,
/// rule files and test data, never from events, so the set stays small.
fn intern(name: &str) -> &'static str {
    use std::collections::BTreeSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    for known in [
        SourceKind::K8sAudit,
        SourceKind::Falco,
        SourceKind::Tetragon,
    ] {
        if known.0 == name {
            return known.0;
        }
    }
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = names.get(name) {
        return existing;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

impl Serialize for SourceKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for SourceKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a raw message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A Kafka record.
    Kafka {
        /// Shared by the records of a fetch: a reference count per record,
        /// not a copy of the name.
        #[serde(with = "shared_str")]
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    /// A line of a replayed file (1-based); `path` is `-` for stdin.
    File {
        #[serde(with = "shared_str")]
        path: Arc<str>,
        line: u64,
    },
}

/// An `Arc<str>` as a JSON string (serde's own impls need its `rc`
/// feature, which would rebuild every crate that uses serde).
mod shared_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(deserializer).map(Arc::from)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_written_and_read_as_json_strings() {
        let cases = [
            (
                Origin::Kafka {
                    topic: "k8s-audit".into(),
                    partition: 3,
                    offset: 42,
                },
                r#"{"kind":"kafka","topic":"k8s-audit","partition":3,"offset":42}"#,
            ),
            (
                Origin::File {
                    path: "-".into(),
                    line: 7,
                },
                r#"{"kind":"file","path":"-","line":7}"#,
            ),
        ];
        for (origin, json) in cases {
            assert_eq!(serde_json::to_string(&origin).unwrap(), json);
            assert_eq!(serde_json::from_str::<Origin>(json).unwrap(), origin);
        }
    }
}
