//! Throughput SLA: utilisation of egress paths over the window, a dead-path floor, and the
//! monthly 95th percentile report.
//!
//! In: the paths with capacities of the [`EvalContext`]. One pass over the window of `flows`
//! grouped by (exporter, outgoing interface) gives each path's scaled volume and sample count;
//! `exporter_stats` says whether each exporter sent anything at all. Out: one result per path,
//! value = utilisation ratio, threshold = `max_utilisation`.
//!
//! Verdicts, in order (decided here, see the contract's "too few samples" rule):
//! 1. the path's exporter sent nothing in the window (no flows, no datagrams): no data — a
//!    silent exporter is exporter health's breach, never a dead path or zero traffic;
//! 2. at least `min_samples` records: breach above `max_utilisation` or below `min_bps`, else ok;
//! 3. fewer records: breach when the floor is on and the rate is below it (the exporter is
//!    alive and this interface carries next to nothing: that is what a dead path looks like),
//!    else no data.

use std::collections::{BTreeMap, HashMap, HashSet};

use clickhouse::{Client, Row};
use serde::Deserialize;

use super::{
    human_bps, human_duration, result, EvalContext, Param, PathCapacity, Result, SlaConfig, SlaResult,
    SqlQuery, ThroughputConfig, Verdict,
};
use crate::schema::{to_v6, EXPORTER_STATS_TABLE, FLOWS_TABLE};

/// Volume per exporter and outgoing interface in the window.
#[derive(Debug, Row, Deserialize)]
struct InterfaceVolume {
    exporter: String,
    out_if: u32,
    bytes: u64,
    samples: u64,
}

/// Per exporter: what the collector received from it in the window.
#[derive(Debug, Row, Deserialize)]
struct ExporterActivity {
    exporter: String,
    datagrams: u64,
    records: u64,
}

/// Scaled volume per (exporter, outgoing interface) in `[from, to)`: one pass over the range.
pub(crate) fn interface_volume_query(database: &str, from: u32, to: u32) -> SqlQuery {
    let mut query = SqlQuery::new(
        "throughput.interface_volume",
        format!(
            "SELECT IPv6NumToString(exporter_address) AS exporter, toUInt32(out_if) AS out_if, \
             toUInt64(sum(bytes * sampling_rate)) AS bytes, toUInt64(count()) AS samples \
             FROM {database}.{FLOWS_TABLE} \
             WHERE time_received >= toDateTime(?) AND time_received < toDateTime(?) \
             GROUP BY exporter_address, out_if"
        ),
    );
    query.params = vec![Param::U64(from.into()), Param::U64(to.into())];
    query
}

/// Datagrams and records per exporter in the minutes overlapping `[from, to)`.
pub(crate) fn exporter_activity_query(database: &str, from: u32, to: u32) -> SqlQuery {
    let mut query = SqlQuery::new(
        "throughput.exporter_activity",
        format!(
            "SELECT IPv6NumToString(exporter_address) AS exporter, toUInt64(sum(datagrams)) AS datagrams, \
             toUInt64(sum(records)) AS records \
             FROM {database}.{EXPORTER_STATS_TABLE} \
             WHERE minute > toDateTime(?) AND minute < toDateTime(?) \
             GROUP BY exporter_address"
        ),
    );
    query.params = vec![
        Param::U64(u64::from(from).saturating_sub(60)),
        Param::U64(to.into()),
    ];
    query
}

/// The window `[now - window_seconds, now)`.
fn window(sla: &SlaConfig, ctx: &EvalContext) -> (u32, u32) {
    let from = u64::from(ctx.now).saturating_sub(sla.window_seconds);
    (from as u32, ctx.now)
}

/// The queries of a throughput SLA.
pub fn queries(sla: &SlaConfig, _spec: &ThroughputConfig, ctx: &EvalContext) -> Vec<SqlQuery> {
    let (from, to) = window(sla, ctx);
    vec![
        interface_volume_query(&ctx.database, from, to),
        exporter_activity_query(&ctx.database, from, to),
    ]
}

/// The paths `labels` names (all paths with a capacity when empty). Names that match no path
/// are logged: they usually mean the model changed under the SLA.
pub(crate) fn selected_paths<'a>(
    sla: &str,
    labels: &[String],
    ctx: &'a EvalContext,
) -> Vec<&'a PathCapacity> {
    for label in labels {
        if !ctx.paths.iter().any(|p| &p.label == label) {
            tracing::warn!(sla, path = %label, "sla names a path the egress model does not have");
        }
    }
    ctx.paths
        .iter()
        .filter(|p| p.capacity_bps > 0 && (labels.is_empty() || labels.contains(&p.label)))
        .collect()
}

/// Labels of a path subject.
pub(crate) fn path_labels(path: &PathCapacity) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("path".to_owned(), path.label.clone()),
        ("exporter".to_owned(), path.exporter_name.clone()),
        ("if_index".to_owned(), path.if_index.to_string()),
    ])
}

/// Evaluates a throughput SLA.
pub async fn evaluate(
    client: &Client,
    sla: &SlaConfig,
    spec: &ThroughputConfig,
    ctx: &EvalContext,
) -> Result<Vec<SlaResult>> {
    let (from, to) = window(sla, ctx);
    let volumes: Vec<InterfaceVolume> = interface_volume_query(&ctx.database, from, to)
        .fetch(client, ctx.query_timeout, &sla.name)
        .await?;
    let activity: Vec<ExporterActivity> = exporter_activity_query(&ctx.database, from, to)
        .fetch(client, ctx.query_timeout, &sla.name)
        .await?;
    let mut alive: HashSet<&str> = volumes.iter().map(|v| v.exporter.as_str()).collect();
    alive.extend(
        activity
            .iter()
            .filter(|a| a.datagrams > 0 || a.records > 0)
            .map(|a| a.exporter.as_str()),
    );
    let by_interface: HashMap<(&str, u32), &InterfaceVolume> = volumes
        .iter()
        .map(|v| ((v.exporter.as_str(), v.out_if), v))
        .collect();
    let seconds = (to - from).max(1) as f64;
    let mut results = Vec::new();
    for path in selected_paths(&sla.name, &spec.paths, ctx) {
        let exporter = to_v6(path.exporter).to_string();
        let (bytes, samples) = by_interface
            .get(&(exporter.as_str(), path.if_index))
            .map_or((0, 0), |v| (v.bytes, v.samples));
        let bps = bytes as f64 * 8.0 / seconds;
        let utilisation = bps / path.capacity_bps as f64;
        let exporter_alive = alive.contains(exporter.as_str());
        let below_floor = spec.min_bps > 0 && bps < spec.min_bps as f64;
        let (verdict, reason) = if !exporter_alive {
            (Verdict::NoData, "exporter_silent")
        } else if samples >= spec.min_samples {
            if utilisation > spec.max_utilisation {
                (Verdict::Breach, "above_max_utilisation")
            } else if below_floor {
                (Verdict::Breach, "below_min_bps")
            } else {
                (Verdict::Ok, "")
            }
        } else if below_floor {
            (Verdict::Breach, "below_min_bps")
        } else {
            (Verdict::NoData, "too_few_samples")
        };
        let mut r = result(sla, ctx, path.label.clone(), path_labels(path));
        r.value = utilisation;
        r.threshold = spec.max_utilisation;
        r.verdict = verdict;
        r.samples = samples;
        r.details = serde_json::json!({
            "bps": bps,
            "capacity_bps": path.capacity_bps,
            "utilisation": utilisation,
            "max_utilisation": spec.max_utilisation,
            "min_bps": spec.min_bps,
            "bytes": bytes,
            "window_seconds": sla.window_seconds,
            "exporter_alive": exporter_alive,
            "reason": reason,
        });
        results.push(r);
    }
    Ok(results)
}

/// The alert summary of a throughput result.
pub(crate) fn summary(r: &SlaResult, sla: &SlaConfig) -> String {
    let bps = r.details["bps"].as_f64().unwrap_or(0.0);
    let capacity = r.details["capacity_bps"].as_f64().unwrap_or(0.0);
    let window = human_duration(sla.window_seconds);
    match r.details["reason"].as_str().unwrap_or("") {
        "below_min_bps" => format!(
            "{} carries {} over {window}, below the floor of {}",
            r.subject,
            human_bps(bps),
            human_bps(r.details["min_bps"].as_f64().unwrap_or(0.0))
        ),
        "exporter_silent" => format!("{}: no data, its exporter sent nothing in {window}", r.subject),
        "too_few_samples" => format!("{}: no data, {} samples in {window}", r.subject, r.samples),
        _ => format!(
            "{} at {:.0}% of {} ({}) over {window} (limit {:.0}%)",
            r.subject,
            r.value * 100.0,
            human_bps(capacity),
            human_bps(bps),
            r.threshold * 100.0
        ),
    }
}

/// The 95th percentile of a path's 5-minute rates over a period, against a committed rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct P95Figures {
    /// Path label.
    pub path: String,
    /// 95th percentile of the 5-minute rates, bit/s.
    pub p95_bps: f64,
    /// Highest 5-minute rate, bit/s.
    pub max_bps: f64,
    /// Committed rate, bit/s (0 when none is known).
    pub committed_bps: u64,
    /// The path's capacity, bit/s.
    pub capacity_bps: u64,
    /// 5-minute buckets in the period so far.
    pub buckets: u64,
    /// Buckets with at least one flow record; the others count as 0 bit/s, as in burstable
    /// billing.
    pub buckets_with_data: u64,
    /// `p95_bps > committed_bps` (false when no committed rate is known).
    pub above_commit: bool,
}

/// One path's volume in one 5-minute bucket.
#[derive(Debug, Row, Deserialize)]
struct BucketVolume {
    exporter: String,
    out_if: u32,
    bytes: u64,
}

/// The per-minute egress path rollup ([`crate::rollups`], outbound flows only, kept at least
/// 35 days, longer than raw flows may be): p95 reports and objectives read it instead of raw
/// flows.
pub const PATH_MINUTES_TABLE: &str = "flows_1m_path";

/// 5-minute volumes per (exporter, outgoing interface) in `[from, to)` for the interfaces
/// `if_indexes` (bound one per placeholder), from the per-minute path rollup.
pub fn bucket_volume_query(database: &str, from: u32, to: u32, if_indexes: &[u32]) -> SqlQuery {
    let mut query = SqlQuery::new(
        "throughput.p95_buckets",
        format!(
            "SELECT IPv6NumToString(exporter_address) AS exporter, toUInt32(out_if) AS out_if, \
             toUInt64(sum(scaled_bytes)) AS bytes \
             FROM {database}.{PATH_MINUTES_TABLE} \
             WHERE minute >= toDateTime(?) AND minute < toDateTime(?)"
        ),
    );
    query.params = vec![Param::U64(from.into()), Param::U64(to.into())];
    let mut indexes: Vec<u32> = if_indexes.to_vec();
    indexes.sort_unstable();
    indexes.dedup();
    if !indexes.is_empty() {
        let marks = vec!["?"; indexes.len()].join(", ");
        query.push(
            &format!(" AND out_if IN ({marks})"),
            indexes.iter().map(|i| Param::U64((*i).into())),
        );
    }
    // The bucket is a grouping key only: the percentile needs the rates, not their times.
    query.push(
        " GROUP BY exporter_address, out_if, intDiv(toUInt32(minute), 300)",
        [],
    );
    query
}

/// The 95th percentile of `rates` (bit/s of the buckets with data) over `buckets` buckets, the
/// missing ones counting as 0: the value at rank `ceil(0.95 × buckets)` (1-based, ascending).
pub fn p95_with_empty_buckets(rates: &mut [f64], buckets: u64) -> f64 {
    rates.sort_by(f64::total_cmp);
    let with_data = rates.len() as u64;
    let rank = (buckets as f64 * 0.95).ceil() as u64;
    let zeros = buckets.saturating_sub(with_data);
    if rank == 0 || rank <= zeros {
        return 0.0;
    }
    let index = (rank - zeros - 1) as usize;
    rates.get(index).or(rates.last()).copied().unwrap_or(0.0)
}

/// Unix seconds of the first second of `year`-`month` (UTC), from the civil calendar.
pub fn month_start(year: i32, month: u32) -> Option<u32> {
    if !(1..=12).contains(&month) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400) as i64;
    let doy = (153 * i64::from(m) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = i64::from(era) * 146_097 + doe - 719_468;
    u32::try_from(days * 86_400).ok()
}

/// The 95th percentile report of every path of `ctx` for `year`-`month` up to `ctx.now`:
/// rates of 5-minute buckets from the per-minute path rollup, empty buckets counted as 0
/// ([`p95_with_empty_buckets`]).
/// `committed_bps` maps path labels to their committed rate.
pub async fn p95_report(
    client: &Client,
    ctx: &EvalContext,
    year: i32,
    month: u32,
    committed_bps: &BTreeMap<String, u64>,
) -> Result<Vec<P95Figures>> {
    let (Some(from), Some(next)) = (
        month_start(year, month),
        if month == 12 {
            month_start(year + 1, 1)
        } else {
            month_start(year, month + 1)
        },
    ) else {
        return Ok(Vec::new());
    };
    let to = next.min(ctx.now);
    if to <= from {
        return Ok(Vec::new());
    }
    let indexes: Vec<u32> = ctx.paths.iter().map(|p| p.if_index).collect();
    let rows: Vec<BucketVolume> = bucket_volume_query(&ctx.database, from, to, &indexes)
        .fetch(client, ctx.query_timeout, "p95_report")
        .await?;
    let buckets = u64::from(to - from).div_ceil(300);
    let mut figures = Vec::new();
    for path in &ctx.paths {
        let exporter = to_v6(path.exporter).to_string();
        let mut rates: Vec<f64> = rows
            .iter()
            .filter(|r| r.exporter == exporter && r.out_if == path.if_index)
            .map(|r| r.bytes as f64 * 8.0 / 300.0)
            .collect();
        let with_data = rates.len() as u64;
        let p95 = p95_with_empty_buckets(&mut rates, buckets);
        let committed = committed_bps.get(&path.label).copied().unwrap_or(0);
        figures.push(P95Figures {
            path: path.label.clone(),
            p95_bps: p95,
            max_bps: rates.last().copied().unwrap_or(0.0),
            committed_bps: committed,
            capacity_bps: path.capacity_bps,
            buckets,
            buckets_with_data: with_data,
            above_commit: committed > 0 && p95 > committed as f64,
        });
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_counts_empty_buckets_as_zero() {
        // 100 buckets, 10 with data: rank 95 falls on the 5th smallest rate with data.
        let mut rates: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(p95_with_empty_buckets(&mut rates, 100), 5.0);
        // 100 buckets, 4 with data: rank 95 is still a zero.
        let mut few = vec![9.0, 8.0, 7.0, 6.0];
        assert_eq!(p95_with_empty_buckets(&mut few, 100), 0.0);
        // All 20 buckets with data: rank 19 of 20.
        let mut all: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(p95_with_empty_buckets(&mut all, 20), 19.0);
        assert_eq!(p95_with_empty_buckets(&mut [], 0), 0.0);
    }

    #[test]
    fn the_path_rollup_table_is_the_rollups_module_one() {
        let path = crate::rollups::rollups()
            .into_iter()
            .find(|r| r.name == "path")
            .unwrap();
        assert_eq!(path.minute_table, PATH_MINUTES_TABLE);
    }

    #[test]
    fn month_boundaries() {
        assert_eq!(month_start(1970, 1), Some(0));
        assert_eq!(month_start(2026, 11), Some(1_793_491_200));
        assert_eq!(month_start(2024, 3), Some(1_709_251_200));
        assert_eq!(month_start(2026, 13), None);
    }
}
