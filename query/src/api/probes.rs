//! `GET /api/v1/probes?window=900&path=...`: the active probes' results per path, target and
//! method over a window ending now.
//!
//! In: the `probes` table ([`crate::probes`]), one aggregate over the window. Out: one entry per
//! (path, target, method) with the probe count, failures, the p50/p95/p99 round trip of the
//! probes that answered (`null` when none did: an unreachable target has no latency) and the
//! latest probe (time, success, round trip, error). Ordered by path, target, method.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::params::{label_text, rfc3339, Params};
use super::{now_seconds, ApiError, ApiState};
use crate::probes::PROBES_TABLE;

/// Default and bounds of `window` (seconds).
pub(crate) const WINDOW: (u32, u32, u32) = (900, 60, 7 * 86_400);

#[derive(Debug, Row, Deserialize)]
struct TargetProbes {
    path: String,
    target: String,
    method: String,
    probes: u64,
    successes: u64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
    last_time: u32,
    last_success: u8,
    last_rtt_us: u32,
    last_error: String,
}

/// One (path, target, method) in the answer.
#[derive(Debug, Serialize)]
struct ProbeSummary {
    path: String,
    target: String,
    method: String,
    probes: u64,
    failures: u64,
    failure_ratio: f64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    last_time: String,
    last_success: bool,
    last_rtt_ms: Option<f64>,
    last_error: String,
}

/// `GET /api/v1/probes`.
pub(crate) async fn probes(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::new(query, &["window", "path"])?;
    let (default, min, max) = WINDOW;
    let window = params.bounded("window", default, min, max)?;
    let path = params.get("path").map(|p| label_text("path", p)).transpose()?;
    let to = now_seconds();
    let from = to.saturating_sub(window);
    let percentile = |level: &str, name: &str| {
        format!("toFloat64(quantileExactIf({level})(ifNull(rtt_us, 0), success = 1)) AS {name}")
    };
    let sql = format!(
        "SELECT path, target, toString(method) AS method, toUInt64(count()) AS probes, \
         toUInt64(sum(success)) AS successes, {}, {}, {}, toUInt32(max(time)) AS last_time, \
         toUInt8(argMax(success, time)) AS last_success, \
         toUInt32(argMax(ifNull(rtt_us, 0), time)) AS last_rtt_us, argMax(error, time) AS last_error \
         FROM {} WHERE time > toDateTime(?) AND time <= toDateTime(?){} \
         GROUP BY path, target, method ORDER BY path, target, method",
        percentile("0.5", "p50_us"),
        percentile("0.95", "p95_us"),
        percentile("0.99", "p99_us"),
        state.table(PROBES_TABLE),
        if path.is_some() { " AND path = ?" } else { "" }
    );
    let mut request = state.client.query(&sql).bind(from).bind(to);
    if let Some(path) = &path {
        request = request.bind(path.as_str());
    }
    let rows: Vec<TargetProbes> = request
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse("probe results", e))?;
    let entries: Vec<ProbeSummary> = rows
        .into_iter()
        .map(|row| {
            let answered = row.successes > 0;
            let ms = |us: f64| answered.then_some(us / 1000.0);
            let failures = row.probes - row.successes.min(row.probes);
            ProbeSummary {
                failure_ratio: failures as f64 / row.probes.max(1) as f64,
                p50_ms: ms(row.p50_us),
                p95_ms: ms(row.p95_us),
                p99_ms: ms(row.p99_us),
                last_time: rfc3339(row.last_time),
                last_success: row.last_success == 1,
                last_rtt_ms: (row.last_success == 1).then_some(f64::from(row.last_rtt_us) / 1000.0),
                last_error: row.last_error,
                path: row.path,
                target: row.target,
                method: row.method,
                probes: row.probes,
                failures,
            }
        })
        .collect();
    Ok(Json(serde_json::json!({
        "window": window,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "source": "probes",
        "probes": entries,
    })))
}
