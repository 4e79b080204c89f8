//! `GET /api/v1/paths?window=300`: every egress path of the model with its current throughput.
//!
//! In: the model's paths ([`super::PathInfo`]) and two aggregates over the window: scaled bytes,
//! packets and sampled records per (exporter, output interface) from `flows`, and datagrams per
//! exporter from `exporter_stats`. Out: one entry per path, in model order, with throughput
//! (scaled bytes × 8 ÷ window, bit/s), utilisation (÷ capacity; `null` without a capacity) and a
//! status:
//! - `ok`: sampled records left through the path in the window;
//! - `idle`: none did, but the exporter sent datagrams (a quiet path, really at 0);
//! - `no_data`: the exporter sent nothing in the window, so 0 means "unknown", not "idle" (a
//!   silent exporter is never read as zero traffic).
//!
//! The path is matched by exporter address and `out_if` rather than by `flows.egress_path`, so that
//! renaming an interface in the model does not hide the traffic recorded under its old label.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::params::{rfc3339, Params};
use super::{now_seconds, ApiError, ApiState};
use crate::schema::{to_v6, EXPORTER_STATS_TABLE, FLOWS_TABLE};

/// Default and bounds of `window` (seconds).
const WINDOW: (u32, u32, u32) = (300, 60, 86_400);

#[derive(Debug, Row, Deserialize)]
struct InterfaceVolume {
    exporter_address: Ipv6Addr,
    out_if: u32,
    scaled_bytes: u64,
    scaled_packets: u64,
    records: u64,
}

#[derive(Debug, Row, Deserialize)]
struct ExporterActivity {
    exporter_address: Ipv6Addr,
    datagrams: u64,
}

/// One path in the answer.
#[derive(Debug, Serialize)]
struct PathStatus<'a> {
    label: &'a str,
    exporter_address: String,
    exporter_name: &'a str,
    site: &'a str,
    if_index: u32,
    if_name: &'a str,
    provider: &'a str,
    kind: &'a str,
    capacity_bps: Option<u64>,
    throughput_bps: f64,
    utilisation: Option<f64>,
    scaled_bytes: u64,
    scaled_packets: u64,
    records: u64,
    status: &'static str,
}

/// `GET /api/v1/paths`.
pub(crate) async fn paths(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::new(query, &["window"])?;
    let (default, min, max) = WINDOW;
    let window = params.bounded("window", default, min, max)?;
    let to = now_seconds();
    let from = to.saturating_sub(window);

    let volumes: Vec<InterfaceVolume> = state
        .client
        .query(&format!(
            "SELECT exporter_address, out_if, sum(bytes * sampling_rate) AS scaled_bytes, \
             sum(packets * sampling_rate) AS scaled_packets, count() AS records \
             FROM {} WHERE time_received > toDateTime(?) AND time_received <= toDateTime(?) \
             GROUP BY exporter_address, out_if",
            state.table(FLOWS_TABLE)
        ))
        .bind(from)
        .bind(to)
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse("path volumes", e))?;
    // A stats row covers [minute, minute + 60): it overlaps the window when minute > from - 60.
    let activity: Vec<ExporterActivity> = state
        .client
        .query(&format!(
            "SELECT exporter_address, sum(datagrams) AS datagrams FROM {} \
             WHERE minute > toDateTime(?) AND minute <= toDateTime(?) GROUP BY exporter_address",
            state.table(EXPORTER_STATS_TABLE)
        ))
        .bind(from.saturating_sub(60))
        .bind(to)
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse("exporter activity", e))?;

    let volumes: HashMap<(Ipv6Addr, u32), &InterfaceVolume> = volumes
        .iter()
        .map(|v| ((v.exporter_address, v.out_if), v))
        .collect();
    let datagrams: HashMap<Ipv6Addr, u64> = activity
        .iter()
        .map(|a| (a.exporter_address, a.datagrams))
        .collect();
    let entries: Vec<PathStatus> = state
        .paths
        .iter()
        .map(|path| {
            let exporter = to_v6(path.exporter_address);
            let volume = volumes.get(&(exporter, path.if_index));
            let (scaled_bytes, scaled_packets, records) = volume
                .map(|v| (v.scaled_bytes, v.scaled_packets, v.records))
                .unwrap_or((0, 0, 0));
            let status = if records > 0 {
                "ok"
            } else if datagrams.get(&exporter).copied().unwrap_or(0) > 0 {
                "idle"
            } else {
                "no_data"
            };
            let throughput_bps = scaled_bytes as f64 * 8.0 / f64::from(window);
            PathStatus {
                label: &path.label,
                exporter_address: path.exporter_address.to_string(),
                exporter_name: &path.exporter_name,
                site: &path.site,
                if_index: path.if_index,
                if_name: &path.if_name,
                provider: &path.provider,
                kind: &path.kind,
                capacity_bps: path.capacity_bps,
                throughput_bps,
                utilisation: path
                    .capacity_bps
                    .filter(|&capacity| capacity > 0)
                    .map(|capacity| throughput_bps / capacity as f64),
                scaled_bytes,
                scaled_packets,
                records,
                status,
            }
        })
        .collect();
    Ok(Json(serde_json::json!({
        "window_seconds": window,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "paths": entries,
    })))
}

/// `GET /api/v1/paths/p95?month=YYYY-MM`: the month's 95th percentile of 5-minute rates of
/// every path with a capacity, from the per-minute path rollup (empty buckets count as 0), with
/// its committed rate. The default month is the current one, up to now.
pub(crate) async fn p95(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::new(query, &["month"])?;
    let now = now_seconds();
    let (year, month) = match params.get("month") {
        Some(text) => parse_month(text)?,
        None => {
            let today = chrono::DateTime::from_timestamp(i64::from(now), 0).unwrap_or_default();
            (chrono::Datelike::year(&today), chrono::Datelike::month(&today))
        }
    };
    let paths: Vec<crate::sla::PathCapacity> = state
        .paths
        .iter()
        .filter_map(|p| {
            Some(crate::sla::PathCapacity {
                label: p.label.clone(),
                exporter: p.exporter_address,
                exporter_name: p.exporter_name.clone(),
                if_index: p.if_index,
                capacity_bps: p.capacity_bps.filter(|c| *c > 0)?,
            })
        })
        .collect();
    let committed: std::collections::BTreeMap<String, u64> = state
        .paths
        .iter()
        .filter_map(|p| Some((p.label.clone(), p.committed_bps?)))
        .collect();
    let ctx = crate::sla::EvalContext {
        now,
        database: state.database.to_string(),
        paths,
        exporters: Vec::new(),
        query_timeout: std::time::Duration::from_secs(10),
    };
    let figures = crate::sla::throughput::p95_report(&state.client, &ctx, year, month, &committed)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "p95 report failed");
            ApiError::Unavailable("the p95 report could not be computed; try again later".to_owned())
        })?;
    Ok(Json(serde_json::json!({
        "month": format!("{year:04}-{month:02}"),
        "paths": figures,
    })))
}

/// `YYYY-MM` with a month from 01 to 12 and a year from 2000 to 2100.
fn parse_month(text: &str) -> Result<(i32, u32), ApiError> {
    let bad = || ApiError::BadRequest("parameter `month`: expected YYYY-MM, e.g. 2026-11".to_owned());
    let (year, month) = text.split_once('-').ok_or_else(bad)?;
    if year.len() != 4 || month.len() != 2 || !text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Err(bad());
    }
    let year: i32 = year.parse().map_err(|_| bad())?;
    let month: u32 = month.parse().map_err(|_| bad())?;
    if !(2000..=2100).contains(&year) || !(1..=12).contains(&month) {
        return Err(bad());
    }
    Ok((year, month))
}
