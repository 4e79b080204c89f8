//! Decode stage, NetFlow family: NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011)
//! datagrams in, [`FlowRecord`]s out. Pure: the only clock is the datagram's `time_received`.
//!
//! State, kept per exporter address *and* observation domain (v9 source id, IPFIX observation
//! domain id), so that equal template ids from different exporters or domains never mix:
//! - templates and options templates (redefinition replaces; expiry after
//!   `template_ttl_seconds` without a refresh; at most `max_templates_per_exporter`, the least
//!   recently refreshed is dropped beyond that);
//! - sampling rates learned from options data, per sampler/selector id and a domain default;
//! - data sets that arrived before their template ("held"), at most
//!   `max_held_sets_per_exporter` per exporter and `held_set_ttl_seconds` old; the datagram
//!   that brings the template also emits the held records.
//!
//! Division of labour with `netflow_parser` (the chosen library):
//! - NetFlow v5 datagrams and v9/IPFIX template and options template sets are parsed by
//!   `netflow_parser` (its template grammar, enterprise bit and validation rules).
//! - Set framing, template state, held data and data records are handled here, because the
//!   library's own versions do not fit this decoder's contract:
//!   * its template TTL and pending-flow TTL read the wall clock (`Instant`), while decoding
//!     here must be pure and aged by `time_received` (replayable captures, property tests);
//!   * one malformed set fails its whole message, where one bad set must only cost that set;
//!   * its pending-flow replay decodes held data with the packet of the template, losing the
//!     held datagram's own header (needed for sysUpTime-relative times);
//!   * it returns a `Vec<(field, FieldValue)>` per record (plus strings for some elements),
//!     which is too much allocation for millions of records per second; data records are read
//!     here straight from the template's field layout into a [`FlowRecord`].
//!
//! Sampling rate of a record, first match wins: a rate inside the record (`Record`); the rate
//! of the sampler/selector id the record names, else the exporter+domain default, both from
//! options data (`Options`); v5 header interval (`Header`); otherwise 1 (`Unknown`).
//!
//! Across a restart of the collector, templates and sampling rates (with their times) leave
//! through [`NetflowDecoder::export_state`] and come back through
//! [`NetflowDecoder::import_state`] (rules in `decode::snapshot`); held sets are not kept.
//!
//! Nothing is flushed at shutdown; held sets still waiting are reported via
//! [`NetflowDecoder::held_sets`].

mod compiled;
mod record;
#[cfg(test)]
pub(crate) mod tests;

use crate::FastMap;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use netflow_parser::variable_versions::ipfix::FlowSetBody as IpfixSetBody;
use netflow_parser::variable_versions::v9::FlowSetBody as V9SetBody;
use netflow_parser::{NetflowPacket, NetflowParser};

use super::accounting::{Accounting, SequenceKind};
use super::snapshot::{
    is_fresh, FieldSnapshot, SamplingRateSnapshot, ScopeSnapshot, SnapshotProtocol, TemplateSnapshot,
};
use super::{DecodeError, DecodeErrorKind, DecodeOutput, DecoderConfig, LearnedState, Result};
use crate::normalise::{FlowRecord, FlowType, SamplingSource};
use compiled::CompiledRecord;
use record::{FlowBuilder, RecordSampling, SamplingFields};

/// NetFlow v5 header and record sizes (fixed by the format).
const V5_HEADER_LEN: usize = 24;
const V5_RECORD_LEN: usize = 48;
const V9_HEADER_LEN: usize = 20;
const IPFIX_HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;
/// IPFIX field length meaning "variable length, prefixed in the record" (RFC 7011 §7).
const VARIABLE_LENGTH: u16 = 0xffff;
/// Marks a NetFlow v9 options *scope* field: its type (1 system, 2 interface, ...) is not an
/// information element number and must not be read as one.
const V9_SCOPE_ENTERPRISE: u32 = u32::MAX;
/// Sampler id reported by [`NetflowDecoder::learned`] for an exporter+domain default rate
/// (options data that named no sampler).
pub const DEFAULT_SAMPLER_ID: u64 = 0;
/// How often (in `time_received` seconds) expired templates of all exporters are swept.
const SWEEP_INTERVAL_SECONDS: u32 = 60;

/// One field of a template: information element, enterprise number (0 for IANA) and length
/// ([`VARIABLE_LENGTH`] for an IPFIX variable-length field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldSpec {
    pub id: u16,
    pub enterprise: u32,
    pub length: u16,
}

/// A template or options template as this decoder keeps it.
#[derive(Debug, Clone)]
struct Template {
    fields: Vec<FieldSpec>,
    /// Options templates carry configuration (sampling), not flows.
    is_options: bool,
    /// Smallest possible record: fixed lengths plus one prefix byte per variable field.
    min_record_len: usize,
    /// `time_received` of the last definition or refresh.
    refreshed: u32,
    /// The data records' layout compiled into fixed reads, where it can be (`compiled`).
    compiled: Option<CompiledRecord>,
}

impl Template {
    fn new(fields: Vec<FieldSpec>, is_options: bool, refreshed: u32) -> Self {
        let min_record_len = fields
            .iter()
            .map(|f| {
                if f.length == VARIABLE_LENGTH {
                    1
                } else {
                    usize::from(f.length)
                }
            })
            .sum();
        let compiled = if is_options {
            None
        } else {
            CompiledRecord::compile(&fields)
        };
        Self {
            fields,
            is_options,
            min_record_len,
            refreshed,
            compiled,
        }
    }
}

/// Template state is scoped by exporter, protocol and observation domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ScopeKey {
    exporter: IpAddr,
    flow_type: FlowTypeKey,
    domain: u32,
}

/// `FlowType` is not `Ord`; the scope map only needs the two templated protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum FlowTypeKey {
    Netflow9,
    Ipfix,
}

impl FlowTypeKey {
    fn flow_type(self) -> FlowType {
        match self {
            Self::Netflow9 => FlowType::Netflow9,
            Self::Ipfix => FlowType::Ipfix,
        }
    }

    fn protocol(self) -> SnapshotProtocol {
        match self {
            Self::Netflow9 => SnapshotProtocol::Netflow9,
            Self::Ipfix => SnapshotProtocol::Ipfix,
        }
    }

    fn from_protocol(protocol: SnapshotProtocol) -> Option<Self> {
        match protocol {
            SnapshotProtocol::Netflow9 => Some(Self::Netflow9),
            SnapshotProtocol::Ipfix => Some(Self::Ipfix),
            SnapshotProtocol::Netflow5 | SnapshotProtocol::Sflow5 => None,
        }
    }
}

/// A sampling rate and the `time_received` of the options data that last announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LearnedRate {
    rate: u64,
    learned: u32,
}

/// Sampling rates learned from options data for one exporter and domain.
#[derive(Debug, Default, Clone)]
struct SamplerTable {
    /// Rate of options data that named no sampler (system or interface scope).
    default: Option<LearnedRate>,
    /// Rate per sampler id (48) or selector id (302).
    by_sampler: BTreeMap<u64, LearnedRate>,
}

impl SamplerTable {
    fn resolve(&self, sampler_id: Option<u64>) -> Option<u64> {
        sampler_id
            .and_then(|id| self.by_sampler.get(&id))
            .or(self.default.as_ref())
            .map(|learned| learned.rate)
    }

    /// The rate of `sampler` (`None`: the default), to be set.
    fn slot(&mut self, sampler: Option<u64>, rate: LearnedRate) -> &mut LearnedRate {
        match sampler {
            Some(sampler) => self.by_sampler.entry(sampler).or_insert(rate),
            None => self.default.get_or_insert(rate),
        }
    }

    /// Learns `rate` from options data: the latest options data wins, whatever the clock says.
    fn learn(&mut self, sampler: Option<u64>, rate: LearnedRate) {
        *self.slot(sampler, rate) = rate;
    }

    /// Adopts a restored `rate` unless the one known was learned later.
    fn restore(&mut self, sampler: Option<u64>, rate: LearnedRate) {
        let slot = self.slot(sampler, rate);
        if slot.learned <= rate.learned {
            *slot = rate;
        }
    }
}

#[derive(Debug, Default)]
struct ScopeState {
    templates: FastMap<u16, Template>,
    sampling: SamplerTable,
    /// `time_received` of the scope's last datagram.
    last_active: u32,
}

/// One data set to decode: where it came from, and its records.
#[derive(Debug, Clone, Copy)]
struct DataSet<'a> {
    scope: ScopeKey,
    template_id: u16,
    header: MessageHeader,
    time_received: u32,
    /// The set's records (after the set header).
    body: &'a [u8],
    /// Offset of the set in its datagram, for error reports.
    offset: usize,
}

/// The header fields a data record's times are relative to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageHeader {
    /// v9 `unix_secs`, IPFIX `export_time`.
    pub export_secs: u32,
    /// v9 `sys_up_time` (ms); IPFIX has none.
    pub sys_up_time_ms: Option<u32>,
}

/// A data set waiting for its template.
#[derive(Debug)]
struct HeldSet {
    scope: ScopeKey,
    template_id: u16,
    header: MessageHeader,
    time_received: u32,
    /// Offset of the set in its datagram, for errors.
    offset: usize,
    /// The set's records (without the set header).
    body: Vec<u8>,
}

/// NetFlow v5/v9/IPFIX decoder state of one receive worker.
#[derive(Debug)]
pub struct NetflowDecoder {
    config: DecoderConfig,
    scopes: FastMap<ScopeKey, ScopeState>,
    held: FastMap<IpAddr, VecDeque<HeldSet>>,
    /// `netflow_parser` used statelessly: v5 datagrams and template sets (its template cache
    /// is cleared after every template set, state lives in `scopes`).
    library: NetflowParser,
    /// Buffer for the one-set messages handed to `library`.
    scratch: Vec<u8>,
    last_sweep: u32,
}

/// Builds a decode error (no accounting; see [`NetflowDecoder::fail`]).
fn error(kind: DecodeErrorKind, exporter: IpAddr, offset: usize, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        kind,
        exporter,
        offset,
        detail: detail.into(),
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Walks one record of `fields` at the start of `input`, calling `visit` with each field's
/// value; returns the record's length, or `None` if `input` ends inside the record.
///
/// Variable-length fields (RFC 7011 §7): one length byte, or 255 followed by a two-byte length.
fn walk_record(
    fields: &[FieldSpec],
    input: &[u8],
    mut visit: impl FnMut(&FieldSpec, &[u8]),
) -> Option<usize> {
    let mut at = 0usize;
    for field in fields {
        let length = if field.length == VARIABLE_LENGTH {
            let first = *input.get(at)?;
            at += 1;
            if first == 255 {
                let long = read_u16(input, at)?;
                at += 2;
                usize::from(long)
            } else {
                usize::from(first)
            }
        } else {
            usize::from(field.length)
        };
        let value = input.get(at..at.checked_add(length)?)?;
        visit(field, value);
        at += length;
    }
    Some(at)
}

/// Reads the template records of a template or options template set (with its 4-byte set
/// header) straight from the bytes: (template id, fields, is options template). Stops at the
/// first record that does not fit (the rest is padding or a cut record).
///
/// Only a fallback for templates `netflow_parser` refuses; see `read_templates`.
fn raw_templates(protocol: FlowTypeKey, set: &[u8]) -> Vec<(u16, Vec<FieldSpec>, bool)> {
    let Some(set_id) = read_u16(set, 0) else {
        return Vec::new();
    };
    let is_options = matches!(
        (protocol, set_id),
        (FlowTypeKey::Netflow9, 1) | (FlowTypeKey::Ipfix, 3)
    );
    let mut templates = Vec::new();
    let mut at = SET_HEADER_LEN;
    while let Some(template) = raw_template(protocol, is_options, set, &mut at) {
        templates.push(template);
    }
    templates
}

/// One template record at `*at`, advancing `*at` past it.
fn raw_template(
    protocol: FlowTypeKey,
    is_options: bool,
    set: &[u8],
    at: &mut usize,
) -> Option<(u16, Vec<FieldSpec>, bool)> {
    let template_id = read_u16(set, *at)?;
    // (scope fields, all fields) per format: v9 options templates give byte lengths.
    let (scope_count, field_count, header_len) = match (protocol, is_options) {
        (FlowTypeKey::Netflow9, true) => {
            let scope = usize::from(read_u16(set, *at + 2)? / 4);
            (scope, scope + usize::from(read_u16(set, *at + 4)? / 4), 6)
        }
        (FlowTypeKey::Ipfix, true) => (
            usize::from(read_u16(set, *at + 4)?),
            usize::from(read_u16(set, *at + 2)?),
            6,
        ),
        (_, false) => (0, usize::from(read_u16(set, *at + 2)?), 4),
    };
    if field_count == 0 {
        return None;
    }
    let mut cursor = *at + header_len;
    let mut fields = Vec::with_capacity(field_count.min(64));
    for index in 0..field_count {
        let raw_id = read_u16(set, cursor)?;
        let length = read_u16(set, cursor + 2)?;
        cursor += 4;
        let field = match protocol {
            FlowTypeKey::Netflow9 if index < scope_count => FieldSpec {
                id: raw_id,
                enterprise: V9_SCOPE_ENTERPRISE,
                length,
            },
            FlowTypeKey::Netflow9 => FieldSpec {
                id: raw_id,
                enterprise: 0,
                length,
            },
            FlowTypeKey::Ipfix if raw_id & 0x8000 != 0 => {
                let enterprise = read_u32(set, cursor)?;
                cursor += 4;
                FieldSpec {
                    id: raw_id & 0x7fff,
                    enterprise,
                    length,
                }
            }
            FlowTypeKey::Ipfix => FieldSpec {
                id: raw_id,
                enterprise: 0,
                length,
            },
        };
        fields.push(field);
    }
    *at = cursor;
    Some((template_id, fields, is_options))
}

impl NetflowDecoder {
    pub fn new(config: &DecoderConfig) -> Self {
        Self {
            config: config.clone(),
            scopes: FastMap::default(),
            held: FastMap::default(),
            library: NetflowParser::default(),
            scratch: Vec::with_capacity(1500),
            last_sweep: 0,
        }
    }

    /// Decodes one NetFlow v5, v9 or IPFIX datagram (the caller checked the version field).
    pub fn decode(
        &mut self,
        exporter: IpAddr,
        time_received: u32,
        payload: &[u8],
        accounting: &mut Accounting,
        out: &mut DecodeOutput,
    ) -> Result<()> {
        match read_u16(payload, 0) {
            Some(5) => self.decode_v5(exporter, time_received, payload, accounting, out),
            Some(9) => self.decode_templated(
                FlowTypeKey::Netflow9,
                exporter,
                time_received,
                payload,
                accounting,
                out,
            ),
            Some(10) => self.decode_templated(
                FlowTypeKey::Ipfix,
                exporter,
                time_received,
                payload,
                accounting,
                out,
            ),
            other => {
                let error = error(
                    DecodeErrorKind::UnknownVersion,
                    exporter,
                    0,
                    format!("version {other:?} is not NetFlow 5, 9 or IPFIX"),
                );
                accounting.error(exporter, 0, FlowType::Unknown, error.kind);
                Err(error)
            }
        }
    }

    /// Data sets currently held for a template that has not arrived.
    pub fn held_sets(&self) -> usize {
        self.held.values().map(VecDeque::len).sum()
    }

    /// Templates and sampling rates known, sorted.
    pub fn learned(&self) -> LearnedState {
        let mut learned = LearnedState::default();
        for (scope, state) in &self.scopes {
            for (id, template) in &state.templates {
                learned.templates.push((
                    scope.exporter,
                    scope.domain,
                    scope.flow_type.flow_type(),
                    *id,
                    template.fields.len(),
                ));
            }
            if let Some(default) = state.sampling.default {
                learned
                    .sampling_rates
                    .push((scope.exporter, scope.domain, DEFAULT_SAMPLER_ID, default.rate));
            }
            for (sampler, learned_rate) in &state.sampling.by_sampler {
                learned
                    .sampling_rates
                    .push((scope.exporter, scope.domain, *sampler, learned_rate.rate));
            }
        }
        learned.templates.sort_by_key(|t| (t.0, t.1, t.2 as i8, t.3));
        learned.sampling_rates.sort();
        learned
    }

    /// Templates and sampling rates of every scope, with their times, sorted.
    pub fn export_state(&self) -> Vec<ScopeSnapshot> {
        let mut scopes: Vec<(ScopeKey, ScopeSnapshot)> = self
            .scopes
            .iter()
            .map(|(key, state)| {
                let mut templates: Vec<TemplateSnapshot> = state
                    .templates
                    .iter()
                    .map(|(id, template)| TemplateSnapshot {
                        template_id: *id,
                        options: template.is_options,
                        refreshed: template.refreshed,
                        fields: template
                            .fields
                            .iter()
                            .map(|f| FieldSnapshot(f.id, f.enterprise, f.length))
                            .collect(),
                    })
                    .collect();
                templates.sort_by_key(|t| t.template_id);
                let rate = |sampler_id, learned: &LearnedRate| SamplingRateSnapshot {
                    sampler_id,
                    rate: learned.rate,
                    learned: learned.learned,
                };
                let sampling_rates = state
                    .sampling
                    .default
                    .iter()
                    .map(|learned| rate(None, learned))
                    .chain(
                        state
                            .sampling
                            .by_sampler
                            .iter()
                            .map(|(sampler, learned)| rate(Some(*sampler), learned)),
                    )
                    .collect();
                let snapshot = ScopeSnapshot {
                    exporter: key.exporter,
                    protocol: key.flow_type.protocol(),
                    observation_domain: key.domain,
                    last_active: state.last_active,
                    templates,
                    sampling_rates,
                };
                (*key, snapshot)
            })
            .collect();
        scopes.sort_by_key(|(key, _)| *key);
        scopes.into_iter().map(|(_, snapshot)| snapshot).collect()
    }

    /// Adopts restored templates and sampling rates where they are newer than what is known:
    /// scopes not active within the restore limit at `now` and templates past
    /// `template_ttl_seconds` are skipped (see `decode::snapshot`). Returns the number of
    /// templates adopted.
    pub fn import_state(&mut self, scopes: &[ScopeSnapshot], now: u32) -> usize {
        let ttl = self.config.template_ttl_seconds;
        let limit = self.config.max_templates_per_exporter.max(1);
        let mut adopted = 0;
        for restored in scopes.iter().filter(|s| is_fresh(s.last_active, now)) {
            let Some(flow_type) = FlowTypeKey::from_protocol(restored.protocol) else {
                continue;
            };
            let key = ScopeKey {
                exporter: restored.exporter,
                flow_type,
                domain: restored.observation_domain,
            };
            let state = self.scopes.entry(key).or_default();
            state.last_active = state.last_active.max(restored.last_active);
            for template in &restored.templates {
                let expired = ttl > 0 && u64::from(now) > u64::from(template.refreshed) + ttl;
                let newer = state
                    .templates
                    .get(&template.template_id)
                    .is_none_or(|known| known.refreshed < template.refreshed);
                // Ids below 256 are set ids, never templates (a hand-edited file could say so).
                if expired || !newer || template.template_id < 256 || template.fields.is_empty() {
                    continue;
                }
                let fields = template
                    .fields
                    .iter()
                    .map(|f| FieldSpec {
                        id: f.0,
                        enterprise: f.1,
                        length: f.2,
                    })
                    .collect();
                state.templates.insert(
                    template.template_id,
                    Template::new(fields, template.options, template.refreshed),
                );
                adopted += 1;
            }
            // The same bound as `install`: the least recently refreshed go first.
            while state.templates.len() > limit {
                let Some(oldest) = state
                    .templates
                    .iter()
                    .min_by_key(|(id, t)| (t.refreshed, **id))
                    .map(|(id, _)| *id)
                else {
                    break;
                };
                state.templates.remove(&oldest);
            }
            for rate in &restored.sampling_rates {
                state.sampling.restore(
                    rate.sampler_id,
                    LearnedRate {
                        rate: rate.rate,
                        learned: rate.learned,
                    },
                );
            }
        }
        adopted
    }

    /// NetFlow v5: fixed 24-byte header and `count` 48-byte records, parsed by `netflow_parser`.
    fn decode_v5(
        &mut self,
        exporter: IpAddr,
        time_received: u32,
        payload: &[u8],
        accounting: &mut Accounting,
        out: &mut DecodeOutput,
    ) -> Result<()> {
        let fail = |accounting: &mut Accounting, kind, offset, detail: String| {
            accounting.error(exporter, 0, FlowType::Netflow5, kind);
            Err(error(kind, exporter, offset, detail))
        };
        let Some(count) = read_u16(payload, 2).filter(|_| payload.len() >= V5_HEADER_LEN) else {
            return fail(
                accounting,
                DecodeErrorKind::Truncated,
                0,
                format!("v5 header needs 24 bytes, got {}", payload.len()),
            );
        };
        let needed = V5_HEADER_LEN + usize::from(count) * V5_RECORD_LEN;
        if payload.len() < needed {
            return fail(
                accounting,
                DecodeErrorKind::Truncated,
                payload.len(),
                format!(
                    "v5 header announces {count} records ({needed} bytes), datagram has {}",
                    payload.len()
                ),
            );
        }
        // Exactly one message: trailing bytes would be read as another packet by the library.
        let parsed = self.library.parse_bytes(&payload[..needed]);
        let v5 = match (parsed.packets.into_iter().next(), parsed.error) {
            (Some(NetflowPacket::V5(v5)), None) => v5,
            (_, error) => {
                return fail(
                    accounting,
                    DecodeErrorKind::Malformed,
                    0,
                    format!("v5 datagram rejected: {error:?}"),
                );
            }
        };
        let header = v5.header;
        // The top two bits are the sampling mode, the other 14 the interval.
        let interval = u64::from(header.sampling_interval & 0x3fff);
        let (rate, source) = if interval == 0 {
            (1, SamplingSource::Unknown)
        } else {
            (interval, SamplingSource::Header)
        };
        let export_ms = u64::from(header.unix_secs) * 1000 + u64::from(header.unix_nsecs / 1_000_000);
        for flow in &v5.flowsets {
            let mut record = FlowRecord::new(exporter, time_received, FlowType::Netflow5);
            record.time_flow_start = record::uptime_to_unix(export_ms, header.sys_up_time, flow.first);
            record.time_flow_end = record::uptime_to_unix(export_ms, header.sys_up_time, flow.last);
            record.sampling_rate = rate;
            record.sampling_source = source;
            record.src_addr = flow.src_addr.to_ipv6_mapped();
            record.dst_addr = flow.dst_addr.to_ipv6_mapped();
            record.next_hop = flow.next_hop.to_ipv6_mapped();
            record.in_if = u32::from(flow.input);
            record.out_if = u32::from(flow.output);
            record.packets = u64::from(flow.d_pkts);
            record.bytes = u64::from(flow.d_octets);
            record.src_port = flow.src_port;
            record.dst_port = flow.dst_port;
            record.tcp_flags = flow.tcp_flags;
            record.proto = flow.protocol_number;
            record.tos = flow.tos;
            record.src_as = u32::from(flow.src_as);
            record.dst_as = u32::from(flow.dst_as);
            record.src_mask = flow.src_mask;
            record.dst_mask = flow.dst_mask;
            record.etype = 0x0800;
            out.flows.push(record);
        }
        accounting.datagram(
            exporter,
            0,
            FlowType::Netflow5,
            time_received,
            Some((SequenceKind::Records, header.flow_sequence)),
            u64::from(count),
            None,
        );
        Ok(())
    }

    /// NetFlow v9 and IPFIX: header, then sets, each decoded on its own.
    fn decode_templated(
        &mut self,
        protocol: FlowTypeKey,
        exporter: IpAddr,
        time_received: u32,
        payload: &[u8],
        accounting: &mut Accounting,
        out: &mut DecodeOutput,
    ) -> Result<()> {
        let flow_type = protocol.flow_type();
        let header_len = match protocol {
            FlowTypeKey::Netflow9 => V9_HEADER_LEN,
            FlowTypeKey::Ipfix => IPFIX_HEADER_LEN,
        };
        if payload.len() < header_len {
            accounting.error(exporter, 0, flow_type, DecodeErrorKind::Truncated);
            return Err(error(
                DecodeErrorKind::Truncated,
                exporter,
                payload.len(),
                format!(
                    "{} header needs {header_len} bytes, got {}",
                    flow_type.as_str(),
                    payload.len()
                ),
            ));
        }
        // Both lengths were checked above.
        let field = |at| read_u32(payload, at).unwrap_or(0);
        let (header, sequence, domain, body) = match protocol {
            FlowTypeKey::Netflow9 => {
                let header = MessageHeader {
                    export_secs: field(8),
                    sys_up_time_ms: Some(field(4)),
                };
                (header, field(12), field(16), &payload[V9_HEADER_LEN..])
            }
            FlowTypeKey::Ipfix => {
                let domain = field(12);
                let length = usize::from(read_u16(payload, 2).unwrap_or(0));
                let body = if length < IPFIX_HEADER_LEN {
                    Err((
                        DecodeErrorKind::Malformed,
                        format!("IPFIX message length {length} is below 16"),
                    ))
                } else {
                    payload.get(IPFIX_HEADER_LEN..length).ok_or_else(|| {
                        (
                            DecodeErrorKind::Truncated,
                            format!("IPFIX message length {length}, datagram has {}", payload.len()),
                        )
                    })
                };
                let body = match body {
                    Ok(body) => body,
                    Err((kind, detail)) => {
                        accounting.error(exporter, domain, flow_type, kind);
                        return Err(error(kind, exporter, 2, detail));
                    }
                };
                (
                    MessageHeader {
                        export_secs: field(4),
                        sys_up_time_ms: None,
                    },
                    field(8),
                    domain,
                    body,
                )
            }
        };
        let scope = ScopeKey {
            exporter,
            flow_type: protocol,
            domain,
        };
        self.expire(exporter, time_received, accounting, out);

        let errors_before = out.errors.len();
        let mut data_records = 0u64;
        // The scope's template count as the last data set found it, unless a template set
        // came after (one scope lookup per datagram less in the common case).
        let mut templates_known: Option<usize> = None;
        let mut at = 0usize;
        while body.len() - at >= SET_HEADER_LEN {
            let offset = header_len + at;
            let (set_id, set_len) = (
                read_u16(body, at).unwrap_or(0),
                usize::from(read_u16(body, at + 2).unwrap_or(0)),
            );
            if set_len < SET_HEADER_LEN {
                out.errors.push(error(
                    DecodeErrorKind::Malformed,
                    exporter,
                    offset,
                    format!("set {set_id} has length {set_len}"),
                ));
                break;
            }
            // A set that runs past the end of the message is reported, and its complete
            // records are still decoded (as TShark does).
            let set = match body.get(at..at + set_len) {
                Some(set) => set,
                None => {
                    out.errors.push(error(
                        DecodeErrorKind::Truncated,
                        exporter,
                        offset,
                        format!(
                            "set {set_id} of {set_len} bytes, {} left in datagram",
                            body.len() - at
                        ),
                    ));
                    &body[at..]
                }
            };
            at += set.len();
            let set_body = &set[SET_HEADER_LEN..];
            match (protocol, set_id) {
                (FlowTypeKey::Netflow9, 0 | 1) | (FlowTypeKey::Ipfix, 2 | 3) => {
                    templates_known = None;
                    match self.read_templates(protocol, set) {
                        Ok(templates) => {
                            for (template_id, template_fields, is_options) in templates {
                                self.install(scope, template_id, template_fields, is_options, time_received);
                                self.release(scope, template_id, out);
                            }
                        }
                        Err(detail) => {
                            out.errors
                                .push(error(DecodeErrorKind::InvalidTemplate, exporter, offset, detail))
                        }
                    }
                }
                (_, 0..=255) => {} // Reserved set ids: skipped (RFC 3954 §5.2, RFC 7011 §3.3.2).
                (_, template_id) => {
                    let set = DataSet {
                        scope,
                        template_id,
                        header,
                        time_received,
                        body: set_body,
                        offset,
                    };
                    let decoded = self.decode_data_set(set, out);
                    if let Some((records, templates)) = decoded {
                        data_records += records;
                        templates_known = Some(templates);
                    } else {
                        self.hold(
                            HeldSet {
                                scope,
                                template_id,
                                header,
                                time_received,
                                offset,
                                body: set_body.to_vec(),
                            },
                            out,
                        );
                    }
                }
            }
        }
        // Fewer than 4 bytes left: padding after the last set.

        for new_error in &out.errors[errors_before..] {
            accounting.error(exporter, domain, flow_type, new_error.kind);
        }
        let sequence_kind = match protocol {
            FlowTypeKey::Netflow9 => SequenceKind::Datagrams,
            FlowTypeKey::Ipfix => SequenceKind::Records,
        };
        let known = templates_known.unwrap_or_else(|| {
            self.scopes.get_mut(&scope).map_or(0, |state| {
                state.last_active = time_received;
                state.templates.len()
            })
        });
        accounting.datagram(
            exporter,
            domain,
            flow_type,
            time_received,
            Some((sequence_kind, sequence)),
            data_records,
            Some(u32::try_from(known).unwrap_or(u32::MAX)),
        );
        Ok(())
    }

    /// Parses one template or options template set with `netflow_parser`, returning
    /// (template id, fields, is options template) for each valid template in it.
    fn read_templates(
        &mut self,
        protocol: FlowTypeKey,
        set: &[u8],
    ) -> std::result::Result<Vec<(u16, Vec<FieldSpec>, bool)>, String> {
        // A one-set message with a neutral header (no time, sequence or domain is read from it).
        self.scratch.clear();
        match protocol {
            FlowTypeKey::Netflow9 => {
                self.scratch.extend_from_slice(&[0, 9, 0, 1]); // version 9, count 1
                self.scratch.extend_from_slice(&[0; 16]); // uptime, unix secs, sequence, source id
            }
            FlowTypeKey::Ipfix => {
                let length =
                    u16::try_from(IPFIX_HEADER_LEN + set.len()).map_err(|_| "template set too long")?;
                self.scratch.extend_from_slice(&[0, 10]); // version 10
                self.scratch.extend_from_slice(&length.to_be_bytes());
                self.scratch.extend_from_slice(&[0; 12]); // export time, sequence, domain
            }
        }
        self.scratch.extend_from_slice(set);
        let parsed = self.library.parse_bytes(&self.scratch);
        self.library.clear_v9_templates();
        self.library.clear_ipfix_templates();
        let library_error = parsed.error.map(|e| e.to_string());
        let mut templates = Vec::new();
        for packet in parsed.packets {
            match packet {
                NetflowPacket::V9(v9) => {
                    for flowset in v9.flowsets {
                        match flowset.body {
                            V9SetBody::Template(set) => {
                                for t in set.templates {
                                    let fields = t
                                        .fields
                                        .iter()
                                        .map(|f| FieldSpec {
                                            id: f.field_type_number,
                                            enterprise: 0,
                                            length: f.field_length,
                                        })
                                        .collect();
                                    templates.push((t.template_id, fields, false));
                                }
                            }
                            V9SetBody::OptionsTemplate(set) => {
                                for t in set.templates {
                                    let scope = t.scope_fields.iter().map(|f| FieldSpec {
                                        id: f.field_type_number,
                                        enterprise: V9_SCOPE_ENTERPRISE,
                                        length: f.field_length,
                                    });
                                    let options = t.option_fields.iter().map(|f| FieldSpec {
                                        id: f.field_type_number,
                                        enterprise: 0,
                                        length: f.field_length,
                                    });
                                    templates.push((t.template_id, scope.chain(options).collect(), true));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                NetflowPacket::IPFix(ipfix) => {
                    let convert = |fields: &[netflow_parser::variable_versions::ipfix::TemplateField]| {
                        fields
                            .iter()
                            .map(|f| FieldSpec {
                                id: f.field_type_number,
                                enterprise: f.enterprise_number.unwrap_or(0),
                                length: f.field_length,
                            })
                            .collect::<Vec<_>>()
                    };
                    for flowset in ipfix.flowsets {
                        match flowset.body {
                            IpfixSetBody::Template(t) => {
                                templates.push((t.template_id, convert(&t.fields), false))
                            }
                            IpfixSetBody::Templates(ts) => {
                                templates
                                    .extend(ts.iter().map(|t| (t.template_id, convert(&t.fields), false)));
                            }
                            IpfixSetBody::OptionsTemplate(t) => {
                                templates.push((t.template_id, convert(&t.fields), true))
                            }
                            IpfixSetBody::OptionsTemplates(ts) => {
                                templates
                                    .extend(ts.iter().map(|t| (t.template_id, convert(&t.fields), true)));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        // The library drops (silently, or by rejecting the whole set) templates that contain a
        // zero-length field, which RFC 3954/7011 do not forbid and real exporters send
        // (telegraf-issue-14370.pcap: flowStartSeconds/flowEndSeconds of length 0). Such
        // templates are read here from the raw set instead, as long as a record still has a
        // non-zero length.
        for (id, fields, is_options) in raw_templates(protocol, set) {
            let usable = fields.iter().any(|f| f.length > 0);
            if usable && !templates.iter().any(|(known, _, _)| *known == id) {
                templates.push((id, fields, is_options));
            }
        }
        templates.retain(|(id, fields, _)| *id >= 256 && !fields.is_empty());
        if templates.is_empty() {
            return Err(match library_error {
                Some(library_error) => format!("template set rejected: {library_error}"),
                None => "template set holds no usable template".to_owned(),
            });
        }
        Ok(templates)
    }

    /// Stores a template (replacing any previous definition of the id), evicting the least
    /// recently refreshed one of the scope when the scope is full.
    fn install(
        &mut self,
        scope: ScopeKey,
        template_id: u16,
        fields: Vec<FieldSpec>,
        is_options: bool,
        now: u32,
    ) {
        let limit = self.config.max_templates_per_exporter.max(1);
        let state = self.scopes.entry(scope).or_default();
        if let Some(known) = state.templates.get_mut(&template_id) {
            if known.is_options == is_options && known.fields == fields {
                // A refresh (exporters resend every template every few seconds): keep the
                // compiled layout.
                known.refreshed = now;
                return;
            }
        }
        if !state.templates.contains_key(&template_id) && state.templates.len() >= limit {
            if let Some(oldest) = state
                .templates
                .iter()
                .min_by_key(|(_, t)| t.refreshed)
                .map(|(id, _)| *id)
            {
                state.templates.remove(&oldest);
            }
        }
        state
            .templates
            .insert(template_id, Template::new(fields, is_options, now));
    }

    /// Drops held sets older than `held_set_ttl_seconds` (counted as missing templates) and,
    /// once a minute of `time_received`, templates past their TTL.
    fn expire(&mut self, exporter: IpAddr, now: u32, accounting: &mut Accounting, out: &mut DecodeOutput) {
        if let Some(queue) = self.held.get_mut(&exporter) {
            let ttl = self.config.held_set_ttl_seconds;
            queue.retain(|held| {
                let keep = u64::from(now) <= u64::from(held.time_received) + ttl;
                if !keep {
                    accounting.error(
                        exporter,
                        held.scope.domain,
                        held.scope.flow_type.flow_type(),
                        DecodeErrorKind::MissingTemplate,
                    );
                    out.errors.push(error(
                        DecodeErrorKind::MissingTemplate,
                        exporter,
                        held.offset,
                        format!(
                            "template {} did not arrive within {ttl} s; held data dropped",
                            held.template_id
                        ),
                    ));
                }
                keep
            });
        }
        let ttl = self.config.template_ttl_seconds;
        if ttl > 0 && now.abs_diff(self.last_sweep) >= SWEEP_INTERVAL_SECONDS {
            self.last_sweep = now;
            for state in self.scopes.values_mut() {
                state
                    .templates
                    .retain(|_, t| u64::from(now) <= u64::from(t.refreshed) + ttl);
            }
        }
    }

    /// Keeps a data set until its template arrives; the oldest held set of the exporter is
    /// dropped (as a missing-template error) when the exporter's queue is full.
    fn hold(&mut self, held: HeldSet, out: &mut DecodeOutput) {
        let exporter = held.scope.exporter;
        let limit = self.config.max_held_sets_per_exporter;
        let queue = self.held.entry(exporter).or_default();
        let dropped = if limit == 0 {
            Some(held)
        } else {
            queue.push_back(held);
            if queue.len() > limit {
                queue.pop_front()
            } else {
                None
            }
        };
        if let Some(dropped) = dropped {
            // Counted by decode_templated with the datagram's other errors.
            out.errors.push(error(
                DecodeErrorKind::MissingTemplate,
                exporter,
                dropped.offset,
                format!(
                    "no template {} and the hold queue is full; data set dropped",
                    dropped.template_id
                ),
            ));
        }
    }

    /// Decodes the sets of `scope` that were waiting for `template_id`, in arrival order.
    fn release(&mut self, scope: ScopeKey, template_id: u16, out: &mut DecodeOutput) {
        let Some(queue) = self.held.get_mut(&scope.exporter) else {
            return;
        };
        if !queue
            .iter()
            .any(|h| h.scope == scope && h.template_id == template_id)
        {
            return;
        }
        let (ready, waiting): (VecDeque<_>, VecDeque<_>) = queue
            .drain(..)
            .partition(|h| h.scope == scope && h.template_id == template_id);
        *queue = waiting;
        // Problems go to `out.errors`; the caller counts them with the datagram's own.
        for held in ready {
            let set = DataSet {
                scope,
                template_id,
                header: held.header,
                time_received: held.time_received,
                body: &held.body,
                offset: held.offset,
            };
            self.decode_data_set(set, out);
        }
    }

    /// Decodes the records of one data set; returns how many data records (flow or options)
    /// it held and how many templates the scope knows, or `None` when the template is unknown
    /// or has expired (`template_ttl_seconds` since its last refresh; then it is forgotten).
    /// Marks the scope active. Problems go to `out.errors` (not yet counted). One scope and one
    /// template lookup per set: this runs for nearly every datagram.
    fn decode_data_set(&mut self, set: DataSet<'_>, out: &mut DecodeOutput) -> Option<(u64, usize)> {
        let DataSet {
            scope,
            template_id,
            time_received,
            ..
        } = set;
        let ttl = self.config.template_ttl_seconds;
        let ScopeState {
            templates,
            sampling: samplers,
            last_active,
        } = self.scopes.get_mut(&scope)?;
        *last_active = time_received;
        let known = templates.len();
        let template = match templates.entry(template_id) {
            Entry::Occupied(entry)
                if ttl > 0 && u64::from(time_received) > u64::from(entry.get().refreshed) + ttl =>
            {
                entry.remove();
                return None;
            }
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(_) => return None,
        };
        Some((Self::decode_records(template, samplers, set, out), known))
    }

    /// The records of one data set of `template` (see [`NetflowDecoder::decode_data_set`]).
    fn decode_records(
        template: &Template,
        samplers: &mut SamplerTable,
        set: DataSet<'_>,
        out: &mut DecodeOutput,
    ) -> u64 {
        let DataSet {
            scope,
            template_id,
            header,
            time_received,
            body,
            offset,
        } = set;
        if template.min_record_len == 0 {
            out.errors.push(error(
                DecodeErrorKind::InvalidTemplate,
                scope.exporter,
                offset,
                format!("template {template_id} has only zero-length fields"),
            ));
            return 0;
        }
        let flow_type = scope.flow_type.flow_type();
        let mut records = 0u64;
        let mut at = 0usize;
        let resolve = |rate: Option<u64>, sampler_id, samplers: &SamplerTable| match (
            rate,
            samplers.resolve(sampler_id),
        ) {
            (Some(rate), _) => (rate, SamplingSource::Record),
            (None, Some(rate)) => (rate, SamplingSource::Options),
            (None, None) => (1, SamplingSource::Unknown),
        };
        if let Some(compiled) = &template.compiled {
            // Fixed-length records: the set holds `body.len() / len` of them and the rest is
            // padding (shorter than a record, so never an error, as below).
            let first = out.flows.len();
            let count = body.len() / compiled.len;
            // Rows made in their place in the output (an extend of known length writes each
            // one where it goes; a push built it aside and copied its 400 bytes in).
            out.flows.extend(
                std::iter::repeat_with(|| FlowRecord::new(scope.exporter, time_received, flow_type))
                    .take(count),
            );
            let flows = out.flows.get_mut(first..).unwrap_or_default();
            for (record, flow) in body.chunks_exact(compiled.len).zip(flows) {
                flow.observation_domain = scope.domain;
                let RecordSampling { rate, sampler_id } = compiled.fill(record, &header, flow);
                (flow.sampling_rate, flow.sampling_source) = resolve(rate, sampler_id, samplers);
            }
            return count as u64;
        }
        // One builder for every record of the set: each record of a template visits the same
        // fields, and `take` overwrites each slot it is given, so a record never sees its
        // predecessor's values, and the builder (close to a kilobyte) is not reset per record.
        let mut builder = FlowBuilder::default();
        while body.len() - at >= template.min_record_len {
            let input = &body[at..];
            let consumed = if template.is_options {
                let mut sampling = SamplingFields::default();
                let consumed = walk_record(&template.fields, input, |field, value| {
                    if field.enterprise == 0 {
                        sampling.take_element(field.id, value);
                    }
                });
                if consumed.is_some() {
                    if let Some(rate) = sampling.rate() {
                        let learned = LearnedRate {
                            rate,
                            learned: time_received,
                        };
                        samplers.learn(sampling.sampler(), learned);
                    }
                }
                consumed
            } else {
                let consumed =
                    walk_record(&template.fields, input, |field, value| builder.take(field, value));
                if consumed.is_some() {
                    // Built in its place in the output: a record is about 400 bytes, and
                    // building it aside and moving it in was a tenth of the receive thread.
                    out.flows
                        .push(FlowRecord::new(scope.exporter, time_received, flow_type));
                    if let Some(flow) = out.flows.last_mut() {
                        flow.observation_domain = scope.domain;
                        let RecordSampling { rate, sampler_id } = builder.finish(&header, flow);
                        (flow.sampling_rate, flow.sampling_source) = resolve(rate, sampler_id, samplers);
                    }
                }
                consumed
            };
            match consumed {
                Some(length) => {
                    records += 1;
                    at += length;
                }
                None => {
                    // Padding is shorter than a record and zero; anything else is a cut record.
                    if input.iter().any(|b| *b != 0) {
                        out.errors.push(error(
                            DecodeErrorKind::Truncated,
                            scope.exporter,
                            offset + SET_HEADER_LEN + at,
                            format!("record of template {template_id} runs past the end of its set"),
                        ));
                    }
                    break;
                }
            }
        }
        records
    }
}
