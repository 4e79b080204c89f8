//! Latency rollup: round-trip percentiles per egress path, source and target, per minute.
//!
//! In: rows inserted into `probes` (the prober's results) and outbound `flows` with an
//! exporter-measured round trip. Out: `latency_1m`, one `AggregatingMergeTree` table that the
//! latency API reads for long windows instead of scanning raw rows: per minute, `egress_path`,
//! `source` (`probes` or `flows`) and `target` (the probe target; empty for flows), the samples
//! (`attempts`: probes sent or flow round trips), the answered ones, and a t-digest of the
//! answered round trips in microseconds, from which any percentile of any span of minutes is
//! merged (`quantilesTDigestMerge`). The round trip of a flow is the latency SLA's own
//! definition ([`crate::sla::latency`]'s `FLOW_RTT_US`), so the rollup and the SLA cannot
//! disagree on what a sample is.
//!
//! Two materialized views fill the table in the same insert as their source rows. Unlike the
//! volume rollups ([`super`]), percentiles cannot be summed, hence the aggregate-state columns
//! and the `-Merge` functions in readers: `countMerge(attempts)`, `sumMerge(answered)`,
//! `quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(round_trip_us)` (the levels are part of the
//! column type; a reader must name the same four). A t-digest is approximate (within about 1%
//! of rank around p95 at these sizes); the SLA itself reads raw rows with `quantileExact`.
//! Both server generations have these functions (checked by the tests on 18.16 and chdb).
//!
//! Retention is the minute rollups' ([`super::RollupRetention`]): a TTL on current servers,
//! partition dropping by [`super::enforce_retention`] on 18.16. Migration 201 creates it, after
//! the `probes` table (200) it reads.

use crate::connection::{ClickHouseConfig, ServerVersion};
use crate::migrate::{ColumnDef, Migration, TableDef};
use crate::probes::PROBES_TABLE;
use crate::schema::FLOWS_TABLE;
use crate::sla::latency::FLOW_RTT_US;

/// The table name.
pub const LATENCY_TABLE: &str = "latency_1m";
/// The percentile levels every t-digest state is built for, as they appear in the column type
/// and in every `quantilesTDigestMerge` that reads it.
pub const LEVELS: &str = "0.5, 0.9, 0.95, 0.99";

/// The `latency_1m` table: columns, engine, partitioning (by day, like every minute rollup).
pub fn latency_table() -> TableDef {
    TableDef {
        name: LATENCY_TABLE,
        columns: vec![
            ColumnDef::new("minute", "DateTime('UTC')", "", "Start of the minute (UTC)."),
            ColumnDef::low_cardinality(
                "egress_path",
                "Egress path: the probe's path label, or the flow's egress_path.",
            ),
            ColumnDef::low_cardinality("source", "Where the round trips came from: probes or flows."),
            ColumnDef::low_cardinality("target", "Probe target (host:port or host); empty for flows."),
            ColumnDef::new(
                "attempts",
                "AggregateFunction(count)",
                "",
                "Samples: probes sent (answered or not), or flow records with a round trip. Read with countMerge.",
            ),
            ColumnDef::new(
                "answered",
                "AggregateFunction(sum, UInt64)",
                "",
                "Samples that measured a round trip (answered probes; every flow sample). Read with sumMerge.",
            ),
            ColumnDef::new(
                "round_trip_us",
                format!("AggregateFunction(quantilesTDigest({LEVELS}), UInt64)"),
                "",
                "t-digest of the answered round trips in microseconds. Read with quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99).",
            ),
        ],
        partition_by: "toYYYYMMDD(minute)",
        order_by: "(egress_path, source, target, minute)",
        time_column: "minute",
        engine: "AggregatingMergeTree()",
    }
}

/// The two materialized views feeding [`LATENCY_TABLE`]: from `probes` and from outbound flows.
pub fn create_views(config: &ClickHouseConfig) -> [String; 2] {
    let db = &config.database;
    let states = |answered: &str, round_trip: &str| {
        format!(
            "countState() AS attempts, sumState(toUInt64({answered})) AS answered, \
             quantilesTDigestStateIf({LEVELS})(toUInt64({round_trip}), {answered} = 1) AS round_trip_us"
        )
    };
    [
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{LATENCY_TABLE}_probes_mv TO {db}.{LATENCY_TABLE} AS\n\
             SELECT toStartOfMinute(time) AS minute, path AS egress_path, 'probes' AS source, target,\n    {}\n\
             FROM {db}.{PROBES_TABLE}\nGROUP BY minute, egress_path, target",
            states("success", "ifNull(rtt_us, 0)")
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{LATENCY_TABLE}_flows_mv TO {db}.{LATENCY_TABLE} AS\n\
             SELECT toStartOfMinute(time_received) AS minute, egress_path, 'flows' AS source, '' AS target,\n    {}\n\
             FROM {db}.{FLOWS_TABLE}\n\
             WHERE traffic_direction = 'outbound' AND egress_path != '' \
             AND (isNotNull(rtt_client_us) OR isNotNull(rtt_server_us))\n\
             GROUP BY minute, egress_path",
            states("1", &format!("ifNull({FLOW_RTT_US}, 0)"))
        ),
    ]
}

/// Migration 201: the table, then the views (once a view exists, inserts feed the table).
pub fn latency_migrations(version: &ServerVersion, config: &ClickHouseConfig) -> Vec<Migration> {
    let retention = super::RollupRetention::for_flows(config.retention_days);
    let mut statements =
        vec![latency_table().create_statement_keeping(version, config, retention.minute_days)];
    statements.extend(create_views(config));
    vec![Migration {
        version: 201,
        name: "create_latency_rollup",
        statements,
    }]
}

/// Per-bucket percentiles from the rollup for minutes in `[?, ?)` (Unix seconds), buckets of
/// `?` seconds (a multiple of 60). Binds, in order: step, step, from, to, then the paths of
/// `path_filter` (a `AND egress_path IN (...)` fragment or empty). Columns: `path`, `source`,
/// `bucket`, `samples`, `p50_us`, `p95_us`, `p99_us` (like the raw query of the API).
pub fn percentiles_query(database: &str, path_filter: &str) -> String {
    format!(
        "SELECT egress_path AS path, source, bucket, samples, \
         toFloat64(levels[1]) AS p50_us, toFloat64(levels[3]) AS p95_us, toFloat64(levels[4]) AS p99_us \
         FROM (SELECT egress_path, source, toUInt32(intDiv(toUInt32(minute), ?) * ?) AS bucket, \
         toUInt64(sumMerge(answered)) AS samples, quantilesTDigestMerge({LEVELS})(round_trip_us) AS levels \
         FROM {database}.{LATENCY_TABLE} \
         WHERE minute >= toDateTime(?) AND minute < toDateTime(?){path_filter} \
         GROUP BY egress_path, source, bucket) \
         WHERE samples > 0 ORDER BY path, source, bucket"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_read_the_sla_definition_of_a_round_trip_and_only_answered_samples() {
        let config = ClickHouseConfig::default();
        let [probes, flows] = create_views(&config);
        assert!(probes.contains("FROM egress.probes"));
        assert!(probes.contains(
            "quantilesTDigestStateIf(0.5, 0.9, 0.95, 0.99)(toUInt64(ifNull(rtt_us, 0)), success = 1)"
        ));
        assert!(flows.contains(FLOW_RTT_US));
        assert!(flows.contains("traffic_direction = 'outbound'"));
    }

    #[test]
    fn old_servers_get_no_ttl_current_ones_the_minute_retention() {
        let config = ClickHouseConfig::default();
        let old = latency_migrations(&ServerVersion::new(18, 16, 1), &config);
        assert!(!old[0].statements[0].contains("TTL"));
        assert!(old[0].statements[0].contains("ENGINE = AggregatingMergeTree()"));
        let current = latency_migrations(&ServerVersion::new(26, 1, 0), &config);
        let days = super::super::RollupRetention::for_flows(config.retention_days).minute_days;
        assert!(current[0].statements[0].contains(&format!("TTL minute + INTERVAL {days} DAY")));
        assert_eq!(current[0].label(), "201_create_latency_rollup");
    }

    #[test]
    fn docs_document_every_column_with_its_types_and_meaning() {
        crate::migrate::assert_documented("### Latency rollup table `latency_1m`", &latency_table());
    }
}
