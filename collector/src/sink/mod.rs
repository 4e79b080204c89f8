//! Sink: closed batches in, rows in storage out.
//!
//! [`SinkWriter`] takes batches from the batcher in order and inserts each one with
//! [`Sink::insert`]. A batch that fails with a retryable error (ClickHouse down, timeout, 5xx)
//! is kept and retried with exponential backoff (`batch.retry_initial_ms` doubling up to
//! `batch.retry_max_ms`) for as long as the collector runs; nothing behind it is inserted
//! first, so order is kept. A batch rejected for a reason a retry cannot fix (schema
//! mismatch) is counted as `egress_records_dropped_total{reason="sink_rejected"}` and logged at
//! ERROR. At shutdown the writer drains its input and keeps retrying for at most
//! `batch.shutdown_timeout_seconds`; what is still unwritten then is counted as `shutdown`.
//!
//! Every insert attempt is a `sink_insert` span (table, rows, estimated bytes, attempt,
//! outcome), one per batch and attempt, never per record: exported as a trace when the binary
//! has an OTLP endpoint (`[telemetry]`).

pub mod clickhouse;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, field, info, info_span, warn, Instrument};

use crate::batch::Batch;
use crate::config::BatchConfig;
use crate::metrics::{DropReason, Metrics};
use egress_query::schema::{EXPORTER_STATS_TABLE, FLOWS_TABLE, INTERFACE_COUNTERS_TABLE};

pub use self::clickhouse::{ClickHouseSink, SinkError};

/// Where batches go.
#[derive(Debug, Clone)]
pub enum Sink {
    ClickHouse(Box<ClickHouseSink>),
    /// Accepts and forgets everything (for measuring the collector alone).
    Null,
}

impl Sink {
    /// One insert attempt of a whole batch.
    pub async fn insert(&self, batch: &Batch) -> Result<(), SinkError> {
        let Sink::ClickHouse(sink) = self else {
            return Ok(());
        };
        match batch {
            Batch::Flows(rows) => sink.insert(FLOWS_TABLE, rows).await,
            Batch::Counters(rows) => sink.insert(INTERFACE_COUNTERS_TABLE, rows).await,
            Batch::Stats(rows) => sink.insert(EXPORTER_STATS_TABLE, rows).await,
        }
    }
}

/// The table a batch goes to.
fn table(batch: &Batch) -> &'static str {
    match batch {
        Batch::Flows(_) => FLOWS_TABLE,
        Batch::Counters(_) => INTERFACE_COUNTERS_TABLE,
        Batch::Stats(_) => EXPORTER_STATS_TABLE,
    }
}

/// The RowBinary size of a batch, estimated as the batcher does (rows × row size).
fn estimated_bytes(batch: &Batch) -> usize {
    match batch {
        Batch::Flows(rows) => std::mem::size_of_val(rows.as_slice()),
        Batch::Counters(rows) => std::mem::size_of_val(rows.as_slice()),
        Batch::Stats(rows) => std::mem::size_of_val(rows.as_slice()),
    }
}

/// The sink stage.
#[derive(Debug)]
pub struct SinkWriter {
    pub sink: Sink,
    pub metrics: Metrics,
    pub config: BatchConfig,
    /// When set, nothing is inserted before it says `true` (the schema migrations are done);
    /// batches wait in the queue meanwhile, so no insert races a migration.
    pub schema_ready: Option<tokio::sync::watch::Receiver<bool>>,
}

impl SinkWriter {
    /// Runs until `input` is closed and drained. `shutdown` starts the clock of
    /// `batch.shutdown_timeout_seconds` for retries.
    pub async fn run(self, mut input: mpsc::Receiver<Batch>, shutdown: CancellationToken) {
        if let Some(mut ready) = self.schema_ready.clone() {
            while !*ready.borrow_and_update() {
                tokio::select! {
                    changed = ready.changed() => if changed.is_err() { break },
                    // Stopping before the schema is ready: try anyway, within the shutdown timeout.
                    () = shutdown.cancelled() => break,
                }
            }
        }
        let mut stopping_since: Option<Instant> = None;
        while let Some(batch) = input.recv().await {
            let mut delay = Duration::from_millis(self.config.retry_initial_ms);
            let mut attempts = 0u32;
            loop {
                let started = Instant::now();
                let span = info_span!(
                    "sink_insert",
                    table = table(&batch),
                    rows = batch.len(),
                    bytes = estimated_bytes(&batch),
                    attempt = attempts + 1,
                    outcome = field::Empty,
                    error = field::Empty,
                    "otel.status_code" = field::Empty,
                );
                let result = self.sink.insert(&batch).instrument(span.clone()).await;
                span.record(
                    "outcome",
                    match &result {
                        Ok(()) => "written",
                        Err(err) if err.is_retryable() => "retryable_error",
                        Err(_) => "rejected",
                    },
                );
                if let Err(err) = &result {
                    span.record("error", field::display(err));
                    span.record("otel.status_code", "error");
                }
                // The span ends with the attempt, not after the backoff below.
                drop(span);
                match result {
                    Ok(()) => {
                        self.metrics
                            .insert_seconds
                            .observe(started.elapsed().as_secs_f64());
                        self.count_written(&batch);
                        if attempts > 0 {
                            info!(rows = batch.len(), attempts, "insert succeeded after retries");
                        }
                        break;
                    }
                    Err(err) if !err.is_retryable() => {
                        self.metrics.insert_failures.inc();
                        error!(rows = batch.len(), error = %err, "batch rejected by ClickHouse; rows dropped");
                        self.count_dropped(&batch, DropReason::SinkRejected);
                        break;
                    }
                    Err(err) => {
                        self.metrics.insert_failures.inc();
                        attempts += 1;
                        if shutdown.is_cancelled() {
                            let since = *stopping_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= Duration::from_secs(self.config.shutdown_timeout_seconds) {
                                error!(rows = batch.len(), error = %err, "shutting down with an unwritten batch; rows dropped");
                                self.count_dropped(&batch, DropReason::Shutdown);
                                break;
                            }
                        }
                        warn!(rows = batch.len(), attempts, retry_in_ms = delay.as_millis() as u64, error = %err, "insert failed; batch kept for retry");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
                        }
                        delay = (delay * 2).min(Duration::from_millis(self.config.retry_max_ms));
                    }
                }
            }
        }
    }

    fn count_written(&self, batch: &Batch) {
        let rows = batch.len() as u64;
        match batch {
            Batch::Flows(_) => self.metrics.records_written.inc_by(rows),
            Batch::Counters(_) => self.metrics.counter_samples_written.inc_by(rows),
            Batch::Stats(_) => self.metrics.exporter_stats_written.inc_by(rows),
        };
    }

    fn count_dropped(&self, batch: &Batch, reason: DropReason) {
        if !matches!(batch, Batch::Stats(_)) {
            self.metrics.dropped(reason).inc_by(batch.len() as u64);
        }
    }
}
