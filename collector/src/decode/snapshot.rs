//! Decoder state as plain data, for keeping it across a restart of the collector.
//!
//! In: a [`Decoder`](super::Decoder)'s learned state ([`Decoder::export_state`](super::Decoder::export_state)).
//! Out: a [`DecoderSnapshot`] (serde; `crate::state` writes it to `collector.state_path`),
//! which [`Decoder::import_state`](super::Decoder::import_state) turns back into decoder state.
//! Pure: no I/O; every age is measured against the `now` the caller passes.
//!
//! Only what the next datagram of an exporter needs is kept:
//! - NetFlow v9 / IPFIX templates and options templates (field specs, `refreshed` time) per
//!   exporter, protocol and observation domain, so data sets decode without waiting for the
//!   exporter to re-send its templates (minutes on many routers);
//! - sampling rates learned from options data, per sampler/selector id and the domain default;
//! - sequence state per exporter and observation domain (and per sFlow flow sample source).
//!
//! Not kept: data sets held for a missing template (raw data, counted as dropped at shutdown),
//! and the loss counters of the current minute (drained into `exporter_stats` at shutdown).
//!
//! # Ages
//! A scope (exporter, protocol, domain) or sequence entry not seen for
//! [`STATE_MAX_AGE_SECONDS`] is not restored: that exporter is gone or has been reconfigured.
//! Inside a restored scope, a template is restored unless it expired under
//! `decoder.template_ttl_seconds` (the same rule as while decoding; 0 keeps it), with its
//! original `refreshed` time, so its TTL keeps running across the restart. Sampling rates of a
//! restored scope are restored (they never expire while decoding either).
//!
//! # Merging
//! Import is a merge where the newer entry wins (template: `refreshed`; sampling rate:
//! `learned`; sequence: `last_seen`). That makes [`DecoderSnapshot::merge`] (the state of
//! several receive workers as one file) and restoring every exporter into every worker safe.
//!
//! # Sequence numbers across a restart
//! The first datagram of an exporter after a restore continues the restored sequence, but the
//! gap it shows (what the exporter sent while the collector was stopped) is *not* counted as
//! `records_lost`: that loss is the collector's downtime, not the exporter's or the path's
//! health (which `exporter_stats.records_lost` and the `exporter_health` SLA measure), and a
//! planned restart must not breach that SLA. The gap is added to
//! [`Accounting::missed_while_stopped`](super::accounting::Accounting::missed_while_stopped)
//! instead, which the collector logs. Gaps above the plausibility bound (2^20) are read as an
//! exporter restart, as always, and so is a number behind the restored one (nothing can
//! arrive late across a restart: the socket was closed). From the second datagram on, loss
//! is counted as usual.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::normalise::FlowType;

/// Seconds after which an exporter's state (scope or sequence) is no longer restored.
pub const STATE_MAX_AGE_SECONDS: u64 = 86_400;

/// Whether something last seen at `last` is still worth restoring at `now`. A time in the
/// future (the clock moved back) counts as fresh.
pub(crate) fn is_fresh(last: u32, now: u32) -> bool {
    u64::from(now) <= u64::from(last) + STATE_MAX_AGE_SECONDS
}

/// The export protocol of a state entry (names as in `flows.flow_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotProtocol {
    Netflow5,
    Netflow9,
    Ipfix,
    Sflow5,
}

impl SnapshotProtocol {
    /// The protocol of `flow_type`; `None` for [`FlowType::Unknown`].
    pub fn from_flow_type(flow_type: FlowType) -> Option<Self> {
        match flow_type {
            FlowType::Netflow5 => Some(Self::Netflow5),
            FlowType::Netflow9 => Some(Self::Netflow9),
            FlowType::Ipfix => Some(Self::Ipfix),
            FlowType::Sflow5 => Some(Self::Sflow5),
            FlowType::Unknown => None,
        }
    }

    pub fn flow_type(self) -> FlowType {
        match self {
            Self::Netflow5 => FlowType::Netflow5,
            Self::Netflow9 => FlowType::Netflow9,
            Self::Ipfix => FlowType::Ipfix,
            Self::Sflow5 => FlowType::Sflow5,
        }
    }
}

/// Everything a decoder needs to decode an exporter's next datagram at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderSnapshot {
    /// NetFlow v9 / IPFIX template and options state per exporter, protocol and domain.
    pub scopes: Vec<ScopeSnapshot>,
    /// Sequence state per exporter and observation domain.
    pub sequences: Vec<SequenceSnapshot>,
    /// sFlow flow sample sequence state per exporter and source.
    pub sflow_sources: Vec<SflowSourceSnapshot>,
}

/// Templates and sampling rates of one exporter, protocol (v9 or IPFIX) and observation domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSnapshot {
    pub exporter: IpAddr,
    /// `netflow9` or `ipfix`; other protocols have no templates (such entries are ignored).
    pub protocol: SnapshotProtocol,
    pub observation_domain: u32,
    /// `time_received` (Unix seconds) of the scope's last datagram.
    pub last_active: u32,
    pub templates: Vec<TemplateSnapshot>,
    pub sampling_rates: Vec<SamplingRateSnapshot>,
}

/// One template or options template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSnapshot {
    pub template_id: u16,
    /// An options template (its data carries sampling configuration, not flows).
    pub options: bool,
    /// `time_received` (Unix seconds) of its last definition or refresh.
    pub refreshed: u32,
    /// The fields in record order.
    pub fields: Vec<FieldSnapshot>,
}

/// One template field as `[information element, enterprise number, length]`. Enterprise 0 is
/// IANA; 4294967295 marks a NetFlow v9 options scope field; length 65535 is variable length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSnapshot(pub u16, pub u32, pub u16);

/// A sampling rate learned from options data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingRateSnapshot {
    /// Sampler id (48) or selector id (302); `None` for the exporter+domain default (options
    /// data that named no sampler).
    pub sampler_id: Option<u64>,
    pub rate: u64,
    /// `time_received` (Unix seconds) of the options data that last announced it.
    pub learned: u32,
}

/// Sequence state of one exporter and observation domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSnapshot {
    pub exporter: IpAddr,
    pub observation_domain: u32,
    pub protocol: SnapshotProtocol,
    /// The sequence number the next datagram should carry.
    pub next_sequence: u32,
    /// Datagrams and records ever seen, whose ratio turns lost datagrams (v9) into records.
    pub lifetime_datagrams: u64,
    pub lifetime_records: u64,
    /// `time_received` (Unix seconds) of the last datagram.
    pub last_seen: u32,
}

/// Sequence state of one sFlow flow sample source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SflowSourceSnapshot {
    pub exporter: IpAddr,
    pub sub_agent_id: u32,
    pub source_type: u32,
    pub source_index: u32,
    /// The flow sample sequence number the next sample should carry.
    pub next_sequence: u32,
    /// The source's `drops` counter in its last sample.
    pub drops: u32,
    /// `time_received` (Unix seconds) of the last sample.
    pub last_seen: u32,
}

/// How much state a snapshot holds, for the start-up log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    pub exporters: usize,
    pub templates: usize,
    pub sampling_rates: usize,
    pub sequences: usize,
}

impl DecoderSnapshot {
    /// Merges the snapshots of several decoders (receive workers) into one, newest entry first,
    /// dropping entries too old to restore at `now`.
    pub fn merge(
        snapshots: impl IntoIterator<Item = DecoderSnapshot>,
        config: &super::DecoderConfig,
        now: u32,
    ) -> DecoderSnapshot {
        // One merge rule for restore and for saving: import into an empty decoder.
        let mut merged = super::Decoder::new(config);
        for snapshot in snapshots {
            merged.import_state(&snapshot, now);
        }
        merged.export_state()
    }

    /// Counts what the snapshot holds.
    pub fn counts(&self) -> SnapshotCounts {
        let mut exporters: Vec<IpAddr> = self
            .scopes
            .iter()
            .map(|s| s.exporter)
            .chain(self.sequences.iter().map(|s| s.exporter))
            .chain(self.sflow_sources.iter().map(|s| s.exporter))
            .collect();
        exporters.sort_unstable();
        exporters.dedup();
        SnapshotCounts {
            exporters: exporters.len(),
            templates: self.scopes.iter().map(|s| s.templates.len()).sum(),
            sampling_rates: self.scopes.iter().map(|s| s.sampling_rates.len()).sum(),
            sequences: self.sequences.len() + self.sflow_sources.len(),
        }
    }
}

#[cfg(test)]
mod tests;
