//! OpenTelemetry export end to end: `egress run` with simulated IPFIX routers, a real
//! ClickHouse server, an exfiltration SLA that fires at once and a webhook receiver, and a
//! `[telemetry]` section pointing at an OTLP/HTTP receiver run by this test. The receiver decodes
//! the protobuf bodies (opentelemetry-proto) and the test waits until the traces show an
//! evaluation cycle with its SLA evaluation, a `flows` insert and a delivered notification with
//! its attempt, and the metrics show datagrams, decoded and written records, SLA evaluations
//! and a firing alert. It also checks the resource and the header taken from the environment.
//! Metrics are exported every second; spans are held by a batch processor with a 10-minute
//! delay, so they arrive through the flush that SIGTERM triggers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;

use egress_testkit::clickhouse::ClickHouseServer;
use egress_testkit::exporters::{free_tcp_port, free_udp_port};

const TOKEN: &str = "otlp-test-token";

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: BTreeMap<String, String>,
    service: String,
}

/// One data point of one metric, flattened.
#[derive(Debug, Clone)]
struct Point {
    name: String,
    attributes: BTreeMap<String, String>,
    value: f64,
}

/// What the OTLP receiver got so far.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<Span>,
    points: Vec<Point>,
    /// The `x-otlp-token` header of every request.
    tokens: Vec<String>,
    /// Bodies that did not decode.
    undecodable: usize,
}

type Shared = Arc<Mutex<Received>>;

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

fn token(headers: &HeaderMap) -> String {
    headers
        .get("x-otlp-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// An OTLP/HTTP receiver (protobuf) on loopback: `/v1/traces` and `/v1/metrics`.
async fn start_otlp_receiver() -> (SocketAddr, Shared) {
    let received: Shared = Arc::default();
    let (traces, metrics) = (received.clone(), received.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let received = traces.clone();
                async move {
                    let mut received = received.lock().expect("receiver lock");
                    received.tokens.push(token(&headers));
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        received.undecodable += 1;
                        return axum::http::StatusCode::BAD_REQUEST;
                    };
                    for resource_spans in request.resource_spans {
                        let service = resource_spans
                            .resource
                            .as_ref()
                            .map(|r| attributes(&r.attributes))
                            .and_then(|a| a.get("service.name").cloned())
                            .unwrap_or_default();
                        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                            received.spans.push(Span {
                                name: span.name,
                                span_id: span.span_id,
                                parent_span_id: span.parent_span_id,
                                attributes: attributes(&span.attributes),
                                service: service.clone(),
                            });
                        }
                    }
                    axum::http::StatusCode::OK
                }
            }),
        )
        .route(
            "/v1/metrics",
            post(move |headers: HeaderMap, body: Bytes| {
                let received = metrics.clone();
                async move {
                    let mut received = received.lock().expect("receiver lock");
                    received.tokens.push(token(&headers));
                    let Ok(request) = ExportMetricsServiceRequest::decode(body) else {
                        received.undecodable += 1;
                        return axum::http::StatusCode::BAD_REQUEST;
                    };
                    let metrics = request
                        .resource_metrics
                        .into_iter()
                        .flat_map(|r| r.scope_metrics)
                        .flat_map(|s| s.metrics);
                    for metric in metrics {
                        let points = match metric.data {
                            Some(metric::Data::Sum(sum)) => sum.data_points,
                            Some(metric::Data::Gauge(gauge)) => gauge.data_points,
                            _ => Vec::new(),
                        };
                        for point in points {
                            let value = match point.value {
                                Some(number_data_point::Value::AsInt(i)) => i as f64,
                                Some(number_data_point::Value::AsDouble(d)) => d,
                                None => f64::NAN,
                            };
                            received.points.push(Point {
                                name: metric.name.clone(),
                                attributes: attributes(&point.attributes),
                                value,
                            });
                        }
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("OTLP port");
    let address = listener.local_addr().expect("OTLP address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

/// A webhook receiver that accepts everything and counts the requests.
async fn start_webhook() -> (SocketAddr, Arc<Mutex<usize>>) {
    let count = Arc::new(Mutex::new(0usize));
    let store = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move || {
            let store = store.clone();
            async move {
                *store.lock().expect("webhook lock") += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("webhook port");
    let address = listener.local_addr().expect("webhook address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, count)
}

/// `egress run` as a child process, stopped with SIGTERM.
struct Egress(Child);

impl Egress {
    fn start(config: &Path, log: &Path) -> Self {
        let log = std::fs::File::create(log).expect("log file");
        // Each test's own spool, beside its configuration (kept across a restart).
        let spool = config.parent().expect("config in a directory").join("spool");
        let child = Command::new(env!("CARGO_BIN_EXE_egress"))
            .env("EGRESS__SPOOL__DIR", &spool)
            .env(
                "EGRESS__COLLECTOR__STATE_PATH",
                spool.join("collector-state.json"),
            )
            .args(["run", "--simulate", "ipfix=200", "--config"])
            .arg(config)
            .env("EGRESS_TEST_WEBHOOK_SECRET", "otlp-webhook-secret")
            .env("EGRESS_TEST_OTLP_TOKEN", TOKEN)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "info")
            .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("egress starts");
        Egress(child)
    }

    /// SIGTERM, then the exit status (killed after 30 s).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.0.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spans_named<'a>(received: &'a Received, name: &str) -> Vec<&'a Span> {
    received.spans.iter().filter(|s| s.name == name).collect()
}

/// The largest value of metric `name` whose attributes include `with`.
fn largest(received: &Received, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    received
        .points
        .iter()
        .filter(|p| p.name == name)
        .filter(|p| {
            with.iter()
                .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|p| p.value)
        .reduce(f64::max)
}

fn attribute<'a>(span: &'a Span, key: &str) -> &'a str {
    span.attributes.get(key).map(String::as_str).unwrap_or_default()
}

/// The spans the test expects, as a list of what is still missing.
fn missing_spans(received: &Received) -> Vec<String> {
    let mut missing = Vec::new();
    let cycles = spans_named(received, "evaluation_cycle");
    let evaluated_cycle = cycles.iter().any(|c| {
        attribute(c, "slas") == "1"
            && attribute(c, "results").parse::<u64>().is_ok_and(|n| n > 0)
            && attribute(c, "breaching").parse::<u64>().is_ok_and(|n| n > 0)
            && attribute(c, "duration_ms").parse::<u64>().is_ok()
    });
    if !evaluated_cycle {
        missing.push("an evaluation_cycle span with results and breaching counts".to_owned());
    }
    let child_evaluation = spans_named(received, "sla_evaluation").iter().any(|s| {
        attribute(s, "sla") == "exfiltration"
            && attribute(s, "kind") == "exfiltration"
            && attribute(s, "outcome") == "ok"
            && cycles.iter().any(|c| c.span_id == s.parent_span_id)
    });
    if !child_evaluation {
        missing.push("an sla_evaluation span (exfiltration) inside a cycle".to_owned());
    }
    let insert = spans_named(received, "sink_insert").iter().any(|s| {
        attribute(s, "table") == "flows"
            && attribute(s, "rows").parse::<u64>().is_ok_and(|n| n > 0)
            && attribute(s, "bytes").parse::<u64>().is_ok_and(|n| n > 0)
            && attribute(s, "attempt") == "1"
            && attribute(s, "outcome") == "written"
    });
    if !insert {
        missing.push("a written sink_insert span into flows".to_owned());
    }
    let notifications = spans_named(received, "alert_notification");
    let notification = notifications.iter().find(|s| {
        attribute(s, "receiver") == "oncall"
            && attribute(s, "receiver_kind") == "webhook"
            && attribute(s, "status") == "firing"
            && attribute(s, "outcome") == "delivered"
            && attribute(s, "attempts") == "1"
    });
    match notification {
        None => missing.push("a delivered alert_notification span".to_owned()),
        Some(notification) => {
            let attempt = spans_named(received, "alert_delivery_attempt")
                .into_iter()
                .any(|a| {
                    a.parent_span_id == notification.span_id
                        && attribute(a, "http_status") == "200"
                        && attribute(a, "outcome") == "delivered"
                });
            if !attempt {
                missing.push("its alert_delivery_attempt span".to_owned());
            }
        }
    }
    missing
}

/// The metrics the test expects, as a list of what is still missing.
fn missing_metrics(received: &Received) -> Vec<String> {
    let mut missing = Vec::new();
    for (name, with) in [
        ("egress_datagrams_received", &[][..]),
        ("egress_records_decoded", &[("protocol", "ipfix")][..]),
        ("egress_records_written", &[][..]),
        ("egress_sink_insert_seconds_count", &[][..]),
        (
            "egress_sla_evaluations",
            &[("sla", "exfiltration"), ("outcome", "ok")][..],
        ),
        ("egress_alerts_firing", &[][..]),
    ] {
        if !largest(received, name, with).is_some_and(|v| v > 0.0) {
            missing.push(format!("metric {name} {with:?} > 0"));
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_and_metrics_reach_an_otlp_receiver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clickhouse = ClickHouseServer::start().expect("ClickHouse");
    let (otlp, received) = start_otlp_receiver().await;
    let (webhook, webhooks) = start_webhook().await;
    let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_port().expect("udp port")));
    let api = SocketAddr::from(([127, 0, 0, 1], free_tcp_port().expect("api port")));
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port().expect("metrics port")));
    let config = dir.path().join("egress.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[collector]
listen = ["{udp}"]
metrics_listen = "{metrics}"

[batch]
max_age_ms = 200

[clickhouse]
url = "{url}"
database = "otlp_e2e"

[model]
internal_prefixes = ["10.0.0.0/8", "fd00::/8"]

[monitor]
evaluation_interval_seconds = 2
listen = "{api}"
alert_state_path = "{state}"

[[slas]]
name = "exfiltration"
kind = "exfiltration"
window_seconds = 60
for_seconds = 0
severity = "critical"
[slas.exfiltration]
limit_bytes = 1
min_samples = 1

[alerting]
resend_interval_seconds = 3600

[[alerting.receivers]]
name = "oncall"
kind = "webhook"
url = "http://{webhook}/hook"
secret_env = "EGRESS_TEST_WEBHOOK_SECRET"

[telemetry]
otlp_endpoint = "http://{otlp}"
service_name = "egress-otlp-test"
export_interval_seconds = 1
headers_from_env = {{ "x-otlp-token" = "EGRESS_TEST_OTLP_TOKEN" }}
"#,
            url = clickhouse.http_url(),
            state = dir.path().join("alerts.json").display(),
        ),
    )
    .expect("config");
    let log = dir.path().join("egress.log");
    let mut egress = Egress::start(&config, &log);

    // Metrics are exported every second while Egress runs; spans wait in the batch processor
    // (10 minutes' delay here), so they arrive through the flush at exit.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let still_missing = missing_metrics(&received.lock().expect("lock"));
        let notified = *webhooks.lock().expect("lock") > 0;
        if still_missing.is_empty() && notified {
            break;
        }
        if Instant::now() > deadline {
            let received = received.lock().expect("lock");
            let metric_names: std::collections::BTreeSet<&str> =
                received.points.iter().map(|p| p.name.as_str()).collect();
            panic!(
                "still missing {still_missing:#?} (webhook notified: {notified})\nmetrics: \
                 {metric_names:?}\nlog:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let spans_before_stop = received.lock().expect("lock").spans.len();
    let status = egress.stop().expect("egress stops on SIGTERM");
    assert!(status.success(), "egress exit: {status}");

    let received = received.lock().expect("lock");
    assert_eq!(received.undecodable, 0, "every body is OTLP protobuf");
    assert!(
        !received.tokens.is_empty() && received.tokens.iter().all(|t| t == TOKEN),
        "the header from the environment is on every request: {:?}",
        received.tokens.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        received.spans.iter().all(|s| s.service == "egress-otlp-test"),
        "service.name from the config"
    );
    // No span per datagram or per record: only the stage-level names.
    let names: std::collections::BTreeSet<&str> = received.spans.iter().map(|s| s.name.as_str()).collect();
    for name in &names {
        assert!(
            [
                "evaluation_cycle",
                "sla_evaluation",
                "sink_insert",
                "alert_notification",
                "alert_delivery_attempt"
            ]
            .contains(name),
            "unexpected span {name}"
        );
    }
    let datagrams = largest(&received, "egress_datagrams_received", &[]).unwrap_or(0.0);
    let decoded = largest(&received, "egress_records_decoded", &[("protocol", "ipfix")]).unwrap_or(0.0);
    let written = largest(&received, "egress_records_written", &[]).unwrap_or(0.0);
    assert!(decoded >= written, "decoded {decoded} >= written {written}");
    let still_missing = missing_spans(&received);
    assert!(
        still_missing.is_empty(),
        "still missing {still_missing:#?}\nspans: {names:?} ({spans_before_stop} before the stop)\n\
         notifications: {:#?}\nlog:\n{}",
        spans_named(&received, "alert_notification"),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        received.spans.len() > spans_before_stop,
        "the spans pending at exit were flushed"
    );
    let metric_names: std::collections::BTreeSet<&str> =
        received.points.iter().map(|p| p.name.as_str()).collect();
    eprintln!(
        "OTLP receiver: {} spans ({spans_before_stop} before the stop) {:?}, {} metric points of \
         {metric_names:?}; datagrams {datagrams}, ipfix records \
         decoded {decoded}, written {written}, webhooks {}",
        received.spans.len(),
        names,
        received.points.len(),
        webhooks.lock().expect("lock"),
    );
}
