//! Tests of the simulator: configuration, the exporter state machine, a real UDP run, and the
//! datagrams checked by an independent decoder (TShark) through a pcap file.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::encode::ExportClock;
use super::*;

/// Drives every exporter of `config` without sockets: `datagrams` datagrams each, the clock
/// advancing `step_ms` per datagram, 1000 records per second worth of data each time.
fn offline(
    config: &SimulateConfig,
    datagrams: usize,
    step_ms: u64,
) -> Vec<(IpAddr, Vec<u8>, ExportDatagram)> {
    let start_unix_ms = 1_700_000_000_000;
    let mut out = Vec::new();
    for router in config.routers() {
        let address = router.exporter_address;
        let boot_unix_ms = start_unix_ms - uptime_at_start_ms(router.index);
        let mut exporter = VirtualExporter::new(router, config);
        let capacity = exporter.max_records_per_datagram();
        for n in 0..datagrams as u64 {
            let elapsed_ms = n * step_ms;
            exporter.poll_scenario(elapsed_ms);
            let clock = ExportClock {
                unix_ms: start_unix_ms + elapsed_ms,
                boot_unix_ms,
            };
            let mut buffer = Vec::new();
            let datagram = exporter
                .next_datagram(clock, capacity, &mut buffer)
                .expect("always something to send");
            let limit = match config.protocol {
                Protocol::Netflow5 => 24 + 30 * 48,
                _ => encode::MAX_DATAGRAM_BYTES,
            };
            assert!(buffer.len() <= limit, "{} bytes", buffer.len());
            out.push((address, buffer, datagram));
        }
    }
    out
}

fn report_of(
    config: &SimulateConfig,
    datagrams: &[(IpAddr, Vec<u8>, ExportDatagram)],
) -> Vec<ExporterReport> {
    let rate = config.effective_sampling_rate();
    config
        .routers()
        .iter()
        .map(|router| {
            let mut report = ExporterReport::new(router, config.protocol, rate);
            for (_, _, datagram) in datagrams.iter().filter(|(a, _, _)| *a == router.exporter_address) {
                report.add(datagram);
            }
            report
        })
        .collect()
}

#[test]
fn protocol_names_round_trip() {
    for protocol in Protocol::ALL {
        assert_eq!(protocol.as_str().parse::<Protocol>(), Ok(protocol));
        assert_eq!(protocol.to_string(), protocol.as_str());
    }
    assert_eq!("v5".parse::<Protocol>(), Ok(Protocol::Netflow5));
    assert_eq!("sFlow".parse::<Protocol>(), Ok(Protocol::Sflow5));
    assert!("netflow7".parse::<Protocol>().is_err());
}

#[test]
fn validate_reports_every_problem_by_key() {
    let config = SimulateConfig {
        protocol: Protocol::Netflow5,
        records_per_second: 0,
        exporters: 0,
        sampling_rate: Some(20_000),
        ipv6_share: Some(0.5),
        ..SimulateConfig::default()
    };
    let Err(SimulateError::Config(problems)) = config.validate() else {
        panic!("invalid configuration accepted");
    };
    let text = problems.join("\n");
    for key in ["records_per_second", "exporters", "sampling_rate", "ipv6_share"] {
        assert!(text.contains(key), "{key} not reported in:\n{text}");
    }
    assert!(SimulateConfig::default().validate().is_ok());
    let too_many = SimulateConfig {
        exporters: 300,
        ..SimulateConfig::default()
    };
    assert!(too_many.validate().is_err());
}

#[test]
fn config_reads_from_toml_with_seconds() {
    let config: SimulateConfig = toml::from_str(
        r#"
        target = "127.0.0.1:4739"
        protocol = "ipfix"
        records_per_second = 5000
        exporters = 3
        duration = 2.5
        [[extra_flows]]
        exporter = 1
        src_addr = "10.2.0.7"
        dst_addr = "203.0.113.9"
        src_port = 40000
        dst_port = 443
        proto = 6
        bytes_per_second = 1000000
        "#,
    )
    .expect("valid configuration");
    assert_eq!(config.duration, Some(Duration::from_millis(2500)));
    assert_eq!(config.extra_flows[0].packet_size, 1400);
    assert_eq!(config.effective_sampling_rate(), 100);
    assert!(config.validate().is_ok());
    assert!(
        toml::from_str::<SimulateConfig>("rate = 5").is_err(),
        "unknown keys are refused"
    );
}

#[test]
fn templates_come_first_and_are_refreshed_by_count() {
    let config = SimulateConfig {
        template_refresh_datagrams: 5,
        ..SimulateConfig::default()
    };
    let datagrams = offline(&config, 13, 10);
    let refresh: Vec<bool> = datagrams.iter().map(|(_, _, d)| d.is_refresh).collect();
    let expected = [
        true, false, false, false, false, false, true, false, false, false, false, false, true,
    ];
    assert_eq!(refresh, expected);
}

#[test]
fn sflow_counters_come_by_time() {
    let config = SimulateConfig {
        protocol: Protocol::Sflow5,
        counter_interval: Duration::from_secs(1),
        ..SimulateConfig::default()
    };
    // 100 ms per datagram: counters instead of data at 0 s, 1 s, 2 s.
    let datagrams = offline(&config, 25, 100);
    let counters: Vec<usize> = datagrams
        .iter()
        .enumerate()
        .filter(|(_, (_, _, d))| d.is_refresh)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(counters, [0, 10, 20]);
    // Router edge1 has 4 interfaces: one counter sample each.
    assert_eq!(datagrams[0].2.summary.counter_samples, 4);
}

#[test]
fn netflow_v5_never_needs_a_refresh() {
    let config = SimulateConfig {
        protocol: Protocol::Netflow5,
        ..SimulateConfig::default()
    };
    let datagrams = offline(&config, 5, 10);
    assert!(datagrams
        .iter()
        .all(|(_, _, d)| !d.is_refresh && d.summary.flow_records == 30));
}

#[test]
fn scenario_flow_exports_its_rate() {
    let spec = FlowSpec {
        exporter: 0,
        src_addr: "10.1.3.7".parse().expect("address"),
        dst_addr: "203.0.113.66".parse().expect("address"),
        src_port: 50_123,
        dst_port: 443,
        proto: 6,
        bytes_per_second: 10_000_000,
        packet_size: 1000,
        start_after: Duration::ZERO,
        stop_after: None,
        transit_if_index: None,
    };
    for protocol in Protocol::ALL {
        let config = SimulateConfig {
            protocol,
            extra_flows: vec![spec.clone()],
            ..SimulateConfig::default()
        };
        let router = config.routers().remove(0);
        let mut exporter = VirtualExporter::new(router, &config);
        exporter.poll_scenario(500);
        assert!(
            !exporter.scenario_pending(),
            "nothing before the first whole second"
        );
        exporter.poll_scenario(3_000);
        let mut bytes = 0;
        let mut out = Vec::new();
        let clock = ExportClock {
            unix_ms: 1_700_000_003_000,
            boot_unix_ms: 1_699_000_000_000,
        };
        while exporter.scenario_pending() {
            let datagram = exporter
                .next_datagram(clock, 0, &mut out)
                .expect("scenario datagram");
            if !datagram.is_refresh {
                assert_eq!(datagram.generated_records, 0);
                bytes += datagram.summary.bytes;
            }
        }
        // 3 s of 10 MB/s, sampled 1 in N.
        let rate = u64::from(config.effective_sampling_rate());
        let expected = match protocol {
            // Each sample stands for `rate` packets of 1000 bytes (+18 bytes of framing each).
            Protocol::Sflow5 => 30_000_000 / (rate * 1000) * 1018,
            _ => 30_000_000 / rate,
        };
        assert_eq!(bytes, expected, "{protocol}");
    }
}

/// A timed scenario flow exports only inside `[start_after, stop_after)`, on its transit.
#[test]
fn scenario_flow_keeps_its_times_and_transit() {
    let spec = FlowSpec {
        exporter: 0,
        src_addr: "10.1.0.23".parse().expect("address"),
        dst_addr: "198.18.7.7".parse().expect("address"),
        src_port: 40_873,
        dst_port: 873,
        proto: 6,
        bytes_per_second: 1_000_000,
        packet_size: 1400,
        start_after: Duration::from_millis(2_000),
        stop_after: Some(Duration::from_millis(4_000)),
        transit_if_index: Some(2),
    };
    let config = SimulateConfig {
        protocol: Protocol::Netflow9,
        extra_flows: vec![spec.clone()],
        ..SimulateConfig::default()
    };
    assert!(config.validate().is_ok(), "{:?}", config.validate());
    let router = config.routers().remove(0);
    let record = scenario_record(&router, &spec, 1000);
    assert_eq!((record.in_if, record.out_if), (10, 2), "leaves on Transit B");
    assert_eq!(record.direction, Direction::Egress);

    let mut exporter = VirtualExporter::new(router, &config);
    let clock = ExportClock {
        unix_ms: 1_700_000_006_000,
        boot_unix_ms: 1_699_000_000_000,
    };
    let mut per_poll = Vec::new();
    for elapsed_ms in [1_000, 2_000, 3_000, 4_000, 5_000, 6_000] {
        exporter.poll_scenario(elapsed_ms);
        let mut bytes = 0;
        let mut out = Vec::new();
        while exporter.scenario_pending() {
            let datagram = exporter.next_datagram(clock, 0, &mut out).expect("datagram");
            if !datagram.is_refresh {
                bytes += datagram.summary.bytes;
            }
        }
        per_poll.push(bytes);
    }
    // 1 MB/s sampled 1 in 100 during seconds 2 and 3 only.
    assert_eq!(per_poll, [0, 0, 10_000, 10_000, 0, 0]);

    let wrong = SimulateConfig {
        extra_flows: vec![FlowSpec {
            transit_if_index: Some(10),
            stop_after: Some(Duration::from_secs(1)),
            ..spec
        }],
        ..config
    };
    let Err(SimulateError::Config(problems)) = wrong.validate() else {
        panic!("ae0 is no transit and the flow stops before it starts");
    };
    assert!(
        problems
            .iter()
            .any(|p| p.contains("extra_flows[0].transit_if_index")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("extra_flows[0].stop_after")),
        "{problems:?}"
    );
}

/// The diurnal shape paces the generated records: a quarter day at the trough sends less than
/// the peak rate would.
#[test]
fn diurnal_shape_paces_generated_records() {
    let flat = SimulateConfig::default();
    let shaped = SimulateConfig {
        diurnal: Some(scenario::Diurnal {
            period: Duration::from_secs(400),
            trough_share: 0.5,
        }),
        ..SimulateConfig::default()
    };
    let elapsed = Duration::from_secs(100);
    assert_eq!(records_due(flat.diurnal.as_ref(), 1000, elapsed), 100_000);
    // 0.75 * 100 - 0.25 * 400 / 2pi * sin(pi/2) = 59.08 s worth of the peak rate.
    assert_eq!(records_due(shaped.diurnal.as_ref(), 1000, elapsed), 59_084);
    let bad = SimulateConfig {
        diurnal: Some(scenario::Diurnal {
            period: Duration::ZERO,
            trough_share: 1.5,
        }),
        ..SimulateConfig::default()
    };
    let Err(SimulateError::Config(problems)) = bad.validate() else {
        panic!("invalid shape accepted");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
}

/// Sends for real: two exporters, a receiver on an ephemeral port, exact counts at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sends_the_requested_records_from_each_exporter() {
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("receiver");
    let target = receiver.local_addr().expect("receiver address");
    let config = SimulateConfig {
        target,
        protocol: Protocol::Ipfix,
        records_per_second: 4_000,
        exporters: 2,
        duration: Some(Duration::from_millis(600)),
        ..SimulateConfig::default()
    };
    let receive = tokio::spawn(async move {
        let mut seen: BTreeMap<IpAddr, u64> = BTreeMap::new();
        let mut buffer = vec![0u8; 2048];
        while let Ok(Ok((_, from))) =
            tokio::time::timeout(Duration::from_millis(500), receiver.recv_from(&mut buffer)).await
        {
            *seen.entry(from.ip()).or_default() += 1;
        }
        seen
    });
    let report = run(config, CancellationToken::new()).await.expect("run");
    let seen = receive.await.expect("receiver task");
    assert_eq!(report.flow_records(), 2_400, "{report:?}");
    assert_eq!(report.send_errors(), 0);
    let addresses: Vec<IpAddr> = seen.keys().copied().collect();
    assert_eq!(
        addresses,
        [
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11))
        ]
    );
    for exporter in &report.exporters {
        assert_eq!(exporter.flow_records, 1_200);
        assert_eq!(
            seen[&exporter.exporter_address], exporter.datagrams,
            "{exporter:?}"
        );
        assert!(exporter.refresh_datagrams >= 1);
    }
}

#[tokio::test]
async fn run_stops_on_cancellation() {
    let config = SimulateConfig {
        target: SocketAddr::from(([127, 0, 0, 1], 9)),
        protocol: Protocol::Netflow9,
        records_per_second: 1_000,
        ..SimulateConfig::default()
    };
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stopper.cancel();
    });
    let report = tokio::time::timeout(Duration::from_secs(5), run(config, shutdown))
        .await
        .expect("stopped in time")
        .expect("run");
    assert!(
        (200..=400).contains(&report.flow_records()),
        "{} records",
        report.flow_records()
    );
}

// ---- TShark as an independent decoder ----------------------------------------------------

/// The UDP port TShark is told to decode each protocol on.
fn port_of(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Netflow5 | Protocol::Netflow9 => 2055,
        Protocol::Ipfix => 4739,
        Protocol::Sflow5 => 6343,
    }
}

/// Writes the datagrams as Ethernet/IPv4/UDP frames from each exporter to 127.0.0.1.
fn write_pcap(path: &Path, port: u16, datagrams: &[(IpAddr, Vec<u8>, ExportDatagram)]) {
    let file = std::fs::File::create(path).expect("pcap file");
    let mut writer = pcap_file::pcap::PcapWriter::new(file).expect("pcap writer");
    for (n, (source, payload, _)) in datagrams.iter().enumerate() {
        let IpAddr::V4(source) = source else {
            panic!("IPv4 exporters only")
        };
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(source.octets(), [127, 0, 0, 1], 64)
            .udp(50_000, port);
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut frame, payload).expect("frame");
        let timestamp = Duration::from_millis(1_700_000_000_000 + n as u64);
        let packet = pcap_file::pcap::PcapPacket::new(timestamp, frame.len() as u32, &frame);
        writer.write_packet(&packet).expect("pcap packet");
    }
}

/// Every value of `field` anywhere in TShark's JSON, as numbers where they parse.
fn collect<'a>(value: &'a serde_json::Value, field: &str, found: &mut Vec<&'a serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                if key == field {
                    match inner {
                        serde_json::Value::Array(items) => found.extend(items),
                        other => found.push(other),
                    }
                } else {
                    collect(inner, field, found);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect(item, field, found)),
        _ => {}
    }
}

fn numbers(json: &serde_json::Value, field: &str) -> Vec<u64> {
    let mut found = Vec::new();
    collect(json, field, &mut found);
    found
        .iter()
        .filter_map(|v| v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64()))
        .collect()
}

fn count(json: &serde_json::Value, field: &str) -> usize {
    let mut found = Vec::new();
    collect(json, field, &mut found);
    found.len()
}

/// Wireshark's `PI_NOTE` severity (chat is below it, warning and error above).
const SEVERITY_NOTE: u64 = 0x0040_0000;

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// TShark decodes `datagrams` (from `protocol`) with `preferences`: returns its JSON, having
/// checked it reports nothing of note (malformed packets, sequence gaps, bad lengths).
fn tshark_decode(
    protocol: Protocol,
    datagrams: &[(IpAddr, Vec<u8>, ExportDatagram)],
    preferences: &[&str],
) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(format!("{protocol}.pcap"));
    write_pcap(&path, port_of(protocol), datagrams);
    let output = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args([
            "-d",
            "udp.port==2055,cflow",
            "-d",
            "udp.port==4739,cflow",
            "-d",
            "udp.port==6343,sflow",
        ])
        .args(preferences.iter().flat_map(|p| ["-o", p]))
        .args(["-T", "json", "--no-duplicate-keys"])
        .output()
        .expect("tshark runs");
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("tshark JSON");
    // Every expert item of note severity or above, and any malformed packet.
    let mut experts = Vec::new();
    collect(&json, "_ws.expert", &mut experts);
    experts.retain(|e| {
        e["_ws.expert.severity"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            >= Some(SEVERITY_NOTE)
    });
    collect(&json, "_ws.malformed", &mut experts);
    assert!(experts.is_empty(), "{protocol}: tshark expert info: {experts:#?}");
    assert_eq!(
        json.as_array().map(Vec::len),
        Some(datagrams.len()),
        "{protocol}: tshark saw another number of frames"
    );
    json
}

/// TShark checks NetFlow v9 and IPFIX sequence numbers itself (a gap is an expert warning);
/// this checks NetFlow v5 (flows sent before) and sFlow (datagrams sent before) per exporter.
fn check_sequences(protocol: Protocol, json: &serde_json::Value) {
    let (layer, sequence_field) = match protocol {
        Protocol::Netflow5 => ("cflow", "cflow.sequence"),
        Protocol::Sflow5 => ("sflow", "sflow_245.sequence_number"),
        _ => return,
    };
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for frame in json.as_array().into_iter().flatten() {
        let layers = &frame["_source"]["layers"];
        let exporter = layers["ip"]["ip.src"]
            .as_str()
            .expect("exporter address")
            .to_string();
        let sequence: u64 = layers[layer][sequence_field]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("sequence");
        let next = expected.entry(exporter.clone()).or_insert(0);
        assert_eq!(
            sequence, *next,
            "{protocol}: sequence of a datagram from {exporter}"
        );
        *next += match protocol {
            Protocol::Netflow5 => layers[layer]["cflow.count"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("count"),
            _ => 1,
        };
    }
    assert_eq!(expected.len(), 3, "three exporters");
}

/// How many sampled headers in the sFlow `datagrams` TShark decodes down to IPv4 or IPv6.
fn tshark_headers(datagrams: &[(IpAddr, Vec<u8>, ExportDatagram)]) -> usize {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sflow-headers.pcap");
    write_pcap(&path, port_of(Protocol::Sflow5), datagrams);
    let output = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args([
            "-d",
            "udp.port==6343,sflow",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
        ])
        .args(["-E", "occurrence=a", "-E", "aggregator=,"])
        .output()
        .expect("tshark runs");
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Per frame: the outer source (127.0.0.x) first, then one per sampled header.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            line.split(['\t', ','])
                .filter(|a| !a.is_empty())
                .count()
                .saturating_sub(1)
        })
        .sum()
}

/// Several exporters of each protocol, with template refreshes and counter samples: TShark
/// decodes every record, flags nothing, and its counts and sums match the report.
#[test]
fn tshark_decodes_every_protocol_without_complaint() {
    if !tshark_available() {
        eprintln!("SKIPPED tshark_decodes_every_protocol_without_complaint: tshark is not installed");
        return;
    }
    for protocol in Protocol::ALL {
        let config = SimulateConfig {
            protocol,
            exporters: 3,
            template_refresh_datagrams: 7,
            counter_interval: Duration::from_millis(200),
            seed: 42,
            ..SimulateConfig::default()
        };
        let datagrams = offline(&config, 25, 10);
        let reports = report_of(&config, &datagrams);
        let records: u64 = reports.iter().map(|r| r.flow_records).sum();
        let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
        let packets: u64 = reports.iter().map(|r| r.packets).sum();
        assert!(records > 100, "{protocol}: {records} records");
        // The sampled headers are checked apart: their zero payloads make DNS, QUIC and TCP
        // analysis remark on them, which says nothing about the export.
        let json = tshark_decode(protocol, &datagrams, &["sflow.enable_dissection:FALSE"]);
        let rate = u64::from(config.effective_sampling_rate());
        check_sequences(protocol, &json);
        match protocol {
            Protocol::Sflow5 => {
                let frame_lengths = numbers(&json, "sflow_245.header.frame_length");
                assert_eq!(frame_lengths.len() as u64, records, "flow samples");
                assert_eq!(frame_lengths.iter().sum::<u64>(), bytes, "frame lengths");
                let rates = numbers(&json, "sflow.flow_sample.sampling_rate");
                assert_eq!(rates.len() as u64, records);
                assert!(rates.iter().all(|&r| r == rate), "sampling rates {rates:?}");
                let counters: u64 = reports.iter().map(|r| r.counter_samples).sum();
                assert_eq!(
                    count(&json, "sflow_245.ifindex") as u64,
                    counters,
                    "counter samples"
                );
                let headers = tshark_headers(&datagrams);
                assert_eq!(
                    headers as u64, records,
                    "sampled headers that decode to an IP layer"
                );
            }
            _ => {
                let octets = numbers(&json, "cflow.octets");
                let packet_counts = numbers(&json, "cflow.packets");
                assert_eq!(octets.len() as u64, records, "{protocol}: records with octets");
                assert_eq!(octets.iter().sum::<u64>(), bytes, "{protocol}: octets");
                assert_eq!(packet_counts.iter().sum::<u64>(), packets, "{protocol}: packets");
                match protocol {
                    Protocol::Netflow5 => {
                        let intervals = numbers(&json, "cflow.samplerate");
                        assert!(
                            !intervals.is_empty() && intervals.iter().all(|&i| i == rate),
                            "{intervals:?}"
                        );
                    }
                    Protocol::Netflow9 => {
                        let intervals = numbers(&json, "cflow.sampler_random_interval");
                        let refreshes: u64 = reports.iter().map(|r| r.refresh_datagrams).sum();
                        assert_eq!(
                            intervals.len() as u64,
                            refreshes,
                            "one sampler record per refresh"
                        );
                        assert!(intervals.iter().all(|&i| i == rate), "{intervals:?}");
                    }
                    _ => {
                        let spaces = numbers(&json, "cflow.sampling_packet_space");
                        let refreshes: u64 = reports.iter().map(|r| r.refresh_datagrams).sum();
                        assert_eq!(spaces.len() as u64, refreshes, "one selector record per refresh");
                        assert!(spaces.iter().all(|&s| s == rate - 1), "{spaces:?}");
                    }
                }
            }
        }
    }
}

/// The collector's own decoder reads back exactly what the simulator reports: record counts,
/// volumes, sampling rates and their source, interfaces, times, and no loss.
#[test]
fn decoder_reads_back_what_was_sent() {
    use crate::decode::{DecodeOutput, Decoder, DecoderConfig};
    use crate::normalise::{from_v6, SamplingSource};

    for protocol in Protocol::ALL {
        let config = SimulateConfig {
            protocol,
            exporters: 2,
            template_refresh_datagrams: 7,
            counter_interval: Duration::from_millis(100),
            seed: 5,
            ..SimulateConfig::default()
        };
        let datagrams = offline(&config, 30, 10);
        let reports = report_of(&config, &datagrams);
        let mut decoder = Decoder::new(&DecoderConfig::default());
        let mut output = DecodeOutput::default();
        let (mut flows, mut counter_samples) = (Vec::new(), 0u64);
        for (exporter, payload, _) in &datagrams {
            output.clear();
            decoder
                .decode(*exporter, 1_700_000_000, payload, &mut output)
                .expect("datagram decodes");
            assert!(output.errors.is_empty(), "{protocol}: {:?}", output.errors);
            flows.append(&mut output.flows);
            counter_samples += output.counters.len() as u64;
        }
        let expected_source = match protocol {
            Protocol::Netflow5 => SamplingSource::Header,
            Protocol::Netflow9 | Protocol::Ipfix => SamplingSource::Options,
            Protocol::Sflow5 => SamplingSource::Sflow,
        };
        for (report, router) in reports.iter().zip(config.routers()) {
            let mine: Vec<_> = flows
                .iter()
                .filter(|f| from_v6(f.exporter_address) == report.exporter_address)
                .collect();
            assert_eq!(
                mine.len() as u64,
                report.flow_records,
                "{protocol} {}: records",
                report.name
            );
            assert_eq!(
                mine.iter().map(|f| f.bytes).sum::<u64>(),
                report.bytes,
                "{protocol}: bytes"
            );
            assert_eq!(
                mine.iter().map(|f| f.packets).sum::<u64>(),
                report.packets,
                "{protocol}: packets"
            );
            let interfaces: Vec<u32> = router.interfaces.iter().map(|i| i.if_index).collect();
            for flow in &mine {
                assert_eq!(flow.flow_type, protocol.flow_type());
                assert_eq!(flow.observation_domain, report.observation_domain);
                assert_eq!(
                    (flow.sampling_rate, flow.sampling_source),
                    (u64::from(report.sampling_rate), expected_source)
                );
                assert!(
                    interfaces.contains(&flow.in_if) && interfaces.contains(&flow.out_if),
                    "{flow:?}"
                );
                assert!(flow.src_as != 0 && flow.dst_as != 0, "{flow:?}");
                if protocol != Protocol::Sflow5 {
                    assert!(flow.time_flow_start <= flow.time_flow_end, "{flow:?}");
                    assert!(
                        (1_699_999_930..=1_700_000_001).contains(&flow.time_flow_end),
                        "{flow:?}"
                    );
                }
            }
        }
        assert_eq!(
            counter_samples,
            reports.iter().map(|r| r.counter_samples).sum::<u64>(),
            "{protocol}"
        );
        for (key, counters) in decoder.accounting.iter() {
            assert_eq!(counters.records_lost, 0, "{protocol} {key:?}: loss reported");
            assert!(
                counters.errors.is_empty(),
                "{protocol} {key:?}: {:?}",
                counters.errors
            );
        }
    }
}

/// Throughput of the simulator itself: `EGRESS_SIM_RATE` records per second (default 200 000)
/// for 3 s per protocol, to a local socket that reads and drops. Run in release mode:
/// `cargo test --release -p egress-collector --lib simulate::tests::send_rate -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run by hand in release mode"]
async fn send_rate() {
    let rate: u64 = std::env::var("EGRESS_SIM_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200_000);
    for protocol in Protocol::ALL {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("receiver");
        let target = receiver.local_addr().expect("receiver address");
        receiver
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let drain = std::thread::spawn(move || {
            let (mut datagrams, mut buffer) = (0u64, [0u8; 2048]);
            while receiver.recv(&mut buffer).is_ok() {
                datagrams += 1;
            }
            datagrams
        });
        let config = SimulateConfig {
            target,
            protocol,
            records_per_second: rate,
            exporters: 4,
            duration: Some(Duration::from_secs(3)),
            ..SimulateConfig::default()
        };
        let report = run(config, CancellationToken::new()).await.expect("run");
        let received = drain.join().expect("receiver thread");
        println!(
            "{protocol}: {} records in {:.2} s = {:.0} records/s, {} datagrams ({:.0}/s), {} received, {} send errors",
            report.flow_records(),
            report.elapsed.as_secs_f64(),
            report.records_per_second(),
            report.datagrams(),
            report.datagrams() as f64 / report.elapsed.as_secs_f64(),
            received,
            report.send_errors()
        );
        assert!(
            report.records_per_second() >= 0.9 * rate as f64,
            "{protocol} could not keep up"
        );
    }
}
