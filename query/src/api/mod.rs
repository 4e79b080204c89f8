//! The query service's HTTP API (axum + tower): the read side of Egress for people and tools.
//!
//! In: HTTP requests; the ClickHouse tables of [`crate::schema`] (`flows`, `exporter_stats`,
//! `sla_results`, `probes`); the egress paths of the model with their capacities ([`PathInfo`]); the alert
//! state and silences through the [`AlertsView`] trait. Out: JSON answers, the Prometheus text of
//! the API's own counters, an OpenAPI 3.0 document of every route, and at `/` a status page in
//! HTML for people (module `status`).
//!
//! Safety of the SQL: every request parameter is checked against an allow-list or parsed into a
//! type with bounds ([`params`]) and then bound with the clickhouse crate's `?` placeholders,
//! which quote and escape it. Identifiers (the `by` dimension of `top`, the database name) never
//! come from the request text: dimensions are a Rust enum mapping to fixed SQL fragments, and
//! the database name is checked once by [`crate::connection::is_identifier`] in [`ApiState::new`].
//!
//! Errors are JSON `{"error": "..."}` naming the parameter: 400 for a bad parameter, 404 for an
//! unknown route or SLA, 413 for a body over [`BODY_LIMIT_BYTES`], 503 when ClickHouse fails
//! (the details go to the log, not to the client), 504 after [`REQUEST_TIMEOUT`]. At most
//! [`CONCURRENCY_LIMIT`] requests are served at once; the others wait (inside their timeout).
//!
//! Shutdown: the router holds no background task; the server that serves it drains connections.

pub mod access;
mod alerts;
mod error;
mod flows;
mod health;
mod latency;
mod metrics;
mod openapi;
pub mod params;
mod paths;
mod probes;
mod slas;
mod status;
mod top;
mod trace;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use clickhouse::Client;
use serde::Serialize;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use access::{serve, Access, AccessError, ApiAccessConfig, Role, TokenConfig};
pub use alerts::{
    AlertState, AlertView, AlertsView, AlertsViewError, NewSilence, SilenceMatcher, SilenceState, SilenceView,
};
pub use error::ApiError;
pub use metrics::ApiMetrics;
pub use openapi::openapi_document;
pub use status::status_page_queries;
pub use trace::{HopTracer, RecordingTracer, TraceError, HOP_TIMEOUT, MAX_HOPS};

/// Longest time a request may take before the API answers 504.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body accepted (silences are the only bodies; a few hundred bytes each).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Requests served at once; ClickHouse does the work, so a few suffice on small machines.
pub const CONCURRENCY_LIMIT: usize = 32;
/// How long `/ready` waits for ClickHouse to answer `SELECT 1`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// One egress path of the model: an exporter and one of its external interfaces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathInfo {
    /// `edge1 / et-0/0/1 (Transit A)`, as stored in `flows.egress_path`.
    pub label: String,
    /// The exporter's address as it appears in `flows.exporter_address`.
    pub exporter_address: std::net::IpAddr,
    /// The exporter's name from the model ('' when unnamed).
    pub exporter_name: String,
    /// The exporter's site from the model ('' when not configured).
    pub site: String,
    /// SNMP ifIndex of the outgoing interface (`flows.out_if`).
    pub if_index: u32,
    /// Interface name from the model ('' when unnamed).
    pub if_name: String,
    /// Provider behind the interface ('' when none).
    pub provider: String,
    /// Interface kind: transit, peering, cloud or wan.
    pub kind: String,
    /// Capacity in bit/s; `None` when unknown (utilisation is then not reported).
    pub capacity_bps: Option<u64>,
    /// Committed rate in bit/s of a burstable contract; `None` when not configured.
    pub committed_bps: Option<u64>,
}

impl From<&crate::model::EgressPath> for PathInfo {
    fn from(path: &crate::model::EgressPath) -> Self {
        Self {
            label: path.label.clone(),
            exporter_address: path.exporter_address,
            exporter_name: path.exporter_name.clone(),
            site: path.site.clone(),
            if_index: path.if_index,
            if_name: path.if_name.clone(),
            provider: path.provider.clone(),
            kind: path.kind.to_owned(),
            capacity_bps: path.capacity_bps,
            committed_bps: path.committed_bps,
        }
    }
}

/// Errors building the API state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiStateError {
    /// The database name would need quoting; Egress only accepts plain identifiers.
    #[error("database name {0:?} must be letters, digits and `_`, not starting with a digit")]
    InvalidDatabase(String),
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    client: Client,
    database: Arc<str>,
    paths: Arc<[PathInfo]>,
    sla_names: Arc<[String]>,
    alerts: Arc<dyn AlertsView>,
    metrics: ApiMetrics,
    tracer: Option<Arc<RecordingTracer>>,
    access: Access,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("database", &self.database)
            .field("paths", &self.paths.len())
            .field("sla_names", &self.sla_names)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The state for `database` (checked to be a plain identifier, since table names are
    /// qualified with it in SQL text), the model's egress `paths`, the configured SLA names
    /// (the allow-list of `/api/v1/slas/{name}/history`; an unknown name is a 404) and the alert
    /// state.
    pub fn new(
        client: Client,
        database: &str,
        paths: Vec<PathInfo>,
        sla_names: Vec<String>,
        alerts: Arc<dyn AlertsView>,
    ) -> Result<Self, ApiStateError> {
        if !crate::connection::is_identifier(database) {
            return Err(ApiStateError::InvalidDatabase(database.to_owned()));
        }
        Ok(Self {
            client,
            database: database.into(),
            paths: paths.into(),
            sla_names: sla_names.into(),
            alerts,
            metrics: ApiMetrics::new(),
            tracer: None,
            access: Access::default(),
        })
    }

    /// Serves `POST /api/v1/trace` with `tracer` (the collector's prober), and `GET
    /// /api/v1/trace` with the last trace of each path; without one both answer 503. Traces
    /// made through [`ApiState::tracer`] (the monitor's, for alerts) are remembered too.
    pub fn with_tracer(mut self, tracer: Arc<dyn HopTracer>) -> Self {
        self.tracer = Some(Arc::new(RecordingTracer::new(tracer)));
        self
    }

    /// The tracer the API uses, which remembers every trace it makes: the one the monitor must
    /// use too, so that `GET /api/v1/trace` shows the traces attached to alerts.
    pub fn tracer(&self) -> Option<Arc<dyn HopTracer>> {
        self.tracer.clone().map(|t| t as Arc<dyn HopTracer>)
    }

    /// Requires the tokens, roles and rate limit of `access` (see [`access`]); without it the
    /// API is open.
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// The API's own metrics (also served on `/metrics`).
    pub fn metrics(&self) -> &ApiMetrics {
        &self.metrics
    }

    /// `database.table`; both parts are identifiers checked at construction or constants.
    fn table(&self, table: &str) -> String {
        format!("{}.{table}", self.database)
    }

    /// The database holding the tables (a checked identifier).
    fn database(&self) -> &str {
        &self.database
    }
}

/// Current Unix time in seconds (the collector's clock is what `time_received` uses too).
fn now_seconds() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// One route: its method and path as written in the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Upper-case HTTP method.
    pub method: &'static str,
    /// Path in axum / OpenAPI syntax (`/api/v1/slas/{name}/history`).
    pub path: &'static str,
}

/// The three methods the API uses, with the name written in routes and the OpenAPI document.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

fn endpoint<H, T>(verb: Verb, path: &'static str, handler: H) -> (Route, MethodRouter<ApiState>)
where
    H: axum::handler::Handler<T, ApiState>,
    T: 'static,
{
    let route = Route {
        method: verb.name(),
        path,
    };
    (route, on(verb.filter(), handler))
}

/// Every route of the API with its handler: the single table the router and the OpenAPI test
/// are built from, so that a route cannot exist without being listed.
fn endpoints() -> Vec<(Route, MethodRouter<ApiState>)> {
    vec![
        endpoint(Verb::Get, "/", status::page),
        endpoint(Verb::Get, "/health", health::health),
        endpoint(Verb::Get, "/ready", health::ready),
        endpoint(Verb::Get, "/metrics", health::metrics),
        endpoint(Verb::Get, "/openapi.json", openapi::serve),
        endpoint(Verb::Get, "/api/v1/paths", paths::paths),
        endpoint(Verb::Get, "/api/v1/paths/p95", paths::p95),
        endpoint(Verb::Get, "/api/v1/probes", probes::probes),
        endpoint(Verb::Get, "/api/v1/latency", latency::latency),
        endpoint(Verb::Post, "/api/v1/trace", trace::trace),
        endpoint(Verb::Get, "/api/v1/trace", trace::last_trace),
        endpoint(Verb::Get, "/api/v1/top", top::top),
        endpoint(Verb::Get, "/api/v1/flows", flows::flows),
        endpoint(Verb::Get, "/api/v1/slas", slas::latest),
        endpoint(Verb::Get, "/api/v1/slas/{name}/history", slas::history),
        endpoint(Verb::Get, "/api/v1/alerts", alerts::list_alerts),
        endpoint(Verb::Get, "/api/v1/silences", alerts::list_silences),
        endpoint(Verb::Post, "/api/v1/silences", alerts::create_silence),
        endpoint(Verb::Delete, "/api/v1/silences/{id}", alerts::expire_silence),
    ]
}

/// Every (method, path) the router serves.
pub fn routes() -> Vec<Route> {
    endpoints().into_iter().map(|(route, _)| route).collect()
}

/// The API: every route of [`routes`], JSON errors, metrics, timeout, body and concurrency
/// limits. Serve it with `axum::serve`.
pub fn router(state: ApiState) -> Router {
    let routes = endpoints()
        .into_iter()
        .fold(Router::new(), |router, (route, handler)| {
            router.route(route.path, handler)
        });
    routes
        .fallback(error::not_found)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(CONCURRENCY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.access.clone(),
            access::require,
        ))
        // Outermost but metrics: every error any layer produced becomes JSON here.
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
