//! Latency elements against the reference decoder: generated export captures carrying every
//! exporter latency element Wireshark knows, decoded by Egress and by TShark, compared value by
//! value.
//!
//! Why generated: none of the real captures in `../shared/fixtures/captures` carries a latency
//! element (see `captures/rtt.rs`, which checks that they all store NULL). So this test writes a
//! pcap of NetFlow v9 and IPFIX datagrams the way nProbe (v9 57595-57597, IPFIX PEN 35632
//! elements 123-125), Cisco AVC (IPFIX PEN 9 ART sums with their counts) and NetScaler AppFlow
//! (PEN 5951 element 128) export them, with pseudo-random values, and checks that each record's
//! `rtt_*` columns are what TShark shows for it (milliseconds × 1000; Cisco sums ÷ counts).
//! TShark 4.0 does not dissect nProbe's older *_DELAY_SEC/USEC pairs nor sFlow's
//! `extended_tcp_info`; those are covered by the decoders' unit tests.

use std::path::Path;
use std::process::Command;

use egress_collector::decode::DecoderConfig;
use egress_collector::decode_file::decode_capture;
use egress_query::schema::RttSource;

/// UDP port the datagrams are sent to; TShark is told it carries cflow.
const COLLECTOR_PORT: u16 = 2055;
/// Records per data set.
const RECORDS_PER_SET: usize = 20;

/// Deterministic pseudo-random values (xorshift), so a failure reproduces.
struct Values(u64);

impl Values {
    fn next_below(&mut self, bound: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(bound)) as u32
    }
}

/// A template field: element id, length, enterprise number (0 = IANA / v9).
type Field = (u16, u16, u32);

const NPROBE_V9: &[Field] = &[(8, 4, 0), (57595, 4, 0), (57596, 4, 0), (57597, 4, 0)];
const NPROBE_IPFIX: &[Field] = &[(8, 4, 0), (123, 4, 35632), (124, 4, 35632), (125, 4, 35632)];
const CISCO_ART: &[Field] = &[
    (8, 4, 0),
    (278, 4, 0),
    (9316, 4, 9),
    (9319, 4, 9),
    (9303, 4, 9),
    (9292, 4, 9),
];
const NETSCALER: &[Field] = &[(8, 4, 0), (128, 4, 5951)];

/// One template set (v9 set id 0, IPFIX set id 2) defining `template_id` with `fields`.
fn template_set(ipfix: bool, template_id: u16, fields: &[Field]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(template_id.to_be_bytes());
    body.extend((fields.len() as u16).to_be_bytes());
    for &(id, length, enterprise) in fields {
        if enterprise == 0 {
            body.extend(id.to_be_bytes());
            body.extend(length.to_be_bytes());
        } else {
            body.extend((id | 0x8000).to_be_bytes());
            body.extend(length.to_be_bytes());
            body.extend(enterprise.to_be_bytes());
        }
    }
    set(if ipfix { 2 } else { 0 }, &body)
}

fn set(set_id: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(set_id.to_be_bytes());
    out.extend((body.len() as u16 + 4).to_be_bytes());
    out.extend(body);
    out
}

/// A data set of `records`, each a list of 4-byte values after the source address.
fn data_set(template_id: u16, records: &[Vec<u32>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (index, values) in records.iter().enumerate() {
        body.extend([198, 51, 100, index as u8]);
        for value in values {
            body.extend(value.to_be_bytes());
        }
    }
    set(template_id, &body)
}

/// A NetFlow v9 (`ipfix` false) or IPFIX export packet holding `sets`.
fn export_packet(ipfix: bool, sequence: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = sets.concat();
    let mut out = Vec::new();
    if ipfix {
        out.extend(10u16.to_be_bytes());
        out.extend((body.len() as u16 + 16).to_be_bytes());
        out.extend(1_790_000_000u32.to_be_bytes()); // export time
        out.extend(sequence.to_be_bytes());
        out.extend(7u32.to_be_bytes()); // observation domain
    } else {
        out.extend(9u16.to_be_bytes());
        out.extend((sets.len() as u16).to_be_bytes());
        out.extend(3_600_000u32.to_be_bytes()); // uptime
        out.extend(1_790_000_000u32.to_be_bytes()); // export time
        out.extend(sequence.to_be_bytes());
        out.extend(7u32.to_be_bytes()); // source id
    }
    out.extend(body);
    out
}

/// A classic pcap (Ethernet) of UDP datagrams from 192.0.2.9 to the collector port.
fn write_pcap(path: &Path, datagrams: &[Vec<u8>]) {
    let mut file = Vec::new();
    file.extend(0xa1b2_c3d4u32.to_le_bytes());
    file.extend(2u16.to_le_bytes());
    file.extend(4u16.to_le_bytes());
    file.extend([0u8; 8]);
    file.extend(65_535u32.to_le_bytes());
    file.extend(1u32.to_le_bytes()); // Ethernet
    for (index, datagram) in datagrams.iter().enumerate() {
        let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        let ip_length = 20 + 8 + datagram.len() as u16;
        frame.extend([0x45, 0]);
        frame.extend(ip_length.to_be_bytes());
        frame.extend([0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 9, 192, 0, 2, 1]);
        frame.extend(4000u16.to_be_bytes());
        frame.extend(COLLECTOR_PORT.to_be_bytes());
        frame.extend((8 + datagram.len() as u16).to_be_bytes());
        frame.extend([0, 0]);
        frame.extend(datagram);
        file.extend((1_790_000_000u32 + index as u32).to_le_bytes());
        file.extend(0u32.to_le_bytes());
        file.extend((frame.len() as u32).to_le_bytes());
        file.extend((frame.len() as u32).to_le_bytes());
        file.extend(frame);
    }
    std::fs::write(path, file).expect("write pcap");
}

/// Per packet, the values TShark shows for `field` (every occurrence, in order).
fn tshark_values(pcap: &Path, fields: &[&str]) -> Vec<Vec<Vec<u64>>> {
    let mut command = Command::new("tshark");
    command
        .arg("-r")
        .arg(pcap)
        .args(["-d", &format!("udp.port=={COLLECTOR_PORT},cflow"), "-T", "fields"])
        .args(["-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=;"]);
    for field in fields {
        command.args(["-e", field]);
    }
    let output = command
        .output()
        .expect("tshark runs (scripts/install-deps.sh installs it)");
    assert!(
        output.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            line.split(';')
                .map(|column| {
                    column
                        .split(',')
                        .filter(|v| !v.is_empty())
                        .map(|v| v.parse().unwrap_or_else(|_| panic!("tshark value {v:?}")))
                        .collect()
                })
                .collect()
        })
        .collect()
}

type Latency = (Option<u32>, Option<u32>, Option<u32>, RttSource);

#[test]
fn latency_elements_match_what_tshark_shows() {
    let mut values = Values(0x9e37_79b9_7f4a_7c15);
    let mut random_records = |count: usize, columns: usize, bound: u32| -> Vec<Vec<u32>> {
        (0..count)
            .map(|_| (0..columns).map(|_| values.next_below(bound)).collect())
            .collect()
    };
    let nprobe_v9 = random_records(RECORDS_PER_SET, 3, 5_000);
    let nprobe_ipfix = random_records(RECORDS_PER_SET, 3, 5_000);
    // Cisco: counts 0-9 (0 makes the mean unknown), sums up to 20 s.
    let cisco: Vec<Vec<u32>> = random_records(RECORDS_PER_SET, 5, 20_000)
        .into_iter()
        .map(|mut r| {
            r[0] %= 10;
            r[4] %= 10;
            r
        })
        .collect();
    let netscaler = random_records(RECORDS_PER_SET, 1, 5_000);

    let datagrams = vec![
        export_packet(
            false,
            1,
            &[template_set(false, 300, NPROBE_V9), data_set(300, &nprobe_v9)],
        ),
        export_packet(
            true,
            1,
            &[
                template_set(true, 301, NPROBE_IPFIX),
                data_set(301, &nprobe_ipfix),
            ],
        ),
        export_packet(
            true,
            2,
            &[template_set(true, 302, CISCO_ART), data_set(302, &cisco)],
        ),
        export_packet(
            true,
            3,
            &[template_set(true, 303, NETSCALER), data_set(303, &netscaler)],
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let pcap = dir.path().join("latency-elements.pcap");
    write_pcap(&pcap, &datagrams);

    let shown = tshark_values(
        &pcap,
        &[
            "cflow.pie.ntop.client_nw_latency_ms",
            "cflow.pie.server_nw_latency_ms",
            "cflow.pie.ntop.appl_latency_ms",
            "cflow.pie.cisco.connection_delay_network_to-client_sum",
            "cflow.pie.cisco.connection_delay_network_to_server_sum",
            "cflow.pie.cisco.connection_delay_response_to_server_sum",
            // Wireshark's own spelling ("ciso") of the field name.
            "cflow.pie.ciso.connection_server_counter_responses",
            "cflow.pie.netscaler.round-trip-time",
            // IANA 278 connectionCountNew.
            "cflow.new_connection_delta_count",
        ],
    );
    assert_eq!(shown.len(), 4, "one line per packet: {shown:?}");

    // What the columns must hold, built from TShark's values (not from what was encoded).
    let ms = |v: u64| Some(v as u32 * 1000);
    let mut expected: Vec<Latency> = Vec::new();
    for packet in &shown[..2] {
        assert_eq!(
            packet[0].len(),
            RECORDS_PER_SET,
            "tshark shows every nProbe record: {packet:?}"
        );
        expected.extend((0..RECORDS_PER_SET).map(|i| {
            (
                ms(packet[0][i]),
                ms(packet[1][i]),
                ms(packet[2][i]),
                RttSource::Nprobe,
            )
        }));
    }
    let cisco_shown = &shown[2];
    assert_eq!(
        cisco_shown[3].len(),
        RECORDS_PER_SET,
        "tshark shows every Cisco record: {cisco_shown:?}"
    );
    let mean = |sum: u64, count: u64| (count > 0).then(|| (sum * 1000 / count) as u32);
    expected.extend((0..RECORDS_PER_SET).map(|i| {
        let new_connections = cisco_shown[8][i];
        (
            mean(cisco_shown[3][i], new_connections),
            mean(cisco_shown[4][i], new_connections),
            mean(cisco_shown[5][i], cisco_shown[6][i]),
            RttSource::CiscoArt,
        )
    }));
    for &rtt in &shown[3][7] {
        expected.push((ms(rtt), None, None, RttSource::Netscaler));
    }
    // Cisco records whose counts are both 0 carry no usable latency at all.
    let expected: Vec<Latency> = expected
        .into_iter()
        .map(|l| {
            if l.0.is_none() && l.1.is_none() && l.2.is_none() {
                (None, None, None, RttSource::None)
            } else {
                l
            }
        })
        .collect();

    let decoded = decode_capture(&pcap, &DecoderConfig::default()).expect("decode");
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let got: Vec<Latency> = decoded
        .flows
        .iter()
        .map(|f| (f.rtt_client_us, f.rtt_server_us, f.rtt_app_us, f.rtt_source))
        .collect();
    assert_eq!(got.len(), 4 * RECORDS_PER_SET);
    for (index, (got, expected)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got, expected, "record {index}");
    }
    let with_latency = got.iter().filter(|l| l.3 != RttSource::None).count();
    println!(
        "latency elements: {} records decoded, {with_latency} with latency, all equal to tshark's",
        got.len()
    );
}
