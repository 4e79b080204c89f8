//! Liveness, readiness and the metrics endpoint.
//!
//! `/health` answers as long as the process serves HTTP. `/ready` asks ClickHouse `SELECT 1`
//! and answers 503 with the reason when it does not answer within [`super::READY_TIMEOUT`], so a
//! load balancer stops sending queries that could only fail. `/metrics` is the Prometheus text
//! of [`super::ApiMetrics`].

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::error_body;
use super::{ApiState, READY_TIMEOUT};

/// `GET /health`: the process is alive.
pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: ClickHouse answers.
pub(crate) async fn ready(State(state): State<ApiState>) -> Response {
    let query = state.client.query("SELECT 1").fetch_one::<u8>();
    match tokio::time::timeout(READY_TIMEOUT, query).await {
        Ok(Ok(1)) => Json(json!({ "status": "ready" })).into_response(),
        Ok(Ok(other)) => not_ready(&format!("ClickHouse answered SELECT 1 with {other}")),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check: clickhouse failed");
            not_ready("ClickHouse did not answer SELECT 1")
        }
        Err(_) => not_ready(&format!(
            "ClickHouse did not answer SELECT 1 within {} seconds",
            READY_TIMEOUT.as_secs()
        )),
    }
}

fn not_ready(reason: &str) -> Response {
    error_body(StatusCode::SERVICE_UNAVAILABLE, reason)
}

/// `GET /metrics`: the API's own counters.
pub(crate) async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
