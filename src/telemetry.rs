//! Telemetry wiring: logs to stderr, and, when an OTLP endpoint is configured, traces and
//! metrics exported over OTLP/HTTP (protobuf) to an OpenTelemetry collector or backend.
//!
//! In: the log filter (`--log`, `RUST_LOG`) and the `[telemetry]` section
//! ([`TelemetryConfig`]). Out: the process-wide `tracing` subscriber and, with an endpoint, an
//! OTel tracer provider (batch span processor) and meter provider (periodic reader), each with
//! its own background thread and a blocking HTTP client. Shutdown: [`Telemetry::shutdown`]
//! flushes the spans and the last metrics, then stops both providers; `main` calls it after the
//! runtime has stopped.
//!
//! Decisions:
//! - Endpoint: `telemetry.otlp_endpoint` (or `EGRESS__TELEMETRY__OTLP_ENDPOINT`), else the
//!   standard `OTEL_EXPORTER_OTLP_ENDPOINT`; neither set: no provider, no OTel layer, no thread,
//!   nothing exported. Traces go to `<endpoint>/v1/traces`, metrics to `<endpoint>/v1/metrics`.
//! - Traces are the existing `tracing` spans, turned into OTel spans by `tracing-opentelemetry`:
//!   `evaluation_cycle` > `sla_evaluation` (monitor), `sink_insert` (collector writer, one per
//!   attempt), `alert_notification` > `alert_delivery_attempt` (notifier). None is per datagram
//!   or per record. The OTel layer has its own filter (INFO for Egress's crates), so `--log
//!   warn` quiets stderr without losing traces; the stderr layer keeps the log filter.
//! - Metrics: the collector's Prometheus counters stay the source of truth (`/metrics`); the
//!   meter reads them with observable instruments at each export
//!   (`telemetry.export_interval_seconds`), under the same names without `_total`
//!   (`egress_datagrams_received`, `egress_records_decoded{protocol}`, ...), so an OTel
//!   collector's Prometheus exporter gives back the names of `/metrics`. Histograms cannot be
//!   observed, so the insert latency is exported as `egress_sink_insert_seconds_sum` and
//!   `egress_sink_insert_seconds_count`. The monitor has no Prometheus counters of its own: its
//!   `egress_sla_evaluations{sla,kind,outcome}` counter and `egress_alerts_firing` gauge are
//!   OTel instruments ([`MonitorInstruments`]), no-ops without an endpoint.
//! - The HTTP client is the workspace's reqwest (blocking, rustls), so https endpoints work and
//!   no second reqwest is built; header values come from environment variables
//!   (`telemetry.headers_from_env`), never from the config text.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use opentelemetry::metrics::{Counter, Gauge, Meter};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use egress_collector::config::TelemetryConfig;
use egress_collector::decode::DecodeErrorKind;
use egress_collector::metrics::{DropReason, Metrics};
use egress_query::schema::FlowType;

/// Name of the tracer and meter (the OTel instrumentation scope).
const SCOPE: &str = "egress";
/// Time one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The crates whose spans and events the OTel layer takes, at INFO and above.
const CRATES: [&str; 4] = ["egress", "egress_collector", "egress_query", "egress_alerts"];

/// The installed telemetry; [`Telemetry::shutdown`] flushes it.
#[derive(Debug)]
pub struct Telemetry {
    providers: Option<Providers>,
}

/// The OTel providers of an exporting process.
#[derive(Debug)]
pub struct Providers {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    service_name: String,
}

impl Telemetry {
    /// Exports what is pending and stops the exporters (a no-op without an endpoint).
    pub fn shutdown(self) {
        if let Some(providers) = self.providers {
            if let Err(error) = providers.tracer.shutdown() {
                eprintln!("OTLP: flushing the traces at exit failed: {error}");
            }
            if let Err(error) = providers.meter.shutdown() {
                eprintln!("OTLP: exporting the last metrics at exit failed: {error}");
            }
        }
    }
}

/// Installs the process-wide subscriber: the stderr log filtered by `log_filter`, plus the OTel
/// layer and meter provider when `config` (the long-running subcommands' `[telemetry]`)
/// resolves to an endpoint. Call it outside the async runtime (the exporters' blocking HTTP
/// client has its own).
pub fn init(log_filter: &str, config: Option<&TelemetryConfig>) -> anyhow::Result<Telemetry> {
    let log_filter = EnvFilter::try_new(log_filter).context("--log filter")?;
    let providers = match config {
        Some(config) => Providers::build(config, |name| std::env::var(name).ok())?,
        None => None,
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(log_filter);
    let otel = providers.as_ref().map(|providers| {
        let targets = CRATES.iter().fold(Targets::new(), |targets, name| {
            targets.with_target(*name, Level::INFO)
        });
        tracing_opentelemetry::layer()
            .with_tracer(providers.tracer.tracer(SCOPE))
            .with_filter(targets)
    });
    tracing_subscriber::registry().with(stderr).with(otel).init();
    if let Some(providers) = &providers {
        opentelemetry::global::set_meter_provider(providers.meter.clone());
        tracing::info!(
            service = %providers.service_name,
            "exporting traces and metrics over OTLP"
        );
    }
    Ok(Telemetry { providers })
}

/// The endpoint `config` resolves to: `otlp_endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (read through `env`); `None`: export is off.
pub fn endpoint(config: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    config
        .otlp_endpoint
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .map(|e| e.trim().trim_end_matches('/').to_owned())
        .filter(|e| !e.is_empty())
}

impl Providers {
    /// The providers `config` asks for, reading environment variables through `env`; `None`
    /// when no endpoint is configured (nothing is built then).
    pub fn build(
        config: &TelemetryConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        let Some(endpoint) = endpoint(config, &env) else {
            return Ok(None);
        };
        let mut headers = HashMap::new();
        for (header, variable) in &config.headers_from_env {
            let value = env(variable).with_context(|| {
                format!("telemetry.headers_from_env.{header}: environment variable {variable} is not set")
            })?;
            headers.insert(header.clone(), value);
        }
        let client = BlockingClient::new()?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();

        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(headers.clone())
            .build()
            .with_context(|| format!("telemetry.otlp_endpoint {endpoint}: the span exporter"))?;
        let tracer = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.traces_sample_ratio,
            ))))
            .with_resource(resource.clone())
            .build();

        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/metrics"))
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(headers)
            .build()
            .with_context(|| format!("telemetry.otlp_endpoint {endpoint}: the metric exporter"))?;
        let reader = PeriodicReader::builder(metrics)
            .with_interval(Duration::from_secs(config.export_interval_seconds))
            .build();
        let meter = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        Ok(Some(Self {
            tracer,
            meter,
            service_name: config.service_name.clone(),
        }))
    }
}

/// The global meter (a no-op until [`init`] installed an exporting provider).
fn meter() -> Meter {
    opentelemetry::global::meter(SCOPE)
}

/// An unlabelled metric read at each export: name, description, reader.
type Observed<T> = (&'static str, &'static str, fn(&Metrics) -> T);

/// Exports the collector's Prometheus metrics over OTLP: observable instruments that read the
/// counters and gauges at each export. Does nothing useful (and costs nothing) without an
/// endpoint: the global meter is a no-op then.
pub fn observe_collector(metrics: &Metrics) {
    let meter = meter();
    let counters: [Observed<u64>; 8] = [
        (
            "egress_datagrams_received",
            "UDP datagrams received from exporters",
            |m| m.datagrams_received.get(),
        ),
        (
            "egress_bytes_received",
            "UDP payload bytes received from exporters",
            |m| m.bytes_received.get(),
        ),
        (
            "egress_records_written",
            "Flow records written to the flows table",
            |m| m.records_written.get(),
        ),
        (
            "egress_counter_samples_written",
            "Interface counter samples written",
            |m| m.counter_samples_written.get(),
        ),
        (
            "egress_exporter_stats_written",
            "exporter_stats rows written",
            |m| m.exporter_stats_written.get(),
        ),
        (
            "egress_records_lost",
            "Records the exporters' sequence numbers say were sent but never arrived",
            |m| m.records_lost.get(),
        ),
        (
            "egress_sink_insert_failures",
            "Insert attempts that failed",
            |m| m.insert_failures.get(),
        ),
        ("egress_sink_insert_seconds_count", "Successful inserts", |m| {
            rendered_value(m, "egress_sink_insert_seconds_count") as u64
        }),
    ];
    for (name, description, read) in counters {
        let metrics = metrics.clone();
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |observer| observer.observe(read(&metrics), &[]))
            .build();
    }
    let gauges: [Observed<i64>; 5] = [
        (
            "egress_kernel_receive_drops",
            "Datagrams the kernel dropped because a receive buffer was full",
            |m| m.kernel_receive_drops.get(),
        ),
        (
            "egress_socket_receive_buffer_bytes",
            "Receive buffer the kernel granted",
            |m| m.receive_buffer_bytes.get(),
        ),
        (
            "egress_templates_known",
            "NetFlow v9 / IPFIX templates known",
            |m| m.templates_known.get(),
        ),
        (
            "egress_held_data_sets",
            "Data sets held while their template is missing",
            |m| m.held_sets.get(),
        ),
        (
            "egress_queue_chunks",
            "Chunks of records waiting for the writer",
            |m| m.queue_chunks.get(),
        ),
    ];
    for (name, description, read) in gauges {
        let metrics = metrics.clone();
        meter
            .i64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |observer| observer.observe(read(&metrics), &[]))
            .build();
    }
    let latency = metrics.clone();
    meter
        .f64_observable_counter("egress_sink_insert_seconds_sum")
        .with_description("Total time of successful inserts")
        .with_unit("s")
        .with_callback(move |observer| {
            observer.observe(rendered_value(&latency, "egress_sink_insert_seconds_sum"), &[])
        })
        .build();

    let decoded = metrics.clone();
    meter
        .u64_observable_counter("egress_records_decoded")
        .with_description("Flow records and counter samples decoded, by protocol")
        .with_callback(move |observer| {
            for protocol in FlowType::ALL.into_iter().filter(|t| *t != FlowType::Unknown) {
                let attributes = [KeyValue::new("protocol", protocol.as_str())];
                observer.observe(decoded.decoded(protocol).get(), &attributes);
            }
        })
        .build();
    let errors = metrics.clone();
    meter
        .u64_observable_counter("egress_decode_errors")
        .with_description("Datagrams or parts of datagrams that could not be decoded, by kind")
        .with_callback(move |observer| {
            for kind in DecodeErrorKind::ALL {
                let attributes = [KeyValue::new("kind", kind.as_str())];
                observer.observe(errors.decode_error(kind).get(), &attributes);
            }
        })
        .build();
    let dropped = metrics.clone();
    meter
        .u64_observable_counter("egress_records_dropped")
        .with_description("Decoded records that were not stored, by reason")
        .with_callback(move |observer| {
            for reason in DropReason::ALL {
                let attributes = [KeyValue::new("reason", reason.as_str())];
                observer.observe(dropped.dropped(reason).get(), &attributes);
            }
        })
        .build();
}

/// The value of the unlabelled series `name` in the Prometheus rendering (0 when absent).
/// prometheus-client reads a histogram's sum and count only through its encoder, so the
/// latency histogram is read from its text, once per export.
fn rendered_value(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The monitor's OTel instruments (no Prometheus twins: the monitor serves none).
#[derive(Debug, Clone)]
pub struct MonitorInstruments {
    evaluations: Counter<u64>,
    firing: Gauge<u64>,
}

impl Default for MonitorInstruments {
    fn default() -> Self {
        Self::new()
    }
}

impl MonitorInstruments {
    /// Instruments of the global meter.
    pub fn new() -> Self {
        let meter = meter();
        Self {
            evaluations: meter
                .u64_counter("egress_sla_evaluations")
                .with_description("SLA evaluations, by SLA, kind and outcome (ok or failed)")
                .build(),
            firing: meter
                .u64_gauge("egress_alerts_firing")
                .with_description("Alerts firing after the last evaluation cycle")
                .build(),
        }
    }

    /// One evaluation of `sla` of `kind` ended with `outcome` (`ok` or `failed`).
    pub fn evaluated(&self, sla: &str, kind: &str, outcome: &'static str) {
        self.evaluations.add(
            1,
            &[
                KeyValue::new("sla", sla.to_owned()),
                KeyValue::new("kind", kind.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// The number of firing alerts after a cycle.
    pub fn firing(&self, alerts: u64) {
        self.firing.record(alerts, &[]);
    }
}

/// The exporters' HTTP client: the workspace's reqwest, blocking. Each provider calls it from
/// its own background thread, never from the async runtime.
#[derive(Debug, Clone)]
struct BlockingClient(reqwest::blocking::Client);

impl BlockingClient {
    fn new() -> anyhow::Result<Self> {
        let client = reqwest::blocking::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .context("building the OTLP HTTP client")?;
        Ok(Self(client))
    }
}

impl HttpClient for BlockingClient {
    fn send_bytes<'client, 'future>(
        &'client self,
        request: Request<Bytes>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'future>,
    >
    where
        'client: 'future,
        Self: 'future,
    {
        Box::pin(async move {
            let request = reqwest::blocking::Request::try_from(request)?;
            let response = self.0.execute(request)?;
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                headers.extend(response.headers().clone());
            }
            Ok(answer.body(response.bytes()?)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_latency_is_read_from_the_histogram() {
        let metrics = Metrics::new();
        metrics.insert_seconds.observe(0.25);
        metrics.insert_seconds.observe(0.5);
        assert_eq!(rendered_value(&metrics, "egress_sink_insert_seconds_count"), 2.0);
        assert_eq!(rendered_value(&metrics, "egress_sink_insert_seconds_sum"), 0.75);
        assert_eq!(rendered_value(&metrics, "egress_no_such_metric"), 0.0);
    }

    #[test]
    fn no_endpoint_builds_no_exporter() {
        let config = TelemetryConfig::default();
        assert_eq!(endpoint(&config, |_| None), None);
        let providers = Providers::build(&config, |_| None).expect("no error");
        assert!(providers.is_none(), "no endpoint, no provider");
    }

    #[test]
    fn the_standard_variable_is_the_fallback_and_the_config_wins() {
        let standard = |name: &str| {
            (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://otel.example:4318/".to_owned())
        };
        let mut config = TelemetryConfig::default();
        assert_eq!(
            endpoint(&config, standard).as_deref(),
            Some("http://otel.example:4318")
        );
        config.otlp_endpoint = Some("http://127.0.0.1:4318".to_owned());
        assert_eq!(
            endpoint(&config, standard).as_deref(),
            Some("http://127.0.0.1:4318")
        );
    }

    #[test]
    fn a_header_variable_that_is_not_set_is_named() {
        let mut config = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318".to_owned()),
            ..TelemetryConfig::default()
        };
        config
            .headers_from_env
            .insert("authorization".to_owned(), "EGRESS_TEST_OTLP_TOKEN".to_owned());
        let error = Providers::build(&config, |_| None).expect_err("variable missing");
        let text = format!("{error:#}");
        assert!(
            text.contains("telemetry.headers_from_env.authorization")
                && text.contains("EGRESS_TEST_OTLP_TOKEN"),
            "{text}"
        );
        let providers = Providers::build(&config, |name| {
            (name == "EGRESS_TEST_OTLP_TOKEN").then(|| "Bearer t".to_owned())
        })
        .expect("built")
        .expect("an endpoint");
        // Nothing was recorded: stopping exports nothing and must not hang.
        Telemetry {
            providers: Some(providers),
        }
        .shutdown();
    }
}
