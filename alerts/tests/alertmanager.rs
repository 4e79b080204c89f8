//! Alertmanager API v2 push against Debian's real `prometheus-alertmanager`.
//!
//! Alertmanager runs with a temporary configuration whose only receiver is a webhook to a local
//! recording receiver (group_wait / group_interval 1 s). Egress pushes a firing alert: the
//! receiver gets Alertmanager's webhook with that alert firing — and Alertmanager's fingerprint
//! equals ours. Egress pushes the resolution (endsAt in the past): the resolved notification
//! arrives. `scripts/install-deps.sh` installs the binary; without it the test fails.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{firing_and_resolved, Receiver};
use egress_alerts::notify::delivery::{DeliveryOutcome, MemoryDeliveryLog, RetryPolicy};
use egress_alerts::notify::{Notifier, Target};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A running Alertmanager, killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_alertmanager(webhook_url: &str) -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: egress-test\n  group_by: ['alertname']\n  group_wait: 1s\n  group_interval: 1s\n  \
             repeat_interval: 1h\nreceivers:\n  - name: egress-test\n    webhook_configs:\n      - url: '{webhook_url}'\n        \
             send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {ALERTMANAGER} (scripts/install-deps.sh installs it): {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let am = Alertmanager {
        child,
        url,
        _dir: dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(response) = client.get(format!("{}/-/ready", am.url)).send().await {
            if response.status().is_success() {
                return am;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("alertmanager not ready within 10 s");
}

#[tokio::test]
async fn push_firing_then_resolved_through_real_alertmanager() {
    let hook = Receiver::start(&[]).await;
    let am = start_alertmanager(&hook.url("/alertmanager-webhook")).await;

    let log = Arc::new(MemoryDeliveryLog::default());
    let receiver = egress_alerts::notify::Receiver {
        name: "am".into(),
        target: Target::Alertmanager { url: am.url.clone() },
        policy: RetryPolicy {
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            max_total: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(100),
        },
    };
    let notifier = Notifier::new(vec![receiver], String::new(), log.clone()).unwrap();

    // Real times: Alertmanager compares endsAt with its clock.
    let start = chrono::Utc::now() - chrono::Duration::seconds(120);
    let (firing, resolved) =
        firing_and_resolved("transit-utilisation", "edge1 / et-0/0/1 (Transit A)", start);
    assert!(
        firing.ends_at > chrono::Utc::now(),
        "firing endsAt lies in the future"
    );
    assert!(
        resolved.ends_at < chrono::Utc::now(),
        "resolved endsAt lies in the past"
    );

    assert_eq!(
        notifier.dispatch(std::slice::from_ref(&firing)).await.delivered,
        1
    );
    let first = hook.wait_for(1, 15).await;
    let body = first[0].json();
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["groupLabels"]["alertname"], "transit-utilisation");
    let alert = &body["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["path"], "edge1 / et-0/0/1 (Transit A)");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["annotations"]["summary"], "egress path above 80 %");
    // Alertmanager computes the fingerprint itself: it must equal ours.
    assert_eq!(alert["fingerprint"], firing.fingerprint.to_string());

    assert_eq!(
        notifier.dispatch(std::slice::from_ref(&resolved)).await.delivered,
        1
    );
    let all = hook.wait_for(2, 15).await;
    let body = all[1].json();
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["alerts"][0]["status"], "resolved");
    assert_eq!(body["alerts"][0]["fingerprint"], firing.fingerprint.to_string());

    let outcomes: Vec<(u16, DeliveryOutcome, String)> = log
        .attempts()
        .iter()
        .map(|a| (a.http_status, a.outcome, a.status.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (200, DeliveryOutcome::Delivered, "firing".into()),
            (200, DeliveryOutcome::Delivered, "resolved".into())
        ]
    );
    drop(am);
}
