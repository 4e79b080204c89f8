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
//! With the disk spool (`[spool]`, on by default) a batch that cannot be inserted now goes to
//! disk instead of waiting in memory, and the spool is replayed in order; see
//! [`SinkWriter::run_spooled`] and [`crate::spool`]. Without it, the behaviour above holds.
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
use crate::spool::Spool;
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

    /// With a spool (see [`crate::spool`]): a batch is inserted directly once the schema is
    /// ready and no retry is pending; otherwise, or when that insert fails with a retryable
    /// error, it is appended to the spool. The spool is replayed oldest first, one batch per
    /// insert, whenever no fresh batch is waiting, with the exponential backoff of
    /// `batch.retry_*` after a failure.
    ///
    /// The input keeps moving during every insert, however long ClickHouse takes: the first
    /// batch that arrives meanwhile waits in memory and is inserted next, any further one goes
    /// to the spool. So a slow server fills the spool, not the queues in front of it (which
    /// would drop records once full). Batches are therefore not always inserted in the order
    /// they were closed; nothing in the schema depends on that order.
    ///
    /// Fresh batches go before the spool's: after one slow insert, only the batches that
    /// arrived meanwhile take the trip through the disk (written, synced, read back), and the
    /// spool drains in the gaps between fresh batches. Were fresh batches queued behind a
    /// non-empty spool, every batch after a slow insert would take that trip until the spool
    /// emptied, costing CPU and disk the server needs to catch up. Dashboards and SLA
    /// evaluation see the present first, and the backlog fills in behind it (the rollups'
    /// hour closing recomputes an hour whose late rows arrive, see `egress_query::rollups`).
    ///
    /// At shutdown, replay goes on for at most `batch.shutdown_timeout_seconds`; what is left
    /// stays on disk for the next start (nothing is dropped).
    async fn run_spooled(
        self,
        mut spool: Spool,
        mut input: mpsc::Receiver<Batch>,
        shutdown: CancellationToken,
    ) {
        let mut ready = self.schema_ready.clone();
        let mut is_ready = ready.as_mut().is_none_or(|r| *r.borrow_and_update());
        let initial = Duration::from_millis(self.config.retry_initial_ms);
        let mut delay = initial;
        let mut retry_at: Option<Instant> = None;
        let mut input_open = true;
        let mut next: Option<Batch> = None;
        self.update_spool_gauges(&spool);
        if !spool.is_empty() {
            info!(
                batches = spool.batches(),
                flow_records = spool.flow_records(),
                "spool holds batches from an earlier run; replaying them first"
            );
        }
        loop {
            let retry_due = retry_at.is_none_or(|at| Instant::now() >= at);
            if let Some(batch) = next.take() {
                if is_ready && retry_due {
                    let mut incoming = Incoming {
                        input: &mut input,
                        open: &mut input_open,
                        next: &mut next,
                        spool: &mut spool,
                        shutdown: &shutdown,
                    };
                    let result = self.insert_receiving(&batch, &mut incoming).await;
                    if let Err(err) = result {
                        if err.is_retryable() {
                            warn!(rows = batch.len(), error = %err, retry_in_ms = delay.as_millis() as u64, "insert failed; batch spooled to disk");
                            retry_at = Some(Instant::now() + delay);
                            self.spool_or_retry(&mut spool, batch, &shutdown).await;
                        }
                    }
                } else {
                    self.spool_or_retry(&mut spool, batch, &shutdown).await;
                }
                continue;
            }
            if is_ready && !spool.is_empty() && retry_due {
                // A fresh batch goes first; the spool is replayed when none is waiting.
                if let Ok(batch) = input.try_recv() {
                    next = Some(batch);
                    continue;
                }
                match self
                    .replay_one(&mut spool, &mut input, &mut input_open, &mut next, &shutdown)
                    .await
                {
                    Ok(()) => {
                        delay = initial;
                        retry_at = None;
                    }
                    Err(()) => {
                        retry_at = Some(Instant::now() + delay);
                        delay = (delay * 2).min(Duration::from_millis(self.config.retry_max_ms));
                    }
                }
                continue;
            }
            if !input_open {
                break;
            }
            tokio::select! {
                batch = input.recv() => {
                    let Some(batch) = batch else { break };
                    if !is_ready || !retry_due {
                        self.spool_or_retry(&mut spool, batch, &shutdown).await;
                    } else {
                        next = Some(batch);
                    }
                }
                () = sleep_until_or_forever(retry_at) => retry_at = None,
                changed = wait_changed(&mut ready), if !is_ready => {
                    is_ready = changed;
                }
            }
        }
        // Stopping: everything received is written or spooled. Replay what time allows.
        let deadline = Instant::now() + Duration::from_secs(self.config.shutdown_timeout_seconds);
        let mut none = None;
        while is_ready && !spool.is_empty() && Instant::now() < deadline {
            let replayed = self
                .replay_one(&mut spool, &mut input, &mut false, &mut none, &shutdown)
                .await;
            if replayed.is_err() {
                tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
                delay = (delay * 2).min(Duration::from_millis(self.config.retry_max_ms));
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

    /// One insert attempt of `batch` while the input keeps moving: the first batch that arrives
    /// meanwhile waits in `incoming.next` (if that is free), any other goes to the spool.
    async fn insert_receiving(&self, batch: &Batch, incoming: &mut Incoming<'_>) -> Result<(), SinkError> {
        let insert = self.attempt(batch, 1);
        tokio::pin!(insert);
        loop {
            tokio::select! {
                result = &mut insert => return result,
                arrived = incoming.input.recv(), if *incoming.open => match arrived {
                    Some(arrived) if incoming.next.is_none() => *incoming.next = Some(arrived),
                    Some(arrived) => self.spool_or_retry(incoming.spool, arrived, incoming.shutdown).await,
                    None => *incoming.open = false,
                },
            }
        }
    }

    /// Inserts the spool's oldest batch (receiving meanwhile, see
    /// [`SinkWriter::insert_receiving`]); removes it once written (or rejected for good).
    async fn replay_one(
        &self,
        spool: &mut Spool,
        input: &mut mpsc::Receiver<Batch>,
        input_open: &mut bool,
        next: &mut Option<Batch>,
        shutdown: &CancellationToken,
    ) -> Result<(), ()> {
        let corrupt_before = spool.corrupt_segments();
        let oldest = blocking(|| spool.oldest());
        self.metrics
            .spool_corrupt_segments
            .inc_by(spool.corrupt_segments() - corrupt_before);
        let spooled = match oldest {
            Ok(Some(spooled)) => spooled,
            Ok(None) => {
                self.update_spool_gauges(spool);
                return Ok(());
            }
            Err(err) => {
                error!(error = %err, "cannot read the spool");
                return Err(());
            }
        };
        let mut incoming = Incoming {
            input,
            open: input_open,
            next,
            spool,
            shutdown,
        };
        match self.insert_receiving(&spooled.batch, &mut incoming).await {
            Err(err) if err.is_retryable() => {
                warn!(rows = spooled.batch.len(), error = %err, "replay from the spool failed; retrying later");
                Err(())
            }
            // Written, or rejected for good (counted by `attempt`): either way done with it.
            // (If the spool reached its bound meanwhile and evicted this very segment, its rows
            // were counted as `spool_full` although they are stored: a bound on the count's
            // error, not a loss.)
            _ => {
                if let Err(err) = blocking(|| spool.remove(spooled.sequence)) {
                    error!(error = %err, "cannot delete a replayed spool segment");
                    return Err(());
                }
                self.update_spool_gauges(spool);
                Ok(())
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

/// Where batches arriving during an insert go (see [`SinkWriter::insert_receiving`]).
struct Incoming<'a> {
    input: &'a mut mpsc::Receiver<Batch>,
    /// Cleared when the input has ended.
    open: &'a mut bool,
    next: &'a mut Option<Batch>,
    spool: &'a mut Spool,
    shutdown: &'a CancellationToken,
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
