//! The query API against a real ClickHouse 18.16 (Debian's `clickhouse-server`, started by the test
//! kit): every endpoint with known rows and the numbers they must give, clear 400s for bad
//! parameters, SQL injection attempts through every string parameter (refused or answered
//! normally, tables intact), readiness with a dead and a hanging server, the metrics text, and the
//! OpenAPI document against the router's routes. Requests go through `tower::ServiceExt::oneshot`;
//! no port is bound for the API. Alerts and silences use an in-memory [`AlertsView`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use chrono::{Duration as ChronoDuration, Utc};
use clickhouse::{Client, RowOwned, RowWrite};
use egress_query::api::{
    self, AlertState, AlertView, AlertsView, AlertsViewError, ApiState, NewSilence, PathInfo, SilenceState,
    SilenceView,
};
use egress_query::connection::{self, ClickHouseConfig};
use egress_query::migrate::migrate;
use egress_query::schema::{
    to_v6, ExporterStatsRow, FlowRow, FlowType, SlaResultRow, TrafficDirection, Verdict,
    EXPORTER_STATS_TABLE, FLOWS_TABLE, SLA_RESULTS_TABLE,
};
use egress_testkit::clickhouse::ClickHouseServer;
use serde_json::{json, Value};
use tower::ServiceExt;

const P1: &str = "edge1 / et-0/0/1 (Transit A)";
const P2: &str = "edge1 / et-0/0/2 (Peering B)";
const P3: &str = "edge2 / xe-0/0/5";

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

/// Alerts and silences in memory, with ids `s1`, `s2`, ...
#[derive(Debug, Default)]
struct MemoryAlerts {
    alerts: Vec<AlertView>,
    silences: Mutex<Vec<SilenceView>>,
}

impl AlertsView for MemoryAlerts {
    fn alerts(&self) -> Result<Vec<AlertView>, AlertsViewError> {
        Ok(self.alerts.clone())
    }

    fn silences(&self) -> Result<Vec<SilenceView>, AlertsViewError> {
        Ok(self.silences.lock().unwrap().clone())
    }

    fn create_silence(&self, silence: NewSilence) -> Result<String, AlertsViewError> {
        if silence
            .matchers
            .iter()
            .any(|m| m.is_regex && m.value.contains('(') && !m.value.contains(')'))
        {
            return Err(AlertsViewError::Invalid(
                "field `matchers`: bad regular expression".into(),
            ));
        }
        let mut silences = self.silences.lock().unwrap();
        let id = format!("s{}", silences.len() + 1);
        silences.push(SilenceView {
            id: id.clone(),
            matchers: silence.matchers,
            starts_at: silence.starts_at.unwrap_or_else(Utc::now),
            ends_at: silence.ends_at,
            created_by: silence.created_by,
            comment: silence.comment,
            state: SilenceState::Active,
        });
        Ok(id)
    }

    fn expire_silence(&self, id: &str) -> Result<(), AlertsViewError> {
        let mut silences = self.silences.lock().unwrap();
        let silence = silences
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| AlertsViewError::NotFound(id.to_owned()))?;
        silence.state = SilenceState::Expired;
        silence.ends_at = Utc::now();
        Ok(())
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
                capacity_bps| PathInfo {
        label: label.into(),
        exporter_address: IpAddr::from(exporter),
        exporter_name: name.into(),
        site: "fra1".into(),
        if_index,
        if_name: if_name.into(),
        provider: provider.into(),
        kind: kind.into(),
        capacity_bps,
        committed_bps: (label == P1).then_some(5_000_000),
    };
    vec![
        path(
            P1,
            [192, 0, 2, 1],
            "edge1",
            1,
            "et-0/0/1",
            "Transit A",
            "transit",
            Some(10_000_000),
        ),
        path(
            P2,
            [192, 0, 2, 1],
            "edge1",
            2,
            "et-0/0/2",
            "Peering B",
            "peering",
            Some(1_000_000_000),
        ),
        path(P3, [192, 0, 2, 9], "edge2", 5, "xe-0/0/5", "", "transit", None),
    ]
}

fn alert() -> AlertView {
    AlertView {
        fingerprint: "5c1ac4e1a5a5e0a1".into(),
        labels: BTreeMap::from([
            ("alertname".to_owned(), "transit-utilisation".to_owned()),
            ("path".to_owned(), P1.to_owned()),
        ]),
        annotations: BTreeMap::from([("summary".to_owned(), "90% of 10 Mbit/s".to_owned())]),
        state: AlertState::Firing,
        starts_at: Utc::now(),
        ends_at: None,
        value: 0.9,
        threshold: Some(0.8),
        silenced_by: vec![],
    }
}

fn state_for(client: Client, alerts: Arc<MemoryAlerts>) -> ApiState {
    let slas = vec![
        "transit-utilisation".to_owned(),
        "exfil".to_owned(),
        "never-run".to_owned(),
    ];
    ApiState::new(client, "egress", model_paths(), slas, alerts).unwrap()
}

/// A flow through exporter 192.0.2.1.
#[allow(clippy::too_many_arguments)]
fn flow(
    age: u32,
    src: &str,
    dst: &str,
    ports: (u16, u16),
    proto: u8,
    bytes: u64,
    sampling_rate: u64,
    out_if: u32,
) -> FlowRow {
    let mut flow = FlowRow::new(IpAddr::from([192, 0, 2, 1]), now() - age, FlowType::Ipfix);
    flow.src_addr = to_v6(src.parse().unwrap());
    flow.dst_addr = to_v6(dst.parse().unwrap());
    (flow.src_port, flow.dst_port) = ports;
    flow.proto = proto;
    flow.bytes = bytes;
    flow.packets = bytes / 100;
    flow.sampling_rate = sampling_rate;
    flow.out_if = out_if;
    flow.in_if = 7;
    if out_if == 1 {
        flow.traffic_direction = TrafficDirection::Outbound;
        flow.egress_path = P1.into();
    }
    flow.exporter_name = "edge1".into();
    flow
}

/// Six flows, one exporter-stats row and four SLA results (see the expected numbers in the tests).
fn flows() -> Vec<FlowRow> {
    let mut inbound = flow(60, "203.0.113.10", "10.0.0.1", (443, 51000), 6, 9000, 1, 3);
    inbound.in_if = 1;
    inbound.traffic_direction = TrafficDirection::Inbound;
    let mut f1 = flow(60, "10.0.0.1", "203.0.113.10", (51000, 443), 6, 1000, 100, 1);
    f1.dst_as = 64501;
    let mut f2 = flow(60, "10.0.0.2", "203.0.113.20", (53000, 53), 17, 500, 100, 1);
    f2.dst_as = 64502;
    let mut f3 = flow(60, "10.0.0.1", "198.51.100.7", (40000, 22), 6, 2000, 10, 1);
    f3.dst_as = 64502;
    vec![
        f1,
        f2,
        f3,
        inbound,
        flow(7200, "10.0.0.3", "203.0.113.30", (1000, 80), 6, 99, 1, 1),
        flow(30, "fd00::5", "2001:db8::53", (50000, 443), 6, 300, 1, 1),
    ]
}

fn sla_result(
    age: u32,
    sla: &str,
    kind: &str,
    subject: &str,
    value: f64,
    verdict: Verdict,
    details: &str,
) -> SlaResultRow {
    SlaResultRow {
        time: now() - age,
        sla: sla.into(),
        kind: kind.into(),
        subject: subject.into(),
        labels_keys: vec!["path".into()],
        labels_values: vec![subject.into()],
        value,
        threshold: 0.8,
        verdict,
        samples: 4,
        details: details.into(),
    }
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
    alerts: Arc<MemoryAlerts>,
}

/// A migrated server with the test rows, and the API over it.
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
    insert(&client, FLOWS_TABLE, &flows()).await;
    insert(
        &client,
        EXPORTER_STATS_TABLE,
        &[ExporterStatsRow {
            minute: (now() - 60) / 60 * 60,
            exporter_address: to_v6(IpAddr::from([192, 0, 2, 1])),
            observation_domain: 0,
            flow_type: FlowType::Ipfix,
            datagrams: 10,
            records: 6,
            records_lost: 0,
            decode_error_kinds: vec![],
            decode_error_counts: vec![],
            templates_known: 1,
        }],
    )
    .await;
    insert(
        &client,
        SLA_RESULTS_TABLE,
        &[
            sla_result(120, "transit-utilisation", "throughput", P1, 0.1, Verdict::Ok, ""),
            sla_result(
                60,
                "transit-utilisation",
                "throughput",
                P1,
                0.9,
                Verdict::Breach,
                "",
            ),
            sla_result(
                60,
                "transit-utilisation",
                "throughput",
                P3,
                0.0,
                Verdict::NoData,
                "",
            ),
            sla_result(
                60,
                "exfil",
                "exfiltration",
                "10.0.0.1",
                5e9,
                Verdict::Breach,
                r#"{"top":["203.0.113.10"]}"#,
            ),
        ],
    )
    .await;
    let alerts = Arc::new(MemoryAlerts {
        alerts: vec![alert()],
        ..MemoryAlerts::default()
    });
    let router = api::router(state_for(client, alerts.clone()));
    Fixture {
        server,
        router,
        alerts,
    }
}

/// Percent-encodes a query value.
fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    let body = if content_type.starts_with("application/json") {
        serde_json::from_slice(&bytes).unwrap()
    } else {
        Value::String(String::from_utf8(bytes.to_vec()).unwrap())
    };
    (status, body)
}

async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    send(router, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// Asserts a 400 whose message names `parameter`.
async fn bad(router: &Router, uri: &str, parameter: &str) {
    let (status, body) = get(router, uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{uri}: no error in {body}"));
    assert!(
        message.contains(parameter),
        "{uri}: {message:?} does not name {parameter:?}"
    );
}

fn close(actual: &Value, expected: f64) -> bool {
    (actual.as_f64().unwrap() - expected).abs() < 1e-9 * expected.abs().max(1.0)
}

#[tokio::test]
async fn paths_report_throughput_utilisation_and_silent_exporters() {
    let fixture = fixture().await;
    let (status, body) = get(&fixture.router, "/api/v1/paths?window=300").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["window_seconds"], 300);
    let paths = body["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3);
    // P1: 1000×100 + 500×100 + 2000×10 + 300×1 = 170 300 bytes in 300 s (the 2-hour-old flow is out).
    let p1 = &paths[0];
    assert_eq!(p1["label"], P1);
    assert_eq!(p1["scaled_bytes"], 170_300);
    assert_eq!(p1["records"], 4);
    assert_eq!(p1["scaled_packets"], 10 * 100 + 5 * 100 + 20 * 10 + 3);
    assert!(close(&p1["throughput_bps"], 170_300.0 * 8.0 / 300.0), "{p1}");
    assert!(
        close(&p1["utilisation"], 170_300.0 * 8.0 / 300.0 / 10_000_000.0),
        "{p1}"
    );
    assert_eq!(p1["status"], "ok");
    assert_eq!(p1["exporter_address"], "192.0.2.1");
    // P2: same exporter, which sent datagrams, but nothing left through et-0/0/2.
    assert_eq!(paths[1]["label"], P2);
    assert_eq!(paths[1]["throughput_bps"], 0.0);
    assert_eq!(paths[1]["status"], "idle");
    // P3: its exporter is silent: no data, not zero traffic; no capacity, so no utilisation.
    assert_eq!(paths[2]["status"], "no_data");
    assert_eq!(paths[2]["utilisation"], Value::Null);

    // A window of one day takes the old flow in.
    let (_, body) = get(&fixture.router, "/api/v1/paths?window=86400").await;
    assert_eq!(body["paths"][0]["scaled_bytes"], 170_399);

    bad(&fixture.router, "/api/v1/paths?window=10", "window").await;
    bad(&fixture.router, "/api/v1/paths?window=86401", "window").await;
    bad(&fixture.router, "/api/v1/paths?window=abc", "window").await;
    bad(&fixture.router, "/api/v1/paths?windw=300", "windw").await;
    bad(&fixture.router, "/api/v1/paths?window=300&window=600", "window").await;
}

#[tokio::test]
async fn p95_report_per_path_over_the_month() {
    let fixture = fixture().await;
    let (status, body) = get(&fixture.router, "/api/v1/paths/p95").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let paths = body["paths"].as_array().unwrap();
    // P1 and P2 have a capacity; P3 has none and is not reported.
    assert_eq!(paths.len(), 2, "{body}");
    let p1 = &paths[0];
    assert_eq!(p1["path"], P1);
    assert_eq!(p1["committed_bps"], 5_000_000);
    assert_eq!(p1["capacity_bps"], 10_000_000);
    assert!(p1["buckets_with_data"].as_u64().unwrap() >= 1, "{p1}");
    assert!(p1["buckets"].as_u64().unwrap() >= p1["buckets_with_data"].as_u64().unwrap());
    // The busiest 5 minutes hold at least the last 5 minutes' 170 300 scaled bytes of P1
    // (split over at most two buckets).
    assert!(
        p1["max_bps"].as_f64().unwrap() >= 170_300.0 * 8.0 / 300.0 / 2.0,
        "{p1}"
    );
    assert_eq!(p1["above_commit"], false, "{p1}");
    assert_eq!(
        paths[1]["buckets_with_data"], 0,
        "nothing left through P2: {}",
        paths[1]
    );

    let (status, body) = get(&fixture.router, "/api/v1/paths/p95?month=1999-12").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    bad(&fixture.router, "/api/v1/paths/p95?month=2026-13", "month").await;
    bad(&fixture.router, "/api/v1/paths/p95?month=2026-1", "month").await;
    bad(
        &fixture.router,
        &format!("/api/v1/paths/p95?month={}", enc("2026-11' OR 1=1 --")),
        "month",
    )
    .await;
}

#[tokio::test]
async fn top_groups_by_every_dimension() {
    let fixture = fixture().await;
    let router = &fixture.router;
    let (status, body) = get(
        router,
        "/api/v1/top?by=src_host&window=3600&limit=2&direction=outbound",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["top"],
        json!([
            { "key": "10.0.0.1", "scaled_bytes": 120_000, "scaled_packets": 1_200, "records": 2 },
            { "key": "10.0.0.2", "scaled_bytes": 50_000, "scaled_packets": 500, "records": 1 },
        ])
    );
    let (_, body) = get(router, "/api/v1/top?by=dst_as&direction=any").await;
    let keys: Vec<(Value, Value)> = body["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].clone(), e["scaled_bytes"].clone()))
        .collect();
    assert_eq!(
        keys,
        [
            (json!(64501), json!(100_000)),
            (json!(64502), json!(70_000)),
            (json!(0), json!(9_300))
        ]
    );
    let (_, body) = get(router, "/api/v1/top?by=path").await;
    assert_eq!(
        body["top"],
        json!([{ "key": P1, "scaled_bytes": 170_300, "scaled_packets": 1_703, "records": 4 }])
    );
    let (_, body) = get(router, "/api/v1/top?by=dst_port&direction=inbound").await;
    assert_eq!(
        body["top"],
        json!([{ "key": 51000, "scaled_bytes": 9_000, "scaled_packets": 90, "records": 1 }])
    );
    let (_, body) = get(router, "/api/v1/top?by=dst_host&limit=1").await;
    assert_eq!(body["top"][0]["key"], "203.0.113.10");
    let (_, body) = get(router, "/api/v1/top?by=src_port&limit=1").await;
    assert_eq!(body["top"][0]["key"], 51000);
    let (_, body) = get(router, "/api/v1/top?by=proto").await;
    assert_eq!(
        body["top"],
        json!([
            { "key": 6, "scaled_bytes": 120_300, "scaled_packets": 1_203, "records": 3 },
            { "key": 17, "scaled_bytes": 50_000, "scaled_packets": 500, "records": 1 },
        ])
    );
    let (_, body) = get(router, "/api/v1/top?by=exporter&direction=any").await;
    assert_eq!(
        body["top"],
        json!([{ "key": "192.0.2.1", "exporter_name": "edge1", "scaled_bytes": 179_300, "scaled_packets": 1_793, "records": 5 }])
    );
    let (_, body) = get(router, "/api/v1/top?by=src_host&window=86400").await;
    assert_eq!(body["top"].as_array().unwrap().len(), 4, "{body}");
    assert_eq!(
        body["top"][3],
        json!({ "key": "10.0.0.3", "scaled_bytes": 99, "scaled_packets": 0, "records": 1 })
    );
    assert_eq!(body["top"][2]["key"], "fd00::5");

    bad(router, "/api/v1/top", "by").await;
    bad(router, "/api/v1/top?by=host", "by").await;
    bad(router, "/api/v1/top?by=src_host&limit=0", "limit").await;
    bad(router, "/api/v1/top?by=src_host&limit=1001", "limit").await;
    bad(router, "/api/v1/top?by=src_host&window=700000", "window").await;
    bad(router, "/api/v1/top?by=src_host&direction=up", "direction").await;
}

#[tokio::test]
async fn flow_search_filters_and_bounds() {
    let fixture = fixture().await;
    let router = &fixture.router;
    let count = |body: &Value| body["flows"].as_array().unwrap().len();

    let (status, body) = get(router, "/api/v1/flows").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        count(&body),
        5,
        "the last 15 minutes: every flow but the 2-hour-old one"
    );
    let newest = &body["flows"][0];
    assert_eq!(newest["src_addr"], "fd00::5");
    assert_eq!(newest["dst_addr"], "2001:db8::53");
    assert_eq!(newest["egress_path"], P1);
    assert_eq!(newest["traffic_direction"], "outbound");
    assert_eq!(body["truncated"], false);
    let f1 = body["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["dst_as"] == 64501)
        .unwrap();
    assert_eq!(
        (f1["bytes"].clone(), f1["scaled_bytes"].clone()),
        (json!(1000), json!(100_000))
    );
    assert_eq!(f1["src_addr"], "10.0.0.1");
    assert_eq!(f1["exporter_address"], "192.0.2.1");

    let from = now() - 3 * 3600;
    let cases: [(String, usize); 11] = [
        (format!("src=10.0.0.0/24&from={from}"), 4),
        ("src=10.0.0.0/24".into(), 3),
        ("src=10.0.0.1".into(), 2),
        ("dst=2001:db8::/32".into(), 1),
        ("src=fd00::/8".into(), 1),
        ("dst=10.0.0.1".into(), 1),
        ("port=443".into(), 3),
        ("proto=udp".into(), 1),
        ("exporter=edge1".into(), 5),
        ("exporter=192.0.2.9".into(), 0),
        (format!("to={}&from={}", now() - 3600, from), 1),
    ];
    for (query, expected) in cases {
        let (status, body) = get(router, &format!("/api/v1/flows?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(count(&body), expected, "{query}: {body}");
    }
    let (_, body) = get(router, "/api/v1/flows?limit=2").await;
    assert_eq!((count(&body), body["truncated"].clone()), (2, json!(true)));
    let rfc = |t: u32| {
        enc(&chrono::DateTime::from_timestamp(i64::from(t), 0)
            .unwrap()
            .to_rfc3339())
    };
    let (status, body) = get(
        router,
        &format!("/api/v1/flows?from={}&to={}", rfc(now() - 600), rfc(now() + 1)),
    )
    .await;
    assert_eq!((status, count(&body)), (StatusCode::OK, 5), "{body}");

    bad(router, "/api/v1/flows?limit=1001", "limit").await;
    bad(
        router,
        &format!("/api/v1/flows?from={}&to={}", now() - 90_000, now()),
        "from",
    )
    .await;
    bad(
        router,
        &format!("/api/v1/flows?from={}&to={}", now(), now() - 60),
        "from",
    )
    .await;
    bad(router, "/api/v1/flows?from=yesterday", "from").await;
    bad(router, "/api/v1/flows?src=10.0.0.0/33", "src").await;
    bad(router, "/api/v1/flows?dst=example.com", "dst").await;
    bad(router, "/api/v1/flows?port=70000", "port").await;
    bad(router, "/api/v1/flows?proto=tcpx", "proto").await;
    bad(router, "/api/v1/flows?exporter=edge9", "exporter").await;
}

#[tokio::test]
async fn sla_status_and_history() {
    let fixture = fixture().await;
    let router = &fixture.router;
    let (status, body) = get(router, "/api/v1/slas").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["sla"].as_str().unwrap(),
                r["subject"].as_str().unwrap(),
                r["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("exfil", "10.0.0.1", "breach"),
            ("transit-utilisation", P1, "breach"),
            ("transit-utilisation", P3, "no_data"),
        ]
    );
    assert_eq!(results[0]["details"], json!({ "top": ["203.0.113.10"] }));
    assert_eq!(results[1]["value"], 0.9);
    assert_eq!(results[1]["labels"], json!({ "path": P1 }));
    assert_eq!(body["not_evaluated"], json!(["never-run"]));

    let (status, body) = get(router, "/api/v1/slas/transit-utilisation/history?window=3600").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 3);
    let (_, body) = get(
        router,
        &format!("/api/v1/slas/transit-utilisation/history?subject={}", enc(P1)),
    )
    .await;
    let points: Vec<(Value, Value)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["value"].clone(), r["verdict"].clone()))
        .collect();
    assert_eq!(
        points,
        [(json!(0.1), json!("ok")), (json!(0.9), json!("breach"))],
        "oldest first"
    );
    let (status, body) = get(router, "/api/v1/slas/never-run/history").await;
    assert_eq!((status, body["results"].clone()), (StatusCode::OK, json!([])));

    let (status, body) = get(router, "/api/v1/slas/unknown/history").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown"));
    bad(
        router,
        "/api/v1/slas/transit-utilisation/history?window=5",
        "window",
    )
    .await;
}

#[tokio::test]
async fn alerts_and_silences_through_the_view() {
    let fixture = fixture().await;
    let router = &fixture.router;
    let (status, body) = get(router, "/api/v1/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["alerts"][0]["state"], "firing");
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "transit-utilisation");

    let post = |body: String| {
        Request::post("/api/v1/silences")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let starts = Utc::now();
    let ends = starts + ChronoDuration::hours(2);
    let silence = json!({
        "matchers": [{ "name": "path", "value": P1 }, { "name": "severity", "value": "crit.*", "isRegex": true }],
        "starts_at": starts, "ends_at": ends, "created_by": "noc",
        "comment": "maintenance; it's \"planned\" '); DROP TABLE flows; --"
    });
    let (status, body) = send(router, post(silence.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "s1");
    let (_, body) = get(router, "/api/v1/silences").await;
    assert_eq!(body["silences"][0]["comment"], silence["comment"]);
    assert_eq!(body["silences"][0]["matchers"][1]["isRegex"], true);
    assert_eq!(body["silences"][0]["state"], "active");

    let (status, body) = send(
        router,
        Request::delete("/api/v1/silences/s1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["state"].clone()),
        (StatusCode::OK, json!("expired")),
        "{body}"
    );
    assert_eq!(
        fixture.alerts.silences.lock().unwrap()[0].state,
        SilenceState::Expired
    );
    let (status, _) = send(
        router,
        Request::delete("/api/v1/silences/s9")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = send(
        router,
        Request::delete("/api/v1/silences/s1'%20OR%201=1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Shape problems, each named.
    let with = |field: &str, value: Value| {
        let mut body = silence.clone();
        body[field] = value;
        body.to_string()
    };
    let cases = [
        (with("matchers", json!([])), "matchers"),
        (
            with("matchers", json!([{ "name": "1bad", "value": "x" }])),
            "matchers[0].name",
        ),
        (
            with("ends_at", json!(starts - ChronoDuration::hours(1))),
            "ends_at",
        ),
        (with("created_by", json!("")), "created_by"),
        (with("bogus", json!(1)), "bogus"),
        (
            with(
                "matchers",
                json!([{ "name": "a", "value": "(", "isRegex": true }]),
            ),
            "matchers",
        ),
        ("{not json".to_owned(), "body"),
    ];
    for (body, field) in cases {
        let (status, answer) = send(router, post(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{field}: {answer}"
        );
    }
    // Too large (413) and not JSON (415): JSON errors as well.
    let (status, body) = send(
        router,
        post(format!("{{\"comment\": \"{}\"}}", "x".repeat(70_000))),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("65536"), "{body}");
    let (status, body) = send(
        router,
        Request::post("/api/v1/silences")
            .body(Body::from(silence.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert!(body["error"].is_string());
    assert_eq!(fixture.alerts.silences.lock().unwrap().len(), 1);
    // `starts_at` may be left out: the silence starts now.
    let mut from_now = silence.clone();
    from_now.as_object_mut().unwrap().remove("starts_at");
    let (status, body) = send(router, post(from_now.to_string())).await;
    assert_eq!(
        (status, body["id"].clone()),
        (StatusCode::CREATED, json!("s2")),
        "{body}"
    );
}

#[tokio::test]
async fn injection_through_every_string_parameter_is_refused_and_tables_stay_intact() {
    let fixture = fixture().await;
    let router = &fixture.router;
    let counts = || {
        ["flows", "exporter_stats", "sla_results"].map(|table| {
            fixture
                .server
                .query_scalar(&format!("SELECT count() FROM egress.{table}"))
                .unwrap()
        })
    };
    assert_eq!(counts(), ["6", "1", "4"]);
    let attacks = [
        ("/api/v1/paths?window=", "300) OR 1=1 --", "window"),
        ("/api/v1/top?by=", "src_host; DROP TABLE flows", "by"),
        (
            "/api/v1/top?by=src_host&direction=",
            "outbound' OR 1=1 --",
            "direction",
        ),
        ("/api/v1/top?by=src_host&window=", "3600 OR 1=1", "window"),
        ("/api/v1/top?by=src_host&limit=", "10; DROP TABLE flows", "limit"),
        ("/api/v1/flows?src=", "10.0.0.1' OR 1=1 --", "src"),
        ("/api/v1/flows?dst=", "10.0.0.0/8') OR ('1'='1", "dst"),
        ("/api/v1/flows?port=", "443 OR 1=1", "port"),
        ("/api/v1/flows?proto=", "6) OR (1=1", "proto"),
        ("/api/v1/flows?exporter=", "edge1' OR '1'='1", "exporter"),
        ("/api/v1/flows?from=", "0' OR 1=1 --", "from"),
        ("/api/v1/flows?to=", "now()); DROP TABLE flows; --", "to"),
        (
            "/api/v1/flows?limit=",
            "1 UNION ALL SELECT * FROM system.users",
            "limit",
        ),
        (
            "/api/v1/slas/transit-utilisation/history?subject=",
            "x' OR '1'='1",
            "subject",
        ),
        (
            "/api/v1/slas/transit-utilisation/history?window=",
            "60; DROP TABLE sla_results",
            "window",
        ),
        ("/api/v1/flows?", "x' OR 1=1 --", "unknown parameter"),
    ];
    for (prefix, attack, parameter) in attacks {
        let uri = if prefix.ends_with('?') {
            format!("{prefix}{}=1", enc(attack))
        } else {
            format!("{prefix}{}", enc(attack))
        };
        bad(router, &uri, parameter).await;
    }
    let (status, body) = get(
        router,
        &format!(
            "/api/v1/slas/{}/history",
            enc("x' UNION SELECT name FROM system.tables --")
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`name`"), "{body}");
    // A silence comment with quotes is data, stored verbatim (checked in the silence test).
    assert_eq!(counts(), ["6", "1", "4"]);
}

#[tokio::test]
async fn readiness_metrics_and_errors() {
    let mut fixture = fixture().await;
    let router = &fixture.router;
    assert_eq!(
        get(router, "/health").await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    assert_eq!(
        get(router, "/ready").await,
        (StatusCode::OK, json!({ "status": "ready" }))
    );
    get(router, "/api/v1/paths").await;
    get(router, "/api/v1/paths?window=1").await;
    let (status, body) = get(router, "/api/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no route GET /api/v1/nope");
    let (status, body) = send(router, Request::put("/api/v1/paths").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        body["error"],
        "method PUT is not allowed on /api/v1/paths; see /openapi.json"
    );

    let (status, text) = get(router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    for line in [
        r#"egress_api_requests_total{route="/api/v1/paths",method="GET",status="200"} 1"#,
        r#"egress_api_requests_total{route="/api/v1/paths",method="GET",status="400"} 1"#,
        r#"egress_api_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"egress_api_requests_total{route="/ready",method="GET",status="200"} 1"#,
        r#"egress_api_requests_total{route="/api/v1/paths",method="PUT",status="405"} 1"#,
        r#"egress_api_request_duration_seconds_count{route="/api/v1/paths"} 3"#,
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }

    // ClickHouse down: not ready, and queries answer 503 without internals.
    fixture.server.stop().unwrap();
    let (status, body) = get(router, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "ClickHouse did not answer SELECT 1");
    let (status, body) = get(router, "/api/v1/top?by=src_host").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        !message.contains("SELECT") && !message.contains("127.0.0.1"),
        "{message}"
    );
    // Still alive.
    assert_eq!(get(router, "/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn readiness_gives_up_on_a_hanging_server_after_two_seconds() {
    // Accepts connections (the kernel does) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Client::default()
        .with_url(format!("http://{}", listener.local_addr().unwrap()))
        .with_validation(false);
    let router = api::router(state_for(client, Arc::new(MemoryAlerts::default())));
    let started = std::time::Instant::now();
    let (status, body) = get(&router, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["error"],
        "ClickHouse did not answer SELECT 1 within 2 seconds"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(listener);
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_answered_504_in_json() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Client::default()
        .with_url(format!("http://{}", listener.local_addr().unwrap()))
        .with_validation(false);
    let router = api::router(state_for(client, Arc::new(MemoryAlerts::default())));
    let started = std::time::Instant::now();
    let (status, body) = get(&router, "/api/v1/paths").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"], "request took longer than 10 seconds");
    assert!(started.elapsed() >= api::REQUEST_TIMEOUT);
    drop(listener);
}

#[test]
fn the_models_egress_paths_become_path_infos() {
    #[derive(serde::Deserialize)]
    struct File {
        exporters: Vec<egress_query::model::ExporterConfig>,
    }
    let file: File = toml::from_str(
        r#"
        [[exporters]]
        address = "192.0.2.1"
        name = "edge1"
        site = "fra1"
        [[exporters.interfaces]]
        if_index = 1
        name = "et-0/0/1"
        role = "external"
        kind = "transit"
        provider = "Transit A"
        capacity_bps = 10_000_000
        committed_bps = 5_000_000
        [[exporters.interfaces]]
        if_index = 7
        name = "ae0"
        role = "internal"
        "#,
    )
    .unwrap();
    let model = egress_query::model::EgressModel::build(&Default::default(), &file.exporters).unwrap();
    let paths: Vec<PathInfo> = model.paths().iter().map(PathInfo::from).collect();
    assert_eq!(paths, model_paths()[..1]);
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_routes_of_the_router() {
    let client = Client::default()
        .with_url("http://127.0.0.1:9")
        .with_validation(false);
    let alerts = Arc::new(MemoryAlerts::default());
    let router = api::router(state_for(client, alerts));
    let (status, document) = get(&router, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.0.3");
    let mut documented: Vec<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut routed: Vec<(String, String)> = api::routes()
        .into_iter()
        .map(|route| (route.method.to_owned(), route.path.to_owned()))
        .collect();
    routed.sort();
    assert_eq!(documented, routed);
    // Every listed route is served by the router (not its "no route" fallback), with its
    // documented query parameters accepted.
    for (method, path) in routed {
        let uri = path.replace("{name}", "never-run").replace("{id}", "s1");
        let request = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let (_, body) = send(&router, request).await;
        let error = body.get("error").and_then(Value::as_str).unwrap_or("");
        assert!(!error.starts_with("no route"), "{method} {uri}: {error}");
        let operation = &document["paths"][&path][method.to_lowercase()];
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] != "query" {
                continue;
            }
            let name = parameter["name"].as_str().unwrap();
            let (_, body) = get(&router, &format!("{uri}?{name}=%00")).await;
            let error = body.get("error").and_then(Value::as_str).unwrap_or("");
            assert!(!error.starts_with("unknown parameter"), "{path}: {name}: {error}");
        }
    }
}
