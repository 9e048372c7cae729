//! AKS: an Event Hubs message from the cluster's diagnostic settings,
//! `{"records":[{"category":"kube-audit","properties":{"log":"<audit
//! event JSON>"}},...]}`. Records of other categories (the diagnostic
//! setting may also send `kube-apiserver`, `guard`, ... logs to the same
//! hub) carry no audit events and are skipped; `kube-audit-admin` is the
//! same audit log without its get and list events.

use serde::Deserialize;

use super::EnvelopeReason;

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    records: Option<Vec<Record<'a>>>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    category: Option<&'a str>,
    properties: Option<Properties>,
}

#[derive(Deserialize)]
struct Properties {
    log: Option<String>,
}

const AUDIT_CATEGORIES: [&str; 2] = ["kube-audit", "kube-audit-admin"];

pub(super) fn unwrap(payload: &[u8]) -> Result<Vec<u8>, EnvelopeReason> {
    // Event Hubs producers may start the body with a UTF-8 byte order mark.
    let payload = payload.strip_prefix(b"\xef\xbb\xbf").unwrap_or(payload);
    let message: Message = super::parse_json(payload)?;
    let records = message.records.ok_or(EnvelopeReason::NoRecords)?;
    let mut logs = Vec::new();
    for (index, record) in records.iter().enumerate() {
        if !record
            .category
            .is_some_and(|c| AUDIT_CATEGORIES.contains(&c))
        {
            continue;
        }
        let log = record
            .properties
            .as_ref()
            .and_then(|p| p.log.as_deref())
            .ok_or_else(|| EnvelopeReason::RecordWithoutLog {
                index,
                category: record.category.unwrap_or("").to_string(),
            })?;
        logs.push(log);
    }
    super::event_list(logs)
}
