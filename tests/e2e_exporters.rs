//! End to end with real exporters: a generated traffic pcap is replayed by softflowd (NetFlow
//! v5, v9, IPFIX) or pmacctd's sfprobe (sFlow v5); a UDP tee hands the same datagrams to
//! `egress collector` and to a peer collector (nfcapd, sfacctd). What Egress stores in a real
//! ClickHouse server must equal what the peer counted and what the pcap holds.
//!
//! The `*_peer_*` tests check the rig itself (exporter → tee → peer against the pcap's
//! totals), so that a failing Egress test points at Egress. The tee is the exporter as far as
//! the collectors can tell (see [`UdpTee`]).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egress_testkit::clickhouse::ClickHouseServer;
use egress_testkit::exporters::{
    free_tcp_port, free_udp_port, NetflowVersion, Nfcapd, PeerTotals, PmacctdSfprobe, Sfacctd, Softflowd,
    UdpTee,
};
use egress_testkit::traffic::{
    write_datagram_pcap, write_pcap, Exfiltration, FlowTotals, TrafficSpec, TrafficTotals,
    ETHERNET_HEADER_LEN, FCS_LEN,
};

/// Flows in the generated capture: 100 flows, about 1300 packets (80 IPv4, 20 IPv6).
const FLOWS: usize = 100;
/// How long the tee must see nothing before an export is considered complete.
const QUIET: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_secs(30);

/// Writes the mixed traffic capture, timestamped now (flows are stored with exporter times).
fn traffic_pcap(dir: &Path) -> (PathBuf, TrafficTotals) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let path = dir.join("traffic.pcap");
    let totals = write_pcap(
        &path,
        &TrafficSpec::mixed(Duration::from_secs(now.as_secs()), FLOWS),
    )
    .expect("writing the traffic pcap");
    (path, totals)
}

/// What the pcap should yield through softflowd with `version` and no sampling: one record per
/// flow, IP lengths; v5 carries the IPv4 flows only.
fn expected_netflow(totals: &TrafficTotals, version: NetflowVersion) -> PeerTotals {
    let totals = match version {
        NetflowVersion::V5 => totals.ipv4_only(),
        NetflowVersion::V9 | NetflowVersion::Ipfix => totals.clone(),
    };
    PeerTotals {
        records: totals.flows,
        bytes: totals.bytes,
        packets: totals.packets,
    }
}

/// What the pcap should yield through sfprobe at sampling rate 1: one flow sample per packet,
/// frame lengths including the FCS.
fn expected_sflow(totals: &TrafficTotals) -> PeerTotals {
    PeerTotals {
        records: totals.packets,
        bytes: totals.sflow_frame_bytes(),
        packets: totals.packets,
    }
}

/// softflowd → tee → nfcapd (and `extra` targets); returns nfcapd's totals.
fn softflowd_through_tee(version: NetflowVersion, pcap: &Path, extra: &[SocketAddr]) -> PeerTotals {
    let started = Instant::now();
    let nfcapd = Nfcapd::start().expect("starting nfcapd");
    let mut targets = vec![nfcapd.listen_addr()];
    targets.extend_from_slice(extra);
    let tee = UdpTee::start(&targets, false).expect("starting the tee");
    let report = Softflowd::new(version)
        .replay(pcap, tee.listen_addr())
        .expect("softflowd replay");
    let datagrams = tee.wait_quiet(QUIET, TIMEOUT).expect("export datagrams");
    assert_eq!(datagrams, report.datagrams, "the tee lost datagrams");
    assert_eq!(tee.forward_errors(), 0);
    let peer = nfcapd.finish().expect("nfcapd totals");
    eprintln!(
        "softflowd {version:?}: {} records in {datagrams} datagrams, replay {:?}, nfcapd {peer:?}, total {:?}",
        report.flows_exported,
        report.elapsed,
        started.elapsed()
    );
    peer
}

/// pmacctd sfprobe → tee → sfacctd (and `extra` targets); returns sfacctd's totals.
fn sfprobe_through_tee(pcap: &Path, extra: &[SocketAddr]) -> PeerTotals {
    let started = Instant::now();
    let sfacctd = Sfacctd::start().expect("starting sfacctd");
    let mut targets = vec![sfacctd.listen_addr()];
    targets.extend_from_slice(extra);
    let tee = UdpTee::start(&targets, false).expect("starting the tee");
    let report = PmacctdSfprobe { sampling_rate: 1 }
        .replay(pcap, &tee)
        .expect("pmacctd replay");
    let datagrams = tee.wait_quiet(QUIET, TIMEOUT).expect("sFlow datagrams");
    assert_eq!(tee.forward_errors(), 0);
    let peer = sfacctd.finish().expect("sfacctd totals");
    eprintln!(
        "pmacctd sfprobe: {datagrams} datagrams, replay {:?}, sfacctd {peer:?}, total {:?}",
        report.elapsed,
        started.elapsed()
    );
    peer
}

fn check_softflowd_peer(version: NetflowVersion) {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, totals) = traffic_pcap(dir.path());
    let peer = softflowd_through_tee(version, &pcap, &[]);
    assert_eq!(peer, expected_netflow(&totals, version));
}

#[test]
fn softflowd_v5_peer_nfcapd_counts_the_pcap() {
    check_softflowd_peer(NetflowVersion::V5);
}

#[test]
fn softflowd_v9_peer_nfcapd_counts_the_pcap() {
    check_softflowd_peer(NetflowVersion::V9);
}

#[test]
fn softflowd_ipfix_peer_nfcapd_counts_the_pcap() {
    check_softflowd_peer(NetflowVersion::Ipfix);
}

#[test]
fn pmacctd_sflow_peer_sfacctd_counts_every_packet() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, totals) = traffic_pcap(dir.path());
    let peer = sfprobe_through_tee(&pcap, &[]);
    assert_eq!(peer, expected_sflow(&totals));
}

/// The exfiltration capture (20 MiB uploaded by one host among 40 ordinary flows) through
/// softflowd v9 sampling 1 in 10: nfcapd sees about a tenth of every flow. Systematic sampling
/// takes every tenth packet of the whole stream, so each flow's sampled packet count is within
/// one of its packets / 10; bytes likewise within one packet (at most 1440 bytes) per flow.
#[test]
fn softflowd_sampled_exfiltration_peer_nfcapd_sees_one_in_n() {
    const RATE: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let scenario = Exfiltration::default();
    let spec = TrafficSpec::exfiltration(Duration::from_secs(now.as_secs()), &scenario);
    let pcap = dir.path().join("exfiltration.pcap");
    let totals = write_pcap(&pcap, &spec).unwrap();
    let upload_flows: Vec<&FlowTotals> = totals
        .per_flow
        .iter()
        .filter(|f| f.src == scenario.source)
        .collect();
    let upload = PeerTotals {
        records: upload_flows.len() as u64,
        bytes: upload_flows.iter().map(|f| f.bytes).sum(),
        packets: upload_flows.iter().map(|f| f.packets).sum(),
    };
    assert!(upload.bytes > scenario.upload_bytes);

    let mut nfcapd = Nfcapd::start().unwrap();
    let tee = UdpTee::start(&[nfcapd.listen_addr()], false).unwrap();
    let softflowd = Softflowd {
        version: NetflowVersion::V9,
        sampling_rate: Some(RATE as u32),
    };
    let report = softflowd.replay(&pcap, tee.listen_addr()).unwrap();
    assert_eq!(tee.wait_quiet(QUIET, TIMEOUT).unwrap(), report.datagrams);
    nfcapd.stop().unwrap();
    let all = nfcapd.totals(None).unwrap();
    let uploaded = nfcapd
        .totals(Some(&format!(
            "src ip {} and dst ip {}",
            scenario.source, scenario.destination
        )))
        .unwrap();
    eprintln!(
        "sampled 1:{RATE}: all {all:?} of {} packets; upload {uploaded:?} of {upload:?}",
        totals.packets
    );

    let within = |sampled: u64, actual: u64, flows: u64, unit: u64| {
        (sampled * RATE).abs_diff(actual) <= flows * unit * RATE
    };
    assert!(within(all.packets, totals.packets, totals.flows, 1), "{all:?}");
    assert!(within(all.bytes, totals.bytes, totals.flows, 1440), "{all:?}");
    assert_eq!(
        uploaded.records, upload.records,
        "every upload connection is sampled"
    );
    assert!(
        within(uploaded.packets, upload.packets, upload.records, 1),
        "{uploaded:?}"
    );
    assert!(
        within(uploaded.bytes, upload.bytes, upload.records, 1440),
        "{uploaded:?}"
    );
}

/// An exporter's stream recorded by the tee and written as a capture (how the benchmark gets
/// real softflowd/pmacctd streams) decodes with `egress decode` to the pcap's totals.
#[test]
fn recorded_exporter_streams_decode_to_the_pcap_totals() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, totals) = traffic_pcap(dir.path());
    let exporter: SocketAddr = "192.0.2.10:50000".parse().unwrap();
    let collector: SocketAddr = "127.0.0.1:2055".parse().unwrap();
    let mut streams = Vec::new();
    for version in [NetflowVersion::V5, NetflowVersion::V9, NetflowVersion::Ipfix] {
        let tee = UdpTee::start(&[], true).unwrap();
        let report = Softflowd::new(version).replay(&pcap, tee.listen_addr()).unwrap();
        assert_eq!(tee.wait_quiet(QUIET, TIMEOUT).unwrap(), report.datagrams);
        streams.push((
            version.flow_type(),
            tee.recorded(),
            expected_netflow(&totals, version),
        ));
    }
    let tee = UdpTee::start(&[], true).unwrap();
    PmacctdSfprobe { sampling_rate: 1 }.replay(&pcap, &tee).unwrap();
    tee.wait_quiet(QUIET, TIMEOUT).unwrap();
    streams.push(("sflow5", tee.recorded(), expected_sflow(&totals)));

    for (flow_type, datagrams, expected) in streams {
        let capture = dir.path().join(format!("{flow_type}.pcap"));
        write_datagram_pcap(
            &capture,
            Duration::from_secs(1_700_000_000),
            exporter,
            collector,
            &datagrams,
        )
        .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_egress"))
            .args(["decode", "--format", "json"])
            .arg(&capture)
            .output()
            .expect("running egress decode");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut decoded = PeerTotals::default();
        for line in String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON record");
            assert_eq!(record["flow_type"], flow_type);
            assert_eq!(record["exporter_address"], exporter.ip().to_string());
            decoded.records += 1;
            decoded.bytes += record["bytes"].as_u64().expect("bytes");
            decoded.packets += record["packets"].as_u64().expect("packets");
        }
        assert_eq!(decoded, expected, "{flow_type}: {} datagrams", datagrams.len());
    }
}

/// `egress collector` on free ports, writing to `clickhouse`; killed on drop.
struct Collector {
    child: Child,
    listen: SocketAddr,
    metrics: SocketAddr,
    /// This collector's own spool directory.
    _spool: tempfile::TempDir,
}

impl Collector {
    fn start(clickhouse: &ClickHouseServer) -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port().unwrap()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port().unwrap()));
        let spool = tempfile::tempdir().expect("spool dir");
        let child = Command::new(env!("CARGO_BIN_EXE_egress"))
            .arg("collector")
            .env("EGRESS__SPOOL__DIR", spool.path())
            .env(
                "EGRESS__COLLECTOR__STATE_PATH",
                spool.path().join("collector-state.json"),
            )
            .args(["--log", "error"])
            .args(["--listen", &listen.to_string()])
            .args(["--clickhouse-url", &clickhouse.http_url()])
            .args(["--database", "egress_test"])
            .args(["--metrics-listen", &metrics.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting egress collector");
        let mut collector = Self {
            child,
            _spool: spool,
            listen,
            metrics,
        };
        let deadline = Instant::now() + TIMEOUT;
        while collector.records_written().is_none() {
            if let Ok(Some(status)) = collector.child.try_wait() {
                panic!("egress collector exited with {status}");
            }
            assert!(Instant::now() < deadline, "egress collector serves no metrics");
            std::thread::sleep(Duration::from_millis(100));
        }
        collector
    }

    /// `egress_records_written_total` (summed over its labels), or `None` while the metrics
    /// endpoint does not answer.
    fn records_written(&self) -> Option<u64> {
        let mut stream = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.metrics).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let body = response.split_once("\r\n\r\n")?.1;
        let mut total = 0u64;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix("egress_records_written_total") else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            total += value as u64;
        }
        Some(total)
    }

    /// Waits until Egress has written `expected` records, or its counter has stopped growing.
    fn wait_written(&self, expected: u64) -> u64 {
        let deadline = Instant::now() + TIMEOUT;
        let (mut last, mut since) = (0, Instant::now());
        loop {
            let written = self.records_written().unwrap_or(last);
            if written >= expected {
                return written;
            }
            if written != last {
                (last, since) = (written, Instant::now());
            } else if written > 0 && since.elapsed() > Duration::from_secs(3) {
                return written;
            }
            if Instant::now() > deadline {
                return written;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What Egress stored for one flow type.
fn stored(clickhouse: &ClickHouseServer, flow_type: &str) -> PeerTotals {
    let row = clickhouse
        .query_scalar(&format!(
            "SELECT concat(toString(count()), ',', toString(sum(bytes)), ',', toString(sum(packets))) \
             FROM egress_test.flows WHERE flow_type = '{flow_type}'"
        ))
        .expect("querying egress_test.flows");
    let numbers: Vec<u64> = row
        .trim()
        .split(',')
        .map(|n| n.parse().expect("a number"))
        .collect();
    match numbers.as_slice() {
        [records, bytes, packets] => PeerTotals {
            records: *records,
            bytes: *bytes,
            packets: *packets,
        },
        _ => panic!("unexpected row {row:?}"),
    }
}

/// One stored flow, keyed by its 5-tuple (ports 0 for ICMP, whatever the exporter put there):
/// `(src, dst, proto, src_port, dst_port, records, bytes, packets)`.
type FlowKeyTotals = (IpAddr, IpAddr, u8, u16, u16, u64, u64, u64);

/// What Egress stored for one flow type, grouped by 5-tuple and sorted.
fn stored_flows(clickhouse: &ClickHouseServer, flow_type: &str) -> Vec<FlowKeyTotals> {
    let body = clickhouse
        .query_scalar(&format!(
            "SELECT IPv6NumToString(src_addr), IPv6NumToString(dst_addr), proto, \
                    if(proto IN (1, 58), 0, src_port) AS sp, if(proto IN (1, 58), 0, dst_port) AS dp, \
                    count(), sum(bytes), sum(packets) \
             FROM egress_test.flows WHERE flow_type = '{flow_type}' \
             GROUP BY src_addr, dst_addr, proto, sp, dp FORMAT TabSeparated"
        ))
        .expect("querying egress_test.flows");
    let address = |text: &str| -> IpAddr {
        let v6: Ipv6Addr = text.parse().expect("an address");
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    };
    let mut flows: Vec<FlowKeyTotals> = body
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 8, "unexpected row {line:?}");
            let n = |i: usize| -> u64 { f[i].parse().expect("a number") };
            (
                address(f[0]),
                address(f[1]),
                n(2) as u8,
                n(3) as u16,
                n(4) as u16,
                n(5),
                n(6),
                n(7),
            )
        })
        .collect();
    flows.sort();
    flows
}

/// The pcap's flows in the same shape, with `records_per_flow` and `bytes_per_packet` added
/// to each flow's IP bytes (sFlow: one record per packet, frame and FCS bytes).
fn expected_flows(
    per_flow: &[FlowTotals],
    records: impl Fn(&FlowTotals) -> u64,
    extra_bytes_per_packet: u64,
) -> Vec<FlowKeyTotals> {
    let mut flows: Vec<FlowKeyTotals> = per_flow
        .iter()
        .map(|f| {
            let bytes = f.bytes + f.packets * extra_bytes_per_packet;
            (
                f.src,
                f.dst,
                f.proto,
                f.src_port,
                f.dst_port,
                records(f),
                bytes,
                f.packets,
            )
        })
        .collect();
    flows.sort();
    flows
}

fn check_egress_softflowd(version: NetflowVersion) {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, totals) = traffic_pcap(dir.path());
    let clickhouse = ClickHouseServer::start().expect("starting ClickHouse");
    let collector = Collector::start(&clickhouse);
    let peer = softflowd_through_tee(version, &pcap, &[collector.listen]);
    assert_eq!(peer, expected_netflow(&totals, version), "the rig itself is off");
    let written = collector.wait_written(peer.records);
    assert_eq!(written, peer.records, "egress_records_written_total");
    assert_eq!(stored(&clickhouse, version.flow_type()), peer);
    let pcap_flows = match version {
        NetflowVersion::V5 => totals.ipv4_only().per_flow,
        NetflowVersion::V9 | NetflowVersion::Ipfix => totals.per_flow,
    };
    assert_eq!(
        stored_flows(&clickhouse, version.flow_type()),
        expected_flows(&pcap_flows, |_| 1, 0)
    );
}

#[test]
fn egress_stores_softflowd_v5_as_nfcapd_counts() {
    check_egress_softflowd(NetflowVersion::V5);
}

#[test]
fn egress_stores_softflowd_v9_as_nfcapd_counts() {
    check_egress_softflowd(NetflowVersion::V9);
}

#[test]
fn egress_stores_softflowd_ipfix_as_nfcapd_counts() {
    check_egress_softflowd(NetflowVersion::Ipfix);
}

#[test]
fn egress_stores_pmacctd_sflow_as_sfacctd_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, totals) = traffic_pcap(dir.path());
    let clickhouse = ClickHouseServer::start().expect("starting ClickHouse");
    let collector = Collector::start(&clickhouse);
    let peer = sfprobe_through_tee(&pcap, &[collector.listen]);
    assert_eq!(peer, expected_sflow(&totals), "the rig itself is off");
    let written = collector.wait_written(peer.records);
    assert_eq!(written, peer.records, "egress_records_written_total");
    assert_eq!(stored(&clickhouse, "sflow5"), peer);
    let sampled = expected_flows(&totals.per_flow, |f| f.packets, ETHERNET_HEADER_LEN + FCS_LEN);
    assert_eq!(stored_flows(&clickhouse, "sflow5"), sampled);
}
