//! Generic webhook: one `POST` per alert of its enriched JSON, signed.
//!
//! Headers: `Content-Type: application/json`, the signature header
//! (default `X-Vigil-Signature`) `sha256=<lower-case hex HMAC-SHA256 of
//! the body with the secret>`, and `Idempotency-Key: <alert_id>`, the key
//! a receiver deduplicates on (delivery is at least once).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::enrich::Routed;
use super::retry::{self, with_retries, AttemptError, DeliveryError};
use super::settings::RetrySettings;

/// A webhook output's endpoint.
pub struct Webhook {
    pub client: reqwest::Client,
    pub url: reqwest::Url,
    pub secret: Vec<u8>,
    pub signature_header: reqwest::header::HeaderName,
}

impl Webhook {
    /// One signed POST of `r`, with retries.
    pub async fn send(
        &self,
        r: &Routed,
        retry: &RetrySettings,
        on_retry: impl FnMut(&AttemptError),
    ) -> Result<(), DeliveryError> {
        let body = r.to_json().into_bytes();
        let signature = signature(&self.secret, &body);
        let attempt = || {
            let request = self
                .client
                .post(self.url.clone())
                .header(self.signature_header.clone(), signature.as_str())
                .header("Idempotency-Key", r.alert.alert_id.as_str());
            retry::post(request, body.clone())
        };
        with_retries(retry, attempt, on_retry).await
    }
}

/// The signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` (for receivers and tests;
/// constant time).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_mac) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn signature_is_hmac_sha256_hex() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = signature(b"k", b"body");
        assert!(verify(b"k", b"body", &s));
        assert!(!verify(b"k", b"body2", &s));
        assert!(!verify(b"k2", b"body", &s));
        assert!(!verify(b"k", b"body", "nope"));
    }
}
