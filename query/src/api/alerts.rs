//! Alerts and silences, through the [`AlertsView`] trait that the monitor implements on top of
//! the alerts crate (the API does not depend on it).
//!
//! In: `GET /api/v1/alerts`, `GET /api/v1/silences`, `POST /api/v1/silences` (a JSON
//! [`NewSilence`]), `DELETE /api/v1/silences/{id}`. Out: plain serde types mirroring
//! the alerts crate's (snake_case fields, RFC 3339 times; matchers in Alertmanager's API v2 shape
//! with `isRegex` / `isEqual`), so the monitor maps them one to one.
//!
//! The API checks the shape of a silence (label names, lengths, time order, at most
//! [`MAX_MATCHERS`] matchers); the implementation checks the rest (regular expressions) and
//! answers [`AlertsViewError::Invalid`], which becomes a 400.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::error_body;
use super::{ApiError, ApiState};

/// Most matchers one silence may have.
pub const MAX_MATCHERS: usize = 32;

/// The alert state and silences, as the API needs them. Implementations keep them in memory
/// (calls must return quickly; they run on the async executor).
pub trait AlertsView: Send + Sync {
    /// Every alert that is pending, firing, or resolved and still remembered.
    fn alerts(&self) -> Result<Vec<AlertView>, AlertsViewError>;
    /// Every silence, active, pending or expired (and still remembered).
    fn silences(&self) -> Result<Vec<SilenceView>, AlertsViewError>;
    /// Stores a new silence and returns its id.
    fn create_silence(&self, silence: NewSilence) -> Result<String, AlertsViewError>;
    /// Ends the silence `id` now.
    fn expire_silence(&self, id: &str) -> Result<(), AlertsViewError>;
}

/// Why an [`AlertsView`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AlertsViewError {
    /// The silence is not acceptable (e.g. a matcher's regular expression does not compile);
    /// the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// No silence has this id.
    #[error("no silence with id {0:?}")]
    NotFound(String),
    /// The state cannot be read or written now (e.g. persisting failed).
    #[error("{0}")]
    Unavailable(String),
}

impl From<AlertsViewError> for ApiError {
    fn from(error: AlertsViewError) -> Self {
        match error {
            AlertsViewError::Invalid(message) => ApiError::BadRequest(message),
            AlertsViewError::NotFound(_) => ApiError::NotFound(error.to_string()),
            AlertsViewError::Unavailable(message) => {
                tracing::warn!(%message, "alert state unavailable");
                ApiError::Unavailable("the alert state is unavailable; try again later".to_owned())
            }
        }
    }
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Breaching, but not yet for the rule's `for` duration.
    Pending,
    /// Notified.
    Firing,
    /// No longer breaching; the resolution is (or was) notified.
    Resolved,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// Alertmanager-compatible fingerprint of the labels (16 hex digits).
    pub fingerprint: String,
    /// Identity: `alertname` (the SLA), `severity`, subject labels, user labels.
    pub labels: BTreeMap<String, String>,
    /// Description, summary, value, threshold...
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    /// When the alert became active (pending).
    pub starts_at: DateTime<Utc>,
    /// When it resolved; `None` while active.
    pub ends_at: Option<DateTime<Utc>>,
    /// The measured value at the last evaluation.
    pub value: f64,
    /// The SLA's threshold at the last evaluation, when it has one.
    pub threshold: Option<f64>,
    /// Ids of the silences that currently mute it (empty: notifications are sent).
    pub silenced_by: Vec<String>,
}

/// One label matcher of a silence (Alertmanager's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SilenceMatcher {
    /// Label name.
    pub name: String,
    /// Value, or a regular expression when `is_regex`.
    pub value: String,
    /// `value` is a regular expression (anchored at both ends).
    #[serde(default)]
    pub is_regex: bool,
    /// Matches when equal (`=`, `=~`); false negates (`!=`, `!~`).
    #[serde(default = "default_true")]
    pub is_equal: bool,
}

fn default_true() -> bool {
    true
}

/// The body of `POST /api/v1/silences` (the alerts crate's `SilenceRequest` shape: snake_case
/// fields, Alertmanager matchers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// All must match for an alert to be muted; at least one.
    pub matchers: Vec<SilenceMatcher>,
    /// Start of the silence; absent: now.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// End of the silence: after `starts_at`, in the future.
    pub ends_at: DateTime<Utc>,
    /// Who created it (free text, 1-200 characters).
    pub created_by: String,
    /// Why (free text, up to 4096 characters).
    #[serde(default)]
    pub comment: String,
}

/// Where a silence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    /// Starts in the future.
    Pending,
    /// Muting now.
    Active,
    /// Ended (its end passed, or it was expired).
    Expired,
}

/// One stored silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceView {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
    pub state: SilenceState,
}

impl NewSilence {
    /// Every shape problem, each naming its field.
    fn validate(&self, now: DateTime<Utc>) -> Result<(), ApiError> {
        let field = |name: &str, problem: &str| ApiError::BadRequest(format!("field `{name}`: {problem}"));
        if self.matchers.is_empty() || self.matchers.len() > MAX_MATCHERS {
            return Err(field("matchers", &format!("give 1 to {MAX_MATCHERS} matchers")));
        }
        for (index, matcher) in self.matchers.iter().enumerate() {
            if !is_label_name(&matcher.name) {
                return Err(field(
                    &format!("matchers[{index}].name"),
                    "must be a label name: letters, digits and `_`, not starting with a digit",
                ));
            }
            if matcher.value.chars().count() > 1024 {
                return Err(field(
                    &format!("matchers[{index}].value"),
                    "longer than 1024 characters",
                ));
            }
        }
        if self.ends_at <= self.starts_at.unwrap_or(now) {
            return Err(field("ends_at", "must be after starts_at (default: now)"));
        }
        let created_by = self.created_by.trim();
        if created_by.is_empty() || created_by.chars().count() > 200 {
            return Err(field("created_by", "must be 1-200 characters"));
        }
        if self.comment.chars().count() > 4096 {
            return Err(field("comment", "longer than 4096 characters"));
        }
        Ok(())
    }
}

/// A Prometheus label name.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// `GET /api/v1/alerts`.
pub(crate) async fn list_alerts(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let alerts = state.alerts.alerts()?;
    Ok(Json(json!({ "alerts": alerts })))
}

/// `GET /api/v1/silences`.
pub(crate) async fn list_silences(
    State(state): State<ApiState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let silences = state.alerts.silences()?;
    Ok(Json(json!({ "silences": silences })))
}

/// `POST /api/v1/silences`: 201 with `{"id": ...}`.
pub(crate) async fn create_silence(
    State(state): State<ApiState>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(silence) = match body {
        Ok(body) => body,
        // Keeps the rejection's status (400, 413 too large, 415 not JSON) with a JSON message.
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Ok(error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {} bytes", super::BODY_LIMIT_BYTES),
            ));
        }
        // A body that is JSON but not a silence is a bad request like any other (axum says 422).
        Err(rejection @ (JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_))) => {
            return Err(ApiError::BadRequest(format!("body: {}", rejection.body_text())));
        }
        Err(rejection) => {
            return Ok(error_body(
                rejection.status(),
                &format!("body: {}", rejection.body_text()),
            ));
        }
    };
    silence.validate(Utc::now())?;
    let id = state.alerts.create_silence(silence)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

/// `DELETE /api/v1/silences/{id}`: expires the silence.
pub(crate) async fn expire_silence(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ApiError::parameter(
            "id",
            "must be 1-64 letters, digits, `-` or `_`",
        ));
    }
    state.alerts.expire_silence(&id)?;
    Ok(Json(json!({ "id": id, "state": SilenceState::Expired })))
}
