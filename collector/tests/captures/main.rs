//! Capture test: every file listed in `shared/fixtures/captures/expected.json` is decoded with
//! the real decoder ([`decode_capture`], default limits) and compared with what TShark decoded
//! from it. NetFlow/IPFIX figures are checked by [`cflow::check`], sFlow by [`sflow::check`]
//! (a file may have both), the latency columns by [`rtt::check`]. A `-data` / `-options-data` file whose `pair` names a combined file
//! must decode to no record on its own: its data waits for a template that is in another file.
//!
//! Every mismatch of every file is collected and the test fails once, listing them all.

mod cflow;
mod rtt;
mod sflow;

use std::path::{Path, PathBuf};

use egress_collector::decode::DecoderConfig;
use egress_collector::decode_file::{decode_capture, DecodedCapture};

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/captures")
}

/// A `-data` or `-options-data` half of a split capture: its template is in a sibling file.
fn is_template_less_half(entry: &serde_json::Value) -> bool {
    let file = entry["file"].as_str().unwrap_or_default();
    let stem = file.trim_end_matches(".pcap");
    entry["pair"].is_string() && (stem.ends_with("-data") || stem.ends_with("-options-data"))
}

fn check_template_less_half(decoded: &DecodedCapture) -> Vec<String> {
    let mut problems = Vec::new();
    if !decoded.flows.is_empty() {
        problems.push(format!(
            "decoded alone it gave {} records, expected none",
            decoded.flows.len()
        ));
    }
    if decoded.held_sets == 0 {
        problems.push("no data set is held waiting for its template".to_owned());
    }
    problems
}

#[test]
fn every_capture_matches_its_reference() {
    let dir = captures_dir();
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json is readable");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).expect("expected.json is a JSON list");
    assert!(!entries.is_empty(), "expected.json lists no capture");

    let mut failures = Vec::new();
    let (mut checked, mut passing, mut with_exception) = (0usize, 0usize, 0usize);
    for entry in &entries {
        let file = entry["file"].as_str().expect("every entry names its file");
        checked += 1;
        let decoded = match decode_capture(&dir.join(file), &DecoderConfig::default()) {
            Ok(decoded) => decoded,
            Err(error) => {
                failures.push(format!("{file}: cannot read capture: {error}"));
                continue;
            }
        };
        let mut problems = Vec::new();
        if is_template_less_half(entry) {
            problems.extend(check_template_less_half(&decoded));
        } else {
            if !entry["tshark"]["cflow"].is_null() {
                problems.extend(cflow::check(entry, &decoded));
                if cflow::exception(file).is_some() {
                    with_exception += 1;
                }
            }
            if !entry["tshark"]["sflow"].is_null() {
                problems.extend(sflow::check(entry, &decoded));
            }
        }
        problems.extend(rtt::check(file, &decoded));
        if problems.is_empty() {
            passing += 1;
        } else {
            failures.extend(problems.into_iter().map(|p| format!("{file}: {p}")));
        }
    }
    eprintln!(
        "captures: {checked} files checked, {passing} passing, {with_exception} with a per-file exception"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
