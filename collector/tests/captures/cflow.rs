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
    /// Why TShark's figure is not the right expectation (printed when the file fails).
    pub reason: &'static str,
    pub data_records: Option<usize>,
    pub sum_octets: Option<u64>,
    pub sum_packets: Option<u64>,
    /// TShark's first record is not the decoder's first (held data released before it): some
    /// record must still match it in every field.
    pub first_anywhere: bool,
}

const HELD: &str = "data sets arrived before their template (TShark: data_flowsets_undecoded, \
    'no template found'); RFC 3954 §9 / RFC 7011 §8 let a collector keep them, and the decoder \
    decodes them when the template arrives, so it has more records than TShark, released first";

/// Per-file exceptions, each with its reason.
pub const EXCEPTIONS: &[Exception] = &[
    Exception {
        file: "netflow-v9/akvorado-juniper-mx960-msdpc-data+templates.pcap",
        reason: HELD,
        data_records: Some(21),
        sum_octets: Some(58_329),
        sum_packets: Some(66),
        first_anywhere: true,
    },
    Exception {
        file: "netflow-v9/graylog-softflowd-nfv9.pcap",
        reason: HELD,
        data_records: Some(21),
        sum_octets: Some(7_302),
        sum_packets: Some(23),
        first_anywhere: true,
    },
    Exception {
        file: "netflow-v9/graylog-nprobe-nfv9-4.pcap",
        reason: HELD,
        data_records: Some(15),
        sum_octets: Some(33_915),
        sum_packets: Some(74),
        first_anywhere: true,
    },
    Exception {
        file: "ipfix/akvorado-mpls-labels-38pkts.pcap",
        reason: "10 data sets arrived before template 2510 (TShark: 10 undecoded); 6 of them are \
            released when it arrives (22 records), 4 waited longer than held_set_ttl_seconds \
            (300 s) and are dropped as missing_template errors",
        data_records: Some(127),
        sum_octets: Some(33_820),
        sum_packets: Some(380),
        first_anywhere: true,
    },
    Exception {
        file: "netflow-v9/logstash-nfv9-h3c.pcap",
        reason: "TShark throws 'Trying to fetch an IPv4 address with length 2' on IPV4_ROUTER_SC \
            (43) exported with length 2 and abandons the set after its first record; RFC 3954 §5.2 \
            makes the template's length authoritative, so all 16 records of the set decode",
        data_records: Some(16),
        sum_octets: Some(8_729_687),
        sum_packets: Some(6_113),
        first_anywhere: false,
    },
    Exception {
        file: "ipfix/logstash-ipfix-yaf.pcap",
        reason: "YAF exports octetTotalCount/packetTotalCount (85/86), which TShark does not add to \
            its cflow.octets/cflow.packets sums; they are the volume fallback of 1/2 (RFC 7012)",
        data_records: None,
        sum_octets: Some(304),
        sum_packets: Some(6),
        first_anywhere: false,
    },
    Exception {
        file: "ipfix/telegraf-ipfix-example.pcap",
        reason: "the templates export octetTotalCount/packetTotalCount (85/86), which TShark does \
            not add to its cflow.octets/cflow.packets sums; they are the volume fallback of 1/2",
        data_records: None,
        sum_octets: Some(111_492),
        sum_packets: Some(457),
        first_anywhere: false,
    },
];

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

/// The TShark field's value(s): a repeated element (SRv6 outer and inner headers) is a list,
/// and the record holds one of them.
fn wanted(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The record's value for a TShark field, as TShark prints it; `None` for fields that have no
/// `FlowRecord` column (MAC addresses, NAT addresses, names, inner headers...) or that do not
/// apply to this record.
fn record_field(record: &FlowRecord, name: &str, fields: &serde_json::Map<String, Value>) -> Option<String> {
    let is_v6 = record.etype == 0x86dd;
    let text = match name {
        // A template may carry both families, the unused one zeroed (or, for SRv6, the outer
        // IPv6 header): the record's address must be one of those TShark shows, see `check_field`.
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
        // IP_NEXT_HOP (15) is IPv4; an IPv6 record takes its next hop from 62.
        "cflow.nexthop" if !is_v6 => from_v6(record.next_hop).to_string(),
        // BGP next hop is only the fallback of `next_hop` (element 18 when 15 is absent).
        "cflow.bgpnexthop" if !is_v6 && !fields.contains_key("cflow.nexthop") => {
            from_v6(record.next_hop).to_string()
        }
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

/// The values a record may hold for `name`: the field's own values, plus for an address the
/// other family's values when TShark shows both.
fn acceptable<'a>(name: &str, fields: &'a serde_json::Map<String, Value>) -> Vec<&'a str> {
    let sibling = match name {
        "cflow.srcaddr" => Some("cflow.srcaddrv6"),
        "cflow.srcaddrv6" => Some("cflow.srcaddr"),
        "cflow.dstaddr" => Some("cflow.dstaddrv6"),
        "cflow.dstaddrv6" => Some("cflow.dstaddr"),
        _ => None,
    };
    let mut values = fields.get(name).map(wanted).unwrap_or_default();
    if let Some(other) = sibling.and_then(|s| fields.get(s)) {
        values.extend(wanted(other));
    }
    values
}

/// Differences between a record and TShark's fields for it.
fn field_mismatches(record: &FlowRecord, fields: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut mismatches = Vec::new();
    for name in fields.keys() {
        let Some(got) = record_field(record, name, fields) else {
            continue;
        };
        let want = acceptable(name, fields);
        if !want.is_empty() && !want.contains(&got.as_str()) {
            mismatches.push(format!("{name}={got} (tshark {})", want.join("|")));
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
        .filter(|f| {
            matches!(
                f.flow_type,
                FlowType::Netflow5 | FlowType::Netflow9 | FlowType::Ipfix
            )
        })
        .collect();

    let want_records = exception
        .and_then(|e| e.data_records)
        .or_else(|| number(&cflow["data_records"]).map(|n| n as usize))
        .unwrap_or(0);
    if flows.len() != want_records {
        problems.push(format!("{} records, expected {want_records}", flows.len()));
    }
    let want_octets = exception
        .and_then(|e| e.sum_octets)
        .or_else(|| number(&cflow["sum_octets"]))
        .unwrap_or(0);
    let octets: u64 = flows.iter().map(|f| f.bytes).sum();
    if octets != want_octets {
        problems.push(format!("sum of bytes {octets}, expected {want_octets}"));
    }
    let want_packets = exception
        .and_then(|e| e.sum_packets)
        .or_else(|| number(&cflow["sum_packets"]))
        .unwrap_or(0);
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
        let Some((name, value)) = sampling.as_str().and_then(|s| s.split_once('=')) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else { continue };
        if name == "sampling_packet_interval" {
            // RFC 7012 305/306: the rate is (interval + space) / interval, and TShark's list
            // does not show the space: the rate must have been learned from options data.
            if decoded.learned.sampling_rates.is_empty() {
                problems.push(format!(
                    "sampling {name}={value}: no rate learned from options data"
                ));
            }
            continue;
        }
        let want = if value == 0 { 1 } else { value };
        if !stored.contains(&want) {
            problems.push(format!(
                "sampling {name}={value}: rate {want} not stored (stored: {stored:?})"
            ));
        }
    }

    let first_anywhere = exception.is_some_and(|e| e.first_anywhere);
    if let (Some(first), true) = (cflow["first"].as_object(), first_anywhere) {
        if !flows
            .iter()
            .any(|record| field_mismatches(record, first).is_empty())
        {
            problems.push("no record matches tshark's first record".to_owned());
        }
    } else if let Some(first) = cflow["first"].as_object() {
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
        let Some(fields) = fields.as_object() else {
            continue;
        };
        if !flows
            .iter()
            .any(|record| field_mismatches(record, fields).is_empty())
        {
            let closest = flows
                .first()
                .map(|r| field_mismatches(r, fields).join(", "))
                .unwrap_or_default();
            problems.push(format!(
                "no record matches template {template_id}'s first record ({closest})"
            ));
        }
    }
    if let (Some(exception), false) = (exception, problems.is_empty()) {
        problems.push(format!("(per-file exception: {})", exception.reason));
    }
    problems
}
