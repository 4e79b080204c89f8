//! Overload: the real `egress collector` process, offered several times what it can take, with
//! a real ClickHouse server (Debian's 18.16) behind it.
//!
//! Six sender threads blast NetFlow v5 datagrams (30 records each, sequence numbers counting
//! up) from their own loopback addresses for [`FLOOD`]: four inside
//! `collector.allowed_exporters` (one of them with a per-exporter record-rate limit), one
//! outside it. While they do, the test samples the collector's resident memory every 200 ms
//! and asks `/metrics` and `/health` every 200 ms. It checks that:
//!
//! - the peak resident memory (`VmHWM`) stays within the idle footprint plus
//!   `CollectorConfig::memory_bound_bytes` plus [`MEMORY_MARGIN`] (allocator slack, HTTP
//!   buffers, thread stacks);
//! - every `/metrics` and `/health` request is answered within a second;
//! - every datagram sent is received or dropped by the kernel (`/proc/net/udp`), exactly, and
//!   every record sent is stored in ClickHouse or counted in a drop counter by reason
//!   (`queue_full`, `rate_limit`, `not_allowed` datagrams, kernel drops), exactly;
//! - a normal-rate run right after stores every record with no new drop of any kind.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egress_collector::config::Config;
use egress_collector::simulate::encode::ExportClock;
use egress_collector::simulate::{self, Protocol, SimulateConfig, VirtualExporter};
use egress_testkit::clickhouse::ClickHouseServer;

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(12);
/// Datagrams per second each sender offers (30 records each).
const DATAGRAMS_PER_SECOND: u64 = 12_000;
/// Records per NetFlow v5 datagram.
const RECORDS_PER_DATAGRAM: u64 = 30;
/// Resident memory allowed above the idle footprint and the configured bound: allocator
/// slack (freed chunks kept by malloc arenas), HTTP and decoder buffers, thread stacks.
const MEMORY_MARGIN: u64 = 48 << 20;
/// Allowed senders: 127.0.0.100 to .103 (inside 127.0.0.96/28); .100 is rate limited.
const ALLOWED: [[u8; 4]; 4] = [
    [127, 0, 0, 100],
    [127, 0, 0, 101],
    [127, 0, 0, 102],
    [127, 0, 0, 103],
];
/// Outside the allow-list.
const REFUSED: [u8; 4] = [127, 0, 0, 120];

#[test]
fn overload_is_bounded_counted_and_recovers() {
    let server = ClickHouseServer::start().expect("ClickHouse server");
    let dir = tempfile::tempdir().expect("tempdir");
    let udp_port = free_udp_port();
    let metrics_address: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().expect("address");
    let config_path = dir.path().join("egress.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[collector]
listen = ["127.0.0.1:{udp_port}"]
workers = 2
receive_buffer_bytes = 1048576
metrics_listen = "{metrics_address}"
chunk_records = 1024
max_queue_bytes = 8388608
allowed_exporters = ["127.0.0.96/28"]
stats_interval_seconds = 1
[collector.max_records_per_second_by_exporter]
"127.0.0.100" = 20000

[batch]
max_rows = 10000
max_age_ms = 200

[clickhouse]
url = "{url}"
database = "overload"
"#,
            url = server.http_url()
        ),
    )
    .expect("config");
    let config = Config::load(Some(&config_path), Vec::new(), &[]).expect("the test's config is valid");
    let memory_bound = config.collector.memory_bound_bytes(&config.batch) as u64;

    let log = std::fs::File::create(dir.path().join("collector.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_egress"))
        .args(["collector", "--config"])
        .arg(&config_path)
        .env("EGRESS__SPOOL__DIR", dir.path().join("spool"))
        .env(
            "EGRESS__COLLECTOR__STATE_PATH",
            dir.path().join("collector-state.json"),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("egress collector");
    let mut collector = Collector {
        child,
        log: dir.path().join("collector.log"),
    };
    let pid = collector.child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(get(metrics_address, "/health").is_ok()
        && server
            .query_scalar("EXISTS TABLE overload.flows")
            .is_ok_and(|v| v == "1"))
    {
        assert!(
            Instant::now() < deadline,
            "collector not up: {}",
            collector.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the process settle (first inserts of nothing, lazy statics) before the idle reading.
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = status_kib(pid, "VmRSS:") * 1024;

    // The flood, with memory and endpoint probes running beside it.
    let target = SocketAddr::from(([127, 0, 0, 1], udp_port));
    let stop = Arc::new(AtomicBool::new(false));
    let rss_samples = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(status_kib(pid, "VmRSS:") * 1024);
                std::thread::sleep(Duration::from_millis(200));
            }
            samples
        })
    };
    let probes = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut failures = Vec::new();
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                for path in ["/metrics", "/health"] {
                    let started = Instant::now();
                    match get(metrics_address, path) {
                        Ok(_) => answered += 1,
                        Err(error) => failures.push(format!("{path}: {error}")),
                    }
                    slowest = slowest.max(started.elapsed());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (answered, slowest, failures)
        })
    };
    let flood_started = Instant::now();
    let senders: Vec<_> = ALLOWED
        .iter()
        .chain([&REFUSED])
        .map(|address| {
            let address = IpAddr::from(*address);
            std::thread::spawn(move || blast(address, target, FLOOD))
        })
        .collect();
    let sent: Vec<u64> = senders.into_iter().map(|s| s.join().expect("sender")).collect();
    let flood_seconds = flood_started.elapsed().as_secs_f64();
    let sent_datagrams: u64 = sent.iter().sum();

    // Drained: the sockets are read empty and every record decoded is written or dropped. The
    // wait is generous: inserting the flood's backlog (10,000-row batches into ClickHouse 18.16)
    // took 29.6 s on this 2-core machine, and a 30 s wait failed once in CI.
    let mut last = metrics(metrics_address);
    let drain_started = Instant::now();
    let deadline = drain_started + Duration::from_secs(90);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = metrics(metrics_address);
        let settled = now == last
            && accounted(&now) == value(&now, "egress_records_decoded_total{protocol=\"netflow5\"}");
        last = now;
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "collector did not drain: {}",
            collector.log_tail()
        );
    }
    println!(
        "drained in {:.1} s after the flood",
        drain_started.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    let rss_samples = rss_samples.join().expect("rss sampler");
    let (answered, slowest, failures) = probes.join().expect("probes");
    let peak_rss = status_kib(pid, "VmHWM:") * 1024;
    let kernel_drops = proc_udp_drops(udp_port);
    let after_flood = last;
    let stored: u64 = server
        .query_scalar("SELECT count() FROM overload.flows")
        .expect("count")
        .parse()
        .expect("number");

    let counter = |name: &str| value(&after_flood, name);
    let received = counter("egress_datagrams_received_total");
    let not_allowed = counter("egress_datagrams_dropped_total{reason=\"not_allowed\"}");
    let too_many = counter("egress_datagrams_dropped_total{reason=\"too_many_exporters\"}");
    let queue_full = counter("egress_records_dropped_total{reason=\"queue_full\"}");
    let rate_limit = counter("egress_records_dropped_total{reason=\"rate_limit\"}");
    let other_drops = counter("egress_records_dropped_total{reason=\"sink_rejected\"}")
        + counter("egress_records_dropped_total{reason=\"shutdown\"}");
    let decode_errors: u64 = after_flood
        .iter()
        .filter(|(k, _)| k.starts_with("egress_decode_errors_total"))
        .map(|(_, v)| *v)
        .sum();
    let max_rss = rss_samples.iter().copied().max().unwrap_or(0);
    eprintln!(
        "flood: {sent_datagrams} datagrams ({} records) in {flood_seconds:.1} s = {:.0} records/s offered\n\
         received {received} datagrams; dropped: kernel {kernel_drops}, not_allowed {not_allowed}, \
         too_many_exporters {too_many} (datagrams); queue_full {queue_full}, rate_limit {rate_limit} (records); \
         stored {stored} records\n\
         memory: idle {} MiB, peak {} MiB (VmHWM; highest sample {} MiB), bound {} MiB + margin {} MiB\n\
         endpoints: {answered} answers, slowest {slowest:?}, failures {failures:?}",
        sent_datagrams * RECORDS_PER_DATAGRAM,
        (sent_datagrams * RECORDS_PER_DATAGRAM) as f64 / flood_seconds,
        idle_rss >> 20,
        peak_rss >> 20,
        max_rss >> 20,
        memory_bound >> 20,
        MEMORY_MARGIN >> 20,
    );

    assert!(
        failures.is_empty() && slowest < Duration::from_secs(1),
        "endpoints: {failures:?}, slowest {slowest:?}"
    );
    assert!(
        answered >= 2 * FLOOD.as_secs(),
        "endpoints answered only {answered} times"
    );
    assert!(
        peak_rss <= idle_rss + memory_bound + MEMORY_MARGIN,
        "peak resident memory {} MiB above idle {} MiB + bound {} MiB + margin {} MiB",
        peak_rss >> 20,
        idle_rss >> 20,
        memory_bound >> 20,
        MEMORY_MARGIN >> 20
    );
    assert_eq!(
        sent_datagrams,
        received + kernel_drops,
        "every datagram sent was received or dropped by the kernel"
    );
    assert_eq!(decode_errors, 0);
    assert_eq!(other_drops, 0);
    assert_eq!(
        sent_datagrams * RECORDS_PER_DATAGRAM,
        stored + queue_full + rate_limit + RECORDS_PER_DATAGRAM * (kernel_drops + not_allowed + too_many),
        "every record sent is stored or counted by reason"
    );
    assert_eq!(stored, counter("egress_records_written_total"));
    assert!(kernel_drops > 0, "the flood must exceed what the collector takes");
    assert!(not_allowed > 0 && rate_limit > 0, "every control was exercised");

    // Throughput returns to normal: a normal-rate exporter right after loses nothing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime
        .block_on(simulate::run(
            SimulateConfig {
                target,
                protocol: Protocol::Ipfix,
                records_per_second: 3_000,
                exporters: 1,
                duration: Some(Duration::from_secs(3)),
                bind_base: Some(IpAddr::from([127, 0, 0, 104])),
                ..SimulateConfig::default()
            },
            simulate::CancellationToken::new(),
        ))
        .expect("simulator");
    let written_before = counter("egress_records_written_total");
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = metrics(metrics_address);
        if value(&now, "egress_records_written_total") >= written_before + report.flow_records() {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the normal run's {} records were not all written: {}",
            report.flow_records(),
            value(&now, "egress_records_written_total") - written_before
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        value(&after, "egress_records_written_total"),
        written_before + report.flow_records()
    );
    assert_eq!(
        proc_udp_drops(udp_port),
        kernel_drops,
        "no kernel drops after the flood"
    );
    for name in [
        "egress_records_dropped_total{reason=\"queue_full\"}",
        "egress_records_dropped_total{reason=\"rate_limit\"}",
    ] {
        assert_eq!(
            value(&after, name),
            value(&after_flood, name),
            "{name} after the flood"
        );
    }
    // The collector's own kernel drop gauge (read from /proc/net/udp every 5 s) agrees.
    let deadline = Instant::now() + Duration::from_secs(8);
    while value(&metrics(metrics_address), "egress_kernel_receive_drops") != kernel_drops {
        assert!(
            Instant::now() < deadline,
            "egress_kernel_receive_drops never reached {kernel_drops}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    collector.stop();
}

/// Sends copies of one NetFlow v5 datagram (30 records) from `source` to `target` at
/// [`DATAGRAMS_PER_SECOND`] for `duration`, the sequence number counting up by 30 each time.
/// Returns the datagrams the socket accepted.
fn blast(source: IpAddr, target: SocketAddr, duration: Duration) -> u64 {
    let config = SimulateConfig {
        target,
        protocol: Protocol::Netflow5,
        bind_base: Some(source),
        ..SimulateConfig::default()
    };
    let router = config.routers().remove(0);
    let mut exporter = VirtualExporter::new(router, &config);
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let clock = ExportClock {
        unix_ms,
        boot_unix_ms: unix_ms - 86_400_000,
    };
    let mut datagram = Vec::new();
    let summary = exporter
        .next_datagram(clock, RECORDS_PER_DATAGRAM as usize, &mut datagram)
        .expect("a datagram");
    assert_eq!(summary.summary.flow_records, RECORDS_PER_DATAGRAM);
    let socket = UdpSocket::bind(SocketAddr::new(source, 0)).expect("sender socket");
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut sequence: u32 = 0;
    while started.elapsed() < duration {
        let due = (started.elapsed().as_secs_f64() * DATAGRAMS_PER_SECOND as f64) as u64;
        while sent < due {
            // NetFlow v5 header: flow_sequence at bytes 16..20.
            datagram[16..20].copy_from_slice(&sequence.to_be_bytes());
            if socket.send_to(&datagram, target).is_ok() {
                sent += 1;
                sequence = sequence.wrapping_add(RECORDS_PER_DATAGRAM as u32);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// Records written or dropped by reason (what the collector has finished with).
fn accounted(metrics: &BTreeMap<String, u64>) -> u64 {
    value(metrics, "egress_records_written_total")
        + metrics
            .iter()
            .filter(|(k, _)| k.starts_with("egress_records_dropped_total{"))
            .map(|(_, v)| *v)
            .sum::<u64>()
}

fn value(metrics: &BTreeMap<String, u64>, name: &str) -> u64 {
    metrics.get(name).copied().unwrap_or(0)
}

/// The collector's counters and gauges, by series (`name{labels}`).
fn metrics(address: SocketAddr) -> BTreeMap<String, u64> {
    let body = get(address, "/metrics").expect("/metrics");
    body.lines()
        .filter(|l| l.starts_with("egress_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// One HTTP/1.0 GET with a one-second deadline on every step; the body.
fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: collector\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("").to_owned(),
        ));
    }
    Ok(body.to_owned())
}

/// A `kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Datagrams the kernel dropped on every socket bound to `port` (the collector's workers).
fn proc_udp_drops(port: u16) -> u64 {
    let text = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let local = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1)?.ends_with(&local)).then(|| fields.get(12)?.parse::<u64>().ok())?
        })
        .sum()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free UDP port")
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free TCP port")
        .port()
}

/// The collector process; killed if the test fails before stopping it.
struct Collector {
    child: Child,
    log: std::path::PathBuf,
}

impl Collector {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM (a clean shutdown) and wait.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
