//! NetFlow v5 / v9 / IPFIX checks of the capture test: record count, byte and packet sums,
//! sampling rates, and the fields of the first record (overall and per template), against the
//! `tshark.cflow` figures of `expected.json`.
//!
//! TShark is a reference, not an oracle. Where it could not decode a set, or where it is wrong
//! per RFC 3954 / RFC 7011, the specification-based figure is written in [`EXCEPTIONS`] with the
//! reason beside it; the general checks are never loosened.

use std::collections::BTreeSet;

use egress_collector::decode_file::DecodedCapture;
use egress_collector::normalise::{from_v6, Direction, FlowRecord, FlowType};
use serde_json::Value;

/// Spec-based figures that replace TShark's for one file.
#[derive(Debug)]
pub struct Exception {
    pub file: &'static str,
    pub reason: &'static str,
    pub data_records: Option<usize>,
    pub sum_octets: Option<u64>,
    pub sum_packets: Option<u64>,
}

/// Per-file exceptions, each with its reason.
pub const EXCEPTIONS: &[Exception] = &[];

pub fn exception(file: &str) -> Option<&'static Exception> {
    EXCEPTIONS.iter().find(|e| e.file == file)
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The record's value for a TShark field, as TShark prints it; `None` for fields that have no
/// `FlowRecord` column (MAC addresses, NAT addresses, names, inner headers...).
fn record_field(record: &FlowRecord, name: &str, fields: &serde_json::Map<String, Value>) -> Option<String> {
    let text = match name {
        "cflow.srcaddr" | "cflow.srcaddrv6" => from_v6(record.src_addr).to_string(),
        "cflow.dstaddr" | "cflow.dstaddrv6" => from_v6(record.dst_addr).to_string(),
        "cflow.srcport" => record.src_port.to_string(),
        "cflow.dstport" => record.dst_port.to_string(),
        "cflow.protocol" => record.proto.to_string(),
        "cflow.octets" => record.bytes.to_string(),
        "cflow.packets" => record.packets.to_string(),
        "cflow.inputint" => record.in_if.to_string(),
        "cflow.outputint" => record.out_if.to_string(),
        "cflow.srcas" => record.src_as.to_string(),
        "cflow.dstas" => record.dst_as.to_string(),
        "cflow.nexthop" => from_v6(record.next_hop).to_string(),
        // BGP next hop is only the fallback of `next_hop` (element 18 when 15 is absent).
        "cflow.bgpnexthop" if !fields.contains_key("cflow.nexthop") => from_v6(record.next_hop).to_string(),
        "cflow.direction" => match record.direction {
            Direction::Ingress => "0".to_owned(),
            Direction::Egress => "1".to_owned(),
            Direction::Unknown => "unknown".to_owned(),
        },
        "cflow.sampling_interval" => record.sampling_rate.to_string(),
        _ => return None,
    };
    Some(text)
}

/// Differences between a record and TShark's fields for it.
fn field_mismatches(record: &FlowRecord, fields: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut mismatches = Vec::new();
    for (name, want) in fields {
        let Some(want) = want.as_str() else { continue };
        if let Some(got) = record_field(record, name, fields) {
            // TShark prints IPv6 in canonical form too; numbers as decimal.
            if got != want {
                mismatches.push(format!("{name}={got} (tshark {want})"));
            }
        }
    }
    mismatches
}

pub fn check(entry: &Value, decoded: &DecodedCapture) -> Vec<String> {
    let file = entry["file"].as_str().unwrap_or_default();
    let cflow = &entry["tshark"]["cflow"];
    let exception = exception(file);
    let mut problems = Vec::new();
    let flows: Vec<&FlowRecord> = decoded
        .flows
        .iter()
        .filter(|f| matches!(f.flow_type, FlowType::Netflow5 | FlowType::Netflow9 | FlowType::Ipfix))
        .collect();

    let want_records = exception
        .and_then(|e| e.data_records)
        .or_else(|| number(&cflow["data_records"]).map(|n| n as usize))
        .unwrap_or(0);
    if flows.len() != want_records {
        problems.push(format!("{} records, expected {want_records}", flows.len()));
    }
    let want_octets = exception.and_then(|e| e.sum_octets).or_else(|| number(&cflow["sum_octets"])).unwrap_or(0);
    let octets: u64 = flows.iter().map(|f| f.bytes).sum();
    if octets != want_octets {
        problems.push(format!("sum of bytes {octets}, expected {want_octets}"));
    }
    let want_packets = exception.and_then(|e| e.sum_packets).or_else(|| number(&cflow["sum_packets"])).unwrap_or(0);
    let packets: u64 = flows.iter().map(|f| f.packets).sum();
    if packets != want_packets {
        problems.push(format!("sum of packets {packets}, expected {want_packets}"));
    }

    // Every sampling value TShark saw must be a rate the decoder stored: on a record or learned
    // from options data. A v5 `samplerate=0` means "not sampled": those records keep rate 1.
    let stored: BTreeSet<u64> = flows
        .iter()
        .map(|f| f.sampling_rate)
        .chain(decoded.learned.sampling_rates.iter().map(|r| r.3))
        .collect();
    for sampling in cflow["sampling"].as_array().into_iter().flatten() {
        let Some((name, value)) = sampling.as_str().and_then(|s| s.split_once('=')) else { continue };
        let Ok(value) = value.parse::<u64>() else { continue };
        let want = if value == 0 { 1 } else { value };
        if !stored.contains(&want) {
            problems.push(format!("sampling {name}={value}: rate {want} not stored (stored: {stored:?})"));
        }
    }

    if let Some(first) = cflow["first"].as_object() {
        match flows.first() {
            Some(record) => {
                let mismatches = field_mismatches(record, first);
                if !mismatches.is_empty() {
                    problems.push(format!("first record: {}", mismatches.join(", ")));
                }
            }
            None => problems.push("no record to compare with tshark's first record".to_owned()),
        }
    }
    // The decoder does not keep template ids on records: some record must match each
    // template's first record in every field.
    for (template_id, fields) in cflow["first_by_tid"].as_object().into_iter().flatten() {
        let Some(fields) = fields.as_object() else { continue };
        if !flows.iter().any(|record| field_mismatches(record, fields).is_empty()) {
            let closest = flows.first().map(|r| field_mismatches(r, fields).join(", ")).unwrap_or_default();
            problems.push(format!("no record matches template {template_id}'s first record ({closest})"));
        }
    }
    problems
}
