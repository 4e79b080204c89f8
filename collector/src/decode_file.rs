//! Decoding a whole capture file, in file order, with one [`Decoder`]: the engine behind
//! `egress decode` and the capture tests.
//!
//! Templates are learned in file order, per exporter (the datagram's source address), exactly
//! as the live collector learns them; the record's `time_received` is the capture timestamp.

use std::path::Path;

use crate::capture::{read_datagrams, CaptureError, CaptureSummary};
use crate::decode::{DecodeError, DecodeOutput, Decoder, DecoderConfig, LearnedState};
use crate::normalise::{FlowRecord, InterfaceCounterRecord};

/// Everything a capture decoded to.
#[derive(Debug, Default)]
pub struct DecodedCapture {
    pub capture: CaptureSummary,
    pub flows: Vec<FlowRecord>,
    pub counters: Vec<InterfaceCounterRecord>,
    /// Every decode error, whole-datagram and partial, in file order.
    pub errors: Vec<DecodeError>,
    pub learned: LearnedState,
    /// Data sets still waiting for a template at the end of the file.
    pub held_sets: usize,
}

/// Reads and decodes `path`.
pub fn decode_capture(path: &Path, config: &DecoderConfig) -> Result<DecodedCapture, CaptureError> {
    let (datagrams, capture) = read_datagrams(path)?;
    let mut decoder = Decoder::new(config);
    let mut result = DecodedCapture {
        capture,
        ..Default::default()
    };
    let mut out = DecodeOutput::default();
    for datagram in &datagrams {
        out.clear();
        if let Err(error) = decoder.decode(
            datagram.source.ip(),
            datagram.timestamp,
            &datagram.payload,
            &mut out,
        ) {
            result.errors.push(error);
        }
        result.flows.append(&mut out.flows);
        result.counters.append(&mut out.counters);
        result.errors.append(&mut out.errors);
    }
    result.learned = decoder.learned();
    result.held_sets = decoder.held_sets();
    Ok(result)
}

/// A flow record as `egress decode --format json` prints it: the `flows` column names,
/// addresses as text (IPv4 for IPv4-mapped), times as RFC 3339, enums by name.
pub fn flow_json(record: &FlowRecord) -> serde_json::Value {
    use crate::normalise::from_v6;
    let time = |secs: u32| {
        chrono::DateTime::from_timestamp(i64::from(secs), 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let mut value = serde_json::json!({
        "time_received": time(record.time_received),
        "time_flow_start": time(record.time_flow_start),
        "time_flow_end": time(record.time_flow_end),
        "exporter_address": from_v6(record.exporter_address).to_string(),
        "observation_domain": record.observation_domain,
        "flow_type": record.flow_type.as_str(),
        "sampling_rate": record.sampling_rate,
        "sampling_source": record.sampling_source.as_str(),
        "src_addr": from_v6(record.src_addr).to_string(),
        "dst_addr": from_v6(record.dst_addr).to_string(),
        "src_port": record.src_port,
        "dst_port": record.dst_port,
        "proto": record.proto,
        "bytes": record.bytes,
        "packets": record.packets,
        "in_if": record.in_if,
        "out_if": record.out_if,
        "src_as": record.src_as,
        "dst_as": record.dst_as,
        "src_mask": record.src_mask,
        "dst_mask": record.dst_mask,
        "next_hop": from_v6(record.next_hop).to_string(),
        "tcp_flags": record.tcp_flags,
        "tos": record.tos,
        "vlan": record.vlan,
        "etype": record.etype,
        "direction": record.direction.as_str(),
    });
    // The classification columns (set by enrich; `egress decode` does not classify). A second
    // object because one `json!` of every column exceeds the macro recursion limit.
    let classification = serde_json::json!({
        "traffic_direction": record.traffic_direction.as_str(),
        "egress_path": record.egress_path,
        "exporter_name": record.exporter_name,
        "exporter_site": record.exporter_site,
        "in_if_name": record.in_if_name,
        "out_if_name": record.out_if_name,
        "in_if_role": record.in_if_role.as_str(),
        "out_if_role": record.out_if_role.as_str(),
        "in_if_kind": record.in_if_kind.as_str(),
        "out_if_kind": record.out_if_kind.as_str(),
        "in_if_provider": record.in_if_provider,
        "out_if_provider": record.out_if_provider,
        "src_internal": record.src_internal,
        "dst_internal": record.dst_internal,
        "dst_cloud": record.dst_cloud,
    });
    // Latency from the exporter: `null` when not exported, never 0.
    let latency = serde_json::json!({
        "rtt_client_us": record.rtt_client_us,
        "rtt_server_us": record.rtt_server_us,
        "rtt_app_us": record.rtt_app_us,
        "rtt_source": record.rtt_source.as_str(),
    });
    if let Some(object) = value.as_object_mut() {
        for more in [classification, latency] {
            if let serde_json::Value::Object(more) = more {
                object.extend(more);
            }
        }
    }
    value
}

/// An interface counter sample as JSON (`interface_counters` column names).
pub fn counter_json(record: &InterfaceCounterRecord) -> serde_json::Value {
    use crate::normalise::from_v6;
    let mut value = serde_json::to_value(record).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "exporter_address".into(),
            from_v6(record.exporter_address).to_string().into(),
        );
        object.insert(
            "agent_address".into(),
            from_v6(record.agent_address).to_string().into(),
        );
    }
    value
}

/// Writes flows as a fixed-width table with a header line.
pub fn write_table(out: &mut impl std::io::Write, flows: &[FlowRecord]) -> std::io::Result<()> {
    use crate::normalise::from_v6;
    writeln!(
        out,
        "{:<20} {:<15} {:<8} {:>39} {:>5} {:>39} {:>5} {:>5} {:>12} {:>9} {:>6} {:>6} {:>8} {:<15}",
        "flow_start",
        "exporter",
        "type",
        "src_addr",
        "sport",
        "dst_addr",
        "dport",
        "proto",
        "bytes",
        "packets",
        "in_if",
        "out_if",
        "rate",
        "sampling_source"
    )?;
    for r in flows {
        let start = chrono::DateTime::from_timestamp(i64::from(r.time_flow_start), 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        writeln!(
            out,
            "{:<20} {:<15} {:<8} {:>39} {:>5} {:>39} {:>5} {:>5} {:>12} {:>9} {:>6} {:>6} {:>8} {:<15}",
            start,
            from_v6(r.exporter_address).to_string(),
            r.flow_type.as_str(),
            from_v6(r.src_addr).to_string(),
            r.src_port,
            from_v6(r.dst_addr).to_string(),
            r.dst_port,
            r.proto,
            r.bytes,
            r.packets,
            r.in_if,
            r.out_if,
            r.sampling_rate,
            r.sampling_source.as_str()
        )?;
    }
    Ok(())
}

/// The human summary `egress decode` prints on stderr.
pub fn summary(path: &Path, decoded: &DecodedCapture) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut text = String::new();
    let c = &decoded.capture;
    let _ = writeln!(text, "{}:", path.display());
    let _ = writeln!(
        text,
        "  datagrams: {} UDP of {} frames (skipped: {} not UDP, {} fragments, {} unparsable)",
        c.udp_datagrams, c.frames, c.skipped_not_udp, c.skipped_fragments, c.skipped_unparsable
    );
    let mut by_type: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for f in &decoded.flows {
        let entry = by_type.entry(f.flow_type.as_str()).or_default();
        entry.0 += 1;
        entry.1 += f.bytes;
        entry.2 += f.packets;
    }
    for (flow_type, (records, bytes, packets)) in &by_type {
        let _ = writeln!(
            text,
            "  records {flow_type}: {records} (bytes {bytes}, packets {packets})"
        );
    }
    if !decoded.counters.is_empty() {
        let _ = writeln!(text, "  interface counter samples: {}", decoded.counters.len());
    }
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &decoded.errors {
        *errors.entry(e.kind.as_str()).or_default() += 1;
    }
    if errors.is_empty() {
        let _ = writeln!(text, "  decode errors: none");
    } else {
        let _ = writeln!(text, "  decode errors: {errors:?}");
        for e in decoded.errors.iter().take(5) {
            let _ = writeln!(text, "    {e}");
        }
    }
    for (exporter, domain, flow_type, id, fields) in &decoded.learned.templates {
        let _ = writeln!(
            text,
            "  template: exporter {exporter} domain {domain} {} id {id} ({fields} fields)",
            flow_type.as_str()
        );
    }
    for (exporter, domain, sampler, rate) in &decoded.learned.sampling_rates {
        let _ = writeln!(
            text,
            "  sampling: exporter {exporter} domain {domain} sampler {sampler} rate {rate}"
        );
    }
    let mut rates: BTreeMap<(u64, &str), u64> = BTreeMap::new();
    for f in &decoded.flows {
        *rates
            .entry((f.sampling_rate, f.sampling_source.as_str()))
            .or_default() += 1;
    }
    for ((rate, source), n) in rates {
        let _ = writeln!(text, "  records with sampling_rate {rate} ({source}): {n}");
    }
    if decoded.held_sets > 0 {
        let _ = writeln!(
            text,
            "  data sets still waiting for a template: {}",
            decoded.held_sets
        );
    }
    text
}
