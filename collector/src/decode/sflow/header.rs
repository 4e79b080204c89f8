//! The sampled packet header of an sFlow `sampled_header` record (flow record 0:1), read with
//! `etherparse`: addresses, ports, protocol, ToS, TCP flags, EtherType and VLAN.
//!
//! In: the header protocol and the first bytes of the sampled frame (usually 128, so the IP
//! packet is cut short: the lax `etherparse` slicers accept that). Out: a [`PacketSummary`]
//! with whatever could be read; a header that cannot be read leaves fields at their defaults.
//! Never fails and never panics.
//!
//! Supported: Ethernet (`header_protocol` 1) with up to three 802.1Q/802.1ad tags (the outer
//! VLAN id is kept) and MPLS label stacks, raw IPv4 (11), raw IPv6 (12) and raw MPLS (13).
//! `etherparse` does not know MPLS, so the label stack is skipped here and the payload is read
//! as IPv4 or IPv6 from its version nibble, as routers do ("implicit" payload type).

use std::net::IpAddr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use sflow_parser::models::HeaderProtocol;

/// EtherType of IPv4, stored in `flows.etype`.
pub const ETYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6, stored in `flows.etype`.
pub const ETYPE_IPV6: u16 = 0x86dd;
/// EtherTypes of MPLS unicast and multicast.
const ETYPE_MPLS: [u16; 2] = [0x8847, 0x8848];

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;

/// What a sampled header says about the packet. `network` is `None` when no IP header was
/// found (ARP, unsupported link type, header cut before the IP header).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PacketSummary {
    /// Outer 802.1Q VLAN id, 0 when untagged.
    pub vlan: u16,
    pub network: Option<NetworkFields>,
}

/// Layer 3 and 4 fields of a sampled packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFields {
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    /// 0x0800 or 0x86dd.
    pub etype: u16,
    /// IP protocol, after IPv6 extension headers.
    pub proto: u8,
    /// IPv4 ToS byte or IPv6 traffic class.
    pub tos: u8,
    pub src_port: u16,
    /// Destination port; for ICMP and ICMPv6 `type * 256 + code`.
    pub dst_port: u16,
    pub tcp_flags: u8,
}

/// Reads the sampled header `bytes` of protocol `protocol`.
pub fn summarise(protocol: HeaderProtocol, bytes: &[u8]) -> PacketSummary {
    match protocol {
        HeaderProtocol::EthernetIso88023 => summarise_ethernet(bytes),
        HeaderProtocol::Ipv4 | HeaderProtocol::Ipv6 => PacketSummary {
            vlan: 0,
            network: network_from_ip(bytes),
        },
        HeaderProtocol::Mpls => PacketSummary {
            vlan: 0,
            network: network_from_mpls(bytes),
        },
        _ => PacketSummary::default(),
    }
}

fn summarise_ethernet(bytes: &[u8]) -> PacketSummary {
    let Ok(packet) = LaxSlicedPacket::from_ethernet(bytes) else {
        return PacketSummary::default();
    };
    let vlan = packet.vlan_ids().first().map_or(0, |id| id.value());
    let network = if packet.net.is_some() {
        network_from_packet(&packet)
    } else {
        match packet.ether_payload() {
            Some(payload) if ETYPE_MPLS.contains(&payload.ether_type.0) => network_from_mpls(payload.payload),
            _ => None,
        }
    };
    PacketSummary { vlan, network }
}

/// Skips an MPLS label stack (4 bytes per entry, bit 8 of the third byte marks the bottom).
fn network_from_mpls(mut bytes: &[u8]) -> Option<NetworkFields> {
    loop {
        let (entry, rest) = bytes.split_at_checked(4)?;
        bytes = rest;
        if entry.get(2).is_some_and(|b| b & 0x01 == 1) {
            break;
        }
    }
    network_from_ip(bytes)
}

fn network_from_ip(bytes: &[u8]) -> Option<NetworkFields> {
    let packet = LaxSlicedPacket::from_ip(bytes).ok()?;
    network_from_packet(&packet)
}

fn network_from_packet(packet: &LaxSlicedPacket<'_>) -> Option<NetworkFields> {
    let (mut fields, payload) = match packet.net.as_ref()? {
        LaxNetSlice::Ipv4(ipv4) => {
            let header = ipv4.header();
            let fields = NetworkFields {
                src_addr: IpAddr::V4(header.source_addr()),
                dst_addr: IpAddr::V4(header.destination_addr()),
                etype: ETYPE_IPV4,
                proto: ipv4.payload().ip_number.0,
                tos: (header.dcp().value() << 2) | header.ecn().value(),
                src_port: 0,
                dst_port: 0,
                tcp_flags: 0,
            };
            (fields, ipv4.payload())
        }
        LaxNetSlice::Ipv6(ipv6) => {
            let header = ipv6.header();
            let fields = NetworkFields {
                src_addr: IpAddr::V6(header.source_addr()),
                dst_addr: IpAddr::V6(header.destination_addr()),
                etype: ETYPE_IPV6,
                proto: ipv6.payload().ip_number.0,
                tos: header.traffic_class(),
                src_port: 0,
                dst_port: 0,
                tcp_flags: 0,
            };
            (fields, ipv6.payload())
        }
        LaxNetSlice::Arp(_) => return None,
    };
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            fields.src_port = tcp.source_port();
            fields.dst_port = tcp.destination_port();
            fields.tcp_flags = [
                tcp.fin(),
                tcp.syn(),
                tcp.rst(),
                tcp.psh(),
                tcp.ack(),
                tcp.urg(),
                tcp.ece(),
                tcp.cwr(),
            ]
            .iter()
            .enumerate()
            .fold(
                0u8,
                |flags, (bit, set)| if *set { flags | (1 << bit) } else { flags },
            );
        }
        Some(TransportSlice::Udp(udp)) => {
            fields.src_port = udp.source_port();
            fields.dst_port = udp.destination_port();
        }
        Some(TransportSlice::Icmpv4(icmp)) => fields.dst_port = icmp_port(icmp.type_u8(), icmp.code_u8()),
        Some(TransportSlice::Icmpv6(icmp)) => fields.dst_port = icmp_port(icmp.type_u8(), icmp.code_u8()),
        Some(_) => {}
        // `etherparse` gives no transport slice when the sampled header ends inside the TCP
        // header (options) or for SCTP; the ports are still the first four bytes. Fragments
        // after the first carry no transport header (`fragmented` covers all fragments, so
        // the first fragment's ports are given up too, as NetFlow exporters do).
        None if !payload.fragmented => read_raw_transport(&mut fields, payload.payload),
        None => {}
    }
    Some(fields)
}

/// ICMP type and code in one port-sized number, as NetFlow exporters put them in
/// `L4_DST_PORT`: `type * 256 + code`.
fn icmp_port(icmp_type: u8, code: u8) -> u16 {
    u16::from(icmp_type) << 8 | u16::from(code)
}

fn read_raw_transport(fields: &mut NetworkFields, payload: &[u8]) {
    let byte = |i: usize| payload.get(i).copied();
    let port = |i: usize| Some(u16::from_be_bytes([byte(i)?, byte(i + 1)?]));
    match fields.proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            fields.src_port = port(0).unwrap_or(0);
            fields.dst_port = port(2).unwrap_or(0);
            if fields.proto == PROTO_TCP {
                fields.tcp_flags = byte(13).unwrap_or(0);
            }
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if let (Some(icmp_type), Some(code)) = (byte(0), byte(1)) {
                fields.dst_port = icmp_port(icmp_type, code);
            }
        }
        _ => {}
    }
}
