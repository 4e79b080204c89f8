//! SLA status and history from `sla_results`.
//!
//! `GET /api/v1/slas`: the latest result per SLA × subject among the results of the last
//! [`LATEST_LOOKBACK`] seconds, plus the configured SLAs without any result in that time
//! (`not_evaluated`; their state is unknown, never "ok").
//!
//! `GET /api/v1/slas/{name}/history?window=86400&subject=..`: every result of one SLA (and one
//! subject, if given) in the window, oldest first, at most the newest [`MAX_POINTS`]. `name` must be one of the
//! configured SLAs (404 otherwise), so the allow-list is the configuration itself; `subject` is
//! checked for plain characters and then bound.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::params::{label_text, rfc3339, Params};
use super::{now_seconds, ApiError, ApiState};
use crate::schema::SLA_RESULTS_TABLE;
use crate::sla::{Param, SqlQuery};

/// How far back `/api/v1/slas` looks for the latest result (seconds).
pub const LATEST_LOOKBACK: u32 = 86_400;
/// Most results one history answer holds.
pub const MAX_POINTS: u32 = 10_000;
/// Default and bounds of the history `window` (seconds).
const WINDOW: (u32, u32, u32) = (86_400, 60, 31 * 86_400);

/// The columns read, in this order (`verdict` as its name).
const COLUMNS: &str = "time, sla, kind, subject, labels_keys, labels_values, value, threshold, \
                       toString(verdict) AS verdict_name, samples, details";

/// One row of `sla_results` as read through [`COLUMNS`].
#[derive(Debug, Row, Deserialize)]
pub(crate) struct ResultRow {
    pub(crate) time: u32,
    pub(crate) sla: String,
    pub(crate) kind: String,
    pub(crate) subject: String,
    pub(crate) labels_keys: Vec<String>,
    pub(crate) labels_values: Vec<String>,
    pub(crate) value: f64,
    pub(crate) threshold: f64,
    /// `ok`, `breach` or `no_data`.
    pub(crate) verdict_name: String,
    pub(crate) samples: u64,
    /// JSON text (empty when none).
    pub(crate) details: String,
}

/// One result in an answer.
#[derive(Debug, Serialize)]
struct ResultView {
    time: String,
    sla: String,
    kind: String,
    subject: String,
    labels: BTreeMap<String, String>,
    value: f64,
    threshold: f64,
    verdict: String,
    samples: u64,
    details: serde_json::Value,
}

impl From<ResultRow> for ResultView {
    fn from(row: ResultRow) -> Self {
        Self {
            time: rfc3339(row.time),
            labels: row.labels_keys.into_iter().zip(row.labels_values).collect(),
            details: if row.details.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&row.details).unwrap_or(serde_json::Value::String(row.details))
            },
            sla: row.sla,
            kind: row.kind,
            subject: row.subject,
            value: row.value,
            threshold: row.threshold,
            verdict: row.verdict_name,
            samples: row.samples,
        }
    }
}

/// The latest result per SLA and subject among the results after `since`, ordered by SLA and
/// subject.
pub(crate) fn latest_query(database: &str, since: u32) -> SqlQuery {
    let table = format!("{database}.{SLA_RESULTS_TABLE}");
    let mut query = SqlQuery::new(
        "slas.latest",
        format!(
            "SELECT {COLUMNS} FROM {table} WHERE time > toDateTime(?) AND (sla, subject, time) IN \
             (SELECT sla, subject, max(time) FROM {table} WHERE time > toDateTime(?) GROUP BY sla, subject) \
             ORDER BY sla, subject"
        ),
    );
    query.params = vec![Param::U64(since.into()), Param::U64(since.into())];
    query
}

/// `GET /api/v1/slas`.
pub(crate) async fn latest(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Params::new(query, &[])?;
    let since = now_seconds().saturating_sub(LATEST_LOOKBACK);
    let rows: Vec<ResultRow> = latest_query(state.database(), since)
        .bound(&state.client)
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse("latest SLA results", e))?;
    let not_evaluated: Vec<&String> = state
        .sla_names
        .iter()
        .filter(|name| !rows.iter().any(|row| &row.sla == *name))
        .collect();
    let results: Vec<ResultView> = rows.into_iter().map(ResultView::from).collect();
    Ok(Json(serde_json::json!({
        "since": rfc3339(since),
        "results": results,
        "not_evaluated": not_evaluated,
    })))
}

/// `GET /api/v1/slas/{name}/history`.
pub(crate) async fn history(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = label_text("name", &name)?;
    if !state.sla_names.contains(&name) {
        return Err(ApiError::NotFound(format!("no SLA named {name:?} is configured")));
    }
    let params = Params::new(query, &["window", "subject"])?;
    let window = params.bounded("window", WINDOW.0, WINDOW.1, WINDOW.2)?;
    let subject = params
        .get("subject")
        .map(|text| label_text("subject", text))
        .transpose()?;
    let to = now_seconds();
    let from = to.saturating_sub(window);

    let mut sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE sla = ? AND time > toDateTime(?) AND time <= toDateTime(?)",
        state.table(SLA_RESULTS_TABLE)
    );
    if subject.is_some() {
        sql.push_str(" AND subject = ?");
    }
    // Newest first so that a truncated answer keeps the latest points; reversed below.
    sql.push_str(" ORDER BY time DESC, subject DESC LIMIT ?");
    let mut query = state.client.query(&sql).bind(&name).bind(from).bind(to);
    if let Some(subject) = &subject {
        query = query.bind(subject);
    }
    let rows: Vec<ResultRow> = query
        .bind(MAX_POINTS)
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse("SLA history", e))?;
    let truncated = rows.len() == MAX_POINTS as usize;
    let results: Vec<ResultView> = rows.into_iter().rev().map(ResultView::from).collect();
    Ok(Json(serde_json::json!({
        "sla": name,
        "subject": subject,
        "window_seconds": window,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "truncated": truncated,
        "results": results,
    })))
}
