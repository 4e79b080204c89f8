//! Exfiltration SLA: volume from internal sources to non-internal destinations.
//!
//! In: `flows` rows with `src_internal = 1` and `traffic_direction = 'outbound'`, minus the
//! allow-list, which is applied in the SQL as exclusions with bound values (destination
//! prefixes as 16-byte ranges, AS numbers, cloud labels and their sub-labels, source hosts or
//! prefixes, a UTC hour window). Sources are grouped per host or per IPv4 /24.
//!
//! Out, per subject (largest `max_subjects` volumes in the window): value = scaled bytes in the
//! window; breach above `limit_bytes`, or above the baseline: median + k × MAD of the subject's
//! volume in the same hour of the week in each earlier week of the last `baseline.days`, scaled
//! to the window (`hourly bytes × window / 3600`, so hourly rollups can serve it later), and at
//! least `baseline.min_bytes`. A week in which no source sent anything outbound in that hour is
//! a gap, not a zero; fewer than two weeks of history leaves the baseline unusable. Breaching
//! subjects get their top five destinations (address, AS, bytes) in the details.
//!
//! The bulk check gives results per subject × destination (AS or IPv4 /24), value = bytes,
//! threshold = `bulk.limit_bytes`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use clickhouse::{Client, Row};
use serde::Deserialize;

use super::config::{parse_hours, parse_net};
use super::{
    human_bytes, human_duration, range_params, result, BulkBy, EvalContext, ExfiltrationConfig, Param,
    Result, SlaConfig, SlaResult, SourceGroup, SqlQuery, Verdict,
};
use crate::schema::FLOWS_TABLE;

/// Destinations listed per breaching subject.
pub const TOP_DESTINATIONS: u64 = 5;
/// Breaching subjects whose top destinations are looked up per evaluation.
const MAX_TOP_SUBJECTS: usize = 100;
/// One week, seconds.
const WEEK: u64 = 604_800;

/// The subject key of a source (`::ffff:10.0.0.5`, or `::ffff:10.0.0.0/24`).
fn source_key(group: SourceGroup) -> &'static str {
    match group {
        SourceGroup::Host => "IPv6NumToString(src_addr)",
        SourceGroup::Subnet24 => "replaceRegexpOne(IPv6NumToString(src_addr), '\\\\.[0-9]+$', '.0/24')",
    }
}

/// The destination key of the bulk check.
fn destination_key(by: BulkBy) -> &'static str {
    match by {
        BulkBy::DstAs => "toString(dst_as)",
        BulkBy::Dst24 => "replaceRegexpOne(IPv6NumToString(dst_addr), '\\\\.[0-9]+$', '.0/24')",
    }
}

/// Subject key as shown: `::ffff:10.0.0.5` → `10.0.0.5`, `::ffff:10.0.0.0/24` → `10.0.0.0/24`.
fn display_key(key: &str) -> String {
    match key.strip_prefix("::ffff:") {
        Some(rest) if rest.contains('.') => rest.to_owned(),
        _ => key.to_owned(),
    }
}

/// ` AND ...` conditions selecting outbound traffic of internal sources, minus the allow-list.
fn traffic_filter(spec: &ExfiltrationConfig) -> (String, Vec<Param>) {
    let mut sql = String::from(" AND src_internal = 1 AND traffic_direction = 'outbound'");
    let mut params = Vec::new();
    for cidr in &spec.allow.cidrs {
        if let Ok(net) = cidr.parse::<ipnet::IpNet>() {
            sql.push_str(" AND NOT (dst_addr >= IPv6StringToNum(?) AND dst_addr <= IPv6StringToNum(?))");
            params.extend(range_params(&net));
        }
    }
    if !spec.allow.asns.is_empty() {
        let marks = vec!["?"; spec.allow.asns.len()].join(", ");
        sql.push_str(&format!(" AND dst_as NOT IN ({marks})"));
        params.extend(spec.allow.asns.iter().map(|a| Param::U64((*a).into())));
    }
    for cloud in &spec.allow.clouds {
        let below = format!("{cloud}/");
        sql.push_str(" AND dst_cloud != ? AND substring(dst_cloud, 1, ?) != ?");
        params.push(Param::Str(cloud.clone()));
        params.push(Param::U64(below.len() as u64));
        params.push(Param::Str(below));
    }
    for host in &spec.allow.hosts {
        if let Some(net) = parse_net(host) {
            sql.push_str(" AND NOT (src_addr >= IPv6StringToNum(?) AND src_addr <= IPv6StringToNum(?))");
            params.extend(range_params(&net));
        }
    }
    if let Some((start, end)) = spec.allow.hours_utc.as_deref().and_then(parse_hours) {
        let joiner = if start < end { "AND" } else { "OR" };
        sql.push_str(&format!(
            " AND NOT (toHour(time_received) >= ? {joiner} toHour(time_received) < ?)"
        ));
        params.push(Param::U64(start));
        params.push(Param::U64(end));
    }
    (sql, params)
}

/// `time_received` in `[from, to)` plus the traffic filter.
fn window_where(sla: &SlaConfig, spec: &ExfiltrationConfig, ctx: &EvalContext) -> (String, Vec<Param>) {
    let from = u64::from(ctx.now).saturating_sub(sla.window_seconds);
    let (filter, filter_params) = traffic_filter(spec);
    let mut params = vec![Param::U64(from), Param::U64(ctx.now.into())];
    params.extend(filter_params);
    (
        format!("WHERE time_received >= toDateTime(?) AND time_received < toDateTime(?){filter}"),
        params,
    )
}

/// Volume and samples per subject in the window, largest first.
fn window_query(sla: &SlaConfig, spec: &ExfiltrationConfig, ctx: &EvalContext) -> SqlQuery {
    let (condition, params) = window_where(sla, spec, ctx);
    let mut query = SqlQuery::new(
        "exfiltration.window",
        format!(
            "SELECT {} AS subject, toUInt64(sum(bytes * sampling_rate)) AS bytes, toUInt64(count()) AS samples \
             FROM {}.{FLOWS_TABLE} {condition} \
             GROUP BY subject ORDER BY bytes DESC LIMIT ?",
            source_key(spec.group),
            ctx.database
        ),
    );
    query.params = params;
    query.params.push(Param::U64(spec.max_subjects));
    query
}

/// The hour-of-week ranges of the baseline: the hour holding the window's end, in each earlier
/// week of the last `days` days.
fn baseline_hours(ctx: &EvalContext, days: u32) -> Vec<u64> {
    let last = u64::from(ctx.now).saturating_sub(1);
    let hour = last - last % 3600;
    (1..=u64::from(days) / 7)
        .filter_map(|week| hour.checked_sub(week * WEEK))
        .collect()
}

/// Hourly volume per subject in the baseline hours.
fn baseline_query(spec: &ExfiltrationConfig, ctx: &EvalContext, hours: &[u64]) -> SqlQuery {
    let (filter, filter_params) = traffic_filter(spec);
    let ranges =
        vec!["(time_received >= toDateTime(?) AND time_received < toDateTime(?))"; hours.len()].join(" OR ");
    let mut query = SqlQuery::new(
        "exfiltration.baseline",
        format!(
            "SELECT {} AS subject, toUInt32(intDiv(toUInt32(time_received), 3600) * 3600) AS hour, \
             toUInt64(sum(bytes * sampling_rate)) AS bytes \
             FROM {}.{FLOWS_TABLE} WHERE ({ranges}){filter} \
             GROUP BY subject, hour",
            source_key(spec.group),
            ctx.database
        ),
    );
    for hour in hours {
        query.params.push(Param::U64(*hour));
        query.params.push(Param::U64(hour + 3600));
    }
    query.params.extend(filter_params);
    query
}

/// Top destinations of the given subjects in the window.
fn top_destinations_query(
    sla: &SlaConfig,
    spec: &ExfiltrationConfig,
    ctx: &EvalContext,
    subjects: &[&str],
) -> SqlQuery {
    let (condition, mut params) = window_where(sla, spec, ctx);
    let key = source_key(spec.group);
    let marks = vec!["?"; subjects.len().max(1)].join(", ");
    let mut query = SqlQuery::new(
        "exfiltration.top_destinations",
        format!(
            "SELECT {key} AS subject, IPv6NumToString(dst_addr) AS destination, toUInt32(dst_as) AS dst_as, \
             toUInt64(sum(bytes * sampling_rate)) AS bytes \
             FROM {}.{FLOWS_TABLE} {condition} AND {key} IN ({marks}) \
             GROUP BY subject, dst_addr, dst_as ORDER BY bytes DESC LIMIT ? BY subject",
            ctx.database
        ),
    );
    if subjects.is_empty() {
        params.push(Param::Str(String::new()));
    }
    params.extend(subjects.iter().map(|s| Param::Str((*s).to_owned())));
    params.push(Param::U64(TOP_DESTINATIONS));
    query.params = params;
    query
}

/// Volume per subject × destination in the window, largest first.
fn bulk_query(sla: &SlaConfig, spec: &ExfiltrationConfig, by: BulkBy, ctx: &EvalContext) -> SqlQuery {
    let (condition, params) = window_where(sla, spec, ctx);
    let mut query = SqlQuery::new(
        "exfiltration.bulk",
        format!(
            "SELECT {} AS subject, {} AS destination, toUInt64(sum(bytes * sampling_rate)) AS bytes, \
             toUInt64(count()) AS samples \
             FROM {}.{FLOWS_TABLE} {condition} \
             GROUP BY subject, destination ORDER BY bytes DESC LIMIT ?",
            source_key(spec.group),
            destination_key(by),
            ctx.database
        ),
    );
    query.params = params;
    query.params.push(Param::U64(spec.max_subjects));
    query
}

/// The queries of an exfiltration SLA (the top-destination query shown for one subject).
pub fn queries(sla: &SlaConfig, spec: &ExfiltrationConfig, ctx: &EvalContext) -> Vec<SqlQuery> {
    let mut queries = vec![window_query(sla, spec, ctx)];
    if let Some(baseline) = &spec.baseline {
        queries.push(baseline_query(spec, ctx, &baseline_hours(ctx, baseline.days)));
    }
    queries.push(top_destinations_query(sla, spec, ctx, &["::ffff:10.0.0.5"]));
    if let Some(bulk) = &spec.bulk {
        queries.push(bulk_query(sla, spec, bulk.by, ctx));
    }
    queries
}

#[derive(Debug, Row, Deserialize)]
struct SubjectVolume {
    subject: String,
    bytes: u64,
    samples: u64,
}

#[derive(Debug, Row, Deserialize)]
struct HourVolume {
    subject: String,
    hour: u32,
    bytes: u64,
}

#[derive(Debug, Row, Deserialize)]
struct Destination {
    subject: String,
    destination: String,
    dst_as: u32,
    bytes: u64,
}

#[derive(Debug, Row, Deserialize)]
struct PairVolume {
    subject: String,
    destination: String,
    bytes: u64,
    samples: u64,
}

/// Median of `values` (sorted in place); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Median and median absolute deviation of `values`.
pub fn median_mad(values: &[f64]) -> Option<(f64, f64)> {
    let mut sorted = values.to_vec();
    let m = median(&mut sorted)?;
    let mut deviations: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    Some((m, median(&mut deviations)?))
}

/// Evaluates an exfiltration SLA.
pub async fn evaluate(
    client: &Client,
    sla: &SlaConfig,
    spec: &ExfiltrationConfig,
    ctx: &EvalContext,
) -> Result<Vec<SlaResult>> {
    let timeout = ctx.query_timeout;
    let subject_label = match spec.group {
        SourceGroup::Host => "host",
        SourceGroup::Subnet24 => "subnet",
    };
    let mut results = Vec::new();
    if spec.limit_bytes > 0 || spec.baseline.is_some() {
        let volumes: Vec<SubjectVolume> = window_query(sla, spec, ctx)
            .fetch(client, timeout, &sla.name)
            .await?;
        // subject → baseline points (window-scaled bytes per covered week).
        let mut points: HashMap<&str, Vec<f64>> = HashMap::new();
        let mut weeks_covered = 0;
        if let Some(baseline) = &spec.baseline {
            let hours = baseline_hours(ctx, baseline.days);
            let rows: Vec<HourVolume> = baseline_query(spec, ctx, &hours)
                .fetch(client, timeout, &sla.name)
                .await?;
            let covered: BTreeSet<u32> = rows.iter().map(|r| r.hour).collect();
            weeks_covered = covered.len();
            let scale = sla.window_seconds as f64 / 3600.0;
            let by_subject_hour: HashMap<(&str, u32), u64> = rows
                .iter()
                .map(|r| ((r.subject.as_str(), r.hour), r.bytes))
                .collect();
            for v in &volumes {
                let series = covered
                    .iter()
                    .map(|hour| {
                        by_subject_hour
                            .get(&(v.subject.as_str(), *hour))
                            .copied()
                            .unwrap_or(0) as f64
                            * scale
                    })
                    .collect();
                points.insert(v.subject.as_str(), series);
            }
        }
        for v in &volumes {
            let display = display_key(&v.subject);
            let mut r = result(
                sla,
                ctx,
                display.clone(),
                BTreeMap::from([(subject_label.to_owned(), display)]),
            );
            let bytes = v.bytes as f64;
            r.value = bytes;
            r.samples = v.samples;
            let mut thresholds = Vec::new();
            let mut reason = None;
            if spec.limit_bytes > 0 {
                thresholds.push(spec.limit_bytes as f64);
                if bytes > spec.limit_bytes as f64 {
                    reason = Some("limit");
                }
            }
            let mut baseline_json = serde_json::Value::Null;
            if let Some(baseline) = &spec.baseline {
                let series = points.get(v.subject.as_str()).cloned().unwrap_or_default();
                match median_mad(&series).filter(|_| series.len() >= 2) {
                    Some((m, mad)) => {
                        let threshold = (m + baseline.k * mad).max(baseline.min_bytes as f64);
                        thresholds.push(threshold);
                        if bytes > threshold && reason.is_none() {
                            reason = Some("baseline");
                        }
                        baseline_json = serde_json::json!({
                            "median": m, "mad": mad, "k": baseline.k, "min_bytes": baseline.min_bytes,
                            "threshold": threshold, "points": series, "weeks": series.len(),
                        });
                    }
                    None => {
                        baseline_json = serde_json::json!({ "weeks": weeks_covered, "usable": false });
                    }
                }
            }
            r.threshold = thresholds.iter().copied().fold(f64::INFINITY, f64::min);
            r.verdict = if v.samples < spec.min_samples || thresholds.is_empty() {
                Verdict::NoData
            } else if reason.is_some() {
                Verdict::Breach
            } else {
                Verdict::Ok
            };
            if thresholds.is_empty() {
                r.threshold = 0.0;
            }
            r.details = serde_json::json!({
                subject_label: r.subject,
                "bytes": v.bytes,
                "window_seconds": sla.window_seconds,
                "limit_bytes": spec.limit_bytes,
                "baseline": baseline_json,
                "reason": reason,
                "top_destinations": [],
            });
            results.push((v.subject.clone(), r));
        }
        let breaching: Vec<&str> = results
            .iter()
            .filter(|(_, r)| r.verdict == Verdict::Breach)
            .map(|(key, _)| key.as_str())
            .take(MAX_TOP_SUBJECTS)
            .collect();
        if !breaching.is_empty() {
            let top: Vec<Destination> = top_destinations_query(sla, spec, ctx, &breaching)
                .fetch(client, timeout, &sla.name)
                .await?;
            for (key, r) in &mut results {
                let list: Vec<serde_json::Value> = top
                    .iter()
                    .filter(|d| &d.subject == key)
                    .map(|d| {
                        serde_json::json!({
                            "address": display_key(&d.destination), "as": d.dst_as, "bytes": d.bytes,
                        })
                    })
                    .collect();
                if !list.is_empty() {
                    r.details["top_destinations"] = serde_json::Value::Array(list);
                }
            }
        }
    }
    let mut results: Vec<SlaResult> = results.into_iter().map(|(_, r)| r).collect();
    if let Some(bulk) = &spec.bulk {
        let pairs: Vec<PairVolume> = bulk_query(sla, spec, bulk.by, ctx)
            .fetch(client, timeout, &sla.name)
            .await?;
        let (destination_label, prefix) = match bulk.by {
            BulkBy::DstAs => ("destination_as", "AS"),
            BulkBy::Dst24 => ("destination_net", ""),
        };
        for pair in pairs {
            let source = display_key(&pair.subject);
            let destination = format!("{prefix}{}", display_key(&pair.destination));
            let labels = BTreeMap::from([
                (subject_label.to_owned(), source.clone()),
                (destination_label.to_owned(), destination.clone()),
            ]);
            let mut r = result(sla, ctx, format!("{source} → {destination}"), labels);
            r.value = pair.bytes as f64;
            r.threshold = bulk.limit_bytes as f64;
            r.samples = pair.samples;
            r.verdict = if pair.samples < spec.min_samples {
                Verdict::NoData
            } else if pair.bytes > bulk.limit_bytes {
                Verdict::Breach
            } else {
                Verdict::Ok
            };
            r.details = serde_json::json!({
                subject_label: source,
                "destination": destination,
                "bytes": pair.bytes,
                "window_seconds": sla.window_seconds,
                "reason": if r.verdict == Verdict::Breach { Some("bulk") } else { None },
            });
            results.push(r);
        }
    }
    Ok(results)
}

/// The alert summary of an exfiltration result, e.g. `10.0.0.5 sent 2.1 GB to non-internal
/// destinations in 5m (limit 1.0 GB); top: 203.0.113.7 (AS64501) 2.0 GB`.
pub(crate) fn summary(r: &SlaResult, sla: &SlaConfig) -> String {
    let window = human_duration(sla.window_seconds);
    if let Some(destination) = r.details["destination"].as_str() {
        let source = r.subject.split(" → ").next().unwrap_or(&r.subject);
        return format!(
            "{source} sent {} to {destination} in {window} (limit {})",
            human_bytes(r.value),
            human_bytes(r.threshold)
        );
    }
    let mut text = format!(
        "{} sent {} to non-internal destinations in {window}",
        r.subject,
        human_bytes(r.value)
    );
    match r.details["reason"].as_str() {
        Some("baseline") => text.push_str(&format!(
            " (baseline {}, threshold {})",
            human_bytes(r.details["baseline"]["median"].as_f64().unwrap_or(0.0)),
            human_bytes(r.details["baseline"]["threshold"].as_f64().unwrap_or(0.0))
        )),
        _ if r.verdict == Verdict::NoData => text.push_str(&format!(" (no data: {} samples)", r.samples)),
        _ => text.push_str(&format!(" (limit {})", human_bytes(r.threshold))),
    }
    if let Some(top) = r.details["top_destinations"].as_array().filter(|t| !t.is_empty()) {
        let list: Vec<String> = top
            .iter()
            .map(|d| {
                format!(
                    "{} (AS{}) {}",
                    d["address"].as_str().unwrap_or("?"),
                    d["as"],
                    human_bytes(d["bytes"].as_f64().unwrap_or(0.0))
                )
            })
            .collect();
        text.push_str(&format!("; top: {}", list.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad() {
        assert_eq!(median_mad(&[1.0, 2.0, 3.0, 4.0, 100.0]), Some((3.0, 1.0)));
        assert_eq!(median_mad(&[10.0, 20.0]), Some((15.0, 5.0)));
        assert_eq!(median_mad(&[]), None);
    }

    #[test]
    fn keys_display_without_the_mapped_prefix() {
        assert_eq!(display_key("::ffff:10.0.0.0/24"), "10.0.0.0/24");
        assert_eq!(display_key("2001:db8::1"), "2001:db8::1");
    }

    #[test]
    fn allow_list_becomes_bound_exclusions() {
        let spec = ExfiltrationConfig {
            limit_bytes: 1,
            allow: super::super::AllowList {
                cidrs: vec!["203.0.113.0/24".into()],
                asns: vec![64501, 64502],
                clouds: vec!["aws".into()],
                hosts: vec!["10.0.0.9".into()],
                hours_utc: Some("22-06".into()),
            },
            ..ExfiltrationConfig::default()
        };
        let (sql, params) = traffic_filter(&spec);
        assert_eq!(sql.matches('?').count(), params.len());
        assert!(sql.contains("dst_as NOT IN (?, ?)"));
        assert!(sql.contains("toHour(time_received) >= ? OR toHour(time_received) < ?"));
        assert!(params.contains(&Param::Str("::ffff:203.0.113.255".into())));
        assert!(params.contains(&Param::Str("aws/".into())));
        assert!(!sql.contains("203.0.113"), "values are bound, not pasted");
    }
}
