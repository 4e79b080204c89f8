//! Capture files: pcap or pcapng in, export datagrams out (for `egress decode`, tests and the
//! benchmark's replay).
//!
//! Every UDP datagram in the file is returned, whatever its port; the exporter is the
//! datagram's source address. Link types: Ethernet (with VLAN tags), Linux cooked (SLL), raw
//! IP, and BSD loopback. IP fragments are not reassembled (export datagrams are sent unfragmented
//! in practice, and none of the reference captures has any); they are counted in
//! [`CaptureSummary::skipped_fragments`].

use std::fs::File;
use std::io::{BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

/// Errors reading a capture file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("{path} is not a pcap or pcapng file: {source}")]
    Format {
        path: String,
        source: pcap_file::PcapError,
    },
    #[error("{path}: link type {link:?} is not supported (Ethernet, Linux SLL, raw IP, BSD loopback)")]
    LinkType { path: String, link: DataLink },
}

pub type Result<T> = std::result::Result<T, CaptureError>;

/// One UDP datagram from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedDatagram {
    /// Capture timestamp, Unix seconds.
    pub timestamp: u32,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// What reading a capture skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CaptureSummary {
    pub frames: u64,
    pub udp_datagrams: u64,
    pub skipped_not_udp: u64,
    pub skipped_fragments: u64,
    pub skipped_unparsable: u64,
}

/// Reads every UDP datagram of a pcap or pcapng file, in file order.
pub fn read_datagrams(path: &Path) -> Result<(Vec<CapturedDatagram>, CaptureSummary)> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: name.clone(),
        source,
    })?;
    read_datagrams_from(BufReader::new(file), &name)
}

/// Reads every UDP datagram of a pcap or pcapng stream, in order; `name` is the file name its
/// errors carry. [`read_datagrams`] serves files; this entry point serves bytes already in
/// memory (the fuzz target) or any other reader.
pub fn read_datagrams_from(
    mut reader: impl Read,
    name: &str,
) -> Result<(Vec<CapturedDatagram>, CaptureSummary)> {
    let name = name.to_owned();
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|source| CaptureError::Open {
            path: name.clone(),
            source,
        })?;
    let chained = std::io::Cursor::new(magic).chain(reader);
    let mut datagrams = Vec::new();
    let mut summary = CaptureSummary::default();
    let format_error = |source| CaptureError::Format {
        path: name.clone(),
        source,
    };

    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut pcapng = PcapNgReader::new(chained).map_err(format_error)?;
        // Link types by interface id, from the interface description blocks seen so far.
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = pcapng.next_block() {
            let block = block.map_err(format_error)?;
            let (interface_id, timestamp, data) = match &block {
                Block::InterfaceDescription(idb) => {
                    links.push(idb.linktype);
                    continue;
                }
                Block::EnhancedPacket(epb) => (epb.interface_id, epb.timestamp.as_secs(), epb.data.as_ref()),
                Block::SimplePacket(spb) => (0, 0, spb.data.as_ref()),
                _ => continue,
            };
            let link = links
                .get(interface_id as usize)
                .copied()
                .unwrap_or(DataLink::ETHERNET);
            summary.frames += 1;
            let timestamp = u32::try_from(timestamp).unwrap_or(u32::MAX);
            push_frame(&name, link, timestamp, data, &mut datagrams, &mut summary)?;
        }
    } else {
        let mut pcap = PcapReader::new(chained).map_err(format_error)?;
        let link = pcap.header().datalink;
        while let Some(packet) = pcap.next_packet() {
            let packet = packet.map_err(format_error)?;
            summary.frames += 1;
            let timestamp = u32::try_from(packet.timestamp.as_secs()).unwrap_or(u32::MAX);
            push_frame(&name, link, timestamp, &packet.data, &mut datagrams, &mut summary)?;
        }
    }
    Ok((datagrams, summary))
}

fn push_frame(
    path: &str,
    link: DataLink,
    timestamp: u32,
    frame: &[u8],
    datagrams: &mut Vec<CapturedDatagram>,
    summary: &mut CaptureSummary,
) -> Result<()> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(frame),
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(frame),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(frame),
        // BSD loopback: a 4-byte address family in host order, then the IP packet.
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(frame.get(4..).unwrap_or_default()),
        other => {
            return Err(CaptureError::LinkType {
                path: path.to_owned(),
                link: other,
            });
        }
    };
    let Ok(sliced) = sliced else {
        summary.skipped_unparsable += 1;
        return Ok(());
    };
    let (source_ip, destination_ip, fragmented): (IpAddr, IpAddr, bool) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload().fragmented,
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload().fragmented,
        ),
        _ => {
            summary.skipped_not_udp += 1;
            return Ok(());
        }
    };
    if fragmented {
        summary.skipped_fragments += 1;
        return Ok(());
    }
    match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => {
            summary.udp_datagrams += 1;
            datagrams.push(CapturedDatagram {
                timestamp,
                source: SocketAddr::new(source_ip, udp.source_port()),
                destination: SocketAddr::new(destination_ip, udp.destination_port()),
                payload: udp.payload().to_vec(),
            });
        }
        _ => summary.skipped_not_udp += 1,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_reference_capture_without_error() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/captures");
        if !root.exists() {
            panic!("reference captures missing at {}", root.display());
        }
        let mut files = 0;
        for dir in ["netflow-v5", "netflow-v9", "ipfix", "sflow-v5"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("capture folder") {
                let path = entry.expect("entry").path();
                let (datagrams, summary) = read_datagrams(&path).expect("readable capture");
                assert!(!datagrams.is_empty(), "{} has no UDP datagram", path.display());
                assert_eq!(summary.udp_datagrams as usize, datagrams.len());
                files += 1;
            }
        }
        assert!(
            files > 100,
            "expected the full set of reference captures, read {files}"
        );
    }

    #[test]
    fn reads_a_capture_in_memory_like_its_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/captures/netflow-v9/akvorado-v9-template.pcap");
        let bytes = std::fs::read(&path).expect("capture");
        let (from_file, file_summary) = read_datagrams(&path).expect("capture file");
        let (in_memory, memory_summary) = read_datagrams_from(bytes.as_slice(), "memory").expect("bytes");
        assert!(!in_memory.is_empty());
        assert_eq!(in_memory, from_file);
        assert_eq!(memory_summary, file_summary);
        let truncated = read_datagrams_from(&bytes[..2], "two bytes");
        assert!(matches!(truncated, Err(CaptureError::Open { path, .. }) if path == "two bytes"));
    }

    #[test]
    fn rejects_a_file_that_is_not_a_capture() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not.pcap");
        std::fs::write(&path, b"hello, this is not a pcap file").expect("write");
        assert!(matches!(read_datagrams(&path), Err(CaptureError::Format { .. })));
    }
}
