//! Retention for servers without table TTLs (ClickHouse before 19.6, e.g. Debian's 18.16).
//!
//! In: a client, the database and the retention in days. Out: every day partition of the Egress
//! tables whose newest row is older than the retention is dropped, and the dropped partitions are
//! returned as `table/partition`. The collector calls [`enforce`] periodically where
//! [`crate::connection::ServerVersion::has_ttl`] is false; it is harmless on servers with a TTL
//! (the TTL has usually removed the rows already, and dropping an expired partition is what the
//! TTL would do).
//!
//! Every table is partitioned by day (see [`crate::migrate::tables`]), so a partition is dropped
//! only when all of its rows are past the retention: `system.parts.max_time` is the newest value
//! of the table's partition time column in that part.

use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::connection::{self, is_identifier, ClickHouseConfig, ConnectionError};
use crate::migrate::tables;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// The database name would need quoting; Egress only accepts plain identifiers.
    #[error("database name {0:?} must be letters, digits and `_`, not starting with a digit")]
    InvalidDatabase(String),
    /// Listing or dropping partitions failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, RetentionError>;

#[derive(Debug, Row, Deserialize)]
struct ExpiredPartition {
    table: String,
    partition_id: String,
}

/// The query listing `(table, partition_id)` of every day partition of the Egress tables in
/// `database` whose newest row is older than `retention_days`. `max_time` is a DateTime on every
/// server generation and the comparison runs on the server, so the collector's clock does not
/// matter. Runs unchanged on 18.16 and current servers (`tests/chdb` runs it on the latter).
pub fn expired_partitions_query(database: &str, retention_days: u32) -> String {
    // The schema tables and the probes follow `retention_days`; rollups keep longer and have
    // their own job (`crate::rollups::enforce_retention`).
    let table_list = tables()
        .iter()
        .map(|t| t.name)
        .chain([crate::probes::PROBES_TABLE])
        // In a cluster the rows are in `<table>_local` (see `crate::cluster`).
        .flat_map(|name| {
            [
                format!("'{name}'"),
                format!("'{name}{}'", crate::cluster::LOCAL_SUFFIX),
            ]
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT table, partition_id FROM system.parts \
         WHERE database = '{database}' AND table IN ({table_list}) AND active \
         GROUP BY table, partition_id \
         HAVING max(max_time) < now() - {seconds} \
         ORDER BY table, partition_id",
        seconds = u64::from(retention_days) * 86_400,
    )
}

/// Drops every partition of the Egress tables whose rows are all older than the retention
/// (0 days: keep forever, drops nothing). Returns the dropped `table/partition_id`s.
///
/// Uses `config.database`, `config.retention_days` and `config.query_timeout_seconds`.
pub async fn enforce(client: &Client, config: &ClickHouseConfig) -> Result<Vec<String>> {
    let (database, retention_days) = (config.database.as_str(), config.retention_days);
    if !is_identifier(database) {
        return Err(RetentionError::InvalidDatabase(database.to_owned()));
    }
    if retention_days == 0 {
        return Ok(Vec::new());
    }
    let sql = expired_partitions_query(database, retention_days);
    Ok(drop_listed_partitions(client, config, &sql).await?)
}

/// Runs `sql` (a query listing `table, partition_id` of `system.parts`) on every node (one
/// server, or every node of a cluster, which holds its own partitions) and drops each listed
/// partition there. Returns the dropped `table/partition_id`s. Shared with the rollups' job.
pub(crate) async fn drop_listed_partitions(
    client: &Client,
    config: &ClickHouseConfig,
    sql: &str,
) -> std::result::Result<Vec<String>, ConnectionError> {
    let (database, timeout) = (config.database.as_str(), config.query_timeout());
    let mut dropped = Vec::new();
    for client in connection::node_clients(config, client)? {
        let client = client.with_database("system");
        let expired: Vec<ExpiredPartition> =
            connection::run(timeout, sql, client.query_raw(sql).fetch_all()).await?;
        for partition in expired {
            let drop = format!(
                "ALTER TABLE {database}.{} DROP PARTITION ID '{}'",
                partition.table, partition.partition_id
            );
            connection::run(timeout, &drop, client.query_raw(&drop).execute()).await?;
            tracing::info!(table = %partition.table, partition = %partition.partition_id,
                "dropped expired partition");
            dropped.push(format!("{}/{}", partition.table, partition.partition_id));
        }
    }
    Ok(dropped)
}
