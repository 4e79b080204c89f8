//! Decode stage, sFlow v5: one datagram in, [`FlowRecord`]s (one per flow sample) and
//! [`InterfaceCounterRecord`]s (one per generic interface counter record) out, plus loss
//! accounting. Pure: no I/O; the only state is the per-source sequence state for loss.
//!
//! # Parsing
//! The datagram header and the sample envelopes (`data_format`, length, body) are read here,
//! and the packet header inside a `sampled_header` record by `etherparse` ([`header`]).
//!
//! Flow samples (formats 1 and 3), nearly all of the traffic, go first to the fast path
//! ([`fast`]): a reader of the XDR bytes in place that feeds the records the mapping reads
//! (0:1 `sampled_header`, 0:3 `sampled_ipv4`, 0:4 `sampled_ipv6`, 0:1001 `extended_switch`,
//! 0:1002 `extended_router`, 0:1003 `extended_gateway`, 0:2209 `extended_tcp_info`) to the
//! same mapping ([`FlowRecordBuilder`]) with no heap allocation, and skips other records by
//! their length. It exists for speed: with `sflow-parser` alone (9 allocations per flow
//! sample) the decoder did 2.17 M flow samples/s on one core of the generated stream
//! (criterion `decode/generated/sflow5` on the 2-core development machine), with the fast
//! path 5.43 M/s and no allocation; about half of what remains is `etherparse` in [`header`].
//! It only answers for a sample that it knows `sflow-parser` accepts; anything else (a length
//! or padding that does not fit, an unknown `header_protocol`, an address type other than 0,
//! 1 or 2, a record type whose parse could fail for another reason than its length) is "not
//! handled" and the sample goes through `sflow-parser` as below, so errors, their texts and
//! counts are unchanged. Property tests (`fast::tests`) hold the two paths equal: records,
//! errors, accounting.
//!
//! Counter samples, and flow samples the fast path does not handle, are parsed by
//! `sflow-parser`. Why not hand the whole datagram to `sflow_parser::parse_datagram`: it is
//! all or nothing (one bad record loses every sample of the datagram), it reports no byte
//! offset, and its per-sample parsers are private. So each sample is handed to it alone,
//! wrapped in a minimal one-sample datagram (a 28-byte header written into a reused buffer):
//! a bad sample becomes one `sflow_sample` error at the sample's offset and the other samples
//! are kept. Inside a sample, `sflow-parser` is still all or nothing: a record it rejects (an
//! unknown `header_protocol`, a non-UTF-8 user name) loses that sample.
//!
//! Samples other than flow (formats 1 and 3) and counter samples (2 and 4) of enterprise 0,
//! for example discarded-packet events (format 5) and vendor samples, are skipped without
//! error, as the specification asks of collectors. Counter records other than generic
//! interface counters (0:1) are skipped the same way.
//!
//! # Mapping of a flow sample
//! - `bytes`: the length of the sampled packet as sfacctd (pmacct) counts it, so that volumes
//!   match it: the `frame_length` of the `sampled_header` record (the whole frame, layer 2
//!   and FCS included, before any stripping: `stripped` is not subtracted), or the `length`
//!   of a `sampled_ipv4` / `sampled_ipv6` record; when a sample carries several of them the
//!   last one in record order wins, as in sfacctd. `packets` is 1.
//! - `in_if` / `out_if`: the ifIndex when the interface field names one interface, else 0:
//!   0 for "not known" (the value 0 itself), for traffic from or to the device itself
//!   (compact `0x3FFFFFFF`, expanded `0xFFFFFFFF`), for discarded packets (format 1, whose
//!   value is a drop reason) and for multiple output interfaces (format 2, whose value is a
//!   count). sfacctd stores the raw 32-bit field instead (format bits and all); an ifIndex
//!   that is not one would mislead the egress classification.
//! - addresses, ports, protocol, ToS, TCP flags, EtherType: from the sampled header; from a
//!   `sampled_ipv4` / `sampled_ipv6` record only when no header gave an IP layer.
//! - `vlan`: the outer 802.1Q tag of the sampled header, else the `src_vlan` of
//!   `extended_switch`, else its `dst_vlan` (as sfacctd does: a frame that arrived untagged
//!   and left tagged is in the outgoing VLAN); values above 4095, such as 0xFFFFFFFF for
//!   "unknown", count as none.
//! - `extended_router`: `next_hop`, `src_mask`, `dst_mask`; `extended_gateway`: `src_as`,
//!   `dst_as` (the last AS of the AS path, or the router's own `as` when the path is empty:
//!   the destination is in the router's AS), and `next_hop` when `extended_router` gave none.
//! - `extended_tcp_info` (0:2209, Host sFlow): `rtt` (µs) to `rtt_client_us` with source
//!   `sflow_tcp_info`; an `rtt` of 0 (not measured) leaves it NULL.
//! - `sampling_rate`: the sample's rate with source `sflow`; a rate of 0 (not allowed by the
//!   specification) is stored as 1 with source `unknown`.
//! - `observation_domain`: the datagram's `sub_agent_id`; `exporter_address`: the datagram's
//!   source address (the agent address goes to `interface_counters.agent_address`).
//!
//! # Loss
//! The flow sample `sequence_number` of each source (`sub_agent_id`, `source_id`) counts
//! every sample the source sent, so a gap is exactly the number of flow records lost on the
//! way, and the growth of the sample's `drops` counter is the number of samples the agent
//! could not send at all; both go to [`Accounting::lost`]. The datagram sequence number is
//! deliberately not given to [`Accounting::datagram`]: its gaps are the same lost datagrams,
//! and the estimate it would add (mean records per datagram times lost datagrams) would count
//! the loss twice, and count as lost records the datagrams that only carried counters.
//! Sources tracked per exporter are capped at [`MAX_SOURCES_PER_EXPORTER`]; further sources
//! are decoded but their loss is not measured.
//!
//! Across a restart of the collector the source state leaves through
//! [`SflowDecoder::export_state`] and comes back through [`SflowDecoder::import_state`]; the
//! first sample after the restart continues it, and its gap (samples sent while the collector
//! was stopped) goes to [`Accounting::missed`], not to loss (see `decode::snapshot`).

mod fast;
mod header;
#[cfg(test)]
mod tests;

use crate::FastMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sflow_parser::models::{
    Address, CounterData, CounterRecord, DataFormat, FlowData, GenericInterfaceCounters, HeaderProtocol,
    Interface, InterfaceExpanded, SampledIpv4, SampledIpv6,
};
use sflow_parser::SampleData;

use super::accounting::Accounting;
use super::snapshot::{is_fresh, SflowSourceSnapshot};
use super::{DecodeError, DecodeErrorKind, DecodeOutput, DecoderConfig, Result};
use egress_query::schema::RttSource;

use crate::normalise::{to_v6, FlowRecord, FlowType, InterfaceCounterRecord, SamplingSource};

/// Flow sample sequence sources tracked per exporter for loss accounting.
pub const MAX_SOURCES_PER_EXPORTER: usize = 4096;

/// A sequence or drops jump larger than this is read as an agent restart, not as loss (the
/// same bound as [`Accounting`] uses for datagram sequences).
const MAX_PLAUSIBLE_GAP: u32 = 1 << 20;

/// A flow sample this many sequence numbers behind the expected one is read as reordered
/// (late) rather than as a restart of the agent.
const MAX_REORDERING: u32 = 4096;

/// Bytes of the datagram header written in front of a sample handed to `sflow-parser`.
const WRAPPED_HEADER_LEN: usize = 28;

/// Interface value of traffic from or to the device itself, compact form.
const LOCAL_INTERFACE_COMPACT: u32 = 0x3FFF_FFFF;
/// Interface value of traffic from or to the device itself, expanded form (spec erratum).
const LOCAL_INTERFACE_EXPANDED: u32 = 0xFFFF_FFFF;

/// The sFlow v5 decoder of one receive worker.
#[derive(Debug, Default)]
pub struct SflowDecoder {
    /// Sequence state per exporter and flow sample source.
    sources: FastMap<IpAddr, FastMap<SourceKey, SourceState>>,
    /// Reused buffer for the one-sample datagram handed to `sflow-parser`.
    wrapped: Vec<u8>,
    /// Tests only: every sample goes through `sflow-parser`, so that the fast path can be
    /// compared with the path it replaces.
    #[cfg(test)]
    parser_only: bool,
}

/// A flow sample source: sub-agent, `source_id` type and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SourceKey {
    sub_agent_id: u32,
    source_type: u32,
    source_index: u32,
}

#[derive(Debug, Clone, Copy)]
struct SourceState {
    next_sequence: u32,
    drops: u32,
    /// `time_received` of the source's last sample.
    last_seen: u32,
    /// Restored from before a restart: the next gap is the collector's downtime, not loss.
    resumed: bool,
}

/// What a flow sample's sequence number and drops counter tell about the samples before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SampleGap {
    /// Lost on the way or dropped by the agent.
    lost: u64,
    /// Sent while the collector was stopped (the first sample after restored state).
    missed_while_stopped: u64,
}

/// The fixed part of an sFlow v5 datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DatagramHeader {
    agent_address: Option<IpAddr>,
    sub_agent_id: u32,
    sequence_number: u32,
    uptime: u32,
    sample_count: u32,
}

/// What a compact or expanded flow sample says besides its flow records: the source and its
/// counters for loss accounting, and the fields the record mapping takes from the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowSampleHead {
    source: SourceKey,
    sequence_number: u32,
    sampling_rate: u32,
    drops: u32,
    /// ifIndex or 0 ([`compact_if_index`], [`expanded_if_index`]).
    in_if: u32,
    out_if: u32,
}

impl SflowDecoder {
    pub fn new(_config: &DecoderConfig) -> Self {
        Self::default()
    }

    /// Decodes one sFlow v5 datagram from `exporter` received at `time_received` (Unix
    /// seconds). A datagram whose header cannot be read is an `Err`; a sample that cannot be
    /// read goes to `out.errors` and the other samples are kept. Every error is counted in
    /// `accounting`.
    pub fn decode(
        &mut self,
        exporter: IpAddr,
        time_received: u32,
        payload: &[u8],
        accounting: &mut Accounting,
        out: &mut DecodeOutput,
    ) -> Result<()> {
        let mut reader = Xdr::new(payload);
        let header = match read_datagram_header(&mut reader) {
            Ok(header) => header,
            Err((kind, offset, detail)) => {
                accounting.error(exporter, 0, FlowType::Sflow5, kind);
                return Err(DecodeError {
                    kind,
                    exporter,
                    offset,
                    detail,
                });
            }
        };
        let first_error = out.errors.len();
        let mut flows = 0u64;
        for index in 0..header.sample_count {
            let sample_offset = reader.offset;
            let Some((format, body)) = read_sample_envelope(&mut reader) else {
                out.errors.push(DecodeError {
                    kind: DecodeErrorKind::Truncated,
                    exporter,
                    offset: sample_offset,
                    detail: format!(
                        "sample {index} of {} does not fit in the {} bytes of the datagram",
                        header.sample_count,
                        payload.len()
                    ),
                });
                break;
            };
            match self.decode_sample(exporter, time_received, &header, format, body, accounting, out) {
                Ok(decoded) => flows += decoded,
                Err(detail) => out.errors.push(DecodeError {
                    kind: DecodeErrorKind::SflowSample,
                    exporter,
                    offset: sample_offset,
                    detail: format!(
                        "sample {index} (format {}:{}): {detail}",
                        format.enterprise(),
                        format.format()
                    ),
                }),
            }
        }
        for error in &out.errors[first_error..] {
            accounting.error(exporter, header.sub_agent_id, FlowType::Sflow5, error.kind);
        }
        accounting.datagram(
            exporter,
            header.sub_agent_id,
            FlowType::Sflow5,
            time_received,
            None,
            flows,
            None,
        );
        Ok(())
    }

    /// Decodes one sample body; returns the number of flow records produced, or why the
    /// sample could not be parsed.
    #[allow(clippy::too_many_arguments)]
    fn decode_sample(
        &mut self,
        exporter: IpAddr,
        time_received: u32,
        header: &DatagramHeader,
        format: DataFormat,
        body: &[u8],
        accounting: &mut Accounting,
        out: &mut DecodeOutput,
    ) -> std::result::Result<u64, String> {
        if format.enterprise() != 0 || !(1..=4).contains(&format.format()) {
            return Ok(0);
        }
        if matches!(format.format(), 1 | 3) && self.fast_path() {
            let expanded = format.format() == 3;
            if let Some((head, record)) =
                fast::read_flow_sample(exporter, time_received, header.sub_agent_id, expanded, body)
            {
                self.count_flow_sample(exporter, time_received, header.sub_agent_id, &head, accounting);
                out.flows.push(record);
                return Ok(1);
            }
        }
        let sample = self.parse_sample(header, format, body)?;
        let (head, records) = match &sample {
            SampleData::FlowSample(s) => (
                FlowSampleHead {
                    source: SourceKey {
                        sub_agent_id: header.sub_agent_id,
                        source_type: u32::from(s.source_id.source_type()),
                        source_index: s.source_id.index(),
                    },
                    sequence_number: s.sequence_number,
                    sampling_rate: s.sampling_rate,
                    drops: s.drops,
                    in_if: compact_if_index(s.input),
                    out_if: compact_if_index(s.output),
                },
                &s.flow_records,
            ),
            SampleData::FlowSampleExpanded(s) => (
                FlowSampleHead {
                    source: SourceKey {
                        sub_agent_id: header.sub_agent_id,
                        source_type: s.source_id.source_id_type,
                        source_index: s.source_id.source_id_index,
                    },
                    sequence_number: s.sequence_number,
                    sampling_rate: s.sampling_rate,
                    drops: s.drops,
                    in_if: expanded_if_index(s.input),
                    out_if: expanded_if_index(s.output),
                },
                &s.flow_records,
            ),
            SampleData::CountersSample(s) => {
                push_counters(exporter, time_received, header, &s.counters, out);
                return Ok(0);
            }
            SampleData::CountersSampleExpanded(s) => {
                push_counters(exporter, time_received, header, &s.counters, out);
                return Ok(0);
            }
            _ => return Ok(0),
        };
        self.count_flow_sample(exporter, time_received, header.sub_agent_id, &head, accounting);
        out.flows.push(flow_record(
            exporter,
            time_received,
            header.sub_agent_id,
            &head,
            records,
        ));
        Ok(1)
    }

    /// Whether flow samples are tried with the [`fast`] reader first (always, outside tests).
    fn fast_path(&self) -> bool {
        #[cfg(test)]
        return !self.parser_only;
        #[cfg(not(test))]
        true
    }

    /// Loss accounting of one decoded flow sample: its sequence number and drops counter
    /// against those of its source ([`Self::track_source`]).
    fn count_flow_sample(
        &mut self,
        exporter: IpAddr,
        time_received: u32,
        sub_agent_id: u32,
        head: &FlowSampleHead,
        accounting: &mut Accounting,
    ) {
        let gap = self.track_source(
            exporter,
            head.source,
            time_received,
            head.sequence_number,
            head.drops,
        );
        if gap.lost > 0 {
            accounting.lost(exporter, sub_agent_id, FlowType::Sflow5, gap.lost);
        }
        if gap.missed_while_stopped > 0 {
            accounting.missed(gap.missed_while_stopped);
        }
    }

    /// Parses one sample body with `sflow-parser`, wrapped in a one-sample datagram.
    fn parse_sample(
        &mut self,
        header: &DatagramHeader,
        format: DataFormat,
        body: &[u8],
    ) -> std::result::Result<SampleData, String> {
        let body_len = u32::try_from(body.len()).map_err(|_| "sample longer than 4 GiB".to_owned())?;
        self.wrapped.clear();
        self.wrapped.reserve(WRAPPED_HEADER_LEN + 8 + body.len() + 3);
        for word in [
            5, // version
            0, // agent address type: unknown (no address bytes follow)
            header.sub_agent_id,
            header.sequence_number,
            header.uptime,
            1, // number of samples
            format.0,
            body_len,
        ] {
            self.wrapped.extend_from_slice(&word.to_be_bytes());
        }
        self.wrapped.extend_from_slice(body);
        // XDR pads opaque data to four bytes; the parser insists on reading the padding.
        self.wrapped
            .resize(self.wrapped.len() + (4 - body.len() % 4) % 4, 0);
        let datagram = sflow_parser::parse_datagram(&self.wrapped).map_err(|e| e.to_string())?;
        datagram
            .samples
            .into_iter()
            .next()
            .map(|record| record.sample_data)
            .ok_or_else(|| "sflow-parser returned no sample".to_owned())
    }

    /// Updates the sequence state of a flow sample source and returns the flow samples lost
    /// since the previous one: the sequence gap plus the growth of `drops`.
    fn track_source(
        &mut self,
        exporter: IpAddr,
        source: SourceKey,
        time_received: u32,
        sequence: u32,
        drops: u32,
    ) -> SampleGap {
        let sources = self.sources.entry(exporter).or_default();
        let fresh = SourceState {
            next_sequence: sequence.wrapping_add(1),
            drops,
            last_seen: time_received,
            resumed: false,
        };
        let tracked = sources.len();
        let Some(state) = (match sources.get_mut(&source) {
            Some(state) => Some(state),
            None => {
                if tracked < MAX_SOURCES_PER_EXPORTER {
                    sources.insert(source, fresh);
                }
                None
            }
        }) else {
            return SampleGap::default();
        };
        let mut lost = 0u64;
        let gap = sequence.wrapping_sub(state.next_sequence);
        let behind = state.next_sequence.wrapping_sub(sequence);
        if behind > 0 && behind <= MAX_REORDERING {
            // Reordered or duplicated: neither loss nor a reason to move the window back.
            return SampleGap::default();
        }
        // A jump back further than reordering explains, or forward beyond plausibility, is
        // an agent restart: the source starts again from here without loss.
        if gap > 0 && gap < MAX_PLAUSIBLE_GAP {
            lost += u64::from(gap);
        }
        let drops_growth = drops.wrapping_sub(state.drops);
        if drops_growth > 0 && drops_growth < MAX_PLAUSIBLE_GAP {
            lost += u64::from(drops_growth);
        }
        let resumed = state.resumed;
        *state = fresh;
        if resumed {
            SampleGap {
                lost: 0,
                missed_while_stopped: lost,
            }
        } else {
            SampleGap {
                lost,
                missed_while_stopped: 0,
            }
        }
    }

    /// The sequence state of every flow sample source, sorted.
    pub fn export_state(&self) -> Vec<SflowSourceSnapshot> {
        let mut sources: Vec<SflowSourceSnapshot> = self
            .sources
            .iter()
            .flat_map(|(exporter, sources)| {
                sources.iter().map(|(key, state)| SflowSourceSnapshot {
                    exporter: *exporter,
                    sub_agent_id: key.sub_agent_id,
                    source_type: key.source_type,
                    source_index: key.source_index,
                    next_sequence: state.next_sequence,
                    drops: state.drops,
                    last_seen: state.last_seen,
                })
            })
            .collect();
        sources.sort_by_key(|s| (s.exporter, s.sub_agent_id, s.source_type, s.source_index));
        sources
    }

    /// Adopts restored source state not older than the restore limit at `now`, where it is
    /// newer than what is known (at most [`MAX_SOURCES_PER_EXPORTER`] per exporter). Returns
    /// how many sources were adopted.
    pub fn import_state(&mut self, restored: &[SflowSourceSnapshot], now: u32) -> usize {
        let mut adopted = 0;
        for snapshot in restored.iter().filter(|s| is_fresh(s.last_seen, now)) {
            let sources = self.sources.entry(snapshot.exporter).or_default();
            let key = SourceKey {
                sub_agent_id: snapshot.sub_agent_id,
                source_type: snapshot.source_type,
                source_index: snapshot.source_index,
            };
            let state = SourceState {
                next_sequence: snapshot.next_sequence,
                drops: snapshot.drops,
                last_seen: snapshot.last_seen,
                resumed: true,
            };
            let tracked = sources.len();
            match sources.get_mut(&key) {
                Some(known) if known.last_seen >= snapshot.last_seen => continue,
                Some(known) => *known = state,
                None if tracked >= MAX_SOURCES_PER_EXPORTER => continue,
                None => {
                    sources.insert(key, state);
                }
            }
            adopted += 1;
        }
        adopted
    }
}

/// A minimal XDR reader: big-endian 32-bit words and opaque data, with the current offset.
#[derive(Debug)]
struct Xdr<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Xdr<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.offset.checked_add(len)?;
        let taken = self.bytes.get(self.offset..end)?;
        self.offset = end;
        Some(taken)
    }

    fn u32(&mut self) -> Option<u32> {
        let word = self.take(4)?;
        Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
    }

    /// Variable-length opaque data: a length, the bytes and their padding to four bytes, all
    /// of which must be there (as `sflow-parser` insists inside a sample).
    fn opaque(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        let data = self.take(len)?;
        self.take((4 - len % 4) % 4)?;
        Some(data)
    }
}

type HeaderError = (DecodeErrorKind, usize, String);

fn read_datagram_header(reader: &mut Xdr<'_>) -> std::result::Result<DatagramHeader, HeaderError> {
    fn truncated(reader: &Xdr<'_>, field: &str) -> HeaderError {
        let detail = format!("datagram of {} bytes ends inside its {field}", reader.bytes.len());
        (DecodeErrorKind::Truncated, reader.offset, detail)
    }
    fn word(reader: &mut Xdr<'_>, field: &str) -> std::result::Result<u32, HeaderError> {
        reader.u32().ok_or_else(|| truncated(reader, field))
    }
    fn fixed<const N: usize>(reader: &mut Xdr<'_>) -> std::result::Result<[u8; N], HeaderError> {
        let bytes = reader.take(N).and_then(|b| <[u8; N]>::try_from(b).ok());
        bytes.ok_or_else(|| truncated(reader, "agent address"))
    }
    let version = word(reader, "version")?;
    if version != 5 {
        let detail = format!("version {version} is not sFlow 5");
        return Err((DecodeErrorKind::UnknownVersion, 0, detail));
    }
    let address_offset = reader.offset;
    let agent_address = match word(reader, "agent address type")? {
        0 => None,
        1 => Some(IpAddr::V4(Ipv4Addr::from(fixed::<4>(reader)?))),
        2 => Some(IpAddr::V6(Ipv6Addr::from(fixed::<16>(reader)?))),
        other => {
            let detail = format!("agent address type {other} is not 0 (unknown), 1 (IPv4) or 2 (IPv6)");
            return Err((DecodeErrorKind::Malformed, address_offset, detail));
        }
    };
    Ok(DatagramHeader {
        agent_address,
        sub_agent_id: word(reader, "sub_agent_id")?,
        sequence_number: word(reader, "sequence number")?,
        uptime: word(reader, "uptime")?,
        sample_count: word(reader, "sample count")?,
    })
}

/// Reads a sample's `data_format` and its opaque body (and the body's XDR padding, when
/// present: a last sample without it is accepted).
fn read_sample_envelope<'a>(reader: &mut Xdr<'a>) -> Option<(DataFormat, &'a [u8])> {
    let format = DataFormat(reader.u32()?);
    let len = usize::try_from(reader.u32()?).ok()?;
    let body = reader.take(len)?;
    let padding = (4 - len % 4) % 4;
    let _ = reader.take(padding);
    Some((format, body))
}

/// The ifIndex named by a compact interface field, 0 when it names none (see module docs).
fn compact_if_index(interface: Interface) -> u32 {
    if interface.is_single() && interface.value() != LOCAL_INTERFACE_COMPACT {
        interface.value()
    } else {
        0
    }
}

/// The ifIndex named by an expanded interface field, 0 when it names none.
fn expanded_if_index(interface: InterfaceExpanded) -> u32 {
    if interface.format == 0 && interface.value != LOCAL_INTERFACE_EXPANDED {
        interface.value
    } else {
        0
    }
}

fn address(address: &Address) -> Option<IpAddr> {
    match address {
        Address::Unknown => None,
        Address::IPv4(v4) => Some(IpAddr::V4(*v4)),
        Address::IPv6(v6) => Some(IpAddr::V6(*v6)),
    }
}

/// A VLAN id from an `extended_switch` field: 0 unless it is a valid 12-bit id.
fn vlan_id(value: u32) -> u16 {
    u16::try_from(value)
        .ok()
        .filter(|vlan| *vlan <= 4095)
        .unwrap_or(0)
}

/// Builds the flow record of one flow sample parsed by `sflow-parser` (see the module docs for
/// the mapping, which [`FlowRecordBuilder`] applies).
fn flow_record(
    exporter: IpAddr,
    time_received: u32,
    sub_agent_id: u32,
    head: &FlowSampleHead,
    records: &[sflow_parser::models::FlowRecord],
) -> FlowRecord {
    let mut builder = FlowRecordBuilder::new(exporter, time_received, sub_agent_id, head);
    for flow_record in records {
        match &flow_record.flow_data {
            FlowData::SampledHeader(sampled) => {
                builder.sampled_header(sampled.protocol, sampled.frame_length, &sampled.header)
            }
            FlowData::SampledIpv4(ipv4) => builder.sampled_ipv4(ipv4),
            FlowData::SampledIpv6(ipv6) => builder.sampled_ipv6(ipv6),
            FlowData::ExtendedSwitch(switch) => builder.extended_switch(switch.src_vlan, switch.dst_vlan),
            FlowData::ExtendedRouter(router) => builder.extended_router(
                address(&router.next_hop),
                router.src_mask_len,
                router.dst_mask_len,
            ),
            FlowData::ExtendedGateway(gateway) => builder.extended_gateway(
                address(&gateway.next_hop),
                gateway.as_number,
                gateway.src_as,
                gateway
                    .dst_as_path
                    .iter()
                    .rev()
                    .find_map(|segment| segment.path.last().copied()),
            ),
            FlowData::ExtendedTcpInfo(tcp_info) => builder.extended_tcp_info(tcp_info.rtt),
            _ => {}
        }
    }
    builder.finish()
}

/// The mapping of a flow sample's records to its [`FlowRecord`] (module docs, "Mapping of a
/// flow sample"), fed record by record in record order. One mapping serves both readers: the
/// [`fast`] one, which reads the datagram bytes, and [`flow_record`], which walks what
/// `sflow-parser` built; so the two can only differ in what they read, which is what the
/// equivalence test compares.
#[derive(Debug)]
struct FlowRecordBuilder {
    record: FlowRecord,
    from_header: Option<header::NetworkFields>,
    from_record: Option<header::NetworkFields>,
    header_vlan: u16,
    switch_vlan: u16,
    router_next_hop: Option<IpAddr>,
    gateway_next_hop: Option<IpAddr>,
}

impl FlowRecordBuilder {
    fn new(exporter: IpAddr, time_received: u32, sub_agent_id: u32, head: &FlowSampleHead) -> Self {
        let mut record = FlowRecord::new(exporter, time_received, FlowType::Sflow5);
        record.observation_domain = sub_agent_id;
        if head.sampling_rate > 0 {
            record.sampling_rate = u64::from(head.sampling_rate);
            record.sampling_source = SamplingSource::Sflow;
        }
        record.packets = 1;
        record.in_if = head.in_if;
        record.out_if = head.out_if;
        Self {
            record,
            from_header: None,
            from_record: None,
            header_vlan: 0,
            switch_vlan: 0,
            router_next_hop: None,
            gateway_next_hop: None,
        }
    }

    /// `sampled_header` (0:1): `header` is the sampled frame's first bytes, without padding.
    fn sampled_header(&mut self, protocol: HeaderProtocol, frame_length: u32, header: &[u8]) {
        self.record.bytes = u64::from(frame_length);
        let summary = header::summarise(protocol, header);
        if summary.vlan != 0 {
            self.header_vlan = summary.vlan;
        }
        if summary.network.is_some() {
            self.from_header = summary.network;
        }
    }

    /// `sampled_ipv4` (0:3).
    fn sampled_ipv4(&mut self, ipv4: &SampledIpv4) {
        let addresses = (IpAddr::V4(ipv4.src_ip), IpAddr::V4(ipv4.dst_ip));
        let words = [
            ipv4.protocol,
            ipv4.tos,
            ipv4.src_port,
            ipv4.dst_port,
            ipv4.tcp_flags,
        ];
        self.sampled_ip(ipv4.length, addresses, header::ETYPE_IPV4, words);
    }

    /// `sampled_ipv6` (0:4).
    fn sampled_ipv6(&mut self, ipv6: &SampledIpv6) {
        let addresses = (IpAddr::V6(ipv6.src_ip), IpAddr::V6(ipv6.dst_ip));
        let words = [
            ipv6.protocol,
            ipv6.priority,
            ipv6.src_port,
            ipv6.dst_port,
            ipv6.tcp_flags,
        ];
        self.sampled_ip(ipv6.length, addresses, header::ETYPE_IPV6, words);
    }

    /// What `sampled_ipv4` and `sampled_ipv6` share: the packet length, and the network fields
    /// from the record's 32-bit words (protocol, ToS or priority, ports, TCP flags), each 0 when
    /// it does not fit its column.
    fn sampled_ip(
        &mut self,
        length: u32,
        (src_addr, dst_addr): (IpAddr, IpAddr),
        etype: u16,
        words: [u32; 5],
    ) {
        let [proto, tos, src_port, dst_port, tcp_flags] = words;
        self.record.bytes = u64::from(length);
        self.from_record = Some(header::NetworkFields {
            src_addr,
            dst_addr,
            etype,
            proto: u8::try_from(proto).unwrap_or(0),
            tos: u8::try_from(tos).unwrap_or(0),
            src_port: u16::try_from(src_port).unwrap_or(0),
            dst_port: u16::try_from(dst_port).unwrap_or(0),
            tcp_flags: u8::try_from(tcp_flags).unwrap_or(0),
        });
    }

    /// `extended_switch` (0:1001).
    fn extended_switch(&mut self, src_vlan: u32, dst_vlan: u32) {
        self.switch_vlan = match vlan_id(src_vlan) {
            0 => vlan_id(dst_vlan),
            vlan => vlan,
        };
    }

    /// `extended_router` (0:1002); `next_hop` is `None` for address type 0 (unknown).
    fn extended_router(&mut self, next_hop: Option<IpAddr>, src_mask_len: u32, dst_mask_len: u32) {
        self.router_next_hop = next_hop;
        self.record.src_mask = u8::try_from(src_mask_len).unwrap_or(0);
        self.record.dst_mask = u8::try_from(dst_mask_len).unwrap_or(0);
    }

    /// `extended_gateway` (0:1003): `router_as` is the record's `as`, `last_path_as` the last
    /// AS of the last non-empty segment of `dst_as_path` (`None` when every segment is empty).
    fn extended_gateway(
        &mut self,
        next_hop: Option<IpAddr>,
        router_as: u32,
        src_as: u32,
        last_path_as: Option<u32>,
    ) {
        self.gateway_next_hop = next_hop;
        self.record.src_as = src_as;
        self.record.dst_as = last_path_as.unwrap_or(router_as);
    }

    /// `extended_tcp_info` (0:2209, Host sFlow): `rtt` is the smoothed round trip to the peer in
    /// microseconds, 0 when the kernel has no measurement yet.
    fn extended_tcp_info(&mut self, rtt_us: u32) {
        if rtt_us > 0 {
            self.record.rtt_client_us = Some(rtt_us);
            self.record.rtt_source = RttSource::SflowTcpInfo;
        }
    }

    fn finish(self) -> FlowRecord {
        let mut record = self.record;
        if let Some(network) = self.from_header.or(self.from_record) {
            record.src_addr = to_v6(network.src_addr);
            record.dst_addr = to_v6(network.dst_addr);
            record.etype = network.etype;
            record.proto = network.proto;
            record.tos = network.tos;
            record.src_port = network.src_port;
            record.dst_port = network.dst_port;
            record.tcp_flags = network.tcp_flags;
        }
        record.vlan = if self.header_vlan != 0 {
            self.header_vlan
        } else {
            self.switch_vlan
        };
        if let Some(next_hop) = self.router_next_hop.or(self.gateway_next_hop) {
            record.next_hop = to_v6(next_hop);
        }
        record
    }
}

/// Appends one interface counter record per generic interface counter record (0:1).
fn push_counters(
    exporter: IpAddr,
    time_received: u32,
    header: &DatagramHeader,
    counters: &[CounterRecord],
    out: &mut DecodeOutput,
) {
    for counter in counters {
        if let CounterData::GenericInterface(generic) = &counter.counter_data {
            out.counters
                .push(interface_counters(exporter, time_received, header, generic));
        }
    }
}

fn interface_counters(
    exporter: IpAddr,
    time_received: u32,
    header: &DatagramHeader,
    generic: &GenericInterfaceCounters,
) -> InterfaceCounterRecord {
    InterfaceCounterRecord {
        time_received,
        exporter_address: to_v6(exporter),
        agent_address: header.agent_address.map_or(Ipv6Addr::UNSPECIFIED, to_v6),
        sub_agent_id: header.sub_agent_id,
        sequence_number: header.sequence_number,
        if_index: generic.if_index,
        if_type: generic.if_type,
        if_speed: generic.if_speed,
        if_direction: generic.if_direction,
        if_status: generic.if_status,
        in_octets: generic.if_in_octets,
        in_ucast_pkts: generic.if_in_ucast_pkts,
        in_multicast_pkts: generic.if_in_multicast_pkts,
        in_broadcast_pkts: generic.if_in_broadcast_pkts,
        in_discards: generic.if_in_discards,
        in_errors: generic.if_in_errors,
        in_unknown_protos: generic.if_in_unknown_protos,
        out_octets: generic.if_out_octets,
        out_ucast_pkts: generic.if_out_ucast_pkts,
        out_multicast_pkts: generic.if_out_multicast_pkts,
        out_broadcast_pkts: generic.if_out_broadcast_pkts,
        out_discards: generic.if_out_discards,
        out_errors: generic.if_out_errors,
        promiscuous_mode: generic.if_promiscuous_mode,
    }
}
