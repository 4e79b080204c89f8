//! The monitor end to end: a traffic pcap in which one internal host uploads far above its
//! limit to one external address goes through softflowd (1-in-10 sampled IPFIX) into
//! `egress run` (collector + monitor), which stores it in a real ClickHouse server; the
//! exfiltration SLA fires one signed webhook naming the host, the scaled volume and the
//! destination; an SLA that allow-lists that destination raises nothing; restarting Egress
//! while the alert fires sends no duplicate; the resolution arrives after the upload stops.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use egress_testkit::clickhouse::ClickHouseServer;
use egress_testkit::exporters::{free_tcp_port, free_udp_port, NetflowVersion, Softflowd};
use egress_testkit::traffic::{write_pcap, Exfiltration, TrafficSpec};

const SECRET: &str = "e2e-webhook-secret";

/// Every request the webhook receiver got: the signature header and the JSON body.
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

async fn start_receiver() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                let signature = headers
                    .get("x-egress-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                store.lock().expect("receiver lock").push((signature, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver port");
    let address = listener.local_addr().expect("receiver address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

/// `egress run` as a child process, stopped with SIGTERM on drop.
struct Egress(Child);

impl Egress {
    fn start(config: &Path, log: &Path) -> Self {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        // Each test's own spool, beside its configuration (kept across a restart).
        let spool = config.parent().expect("config in a directory").join("spool");
        let child = Command::new(env!("CARGO_BIN_EXE_egress"))
            .env("EGRESS__SPOOL__DIR", &spool)
            .env(
                "EGRESS__COLLECTOR__STATE_PATH",
                spool.join("collector-state.json"),
            )
            .args(["run", "--config"])
            .arg(config)
            .env("EGRESS_TEST_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("egress starts");
        Egress(child)
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
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

impl Drop for Egress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The webhook payloads received so far for `alertname`, as (status, payload).
fn payloads(received: &Received, alertname: &str) -> Vec<(String, serde_json::Value)> {
    received
        .lock()
        .expect("receiver lock")
        .iter()
        .filter_map(|(_, body)| serde_json::from_slice::<serde_json::Value>(body).ok())
        .filter(|p| {
            p["commonLabels"]["alertname"] == alertname || p["alerts"][0]["labels"]["alertname"] == alertname
        })
        .map(|p| (p["status"].as_str().unwrap_or_default().to_owned(), p))
        .collect()
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything a monitor test runs against: ClickHouse, the webhook receiver, and the
/// configuration of `egress run` (collector, monitor and alerting sections in common, the
/// model and SLAs per test).
struct Rig {
    dir: tempfile::TempDir,
    clickhouse: ClickHouseServer,
    received: Received,
    udp: SocketAddr,
    api: SocketAddr,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Rig {
    async fn start(database: &str, model_and_slas: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clickhouse = ClickHouseServer::start().expect("ClickHouse");
        let (receiver, received) = start_receiver().await;
        let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_port().expect("udp port")));
        let api = SocketAddr::from(([127, 0, 0, 1], free_tcp_port().expect("api port")));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port().expect("metrics port")));
        let config = dir.path().join("egress.toml");
        let common = format!(
            r#"
[collector]
listen = ["{udp}"]
metrics_listen = "{metrics}"
stats_interval_seconds = 1

[batch]
max_age_ms = 200

[clickhouse]
url = "{url}"
database = "{database}"

[monitor]
evaluation_interval_seconds = 2
listen = "{api}"
alert_state_path = "{state}"

[alerting]
resend_interval_seconds = 3600

[[alerting.receivers]]
name = "oncall"
kind = "webhook"
url = "http://{receiver}/hook"
secret_env = "EGRESS_TEST_WEBHOOK_SECRET"
"#,
            url = clickhouse.http_url(),
            state = dir.path().join("alerts.json").display(),
        );
        std::fs::write(&config, format!("{common}\n{model_and_slas}")).expect("config");
        let log = dir.path().join("egress.log");
        Rig {
            dir,
            clickhouse,
            received,
            udp,
            api,
            config,
            log,
        }
    }

    /// Starts `egress run` and waits until its API listens.
    async fn egress(&self) -> Egress {
        let egress = Egress::start(&self.config, &self.log);
        let api = self.api;
        wait_until("the API to be ready", Duration::from_secs(60), || {
            std::net::TcpStream::connect(api).is_ok()
        })
        .await;
        egress
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exfiltration_fires_once_survives_a_restart_and_resolves() {
    let rig = Rig::start(
        "monitor_e2e",
        r#"
[model]
internal_prefixes = ["10.0.0.0/8"]

[[slas]]
name = "exfiltration"
kind = "exfiltration"
window_seconds = 30
for_seconds = 0
severity = "critical"
[slas.exfiltration]
limit_bytes = 5000000
min_samples = 1

[[slas]]
name = "exfiltration-allowed"
kind = "exfiltration"
window_seconds = 30
for_seconds = 0
severity = "warning"
[slas.exfiltration]
limit_bytes = 5000000
min_samples = 1
allow = { cidrs = ["203.0.113.0/24"] }
"#,
    )
    .await;
    let (dir, clickhouse, received, udp, api) = (&rig.dir, &rig.clickhouse, &rig.received, rig.udp, rig.api);
    let mut egress = rig.egress().await;
    let http = reqwest::Client::new();

    // 20 MiB from 10.66.6.6 to 203.0.113.66, sampled 1 in 10 by softflowd (IPFIX).
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let scenario = Exfiltration::default();
    let pcap = dir.path().join("exfiltration.pcap");
    let totals = write_pcap(
        &pcap,
        &TrafficSpec::exfiltration(Duration::from_secs(now.as_secs()), &scenario),
    )
    .expect("pcap");
    let softflowd = Softflowd {
        version: NetflowVersion::Ipfix,
        sampling_rate: Some(10),
    };
    softflowd.replay(&pcap, udp).expect("softflowd replay");
    let upload_bytes: u64 = totals
        .per_flow
        .iter()
        .filter(|f| f.src == scenario.source)
        .map(|f| f.bytes)
        .sum();

    wait_until("the firing webhook", Duration::from_secs(60), || {
        payloads(received, "exfiltration")
            .iter()
            .any(|(s, _)| s == "firing")
    })
    .await;
    let (_, firing) = payloads(received, "exfiltration")
        .into_iter()
        .find(|(s, _)| s == "firing")
        .expect("firing");
    let alert = &firing["alerts"][0];
    let text = alert.to_string();
    assert!(text.contains("10.66.6.6"), "the alert names the host: {text}");
    assert!(
        text.contains("203.0.113.66"),
        "the alert names the destination: {text}"
    );
    eprintln!("firing alert: {text}\nupload on the wire: {upload_bytes} bytes");
    assert!(
        text.contains("GB") || text.contains("MB"),
        "the alert gives the scaled volume in human units: {text}"
    );
    // The signature verifies with the shared secret and fails with another.
    {
        let requests = received.lock().expect("lock");
        let (signature, body) = requests.first().expect("a request");
        assert!(egress_alerts::notify::verify_signature(
            SECRET.as_bytes(),
            body,
            signature
        ));
        assert!(!egress_alerts::notify::verify_signature(
            b"another secret",
            body,
            signature
        ));
    }
    // The scaled volume stored is the upload's wire volume within sampling error.
    let stored: f64 = clickhouse
        .query_scalar(
            "SELECT sum(bytes * sampling_rate) FROM monitor_e2e.flows \
             WHERE IPv6NumToString(src_addr) = '::ffff:10.66.6.6'",
        )
        .expect("stored volume")
        .trim()
        .parse()
        .expect("number");
    let ratio = stored / upload_bytes as f64;
    assert!(
        (0.8..1.2).contains(&ratio),
        "scaled {stored} vs wire {upload_bytes}"
    );

    // Restart while firing: no second firing notification.
    egress.stop();
    let firing_before = payloads(received, "exfiltration")
        .iter()
        .filter(|(s, _)| s == "firing")
        .count();
    let mut egress = rig.egress().await;
    let alerts: serde_json::Value = http
        .get(format!("http://{api}/api/v1/alerts"))
        .send()
        .await
        .expect("alerts API")
        .json()
        .await
        .expect("JSON");
    assert!(
        alerts.to_string().contains("10.66.6.6"),
        "the API lists the firing alert: {alerts}"
    );

    wait_until("the resolved webhook", Duration::from_secs(90), || {
        payloads(received, "exfiltration")
            .iter()
            .any(|(s, _)| s == "resolved")
    })
    .await;
    let firing_after = payloads(received, "exfiltration")
        .iter()
        .filter(|(s, _)| s == "firing")
        .count();
    assert_eq!(firing_before, 1, "one firing notification before the restart");
    assert_eq!(
        firing_after, 1,
        "no duplicate firing notification after the restart"
    );
    assert!(
        payloads(received, "exfiltration-allowed").is_empty(),
        "the allow-listed destination raised nothing"
    );
    egress.stop();
    let delivered = clickhouse
        .query_scalar("SELECT count() FROM monitor_e2e.alert_deliveries WHERE outcome = 'delivered'")
        .expect("deliveries");
    assert!(
        delivered.trim().parse::<u64>().unwrap_or(0) >= 2,
        "deliveries logged: {delivered}"
    );
    let results = clickhouse
        .query_scalar(
            "SELECT count() FROM monitor_e2e.sla_results WHERE sla = 'exfiltration' AND verdict = 'breach'",
        )
        .expect("sla_results");
    assert!(
        results.trim().parse::<u64>().unwrap_or(0) >= 1,
        "breaches recorded in sla_results"
    );
}

/// Simulated IPFIX router `edge1` (127.0.0.80) with two transit paths: heavy traffic pushes
/// `et-0/0/1` (100 Mbit/s) above its 80 % utilisation limit and the alert fires; light traffic
/// brings it below and it resolves. Then the exporter stops: its health alert fires, and the
/// silent path is "no data", never a new throughput alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_fires_and_resolves_and_a_silent_exporter_is_a_health_alert() {
    use egress_collector::simulate::{self, CancellationToken, Protocol, SimulateConfig};

    let rig = Rig::start(
        "throughput_e2e",
        r#"
[model]
internal_prefixes = ["10.0.0.0/8", "fd00::/8"]

[[exporters]]
address = "127.0.0.80"
name = "edge1"
[[exporters.interfaces]]
if_index = 1
name = "et-0/0/1"
role = "external"
kind = "transit"
provider = "Transit A"
capacity_bps = 100_000_000
[[exporters.interfaces]]
if_index = 2
name = "et-0/0/2"
role = "external"
kind = "transit"
provider = "Transit B"
capacity_bps = 100_000_000_000
[[exporters.interfaces]]
if_index = 10
name = "ae0"
role = "internal"
[[exporters.interfaces]]
if_index = 11
name = "ae1"
role = "internal"

[[slas]]
name = "transit-utilisation"
kind = "throughput"
window_seconds = 10
for_seconds = 0
severity = "critical"
[slas.throughput]
max_utilisation = 0.8
min_samples = 1

[[slas]]
name = "exporter-health"
kind = "exporter_health"
window_seconds = 30
for_seconds = 0
severity = "critical"
[slas.exporter_health]
silent_seconds = 10
max_loss_ratio = 0.5
min_samples = 1000000
"#,
    )
    .await;
    let (clickhouse, received, udp) = (&rig.clickhouse, &rig.received, rig.udp);
    let mut egress = rig.egress().await;
    let router = |rate: u64, seed: u64| SimulateConfig {
        target: udp,
        protocol: Protocol::Ipfix,
        records_per_second: rate,
        exporters: 1,
        duration: None,
        sampling_rate: Some(100),
        bind_base: Some([127, 0, 0, 80].into()),
        seed,
        ..SimulateConfig::default()
    };
    let firing = |alertname: &str, subject: &str| {
        payloads(received, alertname)
            .iter()
            .filter(|(s, p)| s == "firing" && p.to_string().contains(subject))
            .count()
    };
    let resolved = |alertname: &str, subject: &str| {
        payloads(received, alertname)
            .iter()
            .filter(|(s, p)| s == "resolved" && p.to_string().contains(subject))
            .count()
    };
    let path = "edge1 / et-0/0/1 (Transit A)";

    // Heavy: about 2000 records/s of 1-in-100 sampled traffic, Gbit/s on each transit path.
    let heavy_stop = CancellationToken::new();
    let heavy = tokio::spawn(simulate::run(router(2000, 1), heavy_stop.clone()));
    wait_until("the throughput alert", Duration::from_secs(60), || {
        firing("transit-utilisation", path) == 1
    })
    .await;
    heavy_stop.cancel();
    heavy.await.expect("task").expect("heavy traffic");
    assert_eq!(
        firing("transit-utilisation", "Transit B"),
        0,
        "the 100 Gbit/s path stays below its limit"
    );

    // Light: 2 records/s keeps the exporter alive, far below the limit: the alert resolves.
    let light_stop = CancellationToken::new();
    let light = tokio::spawn(simulate::run(router(2, 2), light_stop.clone()));
    wait_until("the throughput resolution", Duration::from_secs(60), || {
        resolved("transit-utilisation", path) == 1
    })
    .await;
    // A configured exporter that never sent anything is silent: its health alert may have fired
    // before the traffic started; while it sends, that alert is resolved.
    wait_until(
        "no active health alert while the exporter sends",
        Duration::from_secs(30),
        || firing("exporter-health", "edge1") == resolved("exporter-health", "edge1"),
    )
    .await;
    let health_before = firing("exporter-health", "edge1");

    // Silent: the exporter stops. Its health alert fires; the path is no data, not a breach.
    light_stop.cancel();
    light.await.expect("task").expect("light traffic");
    wait_until("the exporter health alert", Duration::from_secs(120), || {
        firing("exporter-health", "edge1") == health_before + 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        firing("transit-utilisation", path),
        1,
        "a silent exporter is not read as a throughput breach"
    );
    let verdicts = clickhouse
        .query_scalar(
            "SELECT verdict FROM throughput_e2e.sla_results WHERE sla = 'transit-utilisation' \
             AND subject = 'edge1 / et-0/0/1 (Transit A)' ORDER BY time DESC LIMIT 1 FORMAT TSV",
        )
        .expect("latest verdict");
    assert_eq!(
        verdicts.trim(),
        "no_data",
        "the silent exporter's path has no data"
    );
    egress.stop();
}

/// Latency through real network namespaces: two probed paths to a target namespace, one through
/// a userspace delay line. 80 ms of delay on the slow path fires its latency SLA while the fast
/// path stays ok; removing the delay resolves it. A path whose only target refuses every probe
/// raises its own `unreachable` alert, not a latency figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_sla_fires_on_a_delayed_path_and_resolves() {
    use egress_testkit::netns::DelayRig;

    let delay = DelayRig::start().expect("network namespaces with a TUN delay line (needs root)");
    let fast = delay.fast_target();
    let slow = delay.slow_target();
    // Nobody listens on this port of the fast target: every probe is refused.
    let dead = SocketAddr::new(fast.ip(), free_tcp_port().expect("unused port"));
    let rig = Rig::start(
        "latency_e2e",
        &format!(
            r#"
[[slas]]
name = "path-latency"
kind = "latency"
window_seconds = 6
for_seconds = 0
severity = "warning"
[slas.latency]
percentile = 0.5
threshold_ms = 50
per = "path"
min_samples = 3

[probes]
interval_seconds = 1
timeout_ms = 500

[[probes.paths]]
path = "fast"
targets = ["{fast}"]

[[probes.paths]]
path = "slow"
targets = ["{slow}"]

[[probes.paths]]
path = "dead"
targets = ["{dead}"]
"#
        ),
    )
    .await;
    let received = &rig.received;
    let mut egress = rig.egress().await;
    let alerts = |status: &str, check: &str, path: &str| {
        payloads(received, "path-latency")
            .iter()
            .flat_map(|(_, p)| p["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["status"] == status && a["labels"]["check"] == check && a["labels"]["path"] == path)
            .count()
    };

    // The dead path: unreachable, never a latency figure.
    wait_until("the unreachable alert", Duration::from_secs(60), || {
        alerts("firing", "unreachable", "dead") == 1
    })
    .await;
    assert_eq!(
        alerts("firing", "latency", "dead"),
        0,
        "an unreachable path has no latency figure"
    );

    delay.set_delay(Duration::from_millis(80));
    wait_until("the slow path's latency alert", Duration::from_secs(60), || {
        alerts("firing", "latency", "slow") == 1
    })
    .await;
    assert_eq!(alerts("firing", "latency", "fast"), 0, "the fast path stays ok");
    // The firing alert carries the hop trace through the slow path: the router, then the target.
    let trace = payloads(received, "path-latency")
        .iter()
        .flat_map(|(_, p)| p["alerts"].as_array().cloned().unwrap_or_default())
        .find(|a| {
            a["status"] == "firing" && a["labels"]["check"] == "latency" && a["labels"]["path"] == "slow"
        })
        .and_then(|a| a["annotations"]["trace"].as_str().map(str::to_owned))
        .expect("a trace annotation on the latency alert");
    eprintln!("trace attached to the alert: {trace}");
    let mut rest = trace.as_str();
    for hop in &delay.slow_path().hops {
        let at = rest
            .find(&format!(" {hop} "))
            .unwrap_or_else(|| panic!("hop {hop} missing in order: {trace}"));
        rest = &rest[at + 1..];
    }
    // The API shows the same trace as the slow path's last one.
    let last: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/api/v1/trace?path=slow", rig.api))
        .send()
        .await
        .expect("trace API")
        .json()
        .await
        .expect("JSON");
    let answered: Vec<String> = last["hops"]
        .as_array()
        .unwrap_or_else(|| panic!("hops in the last trace: {last}"))
        .iter()
        .filter_map(|hop| hop["address"].as_str().map(str::to_owned))
        .collect();
    for hop in &delay.slow_path().hops {
        assert!(
            answered.contains(&hop.to_string()),
            "hop {hop} in the last trace: {last}"
        );
    }

    delay.set_delay(Duration::ZERO);
    wait_until("the slow path's resolution", Duration::from_secs(60), || {
        alerts("resolved", "latency", "slow") == 1
    })
    .await;
    let probes = rig
        .clickhouse
        .query_scalar(
            "SELECT path, count(), toUInt32(max(rtt_us)) FROM latency_e2e.probes WHERE success = 1 \
             GROUP BY path ORDER BY path FORMAT TSV",
        )
        .expect("probes");
    eprintln!("probes stored (path, answered, max rtt µs):\n{probes}");
    egress.stop();
}
