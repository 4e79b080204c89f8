//! NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) datagram builders.
//!
//! In: simulated flows and the export clock. Out: one datagram per call.
//!
//! NetFlow v9 and IPFIX share one encoder ([`TemplateEncoder`]) and one field writer: the
//! element ids below 128 mean the same in both. Each exporter announces two data templates
//! (256: IPv4, 257: IPv6) and one options template (258) whose single options data record
//! announces the packet sampler that every data record names:
//! - NetFlow v9, as Cisco IOS XR sends it: scope System (1, 4 bytes) with `FLOW_SAMPLER_ID`
//!   (48), `FLOW_SAMPLER_MODE` (49, 2 = random) and `FLOW_SAMPLER_RANDOM_INTERVAL` (50); data
//!   records carry `FLOW_SAMPLER_ID` (48).
//! - IPFIX, as PSAMP (RFC 5477) defines it and Cisco IOS XE's sampler option table sends it:
//!   scope `selectorId` (302) with `selectorAlgorithm` (304, 1 = systematic count-based),
//!   `samplingPacketInterval` (305) = 1 and `samplingPacketSpace` (306) = rate - 1, so the rate
//!   is (interval + space) / interval; data records carry `selectorId` (302).
//!
//! Times: NetFlow v5/v9 records carry `first`/`last` switched as milliseconds of router uptime
//! (the header gives uptime and wall clock); IPFIX records carry `flowStartMilliseconds` (152)
//! and `flowEndMilliseconds` (153), absolute.

use std::net::IpAddr;

use super::{
    patch_u16, put_addr, put_u16, put_u32, put_uint, DatagramSummary, ExportClock, MAX_DATAGRAM_BYTES,
};
use crate::normalise::Direction;
use crate::simulate::fleet::{Router, SimulatedFlow};

/// NetFlow v5 allows at most 30 records per datagram (1464 bytes, above [`MAX_DATAGRAM_BYTES`]
/// but within a 1500-byte MTU).
pub const V5_MAX_RECORDS: usize = 30;
const V5_HEADER_BYTES: usize = 24;
const V5_RECORD_BYTES: usize = 48;
/// The 2-byte AS that stands for a 4-byte one in 2-byte fields (RFC 6793).
const AS_TRANS: u32 = 23456;

/// The sampler (v9) or selector (IPFIX) id every data record names.
pub const SAMPLER_ID: u64 = 1;
pub const TEMPLATE_ID_V4: u16 = 256;
pub const TEMPLATE_ID_V6: u16 = 257;
pub const OPTIONS_TEMPLATE_ID: u16 = 258;
/// NetFlow v9 source id and IPFIX observation domain of every virtual exporter.
pub const OBSERVATION_DOMAIN_V9: u32 = 0;
pub const OBSERVATION_DOMAIN_IPFIX: u32 = 1;

/// NetFlow v5: a fixed record, the sampling interval in the header.
#[derive(Debug)]
pub struct NetflowV5Encoder {
    /// Flows sent before the next datagram.
    flow_sequence: u32,
    engine_id: u8,
    /// Mode bits 01 (packet interval) and the 14-bit rate.
    sampling_interval: u16,
}

impl NetflowV5Encoder {
    pub fn new(router: &Router, sampling_rate: u32) -> Self {
        Self {
            flow_sequence: 0,
            engine_id: router.index as u8,
            sampling_interval: 0x4000 | (sampling_rate.min(0x3fff) as u16),
        }
    }

    /// Writes up to 30 IPv4 flows; IPv6 flows cannot be carried and are skipped.
    pub fn encode(
        &mut self,
        clock: ExportClock,
        flows: &[SimulatedFlow],
        out: &mut Vec<u8>,
    ) -> DatagramSummary {
        let mut summary = DatagramSummary::default();
        out.clear();
        put_u16(out, 5);
        put_u16(out, 0); // count, patched below
        put_u32(out, clock.uptime_ms());
        put_u32(out, clock.unix_secs());
        put_u32(out, (clock.unix_ms % 1000) as u32 * 1_000_000);
        put_u32(out, self.flow_sequence);
        out.push(0); // engine_type
        out.push(self.engine_id);
        put_u16(out, self.sampling_interval);
        for flow in flows {
            if summary.flow_records as usize == V5_MAX_RECORDS {
                break;
            }
            summary.consumed += 1;
            let (IpAddr::V4(src), IpAddr::V4(dst)) = (flow.src_addr, flow.dst_addr) else {
                continue;
            };
            let next_hop = match flow.next_hop {
                IpAddr::V4(hop) => hop.octets(),
                IpAddr::V6(_) => [0; 4],
            };
            let packets = flow.packets.min(u64::from(u32::MAX));
            let bytes = flow.bytes.min(u64::from(u32::MAX));
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            out.extend_from_slice(&next_hop);
            put_u16(out, flow.in_if.min(0xffff) as u16);
            put_u16(out, flow.out_if.min(0xffff) as u16);
            put_u32(out, packets as u32);
            put_u32(out, bytes as u32);
            put_u32(out, clock.uptime_ms_ago(flow.start_age_ms));
            put_u32(out, clock.uptime_ms_ago(flow.end_age_ms));
            put_u16(out, flow.src_port);
            put_u16(out, flow.dst_port);
            out.extend_from_slice(&[0, flow.tcp_flags, flow.proto, flow.tos]);
            put_u16(out, as16(flow.src_as));
            put_u16(out, as16(flow.dst_as));
            out.extend_from_slice(&[flow.src_mask, flow.dst_mask, 0, 0]);
            summary.flow_records += 1;
            summary.packets += packets;
            summary.bytes += bytes;
        }
        patch_u16(out, 2, summary.flow_records as u16);
        debug_assert_eq!(
            out.len(),
            V5_HEADER_BYTES + V5_RECORD_BYTES * summary.flow_records as usize
        );
        self.flow_sequence = self.flow_sequence.wrapping_add(summary.flow_records as u32);
        summary
    }
}

fn as16(asn: u32) -> u16 {
    u16::try_from(asn).unwrap_or(AS_TRANS as u16)
}

/// Which template-based protocol a [`TemplateEncoder`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    NetflowV9,
    Ipfix,
}

/// (element id, length) of a template's fields.
type Template = &'static [(u16, u16)];

const V9_IPV4: Template = &[
    (8, 4),  // IPV4_SRC_ADDR
    (12, 4), // IPV4_DST_ADDR
    (15, 4), // IPV4_NEXT_HOP
    (7, 2),  // L4_SRC_PORT
    (11, 2), // L4_DST_PORT
    (4, 1),  // PROTOCOL
    (5, 1),  // SRC_TOS
    (6, 1),  // TCP_FLAGS
    (10, 4), // INPUT_SNMP
    (14, 4), // OUTPUT_SNMP
    (1, 8),  // IN_BYTES
    (2, 4),  // IN_PKTS
    (22, 4), // FIRST_SWITCHED
    (21, 4), // LAST_SWITCHED
    (16, 4), // SRC_AS
    (17, 4), // DST_AS
    (9, 1),  // SRC_MASK
    (13, 1), // DST_MASK
    (58, 2), // SRC_VLAN
    (61, 1), // DIRECTION
    (48, 2), // FLOW_SAMPLER_ID
];

const V9_IPV6: Template = &[
    (27, 16), // IPV6_SRC_ADDR
    (28, 16), // IPV6_DST_ADDR
    (62, 16), // IPV6_NEXT_HOP
    (7, 2),
    (11, 2),
    (4, 1),
    (5, 1),
    (6, 1),
    (10, 4),
    (14, 4),
    (1, 8),
    (2, 4),
    (22, 4),
    (21, 4),
    (16, 4),
    (17, 4),
    (29, 1), // IPV6_SRC_MASK
    (30, 1), // IPV6_DST_MASK
    (58, 2),
    (61, 1),
    (48, 2),
];

const IPFIX_IPV4: Template = &[
    (8, 4),   // sourceIPv4Address
    (12, 4),  // destinationIPv4Address
    (15, 4),  // ipNextHopIPv4Address
    (7, 2),   // sourceTransportPort
    (11, 2),  // destinationTransportPort
    (4, 1),   // protocolIdentifier
    (5, 1),   // ipClassOfService
    (6, 2),   // tcpControlBits
    (10, 4),  // ingressInterface
    (14, 4),  // egressInterface
    (1, 8),   // octetDeltaCount
    (2, 8),   // packetDeltaCount
    (152, 8), // flowStartMilliseconds
    (153, 8), // flowEndMilliseconds
    (16, 4),  // bgpSourceAsNumber
    (17, 4),  // bgpDestinationAsNumber
    (9, 1),   // sourceIPv4PrefixLength
    (13, 1),  // destinationIPv4PrefixLength
    (58, 2),  // vlanId
    (61, 1),  // flowDirection
    (302, 8), // selectorId
];

const IPFIX_IPV6: Template = &[
    (27, 16), // sourceIPv6Address
    (28, 16), // destinationIPv6Address
    (62, 16), // ipNextHopIPv6Address
    (7, 2),
    (11, 2),
    (4, 1),
    (5, 1),
    (6, 2),
    (10, 4),
    (14, 4),
    (1, 8),
    (2, 8),
    (152, 8),
    (153, 8),
    (16, 4),
    (17, 4),
    (29, 1), // sourceIPv6PrefixLength
    (30, 1), // destinationIPv6PrefixLength
    (58, 2),
    (61, 1),
    (302, 8),
];

/// NetFlow v9 options template 258: scope System (1, 4 bytes), then the sampler fields.
const V9_OPTIONS_SCOPE: Template = &[(1, 4)];
const V9_OPTIONS_FIELDS: Template = &[
    (48, 2), // FLOW_SAMPLER_ID
    (49, 1), // FLOW_SAMPLER_MODE
    (50, 4), // FLOW_SAMPLER_RANDOM_INTERVAL
];

/// IPFIX options template 258: scope selectorId, then the PSAMP selector fields.
const IPFIX_OPTIONS_SCOPE: Template = &[(302, 8)];
const IPFIX_OPTIONS_FIELDS: Template = &[
    (304, 1), // selectorAlgorithm
    (305, 4), // samplingPacketInterval
    (306, 4), // samplingPacketSpace
];

const V9_HEADER_BYTES: usize = 20;
const IPFIX_HEADER_BYTES: usize = 16;
const SET_HEADER_BYTES: usize = 4;

fn record_len(template: Template) -> usize {
    template.iter().map(|&(_, len)| usize::from(len)).sum()
}

/// `len` rounded up to a multiple of 4 (flowset padding).
fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// NetFlow v9 or IPFIX: templates, options and data in the shape of one exporter.
#[derive(Debug)]
pub struct TemplateEncoder {
    format: Format,
    observation_domain: u32,
    /// The System scope value of the v9 options record: the exporter's IPv4 address, or 0.
    system_scope: u32,
    sampling_rate: u32,
    /// NetFlow v9: datagrams sent before the next one. IPFIX: data records sent before it.
    sequence: u32,
}

impl TemplateEncoder {
    pub fn netflow_v9(router: &Router, sampling_rate: u32) -> Self {
        Self::new(Format::NetflowV9, OBSERVATION_DOMAIN_V9, router, sampling_rate)
    }

    pub fn ipfix(router: &Router, sampling_rate: u32) -> Self {
        Self::new(Format::Ipfix, OBSERVATION_DOMAIN_IPFIX, router, sampling_rate)
    }

    fn new(format: Format, observation_domain: u32, router: &Router, sampling_rate: u32) -> Self {
        let system_scope = match router.exporter_address {
            IpAddr::V4(a) => u32::from(a),
            IpAddr::V6(_) => 0,
        };
        Self {
            format,
            observation_domain,
            system_scope,
            sampling_rate: sampling_rate.max(1),
            sequence: 0,
        }
    }

    fn templates(&self) -> (Template, Template) {
        match self.format {
            Format::NetflowV9 => (V9_IPV4, V9_IPV6),
            Format::Ipfix => (IPFIX_IPV4, IPFIX_IPV6),
        }
    }

    fn header_len(&self) -> usize {
        match self.format {
            Format::NetflowV9 => V9_HEADER_BYTES,
            Format::Ipfix => IPFIX_HEADER_BYTES,
        }
    }

    /// The most IPv4 records (the smaller ones) that fit in one datagram.
    pub fn max_records_per_datagram(&self) -> usize {
        let (v4, _) = self.templates();
        (MAX_DATAGRAM_BYTES - self.header_len() - SET_HEADER_BYTES - 3) / record_len(v4)
    }

    /// The message header, with count (v9) or length (IPFIX) left to [`Self::finish`].
    fn start(&self, clock: ExportClock, out: &mut Vec<u8>) {
        out.clear();
        match self.format {
            Format::NetflowV9 => {
                put_u16(out, 9);
                put_u16(out, 0); // count
                put_u32(out, clock.uptime_ms());
                put_u32(out, clock.unix_secs());
                put_u32(out, self.sequence);
                put_u32(out, self.observation_domain);
            }
            Format::Ipfix => {
                put_u16(out, 10);
                put_u16(out, 0); // length
                put_u32(out, clock.unix_secs());
                put_u32(out, self.sequence);
                put_u32(out, self.observation_domain);
            }
        }
    }

    /// Patches the header and advances the sequence: v9 counts datagrams, IPFIX data records.
    fn finish(&mut self, out: &mut [u8], records: u64, data_records: u64) {
        match self.format {
            Format::NetflowV9 => {
                patch_u16(out, 2, records as u16);
                self.sequence = self.sequence.wrapping_add(1);
            }
            Format::Ipfix => {
                patch_u16(out, 2, out.len() as u16);
                self.sequence = self.sequence.wrapping_add(data_records as u32);
            }
        }
    }

    /// Opens a set (flowset) with `set_id`; returns where it starts, for [`close_set`].
    fn open_set(out: &mut Vec<u8>, set_id: u16) -> usize {
        let start = out.len();
        put_u16(out, set_id);
        put_u16(out, 0);
        start
    }

    /// Pads the set to 4 bytes and writes its length.
    fn close_set(out: &mut Vec<u8>, start: usize) {
        out.resize(start + padded(out.len() - start), 0);
        let len = out.len() - start;
        patch_u16(out, start + 2, len as u16);
    }

    /// One datagram with the two data templates, the options template and the sampler's
    /// options data record.
    pub fn encode_templates(&mut self, clock: ExportClock, out: &mut Vec<u8>) -> DatagramSummary {
        let (v4, v6) = self.templates();
        self.start(clock, out);
        let (template_set, options_set) = match self.format {
            Format::NetflowV9 => (0, 1),
            Format::Ipfix => (2, 3),
        };
        let set = Self::open_set(out, template_set);
        for (id, template) in [(TEMPLATE_ID_V4, v4), (TEMPLATE_ID_V6, v6)] {
            put_u16(out, id);
            put_u16(out, template.len() as u16);
            for &(element, len) in template {
                put_u16(out, element);
                put_u16(out, len);
            }
        }
        Self::close_set(out, set);

        let (scope, fields) = match self.format {
            Format::NetflowV9 => (V9_OPTIONS_SCOPE, V9_OPTIONS_FIELDS),
            Format::Ipfix => (IPFIX_OPTIONS_SCOPE, IPFIX_OPTIONS_FIELDS),
        };
        let set = Self::open_set(out, options_set);
        put_u16(out, OPTIONS_TEMPLATE_ID);
        match self.format {
            // Scope and option lengths in bytes of field specifiers.
            Format::NetflowV9 => {
                put_u16(out, (scope.len() * 4) as u16);
                put_u16(out, (fields.len() * 4) as u16);
            }
            // Total field count, then scope field count.
            Format::Ipfix => {
                put_u16(out, (scope.len() + fields.len()) as u16);
                put_u16(out, scope.len() as u16);
            }
        }
        for &(element, len) in scope.iter().chain(fields) {
            put_u16(out, element);
            put_u16(out, len);
        }
        Self::close_set(out, set);

        let set = Self::open_set(out, OPTIONS_TEMPLATE_ID);
        match self.format {
            Format::NetflowV9 => {
                put_u32(out, self.system_scope);
                put_uint(out, SAMPLER_ID, 2);
                out.push(2); // random sampling
                put_u32(out, self.sampling_rate);
            }
            Format::Ipfix => {
                put_uint(out, SAMPLER_ID, 8);
                out.push(1); // systematic count-based sampling
                put_u32(out, 1);
                put_u32(out, self.sampling_rate - 1);
            }
        }
        Self::close_set(out, set);
        let summary = DatagramSummary {
            template_records: 3,
            options_records: 1,
            ..Default::default()
        };
        self.finish(out, 4, 1);
        summary
    }

    /// One datagram with as many of `flows` as fit: an IPv4 data set, then an IPv6 one.
    pub fn encode_flows(
        &mut self,
        clock: ExportClock,
        flows: &[SimulatedFlow],
        out: &mut Vec<u8>,
    ) -> DatagramSummary {
        let (v4, v6) = self.templates();
        let (v4_len, v6_len) = (record_len(v4), record_len(v6));
        let set_len = |count: usize, len: usize| {
            if count == 0 {
                0
            } else {
                padded(SET_HEADER_BYTES + count * len)
            }
        };
        let (mut v4_count, mut v6_count, mut consumed) = (0, 0, 0);
        for flow in flows {
            let (next_v4, next_v6) = if flow.is_ipv4() {
                (v4_count + 1, v6_count)
            } else {
                (v4_count, v6_count + 1)
            };
            if self.header_len() + set_len(next_v4, v4_len) + set_len(next_v6, v6_len) > MAX_DATAGRAM_BYTES {
                break;
            }
            (v4_count, v6_count, consumed) = (next_v4, next_v6, consumed + 1);
        }
        let taken = flows.get(..consumed).unwrap_or_default();
        let mut summary = DatagramSummary {
            consumed,
            ..Default::default()
        };
        self.start(clock, out);
        for (ipv4, template_id, template, count) in [
            (true, TEMPLATE_ID_V4, v4, v4_count),
            (false, TEMPLATE_ID_V6, v6, v6_count),
        ] {
            if count == 0 {
                continue;
            }
            let set = Self::open_set(out, template_id);
            for flow in taken.iter().filter(|f| f.is_ipv4() == ipv4) {
                for &(element, len) in template {
                    self.write_field(out, element, usize::from(len), flow, clock);
                }
                summary.flow_records += 1;
                summary.bytes += flow.bytes;
                summary.packets += clamp_to(flow.packets, template, 2);
            }
            Self::close_set(out, set);
        }
        self.finish(out, summary.flow_records, summary.flow_records);
        summary
    }

    /// Writes one field of a data record.
    fn write_field(
        &self,
        out: &mut Vec<u8>,
        element: u16,
        len: usize,
        flow: &SimulatedFlow,
        clock: ExportClock,
    ) {
        let value: u64 = match element {
            8 | 27 => return put_addr_field(out, flow.src_addr, len),
            12 | 28 => return put_addr_field(out, flow.dst_addr, len),
            15 | 62 => return put_addr_field(out, flow.next_hop, len),
            7 => flow.src_port.into(),
            11 => flow.dst_port.into(),
            4 => flow.proto.into(),
            5 => flow.tos.into(),
            6 => flow.tcp_flags.into(),
            10 => flow.in_if.into(),
            14 => flow.out_if.into(),
            1 => flow.bytes,
            2 => flow.packets.min(max_for(len)),
            22 => clock.uptime_ms_ago(flow.start_age_ms).into(),
            21 => clock.uptime_ms_ago(flow.end_age_ms).into(),
            152 => clock.unix_ms_ago(flow.start_age_ms),
            153 => clock.unix_ms_ago(flow.end_age_ms),
            16 => flow.src_as.into(),
            17 => flow.dst_as.into(),
            9 | 29 => flow.src_mask.into(),
            13 | 30 => flow.dst_mask.into(),
            58 => flow.vlan.into(),
            61 => u64::from(flow.direction == Direction::Egress),
            48 | 302 => SAMPLER_ID,
            _ => 0,
        };
        put_uint(out, value, len);
    }
}

/// The largest value a field of `len` bytes holds.
fn max_for(len: usize) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    }
}

/// `value` as the template's `element` field carries it (clamped to the field's length).
fn clamp_to(value: u64, template: Template, element: u16) -> u64 {
    let len = template
        .iter()
        .find(|&&(e, _)| e == element)
        .map_or(8, |&(_, len)| usize::from(len));
    value.min(max_for(len))
}

/// An address field: its bytes when the family matches the field's length, zeros otherwise.
fn put_addr_field(out: &mut Vec<u8>, addr: IpAddr, len: usize) {
    let fits = matches!((addr, len), (IpAddr::V4(_), 4) | (IpAddr::V6(_), 16));
    if fits {
        put_addr(out, addr);
    } else {
        out.resize(out.len() + len, 0);
    }
}

#[cfg(test)]
mod tests;
