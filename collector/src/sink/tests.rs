//! The spooled writer against a hand-written HTTP server that holds each insert until a given
//! number are open at once: how many inserts the writer really has in flight, and that the
//! spool drains side by side.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::batch::{EncodedFlows, Rows};
use crate::normalise::{FlowRecord, FlowType};
use crate::spool::SpoolConfig;

/// What the server saw: requests answered, and the most open at the same time.
#[derive(Debug, Default)]
struct Seen {
    open: AtomicUsize,
    most_open: AtomicUsize,
    answered: AtomicUsize,
}

/// Answers every complete request (chunked body ended) with 200, but only once `hold_for`
/// requests are open at the same time, or after 300 ms without that.
async fn holding_server(hold_for: usize) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let seen = Arc::new(Seen::default());
    let server_seen = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let seen = server_seen.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                    if !request.ends_with(b"0\r\n\r\n") {
                        continue;
                    }
                    request.clear();
                    let open = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most_open.fetch_max(open, Ordering::SeqCst);
                    let until = Instant::now() + Duration::from_millis(300);
                    while seen.open.load(Ordering::SeqCst) < hold_for && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    // Let the other open requests see the count before it drops.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    seen.answered.fetch_add(1, Ordering::SeqCst);
                    seen.open.fetch_sub(1, Ordering::SeqCst);
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn batch(first: u64) -> Batch {
    let rows: Vec<FlowRecord> = (first..first + 100)
        .map(|n| {
            let mut row = FlowRecord::new([192, 0, 2, 1].into(), 7, FlowType::Ipfix);
            row.bytes = n;
            row
        })
        .collect();
    Batch::EncodedFlows(EncodedFlows::encode(&Rows::from(rows)))
}

/// Two fresh batches and four spooled ones through a writer with `slots` inserts in flight;
/// the server's account and the writer's.
async fn run_writer(slots: usize) -> (Arc<Seen>, Metrics, usize) {
    let (url, seen) = holding_server(2).await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let spool_config = spool_in(&spool_dir);
    let mut spool = Spool::open(&spool_config).expect("spool");
    for i in 0..4 {
        spool.append(&batch(i * 100)).expect("append");
    }
    let (writer, metrics) = spooled_writer(url, spool, slots);
    let (input, receiver) = mpsc::channel(2);
    input.send(batch(400)).await.expect("send");
    input.send(batch(500)).await.expect("send");
    drop(input);
    run_to_end(writer, receiver).await;
    let left = Spool::open(&spool_config).expect("reopen").batches();
    (seen, metrics, left)
}

/// A spool in `dir`.
fn spool_in(dir: &tempfile::TempDir) -> SpoolConfig {
    SpoolConfig {
        enabled: true,
        dir: dir.path().to_owned(),
        ..SpoolConfig::default()
    }
}

/// A writer with `spool` and `slots` inserts in flight to the server at `url`.
fn spooled_writer(url: String, spool: Spool, slots: usize) -> (SinkWriter, Metrics) {
    let client = ::clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
        .with_compression(::clickhouse::Compression::None);
    let metrics = Metrics::new();
    let writer = SinkWriter {
        sink: Sink::ClickHouse(Box::new(ClickHouseSink::new(client))),
        metrics: metrics.clone(),
        config: BatchConfig {
            inserts_in_flight: slots,
            ..BatchConfig::default()
        },
        schema_ready: None,
        spool: Some(spool),
    };
    (writer, metrics)
}

async fn run_to_end(writer: SinkWriter, input: mpsc::Receiver<Batch>) {
    tokio::time::timeout(
        Duration::from_secs(20),
        writer.run(input, CancellationToken::new()),
    )
    .await
    .expect("the writer finishes once its input has ended and the spool is replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slots_keep_two_inserts_in_flight_and_drain_the_spool() {
    let (seen, metrics, left) = run_writer(2).await;
    assert_eq!(
        seen.answered.load(Ordering::SeqCst),
        6,
        "two fresh, four replayed"
    );
    assert_eq!(seen.most_open.load(Ordering::SeqCst), 2, "two inserts at once");
    assert_eq!(metrics.records_written.get(), 600);
    assert_eq!(left, 0, "the spool is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slot_sends_one_insert_at_a_time() {
    let (seen, metrics, left) = run_writer(1).await;
    assert_eq!(seen.answered.load(Ordering::SeqCst), 6);
    assert_eq!(seen.most_open.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.records_written.get(), 600);
    assert_eq!(left, 0);
}

/// While the one slot is busy (the server holds each insert 300 ms), the first
/// [`WAITING_BATCHES`] batches that arrive wait in memory and only the next one goes to disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_beyond_the_waiting_ones_go_to_the_spool() {
    let (url, seen) = holding_server(2).await;
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let spool_config = spool_in(&spool_dir);
    let spool = Spool::open(&spool_config).expect("spool");
    let (writer, metrics) = spooled_writer(url, spool, 1);
    let sent = 2 + WAITING_BATCHES as u64;
    let (input, receiver) = mpsc::channel(8);
    for i in 0..sent {
        input.send(batch(i * 100)).await.expect("send");
    }
    drop(input);
    run_to_end(writer, receiver).await;
    assert_eq!(seen.answered.load(Ordering::SeqCst) as u64, sent);
    assert_eq!(
        metrics.records_spooled.get(),
        100,
        "one batch went through the disk"
    );
    assert_eq!(metrics.records_written.get(), sent * 100);
    assert_eq!(Spool::open(&spool_config).expect("reopen").batches(), 0);
}
