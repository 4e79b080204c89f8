//! The query side of the benchmark (`egress-bench query`): SLA evaluation and every dashboard
//! query, timed over a flow table of production size on ClickHouse 18.16.
//!
//! In: a number of flows (100 M by default) and, optionally, a directory to keep the server's
//! data in. The procedure:
//! 1. start ClickHouse 18.16 ([`ClickHouseServer::start_in`], with `system.query_log` on) and
//!    apply Egress's migrations ([`migrate`]);
//! 2. fill `flows` in the server (`INSERT ... SELECT ... FROM numbers(n)`, [`BLOCK_ROWS`] rows
//!    per statement) with synthetic but realistic flows of the [`MODEL`] — four exporters, eight
//!    egress paths, 400 internal hosts with a few heavy uploaders, a million external
//!    destinations in 3,000 ASes, a tenth of them in clouds, 60 % outbound and 40 % inbound,
//!    heavy-tailed packet counts, a daily cycle, exporter round trips on a fifth of the
//!    outbound flows — spread evenly over the [`SPAN_SECONDS`] before the load started, in time
//!    order as a collector inserts them. The rollups' materialized views fill as the rows go
//!    in; `exporter_stats` is derived from the flows, `probes` and `alert_deliveries` are
//!    generated, and the hour rollups are closed as the monitor does ([`close_hours`]);
//! 3. evaluate the [`MODEL`]'s SLAs as the monitor does ([`evaluate_all`] with
//!    [`EvalContext::from_model`] at the end of the data), several times, and write the results
//!    to `sla_results` with two days of history before them (the monitor's once-a-minute results);
//! 4. expand every variable and panel query of every dashboard in `dashboards/` as Grafana
//!    does ([`egress_testkit::grafana`]) for the last 24 hours and the last 6 hours of the data,
//!    with every variable on "All", and run each [`QueryBenchConfig::panel_runs`] times.
//!
//! Out: a [`QueryReport`] — insert rate, size on disk, SLA evaluation wall times and result
//! counts, and per panel the median wall time, rows, and what the server read
//! (`system.query_log`) — rendered by [`render`] with the verdict against issue 7's bounds
//! ([`SLA_BOUND`], [`PANEL_BOUND`]).
//!
//! With `keep`, the server's directory is kept and a later run with the same number of flows
//! reuses the data (step 2 is skipped; the times are relative to the end of the kept data).
//! Without it, everything is in a temporary directory removed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use clickhouse::Client;
use serde::{Deserialize, Serialize};

use egress_query::connection::{self, ClickHouseConfig};
use egress_query::migrate::migrate;
use egress_query::model::{EgressModel, ExporterConfig, ModelConfig};
use egress_query::rollups::close_hours;
use egress_query::sla::{evaluate_all, validate, write_results, EvalContext, SlaConfig, SlaResult, Verdict};
use egress_testkit::clickhouse::ClickHouseServer;
use egress_testkit::grafana::{self, Context, Dashboard, Resolved};

/// The database the dashboards' `database` constant names.
const DATABASE: &str = "egress";
/// Flows per `INSERT ... SELECT`.
pub const BLOCK_ROWS: u64 = 10_000_000;
/// The flows cover this many seconds before the end of the data: two days.
pub const SPAN_SECONDS: u32 = 2 * 86_400;
/// Issue 7: one SLA evaluation must complete within the evaluation interval.
pub const SLA_BOUND: Duration = Duration::from_secs(60);
/// Issue 7: the heaviest dashboard panel must answer within this.
pub const PANEL_BOUND: Duration = Duration::from_secs(2);
/// The dashboard time ranges measured: (label, seconds before the end of the data).
const RANGES: [(&str, u32); 2] = [("24h", 86_400), ("6h", 6 * 3_600)];
/// Points of a panel about 1,000 pixels wide (Grafana's `maxDataPoints`).
const MAX_DATA_POINTS: u32 = 1_000;
/// Internal hosts (10.0.0.1-250, 10.0.1.1-150).
const HOSTS: u32 = 400;
/// External destinations, in [`AS_COUNT`] ASes.
const DESTINATIONS: u32 = 1_000_000;
const AS_COUNT: u32 = 3_000;
/// The internal host that uploads fifty times its usual volume in the last half hour.
const UPLOADER: u32 = 7;
/// The exporter (1-based, in [`MODEL`] order) that falls silent for the last ten minutes.
const SILENT_EXPORTER: usize = 4;
/// The path (0-based, in model order) whose probes all fail in the last fifteen minutes.
const UNREACHABLE_PATH: usize = 5;
/// The `<query_log>` section added to the server configuration.
const QUERY_LOG: &str = "<query_log><database>system</database><table>query_log</table>\
    <flush_interval_milliseconds>1000</flush_interval_milliseconds></query_log>";
/// The file in a kept directory saying what it holds.
const KEPT_DATA_FILE: &str = "egress-bench-query.json";

/// The egress model and SLAs of the generated world: four exporters at three sites, two
/// external interfaces each (eight egress paths, one of them a 2 Gbit/s link that the traffic
/// overfills) and two internal ones, and one SLA of every kind that reads flows.
pub const MODEL: &str = r#"
[model]
internal_prefixes = ["10.0.0.0/8"]

[[exporters]]
address = "192.0.2.1"
name = "edge1"
site = "par"
interfaces = [
  { if_index = 1, name = "et-0/0/1", role = "external", kind = "transit", provider = "Transit A", capacity_bps = 10_000_000_000 },
  { if_index = 2, name = "et-0/0/2", role = "external", kind = "peering", provider = "Peering IX", capacity_bps = 10_000_000_000 },
  { if_index = 10, name = "ae0", role = "internal" },
  { if_index = 11, name = "ae1", role = "internal" },
]

[[exporters]]
address = "192.0.2.2"
name = "edge2"
site = "par"
interfaces = [
  { if_index = 1, name = "et-0/0/1", role = "external", kind = "transit", provider = "Transit B", capacity_bps = 10_000_000_000 },
  { if_index = 2, name = "et-0/0/2", role = "external", kind = "cloud", provider = "AWS Direct Connect", capacity_bps = 2_000_000_000 },
  { if_index = 10, name = "ae0", role = "internal" },
  { if_index = 11, name = "ae1", role = "internal" },
]

[[exporters]]
address = "192.0.2.3"
name = "edge3"
site = "ams"
interfaces = [
  { if_index = 1, name = "xe-1/0/0", role = "external", kind = "transit", provider = "Transit A", capacity_bps = 10_000_000_000 },
  { if_index = 2, name = "xe-1/0/1", role = "external", kind = "transit", provider = "Transit C", capacity_bps = 10_000_000_000 },
  { if_index = 10, name = "ae0", role = "internal" },
  { if_index = 11, name = "ae1", role = "internal" },
]

[[exporters]]
address = "192.0.2.4"
name = "edge4"
site = "fra"
interfaces = [
  { if_index = 1, name = "et-0/0/1", role = "external", kind = "wan", provider = "WAN fra-par", capacity_bps = 10_000_000_000 },
  { if_index = 2, name = "et-0/0/2", role = "external", kind = "transit", provider = "Transit D", capacity_bps = 10_000_000_000 },
  { if_index = 10, name = "ae0", role = "internal" },
  { if_index = 11, name = "ae1", role = "internal" },
]

[[slas]]
name = "utilisation"
kind = "throughput"
window_seconds = 300
throughput = { max_utilisation = 0.8, min_bps = 1_000_000 }

[[slas]]
name = "exfiltration"
kind = "exfiltration"
window_seconds = 3600
[slas.exfiltration]
limit_bytes = 1_000_000_000_000
baseline = { days = 14, k = 3.0, min_bytes = 1_000_000_000 }
bulk = { by = "dst_as", limit_bytes = 20_000_000_000 }
allow = { clouds = ["microsoft"], asns = [1000] }

[[slas]]
name = "exporters"
kind = "exporter_health"
window_seconds = 300
exporter_health = { silent_seconds = 300, max_loss_ratio = 0.01 }

[[slas]]
name = "latency"
kind = "latency"
window_seconds = 300
latency = { source = "both", percentile = 0.95, threshold_ms = 60.0 }

[[slas]]
name = "latency-slo"
kind = "latency"
latency = { source = "flows", threshold_ms = 60.0, objective = 0.99 }

[[slas]]
name = "egress-slo"
kind = "objective"
objective = { good = "path_utilisation_below", max_utilisation = 0.9, objective = 0.999 }
"#;

/// The parsed [`MODEL`].
#[derive(Debug, Deserialize)]
struct ModelFile {
    model: ModelConfig,
    exporters: Vec<ExporterConfig>,
    slas: Vec<SlaConfig>,
}

/// What one invocation does.
#[derive(Debug, Clone)]
pub struct QueryBenchConfig {
    /// Flows to generate.
    pub flows: u64,
    /// Keep the server's directory here (and reuse its data when it holds `flows` flows).
    pub keep: Option<PathBuf>,
    /// SLA evaluations timed.
    pub sla_runs: usize,
    /// Runs of each dashboard query (the median is reported).
    pub panel_runs: usize,
}

impl QueryBenchConfig {
    /// Issue 7's figure: 100 M flows, five evaluations, three runs per panel.
    pub fn full() -> Self {
        Self {
            flows: 100_000_000,
            keep: None,
            sla_runs: 5,
            panel_runs: 3,
        }
    }
}

/// How the flows went in.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Wall time of the flow inserts (views included).
    pub flows_time: Duration,
    /// Wall time of everything else: exporter statistics, probes, deliveries, closing hours.
    pub rest_time: Duration,
}

/// One timed dashboard query.
#[derive(Debug, Clone)]
pub struct PanelTiming {
    /// Dashboard uid.
    pub dashboard: String,
    /// Panel title, or `$name` for a variable query.
    pub title: String,
    /// `24h` or `6h`.
    pub range: &'static str,
    /// Median wall time over the runs (sent, executed, answer read).
    pub median: Duration,
    /// Rows of the answer.
    pub rows: usize,
    /// Rows and bytes the server read, and its peak memory (median run, `system.query_log`).
    pub read_rows: u64,
    pub read_bytes: u64,
    pub memory_bytes: u64,
}

/// The results of one SLA.
#[derive(Debug, Clone)]
pub struct SlaSummary {
    pub name: String,
    pub kind: String,
    /// Wall time of its evaluation (a separate run, after the timed ones).
    pub time: Duration,
    pub ok: usize,
    pub breach: usize,
    pub no_data: usize,
}

/// What one invocation measured.
#[derive(Debug, Clone)]
pub struct QueryReport {
    pub flows: u64,
    pub server_version: String,
    /// `None` when kept data was reused.
    pub load: Option<LoadReport>,
    /// Bytes on disk of `flows` and of the rollup tables, and active parts of `flows`.
    pub flows_bytes: u64,
    pub rollup_bytes: u64,
    pub flows_parts: u64,
    /// Wall time of each `evaluate_all`.
    pub sla_times: Vec<Duration>,
    /// Results of one evaluation, per SLA.
    pub slas: Vec<SlaSummary>,
    /// Every panel and variable query, heaviest first.
    pub panels: Vec<PanelTiming>,
}

impl QueryReport {
    /// Results of one evaluation.
    pub fn sla_results(&self) -> usize {
        self.slas.iter().map(|s| s.ok + s.breach + s.no_data).sum()
    }

    /// The slowest evaluation.
    pub fn sla_max(&self) -> Duration {
        self.sla_times.iter().copied().max().unwrap_or_default()
    }

    /// Whether both of issue 7's bounds hold.
    pub fn passes(&self) -> bool {
        self.sla_max() < SLA_BOUND && self.panels.first().is_none_or(|p| p.median < PANEL_BOUND)
    }
}

/// Runs the query benchmark; progress goes to `progress`.
pub fn run(config: &QueryBenchConfig, progress: &mut dyn Write) -> Result<QueryReport> {
    ensure!(config.flows >= 1_000, "--flows must be at least 1000");
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(dir) = &config.keep {
        std::fs::create_dir_all(dir)?;
    }
    let dir = config.keep.as_deref().map(std::path::absolute).transpose()?;
    writeln!(progress, "starting ClickHouse")?;
    let server = ClickHouseServer::start_in(dir.as_deref(), QUERY_LOG).context("starting ClickHouse")?;
    runtime.block_on(run_on(&server, dir.as_deref(), config, progress))
}

async fn run_on(
    server: &ClickHouseServer,
    kept: Option<&Path>,
    config: &QueryBenchConfig,
    progress: &mut dyn Write,
) -> Result<QueryReport> {
    let model_file: ModelFile = toml::from_str(MODEL).context("the benchmark's model")?;
    let problems = validate(&model_file.slas);
    ensure!(problems.is_empty(), "the benchmark's SLAs: {problems:?}");
    let model = EgressModel::from_parts(&model_file.model, &model_file.exporters, Vec::new());

    let ch = ClickHouseConfig {
        url: server.http_url(),
        database: DATABASE.to_owned(),
        retention_days: 0,
        ..ClickHouseConfig::default()
    };
    // The monitor's client, with the queries logged so that `system.query_log` can say what
    // each read.
    let client = connection::client(&ch)?.with_setting("log_queries", "1");
    // Loads run longer than the monitor's query timeout: a client without one.
    let loader = server.client().with_setting("log_queries", "1");
    let kept_data = kept.and_then(|dir| KeptData::read(dir).filter(|k| k.flows == config.flows));
    if kept.is_some() && kept_data.is_none() {
        // Kept data of another size, or of an interrupted load: start afresh.
        execute(&loader, &format!("DROP DATABASE IF EXISTS {DATABASE}")).await?;
        if let Some(dir) = kept {
            let _ = std::fs::remove_file(dir.join(KEPT_DATA_FILE));
        }
    }
    let version = connection::server_version(&client).await?;
    migrate(&client, &ch, &version).await?;

    let (end, load) = match kept_data {
        Some(kept_data) => {
            writeln!(
                progress,
                "reusing {} flows ending at {}",
                kept_data.flows, kept_data.end
            )?;
            (kept_data.end, None)
        }
        None => {
            let end = unix_now() / 60 * 60;
            let load = load(&loader, &ch, &model, config.flows, end, progress).await?;
            (end, Some(load))
        }
    };
    settle_merges(&loader, progress).await?;

    // SLA evaluation as the monitor does it, at the end of the data.
    let ctx = EvalContext::from_model(end, DATABASE, &model, ch.query_timeout());
    let mut sla_times = Vec::new();
    let mut results: Vec<SlaResult> = Vec::new();
    for run in 0..config.sla_runs.max(1) {
        let started = Instant::now();
        results = evaluate_all(&client, &model_file.slas, &ctx).await?;
        let took = started.elapsed();
        writeln!(
            progress,
            "SLA evaluation {}: {:.2} s, {} results",
            run + 1,
            took.as_secs_f64(),
            results.len()
        )?;
        sla_times.push(took);
    }
    let mut slas = Vec::new();
    for sla in &model_file.slas {
        let started = Instant::now();
        let own = evaluate_all(&client, std::slice::from_ref(sla), &ctx).await?;
        let time = started.elapsed();
        let count = |verdict| own.iter().filter(|r| r.verdict == verdict).count();
        slas.push(SlaSummary {
            name: sla.name.clone(),
            kind: sla.kind.as_str().to_owned(),
            time,
            ok: count(Verdict::Ok),
            breach: count(Verdict::Breach),
            no_data: count(Verdict::NoData),
        });
    }
    for summary in &slas {
        // `evaluate_all` logs and skips an SLA whose queries fail: here that is a failure.
        ensure!(
            summary.ok + summary.breach + summary.no_data > 0,
            "SLA {} gave no result",
            summary.name
        );
    }
    ensure!(
        slas.iter().any(|s| s.ok + s.breach > 0),
        "every SLA result is no data: the generated flows do not match the model"
    );
    if load.is_some() {
        write_results(&client, DATABASE, &results, ch.insert_timeout()).await?;
        // The two days of results the monitor would have written before, once a minute, an
        // hour per insert (all at once would copy the details of every result 2,880 times in
        // one block). The alias must not be `time`, which the WHERE reads.
        let minutes = SPAN_SECONDS / 60;
        for hour in 0..SPAN_SECONDS / 3600 {
            // Minutes `first .. first + steps` before the end, up to the start of the data.
            let first = hour * 60 + 1;
            let steps = 60.min(minutes - first);
            execute(
                &loader,
                &format!(
                    "INSERT INTO {DATABASE}.sla_results SELECT time - 60 * ({first} + step) AS earlier, sla, \
                     kind, subject, labels_keys, labels_values, value, threshold, verdict, samples, details \
                     FROM {DATABASE}.sla_results ARRAY JOIN range({steps}) AS step \
                     WHERE time = toDateTime({end})"
                ),
            )
            .await?;
        }
        if let Some(dir) = kept {
            KeptData {
                flows: config.flows,
                end,
            }
            .write(dir)?;
        }
    }

    let panels = time_dashboards(&loader, end, config.panel_runs.max(1), progress).await?;
    let (flows_bytes, flows_parts) = table_size(&loader, "table = 'flows'").await?;
    let (rollup_bytes, _) =
        table_size(&loader, "(table LIKE 'flows\\\\_1%' OR table = 'latency_1m')").await?;
    Ok(QueryReport {
        flows: config.flows,
        server_version: version.to_string(),
        load,
        flows_bytes,
        rollup_bytes,
        flows_parts,
        sla_times,
        slas,
        panels,
    })
}

/// What a kept directory holds, so that a later run can reuse it.
#[derive(Debug, Serialize, Deserialize)]
struct KeptData {
    flows: u64,
    /// End of the data (Unix seconds): the evaluation time and the dashboards' `$__toTime`.
    end: u32,
}

impl KeptData {
    fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(KEPT_DATA_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(KEPT_DATA_FILE), serde_json::to_string(self)?)?;
        Ok(())
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

async fn execute(client: &Client, sql: &str) -> Result<()> {
    client
        .query_raw(sql)
        .execute()
        .await
        .with_context(|| format!("{sql:.300}"))
}

/// A ClickHouse array literal of strings.
fn string_array(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let quoted: Vec<String> = items
        .into_iter()
        .map(|s| format!("'{}'", s.as_ref().replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The model as SQL array literals, indexed by exporter `e` (1-based) and, for the egress
/// paths, by `p = (e - 1) * 2 + x` with `x` the external interface (1 or 2).
struct ModelArrays {
    exporter_count: usize,
    names: String,
    sites: String,
    paths: String,
    if_names: String,
    kinds: String,
    providers: String,
    path_labels: Vec<String>,
}

impl ModelArrays {
    fn new(model: &EgressModel) -> Result<Self> {
        let exporters = model.exporters();
        let paths = model.paths();
        ensure!(
            paths.len() == 2 * exporters.len(),
            "every exporter of the model has two external interfaces"
        );
        for (position, exporter) in exporters.iter().enumerate() {
            ensure!(
                exporter.address == std::net::IpAddr::from([192, 0, 2, position as u8 + 1]),
                "exporter {} must be 192.0.2.{}",
                exporter.name,
                position + 1
            );
        }
        let path_labels: Vec<String> = paths.iter().map(|p| p.label.clone()).collect();
        Ok(Self {
            exporter_count: exporters.len(),
            names: string_array(exporters.iter().map(|e| &e.name)),
            sites: string_array(exporters.iter().map(|e| &e.site)),
            paths: string_array(&path_labels),
            if_names: string_array(paths.iter().map(|p| &p.if_name)),
            kinds: string_array(paths.iter().map(|p| p.kind)),
            providers: string_array(paths.iter().map(|p| &p.provider)),
            path_labels,
        })
    }
}

/// The `INSERT ... SELECT` of flows `offset .. offset + count` of `total`, ending at `end`.
fn flows_insert(arrays: &ModelArrays, offset: u64, count: u64, total: u64, end: u32) -> String {
    let start = end - SPAN_SECONDS;
    let exporters = arrays.exporter_count;
    let ModelArrays {
        names,
        sites,
        paths,
        if_names,
        kinds,
        providers,
        ..
    } = arrays;
    // Columns are computed in three nested selects: the raw draws (hashes of the flow number),
    // the flow's shape (exporter, interfaces, host, destination, direction), then the columns.
    format!(
        "INSERT INTO {DATABASE}.flows (time_received, time_flow_start, time_flow_end, exporter_address, \
         observation_domain, flow_type, sampling_rate, sampling_source, src_addr, dst_addr, src_port, dst_port, \
         proto, bytes, packets, in_if, out_if, src_as, dst_as, src_mask, dst_mask, next_hop, tcp_flags, tos, \
         vlan, etype, direction, traffic_direction, egress_path, exporter_name, exporter_site, in_if_name, \
         out_if_name, in_if_role, out_if_role, in_if_kind, out_if_kind, in_if_provider, out_if_provider, \
         src_internal, dst_internal, dst_cloud, rtt_client_us, rtt_server_us, rtt_app_us, rtt_source)
SELECT t, flow_end - bitShiftRight(h1, 48) % 120, flow_end, IPv4ToIPv6(toUInt32(3221225984 + e)),
    [0, 256, 0, 7][e], ['netflow9', 'ipfix', 'sflow5', 'ipfix'][e], sampling_rate,
    ['options', 'options', 'sflow', 'config_default'][e],
    if(outbound, host_address, remote_address), if(outbound, remote_address, host_address),
    if(outbound, ephemeral_port, service_port), if(outbound, service_port, ephemeral_port), proto,
    bytes, packets, if(outbound, internal_if, x), if(outbound, x, internal_if),
    if(outbound, 0, dst_as_number), if(outbound, dst_as_number, 0), 24, 24,
    IPv4ToIPv6(toUInt32(3221226084 + x)), if(proto = 6, 27, 0), 0, 0, 2048, 'ingress',
    if(outbound, 'outbound', 'inbound'), if(outbound, {paths}[p], ''), {names}[e], {sites}[e],
    if(outbound, internal_name, {if_names}[p]), if(outbound, {if_names}[p], internal_name),
    if(outbound, 'internal', 'external'), if(outbound, 'external', 'internal'),
    if(outbound, 'none', {kinds}[p]), if(outbound, {kinds}[p], 'none'),
    if(outbound, '', {providers}[p]), if(outbound, {providers}[p], ''),
    toUInt8(outbound), toUInt8(NOT outbound), if(outbound, cloud, ''),
    if(measured, toNullable(toUInt32(500 + bitShiftRight(h3, 44) % 5000)), NULL),
    if(measured AND e != 3, toNullable(toUInt32(8000 + 3000 * p + bitShiftRight(h3, 50) % 10000)), NULL),
    if(measured AND e != 3, toNullable(toUInt32(20000 + bitShiftRight(h2, 50) % 50000)), NULL),
    if(measured, if(e = 3, 'sflow_tcp_info', 'nprobe'), 'none')
FROM (
    SELECT n, t, h1, h2, h3, e, x, (e - 1) * 2 + x AS p, outbound, host, remote,
        t - bitShiftRight(h1, 40) % 30 AS flow_end, [1000, 1000, 512, 2000][e] AS sampling_rate,
        IPv4ToIPv6(toUInt32(167772160 + 256 * intDiv(host, 250) + host % 250 + 1)) AS host_address,
        IPv4ToIPv6(toUInt32(754974720 + remote * 13)) AS remote_address,
        toUInt32(1000 + remote % {AS_COUNT}) AS dst_as_number,
        if(remote % 10 = 0,
            ['aws/S3/eu-west-1', 'aws/EC2/us-east-1', 'gcp/storage', 'microsoft/office365'][intDiv(remote, 10) % 4 + 1],
            '') AS cloud,
        10 + bitShiftRight(h1, 9) % 2 AS internal_if, ['ae0', 'ae1'][internal_if - 9] AS internal_name,
        multiIf(h3 % 20 < 16, 6, h3 % 20 < 19, 17, 1) AS proto,
        toUInt16(32768 + bitShiftRight(h2, 32) % 28000) AS ephemeral_port,
        if(proto = 1, 0, [443, 443, 443, 443, 80, 80, 53, 22, 8443, 3306][bitShiftRight(h2, 28) % 10 + 1]) AS service_port,
        toUInt64(exp((bitShiftRight(h3, 8) % 1000) / 250)) AS packets,
        toUInt64(packets * (64 + bitShiftRight(h3, 20) % 1400)
            * (1 + 0.5 * sin(2 * pi() * (t % 86400) / 86400))
            * if(outbound AND host = {UPLOADER} AND t >= {end} - 1800, 50, 1)) AS bytes,
        outbound AND bitShiftRight(h3, 40) % 5 = 0 AS measured
    FROM (
        SELECT number + {offset} AS n, toUInt32({start} + intDiv(n * {SPAN_SECONDS}, {total})) AS t,
            intHash64(n) AS h1, intHash64(n + 1000000000000) AS h2, intHash64(n + 2000000000000) AS h3,
            if((h1 % {exporters}) + 1 = {SILENT_EXPORTER} AND t >= {end} - 600, 1, (h1 % {exporters}) + 1) AS e,
            1 + bitShiftRight(h1, 8) % 2 AS x, (h2 % 10) < 6 AS outbound,
            toUInt32(pow((bitShiftRight(h2, 8) % 1000) / 1000, 3) * {HOSTS}) AS host,
            toUInt32(pow((bitShiftRight(h2, 20) % 1000000) / 1000000, 2) * {DESTINATIONS}) AS remote
        FROM numbers({count})
    )
)"
    )
}

/// Per exporter and minute, from the flows: what the collector would have counted (NetFlow v9
/// and IPFIX about 25 records per datagram, sFlow 7), with edge3 losing 2 % to sequence gaps
/// and edge2 seeing a truncated datagram now and then.
fn exporter_stats_insert() -> String {
    format!(
        "INSERT INTO {DATABASE}.exporter_stats (minute, exporter_address, observation_domain, flow_type, \
         datagrams, records, records_lost, decode_error_kinds, decode_error_counts, templates_known)
SELECT minute, exporter_address, observation_domain, flow_type,
    intDiv(records, if(flow_type = 'sflow5', 7, 25)) + 1, records,
    if(exporter_address = IPv4ToIPv6(toUInt32(3221225987)), intDiv(records, 50), 0),
    if(exporter_address = IPv4ToIPv6(toUInt32(3221225986)) AND toMinute(minute) % 7 = 0, ['truncated'], emptyArrayString()),
    if(exporter_address = IPv4ToIPv6(toUInt32(3221225986)) AND toMinute(minute) % 7 = 0, [toUInt64(1)], emptyArrayUInt64()),
    if(flow_type = 'sflow5', 0, 4)
FROM (
    SELECT toStartOfMinute(time_received) AS minute, exporter_address, observation_domain, flow_type,
        count() AS records
    FROM {DATABASE}.flows
    GROUP BY minute, exporter_address, observation_domain, flow_type
)"
    )
}

/// The prober's results: every path, two targets (TCP and ICMP), every ten seconds; one
/// failure in 200, and every probe of one path failing in the last fifteen minutes.
fn probes_insert(arrays: &ModelArrays, end: u32) -> String {
    let start = end - SPAN_SECONDS;
    let paths = string_array(&arrays.path_labels);
    let path_count = arrays.path_labels.len();
    let rows = u64::from(SPAN_SECONDS / 10) * path_count as u64 * 2;
    let unreachable = UNREACHABLE_PATH + 1;
    format!(
        "INSERT INTO {DATABASE}.probes (time, path, target, method, rtt_us, success, error)
SELECT time, {paths}[p], ['198.51.100.53:443', '198.51.100.53'][m], ['tcp', 'icmp'][m],
    if(failed, NULL, toNullable(toUInt32(8000 + 3000 * p + intHash64(number) % 8000))),
    toUInt8(NOT failed), if(failed, 'timeout', '')
FROM (
    SELECT number, toUInt32({start} + intDiv(number, {}) * 10) AS time, number % {path_count} + 1 AS p,
        intDiv(number, {path_count}) % 2 + 1 AS m,
        intHash64(number + 7) % 200 = 0 OR (p = {unreachable} AND time >= {end} - 900) AS failed
    FROM numbers({rows})
)",
        path_count * 2
    )
}

/// Notification deliveries: a few hundred over the span, some retried, some failed.
fn deliveries_insert(end: u32) -> String {
    let start = end - SPAN_SECONDS;
    format!(
        "INSERT INTO {DATABASE}.alert_deliveries (time, receiver, kind, fingerprint, alertname, status, \
         attempt, http_status, outcome, error)
SELECT toUInt32({start} + number * 337), ['ops', 'pager'][number % 2 + 1], ['webhook', 'pagerduty'][number % 2 + 1],
    lower(hex(intHash64(number % 40))), ['utilisation', 'exfiltration', 'exporters', 'latency', 'egress-slo'][number % 5 + 1],
    ['firing', 'resolved'][intDiv(number, 2) % 2 + 1], number % 3 + 1,
    if(number % 11 = 0, 503, 200), if(number % 11 = 0, if(number % 3 = 2, 'failed', 'retrying'), 'delivered'),
    if(number % 11 = 0, 'HTTP 503', '')
FROM numbers(500)"
    )
}

/// Fills every table, printing the insert rate of each block of flows.
async fn load(
    client: &Client,
    ch: &ClickHouseConfig,
    model: &EgressModel,
    total: u64,
    end: u32,
    progress: &mut dyn Write,
) -> Result<LoadReport> {
    let arrays = ModelArrays::new(model)?;
    let started = Instant::now();
    let mut offset = 0;
    while offset < total {
        let count = BLOCK_ROWS.min(total - offset);
        let block = Instant::now();
        execute(client, &flows_insert(&arrays, offset, count, total, end)).await?;
        offset += count;
        writeln!(
            progress,
            "flows: {offset} of {total} ({:.0} rows/s this block, {:.0} rows/s so far)",
            count as f64 / block.elapsed().as_secs_f64(),
            offset as f64 / started.elapsed().as_secs_f64()
        )?;
    }
    let flows_time = started.elapsed();
    let rest = Instant::now();
    execute(client, &exporter_stats_insert()).await?;
    execute(client, &probes_insert(&arrays, end)).await?;
    execute(client, &deliveries_insert(end)).await?;
    let closing = ClickHouseConfig {
        query_timeout_seconds: 600,
        ..ch.clone()
    };
    let hours = close_hours(client, &closing, end).await?;
    writeln!(
        progress,
        "exporter_stats, probes, alert_deliveries filled; {hours} hour rollups closed in {:.1} s",
        rest.elapsed().as_secs_f64()
    )?;
    Ok(LoadReport {
        flows_time,
        rest_time: rest.elapsed(),
    })
}

/// Waits (up to five minutes) until the background merges of the load are done, as they
/// would be in production minutes after the rows arrived.
async fn settle_merges(client: &Client, progress: &mut dyn Write) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let merges: u64 = client
            .query("SELECT count() FROM system.merges")
            .fetch_one()
            .await?;
        if merges == 0 || Instant::now() > deadline {
            writeln!(progress, "merges running: {merges}")?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Bytes on disk and active parts of the tables of the benchmark's database matching
/// `condition`.
async fn table_size(client: &Client, condition: &str) -> Result<(u64, u64)> {
    let sql = format!(
        "SELECT toUInt64(sum(bytes_on_disk)), count() FROM system.parts \
         WHERE active AND database = '{DATABASE}' AND {condition}"
    );
    Ok(client.query_raw(&sql).fetch_one::<(u64, u64)>().await?)
}

/// One query to time: a dashboard's variable or panel query.
struct Timed {
    dashboard: String,
    title: String,
    sql: String,
}

/// Runs `sql` with `query_id`; returns the wall time and the rows of the answer.
async fn run_query(client: &Client, sql: &str, query_id: &str) -> Result<(Duration, Vec<String>)> {
    let started = Instant::now();
    let mut cursor = client
        .query_raw(sql)
        .with_setting("query_id", query_id)
        .fetch_bytes("TabSeparated")?;
    let body = cursor.collect().await.with_context(|| format!("{sql:.400}"))?;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&body);
    Ok((took, text.lines().map(str::to_owned).collect()))
}

/// The variables of `dashboard` for `[from, to]`: constants and custom/text variables at
/// their default, query variables run (and timed) and set to "All" as the dashboards ship.
async fn resolve_variables(
    client: &Client,
    dashboard: &Dashboard,
    context: &mut Context,
    timed: &mut Vec<Timed>,
) -> Result<()> {
    let uid = dashboard.uid().to_owned();
    for variable in dashboard.variables() {
        let name = variable["name"].as_str().unwrap_or_default().to_owned();
        let multi = variable["multi"].as_bool().unwrap_or(false);
        let current = || {
            let value = &variable["current"]["value"];
            match value.as_array() {
                Some(values) => values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                None => vec![value.as_str().unwrap_or_default().to_owned()],
            }
        };
        let resolved = match variable["type"].as_str().unwrap_or_default() {
            "constant" => Resolved {
                all: false,
                values: vec![variable["query"].as_str().unwrap_or_default().to_owned()],
                multi: false,
            },
            "custom" | "textbox" => Resolved {
                all: false,
                values: current(),
                multi,
            },
            "query" => {
                let raw = variable["query"].as_str().unwrap_or_default();
                let sql = grafana::expand(raw, context).map_err(|e| anyhow::anyhow!("{uid} ${name}: {e}"))?;
                let (_, rows) = run_query(client, &sql, &format!("bench-resolve-{}", unix_now())).await?;
                let options: Vec<String> = rows
                    .iter()
                    .map(|row| row.split('\t').next().unwrap_or_default().to_owned())
                    .collect();
                ensure!(!options.is_empty(), "{uid} ${name} has no option: {sql}");
                timed.push(Timed {
                    dashboard: uid.clone(),
                    title: format!("${name}"),
                    sql,
                });
                Resolved {
                    all: variable["includeAll"] == true,
                    values: if variable["includeAll"] == true {
                        options
                    } else {
                        options.into_iter().take(1).collect()
                    },
                    multi,
                }
            }
            other => bail!("{uid} ${name}: variable type {other} not handled"),
        };
        context.variables.insert(name, resolved);
    }
    Ok(())
}

/// A row of `system.query_log` for one finished query.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct LoggedQuery {
    query_id: String,
    read_rows: u64,
    read_bytes: u64,
    memory_usage: u64,
}

/// Times every variable and panel query of every dashboard over each of [`RANGES`].
async fn time_dashboards(
    client: &Client,
    end: u32,
    runs: usize,
    progress: &mut dyn Write,
) -> Result<Vec<PanelTiming>> {
    let dashboards = grafana::load_dashboards(&grafana::dashboards_dir())?;
    let mut timings = Vec::new();
    let mut query_ids: BTreeMap<usize, String> = BTreeMap::new();
    for (range, seconds) in RANGES {
        let mut planned = Vec::new();
        for dashboard in &dashboards {
            let mut context = Context {
                from: end - seconds,
                to: end,
                interval_s: grafana::interval_s(seconds, MAX_DATA_POINTS),
                variables: BTreeMap::new(),
            };
            resolve_variables(client, dashboard, &mut context, &mut planned).await?;
            for panel in dashboard.panels() {
                let title = panel["title"].as_str().unwrap_or_default();
                // A panel's own `maxDataPoints` lowers the points Grafana asks it for.
                let points = panel["maxDataPoints"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .map_or(MAX_DATA_POINTS, |p| p.min(MAX_DATA_POINTS));
                let context = Context {
                    interval_s: grafana::interval_s(seconds, points),
                    ..context.clone()
                };
                for target in panel["targets"].as_array().into_iter().flatten() {
                    let raw = target["rawSql"].as_str().unwrap_or_default();
                    let sql = grafana::expand(raw, &context)
                        .map_err(|e| anyhow::anyhow!("{} / {title}: {e}", dashboard.uid()))?;
                    planned.push(Timed {
                        dashboard: dashboard.uid().to_owned(),
                        title: title.to_owned(),
                        sql,
                    });
                }
            }
        }
        writeln!(
            progress,
            "{range}: {} dashboard queries, {runs} runs each",
            planned.len()
        )?;
        for query in planned {
            let mut times = Vec::with_capacity(runs);
            let mut rows = 0;
            for run in 0..runs {
                let query_id = format!("bench-{}-{range}-{}-{run}", unix_now(), timings.len());
                let (took, answer) = run_query(client, &query.sql, &query_id).await?;
                rows = answer.len();
                times.push((took, query_id));
            }
            times.sort();
            let (median, query_id) = times.swap_remove(times.len() / 2);
            query_ids.insert(timings.len(), query_id);
            timings.push(PanelTiming {
                dashboard: query.dashboard,
                title: query.title,
                range,
                median,
                rows,
                read_rows: 0,
                read_bytes: 0,
                memory_bytes: 0,
            });
        }
    }
    // The log is flushed every second. `type` 2 is QueryFinish (a number on 18.16, an enum later).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let logged: Vec<LoggedQuery> = client
        .query(
            "SELECT query_id, read_rows, read_bytes, toUInt64(memory_usage) FROM system.query_log \
             WHERE toInt8(type) = 2 AND query_id LIKE 'bench-%'",
        )
        .fetch_all()
        .await?;
    let by_id: BTreeMap<&str, &LoggedQuery> = logged.iter().map(|l| (l.query_id.as_str(), l)).collect();
    for (position, query_id) in &query_ids {
        if let (Some(timing), Some(logged)) = (timings.get_mut(*position), by_id.get(query_id.as_str())) {
            timing.read_rows = logged.read_rows;
            timing.read_bytes = logged.read_bytes;
            timing.memory_bytes = logged.memory_usage;
        }
    }
    timings.sort_by_key(|t| std::cmp::Reverse(t.median));
    Ok(timings)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// The report: load, SLA evaluation, the dashboard table (heaviest first) and the verdict.
pub fn render(report: &QueryReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "egress-bench query: {} flows over {} h, ClickHouse {}",
        report.flows,
        SPAN_SECONDS / 3600,
        report.server_version
    );
    match &report.load {
        Some(load) => {
            let _ = writeln!(
                text,
                "load: {} flows in {:.1} s ({:.0} rows/s, rollup views included); \
                 statistics, probes and hour rollups {:.1} s",
                report.flows,
                load.flows_time.as_secs_f64(),
                report.flows as f64 / load.flows_time.as_secs_f64(),
                load.rest_time.as_secs_f64()
            );
        }
        None => {
            let _ = writeln!(text, "load: kept data reused");
        }
    }
    let _ = writeln!(
        text,
        "on disk: flows {:.0} MiB ({:.1} bytes per flow, {} active parts), rollups {:.1} MiB",
        mib(report.flows_bytes),
        report.flows_bytes as f64 / report.flows.max(1) as f64,
        report.flows_parts,
        mib(report.rollup_bytes)
    );
    let mut times = report.sla_times.clone();
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let _ = writeln!(
        text,
        "\nSLA evaluation ({} SLAs, {} runs): min {:.2} s, median {:.2} s, max {:.2} s; {} results",
        report.slas.len(),
        times.len(),
        times.first().copied().unwrap_or_default().as_secs_f64(),
        median.as_secs_f64(),
        report.sla_max().as_secs_f64(),
        report.sla_results()
    );
    for sla in &report.slas {
        let _ = writeln!(
            text,
            "  {:<14} {:<16} {:>7.2} s  {:>4} ok {:>4} breach {:>4} no data",
            sla.name,
            sla.kind,
            sla.time.as_secs_f64(),
            sla.ok,
            sla.breach,
            sla.no_data
        );
    }
    let _ = writeln!(
        text,
        "\nDashboard queries, heaviest first (median wall time; read and memory from system.query_log):"
    );
    let _ = writeln!(
        text,
        "{:>8} {:>6} {:>12} {:>9} {:>8}  {:<5} {:<20} panel",
        "ms", "rows", "read rows", "read MiB", "mem MiB", "range", "dashboard"
    );
    for panel in &report.panels {
        let _ = writeln!(
            text,
            "{:>8.0} {:>6} {:>12} {:>9.1} {:>8.1}  {:<5} {:<20} {}",
            panel.median.as_secs_f64() * 1000.0,
            panel.rows,
            panel.read_rows,
            mib(panel.read_bytes),
            mib(panel.memory_bytes),
            panel.range,
            panel.dashboard,
            panel.title
        );
    }
    if let Some(heaviest) = report.panels.first() {
        let _ = writeln!(
            text,
            "\nheaviest panel: {} / {} over {}: {:.0} ms",
            heaviest.dashboard,
            heaviest.title,
            heaviest.range,
            heaviest.median.as_secs_f64() * 1000.0
        );
        let _ = writeln!(
            text,
            "{}: SLA evaluation max {:.2} s (bound {} s), heaviest panel {:.0} ms (bound {} ms)",
            if report.passes() { "PASS" } else { "FAIL" },
            report.sla_max().as_secs_f64(),
            SLA_BOUND.as_secs(),
            heaviest.median.as_secs_f64() * 1000.0,
            PANEL_BOUND.as_millis()
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_valid_and_has_eight_paths_with_capacities() {
        let file: ModelFile = toml::from_str(MODEL).unwrap();
        assert!(validate(&file.slas).is_empty(), "{:?}", validate(&file.slas));
        let model = EgressModel::from_parts(&file.model, &file.exporters, Vec::new());
        let arrays = ModelArrays::new(&model).unwrap();
        assert_eq!(arrays.path_labels.len(), 8);
        assert!(model.paths().iter().all(|p| p.capacity_bps.is_some()));
        assert_eq!(arrays.path_labels[3], "edge2 / et-0/0/2 (AWS Direct Connect)");
    }

    #[test]
    fn string_arrays_are_quoted() {
        assert_eq!(string_array(["a", "b'c"]), "['a', 'b\\'c']");
    }
}
