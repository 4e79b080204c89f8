//! Rollups of `flows`: egress volumes per minute and per hour, by egress path, by internal source
//! host and by destination AS.
//!
//! In: rows inserted into `flows`. Out: six small tables that SLA evaluation and dashboards read
//! instead of scanning raw flows:
//!
//! | rollup | minute table | hour table | dimensions |
//! |---|---|---|---|
//! | path | `flows_1m_path` | `flows_1h_path` | `egress_path`, `exporter_address`, `out_if` |
//! | source host | `flows_1m_src_host` | `flows_1h_src_host` | `src_addr` |
//! | destination AS | `flows_1m_dst_as` | `flows_1h_dst_as` | `dst_as` |
//!
//! Only egress traffic is rolled up: flows with `traffic_direction = 'outbound'` (the
//! classification's definition of egress, see `docs/schema.md`). Volumes are already scaled by
//! the sampling rate (`scaled_bytes = sum(bytes * sampling_rate)`), and every row carries
//! `records`, the number of sampled flow records behind it, so that a reader can tell a
//! measurement from noise.
//!
//! **Minute tables** are filled by materialized views on `flows` (`CREATE MATERIALIZED VIEW ...
//! TO`), in the same insert as the flows themselves. Their engine is `SummingMergeTree`: one
//! minute of one path arrives in many inserts (one per collector flush), each adding a row, and
//! background merges add rows with the same key together *eventually*. Readers therefore always
//! `sum()` the measures with a `GROUP BY` (never read a row as the total), which is correct
//! whether or not the parts have merged. `SummingMergeTree` rather than `AggregatingMergeTree`
//! because every minute measure is a plain sum: queries stay ordinary SQL on both server
//! generations, with no `-State`/`-Merge` functions.
//!
//! **Hour tables** carry, besides the sums, the peak one-minute rate inside the hour
//! (`peak_bytes_per_second`: the scaled bytes of the busiest minute divided by 60), so that peaks
//! survive the roll-up. A materialized view cannot compute it: the rows of one minute arrive in
//! several inserts and a view only sees one insert. So the hours are closed by a job,
//! [`close_hours`], which the monitor runs every few minutes: for every hour that ended at least
//! [`CLOSE_GRACE_SECONDS`] ago (and at most [`CLOSE_LOOKBACK_HOURS`] ago) whose record count in
//! the minute table differs from the hour table's, it recomputes the hour from the minute table
//! (`INSERT ... SELECT`: per-minute sums first, then their sum and maximum). The minute table is
//! small, so this is cheap. The hour tables are `ReplacingMergeTree(closed_at)`: a recomputed
//! hour (late rows, e.g. from the collector's spool after an outage) replaces the earlier one.
//! Readers use `FINAL` on hour tables. Running the job twice changes nothing: an hour whose counts
//! already agree is skipped. The current hour is never in an hour table; read it from the minute
//! table.
//!
//! **Retention** is longer than the raw flows' (see [`RollupRetention`]): minute tables keep at
//! least 35 days (a month of five-minute rates for p95 billing), hour tables at least 400 days.
//! Current servers get a table TTL; on ClickHouse 18.16 [`enforce_retention`] drops expired
//! partitions (minute tables by day, hour tables by month).
//!
//! The DDL is [`rollup_migrations`], numbered from 100 so that it never collides with the schema
//! migrations of [`crate::migrate`], which appends it to its own.

pub mod latency;

use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::connection::{self, is_identifier, ClickHouseConfig, ConnectionError, ServerVersion};
use crate::migrate::{ColumnDef, Migration};
use crate::schema::FLOWS_TABLE;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RollupError {
    /// The database name would need quoting; Egress only accepts plain identifiers.
    #[error("database name {0:?} must be letters, digits and `_`, not starting with a digit")]
    InvalidDatabase(String),
    /// A query failed or timed out.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, RollupError>;

/// An hour is closed this long after its end, so that rows still in flight (batches being
/// flushed by the collector) are in the minute table first. Rows arriving later are picked up
/// by a later run, which recomputes the hour.
pub const CLOSE_GRACE_SECONDS: u32 = 120;

/// How far back [`close_hours`] looks for hours to (re)compute. Rows inserted later than this
/// after their hour (a spool replayed after two days) stay in the minute table only.
pub const CLOSE_LOOKBACK_HOURS: u32 = 48;

/// Minimum days kept in minute tables: a month of five-minute rates (p95 billing) and margin.
pub const MIN_MINUTE_RETENTION_DAYS: u32 = 35;

/// Minimum days kept in hour tables: a year and a month, for year-on-year comparison.
pub const MIN_HOUR_RETENTION_DAYS: u32 = 400;

/// Filter applied to `flows` by every rollup view: only egress traffic is rolled up.
pub const EGRESS_FILTER: &str = "traffic_direction = 'outbound'";

/// How long rollups are kept, in days (0: forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupRetention {
    /// Days kept in the `flows_1m_*` tables.
    pub minute_days: u32,
    /// Days kept in the `flows_1h_*` tables.
    pub hour_days: u32,
}

impl RollupRetention {
    /// The rollup retention that goes with keeping raw flows `flows_retention_days` days:
    /// never shorter than the flows' (a rollup outliving its source is the point), at least
    /// [`MIN_MINUTE_RETENTION_DAYS`] and [`MIN_HOUR_RETENTION_DAYS`], and forever when flows are
    /// kept forever. Derived rather than configured so that the `[clickhouse]` section needs no
    /// new key; a configuration key can replace this later without changing the tables.
    pub fn for_flows(flows_retention_days: u32) -> Self {
        if flows_retention_days == 0 {
            return Self {
                minute_days: 0,
                hour_days: 0,
            };
        }
        Self {
            minute_days: flows_retention_days.max(MIN_MINUTE_RETENTION_DAYS),
            hour_days: flows_retention_days.max(MIN_HOUR_RETENTION_DAYS),
        }
    }
}

/// Time granularity of a rollup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// `flows_1m_*`: one row per minute and key (several before merges), `SummingMergeTree`.
    Minute,
    /// `flows_1h_*`: one row per closed hour and key (after `FINAL`), `ReplacingMergeTree`.
    Hour,
}

/// One rollup: the dimensions it groups egress flows by, and its two tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    /// Short name: `path`, `src_host` or `dst_as`.
    pub name: &'static str,
    /// Minute table, filled by the view `<minute_table>_mv`.
    pub minute_table: &'static str,
    /// Hour table, filled by [`close_hours`].
    pub hour_table: &'static str,
    /// Dimension columns, each a column of `flows` with the same name, type and meaning.
    pub dimensions: Vec<ColumnDef>,
}

impl Rollup {
    /// The materialized view feeding the minute table.
    pub fn view(&self) -> String {
        format!("{}_mv", self.minute_table)
    }

    /// The table of `granularity`.
    pub fn table(&self, granularity: Granularity) -> &'static str {
        match granularity {
            Granularity::Minute => self.minute_table,
            Granularity::Hour => self.hour_table,
        }
    }

    /// `dim1, dim2, ...`
    fn dimension_list(&self) -> String {
        self.dimensions
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every column of the table of `granularity`, in order: time, dimensions, measures.
    pub fn columns(&self, granularity: Granularity) -> Vec<ColumnDef> {
        let mut columns = vec![match granularity {
            Granularity::Minute => column(
                "minute",
                "DateTime('UTC')",
                "Start of the minute (UTC, collector clock: flows.time_received).",
            ),
            Granularity::Hour => column(
                "hour",
                "DateTime('UTC')",
                "Start of the hour (UTC, collector clock: flows.time_received).",
            ),
        }];
        columns.extend(self.dimensions.iter().cloned());
        columns.push(column(
            "scaled_bytes",
            "UInt64",
            "Bytes on the wire estimated from the samples: sum of bytes * sampling_rate.",
        ));
        columns.push(column(
            "scaled_packets",
            "UInt64",
            "Packets on the wire estimated from the samples: sum of packets * sampling_rate.",
        ));
        columns.push(column(
            "records",
            "UInt64",
            "Sampled flow records behind the row; few records make a noisy estimate.",
        ));
        if granularity == Granularity::Hour {
            columns.push(column(
                "minutes",
                "UInt8",
                "Minutes of the hour with at least one record.",
            ));
            columns.push(column(
                "peak_bytes_per_second",
                "Float64",
                "Scaled bytes of the busiest minute of the hour divided by 60.",
            ));
            columns.push(column(
                "peak_packets_per_second",
                "Float64",
                "Scaled packets of the busiest minute of the hour divided by 60.",
            ));
            columns.push(column(
                "closed_at",
                "DateTime('UTC')",
                "When the hour was computed from the minute table; the newest computation wins.",
            ));
        }
        columns
    }

    /// `CREATE TABLE IF NOT EXISTS` of the table of `granularity` on `version`.
    pub fn create_table(
        &self,
        granularity: Granularity,
        version: &ServerVersion,
        config: &ClickHouseConfig,
    ) -> String {
        let retention = RollupRetention::for_flows(config.retention_days);
        let (time, engine, partition_by, days) = match granularity {
            Granularity::Minute => (
                "minute",
                "SummingMergeTree((scaled_bytes, scaled_packets, records))",
                "toYYYYMMDD(minute)",
                retention.minute_days,
            ),
            Granularity::Hour => (
                "hour",
                "ReplacingMergeTree(closed_at)",
                "toYYYYMM(hour)",
                retention.hour_days,
            ),
        };
        let columns = self
            .columns(granularity)
            .iter()
            .map(|column| {
                let mut definition = format!("    {} {}", column.name, column.data_type(version));
                if version.has_column_comments() {
                    definition.push_str(&format!(" COMMENT {}", sql_string(column.comment)));
                }
                definition
            })
            .collect::<Vec<_>>()
            .join(",\n");
        let mut statement = format!(
            "CREATE TABLE IF NOT EXISTS {}.{}\n(\n{columns}\n)\nENGINE = {engine}\nPARTITION BY {partition_by}\n\
             ORDER BY ({time}, {})",
            config.database,
            self.table(granularity),
            self.dimension_list()
        );
        if version.has_ttl() && days > 0 {
            statement.push_str(&format!("\nTTL {time} + INTERVAL {days} DAY"));
        }
        statement
    }

    /// The materialized view that adds every insert into `flows` to the minute table.
    pub fn create_view(&self, config: &ClickHouseConfig) -> String {
        let dimensions = self.dimension_list();
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view} TO {db}.{table} AS\n\
             SELECT toStartOfMinute(time_received) AS minute, {dimensions},\n    \
             sum(bytes * sampling_rate) AS scaled_bytes, sum(packets * sampling_rate) AS scaled_packets, \
             count() AS records\n\
             FROM {db}.{FLOWS_TABLE}\nWHERE {EGRESS_FILTER}\nGROUP BY minute, {dimensions}",
            db = config.database,
            view = self.view(),
            table = self.minute_table,
        )
    }

    /// `INSERT ... SELECT` computing the hour rows for hours starting in `[?, ?)` from the minute
    /// table. Binds, in order: `closed_at`, range start, range end (Unix seconds).
    pub fn close_statement(&self, database: &str) -> String {
        let dimensions = self.dimension_list();
        let columns = self
            .columns(Granularity::Hour)
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ");
        // Per-minute sums first (a minute may still be several unmerged rows), then the hour.
        format!(
            "INSERT INTO {database}.{hour_table} ({columns})\n\
             SELECT hour, {dimensions}, sum(minute_bytes), sum(minute_packets), sum(minute_records),\n    \
             toUInt8(count()), max(minute_bytes) / 60, max(minute_packets) / 60, toDateTime(?)\n\
             FROM (\n    \
             SELECT toStartOfHour(minute) AS hour, minute, {dimensions},\n        \
             sum(scaled_bytes) AS minute_bytes, sum(scaled_packets) AS minute_packets, \
             sum(records) AS minute_records\n    \
             FROM {database}.{minute_table}\n    \
             WHERE minute >= toDateTime(?) AND minute < toDateTime(?)\n    \
             GROUP BY hour, minute, {dimensions}\n)\n\
             GROUP BY hour, {dimensions}",
            hour_table = self.hour_table,
            minute_table = self.minute_table,
        )
    }

    /// Records per hour in the table of `granularity`, for hours starting in `[?, ?)`.
    /// Binds: range start, range end (Unix seconds).
    fn records_per_hour_query(&self, database: &str, granularity: Granularity) -> String {
        match granularity {
            Granularity::Minute => format!(
                "SELECT toStartOfHour(minute) AS hour, sum(records) AS records FROM {database}.{} \
                 WHERE minute >= toDateTime(?) AND minute < toDateTime(?) GROUP BY hour ORDER BY hour",
                self.minute_table
            ),
            Granularity::Hour => format!(
                "SELECT hour, sum(records) AS records FROM {database}.{} FINAL \
                 WHERE hour >= toDateTime(?) AND hour < toDateTime(?) GROUP BY hour ORDER BY hour",
                self.hour_table
            ),
        }
    }
}

fn column(name: &'static str, data_type: &str, comment: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        current_type: data_type.to_owned(),
        old_type: data_type.to_owned(),
        codec: "",
        comment,
    }
}

/// Quotes `text` as a ClickHouse string literal.
fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The three rollups. Dimension columns have the type and meaning of the `flows` column of the
/// same name.
pub fn rollups() -> Vec<Rollup> {
    let address = |name, comment| ColumnDef {
        name,
        current_type: "IPv6".to_owned(),
        old_type: "FixedString(16)".to_owned(),
        codec: "",
        comment,
    };
    vec![
        Rollup {
            name: "path",
            minute_table: "flows_1m_path",
            hour_table: "flows_1h_path",
            dimensions: vec![
                ColumnDef {
                    name: "egress_path",
                    current_type: "LowCardinality(String)".to_owned(),
                    old_type: "String".to_owned(),
                    codec: "",
                    comment: "Egress path: exporter and outgoing external interface, e.g. edge1 / et-0/0/1 (Transit A).",
                },
                address("exporter_address", "Address of the exporter; IPv4 stored as ::ffff:a.b.c.d."),
                column("out_if", "UInt32", "Output interface index (SNMP ifIndex) on the exporter."),
            ],
        },
        Rollup {
            name: "src_host",
            minute_table: "flows_1m_src_host",
            hour_table: "flows_1h_src_host",
            dimensions: vec![address("src_addr", "Source host; IPv4 stored as ::ffff:a.b.c.d.")],
        },
        Rollup {
            name: "dst_as",
            minute_table: "flows_1m_dst_as",
            hour_table: "flows_1h_dst_as",
            dimensions: vec![column("dst_as", "UInt32", "Destination autonomous system number; 0 when unknown.")],
        },
    ]
}

/// The rollup migrations for `version`, numbered from 100 (one per rollup: minute table, hour
/// table, view). They need the classification columns of `flows` (`traffic_direction`,
/// `egress_path`), so they come after the schema migrations that add them.
pub fn rollup_migrations(version: &ServerVersion, config: &ClickHouseConfig) -> Vec<Migration> {
    let names = [
        ("path", "create_rollups_path"),
        ("src_host", "create_rollups_src_host"),
        ("dst_as", "create_rollups_dst_as"),
    ];
    rollups()
        .into_iter()
        .zip(100..)
        .map(|(rollup, number)| Migration {
            version: number,
            name: names
                .iter()
                .find(|(r, _)| *r == rollup.name)
                .map_or("create_rollup", |(_, n)| n),
            statements: vec![
                rollup.create_table(Granularity::Minute, version, config),
                rollup.create_table(Granularity::Hour, version, config),
                // The view last: once it exists, inserts into flows write the minute table.
                rollup.create_view(config),
            ],
        })
        .collect()
}

/// Every rollup table with its time column and retention in days (0: forever), for keeping
/// the TTLs of current servers in line with `retention_days` the way
/// [`crate::migrate::migrate`] does for the schema tables (`ALTER TABLE ... MODIFY TTL
/// <time column> + INTERVAL <days> DAY`, or `REMOVE TTL` for 0).
pub fn ttl_tables(retention_days: u32) -> Vec<(&'static str, &'static str, u32)> {
    let retention = RollupRetention::for_flows(retention_days);
    rollups()
        .iter()
        .flat_map(|rollup| {
            [
                (rollup.minute_table, "minute", retention.minute_days),
                (rollup.hour_table, "hour", retention.hour_days),
            ]
        })
        .chain([(latency::LATENCY_TABLE, "minute", retention.minute_days)])
        .collect()
}

#[derive(Debug, Row, Deserialize)]
struct HourRecords {
    hour: u32,
    records: u64,
}

/// Start of the hour containing `time` (Unix seconds, UTC).
fn hour_of(time: u32) -> u32 {
    time - time % 3600
}

/// Computes the hour rows of every closed hour whose minute rows changed since it was last
/// computed, for every rollup. `now` is Unix seconds (the monitor's clock).
///
/// An hour `[h, h + 1h)` is closed once `now >= h + 1h + CLOSE_GRACE_SECONDS`; hours up to
/// [`CLOSE_LOOKBACK_HOURS`] back are considered. An hour is (re)computed when the sum of
/// `records` in its minute rows differs from its hour rows' (after `FINAL`): never computed, or
/// late rows arrived. The new rows carry `closed_at = now` and replace the old ones. Returns the
/// number of (rollup, hour) pairs computed; 0 when everything was already up to date.
pub async fn close_hours(client: &Client, config: &ClickHouseConfig, now: u32) -> Result<usize> {
    let database = config.database.as_str();
    if !is_identifier(database) {
        return Err(RollupError::InvalidDatabase(database.to_owned()));
    }
    let timeout = config.query_timeout();
    let end = hour_of(now.saturating_sub(CLOSE_GRACE_SECONDS));
    let start = end.saturating_sub(CLOSE_LOOKBACK_HOURS * 3600);
    let mut computed = 0;
    for rollup in rollups() {
        let mut counts = Vec::with_capacity(2);
        for granularity in [Granularity::Minute, Granularity::Hour] {
            let sql = rollup.records_per_hour_query(database, granularity);
            let rows: Vec<HourRecords> = connection::run(
                timeout,
                &sql,
                client.query(&sql).bind(start).bind(end).fetch_all(),
            )
            .await?;
            counts.push(rows);
        }
        let (minute_counts, hour_counts) = (&counts[0], &counts[1]);
        for minute in minute_counts {
            let closed = hour_counts
                .iter()
                .find(|h| h.hour == minute.hour)
                .map_or(0, |h| h.records);
            if closed == minute.records {
                continue;
            }
            let sql = rollup.close_statement(database);
            connection::run(
                timeout,
                &sql,
                client
                    .query(&sql)
                    .bind(now)
                    .bind(minute.hour)
                    .bind(minute.hour + 3600)
                    .execute(),
            )
            .await?;
            tracing::debug!(
                rollup = rollup.name,
                hour = minute.hour,
                records = minute.records,
                previously = closed,
                "closed hour"
            );
            computed += 1;
        }
    }
    Ok(computed)
}

/// The query listing `(table, partition_id)` of every partition of the rollup tables in
/// `database` whose newest row is older than its table's retention. Tables kept forever are not
/// listed. Runs on 18.16 and current servers.
pub fn expired_partitions_query(database: &str, retention: RollupRetention) -> String {
    let mut conditions = Vec::new();
    for (granularity, days) in [
        (Granularity::Minute, retention.minute_days),
        (Granularity::Hour, retention.hour_days),
    ] {
        if days == 0 {
            continue;
        }
        let mut tables: Vec<&str> = rollups().iter().map(|r| r.table(granularity)).collect();
        if granularity == Granularity::Minute {
            tables.push(latency::LATENCY_TABLE);
        }
        // In a cluster the rows are in `<table>_local` (see `crate::cluster`).
        let tables = tables
            .iter()
            .flat_map(|t| [format!("'{t}'"), format!("'{t}{}'", crate::cluster::LOCAL_SUFFIX)])
            .collect::<Vec<_>>()
            .join(", ");
        conditions.push(format!(
            "(table IN ({tables}) AND max(max_time) < now() - {})",
            u64::from(days) * 86_400
        ));
    }
    if conditions.is_empty() {
        conditions.push("0".to_owned());
    }
    format!(
        "SELECT table, partition_id FROM system.parts \
         WHERE database = '{database}' AND active \
         GROUP BY table, partition_id \
         HAVING {} \
         ORDER BY table, partition_id",
        conditions.join(" OR ")
    )
}

/// Drops every rollup partition whose rows are all older than the rollup retention derived from
/// `config.retention_days` ([`RollupRetention::for_flows`]). For servers without TTLs (18.16);
/// harmless elsewhere. Returns the dropped `table/partition_id`s.
pub async fn enforce_retention(client: &Client, config: &ClickHouseConfig) -> Result<Vec<String>> {
    let database = config.database.as_str();
    if !is_identifier(database) {
        return Err(RollupError::InvalidDatabase(database.to_owned()));
    }
    let sql = expired_partitions_query(database, RollupRetention::for_flows(config.retention_days));
    Ok(crate::retention::drop_listed_partitions(client, config, &sql).await?)
}

/// Scaled bit/s per egress path per minute for minutes starting in `[?, ?)` (Unix seconds), with
/// the sampled records behind each value: what a dashboard or a throughput SLA reads. Columns:
/// `minute`, `egress_path`, `bits_per_second`, `records`.
pub fn path_minute_rates_query(database: &str) -> String {
    format!(
        "SELECT minute, egress_path, sum(scaled_bytes) * 8 / 60 AS bits_per_second, \
         sum(records) AS records FROM {database}.flows_1m_path \
         WHERE minute >= toDateTime(?) AND minute < toDateTime(?) \
         GROUP BY minute, egress_path ORDER BY minute, egress_path"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: ServerVersion = ServerVersion::new(18, 16, 1);
    const CURRENT: ServerVersion = ServerVersion::new(26, 1, 0);

    fn all_sql(version: &ServerVersion, retention_days: u32) -> String {
        let config = ClickHouseConfig {
            retention_days,
            ..ClickHouseConfig::default()
        };
        rollup_migrations(version, &config)
            .into_iter()
            .chain(latency::latency_migrations(version, &config))
            .flat_map(|m| m.statements)
            .collect::<Vec<_>>()
            .join(";\n")
    }

    #[test]
    fn migrations_are_numbered_from_100() {
        let migrations = rollup_migrations(&CURRENT, &ClickHouseConfig::default());
        let labels: Vec<String> = migrations.iter().map(Migration::label).collect();
        assert_eq!(
            labels,
            [
                "100_create_rollups_path",
                "101_create_rollups_src_host",
                "102_create_rollups_dst_as"
            ]
        );
        assert!(migrations.iter().all(|m| m.statements.len() == 3));
    }

    #[test]
    fn old_servers_get_no_ttl_or_low_cardinality() {
        let sql = all_sql(&OLD, 30);
        for absent in ["\nTTL ", "LowCardinality", "IPv6 "] {
            assert!(!sql.contains(absent), "{absent} in old DDL");
        }
        assert!(sql.contains("egress_path String COMMENT"));
        assert!(sql.contains("ENGINE = SummingMergeTree((scaled_bytes, scaled_packets, records))"));
        assert!(sql.contains("ENGINE = ReplacingMergeTree(closed_at)"));
    }

    #[test]
    fn current_servers_keep_rollups_longer_than_flows() {
        let sql = all_sql(&CURRENT, 30);
        // Three volume rollups and the latency rollup per minute; three per hour.
        assert_eq!(sql.matches("TTL minute + INTERVAL 35 DAY").count(), 4);
        assert_eq!(sql.matches("TTL hour + INTERVAL 400 DAY").count(), 3);
        assert!(sql.contains("egress_path LowCardinality(String)"));
        assert_eq!(all_sql(&CURRENT, 90).matches("INTERVAL 90 DAY").count(), 4);
        assert!(!all_sql(&CURRENT, 0).contains("\nTTL "));
    }

    #[test]
    fn views_roll_up_only_egress_with_scaled_volumes() {
        let config = ClickHouseConfig::default();
        for rollup in rollups() {
            let view = rollup.create_view(&config);
            assert!(view.contains(&format!("TO egress.{} AS", rollup.minute_table)));
            assert!(view.contains("WHERE traffic_direction = 'outbound'"));
            assert!(view.contains("sum(bytes * sampling_rate) AS scaled_bytes"));
        }
    }

    #[test]
    fn close_statement_binds_closed_at_and_the_range() {
        let rollup = &rollups()[0];
        assert_eq!(rollup.close_statement("egress").matches('?').count(), 3);
        for granularity in [Granularity::Minute, Granularity::Hour] {
            assert_eq!(
                rollup
                    .records_per_hour_query("egress", granularity)
                    .matches('?')
                    .count(),
                2
            );
        }
    }

    #[test]
    fn retention_follows_flows_and_forever_means_forever() {
        assert_eq!(
            RollupRetention::for_flows(7),
            RollupRetention {
                minute_days: 35,
                hour_days: 400
            }
        );
        assert_eq!(RollupRetention::for_flows(500).hour_days, 500);
        let forever = expired_partitions_query("egress", RollupRetention::for_flows(0));
        assert!(forever.contains("HAVING 0 "));
    }

    #[test]
    fn ttl_tables_match_the_create_statements() {
        let config = ClickHouseConfig::default();
        let sql = all_sql(&CURRENT, config.retention_days);
        let tables = ttl_tables(config.retention_days);
        assert_eq!(tables.len(), 7);
        for (table, time, days) in tables {
            let create = sql
                .split(";\n")
                .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS egress.{table}\n")))
                .unwrap();
            assert!(
                create.ends_with(&format!("TTL {time} + INTERVAL {days} DAY")),
                "{create}"
            );
        }
    }

    #[test]
    fn comments_are_plain_text() {
        for rollup in rollups() {
            for granularity in [Granularity::Minute, Granularity::Hour] {
                for column in rollup.columns(granularity) {
                    assert!(
                        !column.comment.contains(['?', '\'', '|', '\n']),
                        "{}",
                        column.name
                    );
                }
            }
        }
    }
}
