//! ClickHouse sink: a slice of rows in, one `INSERT` out.
//!
//! [`ClickHouseSink::insert`] makes exactly one attempt to insert a whole batch, as positional
//! RowBinary (the client has validation off, see `egress_query::connection::client`), with LZ4
//! wire compression when the client has it (the default). It neither retries nor splits: the
//! writer in [`crate::sink`] keeps a failed batch and asks [`SinkError::is_retryable`] whether
//! trying again can help. ClickHouse applies one HTTP insert atomically per partition block, so a
//! failed attempt inserts nothing for a batch within one day, which keeps retries free of
//! duplicates in the normal case. The exception is an attempt cut off after it reached the server
//! ([`SinkError::may_have_been_stored`]): the server may have committed it, and current servers
//! recognise the retried block (`egress_query::migrate::tables_fed_by_flow_inserts`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clickhouse::error::Error as ClientError;
use clickhouse::insert_formatted::InsertFormatted;
use clickhouse::{Client, RowOwned, RowWrite};

use crate::batch::{EncodedFlows, Rows};
use crate::normalise::FlowRecord;

/// RowBinary bytes sent to the connection at a time (the `clickhouse` crate's frame size; each
/// is LZ4-compressed on its own when compression is on).
const SEND_CHUNK_BYTES: usize = 256 * 1024;

/// Default time an insert may take, from the first byte sent to the server's answer.
pub const DEFAULT_INSERT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an insert failed, and whether a retry of the same rows may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The server could not be reached, or the connection broke: retryable.
    #[error("ClickHouse unreachable inserting into {table}: {source}")]
    Unreachable {
        table: String,
        #[source]
        source: ClientError,
    },
    /// No answer within the insert timeout: retryable.
    #[error("insert into {table} timed out: {source}")]
    TimedOut {
        table: String,
        #[source]
        source: ClientError,
    },
    /// The server answered with an error. `code` is ClickHouse's exception code when the answer
    /// carried one (e.g. 60 unknown table, 252 too many parts).
    #[error("ClickHouse rejected the insert into {table}: {message}")]
    Server {
        table: String,
        code: Option<u32>,
        message: String,
    },
    /// The rows could not be encoded, or the answer could not be read: a bug, not retryable.
    #[error("insert into {table} failed on the client side: {source}")]
    Client {
        table: String,
        #[source]
        source: ClientError,
    },
}

impl SinkError {
    /// True when inserting the same rows again later may succeed: the server is down or slow,
    /// overloaded, or failed for its own reasons (ClickHouse's transient exception codes, or an
    /// HTTP 5xx from a proxy without a ClickHouse code). False when the rows or the schema are
    /// the problem (unknown table or column, rows that do not parse, a type mismatch): sending
    /// them again gives the same answer.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::TimedOut { .. } => true,
            Self::Server { code: Some(code), .. } => is_transient_code(*code),
            Self::Server {
                code: None, message, ..
            } => message.starts_with('5'),
            Self::Client { .. } => false,
        }
    }

    /// True when the server may have stored the rows although the attempt failed: the
    /// connection broke, or no answer came in time, after it was made. A server stopped during
    /// an insert can commit it and close the connection before answering. The writer retries
    /// such a batch like any other; the retry is deduplicated on servers with insert
    /// deduplication (see `egress_query::migrate`), and may store the rows twice on others.
    /// False when the server answered (it names what it did not do) or was never reached.
    pub fn may_have_been_stored(&self) -> bool {
        match self {
            Self::Unreachable { source, .. } => !never_connected(source),
            Self::TimedOut { .. } => true,
            Self::Server { .. } | Self::Client { .. } => false,
        }
    }

    /// The table the insert was for.
    pub fn table(&self) -> &str {
        match self {
            Self::Unreachable { table, .. }
            | Self::TimedOut { table, .. }
            | Self::Server { table, .. }
            | Self::Client { table, .. } => table,
        }
    }

    fn from_client(table: &str, error: ClientError) -> Self {
        let table = table.to_owned();
        match error {
            ClientError::Network(_) => Self::Unreachable { table, source: error },
            ClientError::TimedOut => Self::TimedOut { table, source: error },
            ClientError::BadResponse(message) => Self::Server {
                table,
                code: exception_code(&message),
                message,
            },
            // An `io::Error` from the body stream is the connection breaking mid-insert.
            ClientError::Other(_) => Self::Unreachable { table, source: error },
            _ => Self::Client { table, source: error },
        }
    }
}

/// True when the error's chain holds the refusal or failure of the connection itself: no
/// byte of the insert reached a server.
fn never_connected(error: &ClientError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) {
                return true;
            }
        }
        source = current.source();
    }
    false
}

/// The `NNN` of `Code: NNN` at the start of a ClickHouse error answer. Both server generations
/// start with it: `Code: 60, e.displayText() = DB::Exception: ...` (18.x) and
/// `Code: 60. DB::Exception: ...` (current).
fn exception_code(message: &str) -> Option<u32> {
    let rest = message.trim_start().strip_prefix("Code:")?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// ClickHouse exception codes that describe the server's state rather than the request.
fn is_transient_code(code: u32) -> bool {
    matches!(
        code,
        3       // UNEXPECTED_END_OF_FILE: the body was cut off in transit
        | 159   // TIMEOUT_EXCEEDED
        | 164   // READONLY (e.g. a replica in read-only mode)
        | 202   // TOO_MANY_SIMULTANEOUS_QUERIES
        | 203   // NO_FREE_CONNECTION
        | 209   // SOCKET_TIMEOUT
        | 210   // NETWORK_ERROR
        | 241   // MEMORY_LIMIT_EXCEEDED
        | 242   // TABLE_IS_READ_ONLY
        | 243   // NOT_ENOUGH_SPACE
        | 252   // TOO_MANY_PARTS
        | 319   // UNKNOWN_STATUS_OF_INSERT
        | 425   // SYSTEM_ERROR
        | 439   // CANNOT_SCHEDULE_TASK
        | 999 // KEEPER_EXCEPTION
    )
}

/// Inserts batches of rows into ClickHouse tables.
#[derive(Debug, Clone)]
pub struct ClickHouseSink {
    client: Client,
    insert_timeout: Duration,
    /// Set once the server is known to deduplicate inserts (see
    /// [`ClickHouseSink::deduplication_switch`]).
    deduplicates: Arc<AtomicBool>,
}

impl ClickHouseSink {
    /// A sink over `client` (from `egress_query::connection::client`), with the default insert
    /// timeout.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            insert_timeout: DEFAULT_INSERT_TIMEOUT,
            deduplicates: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The switch that says the server deduplicates inserts (`ServerVersion::
    /// has_insert_deduplication`; whoever learns the version sets it, before the first insert).
    /// Once set, flow inserts carry `deduplicate_blocks_in_dependent_materialized_views = 1`, so
    /// that a retried block the server already holds is skipped by the rollup views as by
    /// `flows` (`egress_query::migrate::tables_fed_by_flow_inserts`). 18.16 does not know the
    /// setting, hence the switch.
    pub fn deduplication_switch(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.deduplicates)
    }

    /// Sets how long one insert may take (`clickhouse.insert_timeout_seconds`).
    pub fn with_insert_timeout(mut self, insert_timeout: Duration) -> Self {
        self.insert_timeout = insert_timeout;
        self
    }

    /// One attempt to insert all of `rows` into `table` as one `INSERT`. No rows send nothing.
    pub async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), SinkError>
    where
        T: RowOwned + RowWrite + Send + Sync,
    {
        self.insert_all(table, rows.iter()).await
    }

    /// [`ClickHouseSink::insert`] of a batch's rows, as they are held.
    pub async fn insert_rows<T>(&self, table: &str, rows: &Rows<T>) -> Result<(), SinkError>
    where
        T: RowOwned + RowWrite + Send + Sync,
    {
        self.insert_all(table, rows.iter()).await
    }

    /// [`ClickHouseSink::insert_rows`] for flow rows held as rows (spool segments of earlier
    /// versions, and sinks whose batcher does not encode): encoded with
    /// [`EncodedFlows::encode`], then sent as [`ClickHouseSink::insert_encoded_flows`] does.
    pub async fn insert_flows(&self, table: &str, rows: &Rows<FlowRecord>) -> Result<(), SinkError> {
        self.insert_encoded_flows(table, &EncodedFlows::encode(rows))
            .await
    }

    /// Inserts flow rows already in RowBinary ([`FlowRecord::write_row_binary`]) through the
    /// crate's formatted insert, in frames of [`SEND_CHUNK_BYTES`], instead of going through
    /// serde field by field (a fifth of the collector's time at 0.5 M rows/s went there).
    pub async fn insert_encoded_flows(&self, table: &str, encoded: &EncodedFlows) -> Result<(), SinkError> {
        if encoded.rows == 0 {
            return Ok(());
        }
        let fail = |error| SinkError::from_client(table, error);
        let mut insert = self.flows_insert(table);
        // Frames are slices of the batch's shared bytes: nothing is copied before compression.
        let total = encoded.bytes.len();
        for start in (0..total).step_by(SEND_CHUNK_BYTES) {
            let frame = encoded.bytes.slice(start..total.min(start + SEND_CHUNK_BYTES));
            insert.send(frame).await.map_err(fail)?;
        }
        insert.end().await.map_err(fail)
    }

    /// An `INSERT` of RowBinary flow rows. The statement names the columns, so the table's own
    /// column order does not matter, as with the crate's typed insert.
    fn flows_insert(&self, table: &str) -> InsertFormatted {
        let columns: Vec<String> = <FlowRecord as clickhouse::Row>::COLUMN_NAMES
            .iter()
            .map(|column| format!("`{column}`"))
            .collect();
        let settings = if self.deduplicates.load(Ordering::Relaxed) {
            " SETTINGS deduplicate_blocks_in_dependent_materialized_views = 1"
        } else {
            ""
        };
        self.client
            .insert_formatted_with(format!(
                "INSERT INTO {table} ({}){settings} FORMAT RowBinary",
                columns.join(", ")
            ))
            .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout))
    }

    async fn insert_all<'a, T>(
        &self,
        table: &str,
        rows: impl Iterator<Item = &'a T> + Send,
    ) -> Result<(), SinkError>
    where
        T: RowOwned + RowWrite + Send + Sync + 'a,
    {
        let mut rows = rows.peekable();
        if rows.peek().is_none() {
            return Ok(());
        }
        let fail = |error| SinkError::from_client(table, error);
        let mut insert = self
            .client
            .insert::<T>(table)
            .await
            .map_err(fail)?
            .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
        for row in rows {
            insert.write(row).await.map_err(fail)?;
        }
        insert.end().await.map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_query::schema::{
        Direction, FlowType, InterfaceKind, InterfaceRole, RttSource, SamplingSource, TrafficDirection,
    };
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// Rows that set every column, with long and non-ASCII strings and both states of every
    /// nullable.
    fn every_column() -> Vec<FlowRecord> {
        let mut first = FlowRecord::new(IpAddr::from([192, 0, 2, 1]), 1_700_000_000, FlowType::Ipfix);
        first.time_flow_start = 1_699_999_990;
        first.observation_domain = 0x0102_0304;
        first.sampling_rate = 1 << 40;
        first.sampling_source = SamplingSource::Options;
        first.src_addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
        first.dst_addr = Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped();
        (first.src_port, first.dst_port, first.proto) = (51234, 443, 6);
        (first.bytes, first.packets) = (u64::MAX, 3);
        (first.in_if, first.out_if, first.src_as, first.dst_as) = (1, u32::MAX, 64496, 65551);
        (first.src_mask, first.dst_mask, first.tcp_flags, first.tos) = (48, 24, 0x1b, 0xb8);
        first.next_hop = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        (first.vlan, first.etype) = (4094, 0x86dd);
        first.direction = Direction::Egress;
        first.traffic_direction = TrafficDirection::Outbound;
        first.egress_path = "transit-a".repeat(40).into();
        first.exporter_name = "edge1.fra".into();
        first.exporter_site = "Frankfurt – Mörfelden".into();
        first.in_if_name = "ae0".into();
        first.out_if_name = "et-0/0/1".into();
        (first.in_if_role, first.out_if_role) = (InterfaceRole::Internal, InterfaceRole::External);
        (first.in_if_kind, first.out_if_kind) = (InterfaceKind::None, InterfaceKind::Transit);
        first.out_if_provider = "Transit A".into();
        (first.src_internal, first.dst_internal) = (1, 0);
        first.dst_cloud = "aws/S3/eu-west-1".into();
        (first.rtt_client_us, first.rtt_server_us, first.rtt_app_us) = (Some(0), None, Some(u32::MAX));
        first.rtt_source = RttSource::Nprobe;
        let second = FlowRecord::new(
            IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2]),
            0,
            FlowType::Sflow5,
        );
        vec![first, second]
    }

    /// A client of the crate's mock server, as `egress_query::connection::client` configures one
    /// (no validation), without compression so that the mock can read the rows back.
    fn mock_client(mock: &clickhouse::test::Mock) -> Client {
        Client::default()
            .with_url(mock.url())
            .with_validation(false)
            .with_compression(clickhouse::Compression::None)
    }

    #[tokio::test]
    async fn hand_written_row_binary_reads_back_as_the_crates_own() {
        let mock = clickhouse::test::Mock::new();
        let client = mock_client(&mock);
        let recording = mock.add(clickhouse::test::handlers::record());
        let rows = every_column();
        ClickHouseSink::new(client)
            .insert_flows("flows", &Rows::from(rows.clone()))
            .await
            .expect("insert");
        let read: Vec<FlowRecord> = recording.collect().await;
        assert_eq!(read, rows);
    }

    #[tokio::test]
    async fn encoded_flow_batches_insert_the_same_rows_in_frames() {
        let mock = clickhouse::test::Mock::new();
        let client = mock_client(&mock);
        let recording = mock.add(clickhouse::test::handlers::record());
        // Enough rows for several 256 KiB frames, so a row is cut between two of them.
        let rows: Vec<FlowRecord> = (0..3000).flat_map(|_| every_column()).collect();
        let encoded = EncodedFlows::encode(&Rows::from(rows.clone()));
        assert!(encoded.bytes.len() > 2 * SEND_CHUNK_BYTES);
        ClickHouseSink::new(client)
            .insert_encoded_flows("flows", &encoded)
            .await
            .expect("insert");
        let read: Vec<FlowRecord> = recording.collect().await;
        assert_eq!(read, rows);
    }

    fn server(message: &str) -> SinkError {
        SinkError::from_client("flows", ClientError::BadResponse(message.to_owned()))
    }

    #[test]
    fn exception_codes_of_both_server_generations_are_read() {
        let old = "Code: 60, e.displayText() = DB::Exception: Table egress.nope doesn't exist., e.what() = DB::Exception";
        let new =
            "Code: 60. DB::Exception: Table egress.nope does not exist. (UNKNOWN_TABLE) (version 26.1.1)";
        assert_eq!(exception_code(old), Some(60));
        assert_eq!(exception_code(new), Some(60));
        assert_eq!(exception_code("503 Service Unavailable"), None);
    }

    #[test]
    fn schema_errors_are_final_and_overload_is_retryable() {
        assert!(!server("Code: 60. DB::Exception: Table egress.nope does not exist.").is_retryable());
        assert!(!server("Code: 33, e.displayText() = DB::Exception: Cannot read all data").is_retryable());
        assert!(server("Code: 252. DB::Exception: Too many parts (300).").is_retryable());
        assert!(server("Code: 241. DB::Exception: Memory limit (total) exceeded").is_retryable());
        assert!(server("502 Bad Gateway").is_retryable());
        assert!(!server("400 Bad Request").is_retryable());
        assert_eq!(server("x").table(), "flows");
    }

    /// An insert of two rows to `url` with a 5-s timeout; the error it ends with.
    async fn failed_insert(url: &str) -> SinkError {
        let client = Client::default().with_url(url).with_validation(false);
        let sink = ClickHouseSink::new(client).with_insert_timeout(Duration::from_secs(5));
        sink.insert_flows("flows", &Rows::from(every_column()))
            .await
            .expect_err("no server answers")
    }

    #[tokio::test]
    async fn a_refused_connection_stored_nothing_a_broken_one_may_have() {
        // Nobody listens: refused before a byte was sent.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let refused = failed_insert(&format!("http://127.0.0.1:{port}")).await;
        assert!(refused.is_retryable(), "{refused}");
        assert!(!refused.may_have_been_stored(), "{refused:?}");

        // A server that reads the request and hangs up without answering, as a ClickHouse
        // stopped mid-insert can after committing it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let hang_up = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buffer = vec![0u8; 64 * 1024];
            let _ = socket.read(&mut buffer).await;
        });
        let broken = failed_insert(&url).await;
        hang_up.await.expect("server");
        assert!(broken.is_retryable(), "{broken}");
        assert!(broken.may_have_been_stored(), "{broken:?}");
        assert!(SinkError::from_client("flows", ClientError::TimedOut).may_have_been_stored());
        assert!(!server("Code: 252. DB::Exception: Too many parts (300).").may_have_been_stored());
    }

    #[test]
    fn timeouts_and_encoding_failures_are_classified() {
        assert!(SinkError::from_client("flows", ClientError::TimedOut).is_retryable());
        assert!(!SinkError::from_client("flows", ClientError::NotEnoughData).is_retryable());
    }
}
