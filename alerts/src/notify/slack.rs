//! Slack incoming webhook: one message per alert, firing or resolved.
//!
//! In: one notification; out: `{"text", "attachments": [{color, title, text, fields, footer}]}`.
//! `text` is the one-line summary Slack shows in notifications: status, alert name, severity,
//! subject, value vs threshold. The attachment adds the top annotations (summary and description
//! first) and the time.

use serde_json::{json, Value};

use super::delivery::{Carried, OutgoingRequest};
use super::{human_value, subject};
use crate::state::{Notification, NotificationStatus};

/// Annotations shown, in this order, before the others (at most [`MAX_FIELDS`] in all).
const FIRST_ANNOTATIONS: [&str; 2] = ["summary", "description"];
/// Most annotation fields in one message.
const MAX_FIELDS: usize = 6;

/// The message body.
pub fn payload(n: &Notification, external_url: &str) -> Value {
    let severity = n.labels.get("severity").map(String::as_str).unwrap_or("none");
    let (marker, color) = match n.status {
        NotificationStatus::Firing => (
            "FIRING",
            if severity == "critical" {
                "danger"
            } else {
                "warning"
            },
        ),
        NotificationStatus::Resolved => ("RESOLVED", "good"),
    };
    let measured = match n.threshold {
        Some(threshold) => format!("{} (threshold {})", human_value(n.value), human_value(threshold)),
        None => human_value(n.value),
    };
    let text = format!(
        "[{marker}] {} ({severity}) — {}: {measured}",
        n.alertname(),
        subject(n)
    );
    let mut names: Vec<&str> = FIRST_ANNOTATIONS
        .iter()
        .copied()
        .filter(|k| n.annotations.contains_key(*k))
        .collect();
    names.extend(
        n.annotations
            .keys()
            .map(String::as_str)
            .filter(|k| !FIRST_ANNOTATIONS.contains(k) && *k != "subject"),
    );
    let fields: Vec<Value> = names
        .into_iter()
        .take(MAX_FIELDS)
        .map(|k| json!({"title": k, "value": n.annotations[k], "short": false}))
        .collect();
    let when = match n.status {
        NotificationStatus::Firing => format!("firing since {}", n.starts_at.format("%Y-%m-%d %H:%M UTC")),
        NotificationStatus::Resolved => format!("resolved at {}", n.ends_at.format("%Y-%m-%d %H:%M UTC")),
    };
    let link = if n.generator_url.is_empty() {
        external_url
    } else {
        n.generator_url.as_str()
    };
    json!({
        "text": text,
        "attachments": [{
            "color": color,
            "fallback": text,
            "title": format!("{} — {}", n.alertname(), subject(n)),
            "title_link": link,
            "text": format!("Value: {measured}"),
            "fields": fields,
            "footer": format!("egress · {when} · fingerprint {}", n.fingerprint),
        }],
    })
}

/// The request for one alert.
pub fn request(url: &str, n: &Notification, external_url: &str) -> OutgoingRequest {
    OutgoingRequest {
        url: url.to_string(),
        headers: Vec::new(),
        body: payload(n, external_url).to_string().into_bytes(),
        carries: vec![Carried {
            fingerprint: n.fingerprint,
            alertname: n.alertname().to_string(),
            status: n.status,
        }],
    }
}
