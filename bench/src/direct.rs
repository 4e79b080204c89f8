//! Direct ClickHouse ingest: the reference for the ClickHouse sink. One batch of the rows
//! Egress inserts for a stream ([`egress_rows`]: the stream decoded by Egress's own decoder, in
//! the order the benchmark's exporters send it, written as Egress writes RowBinary) is posted
//! over and over, over HTTP, into `flows` of a second database built by Egress's own migrations
//! (`egress_bench_direct`), so the server does for them all it does for Egress's inserts, the
//! materialized views of the rollups included; rows per second is what the same server ingests
//! with no collector in front of it.
//!
//! The rows are made rather than read back from the table: read back, they came out in the
//! order of whichever parts the server read first, and the same server took them at 0.59 M,
//! 0.65 M and 0.95 M rows/s in three runs of one afternoon (IPFIX); made, they are the same
//! every time and arrive as Egress's do.
//!
//! One HTTP request per batch, one after another on each of one or more insert streams (Egress
//! keeps `batch.inserts_in_flight` inserts in flight, two by default; the benchmark measures one
//! stream and two and prints the ClickHouse sink's ratio against each); the body is not
//! compressed (Egress compresses with LZ4), so this measures the server, not the network.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use egress_collector::batch::{EncodedFlows, Rows};
use egress_collector::decode::{DecodeOutput, Decoder, DecoderConfig};
use egress_collector::normalise::FlowRecord;

use crate::streams::Stream;

/// What direct ingest achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectIngest {
    /// Insert streams posting side by side.
    pub streams: usize,
    pub rows: u64,
    pub batches: u64,
    pub elapsed: Duration,
    /// CPU seconds of the server over `elapsed`, when its process id was known.
    pub server_cpu_seconds: Option<f64>,
}

impl DirectIngest {
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU cores the server used while ingesting.
    pub fn server_cores(&self) -> Option<f64> {
        self.server_cpu_seconds
            .map(|seconds| seconds / self.elapsed.as_secs_f64().max(1e-9))
    }
}

/// The longest wait for the server's merges before direct ingest starts.
const MERGE_WAIT: Duration = Duration::from_secs(60);

/// The database direct ingest writes to.
const DIRECT_DATABASE: &str = "egress_bench_direct";

/// `rows` flow rows of `stream` as Egress would insert them, in RowBinary: `exporters`
/// exporters (127.0.1.10 and up, as the replay's sources) each send the stream from its first
/// datagram, one datagram in turn, and each datagram is decoded by Egress's decoder as it
/// arrives, received now.
pub fn egress_rows(stream: &Stream, exporters: usize, rows: usize) -> Result<EncodedFlows> {
    let exporters: Vec<std::net::IpAddr> = (0..exporters.max(1))
        .map(|i| std::net::IpAddr::from([127, 0, 1, (10 + i) as u8]))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as u32;
    let mut decoder = Decoder::new(&DecoderConfig::default());
    let mut out = DecodeOutput::default();
    let mut flows: Vec<FlowRecord> = Vec::with_capacity(rows);
    // Enough turns for `rows` even if only one datagram in the stream held records.
    'turns: for turn in 0..rows.saturating_mul(stream.datagrams.len()).max(1) {
        let datagram = &stream.datagrams[turn / exporters.len() % stream.datagrams.len()];
        out.clear();
        // A datagram Egress cannot decode stores nothing, here as there.
        let _ = decoder.decode(exporters[turn % exporters.len()], now, datagram, &mut out);
        for flow in out.flows.drain(..) {
            if flows.len() == rows {
                break 'turns;
            }
            flows.push(flow);
        }
    }
    if flows.len() < rows {
        bail!(
            "the {} stream gave {} of {rows} rows",
            stream.protocol,
            flows.len()
        );
    }
    Ok(EncodedFlows::encode(&Rows::from(flows)))
}

/// Posts `batch` into a fresh `egress_bench_direct.flows` on `streams` connections side by
/// side, one insert after another on each, for `duration` (at least one insert each).
pub fn measure(
    http_port: u16,
    server_pid: Option<u32>,
    batch: &EncodedFlows,
    duration: Duration,
    streams: usize,
) -> Result<DirectIngest> {
    let drop = format!("DROP DATABASE IF EXISTS {DIRECT_DATABASE}");
    let (status, answer) = http_post(http_port, "/", drop.as_bytes())?;
    if status != 200 {
        bail!("{drop}: {}", String::from_utf8_lossy(&answer));
    }
    migrate(http_port)?;
    wait_for_merges(http_port)?;
    let columns: Vec<String> = <FlowRecord as clickhouse::Row>::COLUMN_NAMES
        .iter()
        .map(|column| format!("`{column}`"))
        .collect();
    let statement = format!(
        "INSERT INTO {DIRECT_DATABASE}.flows ({}) FORMAT RowBinary",
        columns.join(", ")
    );
    let insert = format!(
        "/?query={}",
        percent_encoding::utf8_percent_encode(&statement, percent_encoding::NON_ALPHANUMERIC)
    );
    let body = &batch.bytes;
    let server_cpu = || server_pid.and_then(crate::procstat::process_cpu_seconds);
    let cpu_before = server_cpu();
    let start = Instant::now();
    let post_for_duration = || -> Result<u64> {
        let mut batches = 0u64;
        while batches == 0 || start.elapsed() < duration {
            let (status, answer) = http_post(http_port, &insert, body)?;
            if status != 200 {
                bail!("direct insert: {}", String::from_utf8_lossy(&answer));
            }
            batches += 1;
        }
        Ok(batches)
    };
    let batches = std::thread::scope(|scope| {
        let posters: Vec<_> = (0..streams.max(1))
            .map(|_| scope.spawn(post_for_duration))
            .collect();
        posters
            .into_iter()
            .map(|poster| poster.join().expect("a direct insert stream panicked"))
            .sum::<Result<u64>>()
    })?;
    let elapsed = start.elapsed();
    let server_cpu_seconds = server_cpu()
        .zip(cpu_before)
        .map(|(after, before)| (after - before).max(0.0));
    let (_, _) = http_post(http_port, "/", drop.as_bytes())?;
    Ok(DirectIngest {
        streams: streams.max(1),
        rows: batch.rows as u64 * batches,
        batches,
        elapsed,
        server_cpu_seconds,
    })
}

/// Applies Egress's migrations to [`DIRECT_DATABASE`] on the server at `http_port`.
fn migrate(http_port: u16) -> Result<()> {
    use egress_query::connection::{self, ClickHouseConfig};
    let config = ClickHouseConfig {
        url: format!("http://127.0.0.1:{http_port}"),
        database: DIRECT_DATABASE.to_owned(),
        ..ClickHouseConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = connection::client(&config)?;
        let version = connection::server_version(&client).await?;
        egress_query::migrate::migrate(&client, &config, &version).await?;
        Ok(())
    })
}

/// Waits (up to [`MERGE_WAIT`]) until the server runs no merge, so that merges left by
/// Egress's last run do not slow the reference down.
fn wait_for_merges(http_port: u16) -> Result<()> {
    let deadline = Instant::now() + MERGE_WAIT;
    loop {
        let (status, body) = http_post(http_port, "/", b"SELECT count() FROM system.merges")?;
        if status != 200 {
            bail!("reading system.merges: {}", String::from_utf8_lossy(&body));
        }
        if String::from_utf8_lossy(&body).trim() == "0" || Instant::now() > deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.0 POST to ClickHouse on loopback; returns the status and the body.
fn http_post(port: u16, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).context("connecting to ClickHouse")?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("HTTP response without headers")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("HTTP response without status")?;
    Ok((status, response[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::Protocol;

    /// A NetFlow v5 datagram of `records` flows (the fields the decoder needs; the rest zero).
    fn netflow5(records: u16) -> Vec<u8> {
        let mut datagram = Vec::new();
        datagram.extend_from_slice(&5u16.to_be_bytes());
        datagram.extend_from_slice(&records.to_be_bytes());
        datagram.extend_from_slice(&[0; 20]);
        for record in 0..records {
            let mut flow = [0u8; 48];
            flow[..4].copy_from_slice(&[10, 0, 0, record as u8]);
            flow[4..8].copy_from_slice(&[198, 51, 100, 1]);
            flow[16..20].copy_from_slice(&1u32.to_be_bytes());
            flow[20..24].copy_from_slice(&100u32.to_be_bytes());
            flow[38] = 6;
            datagram.extend_from_slice(&flow);
        }
        datagram
    }

    #[test]
    fn a_batch_takes_its_rows_from_every_exporter_in_turn() {
        let stream = Stream {
            protocol: Protocol::Netflow5,
            datagrams: vec![netflow5(2), netflow5(3)],
            records: vec![2, 3],
            packets: vec![2, 3],
        };
        // Exporter 0 (127.0.1.10) sends datagram 0 (2 rows), exporter 1 datagram 0 (2),
        // exporter 2 datagram 0 (2), exporter 0 datagram 1 (the seventh row is the first of 3).
        let batch = egress_rows(&stream, 3, 7).expect("rows");
        assert_eq!(batch.rows, 7);
        // Every row has the same length here; the exporter's address is bytes 12..28 of it
        // (after three times), IPv4-mapped.
        let row = batch.bytes.len() / 7;
        assert_eq!(batch.bytes.len(), 7 * row);
        let exporters: Vec<u8> = (0..7).map(|i| batch.bytes[i * row + 27]).collect();
        assert_eq!(exporters, [10, 10, 11, 11, 12, 12, 10]);
    }

    #[test]
    fn a_stream_without_records_is_an_error() {
        let stream = Stream {
            protocol: Protocol::Netflow5,
            datagrams: vec![vec![0, 5]],
            records: vec![0],
            packets: vec![0],
        };
        let error = egress_rows(&stream, 2, 10).expect_err("no rows");
        assert!(error.to_string().contains("gave 0 of 10 rows"), "{error}");
    }
}
