//! Self-metrics: every counter a user needs to trust the numbers, in Prometheus text format.
//!
//! The names are a stable interface (scripts and benchmarks read them):
//! `egress_datagrams_received_total`, `egress_records_decoded_total{protocol}`,
//! `egress_records_written_total`, `egress_records_dropped_total{reason}`,
//! `egress_decode_errors_total{kind}`, `egress_datagrams_dropped_total{reason}`, plus the
//! gauges and histograms registered below.
//! Labelled counters are resolved once into handles ([`Metrics::decoded`], ...) so the receive
//! path only does atomic adds.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::decode::DecodeErrorKind;
use crate::normalise::FlowType;

type Labels = Vec<(&'static str, &'static str)>;

/// Why records were dropped; the `reason` label of `egress_records_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The writer's queue was full (ClickHouse slower than the input).
    QueueFull,
    /// ClickHouse rejected the batch with an error a retry cannot fix.
    SinkRejected,
    /// The process was stopping and the last batches could not be written in time (only
    /// without a spool; with one they stay on disk).
    Shutdown,
    /// The disk spool reached `spool.max_bytes` and its oldest batches were deleted.
    SpoolFull,
    /// The exporter sent more than `collector.max_records_per_second_per_exporter`: the record
    /// was skipped and a kept record of the same exporter stands for it (raised
    /// `sampling_rate`).
    RateLimit,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        Self::QueueFull,
        Self::SinkRejected,
        Self::Shutdown,
        Self::SpoolFull,
        Self::RateLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::SinkRejected => "sink_rejected",
            Self::Shutdown => "shutdown",
            Self::SpoolFull => "spool_full",
            Self::RateLimit => "rate_limit",
        }
    }
}

/// Why whole datagrams were dropped before decoding; the `reason` label of
/// `egress_datagrams_dropped_total`. (Datagrams the kernel dropped are
/// `egress_kernel_receive_drops`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramDropReason {
    /// The source is outside `collector.allowed_exporters`.
    NotAllowed,
    /// A new source while the worker tracked `collector.max_exporters` active exporters.
    TooManyExporters,
}

impl DatagramDropReason {
    pub const ALL: [DatagramDropReason; 2] = [Self::NotAllowed, Self::TooManyExporters];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAllowed => "not_allowed",
            Self::TooManyExporters => "too_many_exporters",
        }
    }
}

/// All of the collector's metrics. Cheap to clone (every metric is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub datagrams_received: Counter,
    pub bytes_received: Counter,
    decoded: Family<Labels, Counter>,
    decode_errors: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    datagrams_dropped: Family<Labels, Counter>,
    pub rate_limited_records: Counter,
    pub exporters_tracked: Gauge,
    pub exporters_evicted: Counter,
    pub queue_capacity_chunks: Gauge,
    pub records_written: Counter,
    pub counter_samples_written: Counter,
    pub exporter_stats_written: Counter,
    pub records_lost: Counter,
    pub kernel_receive_drops: Gauge,
    pub receive_buffer_bytes: Gauge,
    pub templates_known: Gauge,
    pub held_sets: Gauge,
    pub queue_chunks: Gauge,
    pub insert_seconds: Histogram,
    pub insert_failures: Counter,
    /// Flow records written to the disk spool (each counted once, when spooled).
    pub records_spooled: Counter,
    /// Flow records of insert attempts that failed after reaching ClickHouse (the connection
    /// broke or timed out mid-insert): the server may have stored them, and the retry may store
    /// them a second time (see `SinkError::may_have_been_stored`).
    pub records_insert_uncertain: Counter,
    /// Bytes of batches waiting in the disk spool.
    pub spool_bytes: Gauge,
    /// Batches waiting in the disk spool.
    pub spool_batches: Gauge,
    /// Spool segments found corrupt and set aside.
    pub spool_corrupt_segments: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let datagrams_received = Counter::default();
        let bytes_received = Counter::default();
        let decoded = Family::<Labels, Counter>::default();
        let decode_errors = Family::<Labels, Counter>::default();
        let dropped = Family::<Labels, Counter>::default();
        let datagrams_dropped = Family::<Labels, Counter>::default();
        let rate_limited_records = Counter::default();
        let exporters_tracked = Gauge::default();
        let exporters_evicted = Counter::default();
        let queue_capacity_chunks = Gauge::default();
        let records_written = Counter::default();
        let counter_samples_written = Counter::default();
        let exporter_stats_written = Counter::default();
        let records_lost = Counter::default();
        let kernel_receive_drops = Gauge::default();
        let receive_buffer_bytes = Gauge::default();
        let templates_known = Gauge::default();
        let held_sets = Gauge::default();
        let queue_chunks = Gauge::default();
        let insert_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let insert_failures = Counter::default();
        let records_spooled = Counter::default();
        let records_insert_uncertain = Counter::default();
        let spool_bytes = Gauge::default();
        let spool_batches = Gauge::default();
        let spool_corrupt_segments = Counter::default();
        registry.register(
            "egress_records_spooled",
            "Flow records written to the disk spool while ClickHouse was down or slow",
            records_spooled.clone(),
        );
        registry.register(
            "egress_records_insert_uncertain",
            "Flow records of inserts that failed after reaching ClickHouse (connection broken or timed out mid-insert); they are retried, and a server without insert deduplication (ClickHouse before 21.1, or a cluster) may then hold them twice",
            records_insert_uncertain.clone(),
        );
        registry.register(
            "egress_spool_bytes",
            "Bytes of batches waiting in the disk spool",
            spool_bytes.clone(),
        );
        registry.register(
            "egress_spool_batches",
            "Batches waiting in the disk spool",
            spool_batches.clone(),
        );
        registry.register(
            "egress_spool_corrupt_segments",
            "Disk spool segments found corrupt (checksum or length) and set aside",
            spool_corrupt_segments.clone(),
        );

        registry.register(
            "egress_datagrams_received",
            "UDP datagrams received from exporters",
            datagrams_received.clone(),
        );
        registry.register(
            "egress_bytes_received",
            "UDP payload bytes received from exporters",
            bytes_received.clone(),
        );
        registry.register(
            "egress_records_decoded",
            "Flow records and counter samples decoded, by protocol",
            decoded.clone(),
        );
        registry.register(
            "egress_decode_errors",
            "Datagrams or parts of datagrams that could not be decoded, by kind",
            decode_errors.clone(),
        );
        registry.register(
            "egress_records_dropped",
            "Decoded records that were not stored, by reason",
            dropped.clone(),
        );
        registry.register(
            "egress_datagrams_dropped",
            "Datagrams dropped before decoding, by reason (not_allowed, too_many_exporters)",
            datagrams_dropped.clone(),
        );
        registry.register(
            "egress_exporter_rate_limited_records",
            "Records kept with a sampling_rate the collector raised because their exporter was above \
             its record-rate limit (the skipped ones are egress_records_dropped_total{reason=\"rate_limit\"})",
            rate_limited_records.clone(),
        );
        registry.register(
            "egress_exporters_tracked",
            "Exporters the receive workers keep state for, summed over workers",
            exporters_tracked.clone(),
        );
        registry.register(
            "egress_exporters_evicted",
            "Idle exporters evicted to make room for new sources (collector.max_exporters)",
            exporters_evicted.clone(),
        );
        registry.register(
            "egress_queue_capacity_chunks",
            "Chunks the queue to the writer holds at most (collector.queue_chunks within collector.max_queue_bytes)",
            queue_capacity_chunks.clone(),
        );
        registry.register(
            "egress_records_written",
            "Flow records written to the sink (ClickHouse flows table)",
            records_written.clone(),
        );
        registry.register(
            "egress_counter_samples_written",
            "Interface counter samples written to the sink",
            counter_samples_written.clone(),
        );
        registry.register(
            "egress_exporter_stats_written",
            "exporter_stats rows written to the sink",
            exporter_stats_written.clone(),
        );
        registry.register(
            "egress_records_lost",
            "Records the exporters' sequence numbers say were sent but never arrived",
            records_lost.clone(),
        );
        registry.register(
            "egress_kernel_receive_drops",
            "Datagrams the kernel dropped because a receive buffer was full (from /proc/net/udp)",
            kernel_receive_drops.clone(),
        );
        registry.register(
            "egress_socket_receive_buffer_bytes",
            "Receive buffer the kernel granted, summed over sockets",
            receive_buffer_bytes.clone(),
        );
        registry.register(
            "egress_templates_known",
            "NetFlow v9 / IPFIX templates known, summed over workers",
            templates_known.clone(),
        );
        registry.register(
            "egress_held_data_sets",
            "Data sets held while their template is missing",
            held_sets.clone(),
        );
        registry.register(
            "egress_queue_chunks",
            "Chunks of records waiting for the writer",
            queue_chunks.clone(),
        );
        registry.register(
            "egress_sink_insert_seconds",
            "Latency of successful inserts",
            insert_seconds.clone(),
        );
        registry.register(
            "egress_sink_insert_failures",
            "Insert attempts that failed (each is retried or counted as dropped)",
            insert_failures.clone(),
        );

        let metrics = Self {
            registry: Arc::new(registry),
            datagrams_received,
            bytes_received,
            decoded,
            decode_errors,
            dropped,
            datagrams_dropped,
            rate_limited_records,
            exporters_tracked,
            exporters_evicted,
            queue_capacity_chunks,
            records_written,
            counter_samples_written,
            exporter_stats_written,
            records_lost,
            kernel_receive_drops,
            receive_buffer_bytes,
            templates_known,
            held_sets,
            queue_chunks,
            insert_seconds,
            insert_failures,
            records_spooled,
            records_insert_uncertain,
            spool_bytes,
            spool_batches,
            spool_corrupt_segments,
        };
        // Pre-register every label value so the series exist (at 0) from the start.
        for protocol in FlowType::ALL.into_iter().filter(|t| *t != FlowType::Unknown) {
            metrics.decoded(protocol);
        }
        for kind in DecodeErrorKind::ALL {
            metrics.decode_error(kind);
        }
        for reason in DropReason::ALL {
            metrics.dropped(reason);
        }
        for reason in DatagramDropReason::ALL {
            metrics.datagram_dropped(reason);
        }
        metrics
    }

    /// The `egress_records_decoded_total{protocol}` counter.
    pub fn decoded(&self, protocol: FlowType) -> Counter {
        self.decoded
            .get_or_create_owned(&vec![("protocol", protocol.as_str())])
    }

    /// The `egress_decode_errors_total{kind}` counter.
    pub fn decode_error(&self, kind: DecodeErrorKind) -> Counter {
        self.decode_errors
            .get_or_create_owned(&vec![("kind", kind.as_str())])
    }

    /// The `egress_records_dropped_total{reason}` counter.
    pub fn dropped(&self, reason: DropReason) -> Counter {
        self.dropped
            .get_or_create_owned(&vec![("reason", reason.as_str())])
    }

    /// The `egress_datagrams_dropped_total{reason}` counter.
    pub fn datagram_dropped(&self, reason: DatagramDropReason) -> Counter {
        self.datagrams_dropped
            .get_or_create_owned(&vec![("reason", reason.as_str())])
    }

    /// Everything, in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_names_are_exposed() {
        let metrics = Metrics::new();
        metrics.datagrams_received.inc_by(3);
        metrics.decoded(FlowType::Ipfix).inc_by(7);
        metrics.dropped(DropReason::QueueFull).inc();
        let text = metrics.render();
        for line in [
            "egress_datagrams_received_total 3",
            "egress_records_decoded_total{protocol=\"ipfix\"} 7",
            "egress_records_written_total 0",
            "egress_records_dropped_total{reason=\"queue_full\"} 1",
            "egress_records_dropped_total{reason=\"rate_limit\"} 0",
            "egress_datagrams_dropped_total{reason=\"not_allowed\"} 0",
            "egress_datagrams_dropped_total{reason=\"too_many_exporters\"} 0",
            "egress_exporter_rate_limited_records_total 0",
            "egress_exporters_evicted_total 0",
            "egress_decode_errors_total{kind=\"truncated\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }
}
