//! The benchmark anyone can run (`egress-bench`): real exporters' streams replayed to Egress
//! and to its peers at stepped rates, on one machine, in one invocation.
//!
//! In: one stream pcap per protocol ([`streams`]: softflowd's IPFIX, NetFlow v9 and v5,
//! pmacctd's sFlow, generated from a traffic pcap, or read from a directory). For each
//! protocol and each collector that takes it ([`collectors`]: Egress with the null sink,
//! Egress writing to ClickHouse, nfcapd, nfacctd, sfacctd), a [`search`] replays the stream
//! ([`replay`]) at doubling then bisected rates, each run against a freshly started collector,
//! and counts what the collector stored. Out: a [`BenchReport`] — per protocol and collector
//! the highest rate with ≥ 99.9 % stored in every run, with datagrams/s, CPU and peak RSS
//! ([`procstat`]) — plus the direct ClickHouse ingest reference ([`direct`]), rendered side by
//! side by [`render`].
//!
//! The query side is [`query`] (`egress-bench query`): SLA evaluation and every dashboard query
//! timed over 100 M generated flows, against issue 7's bounds.

pub mod collectors;
pub mod direct;
pub mod procstat;
pub mod query;
pub mod replay;
pub mod search;
pub mod streams;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use egress_testkit::clickhouse::ClickHouseServer;

use collectors::{CollectorEnv, CollectorKind, RunningCollector, Unit};
use direct::DirectIngest;
use replay::ReplayPlan;
use search::{OtherCpu, RunResult, SearchConfig, SearchResult};
use streams::{Protocol, Stream};

/// The database Egress writes to in the benchmark's ClickHouse server.
const DATABASE: &str = "egress_bench";
/// Time given to nfcapd and pmacct to drain their socket after the last datagram.
const SETTLE: Duration = Duration::from_secs(1);
/// Insert streams direct ingest is measured on: one, and two as Egress's default
/// `batch.inserts_in_flight`. The ClickHouse sink's ratio is printed against each; the CPU split
/// beside it is the faster one's.
pub const DIRECT_STREAMS: [usize; 2] = [1, 2];

/// The fastest of the direct ingest measurements.
fn fastest(measured: &[DirectIngest]) -> Option<&DirectIngest> {
    measured
        .iter()
        .max_by(|a, b| a.rows_per_second().total_cmp(&b.rows_per_second()))
}

/// Rows per direct insert: Egress's default `batch.max_rows`.
const DIRECT_BATCH_ROWS: usize = 100_000;

/// Everything one invocation does.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Where the stream pcaps are (missing ones are generated there); a temporary directory
    /// when `None`.
    pub streams_dir: Option<PathBuf>,
    pub protocols: Vec<Protocol>,
    pub collectors: Vec<CollectorKind>,
    /// Length of one run.
    pub duration: Duration,
    pub search: SearchConfig,
    pub senders: usize,
    pub sources_per_sender: usize,
    /// The `egress` binary.
    pub egress: PathBuf,
    /// Extra `--set KEY=VALUE` for Egress.
    pub egress_sets: Vec<String>,
    /// Measure direct ClickHouse ingest (needs `egress-clickhouse`).
    pub direct: bool,
}

impl BenchConfig {
    /// The full procedure: 20-second runs, two per rate, four bisections, every protocol and
    /// collector. Takes hours on a small machine; narrow it with the options.
    pub fn full(egress: PathBuf) -> Self {
        Self {
            streams_dir: None,
            protocols: Protocol::ALL.to_vec(),
            collectors: CollectorKind::ALL.to_vec(),
            duration: Duration::from_secs(20),
            search: SearchConfig {
                start_rate: 100_000.0,
                max_rate: 20e6,
                runs_per_point: 2,
                bisect_steps: 4,
                threshold: 0.999,
            },
            senders: 2,
            // Sixteen exporters in all. Egress spreads exporters over its receive workers by the
            // kernel's SO_REUSEPORT hash (an exporter's datagrams stay on one worker, with its
            // templates); with four exporters the hash put all of them on one worker in one run
            // out of eight, and that run measured one core, not the collector. An edge network
            // has more exporters than that; the peers have one socket and do not care.
            sources_per_sender: 8,
            egress,
            egress_sets: Vec::new(),
            direct: true,
        }
    }

    /// A few minutes: IPFIX and sFlow only, 2-second runs, one run per rate, one bisection.
    /// Figures are rough (short runs hide slow leaks of buffer space), the procedure is the same.
    pub fn quick(egress: PathBuf) -> Self {
        Self {
            protocols: vec![Protocol::Ipfix, Protocol::Sflow5],
            duration: Duration::from_secs(2),
            search: SearchConfig {
                start_rate: 200_000.0,
                max_rate: 20e6,
                runs_per_point: 1,
                bisect_steps: 1,
                threshold: 0.999,
            },
            ..Self::full(egress)
        }
    }
}

/// One protocol × collector search.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub protocol: Protocol,
    pub collector: CollectorKind,
    pub result: SearchResult,
}

/// What one invocation measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub measurements: Vec<Measurement>,
    /// Direct ClickHouse ingest of each protocol's rows, as Egress makes them, on each number
    /// of insert streams in [`DIRECT_STREAMS`].
    pub direct: BTreeMap<Protocol, Vec<DirectIngest>>,
    /// Records per datagram and datagrams of each stream.
    pub streams: BTreeMap<Protocol, (f64, usize)>,
    pub duration: Duration,
    pub runs_per_point: usize,
}

/// Runs the benchmark; progress (one line per run) goes to `progress`.
pub fn run(config: &BenchConfig, progress: &mut dyn Write) -> Result<BenchReport> {
    let temporary = tempfile::tempdir()?;
    let dir = config
        .streams_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let missing: Vec<Protocol> = config
        .protocols
        .iter()
        .copied()
        .filter(|p| !dir.join(p.file_name()).exists())
        .collect();
    if !missing.is_empty() {
        writeln!(progress, "generating streams {missing:?} in {}", dir.display())?;
        streams::generate(&dir, &missing)?;
    }
    let clickhouse = if config.collectors.contains(&CollectorKind::EgressClickhouse) {
        writeln!(progress, "starting ClickHouse")?;
        Some(ClickHouseServer::start().context("starting ClickHouse")?)
    } else {
        None
    };
    let env = CollectorEnv {
        egress: config.egress.clone(),
        clickhouse_url: clickhouse.as_ref().map(ClickHouseServer::http_url),
        clickhouse_pid: clickhouse.as_ref().and_then(ClickHouseServer::pid),
        database: DATABASE.to_owned(),
        egress_sets: config.egress_sets.clone(),
    };
    let mut report = BenchReport {
        measurements: Vec::new(),
        direct: BTreeMap::new(),
        streams: BTreeMap::new(),
        duration: config.duration,
        runs_per_point: config.search.runs_per_point,
    };
    for &protocol in &config.protocols {
        let stream = Arc::new(Stream::load(&dir.join(protocol.file_name()), protocol)?);
        writeln!(
            progress,
            "{protocol}: {} datagrams from {}, {:.1} records per datagram",
            stream.datagrams.len(),
            protocol.exporter(),
            stream.records_per_datagram()
        )?;
        report
            .streams
            .insert(protocol, (stream.records_per_datagram(), stream.datagrams.len()));
        for &kind in config.collectors.iter().filter(|k| k.accepts(protocol)) {
            let result = search::search(&config.search, |rate| {
                if kind == CollectorKind::EgressClickhouse {
                    if let Some(server) = &clickhouse {
                        // Each run starts on an empty table, so merges of earlier runs do not
                        // weigh on it. Absent before Egress's first start: nothing to empty.
                        let _ = server.query_scalar(&format!("TRUNCATE TABLE {DATABASE}.flows"));
                    }
                }
                let run = run_once(kind, &stream, rate, config, &env)?;
                let (sender, server) = run.other_cores();
                writeln!(
                    progress,
                    "  {protocol} {kind}: asked {:>9.0} rec/s, sent {:>9.0} rec/s ({:>7.0} dgram/s), \
                     stored {:>7.3}% ({} of {}), CPU {:.2} cores (beside it: sender {sender:.2}{}), peak RSS {:.0} MiB{}{}",
                    rate,
                    run.sent.records_per_second(),
                    run.sent.datagrams_per_second(),
                    run.stored_fraction() * 100.0,
                    run.stored,
                    run.expected,
                    run.cpu_cores(),
                    server.map_or(String::new(), |c| format!(", ClickHouse {c:.2}")),
                    run.usage.peak_rss_bytes as f64 / f64::from(1 << 20),
                    if run.loss_note.is_empty() { "" } else { "; " },
                    run.loss_note,
                )?;
                Ok(run)
            })?;
            report.measurements.push(Measurement {
                protocol,
                collector: kind,
                result,
            });
        }
        // The reference for this protocol's ClickHouse sink: the same server ingesting the
        // same rows (this protocol's, as Egress makes them), so that each ratio compares like
        // with like; rows differ in cost between protocols (README, "Performance").
        if let (true, Some(server)) = (config.direct, &clickhouse) {
            let batch = direct::egress_rows(
                &stream,
                config.senders * config.sources_per_sender,
                DIRECT_BATCH_ROWS,
            )?;
            for streams in DIRECT_STREAMS {
                let direct = direct::measure(
                    server.http_port(),
                    server.pid(),
                    &batch,
                    config.duration.max(Duration::from_secs(2)),
                    streams,
                )?;
                writeln!(
                    progress,
                    "  {protocol} direct on {streams} insert stream(s): {:.0} rows/s, ClickHouse {}",
                    direct.rows_per_second(),
                    direct
                        .server_cores()
                        .map_or("-".to_owned(), |c| format!("{c:.2} cores")),
                )?;
                report.direct.entry(protocol).or_default().push(direct);
            }
        }
    }
    Ok(report)
}

/// One run: a fresh collector, the stream at `rate` for the configured time, then the count.
fn run_once(
    kind: CollectorKind,
    stream: &Arc<Stream>,
    rate: f64,
    config: &BenchConfig,
    env: &CollectorEnv,
) -> Result<RunResult> {
    let mut collector = RunningCollector::start(kind, env)?;
    // The ClickHouse server's CPU counts for the ClickHouse sink only (it idles otherwise).
    let server_pid = env
        .clickhouse_pid
        .filter(|_| kind == CollectorKind::EgressClickhouse);
    let server_cpu = || server_pid.and_then(procstat::process_cpu_seconds);
    let sender_cpu = || procstat::process_cpu_seconds(std::process::id()).unwrap_or(0.0);
    let before = procstat::group_usage(collector.group());
    let others_before = (sender_cpu(), server_cpu());
    let plan = ReplayPlan {
        target: collector.listen_addr(),
        records_per_second: rate,
        duration: config.duration,
        senders: config.senders,
        sources_per_sender: config.sources_per_sender,
    };
    let sent = replay::replay(stream, &plan)?;
    let expected = match kind.unit() {
        Unit::Records => sent.records,
        Unit::Packets => sent.packets,
    };
    let mut loss_note = String::new();
    let (stored, after) = if kind.is_egress() {
        // Egress's count comes from the living process; its CPU is read once it has caught up.
        let stored = collector.finish(expected)?;
        if stored < expected {
            loss_note = collector.loss_note();
        }
        if let Some(inserts) = collector.insert_note() {
            loss_note = if loss_note.is_empty() {
                inserts
            } else {
                format!("{inserts}; {loss_note}")
            };
        }
        (stored, procstat::group_usage(collector.group()))
    } else {
        std::thread::sleep(SETTLE);
        let after = procstat::group_usage(collector.group());
        (collector.finish(expected)?, after)
    };
    let others = OtherCpu {
        sender_seconds: (sender_cpu() - others_before.0).max(0.0),
        server_seconds: server_cpu()
            .zip(others_before.1)
            .map(|(after, before)| (after - before).max(0.0)),
    };
    Ok(RunResult {
        asked_rate: rate,
        sent,
        stored,
        expected,
        usage: procstat::Usage {
            cpu_seconds: (after.cpu_seconds - before.cpu_seconds).max(0.0),
            peak_rss_bytes: after.peak_rss_bytes,
        },
        loss_note,
        others,
    })
}

/// The reference peer of a protocol's ratios.
fn reference(protocol: Protocol) -> CollectorKind {
    if protocol.is_sflow() {
        CollectorKind::Sfacctd
    } else {
        CollectorKind::Nfcapd
    }
}

/// The report as a table, one line per protocol × collector, with ratios to the reference peer
/// (nfcapd for NetFlow/IPFIX, sfacctd for sFlow) and, for the ClickHouse sink, to direct ingest.
pub fn render(report: &BenchReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Highest rate with >= 99.9% stored in every run ({} run(s) of {} s per rate)\n",
        report.runs_per_point,
        report.duration.as_secs_f64()
    );
    let _ = writeln!(
        text,
        "{:<9} {:<18} {:>11} {:>11} {:>9} {:>9} {:>9} {:>8}",
        "protocol", "collector", "records/s", "datagram/s", "CPU", "peak RSS", "stored", "vs peer"
    );
    for m in &report.measurements {
        let reference_rate = report
            .measurements
            .iter()
            .find(|r| r.protocol == m.protocol && r.collector == reference(m.protocol))
            .and_then(|r| r.result.best.as_ref())
            .map(search::Point::records_per_second);
        match &m.result.best {
            Some(best) => {
                let rate = best.records_per_second();
                let ratio = reference_rate.map_or("-".to_owned(), |r| format!("{:.2}", rate / r));
                let bound = if m.result.sender_limited { ">=" } else { "" };
                let _ = writeln!(
                    text,
                    "{:<9} {:<18} {:>11} {:>11.0} {:>9.2} {:>5.0} MiB {:>8.2}% {:>8}",
                    m.protocol.name(),
                    m.collector.name(),
                    format!("{bound}{rate:.0}"),
                    best.datagrams_per_second(),
                    best.cpu_cores(),
                    best.peak_rss_bytes() as f64 / f64::from(1 << 20),
                    best.stored_fraction() * 100.0,
                    ratio,
                );
            }
            None => {
                let _ = writeln!(
                    text,
                    "{:<9} {:<18} {:>11}",
                    m.protocol.name(),
                    m.collector.name(),
                    "none passed"
                );
            }
        }
    }
    let _ = writeln!(text);
    for (protocol, (per_datagram, datagrams)) in &report.streams {
        let _ = writeln!(
            text,
            "{protocol} stream: {} ({datagrams} datagrams, {per_datagram:.1} records per datagram)",
            protocol.exporter()
        );
    }
    if !report.direct.is_empty() {
        let _ = writeln!(
            text,
            "\ndirect ClickHouse ingest of each protocol's rows as Egress makes them (RowBinary over HTTP, \
             {DIRECT_BATCH_ROWS} rows per insert, one after another on each stream, into flows with its rollup views):"
        );
        for m in report
            .measurements
            .iter()
            .filter(|m| m.collector == CollectorKind::EgressClickhouse)
        {
            let Some(measured) = report.direct.get(&m.protocol) else {
                continue;
            };
            let Some(direct) = fastest(measured) else {
                continue;
            };
            let each: Vec<String> = measured
                .iter()
                .map(|d| {
                    format!(
                        "{:.0} rows/s on {} insert stream(s)",
                        d.rows_per_second(),
                        d.streams
                    )
                })
                .collect();
            let _ = writeln!(text, "  {}: {}", m.protocol, each.join(", "));
            if let Some(best) = &m.result.best {
                let ratios: Vec<String> = measured
                    .iter()
                    .map(|d| {
                        format!(
                            "{:.2} of {} stream(s)",
                            best.records_per_second() / d.rows_per_second(),
                            d.streams
                        )
                    })
                    .collect();
                let _ = writeln!(
                    text,
                    "  egress-clickhouse {} / direct ingest: {}",
                    m.protocol,
                    ratios.join(", ")
                );
                let (sender, server) = best.other_cores();
                let _ = writeln!(
                    text,
                    "    CPU at {:.0} records/s: Egress {:.2} cores, ClickHouse {}, sender {sender:.2} cores \
                     (direct ingest on {} stream(s): ClickHouse {})",
                    best.records_per_second(),
                    best.cpu_cores(),
                    server.map_or("-".to_owned(), |c| format!("{c:.2} cores")),
                    direct.streams,
                    direct.server_cores().map_or("-".to_owned(), |c| format!("{c:.2} cores")),
                );
            }
        }
    }
    let _ = writeln!(
        text,
        "\nnfacctd and sfacctd are counted in packets (sFlow: samples) of the records they \
         accounted; the others in records."
    );
    text
}
