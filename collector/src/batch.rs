//! Batch: chunks of records from the receive workers in, insert-sized batches per table out.
//!
//! A batch is closed when it reaches `max_rows`, `max_bytes` (estimated RowBinary size) or
//! `max_age_ms` since its first row, whichever comes first. The batcher never drops: when the
//! sink is slower than the input it waits on the bounded batch channel, its own input queue
//! fills, and the workers count what they cannot enqueue (`queue_full`).
//! At shutdown (input channel closed) every open batch is flushed before the output closes.
//!
//! A batch keeps the vectors the workers filled ([`Rows`]) instead of copying them into one
//! large vector: at a million records per second that copy, the vector's regrowth and the page
//! faults of a fresh 40 MB allocation per batch were a tenth of the collector's CPU. For the
//! ClickHouse sink the flow batch is RowBinary instead, written as each chunk arrives
//! ([`OpenEncodedBatch`]).

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

/// Rows of one table, in order, held as the vectors they arrived in.
#[derive(Debug, Clone)]
pub struct Rows<T> {
    parts: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Self {
            parts: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Rows<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every row, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + Clone {
        self.parts.iter().flatten()
    }

    /// Appends a vector of rows without copying them.
    pub fn push_part(&mut self, part: Vec<T>) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push(part);
        }
    }

    /// Every row in one vector (a copy when there are several parts).
    pub fn into_vec(mut self) -> Vec<T> {
        if self.parts.len() == 1 {
            return self.parts.pop().unwrap_or_default();
        }
        self.parts.into_iter().flatten().collect()
    }
}

impl<T> From<Vec<T>> for Rows<T> {
    fn from(rows: Vec<T>) -> Self {
        let mut all = Self::default();
        all.push_part(rows);
        all
    }
}

impl<T> FromIterator<T> for Rows<T> {
    fn from_iter<I: IntoIterator<Item = T>>(rows: I) -> Self {
        Self::from(rows.into_iter().collect::<Vec<T>>())
    }
}

/// Equal when the rows are, however they are split into parts.
impl<T: PartialEq> PartialEq for Rows<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

/// Encoded as one sequence, exactly as a `Vec<T>` of the same rows (the spool's format).
impl<T: serde::Serialize> serde::Serialize for Rows<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut sequence = serializer.serialize_seq(Some(self.len))?;
        for row in self.iter() {
            sequence.serialize_element(row)?;
        }
        sequence.end()
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Rows<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(Self::from)
    }
}

/// Flow rows already written as ClickHouse RowBinary ([`FlowRecord::write_row_binary`]): how
/// the ClickHouse sink's flow batches are held. A row takes about 155 bytes this way (the
/// benchmark's streams) against 296 as a [`FlowRecord`], and the bytes are made once, however
/// often an insert is retried or the batch goes through the spool. Shared bytes: an insert
/// sends slices of them as its frames, without copying the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFlows {
    pub rows: usize,
    pub bytes: bytes::Bytes,
}

impl EncodedFlows {
    pub fn encode(rows: &Rows<FlowRecord>) -> Self {
        let mut bytes = Vec::with_capacity(rows.len() * ENCODED_ROW_ESTIMATE);
        for row in rows.iter() {
            row.write_row_binary(&mut bytes);
        }
        Self {
            rows: rows.len(),
            bytes: bytes.into(),
        }
    }
}

/// RowBinary bytes of a flow row without enrichment strings (about 130 with a few names).
const ENCODED_ROW_ESTIMATE: usize = 128;

/// Encoded batch buffers kept for the next batches once nothing holds them any more (one:
/// a second one kept idle raised the peak RSS by a batch, see
/// [`crate::sink::WAITING_BATCHES`]).
pub const SPARE_BUFFERS: usize = 1;

/// Freed encoded batch buffers of one batcher (at most [`SPARE_BUFFERS`]). A batch buffer is
/// larger than the allocator's mmap threshold (see `tune_allocator` in the binary), so a new
/// one is a fresh mapping faulted in page by page, then unmapped when the insert is done: that
/// was 8 % of the collector's CPU at 0.8 M sFlow samples/s into ClickHouse. The batcher takes;
/// whichever task drops a batch's last bytes (the writer, mostly) gives back.
type Spare = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// An encoded batch buffer that goes back to its batcher's [`Spare`] when the last
/// [`bytes::Bytes`] made from it (the batch, its frames, a clone) is dropped.
struct Recycled {
    buffer: Vec<u8>,
    spare: Spare,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        if buffer.capacity() == 0 {
            return;
        }
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < SPARE_BUFFERS {
                spare.push(buffer);
            }
        }
    }
}

/// A closed batch for one table.
#[derive(Debug, PartialEq)]
pub enum Batch {
    Flows(Rows<FlowRecord>),
    /// Flow rows as RowBinary (the ClickHouse sink's batcher encodes them as they arrive).
    EncodedFlows(EncodedFlows),
    Counters(Rows<InterfaceCounterRecord>),
    Stats(Rows<ExporterStatsRow>),
}

impl Batch {
    pub fn len(&self) -> usize {
        match self {
            Self::Flows(rows) => rows.len(),
            Self::EncodedFlows(encoded) => encoded.rows,
            Self::Counters(rows) => rows.len(),
            Self::Stats(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for flow rows (held as rows or encoded), the batches the flow-record counters count.
    pub fn holds_flows(&self) -> bool {
        matches!(self, Self::Flows(_) | Self::EncodedFlows(_))
    }
}

/// Rows of one table waiting to be sent, with the limits that close them.
#[derive(Debug)]
pub struct OpenBatch<T> {
    rows: Rows<T>,
    opened: Option<Instant>,
    max_rows: usize,
    max_bytes: usize,
}

impl<T> OpenBatch<T> {
    pub fn new(config: &BatchConfig) -> Self {
        Self {
            rows: Rows::default(),
            opened: None,
            max_rows: config.max_rows.max(1),
            max_bytes: config.max_bytes,
        }
    }

    /// Rows at which the batch closes: `max_rows`, or the first count whose RowBinary size
    /// estimate (rows × in-memory row size, within a few bytes of it for our rows, except the
    /// `exporter_stats` arrays, which are tiny) reaches `max_bytes`.
    fn limit(&self) -> usize {
        let row_bytes = std::mem::size_of::<T>().max(1);
        self.max_rows.min(self.max_bytes.div_ceil(row_bytes).max(1))
    }

    /// Appends rows; returns the full batches this closed (possibly several for a huge input).
    /// The vector is kept as it is when it fits; only a vector that straddles a batch's limit
    /// is split (its tail copied).
    pub fn extend(&mut self, mut rows: Vec<T>, now: Instant) -> Vec<Rows<T>> {
        let mut closed = Vec::new();
        let limit = self.limit();
        while !rows.is_empty() {
            if self.rows.is_empty() {
                self.opened = Some(now);
            }
            let room = limit.saturating_sub(self.rows.len());
            let rest = if rows.len() > room {
                rows.split_off(room)
            } else {
                Vec::new()
            };
            self.rows.push_part(std::mem::replace(&mut rows, rest));
            if self.rows.len() >= limit {
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
    pub fn take(&mut self) -> Rows<T> {
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

/// The open flow batch of a batcher that encodes (for the ClickHouse sink): rows are written as
/// RowBinary as their chunk arrives, so the open batch takes about 155 bytes a row instead of the
/// 296 of a [`FlowRecord`], and the workers' vectors are freed at once.
/// Closes at `max_rows` rows or `max_bytes` bytes (the real encoded size), whichever comes first.
#[derive(Debug)]
pub struct OpenEncodedBatch {
    rows: usize,
    bytes: Vec<u8>,
    spare: Spare,
    opened: Option<Instant>,
    max_rows: usize,
    max_bytes: usize,
    /// Encoded bytes a row took in the last batch closed (the stream's own row size), which
    /// sizes the next batch's one allocation.
    row_bytes: usize,
}

impl OpenEncodedBatch {
    pub fn new(config: &BatchConfig) -> Self {
        Self {
            rows: 0,
            bytes: Vec::new(),
            spare: Spare::default(),
            opened: None,
            max_rows: config.max_rows.max(1),
            max_bytes: config.max_bytes.max(1),
            row_bytes: ENCODED_ROW_ESTIMATE,
        }
    }

    /// Encodes `rows` into the open batch; returns the batches this closed.
    pub fn extend(&mut self, rows: &[FlowRecord], now: Instant) -> Vec<EncodedFlows> {
        let mut closed = Vec::new();
        for row in rows {
            if self.rows == 0 {
                self.opened = Some(now);
                // One allocation per batch, sized for the rows a batch takes at the last
                // batch's bytes per row and a sixteenth more (sFlow rows are longer than the
                // first estimate: growing a 13 MB vector to 26 MB copied it and touched twice
                // the pages; a batch that closes on bytes first may still grow once).
                let expected = self
                    .max_rows
                    .saturating_mul(self.row_bytes + self.row_bytes / 16)
                    .min(self.max_bytes);
                // A spare buffer if there is one, else a new one.
                if let Some(spare) = self.spare.lock().ok().and_then(|mut spare| spare.pop()) {
                    self.bytes = spare;
                }
                self.bytes.reserve(expected);
            }
            row.write_row_binary(&mut self.bytes);
            self.rows += 1;
            if self.rows >= self.max_rows || self.bytes.len() >= self.max_bytes {
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
    pub fn take(&mut self) -> EncodedFlows {
        self.opened = None;
        if self.rows > 0 {
            self.row_bytes = self.bytes.len().div_ceil(self.rows).max(1);
        }
        EncodedFlows {
            rows: std::mem::take(&mut self.rows),
            bytes: bytes::Bytes::from_owner(Recycled {
                buffer: std::mem::take(&mut self.bytes),
                spare: self.spare.clone(),
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// The open flow batch: records as the workers made them, or RowBinary for the ClickHouse sink.
#[derive(Debug)]
enum OpenFlows {
    Records(OpenBatch<FlowRecord>),
    Encoded(OpenEncodedBatch),
}

impl OpenFlows {
    fn extend(&mut self, rows: Vec<FlowRecord>, now: Instant) -> Vec<Batch> {
        match self {
            Self::Records(open) => open.extend(rows, now).into_iter().map(Batch::Flows).collect(),
            Self::Encoded(open) => open
                .extend(&rows, now)
                .into_iter()
                .map(Batch::EncodedFlows)
                .collect(),
        }
    }

    fn deadline(&self, max_age: Duration) -> Option<Instant> {
        match self {
            Self::Records(open) => open.deadline(max_age),
            Self::Encoded(open) => open.deadline(max_age),
        }
    }

    fn take(&mut self) -> Batch {
        match self {
            Self::Records(open) => Batch::Flows(open.take()),
            Self::Encoded(open) => Batch::EncodedFlows(open.take()),
        }
    }
}

/// The batch stage.
#[derive(Debug)]
pub struct Batcher {
    config: BatchConfig,
    flows: OpenFlows,
    counters: OpenBatch<InterfaceCounterRecord>,
    stats: OpenBatch<ExporterStatsRow>,
}

impl Batcher {
    pub fn new(config: BatchConfig) -> Self {
        Self {
            flows: OpenFlows::Records(OpenBatch::new(&config)),
            counters: OpenBatch::new(&config),
            stats: OpenBatch::new(&config),
            config,
        }
    }

    /// Flow rows are encoded as RowBinary as they arrive and leave as [`Batch::EncodedFlows`]
    /// ([`OpenEncodedBatch`]): the open batch, the batches waiting for an insert and the one
    /// inside it hold a third of the memory.
    pub fn encoding_flows(mut self) -> Self {
        self.flows = OpenFlows::Encoded(OpenEncodedBatch::new(&self.config));
        self
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
            let mut closed = self.flows.extend(chunk.flows, now);
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
            self.flows.take(),
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
            batches.push(self.flows.take());
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
            let mut out: Vec<Rows<FlowRecord>> = Vec::new();
            for size in sizes {
                let rows = (next..next + size as u64).map(record).collect();
                next += size as u64;
                out.extend(open.extend(rows, now));
            }
            out.push(open.take());
            let flat: Vec<u64> = out.iter().flat_map(Rows::iter).map(|r| r.bytes).collect();
            prop_assert_eq!(flat, (0..next).collect::<Vec<_>>());
            prop_assert!(out.iter().all(|b| b.len() <= max_rows));
        }
    }

    #[test]
    fn whole_chunks_are_kept_without_copying_and_a_straddling_one_is_split() {
        let mut open = OpenBatch::new(&config(25, 1000));
        let now = Instant::now();
        let first: Vec<FlowRecord> = (0..10).map(record).collect();
        let first_rows = first.as_ptr();
        assert!(open.extend(first, now).is_empty());
        assert!(open.extend((10..20).map(record).collect(), now).is_empty());
        let closed = open.extend((20..30).map(record).collect(), now);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].parts.len(), 3);
        assert_eq!(
            closed[0].parts[0].as_ptr(),
            first_rows,
            "the worker's vector itself"
        );
        assert_eq!(closed[0].len(), 25);
        assert_eq!(open.len(), 5, "the tail of the third chunk opens the next batch");
    }

    #[test]
    fn rows_encode_exactly_as_one_vector_for_the_spool() {
        let rows: Vec<FlowRecord> = (0..7).map(record).collect();
        let mut split = Rows::from(rows[..3].to_vec());
        split.push_part(Vec::new());
        split.push_part(rows[3..].to_vec());
        let encoded = postcard::to_stdvec(&split).expect("encode");
        assert_eq!(encoded, postcard::to_stdvec(&rows).expect("encode"));
        let decoded: Rows<FlowRecord> = postcard::from_bytes(&encoded).expect("decode");
        assert_eq!(decoded, split);
        assert_eq!(decoded.into_vec(), rows);
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
            Some(Batch::Flows(vec![record(1), record(2)].into()))
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
        assert_eq!(batch_rx.recv().await, Some(Batch::Flows(vec![record(7)].into())));
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

    #[tokio::test(start_paused = true)]
    async fn for_clickhouse_closed_flow_batches_leave_as_rowbinary() {
        let (chunk_tx, chunk_rx) = mpsc::channel(4);
        let (batch_tx, mut batch_rx) = mpsc::channel(4);
        let batcher = Batcher::new(config(3, 60_000)).encoding_flows();
        let task = tokio::spawn(batcher.run(chunk_rx, batch_tx));
        chunk_tx
            .send(Chunk {
                flows: (0..4).map(record).collect(),
                ..Chunk::default()
            })
            .await
            .expect("send");
        let full: Rows<FlowRecord> = (0..3).map(record).collect();
        let Some(Batch::EncodedFlows(encoded)) = batch_rx.recv().await else {
            panic!("a RowBinary batch");
        };
        assert_eq!(encoded, EncodedFlows::encode(&full));
        assert_eq!(encoded.rows, 3);
        let mut one = Vec::new();
        record(0).write_row_binary(&mut one);
        assert_eq!(encoded.bytes.len(), 3 * one.len());
        // The partial batch left at shutdown is encoded too.
        drop(chunk_tx);
        task.await.expect("batcher");
        let rest: Rows<FlowRecord> = vec![record(3)].into();
        assert_eq!(
            batch_rx.recv().await,
            Some(Batch::EncodedFlows(EncodedFlows::encode(&rest)))
        );
    }

    proptest! {
        /// Encoding as chunks arrive gives the same bytes as encoding each closed batch of
        /// records, whatever the chunk sizes; no batch passes `max_rows`.
        #[test]
        fn encoded_batches_hold_every_row_in_order(sizes in prop::collection::vec(0usize..300, 0..30), max_rows in 1usize..200) {
            let mut open = OpenEncodedBatch::new(&config(max_rows, 1000));
            let now = Instant::now();
            let mut next = 0u64;
            let mut out = Vec::new();
            for size in sizes {
                let rows: Vec<FlowRecord> = (next..next + size as u64).map(record).collect();
                next += size as u64;
                out.extend(open.extend(&rows, now));
            }
            out.push(open.take());
            prop_assert!(out.iter().all(|b| b.rows <= max_rows));
            let all: Rows<FlowRecord> = (0..next).map(record).collect();
            let whole = EncodedFlows::encode(&all);
            prop_assert_eq!(out.iter().map(|b| b.rows).sum::<usize>(), whole.rows);
            let bytes: Vec<u8> = out.iter().flat_map(|b| b.bytes.iter().copied()).collect();
            prop_assert_eq!(bytes, whole.bytes);
        }
    }

    #[test]
    fn an_encoded_batch_closes_on_its_real_size() {
        let mut one = Vec::new();
        record(0).write_row_binary(&mut one);
        let config = BatchConfig {
            max_bytes: 10 * one.len(),
            ..config(1000, 1000)
        };
        let mut open = OpenEncodedBatch::new(&config);
        let rows: Vec<FlowRecord> = (0..25).map(record).collect();
        let closed = open.extend(&rows, Instant::now());
        assert_eq!(closed.iter().map(|b| b.rows).collect::<Vec<_>>(), [10, 10]);
        assert!(closed.iter().all(|b| b.bytes.len() == 10 * one.len()));
        assert_eq!(open.len(), 5);
        assert!(open.deadline(Duration::from_secs(1)).is_some());
        assert_eq!(open.take().rows, 5);
        assert!(open.is_empty() && open.deadline(Duration::from_secs(1)).is_none());
    }

    #[test]
    fn an_encoded_batch_is_sized_by_the_last_batch_rows() {
        // Rows three times the first estimate: the first batch grows, the next one does not.
        let long = |i| {
            let mut row = record(i);
            row.exporter_name = egress_query::label::Label::new(&"x".repeat(2 * ENCODED_ROW_ESTIMATE));
            row
        };
        let mut one = Vec::new();
        long(0).write_row_binary(&mut one);
        assert!(one.len() > 2 * ENCODED_ROW_ESTIMATE);
        let mut open = OpenEncodedBatch::new(&config(100, 1000));
        let rows: Vec<FlowRecord> = (0..100).map(long).collect();
        assert_eq!(open.extend(&rows, Instant::now()).len(), 1);
        open.extend(&rows[..1], Instant::now());
        let (capacity, start) = (open.bytes.capacity(), open.bytes.as_ptr());
        assert!(
            capacity >= 100 * one.len(),
            "{capacity} bytes for 100 rows of {}",
            one.len()
        );
        open.extend(&rows[1..99], Instant::now());
        assert_eq!(open.len(), 99);
        assert_eq!(
            (open.bytes.capacity(), open.bytes.as_ptr()),
            (capacity, start),
            "the batch never grew"
        );
    }

    #[test]
    fn a_batch_buffer_serves_a_later_batch_once_its_last_bytes_are_dropped() {
        let mut open = OpenEncodedBatch::new(&config(10, 1000));
        let rows: Vec<FlowRecord> = (0..10).map(record).collect();
        let mut closed = open.extend(&rows, Instant::now());
        let batch = closed.pop().expect("one batch");
        let (first, frame) = (batch.bytes.as_ptr(), batch.bytes.slice(5..));
        drop(batch);
        // A frame of it is still being sent: the next batch gets a buffer of its own.
        let second = open.extend(&rows, Instant::now()).pop().expect("a second batch");
        assert_ne!(second.bytes.as_ptr(), first);
        drop(frame);
        open.extend(&rows[..1], Instant::now());
        assert_eq!(open.bytes.as_ptr(), first, "the first batch's buffer, reused");
        let written = open
            .extend(&rows[1..], Instant::now())
            .pop()
            .expect("a third batch");
        assert_eq!(written, second, "a reused buffer holds only its new rows");
        drop((second, written));
        // Never more than SPARE_BUFFERS kept.
        let more: Vec<_> = (0..4).flat_map(|_| open.extend(&rows, Instant::now())).collect();
        drop(more);
        assert_eq!(open.spare.lock().expect("spare").len(), SPARE_BUFFERS);
    }
}
