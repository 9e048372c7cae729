//! EKS: a CloudWatch Logs subscription message, as Kinesis Data Streams or
//! Firehose delivers it: gzip-compressed JSON (Firehose may also deliver it
//! as base64 text), or the JSON itself when a forwarder already inflated
//! it. `messageType` `CONTROL_MESSAGE` (the subscription's connectivity
//! check) carries no events.

use std::io::Read;

use base64::Engine;
use serde::Deserialize;

use super::EnvelopeReason;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription<'a> {
    #[serde(borrow)]
    message_type: Option<&'a str>,
    #[serde(default)]
    log_events: Vec<LogEvent>,
}

#[derive(Deserialize)]
struct LogEvent {
    message: String,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

pub(super) fn unwrap(payload: &[u8], max_bytes: usize) -> Result<Vec<u8>, EnvelopeReason> {
    let text = json_text(payload, max_bytes)?;
    let subscription: Subscription = super::parse_json(&text)?;
    match subscription.message_type {
        Some("DATA_MESSAGE") => {}
        Some("CONTROL_MESSAGE") => return super::event_list([]),
        Some(other) => return Err(EnvelopeReason::UnknownMessageType(other.to_string())),
        None => return Err(EnvelopeReason::NoMessageType),
    }
    super::event_list(subscription.log_events.iter().map(|e| e.message.as_str()))
}

/// The subscription JSON: inflated if gzip, decoded first if base64 text.
fn json_text(payload: &[u8], max_bytes: usize) -> Result<Vec<u8>, EnvelopeReason> {
    if payload.starts_with(&GZIP_MAGIC) {
        return gunzip(payload, max_bytes);
    }
    let trimmed = payload.trim_ascii();
    if trimmed.starts_with(b"{") {
        return Ok(trimmed.to_vec());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .map_err(|error| EnvelopeReason::NotJsonGzipOrBase64 { error })?;
    if decoded.starts_with(&GZIP_MAGIC) {
        gunzip(&decoded, max_bytes)
    } else {
        Ok(decoded)
    }
}

/// Inflate at most `max_bytes`: a small message may not expand without
/// bound.
fn gunzip(compressed: &[u8], max_bytes: usize) -> Result<Vec<u8>, EnvelopeReason> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| EnvelopeReason::InvalidGzip(e.to_string()))?;
    if out.len() > max_bytes {
        return Err(EnvelopeReason::InflatesPastLimit { limit: max_bytes });
    }
    Ok(out)
}
