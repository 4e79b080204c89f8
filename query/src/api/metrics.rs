//! The API's own metrics, in Prometheus text on `/metrics`.
//!
//! In: every request and its response (the [`record`] middleware). Out:
//! `egress_api_requests_total{route, method, status}` and
//! `egress_api_request_duration_seconds{route}` (a histogram). `route` is the matched route
//! template (`/api/v1/slas/{name}/history`), or `unmatched`, so that the label set stays bounded
//! whatever paths clients send.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::ApiState;

type RequestLabels = Vec<(&'static str, String)>;
type RouteLabels = Vec<(&'static str, String)>;

/// Request counters and latencies. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    /// Registers the metrics in a registry of their own.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 15))) as fn() -> Histogram,
        );
        registry.register(
            "egress_api_requests",
            "HTTP requests answered by the query API, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "egress_api_request_duration_seconds",
            "Time to answer an HTTP request of the query API, by route",
            duration.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            duration,
        }
    }

    /// Counts one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        self.duration
            .get_or_create(&vec![("route", route.to_owned())])
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Middleware: times the request and counts its status under the matched route.
pub(crate) async fn record(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        _ => "other",
    };
    let response = next.run(request).await;
    state.metrics.observe(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
