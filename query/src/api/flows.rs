//! `GET /api/v1/flows?from=..&to=..&src=..&dst=..&port=..&proto=..&exporter=..&limit=100`: a
//! bounded search of the stored flow records, newest first.
//!
//! In: a time range (`from`, `to` as Unix seconds or RFC 3339; both absent: the last
//! [`DEFAULT_RANGE`] seconds; one absent: that much before `to` or up to now; at most
//! [`MAX_RANGE`] seconds), address filters (`src`, `dst`: an address or a CIDR prefix), a port
//! (source or destination), a protocol (number or name), an exporter (address, or a name from the
//! model) and a limit (1 to [`MAX_LIMIT`]). Out: the matching records as stored (sampled volumes)
//! with the scaled volumes beside them.
//!
//! Addresses are turned into 16-byte ranges in Rust and bound as 32 upper-case hex digits,
//! compared with `hex(column)`: fixed-width upper-case hex sorts like the bytes, and `hex` reads
//! `FixedString(16)` (ClickHouse 18.x) and `IPv6` (current servers) alike. Binding the bytes as
//! `toFixedString(unhex(?), 16)` works on 18.16 but fails on current servers for the columns in
//! the table's sorting key (`exporter_address`): the index analysis parses the constant as IPv6
//! text ("Cannot parse IPv6", checked with chdb 26.9), so it is not used. No address text
//! reaches the SQL either way.

use std::net::{IpAddr, Ipv6Addr};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;

use super::params::{bounded_integer, hex16, protocol, rfc3339, shorten, timestamp, AddressRange, Params};
use super::{now_seconds, ApiError, ApiState};
use crate::schema::{from_v6, to_v6, FlowRow, Label, FLOWS_TABLE};

/// Range searched when neither `from` nor `to` is given (seconds).
pub const DEFAULT_RANGE: u32 = 15 * 60;
/// Longest range one search may cover (seconds).
pub const MAX_RANGE: u32 = 86_400;
/// Most records one search returns.
pub const MAX_LIMIT: u32 = 1_000;
const DEFAULT_LIMIT: u32 = 100;

/// One flow in the answer.
#[derive(Debug, Serialize)]
struct FlowView {
    time_received: String,
    time_flow_start: String,
    time_flow_end: String,
    exporter_address: IpAddr,
    exporter_name: Label,
    observation_domain: u32,
    flow_type: &'static str,
    sampling_rate: u64,
    src_addr: IpAddr,
    dst_addr: IpAddr,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    bytes: u64,
    packets: u64,
    scaled_bytes: u64,
    scaled_packets: u64,
    in_if: u32,
    out_if: u32,
    in_if_name: Label,
    out_if_name: Label,
    src_as: u32,
    dst_as: u32,
    tcp_flags: u8,
    traffic_direction: &'static str,
    egress_path: Label,
    src_internal: bool,
    dst_internal: bool,
    dst_cloud: Label,
}

impl From<FlowRow> for FlowView {
    fn from(flow: FlowRow) -> Self {
        Self {
            time_received: rfc3339(flow.time_received),
            time_flow_start: rfc3339(flow.time_flow_start),
            time_flow_end: rfc3339(flow.time_flow_end),
            exporter_address: from_v6(flow.exporter_address),
            exporter_name: flow.exporter_name,
            observation_domain: flow.observation_domain,
            flow_type: flow.flow_type.as_str(),
            sampling_rate: flow.sampling_rate,
            src_addr: from_v6(flow.src_addr),
            dst_addr: from_v6(flow.dst_addr),
            src_port: flow.src_port,
            dst_port: flow.dst_port,
            proto: flow.proto,
            bytes: flow.bytes,
            packets: flow.packets,
            scaled_bytes: flow.bytes.saturating_mul(flow.sampling_rate),
            scaled_packets: flow.packets.saturating_mul(flow.sampling_rate),
            in_if: flow.in_if,
            out_if: flow.out_if,
            in_if_name: flow.in_if_name,
            out_if_name: flow.out_if_name,
            src_as: flow.src_as,
            dst_as: flow.dst_as,
            tcp_flags: flow.tcp_flags,
            traffic_direction: flow.traffic_direction.as_str(),
            egress_path: flow.egress_path,
            src_internal: flow.src_internal != 0,
            dst_internal: flow.dst_internal != 0,
            dst_cloud: flow.dst_cloud,
        }
    }
}

/// A condition with the values it binds, in placeholder order.
enum Bound {
    U32(u32),
    Text(String),
}

/// `GET /api/v1/flows`.
pub(crate) async fn flows(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::new(
        query,
        &["from", "to", "src", "dst", "port", "proto", "exporter", "limit"],
    )?;
    let (from, to) = time_range(&params, now_seconds())?;
    let limit = params.bounded("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;

    let mut conditions = vec!["time_received >= toDateTime(?) AND time_received < toDateTime(?)"];
    let mut values = vec![Bound::U32(from), Bound::U32(to)];
    let address_conditions = [
        ("src", "hex(src_addr) >= ? AND hex(src_addr) <= ?"),
        ("dst", "hex(dst_addr) >= ? AND hex(dst_addr) <= ?"),
    ];
    for (name, condition) in address_conditions {
        if let Some(text) = params.get(name) {
            let range = AddressRange::parse(name, text)?;
            conditions.push(condition);
            values.push(Bound::Text(range.first_hex()));
            values.push(Bound::Text(range.last_hex()));
        }
    }
    if let Some(text) = params.get("port") {
        let port = bounded_integer("port", text, 0, u32::from(u16::MAX))?;
        conditions.push("(src_port = ? OR dst_port = ?)");
        values.push(Bound::U32(port));
        values.push(Bound::U32(port));
    }
    if let Some(text) = params.get("proto") {
        conditions.push("proto = ?");
        values.push(Bound::U32(u32::from(protocol("proto", text)?)));
    }
    if let Some(text) = params.get("exporter") {
        conditions.push("hex(exporter_address) = ?");
        values.push(Bound::Text(hex16(exporter_address(&state, text)?)));
    }

    let sql = format!(
        "SELECT ?fields FROM {} WHERE {} ORDER BY time_received DESC LIMIT ?",
        state.table(FLOWS_TABLE),
        conditions.join(" AND ")
    );
    let mut query = state.client.query(&sql);
    for value in values {
        query = match value {
            Bound::U32(number) => query.bind(number),
            Bound::Text(text) => query.bind(text),
        };
    }
    let rows: Vec<FlowRow> = query
        .bind(limit)
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse("flow search", e))?;
    let truncated = rows.len() == limit as usize;
    let flows: Vec<FlowView> = rows.into_iter().map(FlowView::from).collect();
    Ok(Json(serde_json::json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "limit": limit,
        "truncated": truncated,
        "flows": flows,
    })))
}

/// `[from, to)` from the parameters, checked: `from` before `to`, at most [`MAX_RANGE`].
fn time_range(params: &Params, now: u32) -> Result<(u32, u32), ApiError> {
    let from = params
        .get("from")
        .map(|text| timestamp("from", text))
        .transpose()?;
    let to = params.get("to").map(|text| timestamp("to", text)).transpose()?;
    let (from, to) = match (from, to) {
        (Some(from), Some(to)) => (from, to),
        (Some(from), None) => (from, now.saturating_add(1)),
        (None, Some(to)) => (to.saturating_sub(DEFAULT_RANGE), to),
        (None, None) => (now.saturating_sub(DEFAULT_RANGE), now.saturating_add(1)),
    };
    if from >= to {
        return Err(ApiError::parameter("from", "must be before `to`"));
    }
    if to - from > MAX_RANGE {
        return Err(ApiError::parameter(
            "from",
            format!("the range from `from` to `to` is longer than {MAX_RANGE} seconds"),
        ));
    }
    Ok((from, to))
}

/// The exporter named by `text`: an address, or the name of an exporter of the model.
fn exporter_address(state: &ApiState, text: &str) -> Result<Ipv6Addr, ApiError> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(to_v6(address));
    }
    state
        .paths
        .iter()
        .find(|path| !path.exporter_name.is_empty() && path.exporter_name == text)
        .map(|path| to_v6(path.exporter_address))
        .ok_or_else(|| {
            ApiError::parameter(
                "exporter",
                format!(
                    "{:?} is neither an address nor an exporter name of the model",
                    shorten(text)
                ),
            )
        })
}
