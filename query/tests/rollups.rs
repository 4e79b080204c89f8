//! The rollups of `query/src/rollups.rs` against a real ClickHouse 18.16: egress flows inserted in
//! several inserts per minute with different sampling rates give minute rows whose sums equal the
//! scaled raw volumes per dimension (before and after merges); closing an hour gives the sums, the
//! peak one-minute rate and the record counts; closing again changes nothing, and late rows are
//! picked up; a dashboard query on the rollup returns what the same query on raw flows returns;
//! retention drops expired rollup partitions. Also checks `docs/schema.md` documents every rollup
//! column, and writes the rollup DDL for `tests/chdb/check_rollups.py` (current ClickHouse).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clickhouse::{Client, Row};
use egress_query::connection::{self, ClickHouseConfig, ServerVersion};
use egress_query::migrate::migrate;
use egress_query::rollups::{
    close_hours, enforce_retention, path_minute_rates_query, rollup_migrations, rollups, Granularity,
};
use egress_query::schema::{to_v6, FlowRow, FlowType, FLOWS_TABLE};
use egress_testkit::clickhouse::ClickHouseServer;
use serde::{Deserialize, Serialize};

const OLD: ServerVersion = ServerVersion::new(18, 16, 1);
const CURRENT: ServerVersion = ServerVersion::new(26, 1, 0);

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

/// The columns of `flows` the rollups read, in the contract's types. Rows are inserted by column
/// name, so the other columns take their defaults.
#[derive(Debug, Clone, Row, Serialize)]
struct EgressFlow {
    time_received: u32,
    exporter_address: Ipv6Addr,
    sampling_rate: u64,
    src_addr: Ipv6Addr,
    dst_addr: Ipv6Addr,
    bytes: u64,
    packets: u64,
    out_if: u32,
    dst_as: u32,
    /// `Enum8`: 1 outbound, 2 inbound, 3 internal.
    traffic_direction: i8,
    egress_path: String,
    src_internal: u8,
    dst_internal: u8,
}

const OUTBOUND: i8 = 1;

async fn exec(client: &Client, sql: &str) {
    client
        .query_raw(sql)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{sql}"));
}

/// A started server with the schema, rollups included, migrated (database `egress`).
async fn rollup_server(retention_days: u32) -> (ClickHouseServer, ClickHouseConfig, Client) {
    let server = ClickHouseServer::start().expect("clickhouse-server starts");
    let config = ClickHouseConfig {
        url: server.http_url(),
        retention_days,
        ..ClickHouseConfig::default()
    };
    let client = connection::client(&config).unwrap();
    let version = connection::server_version(&client).await.unwrap();
    migrate(&client, &config, &version).await.unwrap();
    (server, config, client)
}

/// A small deterministic generator (64-bit LCG), so that the test needs no dependency and
/// fails the same way every time.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

const PATHS: [([u8; 4], u32, &str); 3] = [
    ([192, 0, 2, 1], 1, "edge1 / et-0/0/1 (Transit A)"),
    ([192, 0, 2, 1], 2, "edge1 / et-0/0/2 (Peering B)"),
    ([192, 0, 2, 2], 7, "edge2 / xe-1/0/0 (Transit C)"),
];

/// One insert's worth of flows: for every minute in `minutes` of the hour starting at `hour`,
/// a few flows per path, all with `sampling_rate`, plus inbound and internal flows that the
/// rollups must leave out. Minute 17 carries a burst on the first path.
fn flows_batch(
    rng: &mut Lcg,
    hour: u32,
    minutes: std::ops::Range<u32>,
    sampling_rate: u64,
) -> Vec<EgressFlow> {
    let mut flows = Vec::new();
    for minute in minutes {
        for (path_index, (exporter, out_if, path)) in PATHS.iter().enumerate() {
            for _ in 0..=rng.next(3) {
                let burst = if minute == 17 && path_index == 0 { 50 } else { 1 };
                let host = to_v6(IpAddr::from([10, 0, 0, 1 + rng.next(5) as u8]));
                flows.push(EgressFlow {
                    time_received: hour + minute * 60 + rng.next(60) as u32,
                    exporter_address: to_v6(IpAddr::from(*exporter)),
                    sampling_rate,
                    src_addr: host,
                    dst_addr: to_v6(IpAddr::from([198, 51, 100, rng.next(250) as u8])),
                    bytes: (40 + rng.next(1460)) * burst,
                    packets: 1 + rng.next(10),
                    out_if: *out_if,
                    dst_as: 64500 + rng.next(4) as u32,
                    traffic_direction: OUTBOUND,
                    egress_path: (*path).to_owned(),
                    src_internal: 1,
                    dst_internal: 0,
                });
            }
        }
        let mut not_egress = flows.last().cloned().expect("a flow in every minute");
        not_egress.bytes = 1_000_000;
        not_egress.traffic_direction = 2; // inbound
        not_egress.egress_path.clear();
        flows.push(not_egress.clone());
        not_egress.traffic_direction = 3; // internal
        flows.push(not_egress);
    }
    flows
}

async fn insert(client: &Client, flows: &[EgressFlow]) {
    let mut insert = client.insert::<EgressFlow>("flows").await.unwrap();
    for flow in flows {
        insert.write(flow).await.unwrap();
    }
    insert.end().await.unwrap();
}

/// A rollup row read back: time, dimensions rendered as text, sums.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct MinuteRow {
    time: u32,
    key: String,
    scaled_bytes: u64,
    scaled_packets: u64,
    records: u64,
}

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct HourRow {
    time: u32,
    key: String,
    scaled_bytes: u64,
    scaled_packets: u64,
    records: u64,
    minutes: u8,
    peak_bytes_per_second: f64,
    peak_packets_per_second: f64,
}

/// The SQL rendering of a rollup's dimensions as one text key, matching [`key_of`].
fn key_sql(rollup: &str) -> &'static str {
    match rollup {
        "path" => "concat(egress_path, '|', IPv6NumToString(exporter_address), '|', toString(out_if))",
        "src_host" => "IPv6NumToString(src_addr)",
        "dst_as" => "toString(dst_as)",
        other => panic!("unknown rollup {other}"),
    }
}

fn key_of(rollup: &str, flow: &EgressFlow) -> String {
    match rollup {
        "path" => format!("{}|{}|{}", flow.egress_path, flow.exporter_address, flow.out_if),
        "src_host" => flow.src_addr.to_string(),
        "dst_as" => flow.dst_as.to_string(),
        other => panic!("unknown rollup {other}"),
    }
}

/// Expected minute rows of `rollup`, computed here from the flows (not by ClickHouse).
fn expected_minutes(rollup: &str, flows: &[EgressFlow]) -> Vec<MinuteRow> {
    let mut sums: BTreeMap<(u32, String), (u64, u64, u64)> = BTreeMap::new();
    for flow in flows.iter().filter(|f| f.traffic_direction == OUTBOUND) {
        let entry = sums
            .entry((flow.time_received - flow.time_received % 60, key_of(rollup, flow)))
            .or_default();
        entry.0 += flow.bytes * flow.sampling_rate;
        entry.1 += flow.packets * flow.sampling_rate;
        entry.2 += 1;
    }
    sums.into_iter()
        .map(
            |((time, key), (scaled_bytes, scaled_packets, records))| MinuteRow {
                time,
                key,
                scaled_bytes,
                scaled_packets,
                records,
            },
        )
        .collect()
}

/// Expected hour rows of `rollup` for the hours in `closed` (starts), from the expected minutes.
fn expected_hours(rollup: &str, flows: &[EgressFlow], closed: &[u32]) -> Vec<HourRow> {
    let mut hours: BTreeMap<(u32, String), HourRow> = BTreeMap::new();
    for minute in expected_minutes(rollup, flows) {
        let hour = minute.time - minute.time % 3600;
        if !closed.contains(&hour) {
            continue;
        }
        let row = hours.entry((hour, minute.key.clone())).or_insert(HourRow {
            time: hour,
            key: minute.key.clone(),
            scaled_bytes: 0,
            scaled_packets: 0,
            records: 0,
            minutes: 0,
            peak_bytes_per_second: 0.0,
            peak_packets_per_second: 0.0,
        });
        row.scaled_bytes += minute.scaled_bytes;
        row.scaled_packets += minute.scaled_packets;
        row.records += minute.records;
        row.minutes += 1;
        row.peak_bytes_per_second = row.peak_bytes_per_second.max(minute.scaled_bytes as f64 / 60.0);
        row.peak_packets_per_second = row
            .peak_packets_per_second
            .max(minute.scaled_packets as f64 / 60.0);
    }
    hours.into_values().collect()
}

/// The minute table of `rollup`, summed per key as every reader must.
async fn read_minutes(client: &Client, rollup: &str, table: &str) -> Vec<MinuteRow> {
    let key = key_sql(rollup);
    client
        .query_raw(&format!(
            "SELECT minute AS time, {key} AS key, sum(scaled_bytes), sum(scaled_packets), sum(records) \
             FROM egress.{table} GROUP BY time, key ORDER BY time, key"
        ))
        .fetch_all()
        .await
        .unwrap()
}

/// The hour table of `rollup` as stored (`FINAL`, or every row when `final_rows` is false).
async fn read_hours(client: &Client, rollup: &str, table: &str, final_rows: bool) -> Vec<HourRow> {
    let key = key_sql(rollup);
    let modifier = if final_rows { "FINAL" } else { "" };
    client
        .query_raw(&format!(
            "SELECT hour AS time, {key} AS key, scaled_bytes, scaled_packets, records, minutes, \
             peak_bytes_per_second, peak_packets_per_second FROM egress.{table} {modifier} ORDER BY time, key"
        ))
        .fetch_all()
        .await
        .unwrap()
}

async fn row_count(client: &Client, table: &str) -> u64 {
    client
        .query_raw(&format!("SELECT count() FROM egress.{table}"))
        .fetch_one()
        .await
        .unwrap()
}

#[derive(Debug, PartialEq, Row, Deserialize)]
struct PathRate {
    minute: u32,
    egress_path: String,
    bits_per_second: f64,
    records: u64,
}

#[tokio::test]
async fn rollups_match_raw_flows_and_hours_close_once() {
    let (_server, config, client) = rollup_server(30).await;
    let now = now();
    let current_hour = now - now % 3600;
    let closed_hour = current_hour - 2 * 3600;
    let mut rng = Lcg(7);

    // Four inserts (collector flushes) covering every minute of the closed hour, each with its
    // own sampling rate, so that each minute has several rows in the minute tables; and a few
    // minutes of the current (open) hour.
    let mut flows = Vec::new();
    for sampling_rate in [1, 100, 1000, 2048] {
        let batch = flows_batch(&mut rng, closed_hour, 0..60, sampling_rate);
        insert(&client, &batch).await;
        flows.extend(batch);
    }
    let open = flows_batch(&mut rng, current_hour, 0..2, 512);
    insert(&client, &open).await;
    flows.extend(open);
    let outbound = flows.iter().filter(|f| f.traffic_direction == OUTBOUND).count();
    eprintln!("{} flows inserted, {outbound} outbound", flows.len());

    // Minute rollups: sums per dimension equal the scaled raw volumes, before and after merges.
    for rollup in rollups() {
        let expected = expected_minutes(rollup.name, &flows);
        assert_eq!(
            read_minutes(&client, rollup.name, rollup.minute_table).await,
            expected,
            "{} before merges",
            rollup.name
        );
        let stored = row_count(&client, rollup.minute_table).await;
        exec(
            &client,
            &format!("OPTIMIZE TABLE egress.{} FINAL", rollup.minute_table),
        )
        .await;
        assert_eq!(
            read_minutes(&client, rollup.name, rollup.minute_table).await,
            expected,
            "{} after merges",
            rollup.name
        );
        let merged = row_count(&client, rollup.minute_table).await;
        assert_eq!(
            merged,
            expected.len() as u64,
            "{}: one row per key once merged",
            rollup.name
        );
        eprintln!(
            "{}: {} minute keys, {stored} rows before merging",
            rollup.name,
            expected.len()
        );
    }

    // The burst in minute 17 of the first path is that path's peak.
    let path_minutes = expected_minutes("path", &flows);
    let first_path = format!("{}|::ffff:192.0.2.1|1", PATHS[0].2);
    let busiest = path_minutes
        .iter()
        .filter(|m| m.key == first_path && m.time < current_hour)
        .max_by_key(|m| m.scaled_bytes)
        .unwrap();
    assert_eq!(busiest.time, closed_hour + 17 * 60);

    // Closing hours: the closed hour of each rollup, not the open one.
    assert_eq!(close_hours(&client, &config, now).await.unwrap(), 3);
    for rollup in rollups() {
        let expected = expected_hours(rollup.name, &flows, &[closed_hour]);
        let stored = read_hours(&client, rollup.name, rollup.hour_table, true).await;
        assert_eq!(stored, expected, "{} hour rows", rollup.name);
        if rollup.name == "path" {
            assert!(
                stored.iter().all(|h| h.minutes == 60),
                "every path has flows in every minute"
            );
            let row = stored.iter().find(|h| h.key == first_path).unwrap();
            assert_eq!(row.peak_bytes_per_second, busiest.scaled_bytes as f64 / 60.0);
            eprintln!(
                "path hour: {} bytes, mean {:.0} B/s, peak {:.0} B/s, {} records",
                row.scaled_bytes,
                row.scaled_bytes as f64 / 3600.0,
                row.peak_bytes_per_second,
                row.records
            );
        }
    }

    // Idempotent: nothing changed, nothing is written.
    let before: Vec<u64> = {
        let mut counts = Vec::new();
        for rollup in rollups() {
            counts.push(row_count(&client, rollup.hour_table).await);
        }
        counts
    };
    assert_eq!(close_hours(&client, &config, now + 60).await.unwrap(), 0);
    for (rollup, count) in rollups().iter().zip(before) {
        assert_eq!(
            row_count(&client, rollup.hour_table).await,
            count,
            "{}",
            rollup.name
        );
    }

    // Late rows for the closed hour (a spool replayed): the next run recomputes it, and the new
    // computation replaces the old one.
    let late = flows_batch(&mut rng, closed_hour, 5..6, 4096);
    insert(&client, &late).await;
    flows.extend(late);
    assert_eq!(close_hours(&client, &config, now + 120).await.unwrap(), 3);
    for rollup in rollups() {
        let expected = expected_hours(rollup.name, &flows, &[closed_hour]);
        assert_eq!(
            read_hours(&client, rollup.name, rollup.hour_table, true).await,
            expected,
            "{} after late rows",
            rollup.name
        );
        exec(
            &client,
            &format!("OPTIMIZE TABLE egress.{} FINAL", rollup.hour_table),
        )
        .await;
        assert_eq!(
            read_hours(&client, rollup.name, rollup.hour_table, false).await,
            expected,
            "{}: the newer computation survives merges",
            rollup.name
        );
    }

    // The example queries of the Rollups section of docs/schema.md run and return rows.
    let queries = rollup_example_queries(&schema_md());
    assert!(queries.len() >= 4, "{} example queries", queries.len());
    for query in queries {
        let rows: Vec<u64> = client
            .query_raw(&format!("SELECT count() FROM ({query})"))
            .fetch_all()
            .await
            .unwrap_or_else(|e| panic!("{e}\n{query}"));
        assert!(rows[0] > 0, "no rows from\n{query}");
    }

    // What a dashboard or throughput SLA runs: bit/s per path per minute over an hour, on the
    // rollup and on raw flows, give the same numbers.
    for (from, to) in [(closed_hour, closed_hour + 3600), (now - 3600, now + 60)] {
        let on_rollup: Vec<PathRate> = client
            .query(&path_minute_rates_query("egress"))
            .bind(from)
            .bind(to)
            .fetch_all()
            .await
            .unwrap();
        let on_flows: Vec<PathRate> = client
            .query(
                "SELECT toStartOfMinute(time_received) AS minute, egress_path, \
                 sum(bytes * sampling_rate) * 8 / 60 AS bits_per_second, count() AS records \
                 FROM egress.flows WHERE traffic_direction = 'outbound' \
                 AND time_received >= toDateTime(?) AND time_received < toDateTime(?) \
                 GROUP BY minute, egress_path ORDER BY minute, egress_path",
            )
            .bind(from)
            .bind(to)
            .fetch_all()
            .await
            .unwrap();
        assert!(!on_flows.is_empty());
        assert_eq!(on_rollup, on_flows, "path rates over [{from}, {to})");
    }
}

#[tokio::test]
async fn retention_drops_expired_rollup_partitions_only() {
    let (_server, config, client) = rollup_server(30).await;
    let now = now();
    let recent = now - now % 3600 - 3600;
    let minute_old = now - now % 60 - 40 * 86_400; // past the 35 days of minute tables
    let hour_old = now - now % 3600 - 420 * 86_400; // past the 400 days of hour tables
    let hour_kept = now - now % 3600 - 40 * 86_400; // within them
    for time in [recent, minute_old] {
        exec(
            &client,
            &format!("INSERT INTO egress.flows_1m_dst_as VALUES ({time}, 64500, 1000, 10, 1)"),
        )
        .await;
    }
    for time in [recent, hour_old, hour_kept] {
        exec(
            &client,
            &format!(
                "INSERT INTO egress.flows_1h_dst_as VALUES ({time}, 64500, 1000, 10, 1, 1, 16.7, 0.2, {now})"
            ),
        )
        .await;
    }
    let expected = vec![
        format!(
            "flows_1h_dst_as/{}",
            partition(&client, "toYYYYMM", hour_old).await
        ),
        format!(
            "flows_1m_dst_as/{}",
            partition(&client, "toYYYYMMDD", minute_old).await
        ),
    ];
    assert_eq!(enforce_retention(&client, &config).await.unwrap(), expected);
    assert_eq!(row_count(&client, "flows_1m_dst_as").await, 1);
    assert_eq!(row_count(&client, "flows_1h_dst_as").await, 2);
    assert!(enforce_retention(&client, &config).await.unwrap().is_empty());

    let forever = ClickHouseConfig {
        retention_days: 0,
        ..config.clone()
    };
    exec(
        &client,
        &format!("INSERT INTO egress.flows_1m_dst_as VALUES ({minute_old}, 64500, 1, 1, 1)"),
    )
    .await;
    assert!(enforce_retention(&client, &forever).await.unwrap().is_empty());
}

/// The partition id of `time` under the partition function `function` (UTC).
async fn partition(client: &Client, function: &str, time: u32) -> String {
    client
        .query_raw(&format!("SELECT toString({function}(toDateTime({time}, 'UTC')))"))
        .fetch_one()
        .await
        .unwrap()
}

/// The collector's insert (the whole `FlowRow`) still works with the views attached, rows that
/// are not egress stay out of the rollups, and applying the rollup migrations again is harmless.
#[tokio::test]
async fn collector_inserts_pass_through_the_views() {
    let (_server, config, client) = rollup_server(30).await;
    let version = connection::server_version(&client).await.unwrap();
    for migration in rollup_migrations(&version, &config) {
        for statement in &migration.statements {
            exec(&client, statement).await;
        }
    }
    let now = now();
    let mut flow = FlowRow::new(IpAddr::from([192, 0, 2, 1]), now, FlowType::Ipfix);
    flow.sampling_rate = 1000;
    flow.bytes = 1500;
    let mut insert = client.insert::<FlowRow>(FLOWS_TABLE).await.unwrap();
    insert.write(&flow).await.unwrap();
    insert.end().await.unwrap();
    assert_eq!(row_count(&client, FLOWS_TABLE).await, 1);
    for rollup in rollups() {
        assert_eq!(
            row_count(&client, rollup.minute_table).await,
            0,
            "{}",
            rollup.name
        );
    }
    let views: u64 = client
        .query_raw(
            "SELECT count() FROM system.tables WHERE database = 'egress' AND engine = 'MaterializedView'",
        )
        .fetch_one()
        .await
        .unwrap();
    // Three volume rollups, and the latency rollup's two (probes, flows).
    assert_eq!(views, 5);
}

fn schema_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced `sql` blocks of the "Rollups" section of `docs/schema.md`.
fn rollup_example_queries(markdown: &str) -> Vec<String> {
    let section = markdown
        .split("\n## Rollups\n")
        .nth(1)
        .expect("a Rollups section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .split("```sql")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(|query| query.trim().to_owned())
        .collect()
}

/// The `### Rollup table `name`` sections of `docs/schema.md`: rows
/// `| `column` | `current type` | `old type` | `codec` | meaning |` in order.
fn documented_rollup_columns(markdown: &str) -> BTreeMap<String, Vec<[String; 5]>> {
    let mut tables = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("### Rollup table ") {
            current = Some(heading.trim().trim_matches('`').to_owned());
            continue;
        }
        if line.starts_with('#') {
            current = None;
            continue;
        }
        let (Some(table), Some(row)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<String> = format!("`{row}")
            .trim_end()
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .collect();
        let cells: [String; 5] = cells.try_into().unwrap_or_else(|c| panic!("{table}: row {c:?}"));
        tables.entry(table.clone()).or_insert_with(Vec::new).push(cells);
    }
    tables
}

#[test]
fn every_rollup_column_is_documented() {
    let documented = documented_rollup_columns(&schema_md());
    let mut expected = BTreeMap::new();
    for rollup in rollups() {
        for granularity in [Granularity::Minute, Granularity::Hour] {
            let rows: Vec<[String; 5]> = rollup
                .columns(granularity)
                .iter()
                .map(|c| {
                    [
                        c.name.to_owned(),
                        c.data_type(&CURRENT).to_owned(),
                        c.data_type(&OLD).to_owned(),
                        "-".to_owned(),
                        c.comment.to_owned(),
                    ]
                })
                .collect();
            expected.insert(rollup.table(granularity).to_owned(), rows);
        }
    }
    assert_eq!(
        documented, expected,
        "docs/schema.md rollup tables differ from the DDL"
    );
}

/// Where the DDL dump goes: `$EGRESS_DDL_DIR`, else `<target dir>/egress-ddl`.
fn ddl_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EGRESS_DDL_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").join("egress-ddl")
}

/// Writes `rollups-current.sql`, `rollups-old.sql` (the rollup migrations) and
/// `rollups-close.sql` (the hour-closing statements, one per line, binds `?` = closed_at, from,
/// to) for `tests/chdb/check_rollups.py`, plus the column reference for `docs/schema.md`.
#[test]
fn dump_rollup_ddl() {
    let dir = ddl_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let config = ClickHouseConfig::default();
    for (file, version) in [("rollups-current.sql", CURRENT), ("rollups-old.sql", OLD)] {
        let mut text =
            format!("-- Egress rollup DDL for ClickHouse {version} (database `egress`, 30 days)\n");
        for migration in rollup_migrations(&version, &config) {
            text.push_str(&format!("-- migration {}\n", migration.label()));
            for statement in migration.statements {
                text.push_str(&statement);
                text.push_str(";\n\n");
            }
        }
        assert_eq!(text.matches("CREATE MATERIALIZED VIEW").count(), 3);
        std::fs::write(dir.join(file), text).unwrap();
    }
    let close: Vec<String> = rollups()
        .iter()
        .map(|r| r.close_statement("egress").replace('\n', " "))
        .collect();
    std::fs::write(dir.join("rollups-close.sql"), close.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("rollups-rates.sql"),
        path_minute_rates_query("egress") + "\n",
    )
    .unwrap();
    let mut reference = String::new();
    for rollup in rollups() {
        for granularity in [Granularity::Minute, Granularity::Hour] {
            reference.push_str(&format!("### Rollup table `{}`\n\n", rollup.table(granularity)));
            reference.push_str("| Column | Type (current) | Type (18.x) | Codec (current) | Meaning |\n");
            reference.push_str("|---|---|---|---|---|\n");
            for c in rollup.columns(granularity) {
                reference.push_str(&format!(
                    "| `{}` | `{}` | `{}` | `-` | {} |\n",
                    c.name,
                    c.data_type(&CURRENT),
                    c.data_type(&OLD),
                    c.comment
                ));
            }
            reference.push('\n');
        }
    }
    std::fs::write(dir.join("rollup-columns.md"), reference).unwrap();
}
