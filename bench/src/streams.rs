//! Streams: the export datagrams the benchmark replays.
//!
//! In: a generated traffic pcap ([`egress_testkit::traffic`]) read by real exporters
//! (softflowd for NetFlow v5, v9 and IPFIX; pmacctd's sfprobe for sFlow v5). Out: one pcap of
//! export datagrams per protocol (`netflow5.pcap`, `netflow9.pcap`, `ipfix.pcap`,
//! `sflow5.pcap`), recorded by a [`UdpTee`] on loopback, and, when loaded, a [`Stream`]: the
//! datagrams with the records and packets each one carries.
//!
//! Records per datagram are counted by Egress's own decoder (pure, no I/O). That is the
//! expected count for every collector: the end-to-end tests (`tests/e2e_exporters.rs`) check
//! that Egress, nfcapd and sfacctd agree on these exporters' streams.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use egress_collector::decode::{DecodeOutput, Decoder, DecoderConfig};
use egress_testkit::exporters::{NetflowVersion, PmacctdSfprobe, Softflowd, UdpTee};
use egress_testkit::traffic::{write_datagram_pcap, write_pcap, TrafficSpec};

/// Flows in the generated traffic pcap: about 39,000 packets, which gives ~100 NetFlow/IPFIX
/// datagrams and ~6,000 sFlow datagrams per stream.
pub const TRAFFIC_FLOWS: usize = 3000;
/// How long the tee must hear nothing before an exporter's stream is complete.
const QUIET: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(120);

/// An export protocol of the benchmark, with the exporter that produces its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Ipfix,
    Netflow9,
    Netflow5,
    Sflow5,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Self::Ipfix, Self::Netflow9, Self::Netflow5, Self::Sflow5];

    /// The name used in file names, on the command line and in `flows.flow_type`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipfix => "ipfix",
            Self::Netflow9 => "netflow9",
            Self::Netflow5 => "netflow5",
            Self::Sflow5 => "sflow5",
        }
    }

    /// The stream's file name in a streams directory.
    pub fn file_name(self) -> String {
        format!("{}.pcap", self.name())
    }

    /// The exporter that produced the stream, for the report.
    pub fn exporter(self) -> &'static str {
        match self {
            Self::Ipfix | Self::Netflow9 | Self::Netflow5 => "softflowd",
            Self::Sflow5 => "pmacctd sfprobe",
        }
    }

    pub fn is_sflow(self) -> bool {
        self == Self::Sflow5
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| format!("unknown protocol {text:?} (ipfix, netflow9, netflow5, sflow5)"))
    }
}

/// Runs the exporters on a generated traffic pcap and writes one stream pcap per protocol of
/// `protocols` into `dir`. Flow times are "now", so rows land in today's partitions.
pub fn generate(dir: &Path, protocols: &[Protocol]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile::tempdir()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let traffic = work.path().join("traffic.pcap");
    write_pcap(
        &traffic,
        &TrafficSpec::mixed(Duration::from_secs(now.as_secs()), TRAFFIC_FLOWS),
    )
    .context("writing the traffic pcap")?;
    let mut written = Vec::new();
    for &protocol in protocols {
        let tee = UdpTee::start(&[], true)?;
        match protocol {
            Protocol::Sflow5 => {
                PmacctdSfprobe { sampling_rate: 1 }.replay(&traffic, &tee)?;
            }
            Protocol::Ipfix | Protocol::Netflow9 | Protocol::Netflow5 => {
                let version = match protocol {
                    Protocol::Ipfix => NetflowVersion::Ipfix,
                    Protocol::Netflow9 => NetflowVersion::V9,
                    _ => NetflowVersion::V5,
                };
                Softflowd::new(version).replay(&traffic, tee.listen_addr())?;
            }
        }
        tee.wait_quiet(QUIET, TIMEOUT)
            .with_context(|| format!("{} sent nothing", protocol.exporter()))?;
        let datagrams = tee.recorded();
        let path = dir.join(protocol.file_name());
        write_datagram_pcap(
            &path,
            now,
            SocketAddr::from(([127, 0, 0, 1], 9995)),
            SocketAddr::from(([127, 0, 0, 1], 2055)),
            &datagrams,
        )?;
        written.push(path);
    }
    Ok(written)
}

/// One protocol's export datagrams, ready to replay, with what each one carries.
#[derive(Debug, Clone)]
pub struct Stream {
    pub protocol: Protocol,
    pub datagrams: Vec<Vec<u8>>,
    /// Flow records (sFlow: flow samples) in each datagram, as Egress decodes them.
    pub records: Vec<u64>,
    /// Sum of the records' packet counts in each datagram (sFlow: one per sample).
    pub packets: Vec<u64>,
}

impl Stream {
    /// Reads `protocol`'s stream pcap and counts each datagram's records with a decoder that
    /// has already seen the whole stream once, as a collector has in a replay loop.
    pub fn load(path: &Path, protocol: Protocol) -> Result<Self> {
        let (captured, _) = egress_collector::capture::read_datagrams(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let datagrams: Vec<Vec<u8>> = captured.into_iter().map(|d| d.payload).collect();
        if datagrams.is_empty() {
            bail!("{} holds no UDP datagrams", path.display());
        }
        let exporter = IpAddr::from([127, 0, 0, 1]);
        let mut decoder = Decoder::new(&DecoderConfig::default());
        let mut out = DecodeOutput::default();
        let mut records = Vec::with_capacity(datagrams.len());
        let mut packets = Vec::with_capacity(datagrams.len());
        for pass in 0..2 {
            for datagram in &datagrams {
                out.clear();
                // A datagram Egress cannot decode carries no record it could store.
                let _ = decoder.decode(exporter, 0, datagram, &mut out);
                if pass == 1 {
                    records.push(out.flows.len() as u64);
                    packets.push(if protocol.is_sflow() {
                        out.flows.len() as u64
                    } else {
                        out.flows.iter().map(|f| f.packets).sum()
                    });
                }
            }
        }
        let stream = Self {
            protocol,
            datagrams,
            records,
            packets,
        };
        if stream.total_records() == 0 {
            bail!("{} holds no flow records", path.display());
        }
        Ok(stream)
    }

    pub fn total_records(&self) -> u64 {
        self.records.iter().sum()
    }

    /// Average records per datagram, which turns a record rate into a datagram rate.
    pub fn records_per_datagram(&self) -> f64 {
        self.total_records() as f64 / self.datagrams.len() as f64
    }
}
