//! Generic webhook receiver: the Alertmanager webhook body, version "4", signed.
//!
//! In: one receiver's notifications; out: one request per `alertname` group, with the header
//! `X-Egress-Signature: sha256=<hex HMAC-SHA256 of the exact body>`. Receivers check it with
//! [`verify_signature`]. Firing alerts carry `endsAt = 0001-01-01T00:00:00Z`, as Alertmanager's
//! own webhook does; resolved ones carry the resolution time.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::delivery::{Carried, OutgoingRequest};
use crate::labels::LabelSet;
use crate::state::{Notification, NotificationStatus, ALERTNAME};

/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "X-Egress-Signature";

/// Alertmanager's zero time, used as `endsAt` of firing alerts.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `sha256=<hex>` for `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Whether `header` (the `X-Egress-Signature` value) is the signature of `body` under `secret`.
/// The comparison is constant-time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    mac(secret, body).verify_slice(&digest).is_ok()
}

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac
}

/// RFC 3339 with seconds, as Alertmanager prints times.
pub(crate) fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Labels (or annotations) shared with the same value by every map.
fn common<'a>(maps: impl Iterator<Item = &'a BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut maps = maps;
    let Some(first) = maps.next() else {
        return BTreeMap::new();
    };
    let mut shared = first.clone();
    for map in maps {
        shared.retain(|k, v| map.get(k) == Some(v));
    }
    shared
}

/// The webhook v4 body for one group.
pub fn payload(receiver: &str, group: &[&Notification], external_url: &str) -> Value {
    let alertname = group.first().map(|n| n.alertname()).unwrap_or("");
    let group_labels: LabelSet = [(ALERTNAME.to_string(), alertname.to_string())].into();
    let status = if group.iter().any(|n| n.status == NotificationStatus::Firing) {
        "firing"
    } else {
        "resolved"
    };
    let alerts: Vec<Value> = group
        .iter()
        .map(|n| {
            let ends_at = match n.status {
                NotificationStatus::Firing => ZERO_TIME.to_string(),
                NotificationStatus::Resolved => rfc3339(n.ends_at),
            };
            json!({
                "status": n.status.as_str(),
                "labels": n.labels,
                "annotations": n.annotations,
                "startsAt": rfc3339(n.starts_at),
                "endsAt": ends_at,
                "generatorURL": n.generator_url,
                "fingerprint": n.fingerprint.to_string(),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={alertname:?}}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common(group.iter().map(|n| &n.labels)),
        "commonAnnotations": common(group.iter().map(|n| &n.annotations)),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// One signed request per `alertname` group.
pub fn requests(
    receiver: &str,
    url: &str,
    secret: &[u8],
    notifications: &[&Notification],
    external_url: &str,
) -> Vec<OutgoingRequest> {
    let mut groups: BTreeMap<&str, Vec<&Notification>> = BTreeMap::new();
    for n in notifications {
        groups.entry(n.alertname()).or_default().push(n);
    }
    groups
        .values()
        .map(|group| {
            let body = payload(receiver, group, external_url).to_string().into_bytes();
            OutgoingRequest {
                url: url.to_string(),
                headers: vec![(SIGNATURE_HEADER.to_string(), sign(secret, &body))],
                carries: group
                    .iter()
                    .map(|n| Carried {
                        fingerprint: n.fingerprint,
                        alertname: n.alertname().to_string(),
                        status: n.status,
                    })
                    .collect(),
                body,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 ("Jefe" / "what do ya want for nothing?").
    #[test]
    fn signature_is_hmac_sha256_hex() {
        let signature = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_signature(
            b"Jefe",
            b"what do ya want for nothing?",
            &signature
        ));
        assert!(!verify_signature(
            b"jefe",
            b"what do ya want for nothing?",
            &signature
        ));
        assert!(!verify_signature(
            b"Jefe",
            b"what do ya want for nothing!",
            &signature
        ));
        assert!(!verify_signature(b"Jefe", b"x", "sha1=00"));
        assert!(!verify_signature(b"Jefe", b"x", "sha256=zz"));
    }
}
