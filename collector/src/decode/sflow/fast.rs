//! The fast path of the sFlow decoder: one flow sample body (enterprise 0, format 1 compact or
//! 3 expanded) in, its [`FlowSampleHead`] and [`FlowRecord`] out, read straight from the
//! datagram bytes with no heap allocation.
//!
//! It exists because `sflow-parser` builds owned structures for every sample (the sample, a
//! vector of records, a copy of every record's bytes, the sampled header, the AS path...):
//! about nine allocations per flow sample, most of the decoder's time. Here the XDR is read in
//! place and each record goes straight into [`FlowRecordBuilder`], the mapping that the
//! `sflow-parser` path uses too.
//!
//! The contract is narrow on purpose: a sample read here must give exactly what the
//! `sflow-parser` path gives (record, loss accounting, no error). So this reader only answers
//! for samples it knows `sflow-parser` accepts, and returns `None` ("not handled") for
//! anything else, which then goes through `sflow-parser` and fails or succeeds there with its
//! usual error text. `None` is returned for:
//! - a field, record or padding that does not fit (where `sflow-parser` meets the end of its
//!   input; it reads every record's padding, so a record without it is not handled either);
//! - a `sampled_header` whose `header_protocol` `sflow-parser` does not know (it rejects the
//!   sample);
//! - an `extended_router` / `extended_gateway` address type other than 0, 1 or 2;
//! - a record type that `sflow-parser` parses but whose parse can fail for reasons other than
//!   its length (strings that must be UTF-8, lists, addresses, nested records: for example
//!   `extended_user`, `extended_mpls`, `extended_80211_aggregation`), see
//!   [`skipped_record_min_len`];
//! - a sample body longer than `sflow-parser`'s 100 MB opaque limit (impossible over UDP, but
//!   `decode` takes any bytes).
//!
//! Other records are skipped by their length: record types that `sflow-parser` does not parse
//! (other enterprises, unknown formats), and fixed-layout ones when they are at least as long
//! as `sflow-parser` reads. Trailing bytes after a record's fields and after the last record
//! are ignored, as `sflow-parser` ignores them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sflow_parser::models::{
    DataFormat, DataSource, HeaderProtocol, Interface, InterfaceExpanded, SampledIpv4, SampledIpv6,
};

use super::{
    compact_if_index, expanded_if_index, FlowRecord, FlowRecordBuilder, FlowSampleHead, SourceKey, Xdr,
};

/// `sflow-parser` rejects opaque data longer than this (its `MAX_OPAQUE_SIZE`). A sample body
/// within it holds only records and headers within it too.
const PARSER_MAX_OPAQUE_LEN: usize = 100 * 1024 * 1024;

/// Reads one flow sample body (`expanded`: format 3, else format 1) of a datagram from
/// `sub_agent_id`; `None` when the sample must go through `sflow-parser` (see module docs).
pub(super) fn read_flow_sample(
    exporter: IpAddr,
    time_received: u32,
    sub_agent_id: u32,
    expanded: bool,
    body: &[u8],
) -> Option<(FlowSampleHead, FlowRecord)> {
    if body.len() > PARSER_MAX_OPAQUE_LEN {
        return None;
    }
    let mut sample = Xdr::new(body);
    let head = if expanded {
        read_expanded_head(&mut sample, sub_agent_id)?
    } else {
        read_compact_head(&mut sample, sub_agent_id)?
    };
    let mut builder = FlowRecordBuilder::new(exporter, time_received, sub_agent_id, &head);
    // A count larger than the records present ends at the first missing one: every record
    // takes at least 8 bytes, so the loop is bounded by the body's length.
    for _ in 0..sample.u32()? {
        let format = DataFormat(sample.u32()?);
        let record = sample.opaque()?;
        read_flow_record(format, record, &mut builder)?;
    }
    Some((head, builder.finish()))
}

/// `flow_sample` (0:1) up to its record count.
fn read_compact_head(sample: &mut Xdr<'_>, sub_agent_id: u32) -> Option<FlowSampleHead> {
    let sequence_number = sample.u32()?;
    let source_id = DataSource(sample.u32()?);
    let sampling_rate = sample.u32()?;
    let _sample_pool = sample.u32()?;
    let drops = sample.u32()?;
    let input = Interface(sample.u32()?);
    let output = Interface(sample.u32()?);
    Some(FlowSampleHead {
        source: SourceKey {
            sub_agent_id,
            source_type: u32::from(source_id.source_type()),
            source_index: source_id.index(),
        },
        sequence_number,
        sampling_rate,
        drops,
        in_if: compact_if_index(input),
        out_if: compact_if_index(output),
    })
}

/// `flow_sample_expanded` (0:3) up to its record count.
fn read_expanded_head(sample: &mut Xdr<'_>, sub_agent_id: u32) -> Option<FlowSampleHead> {
    let sequence_number = sample.u32()?;
    let source_type = sample.u32()?;
    let source_index = sample.u32()?;
    let sampling_rate = sample.u32()?;
    let _sample_pool = sample.u32()?;
    let drops = sample.u32()?;
    let input = InterfaceExpanded {
        format: sample.u32()?,
        value: sample.u32()?,
    };
    let output = InterfaceExpanded {
        format: sample.u32()?,
        value: sample.u32()?,
    };
    Some(FlowSampleHead {
        source: SourceKey {
            sub_agent_id,
            source_type,
            source_index,
        },
        sequence_number,
        sampling_rate,
        drops,
        in_if: expanded_if_index(input),
        out_if: expanded_if_index(output),
    })
}

/// Reads one flow record's data (without its padding) into `builder`; `None` when
/// `sflow-parser` would reject it or might.
fn read_flow_record(format: DataFormat, data: &[u8], builder: &mut FlowRecordBuilder) -> Option<()> {
    let mut record = Xdr::new(data);
    match (format.enterprise(), format.format()) {
        (0, 1) => {
            let protocol = HeaderProtocol::from_u32(record.u32()?)?;
            let frame_length = record.u32()?;
            let _stripped = record.u32()?;
            let header = record.opaque()?;
            builder.sampled_header(protocol, frame_length, header);
        }
        (0, 3) => builder.sampled_ipv4(&SampledIpv4 {
            length: record.u32()?,
            protocol: record.u32()?,
            src_ip: Ipv4Addr::from(record.u32()?),
            dst_ip: Ipv4Addr::from(record.u32()?),
            src_port: record.u32()?,
            dst_port: record.u32()?,
            tcp_flags: record.u32()?,
            tos: record.u32()?,
        }),
        (0, 4) => builder.sampled_ipv6(&SampledIpv6 {
            length: record.u32()?,
            protocol: record.u32()?,
            src_ip: Ipv6Addr::from(ipv6_octets(&mut record)?),
            dst_ip: Ipv6Addr::from(ipv6_octets(&mut record)?),
            src_port: record.u32()?,
            dst_port: record.u32()?,
            tcp_flags: record.u32()?,
            priority: record.u32()?,
        }),
        (0, 1001) => {
            let src_vlan = record.u32()?;
            let _src_priority = record.u32()?;
            let dst_vlan = record.u32()?;
            let _dst_priority = record.u32()?;
            builder.extended_switch(src_vlan, dst_vlan);
        }
        (0, 1002) => {
            let next_hop = read_address(&mut record)?;
            let src_mask_len = record.u32()?;
            let dst_mask_len = record.u32()?;
            builder.extended_router(next_hop, src_mask_len, dst_mask_len);
        }
        (0, 1003) => {
            let next_hop = read_address(&mut record)?;
            let router_as = record.u32()?;
            let src_as = record.u32()?;
            let _src_peer_as = record.u32()?;
            let mut last_path_as = None;
            for _ in 0..record.u32()? {
                let _segment_type = record.u32()?;
                let len = usize::try_from(record.u32()?).ok()?;
                let path = record.take(len.checked_mul(4)?)?;
                if let Some(last) = path.last_chunk::<4>() {
                    last_path_as = Some(u32::from_be_bytes(*last));
                }
            }
            let communities = usize::try_from(record.u32()?).ok()?;
            record.take(communities.checked_mul(4)?)?;
            let _local_pref = record.u32()?;
            builder.extended_gateway(next_hop, router_as, src_as, last_path_as);
        }
        (0, 2209) => {
            // dir, snd_mss, rcv_mss, unacked, lost, retrans, pmtu
            record.take(7 * 4)?;
            let rtt = record.u32()?;
            // rttvar, snd_cwnd, reordering, min_rtt
            record.take(4 * 4)?;
            builder.extended_tcp_info(rtt);
        }
        _ => {
            if data.len() < skipped_record_min_len(format)? {
                return None;
            }
        }
    }
    Some(())
}

/// For a record type that the mapping ignores: the bytes `sflow-parser` reads from it, which
/// is the only way its parse can fail (0 for the types it does not parse); `None` for types
/// whose parse can fail otherwise, which the fast path does not handle. From `sflow-parser`
/// 0.7's `parse_flow_data`.
fn skipped_record_min_len(format: DataFormat) -> Option<usize> {
    const WORD: usize = 4;
    const SAMPLED_ETHERNET: usize = WORD + 6 + 6 + WORD;
    const SAMPLED_IPV4: usize = 8 * WORD;
    const SAMPLED_IPV6: usize = 2 * WORD + 2 * 16 + 4 * WORD;
    const SOCKET_IPV4: usize = 5 * WORD;
    const SOCKET_IPV6: usize = WORD + 2 * 16 + 2 * WORD;
    match (format.enterprise(), format.format()) {
        (0, 2) => Some(SAMPLED_ETHERNET),
        (0, 1011) => Some(WORD),                         // extended_mpls_lvp_fec
        (0, 1017) => Some(4 * WORD),                     // extended_openflow_v1: u64 cookie, match, actions
        (0, 1018) => Some(4 * WORD),                     // extended_fc
        (0, 1019 | 1020) => Some(2 * WORD),              // extended_queue_length, extended_nat_port
        (0, 1021 | 1022) => Some(SAMPLED_ETHERNET),      // extended_l2_tunnel_egress/ingress
        (0, 1023 | 1024) => Some(SAMPLED_IPV4),          // extended_ipv4_tunnel_egress/ingress
        (0, 1025 | 1026) => Some(SAMPLED_IPV6),          // extended_ipv6_tunnel_egress/ingress
        (0, 1027..=1030) => Some(WORD),                  // extended_decapsulate_*, extended_vni_*
        (0, 1031) => Some(10 * WORD),                    // extended_infiniband_lrh
        (0, 1032) => Some(2 * WORD + 2 * 16 + 2 * WORD), // extended_infiniband_grh
        (0, 1033) => Some(3 * WORD),                     // extended_infiniband_bth
        (0, 1036 | 1039 | 1040) => Some(WORD),           // extended_egress_queue, _transit, _queue
        (0, 2000) => Some(4 * WORD + 2 * 8),             // transaction
        (0, 2002) => Some(3 * WORD),                     // extended_scsi_storage_transaction
        (0, 2100 | 2102) => Some(SOCKET_IPV4),           // extended_(proxy_)socket_ipv4
        (0, 2101 | 2103) => Some(SOCKET_IPV6),           // extended_(proxy_)socket_ipv6
        (0, 2208) => Some(23 * WORD),                    // extended_nav_timing
        (0, 2210) => Some(4 * WORD),                     // extended_entities: two expanded data sources
        // Variable layouts: strings, lists, addresses, nested flow records.
        (0, 1001..=1042 | 2000..=2003 | 2200..=2210) => None,
        (4413, 1) => Some(WORD), // Broadcom extended_bst_egress_queue
        // Not parsed by `sflow-parser` (`FlowData::Unknown`).
        _ => Some(0),
    }
}

/// An sFlow `address`: `Some(None)` for type 0 (unknown), `None` for a type `sflow-parser`
/// rejects or an address cut short.
fn read_address(reader: &mut Xdr<'_>) -> Option<Option<IpAddr>> {
    match reader.u32()? {
        0 => Some(None),
        1 => Some(Some(IpAddr::V4(Ipv4Addr::from(reader.u32()?)))),
        2 => Some(Some(IpAddr::V6(Ipv6Addr::from(ipv6_octets(reader)?)))),
        _ => None,
    }
}

fn ipv6_octets(reader: &mut Xdr<'_>) -> Option<[u8; 16]> {
    reader.take(16)?.try_into().ok()
}

#[cfg(test)]
mod tests;
