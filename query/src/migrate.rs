//! Version-aware schema migrations.
//!
//! In: a client, the database name and the retention. Out: the database and every table of
//! [`crate::schema`] present, each migration recorded once in `schema_migrations`
//! (version, name, applied_at), and a [`MigrationReport`] of what was done. Run by
//! `egress migrate` and, unless disabled, at collector start-up.
//!
//! The DDL depends on the server ([`ddl`]): current ClickHouse gets `IPv6` addresses, column
//! codecs and a table TTL; ClickHouse 18.16 gets `FixedString(16)` addresses, no codecs and no
//! TTL (retention is then enforced by [`crate::retention::enforce`]). Both get `DateTime('UTC')`
//! times, `Enum8` enumerations and a `COMMENT` on every column, whose text is the column's
//! meaning in `docs/schema.md` (a test keeps the two identical). Either way the rows on the wire
//! are the same positional RowBinary, so column order is the field order of the row structs.
//!
//! Every statement is idempotent: a migration interrupted between its DDL and its record is
//! simply applied again, and two collectors migrating at once do no harm (at worst a version is
//! recorded twice; it is read with `DISTINCT`). Tables are created `IF NOT EXISTS`. Columns added
//! to an existing table (migrations 005 and 008) cannot be: ClickHouse 18.16 has no
//! `ADD COLUMN IF NOT EXISTS`, so each added column is its own statement (made by
//! [`add_column_statement`]) and [`migrate`] skips it when `system.columns` already lists the
//! column. 18.16 also drops the `COMMENT` of an `ADD COLUMN`, so a `COMMENT COLUMN` statement
//! follows each.
//!
//! A fresh database gets every table whole from its create migration (the flows table with the
//! classification and latency columns already in it), and migrations 005 and 008 then find
//! nothing to add; an older database gets the columns from 005 and 008, each placed `AFTER` its
//! predecessor. Both paths give the
//! column order of the row structs, which RowBinary needs.
//!
//! The retention is part of the table definition on TTL servers; when the configured retention
//! changes, [`migrate`] alters the TTL (that is not a numbered migration, since it depends on the
//! configuration, not on the Egress version).

use clickhouse::Client;

use crate::cluster::ClusterDdl;
use crate::connection::{self, is_identifier, ClickHouseConfig, ConnectionError, Replication, ServerVersion};
use crate::schema::{
    enum8_body, DeliveryOutcome, Direction, FlowType, InterfaceKind, InterfaceRole, RttSource,
    SamplingSource, TrafficDirection, Verdict, ALERT_DELIVERIES_TABLE, EXPORTER_STATS_TABLE, FLOWS_TABLE,
    INTERFACE_COUNTERS_TABLE, SLA_RESULTS_TABLE,
};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The database name would need quoting; Egress only accepts plain identifiers.
    #[error("database name {0:?} must be letters, digits and `_`, not starting with a digit")]
    InvalidDatabase(String),
    /// A statement failed or timed out.
    #[error("migration {version} ({name}): {source}")]
    Statement {
        version: u32,
        name: &'static str,
        #[source]
        source: ConnectionError,
    },
    /// Reading the version, the applied migrations or the tables' TTL failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, MigrateError>;

/// Name of the table recording applied migrations.
pub const MIGRATIONS_TABLE: &str = "schema_migrations";

/// One numbered schema change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Position in the history; applied in increasing order, never renumbered.
    pub version: u32,
    /// Short name, recorded in `schema_migrations`.
    pub name: &'static str,
    /// The statements, each idempotent.
    pub statements: Vec<String>,
}

/// What one [`migrate`] run did. Migrations are named `NNN_name`, e.g. `002_create_flows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The server the DDL was chosen for.
    pub server_version: ServerVersion,
    /// Migrations applied by this run, in order.
    pub applied: Vec<String>,
    /// Migrations found already applied.
    pub present: Vec<String>,
    /// Tables whose TTL was changed to the configured retention.
    pub ttl_changed: Vec<String>,
}

impl Migration {
    /// `NNN_name`, e.g. `002_create_flows`.
    pub fn label(&self) -> String {
        format!("{:03}_{}", self.version, self.name)
    }
}

/// One column: name, type on each server generation, codec on current servers, comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name (the row struct's field name).
    pub name: &'static str,
    /// Type on servers with the `IPv6` type (19.3 and later).
    pub current_type: String,
    /// Type on older servers.
    pub old_type: String,
    /// `CODEC(...)` body on servers with codecs; empty for ClickHouse's default (LZ4).
    pub codec: &'static str,
    /// What the column means; the same text as in `docs/schema.md`.
    pub comment: &'static str,
}

impl ColumnDef {
    pub(crate) fn new(
        name: &'static str,
        data_type: impl Into<String>,
        codec: &'static str,
        comment: &'static str,
    ) -> Self {
        let data_type = data_type.into();
        Self {
            name,
            current_type: data_type.clone(),
            old_type: data_type,
            codec,
            comment,
        }
    }

    fn address(name: &'static str, comment: &'static str) -> Self {
        Self {
            name,
            current_type: "IPv6".to_owned(),
            old_type: "FixedString(16)".to_owned(),
            codec: "ZSTD(1)",
            comment,
        }
    }

    /// A string column that repeats few values (names, labels): `LowCardinality(String)` on
    /// current servers, `String` on 18.x (where it is experimental). The switch is at the same
    /// version as the `IPv6` type (19.3), later than `LowCardinality` itself (19.1), so servers
    /// 19.1 and 19.2 get `String`; the rows are the same either way.
    pub(crate) fn low_cardinality(name: &'static str, comment: &'static str) -> Self {
        Self {
            name,
            current_type: "LowCardinality(String)".to_owned(),
            old_type: "String".to_owned(),
            codec: "",
            comment,
        }
    }

    /// The type on `version`.
    pub fn data_type(&self, version: &ServerVersion) -> &str {
        if version.has_ipv6_type() {
            &self.current_type
        } else {
            &self.old_type
        }
    }
}

/// One table: name, columns in row-struct order, and the engine clauses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// Table name.
    pub name: &'static str,
    /// Columns in the order of the row struct's fields (RowBinary is positional).
    pub columns: Vec<ColumnDef>,
    /// `PARTITION BY` expression; always whole days, so that retention can drop partitions.
    pub partition_by: &'static str,
    /// `ORDER BY` tuple.
    pub order_by: &'static str,
    /// The `DateTime` column retention is measured on.
    pub time_column: &'static str,
    /// Table engine: `MergeTree` for raw rows; rollups name theirs.
    pub engine: &'static str,
}

impl TableDef {
    /// `CREATE TABLE IF NOT EXISTS` for `version`, rows kept `config.retention_days`.
    pub fn create_statement(&self, version: &ServerVersion, config: &ClickHouseConfig) -> String {
        self.create_statement_keeping(version, config, config.retention_days)
    }

    /// `CREATE TABLE IF NOT EXISTS` for `version`, rows kept `retention_days` (0: forever;
    /// a TTL only on servers that have them).
    pub fn create_statement_keeping(
        &self,
        version: &ServerVersion,
        config: &ClickHouseConfig,
        retention_days: u32,
    ) -> String {
        let columns = self
            .columns
            .iter()
            .map(|column| {
                let mut definition = format!("    {} {}", column.name, column.data_type(version));
                if version.has_codecs() && !column.codec.is_empty() {
                    definition.push_str(&format!(" CODEC({})", column.codec));
                }
                if version.has_column_comments() {
                    definition.push_str(&format!(" COMMENT {}", sql_string(column.comment)));
                }
                definition
            })
            .collect::<Vec<_>>()
            .join(",\n");
        let mut statement = format!(
            "CREATE TABLE IF NOT EXISTS {}.{}\n(\n{columns}\n)\nENGINE = {}\nPARTITION BY {}\nORDER BY {}",
            config.database, self.name, self.engine, self.partition_by, self.order_by
        );
        if let Some(ttl) = self.ttl(version, retention_days) {
            statement.push_str(&format!("\nTTL {ttl}"));
        }
        statement
    }

    /// The TTL expression for `retention_days` on `version`, if the server has TTLs and data
    /// is not kept forever.
    fn ttl(&self, version: &ServerVersion, retention_days: u32) -> Option<String> {
        (version.has_ttl() && retention_days > 0)
            .then(|| format!("{} + INTERVAL {retention_days} DAY", self.time_column))
    }
}

/// Test helper: the section of `docs/schema.md` under `heading` documents every column of
/// `table`, in order, with both generations' types and the COMMENT text.
#[cfg(test)]
pub(crate) fn assert_documented(heading: &str, table: &TableDef) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.md");
    let markdown = std::fs::read_to_string(path).unwrap();
    let section = markdown
        .split(heading)
        .nth(1)
        .and_then(|rest| rest.split("\n#").next())
        .unwrap_or_else(|| panic!("docs/schema.md has a `{heading}` section"));
    let documented: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    assert_eq!(documented.len(), table.columns.len(), "{heading}");
    for (line, column) in documented.iter().zip(&table.columns) {
        let codec = if column.codec.is_empty() {
            "-"
        } else {
            column.codec
        };
        let expected = format!(
            "| `{}` | `{}` | `{}` | `{codec}` | {} |",
            column.name,
            column.data_type(&ServerVersion::new(26, 1, 0)),
            column.data_type(&ServerVersion::new(18, 16, 1)),
            column.comment
        );
        assert_eq!(*line, expected);
    }
}

/// Quotes `text` as a ClickHouse string literal.
fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The three tables of [`crate::schema`], columns in row-struct order, with their meanings.
pub fn tables() -> Vec<TableDef> {
    let flow_type = format!(
        "Enum8({})",
        enum8_body(&FlowType::ALL, FlowType::as_str, |v| v as i8)
    );
    let sampling_source = format!(
        "Enum8({})",
        enum8_body(&SamplingSource::ALL, SamplingSource::as_str, |v| v as i8)
    );
    let direction = format!(
        "Enum8({})",
        enum8_body(&Direction::ALL, Direction::as_str, |v| v as i8)
    );
    let traffic_direction = format!(
        "Enum8({})",
        enum8_body(&TrafficDirection::ALL, TrafficDirection::as_str, |v| v as i8)
    );
    let role = format!(
        "Enum8({})",
        enum8_body(&InterfaceRole::ALL, InterfaceRole::as_str, |v| v as i8)
    );
    let kind = format!(
        "Enum8({})",
        enum8_body(&InterfaceKind::ALL, InterfaceKind::as_str, |v| v as i8)
    );
    let verdict = format!(
        "Enum8({})",
        enum8_body(&Verdict::ALL, Verdict::as_str, |v| v as i8)
    );
    let outcome = format!(
        "Enum8({})",
        enum8_body(&DeliveryOutcome::ALL, DeliveryOutcome::as_str, |v| v as i8)
    );
    let rtt_source = format!(
        "Enum8({})",
        enum8_body(&RttSource::ALL, RttSource::as_str, |v| v as i8)
    );
    let time = "DateTime('UTC')";
    vec![
        TableDef {
            name: FLOWS_TABLE,
            columns: vec![
                ColumnDef::new("time_received", time, "Delta, ZSTD(1)",
                    "Collector clock when the datagram arrived (UTC, seconds)."),
                ColumnDef::new("time_flow_start", time, "Delta, ZSTD(1)",
                    "Flow start on the exporter clock (UTC, seconds); time_received when not exported."),
                ColumnDef::new("time_flow_end", time, "Delta, ZSTD(1)",
                    "Flow end on the exporter clock (UTC, seconds); time_received when not exported."),
                ColumnDef::address("exporter_address",
                    "Source address of the export datagram; IPv4 stored as ::ffff:a.b.c.d."),
                ColumnDef::new("observation_domain", "UInt32", "",
                    "NetFlow v9 source id, IPFIX observation domain id, sFlow sub-agent id; 0 for NetFlow v5."),
                ColumnDef::new("flow_type", flow_type.clone(), "",
                    "Export protocol the record came from."),
                ColumnDef::new("sampling_rate", "UInt64", "T64, ZSTD(1)",
                    "One in sampling_rate packets was sampled; 1 when unknown. Multiply bytes and packets by it."),
                ColumnDef::new("sampling_source", sampling_source, "",
                    "Where sampling_rate came from: header, options, record, sflow, config_default, config_override, or unknown."),
                ColumnDef::address("src_addr", "Source address; IPv4 stored as ::ffff:a.b.c.d; :: when unknown."),
                ColumnDef::address("dst_addr", "Destination address; IPv4 stored as ::ffff:a.b.c.d; :: when unknown."),
                ColumnDef::new("src_port", "UInt16", "", "Source transport port; 0 when none or unknown."),
                ColumnDef::new("dst_port", "UInt16", "", "Destination transport port; 0 when none or unknown."),
                ColumnDef::new("proto", "UInt8", "", "IP protocol number (6 TCP, 17 UDP, 1 ICMP); 0 when unknown."),
                ColumnDef::new("bytes", "UInt64", "T64, ZSTD(1)",
                    "Bytes as exported (sampled); bytes * sampling_rate estimates the bytes on the wire."),
                ColumnDef::new("packets", "UInt64", "T64, ZSTD(1)",
                    "Packets as exported (sampled); packets * sampling_rate estimates the packets on the wire."),
                ColumnDef::new("in_if", "UInt32", "", "Input interface index (SNMP ifIndex) on the exporter; 0 when unknown."),
                ColumnDef::new("out_if", "UInt32", "", "Output interface index (SNMP ifIndex) on the exporter; 0 when unknown."),
                ColumnDef::new("src_as", "UInt32", "", "Source autonomous system number; 0 when unknown."),
                ColumnDef::new("dst_as", "UInt32", "", "Destination autonomous system number; 0 when unknown."),
                ColumnDef::new("src_mask", "UInt8", "", "Source prefix length in bits; 0 when unknown."),
                ColumnDef::new("dst_mask", "UInt8", "", "Destination prefix length in bits; 0 when unknown."),
                ColumnDef::address("next_hop", "IP next hop; IPv4 stored as ::ffff:a.b.c.d; :: when unknown."),
                ColumnDef::new("tcp_flags", "UInt8", "", "OR of the TCP flags seen in the flow; 0 when none or not TCP."),
                ColumnDef::new("tos", "UInt8", "", "IP type of service / traffic class byte (DSCP and ECN)."),
                ColumnDef::new("vlan", "UInt16", "", "802.1Q VLAN id; 0 when untagged or unknown."),
                ColumnDef::new("etype", "UInt16", "",
                    "EtherType of the network layer: 2048 (0x0800) IPv4, 34525 (0x86dd) IPv6, 0 unknown."),
                ColumnDef::new("direction", direction, "",
                    "Flow direction as exported: ingress, egress, or unknown."),
                // Classification from the egress model (migration 005 adds these to older tables).
                ColumnDef::new("traffic_direction", traffic_direction, "",
                    "Relative to the network: outbound (egress), inbound, internal, transit, or unknown when not classified."),
                ColumnDef::low_cardinality("egress_path",
                    "Egress path of an outbound flow: exporter and external output interface, e.g. edge1 / et-0/0/1 (Transit A); empty otherwise."),
                ColumnDef::low_cardinality("exporter_name",
                    "Exporter name from the egress model; empty when the exporter is not configured."),
                ColumnDef::low_cardinality("exporter_site", "Exporter site from the egress model; empty when not configured."),
                ColumnDef::low_cardinality("in_if_name", "Input interface name from the egress model; empty when not configured."),
                ColumnDef::low_cardinality("out_if_name", "Output interface name from the egress model; empty when not configured."),
                ColumnDef::new("in_if_role", role.clone(), "",
                    "What the input interface faces: internal, external, or unknown when not configured."),
                ColumnDef::new("out_if_role", role, "",
                    "What the output interface faces: internal, external, or unknown when not configured."),
                ColumnDef::new("in_if_kind", kind.clone(), "",
                    "Kind of an external input interface: transit, peering, cloud, wan; none otherwise."),
                ColumnDef::new("out_if_kind", kind, "",
                    "Kind of an external output interface: transit, peering, cloud, wan; none otherwise."),
                ColumnDef::low_cardinality("in_if_provider",
                    "Provider of the input interface from the egress model (e.g. Transit A); empty when none."),
                ColumnDef::low_cardinality("out_if_provider",
                    "Provider of the output interface from the egress model (e.g. Transit A); empty when none."),
                ColumnDef::new("src_internal", "UInt8", "",
                    "1 when src_addr is inside the internal prefixes of the egress model, else 0."),
                ColumnDef::new("dst_internal", "UInt8", "",
                    "1 when dst_addr is inside the internal prefixes of the egress model, else 0."),
                ColumnDef::low_cardinality("dst_cloud",
                    "Cloud range of dst_addr from the cloud range files, e.g. aws/S3/eu-west-1 or the label of a CIDR list; empty when none."),
                // Latency from the exporter (migration 008 adds these to older tables).
                ColumnDef::new("rtt_client_us", "Nullable(UInt32)", "",
                    "Network latency between the exporter and the client in microseconds, as the exporter measured it (see rtt_source); NULL when not exported, never 0 for unknown."),
                ColumnDef::new("rtt_server_us", "Nullable(UInt32)", "",
                    "Network latency between the exporter and the server in microseconds; NULL when not exported."),
                ColumnDef::new("rtt_app_us", "Nullable(UInt32)", "",
                    "Application latency (server response time) in microseconds; NULL when not exported."),
                ColumnDef::new("rtt_source", rtt_source, "",
                    "Which exporter measurement the rtt columns came from: nprobe (half round trips), cisco_art, netscaler, sflow_tcp_info (full round trips), or none."),
            ],
            partition_by: "toYYYYMMDD(time_received)",
            // Every query filters on a time range, most then on an exporter and an interface.
            // A five-minute bucket first keeps time-range pruning as good as ordering by time
            // itself (five minutes is a few granules at most), and within a bucket rows sit
            // together by exporter and interface, so those filters skip granules too.
            order_by: "(toStartOfFiveMinute(time_received), exporter_address, in_if, out_if)",
            time_column: "time_received",
            engine: "MergeTree",
        },
        TableDef {
            name: EXPORTER_STATS_TABLE,
            columns: vec![
                ColumnDef::new("minute", time, "DoubleDelta, LZ4",
                    "Start of the minute the counts are for (UTC, collector clock)."),
                ColumnDef::address("exporter_address",
                    "Source address of the export datagrams; IPv4 stored as ::ffff:a.b.c.d."),
                ColumnDef::new("observation_domain", "UInt32", "",
                    "NetFlow v9 source id, IPFIX observation domain id, sFlow sub-agent id; 0 for NetFlow v5."),
                ColumnDef::new("flow_type", flow_type, "",
                    "Export protocol; unknown for datagrams that were not recognised."),
                ColumnDef::new("datagrams", "UInt64", "T64, LZ4", "Datagrams received in the minute."),
                ColumnDef::new("records", "UInt64", "T64, LZ4", "Data records decoded in the minute: flow records and options records (as IPFIX sequence numbers count them)."),
                ColumnDef::new("records_lost", "UInt64", "T64, LZ4",
                    "Records the exporter sequence numbers say were sent but never arrived."),
                ColumnDef::new("decode_error_kinds", "Array(String)", "",
                    "Kinds of decode error seen in the minute, parallel to decode_error_counts."),
                ColumnDef::new("decode_error_counts", "Array(UInt64)", "",
                    "Number of decode errors of each kind in decode_error_kinds."),
                ColumnDef::new("templates_known", "UInt32", "",
                    "NetFlow v9 / IPFIX templates known for the exporter and domain at the end of the minute."),
            ],
            partition_by: "toYYYYMMDD(minute)",
            // Small table read by time range, then per exporter.
            order_by: "(minute, exporter_address, observation_domain, flow_type)",
            time_column: "minute",
            engine: "MergeTree",
        },
        TableDef {
            name: INTERFACE_COUNTERS_TABLE,
            columns: vec![
                ColumnDef::new("time_received", time, "DoubleDelta, LZ4",
                    "Collector clock when the counter sample arrived (UTC, seconds)."),
                ColumnDef::address("exporter_address",
                    "Source address of the sFlow datagram; IPv4 stored as ::ffff:a.b.c.d."),
                ColumnDef::address("agent_address",
                    "sFlow agent address from the datagram header (may differ from exporter_address)."),
                ColumnDef::new("sub_agent_id", "UInt32", "", "sFlow sub-agent id."),
                ColumnDef::new("sequence_number", "UInt32", "", "Counter sample sequence number of this source."),
                ColumnDef::new("if_index", "UInt32", "", "Interface index (SNMP ifIndex)."),
                ColumnDef::new("if_type", "UInt32", "", "Interface type (IANA ifType, 6 is Ethernet)."),
                ColumnDef::new("if_speed", "UInt64", "", "Interface speed in bits per second; 0 when unknown."),
                ColumnDef::new("if_direction", "UInt32", "",
                    "0 unknown, 1 full duplex, 2 half duplex, 3 in, 4 out."),
                ColumnDef::new("if_status", "UInt32", "", "Bit 0 admin up, bit 1 operationally up."),
                ColumnDef::new("in_octets", "UInt64", "T64, ZSTD(1)", "Octets received, running total (ifHCInOctets)."),
                ColumnDef::new("in_ucast_pkts", "UInt32", "T64, ZSTD(1)", "Unicast packets received, running total."),
                ColumnDef::new("in_multicast_pkts", "UInt32", "T64, ZSTD(1)", "Multicast packets received, running total."),
                ColumnDef::new("in_broadcast_pkts", "UInt32", "T64, ZSTD(1)", "Broadcast packets received, running total."),
                ColumnDef::new("in_discards", "UInt32", "T64, ZSTD(1)", "Inbound packets discarded, running total."),
                ColumnDef::new("in_errors", "UInt32", "T64, ZSTD(1)", "Inbound packets with errors, running total."),
                ColumnDef::new("in_unknown_protos", "UInt32", "T64, ZSTD(1)",
                    "Inbound packets of unknown protocol, running total."),
                ColumnDef::new("out_octets", "UInt64", "T64, ZSTD(1)", "Octets sent, running total (ifHCOutOctets)."),
                ColumnDef::new("out_ucast_pkts", "UInt32", "T64, ZSTD(1)", "Unicast packets sent, running total."),
                ColumnDef::new("out_multicast_pkts", "UInt32", "T64, ZSTD(1)", "Multicast packets sent, running total."),
                ColumnDef::new("out_broadcast_pkts", "UInt32", "T64, ZSTD(1)", "Broadcast packets sent, running total."),
                ColumnDef::new("out_discards", "UInt32", "T64, ZSTD(1)", "Outbound packets discarded, running total."),
                ColumnDef::new("out_errors", "UInt32", "T64, ZSTD(1)", "Outbound packets with errors, running total."),
                ColumnDef::new("promiscuous_mode", "UInt32", "", "1 when the interface is in promiscuous mode, else 0."),
            ],
            partition_by: "toYYYYMMDD(time_received)",
            // Read as one series per interface (rates are differences of running totals).
            order_by: "(exporter_address, if_index, time_received)",
            time_column: "time_received",
            engine: "MergeTree",
        },
        TableDef {
            name: SLA_RESULTS_TABLE,
            columns: vec![
                ColumnDef::new("time", time, "DoubleDelta, LZ4", "Evaluation time (UTC, seconds)."),
                ColumnDef::low_cardinality("sla", "SLA name from the configuration."),
                ColumnDef::low_cardinality("kind", "SLA kind: throughput, exfiltration, exporter_health, objective."),
                ColumnDef::new("subject", "String", "",
                    "What the result is about, e.g. edge1 / et-0/0/1 (Transit A) or 10.1.2.3."),
                ColumnDef::new("labels_keys", "Array(String)", "",
                    "Names of the subject labels (path, exporter, host...), parallel to labels_values."),
                ColumnDef::new("labels_values", "Array(String)", "", "Values of the subject labels in labels_keys."),
                ColumnDef::new("value", "Float64", "",
                    "Measured value: utilisation ratio, bytes, seconds silent, burn rate, by kind."),
                ColumnDef::new("threshold", "Float64", "", "The limit value is compared with."),
                ColumnDef::new("verdict", verdict, "",
                    "ok, breach, or no_data when too few samples were behind the value (never read as ok)."),
                ColumnDef::new("samples", "UInt64", "", "Sampled flow records behind the value."),
                ColumnDef::new("details", "String", "", "JSON with kind-specific details: baseline, top destinations."),
            ],
            partition_by: "toYYYYMMDD(time)",
            // Read as the history of one SLA over a time range.
            order_by: "(sla, time)",
            time_column: "time",
            engine: "MergeTree",
        },
        TableDef {
            name: ALERT_DELIVERIES_TABLE,
            columns: vec![
                ColumnDef::new("time", time, "DoubleDelta, LZ4", "When the delivery attempt ended (UTC, seconds)."),
                ColumnDef::new("receiver", "String", "", "Receiver name from the configuration."),
                ColumnDef::new("kind", "String", "", "Notifier kind: webhook, alertmanager, slack, pagerduty."),
                ColumnDef::new("fingerprint", "String", "",
                    "Alert fingerprint, compatible with Prometheus and Alertmanager (16 hex digits)."),
                ColumnDef::new("alertname", "String", "", "Value of the alertname label (the SLA name)."),
                ColumnDef::new("status", "String", "", "Notified alert status: firing or resolved."),
                ColumnDef::new("attempt", "UInt32", "", "Attempt number for this notification, 1 for the first."),
                ColumnDef::new("http_status", "UInt16", "", "HTTP status of the answer; 0 when there was no answer."),
                ColumnDef::new("outcome", outcome, "",
                    "delivered, retrying (failed, will be retried) or failed (given up)."),
                ColumnDef::new("error", "String", "", "Why the attempt failed; empty when delivered."),
            ],
            partition_by: "toYYYYMMDD(time)",
            // Small table, read by time range.
            order_by: "(time, receiver)",
            time_column: "time",
            engine: "MergeTree",
        },
    ]
}

/// The `flows` columns added by migration 005 (egress classification), first and last: every
/// column after `direction` up to `dst_cloud`.
const FLOW_CLASSIFICATION_COLUMNS: (&str, &str) = ("traffic_direction", "dst_cloud");

/// The `flows` columns added by migration 008 (latency from the exporter), first and last.
const FLOW_RTT_COLUMNS: (&str, &str) = ("rtt_client_us", "rtt_source");

/// `ALTER TABLE ... ADD COLUMN` for `column` of `table`, placed after `after`. [`migrate`] skips
/// it when the column exists (see the module header), recognising it with
/// [`parse_add_column`].
pub fn add_column_statement(
    version: &ServerVersion,
    config: &ClickHouseConfig,
    table: &str,
    column: &ColumnDef,
    after: &str,
) -> String {
    let mut statement = format!(
        "ALTER TABLE {}.{table} ADD COLUMN {} {}",
        config.database,
        column.name,
        column.data_type(version)
    );
    if version.has_codecs() && !column.codec.is_empty() {
        statement.push_str(&format!(" CODEC({})", column.codec));
    }
    statement.push_str(&format!(" AFTER {after}"));
    statement
}

/// `(table, column)` of a statement made by [`add_column_statement`] for `database`.
fn parse_add_column<'a>(statement: &'a str, database: &str) -> Option<(&'a str, &'a str)> {
    let rest = statement
        .strip_prefix("ALTER TABLE ")?
        .strip_prefix(database)?
        .strip_prefix('.')?;
    let (table, rest) = rest.split_once(" ADD COLUMN ")?;
    // `flows_local ON CLUSTER edge` names the table `flows_local`.
    let table = table.split(' ').next()?;
    let column = rest.split(' ').next()?;
    Some((table, column))
}

/// The statements of a migration that adds the `flows` columns `first..=last` (in
/// [`tables`] order) to an existing table: each column added after its predecessor and given its
/// comment. Migration 005 (classification) and 008 (latency) are made by it.
fn add_flow_columns_statements(
    version: &ServerVersion,
    config: &ClickHouseConfig,
    (first, last): (&str, &str),
) -> Vec<String> {
    let Some(flows) = tables().into_iter().find(|t| t.name == FLOWS_TABLE) else {
        return Vec::new();
    };
    let position = |name: &str| flows.columns.iter().position(|c| c.name == name);
    // From the column before the first added one, which the first is placed after.
    let (Some(before_first), Some(last)) = (position(first).and_then(|p| p.checked_sub(1)), position(last))
    else {
        return Vec::new();
    };
    let Some(columns) = flows.columns.get(before_first..=last) else {
        return Vec::new();
    };
    let mut statements = Vec::new();
    for pair in columns.windows(2) {
        let (previous, column) = (&pair[0], &pair[1]);
        statements.push(add_column_statement(
            version,
            config,
            FLOWS_TABLE,
            column,
            previous.name,
        ));
        statements.push(format!(
            "ALTER TABLE {}.{FLOWS_TABLE} COMMENT COLUMN {} {}",
            config.database,
            column.name,
            sql_string(column.comment)
        ));
    }
    statements
}

/// Inserted blocks each table fed by `flows` inserts remembers for deduplication (see
/// [`deduplicate_flow_inserts`]). At a few inserts a second per collector, a thousand blocks
/// cover minutes of retries.
pub const FLOW_DEDUPLICATION_WINDOW: u32 = 1000;

/// The number of the migration that turns deduplication on: after every table it touches
/// exists (rollups are numbered from 100, probes and latency from 200).
pub const DEDUPLICATION_MIGRATION: u32 = 300;

/// The tables one `flows` insert writes: `flows` and the targets of the materialized views on
/// it (the minute rollups and the latency minutes).
pub fn tables_fed_by_flow_inserts() -> Vec<&'static str> {
    let mut tables = vec![FLOWS_TABLE];
    tables.extend(
        crate::rollups::rollups()
            .iter()
            .map(|rollup| rollup.table(crate::rollups::Granularity::Minute)),
    );
    tables.push(crate::rollups::latency::LATENCY_TABLE);
    tables
}

/// On servers with insert deduplication, every table a `flows` insert writes remembers the
/// checksums of its last [`FLOW_DEDUPLICATION_WINDOW`] inserted blocks and ignores a block it
/// has already stored; the collector sends its flow inserts with
/// `deduplicate_blocks_in_dependent_materialized_views = 1` there, so that the rollups skip the
/// block too (current servers push a block `flows` skipped to the views otherwise: without the
/// setting, the repeated insert of `tests/chdb/check_rollups.py` doubled a rollup hour's late
/// rows while `flows` held them once).
///
/// Why: the collector retries an insert whose connection broke or timed out mid-insert, and
/// the server may have stored it before the connection went (a server stopped during an insert
/// does that). The retry, and a replay of the same batch from the spool, sends the very same
/// bytes, so the server recognises the block and stores it once. The cost: two batches identical
/// byte for byte (every column, including the second of arrival) within the window are stored
/// once, which real traffic does not produce.
///
/// On 18.16 (no such setting) this migration is empty and such a retry can store a batch twice;
/// the collector counts the rows of such attempts in `egress_records_insert_uncertain_total`. A
/// database created on such a server and later upgraded keeps the empty migration: apply these
/// statements by hand (`egress migrate --print-ddl <version>` prints them). In cluster mode
/// the setting goes to the local tables only (see [`crate::cluster`]); a retry through the
/// Distributed table shards the rows afresh, so it is not deduplicated there.
fn deduplicate_flow_inserts(version: &ServerVersion, config: &ClickHouseConfig) -> Vec<String> {
    if !version.has_insert_deduplication() {
        return Vec::new();
    }
    tables_fed_by_flow_inserts()
        .into_iter()
        .map(|table| {
            format!(
                "ALTER TABLE {}.{table} MODIFY SETTING non_replicated_deduplication_window = {FLOW_DEDUPLICATION_WINDOW}",
                config.database
            )
        })
        .collect()
}

/// The migrations for `version`, in order. The first creates the database.
pub fn ddl(version: &ServerVersion, config: &ClickHouseConfig) -> Vec<Migration> {
    let mut migrations = vec![Migration {
        version: 1,
        name: "create_database",
        statements: vec![format!("CREATE DATABASE IF NOT EXISTS {}", config.database)],
    }];
    let create = |table_name: &str| -> Vec<String> {
        tables()
            .iter()
            .filter(|t| t.name == table_name)
            .map(|t| t.create_statement(version, config))
            .collect()
    };
    let steps = [
        ("create_flows", create(FLOWS_TABLE)),
        ("create_exporter_stats", create(EXPORTER_STATS_TABLE)),
        ("create_interface_counters", create(INTERFACE_COUNTERS_TABLE)),
        (
            "add_flow_classification",
            add_flow_columns_statements(version, config, FLOW_CLASSIFICATION_COLUMNS),
        ),
        ("create_sla_results", create(SLA_RESULTS_TABLE)),
        ("create_alert_deliveries", create(ALERT_DELIVERIES_TABLE)),
        (
            "add_flow_rtt",
            add_flow_columns_statements(version, config, FLOW_RTT_COLUMNS),
        ),
    ];
    for (name, statements) in steps {
        migrations.push(Migration {
            version: migrations.len() as u32 + 1,
            name,
            statements,
        });
    }
    // Rollups are numbered from 100, so the two lists never collide.
    migrations.extend(crate::rollups::rollup_migrations(version, config));
    // Probes are numbered from 200.
    migrations.extend(crate::probes::probe_migrations(version, config));
    migrations.extend(crate::rollups::latency::latency_migrations(version, config));
    migrations.push(Migration {
        version: DEDUPLICATION_MIGRATION,
        name: "deduplicate_flow_inserts",
        statements: deduplicate_flow_inserts(version, config),
    });
    migrations
}

/// The bookkeeping table, created before any migration is read.
fn migrations_table_statement(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.{MIGRATIONS_TABLE} \
         (version UInt32, name String, applied_at DateTime('UTC')) \
         ENGINE = MergeTree ORDER BY version"
    )
}

/// Creates the database if missing and applies every migration not yet recorded, then brings
/// the tables' TTL in line with `config.retention_days` on servers that have TTLs.
///
/// `server_version` is what [`connection::server_version`] returned for `client`; it chooses
/// the DDL. Each statement may take `config.query_timeout_seconds`.
pub async fn migrate(
    client: &Client,
    config: &ClickHouseConfig,
    server_version: &ServerVersion,
) -> Result<MigrationReport> {
    if !is_identifier(&config.database) {
        return Err(MigrateError::InvalidDatabase(config.database.clone()));
    }
    // A cluster with a node list: the same migrations on every node (see `crate::cluster`).
    let mut report: Option<MigrationReport> = None;
    for node in connection::node_clients(config, client)? {
        let node_report = migrate_node(&node, config, server_version).await?;
        match &mut report {
            None => report = Some(node_report),
            Some(report) => {
                for label in node_report.applied {
                    if !report.applied.contains(&label) {
                        report.applied.push(label);
                    }
                }
                report.ttl_changed.extend(node_report.ttl_changed);
            }
        }
    }
    report.ok_or_else(|| MigrateError::InvalidDatabase(config.database.clone()))
}

/// Whether the server `client` talks to has a keeper (ZooKeeper or ClickHouse Keeper):
/// `system.zookeeper` answers only then.
async fn has_keeper(client: &Client, config: &ClickHouseConfig) -> bool {
    let sql = "SELECT count() FROM system.zookeeper WHERE path = '/'";
    connection::run(
        config.query_timeout(),
        sql,
        client.query_raw(sql).fetch_one::<u64>(),
    )
    .await
    .is_ok()
}

/// [`migrate`] on one server (or one node of a cluster).
async fn migrate_node(
    client: &Client,
    config: &ClickHouseConfig,
    server_version: &ServerVersion,
) -> Result<MigrationReport> {
    // The client's own database may not exist yet, and naming a missing database fails every
    // query; `system` always exists, and every statement below is fully qualified.
    let client = client.clone().with_database("system");
    let timeout = config.query_timeout();
    let migrations = ddl(server_version, config);
    let cluster = match config.cluster {
        Some(_) => {
            let replicated = match config.replication {
                Replication::Always => true,
                Replication::Never => false,
                Replication::Auto => has_keeper(&client, config).await,
            };
            ClusterDdl::for_config(config, replicated)
        }
        None => None,
    };
    let statements_of = |statement: &String| match &cluster {
        Some(cluster) => cluster.rewrite(statement),
        None => vec![statement.clone()],
    };

    // Migration 1 (the database) must exist before the bookkeeping table can.
    let exec = |sql: String| {
        let client = client.clone();
        async move { connection::run(timeout, &sql, client.query_raw(&sql).execute()).await }
    };
    for statement in statements_of(&format!("CREATE DATABASE IF NOT EXISTS {}", config.database)) {
        exec(statement).await?;
    }
    exec(migrations_table_statement(&config.database)).await?;

    let sql = format!(
        "SELECT DISTINCT version FROM {}.{MIGRATIONS_TABLE} ORDER BY version",
        config.database
    );
    let done: Vec<u32> = connection::run(timeout, &sql, client.query_raw(&sql).fetch_all()).await?;

    let mut report = MigrationReport {
        server_version: server_version.clone(),
        applied: Vec::new(),
        present: Vec::new(),
        ttl_changed: Vec::new(),
    };
    for migration in migrations {
        if done.contains(&migration.version) {
            report.present.push(migration.label());
            continue;
        }
        let failed = |source| MigrateError::Statement {
            version: migration.version,
            name: migration.name,
            source,
        };
        for statement in migration.statements.iter().flat_map(statements_of) {
            if let Some((table, column)) = parse_add_column(&statement, &config.database) {
                if has_column(&client, config, table, column).await.map_err(failed)? {
                    continue;
                }
            }
            exec(statement).await.map_err(failed)?;
        }
        let record = format!(
            "INSERT INTO {}.{MIGRATIONS_TABLE} (version, name, applied_at) VALUES ({}, {}, now())",
            config.database,
            migration.version,
            sql_string(migration.name)
        );
        exec(record).await.map_err(failed)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        report.applied.push(migration.label());
    }

    if server_version.has_ttl() {
        report.ttl_changed = reconcile_ttl(&client, server_version, config).await?;
    }
    Ok(report)
}

/// Whether `table` of the configured database has `column` (names are plain identifiers made
/// by this module, so they are safe to quote).
async fn has_column(
    client: &Client,
    config: &ClickHouseConfig,
    table: &str,
    column: &str,
) -> std::result::Result<bool, ConnectionError> {
    let sql = format!(
        "SELECT count() FROM system.columns WHERE database = {} AND table = {} AND name = {}",
        sql_string(&config.database),
        sql_string(table),
        sql_string(column)
    );
    let count: u64 =
        connection::run(config.query_timeout(), &sql, client.query_raw(&sql).fetch_one()).await?;
    Ok(count > 0)
}

/// Alters the TTL of every table whose definition does not match `config.retention_days`.
async fn reconcile_ttl(
    client: &Client,
    version: &ServerVersion,
    config: &ClickHouseConfig,
) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    // (table, time column, days): the schema tables follow `retention_days`, the rollups keep
    // longer (see `crate::rollups::ttl_tables`).
    let mut wanted_ttls: Vec<(String, String, u32)> = tables()
        .iter()
        .map(|t| (t.name.to_owned(), t.time_column.to_owned(), config.retention_days))
        .collect();
    wanted_ttls.extend(
        crate::rollups::ttl_tables(config.retention_days)
            .into_iter()
            .chain(crate::probes::ttl_tables(config.retention_days))
            .map(|(table, column, days)| (table.to_owned(), column.to_owned(), days)),
    );
    let on_cluster = match &config.cluster {
        Some(cluster) if config.cluster_nodes.is_empty() => format!(" ON CLUSTER {cluster}"),
        _ => String::new(),
    };
    for (table, time_column, days) in wanted_ttls {
        // In a cluster the TTL belongs to the local tables (a Distributed table has none).
        let table = config.storage_table(&table);
        let sql = format!(
            "SELECT engine_full FROM system.tables WHERE database = '{}' AND name = '{}'",
            config.database, table
        );
        let engine_full: String =
            connection::run(config.query_timeout(), &sql, client.query_raw(&sql).fetch_one()).await?;
        // The server prints `INTERVAL n DAY` back as `toIntervalDay(n)`.
        let wanted = (days > 0).then(|| format!("TTL {time_column} + toIntervalDay({days})"));
        let current_matches = match &wanted {
            Some(ttl) => engine_full.contains(ttl.as_str()),
            None => !engine_full.contains(" TTL "),
        };
        if current_matches || !version.has_ttl() {
            continue;
        }
        let alter = if days > 0 {
            format!(
                "ALTER TABLE {}.{table}{on_cluster} MODIFY TTL {time_column} + INTERVAL {days} DAY",
                config.database
            )
        } else {
            format!("ALTER TABLE {}.{table}{on_cluster} REMOVE TTL", config.database)
        };
        connection::run(config.query_timeout(), &alter, client.query_raw(&alter).execute()).await?;
        tracing::info!(table = %table, retention_days = days, "changed table TTL");
        changed.push(table);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: ServerVersion = ServerVersion::new(18, 16, 1);
    const CURRENT: ServerVersion = ServerVersion::new(26, 1, 0);

    fn config_with(retention_days: u32) -> ClickHouseConfig {
        ClickHouseConfig {
            retention_days,
            ..ClickHouseConfig::default()
        }
    }

    #[test]
    fn old_servers_get_no_ttl_codecs_or_ipv6() {
        let config = config_with(30);
        let sql: String = ddl(&OLD, &config)
            .iter()
            .flat_map(|m| m.statements.clone())
            .collect();
        for absent in ["\nTTL ", "CODEC(", " IPv6 "] {
            assert!(!sql.contains(absent), "{absent} in old DDL");
        }
        assert!(sql.contains("exporter_address FixedString(16)"));
        assert!(sql.contains("COMMENT 'Collector clock when the datagram arrived (UTC, seconds).'"));
    }

    #[test]
    fn current_servers_get_ttl_codecs_and_ipv6() {
        let config = config_with(7);
        let sql: String = ddl(&CURRENT, &config)
            .iter()
            .flat_map(|m| m.statements.clone())
            .collect();
        assert!(sql.contains("TTL time_received + INTERVAL 7 DAY"));
        assert!(sql.contains("TTL minute + INTERVAL 7 DAY"));
        assert!(sql.contains("exporter_address IPv6 CODEC(ZSTD(1))"));
        let forever: String = ddl(&CURRENT, &config_with(0))
            .iter()
            .flat_map(|m| m.statements.clone())
            .collect();
        assert!(!forever.contains("\nTTL "));
    }

    #[test]
    fn migrations_are_numbered_in_order_and_named() {
        let migrations = ddl(&CURRENT, &config_with(30));
        let versions: Vec<u32> = migrations.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 100, 101, 102, 200, 201, 300]);
        assert_eq!(migrations[1].name, "create_flows");
        assert_eq!(migrations[3].name, "create_interface_counters");
        assert_eq!(migrations[4].name, "add_flow_classification");
        assert_eq!(migrations[5].name, "create_sla_results");
        assert_eq!(migrations[6].name, "create_alert_deliveries");
        assert_eq!(migrations[7].name, "add_flow_rtt");
        assert_eq!(migrations[13].name, "deduplicate_flow_inserts");
    }

    #[test]
    fn only_servers_with_insert_deduplication_get_the_flows_window() {
        let config = config_with(30);
        let last = |version| ddl(version, &config).pop().expect("migrations");
        assert_eq!(last(&OLD).statements, Vec::<String>::new());
        assert_eq!(
            last(&CURRENT).statements,
            [
                "ALTER TABLE egress.flows MODIFY SETTING non_replicated_deduplication_window = 1000",
                "ALTER TABLE egress.flows_1m_path MODIFY SETTING non_replicated_deduplication_window = 1000",
                "ALTER TABLE egress.flows_1m_src_host MODIFY SETTING non_replicated_deduplication_window = 1000",
                "ALTER TABLE egress.flows_1m_dst_as MODIFY SETTING non_replicated_deduplication_window = 1000",
                "ALTER TABLE egress.latency_1m MODIFY SETTING non_replicated_deduplication_window = 1000",
            ]
        );
        assert!(!ServerVersion::new(20, 3, 0).has_insert_deduplication());
    }

    #[test]
    fn rtt_columns_are_added_after_dst_cloud_as_nullable() {
        let config = config_with(30);
        for version in [OLD, CURRENT] {
            let statements = &ddl(&version, &config)[7].statements;
            // One ADD COLUMN and one COMMENT COLUMN per latency column.
            assert_eq!(statements.len(), 2 * 4, "{version}");
            assert_eq!(
                statements[0],
                "ALTER TABLE egress.flows ADD COLUMN rtt_client_us Nullable(UInt32) AFTER dst_cloud"
            );
            assert_eq!(
                parse_add_column(&statements[6], "egress"),
                Some(("flows", "rtt_source"))
            );
            assert!(statements[6].ends_with(" AFTER rtt_app_us"), "{}", statements[6]);
            assert!(
                statements[6].contains("'sflow_tcp_info' = 4"),
                "{}",
                statements[6]
            );
        }
    }

    #[test]
    fn classification_columns_are_added_in_order_and_recognised() {
        let config = config_with(30);
        for version in [OLD, CURRENT] {
            let statements = &ddl(&version, &config)[4].statements;
            // One ADD COLUMN and one COMMENT COLUMN per column after `direction`.
            assert_eq!(statements.len(), 2 * 15, "{version}");
            assert_eq!(
                parse_add_column(&statements[0], "egress"),
                Some(("flows", "traffic_direction"))
            );
            assert!(statements[0].ends_with(" AFTER direction"), "{}", statements[0]);
            assert!(
                statements[2].contains("ADD COLUMN egress_path")
                    && statements[2].ends_with(" AFTER traffic_direction")
            );
            assert!(statements[1]
                .starts_with("ALTER TABLE egress.flows COMMENT COLUMN traffic_direction 'Relative"));
            assert_eq!(parse_add_column(&statements[1], "egress"), None);
            assert_eq!(parse_add_column(&statements[0], "other"), None);
        }
        let old = ddl(&OLD, &config)[4].statements[2].clone();
        assert!(old.contains("egress_path String AFTER"), "{old}");
        let current = ddl(&CURRENT, &config)[4].statements[2].clone();
        assert!(
            current.contains("egress_path LowCardinality(String) AFTER"),
            "{current}"
        );
    }

    #[test]
    fn comments_are_quoted_and_contain_no_bind_marks() {
        assert_eq!(sql_string("it's"), "'it\\'s'");
        for table in tables() {
            for column in table.columns {
                assert!(
                    !column.comment.contains(['?', '|', '\n']),
                    "{}: {}",
                    column.name,
                    column.comment
                );
            }
        }
    }
}
