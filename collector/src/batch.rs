//! Batch: chunks of records from the receive workers in, insert-sized batches per table out.
//!
//! A batch is closed when it reaches `max_rows`, `max_bytes` (estimated RowBinary size) or
//! `max_age_ms` since its first row, whichever comes first. The batcher never drops: when the
//! sink is slower than the input it waits on the bounded batch channel, its own input queue
//! fills, and the workers count what they cannot enqueue (`queue_full`).
//! At shutdown (input channel closed) every open batch is flushed before the output closes.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::BatchConfig;
use crate::normalise::{FlowRecord, InterfaceCounterRecord};
use egress_query::schema::ExporterStatsRow;

/// What a receive worker hands to the batcher.
#[derive(Debug, Default)]
pub struct Chunk {
    pub flows: Vec<FlowRecord>,
    pub counters: Vec<InterfaceCounterRecord>,
    pub stats: Vec<ExporterStatsRow>,
}

impl Chunk {
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.counters.is_empty() && self.stats.is_empty()
    }

    pub fn len(&self) -> usize {
        self.flows.len() + self.counters.len() + self.stats.len()
    }
}

/// A closed batch for one table.
#[derive(Debug, PartialEq)]
pub enum Batch {
    Flows(Vec<FlowRecord>),
    Counters(Vec<InterfaceCounterRecord>),
    Stats(Vec<ExporterStatsRow>),
}

impl Batch {
    pub fn len(&self) -> usize {
        match self {
            Self::Flows(rows) => rows.len(),
            Self::Counters(rows) => rows.len(),
            Self::Stats(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows of one table waiting to be sent, with the limits that close them.
#[derive(Debug)]
pub struct OpenBatch<T> {
    rows: Vec<T>,
    opened: Option<Instant>,
    max_rows: usize,
    max_bytes: usize,
}

impl<T> OpenBatch<T> {
    pub fn new(config: &BatchConfig) -> Self {
        Self {
            rows: Vec::new(),
            opened: None,
            max_rows: config.max_rows,
            max_bytes: config.max_bytes,
        }
    }

    /// RowBinary size estimate: the in-memory size is within a few bytes of it for our rows,
    /// except the `exporter_stats` arrays, which are tiny.
    fn estimated_bytes(&self) -> usize {
        self.rows.len() * std::mem::size_of::<T>()
    }

    /// Appends rows; returns the full batches this closed (possibly several for a huge input).
    pub fn extend(&mut self, rows: Vec<T>, now: Instant) -> Vec<Vec<T>> {
        let mut closed = Vec::new();
        if rows.is_empty() {
            return closed;
        }
        if self.rows.is_empty() {
            self.opened = Some(now);
            if rows.len() < self.max_rows {
                // Take the worker's vector as is: no copy for the common case.
                self.rows = rows;
                if self.estimated_bytes() >= self.max_bytes {
                    closed.push(self.take());
                }
                return closed;
            }
        }
        for row in rows {
            if self.rows.is_empty() {
                self.opened = Some(now);
            }
            self.rows.push(row);
            if self.rows.len() >= self.max_rows || self.estimated_bytes() >= self.max_bytes {
                closed.push(self.take());
            }
        }
        closed
    }

    /// When the open batch must be sent by age, if it has rows.
    pub fn deadline(&self, max_age: Duration) -> Option<Instant> {
        self.opened.map(|opened| opened + max_age)
    }

    /// Closes the open batch (may be empty).
    pub fn take(&mut self) -> Vec<T> {
        self.opened = None;
        std::mem::take(&mut self.rows)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The batch stage.
#[derive(Debug)]
pub struct Batcher {
    config: BatchConfig,
    flows: OpenBatch<FlowRecord>,
    counters: OpenBatch<InterfaceCounterRecord>,
    stats: OpenBatch<ExporterStatsRow>,
}

impl Batcher {
    pub fn new(config: BatchConfig) -> Self {
        Self {
            flows: OpenBatch::new(&config),
            counters: OpenBatch::new(&config),
            stats: OpenBatch::new(&config),
            config,
        }
    }

    /// Runs until `input` is closed and drained, then flushes every open batch and returns
    /// (dropping `output`, which tells the sink that nothing more comes).
    pub async fn run(mut self, mut input: mpsc::Receiver<Chunk>, output: mpsc::Sender<Batch>) {
        let max_age = Duration::from_millis(self.config.max_age_ms);
        loop {
            let deadline = [
                self.flows.deadline(max_age),
                self.counters.deadline(max_age),
                self.stats.deadline(max_age),
            ]
            .into_iter()
            .flatten()
            .min();
            let chunk = match deadline {
                Some(deadline) => tokio::select! {
                    chunk = input.recv() => chunk,
                    () = tokio::time::sleep_until(deadline) => {
                        if !self.flush_due(Instant::now(), max_age, &output).await {
                            return;
                        }
                        continue;
                    }
                },
                None => input.recv().await,
            };
            let Some(chunk) = chunk else { break };
            let now = Instant::now();
            let mut closed = Vec::new();
            closed.extend(self.flows.extend(chunk.flows, now).into_iter().map(Batch::Flows));
            closed.extend(
                self.counters
                    .extend(chunk.counters, now)
                    .into_iter()
                    .map(Batch::Counters),
            );
            closed.extend(self.stats.extend(chunk.stats, now).into_iter().map(Batch::Stats));
            for batch in closed {
                if output.send(batch).await.is_err() {
                    return;
                }
            }
        }
        for batch in [
            Batch::Flows(self.flows.take()),
            Batch::Counters(self.counters.take()),
            Batch::Stats(self.stats.take()),
        ] {
            if !batch.is_empty() && output.send(batch).await.is_err() {
                return;
            }
        }
    }

    /// Sends every batch whose age limit has passed. False when the sink has gone away.
    async fn flush_due(&mut self, now: Instant, max_age: Duration, output: &mpsc::Sender<Batch>) -> bool {
        let due = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        let mut batches = Vec::new();
        if due(self.flows.deadline(max_age)) {
            batches.push(Batch::Flows(self.flows.take()));
        }
        if due(self.counters.deadline(max_age)) {
            batches.push(Batch::Counters(self.counters.take()));
        }
        if due(self.stats.deadline(max_age)) {
            batches.push(Batch::Stats(self.stats.take()));
        }
        for batch in batches {
            if output.send(batch).await.is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::FlowType;
    use proptest::prelude::*;

    fn record(n: u64) -> FlowRecord {
        let mut r = FlowRecord::new([192, 0, 2, 1].into(), 0, FlowType::Ipfix);
        r.bytes = n;
        r
    }

    fn config(max_rows: usize, max_age_ms: u64) -> BatchConfig {
        BatchConfig {
            max_rows,
            max_age_ms,
            ..BatchConfig::default()
        }
    }

    proptest! {
        /// Whatever the chunk sizes and the limit, every row comes out once, in order, and no
        /// batch is larger than the limit.
        #[test]
        fn batches_preserve_every_row_in_order(sizes in prop::collection::vec(0usize..300, 0..40), max_rows in 1usize..200) {
            let mut open = OpenBatch::new(&config(max_rows, 1000));
            let now = Instant::now();
            let mut next = 0u64;
            let mut out: Vec<Vec<FlowRecord>> = Vec::new();
            for size in sizes {
                let rows = (next..next + size as u64).map(record).collect();
                next += size as u64;
                out.extend(open.extend(rows, now));
            }
            out.push(open.take());
            let flat: Vec<u64> = out.iter().flatten().map(|r| r.bytes).collect();
            prop_assert_eq!(flat, (0..next).collect::<Vec<_>>());
            prop_assert!(out.iter().all(|b| b.len() <= max_rows));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn partial_batch_is_sent_after_max_age() {
        let (chunk_tx, chunk_rx) = mpsc::channel(4);
        let (batch_tx, mut batch_rx) = mpsc::channel(4);
        let task = tokio::spawn(Batcher::new(config(1000, 500)).run(chunk_rx, batch_tx));
        chunk_tx
            .send(Chunk {
                flows: vec![record(1), record(2)],
                ..Chunk::default()
            })
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(batch_rx.try_recv().is_err(), "sent before max_age");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            batch_rx.recv().await,
            Some(Batch::Flows(vec![record(1), record(2)]))
        );
        drop(chunk_tx);
        task.await.expect("batcher");
        assert_eq!(batch_rx.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_open_batches() {
        let (chunk_tx, chunk_rx) = mpsc::channel(4);
        let (batch_tx, mut batch_rx) = mpsc::channel(4);
        let task = tokio::spawn(Batcher::new(config(1000, 60_000)).run(chunk_rx, batch_tx));
        chunk_tx
            .send(Chunk {
                flows: vec![record(7)],
                ..Chunk::default()
            })
            .await
            .expect("send");
        drop(chunk_tx);
        task.await.expect("batcher");
        assert_eq!(batch_rx.recv().await, Some(Batch::Flows(vec![record(7)])));
    }

    #[tokio::test(start_paused = true)]
    async fn full_batch_is_sent_at_once() {
        let (chunk_tx, chunk_rx) = mpsc::channel(4);
        let (batch_tx, mut batch_rx) = mpsc::channel(4);
        let _task = tokio::spawn(Batcher::new(config(3, 60_000)).run(chunk_rx, batch_tx));
        chunk_tx
            .send(Chunk {
                flows: (0..4).map(record).collect(),
                ..Chunk::default()
            })
            .await
            .expect("send");
        assert_eq!(
            batch_rx.recv().await,
            Some(Batch::Flows((0..3).map(record).collect()))
        );
    }
}
