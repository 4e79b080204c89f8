//! Traffic generation: a [`TrafficSpec`] (flows between internal and external hosts) in, an
//! Ethernet pcap file and its [`TrafficTotals`] out.
//!
//! The pcap is what a real exporter (softflowd, pmacctd) reads with `-r` / `pcap_savefile`, so
//! the totals are computed the way those exporters count:
//! - `bytes` is the sum of IP lengths (IPv4 total length; IPv6 payload length + 40-byte header),
//!   never the Ethernet frame length. softflowd 1.1 exports exactly this as
//!   the flow's octets; sFlow reports frame lengths instead (see [`TrafficTotals::sflow_frame_bytes`]).
//! - a flow's packets all go one way (internal → external), so a bidirectional flow tracker such
//!   as softflowd exports exactly one record per [`FlowSpec`];
//! - TCP flows open with SYN and close with FIN, so trackers see them complete.
//!
//! Output is deterministic: the same spec always gives the same bytes. Packets of all flows are
//! interleaved by timestamp (ties broken by flow order) and streamed to the file, so a large
//! upload does not need to fit in memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// Ethernet header length; the difference between an IP length and a frame length.
pub const ETHERNET_HEADER_LEN: u64 = 14;

/// Length of the Ethernet frame check sequence, which an sFlow agent includes in a sampled
/// packet's frame length (sFlow v5: "including FCS octets") although a pcap does not hold it.
pub const FCS_LEN: u64 = 4;

/// Source MAC of every generated frame (a locally administered address).
const SOURCE_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Destination MAC of every generated frame (the "router").
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
/// IPv4 TTL / IPv6 hop limit of generated packets.
const HOP_LIMIT: u8 = 64;

/// The transport of one generated flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP connection: SYN, data segments with ACK|PSH, and a FIN|ACK.
    Tcp,
    /// UDP datagrams with the given payload.
    Udp,
    /// ICMP (ICMPv6 for IPv6 flows) echo requests; ports are ignored.
    Icmp,
}

impl Transport {
    /// The IP protocol number for a flow of this transport over `addr`'s family.
    pub fn protocol(self, addr: IpAddr) -> u8 {
        match (self, addr) {
            (Self::Tcp, _) => 6,
            (Self::Udp, _) => 17,
            (Self::Icmp, IpAddr::V4(_)) => 1,
            (Self::Icmp, IpAddr::V6(_)) => 58,
        }
    }
}

/// One unidirectional flow: `packets` packets from `src` to `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    /// Source (the internal host). Must be the same family as `dst`.
    pub src: IpAddr,
    /// Destination (the external host).
    pub dst: IpAddr,
    pub transport: Transport,
    /// Ignored for ICMP.
    pub src_port: u16,
    /// Ignored for ICMP.
    pub dst_port: u16,
    /// Packets in the flow. For TCP this includes the SYN and the FIN, so it must be at least 2.
    pub packets: u32,
    /// Application payload per data packet. TCP SYN and FIN carry none.
    pub payload_len: u16,
    /// Time of the first packet, as an offset from [`TrafficSpec::start`].
    pub start_offset: Duration,
    /// Time between two consecutive packets of this flow.
    pub gap: Duration,
}

impl FlowSpec {
    /// Whether packet `index` of this flow carries the payload (TCP SYN and FIN do not).
    fn carries_payload(&self, index: u32) -> bool {
        self.transport != Transport::Tcp || (index != 0 && index + 1 != self.packets)
    }

    /// IP length (header included) of packet `index`.
    fn ip_len(&self, index: u32) -> u64 {
        let payload = if self.carries_payload(index) {
            u64::from(self.payload_len)
        } else {
            0
        };
        let ip_header = match self.src {
            IpAddr::V4(_) => 20,
            IpAddr::V6(_) => 40,
        };
        let transport_header = match self.transport {
            Transport::Tcp => 20,
            Transport::Udp | Transport::Icmp => 8,
        };
        ip_header + transport_header + payload
    }

    /// Builds the Ethernet frame of packet `index`.
    fn frame(&self, flow_index: usize, index: u32) -> Result<Vec<u8>> {
        let ethernet = PacketBuilder::ethernet2(SOURCE_MAC, ROUTER_MAC);
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => ethernet.ipv4(src.octets(), dst.octets(), HOP_LIMIT),
            (IpAddr::V6(src), IpAddr::V6(dst)) => ethernet.ipv6(src.octets(), dst.octets(), HOP_LIMIT),
            _ => bail!(
                "flow {flow_index}: source {} and destination {} differ in family",
                self.src,
                self.dst
            ),
        };
        let payload_len = if self.carries_payload(index) {
            usize::from(self.payload_len)
        } else {
            0
        };
        // A recognisable, deterministic payload: the flow number then the packet number.
        let payload: Vec<u8> = (0..payload_len)
            .map(|i| (flow_index + index as usize + i) as u8)
            .collect();
        let mut frame = Vec::with_capacity(payload_len + 80);
        let written = match self.transport {
            Transport::Tcp => {
                // Sequence numbers advance by the payload sent; SYN counts as one.
                let seq = 1_000 + index.saturating_sub(1) * u32::from(self.payload_len) + index.min(1);
                let tcp = ip.tcp(self.src_port, self.dst_port, seq, 65_535);
                let tcp = if index == 0 {
                    tcp.syn()
                } else if index + 1 == self.packets {
                    tcp.fin().ack(1)
                } else {
                    tcp.ack(1).psh()
                };
                tcp.write(&mut frame, &payload)
            }
            Transport::Udp => ip.udp(self.src_port, self.dst_port).write(&mut frame, &payload),
            Transport::Icmp => {
                let id = flow_index as u16;
                let seq = index as u16;
                match self.src {
                    IpAddr::V4(_) => ip.icmpv4_echo_request(id, seq).write(&mut frame, &payload),
                    IpAddr::V6(_) => ip.icmpv6_echo_request(id, seq).write(&mut frame, &payload),
                }
            }
        };
        written.with_context(|| format!("flow {flow_index}: building packet {index}"))?;
        Ok(frame)
    }

    fn validate(&self, flow_index: usize) -> Result<()> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            bail!(
                "flow {flow_index}: source {} and destination {} differ in family",
                self.src,
                self.dst
            );
        }
        if self.packets == 0 {
            bail!("flow {flow_index}: a flow needs at least one packet");
        }
        if self.transport == Transport::Tcp && self.packets < 2 {
            bail!("flow {flow_index}: a TCP flow needs at least SYN and FIN (2 packets)");
        }
        if self.payload_len > 1400 {
            bail!(
                "flow {flow_index}: payload_len {} would exceed a 1500-byte MTU",
                self.payload_len
            );
        }
        Ok(())
    }
}

/// What to write: flows and the wall-clock time of the capture's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSpec {
    /// Timestamp of the capture's start, since the Unix epoch. Exporters reading a file use
    /// packet timestamps as flow times, so tests that store flows usually pass "now".
    pub start: Duration,
    pub flows: Vec<FlowSpec>,
}

/// Parameters of the exfiltration scenario: one internal host uploading far above its usual
/// volume to one external address, hidden among ordinary background flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exfiltration {
    /// The internal host that uploads.
    pub source: IpAddr,
    /// The single external address receiving the upload.
    pub destination: IpAddr,
    /// Application bytes uploaded in total (split into TCP connections of at most
    /// `bytes_per_connection`).
    pub upload_bytes: u64,
    /// Upper bound of one connection's payload, so that no flow gets near a 32-bit octet
    /// counter and the exporter's active timeout does not split it.
    pub bytes_per_connection: u64,
    /// Ordinary flows from other internal hosts, as in [`TrafficSpec::mixed`].
    pub background_flows: usize,
}

impl Default for Exfiltration {
    fn default() -> Self {
        Self {
            source: IpAddr::V4(Ipv4Addr::new(10, 66, 6, 6)),
            destination: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)),
            upload_bytes: 20 * 1024 * 1024,
            bytes_per_connection: 4 * 1024 * 1024,
            background_flows: 40,
        }
    }
}

impl TrafficSpec {
    /// A deterministic mix of `flows` flows from internal hosts (10.0.0.0/8, and
    /// fd00::/8 for every fifth flow) to external hosts (TEST-NETs, 2001:db8::/32):
    /// mostly TCP, some UDP, some ICMP; packet counts and payload sizes vary per flow.
    pub fn mixed(start: Duration, flows: usize) -> Self {
        let flows = (0..flows)
            .map(|i| {
                let n = i as u32;
                let (src, dst) = if i % 5 == 4 {
                    (
                        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x10, 1 + (n % 50) as u16)),
                        IpAddr::V6(Ipv6Addr::new(
                            0x2001,
                            0xdb8,
                            0,
                            (n % 7) as u16,
                            0,
                            0,
                            0,
                            1 + n as u16,
                        )),
                    )
                } else {
                    (
                        IpAddr::V4(Ipv4Addr::new(10, (n / 250) as u8, 1, 1 + (n % 250) as u8)),
                        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1 + (n % 200) as u8)),
                    )
                };
                let transport = match i % 10 {
                    3 | 8 => Transport::Udp,
                    6 => Transport::Icmp,
                    _ => Transport::Tcp,
                };
                FlowSpec {
                    src,
                    dst,
                    transport,
                    src_port: 20_000 + n as u16,
                    dst_port: [443, 80, 53, 22, 8443][i % 5],
                    packets: 2 + (n * 7) % 23,
                    payload_len: [0, 64, 512, 1000, 1400][(i / 3) % 5],
                    start_offset: Duration::from_millis(u64::from(n) * 37),
                    gap: Duration::from_millis(1 + u64::from(n % 9)),
                }
            })
            .collect();
        Self { start, flows }
    }

    /// The exfiltration scenario: the background of [`TrafficSpec::mixed`] plus TCP uploads of
    /// `upload_bytes` from `source` to `destination` (1400-byte segments, 100 µs apart).
    pub fn exfiltration(start: Duration, scenario: &Exfiltration) -> Self {
        let mut spec = Self::mixed(start, scenario.background_flows);
        let segment = 1400u64;
        let per_connection = scenario.bytes_per_connection.max(segment);
        let mut remaining = scenario.upload_bytes;
        let mut connection = 0u16;
        while remaining > 0 {
            let bytes = remaining.min(per_connection);
            // Full segments only; the upload is rounded up to a whole segment.
            let segments = bytes.div_ceil(segment) as u32;
            spec.flows.push(FlowSpec {
                src: scenario.source,
                dst: scenario.destination,
                transport: Transport::Tcp,
                src_port: 40_000 + connection,
                dst_port: 443,
                packets: segments + 2,
                payload_len: segment as u16,
                start_offset: Duration::from_millis(u64::from(connection) * 10),
                gap: Duration::from_micros(100),
            });
            remaining -= bytes;
            connection += 1;
        }
        spec
    }
}

/// The totals of one flow, as an exporter counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTotals {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// 0 for ICMP.
    pub src_port: u16,
    /// 0 for ICMP.
    pub dst_port: u16,
    pub packets: u64,
    /// Sum of IP lengths.
    pub bytes: u64,
}

/// The totals of a written pcap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficTotals {
    /// Packets written.
    pub packets: u64,
    /// Sum of IP lengths (what NetFlow/IPFIX exporters report as octets).
    pub bytes: u64,
    /// Flows written; one exported record each when the exporter does not split flows.
    pub flows: u64,
    /// Per flow, in spec order.
    pub per_flow: Vec<FlowTotals>,
}

impl TrafficTotals {
    /// The totals of the IPv4 flows only: what a NetFlow v5 exporter can report.
    pub fn ipv4_only(&self) -> Self {
        Self::from_flows(
            self.per_flow
                .iter()
                .filter(|f| f.src.is_ipv4())
                .cloned()
                .collect(),
        )
    }

    /// Sum of Ethernet frame lengths (IP length + 14 per packet; no FCS, no VLAN tag): what an
    /// sFlow agent reports as a sampled packet's frame length.
    pub fn frame_bytes(&self) -> u64 {
        self.bytes + self.packets * ETHERNET_HEADER_LEN
    }

    /// Sum of frame lengths as an sFlow agent reports them with every packet sampled:
    /// [`TrafficTotals::frame_bytes`] plus the 4-byte FCS per packet (checked against pmacctd's
    /// sfprobe and sfacctd).
    pub fn sflow_frame_bytes(&self) -> u64 {
        self.frame_bytes() + self.packets * FCS_LEN
    }

    fn from_flows(per_flow: Vec<FlowTotals>) -> Self {
        Self {
            packets: per_flow.iter().map(|f| f.packets).sum(),
            bytes: per_flow.iter().map(|f| f.bytes).sum(),
            flows: per_flow.len() as u64,
            per_flow,
        }
    }
}

/// Writes `spec` as an Ethernet pcap (microsecond timestamps) to `path` and returns its totals.
pub fn write_pcap(path: &Path, spec: &TrafficSpec) -> Result<TrafficTotals> {
    for (i, flow) in spec.flows.iter().enumerate() {
        flow.validate(i)?;
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(BufWriter::new(file), header).context("writing pcap header")?;

    // Next packet of every flow, earliest first; ties go to the earlier flow, then packet.
    let mut next: BinaryHeap<Reverse<(Duration, usize, u32)>> = spec
        .flows
        .iter()
        .enumerate()
        .map(|(i, flow)| Reverse((flow.start_offset, i, 0)))
        .collect();
    while let Some(Reverse((offset, flow_index, index))) = next.pop() {
        let flow = &spec.flows[flow_index];
        let frame = flow.frame(flow_index, index)?;
        let packet = PcapPacket::new(spec.start + offset, frame.len() as u32, &frame);
        writer
            .write_packet(&packet)
            .with_context(|| format!("writing {}", path.display()))?;
        if index + 1 < flow.packets {
            next.push(Reverse((offset + flow.gap, flow_index, index + 1)));
        }
    }
    let mut file = writer.into_writer();
    std::io::Write::flush(&mut file).with_context(|| format!("flushing {}", path.display()))?;

    let per_flow = spec
        .flows
        .iter()
        .map(|flow| {
            let (src_port, dst_port) = match flow.transport {
                Transport::Icmp => (0, 0),
                Transport::Tcp | Transport::Udp => (flow.src_port, flow.dst_port),
            };
            FlowTotals {
                src: flow.src,
                dst: flow.dst,
                proto: flow.transport.protocol(flow.src),
                src_port,
                dst_port,
                packets: u64::from(flow.packets),
                bytes: (0..flow.packets).map(|i| flow.ip_len(i)).sum(),
            }
        })
        .collect();
    Ok(TrafficTotals::from_flows(per_flow))
}

/// Writes export `datagrams` (for example an exporter's stream recorded by the tee) as an
/// Ethernet pcap of UDP packets from `exporter` to `collector`, 10 µs apart from `start`, so
/// that a stream captured once can be replayed, decoded by `egress decode` or read by TShark.
/// Both addresses must be of one family. Datagrams are written whole (no IP fragmentation).
pub fn write_datagram_pcap(
    path: &Path,
    start: Duration,
    exporter: std::net::SocketAddr,
    collector: std::net::SocketAddr,
    datagrams: &[Vec<u8>],
) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(BufWriter::new(file), header).context("writing pcap header")?;
    for (i, datagram) in datagrams.iter().enumerate() {
        let ethernet = PacketBuilder::ethernet2(SOURCE_MAC, ROUTER_MAC);
        let ip = match (exporter.ip(), collector.ip()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => ethernet.ipv4(src.octets(), dst.octets(), HOP_LIMIT),
            (IpAddr::V6(src), IpAddr::V6(dst)) => ethernet.ipv6(src.octets(), dst.octets(), HOP_LIMIT),
            _ => bail!("exporter {exporter} and collector {collector} differ in family"),
        };
        let mut frame = Vec::with_capacity(datagram.len() + 62);
        ip.udp(exporter.port(), collector.port())
            .write(&mut frame, datagram)
            .with_context(|| format!("building datagram {i} ({} bytes)", datagram.len()))?;
        let timestamp = start + Duration::from_micros(10 * i as u64);
        writer
            .write_packet(&PcapPacket::new(timestamp, frame.len() as u32, &frame))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut file = writer.into_writer();
    std::io::Write::flush(&mut file).with_context(|| format!("flushing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket};
    use pcap_file::pcap::PcapReader;

    /// Re-reads a written pcap and sums what is on the wire, independently of the generator.
    fn measure(path: &Path) -> (u64, u64, u64) {
        let mut reader = PcapReader::new(File::open(path).unwrap()).unwrap();
        let (mut packets, mut ip_bytes, mut frame_bytes) = (0, 0, 0);
        let mut last = Duration::ZERO;
        while let Some(packet) = reader.next_packet() {
            let packet = packet.unwrap();
            assert!(packet.timestamp >= last, "timestamps go back");
            last = packet.timestamp;
            let sliced = SlicedPacket::from_ethernet(&packet.data).unwrap();
            ip_bytes += match sliced.net.unwrap() {
                NetSlice::Ipv4(v4) => u64::from(v4.header().total_len()),
                NetSlice::Ipv6(v6) => 40 + u64::from(v6.header().payload_length()),
                NetSlice::Arp(_) => panic!("no ARP is generated"),
            };
            packets += 1;
            frame_bytes += packet.data.len() as u64;
        }
        (packets, ip_bytes, frame_bytes)
    }

    #[test]
    fn totals_match_the_packets_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.pcap");
        let totals = write_pcap(&path, &TrafficSpec::mixed(Duration::from_secs(1_700_000_000), 60)).unwrap();
        let (packets, ip_bytes, frame_bytes) = measure(&path);
        assert_eq!(totals.flows, 60);
        assert_eq!(totals.packets, packets);
        assert_eq!(totals.bytes, ip_bytes);
        assert_eq!(totals.frame_bytes(), frame_bytes);
        let v4 = totals.ipv4_only();
        assert!(
            v4.flows > 0 && v4.flows < totals.flows,
            "the mix has both families"
        );
    }

    #[test]
    fn same_spec_gives_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TrafficSpec::mixed(Duration::from_secs(1_700_000_000), 25);
        write_pcap(&dir.path().join("a.pcap"), &spec).unwrap();
        write_pcap(&dir.path().join("b.pcap"), &spec).unwrap();
        let a = std::fs::read(dir.path().join("a.pcap")).unwrap();
        let b = std::fs::read(dir.path().join("b.pcap")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn exfiltration_uploads_the_requested_volume_to_one_destination() {
        let scenario = Exfiltration {
            upload_bytes: 3 * 1024 * 1024,
            bytes_per_connection: 1024 * 1024,
            background_flows: 10,
            ..Exfiltration::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exfil.pcap");
        let totals = write_pcap(
            &path,
            &TrafficSpec::exfiltration(Duration::from_secs(1_700_000_000), &scenario),
        )
        .unwrap();
        let upload: Vec<_> = totals
            .per_flow
            .iter()
            .filter(|f| f.src == scenario.source)
            .collect();
        assert_eq!(upload.len(), 3);
        assert!(upload.iter().all(|f| f.dst == scenario.destination));
        let payload: u64 = upload.iter().map(|f| f.bytes - f.packets * 40).sum();
        assert!(payload >= scenario.upload_bytes && payload < scenario.upload_bytes + 3 * 1400);
        assert_eq!(measure(&path).1, totals.bytes);
    }

    #[test]
    fn datagram_pcap_holds_each_datagram_as_one_udp_packet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream.pcap");
        let datagrams: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40 + 300 * usize::from(i)]).collect();
        let exporter = "192.0.2.1:40000".parse().unwrap();
        let collector = "127.0.0.1:2055".parse().unwrap();
        write_datagram_pcap(
            &path,
            Duration::from_secs(1_700_000_000),
            exporter,
            collector,
            &datagrams,
        )
        .unwrap();
        let mut reader = PcapReader::new(File::open(&path).unwrap()).unwrap();
        let mut read = Vec::new();
        while let Some(packet) = reader.next_packet() {
            let packet = packet.unwrap();
            let sliced = SlicedPacket::from_ethernet(&packet.data).unwrap();
            let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
                panic!("not UDP")
            };
            assert_eq!((udp.source_port(), udp.destination_port()), (40000, 2055));
            read.push(udp.payload().to_vec());
        }
        assert_eq!(read, datagrams);
        assert!(write_datagram_pcap(
            &path,
            Duration::ZERO,
            exporter,
            "[::1]:2055".parse().unwrap(),
            &datagrams
        )
        .is_err());
    }

    #[test]
    fn rejects_a_tcp_flow_without_fin() {
        let mut spec = TrafficSpec::mixed(Duration::ZERO, 1);
        spec.flows[0].transport = Transport::Tcp;
        spec.flows[0].packets = 1;
        let dir = tempfile::tempdir().unwrap();
        assert!(write_pcap(&dir.path().join("x.pcap"), &spec).is_err());
    }
}
