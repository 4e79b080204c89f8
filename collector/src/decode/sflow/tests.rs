//! Unit tests of the sFlow decoder with hand-built datagrams.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sflow_parser::models::HeaderProtocol;

use super::*;

fn exporter() -> IpAddr {
    IpAddr::from([192, 0, 2, 1])
}

/// Compact flow sample (format 1) of an Ethernet frame with an 802.1Q tag (VLAN 100),
/// IPv6 (traffic class 0xb8) and TCP 50000 -> 443 with PSH+ACK.
#[rustfmt::skip]
const COMPACT_FLOW_VLAN_IPV6_TCP: [u8; 172] = [
    0x00, 0x00, 0x00, 0x05, // version 5
    0x00, 0x00, 0x00, 0x01, // agent address type: IPv4
    0xc0, 0x00, 0x02, 0x01, // agent address 192.0.2.1
    0x00, 0x00, 0x00, 0x07, // sub_agent_id 7
    0x00, 0x00, 0x00, 0x2a, // datagram sequence number 42
    0x00, 0x00, 0x03, 0xe8, // uptime 1000 ms
    0x00, 0x00, 0x00, 0x01, // 1 sample
    // -- sample at byte 28
    0x00, 0x00, 0x00, 0x01, // data_format 0:1, flow sample
    0x00, 0x00, 0x00, 0x88, // sample length 136
    0x00, 0x00, 0x00, 0x64, // sample sequence number 100
    0x00, 0x00, 0x00, 0x05, // source_id: type 0 (ifIndex), index 5
    0x00, 0x00, 0x01, 0x00, // sampling_rate 256
    0x00, 0x01, 0x00, 0x00, // sample_pool
    0x00, 0x00, 0x00, 0x00, // drops 0
    0x00, 0x00, 0x00, 0x05, // input ifIndex 5
    0x00, 0x00, 0x00, 0x09, // output ifIndex 9
    0x00, 0x00, 0x00, 0x01, // 1 flow record
    // -- flow record at byte 68
    0x00, 0x00, 0x00, 0x01, // data_format 0:1, sampled_header
    0x00, 0x00, 0x00, 0x60, // record length 96
    0x00, 0x00, 0x00, 0x01, // header_protocol 1: Ethernet
    0x00, 0x00, 0x05, 0xee, // frame_length 1518
    0x00, 0x00, 0x00, 0x04, // stripped 4 (FCS)
    0x00, 0x00, 0x00, 0x4e, // header length 78
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination MAC
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source MAC
    0x81, 0x00,             // EtherType 802.1Q
    0x00, 0x64,             // TCI: priority 0, VLAN 100
    0x86, 0xdd,             // EtherType IPv6
    0x6b, 0x80, 0x00, 0x00, // IPv6: version 6, traffic class 0xb8, flow label 0
    0x05, 0xc8,             // payload length 1480
    0x06,                   // next header: TCP
    0x40,                   // hop limit 64
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // source 2001:db8::1
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, // destination 2001:db8::2
    0xc3, 0x50,             // TCP source port 50000
    0x01, 0xbb,             // TCP destination port 443
    0x00, 0x00, 0x00, 0x01, // sequence number
    0x00, 0x00, 0x00, 0x01, // acknowledgment number
    0x50, 0x18,             // data offset 5, flags PSH+ACK
    0xff, 0xff,             // window
    0x00, 0x00,             // checksum
    0x00, 0x00,             // urgent pointer
    0x00, 0x00,             // XDR padding of the 78-byte header
];

/// Offsets inside [`COMPACT_FLOW_VLAN_IPV6_TCP`].
const DATAGRAM_SEQUENCE_AT: usize = 16;
const SAMPLE_COUNT_AT: usize = 24;
const SAMPLE_AT: usize = 28;
const SAMPLE_SEQUENCE_AT: usize = 36;
const DROPS_AT: usize = 52;
const INPUT_AT: usize = 56;
const OUTPUT_AT: usize = 60;
const HEADER_PROTOCOL_AT: usize = 76;

/// Expanded flow sample (format 3) with sampled_ipv4, extended_switch, extended_router and
/// extended_gateway records, from an agent with an IPv6 address.
#[rustfmt::skip]
const EXPANDED_FLOW_IPV4_RECORDS: [u8; 236] = [
    0x00, 0x00, 0x00, 0x05, // version 5
    0x00, 0x00, 0x00, 0x02, // agent address type: IPv6
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, // agent address 2001:db8::a
    0x00, 0x00, 0x00, 0x00, // sub_agent_id 0
    0x00, 0x00, 0x00, 0x01, // datagram sequence number 1
    0x00, 0x00, 0x03, 0xe8, // uptime
    0x00, 0x00, 0x00, 0x01, // 1 sample
    0x00, 0x00, 0x00, 0x03, // data_format 0:3, expanded flow sample
    0x00, 0x00, 0x00, 0xbc, // sample length 188
    0x00, 0x00, 0x00, 0x0a, // sample sequence number 10
    0x00, 0x00, 0x00, 0x00, // source_id_type 0
    0x00, 0x01, 0x00, 0x00, // source_id_index 65536
    0x00, 0x00, 0x03, 0xe8, // sampling_rate 1000
    0x00, 0x00, 0x10, 0x00, // sample_pool
    0x00, 0x00, 0x00, 0x00, // drops
    0x00, 0x00, 0x00, 0x00, // input format 0 (ifIndex)
    0x00, 0x00, 0x71, 0x49, // input ifIndex 29001
    0x00, 0x00, 0x00, 0x00, // output format 0 (ifIndex)
    0x4c, 0xa4, 0x01, 0x91, // output ifIndex 1285816721
    0x00, 0x00, 0x00, 0x04, // 4 flow records
    0x00, 0x00, 0x00, 0x03, // data_format 0:3, sampled_ipv4
    0x00, 0x00, 0x00, 0x20, // record length 32
    0x00, 0x00, 0x05, 0xdc, // IP length 1500
    0x00, 0x00, 0x00, 0x11, // protocol 17 (UDP)
    0xc6, 0x33, 0x64, 0x01, // source 198.51.100.1
    0xcb, 0x00, 0x71, 0x02, // destination 203.0.113.2
    0x00, 0x00, 0x00, 0x35, // source port 53
    0x00, 0x00, 0xd4, 0x31, // destination port 54321
    0x00, 0x00, 0x00, 0x00, // TCP flags
    0x00, 0x00, 0x00, 0x20, // ToS 0x20
    0x00, 0x00, 0x03, 0xe9, // data_format 0:1001, extended_switch
    0x00, 0x00, 0x00, 0x10, // record length 16
    0x00, 0x00, 0x00, 0xc8, // src_vlan 200
    0x00, 0x00, 0x00, 0x00, // src_priority
    0x00, 0x00, 0x01, 0x2c, // dst_vlan 300
    0x00, 0x00, 0x00, 0x00, // dst_priority
    0x00, 0x00, 0x03, 0xea, // data_format 0:1002, extended_router
    0x00, 0x00, 0x00, 0x10, // record length 16
    0x00, 0x00, 0x00, 0x01, // next hop address type: IPv4
    0xc0, 0x00, 0x02, 0xfe, // next hop 192.0.2.254
    0x00, 0x00, 0x00, 0x18, // src_mask 24
    0x00, 0x00, 0x00, 0x10, // dst_mask 16
    0x00, 0x00, 0x03, 0xeb, // data_format 0:1003, extended_gateway
    0x00, 0x00, 0x00, 0x30, // record length 48
    0x00, 0x00, 0x00, 0x01, // next hop address type: IPv4
    0xc0, 0x00, 0x02, 0xfd, // next hop 192.0.2.253
    0x00, 0x00, 0xfd, 0xe8, // as 65000 (the router's)
    0x00, 0x00, 0xfd, 0xe9, // src_as 65001
    0x00, 0x00, 0xfd, 0xea, // src_peer_as 65002
    0x00, 0x00, 0x00, 0x01, // 1 AS path segment
    0x00, 0x00, 0x00, 0x02, // segment type AS_SEQUENCE
    0x00, 0x00, 0x00, 0x02, // 2 ASes
    0x00, 0x00, 0xfd, 0xeb, // 65003
    0x00, 0x00, 0xfd, 0xec, // 65004
    0x00, 0x00, 0x00, 0x00, // 0 communities
    0x00, 0x00, 0x00, 0x64, // localpref 100
];

/// Compact counter sample (format 2) with generic interface counters and Ethernet counters.
#[rustfmt::skip]
const COUNTER_SAMPLE: [u8; 204] = [
    0x00, 0x00, 0x00, 0x05, // version 5
    0x00, 0x00, 0x00, 0x01, // agent address type: IPv4
    0xc0, 0x00, 0x02, 0x02, // agent address 192.0.2.2 (not the datagram source)
    0x00, 0x00, 0x00, 0x01, // sub_agent_id 1
    0x00, 0x00, 0x00, 0x09, // datagram sequence number 9
    0x00, 0x00, 0x03, 0xe8, // uptime
    0x00, 0x00, 0x00, 0x01, // 1 sample
    0x00, 0x00, 0x00, 0x02, // data_format 0:2, counter sample
    0x00, 0x00, 0x00, 0xa8, // sample length 168
    0x00, 0x00, 0x00, 0x03, // sample sequence number 3
    0x00, 0x00, 0x00, 0x0c, // source_id: type 0, ifIndex 12
    0x00, 0x00, 0x00, 0x02, // 2 counter records
    0x00, 0x00, 0x00, 0x01, // data_format 0:1, generic interface counters
    0x00, 0x00, 0x00, 0x58, // record length 88
    0x00, 0x00, 0x00, 0x0c, // ifIndex 12
    0x00, 0x00, 0x00, 0x06, // ifType 6 (ethernetCsmacd)
    0x00, 0x00, 0x00, 0x02, 0x54, 0x0b, 0xe4, 0x00, // ifSpeed 10 Gbit/s
    0x00, 0x00, 0x00, 0x01, // ifDirection 1 (full duplex)
    0x00, 0x00, 0x00, 0x03, // ifStatus admin up, oper up
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // ifInOctets 2^32
    0x00, 0x00, 0x03, 0xe8, // ifInUcastPkts 1000
    0x00, 0x00, 0x00, 0x0a, // ifInMulticastPkts 10
    0x00, 0x00, 0x00, 0x02, // ifInBroadcastPkts 2
    0x00, 0x00, 0x00, 0x01, // ifInDiscards 1
    0x00, 0x00, 0x00, 0x00, // ifInErrors 0
    0x00, 0x00, 0x00, 0x00, // ifInUnknownProtos 0
    0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x42, 0x40, // ifOutOctets 1000000
    0x00, 0x00, 0x07, 0xd0, // ifOutUcastPkts 2000
    0x00, 0x00, 0x00, 0x14, // ifOutMulticastPkts 20
    0x00, 0x00, 0x00, 0x03, // ifOutBroadcastPkts 3
    0x00, 0x00, 0x00, 0x00, // ifOutDiscards 0
    0x00, 0x00, 0x00, 0x05, // ifOutErrors 5
    0x00, 0x00, 0x00, 0x00, // ifPromiscuousMode 0
    0x00, 0x00, 0x00, 0x02, // data_format 0:2, Ethernet interface counters (ignored)
    0x00, 0x00, 0x00, 0x34, // record length 52
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, // 13 zero counters
];

fn with_word(datagram: &[u8], at: usize, value: u32) -> Vec<u8> {
    let mut bytes = datagram.to_vec();
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
    bytes
}

struct Run {
    decoder: SflowDecoder,
    accounting: Accounting,
    out: DecodeOutput,
}

impl Run {
    fn new() -> Self {
        Self {
            decoder: SflowDecoder::new(&DecoderConfig::default()),
            accounting: Accounting::default(),
            out: DecodeOutput::default(),
        }
    }

    fn decode(&mut self, payload: &[u8]) -> Result<()> {
        self.out.clear();
        self.decoder.decode(
            exporter(),
            1_700_000_000,
            payload,
            &mut self.accounting,
            &mut self.out,
        )
    }
}

#[test]
fn compact_flow_sample_with_vlan_ipv6_tcp_header() {
    let mut run = Run::new();
    run.decode(&COMPACT_FLOW_VLAN_IPV6_TCP).unwrap();
    assert!(run.out.errors.is_empty(), "{:?}", run.out.errors);
    assert_eq!(run.out.flows.len(), 1);
    let flow = &run.out.flows[0];
    let expected = FlowRecord {
        observation_domain: 7,
        sampling_rate: 256,
        sampling_source: SamplingSource::Sflow,
        src_addr: "2001:db8::1".parse().unwrap(),
        dst_addr: "2001:db8::2".parse().unwrap(),
        src_port: 50000,
        dst_port: 443,
        proto: 6,
        bytes: 1518,
        packets: 1,
        in_if: 5,
        out_if: 9,
        tcp_flags: 0x18,
        tos: 0xb8,
        vlan: 100,
        etype: 0x86dd,
        ..FlowRecord::new(exporter(), 1_700_000_000, FlowType::Sflow5)
    };
    assert_eq!(flow, &expected);
    let rows = run.accounting.drain(0);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].observation_domain, rows[0].datagrams, rows[0].records),
        (7, 1, 1)
    );
}

#[test]
fn expanded_flow_sample_with_sampled_ipv4_and_extended_records() {
    let mut run = Run::new();
    run.decode(&EXPANDED_FLOW_IPV4_RECORDS).unwrap();
    assert!(run.out.errors.is_empty(), "{:?}", run.out.errors);
    assert_eq!(run.out.flows.len(), 1);
    let flow = &run.out.flows[0];
    let expected = FlowRecord {
        observation_domain: 0,
        sampling_rate: 1000,
        sampling_source: SamplingSource::Sflow,
        src_addr: Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped(),
        dst_addr: Ipv4Addr::new(203, 0, 113, 2).to_ipv6_mapped(),
        src_port: 53,
        dst_port: 54321,
        proto: 17,
        bytes: 1500,
        packets: 1,
        in_if: 29001,
        out_if: 1_285_816_721,
        src_as: 65001,
        dst_as: 65004,
        src_mask: 24,
        dst_mask: 16,
        next_hop: Ipv4Addr::new(192, 0, 2, 254).to_ipv6_mapped(),
        tos: 0x20,
        vlan: 200,
        etype: 0x0800,
        ..FlowRecord::new(exporter(), 1_700_000_000, FlowType::Sflow5)
    };
    assert_eq!(flow, &expected);
}

#[test]
fn counter_sample_gives_one_interface_counter_record() {
    let mut run = Run::new();
    run.decode(&COUNTER_SAMPLE).unwrap();
    assert!(run.out.errors.is_empty(), "{:?}", run.out.errors);
    assert!(run.out.flows.is_empty());
    assert_eq!(
        run.out.counters.len(),
        1,
        "the Ethernet counters record is skipped"
    );
    let expected = InterfaceCounterRecord {
        time_received: 1_700_000_000,
        exporter_address: to_v6(exporter()),
        agent_address: Ipv4Addr::new(192, 0, 2, 2).to_ipv6_mapped(),
        sub_agent_id: 1,
        sequence_number: 9,
        if_index: 12,
        if_type: 6,
        if_speed: 10_000_000_000,
        if_direction: 1,
        if_status: 3,
        in_octets: 1 << 32,
        in_ucast_pkts: 1000,
        in_multicast_pkts: 10,
        in_broadcast_pkts: 2,
        in_discards: 1,
        in_errors: 0,
        in_unknown_protos: 0,
        out_octets: 1_000_000,
        out_ucast_pkts: 2000,
        out_multicast_pkts: 20,
        out_broadcast_pkts: 3,
        out_discards: 0,
        out_errors: 5,
        promiscuous_mode: 0,
    };
    assert_eq!(run.out.counters[0], expected);
    let rows = run.accounting.drain(0);
    assert_eq!(
        (rows[0].datagrams, rows[0].records, rows[0].records_lost),
        (1, 0, 0)
    );
}

#[test]
fn interface_fields_that_name_no_interface_are_zero() {
    let cases = [
        (0x0000_001b, 27), // ifIndex 27
        (0x3fff_ffff, 0),  // the device itself
        (0x4000_0001, 0),  // discarded, reason 1
        (0x8000_0007, 0),  // 7 output interfaces
        (0x0000_0000, 0),  // unknown
    ];
    for (field, if_index) in cases {
        let mut run = Run::new();
        run.decode(&with_word(&COMPACT_FLOW_VLAN_IPV6_TCP, OUTPUT_AT, field))
            .unwrap();
        assert_eq!(run.out.flows[0].out_if, if_index, "output field {field:#x}");
        assert_eq!(compact_if_index(Interface(field)), if_index);
    }
    assert_eq!(
        expanded_if_index(InterfaceExpanded {
            format: 0,
            value: 0xffff_ffff
        }),
        0
    );
    assert_eq!(expanded_if_index(InterfaceExpanded { format: 1, value: 3 }), 0);
    assert_eq!(
        expanded_if_index(InterfaceExpanded {
            format: 0,
            value: 0x3fff_ffff
        }),
        0x3fff_ffff
    );
    let mut run = Run::new();
    run.decode(&with_word(&COMPACT_FLOW_VLAN_IPV6_TCP, INPUT_AT, 0x3fff_ffff))
        .unwrap();
    assert_eq!((run.out.flows[0].in_if, run.out.flows[0].out_if), (0, 9));
}

#[test]
fn sampling_rate_zero_is_stored_as_one_unknown() {
    let mut run = Run::new();
    run.decode(&with_word(&COMPACT_FLOW_VLAN_IPV6_TCP, 44, 0))
        .unwrap();
    let flow = &run.out.flows[0];
    assert_eq!(
        (flow.sampling_rate, flow.sampling_source),
        (1, SamplingSource::Unknown)
    );
}

#[test]
fn truncated_datagrams_are_errors_and_never_records() {
    for len in 0..COMPACT_FLOW_VLAN_IPV6_TCP.len() {
        let mut run = Run::new();
        let result = run.decode(&COMPACT_FLOW_VLAN_IPV6_TCP[..len]);
        assert!(run.out.flows.is_empty(), "a record from {len} bytes");
        if len < SAMPLE_AT {
            let error = result.expect_err("a header cut short is an error");
            assert_eq!(error.kind, DecodeErrorKind::Truncated, "{len} bytes: {error}");
            assert_eq!(error.offset, len / 4 * 4, "offset of the missing field");
        } else {
            result.unwrap();
            assert_eq!(run.out.errors.len(), 1, "{len} bytes");
            assert_eq!(run.out.errors[0].kind, DecodeErrorKind::Truncated);
            assert_eq!(run.out.errors[0].offset, SAMPLE_AT);
        }
        let rows = run.accounting.drain(0);
        let errors: u64 = rows.iter().flat_map(|r| r.decode_error_counts.iter()).sum();
        assert_eq!(errors, 1, "every error is counted once ({len} bytes)");
    }
}

#[test]
fn unknown_agent_address_type_is_malformed() {
    let mut run = Run::new();
    let error = run
        .decode(&with_word(&COMPACT_FLOW_VLAN_IPV6_TCP, 4, 3))
        .unwrap_err();
    assert_eq!((error.kind, error.offset), (DecodeErrorKind::Malformed, 4));
    assert_eq!(error.exporter, exporter());
}

#[test]
fn one_bad_sample_is_reported_and_the_others_are_kept() {
    let bad_sample = with_word(&COMPACT_FLOW_VLAN_IPV6_TCP, HEADER_PROTOCOL_AT, 99);
    let mut datagram = with_word(&COMPACT_FLOW_VLAN_IPV6_TCP[..SAMPLE_AT], SAMPLE_COUNT_AT, 2);
    datagram.extend_from_slice(&bad_sample[SAMPLE_AT..]);
    datagram.extend_from_slice(&COMPACT_FLOW_VLAN_IPV6_TCP[SAMPLE_AT..]);
    let mut run = Run::new();
    run.decode(&datagram).unwrap();
    assert_eq!(run.out.flows.len(), 1);
    assert_eq!(run.out.errors.len(), 1);
    let error = &run.out.errors[0];
    assert_eq!(
        (error.kind, error.offset),
        (DecodeErrorKind::SflowSample, SAMPLE_AT)
    );
    assert!(error.detail.contains("99"), "{}", error.detail);
    let rows = run.accounting.drain(0);
    assert_eq!(rows[0].decode_error_kinds, vec!["sflow_sample".to_owned()]);
    assert_eq!(rows[0].records, 1);
}

#[test]
fn unknown_sample_formats_are_skipped_without_error() {
    // The sample becomes an enterprise 4300 sample, which Egress does not read.
    let datagram = with_word(&COMPACT_FLOW_VLAN_IPV6_TCP, SAMPLE_AT, 4300 << 12 | 1);
    let mut run = Run::new();
    run.decode(&datagram).unwrap();
    assert!(run.out.flows.is_empty() && run.out.errors.is_empty());
}

fn flow_datagram(datagram_sequence: u32, sample_sequence: u32, drops: u32) -> Vec<u8> {
    let datagram = with_word(
        &COMPACT_FLOW_VLAN_IPV6_TCP,
        DATAGRAM_SEQUENCE_AT,
        datagram_sequence,
    );
    let datagram = with_word(&datagram, SAMPLE_SEQUENCE_AT, sample_sequence);
    with_word(&datagram, DROPS_AT, drops)
}

fn records_lost(run: &mut Run) -> u64 {
    run.accounting.drain(0).iter().map(|row| row.records_lost).sum()
}

#[test]
fn sample_sequence_gaps_and_drops_are_lost_records() {
    let mut run = Run::new();
    run.decode(&flow_datagram(1, 100, 0)).unwrap();
    run.decode(&flow_datagram(2, 101, 0)).unwrap();
    assert_eq!(records_lost(&mut run), 0);
    // Samples 102..=104 lost with datagrams 3 and 4: three records, counted once.
    run.decode(&flow_datagram(5, 105, 0)).unwrap();
    assert_eq!(records_lost(&mut run), 3);
    // The agent could not send 2 samples.
    run.decode(&flow_datagram(6, 106, 2)).unwrap();
    assert_eq!(records_lost(&mut run), 2);
    // A late sample is no loss and does not move the window back.
    run.decode(&flow_datagram(4, 103, 2)).unwrap();
    run.decode(&flow_datagram(7, 107, 2)).unwrap();
    assert_eq!(records_lost(&mut run), 0);
    // An agent restart (sequence and drops back near 0) is no loss either.
    run.decode(&flow_datagram(1, 5_000_000, 2)).unwrap();
    run.decode(&flow_datagram(1, 1, 0)).unwrap();
    run.decode(&flow_datagram(2, 2, 0)).unwrap();
    assert_eq!(records_lost(&mut run), 0);
}

#[test]
fn sources_are_tracked_apart_and_capped_per_exporter() {
    let mut run = Run::new();
    let source = |index: u32, sequence: u32| {
        let datagram = with_word(&COMPACT_FLOW_VLAN_IPV6_TCP, 40, index);
        with_word(&datagram, SAMPLE_SEQUENCE_AT, sequence)
    };
    run.decode(&source(1, 10)).unwrap();
    run.decode(&source(2, 500)).unwrap();
    run.decode(&source(1, 11)).unwrap();
    run.decode(&source(2, 502)).unwrap();
    assert_eq!(records_lost(&mut run), 1);
    for index in 0..MAX_SOURCES_PER_EXPORTER as u32 + 10 {
        run.decode(&source(index + 10, 1)).unwrap();
    }
    assert_eq!(run.decoder.sources[&exporter()].len(), MAX_SOURCES_PER_EXPORTER);
}

#[test]
fn raw_ipv4_header_and_icmp_type_code() {
    #[rustfmt::skip]
    let raw_ipv4_icmp: [u8; 28] = [
        0x45, 0x08, 0x00, 0x54, // IPv4, IHL 5, ToS 8, total length 84
        0x00, 0x00, 0x40, 0x00, // identification, don't fragment
        0x40, 0x01, 0x00, 0x00, // TTL 64, protocol ICMP, checksum
        0xc6, 0x33, 0x64, 0x07, // source 198.51.100.7
        0xc6, 0x33, 0x64, 0x08, // destination 198.51.100.8
        0x03, 0x01, 0x00, 0x00, // ICMP type 3 (unreachable), code 1, checksum
        0x00, 0x00, 0x00, 0x00, // unused
    ];
    let summary = header::summarise(HeaderProtocol::Ipv4, &raw_ipv4_icmp);
    let network = summary.network.expect("an IPv4 header");
    assert_eq!(network.src_addr, IpAddr::from([198, 51, 100, 7]));
    assert_eq!(
        (network.proto, network.tos, network.dst_port, network.etype),
        (1, 8, 3 * 256 + 1, 0x0800)
    );
}

#[test]
fn mpls_label_stack_is_skipped() {
    #[rustfmt::skip]
    let mpls_ipv6_udp: [u8; 56] = [
        0x00, 0x01, 0x40, 0x40, // label 20, not bottom of stack
        0x00, 0x02, 0x51, 0x40, // label 37, bottom of stack
        0x60, 0x00, 0x00, 0x00, // IPv6
        0x00, 0x08, 0x11, 0x40, // payload length 8, UDP, hop limit 64
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05, // 2001:db8::5
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x06, // 2001:db8::6
        0x12, 0x34, 0x00, 0x35, // UDP 4660 -> 53
        0x00, 0x08, 0x00, 0x00, // length, checksum
    ];
    let network = header::summarise(HeaderProtocol::Mpls, &mpls_ipv6_udp)
        .network
        .expect("IPv6 under MPLS");
    assert_eq!(
        network.dst_addr,
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 6))
    );
    assert_eq!(
        (network.proto, network.src_port, network.dst_port),
        (17, 4660, 53)
    );
}

/// Truncations, byte mutations and random bytes: the decoder returns, it never panics.
#[test]
fn never_panics_on_mutated_datagrams() {
    let seeds: [&[u8]; 3] = [
        &COMPACT_FLOW_VLAN_IPV6_TCP,
        &EXPANDED_FLOW_IPV4_RECORDS,
        &COUNTER_SAMPLE,
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut run = Run::new();
    for seed in seeds {
        for len in 0..=seed.len() {
            let _ = run.decode(&seed[..len]);
        }
        for _ in 0..3000 {
            let mut datagram = seed.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % datagram.len() as u64) as usize;
                datagram[at] = next() as u8;
            }
            let len = if next() % 4 == 0 {
                (next() % datagram.len() as u64) as usize
            } else {
                datagram.len()
            };
            let _ = run.decode(&datagram[..len]);
        }
    }
    for _ in 0..3000 {
        let len = (next() % 300) as usize;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if datagram.len() >= 4 {
            datagram[..4].copy_from_slice(&[0, 0, 0, 5]);
        }
        let _ = run.decode(&datagram);
    }
}

#[test]
fn switch_vlan_falls_back_to_the_outgoing_vlan() {
    const SRC_VLAN_AT: usize = 140;
    for (src_vlan, vlan) in [(200, 200), (0, 300), (0xffff_ffff, 300)] {
        let mut run = Run::new();
        run.decode(&with_word(&EXPANDED_FLOW_IPV4_RECORDS, SRC_VLAN_AT, src_vlan))
            .unwrap();
        assert_eq!(run.out.flows[0].vlan, vlan, "src_vlan {src_vlan:#x}");
    }
}

/// An `extended_tcp_info` flow record (0:2209) with the given smoothed `rtt` (µs).
fn extended_tcp_info(rtt_us: u32) -> Vec<u8> {
    let mut record = vec![
        0x00, 0x00, 0x08, 0xa1, // data_format 0:2209, extended_tcp_info
        0x00, 0x00, 0x00, 0x30, // record length 48
        0x00, 0x00, 0x00, 0x01, // dir 1: received
        0x00, 0x00, 0x05, 0xa8, // snd_mss 1448
        0x00, 0x00, 0x05, 0xa8, // rcv_mss 1448
        0x00, 0x00, 0x00, 0x02, // unacked
        0x00, 0x00, 0x00, 0x00, // lost
        0x00, 0x00, 0x00, 0x01, // retrans
        0x00, 0x00, 0x05, 0xdc, // pmtu 1500
    ];
    record.extend_from_slice(&rtt_us.to_be_bytes()); // rtt
    record.extend_from_slice(&[
        0x00, 0x00, 0x01, 0xf4, // rttvar 500 µs
        0x00, 0x00, 0x00, 0x0a, // snd_cwnd
        0x00, 0x00, 0x00, 0x03, // reordering
        0x00, 0x00, 0x4e, 0x20, // min_rtt 20 000 µs
    ]);
    record
}

/// [`COMPACT_FLOW_VLAN_IPV6_TCP`] with `record` appended to its sample as a second flow record.
fn with_second_flow_record(record: &[u8]) -> Vec<u8> {
    let sample_length = 136 + record.len() as u32;
    let mut datagram = with_word(&COMPACT_FLOW_VLAN_IPV6_TCP, SAMPLE_AT + 4, sample_length);
    datagram = with_word(&datagram, SAMPLE_AT + 36, 2); // 2 flow records
    datagram.extend_from_slice(record);
    datagram
}

#[test]
fn extended_tcp_info_rtt_is_stored_and_zero_means_not_measured() {
    let mut run = Run::new();
    let rtt = |run: &Run| {
        let flow = &run.out.flows[0];
        (
            flow.rtt_client_us,
            flow.rtt_server_us,
            flow.rtt_app_us,
            flow.rtt_source,
        )
    };
    run.decode(&with_second_flow_record(&extended_tcp_info(23_456)))
        .unwrap();
    assert!(run.out.errors.is_empty(), "{:?}", run.out.errors);
    assert_eq!(run.out.flows.len(), 1);
    assert_eq!(run.out.flows[0].dst_port, 443, "the sampled header is still read");
    assert_eq!(rtt(&run), (Some(23_456), None, None, RttSource::SflowTcpInfo));

    run.decode(&with_second_flow_record(&extended_tcp_info(0)))
        .unwrap();
    assert_eq!(rtt(&run), (None, None, None, RttSource::None));

    run.decode(&COMPACT_FLOW_VLAN_IPV6_TCP).unwrap();
    assert_eq!(rtt(&run), (None, None, None, RttSource::None));
}

#[test]
fn source_state_survives_a_restore_and_the_downtime_is_not_loss() {
    let mut before = Run::new();
    before.decode(&flow_datagram(1, 100, 0)).unwrap();
    let exported = before.decoder.export_state();
    assert_eq!(exported.len(), 1);
    assert_eq!(
        (
            exported[0].sub_agent_id,
            exported[0].source_index,
            exported[0].next_sequence
        ),
        (7, 5, 101)
    );

    let mut after = Run::new();
    assert_eq!(after.decoder.import_state(&exported, 1_700_000_060), 1);
    assert_eq!(after.decoder.export_state(), exported);
    // Samples 101..=109 and 3 agent drops happened while the collector was stopped.
    after.decode(&flow_datagram(20, 110, 3)).unwrap();
    assert_eq!(records_lost(&mut after), 0);
    assert_eq!(after.accounting.missed_while_stopped(), 9 + 3);
    // The restored window goes on: the next gap is loss again.
    after.decode(&flow_datagram(22, 112, 3)).unwrap();
    assert_eq!(records_lost(&mut after), 1);

    // Older than the restore limit: not restored.
    let mut stale = Run::new();
    let day_later = 1_700_000_000 + 86_400 + 1;
    assert_eq!(stale.decoder.import_state(&exported, day_later), 0);
    assert!(stale.decoder.export_state().is_empty());
}

/// The hand-built flow samples are handled by the fast path (so the tests above test it), and
/// a sample `sflow-parser` rejects is left to it, with its error.
#[test]
fn fast_path_handles_the_hand_built_samples_and_leaves_bad_ones_to_the_parser() {
    let body = |datagram: &[u8], at: usize| -> Vec<u8> {
        let len = u32::from_be_bytes(datagram[at + 4..at + 8].try_into().unwrap()) as usize;
        datagram[at + 8..at + 8 + len].to_vec()
    };
    let handled = |datagram: &[u8], at: usize, expanded: bool| {
        fast::read_flow_sample(exporter(), 1_700_000_000, 7, expanded, &body(datagram, at))
    };
    let (head, record) = handled(&COMPACT_FLOW_VLAN_IPV6_TCP, SAMPLE_AT, false).expect("handled");
    assert_eq!((head.sequence_number, head.source.source_index), (100, 5));
    assert_eq!((record.vlan, record.dst_port), (100, 443));
    const EXPANDED_SAMPLE_AT: usize = 40; // after a datagram header with an IPv6 agent address
    let (_, record) = handled(&EXPANDED_FLOW_IPV4_RECORDS, EXPANDED_SAMPLE_AT, true).expect("handled");
    assert_eq!((record.dst_as, record.vlan), (65004, 200));
    let tcp_info = with_second_flow_record(&extended_tcp_info(23_456));
    let (_, record) = handled(&tcp_info, SAMPLE_AT, false).expect("handled");
    assert_eq!(record.rtt_client_us, Some(23_456));

    let bad_protocol = with_word(&COMPACT_FLOW_VLAN_IPV6_TCP, HEADER_PROTOCOL_AT, 99);
    assert!(handled(&bad_protocol, SAMPLE_AT, false).is_none());
    let mut run = Run::new();
    run.decode(&bad_protocol).unwrap();
    assert_eq!(run.out.errors.len(), 1);
    assert!(
        run.out.errors[0].detail.contains("Unknown header protocol: 99"),
        "sflow-parser's text: {}",
        run.out.errors[0].detail
    );
}
