//! Configuration: one TOML file, every key overridable.
//!
//! Precedence, lowest first: built-in defaults ([`Config::default`]), the TOML file, environment
//! variables, command-line flags. Any key can be set from the environment as
//! `EGRESS__<SECTION>__<KEY>` (double underscores separate the path; e.g.
//! `EGRESS__BATCH__MAX_ROWS=100000`) and from the command line as `--set section.key=value`.
//! Values are TOML (`[\"a\", \"b\"]`, `42`, `true`); a value that does not parse as TOML is
//! taken as a string. The often-used keys also have named flags (`--listen`, `--clickhouse-url`,
//! ...) handled by the binary.
//!
//! Loading reports every problem at once, each naming its key: unknown keys (typos) are errors,
//! as are values out of range (see [`Config::validate`]).
//!
//! The shipped, documented example is `deploy/egress.example.toml`; a test loads it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::decode::DecoderConfig;
use egress_query::connection::ClickHouseConfig;
pub use egress_query::model::{ExporterConfig, ModelConfig};

/// Errors loading the configuration. The message names the key and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("override `{setting}`: {reason}")]
    Override { setting: String, reason: String },
    #[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<String> },
}

pub type Result<T> = std::result::Result<T, ConfigError>;

/// The whole configuration of the `egress` binary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// UDP ingest: listeners, receive workers, metrics endpoint.
    pub collector: CollectorConfig,
    /// Limits of the decoders' template and held-data state.
    pub decoder: DecoderConfig,
    /// How rows are grouped into ClickHouse inserts.
    pub batch: BatchConfig,
    /// Where flows are stored.
    pub clickhouse: ClickHouseConfig,
    /// The egress model: internal prefixes and cloud range files. With the exporters'
    /// interfaces, it classifies every flow at ingest (`flows.traffic_direction`,
    /// `flows.egress_path`, ...).
    pub model: ModelConfig,
    /// Per-exporter settings (name, site, sampling, interfaces), matched on the datagram's
    /// source address.
    pub exporters: Vec<ExporterConfig>,
    /// The monitor: evaluation interval, query API address, alert state file.
    pub monitor: egress_query::sla::MonitorConfig,
    /// The SLAs the monitor evaluates on the egress paths.
    pub slas: Vec<egress_query::sla::SlaConfig>,
    /// Where alerts go (webhooks, Alertmanager, Slack, PagerDuty) and how often they repeat.
    pub alerting: egress_alerts::config::AlertingConfig,
    /// Active probes of each egress path (TCP connect and ICMP echo RTT), run by the monitor
    /// into the `probes` table; the latency SLA reads them.
    pub probes: crate::probe::ProbeConfig,
    /// OpenTelemetry export (OTLP over HTTP/protobuf) of traces and metrics; off unless an
    /// endpoint is set.
    pub telemetry: TelemetryConfig,
    /// The disk spool for batches ClickHouse cannot take now (`[spool]`).
    pub spool: crate::spool::SpoolConfig,
}

/// Where the collector stores what it decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Write to ClickHouse (the normal mode).
    #[default]
    Clickhouse,
    /// Decode everything and store nothing: measures the collector alone.
    Null,
}

/// UDP ingest settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// UDP addresses to receive on. Any port takes any protocol (NetFlow v5/v9, IPFIX, sFlow):
    /// the protocol is recognised from each datagram.
    pub listen: Vec<SocketAddr>,
    /// Receive workers per listen address, each with its own socket (SO_REUSEPORT) and its own
    /// template state. The kernel keeps one exporter (source address and port) on one worker.
    pub workers: usize,
    /// Receive buffer asked for each socket, in bytes. The size the kernel granted is logged
    /// and exported as `egress_socket_receive_buffer_bytes` (raise `net.core.rmem_max` to get
    /// more than the kernel's limit).
    pub receive_buffer_bytes: usize,
    /// Address of the Prometheus `/metrics` and `/health` endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// `clickhouse` or `null`.
    pub sink: SinkKind,
    /// Records a worker collects before handing them to the writer.
    pub chunk_records: usize,
    /// Chunks that may wait for the writer. When full, further records are dropped and counted
    /// as `egress_records_dropped_total{reason="queue_full"}`.
    pub queue_chunks: usize,
    /// Seconds between `exporter_stats` rows (per exporter and domain).
    pub stats_interval_seconds: u64,
    /// Run the schema migrations at start-up.
    pub migrate_on_start: bool,
    /// File that keeps the decoders' templates, options sampling rates and sequence state
    /// across restarts, so data arriving right after a restart decodes at once instead of
    /// waiting for the exporters to re-send their templates. Relative paths are relative to
    /// the working directory; an empty string turns persistence off. A missing, unreadable or
    /// corrupt file only means starting empty (with a warning). One file per collector process.
    pub state_path: String,
    /// Seconds between writes of `state_path` (it is also written at shutdown).
    pub state_save_interval_seconds: u64,
    /// Memory bound of the queue between the receive workers and the writer, in bytes
    /// (estimated as records × [`RECORD_BYTES_ESTIMATE`]): the queue holds at most
    /// `min(queue_chunks, max_queue_bytes / (chunk_records × RECORD_BYTES_ESTIMATE))` chunks
    /// (at least one). With the batches in flight it bounds the collector's memory; see
    /// [`CollectorConfig::memory_bound_bytes`].
    pub max_queue_bytes: usize,
    /// Exporter source prefixes (`"192.0.2.0/24"`, `"2001:db8::/32"`) the collector accepts
    /// datagrams from. Datagrams from other sources are dropped before decoding and counted as
    /// `egress_datagrams_dropped_total{reason="not_allowed"}`. Empty (the default): everyone.
    pub allowed_exporters: Vec<ipnet::IpNet>,
    /// Flow records per second an exporter may send before the collector samples them; 0 (the
    /// default): no limit. Above it, each receive worker keeps a uniform 1-in-N sample of that
    /// exporter's records and multiplies their `sampling_rate` by what each stands for, so
    /// `bytes * sampling_rate` stays right; the skipped records are counted as
    /// `egress_records_dropped_total{reason="rate_limit"}`. The limit applies per receive
    /// worker: an exporter sending from one source port reaches one worker.
    pub max_records_per_second_per_exporter: u64,
    /// Per-exporter overrides of `max_records_per_second_per_exporter`, keyed by source address
    /// (`"192.0.2.1" = 50000`; 0: no limit for that exporter).
    pub max_records_per_second_by_exporter: BTreeMap<IpAddr, u64>,
    /// Exporters (source addresses) each receive worker tracks. A new source beyond this is
    /// dropped before decoding (`egress_datagrams_dropped_total{reason="too_many_exporters"}`)
    /// unless an exporter silent for 10 minutes can be evicted; this bounds the per-exporter
    /// state under a flood from many (spoofed) sources.
    pub max_exporters: usize,
}

/// Estimated memory of one queued flow record: the row plus its enrichment strings.
pub const RECORD_BYTES_ESTIMATE: usize = std::mem::size_of::<crate::normalise::FlowRecord>() + 64;

impl CollectorConfig {
    /// Chunks the queue between the workers and the writer holds: `queue_chunks`, lowered to
    /// fit `max_queue_bytes`, at least 1.
    pub fn queue_capacity_chunks(&self) -> usize {
        let chunk_bytes = self.chunk_records.max(1).saturating_mul(RECORD_BYTES_ESTIMATE);
        (self.max_queue_bytes / chunk_bytes).clamp(1, self.queue_chunks.max(1))
    }

    /// What the collector's memory for records in flight stays within, in bytes (estimated,
    /// see [`RECORD_BYTES_ESTIMATE`]): the queue, plus the batches past it (one open batch per
    /// table, two in the writer's queue, [`crate::sink::WAITING_BATCHES`] waiting in the writer,
    /// `batch.inserts_in_flight` being inserted, [`crate::batch::SPARE_BUFFERS`] freed batch
    /// buffers kept for reuse, each at most `batch.max_rows` or `batch.max_bytes`). The process
    /// adds its fixed footprint (code, runtime, buffers).
    pub fn memory_bound_bytes(&self, batch: &BatchConfig) -> usize {
        let queue = self.queue_capacity_chunks() * self.chunk_records * RECORD_BYTES_ESTIMATE;
        let per_batch = batch
            .max_bytes
            .min(batch.max_rows.saturating_mul(RECORD_BYTES_ESTIMATE));
        // Open batches of the three tables (flows, counters, exporter stats), the writer's
        // queue of two (`pipeline::start`).
        let fixed = 3 + 2 + crate::sink::WAITING_BATCHES + crate::batch::SPARE_BUFFERS;
        queue + (fixed + batch.inserts_in_flight) * per_batch
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        let any = IpAddr::from([0, 0, 0, 0]);
        Self {
            listen: vec![
                SocketAddr::new(any, 2055),
                SocketAddr::new(any, 4739),
                SocketAddr::new(any, 6343),
            ],
            workers: 1,
            receive_buffer_bytes: 32 << 20,
            metrics_listen: Some(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 9477)),
            sink: SinkKind::Clickhouse,
            chunk_records: 1024,
            queue_chunks: 1024,
            stats_interval_seconds: 60,
            migrate_on_start: true,
            state_path: ".local/collector-state.json".to_owned(),
            state_save_interval_seconds: 30,
            max_queue_bytes: 256 << 20,
            allowed_exporters: Vec::new(),
            max_records_per_second_per_exporter: 0,
            max_records_per_second_by_exporter: BTreeMap::new(),
            max_exporters: 10_000,
        }
    }
}

/// Insert batching and retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// An insert is sent when a batch has this many rows...
    pub max_rows: usize,
    /// ...or this many bytes of RowBinary (estimated)...
    pub max_bytes: usize,
    /// ...or its oldest row has waited this long, in milliseconds.
    pub max_age_ms: u64,
    /// First retry delay after a failed insert, in milliseconds; doubles up to `retry_max_ms`.
    /// A failed batch is kept and retried, never dropped for a retryable error.
    pub retry_initial_ms: u64,
    /// Longest delay between retries, in milliseconds.
    pub retry_max_ms: u64,
    /// At shutdown, how long to keep retrying the last batches before giving up (and counting
    /// them as dropped with reason `shutdown`), in seconds.
    pub shutdown_timeout_seconds: u64,
    /// Inserts sent to ClickHouse at the same time (with the spool; without it, one at a time
    /// keeps the batches in order). A server on a machine with cores to spare takes more rows
    /// per second on two insert streams than on one: while one insert waits on its parts being
    /// written, the other is parsed. Each one more costs a batch of memory.
    pub inserts_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: 64 << 20,
            max_age_ms: 1000,
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
            shutdown_timeout_seconds: 30,
            inserts_in_flight: 2,
        }
    }
}

/// OpenTelemetry export: the evaluation cycles, inserts and notifications as traces, and the
/// collector's and monitor's metrics, sent over OTLP/HTTP (protobuf) to a collector or backend.
/// The binary's `telemetry` module builds the exporters from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Base URL of the OTLP/HTTP receiver, e.g. `http://127.0.0.1:4318`; traces go to
    /// `<url>/v1/traces`, metrics to `<url>/v1/metrics`. Unset: the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable is used when it is set; when neither
    /// is, nothing is exported and no exporter is built.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of everything exported (set one per instance, e.g.
    /// `egress-collector-fra1`). Other resource attributes come from `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_name: String,
    /// Seconds between two metric exports.
    pub export_interval_seconds: u64,
    /// Fraction of evaluation cycles, inserts and notifications whose traces are kept, 0 to 1
    /// (a child span follows its root's decision).
    pub traces_sample_ratio: f64,
    /// HTTP headers sent with every export (e.g. a backend's API key), as header name →
    /// name of the environment variable holding the value, so that secrets never appear in this
    /// file: `headers_from_env = { "x-honeycomb-team" = "HONEYCOMB_API_KEY" }`. A variable that
    /// is not set stops the start-up with an error naming the key.
    pub headers_from_env: BTreeMap<String, String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "egress".to_owned(),
            export_interval_seconds: 60,
            traces_sample_ratio: 1.0,
            headers_from_env: BTreeMap::new(),
        }
    }
}

impl TelemetryConfig {
    /// Every problem, each naming its key (without the `telemetry.` prefix).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint {
            let host = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                problems.push(format!(
                    "otlp_endpoint: {endpoint:?} is not an http:// or https:// URL"
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            problems.push("service_name: must not be empty".to_owned());
        }
        if self.export_interval_seconds == 0 {
            problems.push("export_interval_seconds: must be at least 1".to_owned());
        }
        if !(0.0..=1.0).contains(&self.traces_sample_ratio) {
            problems.push(format!(
                "traces_sample_ratio: {} is out of range 0..=1",
                self.traces_sample_ratio
            ));
        }
        for (header, variable) in &self.headers_from_env {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if header.is_empty() || !header.chars().all(token) {
                problems.push(format!("headers_from_env.{header}: not a valid HTTP header name"));
            }
            if variable.is_empty() || variable.contains('=') || variable.contains('\0') {
                problems.push(format!(
                    "headers_from_env.{header}: {variable:?} is not an environment variable name"
                ));
            }
        }
        problems
    }
}

impl Config {
    /// Loads `path` (if any), applies environment overrides from `env` (pairs of name and
    /// value, normally `std::env::vars()`) and `--set` overrides, and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Self> {
        match path {
            Some(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: origin.clone(),
                    source,
                })?;
                Self::load_text(Some(&text), &origin, env, sets)
            }
            None => Self::load_text(None, "(defaults)", env, sets),
        }
    }

    /// Parses TOML text alone (no environment, no overrides) and validates the result. The
    /// config fuzz target's entry point; `origin` names the text in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        Self::load_text(Some(text), origin, std::iter::empty(), &[])
    }

    /// [`Config::load`] once the file, if any, has been read: `origin` names it in errors.
    fn load_text(
        text: Option<&str>,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Self> {
        let origin = origin.to_owned();
        let mut table: toml::Table = match text {
            Some(text) => toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: origin.clone(),
                message: e.to_string(),
            })?,
            None => toml::Table::new(),
        };
        let mut env_overrides: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in env {
            if let Some(path) = name.strip_prefix("EGRESS__") {
                let key = path
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join(".");
                env_overrides.insert(key, value);
            }
        }
        for (key, value) in &env_overrides {
            set_path(&mut table, key, value).map_err(|reason| ConfigError::Override {
                setting: format!("EGRESS__{}", key.replace('.', "__").to_ascii_uppercase()),
                reason,
            })?;
        }
        for setting in sets {
            let (key, value) = setting.split_once('=').ok_or_else(|| ConfigError::Override {
                setting: setting.clone(),
                reason: "expected KEY=VALUE, e.g. batch.max_rows=50000".to_owned(),
            })?;
            set_path(&mut table, key.trim(), value.trim()).map_err(|reason| ConfigError::Override {
                setting: setting.clone(),
                reason,
            })?;
        }
        let config: Config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: origin,
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value, reporting all problems at once, each naming its key.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let c = &self.collector;
        if c.listen.is_empty() {
            problems.push("collector.listen: at least one address is needed".to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        for addr in &c.listen {
            if !seen.insert(addr) {
                problems.push(format!("collector.listen: {addr} is listed twice"));
            }
        }
        if c.workers == 0 || c.workers > 64 {
            problems.push(format!("collector.workers: {} is out of range 1..=64", c.workers));
        }
        if c.receive_buffer_bytes < 64 << 10 {
            problems.push(format!(
                "collector.receive_buffer_bytes: {} is below the 65536-byte minimum",
                c.receive_buffer_bytes
            ));
        }
        if c.chunk_records == 0 {
            problems.push("collector.chunk_records: must be at least 1".to_owned());
        }
        if c.queue_chunks == 0 {
            problems.push("collector.queue_chunks: must be at least 1".to_owned());
        }
        if c.max_queue_bytes < c.chunk_records.saturating_mul(RECORD_BYTES_ESTIMATE) {
            problems.push(format!(
                "collector.max_queue_bytes: {} does not hold one chunk of collector.chunk_records ({} records of about {RECORD_BYTES_ESTIMATE} bytes)",
                c.max_queue_bytes, c.chunk_records
            ));
        }
        if c.max_exporters == 0 {
            problems.push("collector.max_exporters: must be at least 1".to_owned());
        }
        if c.stats_interval_seconds == 0 {
            problems.push("collector.stats_interval_seconds: must be at least 1".to_owned());
        }
        if c.state_save_interval_seconds == 0 {
            problems.push("collector.state_save_interval_seconds: must be at least 1".to_owned());
        }
        let b = &self.batch;
        if b.max_rows == 0 {
            problems.push("batch.max_rows: must be at least 1".to_owned());
        }
        if b.max_bytes < 4096 {
            problems.push(format!(
                "batch.max_bytes: {} is below the 4096-byte minimum",
                b.max_bytes
            ));
        }
        if b.max_age_ms == 0 {
            problems.push("batch.max_age_ms: must be at least 1".to_owned());
        }
        if b.retry_initial_ms == 0 || b.retry_initial_ms > b.retry_max_ms {
            problems.push(format!(
                "batch.retry_initial_ms: {} must be at least 1 and at most batch.retry_max_ms ({})",
                b.retry_initial_ms, b.retry_max_ms
            ));
        }
        if !(1..=16).contains(&b.inserts_in_flight) {
            problems.push(format!(
                "batch.inserts_in_flight: {} must be between 1 and 16",
                b.inserts_in_flight
            ));
        }
        let d = &self.decoder;
        if d.max_templates_per_exporter == 0 {
            problems.push("decoder.max_templates_per_exporter: must be at least 1".to_owned());
        }
        problems.extend(egress_query::model::problems(&self.model, &self.exporters));
        problems.extend(
            self.monitor
                .problems()
                .into_iter()
                .map(|p| format!("monitor.{p}")),
        );
        problems.extend(egress_query::sla::validate(&self.slas));
        problems.extend(self.probes.problems().into_iter().map(|p| format!("probes.{p}")));
        if let Err(egress_alerts::config::Error::Invalid(alerting)) = self.alerting.validate() {
            problems.extend(alerting);
        }
        problems.extend(
            self.clickhouse
                .problems()
                .into_iter()
                .map(|p| format!("clickhouse.{p}")),
        );
        problems.extend(
            self.telemetry
                .problems()
                .into_iter()
                .map(|p| format!("telemetry.{p}")),
        );
        problems.extend(self.spool.problems().into_iter().map(|p| format!("spool.{p}")));
        if self.spool.enabled && self.spool.max_bytes < 4 * self.batch.max_bytes as u64 {
            problems.push(format!(
                "spool.max_bytes: {} is below four batches of batch.max_bytes ({})",
                self.spool.max_bytes, self.batch.max_bytes
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }
}

/// Sets `key` (dotted path) in `table` to `value`, parsed as TOML where it parses.
fn set_path(table: &mut toml::Table, key: &str, value: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{key}` is not a valid key path"));
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = parts.split_last().ok_or_else(|| "empty key".to_owned())?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` in `{key}` is not a section"))?;
    }
    current.insert((*last).to_owned(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::load(None, no_env(), &[]).expect("defaults");
        assert_eq!(config.collector.listen.len(), 3);
    }

    #[test]
    fn shipped_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/egress.example.toml");
        let config = Config::load(Some(&path), no_env(), &[]).expect("example config");
        assert!(
            !config.exporters.is_empty(),
            "the example documents exporter settings"
        );
        assert!(
            config.exporters.iter().any(|e| !e.interfaces.is_empty()),
            "the example documents interfaces"
        );
        assert!(
            !config.model.internal_prefixes.is_empty(),
            "the example documents [model]"
        );
        let model = egress_query::model::EgressModel::build(&config.model, &config.exporters).expect("model");
        assert!(!model.paths().is_empty());
        assert!(
            config.telemetry.otlp_endpoint.is_none() && !config.telemetry.headers_from_env.is_empty(),
            "the example documents [telemetry], off"
        );
        assert!(
            config.collector.state_path.ends_with("collector-state.json"),
            "the example documents collector.state_path"
        );
    }

    #[test]
    fn state_keys_default_and_validate() {
        let config = Config::load(None, no_env(), &[]).expect("defaults");
        assert_eq!(config.collector.state_path, ".local/collector-state.json");
        assert_eq!(config.collector.state_save_interval_seconds, 30);
        let sets = ["collector.state_save_interval_seconds=0".to_owned()];
        let error = Config::load(None, no_env(), &sets)
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("collector.state_save_interval_seconds"), "{error}");
        let off = Config::load(None, no_env(), &["collector.state_path=\"\"".to_owned()]).expect("off");
        assert!(off.collector.state_path.is_empty());
    }

    #[test]
    fn shipped_example_documents_every_collector_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/egress.example.toml");
        let text = std::fs::read_to_string(&path).expect("example config");
        let defaults = toml::Table::try_from(CollectorConfig::default()).expect("serialise");
        for key in defaults.keys() {
            assert!(
                text.lines().any(|l| {
                    let l = l.trim_start_matches("# ");
                    l.starts_with(&format!("{key} =")) || l == format!("[collector.{key}]")
                }),
                "collector.{key} is not in {}",
                path.display()
            );
        }
        let config = Config::load(Some(&path), no_env(), &[]).expect("example config");
        assert_eq!(
            config.collector,
            CollectorConfig::default(),
            "the example shows the defaults"
        );
    }

    #[test]
    fn queue_is_bounded_in_bytes() {
        let mut collector = CollectorConfig {
            chunk_records: 1000,
            queue_chunks: 1000,
            max_queue_bytes: 10_000 * RECORD_BYTES_ESTIMATE,
            ..CollectorConfig::default()
        };
        assert_eq!(collector.queue_capacity_chunks(), 10);
        collector.max_queue_bytes = usize::MAX;
        assert_eq!(
            collector.queue_capacity_chunks(),
            1000,
            "queue_chunks still caps it"
        );
        let batch = BatchConfig {
            max_rows: 100,
            ..BatchConfig::default()
        };
        collector.max_queue_bytes = 10_000 * RECORD_BYTES_ESTIMATE;
        assert_eq!(
            collector.memory_bound_bytes(&batch),
            (10_000 + (5 + 2 + 1 + 2) * 100) * RECORD_BYTES_ESTIMATE
        );
        let error = Config::load(None, no_env(), &["collector.max_queue_bytes=1000".to_owned()])
            .expect_err("below one chunk")
            .to_string();
        assert!(error.contains("collector.max_queue_bytes"), "{error}");
        let error = Config::load(None, no_env(), &["batch.inserts_in_flight=0".to_owned()])
            .expect_err("no insert at all")
            .to_string();
        assert!(
            error.contains("batch.inserts_in_flight: 0 must be between 1 and 16"),
            "{error}"
        );
    }

    #[test]
    fn exporter_controls_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("controls.toml");
        std::fs::write(
            &path,
            "[collector]\nallowed_exporters = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n\
             max_records_per_second_per_exporter = 1000\n\
             [collector.max_records_per_second_by_exporter]\n\"192.0.2.1\" = 50000\n",
        )
        .expect("write");
        let config = Config::load(Some(&path), no_env(), &[]).expect("config");
        assert_eq!(config.collector.allowed_exporters.len(), 2);
        assert_eq!(
            config
                .collector
                .max_records_per_second_by_exporter
                .get(&IpAddr::from([192, 0, 2, 1])),
            Some(&50_000)
        );
        std::fs::write(&path, "[collector]\nallowed_exporters = [\"192.0.2.0/33\"]\n").expect("write");
        let error = Config::load(Some(&path), no_env(), &[])
            .expect_err("bad prefix")
            .to_string();
        assert!(error.contains("allowed_exporters"), "{error}");
    }

    #[test]
    fn text_loads_like_its_file_and_errors_name_its_origin() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/egress.example.toml");
        let text = std::fs::read_to_string(&path).expect("example text");
        let from_text = Config::from_toml_str(&text, "example").expect("example text");
        let from_file = Config::load(Some(&path), no_env(), &[]).expect("example file");
        assert_eq!(format!("{from_text:?}"), format!("{from_file:?}"));
        let error = Config::from_toml_str("[batch\n", "inline").expect_err("unterminated table");
        assert!(
            matches!(&error, ConfigError::Parse { path, .. } if path == "inline"),
            "{error}"
        );
    }

    #[test]
    fn local_run_config_models_the_simulated_routers() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/egress.toml");
        let config = Config::load(Some(&path), no_env(), &[]).expect("local config");
        let model = egress_query::model::EgressModel::build(&config.model, &config.exporters).expect("model");
        // `egress run --simulate` with four protocols of two routers each sends from
        // 127.0.0.10 to 127.0.0.17; each protocol's routers are that fleet's edge1 and edge2.
        for offset in 0..8u8 {
            let address = IpAddr::from([127, 0, 0, 10 + offset]);
            let exporter = model
                .exporter(address)
                .unwrap_or_else(|| panic!("{address} configured"));
            let router = &crate::simulate::fleet::fleet(2, address)[usize::from(offset % 2)];
            for interface in &router.interfaces {
                let configured = exporter
                    .interface(interface.if_index)
                    .unwrap_or_else(|| panic!("{address} ifIndex {}", interface.if_index));
                assert_eq!(configured.name, interface.name);
                assert_eq!(
                    configured.role == egress_query::schema::InterfaceRole::External,
                    interface.is_external(),
                    "{address} {}",
                    interface.name
                );
            }
            assert_eq!(exporter.interfaces().len(), router.interfaces.len(), "{address}");
        }
        let internal = ["10.1.0.1", "10.2.255.1", "fd00:1::1"];
        for host in internal {
            let host: IpAddr = host.parse().expect("address");
            assert!(model.is_internal(egress_query::schema::to_v6(host)), "{host}");
        }
    }

    #[test]
    fn model_problems_are_reported_with_their_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.toml");
        std::fs::write(
            &path,
            r#"
[model]
internal_prefixes = ["10.0.0.0/8"]
cloud_ranges = [{ file = "/nonexistent/ranges.txt", format = "cidr", label = "x" }]

[[exporters]]
address = "192.0.2.1"
[[exporters.interfaces]]
if_index = 1
role = "internal"
kind = "transit"
[[exporters.interfaces]]
if_index = 1
role = "external"
capacity_bps = 0
"#,
        )
        .expect("write");
        let error = Config::load(Some(&path), no_env(), &["batch.max_rows=0".to_owned()])
            .expect_err("invalid")
            .to_string();
        for key in [
            "batch.max_rows",
            "model.cloud_ranges[0].file",
            "exporters[0].interfaces[0].kind",
            "exporters[0].interfaces[1].if_index",
            "exporters[0].interfaces[1].capacity_bps",
        ] {
            assert!(error.contains(key), "{key} missing from:\n{error}");
        }
        std::fs::write(&path, "[[exporters]]\naddress = \"192.0.2.1\"\n[[exporters.interfaces]]\nif_index = 1\nrole = \"upstream\"\n")
            .expect("write");
        let error = Config::load(Some(&path), no_env(), &[])
            .expect_err("bad role")
            .to_string();
        assert!(error.contains("upstream"), "{error}");
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[batch]\nmax_rowz = 5\n").expect("write");
        let error = Config::load(Some(&path), no_env(), &[])
            .expect_err("typo")
            .to_string();
        assert!(error.contains("max_rowz"), "{error}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let sets = ["collector.workers=0".to_owned(), "batch.max_rows=0".to_owned()];
        let error = Config::load(None, no_env(), &sets)
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("collector.workers"), "{error}");
        assert!(error.contains("batch.max_rows"), "{error}");
    }

    #[test]
    fn environment_and_flags_override_the_file_in_that_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[batch]\nmax_rows = 10\nmax_age_ms = 10\n").expect("write");
        let env = vec![
            ("EGRESS__BATCH__MAX_ROWS".to_owned(), "20".to_owned()),
            ("EGRESS__BATCH__MAX_AGE_MS".to_owned(), "20".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = Config::load(Some(&path), env, &["batch.max_rows=30".to_owned()]).expect("config");
        assert_eq!(config.batch.max_rows, 30);
        assert_eq!(config.batch.max_age_ms, 20);
    }

    #[test]
    fn telemetry_is_off_by_default_and_set_from_the_environment() {
        let config = Config::load(None, no_env(), &[]).expect("defaults");
        assert_eq!(config.telemetry.otlp_endpoint, None);
        assert_eq!(config.telemetry.service_name, "egress");
        let env = vec![(
            "EGRESS__TELEMETRY__OTLP_ENDPOINT".to_owned(),
            "http://127.0.0.1:4318".to_owned(),
        )];
        let sets = ["telemetry.headers_from_env={ authorization = \"OTLP_TOKEN\" }".to_owned()];
        let config = Config::load(None, env, &sets).expect("config");
        assert_eq!(
            config.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(
            config
                .telemetry
                .headers_from_env
                .get("authorization")
                .map(String::as_str),
            Some("OTLP_TOKEN")
        );
    }

    #[test]
    fn telemetry_problems_name_their_keys() {
        let sets = [
            "telemetry.otlp_endpoint=\"127.0.0.1:4318\"".to_owned(),
            "telemetry.traces_sample_ratio=1.5".to_owned(),
            "telemetry.export_interval_seconds=0".to_owned(),
            "telemetry.headers_from_env={ \"bad header\" = \"X\" }".to_owned(),
        ];
        let error = Config::load(None, no_env(), &sets)
            .expect_err("invalid")
            .to_string();
        for key in [
            "telemetry.otlp_endpoint",
            "telemetry.traces_sample_ratio",
            "telemetry.export_interval_seconds",
            "telemetry.headers_from_env.bad header",
        ] {
            assert!(error.contains(key), "{key} missing from:\n{error}");
        }
    }

    #[test]
    fn list_values_parse_as_toml() {
        let sets = ["collector.listen=[\"127.0.0.1:9995\", \"[::1]:9996\"]".to_owned()];
        let config = Config::load(None, no_env(), &sets).expect("config");
        assert_eq!(config.collector.listen.len(), 2);
    }
}
