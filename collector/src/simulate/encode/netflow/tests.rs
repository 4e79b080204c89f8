//! Byte-level checks of the NetFlow v5, v9 and IPFIX builders.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::simulate::fleet::{fleet, RecordShape, TrafficGenerator};

const CLOCK: ExportClock = ExportClock {
    unix_ms: 1_700_000_000_250,
    boot_unix_ms: 1_699_999_000_000,
};

fn router() -> Router {
    fleet(1, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10))).remove(0)
}

fn flow() -> SimulatedFlow {
    SimulatedFlow {
        src_addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5)),
        dst_addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        src_port: 40_000,
        dst_port: 443,
        proto: 6,
        tos: 0,
        tcp_flags: 0x1b,
        bytes: 3_000,
        packets: 4,
        in_if: 10,
        out_if: 1,
        src_as: 0,
        dst_as: 65_537,
        src_mask: 24,
        dst_mask: 24,
        next_hop: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        vlan: 100,
        direction: Direction::Egress,
        start_age_ms: 5_000,
        end_age_ms: 1_000,
    }
}

fn v6_flow() -> SimulatedFlow {
    SimulatedFlow {
        src_addr: IpAddr::V6("fd00:1::5".parse::<Ipv6Addr>().expect("address")),
        dst_addr: IpAddr::V6("2001:db8:100::7".parse::<Ipv6Addr>().expect("address")),
        next_hop: IpAddr::V6("2001:db8:ffff:1::1".parse::<Ipv6Addr>().expect("address")),
        src_mask: 64,
        dst_mask: 48,
        ..flow()
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[test]
fn v5_header_and_record_fields() {
    let mut encoder = NetflowV5Encoder::new(&router(), 100);
    let mut out = Vec::new();
    let summary = encoder.encode(CLOCK, &[flow(), v6_flow(), flow()], &mut out);
    assert_eq!(
        (summary.consumed, summary.flow_records),
        (3, 2),
        "the IPv6 flow is skipped"
    );
    assert_eq!((summary.bytes, summary.packets), (6_000, 8));
    assert_eq!(out.len(), 24 + 2 * 48);
    assert_eq!(u16_at(&out, 0), 5); // version
    assert_eq!(u16_at(&out, 2), 2); // count
    assert_eq!(u32_at(&out, 4), 1_000_250); // sys_uptime
    assert_eq!(u32_at(&out, 8), 1_700_000_000); // unix_secs
    assert_eq!(u32_at(&out, 12), 250_000_000); // unix_nsecs
    assert_eq!(u32_at(&out, 16), 0); // flow_sequence
    assert_eq!(u16_at(&out, 22), 0x4000 | 100); // sampling: mode 01, interval 100
    let record = &out[24..72];
    assert_eq!(&record[0..4], &[10, 1, 0, 5]);
    assert_eq!(&record[4..8], &[198, 51, 100, 7]);
    assert_eq!(&record[8..12], &[192, 0, 2, 1]);
    assert_eq!((u16_at(record, 12), u16_at(record, 14)), (10, 1)); // input, output
    assert_eq!((u32_at(record, 16), u32_at(record, 20)), (4, 3_000)); // packets, octets
    assert_eq!((u32_at(record, 24), u32_at(record, 28)), (995_250, 999_250)); // first, last
    assert_eq!((u16_at(record, 32), u16_at(record, 34)), (40_000, 443));
    assert_eq!(&record[36..40], &[0, 0x1b, 6, 0]); // pad, flags, proto, tos
    assert_eq!((u16_at(record, 40), u16_at(record, 42)), (0, 23_456)); // AS_TRANS for 65537
    assert_eq!(&record[44..46], &[24, 24]);

    let summary = encoder.encode(CLOCK, &vec![flow(); 40], &mut out);
    assert_eq!(summary.flow_records, 30, "at most 30 records");
    assert_eq!(
        u32_at(&out, 16),
        2,
        "second datagram's sequence: 2 flows sent before"
    );
}

#[test]
fn v9_templates_options_and_sequence() {
    let mut encoder = TemplateEncoder::netflow_v9(&router(), 250);
    let mut out = Vec::new();
    let summary = encoder.encode_templates(CLOCK, &mut out);
    assert_eq!((summary.template_records, summary.options_records), (3, 1));
    assert_eq!(u16_at(&out, 0), 9);
    assert_eq!(
        u16_at(&out, 2),
        4,
        "count: 2 templates, 1 options template, 1 options record"
    );
    assert_eq!(u32_at(&out, 12), 0, "first datagram has sequence 0");
    // Template flowset: id 0, both templates.
    assert_eq!(u16_at(&out, 20), 0);
    let template_set_len = usize::from(u16_at(&out, 22));
    assert_eq!(template_set_len, 4 + 2 * (4 + 4 * V9_IPV4.len()));
    assert_eq!((u16_at(&out, 24), u16_at(&out, 26)), (256, V9_IPV4.len() as u16));
    // Options template flowset: id 1, scope System.
    let options = 20 + template_set_len;
    assert_eq!(u16_at(&out, options), 1);
    assert_eq!(u16_at(&out, options + 4), OPTIONS_TEMPLATE_ID);
    assert_eq!((u16_at(&out, options + 6), u16_at(&out, options + 8)), (4, 12));
    assert_eq!((u16_at(&out, options + 10), u16_at(&out, options + 12)), (1, 4));
    let options_len = usize::from(u16_at(&out, options + 2));
    assert_eq!(options_len % 4, 0);
    // Options data: System = 127.0.0.10, sampler 1, mode 2, interval 250, padded.
    let data = options + options_len;
    assert_eq!(u16_at(&out, data), OPTIONS_TEMPLATE_ID);
    assert_eq!(u16_at(&out, data + 2), 16);
    assert_eq!(u32_at(&out, data + 4), u32::from(Ipv4Addr::new(127, 0, 0, 10)));
    assert_eq!(u16_at(&out, data + 8), 1);
    assert_eq!(out[data + 10], 2);
    assert_eq!(u32_at(&out, data + 11), 250);
    assert_eq!(out.len(), data + 16);

    let summary = encoder.encode_flows(CLOCK, &[flow(), v6_flow(), flow()], &mut out);
    assert_eq!(
        (summary.flow_records, summary.bytes, summary.packets),
        (3, 9_000, 12)
    );
    assert_eq!(u16_at(&out, 2), 3);
    assert_eq!(u32_at(&out, 12), 1, "v9 sequence counts datagrams");
    assert_eq!(u16_at(&out, 20), TEMPLATE_ID_V4);
    let v4_len = usize::from(u16_at(&out, 22));
    assert_eq!(v4_len, padded(4 + 2 * record_len(V9_IPV4)));
    assert_eq!(u16_at(&out, 20 + v4_len), TEMPLATE_ID_V6);
    assert_eq!(out.len(), 20 + v4_len + padded(4 + record_len(V9_IPV6)));
    // First record: addresses, then FIRST_SWITCHED at its offset.
    assert_eq!(&out[24..28], &[10, 1, 0, 5]);
    let first_switched = 24
        + V9_IPV4
            .iter()
            .take_while(|&&(e, _)| e != 22)
            .map(|&(_, l)| usize::from(l))
            .sum::<usize>();
    assert_eq!(u32_at(&out, first_switched), 995_250);
}

#[test]
fn ipfix_sequence_counts_data_records() {
    let mut encoder = TemplateEncoder::ipfix(&router(), 1_000);
    let mut out = Vec::new();
    encoder.encode_templates(CLOCK, &mut out);
    assert_eq!(u16_at(&out, 0), 10);
    assert_eq!(usize::from(u16_at(&out, 2)), out.len(), "message length");
    assert_eq!(u32_at(&out, 4), 1_700_000_000, "export time");
    assert_eq!(u32_at(&out, 8), 0);
    assert_eq!(u32_at(&out, 12), OBSERVATION_DOMAIN_IPFIX);
    assert_eq!(u16_at(&out, 16), 2, "template set");
    let options = 16 + usize::from(u16_at(&out, 18));
    assert_eq!(u16_at(&out, options), 3, "options template set");
    assert_eq!(
        (u16_at(&out, options + 6), u16_at(&out, options + 8)),
        (4, 1),
        "4 fields, 1 scope"
    );
    let data = options + usize::from(u16_at(&out, options + 2));
    assert_eq!(u16_at(&out, data), OPTIONS_TEMPLATE_ID);
    // selectorId 1 (8 bytes), algorithm 1, interval 1, space 999.
    assert_eq!(&out[data + 4..data + 12], &[0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(out[data + 12], 1);
    assert_eq!((u32_at(&out, data + 13), u32_at(&out, data + 17)), (1, 999));

    encoder.encode_flows(CLOCK, &[flow(), flow()], &mut out);
    assert_eq!(u32_at(&out, 8), 1, "after one options record");
    // flowStartMilliseconds, absolute.
    let start_at = 20
        + IPFIX_IPV4
            .iter()
            .take_while(|&&(e, _)| e != 152)
            .map(|&(_, l)| usize::from(l))
            .sum::<usize>();
    let start = u64::from(u32_at(&out, start_at)) << 32 | u64::from(u32_at(&out, start_at + 4));
    assert_eq!(start, 1_699_999_995_250);
    encoder.encode_flows(CLOCK, &[flow()], &mut out);
    assert_eq!(
        u32_at(&out, 8),
        3,
        "after one options record and two data records"
    );
}

#[test]
fn full_datagrams_stay_within_the_limit() {
    let mut generator = TrafficGenerator::new(router(), 3, RecordShape::Flows, 0.5);
    let flows: Vec<SimulatedFlow> = (0..200).map(|_| generator.next_flow()).collect();
    for mut encoder in [
        TemplateEncoder::netflow_v9(&router(), 100),
        TemplateEncoder::ipfix(&router(), 100),
    ] {
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < flows.len() {
            let summary = encoder.encode_flows(CLOCK, &flows[offset..], &mut out);
            assert!(summary.consumed > 0 && summary.consumed <= encoder.max_records_per_datagram());
            assert!(
                out.len() <= MAX_DATAGRAM_BYTES && out.len() > MAX_DATAGRAM_BYTES / 2
                    || offset + summary.consumed == flows.len()
            );
            offset += summary.consumed;
        }
    }
}
