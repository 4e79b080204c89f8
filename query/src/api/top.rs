//! `GET /api/v1/top?by=..&window=3600&limit=10&direction=outbound`: the largest talkers.
//!
//! In: a dimension ([`TopDimension`], an allow-list whose members map to fixed SQL fragments), a
//! window, a limit and a traffic direction. Out: the top `limit` keys by scaled bytes (bytes ×
//! sampling rate) over the window, with scaled packets and the number of sampled records behind
//! each, largest first.
//!
//! `direction` defaults to `outbound` (egress is what Egress watches); `any` counts every flow.
//! `by=path` only counts flows with an egress path, which are outbound by definition.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::params::{rfc3339, Choice, Params};
use super::{now_seconds, ApiError, ApiState};
use crate::schema::{from_v6, FLOWS_TABLE};

/// Default and bounds of `window` (seconds).
const WINDOW: (u32, u32, u32) = (3_600, 60, 7 * 86_400);
/// Default and bounds of `limit`.
const LIMIT: (u32, u32, u32) = (10, 1, 1_000);

/// What `top` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopDimension {
    SrcHost,
    DstHost,
    DstAs,
    Path,
    DstPort,
    SrcPort,
    Proto,
    Exporter,
}

impl Choice for TopDimension {
    const ALL: &'static [Self] = &[
        Self::SrcHost,
        Self::DstHost,
        Self::DstAs,
        Self::Path,
        Self::DstPort,
        Self::SrcPort,
        Self::Proto,
        Self::Exporter,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::SrcHost => "src_host",
            Self::DstHost => "dst_host",
            Self::DstAs => "dst_as",
            Self::Path => "path",
            Self::DstPort => "dst_port",
            Self::SrcPort => "src_port",
            Self::Proto => "proto",
            Self::Exporter => "exporter",
        }
    }
}

impl TopDimension {
    /// The grouping key as a `String` expression, on every server generation.
    fn key_sql(self) -> &'static str {
        match self {
            Self::SrcHost => "IPv6NumToString(src_addr)",
            Self::DstHost => "IPv6NumToString(dst_addr)",
            Self::DstAs => "toString(dst_as)",
            Self::Path => "egress_path",
            Self::DstPort => "toString(dst_port)",
            Self::SrcPort => "toString(src_port)",
            Self::Proto => "toString(proto)",
            Self::Exporter => "IPv6NumToString(exporter_address)",
        }
    }

    /// An extra condition the dimension needs.
    fn condition_sql(self) -> &'static str {
        match self {
            Self::Path => " AND egress_path != ''",
            _ => "",
        }
    }

    /// The key as JSON: numbers for AS, ports and protocols; addresses with IPv4 unmapped.
    fn key_json(self, key: &str) -> serde_json::Value {
        match self {
            Self::DstAs | Self::DstPort | Self::SrcPort | Self::Proto => key
                .parse::<u64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| key.into()),
            Self::SrcHost | Self::DstHost | Self::Exporter => key
                .parse()
                .map(|address| from_v6(address).to_string().into())
                .unwrap_or_else(|_| key.into()),
            Self::Path => key.into(),
        }
    }
}

/// The `direction` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectionFilter {
    Outbound,
    Inbound,
    Any,
}

impl Choice for DirectionFilter {
    const ALL: &'static [Self] = &[Self::Outbound, Self::Inbound, Self::Any];

    fn name(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
            Self::Any => "any",
        }
    }
}

impl DirectionFilter {
    fn condition_sql(self) -> &'static str {
        match self {
            Self::Outbound => " AND traffic_direction = 'outbound'",
            Self::Inbound => " AND traffic_direction = 'inbound'",
            Self::Any => "",
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct TopRow {
    top_key: String,
    scaled_bytes: u64,
    scaled_packets: u64,
    records: u64,
}

#[derive(Debug, Serialize)]
struct TopEntry {
    key: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    exporter_name: Option<String>,
    scaled_bytes: u64,
    scaled_packets: u64,
    records: u64,
}

/// `GET /api/v1/top`.
pub(crate) async fn top(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::new(query, &["by", "window", "limit", "direction"])?;
    if params.get("by").is_none() {
        let names: Vec<&str> = TopDimension::ALL.iter().map(|by| by.name()).collect();
        return Err(ApiError::parameter(
            "by",
            format!("is required: one of {}", names.join(", ")),
        ));
    }
    let by: TopDimension = params.choice("by", TopDimension::SrcHost)?;
    let window = params.bounded("window", WINDOW.0, WINDOW.1, WINDOW.2)?;
    let limit = params.bounded("limit", LIMIT.0, LIMIT.1, LIMIT.2)?;
    let direction = params.choice("direction", DirectionFilter::Outbound)?;
    let to = now_seconds();
    let from = to.saturating_sub(window);

    // Every fragment formatted here is a `&'static str` chosen by an enum; values are bound.
    let sql = format!(
        "SELECT {key} AS top_key, sum(bytes * sampling_rate) AS scaled_bytes, \
         sum(packets * sampling_rate) AS scaled_packets, count() AS records FROM {table} \
         WHERE time_received > toDateTime(?) AND time_received <= toDateTime(?){dimension}{direction} \
         GROUP BY top_key ORDER BY scaled_bytes DESC, top_key LIMIT ?",
        key = by.key_sql(),
        table = state.table(FLOWS_TABLE),
        dimension = by.condition_sql(),
        direction = direction.condition_sql(),
    );
    let rows: Vec<TopRow> = state
        .client
        .query(&sql)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse("top", e))?;
    let entries: Vec<TopEntry> = rows
        .into_iter()
        .map(|row| {
            let key = by.key_json(&row.top_key);
            let exporter_name = (by == TopDimension::Exporter).then(|| exporter_name(&state, &key));
            TopEntry {
                key,
                exporter_name,
                scaled_bytes: row.scaled_bytes,
                scaled_packets: row.scaled_packets,
                records: row.records,
            }
        })
        .collect();
    Ok(Json(serde_json::json!({
        "by": by.name(),
        "direction": direction.name(),
        "window_seconds": window,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "top": entries,
    })))
}

/// The model's name of the exporter whose address is `key` ('' when not in the model).
fn exporter_name(state: &ApiState, key: &serde_json::Value) -> String {
    let address = key
        .as_str()
        .and_then(|text| text.parse::<std::net::IpAddr>().ok());
    state
        .paths
        .iter()
        .find(|path| Some(path.exporter_address) == address)
        .map(|path| path.exporter_name.clone())
        .unwrap_or_default()
}
