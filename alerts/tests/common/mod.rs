//! Test helpers: a local HTTP receiver that records requests and answers from a script, and
//! notification builders.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, TimeZone, Utc};
use egress_alerts::state::{AlertBook, AlertRule, AlertSample, SampleVerdict};
use egress_alerts::{Notification, Silences};

/// One request the receiver saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// Scripted answers (status, Retry-After); 200 once the script is used up.
    script: VecDeque<(u16, Option<String>)>,
}

/// A local receiver on 127.0.0.1:<ephemeral>.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    notify: Arc<tokio::sync::Notify>,
}

impl Receiver {
    pub async fn start(script: &[(u16, Option<&str>)]) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            requests: Vec::new(),
            script: script.iter().map(|(s, r)| (*s, r.map(str::to_string))).collect(),
        }));
        let notify = Arc::new(tokio::sync::Notify::new());
        let app = axum::Router::new()
            .fallback(record)
            .with_state((inner.clone(), notify.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, inner, notify }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Waits until `count` requests have arrived (or panics after `seconds`).
    pub async fn wait_for(&self, count: usize, seconds: u64) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
        loop {
            let notified = self.notify.notified();
            let seen = self.requests();
            if seen.len() >= count {
                return seen;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {count} requests within {seconds} s, got {}: {seen:#?}",
                    seen.len()
                );
            }
        }
    }
}

type Shared = (Arc<Mutex<Inner>>, Arc<tokio::sync::Notify>);

async fn record(
    State((inner, notify)): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, retry_after) = {
        let mut inner = inner.lock().unwrap();
        inner.requests.push(Recorded {
            path: uri.path().to_string(),
            headers,
            body,
            at: Instant::now(),
        });
        inner.script.pop_front().unwrap_or((200, None))
    };
    notify.notify_waiters();
    let status = StatusCode::from_u16(status).unwrap();
    match retry_after {
        Some(value) => (status, [("retry-after", value)], "scripted").into_response(),
        None => (status, "scripted").into_response(),
    }
}

pub fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(seconds)
}

pub fn rule(name: &str) -> AlertRule {
    AlertRule {
        name: name.into(),
        for_duration: Duration::zero(),
        keep_firing_for: Duration::zero(),
        resend_interval: Duration::seconds(3600),
        evaluation_interval: Duration::seconds(60),
        labels: [("severity".to_string(), "critical".to_string())].into(),
        annotations: [("summary".to_string(), "egress path above 80 %".to_string())].into(),
        generator_url: "http://egress.test/slas/transit-utilisation".into(),
    }
}

pub fn sample(path: &str, verdict: SampleVerdict) -> AlertSample {
    AlertSample {
        labels: [
            ("path".to_string(), path.to_string()),
            ("exporter".to_string(), "edge1".to_string()),
        ]
        .into(),
        annotations: BTreeMap::new(),
        verdict,
        value: 0.93,
        threshold: Some(0.8),
    }
}

/// A firing notification and, later, its resolution, produced by the real state machine
/// starting at `start` (resolved one minute later).
pub fn firing_and_resolved(name: &str, path: &str, start: DateTime<Utc>) -> (Notification, Notification) {
    let mut book = AlertBook::default();
    let silences = Silences::default();
    let r = rule(name);
    let mut fired = book.evaluate(&r, &[sample(path, SampleVerdict::Breaching)], &silences, start);
    let mut resolved = book.evaluate(&r, &[], &silences, start + Duration::seconds(60));
    (fired.remove(0), resolved.remove(0))
}
