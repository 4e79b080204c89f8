//! PagerDuty Events API v2: trigger on firing, resolve on resolution, dedup key = fingerprint.
//!
//! In: one notification; out: `{routing_key, event_action, dedup_key, payload: {summary, source,
//! severity, custom_details, timestamp}, client, client_url}`. Severity maps the `severity` label
//! onto PagerDuty's four values (unknown or missing → `error`). A resolve event carries only the
//! keys PagerDuty reads for it.

use serde_json::{json, Value};

use super::delivery::{Carried, OutgoingRequest};
use super::webhook::rfc3339;
use super::{human_value, subject};
use crate::state::{Notification, NotificationStatus};

/// PagerDuty's limit on `summary`.
const MAX_SUMMARY: usize = 1024;

/// PagerDuty severity for a `severity` label value.
pub fn severity(label: Option<&str>) -> &'static str {
    match label.map(str::to_ascii_lowercase).as_deref() {
        Some("critical" | "page") => "critical",
        Some("warning" | "warn") => "warning",
        Some("info" | "none") => "info",
        _ => "error",
    }
}

/// The event body.
pub fn payload(routing_key: &str, n: &Notification, external_url: &str) -> Value {
    let dedup_key = n.fingerprint.to_string();
    match n.status {
        NotificationStatus::Resolved => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        }),
        NotificationStatus::Firing => {
            let mut summary = format!("{}: {} = {}", n.alertname(), subject(n), human_value(n.value));
            if let Some(threshold) = n.threshold {
                summary.push_str(&format!(" (threshold {})", human_value(threshold)));
            }
            if let Some(text) = n.annotations.get("summary") {
                summary.push_str(" — ");
                summary.push_str(text);
            }
            let summary: String = summary.chars().take(MAX_SUMMARY).collect();
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "payload": {
                    "summary": summary,
                    "source": n.labels.get("exporter").cloned().unwrap_or_else(|| subject(n)),
                    "severity": severity(n.labels.get("severity").map(String::as_str)),
                    "timestamp": rfc3339(n.starts_at),
                    "component": n.labels.get("path").cloned().unwrap_or_default(),
                    "group": n.labels.get("sla_kind").cloned().unwrap_or_default(),
                    "class": n.alertname(),
                    "custom_details": {
                        "labels": n.labels,
                        "annotations": n.annotations,
                        "value": n.value,
                        "threshold": n.threshold,
                    },
                },
                "client": "egress",
                "client_url": if n.generator_url.is_empty() { external_url } else { n.generator_url.as_str() },
            })
        }
    }
}

/// The request for one alert.
pub fn request(url: &str, routing_key: &str, n: &Notification, external_url: &str) -> OutgoingRequest {
    OutgoingRequest {
        url: url.to_string(),
        headers: Vec::new(),
        body: payload(routing_key, n, external_url).to_string().into_bytes(),
        carries: vec![Carried {
            fingerprint: n.fingerprint,
            alertname: n.alertname().to_string(),
            status: n.status,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_maps_onto_pagerduty_values() {
        assert_eq!(severity(Some("critical")), "critical");
        assert_eq!(severity(Some("Warning")), "warning");
        assert_eq!(severity(Some("info")), "info");
        assert_eq!(severity(Some("major")), "error");
        assert_eq!(severity(None), "error");
    }
}
