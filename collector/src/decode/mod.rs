//! Decode: export datagrams in, normalised records out. Pure: no sockets, no clocks, no I/O.
//!
//! A [`Decoder`] holds the state one receive worker needs: NetFlow v9/IPFIX templates and
//! options data per exporter address and observation domain, data held while its template is
//! missing, sFlow sequence state, and the loss accounting per exporter ([`accounting`]).
//! The protocol is recognised from the datagram itself (version field), so any port takes any
//! protocol.
//!
//! What a decoder has learned survives a restart of the collector as a [`DecoderSnapshot`]
//! ([`Decoder::export_state`] / [`Decoder::import_state`]; rules in [`snapshot`]); the file
//! I/O is `crate::state`'s.
//!
//! At shutdown nothing needs flushing here except held data, which is reported as
//! `records_dropped{reason="template_never_arrived"}` by the caller via [`Decoder::held_sets`].

pub mod accounting;
pub mod netflow;
pub mod sflow;
pub mod snapshot;

use std::net::IpAddr;

use crate::normalise::{FlowRecord, InterfaceCounterRecord};
pub use snapshot::DecoderSnapshot;

/// The kinds of decode error. Their [`as_str`](DecodeErrorKind::as_str) names are the stable
/// `kind` label of `egress_decode_errors_total` and of `exporter_stats.decode_error_kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Shorter than its header or than a length field says.
    Truncated,
    /// The first two bytes are not 5, 9 or 10, and the first four are not sFlow version 5.
    UnknownVersion,
    /// A length, count or field that the specification forbids (zero-length set, bad padding, ...).
    Malformed,
    /// A template or options template that cannot be used (zero fields, too large, ...).
    InvalidTemplate,
    /// A data set whose template is unknown and could not be held (hold queue full).
    MissingTemplate,
    /// sFlow: a sample or record could not be parsed.
    SflowSample,
}

impl DecodeErrorKind {
    /// Every kind, for pre-registering metrics.
    pub const ALL: [DecodeErrorKind; 6] = [
        Self::Truncated,
        Self::UnknownVersion,
        Self::Malformed,
        Self::InvalidTemplate,
        Self::MissingTemplate,
        Self::SflowSample,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::UnknownVersion => "unknown_version",
            Self::Malformed => "malformed",
            Self::InvalidTemplate => "invalid_template",
            Self::MissingTemplate => "missing_template",
            Self::SflowSample => "sflow_sample",
        }
    }
}

/// A decode error: what went wrong, for which exporter, at which byte of the datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind_name} from {exporter} at byte {offset}: {detail}", kind_name = kind.as_str())]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    pub exporter: IpAddr,
    pub offset: usize,
    pub detail: String,
}

pub type Result<T> = std::result::Result<T, DecodeError>;

/// What one datagram produced. Reused across datagrams (cleared by the caller) so the hot path
/// does not allocate per datagram.
#[derive(Debug, Default)]
pub struct DecodeOutput {
    pub flows: Vec<FlowRecord>,
    pub counters: Vec<InterfaceCounterRecord>,
    /// Non-fatal problems inside an otherwise decoded datagram (one bad set, one bad sample).
    pub errors: Vec<DecodeError>,
}

impl DecodeOutput {
    pub fn clear(&mut self) {
        self.flows.clear();
        self.counters.clear();
        self.errors.clear();
    }
}

/// Limits of the decoder's state. Defaults suit a large edge router fleet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderConfig {
    /// Templates kept per exporter, observation domain and protocol (LRU beyond this).
    pub max_templates_per_exporter: usize,
    /// Seconds after which a template that was not refreshed is forgotten (0: never).
    pub template_ttl_seconds: u64,
    /// Data sets held per exporter while their template is missing; older ones are dropped and
    /// counted as `missing_template` errors.
    pub max_held_sets_per_exporter: usize,
    /// Seconds a held data set waits for its template before it is dropped.
    pub held_set_ttl_seconds: u64,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_templates_per_exporter: 1024,
            template_ttl_seconds: 3600,
            max_held_sets_per_exporter: 256,
            held_set_ttl_seconds: 300,
        }
    }
}

/// What a decoder has learned, for `egress decode`'s summary and for debugging.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LearnedState {
    /// (exporter, observation domain, protocol, template id, field count) of every template known.
    pub templates: Vec<(IpAddr, u32, crate::normalise::FlowType, u16, usize)>,
    /// (exporter, observation domain, sampler or selector id, rate) of every sampling rate known
    /// from options data.
    pub sampling_rates: Vec<(IpAddr, u32, u64, u64)>,
}

/// The decoder of one receive worker: dispatches each datagram on its version field.
#[derive(Debug)]
pub struct Decoder {
    netflow: netflow::NetflowDecoder,
    sflow: sflow::SflowDecoder,
    pub accounting: accounting::Accounting,
}

impl Decoder {
    pub fn new(config: &DecoderConfig) -> Self {
        Self {
            netflow: netflow::NetflowDecoder::new(config),
            sflow: sflow::SflowDecoder::new(config),
            accounting: accounting::Accounting::default(),
        }
    }

    /// Decodes one datagram from `exporter`, received at `time_received` (Unix seconds).
    ///
    /// Records are appended to `out.flows` / `out.counters`, including records held earlier
    /// that a template in this datagram released. A datagram that cannot be decoded at all is
    /// an `Err`; problems inside an otherwise usable datagram go to `out.errors`. Every error is
    /// also counted in [`Decoder::accounting`].
    pub fn decode(
        &mut self,
        exporter: IpAddr,
        time_received: u32,
        payload: &[u8],
        out: &mut DecodeOutput,
    ) -> Result<()> {
        let version16 = payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let result = match version16 {
            Some(5 | 9 | 10) => {
                self.netflow
                    .decode(exporter, time_received, payload, &mut self.accounting, out)
            }
            Some(0) if payload.get(..4) == Some(&[0, 0, 0, 5]) => {
                self.sflow
                    .decode(exporter, time_received, payload, &mut self.accounting, out)
            }
            None => Err(DecodeError {
                kind: DecodeErrorKind::Truncated,
                exporter,
                offset: 0,
                detail: format!("datagram of {} bytes has no version field", payload.len()),
            }),
            Some(other) => Err(DecodeError {
                kind: DecodeErrorKind::UnknownVersion,
                exporter,
                offset: 0,
                detail: format!("version field {other} is not NetFlow 5/9, IPFIX or sFlow 5"),
            }),
        };
        // The protocol decoders count their own errors; these two are the dispatcher's.
        if version16.is_none() || matches!(&result, Err(e) if e.kind == DecodeErrorKind::UnknownVersion) {
            if let Err(error) = &result {
                self.accounting
                    .error(exporter, 0, crate::normalise::FlowType::Unknown, error.kind);
            }
        }
        result
    }

    /// Data sets currently held for a template that has not arrived.
    pub fn held_sets(&self) -> usize {
        self.netflow.held_sets()
    }

    /// Templates and sampling rates learned so far.
    pub fn learned(&self) -> LearnedState {
        self.netflow.learned()
    }

    /// What the decoder needs after a restart: templates, sampling rates, sequence state.
    pub fn export_state(&self) -> DecoderSnapshot {
        DecoderSnapshot {
            scopes: self.netflow.export_state(),
            sequences: self.accounting.export_sequences(),
            sflow_sources: self.sflow.export_state(),
        }
    }

    /// Adopts restored state where it is newer than what the decoder knows, skipping what is
    /// too old to restore at `now` (Unix seconds; see [`snapshot`]). Returns how many
    /// templates were adopted.
    pub fn import_state(&mut self, snapshot: &DecoderSnapshot, now: u32) -> usize {
        self.accounting.import_sequences(&snapshot.sequences, now);
        self.sflow.import_state(&snapshot.sflow_sources, now);
        self.netflow.import_state(&snapshot.scopes, now)
    }
}
