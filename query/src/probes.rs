//! The `probes` table: results of Egress's own active probes, one row per probe sent.
//!
//! In: [`ProbeRow`]s written by the collector's prober (`egress_collector::probe`), one per
//! target, method and interval, for every configured egress path. Out: the table's DDL
//! ([`probe_migrations`], numbered from 200 so that it never collides with the schema migrations
//! of [`crate::migrate`] or the rollups' 100s) and the row struct the prober inserts and the
//! latency SLA reads (`crate::sla::latency`).
//!
//! A failed probe is a row too: `success = 0`, `rtt_us` NULL (unknown, never zero) and the
//! reason in `error`. That is what lets the latency SLA tell "slow" from "unreachable": a path
//! whose probes all fail has no latency figure at all, only a failure ratio.
//!
//! Partitioned by day like every Egress table, so that retention on 18.16 can drop whole
//! partitions; ordered by `(path, target, time)` because every reader asks for one path's (or
//! target's) results over a time range.

use std::net::IpAddr;

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};

use crate::connection::{ClickHouseConfig, ServerVersion};
use crate::migrate::{ColumnDef, Migration, TableDef};
use crate::schema::enum8_body;

/// Name of the probe results table.
pub const PROBES_TABLE: &str = "probes";

/// How a probe measured the round trip. Stored as `Enum8` in `probes.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum ProbeMethod {
    /// TCP connect: the time from sending the SYN to the completed handshake (SYN-ACK seen).
    Tcp = 1,
    /// ICMP echo request and reply (needs a raw socket, i.e. root or `CAP_NET_RAW`).
    Icmp = 2,
}

impl ProbeMethod {
    /// Every value, in `Enum8` order.
    pub const ALL: [ProbeMethod; 2] = [Self::Tcp, Self::Icmp];

    /// The name stored in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Icmp => "icmp",
        }
    }
}

/// One probe result, as stored in `probes`. Field order is column order (RowBinary is
/// positional).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct ProbeRow {
    /// When the probe was sent, Unix seconds (UTC, prober clock).
    pub time: u32,
    /// Egress path label the probe was sent through (the prober's `paths[].path`).
    pub path: String,
    /// Target as configured: `host:port` for TCP, the host for ICMP.
    pub target: String,
    /// TCP connect or ICMP echo.
    pub method: ProbeMethod,
    /// Round trip in microseconds; `None` (NULL) when the probe failed.
    pub rtt_us: Option<u32>,
    /// 1 when the probe got its answer in time, 0 otherwise.
    pub success: u8,
    /// Why the probe failed (`timeout`, `connection refused`, ...); empty on success.
    pub error: String,
}

/// One hop of a hop trace (the collector's `probe::traceroute`): the router, or the target,
/// that answered the datagram sent with `ttl`. Served by `POST /api/v1/trace` and attached to
/// latency alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// The TTL of the datagram this hop answered (1 = first router).
    pub ttl: u8,
    /// Who answered; `None` when nothing did in time (a `*` in traceroute's output).
    pub address: Option<IpAddr>,
    /// Round trip to that hop in microseconds; `None` without an answer.
    pub rtt_us: Option<u32>,
}

/// A string column that repeats few values: `LowCardinality(String)` where the server has the
/// `IPv6` type (the same switch [`crate::migrate`] uses), `String` on 18.x.
fn low_cardinality(name: &'static str, comment: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        current_type: "LowCardinality(String)".to_owned(),
        old_type: "String".to_owned(),
        codec: "",
        comment,
    }
}

/// A column of the same type on every server.
fn plain(name: &'static str, data_type: impl Into<String>, comment: &'static str) -> ColumnDef {
    let data_type = data_type.into();
    ColumnDef {
        name,
        current_type: data_type.clone(),
        old_type: data_type,
        codec: "",
        comment,
    }
}

/// The `probes` table: columns in [`ProbeRow`] order, with their meanings (the same text as in
/// the `## Probes` section of `docs/schema.md`).
pub fn probes_table() -> TableDef {
    let method = format!(
        "Enum8({})",
        enum8_body(&ProbeMethod::ALL, ProbeMethod::as_str, |v| v as i8)
    );
    TableDef {
        name: PROBES_TABLE,
        columns: vec![
            plain(
                "time",
                "DateTime('UTC')",
                "When the probe was sent (UTC, prober clock).",
            ),
            low_cardinality(
                "path",
                "Egress path the probe was sent through (the prober configuration's path label).",
            ),
            low_cardinality(
                "target",
                "Probed target as configured: host:port for tcp, the host for icmp.",
            ),
            plain(
                "method",
                method,
                "tcp: TCP connect time (SYN to SYN-ACK); icmp: ICMP echo round trip.",
            ),
            plain(
                "rtt_us",
                "Nullable(UInt32)",
                "Round trip in microseconds; NULL when the probe failed (unknown, never 0).",
            ),
            plain(
                "success",
                "UInt8",
                "1 when the answer came back in time, 0 when the probe failed.",
            ),
            low_cardinality(
                "error",
                "Why the probe failed (timeout, connection refused, ...); empty on success.",
            ),
        ],
        partition_by: "toYYYYMMDD(time)",
        order_by: "(path, target, time)",
        time_column: "time",
        engine: "MergeTree",
    }
}

/// The migrations creating the probe tables on `version`, numbered from 200.
/// [`crate::migrate::ddl`] appends them after the rollups.
pub fn probe_migrations(version: &ServerVersion, config: &ClickHouseConfig) -> Vec<Migration> {
    vec![Migration {
        version: 200,
        name: "create_probes",
        statements: vec![probes_table().create_statement(version, config)],
    }]
}

/// `(table, time column, days)` for the TTL reconciliation of current servers and the
/// partition dropping of 18.16: probes are kept as long as raw flows (`retention_days`).
pub fn ttl_tables(retention_days: u32) -> Vec<(&'static str, &'static str, u32)> {
    vec![(PROBES_TABLE, "time", retention_days)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: ServerVersion = ServerVersion::new(18, 16, 1);
    const CURRENT: ServerVersion = ServerVersion::new(26, 1, 0);

    #[test]
    fn old_servers_get_plain_strings_and_no_ttl() {
        let config = ClickHouseConfig::default();
        let migrations = probe_migrations(&OLD, &config);
        assert_eq!(migrations.len(), 1);
        assert_eq!(migrations[0].label(), "200_create_probes");
        let create = &migrations[0].statements[0];
        assert!(create.starts_with("CREATE TABLE IF NOT EXISTS egress.probes\n"));
        assert!(create.contains("    path String COMMENT"));
        assert!(create.contains("    method Enum8('tcp' = 1, 'icmp' = 2) COMMENT"));
        assert!(create.contains("    rtt_us Nullable(UInt32) COMMENT"));
        assert!(create.contains("PARTITION BY toYYYYMMDD(time)\nORDER BY (path, target, time)"));
        assert!(!create.contains("LowCardinality") && !create.contains("TTL"));
    }

    #[test]
    fn current_servers_get_low_cardinality_and_a_ttl() {
        let create = probe_migrations(&CURRENT, &ClickHouseConfig::default())
            .remove(0)
            .statements
            .remove(0);
        assert!(create.contains("    target LowCardinality(String) COMMENT"));
        assert!(create.ends_with("TTL time + INTERVAL 30 DAY"));
    }

    #[test]
    fn columns_follow_the_row_struct() {
        let names: Vec<&str> = probes_table().columns.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["time", "path", "target", "method", "rtt_us", "success", "error"]
        );
    }

    #[test]
    fn docs_document_every_column_with_its_types_and_meaning() {
        crate::migrate::assert_documented("### Probe table `probes`", &probes_table());
    }
}
