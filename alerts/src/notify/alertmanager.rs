//! Alertmanager API v2 push: `POST {url}/api/v2/alerts` with `[{labels, annotations, startsAt,
//! endsAt, generatorURL}]`.
//!
//! In: one receiver's notifications; out: one request for the whole batch. `endsAt` comes from
//! `state` (firing: now + 4 × resend/evaluation interval, so Alertmanager resolves the alert by
//! itself if Egress stops; resolved: the resolution time, in the past, which resolves it).

use serde_json::{json, Value};

use super::delivery::{Carried, OutgoingRequest};
use super::webhook::rfc3339;
use crate::state::Notification;

/// The API v2 body.
pub fn payload(notifications: &[&Notification]) -> Value {
    Value::Array(
        notifications
            .iter()
            .map(|n| {
                json!({
                    "labels": n.labels,
                    "annotations": n.annotations,
                    "startsAt": rfc3339(n.starts_at),
                    "endsAt": rfc3339(n.ends_at),
                    "generatorURL": n.generator_url,
                })
            })
            .collect(),
    )
}

/// The push request.
pub fn request(base_url: &str, notifications: &[&Notification]) -> OutgoingRequest {
    OutgoingRequest {
        url: format!("{}/api/v2/alerts", base_url.trim_end_matches('/')),
        headers: Vec::new(),
        body: payload(notifications).to_string().into_bytes(),
        carries: notifications
            .iter()
            .map(|n| Carried {
                fingerprint: n.fingerprint,
                alertname: n.alertname().to_string(),
                status: n.status,
            })
            .collect(),
    }
}
