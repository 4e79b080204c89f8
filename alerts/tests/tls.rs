//! HTTPS deliveries verify the receiver's certificate: a local `openssl s_server` with a
//! self-signed certificate is refused (no attempt counts as delivered), so a notifier never
//! talks to an impostor.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{firing_and_resolved, t};
use egress_alerts::notify::delivery::{DeliveryOutcome, MemoryDeliveryLog, RetryPolicy};
use egress_alerts::notify::{Notifier, Receiver, Target};

/// `openssl s_server`, killed on drop.
struct TlsServer(Child);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new("openssl");
    command
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[tokio::test]
async fn self_signed_receiver_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let made = openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    )
    .status()
    .expect("openssl is installed");
    assert!(made.success(), "openssl req failed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let accept = format!("127.0.0.1:{port}");
    let server = TlsServer(
        openssl(
            dir.path(),
            &[
                "s_server", "-accept", &accept, "-cert", "cert.pem", "-key", "key.pem", "-www",
            ],
        )
        .spawn()
        .expect("start openssl s_server"),
    );
    let mut listening = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(&accept).await.is_ok() {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listening, "openssl s_server did not listen on {accept}");

    let log = Arc::new(MemoryDeliveryLog::default());
    let receiver = Receiver {
        name: "impostor".into(),
        target: Target::Webhook {
            url: format!("https://{accept}/hook"),
            secret: b"k".to_vec(),
        },
        policy: RetryPolicy {
            timeout: Duration::from_secs(5),
            max_attempts: 1,
            max_total: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(10),
        },
    };
    let notifier = Notifier::new(vec![receiver], String::new(), log.clone()).unwrap();
    let (firing, _) = firing_and_resolved("exfiltration", "10.1.2.3", t(0));
    let report = notifier.dispatch(&[firing]).await;
    assert_eq!((report.delivered, report.failed), (0, 1));
    let attempts = log.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].http_status, attempts[0].outcome),
        (0, DeliveryOutcome::Failed)
    );
    assert!(
        attempts[0].error.to_lowercase().contains("certificate"),
        "{}",
        attempts[0].error
    );
    drop(server);
}
