//! The virtual fleet: edge routers with named interfaces, and the traffic they see.
//!
//! In: the number of exporters, their addresses, a seed. Out: [`Router`]s (name, exporter
//! address, interfaces) and, per router, a [`TrafficGenerator`] that draws [`SimulatedFlow`]s:
//! internal hosts (10.x.0.0/16 and fd00:x::/48) talking to public-looking destinations, as
//! outbound flows (internal → external, metered at the egress of a transit interface) and
//! inbound replies (metered at the ingress of the same interface). Pure: no clocks, no I/O; the
//! randomness comes from a seeded [`SmallRng`], so a seed reproduces the same flows with the
//! same build of `rand`.
//!
//! Volumes are what a sampling exporter reports: packet counts follow a Pareto (heavy-tailed)
//! distribution of *sampled* packets, so the wire volume is `bytes * sampling_rate`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::normalise::Direction;

/// The autonomous system of every virtual router (a documentation ASN, RFC 5398).
pub const LOCAL_AS: u32 = 64500;

/// TCP flag bits as carried in flow records.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// What an interface connects to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum InterfaceRole {
    /// A transit provider: traffic to and from the Internet. `next_hop_*` is the provider's
    /// side of the link.
    Transit {
        peer_as: u32,
        peer_name: &'static str,
        next_hop_v4: Ipv4Addr,
        next_hop_v6: Ipv6Addr,
    },
    /// Towards the internal network; frames carry `vlan`.
    Internal {
        vlan: u16,
        next_hop_v4: Ipv4Addr,
        next_hop_v6: Ipv6Addr,
    },
}

/// One interface of a virtual router.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Interface {
    /// SNMP ifIndex, as exported in `in_if`/`out_if` and sFlow source ids.
    pub if_index: u32,
    /// Junos-style name, e.g. `et-0/0/1`.
    pub name: &'static str,
    /// Free-text description, e.g. `transit-a: AS64496`.
    pub description: String,
    /// ifSpeed in bits per second (sFlow counter samples).
    pub speed_bps: u64,
    pub role: InterfaceRole,
}

impl Interface {
    /// Whether the interface faces the Internet.
    pub fn is_external(&self) -> bool {
        matches!(self.role, InterfaceRole::Transit { .. })
    }
}

/// One virtual edge router.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Router {
    /// `edge1`, `edge2`, ...
    pub name: String,
    /// 0-based position in the fleet.
    pub index: u32,
    /// The address its datagrams come from (and the sFlow agent address).
    pub exporter_address: IpAddr,
    /// 2 to 4 interfaces: one or two transits, one or two internal aggregates.
    pub interfaces: Vec<Interface>,
    /// Internal IPv4 hosts live in `10.(index+1).0.0/16`.
    pub internal_v4: Ipv4Addr,
    /// Internal IPv6 hosts live in `fd00:(index+1)::/48`.
    pub internal_v6: Ipv6Addr,
}

impl Router {
    /// The interfaces facing the Internet.
    pub fn external_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.interfaces.iter().filter(|i| i.is_external())
    }

    /// The interfaces facing the internal network.
    pub fn internal_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.interfaces.iter().filter(|i| !i.is_external())
    }
}

/// The routers of a fleet of `exporters`, the first one sending from `first_address` and each
/// next one from the next address. Router `i` has 4, 3 or 2 interfaces (by `i % 3`): transit A
/// `et-0/0/1` (ifIndex 1), transit B `et-0/0/2` (2), internal `ae0` (10) and `ae1` (11).
pub fn fleet(exporters: u32, first_address: IpAddr) -> Vec<Router> {
    (0..exporters)
        .map(|index| router(index, nth_address(first_address, index)))
        .collect()
}

/// `base + offset`, wrapping inside the address family.
pub fn nth_address(base: IpAddr, offset: u32) -> IpAddr {
    match base {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(offset))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(u128::from(offset)))),
    }
}

fn router(index: u32, exporter_address: IpAddr) -> Router {
    let site = (index % 250) as u8 + 1;
    let transit_a = Interface {
        if_index: 1,
        name: "et-0/0/1",
        description: "transit-a: AS64496".to_string(),
        speed_bps: 10_000_000_000,
        role: InterfaceRole::Transit {
            peer_as: 64496,
            peer_name: "transit-a",
            next_hop_v4: Ipv4Addr::new(192, 0, 2, 1),
            next_hop_v6: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, u16::from(site), 0, 0, 0, 1),
        },
    };
    let transit_b = Interface {
        if_index: 2,
        name: "et-0/0/2",
        description: "transit-b: AS64497".to_string(),
        speed_bps: 10_000_000_000,
        role: InterfaceRole::Transit {
            peer_as: 64497,
            peer_name: "transit-b",
            next_hop_v4: Ipv4Addr::new(192, 0, 2, 129),
            next_hop_v6: Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, u16::from(site), 0, 0, 0, 1),
        },
    };
    let internal = |if_index, name, vlan, core| Interface {
        if_index,
        name,
        description: format!("core: to core{core}"),
        speed_bps: 20_000_000_000,
        role: InterfaceRole::Internal {
            vlan,
            next_hop_v4: Ipv4Addr::new(10, site, 255, core),
            next_hop_v6: Ipv6Addr::new(0xfd00, u16::from(site), 0xffff, 0, 0, 0, 0, u16::from(core)),
        },
    };
    let interfaces = match index % 3 {
        0 => vec![
            transit_a,
            transit_b,
            internal(10, "ae0", 100, 1),
            internal(11, "ae1", 200, 2),
        ],
        1 => vec![transit_a, transit_b, internal(10, "ae0", 100, 1)],
        _ => vec![transit_a, internal(10, "ae0", 100, 1)],
    };
    Router {
        name: format!("edge{}", index + 1),
        index,
        exporter_address,
        interfaces,
        internal_v4: Ipv4Addr::new(10, site, 0, 0),
        internal_v6: Ipv6Addr::new(0xfd00, u16::from(site), 0, 0, 0, 0, 0, 0),
    }
}

/// One flow record as a virtual router exports it, before protocol encoding. For sFlow, one
/// record is one sampled packet (`packets == 1`, `bytes` = frame length including the FCS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedFlow {
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub proto: u8,
    pub tos: u8,
    /// Cumulative TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// Sampled bytes (the wire volume divided by the sampling rate).
    pub bytes: u64,
    /// Sampled packets.
    pub packets: u64,
    pub in_if: u32,
    pub out_if: u32,
    /// Origin AS of the source; [`LOCAL_AS`] for internal hosts (as sFlow's extended gateway
    /// implies for a local destination, so that every protocol says the same).
    pub src_as: u32,
    pub dst_as: u32,
    pub src_mask: u8,
    pub dst_mask: u8,
    pub next_hop: IpAddr,
    /// 802.1Q VLAN of the frames as they entered (internal side), 0 for none.
    pub vlan: u16,
    /// Metering direction: outbound flows are metered at the egress of the transit interface,
    /// replies at its ingress.
    pub direction: Direction,
    /// Milliseconds between the flow's first packet and the export time.
    pub start_age_ms: u32,
    /// Milliseconds between the flow's last packet and the export time (`<= start_age_ms`).
    pub end_age_ms: u32,
}

impl SimulatedFlow {
    /// Whether both addresses are IPv4 (NetFlow v5 can carry nothing else).
    pub fn is_ipv4(&self) -> bool {
        self.src_addr.is_ipv4() && self.dst_addr.is_ipv4()
    }
}

/// An external destination: a prefix, its origin AS and what is usually reached there.
#[derive(Debug, Clone, Copy)]
struct Destination {
    network: IpAddr,
    mask: u8,
    origin_as: u32,
    service: Service,
    /// Relative popularity.
    weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Web,
    Dns,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn v6(a: u16, b: u16, c: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0))
}

/// Documentation ranges (RFC 5737, RFC 3849, AS 64496-64511 and 65536-65551) plus prefixes that
/// look like large content networks. Only ever written into records, never sent to.
const DESTINATIONS_V4: [Destination; 11] = [
    Destination {
        network: v4(198, 51, 100, 0),
        mask: 24,
        origin_as: 64501,
        service: Service::Web,
        weight: 12,
    },
    Destination {
        network: v4(203, 0, 113, 0),
        mask: 24,
        origin_as: 65537,
        service: Service::Web,
        weight: 10,
    },
    Destination {
        network: v4(8, 8, 8, 0),
        mask: 24,
        origin_as: 15169,
        service: Service::Dns,
        weight: 6,
    },
    Destination {
        network: v4(1, 1, 1, 0),
        mask: 24,
        origin_as: 13335,
        service: Service::Dns,
        weight: 4,
    },
    Destination {
        network: v4(142, 250, 0, 0),
        mask: 15,
        origin_as: 15169,
        service: Service::Web,
        weight: 14,
    },
    Destination {
        network: v4(104, 16, 0, 0),
        mask: 13,
        origin_as: 13335,
        service: Service::Web,
        weight: 12,
    },
    Destination {
        network: v4(151, 101, 0, 0),
        mask: 16,
        origin_as: 54113,
        service: Service::Web,
        weight: 8,
    },
    Destination {
        network: v4(157, 240, 0, 0),
        mask: 16,
        origin_as: 32934,
        service: Service::Web,
        weight: 8,
    },
    Destination {
        network: v4(52, 84, 0, 0),
        mask: 15,
        origin_as: 16509,
        service: Service::Web,
        weight: 9,
    },
    Destination {
        network: v4(185, 199, 108, 0),
        mask: 22,
        origin_as: 36459,
        service: Service::Web,
        weight: 4,
    },
    Destination {
        network: v4(198, 18, 0, 0),
        mask: 15,
        origin_as: 65550,
        service: Service::Web,
        weight: 3,
    },
];

const DESTINATIONS_V6: [Destination; 6] = [
    Destination {
        network: v6(0x2001, 0xdb8, 0x100),
        mask: 48,
        origin_as: 64501,
        service: Service::Web,
        weight: 8,
    },
    Destination {
        network: v6(0x2001, 0xdb8, 0x200),
        mask: 40,
        origin_as: 65537,
        service: Service::Web,
        weight: 6,
    },
    Destination {
        network: v6(0x2606, 0x4700, 0),
        mask: 32,
        origin_as: 13335,
        service: Service::Web,
        weight: 10,
    },
    Destination {
        network: v6(0x2a00, 0x1450, 0),
        mask: 32,
        origin_as: 15169,
        service: Service::Web,
        weight: 10,
    },
    Destination {
        network: v6(0x2a03, 0x2880, 0),
        mask: 32,
        origin_as: 32934,
        service: Service::Web,
        weight: 6,
    },
    Destination {
        network: v6(0x2001, 0x4860, 0),
        mask: 32,
        origin_as: 15169,
        service: Service::Dns,
        weight: 4,
    },
];

/// Internal hosts per router and address family; a few of them are heavy talkers.
const HOSTS_PER_ROUTER: u32 = 512;

/// What a generator produces: NetFlow/IPFIX flow records or sFlow packet samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordShape {
    /// Aggregated flows with packet and byte counts (NetFlow v5/v9, IPFIX).
    Flows,
    /// One sampled packet per record (sFlow).
    PacketSamples,
}

/// Draws the flows one router exports.
#[derive(Debug)]
pub struct TrafficGenerator {
    router: Router,
    rng: SmallRng,
    shape: RecordShape,
    /// Share of flows over IPv6, 0.0 to 1.0.
    ipv6_share: f64,
    weight_total_v4: u32,
    weight_total_v6: u32,
}

impl TrafficGenerator {
    /// A generator for `router`, reproducible from `seed` (mixed with the router index).
    pub fn new(router: Router, seed: u64, shape: RecordShape, ipv6_share: f64) -> Self {
        let rng =
            SmallRng::seed_from_u64(seed ^ (u64::from(router.index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Self {
            router,
            rng,
            shape,
            ipv6_share: ipv6_share.clamp(0.0, 1.0),
            weight_total_v4: DESTINATIONS_V4.iter().map(|d| d.weight).sum(),
            weight_total_v6: DESTINATIONS_V6.iter().map(|d| d.weight).sum(),
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The next flow: a connection's outbound half or its reply, about half of each.
    pub fn next_flow(&mut self) -> SimulatedFlow {
        let ipv6 = self.rng.random::<f64>() < self.ipv6_share;
        let (destination, remote) = self.pick_destination(ipv6);
        let host = self.pick_host(ipv6);
        let (proto, remote_port) = self.pick_service(destination.service, ipv6);
        let local_port = if proto == 1 || proto == 58 {
            0
        } else {
            self.rng.random_range(32768..=60999)
        };
        let outbound = self.rng.random_bool(0.5);
        let (transit, transit_hop) = self.route(&destination, ipv6);
        let (internal, vlan, internal_hop) = self.internal_interface(&host);
        let (sampled_packets, mean_size) = self.volume(proto, remote_port, outbound);
        let (packets, bytes) = match self.shape {
            RecordShape::Flows => {
                let bytes = (sampled_packets as f64 * mean_size * self.rng.random_range(0.8..1.2)) as u64;
                (
                    sampled_packets,
                    bytes.clamp(28 * sampled_packets, 1500 * sampled_packets),
                )
            }
            // Ethernet framing (14) and FCS (4) around an IP packet of the drawn size.
            RecordShape::PacketSamples => (
                1,
                (mean_size * self.rng.random_range(0.8..1.2)).clamp(46.0, 1500.0) as u64 + 18,
            ),
        };
        let tcp_flags = match (proto, self.shape) {
            (6, RecordShape::Flows) => self.flow_tcp_flags(outbound, sampled_packets),
            (6, RecordShape::PacketSamples) => self.packet_tcp_flags(outbound, bytes),
            _ => 0,
        };
        let duration_ms = if packets <= 1 {
            0
        } else {
            (sampled_packets as u32)
                .saturating_mul(self.rng.random_range(5..400))
                .min(60_000)
        };
        let end_age_ms = self.rng.random_range(0..2_000);
        let tos = if self.rng.random_bool(0.1) { 0x28 } else { 0 };
        let local_mask = if ipv6 { 64 } else { 24 };
        let common = |src_addr, dst_addr, src_port, dst_port| SimulatedFlow {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            proto,
            tos,
            tcp_flags,
            bytes,
            packets,
            in_if: 0,
            out_if: 0,
            src_as: 0,
            dst_as: 0,
            src_mask: 0,
            dst_mask: 0,
            next_hop: transit_hop,
            vlan: 0,
            direction: Direction::Egress,
            start_age_ms: end_age_ms + duration_ms,
            end_age_ms,
        };
        if outbound {
            SimulatedFlow {
                in_if: internal,
                out_if: transit,
                src_as: LOCAL_AS,
                dst_as: destination.origin_as,
                src_mask: local_mask,
                dst_mask: destination.mask,
                vlan,
                ..common(host, remote, local_port, remote_port)
            }
        } else {
            SimulatedFlow {
                in_if: transit,
                out_if: internal,
                src_as: destination.origin_as,
                dst_as: LOCAL_AS,
                src_mask: destination.mask,
                dst_mask: local_mask,
                next_hop: internal_hop,
                direction: Direction::Ingress,
                ..common(remote, host, remote_port, local_port)
            }
        }
    }

    /// Picks a destination prefix by weight and an address inside it.
    fn pick_destination(&mut self, ipv6: bool) -> (Destination, IpAddr) {
        let (table, total): (&[Destination], u32) = if ipv6 {
            (&DESTINATIONS_V6, self.weight_total_v6)
        } else {
            (&DESTINATIONS_V4, self.weight_total_v4)
        };
        let mut ticket = self.rng.random_range(0..total.max(1));
        let mut chosen = table[0];
        for destination in table {
            if ticket < destination.weight {
                chosen = *destination;
                break;
            }
            ticket -= destination.weight;
        }
        let address = match chosen.network {
            IpAddr::V4(net) => {
                let host_bits = 32 - u32::from(chosen.mask.min(32));
                let span = if host_bits >= 32 {
                    u32::MAX
                } else {
                    (1u32 << host_bits) - 1
                };
                // Popular services sit on few addresses: draw from a small slice of the prefix.
                let offset = self.rng.random_range(1..=span.clamp(1, 4096));
                IpAddr::V4(Ipv4Addr::from(u32::from(net) | offset))
            }
            IpAddr::V6(net) => {
                let offset = u128::from(self.rng.random_range(1..=4096u32));
                IpAddr::V6(Ipv6Addr::from(u128::from(net) | offset))
            }
        };
        (chosen, address)
    }

    /// An internal host; the cube skews the choice towards low indexes (heavy talkers).
    fn pick_host(&mut self, ipv6: bool) -> IpAddr {
        let skew = self.rng.random::<f64>().powi(3);
        let host = (skew * f64::from(HOSTS_PER_ROUTER)) as u32;
        if ipv6 {
            let subnet = u128::from(host / 64) << 64;
            IpAddr::V6(Ipv6Addr::from(
                u128::from(self.router.internal_v6) | subnet | u128::from(host + 1),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(
                u32::from(self.router.internal_v4) | ((host / 254) << 8) | (host % 254 + 1),
            ))
        }
    }

    /// (IP protocol, remote port) for a service.
    fn pick_service(&mut self, service: Service, ipv6: bool) -> (u8, u16) {
        let icmp = if ipv6 { 58 } else { 1 };
        let draw = self.rng.random_range(0..100u32);
        match service {
            Service::Dns if draw < 90 => (17, 53),
            Service::Dns if draw < 95 => (6, 53),
            Service::Dns => (icmp, 0),
            Service::Web => match draw {
                0..=59 => (6, 443),
                60..=71 => (17, 443),
                72..=83 => (6, 80),
                84..=88 => (6, 22),
                89..=92 => (17, 123),
                93..=96 => (icmp, 0),
                _ => (17, 53),
            },
        }
    }

    /// The transit a destination is routed over: a stable choice per prefix (as BGP would make).
    fn route(&self, destination: &Destination, ipv6: bool) -> (u32, IpAddr) {
        let transits: Vec<&Interface> = self.router.external_interfaces().collect();
        let key = match destination.network {
            IpAddr::V4(a) => u32::from(a),
            IpAddr::V6(a) => (u128::from(a) >> 96) as u32,
        };
        let pick = transits.get((key.rotate_right(8) % transits.len().max(1) as u32) as usize);
        match pick.map(|i| (&i.role, i.if_index)) {
            Some((
                InterfaceRole::Transit {
                    next_hop_v4,
                    next_hop_v6,
                    ..
                },
                if_index,
            )) => {
                let hop = if ipv6 {
                    IpAddr::V6(*next_hop_v6)
                } else {
                    IpAddr::V4(*next_hop_v4)
                };
                (if_index, hop)
            }
            _ => (
                0,
                if ipv6 {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                },
            ),
        }
    }

    /// The internal interface that serves `host` (by its subnet), its VLAN and next hop.
    fn internal_interface(&self, host: &IpAddr) -> (u32, u16, IpAddr) {
        let internals: Vec<&Interface> = self.router.internal_interfaces().collect();
        let subnet = match host {
            IpAddr::V4(a) => (u32::from(*a) >> 8) & 0xff,
            IpAddr::V6(a) => ((u128::from(*a) >> 64) & 0xffff) as u32,
        };
        let pick = internals.get((subnet % internals.len().max(1) as u32) as usize);
        match pick.map(|i| (&i.role, i.if_index)) {
            Some((
                InterfaceRole::Internal {
                    vlan,
                    next_hop_v4,
                    next_hop_v6,
                },
                if_index,
            )) => {
                let hop = if host.is_ipv6() {
                    IpAddr::V6(*next_hop_v6)
                } else {
                    IpAddr::V4(*next_hop_v4)
                };
                (if_index, *vlan, hop)
            }
            _ => (0, 0, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        }
    }

    /// (sampled packets, mean IP packet size): a Pareto tail on the packet count, replies of
    /// bulk services carrying full-size packets, requests small ones.
    fn volume(&mut self, proto: u8, remote_port: u16, outbound: bool) -> (u64, f64) {
        let (alpha, cap, size) = match (proto, remote_port, outbound) {
            (1 | 58, _, _) => (2.5, 20.0, 84.0),
            (_, 53 | 123, false) => (3.0, 10.0, 180.0),
            (_, 53 | 123, true) => (3.0, 10.0, 76.0),
            (_, 22, _) => (1.2, 5_000.0, 200.0),
            (_, _, true) => (1.3, 20_000.0, 120.0),
            (_, _, false) => (1.1, 100_000.0, 1_350.0),
        };
        // Inverse transform: x_min / U^(1/alpha), with x_min = 1 sampled packet.
        let uniform = self.rng.random_range(f64::MIN_POSITIVE..1.0);
        let packets = (1.0 / uniform.powf(1.0 / alpha)).min(cap).floor().max(1.0) as u64;
        (packets, size)
    }

    /// The union of the flags of a flow's packets.
    fn flow_tcp_flags(&mut self, outbound: bool, packets: u64) -> u8 {
        use tcp_flags::*;
        match self.rng.random_range(0..100u32) {
            0..=2 if outbound => SYN,
            0..=2 => RST | ACK,
            _ if packets == 1 => ACK,
            _ => SYN | ACK | PSH | FIN,
        }
    }

    /// The flags of one sampled packet: mostly data or bare acknowledgements, a few SYNs.
    fn packet_tcp_flags(&mut self, outbound: bool, frame_bytes: u64) -> u8 {
        use tcp_flags::*;
        match self.rng.random_range(0..100u32) {
            0..=1 if outbound => SYN,
            0..=1 => RST | ACK,
            _ if frame_bytes <= 90 => ACK,
            _ => ACK | PSH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(index: u32, shape: RecordShape, ipv6_share: f64) -> TrafficGenerator {
        let routers = fleet(index + 1, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10)));
        let router = routers.last().cloned().expect("fleet has the router");
        TrafficGenerator::new(router, 7, shape, ipv6_share)
    }

    #[test]
    fn fleet_names_addresses_and_interfaces() {
        let routers = fleet(3, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10)));
        let names: Vec<&str> = routers.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["edge1", "edge2", "edge3"]);
        assert_eq!(
            routers[2].exporter_address,
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 12))
        );
        let counts: Vec<usize> = routers.iter().map(|r| r.interfaces.len()).collect();
        assert_eq!(counts, [4, 3, 2]);
        for router in &routers {
            assert!(router.external_interfaces().count() >= 1);
            assert!(router.internal_interfaces().count() >= 1);
        }
    }

    #[test]
    fn flows_cross_the_edge_in_both_directions() {
        let mut generator = generator(0, RecordShape::Flows, 0.25);
        let router = generator.router().clone();
        let external: Vec<u32> = router.external_interfaces().map(|i| i.if_index).collect();
        let internal: Vec<u32> = router.internal_interfaces().map(|i| i.if_index).collect();
        let (mut outbound, mut inbound, mut ipv6) = (0, 0, 0);
        for _ in 0..2_000 {
            let flow = generator.next_flow();
            assert!(
                flow.packets >= 1 && flow.bytes >= 28 * flow.packets && flow.bytes <= 1500 * flow.packets
            );
            assert!(flow.start_age_ms >= flow.end_age_ms);
            assert_eq!(flow.src_addr.is_ipv4(), flow.dst_addr.is_ipv4());
            if flow.src_addr.is_ipv6() {
                ipv6 += 1;
            }
            match flow.direction {
                Direction::Egress => {
                    outbound += 1;
                    assert!(
                        internal.contains(&flow.in_if) && external.contains(&flow.out_if),
                        "{flow:?}"
                    );
                    assert_ne!(flow.dst_as, 0);
                }
                _ => {
                    inbound += 1;
                    assert!(
                        external.contains(&flow.in_if) && internal.contains(&flow.out_if),
                        "{flow:?}"
                    );
                    assert_ne!(flow.src_as, 0);
                }
            }
        }
        assert!(
            outbound > 800 && inbound > 800,
            "{outbound} outbound, {inbound} inbound"
        );
        assert!((300..700).contains(&ipv6), "{ipv6} IPv6 flows of 2000");
    }

    #[test]
    fn volumes_are_heavy_tailed() {
        let mut generator = generator(1, RecordShape::Flows, 0.0);
        let mut packets: Vec<u64> = (0..5_000).map(|_| generator.next_flow().packets).collect();
        packets.sort_unstable();
        let median = packets[packets.len() / 2];
        let max = packets[packets.len() - 1];
        assert!(median <= 3, "median {median}");
        assert!(max >= 100 * median, "max {max}, median {median}");
    }

    #[test]
    fn packet_samples_are_single_frames() {
        let mut generator = generator(2, RecordShape::PacketSamples, 0.5);
        for _ in 0..1_000 {
            let flow = generator.next_flow();
            assert_eq!(flow.packets, 1);
            assert!((64..=1_600).contains(&flow.bytes), "{}", flow.bytes);
        }
    }

    #[test]
    fn same_seed_same_flows() {
        let a: Vec<SimulatedFlow> = {
            let mut g = generator(0, RecordShape::Flows, 0.3);
            (0..50).map(|_| g.next_flow()).collect()
        };
        let mut g = generator(0, RecordShape::Flows, 0.3);
        let b: Vec<SimulatedFlow> = (0..50).map(|_| g.next_flow()).collect();
        assert_eq!(a, b);
    }
}
