//! Exporter controls, inside each receive worker: which exporters are admitted, and how many of
//! their records per second are kept.
//!
//! In: the source address of each datagram (before decoding), then the decoded flow records of
//! an admitted datagram. Out: an [`Admission`] verdict per datagram, and the flow records that
//! are kept, each with the factor by which its `sampling_rate` must be raised.
//!
//! - **Allow-list** (`collector.allowed_exporters`): a datagram whose source is outside every
//!   listed prefix is dropped before decoding. Empty list: everyone is admitted. A WARN names
//!   each refused source at most once a minute ([`MAX_NAMED_PER_MINUTE`] sources a minute; the
//!   rest are summed up in one line).
//! - **Exporters tracked** (`collector.max_exporters`, per worker): the worker keeps state for
//!   at most this many exporters (its own and the decoder's grow with each new source, so a
//!   flood from spoofed sources must not grow them without bound). When the table is full, an
//!   exporter idle for [`EXPORTER_IDLE_SECONDS`] is evicted (at most one sweep a second); if
//!   none is, the new source's datagram is dropped (`too_many_exporters`).
//! - **Record-rate limit** (`collector.max_records_per_second_per_exporter`, overridden per
//!   address by `collector.max_records_per_second_by_exporter`; 0: no limit): above the limit,
//!   the worker keeps 1 record in N, N = the exporter's records in the previous second divided
//!   by the limit, rounded up (raised during a second as soon as the records seen in it exceed
//!   N × limit, and to [`OVER_BUDGET_FACTOR`] times that once `limit` records of the second are
//!   kept). Each kept record stands for itself and the records skipped since the last kept
//!   one, so its `sampling_rate` is multiplied by that count: `bytes × sampling_rate` still
//!   estimates the volume on the wire, and every skipped record is represented by exactly one
//!   kept record (only the last N − 1 of a burst may be left unrepresented). In steady state at
//!   most `limit` records a second are kept; in a second whose rate jumps by a factor J over
//!   the second before (or in the first second of a burst, J = rate / limit) at most about
//!   `limit × (1 + ln(J) / OVER_BUDGET_FACTOR)`. The sample is systematic (every N-th record), which is uniform as
//!   long as record sizes do not repeat with period N.
//!
//! Nothing here needs flushing at shutdown.

use crate::FastMap;
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use tracing::warn;

use crate::config::CollectorConfig;
use crate::normalise::FlowRecord;

/// An exporter silent for this long may be evicted when the table of exporters is full.
pub const EXPORTER_IDLE_SECONDS: u32 = 600;
/// Once a second's `limit` records are kept, the rest of the second is sampled this much more
/// coarsely than its rate so far asks, so a burst within a second overshoots the limit little.
pub const OVER_BUDGET_FACTOR: u64 = 4;
/// Refused sources named in WARN lines per worker and minute; further ones are only counted.
pub const MAX_NAMED_PER_MINUTE: usize = 16;

/// What happens to a datagram, decided from its source before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Decode it.
    Admitted,
    /// The source is outside `collector.allowed_exporters`.
    NotAllowed,
    /// A new source while the worker already tracks `collector.max_exporters` active ones.
    TooManyExporters,
}

/// What the record-rate limit did to one datagram's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limited {
    /// Records removed (each is represented by a kept record with a raised `sampling_rate`).
    pub skipped: u64,
    /// Kept records whose `sampling_rate` is raised (factor above 1).
    pub raised: u64,
}

/// Per-exporter state of one worker.
#[derive(Debug)]
struct ExporterState {
    /// Collector clock of the last datagram, Unix seconds.
    last_seen: u32,
    /// Records per second above which this exporter is sampled; 0: never.
    limit: u64,
    limiter: RecordLimiter,
    /// Minute (Unix seconds / 60) of the last "above the limit" warning.
    warned_minute: Option<u32>,
}

/// The deterministic 1-in-N sampler of one exporter (see the module header).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordLimiter {
    /// The second (Unix) `seen` counts.
    second: u32,
    /// Records seen in `second`.
    seen: u64,
    /// Records kept in `second`.
    kept: u64,
    /// Keep 1 record in this many.
    every: u64,
    /// Records since the last kept one (this one included once it is counted).
    run: u64,
}

impl RecordLimiter {
    /// Counts one record seen at `now` and returns `Some(factor)` if it is kept, the factor
    /// being the number of records it stands for (1 below the limit).
    pub fn keep(&mut self, now: u32, limit: u64) -> Option<u64> {
        if now != self.second {
            let previous = if now == self.second.wrapping_add(1) {
                self.seen
            } else {
                0
            };
            self.every = previous.div_ceil(limit).max(1);
            self.second = now;
            self.seen = 0;
            self.kept = 0;
        }
        self.seen += 1;
        let mut every = self.seen.div_ceil(limit);
        if self.kept >= limit {
            every = every.saturating_mul(OVER_BUDGET_FACTOR);
        }
        self.every = self.every.max(every);
        self.run += 1;
        if self.run >= self.every {
            self.kept += 1;
            Some(std::mem::take(&mut self.run))
        } else {
            None
        }
    }
}

/// The exporter controls of one receive worker.
#[derive(Debug)]
pub struct ExporterControls {
    allowed: Vec<IpNet>,
    default_limit: u64,
    limits: BTreeMap<IpAddr, u64>,
    max_exporters: usize,
    exporters: FastMap<IpAddr, ExporterState>,
    /// Second of the last sweep for idle exporters.
    last_sweep: u32,
    /// Exporters evicted since the last [`ExporterControls::take_evicted`].
    evicted: u64,
    refused: RefusedLog,
    /// Scratch: the limiter's verdict per record of the datagram in hand.
    verdicts: Vec<Option<u64>>,
}

impl ExporterControls {
    /// The controls `config` asks for.
    pub fn new(config: &CollectorConfig) -> Self {
        Self {
            allowed: config.allowed_exporters.clone(),
            default_limit: config.max_records_per_second_per_exporter,
            limits: config
                .max_records_per_second_by_exporter
                .iter()
                .map(|(address, limit)| (address.to_canonical(), *limit))
                .collect(),
            max_exporters: config.max_exporters.max(1),
            exporters: FastMap::default(),
            last_sweep: 0,
            evicted: 0,
            refused: RefusedLog::default(),
            verdicts: Vec::new(),
        }
    }

    /// Decides on a datagram from `exporter` received at `now` (Unix seconds).
    pub fn admit(&mut self, exporter: IpAddr, now: u32) -> Admission {
        let exporter = exporter.to_canonical();
        if let Some(state) = self.exporters.get_mut(&exporter) {
            state.last_seen = now;
            return Admission::Admitted;
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|net| net.contains(&exporter)) {
            self.refused.refused(exporter, now);
            return Admission::NotAllowed;
        }
        if self.exporters.len() >= self.max_exporters && now != self.last_sweep {
            self.last_sweep = now;
            let before = self.exporters.len();
            self.exporters
                .retain(|_, state| now.saturating_sub(state.last_seen) < EXPORTER_IDLE_SECONDS);
            self.evicted += (before - self.exporters.len()) as u64;
        }
        if self.exporters.len() >= self.max_exporters {
            return Admission::TooManyExporters;
        }
        let limit = self.limits.get(&exporter).copied().unwrap_or(self.default_limit);
        self.exporters.insert(
            exporter,
            ExporterState {
                last_seen: now,
                limit,
                limiter: RecordLimiter::default(),
                warned_minute: None,
            },
        );
        Admission::Admitted
    }

    /// Applies `exporter`'s record-rate limit to the flow records of one of its datagrams
    /// (received at `now`), `flows[first..]` (the records before `first` are other datagrams'
    /// and stay as they are): removes the skipped records and leaves in `factors` one factor
    /// per kept record (empty when every factor is 1), by which the caller raises the record's
    /// `sampling_rate` once enrichment has set it.
    pub fn limit(
        &mut self,
        exporter: IpAddr,
        now: u32,
        flows: &mut Vec<FlowRecord>,
        first: usize,
        factors: &mut Vec<u64>,
    ) -> Limited {
        factors.clear();
        let exporter = exporter.to_canonical();
        let Some(state) = self.exporters.get_mut(&exporter) else {
            return Limited::default();
        };
        let first = first.min(flows.len());
        if state.limit == 0 || flows.len() == first {
            return Limited::default();
        }
        let limit = state.limit;
        let mut outcome = Limited::default();
        let kept = &mut self.verdicts;
        kept.clear();
        kept.extend((first..flows.len()).map(|_| state.limiter.keep(now, limit)));
        if kept.iter().all(|k| *k == Some(1)) {
            return outcome;
        }
        let mut write = first;
        for (read, verdict) in (first..flows.len()).zip(kept.iter()) {
            if verdict.is_some() {
                flows.swap(write, read);
                write += 1;
            }
        }
        flows.truncate(write);
        factors.extend(kept.iter().flatten());
        outcome.skipped = (kept.len() - factors.len()) as u64;
        outcome.raised = factors.iter().filter(|f| **f > 1).count() as u64;
        let minute = now / 60;
        if state.warned_minute != Some(minute) {
            state.warned_minute = Some(minute);
            warn!(
                %exporter,
                limit,
                keep_one_in = state.limiter.every,
                "exporter above collector.max_records_per_second_per_exporter: its records are sampled and their sampling_rate raised"
            );
        }
        outcome
    }

    /// Exporters this worker tracks.
    pub fn tracked(&self) -> usize {
        self.exporters.len()
    }

    /// Exporters evicted since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }
}

/// Raises the `sampling_rate` of each record by its factor from [`ExporterControls::limit`].
pub fn raise_sampling_rates(flows: &mut [FlowRecord], factors: &[u64]) {
    for (record, factor) in flows.iter_mut().zip(factors) {
        record.sampling_rate = record.sampling_rate.saturating_mul(*factor);
    }
}

/// The once-a-minute WARN lines about refused sources.
#[derive(Debug, Default)]
struct RefusedLog {
    minute: u32,
    named: Vec<IpAddr>,
    /// Datagrams from sources not named this minute.
    unnamed_datagrams: u64,
}

impl RefusedLog {
    fn refused(&mut self, exporter: IpAddr, now: u32) {
        let minute = now / 60;
        if minute != self.minute {
            if self.unnamed_datagrams > 0 {
                warn!(
                    datagrams = self.unnamed_datagrams,
                    "further datagrams from sources outside collector.allowed_exporters dropped in the last minute"
                );
            }
            self.minute = minute;
            self.named.clear();
            self.unnamed_datagrams = 0;
        }
        if self.named.contains(&exporter) {
            return;
        }
        if self.named.len() < MAX_NAMED_PER_MINUTE {
            self.named.push(exporter);
            warn!(%exporter, "datagram from a source outside collector.allowed_exporters dropped (logged once a minute per source)");
        } else {
            self.unnamed_datagrams += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::FlowType;

    fn config(allowed: &[&str], limit: u64, max_exporters: usize) -> CollectorConfig {
        CollectorConfig {
            allowed_exporters: allowed.iter().map(|n| n.parse().expect("prefix")).collect(),
            max_records_per_second_per_exporter: limit,
            max_exporters,
            ..CollectorConfig::default()
        }
    }

    fn address(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn allow_list_admits_listed_prefixes_of_both_families_and_mapped_addresses() {
        let mut controls = ExporterControls::new(&config(&["192.0.2.0/24", "2001:db8::/32"], 0, 10));
        assert_eq!(controls.admit(address("192.0.2.7"), 0), Admission::Admitted);
        assert_eq!(
            controls.admit(address("::ffff:192.0.2.8"), 0),
            Admission::Admitted
        );
        assert_eq!(controls.admit(address("2001:db8:1::1"), 0), Admission::Admitted);
        assert_eq!(controls.admit(address("198.51.100.1"), 0), Admission::NotAllowed);
        assert_eq!(controls.admit(address("2001:db9::1"), 0), Admission::NotAllowed);
        assert_eq!(controls.tracked(), 3, "refused sources are not tracked");
        let mut everyone = ExporterControls::new(&config(&[], 0, 10));
        assert_eq!(everyone.admit(address("198.51.100.1"), 0), Admission::Admitted);
    }

    #[test]
    fn exporters_beyond_the_bound_are_refused_until_an_idle_one_is_evicted() {
        let mut controls = ExporterControls::new(&config(&[], 0, 2));
        assert_eq!(controls.admit(address("192.0.2.1"), 100), Admission::Admitted);
        assert_eq!(controls.admit(address("192.0.2.2"), 100), Admission::Admitted);
        assert_eq!(
            controls.admit(address("192.0.2.3"), 101),
            Admission::TooManyExporters
        );
        // Known exporters keep being admitted.
        assert_eq!(
            controls.admit(address("192.0.2.1"), 102 + EXPORTER_IDLE_SECONDS),
            Admission::Admitted
        );
        // 192.0.2.2 has been idle long enough: it makes room.
        assert_eq!(
            controls.admit(address("192.0.2.3"), 103 + EXPORTER_IDLE_SECONDS),
            Admission::Admitted
        );
        assert_eq!(controls.take_evicted(), 1);
        assert_eq!(controls.tracked(), 2);
    }

    /// Limit 1000/s, 10 000 records a second for 10 seconds, then 500 a second.
    #[test]
    fn limiter_keeps_the_limit_and_every_record_is_represented_once() {
        let mut limiter = RecordLimiter::default();
        let mut kept_per_second = Vec::new();
        let mut represented = 0u64;
        for second in 1000..1010u32 {
            let mut kept = 0u64;
            for _ in 0..10_000 {
                if let Some(factor) = limiter.keep(second, 1000) {
                    kept += 1;
                    represented += factor;
                }
            }
            kept_per_second.push(kept);
        }
        // The first second ramps up N; later seconds keep exactly the limit.
        assert!(kept_per_second[0] <= 1600, "{kept_per_second:?}");
        assert!(
            kept_per_second[1..].iter().all(|k| *k == 1000),
            "{kept_per_second:?}"
        );
        // Only the records skipped since the last kept one (fewer than N = 10) are not yet
        // represented: the next kept record stands for them.
        assert!((99_991..=100_000).contains(&represented), "{represented}");
        let mut quiet = 0;
        for _ in 0..500 {
            if let Some(factor) = limiter.keep(1011, 1000) {
                quiet += 1;
                represented += factor;
            }
        }
        assert_eq!(quiet, 500, "below the limit after a gap: every record is kept");
        assert_eq!(represented, 100_500, "every record counted once");
    }

    #[test]
    fn limit_removes_skipped_records_and_reports_factors() {
        let mut controls = ExporterControls::new(&config(&[], 10, 10));
        let exporter = address("192.0.2.1");
        assert_eq!(controls.admit(exporter, 50), Admission::Admitted);
        let mut factors = Vec::new();
        let mut flows: Vec<FlowRecord> = (0..100u64)
            .map(|i| {
                let mut record = FlowRecord::new(exporter, 50, FlowType::Ipfix);
                record.bytes = i;
                record.sampling_rate = 100;
                record
            })
            .collect();
        let outcome = controls.limit(exporter, 50, &mut flows, 0, &mut factors);
        assert_eq!(flows.len(), factors.len());
        assert_eq!(outcome.skipped, 100 - flows.len() as u64);
        let represented: u64 = factors.iter().sum();
        assert!(
            // Only the records after the last kept one, fewer than N (at most 4 × 100 / 10).
            (61..=100).contains(&represented),
            "the kept records stand for all 100 but the last few skipped: {represented}"
        );
        assert!(flows.len() < 40, "{} kept", flows.len());
        assert!(flows.windows(2).all(|w| w[0].bytes < w[1].bytes), "kept in order");
        raise_sampling_rates(&mut flows, &factors);
        assert!(flows
            .iter()
            .zip(&factors)
            .all(|(r, f)| r.sampling_rate == 100 * f));
        // Below the limit nothing changes and no factors are reported.
        let other = address("192.0.2.2");
        controls.admit(other, 50);
        let mut few = vec![FlowRecord::new(other, 50, FlowType::Ipfix); 5];
        assert_eq!(
            controls.limit(other, 50, &mut few, 0, &mut factors),
            Limited::default()
        );
        assert_eq!(few.len(), 5);
        assert!(factors.is_empty());
        // Records of earlier datagrams in the same vector are left alone.
        let mut chunk = vec![FlowRecord::new(other, 49, FlowType::Ipfix); 3];
        chunk.extend((0..100u64).map(|i| {
            let mut record = FlowRecord::new(exporter, 51, FlowType::Ipfix);
            record.bytes = i;
            record
        }));
        let outcome = controls.limit(exporter, 51, &mut chunk, 3, &mut factors);
        assert!(chunk[..3]
            .iter()
            .all(|r| r.exporter_address == FlowRecord::new(other, 0, FlowType::Ipfix).exporter_address));
        assert_eq!(chunk.len() - 3, factors.len());
        assert_eq!(outcome.skipped, 103 - chunk.len() as u64);
        assert!(chunk[3..].windows(2).all(|w| w[0].bytes < w[1].bytes));
    }

    #[test]
    fn per_exporter_override_replaces_the_default_limit() {
        let mut config = config(&[], 0, 10);
        config
            .max_records_per_second_by_exporter
            .insert(address("192.0.2.9"), 1);
        let mut controls = ExporterControls::new(&config);
        let mut factors = Vec::new();
        for (exporter, expected_kept) in [("192.0.2.9", 1), ("192.0.2.10", 20)] {
            let exporter = address(exporter);
            controls.admit(exporter, 7);
            let mut flows = vec![FlowRecord::new(exporter, 7, FlowType::Ipfix); 20];
            controls.limit(exporter, 7, &mut flows, 0, &mut factors);
            assert!(flows.len() <= expected_kept, "{exporter}: {} kept", flows.len());
        }
    }
}
