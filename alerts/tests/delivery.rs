//! Delivery against a local HTTP receiver: signatures, retries on 5xx / 429 (Retry-After),
//! none on other 4xx, network errors, bounded attempts, routing, payloads of every kind, and
//! the delivery log.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{firing_and_resolved, t, Receiver};
use egress_alerts::config::{AlertingConfig, ReceiverKind};
use egress_alerts::notify::delivery::{DeliveryOutcome, MemoryDeliveryLog, RetryPolicy};
use egress_alerts::notify::{verify_signature, Notifier, Target};
use egress_alerts::Notification;

const SECRET: &[u8] = b"shared-webhook-secret";

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_secs(5),
        max_attempts,
        max_total: Duration::from_secs(20),
        initial_backoff: Duration::from_millis(20),
    }
}

fn notifier(target: Target, max_attempts: u32) -> (Notifier, Arc<MemoryDeliveryLog>) {
    let log = Arc::new(MemoryDeliveryLog::default());
    let receiver = egress_alerts::notify::Receiver {
        name: "hook".into(),
        target,
        policy: policy(max_attempts),
    };
    (
        Notifier::new(vec![receiver], "http://egress.test".into(), log.clone()).unwrap(),
        log,
    )
}

fn webhook(receiver: &Receiver) -> Target {
    Target::Webhook {
        url: receiver.url("/hook"),
        secret: SECRET.to_vec(),
    }
}

fn outcomes(log: &MemoryDeliveryLog) -> Vec<(u32, u16, DeliveryOutcome)> {
    log.attempts()
        .iter()
        .map(|a| (a.attempt, a.http_status, a.outcome))
        .collect()
}

#[tokio::test]
async fn webhook_retries_503_then_delivers_a_signed_v4_body() {
    let receiver = Receiver::start(&[(503, None)]).await;
    let (notifier, log) = notifier(webhook(&receiver), 5);
    let (firing, _) = firing_and_resolved("transit-utilisation", "edge1 / et-0/0/1 (Transit A)", t(0));
    let report = notifier.dispatch(std::slice::from_ref(&firing)).await;
    assert_eq!((report.delivered, report.failed), (1, 0));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "one retry after the 503");
    assert_eq!(requests[0].body, requests[1].body);
    let request = &requests[1];
    let header = request
        .headers
        .get("x-egress-signature")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(verify_signature(SECRET, &request.body, header));
    assert!(!verify_signature(b"another secret", &request.body, header));

    let body = request.json();
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "hook");
    assert_eq!(body["groupLabels"]["alertname"], "transit-utilisation");
    assert_eq!(body["commonLabels"]["severity"], "critical");
    assert_eq!(body["commonAnnotations"]["summary"], "egress path above 80 %");
    assert_eq!(body["externalURL"], "http://egress.test");
    assert_eq!(body["truncatedAlerts"], 0);
    let alert = &body["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["path"], "edge1 / et-0/0/1 (Transit A)");
    assert_eq!(alert["startsAt"], "2026-01-01T00:00:00.000Z");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(alert["fingerprint"], firing.fingerprint.to_string());
    assert_eq!(
        alert["generatorURL"],
        "http://egress.test/slas/transit-utilisation"
    );

    let attempts = log.attempts();
    assert_eq!(
        outcomes(&log),
        [
            (1, 503, DeliveryOutcome::Retrying),
            (2, 200, DeliveryOutcome::Delivered)
        ]
    );
    assert_eq!(attempts[0].receiver, "hook");
    assert_eq!(attempts[0].kind, "webhook");
    assert_eq!(attempts[0].alertname, "transit-utilisation");
    assert_eq!(attempts[0].status, "firing");
    assert_eq!(attempts[0].fingerprint, firing.fingerprint.to_string());
    assert!(attempts[0].error.contains("503"), "{}", attempts[0].error);
    assert_eq!(attempts[1].error, "");
}

#[tokio::test]
async fn client_error_is_not_retried() {
    let receiver = Receiver::start(&[(400, None)]).await;
    let (notifier, log) = notifier(webhook(&receiver), 5);
    let (firing, _) = firing_and_resolved("exfiltration", "10.1.2.3", t(0));
    let report = notifier.dispatch(&[firing]).await;
    assert_eq!((report.delivered, report.failed), (0, 1));
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(outcomes(&log), [(1, 400, DeliveryOutcome::Failed)]);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let receiver = Receiver::start(&[(429, Some("1"))]).await;
    let (notifier, log) = notifier(webhook(&receiver), 3);
    let (firing, _) = firing_and_resolved("exfiltration", "10.1.2.3", t(0));
    notifier.dispatch(&[firing]).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    // The backoff alone would be 20 ms: the second attempt honours Retry-After: 1.
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}");
    assert_eq!(
        outcomes(&log),
        [
            (1, 429, DeliveryOutcome::Retrying),
            (2, 200, DeliveryOutcome::Delivered)
        ]
    );
}

#[tokio::test]
async fn persistent_failure_stops_after_max_attempts() {
    let receiver = Receiver::start(&[(500, None), (502, None), (503, None), (504, None)]).await;
    let (notifier, log) = notifier(webhook(&receiver), 3);
    let (firing, _) = firing_and_resolved("exfiltration", "10.1.2.3", t(0));
    let report = notifier.dispatch(&[firing]).await;
    assert_eq!(report.failed, 1);
    assert_eq!(receiver.requests().len(), 3);
    assert_eq!(
        outcomes(&log),
        [
            (1, 500, DeliveryOutcome::Retrying),
            (2, 502, DeliveryOutcome::Retrying),
            (3, 503, DeliveryOutcome::Failed)
        ]
    );
}

#[tokio::test]
async fn network_errors_are_retried_with_no_http_status() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = Target::Webhook {
        url: format!("http://127.0.0.1:{port}/hook"),
        secret: SECRET.to_vec(),
    };
    let (notifier, log) = notifier(target, 2);
    let (firing, _) = firing_and_resolved("exfiltration", "10.1.2.3", t(0));
    assert_eq!(notifier.dispatch(&[firing]).await.failed, 1);
    let attempts = log.attempts();
    assert_eq!(
        outcomes(&log),
        [(1, 0, DeliveryOutcome::Retrying), (2, 0, DeliveryOutcome::Failed)]
    );
    assert!(
        attempts[0].error.to_lowercase().contains("connect"),
        "{}",
        attempts[0].error
    );
}

#[tokio::test]
async fn slack_messages_for_firing_and_resolved() {
    let receiver = Receiver::start(&[]).await;
    let (notifier, _log) = notifier(
        Target::Slack {
            url: receiver.url("/services/T/B/X"),
        },
        1,
    );
    let (firing, resolved) = firing_and_resolved("transit-utilisation", "edge1 / et-0/0/1 (Transit A)", t(0));
    notifier.dispatch(&[firing, resolved]).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let first = requests[0].json();
    let text = first["text"].as_str().unwrap();
    for part in [
        "[FIRING]",
        "transit-utilisation",
        "critical",
        "edge1 / et-0/0/1 (Transit A)",
        "0.930",
        "threshold 0.800",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
    assert_eq!(first["attachments"][0]["color"], "danger");
    assert_eq!(first["attachments"][0]["fields"][0]["title"], "summary");
    let second = requests[1].json();
    assert!(second["text"].as_str().unwrap().starts_with("[RESOLVED]"));
    assert_eq!(second["attachments"][0]["color"], "good");
}

#[tokio::test]
async fn pagerduty_trigger_and_resolve_share_the_dedup_key() {
    let receiver = Receiver::start(&[]).await;
    let target = Target::Pagerduty {
        url: receiver.url("/v2/enqueue"),
        routing_key: "R0UTING".into(),
    };
    let (notifier, log) = notifier(target, 1);
    let (firing, resolved) = firing_and_resolved("exfiltration", "10.1.2.3", t(0));
    notifier.dispatch(std::slice::from_ref(&firing)).await;
    notifier.dispatch(&[resolved]).await;
    let requests = receiver.requests();
    let (trigger, resolve) = (requests[0].json(), requests[1].json());
    assert_eq!(requests[0].path, "/v2/enqueue");
    assert_eq!(trigger["routing_key"], "R0UTING");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], firing.fingerprint.to_string());
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "edge1");
    assert!(trigger["payload"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("exfiltration: "));
    assert_eq!(trigger["payload"]["custom_details"]["threshold"], 0.8);
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
    let kinds: Vec<(String, String)> = log
        .attempts()
        .iter()
        .map(|a| (a.kind.clone(), a.status.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("pagerduty".into(), "firing".into()),
            ("pagerduty".into(), "resolved".into())
        ]
    );
}

#[tokio::test]
async fn routes_send_each_alert_to_its_receivers_only() {
    let pager = Receiver::start(&[]).await;
    let chat = Receiver::start(&[]).await;
    // The secret comes from a file (an env var works the same; setting one here would race
    // with the other tests' threads).
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("webhook.secret");
    std::fs::write(&secret_file, "from-file\n").unwrap();
    let config: AlertingConfig = toml::from_str(&format!(
        r#"
        [[receivers]]
        name = "pager"
        kind = "alertmanager"
        url = "{}"
        [[receivers]]
        name = "everything"
        kind = "webhook"
        url = "{}"
        secret_file = "{}"
        [[routes]]
        matchers = ["alertname=exfiltration"]
        receivers = ["pager"]
        [[routes]]
        receivers = ["everything"]
        "#,
        pager.url(""),
        chat.url("/hook"),
        secret_file.display(),
    ))
    .unwrap();
    let log = Arc::new(MemoryDeliveryLog::default());
    let notifier = Notifier::from_config(&config, log.clone()).unwrap();
    assert_eq!(
        notifier.receivers().nth(1).unwrap().target.kind(),
        ReceiverKind::Webhook
    );
    let (exfil, _) = firing_and_resolved("exfiltration", "10.1.2.3", t(0));
    let (util, _) = firing_and_resolved("transit-utilisation", "edge1 / et-0/0/1", t(0));
    let report = notifier.dispatch(&[exfil.clone(), util]).await;
    assert_eq!(report.delivered, 3, "pager: 1 batch, webhook: 2 alertname groups");
    let pushed = pager.requests();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].path, "/api/v2/alerts");
    let alerts = pushed[0].json();
    assert_eq!(alerts.as_array().unwrap().len(), 1);
    assert_eq!(alerts[0]["labels"]["alertname"], "exfiltration");
    let hooks = chat.requests();
    assert_eq!(hooks.len(), 2);
    let signature = hooks[0]
        .headers
        .get("x-egress-signature")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(verify_signature(b"from-file", &hooks[0].body, signature));
    let names: Vec<String> = hooks
        .iter()
        .map(|h| h.json()["groupLabels"]["alertname"].to_string())
        .collect();
    assert_eq!(names, ["\"exfiltration\"", "\"transit-utilisation\""]);
}

/// Nothing to send: no request at all.
#[tokio::test]
async fn empty_dispatch_sends_nothing() {
    let receiver = Receiver::start(&[]).await;
    let (notifier, log) = notifier(webhook(&receiver), 1);
    let none: [Notification; 0] = [];
    assert_eq!(notifier.dispatch(&none).await.delivered, 0);
    assert!(receiver.requests().is_empty() && log.attempts().is_empty());
}

/// The total-time bound stops retries before `max_attempts`: with a 200 ms first backoff and a
/// 1 s budget, attempts go out at about 0, 0.2 and 0.6 s; the next wait (0.8 s) would end past
/// the budget, so the third attempt is the last.
#[tokio::test]
async fn total_delivery_time_is_bounded() {
    let receiver = Receiver::start(&[(503, None); 10]).await;
    let log = Arc::new(MemoryDeliveryLog::default());
    let hook = egress_alerts::notify::Receiver {
        name: "hook".into(),
        target: webhook(&receiver),
        policy: RetryPolicy {
            timeout: Duration::from_secs(5),
            max_attempts: 10,
            max_total: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(200),
        },
    };
    let notifier = Notifier::new(vec![hook], String::new(), log.clone()).unwrap();
    let (firing, _) = firing_and_resolved("exfiltration", "10.1.2.3", t(0));
    assert_eq!(notifier.dispatch(&[firing]).await.failed, 1);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(200));
    assert!(requests[2].at - requests[1].at >= Duration::from_millis(400));
    assert_eq!(
        outcomes(&log),
        [
            (1, 503, DeliveryOutcome::Retrying),
            (2, 503, DeliveryOutcome::Retrying),
            (3, 503, DeliveryOutcome::Failed)
        ]
    );
}

/// The stage shape: batches in over a channel; dropping the sender drains and delivers all.
#[tokio::test]
async fn run_delivers_every_batch_then_stops_when_the_channel_closes() {
    let receiver = Receiver::start(&[(503, None)]).await;
    let (notifier, log) = notifier(webhook(&receiver), 3);
    let (sender, batches) = tokio::sync::mpsc::channel(4);
    let stage = tokio::spawn(notifier.run(batches));
    let (firing, resolved) = firing_and_resolved("exfiltration", "10.1.2.3", t(0));
    sender.send(vec![firing]).await.unwrap();
    sender.send(vec![resolved]).await.unwrap();
    drop(sender);
    let report = tokio::time::timeout(Duration::from_secs(10), stage)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.delivered, report.failed), (2, 0));
    let delivered: Vec<String> = log
        .attempts()
        .iter()
        .filter(|a| a.outcome == DeliveryOutcome::Delivered)
        .map(|a| a.status.clone())
        .collect();
    assert_eq!(delivered.len(), 2);
    assert!(delivered.contains(&"firing".to_string()) && delivered.contains(&"resolved".to_string()));
}
