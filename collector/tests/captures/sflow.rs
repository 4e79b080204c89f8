//! sFlow checks of the capture test: what Egress decoded from a capture against what TShark
//! decoded (`tshark.sflow` of the entry in expected.json).
//!
//! Checked for every file: the number of flow records (one per flow sample, compact and
//! expanded), the number of interface counter records (one per generic interface counter
//! record, format 0:1), the set of sampling rates, the agent addresses and sub-agents seen,
//! no sFlow decode error, and the fields of the first flow sample and of the first counter
//! sample. Only the sFlow side of a file is looked at (flows of type `sflow5`; every counter
//! record comes from sFlow).
//!
//! TShark prints interface fields raw; Egress stores the ifIndex they name, or 0 when they
//! name none (sFlow v5 §5.1 `interface` encoding: format 1 = discarded, format 2 = multiple
//! interfaces, 0x3FFFFFFF = the device itself). [`expected_if_index`] applies that rule to
//! TShark's raw value. Where a TShark figure is not the one Egress must produce for a reason
//! specific to a file, [`exception`] gives the spec-based value and the reason.

use std::collections::BTreeSet;
use std::net::IpAddr;

use egress_collector::decode::DecodeErrorKind;
use egress_collector::decode_file::DecodedCapture;
use egress_collector::normalise::{from_v6, FlowRecord, FlowType};

/// Spec-based figures that replace TShark's for one file.
#[derive(Debug)]
pub struct Exception {
    pub file: &'static str,
    /// Why TShark's figures are not the right expectation (printed when the file fails).
    pub reason: &'static str,
    /// (figure, spec-based value) pairs. Figures: `counter_records`, `agents` (comma
    /// separated), `first_counter.<tshark field>`, `first_flow.<tshark field>`.
    pub figures: &'static [(&'static str, &'static str)],
}

/// Per-file exceptions, each with its reason.
pub const EXCEPTIONS: &[Exception] = &[
    Exception {
        file: "sflow-v5/akvorado-ipv4-data.pcap",
        reason: "the flow sample has a sampled_header record (frame_length 1390) followed by a \
                 sampled_ipv4 record (length 1344, the IP packet without layer 2); Egress counts \
                 bytes as sfacctd does, from the last of these records, so the flow has 1344 bytes \
                 (sfacctd 1.7.7 on this file: 1344)",
        figures: &[("first_flow.frame_length", "1344")],
    },
    Exception {
        file: "sflow-v5/tcpdump-sflow-counters-30pdus-with-nfv5.pcap",
        reason: "the reference figures came from TShark's JSON output, where samples of one \
                 datagram with the same label ('Expanded counters sample, seq 87096') are one key: \
                 `tshark -T fields -e sflow_245.ifindex` lists 142 generic interface counter \
                 records, the first (frame 1, sample 1) ifIndex 55, ifInOctets 820721, \
                 ifOutOctets 178785248. Agents 15.184.4.165 and 15.184.13.52 send only host \
                 counters (formats 2001..2005, source type 2 entPhysicalEntry; TShark 4.0 calls \
                 them malformed), which are no interface counter records",
        figures: &[
            ("counter_records", "142"),
            ("agents", "15.184.1.129,15.184.1.194,15.184.1.195,15.184.8.4"),
            ("first_counter.ifindex", "55"),
            ("first_counter.ifinoct", "820721"),
            ("first_counter.ifoutoct", "178785248"),
        ],
    },
    Exception {
        file: "sflow-v5/telegraf-sflow-v5-example.pcap",
        reason: "the counter sample's first record is a port name (format 0:1005, 8 bytes: \
                 string 'eno1'), which TShark 4.0 does not know and misreads, so it decodes the \
                 next record as 0:4 with length 1701736241 ('eno1'); per sFlow v5 the record \
                 after it is generic interface counters (0:1, 88 bytes): ifIndex 3, ifSpeed \
                 1 Gbit/s, ifInOctets 3910, ifOutOctets 3946 (Telegraf's expected output agrees)",
        figures: &[
            ("counter_records", "1"),
            ("first_counter.ifindex", "3"),
            ("first_counter.ifinoct", "3910"),
            ("first_counter.ifoutoct", "3946"),
            ("first_counter.ifspeed", "1000000000"),
        ],
    },
];

pub fn exception(file: &str) -> Option<&'static Exception> {
    EXCEPTIONS.iter().find(|e| e.file == file)
}

/// The spec-based value of `figure` for `file`, when an exception replaces TShark's.
fn replaced(file: &str, figure: &str) -> Option<&'static str> {
    exception(file)?
        .figures
        .iter()
        .rev()
        .find(|(name, _)| *name == figure)
        .map(|(_, value)| *value)
}

/// The ifIndex a raw sFlow compact `interface` value names, 0 when it names none.
fn expected_if_index(raw: u32) -> u32 {
    if raw >> 30 == 0 && raw != 0x3FFF_FFFF {
        raw
    } else {
        0
    }
}

fn parse_u32(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn string_set(value: &serde_json::Value) -> BTreeSet<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn count(map: &serde_json::Value, keys: &[&str]) -> u64 {
    keys.iter().filter_map(|key| map[*key].as_u64()).sum()
}

/// Compares the sFlow side of `decoded` with `entry["tshark"]["sflow"]`; returns every
/// mismatch.
pub fn check(entry: &serde_json::Value, decoded: &DecodedCapture) -> Vec<String> {
    let file = entry["file"].as_str().unwrap_or_default();
    let tshark = &entry["tshark"]["sflow"];
    let mut problems = Vec::new();
    let flows: Vec<&FlowRecord> = decoded
        .flows
        .iter()
        .filter(|f| f.flow_type == FlowType::Sflow5)
        .collect();
    let counters = &decoded.counters;

    let flow_samples = count(&tshark["samples"], &["Flow sample", "Expanded flow sample"]);
    if flows.len() as u64 != flow_samples {
        problems.push(format!(
            "{} sFlow flow records, TShark has {flow_samples} flow samples",
            flows.len()
        ));
    }
    let generic_counters = replaced(file, "counter_records")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| count(&tshark["counter_formats"], &["0:1"]));
    if counters.len() as u64 != generic_counters {
        problems.push(format!(
            "{} interface counter records, TShark has {generic_counters} generic interface counter records",
            counters.len()
        ));
    }

    let rates: BTreeSet<String> = flows.iter().map(|f| f.sampling_rate.to_string()).collect();
    let tshark_rates = string_set(&tshark["sampling_rates"]);
    if rates != tshark_rates {
        problems.push(format!("sampling rates {rates:?}, TShark {tshark_rates:?}"));
    }

    // Flow records do not carry the agent address, counter records do; and a datagram of
    // samples Egress skips (discarded-packet events) gives no record at all, so what was
    // decoded must be among what TShark saw, and is all of it when the file has counters only.
    let tshark_agents = match replaced(file, "agents") {
        Some(list) => list.split(',').map(str::to_owned).collect(),
        None => string_set(&tshark["agents"]),
    };
    let agents: BTreeSet<String> = counters
        .iter()
        .map(|c| from_v6(c.agent_address).to_string())
        .collect();
    let only_counters = flow_samples == 0 && generic_counters > 0;
    if !agents.is_subset(&tshark_agents) || (only_counters && agents != tshark_agents) {
        problems.push(format!("agents {agents:?}, TShark {tshark_agents:?}"));
    }
    let tshark_sub_agents = string_set(&tshark["sub_agents"]);
    let sub_agents: BTreeSet<String> = flows
        .iter()
        .map(|f| f.observation_domain.to_string())
        .chain(counters.iter().map(|c| c.sub_agent_id.to_string()))
        .collect();
    if !sub_agents.is_subset(&tshark_sub_agents) {
        problems.push(format!("sub-agents {sub_agents:?}, TShark {tshark_sub_agents:?}"));
    }

    let only_sflow = entry["tshark"]["payload_kinds"]
        .as_object()
        .is_some_and(|kinds| kinds.len() == 1);
    for error in &decoded.errors {
        if only_sflow || error.kind == DecodeErrorKind::SflowSample {
            problems.push(format!("decode error: {error}"));
        }
    }

    if let Some(first) = tshark["first_flow"].as_object() {
        match flows.first() {
            Some(flow) => problems.extend(check_first_flow(file, first, flow)),
            None => problems.push("TShark has a first flow sample, Egress decoded none".to_owned()),
        }
    }
    if let Some(first) = tshark["first_counter"].as_object() {
        if first.contains_key("ifindex") || replaced(file, "first_counter.ifindex").is_some() {
            match counters.first() {
                Some(counter) => {
                    let fields = [
                        ("ifindex", u64::from(counter.if_index)),
                        ("ifinoct", counter.in_octets),
                        ("ifoutoct", counter.out_octets),
                        ("ifspeed", counter.if_speed),
                    ];
                    for (field, value) in fields {
                        let expected = replaced(file, &format!("first_counter.{field}"))
                            .or_else(|| first.get(field).and_then(|v| v.as_str()))
                            .and_then(|v| v.parse().ok());
                        if expected != Some(value) {
                            problems.push(format!("first counter {field} = {value}, TShark {expected:?}"));
                        }
                    }
                }
                None => problems.push("TShark has a first counter sample, Egress decoded none".to_owned()),
            }
        }
    }
    if let (false, Some(exception)) = (problems.is_empty(), exception(file)) {
        problems.push(format!("(per-file exception applies: {})", exception.reason));
    }
    problems
}

fn check_first_flow(
    file: &str,
    tshark: &serde_json::Map<String, serde_json::Value>,
    flow: &FlowRecord,
) -> Vec<String> {
    let mut problems = Vec::new();
    let field = |name: &str| -> Option<String> {
        match replaced(file, &format!("first_flow.{name}")) {
            Some(value) => Some(value.to_owned()),
            None => tshark.get(name).and_then(|v| v.as_str()).map(str::to_owned),
        }
    };
    let mut expect = |name: &str, expected: Option<String>, actual: String| {
        if let Some(expected) = expected {
            if expected != actual {
                problems.push(format!("first flow {name} = {actual}, expected {expected}"));
            }
        }
    };
    expect(
        "sampling_rate",
        field("sampling_rate"),
        flow.sampling_rate.to_string(),
    );
    expect(
        "frame_length (bytes)",
        field("frame_length"),
        flow.bytes.to_string(),
    );
    let if_index = |name: &str| {
        field(name)
            .and_then(|raw| parse_u32(&raw))
            .map(|raw| expected_if_index(raw).to_string())
    };
    expect(
        "input_interface (in_if)",
        if_index("input_interface"),
        flow.in_if.to_string(),
    );
    expect(
        "output_interface (out_if)",
        if_index("output_interface"),
        flow.out_if.to_string(),
    );
    let address = |text: String| text.parse::<IpAddr>().map(|a| a.to_string()).unwrap_or(text);
    let src = field("ip.src").or_else(|| field("ipv6.src")).map(address);
    let dst = field("ip.dst").or_else(|| field("ipv6.dst")).map(address);
    expect("src_addr", src.clone(), from_v6(flow.src_addr).to_string());
    expect("dst_addr", dst, from_v6(flow.dst_addr).to_string());
    expect("proto", field("ip.proto"), flow.proto.to_string());
    expect(
        "src_port",
        field("tcp.srcport").or_else(|| field("udp.srcport")),
        flow.src_port.to_string(),
    );
    expect(
        "dst_port",
        field("tcp.dstport").or_else(|| field("udp.dstport")),
        flow.dst_port.to_string(),
    );
    if field("tcp.srcport").is_some() {
        expect("proto", Some("6".to_owned()), flow.proto.to_string());
    }
    if field("udp.srcport").is_some() {
        expect("proto", Some("17".to_owned()), flow.proto.to_string());
    }
    let etype = if field("ipv6.src").is_some() {
        "34525"
    } else {
        "2048"
    };
    if src.is_some() {
        expect("etype", Some(etype.to_owned()), flow.etype.to_string());
    }
    problems
}
