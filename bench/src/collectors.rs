//! Collectors under test: Egress (null sink or ClickHouse), nfcapd, nfacctd and sfacctd, each
//! started fresh for one run on a free loopback port, asked for the same 4 MiB socket receive
//! buffer, and counted after the run by what it stored.
//!
//! How each one is counted:
//! - Egress: `egress_records_written_total` from its /metrics (the null sink counts a batch as
//!   written when it would have been inserted; the ClickHouse sink when ClickHouse acknowledged
//!   the insert). Polled until it reaches the expected count or stops growing.
//! - nfcapd (nfdump 1.7): SIGTERM makes it write its file; `nfdump -R DIR -I` prints the
//!   file's statistics record, whose `Flows:` line is the number of records stored.
//! - nfacctd / sfacctd (pmacct 1.7): the print plugin writes CSV aggregated on the 5-tuple
//!   (the `flows` counter is not printed for NetFlow by pmacct 1.7); SIGINT purges its cache.
//!   With sampling off and no renormalisation, the PACKETS column sums to the packets of the
//!   records accounted (nfacctd) or to the flow samples accounted (sfacctd, one packet each),
//!   so these two are compared in packets, not records.
//!
//! Every collector leads its own process group, killed on drop.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use egress_testkit::exporters::{free_tcp_port, free_udp_port};
use tempfile::TempDir;

use crate::streams::Protocol;

/// Socket receive buffer every collector asks for (the machine's `net.core.rmem_max`).
pub const RECEIVE_BUFFER: usize = 4 << 20;
/// How long a collector may take to start or stop.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Egress: how long the written counter must stand still before the run is counted. Longer
/// than `batch.max_age_ms` (1 s), so a partial batch still waiting is not missed.
const EGRESS_QUIET: Duration = Duration::from_millis(2500);
/// Egress: what is written within this time after the end of sending counts. A collector that
/// keeps up has everything written within `batch.max_age_ms` (1 s) plus one insert; what it
/// writes later was a backlog (in its queue or its disk spool) that a longer run would only
/// have grown, so it is not a rate it sustains. (The other collectors are counted 1 s after
/// the end of sending.)
const EGRESS_GRACE: Duration = Duration::from_secs(3);

/// The collectors the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CollectorKind {
    EgressNull,
    EgressClickhouse,
    Nfcapd,
    Nfacctd,
    Sfacctd,
}

impl CollectorKind {
    pub const ALL: [CollectorKind; 5] = [
        Self::EgressNull,
        Self::EgressClickhouse,
        Self::Nfcapd,
        Self::Nfacctd,
        Self::Sfacctd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::EgressNull => "egress-null",
            Self::EgressClickhouse => "egress-clickhouse",
            Self::Nfcapd => "nfcapd",
            Self::Nfacctd => "nfacctd",
            Self::Sfacctd => "sfacctd",
        }
    }

    /// Whether this collector takes `protocol`.
    pub fn accepts(self, protocol: Protocol) -> bool {
        match self {
            Self::EgressNull | Self::EgressClickhouse => true,
            Self::Nfcapd | Self::Nfacctd => !protocol.is_sflow(),
            Self::Sfacctd => protocol.is_sflow(),
        }
    }

    /// What [`RunningCollector::finish`] counts.
    pub fn unit(self) -> Unit {
        match self {
            Self::Nfacctd | Self::Sfacctd => Unit::Packets,
            Self::EgressNull | Self::EgressClickhouse | Self::Nfcapd => Unit::Records,
        }
    }

    pub fn is_egress(self) -> bool {
        matches!(self, Self::EgressNull | Self::EgressClickhouse)
    }
}

impl fmt::Display for CollectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CollectorKind {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.name() == text).ok_or_else(|| {
            format!("unknown collector {text:?} (egress-null, egress-clickhouse, nfcapd, nfacctd, sfacctd)")
        })
    }
}

/// What a collector's count is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Records,
    /// Packets of the records (sFlow: flow samples, one packet each).
    Packets,
}

/// What every collector start needs to know.
#[derive(Debug, Clone)]
pub struct CollectorEnv {
    /// The `egress` binary.
    pub egress: PathBuf,
    /// ClickHouse HTTP URL for `egress-clickhouse`.
    pub clickhouse_url: Option<String>,
    /// That server's process id, for its share of the CPU.
    pub clickhouse_pid: Option<u32>,
    /// Database Egress writes to.
    pub database: String,
    /// Extra `--set KEY=VALUE` for Egress (for example `collector.workers=2`).
    pub egress_sets: Vec<String>,
}

/// A collector started for one run.
#[derive(Debug)]
pub struct RunningCollector {
    kind: CollectorKind,
    child: Child,
    listen: SocketAddr,
    /// Egress's /metrics address.
    metrics: Option<SocketAddr>,
    /// nfcapd's flow directory or pmacct's CSV output.
    output: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl RunningCollector {
    /// Starts `kind` on a free loopback port and waits until it receives.
    pub fn start(kind: CollectorKind, env: &CollectorEnv) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("egress-bench-").tempdir()?;
        let port = free_udp_port()?;
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.path().join(format!("{}.log", kind.name()));
        let mut metrics = None;
        let (mut command, output) = match kind {
            CollectorKind::EgressNull | CollectorKind::EgressClickhouse => {
                let address = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
                metrics = Some(address);
                let mut command = Command::new(&env.egress);
                command
                    .arg("collector")
                    .env("EGRESS__SPOOL__DIR", dir.path().join("spool"))
                    .args(["--log", "warn"])
                    .args(["--listen", &listen.to_string()])
                    .args(["--metrics-listen", &address.to_string()])
                    .args([
                        "--set",
                        &format!("collector.receive_buffer_bytes={RECEIVE_BUFFER}"),
                    ])
                    // One receive worker per core, as a deployment at these rates runs it
                    // (README, "Performance"); `--egress-set collector.workers=1` measures one.
                    .args(["--set", &format!("collector.workers={}", cores())]);
                if kind == CollectorKind::EgressNull {
                    command.args(["--sink", "null"]);
                } else {
                    let url = env
                        .clickhouse_url
                        .as_deref()
                        .context("egress-clickhouse needs a ClickHouse server")?;
                    command
                        .args(["--sink", "clickhouse"])
                        .args(["--clickhouse-url", url])
                        .args(["--database", &env.database]);
                }
                for set in &env.egress_sets {
                    command.args(["--set", set]);
                }
                (command, dir.path().join("unused"))
            }
            CollectorKind::Nfcapd => {
                let flows = dir.path().join("flows");
                fs::create_dir(&flows)?;
                let mut command = Command::new("nfcapd");
                command.arg("-w").arg(&flows).args([
                    "-p",
                    &port.to_string(),
                    "-b",
                    "127.0.0.1",
                    "-B",
                    &RECEIVE_BUFFER.to_string(),
                ]);
                (command, flows)
            }
            CollectorKind::Nfacctd | CollectorKind::Sfacctd => {
                let daemon = if kind == CollectorKind::Nfacctd {
                    "nfacctd"
                } else {
                    "sfacctd"
                };
                let csv = dir.path().join("flows.csv");
                let config = format!(
                    "daemonize: false\n\
                     {daemon}_ip: 127.0.0.1\n\
                     {daemon}_port: {port}\n\
                     {daemon}_pipe_size: {RECEIVE_BUFFER}\n\
                     {daemon}_renormalize: false\n\
                     plugins: print[out]\n\
                     aggregate[out]: src_host,dst_host,proto,src_port,dst_port\n\
                     print_output[out]: csv\n\
                     print_output_file[out]: {csv}\n\
                     print_output_file_append[out]: true\n\
                     print_refresh_time[out]: 1\n",
                    csv = csv.display(),
                );
                let config_path = dir.path().join(format!("{daemon}.conf"));
                fs::write(&config_path, config)?;
                let mut command = Command::new(daemon);
                command.arg("-f").arg(&config_path);
                (command, csv)
            }
        };
        let out = fs::File::create(&log)?;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {kind} (is it installed?)"))?;
        let mut collector = Self {
            kind,
            child,
            listen,
            metrics,
            output,
            log,
            dir,
        };
        collector.wait_ready()?;
        Ok(collector)
    }

    pub fn kind(&self) -> CollectorKind {
        self.kind
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The process group (= the leader's pid) for [`crate::procstat::group_usage`].
    pub fn group(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let ready = match self.metrics {
                Some(_) => self.egress_written().is_some(),
                // Someone (the collector) holds the port when our own bind fails.
                None => UdpSocket::bind(self.listen).is_err(),
            };
            if ready {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status}: {}", self.kind, self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("{} did not start: {}", self.kind, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the collector once it has processed what it received, and counts what it stored
    /// (in [`CollectorKind::unit`]). `expected` lets Egress's wait end early.
    pub fn finish(&mut self, expected: u64) -> Result<u64> {
        match self.kind {
            CollectorKind::EgressNull | CollectorKind::EgressClickhouse => Ok(self.wait_egress(expected)),
            CollectorKind::Nfcapd => {
                self.stop("TERM")?;
                nfdump_flows(&self.output)
            }
            CollectorKind::Nfacctd | CollectorKind::Sfacctd => {
                self.stop("INT")?;
                let csv = fs::read_to_string(&self.output).unwrap_or_default();
                pmacct_packets(&csv)
            }
        }
    }

    fn wait_egress(&self, expected: u64) -> u64 {
        let deadline = Instant::now() + EGRESS_GRACE;
        let (mut last, mut since) = (0, Instant::now());
        loop {
            let written = self.egress_written().unwrap_or(last);
            if written >= expected || Instant::now() > deadline {
                return written;
            }
            if written != last {
                (last, since) = (written, Instant::now());
            } else if since.elapsed() > EGRESS_QUIET {
                return written;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `egress_records_written_total`, or `None` while /metrics does not answer.
    fn egress_written(&self) -> Option<u64> {
        metric_sum(&self.egress_metrics()?, "egress_records_written_total")
    }

    /// Egress's /metrics text, or `None` while it does not answer.
    fn egress_metrics(&self) -> Option<String> {
        let address = self.metrics?;
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response.split_once("\r\n\r\n")?.1.to_owned())
    }

    /// Where Egress lost what it did not store, from its metrics: datagrams the kernel dropped
    /// on its sockets, records dropped by reason. Empty for the other collectors.
    pub fn loss_note(&self) -> String {
        let Some(body) = self.egress_metrics() else {
            return String::new();
        };
        let mut note = format!(
            "kernel drops {} datagrams",
            metric_sum(&body, "egress_kernel_receive_drops").unwrap_or(0)
        );
        for line in body
            .lines()
            .filter(|l| l.starts_with("egress_records_dropped_total{"))
        {
            if let Some((labels, value)) = line.rsplit_once(' ') {
                if value != "0" {
                    let reason = labels.trim_start_matches("egress_records_dropped_total");
                    note.push_str(&format!(", dropped {reason} {value} records"));
                }
            }
        }
        if let Some(spooled) = metric_sum(&body, "egress_records_spooled_total").filter(|s| *s > 0) {
            note.push_str(&format!(", {spooled} records spooled (backlog)"));
        }
        note
    }

    /// How long Egress's inserts took, from its metrics: "N inserts, mean X ms". `None` for the
    /// other collectors and for Egress's null sink.
    pub fn insert_note(&self) -> Option<String> {
        if self.kind != CollectorKind::EgressClickhouse {
            return None;
        }
        let body = self.egress_metrics()?;
        let value = |name: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        };
        let count = value("egress_sink_insert_seconds_count").filter(|c| *c > 0.0)?;
        let sum = value("egress_sink_insert_seconds_sum")?;
        Some(format!("{count:.0} inserts, mean {:.0} ms", sum / count * 1000.0))
    }

    /// Signals the process and waits for it to exit.
    fn stop(&mut self, signal: &str) -> Result<()> {
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .context("running kill")?;
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("{} did not stop on SIG{signal}: {}", self.kind, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // pmacct's plugins write their last purge after the core exits.
        if matches!(self.kind, CollectorKind::Nfacctd | CollectorKind::Sfacctd) {
            wait_group_gone(self.child.id(), PROCESS_TIMEOUT);
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// The collector's working directory (logs, output), for debugging.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RunningCollector {
    fn drop(&mut self) {
        egress_testkit::exporters::kill_process_group(&mut self.child);
    }
}

/// Waits until no living process of `group` is left (zombies aside).
fn wait_group_gone(group: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let alive = fs::read_dir("/proc")
            .map(|entries| {
                entries.flatten().any(|entry| {
                    let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                    let Some(after) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
                        return false;
                    };
                    let fields: Vec<&str> = after.split_whitespace().collect();
                    fields.first() != Some(&"Z") && fields.get(2) == Some(&group.to_string().as_str())
                })
            })
            .unwrap_or(false);
        if !alive {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sum of a Prometheus counter over its labels, from text exposition.
pub fn metric_sum(body: &str, name: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut found = false;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        total += value as u64;
        found = true;
    }
    found.then_some(total)
}

/// Records stored by nfcapd in `dir`, from `nfdump -R DIR -I` ("Flows: N").
fn nfdump_flows(dir: &Path) -> Result<u64> {
    let output = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .arg("-I")
        .output()
        .context("running nfdump")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "nfdump -I failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_nfdump_info(&text).with_context(|| format!("no Flows line in nfdump -I output: {text}"))
}

/// The sum of the `Flows:` lines (one per file when a run spans nfcapd's 5-minute rotation).
fn parse_nfdump_info(text: &str) -> Option<u64> {
    let counts: Vec<u64> = text
        .lines()
        .filter_map(|line| line.strip_prefix("Flows:"))
        .filter_map(|value| value.trim().parse().ok())
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// Sum of the PACKETS column of pmacct print-plugin CSV (appended purges, each with a header).
fn pmacct_packets(csv: &str) -> Result<u64> {
    let mut total = 0u64;
    let mut column: Option<usize> = None;
    for line in csv.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        if let Some(at) = fields.iter().position(|f| *f == "PACKETS") {
            column = Some(at);
            continue;
        }
        let at = column.context("pmacct CSV without a header line")?;
        let value = fields.get(at).with_context(|| format!("short line {line:?}"))?;
        total += value
            .trim()
            .parse::<u64>()
            .with_context(|| format!("bad number in {line:?}"))?;
    }
    Ok(total)
}

/// Cores of this machine (the receive workers Egress is run with).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_counter_over_its_labels() {
        let body = "# TYPE egress_records_written_total counter\n\
                    egress_records_written_total 12\n\
                    egress_records_written_totalx 5\n\
                    egress_records_decoded_total{protocol=\"ipfix\"} 7\n\
                    egress_records_decoded_total{protocol=\"sflow\"} 3\n";
        assert_eq!(metric_sum(body, "egress_records_written_total"), Some(12));
        assert_eq!(metric_sum(body, "egress_records_decoded_total"), Some(10));
        assert_eq!(metric_sum(body, "egress_records_dropped_total"), None);
    }

    #[test]
    fn reads_nfdump_statistics() {
        let info = "Ident: none\nFlows: 123456\nFlows_tcp: 100000\nPackets: 9\n";
        assert_eq!(parse_nfdump_info(info), Some(123456));
        assert_eq!(parse_nfdump_info("Flows_tcp: 4\n"), None);
        assert_eq!(parse_nfdump_info("Flows: 3\nFlows_tcp: 1\nFlows: 4\n"), Some(7));
    }

    #[test]
    fn sums_pmacct_packets() {
        let csv = "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES\n\
                   10.0.1.1,198.51.100.1,20000,443,tcp,2,116\n\
                   SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES\n\
                   10.0.1.2,198.51.100.2,20001,80,tcp,9,522\n";
        assert_eq!(pmacct_packets(csv).unwrap(), 11);
        assert!(pmacct_packets("1,2\n").is_err());
    }
}
