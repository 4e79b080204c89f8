//! One NetFlow v9 / IPFIX data record → one [`FlowRecord`], or one options data record → a
//! sampling rate.
//!
//! In: the template's field layout and the record's bytes, walked field by field by
//! [`super::FieldWalker`]. Out: a [`FlowRecord`] plus what the record said about sampling
//! ([`RecordSampling`]); the caller resolves the final rate against the options data it knows.
//!
//! Information elements are read by number (RFC 7012 / IANA registry; NetFlow v9 uses the same
//! numbers for the fields read here, RFC 3954 §8). Integers may be exported with reduced size
//! (RFC 7011 §6.2), so every integer is read from whatever width 1..=8 bytes the template
//! gives; an element of an unexpected width is ignored rather than misread.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::normalise::{Direction, FlowRecord};
use egress_query::schema::RttSource;

use super::{FieldSpec, MessageHeader};

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Big-endian unsigned integer of 1 to 8 bytes; `None` for any other width.
pub(super) fn be_uint(bytes: &[u8]) -> Option<u64> {
    // The usual widths first: one load instead of a loop over the bytes.
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        return Some(u64::from(u32::from_be_bytes(b)));
    }
    if let Ok(b) = <[u8; 2]>::try_from(bytes) {
        return Some(u64::from(u16::from_be_bytes(b)));
    }
    if let Ok(b) = <[u8; 8]>::try_from(bytes) {
        return Some(u64::from_be_bytes(b));
    }
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

pub(super) fn be_u32(bytes: &[u8]) -> Option<u32> {
    be_uint(bytes).map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

pub(super) fn be_u16(bytes: &[u8]) -> Option<u16> {
    be_uint(bytes).map(|v| u16::try_from(v).unwrap_or(u16::MAX))
}

/// Low byte of an integer field (TCP flags are 1 byte in v9 and 2 bytes in IPFIX).
pub(super) fn low_u8(bytes: &[u8]) -> Option<u8> {
    be_uint(bytes).map(|v| (v & 0xff) as u8)
}

pub(super) fn ipv4(bytes: &[u8]) -> Option<Ipv6Addr> {
    let octets: [u8; 4] = bytes.try_into().ok()?;
    Some(Ipv4Addr::from(octets).to_ipv6_mapped())
}

pub(super) fn ipv6(bytes: &[u8]) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = bytes.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}

/// Unix seconds from a sysUpTime-relative timestamp (NetFlow v5/v9 first/last switched):
/// the export header says that at `export_unix_ms` the device's uptime was `sys_up_time_ms`.
///
/// The difference is taken modulo 2^32 and read as signed, so an uptime counter that wrapped
/// between the flow and the export still gives a recent time, and a flow stamped slightly after
/// the header's uptime (exporters that sample the clock twice) lands slightly after the export
/// time instead of 49 days earlier.
pub(super) fn uptime_to_unix(export_unix_ms: u64, sys_up_time_ms: u32, switched_ms: u32) -> u32 {
    let age_ms = i64::from(sys_up_time_ms.wrapping_sub(switched_ms) as i32);
    let unix_ms = i64::try_from(export_unix_ms)
        .unwrap_or(i64::MAX)
        .saturating_sub(age_ms);
    u32::try_from(unix_ms.max(0) / 1000).unwrap_or(u32::MAX)
}

/// Unix seconds from the seconds part of an NTP timestamp (dateTimeMicroseconds/Nanoseconds).
fn ntp_to_unix(bytes: &[u8]) -> Option<u32> {
    let seconds = be_uint(bytes.get(..4)?)?;
    u32::try_from(seconds.checked_sub(NTP_UNIX_OFFSET)?).ok()
}

pub(super) fn secs_u32(seconds: u64) -> u32 {
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

/// What a data record said about its own sampling.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordSampling {
    /// A rate carried in the record itself (34, 50, 305+306, 309+310).
    pub rate: Option<u64>,
    /// The sampler (48) or selector (302) the record names.
    pub sampler_id: Option<u64>,
}

/// Sampling elements of one record (flow or options data), turned into one rate.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SamplingFields {
    sampling_interval: Option<u64>,
    sampler_random_interval: Option<u64>,
    packet_interval: Option<u64>,
    packet_space: Option<u64>,
    sampling_size: Option<u64>,
    sampling_population: Option<u64>,
    sampler_id: Option<u64>,
    selector_id: Option<u64>,
}

impl SamplingFields {
    /// Takes the element if it is a sampling element; returns whether it was one.
    pub(super) fn take_element(&mut self, id: u16, value: &[u8]) -> bool {
        let slot = match id {
            34 => &mut self.sampling_interval,
            50 => &mut self.sampler_random_interval,
            305 => &mut self.packet_interval,
            306 => &mut self.packet_space,
            309 => &mut self.sampling_size,
            310 => &mut self.sampling_population,
            48 => &mut self.sampler_id,
            302 => &mut self.selector_id,
            _ => return false,
        };
        *slot = be_uint(value);
        true
    }

    /// The rate these elements give: 1 in N packets.
    ///
    /// samplingInterval (34) and samplerRandomInterval (50) are N itself; systematic count-based
    /// sampling (305/306) selects `interval` packets out of every `interval + space`; random
    /// n-out-of-N (309/310) selects `size` out of `population`. A zero is "not configured".
    pub(super) fn rate(&self) -> Option<u64> {
        let nonzero = |v: Option<u64>| v.filter(|v| *v > 0);
        if let Some(rate) = nonzero(self.sampling_interval).or(nonzero(self.sampler_random_interval)) {
            return Some(rate);
        }
        if let Some(interval) = nonzero(self.packet_interval) {
            let space = self.packet_space.unwrap_or(0);
            return Some(interval.saturating_add(space) / interval).filter(|r| *r > 0);
        }
        if let (Some(size), Some(population)) =
            (nonzero(self.sampling_size), nonzero(self.sampling_population))
        {
            return Some(population / size).filter(|r| *r > 0);
        }
        None
    }

    /// The sampler or selector the record names (48 samplerId / v9 FLOW_SAMPLER_ID, 302
    /// selectorId).
    pub(super) fn sampler(&self) -> Option<u64> {
        self.sampler_id.or(self.selector_id)
    }
}

/// Private enterprise number of ntop (nProbe) in IPFIX.
const PEN_NTOP: u32 = 35632;
/// Private enterprise number of Citrix (NetScaler AppFlow).
const PEN_NETSCALER: u32 = 5951;
/// Private enterprise number of Cisco (AVC Application Response Time elements).
const PEN_CISCO: u32 = 9;
/// IANA connectionCountNew: the TCP connections opened in the interval; Cisco AVC's
/// `connection new-connections`, the count its network time sums are averaged over.
const CONNECTION_COUNT_NEW: u16 = 278;
/// NetFlow v9 ids of nProbe's elements are this base plus the ntop element number (the
/// element number is what IPFIX carries under PEN 35632).
const NTOP_V9_BASE: u16 = 57472;

/// Latency elements of one record, as exported; [`LatencyFields::store`] turns them into the
/// `rtt_*` columns.
///
/// nProbe (ntop element numbers, v9 id = 57472 + n): 123-125 CLIENT_NW_LATENCY_MS,
/// SERVER_NW_LATENCY_MS, APPL_LATENCY_MS in milliseconds; the older pairs 82/83, 84/85, 86/87
/// (57554-57559) CLIENT_NW_DELAY_SEC/USEC, SERVER_NW_DELAY_SEC/USEC, APPL_LATENCY_SEC/USEC,
/// seconds plus residual microseconds (as nfdump and Wireshark read them). Newer nProbe
/// versions reuse 82-87 for throughput; a record carrying both generations keeps the
/// millisecond elements. NetScaler AppFlow: PEN 5951 element 128, round trip time in
/// milliseconds.
///
/// Cisco AVC Application Response Time (IPFIX PEN 9; numbers and names as Wireshark's dissector
/// knows them): 9316 `connection delay network to-client sum` (client network time), 9319
/// `connection delay network to-server sum` (server network time), 9303 `connection delay
/// response to-server sum` (server response time), all sums of milliseconds over the interval.
/// The network sums are averaged over IANA 278 connectionCountNew (`connection new-connections`,
/// one handshake measured per connection), the response sum over 9292 `connection server counter
/// responses`. A sum without its count, or with a count of 0, stays unknown: a mean cannot be
/// made from it and a guessed one would mislead.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LatencyFields {
    client_ms: Option<u64>,
    server_ms: Option<u64>,
    app_ms: Option<u64>,
    client_sec: Option<u64>,
    client_usec: Option<u64>,
    server_sec: Option<u64>,
    server_usec: Option<u64>,
    app_sec: Option<u64>,
    app_usec: Option<u64>,
    netscaler_rtt_ms: Option<u64>,
    cisco_client_network_sum_ms: Option<u64>,
    cisco_server_network_sum_ms: Option<u64>,
    cisco_server_response_sum_ms: Option<u64>,
    cisco_responses: Option<u64>,
    new_connections: Option<u64>,
}

impl LatencyFields {
    /// Takes the element if it is a latency element; returns whether it was one.
    pub(super) fn take_element(&mut self, field: &FieldSpec, value: &[u8]) -> bool {
        let ntop_element = match field.enterprise {
            0 if field.id == CONNECTION_COUNT_NEW => {
                self.new_connections = be_uint(value);
                return true;
            }
            0 => field.id.checked_sub(NTOP_V9_BASE),
            PEN_NTOP => Some(field.id),
            PEN_NETSCALER if field.id == 128 => {
                self.netscaler_rtt_ms = be_uint(value);
                return true;
            }
            PEN_CISCO => {
                let slot = match field.id {
                    9316 => &mut self.cisco_client_network_sum_ms,
                    9319 => &mut self.cisco_server_network_sum_ms,
                    9303 => &mut self.cisco_server_response_sum_ms,
                    9292 => &mut self.cisco_responses,
                    _ => return false,
                };
                *slot = be_uint(value);
                return true;
            }
            _ => None,
        };
        let slot = match ntop_element {
            Some(123) => &mut self.client_ms,
            Some(124) => &mut self.server_ms,
            Some(125) => &mut self.app_ms,
            Some(82) => &mut self.client_sec,
            Some(83) => &mut self.client_usec,
            Some(84) => &mut self.server_sec,
            Some(85) => &mut self.server_usec,
            Some(86) => &mut self.app_sec,
            Some(87) => &mut self.app_usec,
            _ => return false,
        };
        *slot = be_uint(value);
        true
    }

    /// Sets `record`'s `rtt_*` columns from what the record carried; leaves them NULL (and the
    /// source `none`) when it carried nothing.
    fn store(&self, record: &mut FlowRecord) {
        let from_ms = |ms: Option<u64>| ms.and_then(|ms| micros(ms.checked_mul(1000)?));
        let from_pair = |sec: Option<u64>, usec: Option<u64>| {
            if sec.is_none() && usec.is_none() {
                return None;
            }
            let total = sec
                .unwrap_or(0)
                .checked_mul(1_000_000)?
                .checked_add(usec.unwrap_or(0))?;
            micros(total)
        };
        let nprobe = [
            from_ms(self.client_ms).or_else(|| from_pair(self.client_sec, self.client_usec)),
            from_ms(self.server_ms).or_else(|| from_pair(self.server_sec, self.server_usec)),
            from_ms(self.app_ms).or_else(|| from_pair(self.app_sec, self.app_usec)),
        ];
        if nprobe.iter().any(Option::is_some) {
            let [client, server, app] = nprobe;
            record.rtt_client_us = client;
            record.rtt_server_us = server;
            record.rtt_app_us = app;
            record.rtt_source = RttSource::Nprobe;
            return;
        }
        let mean = |sum_ms: Option<u64>, count: Option<u64>| {
            let mean_us = sum_ms?
                .checked_mul(1000)?
                .checked_div(count.filter(|&c| c > 0)?)?;
            micros(mean_us)
        };
        let cisco = [
            mean(self.cisco_client_network_sum_ms, self.new_connections),
            mean(self.cisco_server_network_sum_ms, self.new_connections),
            mean(self.cisco_server_response_sum_ms, self.cisco_responses),
        ];
        if cisco.iter().any(Option::is_some) {
            let [client, server, app] = cisco;
            record.rtt_client_us = client;
            record.rtt_server_us = server;
            record.rtt_app_us = app;
            record.rtt_source = RttSource::CiscoArt;
        } else if let Some(rtt) = from_ms(self.netscaler_rtt_ms) {
            record.rtt_client_us = Some(rtt);
            record.rtt_source = RttSource::Netscaler;
        }
    }
}

/// Microseconds as stored (`UInt32`); a value that does not fit (over 71 minutes) is not a
/// plausible latency and is dropped rather than clipped.
fn micros(us: u64) -> Option<u32> {
    u32::try_from(us).ok()
}

/// Accumulates the elements of one data record; [`FlowBuilder::finish`] resolves fallbacks.
#[derive(Debug, Default)]
pub(super) struct FlowBuilder {
    octet_delta: Option<u64>,
    octet_total: Option<u64>,
    post_octet_delta: Option<u64>,
    packet_delta: Option<u64>,
    packet_total: Option<u64>,
    post_packet_delta: Option<u64>,
    proto: Option<u8>,
    tos: Option<u8>,
    tcp_flags: Option<u8>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    src_v4: Option<Ipv6Addr>,
    dst_v4: Option<Ipv6Addr>,
    src_v6: Option<Ipv6Addr>,
    dst_v6: Option<Ipv6Addr>,
    src_mask_v4: Option<u8>,
    dst_mask_v4: Option<u8>,
    src_mask_v6: Option<u8>,
    dst_mask_v6: Option<u8>,
    in_if: Option<u32>,
    out_if: Option<u32>,
    in_physical: Option<u32>,
    out_physical: Option<u32>,
    next_hop_v4: Option<Ipv6Addr>,
    next_hop_v6: Option<Ipv6Addr>,
    bgp_next_hop_v4: Option<Ipv6Addr>,
    bgp_next_hop_v6: Option<Ipv6Addr>,
    src_as: Option<u32>,
    dst_as: Option<u32>,
    vlan_id: Option<u16>,
    dot1q_vlan: Option<u16>,
    post_vlan: Option<u16>,
    direction: Option<u8>,
    ip_version: Option<u8>,
    ethernet_type: Option<u16>,
    icmp_type_code: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    start_uptime_ms: Option<u32>,
    end_uptime_ms: Option<u32>,
    start_absolute: Option<u32>,
    end_absolute: Option<u32>,
    start_delta_us: Option<u64>,
    end_delta_us: Option<u64>,
    system_init_ms: Option<u64>,
    pub(super) sampling: SamplingFields,
    latency: LatencyFields,
}

impl FlowBuilder {
    /// Takes one element of the record. Enterprise-specific elements other than the latency
    /// elements ([`LatencyFields`]) are skipped.
    pub(super) fn take(&mut self, field: &FieldSpec, value: &[u8]) {
        if self.latency.take_element(field, value) || field.enterprise != 0 {
            return;
        }
        let id = field.id;
        if self.sampling.take_element(id, value) {
            return;
        }
        match id {
            1 => self.octet_delta = be_uint(value),
            2 => self.packet_delta = be_uint(value),
            4 => self.proto = low_u8(value),
            5 => self.tos = low_u8(value),
            6 => self.tcp_flags = low_u8(value),
            7 => self.src_port = be_u16(value),
            8 => self.src_v4 = ipv4(value),
            9 => self.src_mask_v4 = low_u8(value),
            10 => self.in_if = be_u32(value),
            11 => self.dst_port = be_u16(value),
            12 => self.dst_v4 = ipv4(value),
            13 => self.dst_mask_v4 = low_u8(value),
            14 => self.out_if = be_u32(value),
            15 => self.next_hop_v4 = ipv4(value),
            16 => self.src_as = be_u32(value),
            17 => self.dst_as = be_u32(value),
            18 => self.bgp_next_hop_v4 = ipv4(value),
            21 => self.end_uptime_ms = be_u32(value),
            22 => self.start_uptime_ms = be_u32(value),
            23 => self.post_octet_delta = be_uint(value),
            24 => self.post_packet_delta = be_uint(value),
            27 => self.src_v6 = ipv6(value),
            28 => self.dst_v6 = ipv6(value),
            29 => self.src_mask_v6 = low_u8(value),
            30 => self.dst_mask_v6 = low_u8(value),
            32 | 139 => self.icmp_type_code = be_u16(value),
            58 => self.vlan_id = be_u16(value),
            59 => self.post_vlan = be_u16(value),
            60 => self.ip_version = low_u8(value),
            61 => self.direction = low_u8(value),
            62 => self.next_hop_v6 = ipv6(value),
            63 => self.bgp_next_hop_v6 = ipv6(value),
            85 => self.octet_total = be_uint(value),
            86 => self.packet_total = be_uint(value),
            150 => self.start_absolute = be_u32(value),
            151 => self.end_absolute = be_u32(value),
            152 => self.start_absolute = be_uint(value).map(|ms| secs_u32(ms / 1000)),
            153 => self.end_absolute = be_uint(value).map(|ms| secs_u32(ms / 1000)),
            154 | 156 => self.start_absolute = ntp_to_unix(value),
            155 | 157 => self.end_absolute = ntp_to_unix(value),
            158 => self.start_delta_us = be_uint(value),
            159 => self.end_delta_us = be_uint(value),
            160 => self.system_init_ms = be_uint(value),
            176 | 178 => self.icmp_type = low_u8(value),
            177 | 179 => self.icmp_code = low_u8(value),
            243 => self.dot1q_vlan = be_u16(value),
            252 => self.in_physical = be_u32(value),
            253 => self.out_physical = be_u32(value),
            256 => self.ethernet_type = be_u16(value),
            _ => {}
        }
    }

    /// Fills `record` (already stamped with exporter, domain, flow type and `time_received`)
    /// and returns what the record said about sampling.
    ///
    /// ICMP: when the record carries icmpTypeCode (32/139) or icmpType/icmpCode (176-179) and
    /// the protocol is ICMP or ICMPv6, `dst_port` is `type * 256 + code`, the convention of
    /// nfdump, Akvorado and Cisco's own v9 export (which puts it in L4_DST_PORT); otherwise the
    /// exported destination port is kept.
    pub(super) fn finish(&self, header: &MessageHeader, record: &mut FlowRecord) -> RecordSampling {
        record.bytes = self
            .octet_delta
            .or(self.octet_total)
            .or(self.post_octet_delta)
            .unwrap_or(0);
        record.packets = self
            .packet_delta
            .or(self.packet_total)
            .or(self.post_packet_delta)
            .unwrap_or(0);
        record.proto = self.proto.unwrap_or(0);
        record.tos = self.tos.unwrap_or(0);
        record.tcp_flags = self.tcp_flags.unwrap_or(0);
        record.src_port = self.src_port.unwrap_or(0);
        record.dst_port = self.dst_port.unwrap_or(0);
        if let Some(type_code) =
            icmp_type_code(record.proto, self.icmp_type_code, self.icmp_type, self.icmp_code)
        {
            record.dst_port = type_code;
        }
        // Some exporters send both families with the unused one zeroed.
        let pick = |v4: Option<Ipv6Addr>, v6: Option<Ipv6Addr>| match (v4, v6) {
            (Some(a), Some(b)) if a == Ipv4Addr::UNSPECIFIED.to_ipv6_mapped() && !b.is_unspecified() => {
                Some(b)
            }
            (Some(a), _) => Some(a),
            (None, b) => b,
        };
        let src = pick(self.src_v4, self.src_v6);
        let dst = pick(self.dst_v4, self.dst_v6);
        record.src_addr = src.unwrap_or(Ipv6Addr::UNSPECIFIED);
        record.dst_addr = dst.unwrap_or(Ipv6Addr::UNSPECIFIED);
        let is_v6 = src.or(dst).is_some_and(|a| a.to_ipv4_mapped().is_none());
        record.src_mask = if is_v6 {
            self.src_mask_v6.or(self.src_mask_v4)
        } else {
            self.src_mask_v4.or(self.src_mask_v6)
        }
        .unwrap_or(0);
        record.dst_mask = if is_v6 {
            self.dst_mask_v6.or(self.dst_mask_v4)
        } else {
            self.dst_mask_v4.or(self.dst_mask_v6)
        }
        .unwrap_or(0);
        record.in_if = self.in_if.or(self.in_physical).unwrap_or(0);
        record.out_if = self.out_if.or(self.out_physical).unwrap_or(0);
        record.next_hop = self
            .next_hop_v4
            .filter(|a| !is_v6 || self.next_hop_v6.is_none() || *a != Ipv4Addr::UNSPECIFIED.to_ipv6_mapped())
            .or(self.next_hop_v6)
            .or(self.bgp_next_hop_v4)
            .or(self.bgp_next_hop_v6)
            .unwrap_or(Ipv6Addr::UNSPECIFIED);
        record.src_as = self.src_as.unwrap_or(0);
        record.dst_as = self.dst_as.unwrap_or(0);
        record.vlan = self.vlan_id.or(self.dot1q_vlan).or(self.post_vlan).unwrap_or(0);
        record.direction = direction(self.direction);
        record.etype = etype(self.ethernet_type, self.ip_version, src.or(dst));
        self.latency.store(record);
        let (start, end) = self.times(header);
        if let Some(start) = start {
            record.time_flow_start = start;
        }
        if let Some(end) = end {
            record.time_flow_end = end;
        }
        RecordSampling {
            rate: self.sampling.rate(),
            sampler_id: self.sampling.sampler(),
        }
    }

    /// Flow start and end, Unix seconds (see [`flow_time`]).
    fn times(&self, header: &MessageHeader) -> (Option<u32>, Option<u32>) {
        let time = |absolute, delta_us, uptime_ms| {
            flow_time(header, self.system_init_ms, absolute, delta_us, uptime_ms)
        };
        (
            time(self.start_absolute, self.start_delta_us, self.start_uptime_ms),
            time(self.end_absolute, self.end_delta_us, self.end_uptime_ms),
        )
    }
}

/// The destination port an ICMP record stores: `type * 256 + code` from icmpTypeCode (32/139),
/// else from icmpType/icmpCode (176-179), when the protocol is ICMP or ICMPv6; `None` keeps the
/// exported port.
pub(super) fn icmp_type_code(
    proto: u8,
    type_code: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
) -> Option<u16> {
    if !matches!(proto, 1 | 58) {
        return None;
    }
    type_code.or(icmp_type.map(|t| u16::from(t) << 8 | u16::from(icmp_code.unwrap_or(0))))
}

/// flowDirection (61): 0 ingress, 1 egress.
pub(super) fn direction(value: Option<u8>) -> Direction {
    match value {
        Some(0) => Direction::Ingress,
        Some(1) => Direction::Egress,
        _ => Direction::Unknown,
    }
}

/// EtherType: ethernetType (256) unless zero, else from ipVersion (60), else from the family of
/// the record's (source, else destination) address.
pub(super) fn etype(ethernet_type: Option<u16>, ip_version: Option<u8>, address: Option<Ipv6Addr>) -> u16 {
    match (ethernet_type.filter(|t| *t != 0), ip_version) {
        (Some(etype), _) => etype,
        (None, Some(4)) => 0x0800,
        (None, Some(6)) => 0x86dd,
        _ => match address {
            Some(addr) if addr.to_ipv4_mapped().is_some() => 0x0800,
            Some(_) => 0x86dd,
            None => 0,
        },
    }
}

/// A flow start or end, Unix seconds: the absolute element first, then a delta from the export
/// time, then a sysUpTime-relative element (v9 header uptime, or IPFIX systemInitTime).
pub(super) fn flow_time(
    header: &MessageHeader,
    system_init_ms: Option<u64>,
    absolute: Option<u32>,
    delta_us: Option<u64>,
    uptime_ms: Option<u32>,
) -> Option<u32> {
    if absolute.is_some() {
        return absolute;
    }
    if let Some(us) = delta_us {
        return Some(secs_u32(
            u64::from(header.export_secs).saturating_sub(us / 1_000_000),
        ));
    }
    let uptime_ms = uptime_ms?;
    match (header.sys_up_time_ms, system_init_ms) {
        (_, Some(init_ms)) => Some(secs_u32(init_ms.saturating_add(u64::from(uptime_ms)) / 1000)),
        (Some(sys_up_time), None) => Some(uptime_to_unix(
            u64::from(header.export_secs) * 1000,
            sys_up_time,
            uptime_ms,
        )),
        (None, None) => None,
    }
}
