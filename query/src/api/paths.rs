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
use crate::sla::{Param, SqlQuery};

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

/// What one exporter sent, from `exporter_stats`: [`exporter_activity_query`]'s row.
#[derive(Debug, Row, Deserialize)]
pub(crate) struct ExporterActivity {
    pub(crate) exporter_address: Ipv6Addr,
    /// Datagrams in the counting window.
    pub(crate) datagrams: u64,
    /// Records decoded in the counting window.
    pub(crate) records: u64,
    /// Records the sequence numbers say were lost, in the counting window.
    pub(crate) records_lost: u64,
    /// Decode errors of every kind, in the counting window.
    pub(crate) decode_errors: u64,
    /// Start of the last minute with a row in the whole range (the collector writes a row only
    /// for a minute in which it heard from the exporter).
    pub(crate) last_minute: u32,
}

/// One path in the answer (and a row of the status page).
#[derive(Debug, Serialize)]
pub(crate) struct PathStatus<'a> {
    pub(crate) label: &'a str,
    pub(crate) exporter_address: String,
    pub(crate) exporter_name: &'a str,
    pub(crate) site: &'a str,
    pub(crate) if_index: u32,
    pub(crate) if_name: &'a str,
    pub(crate) provider: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) capacity_bps: Option<u64>,
    pub(crate) throughput_bps: f64,
    pub(crate) utilisation: Option<f64>,
    pub(crate) scaled_bytes: u64,
    pub(crate) scaled_packets: u64,
    pub(crate) records: u64,
    pub(crate) status: &'static str,
}

/// Default window of `GET /api/v1/paths` (seconds); the status page uses it too.
pub(crate) const DEFAULT_WINDOW: u32 = WINDOW.0;

/// Scaled bytes, packets and sampled records per (exporter, output interface) received in
/// `(from, to]`.
pub(crate) fn interface_volumes_query(database: &str, from: u32, to: u32) -> SqlQuery {
    let mut query = SqlQuery::new(
        "paths.volumes",
        format!(
            "SELECT exporter_address, out_if, sum(bytes * sampling_rate) AS scaled_bytes, \
             sum(packets * sampling_rate) AS scaled_packets, count() AS records \
             FROM {database}.{FLOWS_TABLE} \
             WHERE time_received > toDateTime(?) AND time_received <= toDateTime(?) \
             GROUP BY exporter_address, out_if"
        ),
    );
    query.params = vec![Param::U64(from.into()), Param::U64(to.into())];
    query
}

/// Per exporter, the `exporter_stats` minutes in `(seen_from, to]`: counters summed over the
/// minutes after `counted_from` (`counted_from >= seen_from`) and the last minute of the whole
/// range. A stats row covers `[minute, minute + 60)`, so a window `(from, to]` is read with
/// minutes after `from - 60`. The sums are aliased to their column names, so no other
/// expression may name those columns (in ClickHouse an alias shadows its column).
pub(crate) fn exporter_activity_query(
    database: &str,
    seen_from: u32,
    counted_from: u32,
    to: u32,
) -> SqlQuery {
    let counted =
        |column: &str, name: &str| format!("toUInt64(sumIf({column}, minute > toDateTime(?))) AS {name}");
    let mut query = SqlQuery::new(
        "paths.exporter_activity",
        format!(
            "SELECT exporter_address, {}, {}, {}, {}, \
             toUInt32(max(minute)) AS last_minute FROM {database}.{EXPORTER_STATS_TABLE} \
             WHERE minute > toDateTime(?) AND minute <= toDateTime(?) GROUP BY exporter_address",
            counted("datagrams", "datagrams"),
            counted("records", "records"),
            counted("records_lost", "records_lost"),
            counted("arraySum(decode_error_counts)", "decode_errors"),
        ),
    );
    query.params = vec![Param::U64(counted_from.into()); 4];
    query
        .params
        .extend([Param::U64(seen_from.into()), Param::U64(to.into())]);
    query
}

/// Every path of the model with its throughput over `(to - window, to]`, in model order (see
/// the module header for the status).
pub(crate) async fn path_statuses(
    state: &ApiState,
    window: u32,
    to: u32,
) -> Result<Vec<PathStatus<'_>>, ApiError> {
    let from = to.saturating_sub(window);
    let volumes: Vec<InterfaceVolume> = interface_volumes_query(state.database(), from, to)
        .bound(&state.client)
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse("path volumes", e))?;
    let stats_from = from.saturating_sub(60);
    let activity: Vec<ExporterActivity> =
        exporter_activity_query(state.database(), stats_from, stats_from, to)
            .bound(&state.client)
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
    let entries = state
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
    Ok(entries)
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
    let entries = path_statuses(&state, window, to).await?;
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
