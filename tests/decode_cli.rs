//! `egress decode` on every reference capture: the binary prints exactly the records the
//! decoder produces (which `collector/tests/captures` checks against each capture's expected
//! values), one JSON object per flow with the `flows` column names, and a summary on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use clickhouse::Row;
use egress_collector::decode::DecoderConfig;
use egress_collector::decode_file::{decode_capture, flow_json};
use egress_query::schema::FlowRow;

fn captures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/captures");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).expect("expected.json"))
            .expect("valid JSON");
    expected
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| root.join(entry["file"].as_str().expect("file")))
        .collect()
}

fn egress(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_egress"))
        .args(args)
        .output()
        .expect("run egress")
}

#[test]
fn json_output_is_the_decoded_records_for_every_capture() {
    let files = captures();
    assert_eq!(files.len(), 104, "every reference capture is walked");
    let mut total_records = 0usize;
    for path in &files {
        let output = egress(&["decode", "--format", "json", path.to_str().expect("utf-8 path")]);
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let printed: Vec<serde_json::Value> = String::from_utf8(output.stdout)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        let decoded = decode_capture(path, &DecoderConfig::default()).expect("decodes");
        let expected: Vec<serde_json::Value> = decoded.flows.iter().map(flow_json).collect();
        assert_eq!(printed, expected, "{}", path.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("datagrams:"),
            "{}: summary missing: {stderr}",
            path.display()
        );
        total_records += printed.len();
    }
    eprintln!("{} captures, {total_records} flow records printed", files.len());
    assert!(
        total_records > 1500,
        "the captures hold about 1,900 flow records, printed {total_records}"
    );
}

#[test]
fn json_fields_are_the_flows_columns_in_order() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/captures/netflow-v5/akvorado-nfv5.pcap");
    let output = egress(&["decode", "--format", "json", path.to_str().expect("path")]);
    let first = String::from_utf8(output.stdout).expect("utf-8");
    let first: serde_json::Value =
        serde_json::from_str(first.lines().next().expect("a record")).expect("JSON");
    let keys: Vec<&str> = first
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, FlowRow::COLUMN_NAMES.to_vec());
    // Addresses as text, times as RFC 3339 (tshark's first record of this capture).
    assert_eq!(first["src_addr"], "161.202.212.212");
    assert_eq!(first["dst_addr"], "202.152.70.24");
    assert_eq!(first["next_hop"], "61.6.255.150");
    assert_eq!(first["bytes"], 133);
    assert!(first["time_received"].as_str().expect("time").ends_with('Z'));
}

#[test]
fn table_output_has_a_header_and_one_line_per_record() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/captures/netflow-v9/akvorado-cisco-ncs55-multisampler-combined.pcap");
    let output = egress(&["decode", path.to_str().expect("path")]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("flow_start"), "{stdout}");
    assert_eq!(lines.len(), 1 + 12, "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sampler 1 rate 2000") && stderr.contains("sampler 2 rate 4000"),
        "{stderr}"
    );
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nothing.pcap");
    std::fs::write(&path, b"not a capture").expect("write");
    let output = egress(&["decode", path.to_str().expect("path")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nothing.pcap") && stderr.contains("not a pcap"),
        "{stderr}"
    );
}
