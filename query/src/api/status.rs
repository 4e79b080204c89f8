//! `GET /`: the built-in status page, one server-rendered HTML page for the people on call.
//!
//! In: the same reads as the JSON routes, through their query builders (no SQL of its own but
//! the exporter counters, which `GET /api/v1/paths` shares): every egress path with its
//! throughput and utilisation over the last [`THROUGHPUT_WINDOW`] seconds
//! ([`super::paths::path_statuses`]), its throughput over the last [`HISTORY_SECONDS`] from the
//! per-minute path rollup ([`crate::rollups::path_minute_rates_query`]), round-trip percentiles
//! over the last hour ([`super::latency::percentiles_query`]), the latest SLA results
//! ([`super::slas::latest_query`]), the pending and firing alerts ([`super::AlertsView`]) and
//! per exporter what the collector received ([`super::paths::exporter_activity_query`]).
//! Out: `text/html` with inline CSS and inline SVG charts ([`chart`]); no JavaScript, no
//! external asset, and `<meta http-equiv="refresh">` every [`REFRESH_SECONDS`].
//!
//! Decisions:
//! - Templates are `maud`: checked at compile time, and every value is HTML-escaped unless
//!   wrapped in `PreEscaped`, which this module never uses (the CSS is a constant checked to
//!   need no escaping; the SVG is written as maud elements too). Exporter names, interface
//!   names, labels and alert annotations come from configuration and data, so escaping by
//!   default is the property that matters; askama would need a template file per page and a
//!   build-time template directory for the same result.
//! - When ClickHouse (or the alert state) does not answer, the page still answers **200**: each
//!   section that could not be read says "unavailable", the others render. `/ready` is the
//!   machine-readable signal; a status page that turns into an error when the database is down
//!   would hide the part that still works (and the JSON error layer would replace a 503 body).
//!   Each section waits at most [`SECTION_TIMEOUT`], the sections are read concurrently, so the
//!   page answers well inside the API's request timeout.
//! - A `Content-Security-Policy` of `default-src 'none'; style-src 'unsafe-inline'` goes with
//!   the page: even a value that escaped escaping could neither run a script nor load anything.

mod chart;
mod format;
mod render;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use clickhouse::{Row, RowOwned, RowRead};
use serde::Deserialize;

use super::alerts::{AlertState, AlertView};
use super::latency::{percentiles_query, series, Series};
use super::paths::{
    exporter_activity_query, interface_volumes_query, path_statuses, ExporterActivity, PathStatus,
    DEFAULT_WINDOW,
};
use super::slas::{latest_query, ResultRow, LATEST_LOOKBACK};
use super::{now_seconds, ApiError, ApiState};
use crate::rollups::path_minute_rates_query;
use crate::sla::{Param, SqlQuery};

/// The page reloads itself this often (seconds).
pub const REFRESH_SECONDS: u32 = 30;
/// Throughput and utilisation are averaged over this window ending now (seconds), as in
/// `GET /api/v1/paths`.
pub const THROUGHPUT_WINDOW: u32 = DEFAULT_WINDOW;
/// The throughput sparklines cover this long, ending at the last complete minute (seconds).
pub const HISTORY_SECONDS: u32 = 6 * 3_600;
/// One sparkline point per this many seconds (the mean of its minutes; a minute without
/// outbound flows counts as 0).
pub const HISTORY_STEP: u32 = 300;
/// Round-trip percentiles cover this window ending now (seconds)...
pub const LATENCY_WINDOW: u32 = 3_600;
/// ...in buckets of this many seconds.
pub const LATENCY_STEP: u32 = 300;
/// Exporter counters (datagrams, records, errors, loss) are summed over this window (seconds).
pub const EXPORTER_WINDOW: u32 = 3_600;
/// An exporter's last datagram is looked for this far back (seconds).
pub const EXPORTER_LOOKBACK: u32 = 86_400;
/// An exporter without a datagram for this long is shown as silent (seconds).
pub const SILENT_AFTER: u32 = 300;
/// A section not read within this time is shown as unavailable.
pub const SECTION_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a section has no content; the text is shown on the page (it names no internals).
#[derive(Debug, Clone, PartialEq)]
struct Unavailable(String);

/// A section's content, or why there is none.
type Section<T> = Result<T, Unavailable>;

/// One row of [`path_minute_rates_query`].
#[derive(Debug, Row, Deserialize)]
struct PathMinuteRate {
    minute: u32,
    egress_path: String,
    bits_per_second: f64,
    #[allow(dead_code)] // Part of the shared query's columns; the page does not show it.
    records: u64,
}

/// One exporter of the health table: a model exporter, or one that sent datagrams.
#[derive(Debug)]
struct ExporterHealth {
    /// Name from the model ('' when the model does not know the exporter).
    name: String,
    /// Address as configured (IPv4 shown as IPv4).
    address: IpAddr,
    /// What it sent; `None` when nothing in [`EXPORTER_LOOKBACK`].
    activity: Option<ExporterActivity>,
}

/// Everything the page shows, read before rendering (rendering does no I/O).
#[derive(Debug)]
struct Snapshot<'a> {
    now: u32,
    paths: Section<Vec<PathStatus<'a>>>,
    /// Per path label, one rate (bit/s) per [`HISTORY_STEP`], oldest first.
    history: Section<BTreeMap<String, Vec<Option<f64>>>>,
    /// Start of the latency window.
    latency_from: u32,
    latency: Section<Vec<Series>>,
    slas: Section<Vec<ResultRow>>,
    sla_names: &'a [String],
    /// Pending and firing alerts, firing first, newest first.
    alerts: Section<Vec<AlertView>>,
    exporters: Section<Vec<ExporterHealth>>,
}

/// The page's queries at time `now` (besides the two of `path_statuses`, listed by
/// [`status_page_queries`]).
#[derive(Debug)]
struct PageQueries {
    history: SqlQuery,
    history_from: u32,
    latency: SqlQuery,
    latency_from: u32,
    slas: SqlQuery,
    exporters: SqlQuery,
}

impl PageQueries {
    fn new(database: &str, now: u32) -> Self {
        let last_minute = now / 60 * 60;
        let history_from = last_minute.saturating_sub(HISTORY_SECONDS);
        let mut history = SqlQuery::new("rollups.path_minute_rates", path_minute_rates_query(database));
        history.params = vec![Param::U64(history_from.into()), Param::U64(last_minute.into())];
        let latency_from = now.saturating_sub(LATENCY_WINDOW);
        let counted_from = now.saturating_sub(EXPORTER_WINDOW + 60);
        Self {
            history,
            history_from,
            latency: percentiles_query(database, None, latency_from, now, LATENCY_STEP),
            latency_from,
            slas: latest_query(database, now.saturating_sub(LATEST_LOOKBACK)),
            exporters: exporter_activity_query(
                database,
                now.saturating_sub(EXPORTER_LOOKBACK),
                counted_from,
                now,
            ),
        }
    }
}

/// Every query the status page runs at time `now` on `database`, with its values (for the SQL
/// check on current ClickHouse, `tests/chdb/check_sla_sql.py`).
pub fn status_page_queries(database: &str, now: u32) -> Vec<SqlQuery> {
    let page = PageQueries::new(database, now);
    let stats_from = now.saturating_sub(THROUGHPUT_WINDOW + 60);
    vec![
        interface_volumes_query(database, now.saturating_sub(THROUGHPUT_WINDOW), now),
        exporter_activity_query(database, stats_from, stats_from, now),
        page.history,
        page.latency,
        page.slas,
        page.exporters,
    ]
}

/// Runs `read` for at most [`SECTION_TIMEOUT`].
async fn section<T>(what: &str, read: impl Future<Output = Result<T, ApiError>>) -> Section<T> {
    match tokio::time::timeout(SECTION_TIMEOUT, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Unavailable(error.to_string())),
        Err(_) => {
            tracing::warn!(section = what, "status page: section timed out");
            Err(Unavailable(format!(
                "the flow database did not answer within {} seconds ({what})",
                SECTION_TIMEOUT.as_secs()
            )))
        }
    }
}

async fn fetch<T: RowOwned + RowRead>(
    state: &ApiState,
    what: &str,
    query: &SqlQuery,
) -> Result<Vec<T>, ApiError> {
    query
        .bound(&state.client)
        .fetch_all()
        .await
        .map_err(|e| ApiError::clickhouse(what, e))
}

/// Per path label, the mean rate of each [`HISTORY_STEP`] from `from` (minute rates summed,
/// divided by the minutes in a step).
fn history(rows: &[PathMinuteRate], from: u32) -> BTreeMap<String, Vec<Option<f64>>> {
    let steps = (HISTORY_SECONDS / HISTORY_STEP) as usize;
    let minutes_per_step = f64::from(HISTORY_STEP / 60);
    let mut history: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for row in rows {
        let Some(index) = row
            .minute
            .checked_sub(from)
            .map(|offset| (offset / HISTORY_STEP) as usize)
        else {
            continue;
        };
        let series = history
            .entry(row.egress_path.clone())
            .or_insert_with(|| vec![Some(0.0); steps]);
        if let Some(Some(sum)) = series.get_mut(index) {
            *sum += row.bits_per_second / minutes_per_step;
        }
    }
    history
}

/// The model's exporters (in model order) and then every other exporter that sent datagrams.
fn exporters(paths: &[super::PathInfo], activity: Vec<ExporterActivity>) -> Vec<ExporterHealth> {
    let mut seen: HashSet<Ipv6Addr> = HashSet::new();
    let mut health: Vec<ExporterHealth> = Vec::new();
    for path in paths {
        if seen.insert(crate::schema::to_v6(path.exporter_address)) {
            health.push(ExporterHealth {
                name: path.exporter_name.clone(),
                address: path.exporter_address,
                activity: None,
            });
        }
    }
    let mut others: Vec<ExporterHealth> = Vec::new();
    for row in activity {
        let address = row.exporter_address;
        let known = health
            .iter_mut()
            .find(|h| crate::schema::to_v6(h.address) == address);
        match known {
            Some(exporter) => exporter.activity = Some(row),
            None => others.push(ExporterHealth {
                name: String::new(),
                address: address.to_ipv4_mapped().map_or(IpAddr::V6(address), IpAddr::V4),
                activity: Some(row),
            }),
        }
    }
    others.sort_by_key(|h| h.address);
    health.extend(others);
    health
}

/// `GET /`: the status page.
pub(crate) async fn page(State(state): State<ApiState>) -> Response {
    let now = now_seconds();
    let queries = PageQueries::new(state.database(), now);
    let (paths, history_rows, latency_rows, slas, activity) = tokio::join!(
        section("egress paths", path_statuses(&state, THROUGHPUT_WINDOW, now)),
        section(
            "throughput history",
            fetch::<PathMinuteRate>(&state, "throughput history", &queries.history)
        ),
        section(
            "round-trip percentiles",
            fetch(&state, "round-trip percentiles", &queries.latency)
        ),
        section(
            "latest SLA results",
            fetch::<ResultRow>(&state, "latest SLA results", &queries.slas)
        ),
        section(
            "exporter activity",
            fetch::<ExporterActivity>(&state, "exporter activity", &queries.exporters)
        ),
    );
    let alerts = state
        .alerts
        .alerts()
        .map(|alerts| {
            let mut active: Vec<AlertView> = alerts
                .into_iter()
                .filter(|a| a.state != AlertState::Resolved)
                .collect();
            active.sort_by(|a, b| {
                (a.state != AlertState::Firing)
                    .cmp(&(b.state != AlertState::Firing))
                    .then(b.starts_at.cmp(&a.starts_at))
            });
            active
        })
        .map_err(|error| {
            tracing::warn!(%error, "status page: alert state unavailable");
            Unavailable("the alert state is unavailable".to_owned())
        });
    let snapshot = Snapshot {
        now,
        history: history_rows.map(|rows| history(&rows, queries.history_from)),
        latency_from: queries.latency_from,
        latency: latency_rows.map(series),
        slas,
        sla_names: &state.sla_names,
        alerts,
        exporters: activity.map(|rows| exporters(&state.paths, rows)),
        paths,
    };
    let html = render::page(&snapshot).into_string();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(minute: u32, path: &str, bps: f64) -> PathMinuteRate {
        PathMinuteRate {
            minute,
            egress_path: path.to_owned(),
            bits_per_second: bps,
            records: 1,
        }
    }

    #[test]
    fn history_averages_minutes_per_step_and_counts_missing_minutes_as_zero() {
        let from = 1_000_000 / 60 * 60;
        let rows = [
            rate(from, "a", 500.0),
            rate(from + 60, "a", 1_000.0),
            rate(from + HISTORY_SECONDS - 60, "a", 250.0),
            rate(from + 600, "b", 5.0),
            // Outside the range: ignored.
            rate(from - 60, "a", 1e9),
            rate(from + HISTORY_SECONDS, "a", 1e9),
        ];
        let history = history(&rows, from);
        let a = &history["a"];
        assert_eq!(a.len(), (HISTORY_SECONDS / HISTORY_STEP) as usize);
        assert_eq!(a[0], Some(300.0));
        assert_eq!(a[1], Some(0.0));
        assert_eq!(a.last(), Some(&Some(50.0)));
        assert_eq!(history["b"][2], Some(1.0));
    }

    #[test]
    fn exporters_keep_model_order_then_unknown_ones_by_address() {
        let path = |address: [u8; 4], name: &str| super::super::PathInfo {
            label: format!("{name} / x"),
            exporter_address: IpAddr::from(address),
            exporter_name: name.to_owned(),
            site: String::new(),
            if_index: 1,
            if_name: String::new(),
            provider: String::new(),
            kind: "transit".to_owned(),
            capacity_bps: None,
            committed_bps: None,
        };
        let activity = |address: [u8; 4]| ExporterActivity {
            exporter_address: crate::schema::to_v6(IpAddr::from(address)),
            datagrams: 1,
            records: 2,
            records_lost: 0,
            decode_errors: 0,
            last_minute: 60,
        };
        let paths = [
            path([192, 0, 2, 9], "edge2"),
            path([192, 0, 2, 1], "edge1"),
            path([192, 0, 2, 9], "edge2"),
        ];
        let health = exporters(
            &paths,
            vec![
                activity([198, 51, 100, 7]),
                activity([192, 0, 2, 1]),
                activity([198, 51, 100, 3]),
            ],
        );
        let shown: Vec<(String, String, bool)> = health
            .iter()
            .map(|h| (h.name.clone(), h.address.to_string(), h.activity.is_some()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("edge2".into(), "192.0.2.9".into(), false),
                ("edge1".into(), "192.0.2.1".into(), true),
                (String::new(), "198.51.100.3".into(), true),
                (String::new(), "198.51.100.7".into(), true),
            ]
        );
    }

    #[test]
    fn every_page_query_binds_all_its_placeholders() {
        let queries = status_page_queries("egress", 1_800_000_000);
        assert_eq!(queries.len(), 6);
        for query in &queries {
            assert_eq!(
                query.sql.matches('?').count(),
                query.params.len(),
                "{}",
                query.name
            );
            assert!(!query.with_literals().contains('?'), "{}", query.name);
        }
    }
}
