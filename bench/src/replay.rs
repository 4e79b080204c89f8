//! Replay: a [`Stream`] in, paced UDP datagrams to one collector out, and a [`ReplayReport`]
//! of exactly what was sent.
//!
//! Several sender threads share the rate; each owns `sources_per_sender` sockets bound to their
//! own loopback addresses (127.0.1.x), and each socket is one exporter as far as a collector can
//! tell: it sends the stream from its first datagram (templates first) and loops. Pacing is by
//! deadline: a thread sends until it has caught up with `elapsed × rate`, then sleeps briefly,
//! so short bursts are at most a few dozen datagrams. When a thread cannot keep up, the achieved
//! rate in the report is lower than asked, and the search says the sender was the limit.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol as SocketProtocol, Socket, Type};

use crate::streams::Stream;

/// Socket send buffer of each sender socket (capped by `net.core.wmem_max`).
const SEND_BUFFER: usize = 4 << 20;
/// Datagrams sent between two looks at the clock.
const BURST: u64 = 16;

/// How to replay a stream.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    pub target: SocketAddr,
    /// Records (sFlow: samples) per second over all senders.
    pub records_per_second: f64,
    pub duration: Duration,
    pub senders: usize,
    pub sources_per_sender: usize,
}

/// What a replay sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplayReport {
    pub datagrams: u64,
    pub records: u64,
    pub packets: u64,
    /// Sends the kernel refused (counted, not in the totals above).
    pub send_errors: u64,
    pub elapsed: Duration,
}

impl ReplayReport {
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn datagrams_per_second(&self) -> f64 {
        self.datagrams as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, other: &ReplayReport) {
        self.datagrams += other.datagrams;
        self.records += other.records;
        self.packets += other.packets;
        self.send_errors += other.send_errors;
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// Replays `stream` as `plan` says and returns when every sender has finished.
pub fn replay(stream: &Arc<Stream>, plan: &ReplayPlan) -> Result<ReplayReport> {
    let senders = plan.senders.max(1);
    let sources = plan.sources_per_sender.max(1);
    let datagrams_per_second = plan.records_per_second / stream.records_per_datagram() / senders as f64;
    let mut sockets = Vec::new();
    for sender in 0..senders {
        let mut own = Vec::new();
        for source in 0..sources {
            let address = SocketAddr::from(([127, 0, 1, (10 + sender * sources + source) as u8], 0));
            own.push(sender_socket(address, plan.target)?);
        }
        sockets.push(own);
    }
    let start = Instant::now();
    let threads: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(index, own)| {
            let stream = Arc::clone(stream);
            let duration = plan.duration;
            std::thread::Builder::new()
                .name(format!("bench-sender-{index}"))
                .spawn(move || send_paced(&stream, &own, datagrams_per_second, duration, start))
                .context("starting a sender thread")
        })
        .collect::<Result<_>>()?;
    let mut total = ReplayReport::default();
    for thread in threads {
        let report = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a sender thread panicked"))?;
        total.add(&report);
    }
    Ok(total)
}

/// A UDP socket bound to `source` and connected to `target`.
fn sender_socket(source: SocketAddr, target: SocketAddr) -> Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(SocketProtocol::UDP))?;
    // Best effort: the kernel caps it at net.core.wmem_max.
    let _ = socket.set_send_buffer_size(SEND_BUFFER);
    socket
        .bind(&source.into())
        .with_context(|| format!("binding a sender socket to {source}"))?;
    socket
        .connect(&target.into())
        .with_context(|| format!("connecting to {target}"))?;
    Ok(socket.into())
}

/// One sender thread: round-robin over its sockets, each walking the stream on its own.
fn send_paced(
    stream: &Stream,
    sockets: &[UdpSocket],
    datagrams_per_second: f64,
    duration: Duration,
    start: Instant,
) -> ReplayReport {
    let mut report = ReplayReport::default();
    let mut positions = vec![0usize; sockets.len()];
    let mut sent: u64 = 0;
    let mut turn = 0usize;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (elapsed.as_secs_f64() * datagrams_per_second) as u64;
        if sent >= due {
            let next = Duration::from_secs_f64((sent + 1) as f64 / datagrams_per_second);
            std::thread::sleep(next.saturating_sub(elapsed).min(Duration::from_millis(1)));
            continue;
        }
        for _ in 0..BURST.min(due - sent) {
            let position = &mut positions[turn];
            let index = *position;
            match sockets[turn].send(&stream.datagrams[index]) {
                Ok(_) => {
                    report.datagrams += 1;
                    report.records += stream.records[index];
                    report.packets += stream.packets[index];
                }
                Err(_) => report.send_errors += 1,
            }
            *position = (index + 1) % stream.datagrams.len();
            turn = (turn + 1) % sockets.len();
            sent += 1;
        }
    }
    report.elapsed = start.elapsed().min(duration.max(Duration::from_millis(1)));
    report
}
