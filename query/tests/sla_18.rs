//! The SLA engine against a real ClickHouse 18.16: synthetic flows and exporter statistics go
//! in, every kind is evaluated, and the verdicts are checked — utilisation above the limit,
//! a dead path, a silent exporter (exporter-health breach, throughput no data, never ok),
//! exfiltration by absolute limit and by a 14-day baseline, allow-listed traffic, too few
//! samples, and burn rates. Also dumps every kind's SQL with literal values for
//! `tests/chdb/check_sla_sql.py` (current ClickHouse).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clickhouse::{Client, Row, RowOwned, RowWrite};
use egress_query::connection::{self, ClickHouseConfig};
use egress_query::migrate::migrate;
use egress_query::schema::{
    to_v6, ExporterStatsRow, FlowType, SlaResultRow, EXPORTER_STATS_TABLE, FLOWS_TABLE,
};
use egress_query::sla::throughput::{month_start, p95_report};
use egress_query::sla::{
    evaluate_all, write_results, AllowList, BaselineConfig, BulkBy, BulkConfig, EvalContext,
    ExfiltrationConfig, ExporterHealthConfig, ExporterRef, GoodName, KindName, ObjectiveConfig, PathCapacity,
    Severity, SlaConfig, SlaResult, SlaSpec, ThroughputConfig, Verdict, RESERVED_LABELS,
};
use egress_testkit::clickhouse::ClickHouseServer;
use serde::Serialize;

const EDGE1: [u8; 4] = [192, 0, 2, 1];
const EDGE2: [u8; 4] = [192, 0, 2, 2];
const EDGE3: [u8; 4] = [192, 0, 2, 3];
const EDGE4: [u8; 4] = [192, 0, 2, 4];
const GBPS: u64 = 1_000_000_000;

/// The `flows` columns the SLA queries read; the rest take their defaults.
#[derive(Debug, Clone, Row, Serialize)]
struct Flow {
    time_received: u32,
    exporter_address: Ipv6Addr,
    sampling_rate: u64,
    src_addr: Ipv6Addr,
    dst_addr: Ipv6Addr,
    bytes: u64,
    packets: u64,
    out_if: u32,
    dst_as: u32,
    /// Enum8: 1 outbound, 2 inbound.
    traffic_direction: i8,
    src_internal: u8,
    dst_internal: u8,
    dst_cloud: String,
}

fn v6(addr: [u8; 4]) -> Ipv6Addr {
    to_v6(IpAddr::from(addr))
}

fn flow(time: u32, exporter: [u8; 4], out_if: u32, bytes: u64) -> Flow {
    Flow {
        time_received: time,
        exporter_address: v6(exporter),
        sampling_rate: 1000,
        src_addr: v6([10, 0, 0, 1]),
        dst_addr: v6([203, 0, 113, 7]),
        bytes,
        packets: 1,
        out_if,
        dst_as: 64501,
        traffic_direction: 1,
        src_internal: 1,
        dst_internal: 0,
        dst_cloud: String::new(),
    }
}

fn exfil(time: u32, src: [u8; 4], dst: [u8; 4], dst_as: u32, bytes: u64) -> Flow {
    Flow {
        src_addr: v6(src),
        dst_addr: v6(dst),
        dst_as,
        // Exfiltration flows leave through an interface no throughput SLA watches.
        ..flow(time, EDGE4, 99, bytes)
    }
}

fn stats(minute: u32, exporter: [u8; 4], records: u64, records_lost: u64) -> ExporterStatsRow {
    ExporterStatsRow {
        minute,
        exporter_address: v6(exporter),
        observation_domain: 0,
        flow_type: FlowType::Ipfix,
        datagrams: 10,
        records,
        records_lost,
        decode_error_kinds: Vec::new(),
        decode_error_counts: Vec::new(),
        templates_known: 1,
    }
}

async fn insert<T: RowOwned + RowWrite>(client: &Client, table: &str, rows: &[T]) {
    let mut insert = client.insert::<T>(table).await.unwrap();
    for row in rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
}

fn path(label: &str, exporter: [u8; 4], name: &str, if_index: u32) -> PathCapacity {
    PathCapacity {
        label: label.to_owned(),
        exporter: IpAddr::from(exporter),
        exporter_name: name.to_owned(),
        if_index,
        capacity_bps: GBPS,
    }
}

const PATH_A: &str = "edge1 / et-0/0/1 (Transit A)";
const PATH_B: &str = "edge1 / et-0/0/2 (Transit B)";
const PATH_DEAD: &str = "edge1 / et-0/0/3 (Transit C)";
const PATH_FEW: &str = "edge1 / et-0/0/4 (Transit D)";
const PATH_SILENT: &str = "edge2 / et-0/0/1 (Peer)";

fn context(now: u32) -> EvalContext {
    EvalContext {
        now,
        database: "egress".to_owned(),
        paths: vec![
            path(PATH_A, EDGE1, "edge1", 1),
            path(PATH_B, EDGE1, "edge1", 2),
            path(PATH_DEAD, EDGE1, "edge1", 3),
            path(PATH_FEW, EDGE1, "edge1", 4),
            path(PATH_SILENT, EDGE2, "edge2", 1),
        ],
        exporters: vec![
            ExporterRef {
                address: IpAddr::from(EDGE1),
                name: "edge1".into(),
            },
            ExporterRef {
                address: IpAddr::from(EDGE2),
                name: "edge2".into(),
            },
        ],
        query_timeout: Duration::from_secs(30),
    }
}

fn sla(name: &str, kind: KindName) -> SlaConfig {
    SlaConfig {
        name: name.to_owned(),
        kind,
        window_seconds: 300,
        for_seconds: 0,
        keep_firing_for_seconds: 0,
        severity: Severity::Critical,
        labels: BTreeMap::from([("team".to_owned(), "neteng".to_owned())]),
        throughput: None,
        exfiltration: None,
        exporter_health: None,
        objective: None,
        latency: None,
    }
}

fn slas() -> Vec<SlaConfig> {
    let mut utilisation = sla("utilisation", KindName::Throughput);
    utilisation.throughput = Some(ThroughputConfig::default());
    let mut floor = sla("floor", KindName::Throughput);
    floor.throughput = Some(ThroughputConfig {
        min_bps: 1_000_000,
        ..ThroughputConfig::default()
    });
    let mut exfiltration = sla("exfil", KindName::Exfiltration);
    exfiltration.exfiltration = Some(ExfiltrationConfig {
        limit_bytes: GBPS,
        bulk: Some(BulkConfig {
            by: BulkBy::DstAs,
            limit_bytes: 5 * GBPS,
        }),
        allow: AllowList {
            cidrs: vec!["198.51.100.0/24".into()],
            asns: vec![64999],
            clouds: vec!["aws".into()],
            hosts: vec!["10.0.9.0/24".into()],
            hours_utc: None,
        },
        ..ExfiltrationConfig::default()
    });
    let mut baseline = sla("exfil-baseline", KindName::Exfiltration);
    baseline.exfiltration = Some(ExfiltrationConfig {
        baseline: Some(BaselineConfig {
            days: 14,
            k: 3.0,
            min_bytes: 1_000_000,
        }),
        ..ExfiltrationConfig::default()
    });
    let mut night = sla("exfil-all-day-allowed", KindName::Exfiltration);
    night.exfiltration = Some(ExfiltrationConfig {
        limit_bytes: GBPS,
        allow: AllowList {
            hours_utc: Some("0-24".into()),
            ..AllowList::default()
        },
        ..ExfiltrationConfig::default()
    });
    let mut health = sla("exporters", KindName::ExporterHealth);
    health.exporter_health = Some(ExporterHealthConfig::default());
    let objective = |name: &str, target: f64| {
        let mut slo = sla(name, KindName::Objective);
        slo.objective = Some(ObjectiveConfig {
            good: GoodName::PathUtilisationBelow,
            max_utilisation: Some(0.5),
            paths: vec![PATH_A.into(), PATH_SILENT.into()],
            objective: target,
            windows: vec![
                egress_query::sla::BurnRateWindow {
                    long_seconds: 3600,
                    short_seconds: 300,
                    factor: 14.4,
                },
                egress_query::sla::BurnRateWindow {
                    long_seconds: 21600,
                    short_seconds: 1800,
                    factor: 6.0,
                },
            ],
            min_events: 3,
        });
        slo
    };
    vec![
        utilisation,
        floor,
        exfiltration,
        baseline,
        night,
        health,
        objective("slo-99", 0.99),
        objective("slo-999", 0.999),
    ]
}

/// Flows and statistics for every scenario, relative to `now`.
fn scenario(now: u32) -> (Vec<Flow>, Vec<ExporterStatsRow>) {
    let mut flows = Vec::new();
    // Path A: 20 records, 32 GB scaled in the window: 853 Mbit/s on 1 Gbit/s.
    for i in 0..20 {
        flows.push(flow(now - 290 + i * 14, EDGE1, 1, 1_600_000));
    }
    // Path B: 20 small records (2 GB: 53 Mbit/s) plus a tiny record every minute for 2 hours,
    // which keeps edge1 present in every minute (objective events).
    for i in 0..20 {
        flows.push(flow(now - 290 + i * 14, EDGE1, 2, 100_000));
    }
    for minute in 1..=120 {
        flows.push(flow(now - minute * 60, EDGE1, 2, 10));
    }
    // Path D: 3 large records only: too few samples.
    for i in 0..3 {
        flows.push(flow(now - 200 + i * 10, EDGE1, 4, 1_000_000));
    }
    // Path C (dead) and edge2 (silent): nothing.

    // Exfiltration, window.
    for i in 0..12 {
        let t = now - 280 + i * 20;
        // 10.0.0.5: 12 GB, mostly to 203.0.113.7 in AS64501.
        flows.push(exfil(t, [10, 0, 0, 5], [203, 0, 113, 7], 64501, 900_000));
        flows.push(exfil(t, [10, 0, 0, 5], [203, 0, 113, 8], 64502, 100_000));
        // 10.0.0.6: 12 MB outbound; its inbound and internal traffic does not count.
        flows.push(exfil(t, [10, 0, 0, 6], [203, 0, 113, 9], 64501, 1_000));
        flows.push(Flow {
            traffic_direction: 2,
            ..exfil(t, [10, 0, 0, 6], [203, 0, 113, 9], 64501, 9_000_000)
        });
        // 10.0.0.7: large to allow-listed destinations (prefix, AS, cloud), small elsewhere.
        flows.push(exfil(t, [10, 0, 0, 7], [198, 51, 100, 20], 64510, 5_000_000));
        flows.push(exfil(t, [10, 0, 0, 7], [192, 0, 2, 200], 64999, 5_000_000));
        flows.push(Flow {
            dst_cloud: "aws/S3/eu-west-1".into(),
            ..exfil(t, [10, 0, 0, 7], [52, 95, 0, 1], 16509, 5_000_000)
        });
        flows.push(exfil(t, [10, 0, 0, 7], [203, 0, 113, 10], 64501, 1_000));
        // 10.0.9.1: allow-listed source.
        flows.push(exfil(t, [10, 0, 9, 1], [203, 0, 113, 11], 64501, 5_000_000));
    }
    // 10.0.0.9: 2 records, 4 GB: too few samples.
    for i in 0..2 {
        flows.push(exfil(
            now - 100 + i,
            [10, 0, 0, 9],
            [203, 0, 113, 12],
            64501,
            2_000_000,
        ));
    }

    // Baseline: 14 days of hourly history for 10.0.1.1 and 10.0.1.2 (100 MB an hour, i.e.
    // 8.3 MB per 5 minutes), then a window in which 10.0.1.1 sends 2 GB and 10.0.1.2 6 MB.
    let last = now - 1;
    let hour = last - last % 3600;
    for k in 1..=336u32 {
        let t = hour - k * 3600 + 1800;
        flows.push(exfil(t, [10, 0, 1, 1], [203, 0, 113, 20], 64520, 100_000));
        flows.push(exfil(t, [10, 0, 1, 2], [203, 0, 113, 21], 64520, 100_000));
    }
    for i in 0..20 {
        let t = now - 280 + i * 10;
        flows.push(exfil(t, [10, 0, 1, 1], [203, 0, 113, 20], 64520, 100_000));
        flows.push(exfil(t, [10, 0, 1, 2], [203, 0, 113, 21], 64520, 300));
    }

    // Exporter statistics: edge1 fine, edge3 last seen two hours ago, edge4 losing 5 %.
    let mut rows = Vec::new();
    let minute = now - now % 60;
    for m in 1..=6 {
        rows.push(stats(minute - m * 60, EDGE1, 1_000, 0));
        rows.push(stats(minute - m * 60, EDGE4, 950, 50));
    }
    rows.push(stats(minute - 7200, EDGE3, 1_000, 0));
    (flows, rows)
}

fn find<'a>(results: &'a [SlaResult], sla: &str, subject: &str) -> &'a SlaResult {
    results
        .iter()
        .find(|r| r.sla == sla && r.subject == subject)
        .unwrap_or_else(|| {
            let subjects: Vec<_> = results
                .iter()
                .filter(|r| r.sla == sla)
                .map(|r| &r.subject)
                .collect();
            panic!("no result for {sla} / {subject}; have {subjects:?}")
        })
}

fn find_labelled<'a>(results: &'a [SlaResult], sla: &str, subject: &str, check: &str) -> &'a SlaResult {
    results
        .iter()
        .find(|r| {
            r.sla == sla && r.subject == subject && r.labels.get("check").map(String::as_str) == Some(check)
        })
        .unwrap_or_else(|| panic!("no {check} result for {sla} / {subject}"))
}

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

#[tokio::test]
async fn every_kind_gives_the_expected_verdicts_on_clickhouse_18() {
    let server = ClickHouseServer::start().expect("clickhouse-server starts");
    let config = ClickHouseConfig {
        url: server.http_url(),
        retention_days: 0,
        ..ClickHouseConfig::default()
    };
    let client = connection::client(&config).unwrap();
    let version = connection::server_version(&client).await.unwrap();
    migrate(&client, &config, &version).await.unwrap();

    // Away from a minute boundary so that the minute arithmetic below is unambiguous.
    let now = now() / 60 * 60 + 30;
    let (flows, stats_rows) = scenario(now);
    insert(&client, FLOWS_TABLE, &flows).await;
    insert(&client, EXPORTER_STATS_TABLE, &stats_rows).await;

    let ctx = context(now);
    let slas = slas();
    let results = evaluate_all(&client, &slas, &ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail()));
    // evaluate_all skips failing SLAs with a warning; here every SLA must have produced.
    for sla in &slas {
        let direct = SlaSpec::of(sla).unwrap().evaluate(&client, sla, &ctx).await;
        let direct = direct.unwrap_or_else(|e| panic!("{}: {e}", sla.name));
        let produced = results.iter().filter(|r| r.sla == sla.name).count();
        assert_eq!(produced, direct.len(), "{}", sla.name);
        if sla.name != "exfil-all-day-allowed" {
            assert!(produced > 0, "{} produced nothing", sla.name);
        }
    }

    // Subject labels are reserved, so that user labels can never collide with them.
    for r in &results {
        for key in r.labels.keys() {
            assert!(
                RESERVED_LABELS.contains(&key.as_str()),
                "{}: label {key} not reserved",
                r.sla
            );
        }
    }

    // Throughput.
    let a = find(&results, "utilisation", PATH_A);
    assert_eq!(a.verdict, Verdict::Breach, "{a:?}");
    assert!((a.value - 32e9 * 8.0 / 300.0 / 1e9).abs() < 1e-9, "{}", a.value);
    assert_eq!((a.samples, a.threshold), (20, 0.8));
    let b = find(&results, "utilisation", PATH_B);
    assert_eq!(b.verdict, Verdict::Ok, "{b:?}");
    assert_eq!(find(&results, "utilisation", PATH_FEW).verdict, Verdict::NoData);
    assert_eq!(find(&results, "utilisation", PATH_DEAD).verdict, Verdict::NoData);
    let silent = find(&results, "utilisation", PATH_SILENT);
    assert_eq!(
        silent.verdict,
        Verdict::NoData,
        "a silent exporter is never ok: {silent:?}"
    );
    assert_eq!(silent.details["reason"], "exporter_silent");
    let dead = find(&results, "floor", PATH_DEAD);
    assert_eq!(
        dead.verdict,
        Verdict::Breach,
        "dead path below the floor: {dead:?}"
    );
    assert_eq!(dead.details["reason"], "below_min_bps");
    assert_eq!(find(&results, "floor", PATH_SILENT).verdict, Verdict::NoData);
    assert_eq!(find(&results, "floor", PATH_B).verdict, Verdict::Ok);

    // Exporter health.
    let edge2 = find_labelled(&results, "exporters", "edge2", "silence");
    assert_eq!(edge2.verdict, Verdict::Breach, "{edge2:?}");
    let edge3 = find_labelled(&results, "exporters", "192.0.2.3", "silence");
    assert_eq!(edge3.verdict, Verdict::Breach);
    assert!(edge3.value >= 7000.0, "{}", edge3.value);
    let edge1 = find_labelled(&results, "exporters", "edge1", "silence");
    assert_eq!(edge1.verdict, Verdict::Ok, "{edge1:?}");
    assert!(edge1.value <= 60.0, "{}", edge1.value);
    assert_eq!(
        find_labelled(&results, "exporters", "edge1", "loss").verdict,
        Verdict::Ok
    );
    let loss = find_labelled(&results, "exporters", "192.0.2.4", "loss");
    assert_eq!(loss.verdict, Verdict::Breach, "{loss:?}");
    assert!((loss.value - 0.05).abs() < 1e-9);
    assert_eq!(
        find_labelled(&results, "exporters", "edge2", "loss").verdict,
        Verdict::NoData
    );

    // Exfiltration, absolute limit, allow-list and top destinations.
    let host = find(&results, "exfil", "10.0.0.5");
    assert_eq!(host.verdict, Verdict::Breach, "{host:?}");
    assert_eq!(host.value, 12e9);
    let top = host.details["top_destinations"].as_array().unwrap();
    assert_eq!(top[0]["address"], "203.0.113.7");
    assert_eq!(top[0]["as"], 64501);
    assert_eq!(top[0]["bytes"], 10_800_000_000u64);
    assert_eq!(top.len(), 2);
    let sample = host.alert_sample(&slas[2]);
    assert_eq!(sample.breaching, Some(true));
    assert_eq!(sample.labels["alertname"], "exfil");
    assert_eq!(sample.labels["host"], "10.0.0.5");
    assert_eq!(sample.labels["team"], "neteng");
    assert_eq!(sample.labels["sla_kind"], "exfiltration");
    assert_eq!(
        sample.annotations["summary"],
        "10.0.0.5 sent 12.0 GB to non-internal destinations in 5m (limit 1.0 GB); \
         top: 203.0.113.7 (AS64501) 10.8 GB, 203.0.113.8 (AS64502) 1.2 GB"
    );
    assert_eq!(find(&results, "exfil", "10.0.0.6").verdict, Verdict::Ok);
    assert_eq!(
        find(&results, "exfil", "10.0.0.6").value,
        12e6,
        "inbound not counted"
    );
    let allowed = find(&results, "exfil", "10.0.0.7");
    assert_eq!(
        allowed.verdict,
        Verdict::Ok,
        "allow-listed destinations: {allowed:?}"
    );
    assert_eq!(allowed.value, 12e6);
    assert!(
        results
            .iter()
            .all(|r| r.sla != "exfil" || !r.subject.starts_with("10.0.9.1")),
        "allow-listed source"
    );
    let few = find(&results, "exfil", "10.0.0.9");
    assert_eq!(few.verdict, Verdict::NoData);
    assert_eq!(few.alert_sample(&slas[2]).breaching, None);
    let bulk = find(&results, "exfil", "10.0.0.5 → AS64501");
    assert_eq!(bulk.verdict, Verdict::Breach, "{bulk:?}");
    assert_eq!(find(&results, "exfil", "10.0.0.5 → AS64502").verdict, Verdict::Ok);
    assert!(
        results.iter().all(|r| r.sla != "exfil-all-day-allowed"),
        "the hour window 0-24 allows everything"
    );

    // Exfiltration, baseline.
    let surge = find(&results, "exfil-baseline", "10.0.1.1");
    assert_eq!(surge.verdict, Verdict::Breach, "{surge:?}");
    assert_eq!(surge.details["baseline"]["weeks"], 2);
    let median = surge.details["baseline"]["median"].as_f64().unwrap();
    assert!((median - 1e8 * 300.0 / 3600.0).abs() < 1.0, "{median}");
    assert_eq!(surge.details["reason"], "baseline");
    let usual = find(&results, "exfil-baseline", "10.0.1.2");
    assert_eq!(usual.verdict, Verdict::Ok, "{usual:?}");

    // Objective: path A was above 50 % for the last ~5 minutes, edge1 present for 2 hours.
    let slo99 = find(&results, "slo-99", PATH_A);
    let slo999 = find(&results, "slo-999", PATH_A);
    assert_eq!(slo99.verdict, Verdict::Ok, "{slo99:?}");
    assert_eq!(slo999.verdict, Verdict::Breach, "{slo999:?}");
    // About 4 bad minutes in 2 hours. At 99 % no window burns fast enough. At 99.9 % both pairs
    // breach (1h: ~67 vs 14.4; 6h: ~33 vs 6) and the 6h/30m pair is further past its factor,
    // so it is the one reported.
    assert_eq!(slo999.threshold, 6.0, "{slo999:?}");
    assert!(slo999.value > 6.0);
    assert!(slo99.value < slo99.threshold);
    assert_eq!(find(&results, "slo-999", PATH_SILENT).verdict, Verdict::NoData);

    // Results land in `sla_results` unchanged.
    write_results(&client, "egress", &results, Duration::from_secs(30))
        .await
        .unwrap();
    let stored: Vec<SlaResultRow> = client
        .query("SELECT * FROM egress.sla_results WHERE time = toDateTime(?) ORDER BY sla, subject")
        .bind(now)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(stored.len(), results.len());
    let mut expected: Vec<SlaResultRow> = results.iter().map(SlaResult::to_row).collect();
    expected.sort_by(|a, b| (&a.sla, &a.subject).cmp(&(&b.sla, &b.subject)));
    let key = |r: &SlaResultRow| (r.sla.clone(), r.subject.clone(), r.labels_values.clone());
    let mut stored_sorted = stored.clone();
    stored_sorted.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(stored_sorted, expected);
    let verdicts = server
        .query_scalar(
            "SELECT groupArray(v) FROM (SELECT DISTINCT toString(verdict) AS v FROM egress.sla_results \
             ORDER BY v)",
        )
        .unwrap();
    assert_eq!(verdicts, "['breach','no_data','ok']");

    // p95 report of this month, from the per-minute path rollup, against flows directly.
    let (year, month) = year_month(now);
    let committed = BTreeMap::from([(PATH_A.to_owned(), 100_000_000)]);
    let report = p95_report(&client, &ctx, year, month, &committed).await.unwrap();
    let a = report.iter().find(|f| f.path == PATH_A).unwrap();
    let busiest: f64 = server
        .query_scalar(&format!(
            "SELECT max(b) * 8 / 300 FROM (SELECT intDiv(toUInt32(time_received), 300) AS k, \
             sum(bytes * sampling_rate) AS b FROM egress.flows WHERE out_if = 1 \
             AND time_received >= toDateTime({}) GROUP BY k)",
            month_start(year, month).unwrap()
        ))
        .unwrap()
        .parse()
        .unwrap();
    assert!((a.max_bps - busiest).abs() < 1.0, "{a:?} vs {busiest}");
    assert!(
        a.buckets_with_data >= 1 && a.buckets_with_data <= a.buckets,
        "{a:?}"
    );
    assert!(a.p95_bps <= a.max_bps);
    assert_eq!(a.above_commit, a.p95_bps > 1e8);
    let silent = report.iter().find(|f| f.path == PATH_SILENT).unwrap();
    assert_eq!((silent.buckets_with_data, silent.p95_bps), (0, 0.0));
}

/// (year, month) of a Unix time, UTC.
fn year_month(time: u32) -> (i32, u32) {
    let mut year = 1970;
    loop {
        let next = month_start(year + 1, 1).unwrap();
        if time < next {
            break;
        }
        year += 1;
    }
    let month = (1..=12)
        .rev()
        .find(|m| month_start(year, *m).unwrap() <= time)
        .unwrap();
    (year, month)
}

/// Where the SQL dump goes: `$EGRESS_DDL_DIR`, else `<target dir>/egress-ddl`.
fn dump_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EGRESS_DDL_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").join("egress-ddl")
}

/// Writes `sla.sql`: every query of every kind with literal values, one `;`-terminated
/// statement each, for `tests/chdb/check_sla_sql.py`. The test SLAs exercise every allow-list
/// clause and every optional check.
#[test]
fn dump_sla_sql() {
    let mut slas = slas();
    // The latency kind reads the probes table (created by migration 200 in the DDL dump).
    let mut latency = sla("latency", egress_query::sla::KindName::Latency);
    latency.latency = Some(egress_query::sla::LatencyConfig::default());
    slas.push(latency);
    // Flow RTT alone, and both sources merged with a good-event objective (the UNION ALL).
    for (name, source, objective) in [
        ("latency-flows", egress_query::sla::LatencySource::Flows, None),
        ("latency-both", egress_query::sla::LatencySource::Both, Some(0.99)),
    ] {
        let mut latency = sla(name, egress_query::sla::KindName::Latency);
        latency.latency = Some(egress_query::sla::LatencyConfig {
            source,
            objective,
            paths: vec!["transit-a".into()],
            ..egress_query::sla::LatencyConfig::default()
        });
        slas.push(latency);
    }
    if let Some(e) = slas[2].exfiltration.as_mut() {
        e.allow.hours_utc = Some("22-06".into());
        e.group = egress_query::sla::SourceGroup::Subnet24;
        e.bulk = Some(BulkConfig {
            by: BulkBy::Dst24,
            limit_bytes: 1,
        });
    }
    // The current time, so that rows the check inserts at it survive the tables' TTL.
    let now = now() / 60 * 60 + 30;
    let ctx = context(now);
    let mut text = format!("-- Egress SLA queries with literal values (database `egress`)\n-- now: {now}\n");
    let mut count = 0;
    for sla in &slas {
        for query in SlaSpec::of(sla).unwrap().queries(sla, &ctx) {
            assert_eq!(
                query.sql.matches('?').count(),
                query.params.len(),
                "{}",
                query.name
            );
            let sql = query.with_literals();
            assert!(
                !sql.contains("toStartOfInterval") && !sql.contains("toIPv6"),
                "{sql}"
            );
            text.push_str(&format!("-- {} {}\n{sql};\n\n", sla.name, query.name));
            count += 1;
        }
    }
    let p95 = egress_query::sla::throughput::bucket_volume_query("egress", now - 86_400, now, &[1, 2]);
    text.push_str(&format!("-- p95 {}\n{};\n\n", p95.name, p95.with_literals()));
    // The latency API's rollup read (`resolution=minute`), filled by migration 201's views.
    let mut rollup = egress_query::sla::SqlQuery::new(
        "latency.api.minute",
        egress_query::rollups::latency::percentiles_query("egress", " AND egress_path = ?"),
    );
    rollup.params = [60, 60, u64::from(now - 3_600), u64::from(now + 60)]
        .map(egress_query::sla::Param::U64)
        .into_iter()
        .chain([egress_query::sla::Param::Str("transit-a".into())])
        .collect();
    text.push_str(&format!(
        "-- latency-api {}\n{};\n\n",
        rollup.name,
        rollup.with_literals()
    ));
    let dir = dump_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sla.sql"), text).unwrap();
    assert!(count >= 12, "{count} queries");
}

/// Evaluation time over many flows (`EGRESS_SLA_FLOWS`, default 2 000 000, spread over the last
/// `EGRESS_SLA_SPREAD_SECONDS`, default 21 600) on ClickHouse 18.16: every SLA of [`slas`] once. Ignored by default (inserting takes a while);
/// run with `cargo test --release -p egress-query --test sla_18 -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn evaluation_time_over_many_flows() {
    let count: u32 = std::env::var("EGRESS_SLA_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let server = ClickHouseServer::start().expect("clickhouse-server starts");
    let config = ClickHouseConfig {
        url: server.http_url(),
        retention_days: 0,
        ..ClickHouseConfig::default()
    };
    let client = connection::client(&config).unwrap();
    let version = connection::server_version(&client).await.unwrap();
    migrate(&client, &config, &version).await.unwrap();
    let spread: u32 = std::env::var("EGRESS_SLA_SPREAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21_600)
        .max(1);
    let now = now() / 60 * 60 + 30;
    let started = std::time::Instant::now();
    let mut insert = client.insert::<Flow>(FLOWS_TABLE).await.unwrap();
    for i in 0..count {
        // 4 paths, 50 000 source hosts, 5 000 destinations.
        let mut row = flow(now - 1 - (i % spread), EDGE1, 1 + i % 4, 1_500);
        row.src_addr = v6([10, 1, (i / 256 % 196) as u8, (i % 256) as u8]);
        row.dst_addr = v6([203, 0, (i / 7 % 20) as u8, (i % 250) as u8]);
        row.dst_as = 64500 + i % 50;
        insert.write(&row).await.unwrap();
    }
    insert.end().await.unwrap();
    let inserted = started.elapsed();
    let slas = slas();
    let ctx = context(now);
    let started = std::time::Instant::now();
    let results = evaluate_all(&client, &slas, &ctx).await.unwrap();
    let elapsed = started.elapsed();
    println!(
        "{count} flows inserted in {inserted:?}; {} SLAs evaluated in {elapsed:?}, {} results",
        slas.len(),
        results.len()
    );
    for sla in &slas {
        let started = std::time::Instant::now();
        let n = SlaSpec::of(sla)
            .unwrap()
            .evaluate(&client, sla, &ctx)
            .await
            .unwrap()
            .len();
        println!("  {:24} {:>6} results in {:?}", sla.name, n, started.elapsed());
    }
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

/// Everything of one setup the cluster test compares: SLA results (sla, subject, check,
/// verdict, value rounded, samples), the p95 report and the closed hour rollups.
type Answers = (
    Vec<(String, String, String, String, String, u64)>,
    Vec<String>,
    String,
);

async fn answers(client: &Client, server: &ClickHouseServer, config: &ClickHouseConfig, now: u32) -> Answers {
    let ctx = context(now);
    let mut slas = slas();
    let mut latency = sla("latency", KindName::Latency);
    latency.latency = Some(egress_query::sla::LatencyConfig {
        min_samples: 1,
        ..egress_query::sla::LatencyConfig::default()
    });
    slas.push(latency);
    let mut results = Vec::new();
    for sla in &slas {
        let produced = SlaSpec::of(sla)
            .unwrap()
            .evaluate(client, sla, &ctx)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", sla.name, server.log_tail()));
        results.extend(produced);
    }
    let mut results: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r.sla.clone(),
                r.subject.clone(),
                r.labels.get("check").cloned().unwrap_or_default(),
                format!("{:?}", r.verdict),
                format!("{:.6}", r.value),
                r.samples,
            )
        })
        .collect();
    results.sort();
    let (year, month) = year_month(now);
    let committed = BTreeMap::from([(PATH_A.to_owned(), 100_000_000)]);
    let mut report: Vec<String> = p95_report(client, &ctx, year, month, &committed)
        .await
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {:.3} {:.3} {}",
                f.path, f.p95_bps, f.max_bps, f.buckets_with_data
            )
        })
        .collect();
    report.sort();
    egress_query::rollups::close_hours(client, config, now)
        .await
        .unwrap();
    let hours = server
        .query_scalar(
            "SELECT egress_path, toUInt32(hour), sum(scaled_bytes), sum(records), max(peak_bytes_per_second) \
             FROM egress.flows_1h_path FINAL GROUP BY egress_path, hour ORDER BY egress_path, hour FORMAT TSV",
        )
        .unwrap();
    (results, report, hours)
}

/// Scale-out: two ClickHouse 18.16 servers as the two shards of a cluster (no keeper, so Egress
/// runs its DDL on each node) against one server with the same rows: every table is a local
/// table under a Distributed one, the rows spread over both shards, and every SLA kind, the p95
/// report and the hour rollups give the same answers as on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_shard_cluster_gives_the_same_answers_as_one_server() {
    let single = ClickHouseServer::start().expect("clickhouse-server starts");
    let shards = ClickHouseServer::start_cluster("egress_cluster", 2).expect("two shards start");
    let single_config = ClickHouseConfig {
        url: single.http_url(),
        retention_days: 0,
        ..ClickHouseConfig::default()
    };
    let cluster_config = ClickHouseConfig {
        url: shards[0].http_url(),
        retention_days: 0,
        cluster: Some("egress_cluster".into()),
        cluster_nodes: shards.iter().map(ClickHouseServer::http_url).collect(),
        ..ClickHouseConfig::default()
    };
    let single_client = connection::client(&single_config).unwrap();
    let cluster_client = connection::client(&cluster_config).unwrap();
    let version = connection::server_version(&single_client).await.unwrap();
    migrate(&single_client, &single_config, &version).await.unwrap();
    let report = migrate(&cluster_client, &cluster_config, &version)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", shards[1].log_tail()));
    assert_eq!(
        report.applied.len(),
        egress_query::migrate::ddl(&version, &cluster_config).len()
    );

    // The layout on every node: local MergeTree tables (no keeper: not replicated) under
    // Distributed tables of the usual names; the views on the local tables.
    for shard in &shards {
        let engines = shard
            .query_scalar(
                "SELECT name, engine FROM system.tables WHERE database = 'egress' \
                 AND name IN ('flows', 'flows_local', 'flows_1h_path', 'flows_1h_path_local', 'latency_1m') \
                 ORDER BY name FORMAT TSV",
            )
            .unwrap();
        assert_eq!(
            engines,
            "flows\tDistributed\nflows_1h_path\tDistributed\nflows_1h_path_local\tReplacingMergeTree\n\
             flows_local\tMergeTree\nlatency_1m\tDistributed",
            "{}",
            shard.http_url()
        );
    }

    // The same rows into both: through the Distributed table on the cluster (the collector's
    // insert path: `flows`, synchronously forwarded to the shards).
    let now = now() / 60 * 60 + 30;
    let (flows, stats_rows) = scenario(now);
    let probes: Vec<egress_query::probes::ProbeRow> = (0..30)
        .map(|i| egress_query::probes::ProbeRow {
            time: now - 290 + i * 9,
            path: PATH_A.to_owned(),
            target: "192.0.2.9:443".to_owned(),
            method: egress_query::probes::ProbeMethod::Tcp,
            rtt_us: (i % 7 != 0).then_some(10_000 + i * 500),
            success: u8::from(i % 7 != 0),
            error: if i % 7 != 0 {
                String::new()
            } else {
                "timeout".to_owned()
            },
        })
        .collect();
    for client in [&single_client, &cluster_client] {
        insert(client, FLOWS_TABLE, &flows).await;
        insert(client, EXPORTER_STATS_TABLE, &stats_rows).await;
        insert(client, egress_query::probes::PROBES_TABLE, &probes).await;
    }
    // The rows are spread: both shards hold some, together all.
    let per_shard: Vec<u64> = shards
        .iter()
        .map(|s| {
            s.query_scalar("SELECT count() FROM egress.flows_local")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
    assert_eq!(per_shard.iter().sum::<u64>(), flows.len() as u64, "{per_shard:?}");

    let one = answers(&single_client, &single, &single_config, now).await;
    let cluster = answers(&cluster_client, &shards[0], &cluster_config, now).await;
    assert!(one.0.len() >= 20, "{:?}", one.0);
    assert_eq!(one.0, cluster.0, "SLA results differ");
    assert_eq!(one.1, cluster.1, "p95 report differs");
    assert!(!one.2.is_empty());
    assert_eq!(one.2, cluster.2, "hour rollups differ");
    eprintln!(
        "two-shard cluster: {} flows as {per_shard:?}; {} SLA results, {} p95 lines and the hour rollups equal one server's",
        flows.len(),
        one.0.len(),
        one.1.len()
    );
}
