//! State across restarts, end to end into a real ClickHouse server (Debian's 18.16).
//!
//! A collector learns an exporter's NetFlow v9 template and its sampling rate (options data)
//! and is shut down. A new collector with the same `collector.state_path` receives only data
//! sets from that exporter (from another source port, so possibly on another receive
//! worker): they must be stored at once with the learned rate, with nothing held for a
//! template and no loss counted for the restart. The control: a collector without the saved
//! state stores nothing from the same data-only datagram (it waits for a template).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use egress_collector::config::Config;
use egress_collector::metrics::Metrics;
use egress_collector::pipeline::{self, RunningCollector};
use egress_testkit::clickhouse::ClickHouseServer;
use tokio_util::sync::CancellationToken;

const DATABASE: &str = "state";
const SOURCE_ID: u32 = 3;

/// v9 template 256: destination address and port, bytes, packets, protocol, sampler id.
const FLOW_TEMPLATE: &[u8] = &[
    0x00, 0x00, // flowset id 0: templates
    0x00, 0x20, // flowset length 32
    0x01, 0x00, // template id 256
    0x00, 0x06, // field count 6
    0x00, 0x0c, 0x00, 0x04, // IPV4_DST_ADDR (12), 4 bytes
    0x00, 0x0b, 0x00, 0x02, // L4_DST_PORT (11), 2 bytes
    0x00, 0x01, 0x00, 0x04, // IN_BYTES (1), 4 bytes
    0x00, 0x02, 0x00, 0x04, // IN_PKTS (2), 4 bytes
    0x00, 0x04, 0x00, 0x01, // PROTOCOL (4), 1 byte
    0x00, 0x30, 0x00, 0x01, // FLOW_SAMPLER_ID (48), 1 byte
];

/// v9 options template 257: scope System; sampler id and its interval.
const OPTIONS_TEMPLATE: &[u8] = &[
    0x00, 0x01, // flowset id 1: options templates
    0x00, 0x18, // flowset length 24
    0x01, 0x01, // template id 257
    0x00, 0x04, // option scope length 4
    0x00, 0x08, // option length 8
    0x00, 0x01, 0x00, 0x04, // scope: System (1), 4 bytes
    0x00, 0x30, 0x00, 0x01, // FLOW_SAMPLER_ID (48), 1 byte
    0x00, 0x22, 0x00, 0x04, // SAMPLING_INTERVAL (34), 4 bytes
    0x00, 0x00, // padding
];

/// v9 options data of template 257: sampler 5 samples 1 packet in 250.
const OPTIONS_DATA: &[u8] = &[
    0x01, 0x01, // flowset id 257
    0x00, 0x10, // flowset length 16
    0x00, 0x00, 0x00, 0x00, // scope System: 0
    0x05, // FLOW_SAMPLER_ID 5
    0x00, 0x00, 0x00, 0xfa, // SAMPLING_INTERVAL 250
    0x00, 0x00, 0x00, // padding
];

/// A data flowset of template 256: one TCP record to 198.51.100.7 per `(port, bytes)`, by
/// sampler 5.
fn data_set(records: &[(u16, u32)]) -> Vec<u8> {
    let length = 4 + records.len() * 16;
    let mut set = vec![0x01, 0x00]; // flowset id 256
    set.extend_from_slice(&u16::try_from(length).expect("short set").to_be_bytes()); // length
    for (port, bytes) in records {
        set.extend_from_slice(&[198, 51, 100, 7]); // IPV4_DST_ADDR
        set.extend_from_slice(&port.to_be_bytes()); // L4_DST_PORT
        set.extend_from_slice(&bytes.to_be_bytes()); // IN_BYTES
        set.extend_from_slice(&1u32.to_be_bytes()); // IN_PKTS
        set.push(6); // PROTOCOL: TCP
        set.push(5); // FLOW_SAMPLER_ID
    }
    set
}

/// A NetFlow v9 datagram: 20-byte header (exported now), then the given flowsets.
fn v9(sequence: u32, flowsets: &[&[u8]]) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut datagram = vec![
        0x00, 0x09, // version 9
        0x00, 0x01, // count
        0x00, 0x01, 0x86, 0xa0, // sys_up_time: 100 000 ms
    ];
    datagram.extend_from_slice(&u32::try_from(now).expect("2106").to_be_bytes()); // unix_secs
    datagram.extend_from_slice(&sequence.to_be_bytes()); // sequence number
    datagram.extend_from_slice(&SOURCE_ID.to_be_bytes()); // source id
    for flowset in flowsets {
        datagram.extend_from_slice(flowset);
    }
    datagram
}

async fn start(server: &ClickHouseServer, state_path: &Path) -> RunningCollector {
    let sets = [
        "collector.listen=[\"127.0.0.1:0\"]".to_owned(),
        "collector.metrics_listen=\"127.0.0.1:0\"".to_owned(),
        "collector.workers=2".to_owned(),
        "collector.stats_interval_seconds=1".to_owned(),
        format!("collector.state_path={:?}", state_path.display().to_string()),
        "batch.max_age_ms=200".to_owned(),
        format!("clickhouse.url=\"{}\"", server.http_url()),
        format!("clickhouse.database=\"{DATABASE}\""),
    ];
    let config = Config::load(None, Vec::new(), &sets).expect("config");
    pipeline::start(config, CancellationToken::new())
        .await
        .expect("collector")
}

/// Sends `datagram` to the collector from a fresh source port of 127.0.0.1.
fn send(target: SocketAddr, datagram: &[u8]) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("exporter socket");
    socket.send_to(datagram, target).expect("send");
}

async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn counter(metrics: &Metrics, prefix: &str) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `dst_port, bytes, sampling_rate, sampling_source` of the stored flows with ports in `ports`.
fn stored(server: &ClickHouseServer, ports: &str) -> String {
    server
        .query_scalar(&format!(
            "SELECT dst_port, bytes, sampling_rate, toString(sampling_source) FROM {DATABASE}.flows \
             WHERE dst_port IN ({ports}) ORDER BY dst_port FORMAT TSV"
        ))
        .expect("flows query")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_sampling_rates_survive_a_restart() {
    let server = ClickHouseServer::start().expect("ClickHouse server");
    let dir = tempfile::tempdir().expect("tempdir");
    let state_path = dir.path().join("state/collector-state.json");

    // First run: the exporter announces its templates and rate, and sends one record.
    let first = start(&server, &state_path).await;
    wait_for("the schema", Duration::from_secs(60), || {
        server
            .query_scalar(&format!("EXISTS TABLE {DATABASE}.flows"))
            .map(|v| v.trim() == "1")
            .unwrap_or(false)
    })
    .await;
    let first_data = data_set(&[(1001, 1000)]);
    send(
        first.listening[0],
        &v9(1, &[FLOW_TEMPLATE, OPTIONS_TEMPLATE, OPTIONS_DATA, &first_data]),
    );
    let metrics = first.metrics.clone();
    wait_for("the first record", Duration::from_secs(30), || {
        metrics.records_written.get() >= 1
    })
    .await;
    first.shutdown().await;
    assert_eq!(stored(&server, "1001"), "1001\t1000\t250\toptions");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state file written at shutdown"))
            .expect("state file is JSON");
    assert_eq!(saved["version"], 1);
    let templates = saved["decoder"]["scopes"][0]["templates"]
        .as_array()
        .expect("templates");
    assert_eq!(templates.len(), 2, "flow and options template saved: {saved}");

    // Second run: only data, continuing the exporter's sequence, from another source port.
    let second = start(&server, &state_path).await;
    let target = second.listening[0];
    send(target, &v9(2, &[&data_set(&[(2001, 2000), (2002, 3000)])]));
    send(target, &v9(3, &[&data_set(&[(2003, 4000)])]));
    let metrics = second.metrics.clone();
    wait_for(
        "the data sent after the restart to be stored",
        Duration::from_secs(20),
        || metrics.records_written.get() >= 3,
    )
    .await;
    assert_eq!(metrics.held_sets.get(), 0, "nothing waits for a template");
    assert_eq!(
        counter(&metrics, "egress_decode_errors_total{kind=\"missing_template\"}"),
        0
    );
    // exporter_stats of the second run are written at its shutdown at the latest.
    second.shutdown().await;
    assert_eq!(
        stored(&server, "2001, 2002, 2003"),
        "2001\t2000\t250\toptions\n2002\t3000\t250\toptions\n2003\t4000\t250\toptions",
        "records after the restart decode at once, with the sampling rate learned before it"
    );
    let stats = server
        .query_scalar(&format!(
            "SELECT sum(datagrams), sum(records), sum(records_lost) FROM {DATABASE}.exporter_stats FORMAT TSV"
        ))
        .expect("exporter_stats");
    // 3 datagrams: 1 options and 1 flow record in the first, 3 flow records after the restart.
    assert_eq!(stats.trim(), "3\t5\t0", "no loss counted across the restart");

    // Control: without the saved state, the same kind of datagram waits for its template.
    let control = start(&server, &dir.path().join("empty/collector-state.json")).await;
    send(control.listening[0], &v9(4, &[&data_set(&[(3001, 5000)])]));
    let metrics = control.metrics.clone();
    wait_for("the data set to be held", Duration::from_secs(20), || {
        metrics.held_sets.get() == 1
    })
    .await;
    // Twice the batch age: anything decoded would have been written by now.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metrics.records_written.get(), 0);
    control.shutdown().await;
    assert_eq!(stored(&server, "3001"), "", "nothing stored without a template");
}
