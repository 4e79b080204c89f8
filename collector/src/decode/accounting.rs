//! Loss accounting per exporter and observation domain: datagrams, records, decode errors by
//! kind, records lost according to the exporter's own sequence numbers, templates known.
//!
//! Decoders feed it as they parse; the pipeline drains it once a minute (and at shutdown) into
//! `exporter_stats` rows. Sequence semantics differ per protocol, see [`SequenceKind`].
//!
//! Sequence state survives a restart of the collector through [`Accounting::export_sequences`]
//! and [`Accounting::import_sequences`]; the gap across the restart is not loss but
//! [`Accounting::missed_while_stopped`] (see `decode::snapshot`).

use crate::FastMap;
use std::collections::BTreeMap;
use std::net::IpAddr;

use egress_query::schema::{to_v6, ExporterStatsRow, FlowType};

use super::snapshot::{is_fresh, SequenceSnapshot, SnapshotProtocol};
use super::DecodeErrorKind;

/// What an exporter's sequence number counts, which decides the next expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceKind {
    /// NetFlow v5 `flow_sequence` and IPFIX `sequence`: records sent before this datagram.
    Records,
    /// NetFlow v9 `sequence` and the sFlow datagram sequence: datagrams sent before this one.
    Datagrams,
}

/// A gap larger than this is read as an exporter restart or reordering, not as loss.
const MAX_PLAUSIBLE_GAP: u32 = 1 << 20;

/// Running counters of one exporter and observation domain since the last drain.
#[derive(Debug, Clone)]
pub struct ExporterCounters {
    pub flow_type: FlowType,
    pub datagrams: u64,
    pub records: u64,
    pub records_lost: u64,
    pub errors: BTreeMap<DecodeErrorKind, u64>,
    pub templates_known: u32,
    /// Next sequence number expected, if one was seen.
    next_sequence: Option<u32>,
    /// Datagrams and records ever seen, to turn lost datagrams into an estimate of lost records.
    lifetime_datagrams: u64,
    lifetime_records: u64,
    /// `time_received` of the last datagram (for restoring only recent state).
    last_seen: u32,
    /// Sequence state restored from before a restart: the next gap is the collector's
    /// downtime, not loss.
    resumed: bool,
}

impl ExporterCounters {
    fn new(flow_type: FlowType) -> Self {
        Self {
            flow_type,
            datagrams: 0,
            records: 0,
            records_lost: 0,
            errors: BTreeMap::new(),
            templates_known: 0,
            next_sequence: None,
            lifetime_datagrams: 0,
            lifetime_records: 0,
            last_seen: 0,
            resumed: false,
        }
    }

    fn mean_records_per_datagram(&self) -> u64 {
        self.lifetime_records
            .checked_div(self.lifetime_datagrams)
            .unwrap_or(1)
            .max(1)
    }
}

/// Accounting state of one decoder.
#[derive(Debug, Default)]
pub struct Accounting {
    exporters: FastMap<(IpAddr, u32), ExporterCounters>,
    /// Records the exporters sent while the collector was stopped, from the gaps between
    /// restored sequence state and the first datagram after the restart.
    missed_while_stopped: u64,
}

impl Accounting {
    /// The counters of `exporter`/`domain`, created on first sight.
    pub fn entry(&mut self, exporter: IpAddr, domain: u32, flow_type: FlowType) -> &mut ExporterCounters {
        let counters = self
            .exporters
            .entry((exporter, domain))
            .or_insert_with(|| ExporterCounters::new(flow_type));
        counters.flow_type = flow_type;
        counters
    }

    /// Records one datagram carrying `records` records and sequence number `sequence`,
    /// received at `time_received` (Unix seconds), and, for NetFlow v9 and IPFIX, the number of
    /// templates known for `exporter`/`domain` (one lookup of the counters for both).
    /// Returns the number of records estimated lost before it (0 for the first datagram, for
    /// duplicates and reordering, for implausibly large jumps, which are read as restarts, and
    /// for the first datagram after restored state, whose gap is the collector's downtime).
    #[allow(clippy::too_many_arguments)]
    pub fn datagram(
        &mut self,
        exporter: IpAddr,
        domain: u32,
        flow_type: FlowType,
        time_received: u32,
        sequence: Option<(SequenceKind, u32)>,
        records: u64,
        templates_known: Option<u32>,
    ) -> u64 {
        let counters = self.entry(exporter, domain, flow_type);
        if let Some(known) = templates_known {
            counters.templates_known = known;
        }
        counters.datagrams += 1;
        counters.records += records;
        counters.last_seen = time_received;
        let mut lost = 0;
        let mut missed = 0;
        if let Some((kind, seq)) = sequence {
            if let Some(expected) = counters.next_sequence {
                let gap = seq.wrapping_sub(expected);
                if gap > 0 && gap < MAX_PLAUSIBLE_GAP {
                    let gap_records = match kind {
                        SequenceKind::Records => u64::from(gap),
                        SequenceKind::Datagrams => u64::from(gap) * counters.mean_records_per_datagram(),
                    };
                    if counters.resumed {
                        missed = gap_records;
                    } else {
                        lost = gap_records;
                    }
                }
            }
            let advance = match kind {
                SequenceKind::Records => u32::try_from(records).unwrap_or(u32::MAX),
                SequenceKind::Datagrams => 1,
            };
            // After a restore nothing can be late (the socket was closed): a number behind the
            // restored one is an exporter that restarted while the collector was stopped.
            let late = !counters.resumed
                && counters.next_sequence.is_some_and(|expected| {
                    expected != seq && expected.wrapping_sub(seq) < MAX_PLAUSIBLE_GAP
                });
            // A late (reordered or duplicated) datagram does not move the window back; anything
            // else, including a restart, continues from this datagram.
            if !late {
                counters.next_sequence = Some(seq.wrapping_add(advance));
                counters.resumed = false;
            }
        }
        counters.records_lost += lost;
        counters.lifetime_datagrams += 1;
        counters.lifetime_records += records;
        self.missed_while_stopped += missed;
        lost
    }

    /// Adds records an exporter sent while the collector was stopped (sFlow's own sequence
    /// gaps across a restart).
    pub fn missed(&mut self, records: u64) {
        self.missed_while_stopped += records;
    }

    /// Records the exporters sent while the collector was stopped, as far as the first
    /// datagram after a restore showed (not counted as `records_lost`).
    pub fn missed_while_stopped(&self) -> u64 {
        self.missed_while_stopped
    }

    /// The sequence state of every exporter and domain that has one.
    pub fn export_sequences(&self) -> Vec<SequenceSnapshot> {
        let mut sequences: Vec<SequenceSnapshot> = self
            .exporters
            .iter()
            .filter_map(|((exporter, domain), counters)| {
                Some(SequenceSnapshot {
                    exporter: *exporter,
                    observation_domain: *domain,
                    protocol: SnapshotProtocol::from_flow_type(counters.flow_type)?,
                    next_sequence: counters.next_sequence?,
                    lifetime_datagrams: counters.lifetime_datagrams,
                    lifetime_records: counters.lifetime_records,
                    last_seen: counters.last_seen,
                })
            })
            .collect();
        sequences.sort_by_key(|s| (s.exporter, s.observation_domain));
        sequences
    }

    /// Adopts restored sequence state not older than the restore limit at `now`, where it is
    /// newer than what is known. Returns how many entries were adopted.
    pub fn import_sequences(&mut self, sequences: &[SequenceSnapshot], now: u32) -> usize {
        let mut adopted = 0;
        for restored in sequences.iter().filter(|s| is_fresh(s.last_seen, now)) {
            let counters = self
                .exporters
                .entry((restored.exporter, restored.observation_domain))
                .or_insert_with(|| ExporterCounters::new(restored.protocol.flow_type()));
            if counters.next_sequence.is_some() && counters.last_seen >= restored.last_seen {
                continue;
            }
            counters.flow_type = restored.protocol.flow_type();
            counters.next_sequence = Some(restored.next_sequence);
            counters.lifetime_datagrams = restored.lifetime_datagrams;
            counters.lifetime_records = restored.lifetime_records;
            counters.last_seen = restored.last_seen;
            counters.resumed = true;
            adopted += 1;
        }
        adopted
    }

    /// Adds records lost that a protocol reports itself (sFlow sample sequence gaps and drops).
    pub fn lost(&mut self, exporter: IpAddr, domain: u32, flow_type: FlowType, records: u64) {
        self.entry(exporter, domain, flow_type).records_lost += records;
    }

    /// Counts one decode error for `exporter`/`domain`.
    pub fn error(&mut self, exporter: IpAddr, domain: u32, flow_type: FlowType, kind: DecodeErrorKind) {
        *self
            .entry(exporter, domain, flow_type)
            .errors
            .entry(kind)
            .or_default() += 1;
    }

    /// Iterates over the current counters (for `egress decode`'s summary).
    pub fn iter(&self) -> impl Iterator<Item = (&(IpAddr, u32), &ExporterCounters)> {
        self.exporters.iter()
    }

    /// Takes the counters accumulated since the last drain as rows for `minute` (Unix seconds,
    /// start of the minute) and resets them; sequence state is kept.
    pub fn drain(&mut self, minute: u32) -> Vec<ExporterStatsRow> {
        let mut rows = Vec::new();
        for ((exporter, domain), counters) in &mut self.exporters {
            if counters.datagrams == 0 && counters.errors.is_empty() && counters.records_lost == 0 {
                continue;
            }
            rows.push(ExporterStatsRow {
                minute,
                exporter_address: to_v6(*exporter),
                observation_domain: *domain,
                flow_type: counters.flow_type,
                datagrams: counters.datagrams,
                records: counters.records,
                records_lost: counters.records_lost,
                decode_error_kinds: counters.errors.keys().map(|k| k.as_str().to_owned()).collect(),
                decode_error_counts: counters.errors.values().copied().collect(),
                templates_known: counters.templates_known,
            });
            counters.datagrams = 0;
            counters.records = 0;
            counters.records_lost = 0;
            counters.errors.clear();
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exporter() -> IpAddr {
        IpAddr::from([192, 0, 2, 1])
    }

    #[test]
    fn record_sequence_counts_gap_in_records() {
        let mut acc = Accounting::default();
        let seq = |s| Some((SequenceKind::Records, s));
        assert_eq!(
            acc.datagram(exporter(), 0, FlowType::Netflow5, 0, seq(100), 30, None),
            0
        );
        assert_eq!(
            acc.datagram(exporter(), 0, FlowType::Netflow5, 0, seq(130), 30, None),
            0
        );
        // 30 records (one datagram) missing.
        assert_eq!(
            acc.datagram(exporter(), 0, FlowType::Netflow5, 0, seq(190), 30, None),
            30
        );
        let rows = acc.drain(60);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].datagrams, rows[0].records, rows[0].records_lost),
            (3, 90, 30)
        );
    }

    #[test]
    fn datagram_sequence_estimates_records_from_mean() {
        let mut acc = Accounting::default();
        let seq = |s| Some((SequenceKind::Datagrams, s));
        acc.datagram(exporter(), 7, FlowType::Netflow9, 0, seq(1), 10, None);
        acc.datagram(exporter(), 7, FlowType::Netflow9, 0, seq(2), 10, None);
        assert_eq!(
            acc.datagram(exporter(), 7, FlowType::Netflow9, 0, seq(5), 10, None),
            20
        );
    }

    #[test]
    fn wraparound_and_reordering_are_not_loss() {
        let mut acc = Accounting::default();
        let seq = |s| Some((SequenceKind::Datagrams, s));
        acc.datagram(exporter(), 0, FlowType::Sflow5, 0, seq(u32::MAX), 1, None);
        assert_eq!(
            acc.datagram(exporter(), 0, FlowType::Sflow5, 0, seq(0), 1, None),
            0
        );
        assert_eq!(
            acc.datagram(exporter(), 0, FlowType::Sflow5, 0, seq(2), 1, None),
            1
        );
        // Late arrival of 1: not loss, and the window does not move back.
        assert_eq!(
            acc.datagram(exporter(), 0, FlowType::Sflow5, 0, seq(1), 1, None),
            0
        );
        assert_eq!(
            acc.datagram(exporter(), 0, FlowType::Sflow5, 0, seq(3), 1, None),
            0
        );
        // Restart (jump back to 0): not loss.
        assert_eq!(
            acc.datagram(exporter(), 0, FlowType::Sflow5, 0, seq(0), 1, None),
            0
        );
    }

    #[test]
    fn drain_resets_counts_but_keeps_sequence() {
        let mut acc = Accounting::default();
        acc.datagram(
            exporter(),
            0,
            FlowType::Ipfix,
            0,
            Some((SequenceKind::Records, 0)),
            5,
            None,
        );
        acc.error(exporter(), 0, FlowType::Ipfix, DecodeErrorKind::Malformed);
        let rows = acc.drain(0);
        assert_eq!(rows[0].decode_error_kinds, vec!["malformed".to_owned()]);
        assert!(acc.drain(60).is_empty());
        assert_eq!(
            acc.datagram(
                exporter(),
                0,
                FlowType::Ipfix,
                0,
                Some((SequenceKind::Records, 5)),
                5,
                None
            ),
            0
        );
    }
}
