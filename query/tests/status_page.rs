//! The status page (`GET /`) against a real ClickHouse 18.16 loaded with demo-like rows: six
//! hours of outbound flows through two paths (with exporter-measured round trips), probes, per
//! minute exporter statistics of three exporters (one healthy, one silent for two hours with a
//! hostile name, one unknown to the model with decode errors and loss), SLA results of every
//! verdict and alerts in memory.
//!
//! Checked through `oneshot`: each path with its throughput and utilisation, the verdicts, the
//! firing alert (and not the resolved one), the collector counters, every hostile string escaped,
//! and "unavailable" sections (still 200) once ClickHouse is stopped. Then in Debian's headless
//! Chromium, on a loopback port: the DOM holds the same, and the screenshot is a real PNG 1280
//! pixels wide that is not blank (written to `$EGRESS_SCREENSHOT_DIR`, else
//! `$CARGO_TARGET_DIR`, else the target directory, as `status-page.png`). Finally
//! `dump_status_sql` writes the page's queries for `tests/chdb/check_sla_sql.py`.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::IntoFuture;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use chrono::{Duration as ChronoDuration, Utc};
use clickhouse::{Client, RowOwned, RowWrite};
use egress_query::api::{
    self, AlertState, AlertView, AlertsView, AlertsViewError, ApiState, NewSilence, PathInfo, SilenceView,
};
use egress_query::connection::{self, ClickHouseConfig};
use egress_query::migrate::migrate;
use egress_query::probes::{ProbeMethod, ProbeRow, PROBES_TABLE};
use egress_query::schema::{
    to_v6, ExporterStatsRow, FlowRow, FlowType, RttSource, SlaResultRow, TrafficDirection, Verdict,
    EXPORTER_STATS_TABLE, FLOWS_TABLE, SLA_RESULTS_TABLE,
};
use egress_testkit::clickhouse::ClickHouseServer;
use tower::ServiceExt;

const P1: &str = "edge1 / et-0/0/1 (Transit A)";
const P2: &str = "edge1 / et-0/0/2 (Peering B)";
/// An exporter name from configuration that would run a script if it were not escaped.
const HOSTILE: &str = "<script>alert('egress')</script>";
const EDGE1: [u8; 4] = [192, 0, 2, 1];
const EDGE2: [u8; 4] = [192, 0, 2, 9];
/// An exporter the model does not know.
const STRAY: [u8; 4] = [198, 51, 100, 3];
/// A narrow no-break space: the page's thousands separator.
const THIN: char = '\u{202f}';

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

/// The third path: through the exporter with the hostile name.
fn p3() -> String {
    format!("{HOSTILE} / xe-0/0/5 (Cloud C)")
}

/// HTML text escaping, to write the expected markup of a value.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Alerts in memory; silences are not used by the page.
#[derive(Debug, Default)]
struct MemoryAlerts {
    alerts: Vec<AlertView>,
}

impl AlertsView for MemoryAlerts {
    fn alerts(&self) -> Result<Vec<AlertView>, AlertsViewError> {
        Ok(self.alerts.clone())
    }

    fn silences(&self) -> Result<Vec<SilenceView>, AlertsViewError> {
        Ok(Vec::new())
    }

    fn create_silence(&self, _: NewSilence) -> Result<String, AlertsViewError> {
        Err(AlertsViewError::Unavailable("read-only".into()))
    }

    fn expire_silence(&self, id: &str) -> Result<(), AlertsViewError> {
        Err(AlertsViewError::NotFound(id.to_owned()))
    }
}

fn model_paths() -> Vec<PathInfo> {
    let path = |label: &str,
                exporter: [u8; 4],
                name: &str,
                if_index,
                if_name: &str,
                provider: &str,
                kind: &str,
                capacity_bps| {
        PathInfo {
            label: label.into(),
            exporter_address: IpAddr::from(exporter),
            exporter_name: name.into(),
            site: "fra1".into(),
            if_index,
            if_name: if_name.into(),
            provider: provider.into(),
            kind: kind.into(),
            capacity_bps,
            committed_bps: None,
        }
    };
    vec![
        path(
            P1,
            EDGE1,
            "edge1",
            1,
            "et-0/0/1",
            "Transit A",
            "transit",
            Some(10_000_000),
        ),
        path(
            P2,
            EDGE1,
            "edge1",
            2,
            "et-0/0/2",
            "Peering B",
            "peering",
            Some(100_000_000),
        ),
        path(&p3(), EDGE2, HOSTILE, 5, "xe-0/0/5", "Cloud C", "cloud", None),
    ]
}

fn alert(
    name: &str,
    state: AlertState,
    labels: &[(&str, &str)],
    summary: &str,
    minutes_ago: i64,
) -> AlertView {
    let mut all: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.insert("alertname".into(), name.into());
    AlertView {
        fingerprint: format!("{:016x}", name.len()),
        labels: all,
        annotations: BTreeMap::from([("summary".to_owned(), summary.to_owned())]),
        state,
        starts_at: Utc::now() - ChronoDuration::minutes(minutes_ago),
        ends_at: (state == AlertState::Resolved).then(Utc::now),
        value: 0.72,
        threshold: Some(0.7),
        silenced_by: vec![],
    }
}

fn alerts() -> Vec<AlertView> {
    vec![
        alert(
            "old-resolved-alert",
            AlertState::Resolved,
            &[("severity", "warning")],
            "was fine",
            300,
        ),
        alert(
            "exporter-health",
            AlertState::Pending,
            &[("severity", "warning"), ("exporter", HOSTILE)],
            &format!("{HOSTILE} is silent"),
            2,
        ),
        alert(
            "transit-utilisation",
            AlertState::Firing,
            &[("severity", "critical"), ("path", P1)],
            "Transit A at 72 % of 10 Mbit/s",
            12,
        ),
    ]
}

/// An outbound flow through `out_if` of edge1, `age` seconds ago, with an nProbe round trip of
/// 2 × (1.5 + 4) = 11 ms.
fn outbound(now: u32, age: u32, out_if: u32, bytes: u64) -> FlowRow {
    let mut flow = FlowRow::new(IpAddr::from(EDGE1), now - age, FlowType::Ipfix);
    flow.src_addr = to_v6("10.0.0.1".parse().unwrap());
    flow.dst_addr = to_v6("203.0.113.10".parse().unwrap());
    flow.proto = 6;
    flow.bytes = bytes;
    flow.packets = bytes / 1000;
    flow.sampling_rate = 100;
    flow.out_if = out_if;
    flow.traffic_direction = TrafficDirection::Outbound;
    flow.egress_path = if out_if == 1 { P1 } else { P2 }.into();
    flow.exporter_name = "edge1".into();
    if age < 3_600 {
        flow.rtt_client_us = Some(1_500);
        flow.rtt_server_us = Some(4_000);
        flow.rtt_source = RttSource::Nprobe;
    }
    flow
}

/// Bytes per current flow: four flows × 675 000 × 100 in 300 s = 7.2 Mbit/s = 72 % of P1;
/// four × 450 000 × 100 = 4.8 Mbit/s = 4.8 % of P2.
const P1_CURRENT_BYTES: u64 = 675_000;
const P2_CURRENT_BYTES: u64 = 450_000;

fn flows(now: u32) -> Vec<FlowRow> {
    let mut flows = Vec::new();
    // The current window: ages 30..210 s, well inside the page's 300 s.
    for age in [30, 90, 150, 210] {
        flows.push(outbound(now, age, 1, P1_CURRENT_BYTES));
        flows.push(outbound(now, age, 2, P2_CURRENT_BYTES));
    }
    // Six hours of history, one flow per path every five minutes, in a daily-looking wave.
    for step in 0..70_u32 {
        let age = 330 + step * 300;
        let wave = (f64::from(step) / 9.0).sin();
        flows.push(outbound(now, age, 1, (2_000_000.0 + 1_400_000.0 * wave) as u64));
        flows.push(outbound(now, age, 2, (1_200_000.0 - 800_000.0 * wave) as u64));
    }
    flows
}

/// One probe a minute over the last hour through P1, each 23.4 ms.
fn probes(now: u32) -> Vec<ProbeRow> {
    (1..60)
        .map(|minute| ProbeRow {
            time: now - minute * 60 + 5,
            path: P1.into(),
            target: "192.0.2.80:443".into(),
            method: ProbeMethod::Tcp,
            rtt_us: Some(23_400),
            success: 1,
            error: String::new(),
        })
        .collect()
}

fn stats(
    minute: u32,
    exporter: [u8; 4],
    datagrams: u64,
    records: u64,
    lost: u64,
    errors: u64,
) -> ExporterStatsRow {
    ExporterStatsRow {
        minute,
        exporter_address: to_v6(IpAddr::from(exporter)),
        observation_domain: 0,
        flow_type: FlowType::Ipfix,
        datagrams,
        records,
        records_lost: lost,
        decode_error_kinds: if errors > 0 {
            vec!["template_missing".into()]
        } else {
            vec![]
        },
        decode_error_counts: if errors > 0 { vec![errors] } else { vec![] },
        templates_known: 2,
    }
}

/// edge1 every minute of the last hour (59 × 120 datagrams, 59 × 2400 records); edge2 (the
/// hostile name) two hours ago only; the stray exporter in the last minutes with loss and
/// decode errors.
fn exporter_stats(now: u32) -> Vec<ExporterStatsRow> {
    let this_minute = now / 60 * 60;
    let mut rows: Vec<ExporterStatsRow> = (1..60)
        .map(|i| stats(this_minute - i * 60, EDGE1, 120, 2_400, 0, 0))
        .collect();
    rows.push(stats(this_minute - 7_200, EDGE2, 50, 900, 0, 0));
    rows.push(stats(this_minute - 120, STRAY, 40, 760, 40, 3));
    rows.push(stats(this_minute - 60, STRAY, 40, 800, 0, 0));
    rows
}

/// A result evaluated 45 s before `now`, of `(sla, kind)` about `subject`, with `(value,
/// threshold)`.
fn sla_result(
    now: u32,
    (sla, kind): (&str, &str),
    subject: &str,
    labels: &[(&str, &str)],
    (value, threshold): (f64, f64),
    verdict: Verdict,
) -> SlaResultRow {
    SlaResultRow {
        time: now - 45,
        sla: sla.into(),
        kind: kind.into(),
        subject: subject.into(),
        labels_keys: labels.iter().map(|(k, _)| (*k).to_owned()).collect(),
        labels_values: labels.iter().map(|(_, v)| (*v).to_owned()).collect(),
        value,
        threshold,
        verdict,
        samples: 12,
        details: String::new(),
    }
}

fn sla_results(now: u32) -> Vec<SlaResultRow> {
    let p3 = p3();
    let utilisation = ("transit-utilisation", "throughput");
    vec![
        sla_result(
            now,
            utilisation,
            P1,
            &[("path", P1)],
            (0.72, 0.7),
            Verdict::Breach,
        ),
        sla_result(now, utilisation, P2, &[("path", P2)], (0.048, 0.7), Verdict::Ok),
        sla_result(
            now,
            utilisation,
            &p3,
            &[("path", &p3)],
            (0.0, 0.7),
            Verdict::NoData,
        ),
        sla_result(
            now,
            ("exporter-health", "exporter_health"),
            HOSTILE,
            &[("exporter", HOSTILE), ("check", "silence")],
            (7_140.0, 300.0),
            Verdict::Breach,
        ),
        sla_result(
            now,
            ("transit-latency", "latency"),
            P1,
            &[("path", P1), ("check", "latency")],
            (23.4, 50.0),
            Verdict::Ok,
        ),
    ]
}

async fn insert<T: RowOwned + RowWrite>(client: &Client, table: &str, rows: &[T]) {
    let mut insert = client.insert::<T>(table).await.unwrap();
    for row in rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
}

struct Fixture {
    server: ClickHouseServer,
    router: Router,
}

/// A migrated server with the demo rows, and the API over it.
async fn fixture() -> Fixture {
    let server = ClickHouseServer::start().expect("clickhouse-server starts");
    let config = ClickHouseConfig {
        url: server.http_url(),
        ..ClickHouseConfig::default()
    };
    let client = connection::client(&config).unwrap();
    let version = connection::server_version(&client).await.unwrap();
    assert_eq!(version.major, 18, "these tests are for Debian's ClickHouse 18.16");
    migrate(&client, &config, &version).await.unwrap();
    let now = now();
    insert(&client, FLOWS_TABLE, &flows(now)).await;
    insert(&client, PROBES_TABLE, &probes(now)).await;
    insert(&client, EXPORTER_STATS_TABLE, &exporter_stats(now)).await;
    insert(&client, SLA_RESULTS_TABLE, &sla_results(now)).await;
    let slas = [
        "transit-utilisation",
        "exporter-health",
        "transit-latency",
        "never-run",
    ]
    .map(String::from)
    .to_vec();
    let alerts = Arc::new(MemoryAlerts { alerts: alerts() });
    let state = ApiState::new(client, "egress", model_paths(), slas, alerts).unwrap();
    Fixture {
        server,
        router: api::router(state),
    }
}

/// `GET /`: status, headers and the page.
async fn status_page(router: &Router) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::get("/").body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The markup of `<section id="{id}">`.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no section {id} in\n{html}"));
    let end = html[start..].find("</section>").expect("section ends") + start;
    &html[start..end]
}

/// The table row of `html` that contains `text`.
fn row<'a>(html: &'a str, text: &str) -> &'a str {
    html.split("<tr>")
        .find(|row| row.contains(text))
        .unwrap_or_else(|| panic!("no row with {text:?} in\n{html}"))
}

/// Everything the page must show about the demo rows (shared by the `oneshot` test and the DOM
/// that Chromium dumps, which serialises text the same way).
fn assert_page_content(html: &str) {
    assert!(html.contains("Egress status"), "{html}");
    // No hostile markup got through, and the hostile name is shown, escaped, where it appears.
    assert!(!html.contains("<script"), "unescaped script in the page:\n{html}");
    let hostile = escaped(HOSTILE);
    assert!(html.contains(&hostile), "{html}");

    let paths = section(html, "paths");
    let p1 = row(paths, &escaped(P1));
    assert!(p1.contains("7.2 Mbit/s"), "{p1}");
    assert!(p1.contains("72.0 %"), "{p1}");
    assert!(p1.contains("<polyline"), "no throughput sparkline: {p1}");
    // Amber bar (72 % is between 70 and 90) with the SLA's threshold tick at 70 % of 100 px.
    assert!(p1.contains("fill=\"#d9930d\""), "{p1}");
    assert!(p1.contains("x1=\"70.0\""), "{p1}");
    assert!(
        p1.contains("23.4 ms") && p1.contains("11 ms"),
        "probe and flow p95: {p1}"
    );
    assert!(p1.contains("<span class=\"badge breach\">breach</span>"), "{p1}");
    assert!(p1.contains("10 Mbit/s"), "capacity: {p1}");
    let p2 = row(paths, &escaped(P2));
    assert!(p2.contains("4.8 Mbit/s") && p2.contains("4.8 %"), "{p2}");
    assert!(p2.contains("<span class=\"badge ok\">ok</span>"), "{p2}");
    let p3 = row(paths, &escaped(&p3()));
    assert!(p3.contains("no data") && p3.contains("no capacity"), "{p3}");
    assert!(p3.contains("<span class=\"badge nodata\">no data</span>"), "{p3}");

    let slas = section(html, "slas");
    assert!(row(slas, "exporter-health").contains("badge breach"), "{slas}");
    assert!(row(slas, "exporter-health").contains(&hostile), "{slas}");
    // Values in the unit of their kind and check: a silence as a duration, a latency in ms.
    assert!(row(slas, "exporter-health").contains("1 h 59 min"), "{slas}");
    assert!(row(slas, "exporter-health").contains("5 min"), "{slas}");
    assert!(row(slas, "transit-latency").contains("badge ok"), "{slas}");
    assert!(
        row(slas, "transit-latency").contains("23.4 ms") && row(slas, "transit-latency").contains("50 ms"),
        "{slas}"
    );
    assert!(row(slas, "never-run").contains("not evaluated"), "{slas}");
    // Breaches are listed first.
    assert!(
        slas.find("badge breach").unwrap() < slas.find("badge ok").unwrap(),
        "{slas}"
    );

    let alerts = section(html, "alerts");
    assert!(
        alerts.contains("<span class=\"badge firing\">firing</span> <strong>transit-utilisation</strong>"),
        "{alerts}"
    );
    assert!(alerts.contains("Transit A at 72 % of 10 Mbit/s"), "{alerts}");
    assert!(
        alerts.contains("<strong>exporter-health</strong>") && alerts.contains("badge pending"),
        "{alerts}"
    );
    assert!(
        !alerts.contains("old-resolved-alert"),
        "resolved alerts are not listed: {alerts}"
    );
    assert!(
        alerts.find("badge firing").unwrap() < alerts.find("badge pending").unwrap(),
        "{alerts}"
    );

    let latency = section(html, "latency");
    assert!(row(latency, "probes").contains("23.4 ms"), "{latency}");
    assert!(row(latency, "flows").contains("11 ms"), "{latency}");

    let collectors = section(html, "collectors");
    let edge1 = row(collectors, "192.0.2.1");
    assert!(
        edge1.contains(&format!("7{THIN}080")),
        "59 × 120 datagrams: {edge1}"
    );
    assert!(
        edge1.contains(&format!("141{THIN}600")),
        "59 × 2400 records: {edge1}"
    );
    assert!(edge1.contains("badge ok"), "{edge1}");
    let edge2 = row(collectors, "192.0.2.9");
    assert!(
        edge2.contains(&hostile) && edge2.contains("badge silent"),
        "{edge2}"
    );
    // Its last minute started 7200 s before the fixture's minute: seen 7140 s before it.
    assert!(
        edge2.contains("1 h 59 min ago") || edge2.contains("2 h ago"),
        "last seen about two hours ago: {edge2}"
    );
    let stray = row(collectors, "198.51.100.3");
    assert!(stray.contains("badge degraded"), "{stray}");
    assert!(stray.contains("<td class=\"num\">80</td>"), "datagrams: {stray}");
    assert!(
        stray.contains("<td class=\"num\">3</td>"),
        "decode errors: {stray}"
    );
    assert!(stray.contains("2.5 %"), "40 lost of 1600: {stray}");
}

#[tokio::test]
async fn status_page_shows_paths_verdicts_alerts_and_collectors_escaped() {
    let fixture = fixture().await;
    let (status, headers, html) = status_page(&fixture.router).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains("<meta http-equiv=\"refresh\" content=\"30\">"),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "no script, no external asset"
    );
    assert_page_content(&html);
    // The JSON routes are unchanged beside it.
    let response = fixture
        .router
        .clone()
        .oneshot(Request::get("/api/v1/paths").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn status_page_without_clickhouse_renders_unavailable_sections() {
    let mut fixture = fixture().await;
    fixture.server.stop().unwrap();
    let started = Instant::now();
    let (status, _, html) = status_page(&fixture.router).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    for id in ["paths", "slas", "latency", "collectors"] {
        assert!(
            section(&html, id).contains("<p class=\"unavailable\">Unavailable: "),
            "{id}: {}",
            section(&html, id)
        );
    }
    // The alert state lives in memory and still shows.
    assert!(section(&html, "alerts").contains("transit-utilisation"), "{html}");
    assert!(
        html.contains("<div class=\"n\">?</div><div class=\"l\">SLA breaches</div>"),
        "{html}"
    );
}

/// Where the screenshot goes.
fn screenshot_dir() -> PathBuf {
    for variable in ["EGRESS_SCREENSHOT_DIR", "CARGO_TARGET_DIR"] {
        if let Some(dir) = std::env::var_os(variable).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// Runs headless Chromium on `url` with `extra` arguments, its standard output into `stdout`;
/// killed after 60 seconds.
fn chromium(url: &str, extra: &[String], profile: &Path, stdout: &Path) -> std::process::ExitStatus {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(File::create(stdout).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium runs (Debian package `chromium`; scripts/install-deps.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let fixture = fixture().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, fixture.router.clone()).into_future());

    // Chromium's profiles and the DOM dump; removed at the end.
    let work = std::env::temp_dir().join(format!("egress-status-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let dom = work.join("dom.html");
    let (screenshot_status, dom_status) = tokio::task::spawn_blocking({
        let (url, png, dom, profile) = (url.clone(), png.clone(), dom.clone(), work.clone());
        move || {
            let shot = chromium(
                &url,
                &[format!("--screenshot={}", png.display())],
                &profile.join("profile-screenshot"),
                &profile.join("screenshot.out"),
            );
            let dump = chromium(
                &url,
                &["--dump-dom".to_owned()],
                &profile.join("profile-dom"),
                &dom,
            );
            (shot, dump)
        }
    })
    .await
    .unwrap();
    server.abort();
    assert!(
        screenshot_status.success(),
        "chromium --screenshot: {screenshot_status}"
    );
    assert!(dom_status.success(), "chromium --dump-dom: {dom_status}");

    let dom = std::fs::read_to_string(&dom).unwrap();
    std::fs::remove_dir_all(&work).unwrap();
    assert_page_content(&dom);

    let image = std::fs::read(&png).unwrap();
    println!(
        "status page screenshot: {} ({} bytes)",
        png.display(),
        image.len()
    );
    assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&image[12..16], b"IHDR");
    let width = u32::from_be_bytes(image[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(image[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 1600));
    // A blank 1280 × 1600 page compresses to a few KiB; this one has a dark header, tables,
    // badges and charts.
    assert!(image.len() > 40_000, "{} bytes: blank?", image.len());
    let patterns: std::collections::HashSet<&[u8]> = image.windows(2).collect();
    assert!(
        patterns.len() > 20_000,
        "{} distinct byte pairs: blank?",
        patterns.len()
    );
}

/// Where the SQL dump goes: `$EGRESS_DDL_DIR`, else `<target dir>/egress-ddl`.
fn dump_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EGRESS_DDL_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").join("egress-ddl")
}

/// Writes `status.sql`: every query of the status page with literal values, one `;`-terminated
/// statement each, for `tests/chdb/check_sla_sql.py` (run on current ClickHouse beside the SLA
/// queries; the tests above run them on 18.16).
#[test]
fn dump_status_sql() {
    let now = now() / 60 * 60 + 30;
    let mut text =
        format!("-- Egress status page queries with literal values (database `egress`)\n-- now: {now}\n");
    let queries = api::status_page_queries("egress", now);
    assert_eq!(queries.len(), 6);
    for query in &queries {
        assert_eq!(
            query.sql.matches('?').count(),
            query.params.len(),
            "{}",
            query.name
        );
        text.push_str(&format!(
            "-- status {}\n{};\n\n",
            query.name,
            query.with_literals()
        ));
    }
    let dir = dump_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("status.sql"), text).unwrap();
}
