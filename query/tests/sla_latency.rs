//! The latency SLA against a real ClickHouse 18.16: probe results go into `probes` (migration
//! 200, applied here until `migrate` applies it itself), the SLA is evaluated, and the verdicts
//! are checked — a slow path breaches, a fast one is ok, a path whose probes all fail is
//! `unreachable` (never a latency figure), a flaky path is judged on the probes that answered,
//! a listed path without probes is no data, and per-target subjects tell a slow far end from a
//! slow path. Also runs the example query of the `## Probes` section of `docs/schema.md` and
//! reads the same probes through `GET /api/v1/probes`; `POST /api/v1/trace` is checked with a
//! fixed tracer (the real one, the collector's `PathTracer`, is tested there on loopback).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use egress_query::api::{
    self, AlertView, AlertsView, AlertsViewError, ApiState, HopTracer, NewSilence, SilenceView, TraceError,
};
use egress_query::connection::{self, ClickHouseConfig};
use egress_query::migrate::migrate;
use egress_query::probes::{Hop, ProbeMethod, ProbeRow, PROBES_TABLE};
use egress_query::schema::{FlowRow, FlowType, RttSource, TrafficDirection, FLOWS_TABLE};
use egress_query::sla::{
    evaluate_all, validate, EvalContext, KindName, LatencyConfig, LatencyScope, LatencySource, SlaConfig,
    SlaResult, Verdict,
};
use egress_testkit::clickhouse::ClickHouseServer;
use serde_json::Value;
use tower::ServiceExt;

/// No alerts and no silences: the probes route does not use them.
#[derive(Debug)]
struct NoAlerts;

impl AlertsView for NoAlerts {
    fn alerts(&self) -> Result<Vec<AlertView>, AlertsViewError> {
        Ok(Vec::new())
    }

    fn silences(&self) -> Result<Vec<SilenceView>, AlertsViewError> {
        Ok(Vec::new())
    }

    fn create_silence(&self, _silence: NewSilence) -> Result<String, AlertsViewError> {
        Err(AlertsViewError::Invalid("not in this test".into()))
    }

    fn expire_silence(&self, id: &str) -> Result<(), AlertsViewError> {
        Err(AlertsViewError::NotFound(id.to_owned()))
    }
}

/// Two hops through path `transit-a`, the second silent; other paths are unknown.
#[derive(Debug)]
struct FixedTracer;

impl HopTracer for FixedTracer {
    fn trace(&self, path: &str, _target: &str, max_hops: u8, _: Duration) -> Result<Vec<Hop>, TraceError> {
        if path != "transit-a" {
            return Err(TraceError::UnknownPath(path.to_owned()));
        }
        let hops = [
            Hop {
                ttl: 1,
                address: Some("192.0.2.254".parse().unwrap()),
                rtt_us: Some(1_500),
            },
            Hop {
                ttl: 2,
                address: None,
                rtt_us: None,
            },
        ];
        Ok(hops.into_iter().take(usize::from(max_hops)).collect())
    }
}

async fn post(router: &axum::Router, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn get(router: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn probe(time: u32, path: &str, target: &str, rtt_us: Option<u32>) -> ProbeRow {
    ProbeRow {
        time,
        path: path.to_owned(),
        target: target.to_owned(),
        method: ProbeMethod::Tcp,
        rtt_us,
        success: u8::from(rtt_us.is_some()),
        error: if rtt_us.is_some() {
            String::new()
        } else {
            "timeout".to_owned()
        },
    }
}

/// Thirty probes per target, one every 10 s over the last five minutes.
fn scenario(now: u32) -> Vec<ProbeRow> {
    let mut rows = Vec::new();
    for i in 0..30u32 {
        let time = now - 300 + i * 10;
        // Jitter so that the percentiles differ from the median.
        let jitter = (i % 5) * 100;
        rows.push(probe(time, "fast", "192.0.2.1:443", Some(2_000 + jitter)));
        rows.push(probe(time, "slow", "192.0.2.2:443", Some(85_000 + jitter)));
        rows.push(probe(time, "down", "192.0.2.3:443", None));
        // One in three answers, quickly.
        rows.push(probe(
            time,
            "flaky",
            "192.0.2.4:443",
            (i % 3 == 0).then_some(3_000),
        ));
        // One far end slow, the other fast: the path is fine, the far end is not.
        rows.push(probe(time, "mixed", "198.51.100.1:443", Some(1_500)));
        rows.push(probe(time, "mixed", "198.51.100.2:443", Some(120_000)));
        // Outside the window: must not count.
        rows.push(probe(now - 3_600 + i, "fast", "192.0.2.1:443", Some(900_000)));
    }
    rows
}

fn latency_sla(name: &str, spec: LatencyConfig) -> SlaConfig {
    SlaConfig {
        name: name.to_owned(),
        kind: KindName::Latency,
        window_seconds: 300,
        for_seconds: 0,
        keep_firing_for_seconds: 0,
        severity: Default::default(),
        labels: BTreeMap::new(),
        throughput: None,
        exfiltration: None,
        exporter_health: None,
        objective: None,
        latency: Some(spec),
    }
}

fn find<'a>(results: &'a [SlaResult], sla: &str, subject: &str, check: &str) -> &'a SlaResult {
    results
        .iter()
        .find(|r| r.sla == sla && r.subject == subject && r.labels["check"] == check)
        .unwrap_or_else(|| panic!("no {check} result for {sla} / {subject} in {results:#?}"))
}

/// A migrated database on a fresh server (the server must outlive the client's use).
async fn migrated() -> (ClickHouseServer, clickhouse::Client) {
    let server = ClickHouseServer::start().expect("clickhouse-server starts");
    let config = ClickHouseConfig {
        url: server.http_url(),
        retention_days: 0,
        ..ClickHouseConfig::default()
    };
    let client = connection::client(&config).unwrap();
    let version = connection::server_version(&client).await.unwrap();
    migrate(&client, &config, &version).await.unwrap();
    (server, client)
}

#[tokio::test]
async fn latency_verdicts_on_clickhouse_18() {
    let (_server, client) = migrated().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32;
    let mut insert = client.insert::<ProbeRow>(PROBES_TABLE).await.unwrap();
    for row in scenario(now) {
        insert.write(&row).await.unwrap();
    }
    insert.end().await.unwrap();

    // The rows come back as written: Nullable round trip and Enum8 on 18.16.
    let stored: Vec<ProbeRow> = client
        .query("SELECT ?fields FROM probes WHERE path = 'down' ORDER BY time LIMIT 1")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(stored, [probe(now - 300, "down", "192.0.2.3:443", None)]);

    let per_path = latency_sla(
        "rtt-p95",
        LatencyConfig {
            percentile: 0.95,
            threshold_ms: 50.0,
            per: LatencyScope::Path,
            paths: ["fast", "slow", "down", "flaky", "silent"]
                .map(String::from)
                .to_vec(),
            min_samples: 5,
            ..LatencyConfig::default()
        },
    );
    let per_target = latency_sla(
        "rtt-target",
        LatencyConfig {
            percentile: 0.5,
            threshold_ms: 50.0,
            per: LatencyScope::Target,
            paths: vec!["mixed".to_owned()],
            min_samples: 5,
            ..LatencyConfig::default()
        },
    );
    let slas = vec![per_path, per_target];
    assert!(validate(&slas).is_empty(), "{:?}", validate(&slas));
    let ctx = EvalContext {
        now,
        database: "egress".to_owned(),
        paths: Vec::new(),
        exporters: Vec::new(),
        query_timeout: Duration::from_secs(30),
    };
    let results = evaluate_all(&client, &slas, &ctx).await.unwrap();
    // Two checks per subject: five paths and two targets.
    assert_eq!(results.len(), 2 * (5 + 2), "{results:#?}");

    let slow = find(&results, "rtt-p95", "slow", "latency");
    assert_eq!(slow.verdict, Verdict::Breach);
    assert!((85.0..=85.5).contains(&slow.value), "slow p95 {}", slow.value);
    assert_eq!(
        (slow.samples, slow.details["source"].as_str()),
        (30, Some("probes"))
    );
    assert_eq!(
        find(&results, "rtt-p95", "slow", "unreachable").verdict,
        Verdict::Ok
    );

    let fast = find(&results, "rtt-p95", "fast", "latency");
    assert_eq!(fast.verdict, Verdict::Ok);
    assert!(
        (2.0..=2.5).contains(&fast.value),
        "fast p95 {} (the old probes leaked in?)",
        fast.value
    );

    let down = find(&results, "rtt-p95", "down", "unreachable");
    assert_eq!(
        (down.verdict, down.value, down.samples),
        (Verdict::Breach, 1.0, 30)
    );
    assert_eq!(down.labels["path"], "down");
    let down_latency = find(&results, "rtt-p95", "down", "latency");
    assert_eq!((down_latency.verdict, down_latency.value), (Verdict::NoData, 0.0));
    assert!(down_latency.details["p95_ms"].is_null());

    let flaky = find(&results, "rtt-p95", "flaky", "latency");
    assert_eq!(
        (flaky.verdict, flaky.value, flaky.samples),
        (Verdict::Ok, 3.0, 10)
    );
    let flaky_unreachable = find(&results, "rtt-p95", "flaky", "unreachable");
    assert_eq!(flaky_unreachable.verdict, Verdict::Ok);
    assert!((flaky_unreachable.value - 20.0 / 30.0).abs() < 1e-9);

    for check in ["latency", "unreachable"] {
        let silent = find(&results, "rtt-p95", "silent", check);
        assert_eq!((silent.verdict, silent.samples), (Verdict::NoData, 0));
    }

    let far_end = find(&results, "rtt-target", "mixed → 198.51.100.2:443", "latency");
    assert_eq!((far_end.verdict, far_end.value), (Verdict::Breach, 120.0));
    assert_eq!(far_end.labels["target"], "198.51.100.2:443");
    let near = find(&results, "rtt-target", "mixed → 198.51.100.1:443", "latency");
    assert_eq!((near.verdict, near.value), (Verdict::Ok, 1.5));

    // The alert of the unreachable path carries its own check label and no latency figure.
    let sample = down.alert_sample(&slas[0]);
    assert_eq!(sample.breaching, Some(true));
    assert_eq!(sample.labels["check"], "unreachable");
    assert_eq!(sample.labels["sla_kind"], "latency");
    assert!(
        sample.annotations["summary"].contains("100% of 30 probes failed"),
        "{sample:?}"
    );

    // The example query of docs/schema.md runs and returns one row per path and target.
    let markdown =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.md")).unwrap();
    let section = markdown
        .split("\n## Probes\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let example = section
        .split("```sql\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let rows = client
        .query_raw(example)
        .fetch_bytes("TSV")
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rows).lines().count(),
        6,
        "{}",
        String::from_utf8_lossy(&rows)
    );

    // The same probes through the API: percentiles of the answered probes, null for none.
    let state = ApiState::new(
        client.clone(),
        "egress",
        Vec::new(),
        Vec::new(),
        Arc::new(NoAlerts),
    )
    .unwrap();
    let router = api::router(state.clone());
    // The API window is (now - window, now], like the other routes: 600 s holds all thirty.
    let (status, body) = get(&router, "/api/v1/probes?window=600").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = body["probes"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "{body:#}");
    let entry = |path: &str| entries.iter().find(|e| e["path"] == path).unwrap();
    assert_eq!(entry("slow")["probes"], 30);
    assert!((85.0..=85.5).contains(&entry("slow")["p95_ms"].as_f64().unwrap()));
    assert_eq!(entry("down")["failures"], 30);
    assert_eq!(entry("down")["failure_ratio"], 1.0);
    assert!(entry("down")["p50_ms"].is_null() && entry("down")["last_rtt_ms"].is_null());
    assert_eq!(
        (&entry("down")["last_success"], &entry("down")["last_error"]),
        (&Value::Bool(false), &Value::from("timeout"))
    );
    assert_eq!(entry("fast")["method"], "tcp");
    assert_eq!(entry("fast")["last_success"], true);
    let (status, body) = get(&router, "/api/v1/probes?path=down").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["probes"].as_array().unwrap().len(), 1, "{body:#}");
    let (status, body) = get(&router, "/api/v1/probes?path=x%27%3B").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("path"));
    let (status, _) = get(&router, "/api/v1/probes?window=10").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Hop traces: 503 without a prober in the process, then through the tracer.
    let trace = r#"{"path": "transit-a", "target": "192.0.2.1:443"}"#;
    let (status, body) = post(&router, "/api/v1/trace", trace).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let router = api::router(state.with_tracer(Arc::new(FixedTracer)));
    let (status, body) = post(&router, "/api/v1/trace", trace).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["hops"],
        serde_json::json!([
            { "ttl": 1, "address": "192.0.2.254", "rtt_ms": 1.5 },
            { "ttl": 2, "address": null, "rtt_ms": null }
        ])
    );
    let (status, _) = post(
        &router,
        "/api/v1/trace",
        r#"{"path": "transit-b", "target": "192.0.2.1"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The last trace of each path (kept by the API's recording tracer, which the monitor also
    // uses for the traces of latency alerts).
    let (status, body) = get(&router, "/api/v1/trace?path=transit-a").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["path"], &body["target"]),
        (&Value::from("transit-a"), &Value::from("192.0.2.1:443"))
    );
    assert_eq!(body["hops"][0]["address"], "192.0.2.254", "{body}");
    let (status, body) = get(&router, "/api/v1/trace").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["traces"].as_array().unwrap().len(), 1, "{body}");
    let (status, body) = get(&router, "/api/v1/trace?path=transit-b").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    for (bad, parameter) in [
        (r#"{"path": "transit-a", "target": "x;rm"}"#, "target"),
        (
            r#"{"path": "transit-a", "target": "192.0.2.1", "max_hops": 99}"#,
            "max_hops",
        ),
        (r#"{"path": "transit-a"}"#, "body"),
    ] {
        let (status, body) = post(&router, "/api/v1/trace", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(parameter),
            "{bad}: {body}"
        );
    }
}

/// An outbound flow on `path` at `time` with the exporter's round-trip fields.
fn rtt_flow(
    time: u32,
    path: &str,
    source: RttSource,
    client_us: Option<u32>,
    server_us: Option<u32>,
) -> FlowRow {
    let mut flow = FlowRow::new("192.0.2.1".parse().unwrap(), time, FlowType::Ipfix);
    flow.traffic_direction = TrafficDirection::Outbound;
    flow.egress_path = path.into();
    flow.bytes = 1_000;
    flow.packets = 10;
    flow.rtt_client_us = client_us;
    flow.rtt_server_us = server_us;
    flow.rtt_app_us = client_us.map(|_| 250_000);
    flow.rtt_source = source;
    flow
}

/// Flow round trips over the last five minutes: `slow` at 90 ms (NetScaler, one full round
/// trip), `fast` at 10 ms through every way a flow gives one (nProbe halves on both sides,
/// nProbe server side alone, sFlow tcp_info) plus thirty flows without RTT that must not count
/// as 0, `few` with three round trips; and flows that must not count: inbound, outside the
/// window.
fn flow_scenario(now: u32) -> Vec<FlowRow> {
    let mut rows = Vec::new();
    for i in 0..20u32 {
        let time = now - 290 + i * 14;
        rows.push(rtt_flow(
            time,
            "slow",
            RttSource::Netscaler,
            Some(90_000 + i * 100),
            None,
        ));
        let fast = match i % 3 {
            0 => rtt_flow(time, "fast", RttSource::Nprobe, Some(1_000), Some(4_000)),
            1 => rtt_flow(time, "fast", RttSource::Nprobe, None, Some(5_000)),
            _ => rtt_flow(time, "fast", RttSource::SflowTcpInfo, Some(10_000), None),
        };
        rows.push(fast);
        // Outside the window, and inbound: a second's round trip that must not count.
        rows.push(rtt_flow(
            now - 4_000 + i,
            "fast",
            RttSource::SflowTcpInfo,
            Some(1_000_000),
            None,
        ));
        let mut inbound = rtt_flow(time, "fast", RttSource::SflowTcpInfo, Some(1_000_000), None);
        inbound.traffic_direction = TrafficDirection::Inbound;
        rows.push(inbound);
    }
    for i in 0..30u32 {
        rows.push(rtt_flow(now - 280 + i * 9, "fast", RttSource::None, None, None));
    }
    for i in 0..3u32 {
        rows.push(rtt_flow(
            now - 200 + i * 10,
            "few",
            RttSource::Netscaler,
            Some(2_000),
            None,
        ));
    }
    rows
}

#[tokio::test]
async fn latency_from_flow_rtt_on_clickhouse_18() {
    let (_server, client) = migrated().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32;
    let mut insert = client.insert::<FlowRow>(FLOWS_TABLE).await.unwrap();
    for row in flow_scenario(now) {
        insert.write(&row).await.unwrap();
    }
    insert.end().await.unwrap();
    // Ten probes on `fast` at 20 ms and two failures, for `both`.
    let mut insert = client.insert::<ProbeRow>(PROBES_TABLE).await.unwrap();
    for i in 0..12u32 {
        let rtt = (i < 10).then_some(20_000);
        insert
            .write(&probe(now - 250 + i * 20, "fast", "192.0.2.1:443", rtt))
            .await
            .unwrap();
    }
    insert.end().await.unwrap();

    let paths: Vec<String> = ["slow", "fast", "few", "silent"].map(String::from).to_vec();
    let flows = |percentile: f64| LatencyConfig {
        percentile,
        threshold_ms: 50.0,
        source: LatencySource::Flows,
        paths: paths.clone(),
        ..LatencyConfig::default()
    };
    let slas = vec![
        latency_sla("flows-p95", flows(0.95)),
        latency_sla("flows-p50", flows(0.5)),
        latency_sla(
            "both-p95",
            LatencyConfig {
                source: LatencySource::Both,
                paths: vec!["fast".to_owned()],
                ..flows(0.95)
            },
        ),
        latency_sla(
            "flows-objective",
            LatencyConfig {
                objective: Some(0.99),
                ..flows(0.95)
            },
        ),
        latency_sla(
            "both-objective",
            LatencyConfig {
                source: LatencySource::Both,
                objective: Some(0.99),
                threshold_ms: 15.0,
                paths: vec!["fast".to_owned()],
                ..flows(0.95)
            },
        ),
    ];
    assert!(validate(&slas).is_empty(), "{:?}", validate(&slas));
    let ctx = EvalContext {
        now,
        database: "egress".to_owned(),
        paths: Vec::new(),
        exporters: Vec::new(),
        query_timeout: Duration::from_secs(30),
    };
    let results = evaluate_all(&client, &slas, &ctx).await.unwrap();
    // Flows alone: one latency result per path; both: latency and unreachable.
    assert_eq!(results.len(), 4 + 4 + 2 + 4 + 2, "{results:#?}");

    let slow = find(&results, "flows-p95", "slow", "latency");
    assert_eq!(
        (slow.verdict, slow.samples, slow.details["source"].as_str()),
        (Verdict::Breach, 20, Some("flows"))
    );
    assert!((91.0..=92.0).contains(&slow.value), "slow p95 {}", slow.value);
    assert!(
        slow.alert_sample(&slas[0]).annotations["summary"].ends_with("from flow RTT"),
        "{slow:?}"
    );
    // Every way to a round trip gives 10 ms; the inbound and old seconds-long ones are out.
    let fast = find(&results, "flows-p95", "fast", "latency");
    assert_eq!((fast.verdict, fast.value, fast.samples), (Verdict::Ok, 10.0, 20));
    assert_eq!(fast.details["samples_by_source"]["flows"], 20);
    // Thirty flows without RTT next to twenty with: the median is 10 ms, not 0.
    let median = find(&results, "flows-p50", "fast", "latency");
    assert_eq!((median.verdict, median.value), (Verdict::Ok, 10.0));
    for sla in ["flows-p95", "flows-objective"] {
        let few = find(&results, sla, "few", "latency");
        assert_eq!((few.verdict, few.samples), (Verdict::NoData, 3), "{sla}");
        let silent = find(&results, sla, "silent", "latency");
        assert_eq!((silent.verdict, silent.samples), (Verdict::NoData, 0), "{sla}");
    }
    assert!(!results
        .iter()
        .any(|r| r.sla.starts_with("flows") && r.labels["check"] == "unreachable"));

    // Both: one sample set, 10 answered probes at 20 ms and 20 flow round trips at 10 ms.
    let both = find(&results, "both-p95", "fast", "latency");
    assert_eq!((both.verdict, both.value, both.samples), (Verdict::Ok, 20.0, 30));
    assert_eq!(both.details["source"], "both");
    assert_eq!(
        both.details["samples_by_source"],
        serde_json::json!({ "probes": 10, "flows": 20 })
    );
    assert_eq!(both.details["p50_ms"], 10.0);
    let reachable = find(&results, "both-p95", "fast", "unreachable");
    assert_eq!(
        (
            reachable.verdict,
            reachable.samples,
            reachable.details["source"].as_str()
        ),
        (Verdict::Ok, 12, Some("probes"))
    );

    // Good-event ratio: every slow round trip is bad, a burn rate of 1 / 0.01 = 100 in every
    // window; the 6h/30m pair (factor 6) is the one furthest past its factor.
    let slow = find(&results, "flows-objective", "slow", "latency");
    assert_eq!((slow.verdict, slow.threshold), (Verdict::Breach, 6.0));
    assert!((slow.value - 100.0).abs() < 1e-6, "{}", slow.value);
    assert_eq!(slow.details["objective"], 0.99);
    let fast = find(&results, "flows-objective", "fast", "latency");
    assert_eq!((fast.verdict, fast.value), (Verdict::Ok, 0.0));
    // Both at 15 ms: the probes' 20 ms are the bad third of the answered round trips.
    let both = find(&results, "both-objective", "fast", "latency");
    assert_eq!(both.verdict, Verdict::Breach, "{both:#?}");
    assert!(
        both.alert_sample(&slas[4]).annotations["summary"].contains("from probes and flow RTT"),
        "{both:?}"
    );

    // The example query of the Latency rollup section of docs/schema.md runs on the rollup and
    // gives one row per path, source and hour (all the samples are in the last hour or two).
    let markdown =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.md")).unwrap();
    let example = markdown
        .split("\n## Latency rollup\n")
        .nth(1)
        .and_then(|section| section.split("```sql\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("docs/schema.md has an example query in its Latency rollup section");
    let rows = client
        .query_raw(example)
        .fetch_bytes("TSV")
        .unwrap()
        .collect()
        .await
        .unwrap();
    let rows = String::from_utf8_lossy(&rows);
    assert!(rows.lines().count() >= 4, "{rows}");
    assert!(
        rows.contains("fast\tprobes\t") && rows.contains("slow\tflows\t"),
        "{rows}"
    );

    // The same round trips over time through the API: one series per path and source.
    let state = ApiState::new(
        client.clone(),
        "egress",
        Vec::new(),
        Vec::new(),
        Arc::new(NoAlerts),
    )
    .unwrap();
    let router = api::router(state);
    let (status, body) = get(&router, "/api/v1/latency?window=600&step=60").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let series = body["series"].as_array().unwrap();
    let keys: Vec<(&str, &str)> = series
        .iter()
        .map(|s| (s["path"].as_str().unwrap(), s["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            ("fast", "flows"),
            ("fast", "probes"),
            ("few", "flows"),
            ("slow", "flows")
        ],
        "{body:#}"
    );
    let samples = |i: usize| -> u64 {
        series[i]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["samples"].as_u64().unwrap())
            .sum()
    };
    // Flows without RTT, inbound and old flows and failed probes are no samples.
    assert_eq!((samples(0), samples(1), samples(2), samples(3)), (20, 10, 3, 20));
    for (i, median) in [(0, 10.0), (1, 20.0), (2, 2.0)] {
        for point in series[i]["points"].as_array().unwrap() {
            assert_eq!(point["p50_ms"], median, "{point}");
        }
    }
    assert!(series[3]["points"][0]["p99_ms"].as_f64().unwrap() >= 90.0);
    assert_eq!(body["resolution"], "raw");
    // The same from the latency rollup (filled by its views in the same inserts): the same
    // series and samples; t-digest percentiles, exact here since each series is constant.
    let (status, rolled) = get(&router, "/api/v1/latency?window=600&step=60&resolution=minute").await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["resolution"], "minute");
    let rolled_series = rolled["series"].as_array().unwrap();
    let total = |series: &Value| -> u64 {
        series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["samples"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(rolled_series.len(), series.len(), "{rolled:#}");
    for (raw, minute) in series.iter().zip(rolled_series) {
        assert_eq!(
            (&raw["path"], &raw["source"]),
            (&minute["path"], &minute["source"])
        );
        assert_eq!(total(raw), total(minute), "{minute:#}");
    }
    for (i, median) in [(0, 10.0), (1, 20.0), (2, 2.0)] {
        for point in rolled_series[i]["points"].as_array().unwrap() {
            assert_eq!(point["p50_ms"], median, "{point}");
        }
    }
    let (status, auto) = get(&router, "/api/v1/latency?window=172800&step=3600").await;
    assert_eq!(
        (status, &auto["resolution"]),
        (StatusCode::OK, &Value::from("minute")),
        "{auto}"
    );
    let (status, body) = get(&router, "/api/v1/latency?resolution=minute&step=90&window=900").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("step"), "{body}");
    let (status, body) = get(&router, "/api/v1/latency?path=fast&window=900&step=900").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["series"].as_array().unwrap().len(), 2, "{body:#}");
    // A quote never reaches the SQL; a label that looks like SQL is only a value.
    let (status, body) = get(&router, "/api/v1/latency?path=fast%27%20OR%201%3D1%20--").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("path"), "{body}");
    let (status, body) = get(&router, "/api/v1/latency?path=fast)%20OR%20(1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["series"], serde_json::json!([]));
    for (bad, parameter) in [
        ("step=5", "step"),
        ("step=7200", "step"),
        ("window=700000", "window"),
        ("window=86400&step=10", "step"),
        ("window=60&step=120", "step"),
        ("source=probes", "source"),
        ("resolution=hour", "resolution"),
    ] {
        let (status, body) = get(&router, &format!("/api/v1/latency?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(parameter),
            "{bad}: {body}"
        );
    }
}
