//! Byte-level checks of the sFlow v5 builder.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

use super::*;
use crate::normalise::Direction;
use crate::simulate::fleet::{fleet, RecordShape, TrafficGenerator};

const CLOCK: ExportClock = ExportClock {
    unix_ms: 1_700_000_000_250,
    boot_unix_ms: 1_699_999_000_000,
};

fn router() -> Router {
    fleet(1, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10))).remove(0)
}

fn sample(vlan: u16) -> SimulatedFlow {
    SimulatedFlow {
        src_addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5)),
        dst_addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        src_port: 40_000,
        dst_port: 443,
        proto: 6,
        tos: 0,
        tcp_flags: tcp_flags::ACK | tcp_flags::PSH,
        bytes: 1_418,
        packets: 1,
        in_if: 10,
        out_if: 1,
        src_as: 0,
        dst_as: 64_501,
        src_mask: 24,
        dst_mask: 24,
        next_hop: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        vlan,
        direction: Direction::Egress,
        start_age_ms: 0,
        end_age_ms: 0,
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[test]
fn datagram_header_and_flow_sample() {
    let mut encoder = SflowEncoder::new(&router(), 1_000);
    let mut out = Vec::new();
    let summary = encoder.encode_flow_samples(CLOCK, &[sample(100), sample(0)], &mut out);
    assert_eq!(
        (summary.flow_records, summary.bytes, summary.packets),
        (2, 2_836, 2)
    );
    assert_eq!(u32_at(&out, 0), 5); // version
    assert_eq!(u32_at(&out, 4), 1); // agent address type IPv4
    assert_eq!(&out[8..12], &[127, 0, 0, 10]);
    assert_eq!(u32_at(&out, 12), SUB_AGENT_ID);
    assert_eq!(u32_at(&out, 16), 0); // datagram sequence
    assert_eq!(u32_at(&out, 20), 1_000_250); // uptime
    assert_eq!(u32_at(&out, 24), 2); // samples
    let sample_at = 28;
    assert_eq!(u32_at(&out, sample_at), 3, "expanded flow sample");
    let body = sample_at + 8;
    assert_eq!(u32_at(&out, body), 1, "first sample of source 10");
    assert_eq!((u32_at(&out, body + 4), u32_at(&out, body + 8)), (0, 10)); // source id
    assert_eq!(u32_at(&out, body + 12), 1_000); // sampling rate
    assert_eq!(u32_at(&out, body + 16), 1_000); // sample pool
    assert_eq!((u32_at(&out, body + 28), u32_at(&out, body + 36)), (10, 1)); // input, output
    assert_eq!(u32_at(&out, body + 40), 4, "four flow records");
    let raw = body + 44;
    assert_eq!(u32_at(&out, raw), 1, "raw packet header");
    assert_eq!(u32_at(&out, raw + 8), 1, "Ethernet");
    assert_eq!(u32_at(&out, raw + 12), 1_418, "frame length");
    assert_eq!(u32_at(&out, raw + 16), 4, "FCS stripped");
    let header_len = u32_at(&out, raw + 20) as usize;
    assert_eq!(header_len, MAX_HEADER_BYTES);
    let header = out[raw + 24..raw + 24 + header_len].to_vec();
    let packet = LaxSlicedPacket::from_ethernet(&header).expect("sampled header parses");
    assert_eq!(packet.vlan_ids().first().map(|v| v.value()), Some(100));
    let Some(LaxNetSlice::Ipv4(ip)) = &packet.net else {
        panic!("IPv4 expected")
    };
    assert_eq!(
        ip.header().total_len(),
        1_418 - 4 - 14 - 4,
        "IP length of the whole frame"
    );
    assert_eq!(ip.header().destination(), [198, 51, 100, 7]);
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        panic!("TCP expected")
    };
    assert_eq!((tcp.source_port(), tcp.destination_port()), (40_000, 443));
    assert!(tcp.ack() && tcp.psh() && !tcp.syn());

    // The next datagram: sequence 1, and source 10's second sample is its third overall.
    let summary = encoder.encode_flow_samples(CLOCK, &[sample(0)], &mut out);
    assert_eq!(summary.flow_records, 1);
    assert_eq!(u32_at(&out, 16), 1);
    assert_eq!(u32_at(&out, 36), 3, "per-source sample sequence");
    assert_eq!(u32_at(&out, 36 + 16), 3_000, "sample pool");
}

#[test]
fn counters_grow_with_the_samples() {
    let mut encoder = SflowEncoder::new(&router(), 1_000);
    let mut out = Vec::new();
    let summary = encoder.encode_counter_samples(CLOCK, &mut out);
    assert_eq!(summary.counter_samples, 4, "one per interface");
    assert_eq!(u32_at(&out, 16), 0);
    encoder.encode_flow_samples(CLOCK, &[sample(100), sample(100)], &mut out);
    encoder.encode_counter_samples(CLOCK, &mut out);
    assert_eq!(u32_at(&out, 16), 2, "datagram sequence counts every datagram");
    // Samples of 4 interfaces, each 8 + 16 + 8 + 88 bytes; find ifIndex 10 and 1.
    let mut counters = std::collections::BTreeMap::new();
    let mut at = 28;
    while at < out.len() {
        let generic = at + 8 + 16 + 8;
        let in_octets = u64::from(u32_at(&out, generic + 24)) << 32 | u64::from(u32_at(&out, generic + 28));
        let out_octets = u64::from(u32_at(&out, generic + 56)) << 32 | u64::from(u32_at(&out, generic + 60));
        assert_eq!(u32_at(&out, at + 8), 2, "second counter sample of this source");
        assert_eq!(u32_at(&out, generic + 20), 3, "ifStatus up");
        counters.insert(
            u32_at(&out, generic),
            (in_octets, out_octets, u32_at(&out, generic + 32)),
        );
        at += 8 + u32_at(&out, at + 4) as usize;
    }
    assert_eq!(at, out.len());
    assert_eq!(counters[&10], (2 * 1_418 * 1_000, 0, 2_000), "ae0 in");
    assert_eq!(counters[&1].1, 2 * 1_418 * 1_000, "et-0/0/1 out");
    assert_eq!(counters[&2], (0, 0, 0));
}

#[test]
fn every_generated_sample_encodes_and_parses() {
    let mut generator = TrafficGenerator::new(router(), 11, RecordShape::PacketSamples, 0.5);
    let samples: Vec<SimulatedFlow> = (0..300).map(|_| generator.next_flow()).collect();
    let mut encoder = SflowEncoder::new(&router(), 512);
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < samples.len() {
        let summary = encoder.encode_flow_samples(CLOCK, &samples[offset..], &mut out);
        assert!(
            summary.consumed >= 4 && summary.consumed <= MAX_SAMPLES_PER_DATAGRAM
                || offset + summary.consumed == samples.len()
        );
        assert!(out.len() <= MAX_DATAGRAM_BYTES);
        assert_eq!(u32_at(&out, 24) as usize, summary.consumed);
        for (flow, frame_length) in samples[offset..offset + summary.consumed]
            .iter()
            .zip(frame_lengths(&out))
        {
            assert!(frame_length as u64 >= flow.bytes.min(64), "{flow:?}");
        }
        offset += summary.consumed;
    }
}

/// The frame lengths of the flow samples of a datagram.
fn frame_lengths(datagram: &[u8]) -> Vec<u32> {
    let mut lengths = Vec::new();
    let mut at = 28;
    while at + 8 <= datagram.len() {
        let len = u32_at(datagram, at + 4) as usize;
        if u32_at(datagram, at) == 3 {
            lengths.push(u32_at(datagram, at + 8 + 44 + 12));
        }
        at += 8 + len;
    }
    lengths
}
