//! Direct ClickHouse ingest: the reference for the ClickHouse sink. The rows Egress stored are
//! read back as RowBinary (`SELECT * FROM flows LIMIT N FORMAT RowBinary`) and posted again,
//! batch after batch over HTTP, into `flows` of a second database built by Egress's own
//! migrations (`egress_bench_direct`), so the server does for them all it does for Egress's
//! inserts, the materialized views of the rollups included; rows per second is what the same
//! server ingests with no collector in front of it.
//!
//! One HTTP request per batch, one after another, like Egress's single sink writer; the body is
//! not compressed (Egress compresses with LZ4), so this measures the server, not the network.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What direct ingest achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectIngest {
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

/// The database direct ingest writes to.
const DIRECT_DATABASE: &str = "egress_bench_direct";

/// Reads up to `batch_rows` rows of `database.flows` and inserts them into `flows` of a fresh
/// [`DIRECT_DATABASE`] (Egress's migrations, as `egress collector` applies them) repeatedly for
/// `duration`.
pub fn measure(
    http_port: u16,
    server_pid: Option<u32>,
    database: &str,
    batch_rows: u64,
    duration: Duration,
) -> Result<DirectIngest> {
    let (status, count) = http_post(
        http_port,
        "/",
        format!("SELECT count() FROM {database}.flows").as_bytes(),
    )?;
    if status != 200 {
        bail!("counting flows: {}", String::from_utf8_lossy(&count));
    }
    let available: u64 = String::from_utf8_lossy(&count)
        .trim()
        .parse()
        .context("flows count")?;
    let rows = available.min(batch_rows);
    if rows == 0 {
        bail!("{database}.flows is empty: run egress-clickhouse first");
    }
    let (status, body) = http_post(
        http_port,
        "/",
        format!("SELECT * FROM {database}.flows LIMIT {rows} FORMAT RowBinary").as_bytes(),
    )?;
    if status != 200 {
        bail!("reading flows as RowBinary: {}", String::from_utf8_lossy(&body));
    }
    let drop = format!("DROP DATABASE IF EXISTS {DIRECT_DATABASE}");
    let (status, answer) = http_post(http_port, "/", drop.as_bytes())?;
    if status != 200 {
        bail!("{drop}: {}", String::from_utf8_lossy(&answer));
    }
    migrate(http_port)?;
    let insert = format!("/?query=INSERT%20INTO%20{DIRECT_DATABASE}.flows%20FORMAT%20RowBinary");
    let server_cpu = || server_pid.and_then(crate::procstat::process_cpu_seconds);
    let cpu_before = server_cpu();
    let start = Instant::now();
    let mut batches = 0u64;
    while batches == 0 || start.elapsed() < duration {
        let (status, answer) = http_post(http_port, &insert, &body)?;
        if status != 200 {
            bail!("direct insert: {}", String::from_utf8_lossy(&answer));
        }
        batches += 1;
    }
    let elapsed = start.elapsed();
    let server_cpu_seconds = server_cpu()
        .zip(cpu_before)
        .map(|(after, before)| (after - before).max(0.0));
    let (_, _) = http_post(http_port, "/", drop.as_bytes())?;
    Ok(DirectIngest {
        rows: rows * batches,
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
