//! The local demo end to end, at four times its pace: `egress run` with the demo configuration
//! (`deploy/local/egress.toml`, only ports, database and paths overridden) and `--scenario demo
//! --scenario-speed 4` stores the simulated fleet's flows in a real ClickHouse 18.16 server, and
//! probes a listener behind a real delay line between network namespaces (the test kit's
//! `DelayRig`, which `egress-demo-net` runs for `deploy/local/run.sh`), whose delay rises at the
//! demo's latency time. Through `GET /api/v1/alerts` the test waits for the three alerts of the
//! timeline, each on its subject only and none before its step has started: the exfiltrating
//! host (not the allow-listed backup), the saturated Transit B (no other path), the slowed probe
//! path (not the direct one).
//!
//! The SLA windows and `for` durations are the demo's (one minute, 30 s), only the evaluation
//! interval is 5 s instead of 15 s, so the throughput alert (a one-minute average above 80 %)
//! comes last, about 100 s after the start. Without root or `ip netns` the latency part is
//! skipped with a message; everything else still runs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use egress_collector::simulate::scenario::{
    EXFILTRATION_SOURCE, EXFILTRATION_START, LATENCY_RISE, SATURATION_SOURCE, SATURATION_START,
};
use egress_testkit::clickhouse::ClickHouseServer;
use egress_testkit::exporters::{free_tcp_port, free_udp_port};
use egress_testkit::netns::{self, DelayRig};

/// The pace of the timeline in this test.
const SPEED: f64 = 4.0;
/// The path whose probe target slows down, and the direct one (as egress-demo-net's defaults).
const SLOW_PATH: &str = "netflow9-edge1 / et-0/0/1 (Transit A)";
const FAST_PATH: &str = "netflow9-edge1 / et-0/0/2 (Transit B)";
/// The path the backup saturates.
const SATURATED_PATH: &str = "netflow9-edge2 / et-0/0/2 (Transit B)";
/// Longest wait for all alerts.
const TIMEOUT: Duration = Duration::from_secs(170);

/// `egress run` as a child process, stopped with SIGTERM on drop.
struct Egress(Child);

impl Drop for Egress {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An alert as the API shows it, reduced to what the test checks.
#[derive(Debug, Clone)]
struct Alert {
    alertname: String,
    /// Every label value, joined (the subject: host, path...).
    subject: String,
    state: String,
    starts_at: chrono::DateTime<chrono::Utc>,
}

async fn alerts(client: &reqwest::Client, api: &str) -> Vec<Alert> {
    let Ok(response) = client.get(format!("{api}/api/v1/alerts")).send().await else {
        return Vec::new();
    };
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return Vec::new();
    };
    body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|alert| {
            let labels = alert["labels"].as_object();
            Alert {
                alertname: alert["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                subject: labels
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
                state: alert["state"].as_str().unwrap_or_default().to_owned(),
                starts_at: alert["starts_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map_or(chrono::DateTime::UNIX_EPOCH, |t| t.with_timezone(&chrono::Utc)),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_scenario_raises_exfiltration_throughput_and_latency_alerts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clickhouse = ClickHouseServer::start().expect("ClickHouse");
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = if netns::available() && is_root() {
        let rig = DelayRig::start().expect("namespaces and delay line");
        rig.set_delay(Duration::from_millis(20));
        Some(rig)
    } else {
        eprintln!("SKIPPED the latency part: network namespaces need root, `ip netns` and /dev/net/tun");
        None
    };
    let api_port = free_tcp_port().expect("API port");
    let api = format!("http://127.0.0.1:{api_port}");
    let mut sets = vec![
        format!("clickhouse.url=\"{}\"", clickhouse.http_url()),
        "clickhouse.database=\"demo_test\"".to_owned(),
        format!("monitor.listen=\"127.0.0.1:{api_port}\""),
        format!(
            "monitor.alert_state_path=\"{}\"",
            dir.path().join("alerts.json").display()
        ),
        "monitor.evaluation_interval_seconds=5".to_owned(),
        "alerting.receivers=[]".to_owned(),
        format!("spool.dir=\"{}\"", dir.path().join("spool").display()),
        format!(
            "collector.state_path=\"{}\"",
            dir.path().join("collector-state.json").display()
        ),
    ];
    if let Some(rig) = &rig {
        sets.push(format!(
            "probes.paths=[{{ path = \"{SLOW_PATH}\", targets = [\"{}\"] }}, {{ path = \"{FAST_PATH}\", targets = [\"{}\"] }}]",
            rig.slow_target(),
            rig.fast_target()
        ));
    }
    let log_path = dir.path().join("egress.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_egress"));
    command
        .arg("run")
        .arg("--config")
        .arg(root.join("deploy/local/egress.toml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_udp_port().expect("UDP port")))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{}", free_tcp_port().expect("metrics port")));
    for set in &sets {
        command.arg("--set").arg(set);
    }
    // The local run's protocol order (the scenario plays on the first fleet, netflow9) at lower
    // rates: a debug build shares two cores with ClickHouse here.
    let started = Instant::now();
    let started_utc = chrono::Utc::now();
    let child = command
        .args(["--simulate", "netflow9=1000", "--simulate", "ipfix=400"])
        .args(["--simulate", "netflow5=300", "--simulate", "sflow5=200"])
        .args(["--scenario", "demo", "--scenario-speed", &SPEED.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("egress starts");
    let _egress = Egress(child);
    let log_tail = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };

    let at = |d: Duration| d.div_f64(SPEED);
    let client = reqwest::Client::new();
    let mut raised = false;
    let mut first_firing: Vec<(String, Duration)> = Vec::new();
    let mut last = Vec::new();
    let wanted: Vec<(&str, String)> = {
        let mut wanted = vec![
            ("exfiltration", EXFILTRATION_SOURCE.to_string()),
            ("transit-utilisation", SATURATED_PATH.to_owned()),
        ];
        if rig.is_some() {
            wanted.push(("path-latency", SLOW_PATH.to_owned()));
        }
        wanted
    };
    while started.elapsed() < TIMEOUT {
        if let Some(rig) = &rig {
            if !raised && started.elapsed() >= at(LATENCY_RISE) {
                rig.set_delay(Duration::from_millis(250));
                raised = true;
            }
        }
        last = alerts(&client, &api).await;
        for alert in last.iter().filter(|a| a.state == "firing") {
            let key = format!("{} {}", alert.alertname, alert.subject);
            if !first_firing.iter().any(|(k, _)| *k == key) {
                eprintln!("+{:.0}s firing: {key}", started.elapsed().as_secs_f64());
                first_firing.push((key, started.elapsed()));
            }
        }
        let done = wanted.iter().all(|(name, subject)| {
            last.iter()
                .any(|a| a.state == "firing" && a.alertname == *name && a.subject.contains(subject.as_str()))
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for (name, subject) in &wanted {
        let alert = last
            .iter()
            .find(|a| a.state == "firing" && a.alertname == *name && a.subject.contains(subject.as_str()))
            .unwrap_or_else(|| {
                panic!(
                    "no firing {name} alert on {subject} after {:?}; alerts: {last:#?}\nlog:\n{}",
                    started.elapsed(),
                    log_tail()
                )
            });
        let step = match *name {
            "exfiltration" => at(EXFILTRATION_START),
            "transit-utilisation" => at(SATURATION_START),
            _ => at(LATENCY_RISE),
        };
        let became_active = (alert.starts_at - started_utc).to_std().unwrap_or_default();
        assert!(
            became_active + Duration::from_secs(1) >= step,
            "{name} on {subject} was active {became_active:?} after the start, before its step at {step:?}"
        );
    }
    let firing_on = |name: &str, subject: &str| {
        first_firing
            .iter()
            .any(|(key, _)| key.starts_with(&format!("{name} ")) && key.contains(subject))
    };
    assert!(
        !firing_on("exfiltration", &SATURATION_SOURCE.to_string()),
        "the backup goes to an allow-listed destination: {first_firing:?}"
    );
    let throughput: Vec<&String> = first_firing
        .iter()
        .map(|(key, _)| key)
        .filter(|key| key.starts_with("transit-utilisation "))
        .collect();
    assert!(
        throughput.iter().all(|key| key.contains(SATURATED_PATH)),
        "only the saturated path breaches: {throughput:?}"
    );
    assert!(
        !firing_on("path-latency", FAST_PATH),
        "the direct path stays fast: {first_firing:?}"
    );
    let flows: u64 = clickhouse
        .query_scalar("SELECT count() FROM demo_test.flows")
        .expect("count")
        .trim()
        .parse()
        .expect("a number");
    assert!(flows > 10_000, "{flows} flows stored");
    eprintln!(
        "demo at speed {SPEED}: {flows} flows; alerts first firing after {:?}",
        first_firing
            .iter()
            .map(|(key, at)| format!("{key} +{:.0}s", at.as_secs_f64()))
            .collect::<Vec<_>>()
    );
}

/// Whether this process runs as root (network namespaces need it).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}
