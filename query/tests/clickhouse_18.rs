//! The storage contract against a real ClickHouse 18.16 (Debian's `clickhouse-server`, started by
//! the test kit): migrations apply and are idempotent, the tables' columns are the row structs'
//! fields in order with the documented types and comments, rows round-trip unchanged, retention
//! drops expired day partitions only, and every example query of `docs/schema.md` runs.
//! (Current ClickHouse is checked by `tests/chdb/check_schema.py`.)

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use clickhouse::{Client, Row, RowOwned, RowRead, RowWrite};
use egress_query::connection::{self, ClickHouseConfig, ServerVersion};
use egress_query::migrate::{migrate, tables};
use egress_query::retention;
use egress_query::schema::{
    to_v6, AlertDeliveryRow, DeliveryOutcome, Direction, ExporterStatsRow, FlowRow, FlowType,
    InterfaceCounterRow, InterfaceKind, InterfaceRole, RttSource, SamplingSource, SlaResultRow,
    TrafficDirection, Verdict, ALERT_DELIVERIES_TABLE, EXPORTER_STATS_TABLE, FLOWS_TABLE,
    INTERFACE_COUNTERS_TABLE, SLA_RESULTS_TABLE,
};
use egress_testkit::clickhouse::ClickHouseServer;
use serde::Deserialize;

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

/// A started server, its config (database `egress`) and a migrated schema.
async fn migrated_server(retention_days: u32) -> (ClickHouseServer, ClickHouseConfig, Client, ServerVersion) {
    let server = ClickHouseServer::start().expect("clickhouse-server starts");
    let config = ClickHouseConfig {
        url: server.http_url(),
        retention_days,
        ..ClickHouseConfig::default()
    };
    let client = connection::client(&config).unwrap();
    let version = connection::server_version(&client).await.unwrap();
    migrate(&client, &config, &version).await.unwrap();
    (server, config, client, version)
}

async fn insert<T: RowOwned + RowWrite>(client: &Client, table: &str, rows: &[T]) {
    let mut insert = client.insert::<T>(table).await.unwrap();
    for row in rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
}

async fn read_back<T: RowOwned + RowRead>(client: &Client, table: &str) -> Vec<T> {
    client
        .query_raw(&format!("SELECT * FROM {table}"))
        .fetch_all::<T>()
        .await
        .unwrap()
}

fn sample_flow(time_received: u32) -> FlowRow {
    let mut flow = FlowRow::new(IpAddr::from([192, 0, 2, 1]), time_received, FlowType::Ipfix);
    flow.time_flow_start = time_received - 30;
    flow.observation_domain = 7;
    flow.sampling_rate = 1000;
    flow.sampling_source = SamplingSource::Options;
    flow.src_addr = to_v6(IpAddr::from([10, 0, 0, 1]));
    flow.dst_addr = "2001:db8::53".parse().unwrap();
    flow.src_port = 51000;
    flow.dst_port = 443;
    flow.proto = 6;
    flow.bytes = 123_456;
    flow.packets = 99;
    flow.in_if = 3;
    flow.out_if = 12;
    flow.src_as = 64500;
    flow.dst_as = 64501;
    flow.src_mask = 24;
    flow.dst_mask = 48;
    flow.next_hop = to_v6(IpAddr::from([10, 0, 0, 254]));
    flow.tcp_flags = 0x1b;
    flow.tos = 0xb8;
    flow.vlan = 100;
    flow.etype = 0x86dd;
    flow.direction = Direction::Egress;
    flow.traffic_direction = TrafficDirection::Outbound;
    flow.egress_path = "edge1 / et-0/0/12 (Transit A)".into();
    flow.exporter_name = "edge1".into();
    flow.exporter_site = "fra1".into();
    flow.in_if_name = "ae0".into();
    flow.out_if_name = "et-0/0/12".into();
    flow.in_if_role = InterfaceRole::Internal;
    flow.out_if_role = InterfaceRole::External;
    flow.in_if_kind = InterfaceKind::None;
    flow.out_if_kind = InterfaceKind::Transit;
    flow.in_if_provider = Default::default();
    flow.out_if_provider = "Transit A".into();
    flow.src_internal = 1;
    flow.dst_internal = 0;
    flow.dst_cloud = "aws/S3/eu-west-1".into();
    // One latency known, one unknown (NULL), one measured as zero: all three must survive.
    flow.rtt_client_us = Some(12_000);
    flow.rtt_server_us = None;
    flow.rtt_app_us = Some(0);
    flow.rtt_source = RttSource::Nprobe;
    flow
}

fn sample_sla_result(time: u32) -> SlaResultRow {
    SlaResultRow {
        time,
        sla: "transit-utilisation".into(),
        kind: "throughput".into(),
        subject: "edge1 / et-0/0/1 (Transit A)".into(),
        labels_keys: vec!["path".into(), "exporter".into()],
        labels_values: vec!["edge1 / et-0/0/1 (Transit A)".into(), "edge1".into()],
        value: 0.8125,
        threshold: 0.8,
        verdict: Verdict::Breach,
        samples: 1234,
        details: r#"{"window_seconds":300}"#.into(),
    }
}

fn sample_delivery(time: u32) -> AlertDeliveryRow {
    AlertDeliveryRow {
        time,
        receiver: "oncall".into(),
        kind: "webhook".into(),
        fingerprint: "c0ffee0123456789".into(),
        alertname: "transit-utilisation".into(),
        status: "firing".into(),
        attempt: 2,
        http_status: 503,
        outcome: DeliveryOutcome::Retrying,
        error: "503 Service Unavailable".into(),
    }
}

fn sample_stats(minute: u32) -> ExporterStatsRow {
    ExporterStatsRow {
        minute,
        exporter_address: to_v6(IpAddr::from([192, 0, 2, 1])),
        observation_domain: 7,
        flow_type: FlowType::Ipfix,
        datagrams: 60,
        records: 1800,
        records_lost: 12,
        decode_error_kinds: vec!["missing_template".into(), "truncated".into()],
        decode_error_counts: vec![3, 1],
        templates_known: 4,
    }
}

fn sample_counters(time_received: u32) -> InterfaceCounterRow {
    InterfaceCounterRow {
        time_received,
        exporter_address: to_v6(IpAddr::from([192, 0, 2, 9])),
        agent_address: Ipv6Addr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9]),
        sub_agent_id: 1,
        sequence_number: 77,
        if_index: 12,
        if_type: 6,
        if_speed: 10_000_000_000,
        if_direction: 1,
        if_status: 3,
        in_octets: 1 << 40,
        in_ucast_pkts: 1_000_000,
        in_multicast_pkts: 10,
        in_broadcast_pkts: 5,
        in_discards: 1,
        in_errors: 2,
        in_unknown_protos: 3,
        out_octets: (1 << 41) + 7,
        out_ucast_pkts: 2_000_000,
        out_multicast_pkts: 20,
        out_broadcast_pkts: 6,
        out_discards: 4,
        out_errors: 5,
        promiscuous_mode: 0,
    }
}

#[derive(Debug, Row, Deserialize)]
struct SystemColumn {
    table: String,
    name: String,
    r#type: String,
    comment: String,
}

#[tokio::test]
async fn migrations_apply_once_and_tables_match_the_row_structs() {
    let server = ClickHouseServer::start().expect("clickhouse-server starts");
    let config = ClickHouseConfig {
        url: server.http_url(),
        ..ClickHouseConfig::default()
    };
    let client = connection::client(&config).unwrap();
    let version = connection::server_version(&client).await.unwrap();
    assert_eq!(version.major, 18, "these tests are for Debian's ClickHouse 18.16");
    assert!(!version.has_ttl() && !version.has_ipv6_type());

    let first = migrate(&client, &config, &version).await.unwrap();
    assert_eq!(
        first.applied,
        [
            "001_create_database",
            "002_create_flows",
            "003_create_exporter_stats",
            "004_create_interface_counters",
            "005_add_flow_classification",
            "006_create_sla_results",
            "007_create_alert_deliveries",
            "008_add_flow_rtt",
            "100_create_rollups_path",
            "101_create_rollups_src_host",
            "102_create_rollups_dst_as",
            "200_create_probes",
            "201_create_latency_rollup",
            // Empty on 18.16 (no insert deduplication), recorded all the same.
            "300_deduplicate_flow_inserts",
        ]
    );
    assert!(first.present.is_empty());
    let second = migrate(&client, &config, &version).await.unwrap();
    assert!(
        second.applied.is_empty(),
        "second run applied {:?}",
        second.applied
    );
    assert_eq!(second.present.len(), 14);
    assert_eq!(
        server
            .query_scalar("SELECT count() FROM egress.schema_migrations")
            .unwrap(),
        "14"
    );

    // Columns: the row structs' fields in order, the DDL's types and comments. (18.16's
    // system.columns has no `position`; it lists each table's columns in order.)
    let columns: Vec<SystemColumn> = client
        .query_raw(
            "SELECT table, name, type, comment FROM system.columns WHERE database = 'egress' \
             AND table != 'schema_migrations'",
        )
        .fetch_all()
        .await
        .unwrap_or_else(|_| panic!("system.columns:\n{}", server.log_tail()));
    let fields: [(&str, &[&str]); 5] = [
        (FLOWS_TABLE, FlowRow::COLUMN_NAMES),
        (EXPORTER_STATS_TABLE, ExporterStatsRow::COLUMN_NAMES),
        (INTERFACE_COUNTERS_TABLE, InterfaceCounterRow::COLUMN_NAMES),
        (SLA_RESULTS_TABLE, SlaResultRow::COLUMN_NAMES),
        (ALERT_DELIVERIES_TABLE, AlertDeliveryRow::COLUMN_NAMES),
    ];
    for (table, field_names) in fields {
        let actual: Vec<&SystemColumn> = columns.iter().filter(|c| c.table == table).collect();
        let names: Vec<&str> = actual.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, field_names, "{table}: columns vs row struct fields");
        let definition = tables().into_iter().find(|t| t.name == table).unwrap();
        for (column, expected) in actual.iter().zip(&definition.columns) {
            assert_eq!(
                column.r#type,
                expected.data_type(&version),
                "{table}.{}",
                column.name
            );
            assert_eq!(
                column.comment, expected.comment,
                "{table}.{} comment",
                column.name
            );
        }
    }

    // Rows round-trip unchanged (positional RowBinary both ways).
    let t = now();
    let flows = vec![
        sample_flow(t),
        FlowRow::new(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), t, FlowType::Sflow5),
    ];
    insert(&client, FLOWS_TABLE, &flows).await;
    let mut back: Vec<FlowRow> = read_back(&client, FLOWS_TABLE).await;
    back.sort_by_key(|f| f.bytes);
    assert_eq!(back, [flows[1].clone(), flows[0].clone()]);
    // Unknown latency is NULL in the table, not 0: aggregates skip it.
    assert_eq!(
        server
            .query_scalar(
                "SELECT concat(toString(count(rtt_client_us)), ' ', toString(count(rtt_server_us)), ' ', \
                 toString(count(rtt_app_us)), ' ', toString(sum(rtt_client_us)), ' ', \
                 arrayStringConcat(arraySort(groupArray(toString(rtt_source))), ',')) FROM egress.flows"
            )
            .unwrap(),
        "1 0 1 12000 none,nprobe"
    );

    let stats = vec![sample_stats(t - t % 60)];
    insert(&client, EXPORTER_STATS_TABLE, &stats).await;
    assert_eq!(
        read_back::<ExporterStatsRow>(&client, EXPORTER_STATS_TABLE).await,
        stats
    );

    let counters = vec![sample_counters(t)];
    insert(&client, INTERFACE_COUNTERS_TABLE, &counters).await;
    assert_eq!(
        read_back::<InterfaceCounterRow>(&client, INTERFACE_COUNTERS_TABLE).await,
        counters
    );

    let results = vec![sample_sla_result(t)];
    insert(&client, SLA_RESULTS_TABLE, &results).await;
    assert_eq!(
        read_back::<SlaResultRow>(&client, SLA_RESULTS_TABLE).await,
        results
    );

    let deliveries = vec![sample_delivery(t)];
    insert(&client, ALERT_DELIVERIES_TABLE, &deliveries).await;
    assert_eq!(
        read_back::<AlertDeliveryRow>(&client, ALERT_DELIVERIES_TABLE).await,
        deliveries
    );

    // What an analyst sees: IPv4-mapped addresses and enum names.
    assert_eq!(
        server
            .query_scalar(
                "SELECT IPv6NumToString(exporter_address), flow_type, sampling_source, direction, \
                 traffic_direction, out_if_role, out_if_kind, egress_path \
                 FROM egress.flows WHERE bytes = 123456 FORMAT TSV"
            )
            .unwrap(),
        "::ffff:192.0.2.1\tipfix\toptions\tegress\toutbound\texternal\ttransit\tedge1 / et-0/0/12 (Transit A)"
    );
    assert_eq!(
        server
            .query_scalar("SELECT verdict FROM egress.sla_results FORMAT TSV")
            .unwrap(),
        "breach"
    );
}

/// A database made before the classification columns existed (migrations 1 to 4, the flows
/// table without them, a row in it): migrating adds the columns in row-struct order with their
/// comments, the old row reads back unclassified, and an interrupted migration 005 (columns
/// there, not recorded) is applied again without error.
#[tokio::test]
async fn classification_columns_are_added_to_an_older_flows_table() {
    let server = ClickHouseServer::start().expect("clickhouse-server starts");
    let config = ClickHouseConfig {
        url: server.http_url(),
        ..ClickHouseConfig::default()
    };
    let client = connection::client(&config).unwrap();
    let version = connection::server_version(&client).await.unwrap();
    let mut old_flows = tables().into_iter().find(|t| t.name == FLOWS_TABLE).unwrap();
    let first_added = old_flows
        .columns
        .iter()
        .position(|c| c.name == "traffic_direction")
        .unwrap();
    old_flows.columns.truncate(first_added);
    server.query_scalar("CREATE DATABASE egress").unwrap();
    server
        .query_scalar(&old_flows.create_statement(&version, &config))
        .unwrap();
    server
        .query_scalar(
            "CREATE TABLE egress.schema_migrations (version UInt32, name String, \
             applied_at DateTime('UTC')) ENGINE = MergeTree ORDER BY version",
        )
        .unwrap();
    server
        .query_scalar(
            "INSERT INTO egress.schema_migrations VALUES (1, 'create_database', now()), \
             (2, 'create_flows', now()), (3, 'create_exporter_stats', now()), \
             (4, 'create_interface_counters', now())",
        )
        .unwrap();
    let t = now();
    server
        .query_scalar(&format!(
            "INSERT INTO egress.flows (time_received, time_flow_start, time_flow_end, bytes, \
             sampling_rate) VALUES ({t}, {t}, {t}, 777, 1)"
        ))
        .unwrap();

    let report = migrate(&client, &config, &version).await.unwrap();
    assert_eq!(
        report.applied,
        [
            "005_add_flow_classification",
            "006_create_sla_results",
            "007_create_alert_deliveries",
            "008_add_flow_rtt",
            "100_create_rollups_path",
            "101_create_rollups_src_host",
            "102_create_rollups_dst_as",
            "200_create_probes",
            "201_create_latency_rollup",
            // Empty on 18.16 (no insert deduplication), recorded all the same.
            "300_deduplicate_flow_inserts",
        ]
    );
    let columns: Vec<SystemColumn> = client
        .query_raw(
            "SELECT table, name, type, comment FROM system.columns WHERE database = 'egress' \
             AND table = 'flows'",
        )
        .fetch_all()
        .await
        .unwrap();
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, FlowRow::COLUMN_NAMES);
    let definition = tables().into_iter().find(|t| t.name == FLOWS_TABLE).unwrap();
    for (column, expected) in columns.iter().zip(&definition.columns) {
        assert_eq!(column.r#type, expected.data_type(&version), "{}", column.name);
        assert_eq!(column.comment, expected.comment, "{} comment", column.name);
    }
    let old: Vec<FlowRow> = read_back(&client, FLOWS_TABLE).await;
    assert_eq!(old.len(), 1);
    assert_eq!(
        (
            old[0].bytes,
            old[0].traffic_direction,
            old[0].egress_path.as_str()
        ),
        (777, TrafficDirection::Unknown, "")
    );
    // Latency added by migration 008: an old row has none (NULL), not zero.
    assert_eq!(
        (
            old[0].rtt_client_us,
            old[0].rtt_server_us,
            old[0].rtt_app_us,
            old[0].rtt_source
        ),
        (None, None, None, RttSource::None)
    );
    insert(&client, FLOWS_TABLE, &[sample_flow(t)]).await;

    // Interrupted after the ALTERs, before the record: applied again, nothing to add.
    server
        .query_scalar("ALTER TABLE egress.schema_migrations DELETE WHERE version = 5")
        .unwrap();
    wait_for_mutations(&server).await;
    let again = migrate(&client, &config, &version).await.unwrap();
    assert_eq!(again.applied, ["005_add_flow_classification"]);
    // The same for migration 008 (latency columns).
    server
        .query_scalar("ALTER TABLE egress.schema_migrations DELETE WHERE version = 8")
        .unwrap();
    wait_for_mutations(&server).await;
    let again = migrate(&client, &config, &version).await.unwrap();
    assert_eq!(again.applied, ["008_add_flow_rtt"]);
    assert_eq!(
        server.query_scalar("SELECT count() FROM egress.flows").unwrap(),
        "2"
    );
}

/// Waits until `ALTER ... DELETE` mutations of the test database are done.
async fn wait_for_mutations(server: &ClickHouseServer) {
    for _ in 0..100 {
        let pending = server
            .query_scalar("SELECT count() FROM system.mutations WHERE database = 'egress' AND NOT is_done")
            .unwrap();
        if pending == "0" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("mutations did not finish");
}

#[tokio::test]
async fn retention_drops_expired_day_partitions_and_keeps_the_rest() {
    let (server, config, client, _) = migrated_server(7).await;
    let t = now();
    let old = t - 10 * 86_400;
    insert(&client, FLOWS_TABLE, &[sample_flow(old), sample_flow(t)]).await;
    insert(
        &client,
        EXPORTER_STATS_TABLE,
        &[sample_stats(old - old % 60), sample_stats(t - t % 60)],
    )
    .await;
    insert(&client, INTERFACE_COUNTERS_TABLE, &[sample_counters(t)]).await;

    let dropped = retention::enforce(&client, &config).await.unwrap();
    let old_day = server
        .query_scalar(&format!("SELECT toYYYYMMDD(toDateTime({old}, 'UTC'))"))
        .unwrap();
    assert_eq!(
        dropped,
        [
            format!("{EXPORTER_STATS_TABLE}/{old_day}"),
            format!("{FLOWS_TABLE}/{old_day}")
        ]
    );
    for table in [FLOWS_TABLE, EXPORTER_STATS_TABLE, INTERFACE_COUNTERS_TABLE] {
        let left = server
            .query_scalar(&format!("SELECT count() FROM egress.{table}"))
            .unwrap();
        assert_eq!(left, "1", "{table}");
    }
    assert!(
        retention::enforce(&client, &config).await.unwrap().is_empty(),
        "second run drops nothing"
    );
    let forever = ClickHouseConfig {
        retention_days: 0,
        ..config
    };
    assert!(retention::enforce(&client, &forever).await.unwrap().is_empty());
}

/// The fenced `sql` blocks of the "Example queries" section of `docs/schema.md`.
fn example_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.md");
    let text = std::fs::read_to_string(path).unwrap();
    let section = text
        .split("## Example queries")
        .nth(1)
        .expect("an Example queries section");
    section
        .split("```sql")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().trim().to_owned())
        .collect()
}

#[tokio::test]
async fn every_example_query_in_the_docs_runs() {
    let (server, _, client, _) = migrated_server(30).await;
    let t = now();
    insert(&client, FLOWS_TABLE, &[sample_flow(t - 60), sample_flow(t)]).await;
    insert(&client, EXPORTER_STATS_TABLE, &[sample_stats(t - t % 60 - 600)]).await;
    insert(
        &client,
        INTERFACE_COUNTERS_TABLE,
        &[sample_counters(t - 30), {
            let mut later = sample_counters(t);
            later.in_octets += 1_000_000;
            later
        }],
    )
    .await;
    let queries = example_queries();
    assert!(queries.len() >= 5, "only {} example queries", queries.len());
    for query in &queries {
        let result = server
            .query_scalar(&format!("{query}\nFORMAT TSV"))
            .unwrap_or_else(|e| panic!("example query failed on 18.16: {e}\n{query}"));
        assert!(
            !result.is_empty(),
            "example query returned no rows on the test data:\n{query}"
        );
    }
}

#[tokio::test]
async fn server_stops_and_restarts_on_the_same_port_and_data() {
    let (mut server, config, client, _) = migrated_server(30).await;
    insert(&client, FLOWS_TABLE, &[sample_flow(now())]).await;
    server.stop().unwrap();
    assert!(!server.is_running());
    let error = connection::server_version(&client).await.unwrap_err();
    assert!(
        matches!(error, connection::ConnectionError::Query { .. }),
        "{error}"
    );
    server.restart().unwrap();
    assert_eq!(
        server.query_scalar("SELECT count() FROM egress.flows").unwrap(),
        "1"
    );
    let version = connection::server_version(&client).await.unwrap();
    let report = migrate(&client, &config, &version).await.unwrap();
    assert!(report.applied.is_empty(), "{:?}", report.applied);
}
