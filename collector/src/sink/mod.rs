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
//! With the disk spool (`[spool]`, on by default) up to `batch.inserts_in_flight` inserts run
//! at the same time, a batch that cannot be inserted now goes to disk instead of waiting in
//! memory, and the spool is replayed oldest first; see [`SinkWriter::run_spooled`] and
//! [`crate::spool`]. Without it, the behaviour above holds (one insert at a time, in order).
//!
//! Every insert attempt is a `sink_insert` span (table, rows, estimated bytes, attempt,
//! outcome), one per batch and attempt, never per record: exported as a trace when the binary
//! has an OTLP endpoint (`[telemetry]`).

pub mod clickhouse;

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, field, info, info_span, warn, Instrument};

use crate::batch::Batch;
use crate::config::BatchConfig;
use crate::metrics::{DropReason, Metrics};
use crate::spool::{Spool, Spooled};
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
            Batch::Flows(rows) => sink.insert_flows(FLOWS_TABLE, rows).await,
            Batch::EncodedFlows(encoded) => sink.insert_encoded_flows(FLOWS_TABLE, encoded).await,
            Batch::Counters(rows) => sink.insert_rows(INTERFACE_COUNTERS_TABLE, rows).await,
            Batch::Stats(rows) => sink.insert_rows(EXPORTER_STATS_TABLE, rows).await,
        }
    }
}

/// The table a batch goes to.
fn table(batch: &Batch) -> &'static str {
    match batch {
        Batch::Flows(_) | Batch::EncodedFlows(_) => FLOWS_TABLE,
        Batch::Counters(_) => INTERFACE_COUNTERS_TABLE,
        Batch::Stats(_) => EXPORTER_STATS_TABLE,
    }
}

/// The RowBinary size of a batch, estimated as the batcher does (rows × row size).
fn estimated_bytes(batch: &Batch) -> usize {
    match batch {
        Batch::Flows(rows) => rows.len() * std::mem::size_of::<crate::normalise::FlowRecord>(),
        Batch::EncodedFlows(encoded) => encoded.bytes.len(),
        Batch::Counters(rows) => rows.len() * std::mem::size_of::<crate::normalise::InterfaceCounterRecord>(),
        Batch::Stats(rows) => rows.len() * std::mem::size_of::<egress_query::schema::ExporterStatsRow>(),
    }
}

/// The sink stage.
#[derive(Debug)]
pub struct SinkWriter {
    pub sink: Sink,
    pub metrics: Metrics,
    pub config: BatchConfig,
    /// When set, nothing is inserted before it says `true` (the schema migrations are done);
    /// batches wait (in the spool, or in the queue without one) meanwhile, so no insert races
    /// a migration.
    pub schema_ready: Option<tokio::sync::watch::Receiver<bool>>,
    /// The disk spool; `None` keeps failed batches in memory only.
    pub spool: Option<Spool>,
}

/// Runs blocking file work of the spool without stalling other tasks on this worker thread.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Batches that wait in memory for a free insert slot (see [`SinkWriter::run_spooled`]). Two:
/// near the server's limit, with one, the batches that found it taken went through the disk
/// (written, read back: 14 % of the collector's CPU at 0.8 M sFlow samples/s); with two, sFlow
/// into ClickHouse stored all of 0.9 M samples/s. A batch is 15-18 MB at 100,000 rows; peak RSS
/// at 0.95 M IPFIX rows/s was 117-137 MiB with two waiting and one spare buffer (see
/// [`crate::batch::SPARE_BUFFERS`]), 155 MiB with two spare.
pub const WAITING_BATCHES: usize = 2;

impl SinkWriter {
    /// Runs until `input` is closed and drained. `shutdown` starts the clock of
    /// `batch.shutdown_timeout_seconds` for retries.
    pub async fn run(mut self, input: mpsc::Receiver<Batch>, shutdown: CancellationToken) {
        match self.spool.take() {
            Some(spool) => self.run_spooled(spool, input, shutdown).await,
            None => self.run_in_memory(input, shutdown).await,
        }
    }

    /// One insert attempt, as a `sink_insert` span; counts a success.
    async fn attempt(&self, batch: &Batch, attempt: u32) -> Result<(), SinkError> {
        let started = Instant::now();
        let span = info_span!(
            "sink_insert",
            table = table(batch),
            rows = batch.len(),
            bytes = estimated_bytes(batch),
            attempt = attempt,
            outcome = field::Empty,
            error = field::Empty,
            "otel.status_code" = field::Empty,
        );
        let result = self.sink.insert(batch).instrument(span.clone()).await;
        span.record(
            "outcome",
            match &result {
                Ok(()) => "written",
                Err(err) if err.is_retryable() => "retryable_error",
                Err(_) => "rejected",
            },
        );
        match &result {
            Ok(()) => {
                self.metrics
                    .insert_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.count_written(batch);
            }
            Err(err) => {
                span.record("error", field::display(err));
                span.record("otel.status_code", "error");
                self.metrics.insert_failures.inc();
                if err.may_have_been_stored() && batch.holds_flows() {
                    self.metrics.records_insert_uncertain.inc_by(batch.len() as u64);
                }
                if !err.is_retryable() {
                    error!(rows = batch.len(), error = %err, "batch rejected by ClickHouse; rows dropped");
                    self.count_dropped(batch, DropReason::SinkRejected);
                }
            }
        }
        result
    }

    /// Waits for the schema gate, if any. False when stopping first.
    async fn schema_gate(&self, shutdown: &CancellationToken) {
        if let Some(mut ready) = self.schema_ready.clone() {
            while !*ready.borrow_and_update() {
                tokio::select! {
                    changed = ready.changed() => if changed.is_err() { break },
                    // Stopping before the schema is ready: try anyway, within the shutdown timeout.
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }

    /// Without a spool: each batch is retried in place until it is written (order kept, the
    /// input queue absorbs the wait).
    async fn run_in_memory(self, mut input: mpsc::Receiver<Batch>, shutdown: CancellationToken) {
        self.schema_gate(&shutdown).await;
        let mut stopping_since: Option<Instant> = None;
        while let Some(batch) = input.recv().await {
            self.insert_with_retries(&batch, &shutdown, &mut stopping_since)
                .await;
        }
    }

    async fn insert_with_retries(
        &self,
        batch: &Batch,
        shutdown: &CancellationToken,
        stopping_since: &mut Option<Instant>,
    ) {
        let mut delay = Duration::from_millis(self.config.retry_initial_ms);
        let mut attempts = 0u32;
        loop {
            match self.attempt(batch, attempts + 1).await {
                Ok(()) => {
                    if attempts > 0 {
                        info!(rows = batch.len(), attempts, "insert succeeded after retries");
                    }
                    return;
                }
                Err(err) if !err.is_retryable() => return,
                Err(err) => {
                    attempts += 1;
                    if shutdown.is_cancelled() {
                        let since = *stopping_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= Duration::from_secs(self.config.shutdown_timeout_seconds) {
                            error!(rows = batch.len(), error = %err, "shutting down with an unwritten batch; rows dropped");
                            self.count_dropped(batch, DropReason::Shutdown);
                            return;
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

    /// With a spool (see [`crate::spool`]): up to `batch.inserts_in_flight` inserts run at the
    /// same time once the schema is ready and no retry is pending. A free slot takes a fresh
    /// batch first and otherwise the spool's oldest batch not already being replayed. A fresh
    /// batch whose insert fails with a retryable error goes to the spool; a replay that fails
    /// stays there; either sets off the exponential backoff of `batch.retry_*`, during which
    /// nothing new is sent.
    ///
    /// The input keeps moving during every insert, however long ClickHouse takes: while every
    /// slot is busy, the first [`WAITING_BATCHES`] batches that arrive wait in memory for the
    /// next free ones, any further one goes to the spool. So a slow server fills the spool, not
    /// the queues in front of it (which would drop records once full). Batches are therefore
    /// not always inserted in the order they were closed (nor finish in the order they were
    /// sent, with several in flight); nothing in the schema depends on that order.
    ///
    /// Fresh batches go before the spool's: after one slow insert, only the batches that
    /// arrived meanwhile take the trip through the disk (written, synced, read back), and the
    /// spool drains in the gaps between fresh batches. Were fresh batches queued behind a
    /// non-empty spool, every batch after a slow insert would take that trip until the spool
    /// emptied, costing CPU and disk the server needs to catch up. Dashboards and SLA
    /// evaluation see the present first, and the backlog fills in behind it (the rollups'
    /// hour closing recomputes an hour whose late rows arrive, see `egress_query::rollups`).
    ///
    /// At shutdown (the input has ended), the inserts in flight finish and replay goes on for
    /// at most `batch.shutdown_timeout_seconds`; what is left stays on disk for the next start
    /// (nothing is dropped).
    async fn run_spooled(
        self,
        mut spool: Spool,
        mut input: mpsc::Receiver<Batch>,
        shutdown: CancellationToken,
    ) {
        let slots = self.config.inserts_in_flight.max(1);
        let mut ready = self.schema_ready.clone();
        let mut is_ready = ready.as_mut().is_none_or(|r| *r.borrow_and_update());
        let mut backoff = Backoff::new(&self.config);
        // Set once the input has ended: replay stops then.
        let mut deadline: Option<Instant> = None;
        let mut waiting: std::collections::VecDeque<Batch> = std::collections::VecDeque::new();
        let mut in_flight: FuturesUnordered<Insert<'_>> = FuturesUnordered::new();
        // Sequence numbers of the spooled batches in flight.
        let mut replaying: Vec<u64> = Vec::new();
        self.update_spool_gauges(&spool);
        if !spool.is_empty() {
            info!(
                batches = spool.batches(),
                flow_records = spool.flow_records(),
                "spool holds batches from an earlier run; replaying them first"
            );
        }
        loop {
            let may_insert = is_ready && backoff.due();
            while may_insert && in_flight.len() < slots {
                if let Some(batch) = waiting.pop_front().or_else(|| input.try_recv().ok()) {
                    in_flight.push(self.start(Origin::Fresh, batch));
                    continue;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                match self.next_spooled(&mut spool, &replaying) {
                    Ok(Some(spooled)) => {
                        replaying.push(spooled.sequence);
                        in_flight.push(self.start(Origin::Spooled(spooled.sequence), spooled.batch));
                    }
                    Ok(None) => break,
                    Err(()) => {
                        backoff.failed_replay();
                        break;
                    }
                }
            }
            if !may_insert {
                while let Some(batch) = waiting.pop_front() {
                    self.spool_or_retry(&mut spool, batch, &shutdown).await;
                }
            }
            if let Some(deadline) = deadline {
                let replay_left = is_ready && !spool.is_empty() && Instant::now() < deadline;
                if in_flight.is_empty() && !replay_left {
                    break;
                }
            }
            // While stopping, a pending retry is not waited for past the deadline.
            let wake = backoff.retry_at.map(|at| deadline.map_or(at, |d| at.min(d)));
            tokio::select! {
                Some((origin, batch, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.finished(origin, batch, result, &mut spool, &mut replaying, &mut backoff, &shutdown)
                        .await;
                }
                arrived = input.recv(), if deadline.is_none() => match arrived {
                    None => {
                        deadline = Some(Instant::now() + Duration::from_secs(self.config.shutdown_timeout_seconds));
                    }
                    Some(batch) if waiting.len() < WAITING_BATCHES => waiting.push_back(batch),
                    Some(batch) => self.spool_or_retry(&mut spool, batch, &shutdown).await,
                },
                () = sleep_until_or_forever(wake) => {}
                changed = wait_changed(&mut ready), if !is_ready => is_ready = changed,
            }
        }
        if !spool.is_empty() {
            info!(
                batches = spool.batches(),
                flow_records = spool.flow_records(),
                bytes = spool.bytes(),
                "stopping with batches in the spool; they are replayed at the next start"
            );
        }
    }

    /// One insert attempt of `batch`, handing the batch back with the result.
    fn start(&self, origin: Origin, batch: Batch) -> Insert<'_> {
        Box::pin(async move {
            let result = self.attempt(&batch, 1).await;
            (origin, batch, result)
        })
    }

    /// What follows an insert of [`SinkWriter::run_spooled`]: a fresh batch that failed goes to
    /// the spool; a replayed one leaves the spool once written (or rejected for good, counted
    /// by [`SinkWriter::attempt`]) and stays there otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn finished(
        &self,
        origin: Origin,
        batch: Batch,
        result: Result<(), SinkError>,
        spool: &mut Spool,
        replaying: &mut Vec<u64>,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) {
        match (origin, result) {
            (Origin::Fresh, Err(err)) if err.is_retryable() => {
                warn!(rows = batch.len(), error = %err, retry_in_ms = backoff.delay.as_millis() as u64, "insert failed; batch spooled to disk");
                backoff.failed_fresh();
                self.spool_or_retry(spool, batch, shutdown).await;
            }
            (Origin::Fresh, _) => {}
            (Origin::Spooled(sequence), result) => {
                replaying.retain(|s| *s != sequence);
                match result {
                    Err(err) if err.is_retryable() => {
                        warn!(rows = batch.len(), error = %err, "replay from the spool failed; retrying later");
                        backoff.failed_replay();
                    }
                    // (If the spool reached its bound meanwhile and evicted this very segment,
                    // its rows were counted as `spool_full` although they are stored: a bound on
                    // the count's error, not a loss.)
                    _ => match blocking(|| spool.remove(sequence)) {
                        Ok(()) => {
                            self.update_spool_gauges(spool);
                            backoff.succeeded();
                        }
                        Err(err) => {
                            error!(error = %err, "cannot delete a replayed spool segment");
                            backoff.failed_replay();
                        }
                    },
                }
            }
        }
    }

    /// The spool's oldest batch not in `replaying`, read back (a corrupt segment is set aside
    /// and counted). `Err` when the spool cannot be read.
    fn next_spooled(&self, spool: &mut Spool, replaying: &[u64]) -> Result<Option<Spooled>, ()> {
        if spool.is_empty() {
            return Ok(None);
        }
        let corrupt_before = spool.corrupt_segments();
        let oldest = blocking(|| spool.oldest_except(replaying));
        self.metrics
            .spool_corrupt_segments
            .inc_by(spool.corrupt_segments() - corrupt_before);
        self.update_spool_gauges(spool);
        oldest.map_err(|err| error!(error = %err, "cannot read the spool"))
    }

    /// Appends to the spool, counting evictions; if the disk fails, falls back to retrying the
    /// batch in memory (blocking the input, as without a spool).
    async fn spool_or_retry(&self, spool: &mut Spool, batch: Batch, shutdown: &CancellationToken) {
        match blocking(|| spool.append(&batch)) {
            Ok(evicted) => {
                if batch.holds_flows() {
                    self.metrics.records_spooled.inc_by(batch.len() as u64);
                }
                let dropped = evicted.flows + evicted.counters;
                if dropped > 0 {
                    error!(
                        flow_records = evicted.flows,
                        counter_samples = evicted.counters,
                        "spool full (spool.max_bytes): oldest batches deleted, their rows are lost"
                    );
                    self.metrics.dropped(DropReason::SpoolFull).inc_by(dropped);
                }
                self.update_spool_gauges(spool);
            }
            Err(err) => {
                error!(error = %err, rows = batch.len(), "cannot write to the spool; retrying the batch in memory");
                let mut stopping_since = None;
                self.insert_with_retries(&batch, shutdown, &mut stopping_since)
                    .await;
            }
        }
    }

    fn update_spool_gauges(&self, spool: &Spool) {
        self.metrics
            .spool_bytes
            .set(i64::try_from(spool.bytes()).unwrap_or(i64::MAX));
        self.metrics.spool_batches.set(spool.batches() as i64);
    }

    fn count_written(&self, batch: &Batch) {
        let rows = batch.len() as u64;
        match batch {
            Batch::Flows(_) | Batch::EncodedFlows(_) => self.metrics.records_written.inc_by(rows),
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

/// Where a batch being inserted came from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// Straight from the batcher.
    Fresh,
    /// Replayed from the spool: its segment's sequence number.
    Spooled(u64),
}

/// An insert in flight; its origin and batch come back with its result.
type Insert<'a> = BoxFuture<'a, (Origin, Batch, Result<(), SinkError>)>;

/// The retry schedule after failed inserts: nothing new is sent before `retry_at`.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    delay: Duration,
    retry_at: Option<Instant>,
}

impl Backoff {
    fn new(config: &BatchConfig) -> Self {
        let initial = Duration::from_millis(config.retry_initial_ms);
        Self {
            initial,
            max: Duration::from_millis(config.retry_max_ms),
            delay: initial,
            retry_at: None,
        }
    }

    /// True when no retry is pending (clearing one whose time has come).
    fn due(&mut self) -> bool {
        if self.retry_at.is_some_and(|at| Instant::now() >= at) {
            self.retry_at = None;
        }
        self.retry_at.is_none()
    }

    /// A fresh batch failed (it is spooled): wait the current delay.
    fn failed_fresh(&mut self) {
        self.retry_at = Some(Instant::now() + self.delay);
    }

    /// A replay failed: wait the current delay, and double it for the next failure.
    fn failed_replay(&mut self) {
        self.failed_fresh();
        self.delay = (self.delay * 2).min(self.max);
    }

    /// A replay went in: the server is back.
    fn succeeded(&mut self) {
        self.delay = self.initial;
        self.retry_at = None;
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The gate's next value; `true` when the gate is gone (nothing left to wait for).
async fn wait_changed(ready: &mut Option<tokio::sync::watch::Receiver<bool>>) -> bool {
    match ready {
        Some(receiver) => match receiver.changed().await {
            Ok(()) => *receiver.borrow_and_update(),
            Err(_) => true,
        },
        None => true,
    }
}

#[cfg(test)]
mod tests;
