//! Encode: simulated flows in, export datagrams out. Pure: no sockets; the time comes in as an
//! [`ExportClock`].
//!
//! One [`ExportEncoder`] per virtual exporter holds what the protocol makes stateful: sequence
//! numbers, the sampler announced in options data, sFlow per-source sample sequences and
//! interface counters. Each call writes one datagram into a caller-owned buffer (reused, so the
//! hot loop does not allocate) of at most [`MAX_DATAGRAM_BYTES`], and reports what it holds in a
//! [`DatagramSummary`], the figures the simulator's report is made of.
//!
//! Sequence numbers follow each specification, because the collector uses them for loss
//! accounting: NetFlow v5 counts flows sent before the datagram, NetFlow v9 counts datagrams,
//! IPFIX counts data records (options data records included, RFC 7011 §3.1), and sFlow counts
//! datagrams per agent and sub-agent, and samples per data source and sample kind.

pub mod netflow;
pub mod sflow;

use std::net::IpAddr;

use super::fleet::{Router, SimulatedFlow};
use super::Protocol;

/// The largest datagram the encoders produce (payload bytes), except NetFlow v5 whose 30
/// records take 1464: fits a 1500-byte MTU with IPv6 and UDP headers.
pub const MAX_DATAGRAM_BYTES: usize = 1400;

/// The exporter's clock at encoding time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportClock {
    /// Wall clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// When the virtual router booted, milliseconds since the Unix epoch (`<= unix_ms`).
    pub boot_unix_ms: u64,
}

impl ExportClock {
    /// Milliseconds since boot, as NetFlow v5/v9 `sys_uptime` and sFlow `uptime` carry it
    /// (wrapping after 49.7 days, as on a real router).
    pub fn uptime_ms(&self) -> u32 {
        self.unix_ms.saturating_sub(self.boot_unix_ms) as u32
    }

    pub fn unix_secs(&self) -> u32 {
        (self.unix_ms / 1000) as u32
    }

    /// `unix_ms - age_ms`, never before boot.
    pub fn unix_ms_ago(&self, age_ms: u32) -> u64 {
        self.unix_ms
            .saturating_sub(u64::from(age_ms))
            .max(self.boot_unix_ms)
    }

    /// The uptime `age_ms` ago, as NetFlow v5/v9 `first`/`last` switched carry it.
    pub fn uptime_ms_ago(&self, age_ms: u32) -> u32 {
        (self.unix_ms_ago(age_ms) - self.boot_unix_ms) as u32
    }
}

/// What one datagram holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DatagramSummary {
    /// Flows (or sFlow flow samples) taken from the input slice, including any that had to be
    /// skipped (IPv6 flows given to the NetFlow v5 encoder).
    pub consumed: usize,
    /// Flow records (sFlow: flow samples) encoded.
    pub flow_records: u64,
    /// Sum of the encoded records' byte counts (sFlow: frame lengths), as exported (sampled).
    pub bytes: u64,
    /// Sum of the encoded records' packet counts (sFlow: 1 per flow sample).
    pub packets: u64,
    /// Template and options template records.
    pub template_records: u64,
    /// Options data records (the sampler announcements).
    pub options_records: u64,
    /// sFlow counter samples.
    pub counter_samples: u64,
}

/// The encoder of one virtual exporter, dispatching on the protocol.
#[derive(Debug)]
pub enum ExportEncoder {
    NetflowV5(netflow::NetflowV5Encoder),
    NetflowV9(netflow::TemplateEncoder),
    Ipfix(netflow::TemplateEncoder),
    Sflow(sflow::SflowEncoder),
}

impl ExportEncoder {
    /// The encoder for `router` exporting `protocol` with 1-in-`sampling_rate` packet sampling.
    pub fn new(protocol: Protocol, router: &Router, sampling_rate: u32) -> Self {
        match protocol {
            Protocol::Netflow5 => Self::NetflowV5(netflow::NetflowV5Encoder::new(router, sampling_rate)),
            Protocol::Netflow9 => {
                Self::NetflowV9(netflow::TemplateEncoder::netflow_v9(router, sampling_rate))
            }
            Protocol::Ipfix => Self::Ipfix(netflow::TemplateEncoder::ipfix(router, sampling_rate)),
            Protocol::Sflow5 => Self::Sflow(sflow::SflowEncoder::new(router, sampling_rate)),
        }
    }

    /// The most flow records one datagram can hold (an upper bound for sFlow and mixed IPv4/IPv6).
    pub fn max_records_per_datagram(&self) -> usize {
        match self {
            Self::NetflowV5(_) => netflow::V5_MAX_RECORDS,
            Self::NetflowV9(e) | Self::Ipfix(e) => e.max_records_per_datagram(),
            Self::Sflow(_) => sflow::MAX_SAMPLES_PER_DATAGRAM,
        }
    }

    /// Writes one data datagram with as many of `flows` (from the front) as fit.
    pub fn encode_flows(
        &mut self,
        clock: ExportClock,
        flows: &[SimulatedFlow],
        out: &mut Vec<u8>,
    ) -> DatagramSummary {
        match self {
            Self::NetflowV5(e) => e.encode(clock, flows, out),
            Self::NetflowV9(e) | Self::Ipfix(e) => e.encode_flows(clock, flows, out),
            Self::Sflow(e) => e.encode_flow_samples(clock, flows, out),
        }
    }

    /// Writes the periodic datagram of the protocol, if it has one: templates, the options
    /// template and the sampler's options data (NetFlow v9, IPFIX), or one counter sample per
    /// interface (sFlow). `None` for NetFlow v5.
    pub fn encode_refresh(&mut self, clock: ExportClock, out: &mut Vec<u8>) -> Option<DatagramSummary> {
        match self {
            Self::NetflowV5(_) => None,
            Self::NetflowV9(e) | Self::Ipfix(e) => Some(e.encode_templates(clock, out)),
            Self::Sflow(e) => Some(e.encode_counter_samples(clock, out)),
        }
    }
}

/// Appends `value`'s lowest `len` bytes, big-endian (`len <= 8`; the templates are static).
fn put_uint(out: &mut Vec<u8>, value: u64, len: usize) {
    let bytes = value.to_be_bytes();
    out.extend_from_slice(&bytes[bytes.len().saturating_sub(len)..]);
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Overwrites the big-endian u16 at `at` (a length or count field written as a placeholder).
fn patch_u16(out: &mut [u8], at: usize, value: u16) {
    if let Some(slot) = out.get_mut(at..at + 2) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

fn patch_u32(out: &mut [u8], at: usize, value: u32) {
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

/// An address's bytes: 4 for IPv4, 16 for IPv6.
fn put_addr(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}
