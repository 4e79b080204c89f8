//! Equivalence of the fast path with the `sflow-parser` path it stands in for: random
//! datagrams of flow samples (every record type the mapping reads, record types it skips, in
//! random sets and orders, compact and expanded, edge values, broken lengths and padding,
//! flipped bytes, cuts) decoded by two decoders, one with the fast path and one without, must
//! give the same output (flows, counters, errors with their texts and offsets), the same
//! accounting and the same source state.

use std::net::IpAddr;

use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, VlanId};
use proptest::prelude::*;

use super::super::{DecodeOutput, DecoderConfig, SflowDecoder};
use crate::decode::accounting::Accounting;

/// An sFlow `address` as written: type 0 (unknown), IPv4, IPv6, or a type nobody defines.
#[derive(Debug, Clone)]
enum Address {
    Unknown,
    V4([u8; 4]),
    V6([u8; 16]),
    Invalid(u32),
}

/// One flow record of a generated sample. `words` hold the fields the mapping ignores, so
/// that a reader taking the wrong word shows.
#[derive(Debug, Clone)]
enum Record {
    SampledHeader {
        protocol: u32,
        frame_length: u32,
        stripped: u32,
        header: Vec<u8>,
        header_flaw: Flaw,
    },
    SampledIpv4([u32; 8]),
    SampledIpv6 {
        length: u32,
        protocol: u32,
        src: [u8; 16],
        dst: [u8; 16],
        words: [u32; 4],
    },
    ExtendedSwitch([u32; 4]),
    ExtendedRouter {
        next_hop: Address,
        masks: [u32; 2],
    },
    ExtendedGateway {
        next_hop: Address,
        words: [u32; 3],
        as_path: Vec<(u32, Vec<u32>)>,
        communities: Vec<u32>,
        local_pref: u32,
    },
    ExtendedTcpInfo([u32; 12]),
    /// Any other record type, with arbitrary data.
    Other {
        format: u32,
        data: Vec<u8>,
    },
}

/// How an opaque field is written: as XDR wants it, or broken.
#[derive(Debug, Clone, Copy)]
enum Flaw {
    None,
    /// The declared length is off by this much (the bytes written are not).
    Length(i32),
    /// The padding to four bytes is left out.
    NoPadding,
}

#[derive(Debug, Clone)]
struct Sample {
    expanded: bool,
    sequence_number: u32,
    source: (u32, u32),
    sampling_rate: u32,
    drops: u32,
    input: (u32, u32),
    output: (u32, u32),
    records: Vec<(Record, Flaw)>,
    /// Added to the record count written (wrapping).
    count_delta: i32,
}

#[derive(Debug, Clone)]
struct Datagram {
    sub_agent_id: u32,
    samples: Vec<Sample>,
    /// A generic interface counter sample after the flow samples.
    counters: bool,
    /// Bytes overwritten after encoding: (position modulo the length, value).
    flips: Vec<(usize, u8)>,
    /// Cut to this fraction (in 1/256) of its length.
    cut: Option<u8>,
}

fn put(out: &mut Vec<u8>, word: u32) {
    out.extend_from_slice(&word.to_be_bytes());
}

fn put_opaque(out: &mut Vec<u8>, data: &[u8], flaw: Flaw) {
    let declared = match flaw {
        Flaw::Length(delta) => (data.len() as u32).wrapping_add_signed(delta),
        _ => data.len() as u32,
    };
    put(out, declared);
    out.extend_from_slice(data);
    if !matches!(flaw, Flaw::NoPadding) {
        out.resize(out.len() + (4 - data.len() % 4) % 4, 0);
    }
}

fn put_address(out: &mut Vec<u8>, address: &Address) {
    match address {
        Address::Unknown => put(out, 0),
        Address::V4(v4) => {
            put(out, 1);
            out.extend_from_slice(v4);
        }
        Address::V6(v6) => {
            put(out, 2);
            out.extend_from_slice(v6);
        }
        Address::Invalid(kind) => put(out, *kind),
    }
}

/// Writes a record's format and data (its opaque envelope is the caller's).
fn encode_record(record: &Record, out: &mut Vec<u8>) -> u32 {
    match record {
        Record::SampledHeader {
            protocol,
            frame_length,
            stripped,
            header,
            header_flaw,
        } => {
            for word in [*protocol, *frame_length, *stripped] {
                put(out, word);
            }
            put_opaque(out, header, *header_flaw);
            1
        }
        Record::SampledIpv4(words) => {
            words.iter().for_each(|w| put(out, *w));
            3
        }
        Record::SampledIpv6 {
            length,
            protocol,
            src,
            dst,
            words,
        } => {
            put(out, *length);
            put(out, *protocol);
            out.extend_from_slice(src);
            out.extend_from_slice(dst);
            words.iter().for_each(|w| put(out, *w));
            4
        }
        Record::ExtendedSwitch(words) => {
            words.iter().for_each(|w| put(out, *w));
            1001
        }
        Record::ExtendedRouter { next_hop, masks } => {
            put_address(out, next_hop);
            masks.iter().for_each(|w| put(out, *w));
            1002
        }
        Record::ExtendedGateway {
            next_hop,
            words,
            as_path,
            communities,
            local_pref,
        } => {
            put_address(out, next_hop);
            words.iter().for_each(|w| put(out, *w));
            put(out, as_path.len() as u32);
            for (segment_type, path) in as_path {
                put(out, *segment_type);
                put(out, path.len() as u32);
                path.iter().for_each(|w| put(out, *w));
            }
            put(out, communities.len() as u32);
            communities.iter().for_each(|w| put(out, *w));
            put(out, *local_pref);
            1003
        }
        Record::ExtendedTcpInfo(words) => {
            words.iter().for_each(|w| put(out, *w));
            2209
        }
        Record::Other { format, data } => {
            out.extend_from_slice(data);
            *format
        }
    }
}

fn encode_sample(sample: &Sample, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    put(&mut body, sample.sequence_number);
    if sample.expanded {
        put(&mut body, sample.source.0);
        put(&mut body, sample.source.1);
    } else {
        put(
            &mut body,
            (sample.source.0 << 24) | (sample.source.1 & 0x00ff_ffff),
        );
    }
    put(&mut body, sample.sampling_rate);
    put(&mut body, 0x0001_0000); // sample_pool
    put(&mut body, sample.drops);
    for (format, value) in [sample.input, sample.output] {
        if sample.expanded {
            put(&mut body, format);
        }
        put(&mut body, value);
    }
    put(
        &mut body,
        (sample.records.len() as u32).wrapping_add_signed(sample.count_delta),
    );
    for (record, flaw) in &sample.records {
        let mut data = Vec::new();
        let format = encode_record(record, &mut data);
        put(&mut body, format);
        put_opaque(&mut body, &data, *flaw);
    }
    put(out, if sample.expanded { 3 } else { 1 });
    put_opaque(out, &body, Flaw::None);
}

/// A compact counter sample with one generic interface counter record (0:1) of ifIndex 12.
fn encode_counter_sample(out: &mut Vec<u8>) {
    let mut record = Vec::new();
    for word in [12, 6, 0, 10, 1, 3] {
        put(&mut record, word); // ifIndex, ifType, ifSpeed (u64), ifDirection, ifStatus
    }
    for word in 0..16 {
        put(&mut record, 1000 + word); // octets (u64), packets, discards, errors, ...
    }
    put(&mut record, 0); // promiscuous mode
    let mut body = Vec::new();
    put(&mut body, 3); // sequence number
    put(&mut body, 12); // source_id
    put(&mut body, 1); // 1 record
    put(&mut body, 1); // generic interface counters
    put_opaque(&mut body, &record, Flaw::None);
    put(out, 2);
    put_opaque(out, &body, Flaw::None);
}

fn encode(datagram: &Datagram) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, 5); // version
    put(&mut out, 1); // agent address type IPv4
    out.extend_from_slice(&[192, 0, 2, 1]);
    put(&mut out, datagram.sub_agent_id);
    put(&mut out, 1); // datagram sequence number
    put(&mut out, 1000); // uptime
    put(
        &mut out,
        datagram.samples.len() as u32 + u32::from(datagram.counters),
    );
    for sample in &datagram.samples {
        encode_sample(sample, &mut out);
    }
    if datagram.counters {
        encode_counter_sample(&mut out);
    }
    if !out.is_empty() {
        for (at, value) in &datagram.flips {
            let at = at % out.len();
            out[at] = *value;
        }
    }
    if let Some(cut) = datagram.cut {
        out.truncate(out.len() * usize::from(cut) / 256);
    }
    out
}

/// A `u32` that is often one of the values the mapping treats specially.
fn edge_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0,
            1,
            255,
            256,
            4095,
            4096,
            0xffff,
            0x1_0000,
            0x3fff_ffff,
            0x4000_0001,
            0x8000_0007,
            0xffff_ffff,
        ]),
        2 => any::<u32>(),
    ]
}

fn flaw() -> impl Strategy<Value = Flaw> {
    prop_oneof![
        20 => Just(Flaw::None),
        1 => (-8i32..=8).prop_map(Flaw::Length),
        1 => Just(Flaw::NoPadding),
    ]
}

fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        1 => Just(Address::Unknown),
        3 => any::<[u8; 4]>().prop_map(Address::V4),
        3 => any::<[u8; 16]>().prop_map(Address::V6),
        1 => (3u32..).prop_map(Address::Invalid),
    ]
}

/// A sampled frame: Ethernet, maybe 802.1Q, IPv4 or IPv6, TCP or UDP, cut to `keep` bytes;
/// `raw_ip` leaves out the link layer (header protocols 11 and 12).
fn sampled_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(0u16..4096),
        any::<bool>(),
        any::<([u8; 16], [u8; 16])>(),
        any::<(u16, u16, bool, bool)>(),
        any::<bool>(),
        0usize..160,
    )
        .prop_map(|(vlan, v4, (src, dst), (sport, dport, tcp, syn), raw_ip, keep)| {
            let mut frame = Vec::new();
            let link = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
            let (src4, dst4) = ([src[0], src[1], src[2], src[3]], [dst[0], dst[1], dst[2], dst[3]]);
            let vlan = vlan.and_then(|id| VlanId::try_new(id).ok());
            let written = match (raw_ip, vlan, v4) {
                (true, _, true) => write_l4(
                    PacketBuilder::ipv4(src4, dst4, 64),
                    tcp,
                    syn,
                    sport,
                    dport,
                    &mut frame,
                ),
                (true, _, false) => write_l4(
                    PacketBuilder::ipv6(src, dst, 64),
                    tcp,
                    syn,
                    sport,
                    dport,
                    &mut frame,
                ),
                (false, Some(id), true) => write_l4(
                    link.single_vlan(id).ipv4(src4, dst4, 64),
                    tcp,
                    syn,
                    sport,
                    dport,
                    &mut frame,
                ),
                (false, Some(id), false) => write_l4(
                    link.single_vlan(id).ipv6(src, dst, 64),
                    tcp,
                    syn,
                    sport,
                    dport,
                    &mut frame,
                ),
                (false, None, true) => {
                    write_l4(link.ipv4(src4, dst4, 64), tcp, syn, sport, dport, &mut frame)
                }
                (false, None, false) => write_l4(link.ipv6(src, dst, 64), tcp, syn, sport, dport, &mut frame),
            };
            written.expect("a frame of a few bytes is always written");
            frame.truncate(keep);
            frame
        })
}

fn write_l4(
    ip: PacketBuilderStep<IpHeaders>,
    tcp: bool,
    syn: bool,
    sport: u16,
    dport: u16,
    frame: &mut Vec<u8>,
) -> Result<(), etherparse::err::packet::BuildWriteError> {
    let payload = [0u8; 64];
    if tcp {
        let mut builder = ip.tcp(sport, dport, 1, 64_240);
        if syn {
            builder = builder.syn();
        }
        builder.write(frame, &payload)
    } else {
        ip.udp(sport, dport).write(frame, &payload)
    }
}

fn sampled_header() -> impl Strategy<Value = Record> {
    (
        prop_oneof![
            6 => prop::sample::select(vec![1u32, 11, 12, 13]),
            2 => 0u32..20,
            1 => any::<u32>(),
        ],
        edge_u32(),
        any::<u32>(),
        prop_oneof![
            4 => sampled_frame(),
            1 => prop::collection::vec(any::<u8>(), 0..140),
        ],
        flaw(),
    )
        .prop_map(
            |(protocol, frame_length, stripped, header, header_flaw)| Record::SampledHeader {
                protocol,
                frame_length,
                stripped,
                header,
                header_flaw,
            },
        )
}

/// Formats of records the mapping skips: fixed-layout ones `sflow-parser` parses, variable
/// ones, ones it does not know, and other enterprises.
fn other_format() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => prop::sample::select(vec![
            2u32, 1004, 1005, 1006, 1007, 1008, 1011, 1012, 1017, 1018, 1019, 1020, 1021, 1023, 1025,
            1027, 1031, 1032, 1033, 1034, 1036, 1037, 1039, 1040, 1042, 2000, 2001, 2002, 2003,
            2100, 2101, 2102, 2103, 2200, 2206, 2208, 2210,
        ]),
        1 => prop::sample::select(vec![0u32, 5, 999, 1043, 1999, 2004, 2099, 2104, 2199, 2211, 4095]),
        1 => prop::sample::select(vec![4413 << 12 | 1, 4413 << 12 | 2, 4300 << 12 | 1003, 9 << 12 | 1]),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        4 => sampled_header(),
        2 => prop::array::uniform8(edge_u32()).prop_map(Record::SampledIpv4),
        2 => (edge_u32(), edge_u32(), any::<[u8; 16]>(), any::<[u8; 16]>(), prop::array::uniform4(edge_u32()))
            .prop_map(|(length, protocol, src, dst, words)| Record::SampledIpv6 { length, protocol, src, dst, words }),
        3 => prop::array::uniform4(edge_u32()).prop_map(Record::ExtendedSwitch),
        2 => (address(), prop::array::uniform2(edge_u32()))
            .prop_map(|(next_hop, masks)| Record::ExtendedRouter { next_hop, masks }),
        3 => (
            address(),
            prop::array::uniform3(edge_u32()),
            prop::collection::vec((1u32..=4, prop::collection::vec(any::<u32>(), 0..4)), 0..4),
            prop::collection::vec(any::<u32>(), 0..4),
            any::<u32>(),
        )
            .prop_map(|(next_hop, words, as_path, communities, local_pref)| Record::ExtendedGateway {
                next_hop,
                words,
                as_path,
                communities,
                local_pref,
            }),
        2 => (prop_oneof![Just(0u32), any::<u32>()], prop::array::uniform12(any::<u32>()))
            .prop_map(|(rtt, mut words)| {
                words[7] = rtt;
                Record::ExtendedTcpInfo(words)
            }),
        3 => (other_format(), prop::collection::vec(any::<u8>(), 0..100))
            .prop_map(|(format, data)| Record::Other { format, data }),
    ]
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        any::<bool>(),
        // Few sources and small sequence numbers and drops, so that a stream of datagrams
        // has gaps, reordering and drops growth for the loss accounting.
        (0u32..12, 0u32..3),
        (0u32..3, 1u32..4),
        prop_oneof![Just(0u32), Just(1), any::<u32>()],
        (0u32..3, edge_u32()),
        (0u32..3, edge_u32()),
        prop::collection::vec((record(), flaw()), 0..6),
        prop_oneof![10 => Just(0i32), 1 => -2i32..=2],
    )
        .prop_map(
            |(
                expanded,
                (sequence_number, drops),
                source,
                sampling_rate,
                input,
                output,
                records,
                count_delta,
            )| {
                Sample {
                    expanded,
                    sequence_number,
                    source,
                    sampling_rate,
                    drops,
                    input,
                    output,
                    records,
                    count_delta,
                }
            },
        )
}

fn datagram() -> impl Strategy<Value = Datagram> {
    (
        0u32..2,
        prop::collection::vec(sample(), 1..4),
        prop::bool::weighted(0.2),
        prop_oneof![6 => Just(vec![]), 1 => prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)],
        prop_oneof![8 => Just(None), 1 => any::<u8>().prop_map(Some)],
    )
        .prop_map(|(sub_agent_id, samples, counters, flips, cut)| Datagram {
            sub_agent_id,
            samples,
            counters,
            flips,
            cut,
        })
}

/// A decoder with its accounting and output.
struct Run {
    decoder: SflowDecoder,
    accounting: Accounting,
    out: DecodeOutput,
}

impl Run {
    fn new(parser_only: bool) -> Self {
        let mut decoder = SflowDecoder::new(&DecoderConfig::default());
        decoder.parser_only = parser_only;
        Self {
            decoder,
            accounting: Accounting::default(),
            out: DecodeOutput::default(),
        }
    }
}

/// Decodes `payload` with both decoders; returns their results.
fn decode_both(
    fast: &mut Run,
    parser: &mut Run,
    exporter: IpAddr,
    payload: &[u8],
) -> (crate::decode::Result<()>, crate::decode::Result<()>) {
    let decode = |run: &mut Run| {
        run.out.clear();
        run.decoder.decode(
            exporter,
            1_700_000_000,
            payload,
            &mut run.accounting,
            &mut run.out,
        )
    };
    (decode(fast), decode(parser))
}

/// The accounting rows of a run, in a stable order.
fn drained(run: &mut Run) -> Vec<egress_query::schema::ExporterStatsRow> {
    let mut rows = run.accounting.drain(0);
    rows.sort_by_key(|row| (row.exporter_address, row.observation_domain));
    rows
}

/// Real devices' datagrams (`shared/fixtures/captures/sflow-v5`, read in place), each capture
/// through both decoders: the same output and accounting.
#[test]
fn fast_path_decodes_the_real_captures_as_sflow_parser_does() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/captures/sflow-v5");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pcap"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no capture in {}", dir.display());
    let mut flows = 0;
    for file in files {
        let (datagrams, _) = crate::capture::read_datagrams(&file).expect("a readable capture");
        let (mut fast, mut parser) = (Run::new(false), Run::new(true));
        for (index, datagram) in datagrams.iter().enumerate() {
            let exporter = datagram.source.ip();
            let (fast_result, parser_result) =
                decode_both(&mut fast, &mut parser, exporter, &datagram.payload);
            let at = format!("{} datagram {index}", file.display());
            assert_eq!(fast_result, parser_result, "{at}");
            assert_eq!(fast.out.flows, parser.out.flows, "{at}");
            assert_eq!(fast.out.counters, parser.out.counters, "{at}");
            assert_eq!(fast.out.errors, parser.out.errors, "{at}");
            flows += fast.out.flows.len();
        }
        assert_eq!(drained(&mut fast), drained(&mut parser), "{}", file.display());
        assert_eq!(fast.decoder.export_state(), parser.decoder.export_state());
    }
    assert!(flows > 0, "the captures hold flow samples");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// A stream of datagrams from one exporter: the fast path and the `sflow-parser` path
    /// give the same records, errors, loss and source state, datagram by datagram.
    #[test]
    fn fast_path_decodes_as_sflow_parser_does(datagrams in prop::collection::vec(datagram(), 1..6)) {
        let exporter = IpAddr::from([192, 0, 2, 1]);
        let mut fast = Run::new(false);
        let mut parser = Run::new(true);
        for (index, datagram) in datagrams.iter().enumerate() {
            let payload = encode(datagram);
            let (fast_result, parser_result) = decode_both(&mut fast, &mut parser, exporter, &payload);
            prop_assert_eq!(fast_result, parser_result, "datagram {}", index);
            prop_assert_eq!(&fast.out.flows, &parser.out.flows, "datagram {}", index);
            prop_assert_eq!(&fast.out.counters, &parser.out.counters, "datagram {}", index);
            prop_assert_eq!(&fast.out.errors, &parser.out.errors, "datagram {}", index);
        }
        prop_assert_eq!(drained(&mut fast), drained(&mut parser));
        prop_assert_eq!(fast.accounting.missed_while_stopped(), parser.accounting.missed_while_stopped());
        prop_assert_eq!(fast.decoder.export_state(), parser.decoder.export_state());
    }
}
