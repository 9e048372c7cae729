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
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = AuditFormat::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown audit format {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Why an envelope could not be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format} envelope: {reason}")]
pub struct EnvelopeError {
    pub format: AuditFormat,
    pub reason: String,
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
fn event_list<'a>(events: impl IntoIterator<Item = &'a str>) -> Result<Vec<u8>, String> {
    let mut out = String::from(r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":["#);
    for (i, text) in events.into_iter().enumerate() {
        let trimmed = text.trim();
        if !trimmed.starts_with('{') {
            return Err(format!("event {i} is not a JSON object"));
        }
        serde_json::from_str::<&serde_json::value::RawValue>(trimmed)
            .map_err(|e| format!("event {i}: invalid JSON: {e}"))?;
        if i > 0 {
            out.push(',');
        }
        out.push_str(trimmed);
    }
    out.push_str("]}");
    Ok(out.into_bytes())
}

fn parse_json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))
}

#[cfg(test)]
mod tests;
