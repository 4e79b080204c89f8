//! Several exporters at once, end to end into a real ClickHouse server (Debian's 18.16).
//!
//! Simulated routers of every protocol send from different loopback addresses. The NetFlow v9
//! fleets share template ids (every simulated v9 router uses the same ids and sampler ids) but
//! announce different sampling rates in their options data, so a decoder that mixed template
//! or options state across exporters would store wrong rates. Each stored record must keep its
//! own exporter's rate, and per exporter the stored count and byte and packet sums must equal
//! what the simulator sent. `exporter_stats` must account for every datagram with no loss.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use egress_collector::config::Config;
use egress_collector::simulate::{self, Protocol, SimulateConfig, SimulateReport};
use egress_testkit::clickhouse::ClickHouseServer;
use tokio_util::sync::CancellationToken;

fn fleet(
    target: SocketAddr,
    protocol: Protocol,
    first: [u8; 4],
    exporters: u32,
    rate: u32,
) -> SimulateConfig {
    SimulateConfig {
        target,
        protocol,
        records_per_second: 3_000,
        exporters,
        duration: Some(Duration::from_secs(2)),
        sampling_rate: Some(rate),
        bind_base: Some(IpAddr::from(first)),
        seed: u64::from(first[3]),
        ..SimulateConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_exporters_keep_their_own_sampling_rates() {
    let server = ClickHouseServer::start().expect("ClickHouse server");
    let spool_dir = tempfile::tempdir().expect("spool dir");
    let sets = [
        "collector.listen=[\"127.0.0.1:0\"]".to_owned(),
        "collector.metrics_listen=\"127.0.0.1:0\"".to_owned(),
        "collector.stats_interval_seconds=1".to_owned(),
        "collector.workers=2".to_owned(),
        "batch.max_age_ms=200".to_owned(),
        format!("clickhouse.url=\"{}\"", server.http_url()),
        format!("spool.dir=\"{}\"", spool_dir.path().display()),
        format!(
            "collector.state_path=\"{}\"",
            spool_dir.path().join("state.json").display()
        ),
        "clickhouse.database=\"multi\"".to_owned(),
    ];
    let config = Config::load(None, Vec::new(), &sets).expect("config");
    let shutdown = CancellationToken::new();
    let running = egress_collector::pipeline::start(config, shutdown.clone())
        .await
        .expect("collector");
    let target = running.listening[0];
    // Let the schema migration finish before the first insert would have to wait for it.
    wait_for(|| {
        server
            .query_scalar("EXISTS TABLE multi.flows")
            .map(|v| v == "1")
            .unwrap_or(false)
    })
    .await;

    let fleets = vec![
        fleet(target, Protocol::Netflow9, [127, 0, 0, 20], 2, 100),
        fleet(target, Protocol::Netflow9, [127, 0, 0, 30], 2, 1000),
        fleet(target, Protocol::Ipfix, [127, 0, 0, 40], 2, 64),
        fleet(target, Protocol::Netflow5, [127, 0, 0, 50], 1, 10),
        fleet(target, Protocol::Sflow5, [127, 0, 0, 60], 2, 512),
    ];
    let tasks: Vec<_> = fleets
        .into_iter()
        .map(|f| tokio::spawn(simulate::run(f, CancellationToken::new())))
        .collect();
    let mut reports: Vec<SimulateReport> = Vec::new();
    for task in tasks {
        reports.push(task.await.expect("simulator task").expect("simulator"));
    }
    let sent_records: u64 = reports.iter().map(SimulateReport::flow_records).sum();
    let sent_datagrams: u64 = reports.iter().map(SimulateReport::datagrams).sum();
    assert!(
        sent_records > 20_000,
        "the fleets sent too little to prove anything: {sent_records}"
    );

    let metrics = running.metrics.clone();
    wait_written(&metrics, sent_records).await;
    running.shutdown().await;

    let rows = server
        .query_scalar(
            "SELECT IPv6NumToString(exporter_address), toString(flow_type), \
             arrayStringConcat(arrayMap(x -> toString(x), groupUniqArray(sampling_rate)), ','), \
             count(), sum(bytes), sum(packets) \
             FROM multi.flows GROUP BY exporter_address, flow_type ORDER BY exporter_address FORMAT TSV",
        )
        .expect("per-exporter query");
    eprintln!("stored per exporter (address, type, rates, records, bytes, packets):\n{rows}");
    let stored: BTreeMap<String, Vec<String>> = rows
        .lines()
        .map(|line| {
            let fields: Vec<String> = line.split('\t').map(str::to_owned).collect();
            (fields[0].clone(), fields[1..].to_vec())
        })
        .collect();
    let mut expected_exporters = 0;
    for report in &reports {
        for exporter in &report.exporters {
            expected_exporters += 1;
            let address = egress_query::schema::to_v6(exporter.exporter_address).to_string();
            let row = stored
                .get(&address)
                .unwrap_or_else(|| panic!("no rows stored for {address}: {stored:?}"));
            assert_eq!(row[0], report.protocol.to_string(), "{address}: flow type");
            assert_eq!(
                row[1],
                exporter.sampling_rate.to_string(),
                "{address}: every record keeps its exporter's rate"
            );
            assert_eq!(row[2], exporter.flow_records.to_string(), "{address}: records");
            assert_eq!(row[3], exporter.bytes.to_string(), "{address}: bytes");
            assert_eq!(row[4], exporter.packets.to_string(), "{address}: packets");
        }
    }
    assert_eq!(
        stored.len(),
        expected_exporters,
        "no records from unknown exporters: {stored:?}"
    );

    let stats = server
        .query_scalar("SELECT sum(datagrams), sum(records_lost) FROM multi.exporter_stats FORMAT TSV")
        .expect("exporter_stats");
    let datagrams_and_lost: Vec<u64> = stats
        .trim()
        .split('\t')
        .map(|v| v.parse().expect("number"))
        .collect();
    assert_eq!(
        datagrams_and_lost,
        vec![sent_datagrams, 0],
        "exporter_stats: datagrams, records lost"
    );
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ClickHouse stops while exporters keep sending: the writer keeps its batches and retries,
/// and once the server is back every record sent is stored, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_loses_nothing() {
    let mut server = ClickHouseServer::start().expect("ClickHouse server");
    let spool_dir = tempfile::tempdir().expect("spool dir");
    let sets = [
        "collector.listen=[\"127.0.0.1:0\"]".to_owned(),
        "collector.metrics_listen=\"127.0.0.1:0\"".to_owned(),
        "batch.max_age_ms=200".to_owned(),
        "batch.retry_initial_ms=100".to_owned(),
        "batch.retry_max_ms=1000".to_owned(),
        format!("clickhouse.url=\"{}\"", server.http_url()),
        format!("spool.dir=\"{}\"", spool_dir.path().display()),
        format!(
            "collector.state_path=\"{}\"",
            spool_dir.path().join("state.json").display()
        ),
        "clickhouse.database=\"outage\"".to_owned(),
    ];
    let config = Config::load(None, Vec::new(), &sets).expect("config");
    // Every start-up migration must be done before the outage: the writer holds its batches
    // until then, and this test is about inserts failing and being retried.
    let migrations = egress_query::migrate::ddl(
        &egress_query::connection::ServerVersion::new(18, 16, 1),
        &config.clickhouse,
    )
    .len();
    let running = egress_collector::pipeline::start(config, CancellationToken::new())
        .await
        .expect("collector");
    let target = running.listening[0];
    wait_for(|| {
        server
            .query_scalar("SELECT count() FROM outage.schema_migrations")
            .map(|v| v.trim() == migrations.to_string())
            .unwrap_or(false)
    })
    .await;

    server.stop().expect("stop ClickHouse");
    let report = simulate::run(
        fleet(target, Protocol::Ipfix, [127, 0, 0, 70], 2, 100),
        CancellationToken::new(),
    )
    .await
    .expect("simulator");
    let metrics = running.metrics.clone();
    // The records are decoded and held by the writer, which fails and retries meanwhile.
    wait_for(|| metrics.insert_failures.get() >= 2).await;
    assert_eq!(
        metrics.records_written.get(),
        0,
        "nothing can be written while ClickHouse is down"
    );

    server.restart().expect("restart ClickHouse");
    wait_written(&metrics, report.flow_records()).await;
    running.shutdown().await;
    let stored = server
        .query_scalar("SELECT count(), sum(bytes) FROM outage.flows FORMAT TSV")
        .expect("count");
    assert_eq!(
        stored.trim(),
        format!("{}\t{}", report.flow_records(), report.bytes()),
        "every record sent during the outage is stored once"
    );
    let dropped: u64 = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("egress_records_dropped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(dropped, 0, "no record was dropped");
}

/// Waits until `records` flow records were written; on timeout, fails with the collector's
/// counters (drops by reason, decode errors, kernel drops) so the loss can be located.
async fn wait_written(metrics: &egress_collector::metrics::Metrics, records: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metrics.records_written.get() < records {
        if tokio::time::Instant::now() >= deadline {
            let counters: Vec<String> = metrics
                .render()
                .lines()
                .filter(|l| l.starts_with("egress_") && !l.ends_with(" 0"))
                .map(str::to_owned)
                .collect();
            panic!(
                "{records} records sent, {} written:\n{}",
                metrics.records_written.get(),
                counters.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scale-out of the collectors: two collector instances share one UDP port (`SO_REUSEPORT`:
/// the kernel picks a socket by hashing the datagram's addresses and ports, so each exporter
/// always reaches the same instance and its templates stay there) and each writes to a
/// different node of a two-shard ClickHouse cluster. Template-based fleets (v9 with shared
/// template ids, IPFIX) from twelve exporters: both instances get traffic, no data set waits
/// for a template it never sees, and every exporter's records are stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_a_port_and_write_to_a_two_shard_cluster() {
    let shards = ClickHouseServer::start_cluster("edge_cluster", 2).expect("two shards");
    let nodes: Vec<String> = shards.iter().map(ClickHouseServer::http_url).collect();
    // One spool directory per instance (named after its listen address).
    let spool_root = tempfile::tempdir().expect("spool dirs");
    let start = |listen: String, node: String| {
        let sets = vec![
            format!("collector.listen=[\"{listen}\"]"),
            "collector.metrics_listen=\"127.0.0.1:0\"".to_owned(),
            "collector.stats_interval_seconds=1".to_owned(),
            "collector.workers=1".to_owned(),
            "batch.max_age_ms=200".to_owned(),
            format!("clickhouse.url=\"{node}\""),
            format!("spool.dir=\"{}\"", spool_root.path().join(&listen).display()),
            format!(
                "collector.state_path=\"{}\"",
                spool_root.path().join(format!("{listen}.json")).display()
            ),
            "clickhouse.database=\"scaled\"".to_owned(),
            "clickhouse.cluster=\"edge_cluster\"".to_owned(),
            format!(
                "clickhouse.cluster_nodes=[{}]",
                nodes
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ];
        let config = Config::load(None, Vec::new(), &sets).expect("config");
        egress_collector::pipeline::start(config, CancellationToken::new())
    };
    let first = start("127.0.0.1:0".to_owned(), nodes[0].clone())
        .await
        .expect("first collector");
    let target = first.listening[0];
    let second = start(target.to_string(), nodes[1].clone())
        .await
        .expect("second collector on the same port");
    assert_eq!(second.listening[0], target);
    wait_for(|| {
        shards.iter().all(|s| {
            s.query_scalar(
                "SELECT count() FROM system.tables WHERE database = 'scaled' AND name = 'latency_1m'",
            )
            .map(|v| v == "1")
            .unwrap_or(false)
        })
    })
    .await;

    let fleets = vec![
        fleet(target, Protocol::Netflow9, [127, 0, 1, 20], 6, 100),
        fleet(target, Protocol::Ipfix, [127, 0, 1, 40], 6, 64),
    ];
    let tasks: Vec<_> = fleets
        .into_iter()
        .map(|f| tokio::spawn(simulate::run(f, CancellationToken::new())))
        .collect();
    let mut reports: Vec<SimulateReport> = Vec::new();
    for task in tasks {
        reports.push(task.await.expect("simulator task").expect("simulator"));
    }
    let sent: u64 = reports.iter().map(SimulateReport::flow_records).sum();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while first.metrics.records_written.get() + second.metrics.records_written.get() < sent {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sent} sent, {} + {} written",
            first.metrics.records_written.get(),
            second.metrics.records_written.get()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = [
        first.metrics.datagrams_received.get(),
        second.metrics.datagrams_received.get(),
    ];
    let missing_template = [&first, &second].map(|c| {
        c.metrics
            .decode_error(egress_collector::decode::DecodeErrorKind::MissingTemplate)
            .get()
    });
    first.shutdown().await;
    second.shutdown().await;
    eprintln!("datagrams per collector {received:?}, data sets without template {missing_template:?}");
    assert!(
        received.iter().all(|&n| n > 0),
        "both instances share the exporters: {received:?}"
    );
    assert_eq!(
        missing_template,
        [0, 0],
        "each exporter's templates stay with its instance"
    );

    let rows = shards[0]
        .query_scalar(
            "SELECT IPv6NumToString(exporter_address), count() FROM scaled.flows \
             GROUP BY exporter_address ORDER BY exporter_address FORMAT TSV",
        )
        .expect("per-exporter counts through the Distributed table");
    let stored: BTreeMap<String, u64> = rows
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(address, count)| (address.to_owned(), count.parse().expect("count")))
        .collect();
    for report in &reports {
        for exporter in &report.exporters {
            let address = egress_query::schema::to_v6(exporter.exporter_address).to_string();
            assert_eq!(
                stored.get(&address),
                Some(&exporter.flow_records),
                "{address}: {stored:?}"
            );
        }
    }
    let per_shard: Vec<String> = shards
        .iter()
        .map(|s| {
            s.query_scalar("SELECT count() FROM scaled.flows_local")
                .expect("local count")
        })
        .collect();
    eprintln!("{sent} records stored once, per shard {per_shard:?}");
    assert!(
        per_shard.iter().all(|n| n != "0"),
        "rows on both shards: {per_shard:?}"
    );
}
