//! `POST /api/v1/trace`: a hop trace through one egress path, on demand.
//!
//! In: a JSON body `{"path": "...", "target": "host" or "host:port", "max_hops": 16}` and the
//! [`HopTracer`] given to [`super::ApiState::with_tracer`] (the collector's prober, which knows
//! each path's source binding and may open raw sockets). Out: `{"path", "target", "hops":
//! [{"ttl", "address", "rtt_ms"}]}`, `address` and `rtt_ms` null for a hop that did not answer.
//! Without a tracer (the prober is not configured in this process) the route answers 503.
//!
//! `GET /api/v1/trace?path=...`: the last trace made through that path (or, without `path`,
//! the last of every path), whoever asked for it: this API, or the monitor when a path's latency
//! alert started firing. [`RecordingTracer`] wraps the prober's tracer and keeps the newest
//! trace per path in memory (one per path, so bounded by the configured paths); it is gone at
//! restart, while the traces attached to alerts stay in the alert state. 404 when the path has
//! no trace yet.
//!
//! A trace is blocking socket work (one datagram per TTL, each waiting up to
//! [`HOP_TIMEOUT`]); it runs on a blocking thread, and [`MAX_HOPS`] × [`HOP_TIMEOUT`] stays
//! inside the API's request timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::params::{label_text, rfc3339, Params};
use super::{now_seconds, ApiError, ApiState};
use crate::probes::Hop;

/// Most hops one trace may ask for (and the default).
pub const MAX_HOPS: u8 = 16;
/// How long a hop trace waits for each hop's answer.
pub const HOP_TIMEOUT: Duration = Duration::from_millis(400);

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The path is not one the tracer probes (it has no binding for it).
    #[error("path {0:?} is not a probed egress path")]
    UnknownPath(String),
    /// The target does not parse or resolve.
    #[error("target: {0}")]
    BadTarget(String),
    /// The trace itself failed (socket not permitted, IPv6 target, ...).
    #[error("trace failed: {0}")]
    Failed(String),
}

/// Makes hop traces through an egress path; implemented by the collector's prober.
pub trait HopTracer: Send + Sync + std::fmt::Debug {
    /// Traces from `path`'s binding to `target` (`host` or `host:port`; the port is ignored),
    /// at most `max_hops` hops, waiting `hop_timeout` for each. Blocking.
    fn trace(
        &self,
        path: &str,
        target: &str,
        max_hops: u8,
        hop_timeout: Duration,
    ) -> Result<Vec<Hop>, TraceError>;
}

/// The newest trace through one path, as `GET /api/v1/trace` shows it.
#[derive(Debug, Clone)]
struct LastTrace {
    target: String,
    /// Unix seconds when the trace finished.
    time: u32,
    outcome: Result<Vec<Hop>, String>,
}

/// A [`HopTracer`] that remembers the newest trace through every path (see the module header).
#[derive(Debug)]
pub struct RecordingTracer {
    inner: Arc<dyn HopTracer>,
    last: Mutex<BTreeMap<String, LastTrace>>,
}

impl RecordingTracer {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn HopTracer>) -> Self {
        Self {
            inner,
            last: Mutex::new(BTreeMap::new()),
        }
    }

    /// The newest trace of `path` (every path when `None`) as JSON objects, ordered by path.
    fn last_json(&self, path: Option<&str>) -> Vec<serde_json::Value> {
        let last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        last.iter()
            .filter(|(p, _)| path.is_none_or(|wanted| wanted == p.as_str()))
            .map(|(path, trace)| {
                let mut answer = json!({
                    "path": path,
                    "target": trace.target,
                    "time": rfc3339(trace.time),
                });
                match &trace.outcome {
                    Ok(hops) => answer["hops"] = hops_json(hops),
                    Err(error) => answer["error"] = json!(error),
                }
                answer
            })
            .collect()
    }
}

impl HopTracer for RecordingTracer {
    fn trace(
        &self,
        path: &str,
        target: &str,
        max_hops: u8,
        hop_timeout: Duration,
    ) -> Result<Vec<Hop>, TraceError> {
        let result = self.inner.trace(path, target, max_hops, hop_timeout);
        // A path the tracer does not know is not a path; nothing to remember.
        if !matches!(result, Err(TraceError::UnknownPath(_))) {
            let trace = LastTrace {
                target: target.to_owned(),
                time: now_seconds(),
                outcome: result.as_ref().map(Vec::clone).map_err(ToString::to_string),
            };
            let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            last.insert(path.to_owned(), trace);
        }
        result
    }
}

fn hops_json(hops: &[Hop]) -> serde_json::Value {
    hops.iter()
        .map(|hop| {
            json!({
                "ttl": hop.ttl,
                "address": hop.address.map(|a| a.to_string()),
                "rtt_ms": hop.rtt_us.map(|us| f64::from(us) / 1000.0),
            })
        })
        .collect()
}

/// `GET /api/v1/trace`: the last trace of `path`, or of every path.
pub(crate) async fn last_trace(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::new(query, &["path"])?;
    let path = params.get("path").map(|p| label_text("path", p)).transpose()?;
    let Some(tracer) = state.tracer.clone() else {
        return Err(ApiError::Unavailable(
            "no prober runs in this process: hop traces are not available".to_owned(),
        ));
    };
    let traces = tracer.last_json(path.as_deref());
    match path {
        Some(path) => traces
            .into_iter()
            .next()
            .map(Json)
            .ok_or_else(|| ApiError::NotFound(format!("no trace through path {path:?} yet"))),
        None => Ok(Json(json!({ "traces": traces }))),
    }
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TraceRequest {
    path: String,
    target: String,
    #[serde(default)]
    max_hops: Option<u8>,
}

/// `POST /api/v1/trace`.
pub(crate) async fn trace(
    State(state): State<ApiState>,
    body: Result<Json<TraceRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(request) =
        body.map_err(|rejection| ApiError::BadRequest(format!("body: {}", rejection.body_text())))?;
    let path = label_text("path", &request.path)?;
    let target_ok = !request.target.is_empty()
        && request.target.len() <= 255
        && request
            .target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !target_ok {
        return Err(ApiError::parameter(
            "target",
            "must be a host name or address, optionally with :port",
        ));
    }
    let max_hops = request.max_hops.unwrap_or(MAX_HOPS);
    if !(1..=MAX_HOPS).contains(&max_hops) {
        return Err(ApiError::parameter(
            "max_hops",
            format!("must be 1 to {MAX_HOPS}"),
        ));
    }
    let Some(tracer) = state.tracer.clone() else {
        return Err(ApiError::Unavailable(
            "no prober runs in this process: hop traces are not available".to_owned(),
        ));
    };
    let (trace_path, target) = (path.clone(), request.target.clone());
    let hops = tokio::task::spawn_blocking(move || tracer.trace(&trace_path, &target, max_hops, HOP_TIMEOUT))
        .await
        .map_err(|e| ApiError::Unavailable(format!("trace failed: {e}")))?
        .map_err(|e| match e {
            TraceError::UnknownPath(_) => ApiError::NotFound(e.to_string()),
            TraceError::BadTarget(_) => ApiError::parameter("target", e),
            _ => ApiError::Unavailable(e.to_string()),
        })?;
    Ok(Json(
        json!({ "path": path, "target": request.target, "hops": hops_json(&hops) }),
    ))
}
