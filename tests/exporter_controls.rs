//! Exporter controls end to end, into a real ClickHouse server (Debian's 18.16): the allow-list
//! of exporter prefixes and the per-exporter record-rate limit (see
//! `collector/src/listener/control.rs`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use egress_collector::config::Config;
use egress_collector::metrics::{DatagramDropReason, DropReason, Metrics};
use egress_collector::simulate::{self, Protocol, SimulateConfig, SimulateReport};
use egress_testkit::clickhouse::ClickHouseServer;
use tokio_util::sync::CancellationToken;

fn exporter(
    target: SocketAddr,
    protocol: Protocol,
    address: [u8; 4],
    rate: u64,
    seconds: u64,
) -> SimulateConfig {
    SimulateConfig {
        target,
        protocol,
        records_per_second: rate,
        exporters: 1,
        duration: Some(Duration::from_secs(seconds)),
        bind_base: Some(IpAddr::from(address)),
        seed: u64::from(address[3]),
        ..SimulateConfig::default()
    }
}

/// Starts a collector writing into `database` with `extra` settings, once its schema exists.
async fn start_collector(
    server: &ClickHouseServer,
    database: &str,
    extra: &[String],
) -> egress_collector::pipeline::RunningCollector {
    let mut sets = vec![
        "collector.listen=[\"127.0.0.1:0\"]".to_owned(),
        "collector.metrics_listen=\"127.0.0.1:0\"".to_owned(),
        "batch.max_age_ms=200".to_owned(),
        format!("clickhouse.url=\"{}\"", server.http_url()),
        format!("clickhouse.database=\"{database}\""),
    ];
    // This collector's own spool and state files (one database per test, so one directory).
    let files = std::env::temp_dir().join(format!("egress-test-{database}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&files);
    sets.push(format!("spool.dir=\"{}\"", files.join("spool").display()));
    sets.push(format!(
        "collector.state_path=\"{}\"",
        files.join("state.json").display()
    ));
    sets.extend_from_slice(extra);
    let config = Config::load(None, Vec::new(), &sets).expect("config");
    let running = egress_collector::pipeline::start(config, CancellationToken::new())
        .await
        .expect("collector");
    wait_for(|| {
        server
            .query_scalar(&format!("EXISTS TABLE {database}.flows"))
            .map(|v| v == "1")
            .unwrap_or(false)
    })
    .await;
    running
}

/// Two exporters send at once; only one is inside `collector.allowed_exporters`. Only its
/// records are stored, all of them, and every datagram of the other is counted as
/// `not_allowed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_exporters_are_stored_and_the_others_are_counted() {
    let server = ClickHouseServer::start().expect("ClickHouse server");
    let running = start_collector(
        &server,
        "allow",
        &["collector.allowed_exporters=[\"127.0.0.80/30\", \"2001:db8::/32\"]".to_owned()],
    )
    .await;
    let target = running.listening[0];
    let allowed = tokio::spawn(simulate::run(
        exporter(target, Protocol::Ipfix, [127, 0, 0, 81], 3_000, 2),
        CancellationToken::new(),
    ));
    let refused = tokio::spawn(simulate::run(
        exporter(target, Protocol::Netflow9, [127, 0, 0, 90], 3_000, 2),
        CancellationToken::new(),
    ));
    let allowed: SimulateReport = allowed.await.expect("task").expect("allowed exporter");
    let refused: SimulateReport = refused.await.expect("task").expect("refused exporter");
    assert!(allowed.flow_records() > 5_000 && refused.datagrams() > 100);

    let metrics = running.metrics.clone();
    let sent_datagrams = allowed.datagrams() + refused.datagrams();
    wait_for(|| metrics.datagrams_received.get() >= sent_datagrams).await;
    wait_written(&metrics, allowed.flow_records()).await;
    running.shutdown().await;

    assert_eq!(
        metrics.datagram_dropped(DatagramDropReason::NotAllowed).get(),
        refused.datagrams(),
        "every datagram of the refused exporter is counted"
    );
    let stored = server
        .query_scalar("SELECT count(), sum(bytes), uniqExact(exporter_address) FROM allow.flows FORMAT TSV")
        .expect("stored");
    let fields: Vec<&str> = stored.split('\t').collect();
    assert_eq!(
        fields,
        &[
            allowed.flow_records().to_string().as_str(),
            allowed.bytes().to_string().as_str(),
            "1"
        ],
        "only the allowed exporter's records, all of them"
    );
    let exporter = server
        .query_scalar("SELECT DISTINCT IPv6NumToString(exporter_address) FROM allow.flows")
        .expect("exporter");
    assert_eq!(exporter, "::ffff:127.0.0.81");
}

/// One exporter sends sFlow at ten times `collector.max_records_per_second_per_exporter` for
/// a few seconds. About the limit per second is stored, each kept record's `sampling_rate`
/// raised by what it stands for, so the scaled volume `sum(bytes * sampling_rate)` stays
/// within 5% of what the exporter sent (`bytes * its sampling rate`). Every record decoded is
/// either stored or counted as `rate_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_exporter_keeps_its_scaled_volume() {
    const LIMIT: u64 = 2_000;
    const SECONDS: u64 = 5;
    let server = ClickHouseServer::start().expect("ClickHouse server");
    let running = start_collector(
        &server,
        "limited",
        &[format!("collector.max_records_per_second_per_exporter={LIMIT}")],
    )
    .await;
    let target = running.listening[0];
    let mut config = exporter(target, Protocol::Sflow5, [127, 0, 0, 85], 10 * LIMIT, SECONDS);
    config.sampling_rate = Some(512);
    let report = simulate::run(config, CancellationToken::new())
        .await
        .expect("simulator");
    let sent = &report.exporters[0];
    assert!(
        sent.flow_records >= 9 * LIMIT * SECONDS,
        "the exporter must send about ten times the limit: {} records in {:?}",
        sent.flow_records,
        report.elapsed
    );

    let metrics = running.metrics.clone();
    wait_for(|| metrics.datagrams_received.get() >= report.datagrams()).await;
    let skipped = metrics.dropped(DropReason::RateLimit);
    wait_for(|| metrics.records_written.get() + skipped.get() >= sent.flow_records).await;
    let written = metrics.records_written.get();
    running.shutdown().await;

    assert_eq!(
        written + skipped.get(),
        sent.flow_records,
        "every record is stored or counted as rate_limit"
    );
    let stored = server
        .query_scalar(
            "SELECT count(), sum(bytes * sampling_rate), min(sampling_rate) FROM limited.flows FORMAT TSV",
        )
        .expect("stored");
    let fields: Vec<u64> = stored.split('\t').map(|v| v.parse().expect("number")).collect();
    let (records, scaled, min_rate) = (fields[0], fields[1], fields[2]);
    let truth = sent.bytes * u64::from(sent.sampling_rate);
    let error = (scaled as f64 - truth as f64) / truth as f64;
    let seconds = report.elapsed.as_secs_f64();
    eprintln!(
        "sent {} records in {seconds:.1} s, stored {records} (limit {LIMIT}/s), \
         rate_limit {}, raised {}; scaled volume {scaled} vs sent {truth}: error {:.2}%",
        sent.flow_records,
        skipped.get(),
        metrics.rate_limited_records.get(),
        error * 100.0
    );
    assert_eq!(records, written);
    assert!(
        error.abs() < 0.05,
        "scaled volume {scaled} vs {truth}: {:.2}%",
        error * 100.0
    );
    assert!(
        records as f64 >= LIMIT as f64 * (seconds - 1.0) && records as f64 <= LIMIT as f64 * (seconds + 4.0),
        "about {LIMIT} records a second stored: {records} in {seconds:.1} s"
    );
    assert!(min_rate >= 512, "no stored rate below the exporter's: {min_rate}");
    assert!(metrics.rate_limited_records.get() > 0);

    // Per second of the collector's clock (printed, not asserted: on a loaded host the receive
    // worker is descheduled and the next second receives the backlog at once, a rate jump the
    // limiter follows within that second).
    let per_second = server
        .query_scalar(
            "SELECT count() FROM limited.flows GROUP BY time_received ORDER BY time_received FORMAT TSV",
        )
        .expect("per second");
    eprintln!("stored per second: {}", per_second.replace('\n', " "));
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_written(metrics: &Metrics, records: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metrics.records_written.get() < records {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{records} records sent, {} written",
            metrics.records_written.get()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
