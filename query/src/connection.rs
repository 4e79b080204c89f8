//! ClickHouse connection settings shared by the collector and the query service.
//!
//! In: the `[clickhouse]` section of the configuration ([`ClickHouseConfig`]) and the password
//! from the environment or a file. Out: a configured [`clickhouse::Client`] ([`client`]) and the
//! server's version with what it can do ([`server_version`], [`ServerVersion`]), from which
//! [`crate::migrate`] chooses the DDL.
//!
//! Egress supports two server generations with one code path: current ClickHouse and the 18.16
//! that Debian ships. Rows always travel as plain `RowBinary` (no names or types header), which
//! both understand; that is why every client has validation turned off (see [`client`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clickhouse::Client;
use serde::{Deserialize, Serialize};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The password could not be read from where the configuration says it is.
    #[error("clickhouse password: {0}")]
    Password(String),
    /// The server could not be reached or answered with an error.
    #[error("clickhouse query `{query}` failed: {source}")]
    Query {
        query: String,
        #[source]
        source: clickhouse::error::Error,
    },
    /// The server did not answer in time.
    #[error("clickhouse query `{query}` timed out after {timeout:?}")]
    Timeout { query: String, timeout: Duration },
    /// `SELECT version()` returned something that is not `major.minor...`.
    #[error("cannot parse ClickHouse version {0:?}")]
    Version(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, ConnectionError>;

/// Wire compression of inserts and query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireCompression {
    /// LZ4 (ClickHouse's native block compression): a few percent of CPU for 3-10x less traffic.
    #[default]
    Lz4,
    /// Uncompressed; for debugging with a packet capture.
    None,
}

/// Where Egress stores flows: the `[clickhouse]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP(S) URL of the ClickHouse server's HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding the Egress tables. `egress migrate` creates it if it is missing.
    pub database: String,
    /// ClickHouse user name.
    pub user: String,
    /// Name of an environment variable holding the user's password. The password itself is
    /// never written in the configuration. Unset (and no `password_file`): no password.
    pub password_env: Option<String>,
    /// Path of a file holding the user's password (trailing newline ignored), e.g. a mounted
    /// secret. Mutually exclusive with `password_env`.
    pub password_file: Option<PathBuf>,
    /// Wire compression: `lz4` (default) or `none`.
    pub compression: WireCompression,
    /// Seconds an insert may take, from the first byte sent to the server's answer. An insert
    /// that times out is retried by the batch stage.
    pub insert_timeout_seconds: u64,
    /// Seconds a query (version check, migration, retention) may take.
    pub query_timeout_seconds: u64,
    /// Days of data kept. Enforced by a table TTL where the server supports it and by dropping
    /// whole day partitions otherwise (ClickHouse before 19.6). 0 keeps data forever.
    pub retention_days: u32,
    /// Name of a cluster of the servers' `remote_servers` configuration. When set, every table
    /// is a `<name>_local` table on each node under a `Distributed` table of the usual name
    /// (see [`crate::cluster`]): writers and readers keep using the usual names.
    pub cluster: Option<String>,
    /// HTTP(S) URLs of every node of `cluster` (every replica of every shard). When set, Egress
    /// runs the schema DDL and the retention jobs on each node itself, which needs no keeper;
    /// when empty, DDL is sent once `ON CLUSTER` (the servers need distributed DDL, i.e. a
    /// ZooKeeper or ClickHouse Keeper).
    pub cluster_nodes: Vec<String>,
    /// Replicated table engines for the local tables: `auto` (when the node has a keeper,
    /// i.e. `system.zookeeper` answers), `always` or `never`. Replicated engines need the
    /// `{shard}` and `{replica}` macros in each server's configuration.
    pub replication: Replication,
}

/// Whether cluster-local tables use `Replicated*MergeTree` engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// Replicated when the node has a keeper.
    #[default]
    Auto,
    /// Always replicated (fails where there is no keeper).
    Always,
    /// Plain MergeTree shards.
    Never,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".to_owned(),
            database: "egress".to_owned(),
            user: "default".to_owned(),
            password_env: None,
            password_file: None,
            compression: WireCompression::Lz4,
            insert_timeout_seconds: 30,
            query_timeout_seconds: 60,
            retention_days: 30,
            cluster: None,
            cluster_nodes: Vec::new(),
            replication: Replication::Auto,
        }
    }
}

impl ClickHouseConfig {
    /// Every problem with these settings, each starting with the key it is about (without the
    /// `clickhouse.` prefix). Empty when the settings are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(format!("url: {:?} is not an http:// or https:// URL", self.url));
        }
        if !is_identifier(&self.database) {
            problems.push(format!(
                "database: {:?} must be letters, digits and `_`, not starting with a digit",
                self.database
            ));
        }
        if self.user.is_empty() {
            problems.push("user: must not be empty (ClickHouse's own default is `default`)".to_owned());
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            problems.push("password_env: set either password_env or password_file, not both".to_owned());
        }
        if self.insert_timeout_seconds == 0 {
            problems.push("insert_timeout_seconds: must be at least 1".to_owned());
        }
        if self.query_timeout_seconds == 0 {
            problems.push("query_timeout_seconds: must be at least 1".to_owned());
        }
        match &self.cluster {
            Some(cluster) if !is_identifier(cluster) => problems.push(format!(
                "cluster: {cluster:?} must be letters, digits and `_`, not starting with a digit"
            )),
            None if !self.cluster_nodes.is_empty() => {
                problems.push("cluster_nodes: set only together with cluster".to_owned());
            }
            _ => {}
        }
        for node in &self.cluster_nodes {
            if !(node.starts_with("http://") || node.starts_with("https://")) {
                problems.push(format!(
                    "cluster_nodes: {node:?} is not an http:// or https:// URL"
                ));
            }
        }
        problems
    }

    /// The name of the table holding `table`'s rows on each node: `<table>_local` in a
    /// cluster, `table` itself otherwise.
    pub fn storage_table(&self, table: &str) -> String {
        match self.cluster {
            Some(_) => format!("{table}{}", crate::cluster::LOCAL_SUFFIX),
            None => table.to_owned(),
        }
    }

    /// How long an insert may take.
    pub fn insert_timeout(&self) -> Duration {
        Duration::from_secs(self.insert_timeout_seconds)
    }

    /// How long a query may take.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.query_timeout_seconds)
    }

    /// The password from `password_env` or `password_file`, if either is set.
    pub fn password(&self) -> Result<Option<String>> {
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|e| ConnectionError::Password(format!("environment variable {var}: {e}")));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConnectionError::Password(format!("file {}: {e}", path.display())))?;
            return Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()));
        }
        Ok(None)
    }
}

/// True when `name` can be used unquoted as a ClickHouse database or table name.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A client for the server and database in `config`.
///
/// Validation is always off: with it on, the crate inserts `RowBinaryWithNamesAndTypes` and reads
/// table metadata first, which ClickHouse 18.16 does not understand. Off, rows are plain
/// positional `RowBinary` on every server generation, so the row structs in [`crate::schema`]
/// must list fields in column order (the tests check this against `system.columns`).
///
/// The database is set on the client; [`crate::migrate::migrate`] creates it when missing, and
/// runs its own statements with fully qualified names so that it works before the database exists.
pub fn client(config: &ClickHouseConfig) -> Result<Client> {
    let mut client = Client::default()
        .with_url(&config.url)
        .with_user(&config.user)
        .with_database(&config.database)
        .with_validation(false)
        .with_compression(match config.compression {
            WireCompression::Lz4 => clickhouse::Compression::Lz4,
            WireCompression::None => clickhouse::Compression::None,
        });
    if let Some(password) = config.password()? {
        client = client.with_password(password);
    }
    if config.cluster.is_some() {
        // An insert into a Distributed table returns once every shard has its rows, so a
        // failed shard fails the insert (which the batch stage retries) instead of leaving the
        // rows in one node's forwarding queue.
        client = client.with_setting("insert_distributed_sync", "1");
    }
    Ok(client)
}

/// Clients for the nodes that schema and retention work must run on: every node of
/// `cluster_nodes` (same user, password and options as [`client`]), or just `client` when
/// there is no node list (a single server, or a cluster whose DDL goes `ON CLUSTER`).
pub fn node_clients(config: &ClickHouseConfig, single: &Client) -> Result<Vec<Client>> {
    if config.cluster.is_none() || config.cluster_nodes.is_empty() {
        return Ok(vec![single.clone()]);
    }
    config
        .cluster_nodes
        .iter()
        .map(|url| {
            client(&ClickHouseConfig {
                url: url.clone(),
                ..config.clone()
            })
        })
        .collect()
}

/// The ClickHouse server's version, and what Egress may use on it.
///
/// Capability thresholds come from the ClickHouse changelogs; Egress is tested on 18.16 (all
/// capabilities off except column comments) and on current releases (all on).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    /// A version from its parts (for tests, and for printing the DDL of a given server).
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// Parses `SELECT version()` output such as `18.16.1` or `25.8.2.29`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || ConnectionError::Version(text.to_owned());
        let mut parts = text.trim().split('.');
        let mut number = |required: bool| -> Result<u32> {
            match parts.next() {
                Some(part) => part.parse().map_err(|_| bad()),
                None if required => Err(bad()),
                None => Ok(0),
            }
        };
        Ok(Self {
            major: number(true)?,
            minor: number(true)?,
            patch: number(false)?,
        })
    }

    fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// Table TTL expressions (`TTL time + INTERVAL n DAY`): 19.6 and later.
    pub fn has_ttl(&self) -> bool {
        self.at_least(19, 6)
    }

    /// The `IPv6` column type (a 16-byte domain over `FixedString(16)`): 19.3 and later.
    pub fn has_ipv6_type(&self) -> bool {
        self.at_least(19, 3)
    }

    /// Column compression codecs, including `DoubleDelta` and `T64`: 19.10 and later.
    pub fn has_codecs(&self) -> bool {
        self.at_least(19, 10)
    }

    /// `COMMENT '...'` in column definitions, visible in `system.columns.comment`. Present in
    /// 18.16 (checked by the tests), so every supported server has it.
    pub fn has_column_comments(&self) -> bool {
        self.at_least(18, 1)
    }

    /// Insert deduplication on non-replicated `MergeTree` tables (the table setting
    /// `non_replicated_deduplication_window`): it came in the 20.x series; Egress enables it from
    /// 21.1, the oldest release it relies on for it. 18.16 has none.
    pub fn has_insert_deduplication(&self) -> bool {
        self.at_least(21, 1)
    }

    /// `LowCardinality(T)` without the experimental setting: 19.1 and later. Egress does not use
    /// it yet; it is here so that a later migration can.
    pub fn has_low_cardinality(&self) -> bool {
        self.at_least(19, 1)
    }
}

impl std::str::FromStr for ServerVersion {
    type Err = ConnectionError;

    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// How long [`server_version`] waits for an answer.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the server for its version (`SELECT version()`, which every server generation has).
/// Works before the client's database exists (the query runs in `system`).
pub async fn server_version(client: &Client) -> Result<ServerVersion> {
    let sql = "SELECT version()";
    let client = client.clone().with_database("system");
    let text: String = run(VERSION_TIMEOUT, sql, client.query_raw(sql).fetch_one()).await?;
    ServerVersion::parse(&text)
}

/// Awaits one query with a deadline, naming the query in the error.
pub(crate) async fn run<T>(
    timeout: Duration,
    query: &str,
    future: impl std::future::Future<Output = clickhouse::error::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ConnectionError::Query {
            query: query.to_owned(),
            source,
        }),
        Err(_) => Err(ConnectionError::Timeout {
            query: query.to_owned(),
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_server_generations() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        assert_eq!(old, ServerVersion::new(18, 16, 1));
        assert!(!old.has_ttl() && !old.has_ipv6_type() && !old.has_codecs() && !old.has_low_cardinality());
        assert!(old.has_column_comments());
        let new = ServerVersion::parse("26.9.2.1\n").unwrap();
        assert_eq!(new, ServerVersion::new(26, 9, 2));
        assert!(new.has_ttl() && new.has_ipv6_type() && new.has_codecs() && new.has_low_cardinality());
        assert!(ServerVersion::parse("19").is_err());
        assert!(ServerVersion::parse("x.1").is_err());
        assert_eq!(
            ServerVersion::parse("20.3").unwrap(),
            ServerVersion::new(20, 3, 0)
        );
    }

    #[test]
    fn capability_thresholds_compare_minor_within_major() {
        assert!(!ServerVersion::new(19, 5, 9).has_ttl());
        assert!(ServerVersion::new(19, 6, 0).has_ttl());
        assert!(ServerVersion::new(20, 1, 0).has_codecs());
        assert!(!ServerVersion::new(19, 9, 0).has_codecs());
    }

    #[test]
    fn problems_name_every_bad_key() {
        let config = ClickHouseConfig {
            url: "localhost:8123".into(),
            database: "1-bad".into(),
            password_env: Some("X".into()),
            password_file: Some("/x".into()),
            insert_timeout_seconds: 0,
            ..ClickHouseConfig::default()
        };
        let problems = config.problems();
        for key in ["url:", "database:", "password_env:", "insert_timeout_seconds:"] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing in {problems:?}"
            );
        }
        assert!(ClickHouseConfig::default().problems().is_empty());
    }

    #[test]
    fn password_comes_from_a_file_without_its_newline() {
        let dir = std::env::temp_dir().join(format!("egress-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let config = ClickHouseConfig {
            password_file: Some(path),
            ..ClickHouseConfig::default()
        };
        assert_eq!(config.password().unwrap().as_deref(), Some("s3cret"));
        assert!(client(&config).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = ClickHouseConfig {
            password_file: Some(dir.join("nope")),
            ..ClickHouseConfig::default()
        };
        assert!(matches!(missing.password(), Err(ConnectionError::Password(_))));
    }
}
