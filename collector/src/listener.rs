//! Listener: UDP datagrams in, chunks of decoded and enriched records out.
//!
//! Each listen address gets `collector.workers` sockets bound with `SO_REUSEPORT`; the kernel
//! hashes each exporter (source address and port) onto one of them, so each worker keeps the
//! template state of its own exporters in its own [`Decoder`] with no locking. A worker is a
//! plain OS thread doing blocking, batched receives ([`receive`]: one `recvmmsg` call takes every
//! queued datagram): decoding is CPU work, and a dedicated thread per socket keeps it off the
//! async runtime.
//!
//! Before decoding, the worker's [`ExporterControls`] decide whether the datagram's source is
//! admitted (allow-list, bound on exporters tracked); after decoding they apply the exporter's
//! record-rate limit (see [`control`]). Dropped datagrams are counted as
//! `egress_datagrams_dropped_total{reason}`, skipped records as
//! `egress_records_dropped_total{reason="rate_limit"}`.
//!
//! A worker collects records into a [`Chunk`] of at most `chunk_records` flow records
//! (a datagram holding more is split) and hands it to the batcher when it is full or has waited
//! [`CHUNK_MAX_WAIT`]. The queue is bounded in chunks, and so in bytes
//! (`collector.max_queue_bytes`). If the batcher's queue is full the
//! chunk is dropped and counted (`egress_records_dropped_total{reason="queue_full"}`).
//! At every multiple of `stats_interval_seconds` on the wall clock (and at shutdown) it drains
//! its loss accounting into `exporter_stats` rows stamped with the minute the interval started
//! in, so with the default 60 s each row holds exactly one minute. At shutdown (the token is cancelled) it finishes the datagram in hand,
//! flushes its chunk with a blocking send (nothing received is dropped) and returns.
//! Its decoder starts from the restored state of every exporter and publishes its own for
//! saving every `collector.state_save_interval_seconds` and at exit ([`crate::state`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::batch::Chunk;
use crate::decode::{DecodeErrorKind, DecodeOutput, Decoder, DecoderConfig};
use crate::enrich::Enricher;
use crate::metrics::{DatagramDropReason, DropReason, Metrics};
use crate::normalise::FlowType;

pub mod control;
pub mod receive;

pub use control::{Admission, ExporterControls};
use receive::BatchReceiver;

/// Longest time a record waits in a worker before it is handed on.
pub const CHUNK_MAX_WAIT: Duration = Duration::from_millis(100);
/// How often a blocked receive wakes up to check for shutdown and flush.
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(50);
/// After a receive call that found fewer than [`FEW_DATAGRAMS`] queued, the worker waits this
/// long before the next call, so that datagrams gather and are taken by one call. Without the
/// pause, a worker that decodes faster than datagrams arrive wakes for every one or two of
/// them, and the wake-ups (a context switch each) were a fifth of the collector's CPU at 3 M
/// NetFlow v9 records/s. At most 100 µs of datagrams wait in the socket buffer (at 200 k
/// datagrams/s, 20 of them: under 50 KB of the 4 MiB buffer), and a call takes up to
/// [`receive::BATCH_DATAGRAMS`], so the pause bounds wake-ups, not throughput.
const RECEIVE_PAUSE: Duration = Duration::from_micros(100);
/// See [`RECEIVE_PAUSE`].
const FEW_DATAGRAMS: usize = 16;

/// Errors setting up the listeners.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, ListenerError>;

/// A bound receive socket.
#[derive(Debug)]
pub struct BoundSocket {
    pub address: SocketAddr,
    pub socket: std::net::UdpSocket,
    /// Receive buffer the kernel granted (as it reports it: Linux doubles the asked size).
    pub receive_buffer_bytes: usize,
}

/// Binds `workers` sockets on each address, with `SO_REUSEPORT` and the asked receive buffer.
/// Port 0 is resolved once, so every worker of an address shares the same port.
pub fn bind(
    addresses: &[SocketAddr],
    workers: usize,
    receive_buffer_bytes: usize,
) -> Result<Vec<BoundSocket>> {
    let mut sockets = Vec::new();
    for &requested in addresses {
        let mut address = requested;
        for _ in 0..workers {
            let bound = bind_one(address, receive_buffer_bytes).map_err(|source| ListenerError::Bind {
                address: requested,
                source,
            })?;
            address = bound.address;
            sockets.push(bound);
        }
    }
    Ok(sockets)
}

fn bind_one(address: SocketAddr, receive_buffer_bytes: usize) -> std::io::Result<BoundSocket> {
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        // `[::]` also takes IPv4 exporters (as IPv4-mapped addresses).
        socket.set_only_v6(false)?;
    }
    if let Err(error) = socket.set_recv_buffer_size(receive_buffer_bytes) {
        warn!(%address, %error, "could not set the receive buffer size");
    }
    socket.bind(&address.into())?;
    socket.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
    let mut granted = socket.recv_buffer_size().unwrap_or(0);
    if granted < receive_buffer_bytes {
        // Above net.core.rmem_max: SO_RCVBUFFORCE gets the size anyway where the process may
        // (root or CAP_NET_ADMIN); otherwise the smaller buffer stays and a warning says so.
        if nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::RcvBufForce,
            &receive_buffer_bytes,
        )
        .is_ok()
        {
            granted = socket.recv_buffer_size().unwrap_or(granted);
        }
    }
    if granted < receive_buffer_bytes {
        warn!(
            %address,
            asked = receive_buffer_bytes,
            granted,
            "the kernel granted a smaller receive buffer; raise net.core.rmem_max to avoid drops under bursts"
        );
    }
    let socket: std::net::UdpSocket = socket.into();
    let address = socket.local_addr()?;
    Ok(BoundSocket {
        address,
        socket,
        receive_buffer_bytes: granted,
    })
}

/// Datagrams the kernel dropped on these sockets' receive queues, from `/proc/net/udp{,6}`.
/// Returns `None` where procfs is not available.
pub fn kernel_receive_drops(sockets: &[std::net::UdpSocket]) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let inodes: Vec<String> = sockets
        .iter()
        .filter_map(|s| std::fs::read_link(format!("/proc/self/fd/{}", s.as_raw_fd())).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut drops = 0u64;
    let mut found = false;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            if let (Some(inode), Some(count)) = (fields.get(9), fields.get(12)) {
                if inodes.iter().any(|i| i == inode) {
                    found = true;
                    drops += count.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    found.then_some(drops)
}

/// One receive worker.
#[derive(Debug)]
pub struct Worker {
    pub socket: std::net::UdpSocket,
    pub decoder_config: DecoderConfig,
    pub enricher: Arc<Enricher>,
    pub metrics: Metrics,
    pub output: mpsc::Sender<Chunk>,
    pub chunk_records: usize,
    pub stats_interval: Duration,
    /// Restores the decoder's state at start and publishes it for saving (`crate::state`).
    pub state: crate::state::WorkerState,
    /// Allow-list, bound on exporters tracked and record-rate limit of this worker.
    pub controls: ExporterControls,
}

/// Gauges that are sums over workers: each worker adds the change of its own value.
#[derive(Debug, Default)]
struct GaugeShare {
    templates: i64,
    held: i64,
    exporters: i64,
}

impl Worker {
    /// Runs until `shutdown` is cancelled. Blocking: call from a dedicated thread.
    pub fn run(self, shutdown: CancellationToken) {
        let Worker {
            socket,
            decoder_config,
            enricher,
            metrics,
            output,
            chunk_records,
            stats_interval,
            mut state,
            mut controls,
        } = self;
        let chunk_records = chunk_records.max(1);
        let mut decoder = Decoder::new(&decoder_config);
        state.restore(&mut decoder);
        let mut out = DecodeOutput::default();
        let mut chunk = new_chunk(chunk_records);
        let mut factors: Vec<u64> = Vec::new();
        let not_allowed = metrics.datagram_dropped(DatagramDropReason::NotAllowed);
        let too_many_exporters = metrics.datagram_dropped(DatagramDropReason::TooManyExporters);
        let rate_limited = metrics.dropped(DropReason::RateLimit);
        let mut chunk_started = Instant::now();
        let interval_secs = stats_interval.as_secs().max(1);
        let mut stats_bucket = u64::from(unix_now()) / interval_secs;
        let mut last_gauges = Instant::now();
        let mut share = GaugeShare::default();
        let error_counters: Vec<_> = DecodeErrorKind::ALL
            .iter()
            .map(|k| (*k, metrics.decode_error(*k)))
            .collect();
        let decoded_counters: Vec<_> = FlowType::ALL.iter().map(|t| (*t, metrics.decoded(*t))).collect();
        let count_error = |kind: DecodeErrorKind| {
            if let Some((_, counter)) = error_counters.iter().find(|(k, _)| *k == kind) {
                counter.inc();
            }
        };
        let count_decoded = |flow_type: FlowType, n: usize| {
            if let Some((_, counter)) = decoded_counters.iter().find(|(t, _)| *t == flow_type) {
                counter.inc_by(n as u64);
            }
        };

        let mut receiver = BatchReceiver::new(socket);
        while !shutdown.is_cancelled() {
            let received = receiver.receive();
            // One clock read per batch of datagrams serves the record times and the stats bucket.
            let now = unix_now();
            let count = match received {
                Ok(count) => count,
                Err(error) => {
                    warn!(address = ?receiver.socket().local_addr().ok(), %error, "receive failed");
                    std::thread::sleep(RECEIVE_TIMEOUT);
                    0
                }
            };
            let mut bytes = 0u64;
            for index in 0..count {
                let Some((payload, Some(exporter))) = receiver.datagram(index) else {
                    continue;
                };
                bytes += payload.len() as u64;
                let refused = match controls.admit(exporter, now) {
                    Admission::Admitted => None,
                    Admission::NotAllowed => Some(&not_allowed),
                    Admission::TooManyExporters => Some(&too_many_exporters),
                };
                if let Some(counter) = refused {
                    counter.inc();
                    continue;
                }
                // Records are decoded straight into the chunk: hand it on first if this
                // datagram would likely not fit.
                if !chunk.flows.is_empty()
                    && chunk.flows.len() + likely_records(payload.len()) > chunk_records
                {
                    hand_on(&output, &mut chunk, chunk_records, &metrics);
                }
                if chunk.is_empty() {
                    chunk_started = Instant::now();
                }
                let first = chunk.flows.len();
                out.clear();
                std::mem::swap(&mut out.flows, &mut chunk.flows);
                let decoded = decoder.decode(exporter, now, payload, &mut out);
                std::mem::swap(&mut out.flows, &mut chunk.flows);
                if let Err(error) = decoded {
                    count_error(error.kind);
                    debug!(%exporter, kind = error.kind.as_str(), offset = error.offset, detail = %error.detail, "datagram dropped");
                }
                for error in &out.errors {
                    count_error(error.kind);
                    debug!(%exporter, kind = error.kind.as_str(), offset = error.offset, detail = %error.detail, "part of a datagram dropped");
                }
                if let Some(record) = chunk.flows.get(first) {
                    count_decoded(record.flow_type, chunk.flows.len() - first);
                }
                if !out.counters.is_empty() {
                    count_decoded(FlowType::Sflow5, out.counters.len());
                }
                let limited = controls.limit(exporter, now, &mut chunk.flows, first, &mut factors);
                if limited.skipped > 0 {
                    rate_limited.inc_by(limited.skipped);
                    metrics.rate_limited_records.inc_by(limited.raised);
                }
                let records = chunk.flows.get_mut(first..).unwrap_or_default();
                enricher.apply(exporter, records);
                control::raise_sampling_rates(records, &factors);
                chunk.counters.append(&mut out.counters);
                if chunk.flows.len() > chunk_records {
                    split_overfull(&mut chunk, chunk_records, &output, &metrics);
                }
            }
            metrics.datagrams_received.inc_by(count as u64);
            metrics.bytes_received.inc_by(bytes);
            let bucket = u64::from(now) / interval_secs;
            if bucket != stats_bucket {
                drain_stats(&mut decoder, &metrics, &mut chunk, stats_bucket * interval_secs);
                stats_bucket = bucket;
            }
            if last_gauges.elapsed() >= Duration::from_secs(1) {
                last_gauges = Instant::now();
                update_gauges(&decoder, &mut controls, &metrics, &mut share);
                state.tick(&decoder);
            }
            if chunk.len() >= chunk_records
                || (!chunk.is_empty() && chunk_started.elapsed() >= CHUNK_MAX_WAIT)
            {
                hand_on(&output, &mut chunk, chunk_records, &metrics);
            }
            if count > 0 && count < FEW_DATAGRAMS {
                std::thread::sleep(RECEIVE_PAUSE);
            }
        }
        drain_stats(&mut decoder, &metrics, &mut chunk, stats_bucket * interval_secs);
        state.publish(&decoder);
        // This worker's share of the summed gauges goes with it.
        metrics.templates_known.dec_by(share.templates);
        metrics.held_sets.dec_by(share.held);
        metrics.exporters_tracked.dec_by(share.exporters);
        if !chunk.is_empty() {
            let lost = (chunk.flows.len() + chunk.counters.len()) as u64;
            if output.blocking_send(std::mem::take(&mut chunk)).is_err() {
                metrics.dropped(DropReason::Shutdown).inc_by(lost);
            }
        }
    }
}

/// Drains the accounting into rows for the minute that contains `interval_start` (Unix seconds).
fn drain_stats(decoder: &mut Decoder, metrics: &Metrics, chunk: &mut Chunk, interval_start: u64) {
    let minute = u32::try_from(interval_start - interval_start % 60).unwrap_or(u32::MAX);
    let rows = decoder.accounting.drain(minute);
    metrics
        .records_lost
        .inc_by(rows.iter().map(|r| r.records_lost).sum());
    chunk.stats.extend(rows);
}

fn update_gauges(
    decoder: &Decoder,
    controls: &mut ExporterControls,
    metrics: &Metrics,
    share: &mut GaugeShare,
) {
    let templates = decoder.learned().templates.len() as i64;
    let held = decoder.held_sets() as i64;
    let exporters = controls.tracked() as i64;
    metrics.templates_known.inc_by(templates - share.templates);
    metrics.held_sets.inc_by(held - share.held);
    metrics.exporters_tracked.inc_by(exporters - share.exporters);
    metrics.exporters_evicted.inc_by(controls.take_evicted());
    share.templates = templates;
    share.held = held;
    share.exporters = exporters;
}

/// An empty chunk whose flow vector holds `chunk_records` rows without growing, so a queued
/// chunk never takes more memory than the queue's byte bound counts for it.
fn new_chunk(chunk_records: usize) -> Chunk {
    Chunk {
        flows: Vec::with_capacity(chunk_records),
        ..Chunk::default()
    }
}

/// Smallest flow record a datagram is likely to carry, in bytes (NetFlow v5: 48; softflowd's
/// IPFIX: about 45; sFlow samples: more than 100). Used to hand a chunk on before a datagram
/// whose records would not fit: records are decoded straight into the chunk, and a chunk that
/// overflows must be split, which copies.
const SMALLEST_LIKELY_RECORD: usize = 40;

/// Records a datagram of `len` bytes likely carries at most.
fn likely_records(len: usize) -> usize {
    len / SMALLEST_LIKELY_RECORD
}

/// Hands on `chunk_records`-sized pieces of a chunk that a datagram's records overflowed; the
/// rest stays in a fresh chunk of the bound's capacity, so no queued chunk takes more memory
/// than the queue's byte bound counts for it.
fn split_overfull(chunk: &mut Chunk, chunk_records: usize, output: &mpsc::Sender<Chunk>, metrics: &Metrics) {
    let mut flows = std::mem::take(&mut chunk.flows);
    let mut pieces = flows.chunks_exact(chunk_records);
    let mut first = true;
    for piece in pieces.by_ref() {
        let mut full = Chunk {
            flows: piece.to_vec(),
            ..Chunk::default()
        };
        if first {
            // Counters and stats gathered so far travel with the first piece.
            full.counters = std::mem::take(&mut chunk.counters);
            full.stats = std::mem::take(&mut chunk.stats);
            first = false;
        }
        send(output, full, metrics);
    }
    let rest = pieces.remainder().len();
    let mut kept = Vec::with_capacity(chunk_records);
    kept.extend(flows.drain(flows.len() - rest..));
    chunk.flows = kept;
}

/// Sends the chunk on and starts a fresh one of `chunk_records` capacity.
fn hand_on(output: &mpsc::Sender<Chunk>, chunk: &mut Chunk, chunk_records: usize, metrics: &Metrics) {
    send(
        output,
        std::mem::replace(chunk, new_chunk(chunk_records)),
        metrics,
    );
}

/// Queues a chunk for the batcher; when the queue is full its records are dropped and counted.
fn send(output: &mpsc::Sender<Chunk>, chunk: Chunk, metrics: &Metrics) {
    let records = (chunk.flows.len() + chunk.counters.len()) as u64;
    match output.try_send(chunk) {
        Ok(()) => {
            metrics
                .queue_chunks
                .set((output.max_capacity() - output.capacity()) as i64);
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics.dropped(DropReason::QueueFull).inc_by(records);
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            metrics.dropped(DropReason::Shutdown).inc_by(records);
        }
    }
}

/// The collector's clock, Unix seconds.
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::FlowRecord;

    #[test]
    fn kernel_drops_of_a_full_receive_buffer_are_seen() {
        let sockets = bind(&["127.0.0.1:0".parse().expect("addr")], 1, 64 << 10).expect("bind");
        let target = sockets[0].address;
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        assert_eq!(
            kernel_receive_drops(&[sockets[0].socket.try_clone().expect("clone")]),
            Some(0)
        );
        // Nobody reads: a small buffer overflows after a few hundred datagrams.
        let datagram = [0u8; 1200];
        for _ in 0..5_000 {
            let _ = sender.send_to(&datagram, target);
        }
        let drops = kernel_receive_drops(&[sockets[0].socket.try_clone().expect("clone")]).expect("procfs");
        assert!(
            drops > 1_000,
            "expected the kernel to drop most datagrams, saw {drops}"
        );
    }

    #[test]
    fn an_overfull_chunk_is_split_and_chunks_never_outgrow_their_bound() {
        let (output, mut queue) = mpsc::channel(16);
        let metrics = Metrics::new();
        let exporter = std::net::IpAddr::from([192, 0, 2, 1]);
        let mut chunk = new_chunk(10);
        chunk.flows.extend((0..25u64).map(|i| {
            let mut record = FlowRecord::new(exporter, 0, FlowType::Ipfix);
            record.bytes = i;
            record
        }));
        split_overfull(&mut chunk, 10, &output, &metrics);
        assert_eq!(chunk.flows.len(), 5, "the rest waits for the next records");
        assert_eq!(chunk.flows.capacity(), 10);
        assert_eq!(chunk.flows[0].bytes, 20);
        let mut handed = Vec::new();
        while let Ok(chunk) = queue.try_recv() {
            assert!(
                chunk.flows.capacity() <= 10,
                "capacity {}",
                chunk.flows.capacity()
            );
            handed.push(chunk.flows.first().map(|r| r.bytes));
        }
        assert_eq!(handed, vec![Some(0), Some(10)]);
        assert!(
            likely_records(1500) > 30,
            "a softflowd IPFIX datagram holds 31 records"
        );
    }

    #[test]
    fn workers_of_one_address_share_its_port() {
        let sockets = bind(&["127.0.0.1:0".parse().expect("addr")], 3, 1 << 20).expect("bind");
        assert_eq!(sockets.len(), 3);
        assert!(sockets
            .iter()
            .all(|s| s.address == sockets[0].address && s.address.port() != 0));
    }
}
