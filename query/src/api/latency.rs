//! `GET /api/v1/latency?window=3600&step=60&path=...`: per-path round-trip percentiles over
//! time, from the active probes and from the flows' exporter-measured RTT, as two series per
//! path told apart by `source`.
//!
//! In: the round trips the latency SLA reads (`probes` answered, outbound flows with an RTT;
//! one definition, [`crate::sla::latency`]), over the window ending now, in buckets of `step`
//! seconds. Out: one series per (path, source), ordered by path then source, each with one
//! point per bucket that holds samples (time = bucket start, samples, p50/p95/p99 in ms). A
//! bucket without samples is absent, never a point at 0: no round trip is not a fast one.
//! Failed probes are not round trips; `GET /api/v1/probes` counts them.
//!
//! Bounds: `step` 10..3600 s, `window` up to 7 days and at least one step, at most 1000
//! buckets (`window / step`); `path` is a label ([`label_text`]) bound as a value.
//!
//! `resolution`: `raw` reads the raw rows (exact percentiles, `quantileExact`), `minute` the
//! latency rollup `latency_1m` (t-digest percentiles merged from per-minute states, see
//! [`crate::rollups::latency`]; `step` must then be a multiple of 60 and buckets start on whole
//! minutes). The default, `auto`, is `raw` for windows up to [`RAW_WINDOW_MAX`] and `minute`
//! beyond, where scanning raw flows would be slow. The answer names the resolution it used.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::params::{label_text, rfc3339, Params};
use super::{now_seconds, ApiError, ApiState};
use crate::rollups::latency::percentiles_query as rollup_percentiles_query;
use crate::sla::latency::round_trips_sql;
use crate::sla::{LatencyScope, LatencySource, Param, SqlQuery};

/// Default and bounds of `window` (seconds).
pub(crate) const WINDOW: (u32, u32, u32) = (3_600, 10, 7 * 86_400);
/// Default and bounds of `step` (seconds).
pub(crate) const STEP: (u32, u32, u32) = (60, 10, 3_600);
/// Most buckets one answer may hold per series (`window / step`).
pub(crate) const MAX_BUCKETS: u32 = 1_000;
/// Longest window `resolution=auto` reads from raw rows (one day).
pub(crate) const RAW_WINDOW_MAX: u32 = 86_400;

/// One bucket of one (path, source): [`percentiles_query`]'s row.
#[derive(Debug, Row, Deserialize)]
pub(crate) struct Bucket {
    path: String,
    source: String,
    bucket: u32,
    samples: u64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
}

/// One point of a series.
#[derive(Debug, Serialize)]
pub(crate) struct Point {
    /// Start of the bucket, Unix seconds (the answer shows it as `time`).
    #[serde(skip)]
    pub(crate) bucket: u32,
    pub(crate) time: String,
    pub(crate) samples: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) p99_ms: f64,
}

/// The points of one path from one source.
#[derive(Debug, Serialize)]
pub(crate) struct Series {
    pub(crate) path: String,
    pub(crate) source: String,
    pub(crate) points: Vec<Point>,
}

/// Round-trip percentiles per path, source and bucket of `step` seconds over `(from, to]`, only
/// the path `path` when given, ordered by path, source and bucket.
pub(crate) fn percentiles_query(
    database: &str,
    path: Option<&str>,
    from: u32,
    to: u32,
    step: u32,
) -> SqlQuery {
    let percentile =
        |level: &str, name: &str| format!("toFloat64(quantileExact({level})(round_trip_us)) AS {name}");
    let mut sql = SqlQuery::new(
        "latency.api",
        format!(
            "SELECT path, source, toUInt32(intDiv(toUInt32(time), ?) * ?) AS bucket, \
             toUInt64(count()) AS samples, {}, {}, {} FROM ",
            percentile("0.5", "p50_us"),
            percentile("0.95", "p95_us"),
            percentile("0.99", "p99_us"),
        ),
    );
    sql.params = vec![Param::U64(step.into()), Param::U64(step.into())];
    let paths: Vec<String> = path.map(str::to_owned).into_iter().collect();
    // The API's window is (now - window, now], like the other routes.
    round_trips_sql(
        &mut sql,
        LatencySource::Both,
        LatencyScope::Path,
        &paths,
        database,
        u64::from(from) + 1,
        u64::from(to) + 1,
    );
    sql.push(
        " WHERE answered = 1 GROUP BY path, source, bucket ORDER BY path, source, bucket",
        [],
    );
    sql
}

/// [`percentiles_query`] from the latency rollup: the whole minutes from the one holding
/// `from + 1` to the one holding `to`, t-digest percentiles (see [`crate::rollups::latency`]).
pub(crate) fn minute_percentiles_query(
    database: &str,
    path: Option<&str>,
    from: u32,
    to: u32,
    step: u32,
) -> SqlQuery {
    let path_filter = if path.is_some() {
        " AND egress_path = ?"
    } else {
        ""
    };
    let mut sql = SqlQuery::new(
        "latency.api.minute",
        rollup_percentiles_query(database, path_filter),
    );
    sql.params = vec![
        Param::U64(step.into()),
        Param::U64(step.into()),
        Param::U64(u64::from(from + 1) / 60 * 60),
        Param::U64(u64::from(to) / 60 * 60 + 60),
    ];
    sql.params.extend(path.map(|p| Param::Str(p.to_owned())));
    sql
}

/// The rows of [`percentiles_query`] as one series per (path, source), in the rows' order.
pub(crate) fn series(rows: Vec<Bucket>) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for row in rows {
        let point = Point {
            bucket: row.bucket,
            time: rfc3339(row.bucket),
            samples: row.samples,
            p50_ms: row.p50_us / 1000.0,
            p95_ms: row.p95_us / 1000.0,
            p99_ms: row.p99_us / 1000.0,
        };
        match series.last_mut() {
            Some(last) if last.path == row.path && last.source == row.source => last.points.push(point),
            _ => series.push(Series {
                path: row.path,
                source: row.source,
                points: vec![point],
            }),
        }
    }
    series
}

/// `GET /api/v1/latency`.
pub(crate) async fn latency(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::new(query, &["window", "step", "path", "resolution"])?;
    let window = params.bounded("window", WINDOW.0, WINDOW.1, WINDOW.2)?;
    let step = params.bounded("step", STEP.0, STEP.1, STEP.2)?;
    if step > window || window / step > MAX_BUCKETS {
        return Err(ApiError::parameter(
            "step",
            format!("must be at most window ({window}) and at least window / {MAX_BUCKETS}"),
        ));
    }
    let path = params.get("path").map(|p| label_text("path", p)).transpose()?;
    let rollup = match params.get("resolution").unwrap_or("auto") {
        "raw" => false,
        "minute" => true,
        "auto" => window > RAW_WINDOW_MAX && step % 60 == 0,
        _ => return Err(ApiError::parameter("resolution", "must be raw, minute or auto")),
    };
    if rollup && step % 60 != 0 {
        return Err(ApiError::parameter(
            "step",
            "must be a multiple of 60 with resolution=minute",
        ));
    }
    let to = now_seconds();
    let from = to.saturating_sub(window);
    let sql = if rollup {
        minute_percentiles_query(state.database(), path.as_deref(), from, to, step)
    } else {
        percentiles_query(state.database(), path.as_deref(), from, to, step)
    };
    let rows: Vec<Bucket> = sql
        .bound(&state.client)
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse("round-trip percentiles", e))?;
    Ok(Json(serde_json::json!({
        "window": window,
        "step": step,
        "resolution": if rollup { "minute" } else { "raw" },
        "from": rfc3339(from),
        "to": rfc3339(to),
        "series": series(rows),
    })))
}
