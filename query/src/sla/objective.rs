//! Objective SLA: a service-level objective on good events, alerting on multi-window burn rates
//! (SRE workbook, chapter 5: 1h/5m at 14.4 and 6h/30m at 6 by default).
//!
//! In: the good-event definition ([`GoodEvents`]); each definition turns into queries that
//! yield, per subject and minute, good and total event counts over the longest window (the
//! current, incomplete minute left out). Path utilisation reads the per-minute path rollup
//! and `exporter_stats`, never six hours of raw flows. Out: one result per subject. For every window pair the
//! burn rate of each window is `(bad / total) / (1 - objective)`; a pair breaches when both of
//! its windows burn faster than its factor. The result reports the pair closest to (or furthest
//! past) its factor: value = the lower of its two burn rates, threshold = its factor, so that
//! `value > threshold` is exactly "this pair breaches". All four burn rates are in the details.
//! A pair whose short or long window holds fewer than `min_events` events is skipped; all
//! skipped gives no data.
//!
//! New good-event definitions add a [`GoodEvents`] variant and its per-minute query here; the
//! burn-rate arithmetic ([`budget_result`]) is shared, and the latency kind's good-ratio mode
//! (`[slas.latency] objective`, round trips within `threshold_ms`) uses it too.

use std::collections::{BTreeMap, HashMap, HashSet};

use clickhouse::{Client, Row};
use serde::Deserialize;

use super::throughput::PATH_MINUTES_TABLE;
use super::throughput::{path_labels, selected_paths};
use super::{
    result, BurnRateWindow, EvalContext, GoodEvents, ObjectiveConfig, Param, Result, SlaConfig, SlaResult,
    SqlQuery, Verdict,
};
use crate::schema::{to_v6, EXPORTER_STATS_TABLE};

/// The minute range `[from, to)` covering the longest window, ending at the last full minute.
fn minute_range(spec: &ObjectiveConfig, ctx: &EvalContext) -> (u64, u64) {
    burn_minute_range(&spec.windows, ctx)
}

/// The minute range `[from, to)` covering the longest of `windows`, ending at the last full
/// minute before `ctx.now` (shared by every kind with burn-rate alerting).
pub fn burn_minute_range(windows: &[BurnRateWindow], ctx: &EvalContext) -> (u64, u64) {
    let to = u64::from(ctx.now) - u64::from(ctx.now) % 60;
    let longest = windows.iter().map(|w| w.long_seconds).max().unwrap_or(3600);
    (to.saturating_sub(longest), to)
}

fn minute_volume_query(spec: &ObjectiveConfig, ctx: &EvalContext) -> SqlQuery {
    let (from, to) = minute_range(spec, ctx);
    let mut query = SqlQuery::new(
        "objective.path_minutes",
        format!(
            "SELECT IPv6NumToString(exporter_address) AS exporter, toUInt32(out_if) AS out_if, \
             toUInt32(minute) AS minute, toUInt64(sum(scaled_bytes)) AS bytes \
             FROM {}.{PATH_MINUTES_TABLE} \
             WHERE minute >= toDateTime(?) AND minute < toDateTime(?) \
             GROUP BY exporter_address, out_if, minute",
            ctx.database
        ),
    );
    query.params = vec![Param::U64(from), Param::U64(to)];
    query
}

/// Minutes in which each exporter sent anything, from `exporter_stats`.
fn exporter_minutes_query(spec: &ObjectiveConfig, ctx: &EvalContext) -> SqlQuery {
    let (from, to) = minute_range(spec, ctx);
    let mut query = SqlQuery::new(
        "objective.exporter_minutes",
        format!(
            "SELECT IPv6NumToString(exporter_address) AS exporter, toUInt32(minute) AS minute \
             FROM {}.{EXPORTER_STATS_TABLE} \
             WHERE minute >= toDateTime(?) AND minute < toDateTime(?) AND (datagrams > 0 OR records > 0) \
             GROUP BY exporter_address, minute",
            ctx.database
        ),
    );
    query.params = vec![Param::U64(from), Param::U64(to)];
    query
}

/// The queries of an objective SLA.
pub fn queries(_sla: &SlaConfig, spec: &ObjectiveConfig, ctx: &EvalContext) -> Vec<SqlQuery> {
    match spec.good_events() {
        Some(GoodEvents::PathUtilisationBelow { .. }) => {
            vec![minute_volume_query(spec, ctx), exporter_minutes_query(spec, ctx)]
        }
        None => Vec::new(),
    }
}

#[derive(Debug, Row, Deserialize)]
struct MinuteVolume {
    exporter: String,
    out_if: u32,
    minute: u32,
    bytes: u64,
}

#[derive(Debug, Row, Deserialize)]
struct ExporterMinute {
    exporter: String,
    minute: u32,
}

/// Good and total events of one subject in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteEvents {
    /// Good events.
    pub good: u64,
    /// All events.
    pub total: u64,
}

/// One subject's events per minute (Unix seconds of the minute's start).
#[derive(Debug, Clone)]
pub struct SubjectEvents {
    /// Human subject.
    pub subject: String,
    /// Subject labels.
    pub labels: BTreeMap<String, String>,
    /// Events per minute.
    pub minutes: BTreeMap<u32, MinuteEvents>,
}

/// Path-utilisation events, from the per-minute path rollup: a minute of a path is an event
/// when its exporter sent anything in that minute (a row in `exporter_stats` or in the rollup),
/// and good when the path's rate is at most `max_utilisation` of its capacity.
async fn path_utilisation_events(
    client: &Client,
    sla: &SlaConfig,
    spec: &ObjectiveConfig,
    ctx: &EvalContext,
    max_utilisation: f64,
    paths: &[String],
) -> Result<Vec<SubjectEvents>> {
    let rows: Vec<MinuteVolume> = minute_volume_query(spec, ctx)
        .fetch(client, ctx.query_timeout, &sla.name)
        .await?;
    let active: Vec<ExporterMinute> = exporter_minutes_query(spec, ctx)
        .fetch(client, ctx.query_timeout, &sla.name)
        .await?;
    let mut present: HashSet<(&str, u32)> = rows.iter().map(|r| (r.exporter.as_str(), r.minute)).collect();
    present.extend(active.iter().map(|r| (r.exporter.as_str(), r.minute)));
    let volume: HashMap<(&str, u32, u32), u64> = rows
        .iter()
        .map(|r| ((r.exporter.as_str(), r.out_if, r.minute), r.bytes))
        .collect();
    let mut subjects = Vec::new();
    for path in selected_paths(&sla.name, paths, ctx) {
        let exporter = to_v6(path.exporter).to_string();
        let mut minutes = BTreeMap::new();
        for &(e, minute) in &present {
            if e != exporter {
                continue;
            }
            let bytes = volume.get(&(e, path.if_index, minute)).copied().unwrap_or(0);
            let utilisation = bytes as f64 * 8.0 / 60.0 / path.capacity_bps as f64;
            let good = u64::from(utilisation <= max_utilisation);
            minutes.insert(minute, MinuteEvents { good, total: 1 });
        }
        subjects.push(SubjectEvents {
            subject: path.label.clone(),
            labels: path_labels(path),
            minutes,
        });
    }
    Ok(subjects)
}

/// Burn rate of the minutes in `[to - seconds, to)`: (bad / total) / (1 - objective), with the
/// number of events; `None` with fewer than `min_events` events.
pub fn burn_rate(
    minutes: &BTreeMap<u32, MinuteEvents>,
    to: u64,
    seconds: u64,
    objective: f64,
    min_events: u64,
) -> (Option<f64>, u64) {
    let from = to.saturating_sub(seconds);
    let (good, total) = minutes
        .range(from as u32..to as u32)
        .fold((0, 0), |(g, t), (_, e)| (g + e.good, t + e.total));
    if total < min_events.max(1) {
        return (None, total);
    }
    let bad_ratio = (total - good) as f64 / total as f64;
    (Some(bad_ratio / (1.0 - objective)), total)
}

/// Evaluates an objective SLA.
pub async fn evaluate(
    client: &Client,
    sla: &SlaConfig,
    spec: &ObjectiveConfig,
    ctx: &EvalContext,
) -> Result<Vec<SlaResult>> {
    let subjects = match spec.good_events() {
        Some(GoodEvents::PathUtilisationBelow {
            max_utilisation,
            paths,
        }) => path_utilisation_events(client, sla, spec, ctx, max_utilisation, &paths).await?,
        None => return Ok(Vec::new()),
    };
    let (_, to) = minute_range(spec, ctx);
    Ok(subjects
        .into_iter()
        .map(|s| burn_rate_result(sla, spec, ctx, s, to))
        .collect())
}

/// The result of one subject from its per-minute events (shared by every good-event definition).
pub fn burn_rate_result(
    sla: &SlaConfig,
    spec: &ObjectiveConfig,
    ctx: &EvalContext,
    subject: SubjectEvents,
    to: u64,
) -> SlaResult {
    let budget = BurnBudget {
        objective: spec.objective,
        windows: &spec.windows,
        min_events: spec.min_events,
    };
    budget_result(sla, &budget, ctx, subject, to)
}

/// An objective with its burn-rate alert windows: what [`budget_result`] judges events against.
#[derive(Debug, Clone, Copy)]
pub struct BurnBudget<'a> {
    /// Target ratio of good events.
    pub objective: f64,
    /// Window pairs; a pair breaches when both of its windows burn faster than its factor.
    pub windows: &'a [BurnRateWindow],
    /// Fewer events in a window than this skips its pair.
    pub min_events: u64,
}

/// The result of one subject from its per-minute events under `budget`: the burn-rate
/// arithmetic of every kind with an objective (this kind's good-event definitions and the
/// latency kind's good-ratio mode). Details: `objective` and the `windows` with their rates.
pub fn budget_result(
    sla: &SlaConfig,
    budget: &BurnBudget<'_>,
    ctx: &EvalContext,
    subject: SubjectEvents,
    to: u64,
) -> SlaResult {
    let mut r = result(sla, ctx, subject.subject, subject.labels);
    let mut pairs = Vec::new();
    // (value / factor, value, factor) of the pair that decides.
    let mut decisive: Option<(f64, f64, f64)> = None;
    for window in budget.windows {
        let (long, long_events) = burn_rate(
            &subject.minutes,
            to,
            window.long_seconds,
            budget.objective,
            budget.min_events,
        );
        let (short, short_events) = burn_rate(
            &subject.minutes,
            to,
            window.short_seconds,
            budget.objective,
            budget.min_events,
        );
        pairs.push(serde_json::json!({
            "long_seconds": window.long_seconds, "short_seconds": window.short_seconds,
            "factor": window.factor, "long_burn_rate": long, "short_burn_rate": short,
            "long_events": long_events, "short_events": short_events,
        }));
        if let (Some(long), Some(short)) = (long, short) {
            let value = long.min(short);
            let ratio = value / window.factor;
            if decisive.is_none_or(|(best, _, _)| ratio > best) {
                decisive = Some((ratio, value, window.factor));
            }
        }
    }
    let total: u64 = subject.minutes.values().map(|e| e.total).sum();
    r.samples = total;
    match decisive {
        Some((_, value, factor)) => {
            r.value = value;
            r.threshold = factor;
            r.verdict = if value > factor {
                Verdict::Breach
            } else {
                Verdict::Ok
            };
        }
        None => r.verdict = Verdict::NoData,
    }
    r.details = serde_json::json!({ "objective": budget.objective, "windows": pairs });
    r
}

/// The alert summary of an objective result.
pub(crate) fn summary(r: &SlaResult, _sla: &SlaConfig) -> String {
    if r.verdict == Verdict::NoData {
        return format!("{}: no data ({} events)", r.subject, r.samples);
    }
    format!(
        "{} burns its error budget at {:.1}x (alert factor {:.1}, objective {})",
        r.subject, r.value, r.threshold, r.details["objective"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_rate_over_a_window() {
        let mut minutes = BTreeMap::new();
        for m in 0..60u32 {
            minutes.insert(
                m * 60,
                MinuteEvents {
                    good: u64::from(m % 10 != 0),
                    total: 1,
                },
            );
        }
        // 6 bad of 60 at 99.9 %: (0.1) / 0.001 = 100.
        let (rate, events) = burn_rate(&minutes, 3600, 3600, 0.999, 3);
        assert_eq!(events, 60);
        assert!((rate.unwrap() - 100.0).abs() < 1e-6);
        // Last 5 minutes (55..59): no bad minute.
        assert_eq!(burn_rate(&minutes, 3600, 300, 0.999, 3).0, Some(0.0));
        assert_eq!(burn_rate(&minutes, 3600, 120, 0.999, 3).0, None);
    }
}
