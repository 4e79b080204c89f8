//! Delivery: one HTTP request to one receiver, with retries, every attempt logged.
//!
//! Stage: last step of `notify/`. In: an [`OutgoingRequest`] built by a receiver and its
//! [`RetryPolicy`]; out: delivered or failed, plus one [`DeliveryAttempt`] per attempt and per
//! alert the request carries, handed to a [`DeliveryLog`] (the binary implements it with a
//! ClickHouse writer for the `alert_deliveries` table; [`MemoryDeliveryLog`] serves tests).
//!
//! Retry rules: 2xx = delivered; 429 (honouring `Retry-After`, seconds or HTTP date), 5xx,
//! timeouts and network errors = retry with exponential backoff (initial delay doubled per retry,
//! capped at 60 s); any other status (other 4xx, 3xx) = failed at once. At most
//! `max_attempts` attempts, and no wait that would end past `max_total` from the first attempt.
//! Timers use `tokio::time`, so tests can run them under `tokio::time::pause()`.
//!
//! Traces: one `alert_notification` span per request (receiver, kind, status, alerts, attempts,
//! outcome) with one `alert_delivery_attempt` child per attempt (attempt, HTTP status,
//! outcome), exported when the binary has an OTLP endpoint (`[telemetry]`).

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{field, Instrument};

use crate::config::ReceiverKind;
use crate::labels::Fingerprint;
use crate::state::NotificationStatus;

/// Longest wait between two attempts, whatever the backoff or `Retry-After` says.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Outcome of one attempt (the `alert_deliveries.outcome` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// Accepted by the receiver (2xx).
    Delivered = 0,
    /// Failed, another attempt follows.
    Retrying = 1,
    /// Failed for good.
    Failed = 2,
}

impl DeliveryOutcome {
    /// `delivered`, `retrying`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retrying => "retrying",
            DeliveryOutcome::Failed => "failed",
        }
    }
}

/// One delivery attempt of one alert: a row of the contract's `alert_deliveries` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryAttempt {
    /// When the attempt ended.
    pub time: DateTime<Utc>,
    /// Receiver name.
    pub receiver: String,
    /// `webhook`, `alertmanager`, `slack`, `pagerduty`.
    pub kind: String,
    /// Alert fingerprint (16 hex digits).
    pub fingerprint: String,
    /// The `alertname` label.
    pub alertname: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// HTTP status, 0 when there was no response.
    pub http_status: u16,
    /// Delivered, retrying or failed.
    pub outcome: DeliveryOutcome,
    /// Error text ('' when delivered).
    pub error: String,
}

/// Sink for delivery attempts. Called synchronously from the delivery task: an implementation
/// that writes to a database should queue (e.g. a bounded channel to a batch writer), not block.
pub trait DeliveryLog: Send + Sync + std::fmt::Debug {
    /// Records one attempt.
    fn record(&self, attempt: DeliveryAttempt);
}

/// In-memory [`DeliveryLog`] (tests, and the API's "recent deliveries" if wanted).
#[derive(Debug, Default)]
pub struct MemoryDeliveryLog {
    attempts: Mutex<Vec<DeliveryAttempt>>,
}

impl MemoryDeliveryLog {
    /// A copy of every attempt recorded so far.
    pub fn attempts(&self) -> Vec<DeliveryAttempt> {
        self.attempts.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl DeliveryLog for MemoryDeliveryLog {
    fn record(&self, attempt: DeliveryAttempt) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.push(attempt);
        }
    }
}

/// Retry bounds of one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts, first included (≥ 1).
    pub max_attempts: u32,
    /// Bound on all attempts and waits.
    pub max_total: Duration,
    /// First retry delay; doubled per retry up to [`MAX_BACKOFF`].
    pub initial_backoff: Duration,
}

/// Which alert a request carries (for the log rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// Fingerprint.
    pub fingerprint: Fingerprint,
    /// `alertname` label.
    pub alertname: String,
    /// Firing or resolved.
    pub status: NotificationStatus,
}

/// One HTTP POST ready to send (JSON body, exact bytes so a signature covers them).
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    /// Target URL.
    pub url: String,
    /// Extra headers (e.g. the signature).
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Vec<u8>,
    /// Alerts in the body.
    pub carries: Vec<Carried>,
}

/// What one attempt's response means.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// Try again, no sooner than the given delay if the receiver asked for one.
    Retry(Option<Duration>),
    /// Give up.
    Fail,
}

/// Classifies a response status (None = no response: network error or timeout).
pub fn classify(http_status: Option<u16>, retry_after: Option<Duration>) -> Verdict {
    match http_status {
        Some(200..=299) => Verdict::Delivered,
        Some(429) => Verdict::Retry(retry_after),
        Some(500..=599) | None => Verdict::Retry(None),
        Some(_) => Verdict::Fail,
    }
}

/// Delay before attempt `next_attempt` (≥ 2): the backoff `initial × 2^(n-2)`, or the
/// receiver's `Retry-After` when that is longer, capped at [`MAX_BACKOFF`].
pub fn retry_delay(policy: &RetryPolicy, next_attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exponent = next_attempt.saturating_sub(2).min(16);
    let backoff = policy.initial_backoff.saturating_mul(1u32 << exponent);
    backoff
        .max(retry_after.unwrap_or(Duration::ZERO))
        .min(MAX_BACKOFF)
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Sends `request` with retries; returns whether it was delivered. Every attempt is logged,
/// once per carried alert.
#[tracing::instrument(
    name = "alert_notification",
    skip_all,
    fields(
        receiver = receiver,
        receiver_kind = kind.as_str(),
        status = carried_status(&request.carries),
        alerts = request.carries.len(),
        attempts = field::Empty,
        outcome = field::Empty,
        otel.status_code = field::Empty,
    )
)]
pub async fn deliver(
    client: &reqwest::Client,
    receiver: &str,
    kind: ReceiverKind,
    request: &OutgoingRequest,
    policy: &RetryPolicy,
    log: &dyn DeliveryLog,
) -> bool {
    let started = tokio::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut builder = client
            .post(&request.url)
            .timeout(policy.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let attempt_span = tracing::info_span!(
            "alert_delivery_attempt",
            attempt,
            http_status = field::Empty,
            outcome = field::Empty,
        );
        let (http_status, retry_after, error) = async {
            match builder.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, Utc::now()));
                    let error = if response.status().is_success() {
                        String::new()
                    } else {
                        let body = response.text().await.unwrap_or_default();
                        format!("HTTP {status}: {}", body.chars().take(200).collect::<String>())
                    };
                    (Some(status), retry_after, error)
                }
                Err(err) => (None, None, error_chain(&err)),
            }
        }
        .instrument(attempt_span.clone())
        .await;
        let verdict = classify(http_status, retry_after);
        let next_delay = match &verdict {
            Verdict::Retry(after) if attempt < policy.max_attempts => {
                let delay = retry_delay(policy, attempt + 1, *after);
                (started.elapsed() + delay < policy.max_total).then_some(delay)
            }
            _ => None,
        };
        let outcome = match (&verdict, next_delay) {
            (Verdict::Delivered, _) => DeliveryOutcome::Delivered,
            (_, Some(_)) => DeliveryOutcome::Retrying,
            (_, None) => DeliveryOutcome::Failed,
        };
        attempt_span.record("http_status", http_status.unwrap_or(0));
        attempt_span.record("outcome", outcome.as_str());
        drop(attempt_span);
        if outcome != DeliveryOutcome::Retrying {
            let span = tracing::Span::current();
            span.record("attempts", attempt);
            span.record("outcome", outcome.as_str());
            if outcome == DeliveryOutcome::Failed {
                span.record("otel.status_code", "error");
            }
        }
        let time = Utc::now();
        for carried in &request.carries {
            log.record(DeliveryAttempt {
                time,
                receiver: receiver.to_string(),
                kind: kind.as_str().to_string(),
                fingerprint: carried.fingerprint.to_string(),
                alertname: carried.alertname.clone(),
                status: carried.status.as_str().to_string(),
                attempt,
                http_status: http_status.unwrap_or(0),
                outcome,
                error: error.clone(),
            });
        }
        match (outcome, next_delay) {
            (DeliveryOutcome::Delivered, _) => return true,
            (DeliveryOutcome::Retrying, Some(delay)) => {
                tracing::warn!(receiver, attempt, http_status = http_status.unwrap_or(0), %error, ?delay, "notification not delivered, retrying");
                tokio::time::sleep(delay).await;
            }
            _ => {
                tracing::error!(receiver, attempt, http_status = http_status.unwrap_or(0), %error, "notification lost: delivery failed");
                return false;
            }
        }
    }
}

/// `firing` or `resolved` when every carried alert has that status, else `mixed`.
fn carried_status(carries: &[Carried]) -> &'static str {
    match carries.split_first() {
        Some((first, rest)) if rest.iter().all(|c| c.status == first.status) => first.status.as_str(),
        Some(_) => "mixed",
        None => "",
    }
}

/// An error with its causes (reqwest hides the useful part, e.g. "connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn classification_retries_only_429_5xx_and_network_errors() {
        assert_eq!(classify(Some(200), None), Verdict::Delivered);
        assert_eq!(classify(Some(202), None), Verdict::Delivered);
        assert_eq!(
            classify(Some(429), Some(Duration::from_secs(3))),
            Verdict::Retry(Some(Duration::from_secs(3)))
        );
        assert_eq!(classify(Some(503), None), Verdict::Retry(None));
        assert_eq!(classify(None, None), Verdict::Retry(None));
        assert_eq!(classify(Some(400), None), Verdict::Fail);
        assert_eq!(classify(Some(404), None), Verdict::Fail);
        assert_eq!(classify(Some(301), None), Verdict::Fail);
    }

    #[test]
    fn backoff_doubles_is_capped_and_yields_to_retry_after() {
        let policy = RetryPolicy {
            timeout: Duration::from_secs(5),
            max_attempts: 10,
            max_total: Duration::from_secs(600),
            initial_backoff: Duration::from_secs(1),
        };
        let delays: Vec<u64> = (2..10).map(|n| retry_delay(&policy, n, None).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            retry_delay(&policy, 2, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_delay(&policy, 2, Some(Duration::from_secs(3600))),
            MAX_BACKOFF
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 30).unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
