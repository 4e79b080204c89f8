//! The benchmark run end to end with the real binary, so the tool cannot rot: a short run
//! against nfcapd (always), and the whole `--quick` mode (ignored by default: it takes about
//! three minutes and needs the `egress` binary, built beside this one or named by
//! `$EGRESS_BIN`).

use std::path::PathBuf;
use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egress-bench"))
}

/// The table line of `collector` for `protocol`, which must carry a rate.
fn rate_of(table: &str, protocol: &str, collector: &str) -> f64 {
    let line = table
        .lines()
        .find(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(protocol) && words.next() == Some(collector)
        })
        .unwrap_or_else(|| panic!("no {protocol} {collector} line in:\n{table}"));
    let rate = line.split_whitespace().nth(2).unwrap();
    rate.trim_start_matches(">=")
        .parse()
        .unwrap_or_else(|_| panic!("no rate in {line:?}"))
}

#[test]
fn finds_a_lossless_rate_for_nfcapd_on_softflowd_ipfix() {
    let output = bench()
        .args(["run", "--protocols", "ipfix", "--collectors", "nfcapd"])
        .args(["--duration", "0.5", "--runs", "1", "--start-rate", "20000"])
        .args(["--max-rate", "40000", "--bisect", "0", "--no-direct"])
        .output()
        .expect("running egress-bench");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // nfcapd stores 40k IPFIX records/s without loss on any machine this runs on.
    let rate = rate_of(&table, "ipfix", "nfcapd");
    assert!((30_000.0..50_000.0).contains(&rate), "{rate}\n{table}");
}

#[test]
#[ignore = "about three minutes; run with --ignored after building egress"]
fn quick_mode_measures_every_collector() {
    let egress = std::env::var_os("EGRESS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_egress-bench")).with_file_name("egress"));
    assert!(egress.exists(), "build egress first: {}", egress.display());
    let output = bench()
        .args(["run", "--quick", "--egress"])
        .arg(&egress)
        .output()
        .expect("running egress-bench");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (protocol, collector) in [
        ("ipfix", "egress-null"),
        ("ipfix", "egress-clickhouse"),
        ("ipfix", "nfcapd"),
        ("ipfix", "nfacctd"),
        ("sflow5", "egress-null"),
        ("sflow5", "egress-clickhouse"),
        ("sflow5", "sfacctd"),
    ] {
        assert!(
            rate_of(&table, protocol, collector) > 0.0,
            "{protocol} {collector}"
        );
    }
    assert!(table.contains("direct ClickHouse ingest"), "{table}");
}
