//! Audit envelopes of managed Kubernetes: EKS (CloudWatch Logs
//! subscriptions), AKS (diagnostic settings to Event Hubs) and GKE (Cloud
//! Logging `LogEntry`s). Each is unwrapped into native `audit.k8s.io/v1`
//! JSON (an `EventList` when the envelope carries several events) before
//! the audit decoder reads it, so every rule works unchanged on every
//! provider's events.
//!
//! Unwrapping is all-or-nothing like decoding: an envelope that cannot be
//! unwrapped is a decode failure with the reason, and none of its events
//! is read.

mod aks;
mod eks;
mod gke;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a topic's audit events are wrapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditFormat {
    /// `audit.k8s.io/v1` `Event` or `EventList` JSON, as the API server's
    /// webhook and log backends write it.
    #[default]
    Native,
    /// A CloudWatch Logs subscription message (through Kinesis or
    /// Firehose): `logEvents[].message` each an audit event as a string;
    /// gzip-compressed, or base64 text of gzip, accepted too.
    EksCloudwatch,
    /// An Event Hubs message from AKS diagnostic settings:
    /// `records[]` of category `kube-audit` or `kube-audit-admin`, each
    /// with `properties.log` an audit event as a string.
    AksEventHubs,
    /// A Cloud Logging `LogEntry` whose `protoPayload` is a GKE `AuditLog`.
    GkeCloudLogging,
}

impl AuditFormat {
    pub const ALL: [AuditFormat; 4] = [
        AuditFormat::Native,
        AuditFormat::EksCloudwatch,
        AuditFormat::AksEventHubs,
        AuditFormat::GkeCloudLogging,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditFormat::Native => "native",
            AuditFormat::EksCloudwatch => "eks_cloudwatch",
            AuditFormat::AksEventHubs => "aks_event_hubs",
            AuditFormat::GkeCloudLogging => "gke_cloud_logging",
        }
    }
}

impl fmt::Display for AuditFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditFormat {
    type Err = UnknownAuditFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownAuditFormat(s.to_string()))
    }
}

/// A name that is no [`AuditFormat`]; its text names the valid ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAuditFormat(pub String);

impl fmt::Display for UnknownAuditFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = AuditFormat::ALL.iter().map(|f| f.as_str()).collect();
        write!(
            f,
            "unknown audit format {:?}: expected one of {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownAuditFormat {}

/// Why an envelope could not be unwrapped: the dead letter's reason is
/// its text, `<format> envelope: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format} envelope: {reason}")]
pub struct EnvelopeError {
    pub format: AuditFormat,
    pub reason: EnvelopeReason,
}

/// What is wrong with an envelope. Quoted third-party errors (serde_json,
/// flate2) are kept as their text: `EnvelopeError` is `Clone` and `Eq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeReason {
    /// The envelope itself is not JSON of the expected shape.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Event `index` of the envelope is not a JSON object.
    #[error("event {index} is not a JSON object")]
    EventNotAnObject { index: usize },
    /// Event `index` of the envelope starts as an object but is not JSON.
    #[error("event {index}: invalid JSON: {error}")]
    EventInvalidJson { index: usize, error: String },
    /// EKS: the payload starts neither as JSON nor as gzip, and is not
    /// base64 either.
    #[error("neither JSON, gzip nor base64: {error}")]
    NotJsonGzipOrBase64 { error: base64::DecodeError },
    /// EKS: the gzip stream is broken.
    #[error("invalid gzip: {0}")]
    InvalidGzip(String),
    /// EKS: the gzip stream inflates past the message limit.
    #[error("inflates to more than the limit of {limit} bytes")]
    InflatesPastLimit { limit: usize },
    /// EKS: a `messageType` other than `DATA_MESSAGE` and `CONTROL_MESSAGE`.
    #[error("unknown messageType {0:?}")]
    UnknownMessageType(String),
    /// EKS: no `messageType` at all.
    #[error("no messageType: not a CloudWatch Logs subscription message")]
    NoMessageType,
    /// AKS: no `records` array.
    #[error("no \"records\" array: not an Azure diagnostic logs message")]
    NoRecords,
    /// AKS: an audit record without `properties.log`.
    #[error("record {index} ({category}) has no properties.log")]
    RecordWithoutLog { index: usize, category: String },
    /// GKE: no `protoPayload` object.
    #[error("no protoPayload object: not a Cloud Audit Logs LogEntry")]
    NoProtoPayload,
    /// GKE: a Kubernetes `methodName` (given without its `io.k8s.`) of
    /// another shape.
    #[error("methodName io.k8s.{0} is not group.version.resource.verb")]
    BadMethodName(String),
    /// GKE: a `resourceName` of another shape.
    #[error("resourceName {0:?} is not group/version/.../resource[/name]")]
    BadResourceName(String),
}

/// The native audit JSON inside `payload`, a message of `format`, at most
/// `max_bytes` long once unpacked (compressed envelopes are bounded by it
/// while they are inflated). `None` for [`AuditFormat::Native`]: the
/// payload is read as it is.
pub fn unwrap(
    format: AuditFormat,
    payload: &[u8],
    max_bytes: usize,
) -> Option<Result<Vec<u8>, EnvelopeError>> {
    let result = match format {
        AuditFormat::Native => return None,
        AuditFormat::EksCloudwatch => eks::unwrap(payload, max_bytes),
        AuditFormat::AksEventHubs => aks::unwrap(payload),
        AuditFormat::GkeCloudLogging => gke::unwrap(payload),
    };
    Some(result.map_err(|reason| EnvelopeError { format, reason }))
}

/// An `EventList` of audit events given as JSON texts, each checked to be
/// one JSON object (the audit decoder checks the rest).
fn event_list<'a>(events: impl IntoIterator<Item = &'a str>) -> Result<Vec<u8>, EnvelopeReason> {
    let mut out = String::from(r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":["#);
    for (index, text) in events.into_iter().enumerate() {
        let trimmed = text.trim();
        if !trimmed.starts_with('{') {
            return Err(EnvelopeReason::EventNotAnObject { index });
        }
        serde_json::from_str::<&serde_json::value::RawValue>(trimmed).map_err(|e| {
            EnvelopeReason::EventInvalidJson {
                index,
                error: e.to_string(),
            }
        })?;
        if index > 0 {
            out.push(',');
        }
        out.push_str(trimmed);
    }
    out.push_str("]}");
    Ok(out.into_bytes())
}

fn parse_json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, EnvelopeReason> {
    serde_json::from_slice(payload).map_err(|e| EnvelopeReason::InvalidJson(e.to_string()))
}

#[cfg(test)]
mod tests;
