//! sFlow v5 datagram builder (sflow.org `sflow_version_5.txt`).
//!
//! In: simulated packet samples (one [`SimulatedFlow`] with `packets == 1` and `bytes` = frame
//! length) and the export clock. Out: datagrams of expanded flow samples (enterprise 0, format
//! 3), each with a raw packet header record (Ethernet, optional 802.1Q tag, IPv4 or IPv6,
//! TCP/UDP/ICMP, built with `etherparse`, truncated to 128 bytes), an extended switch, an
//! extended router and an extended gateway record; and datagrams of expanded counter samples
//! (format 4) with the generic interface counters of every interface.
//!
//! Sampling is on ingress: a flow sample's data source is its input interface. Interface
//! counters grow by what the samples stand for (`frame_length * sampling_rate` octets and
//! `sampling_rate` packets per sample), in on the input and out on the output interface.

use std::net::IpAddr;

use etherparse::{PacketBuilder, VlanId};

use super::{put_addr, put_u32, DatagramSummary, ExportClock, MAX_DATAGRAM_BYTES};
use crate::simulate::fleet::{tcp_flags, Router, SimulatedFlow, LOCAL_AS};

/// An upper bound of flow samples per datagram (the smallest sample is about 190 bytes).
pub const MAX_SAMPLES_PER_DATAGRAM: usize = 8;
/// Bytes of each sampled frame copied into the raw packet header record.
pub const MAX_HEADER_BYTES: usize = 128;
/// The sub-agent id of every virtual agent.
pub const SUB_AGENT_ID: u32 = 0;
/// Octets stripped from each sampled frame before its header was taken: the Ethernet FCS.
const FCS_BYTES: u32 = 4;

const FORMAT_EXPANDED_FLOW_SAMPLE: u32 = 3;
const FORMAT_EXPANDED_COUNTER_SAMPLE: u32 = 4;
const RECORD_RAW_HEADER: u32 = 1;
const RECORD_EXTENDED_SWITCH: u32 = 1001;
const RECORD_EXTENDED_ROUTER: u32 = 1002;
const RECORD_EXTENDED_GATEWAY: u32 = 1003;
const RECORD_GENERIC_INTERFACE: u32 = 1;
const GENERIC_INTERFACE_BYTES: u32 = 88;
const HEADER_PROTOCOL_ETHERNET: u32 = 1;
/// sFlow address types.
const ADDRESS_IPV4: u32 = 1;
const ADDRESS_IPV6: u32 = 2;
/// BGP AS_SEQUENCE segment of `dst_as_path`.
const AS_SEQUENCE: u32 = 2;

/// A payload of zeros to size the sampled packets (only the first bytes are kept).
static ZEROS: [u8; 1600] = [0; 1600];

/// Running state of one data source (an interface): sample sequences, sample pool, counters.
#[derive(Debug, Clone)]
struct DataSource {
    if_index: u32,
    /// ifType: 6 ethernetCsmacd, 161 ieee8023adLag.
    if_type: u32,
    speed_bps: u64,
    /// Whether counter samples are sent for it (the router's own interfaces).
    polled: bool,
    flow_sample_sequence: u32,
    counter_sample_sequence: u32,
    sample_pool: u32,
    in_octets: u64,
    in_packets: u32,
    out_octets: u64,
    out_packets: u32,
}

impl DataSource {
    fn new(if_index: u32, if_type: u32, speed_bps: u64, polled: bool) -> Self {
        Self {
            if_index,
            if_type,
            speed_bps,
            polled,
            flow_sample_sequence: 0,
            counter_sample_sequence: 0,
            sample_pool: 0,
            in_octets: 0,
            in_packets: 0,
            out_octets: 0,
            out_packets: 0,
        }
    }
}

/// The sFlow agent of one virtual router.
#[derive(Debug)]
pub struct SflowEncoder {
    agent_address: IpAddr,
    /// Datagrams sent before the next one.
    sequence: u32,
    sampling_rate: u32,
    sources: Vec<DataSource>,
    router_mac: [u8; 6],
    /// Scratch space for one sampled frame.
    frame: Vec<u8>,
}

impl SflowEncoder {
    pub fn new(router: &Router, sampling_rate: u32) -> Self {
        let sources = router
            .interfaces
            .iter()
            .map(|i| {
                DataSource::new(
                    i.if_index,
                    if i.name.starts_with("ae") { 161 } else { 6 },
                    i.speed_bps,
                    true,
                )
            })
            .collect();
        Self {
            agent_address: router.exporter_address,
            sequence: 0,
            sampling_rate: sampling_rate.max(1),
            sources,
            router_mac: [
                0x02,
                0x00,
                0x5e,
                (router.index >> 8) as u8,
                router.index as u8,
                0x01,
            ],
            frame: Vec::with_capacity(1600),
        }
    }

    fn source_mut(&mut self, if_index: u32) -> &mut DataSource {
        let position = match self.sources.iter().position(|s| s.if_index == if_index) {
            Some(position) => position,
            None => {
                self.sources.push(DataSource::new(if_index, 6, 0, false));
                self.sources.len() - 1
            }
        };
        &mut self.sources[position]
    }

    /// The datagram header; the sample count (at byte offset `header_len - 4`) is patched by
    /// [`Self::finish`].
    fn start(&self, clock: ExportClock, out: &mut Vec<u8>) {
        out.clear();
        put_u32(out, 5);
        put_address(out, self.agent_address);
        put_u32(out, SUB_AGENT_ID);
        put_u32(out, self.sequence);
        put_u32(out, clock.uptime_ms());
        put_u32(out, 0); // number of samples
    }

    fn finish(&mut self, out: &mut [u8], samples: u32) {
        let count_at = match self.agent_address {
            IpAddr::V4(_) => 24,
            IpAddr::V6(_) => 36,
        };
        super::patch_u32(out, count_at, samples);
        self.sequence = self.sequence.wrapping_add(1);
    }

    /// One datagram with as many flow samples of `flows` as fit.
    pub fn encode_flow_samples(
        &mut self,
        clock: ExportClock,
        flows: &[SimulatedFlow],
        out: &mut Vec<u8>,
    ) -> DatagramSummary {
        let mut summary = DatagramSummary::default();
        self.start(clock, out);
        for flow in flows {
            let sample_start = out.len();
            let frame_length = self.write_flow_sample(out, flow);
            if out.len() > MAX_DATAGRAM_BYTES {
                out.truncate(sample_start);
                break;
            }
            // Commit the sample: its sequence, the pool, the counters of both interfaces.
            let rate = self.sampling_rate;
            let input = self.source_mut(flow.in_if);
            input.flow_sample_sequence = input.flow_sample_sequence.wrapping_add(1);
            input.sample_pool = input.sample_pool.wrapping_add(rate);
            input.in_octets = input
                .in_octets
                .wrapping_add(u64::from(frame_length) * u64::from(rate));
            input.in_packets = input.in_packets.wrapping_add(rate);
            let output = self.source_mut(flow.out_if);
            output.out_octets = output
                .out_octets
                .wrapping_add(u64::from(frame_length) * u64::from(rate));
            output.out_packets = output.out_packets.wrapping_add(rate);
            summary.consumed += 1;
            summary.flow_records += 1;
            summary.bytes += u64::from(frame_length);
            summary.packets += 1;
        }
        self.finish(out, summary.flow_records as u32);
        summary
    }

    /// Writes one expanded flow sample; returns the frame length it reports.
    fn write_flow_sample(&mut self, out: &mut Vec<u8>, flow: &SimulatedFlow) -> u32 {
        let frame_length = self.build_frame(flow);
        let header_len = self.frame.len().min(MAX_HEADER_BYTES);
        let (sequence, pool) = {
            let rate = self.sampling_rate;
            let input = self.source_mut(flow.in_if);
            (
                input.flow_sample_sequence.wrapping_add(1),
                input.sample_pool.wrapping_add(rate),
            )
        };
        let sample = open(out, FORMAT_EXPANDED_FLOW_SAMPLE);
        put_u32(out, sequence);
        put_u32(out, 0); // source id type: ifIndex
        put_u32(out, flow.in_if);
        put_u32(out, self.sampling_rate);
        put_u32(out, pool);
        put_u32(out, 0); // drops
        put_u32(out, 0); // input interface format: ifIndex
        put_u32(out, flow.in_if);
        put_u32(out, 0); // output interface format: ifIndex
        put_u32(out, flow.out_if);
        put_u32(out, 4); // flow records

        let record = open(out, RECORD_RAW_HEADER);
        put_u32(out, HEADER_PROTOCOL_ETHERNET);
        put_u32(out, frame_length);
        put_u32(out, FCS_BYTES);
        put_u32(out, header_len as u32);
        out.extend_from_slice(self.frame.get(..header_len).unwrap_or_default());
        out.resize(out.len() + (4 - header_len % 4) % 4, 0);
        close(out, record);

        let record = open(out, RECORD_EXTENDED_SWITCH);
        for value in [u32::from(flow.vlan), 0, u32::from(flow.vlan), 0] {
            put_u32(out, value); // src vlan, src priority, dst vlan, dst priority
        }
        close(out, record);

        let record = open(out, RECORD_EXTENDED_ROUTER);
        put_address(out, flow.next_hop);
        put_u32(out, flow.src_mask.into());
        put_u32(out, flow.dst_mask.into());
        close(out, record);

        let record = open(out, RECORD_EXTENDED_GATEWAY);
        put_address(out, flow.next_hop);
        put_u32(out, LOCAL_AS);
        put_u32(out, flow.src_as);
        put_u32(out, if flow.src_as == LOCAL_AS { 0 } else { flow.src_as }); // src peer AS
        if flow.dst_as == 0 || flow.dst_as == LOCAL_AS {
            put_u32(out, 0); // no path segment: the destination is local
        } else {
            put_u32(out, 1);
            put_u32(out, AS_SEQUENCE);
            put_u32(out, 1);
            put_u32(out, flow.dst_as);
        }
        put_u32(out, 0); // communities
        put_u32(out, 100); // local preference
        close(out, record);

        close(out, sample);
        frame_length
    }

    /// Builds the sampled frame into `self.frame` (without FCS) and returns the frame length
    /// including the FCS. The frame is at least as long as its headers.
    fn build_frame(&mut self, flow: &SimulatedFlow) -> u32 {
        self.frame.clear();
        let neighbour_mac = [
            0x02,
            0x00,
            0x00,
            0x00,
            0x00,
            if flow.vlan == 0 { 0x0a } else { 0x0b },
        ];
        let link = PacketBuilder::ethernet2(neighbour_mac, self.router_mac);
        let wanted = usize::try_from(flow.bytes.saturating_sub(u64::from(FCS_BYTES))).unwrap_or(usize::MAX);
        let tagged = VlanId::try_new(flow.vlan).ok().filter(|_| flow.vlan != 0);
        const TTL: u8 = 62;
        let ip = match (tagged, flow.src_addr, flow.dst_addr) {
            (Some(vlan), IpAddr::V4(s), IpAddr::V4(d)) => {
                link.single_vlan(vlan).ipv4(s.octets(), d.octets(), TTL)
            }
            (Some(vlan), s, d) => link.single_vlan(vlan).ipv6(v6_octets(s), v6_octets(d), TTL),
            (None, IpAddr::V4(s), IpAddr::V4(d)) => link.ipv4(s.octets(), d.octets(), TTL),
            (None, s, d) => link.ipv6(v6_octets(s), v6_octets(d), TTL),
        };
        let written = match flow.proto {
            6 => {
                let mut tcp = ip.tcp(flow.src_port, flow.dst_port, 0x1000_0000, 64_240);
                if flow.tcp_flags & tcp_flags::SYN != 0 {
                    tcp = tcp.syn();
                }
                if flow.tcp_flags & tcp_flags::ACK != 0 {
                    tcp = tcp.ack(0x2000_0000);
                }
                if flow.tcp_flags & tcp_flags::PSH != 0 {
                    tcp = tcp.psh();
                }
                if flow.tcp_flags & tcp_flags::RST != 0 {
                    tcp = tcp.rst();
                }
                let payload = payload_for(wanted, tcp.size(0));
                tcp.write(&mut self.frame, payload)
            }
            1 => {
                let icmp = ip.icmpv4_echo_request(0x5e11, 1);
                let payload = payload_for(wanted, icmp.size(0));
                icmp.write(&mut self.frame, payload)
            }
            58 => {
                let icmp = ip.icmpv6_echo_request(0x5e11, 1);
                let payload = payload_for(wanted, icmp.size(0));
                icmp.write(&mut self.frame, payload)
            }
            _ => {
                let udp = ip.udp(flow.src_port, flow.dst_port);
                let payload = payload_for(wanted, udp.size(0));
                udp.write(&mut self.frame, payload)
            }
        };
        if written.is_err() {
            // The builder rejects only impossible lengths; keep whatever header was written.
            self.frame.truncate(MAX_HEADER_BYTES);
        }
        self.frame.len() as u32 + FCS_BYTES
    }

    /// One datagram with a generic interface counter sample for each of the router's interfaces.
    pub fn encode_counter_samples(&mut self, clock: ExportClock, out: &mut Vec<u8>) -> DatagramSummary {
        let mut summary = DatagramSummary::default();
        self.start(clock, out);
        for source in self.sources.iter_mut().filter(|s| s.polled) {
            source.counter_sample_sequence = source.counter_sample_sequence.wrapping_add(1);
            let sample = open(out, FORMAT_EXPANDED_COUNTER_SAMPLE);
            put_u32(out, source.counter_sample_sequence);
            put_u32(out, 0); // source id type: ifIndex
            put_u32(out, source.if_index);
            put_u32(out, 1); // counter records
            put_u32(out, RECORD_GENERIC_INTERFACE);
            put_u32(out, GENERIC_INTERFACE_BYTES);
            put_u32(out, source.if_index);
            put_u32(out, source.if_type);
            out.extend_from_slice(&source.speed_bps.to_be_bytes());
            put_u32(out, 1); // ifDirection: full duplex
            put_u32(out, 3); // ifStatus: admin up, oper up
            out.extend_from_slice(&source.in_octets.to_be_bytes());
            put_u32(out, source.in_packets); // ifInUcastPkts
            for _ in 0..5 {
                put_u32(out, 0); // multicast, broadcast, discards, errors, unknown protocols
            }
            out.extend_from_slice(&source.out_octets.to_be_bytes());
            put_u32(out, source.out_packets); // ifOutUcastPkts
            for _ in 0..4 {
                put_u32(out, 0); // multicast, broadcast, discards, errors
            }
            put_u32(out, 2); // ifPromiscuousMode: false
            close(out, sample);
            summary.counter_samples += 1;
        }
        self.finish(out, summary.counter_samples as u32);
        summary
    }
}

fn v6_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Zeros that make a frame of `headers` bytes `wanted` bytes long (none if it is already).
fn payload_for(wanted: usize, headers: usize) -> &'static [u8] {
    ZEROS.get(..wanted.saturating_sub(headers)).unwrap_or(&ZEROS)
}

/// An sFlow address: type, then 4 or 16 bytes.
fn put_address(out: &mut Vec<u8>, addr: IpAddr) {
    put_u32(
        out,
        if addr.is_ipv4() {
            ADDRESS_IPV4
        } else {
            ADDRESS_IPV6
        },
    );
    put_addr(out, addr);
}

/// Opens a sample or record (format, length); returns where it starts, for [`close`].
fn open(out: &mut Vec<u8>, format: u32) -> usize {
    let start = out.len();
    put_u32(out, format); // enterprise 0
    put_u32(out, 0);
    start
}

/// Writes the length of the sample or record opened at `start`.
fn close(out: &mut [u8], start: usize) {
    let len = out.len() - start - 8;
    super::patch_u32(out, start + 4, len as u32);
}

#[cfg(test)]
mod tests;
