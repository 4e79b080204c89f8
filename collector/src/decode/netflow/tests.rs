//! Unit tests of the NetFlow decoder: hand-built datagrams, one comment per field.

use std::net::{IpAddr, Ipv4Addr};

use egress_query::schema::RttSource;

use super::*;
use crate::decode::{DecodeOutput, DecoderConfig};

pub(crate) const EXPORTER_A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const EXPORTER_B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
pub(crate) const NOW: u32 = 1_700_000_000;

/// A NetFlow v9 datagram: 20-byte header, then the given flowsets.
pub(crate) fn v9(source_id: u32, sequence: u32, flowsets: &[&[u8]]) -> Vec<u8> {
    let mut datagram = vec![
        0x00, 0x09, // version 9
        0x00, 0x01, // count (not used to delimit)
        0x00, 0x00, 0x27, 0x10, // sys_up_time: 10 000 ms
    ];
    datagram.extend_from_slice(&NOW.to_be_bytes()); // unix_secs
    datagram.extend_from_slice(&sequence.to_be_bytes()); // sequence number
    datagram.extend_from_slice(&source_id.to_be_bytes()); // source id
    for flowset in flowsets {
        datagram.extend_from_slice(flowset);
    }
    datagram
}

/// An IPFIX message: 16-byte header (length filled in), then the given sets.
pub(crate) fn ipfix(domain: u32, sequence: u32, sets: &[&[u8]]) -> Vec<u8> {
    let length = 16 + sets.iter().map(|s| s.len()).sum::<usize>();
    let mut message = vec![0x00, 0x0a]; // version 10
    message.extend_from_slice(&(length as u16).to_be_bytes()); // message length
    message.extend_from_slice(&NOW.to_be_bytes()); // export time
    message.extend_from_slice(&sequence.to_be_bytes()); // sequence number (data records)
    message.extend_from_slice(&domain.to_be_bytes()); // observation domain id
    for set in sets {
        message.extend_from_slice(set);
    }
    message
}

/// v9 template 256: source address, octets.
const V9_TEMPLATE_ADDR_BYTES: &[u8] = &[
    0x00, 0x00, // flowset id 0: templates
    0x00, 0x10, // flowset length 16
    0x01, 0x00, // template id 256
    0x00, 0x02, // field count 2
    0x00, 0x08, 0x00, 0x04, // IPV4_SRC_ADDR (8), 4 bytes
    0x00, 0x01, 0x00, 0x04, // IN_BYTES (1), 4 bytes
];

/// v9 template 256 redefined / used by another exporter: octets first, then source address.
const V9_TEMPLATE_BYTES_ADDR: &[u8] = &[
    0x00, 0x00, // flowset id 0: templates
    0x00, 0x10, // flowset length 16
    0x01, 0x00, // template id 256
    0x00, 0x02, // field count 2
    0x00, 0x01, 0x00, 0x04, // IN_BYTES (1), 4 bytes
    0x00, 0x08, 0x00, 0x04, // IPV4_SRC_ADDR (8), 4 bytes
];

/// Data flowset of template 256 with the 8 bytes 0a 00 00 01 00 00 03 e8.
const V9_DATA_256: &[u8] = &[
    0x01, 0x00, // flowset id 256
    0x00, 0x0c, // flowset length 12
    0x0a, 0x00, 0x00, 0x01, // first field (address 10.0.0.1 or octets 167772161)
    0x00, 0x00, 0x03, 0xe8, // second field (octets 1000 or address 0.0.3.232)
];

/// v9 options template 257: scope System, option SAMPLING_INTERVAL (34).
const V9_OPTIONS_TEMPLATE_INTERVAL: &[u8] = &[
    0x00, 0x01, // flowset id 1: options templates
    0x00, 0x14, // flowset length 20
    0x01, 0x01, // template id 257
    0x00, 0x04, // option scope length: 4 bytes (one scope field)
    0x00, 0x04, // option length: 4 bytes (one option field)
    0x00, 0x01, 0x00, 0x04, // scope: System (1), 4 bytes
    0x00, 0x22, 0x00, 0x04, // SAMPLING_INTERVAL (34), 4 bytes
    0x00, 0x00, // padding
];

/// v9 options data of template 257 with sampling interval `rate`.
fn v9_options_data_interval(rate: u32) -> Vec<u8> {
    let mut set = vec![
        0x01, 0x01, // flowset id 257
        0x00, 0x0c, // flowset length 12
        0x00, 0x00, 0x00, 0x00, // scope System: 0
    ];
    set.extend_from_slice(&rate.to_be_bytes()); // SAMPLING_INTERVAL
    set
}

fn decode(
    decoder: &mut NetflowDecoder,
    exporter: IpAddr,
    datagram: &[u8],
    out: &mut DecodeOutput,
) -> Result<()> {
    let mut accounting = Accounting::default();
    decoder.decode(exporter, NOW, datagram, &mut accounting, out)
}

#[test]
fn v5_header_sampling_masks_mode_bits() {
    let datagram: Vec<u8> = [
        &[
            0x00, 0x05, // version 5
            0x00, 0x01, // count 1
            0x00, 0x00, 0x27, 0x10, // sys_up_time 10 000 ms
            0x65, 0x53, 0xf1, 0x00, // unix_secs 1 700 000 000
            0x00, 0x00, 0x00, 0x00, // unix_nsecs
            0x00, 0x00, 0x00, 0x2a, // flow_sequence 42
            0x00, // engine type
            0x00, // engine id
            0x40, 0x64, // sampling: mode 01 (top bits), interval 100
        ][..],
        &[
            10, 0, 0, 1, // src addr
            10, 0, 0, 2, // dst addr
            10, 0, 0, 254, // next hop
            0x00, 0x03, // input ifIndex
            0x00, 0x04, // output ifIndex
            0x00, 0x00, 0x00, 0x05, // packets
            0x00, 0x00, 0x05, 0xdc, // octets 1500
            0x00, 0x00, 0x07, 0xd0, // first: uptime 2 000 ms
            0x00, 0x00, 0x23, 0x28, // last: uptime 9 000 ms
            0x01, 0xbb, // src port 443
            0xc0, 0x00, // dst port 49152
            0x00, // pad
            0x12, // tcp flags SYN+ACK
            0x06, // protocol TCP
            0x00, // tos
            0xfd, 0xe8, // src AS 65000
            0xfd, 0xe9, // dst AS 65001
            24,   // src mask
            16,   // dst mask
            0x00, 0x00, // pad
        ][..],
    ]
    .concat();
    let mut decoder = NetflowDecoder::new(&DecoderConfig::default());
    let mut out = DecodeOutput::default();
    decode(&mut decoder, EXPORTER_A, &datagram, &mut out).expect("valid v5");
    let [record] = &out.flows[..] else {
        panic!("one record expected, got {:?}", out.flows)
    };
    assert_eq!(
        (record.sampling_rate, record.sampling_source),
        (100, SamplingSource::Header)
    );
    assert_eq!(
        (record.bytes, record.packets, record.proto, record.tcp_flags),
        (1500, 5, 6, 0x12)
    );
    assert_eq!(
        (record.src_port, record.dst_port, record.src_as, record.dst_as),
        (443, 49152, 65000, 65001)
    );
    assert_eq!(
        (record.in_if, record.out_if, record.src_mask, record.dst_mask),
        (3, 4, 24, 16)
    );
    assert_eq!(record.src_addr, Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    assert_eq!(record.next_hop, Ipv4Addr::new(10, 0, 0, 254).to_ipv6_mapped());
    // Export at uptime 10 s = NOW: first switched 8 s earlier, last 1 s earlier.
    assert_eq!((record.time_flow_start, record.time_flow_end), (NOW - 8, NOW - 1));
    assert_eq!((record.observation_domain, record.etype), (0, 0x0800));

    // Interval 0 (whatever the mode bits): not sampled, source unknown.
    let mut unsampled = datagram.clone();
    unsampled[22..24].copy_from_slice(&[0x80, 0x00]);
    out.clear();
    decode(&mut decoder, EXPORTER_A, &unsampled, &mut out).expect("valid v5");
    assert_eq!(
        (out.flows[0].sampling_rate, out.flows[0].sampling_source),
        (1, SamplingSource::Unknown)
    );

    // One record short: truncated, not a panic.
    assert_eq!(
        decode(&mut decoder, EXPORTER_A, &datagram[..60], &mut out).map_err(|e| e.kind),
        Err(DecodeErrorKind::Truncated)
    );
}

#[test]
fn v9_data_before_template_is_held_then_released() {
    let mut decoder = NetflowDecoder::new(&DecoderConfig::default());
    let mut out = DecodeOutput::default();
    decode(&mut decoder, EXPORTER_A, &v9(7, 1, &[V9_DATA_256]), &mut out).expect("valid datagram");
    assert!(out.flows.is_empty());
    assert_eq!(decoder.held_sets(), 1);

    // The template arrives alone: the held record comes out with this datagram.
    decode(
        &mut decoder,
        EXPORTER_A,
        &v9(7, 2, &[V9_TEMPLATE_ADDR_BYTES]),
        &mut out,
    )
    .expect("valid datagram");
    assert_eq!(decoder.held_sets(), 0);
    let [record] = &out.flows[..] else {
        panic!("one released record expected, got {:?}", out.flows)
    };
    assert_eq!(record.src_addr, Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    assert_eq!(
        (record.bytes, record.observation_domain, record.flow_type),
        (1000, 7, FlowType::Netflow9)
    );
    assert!(out.errors.is_empty());

    // A template for the same id from another source id does not release anything.
    decode(&mut decoder, EXPORTER_A, &v9(8, 1, &[V9_DATA_256]), &mut out).expect("valid datagram");
    out.clear();
    decode(
        &mut decoder,
        EXPORTER_B,
        &v9(8, 1, &[V9_TEMPLATE_ADDR_BYTES]),
        &mut out,
    )
    .expect("valid datagram");
    assert!(out.flows.is_empty());
    assert_eq!(decoder.held_sets(), 1);
}

#[test]
fn held_sets_are_bounded_and_aged() {
    let config = DecoderConfig {
        max_held_sets_per_exporter: 1,
        held_set_ttl_seconds: 10,
        ..DecoderConfig::default()
    };
    let mut decoder = NetflowDecoder::new(&config);
    let mut accounting = Accounting::default();
    let mut out = DecodeOutput::default();
    let data = v9(7, 1, &[V9_DATA_256]);
    decoder
        .decode(EXPORTER_A, NOW, &data, &mut accounting, &mut out)
        .expect("valid datagram");
    decoder
        .decode(EXPORTER_A, NOW, &data, &mut accounting, &mut out)
        .expect("valid datagram");
    assert_eq!(decoder.held_sets(), 1);
    assert_eq!(
        out.errors.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [DecodeErrorKind::MissingTemplate]
    );
    out.clear();
    // 11 s later the held set is too old: dropped, and the template releases nothing.
    decoder
        .decode(
            EXPORTER_A,
            NOW + 11,
            &v9(7, 3, &[V9_TEMPLATE_ADDR_BYTES]),
            &mut accounting,
            &mut out,
        )
        .expect("valid datagram");
    assert!(out.flows.is_empty());
    assert_eq!(
        out.errors.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [DecodeErrorKind::MissingTemplate]
    );
    let errors: u64 = accounting.iter().flat_map(|(_, c)| c.errors.values()).sum();
    assert_eq!(errors, 2);
}

#[test]
fn templates_expire_after_their_ttl() {
    let config = DecoderConfig {
        template_ttl_seconds: 100,
        ..DecoderConfig::default()
    };
    let mut decoder = NetflowDecoder::new(&config);
    let mut accounting = Accounting::default();
    let mut out = DecodeOutput::default();
    let datagram = v9(7, 1, &[V9_TEMPLATE_ADDR_BYTES]);
    decoder
        .decode(EXPORTER_A, NOW, &datagram, &mut accounting, &mut out)
        .expect("valid datagram");
    decoder
        .decode(
            EXPORTER_A,
            NOW + 100,
            &v9(7, 2, &[V9_DATA_256]),
            &mut accounting,
            &mut out,
        )
        .expect("valid");
    assert_eq!(out.flows.len(), 1);
    decoder
        .decode(
            EXPORTER_A,
            NOW + 101,
            &v9(7, 3, &[V9_DATA_256]),
            &mut accounting,
            &mut out,
        )
        .expect("valid");
    assert_eq!(out.flows.len(), 1, "expired template must not decode");
    assert_eq!(decoder.held_sets(), 1);
}

#[test]
fn ipfix_enterprise_and_variable_length_fields_are_skipped() {
    let template: &[u8] = &[
        0x00, 0x02, // set id 2: templates
        0x00, 0x1c, // set length 28
        0x01, 0x2c, // template id 300
        0x00, 0x04, // field count 4
        0x00, 0x08, 0x00, 0x04, // sourceIPv4Address (8), 4 bytes
        0x80, 0x01, 0xff, 0xff, // enterprise bit + element 1, variable length
        0x00, 0x00, 0x72, 0x79, // enterprise number 29305
        0x00, 0x60, 0xff, 0xff, // applicationName (96), variable length
        0x00, 0x01, 0x00, 0x08, // octetDeltaCount (1), 8 bytes
    ];
    let data: &[u8] = &[
        0x01, 0x2c, // set id 300
        0x00, 0x2c, // set length 44
        // record 1
        192, 0, 2, 10, // sourceIPv4Address
        0x03, b'a', b'b', b'c', // enterprise field: length 3, "abc"
        0x00, // applicationName: length 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0xdc, // octetDeltaCount 1500
        // record 2
        192, 0, 2, 11, // sourceIPv4Address
        0xff, 0x00, 0x02, b'x', b'y', // enterprise field: long form, length 2, "xy"
        0x01, b'z', // applicationName: length 1, "z"
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, // octetDeltaCount 10
        0x00, 0x00, 0x00, 0x00, // padding
    ];
    let mut decoder = NetflowDecoder::new(&DecoderConfig::default());
    let mut out = DecodeOutput::default();
    decode(
        &mut decoder,
        EXPORTER_A,
        &ipfix(5, 0, &[template, data]),
        &mut out,
    )
    .expect("valid message");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let got: Vec<_> = out
        .flows
        .iter()
        .map(|f| (f.src_addr, f.bytes, f.observation_domain))
        .collect();
    assert_eq!(
        got,
        [
            (Ipv4Addr::new(192, 0, 2, 10).to_ipv6_mapped(), 1500, 5),
            (Ipv4Addr::new(192, 0, 2, 11).to_ipv6_mapped(), 10, 5)
        ]
    );
    assert_eq!(
        decoder.learned().templates,
        [(EXPORTER_A, 5, FlowType::Ipfix, 300, 4)]
    );
}

#[test]
fn same_template_id_from_two_exporters_and_domains_never_mixes() {
    let mut decoder = NetflowDecoder::new(&DecoderConfig::default());
    let mut out = DecodeOutput::default();
    let options_a = v9_options_data_interval(100);
    let options_b = v9_options_data_interval(1000);
    // Exporter A, source 1: address first, sampled 1:100.
    let a = v9(
        1,
        1,
        &[V9_TEMPLATE_ADDR_BYTES, V9_OPTIONS_TEMPLATE_INTERVAL, &options_a],
    );
    // Exporter B, source 1: octets first, sampled 1:1000.
    let b = v9(
        1,
        1,
        &[V9_TEMPLATE_BYTES_ADDR, V9_OPTIONS_TEMPLATE_INTERVAL, &options_b],
    );
    // Exporter A, source 2: octets first, no sampling options.
    let a2 = v9(2, 1, &[V9_TEMPLATE_BYTES_ADDR]);
    for (exporter, datagram) in [(EXPORTER_A, &a), (EXPORTER_B, &b), (EXPORTER_A, &a2)] {
        decode(&mut decoder, exporter, datagram, &mut out).expect("valid datagram");
    }
    for (exporter, source_id) in [(EXPORTER_A, 1), (EXPORTER_B, 1), (EXPORTER_A, 2)] {
        decode(
            &mut decoder,
            exporter,
            &v9(source_id, 2, &[V9_DATA_256]),
            &mut out,
        )
        .expect("valid datagram");
    }
    let got: Vec<_> = out
        .flows
        .iter()
        .map(|f| (f.bytes, f.observation_domain, f.sampling_rate, f.sampling_source))
        .collect();
    assert_eq!(
        got,
        [
            (1000, 1, 100, SamplingSource::Options),
            (167_772_161, 1, 1000, SamplingSource::Options),
            (167_772_161, 2, 1, SamplingSource::Unknown),
        ]
    );
    assert_eq!(out.flows[1].exporter_address, to_v6(EXPORTER_B));
}

fn to_v6(addr: IpAddr) -> std::net::Ipv6Addr {
    crate::normalise::to_v6(addr)
}

#[test]
fn template_redefinition_replaces_the_old_layout() {
    let mut decoder = NetflowDecoder::new(&DecoderConfig::default());
    let mut out = DecodeOutput::default();
    decode(
        &mut decoder,
        EXPORTER_A,
        &v9(1, 1, &[V9_TEMPLATE_ADDR_BYTES, V9_DATA_256]),
        &mut out,
    )
    .expect("valid");
    decode(
        &mut decoder,
        EXPORTER_A,
        &v9(1, 2, &[V9_TEMPLATE_BYTES_ADDR, V9_DATA_256]),
        &mut out,
    )
    .expect("valid");
    let got: Vec<_> = out.flows.iter().map(|f| f.bytes).collect();
    assert_eq!(got, [1000, 167_772_161]);
    assert_eq!(decoder.learned().templates.len(), 1);
}

#[test]
fn options_data_with_two_sampler_ids() {
    let options_template: &[u8] = &[
        0x00, 0x01, // flowset id 1: options templates
        0x00, 0x18, // flowset length 24
        0x01, 0x01, // template id 257
        0x00, 0x04, // option scope length 4
        0x00, 0x08, // option length 8
        0x00, 0x01, 0x00, 0x04, // scope: System (1), 4 bytes
        0x00, 0x30, 0x00, 0x01, // FLOW_SAMPLER_ID (48), 1 byte
        0x00, 0x32, 0x00, 0x04, // FLOW_SAMPLER_RANDOM_INTERVAL (50), 4 bytes
        0x00, 0x00, // padding
    ];
    let options_data: &[u8] = &[
        0x01, 0x01, // flowset id 257
        0x00, 0x16, // flowset length 22
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x07, 0xd0, // system 0, sampler 1, 1:2000
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x0f, 0xa0, // system 0, sampler 2, 1:4000
    ];
    let flow_template: &[u8] = &[
        0x00, 0x00, // flowset id 0: templates
        0x00, 0x14, // flowset length 20
        0x01, 0x00, // template id 256
        0x00, 0x03, // field count 3
        0x00, 0x08, 0x00, 0x04, // IPV4_SRC_ADDR (8), 4 bytes
        0x00, 0x30, 0x00, 0x01, // FLOW_SAMPLER_ID (48), 1 byte
        0x00, 0x01, 0x00, 0x04, // IN_BYTES (1), 4 bytes
    ];
    let with_rate_template: &[u8] = &[
        0x00, 0x00, // flowset id 0: templates
        0x00, 0x10, // flowset length 16
        0x01, 0x02, // template id 258
        0x00, 0x02, // field count 2
        0x00, 0x01, 0x00, 0x04, // IN_BYTES (1), 4 bytes
        0x00, 0x22, 0x00, 0x02, // SAMPLING_INTERVAL (34), 2 bytes (reduced size)
    ];
    let data: &[u8] = &[
        0x01, 0x00, // flowset id 256
        0x00, 0x20, // flowset length 32
        10, 0, 0, 1, 0x02, 0x00, 0x00, 0x00, 0x64, // 10.0.0.1, sampler 2, 100 bytes
        10, 0, 0, 2, 0x01, 0x00, 0x00, 0x00, 0x65, // 10.0.0.2, sampler 1, 101 bytes
        10, 0, 0, 3, 0x09, 0x00, 0x00, 0x00, 0x66, // 10.0.0.3, unknown sampler 9, 102 bytes
        0x00, // padding
    ];
    let data_with_rate: &[u8] = &[
        0x01, 0x02, // flowset id 258
        0x00, 0x0c, // flowset length 12
        0x00, 0x00, 0x00, 0x67, // 103 bytes
        0x00, 0x0a, // SAMPLING_INTERVAL 10 (in the record)
        0x00, 0x00, // padding
    ];
    let mut decoder = NetflowDecoder::new(&DecoderConfig::default());
    let mut out = DecodeOutput::default();
    // Data first: held until the flow template; the options arrive before the template.
    decode(&mut decoder, EXPORTER_A, &v9(0, 1, &[data]), &mut out).expect("valid");
    decode(
        &mut decoder,
        EXPORTER_A,
        &v9(0, 2, &[options_template, options_data]),
        &mut out,
    )
    .expect("valid");
    decode(
        &mut decoder,
        EXPORTER_A,
        &v9(0, 3, &[flow_template, with_rate_template, data_with_rate]),
        &mut out,
    )
    .expect("valid");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let got: Vec<_> = out
        .flows
        .iter()
        .map(|f| (f.bytes, f.sampling_rate, f.sampling_source))
        .collect();
    assert_eq!(
        got,
        [
            (100, 4000, SamplingSource::Options),
            (101, 2000, SamplingSource::Options),
            (102, 1, SamplingSource::Unknown),
            (103, 10, SamplingSource::Record),
        ]
    );
    assert_eq!(
        decoder.learned().sampling_rates,
        [(EXPORTER_A, 0, 1, 2000), (EXPORTER_A, 0, 2, 4000)]
    );
}

#[test]
fn accounting_follows_each_protocols_sequence() {
    let mut decoder = NetflowDecoder::new(&DecoderConfig::default());
    let mut accounting = Accounting::default();
    let mut out = DecodeOutput::default();
    decoder
        .decode(
            EXPORTER_A,
            NOW,
            &v9(1, 10, &[V9_TEMPLATE_ADDR_BYTES]),
            &mut accounting,
            &mut out,
        )
        .expect("ok");
    // v9 counts datagrams: 11 is next, 13 means two datagrams lost.
    decoder
        .decode(
            EXPORTER_A,
            NOW,
            &v9(1, 13, &[V9_DATA_256]),
            &mut accounting,
            &mut out,
        )
        .expect("ok");
    let counters = accounting
        .iter()
        .find(|(k, _)| k.1 == 1)
        .map(|(_, c)| c.clone())
        .expect("counters");
    assert_eq!((counters.datagrams, counters.templates_known), (2, 1));
    assert!(counters.records_lost > 0);
}

/// Every prefix of valid datagrams, and many byte mutations of them, decode or fail cleanly.
#[test]
fn truncated_and_mutated_datagrams_never_panic() {
    let options = v9_options_data_interval(100);
    let samples = [
        v9(
            1,
            1,
            &[
                V9_TEMPLATE_ADDR_BYTES,
                V9_OPTIONS_TEMPLATE_INTERVAL,
                &options,
                V9_DATA_256,
            ],
        ),
        ipfix(
            3,
            1,
            &[
                &[
                    0x00, 0x02, 0x00, 0x10, 0x01, 0x2c, 0x00, 0x02, 0x80, 0x01, 0xff, 0xff, 0x00, 0x00, 0x72,
                    0x79,
                ][..],
                &[0x01, 0x2c, 0x00, 0x08, 0x02, b'a', b'b', 0x00][..],
            ],
        ),
    ];
    let mut decoder = NetflowDecoder::new(&DecoderConfig::default());
    let mut accounting = Accounting::default();
    let mut out = DecodeOutput::default();
    for sample in &samples {
        for end in 0..sample.len() {
            out.clear();
            let result = decoder.decode(EXPORTER_A, NOW, &sample[..end], &mut accounting, &mut out);
            if end < 16 {
                assert!(result.is_err(), "a {end}-byte prefix has no complete header");
            }
        }
    }
    // xorshift: deterministic mutations, no extra dependency.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let mut datagram = samples[round % samples.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % datagram.len();
            datagram[at] = next() as u8;
        }
        let end = (next() as usize) % (datagram.len() + 1);
        out.clear();
        let _ = decoder.decode(
            EXPORTER_B,
            NOW + (round as u32 / 100),
            &datagram[..end],
            &mut accounting,
            &mut out,
        );
    }
}

/// Latency columns of one flow: client, server, application (µs) and source.
type Latency = (Option<u32>, Option<u32>, Option<u32>, RttSource);

/// The `rtt_*` columns of every flow decoded from `datagram`.
fn latencies(datagram: &[u8]) -> Vec<Latency> {
    let mut decoder = NetflowDecoder::new(&DecoderConfig::default());
    let mut out = DecodeOutput::default();
    decode(&mut decoder, EXPORTER_A, datagram, &mut out).expect("valid datagram");
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    out.flows
        .iter()
        .map(|f| (f.rtt_client_us, f.rtt_server_us, f.rtt_app_us, f.rtt_source))
        .collect()
}

#[test]
fn v9_nprobe_latency_fields_are_stored_in_microseconds() {
    let template: &[u8] = &[
        0x00, 0x00, // flowset id 0: templates
        0x00, 0x18, // flowset length 24
        0x01, 0x01, // template id 257
        0x00, 0x04, // field count 4
        0x00, 0x08, 0x00, 0x04, // IPV4_SRC_ADDR (8), 4 bytes
        0xe0, 0xfb, 0x00, 0x04, // CLIENT_NW_LATENCY_MS (57595), 4 bytes
        0xe0, 0xfc, 0x00, 0x04, // SERVER_NW_LATENCY_MS (57596), 4 bytes
        0xe0, 0xfd, 0x00, 0x02, // APPL_LATENCY_MS (57597), 2 bytes (reduced size)
    ];
    let data: &[u8] = &[
        0x01, 0x01, // flowset id 257
        0x00, 0x24, // flowset length 36
        // record 1
        192, 0, 2, 10, // IPV4_SRC_ADDR
        0x00, 0x00, 0x00, 0x0c, // client 12 ms
        0x00, 0x00, 0x00, 0x50, // server 80 ms
        0x01, 0x2c, // application 300 ms
        // record 2: measured zero is kept as zero (it is not "unknown")
        192, 0, 2, 11, // IPV4_SRC_ADDR
        0x00, 0x00, 0x00, 0x00, // client 0 ms
        0x00, 0x00, 0x00, 0x01, // server 1 ms
        0x00, 0x02, // application 2 ms
        0x00, 0x00, 0x00, 0x00, // padding
    ];
    assert_eq!(
        latencies(&v9(1, 0, &[template, data])),
        [
            (Some(12_000), Some(80_000), Some(300_000), RttSource::Nprobe),
            (Some(0), Some(1_000), Some(2_000), RttSource::Nprobe),
        ]
    );
}

#[test]
fn v9_nprobe_older_second_and_microsecond_pairs_are_added() {
    let template: &[u8] = &[
        0x00, 0x00, // flowset id 0: templates
        0x00, 0x1c, // flowset length 28
        0x01, 0x02, // template id 258
        0x00, 0x05, // field count 5
        0x00, 0x08, 0x00, 0x04, // IPV4_SRC_ADDR (8), 4 bytes
        0xe0, 0xd2, 0x00, 0x04, // CLIENT_NW_DELAY_SEC (57554), 4 bytes
        0xe0, 0xd3, 0x00, 0x04, // CLIENT_NW_DELAY_USEC (57555), 4 bytes
        0xe0, 0xd5, 0x00, 0x04, // SERVER_NW_DELAY_USEC (57557), 4 bytes (no SEC part)
        0xe0, 0xd7, 0x00, 0x04, // APPL_LATENCY_USEC (57559), 4 bytes
    ];
    let data: &[u8] = &[
        0x01, 0x02, // flowset id 258
        0x00, 0x18, // flowset length 24
        192, 0, 2, 10, // IPV4_SRC_ADDR
        0x00, 0x00, 0x00, 0x01, // client 1 s
        0x00, 0x00, 0x01, 0xf4, // + 500 µs
        0x00, 0x00, 0x03, 0xe8, // server 1000 µs
        0x00, 0x00, 0x07, 0xd0, // application 2000 µs
    ];
    assert_eq!(
        latencies(&v9(1, 0, &[template, data])),
        [(Some(1_000_500), Some(1_000), Some(2_000), RttSource::Nprobe)]
    );
}

#[test]
fn ipfix_ntop_and_netscaler_enterprise_latency_elements() {
    let template: &[u8] = &[
        0x00, 0x02, // set id 2: templates
        0x00, 0x2c, // set length 44
        0x01, 0x2c, // template id 300: nProbe
        0x00, 0x03, // field count 3
        0x00, 0x08, 0x00, 0x04, // sourceIPv4Address (8), 4 bytes
        0x80, 0x7b, 0x00, 0x04, // enterprise bit + element 123 (CLIENT_NW_LATENCY_MS), 4 bytes
        0x00, 0x00, 0x8b, 0x30, // enterprise number 35632 (ntop)
        0x80, 0x7d, 0x00, 0x04, // enterprise bit + element 125 (APPL_LATENCY_MS), 4 bytes
        0x00, 0x00, 0x8b, 0x30, // enterprise number 35632 (ntop)
        0x01, 0x2d, // template id 301: NetScaler
        0x00, 0x02, // field count 2
        0x00, 0x08, 0x00, 0x04, // sourceIPv4Address (8), 4 bytes
        0x80, 0x80, 0x00, 0x04, // enterprise bit + element 128 (round trip time), 4 bytes
        0x00, 0x00, 0x17, 0x3f, // enterprise number 5951 (Citrix)
    ];
    let ntop_data: &[u8] = &[
        0x01, 0x2c, // set id 300
        0x00, 0x10, // set length 16
        192, 0, 2, 10, // sourceIPv4Address
        0x00, 0x00, 0x00, 0x07, // client 7 ms
        0x00, 0x00, 0x00, 0x2a, // application 42 ms
    ];
    let netscaler_data: &[u8] = &[
        0x01, 0x2d, // set id 301
        0x00, 0x0c, // set length 12
        192, 0, 2, 11, // sourceIPv4Address
        0x00, 0x00, 0x00, 0x19, // round trip 25 ms
    ];
    assert_eq!(
        latencies(&ipfix(5, 0, &[template, ntop_data, netscaler_data])),
        [
            (Some(7_000), None, Some(42_000), RttSource::Nprobe),
            (Some(25_000), None, None, RttSource::Netscaler),
        ]
    );
}

#[test]
fn records_without_latency_elements_store_null_not_zero() {
    assert_eq!(
        latencies(&v9(1, 0, &[V9_TEMPLATE_ADDR_BYTES, V9_DATA_256])),
        [(None, None, None, RttSource::None)]
    );
}

#[test]
fn ipfix_cisco_art_sums_become_means_over_their_counts() {
    let template: &[u8] = &[
        0x00, 0x02, // set id 2: templates
        0x00, 0x30, // set length 48
        0x01, 0x2e, // template id 302: Cisco AVC ART
        0x00, 0x06, // field count 6
        0x00, 0x08, 0x00, 0x04, // sourceIPv4Address (8), 4 bytes
        0x01, 0x16, 0x00, 0x04, // connectionCountNew (278), 4 bytes
        0xa4, 0x64, 0x00, 0x04, // enterprise bit + 9316 (network to-client sum), 4 bytes
        0x00, 0x00, 0x00, 0x09, // enterprise number 9 (Cisco)
        0xa4, 0x67, 0x00, 0x04, // enterprise bit + 9319 (network to-server sum), 4 bytes
        0x00, 0x00, 0x00, 0x09, // enterprise number 9 (Cisco)
        0xa4, 0x57, 0x00, 0x04, // enterprise bit + 9303 (response to-server sum), 4 bytes
        0x00, 0x00, 0x00, 0x09, // enterprise number 9 (Cisco)
        0xa4, 0x4c, 0x00, 0x04, // enterprise bit + 9292 (server counter responses), 4 bytes
        0x00, 0x00, 0x00, 0x09, // enterprise number 9 (Cisco)
    ];
    let data: &[u8] = &[
        0x01, 0x2e, // set id 302
        0x00, 0x34, // set length 52: two records
        192, 0, 2, 20, // sourceIPv4Address
        0x00, 0x00, 0x00, 0x04, // 4 new connections
        0x00, 0x00, 0x00, 0x0a, // client network sum 10 ms
        0x00, 0x00, 0x00, 0xc8, // server network sum 200 ms
        0x00, 0x00, 0x01, 0x2c, // server response sum 300 ms
        0x00, 0x00, 0x00, 0x03, // 3 responses
        192, 0, 2, 21, // sourceIPv4Address
        0x00, 0x00, 0x00, 0x00, // no new connection in this interval
        0x00, 0x00, 0x00, 0x00, // client network sum 0
        0x00, 0x00, 0x00, 0x00, // server network sum 0
        0x00, 0x00, 0x00, 0x50, // server response sum 80 ms
        0x00, 0x00, 0x00, 0x02, // 2 responses
    ];
    assert_eq!(
        latencies(&ipfix(6, 0, &[template, data])),
        [
            (Some(2_500), Some(50_000), Some(100_000), RttSource::CiscoArt),
            // Without a connection the network means are unknown, not 0.
            (None, None, Some(40_000), RttSource::CiscoArt),
        ]
    );
}
