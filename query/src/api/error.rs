//! API errors: one enum for every handler, answered as JSON `{"error": "..."}`.
//!
//! In: a failed validation, lookup or query. Out: a response with the matching status. ClickHouse
//! errors are logged with their details and answered with a message that names no internals
//! (no SQL, no server text). Responses produced by layers (413 body too large, 504 timeout, 405
//! wrong method) get a JSON body too, in [`json_errors`].

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A query parameter, path segment or body field is missing, unknown or out of bounds.
    #[error("{0}")]
    BadRequest(String),
    /// The thing named in the path does not exist.
    #[error("{0}")]
    NotFound(String),
    /// ClickHouse (or the alert state) did not answer; the message is safe to show.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// A bad parameter: `parameter` names it, `problem` says what is wrong.
    pub fn parameter(parameter: &str, problem: impl std::fmt::Display) -> Self {
        Self::BadRequest(format!("parameter `{parameter}`: {problem}"))
    }

    /// ClickHouse failed: logs the details, answers without them.
    pub(crate) fn clickhouse(what: &str, error: impl std::fmt::Display) -> Self {
        tracing::warn!(%error, query = what, "clickhouse query failed");
        Self::Unavailable(format!(
            "the flow database did not answer ({what}); try again later"
        ))
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The JSON error body.
pub(crate) fn error_body(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_body(self.status(), &self.to_string())
    }
}

/// The router's fallback: an unknown route.
pub(crate) async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("no route {} {}", request.method(), request.uri().path()))
}

/// Turns error responses that are not JSON (from tower layers and axum itself) into JSON errors
/// with a message for their status.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("request body larger than {} bytes", super::BODY_LIMIT_BYTES)
        }
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => format!(
            "request took longer than {} seconds",
            super::REQUEST_TIMEOUT.as_secs()
        ),
        // axum adds the `Allow` header outside the route's layers, so it is not visible here.
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("method {method} is not allowed on {path}; see /openapi.json")
        }
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    let body = serde_json::json!({ "error": message }).to_string();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
