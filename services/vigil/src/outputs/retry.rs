//! One delivery with retries and exponential backoff.

use std::future::Future;
use std::time::Duration;

use super::settings::RetrySettings;

/// Why one attempt failed, and whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct AttemptError {
    /// Timeouts, connection failures, HTTP 408, 429 and 5xx: yes. Any other
    /// HTTP 4xx: no, the request itself is refused.
    pub retryable: bool,
    pub reason: String,
}

impl AttemptError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        AttemptError {
            retryable: true,
            reason: reason.into(),
        }
    }
    pub fn permanent(reason: impl Into<String>) -> Self {
        AttemptError {
            retryable: false,
            reason: reason.into(),
        }
    }
}

/// Why a delivery was given up: the reason of a dead letter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    #[error("refused, not retried: {0}")]
    Refused(String),
    #[error("failed {attempts} attempts, the last: {last}")]
    Exhausted { attempts: u32, last: String },
}

/// Run `attempt` until it succeeds, fails permanently, or has run
/// `retry.max_attempts` times; `on_retry` is called before each retry.
pub async fn with_retries<F, Fut>(
    retry: &RetrySettings,
    mut attempt: F,
    mut on_retry: impl FnMut(&AttemptError),
) -> Result<(), DeliveryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), AttemptError>>,
{
    let mut delay = Duration::from_millis(retry.initial_backoff_ms);
    let max_delay = Duration::from_millis(retry.max_backoff_ms);
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(e) if !e.retryable => return Err(DeliveryError::Refused(e.reason)),
            Err(e) if n >= retry.max_attempts => {
                return Err(DeliveryError::Exhausted {
                    attempts: n,
                    last: e.reason,
                })
            }
            Err(e) => {
                on_retry(&e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max_delay);
                n += 1;
            }
        }
    }
}

/// Classify an HTTP response status: 2xx delivered; 408, 429 and 5xx worth
/// retrying; anything else refused.
pub fn http_status(status: reqwest::StatusCode, body: &str) -> Result<(), AttemptError> {
    if status.is_success() {
        return Ok(());
    }
    let body: String = body.chars().take(300).collect();
    let reason = match body.trim() {
        "" => format!("HTTP {status}"),
        text => format!("HTTP {status}: {text}"),
    };
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Err(AttemptError::retryable(reason))
    } else {
        Err(AttemptError::permanent(reason))
    }
}

/// POST `body` and classify the outcome.
pub async fn post(request: reqwest::RequestBuilder, body: Vec<u8>) -> Result<(), AttemptError> {
    let response = request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| AttemptError::retryable(format!("{e:#}")))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    http_status(status, &text)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn fast(max_attempts: u32) -> RetrySettings {
        RetrySettings {
            max_attempts,
            initial_backoff_ms: 1,
            max_backoff_ms: 2,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn retries_until_success_then_stops() {
        let calls = AtomicU32::new(0);
        let mut retries = 0;
        let result = with_retries(
            &fast(5),
            || async {
                if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                    Err(AttemptError::retryable("503"))
                } else {
                    Ok(())
                }
            },
            |_| retries += 1,
        )
        .await;
        assert!(result.is_ok());
        assert_eq!((calls.load(Ordering::Relaxed), retries), (3, 2));
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_or_at_once_when_refused() {
        let calls = AtomicU32::new(0);
        let e = with_retries(
            &fast(3),
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(AttemptError::retryable("timeout"))
            },
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(e.to_string(), "failed 3 attempts, the last: timeout");
        let e = with_retries(
            &fast(3),
            || async { Err(AttemptError::permanent("HTTP 400")) },
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "refused, not retried: HTTP 400");
    }

    #[test]
    fn statuses_are_classified() {
        use reqwest::StatusCode as S;
        assert!(http_status(S::OK, "").is_ok());
        assert!(
            http_status(S::SERVICE_UNAVAILABLE, "")
                .unwrap_err()
                .retryable
        );
        assert!(http_status(S::TOO_MANY_REQUESTS, "").unwrap_err().retryable);
        assert!(!http_status(S::BAD_REQUEST, "bad").unwrap_err().retryable);
        assert!(!http_status(S::UNAUTHORIZED, "").unwrap_err().retryable);
    }
}
