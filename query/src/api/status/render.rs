//! The status page's markup: a header with summary tiles, then the egress paths, firing alerts,
//! SLA verdicts, round trips and collector health, each a section that says "unavailable"
//! when its data could not be read.
//!
//! In: a [`Snapshot`] (read before, no I/O here). Out: the whole HTML document as maud
//! [`Markup`]; every text is escaped by maud.

use std::collections::BTreeMap;

use maud::{html, Markup, DOCTYPE};

use super::chart::{sparkline, utilisation_bar};
use super::format::{age, bits_per_second, compact, count, duration, milliseconds, percent, span, utc};
use super::{
    ExporterHealth, Section, Snapshot, Unavailable, HISTORY_SECONDS, LATENCY_STEP, LATENCY_WINDOW,
    REFRESH_SECONDS, SILENT_AFTER, THROUGHPUT_WINDOW,
};
use crate::api::alerts::{AlertState, AlertView};
use crate::api::latency::Series;
use crate::api::paths::PathStatus;
use crate::api::slas::ResultRow;

/// The page's style sheet. It is written into a `<style>` element through maud's escaping,
/// which would break CSS containing `&`, `<`, `>` or `"`; a unit test keeps it free of them.
const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1f2937;background:#f3f5f8}\
header.top{background:#16202e;color:#f3f5f8;padding:16px 28px;display:flex;flex-wrap:wrap;align-items:center;justify-content:space-between;gap:16px}\
header.top h1{margin:0;font-size:22px;letter-spacing:.3px}\
header.top .sub{color:#9fb0c6;font-size:12.5px}\
.tiles{display:flex;gap:10px;flex-wrap:wrap}\
.tile{background:#223047;border-radius:8px;padding:8px 14px;min-width:128px}\
.tile .n{font-size:20px;font-weight:600}\
.tile .l{font-size:11.5px;color:#9fb0c6;text-transform:uppercase;letter-spacing:.5px}\
.tile.bad .n{color:#ff8a7a}.tile.good .n{color:#7ee0a1}.tile.warn .n{color:#ffd07a}\
main{padding:18px 28px 40px;max-width:1500px}\
section{background:#fff;border:1px solid #dfe3ea;border-radius:10px;padding:14px 18px;margin-bottom:16px;overflow-x:auto}\
h2{margin:0 0 10px;font-size:16px}\
h2 small{font-weight:400;color:#6b7280;font-size:12.5px;margin-left:8px}\
.cols{display:grid;grid-template-columns:2fr 3fr;gap:16px}\
.cols section{margin-bottom:0}\
table{border-collapse:collapse;width:100%}\
th{text-align:left;font-size:11.5px;text-transform:uppercase;letter-spacing:.4px;color:#6b7280;font-weight:600;padding:6px 8px;border-bottom:1px solid #dfe3ea}\
td{padding:7px 8px;border-bottom:1px solid #eef0f4;vertical-align:middle}\
tr:last-child td{border-bottom:none}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
.label{font-weight:600}\
.nowrap{white-space:nowrap}\
td.path{min-width:240px}\
.meta{color:#6b7280;font-size:12px}\
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;white-space:nowrap;margin:1px 2px 1px 0}\
.ok{background:#dcf5e4;color:#17663a}.breach,.firing,.silent{background:#fde0db;color:#a12a17}\
.nodata,.idle,.none{background:#e9ecf1;color:#4b5563}.pending,.degraded{background:#fdf0d2;color:#8a5a00}\
.chip{display:inline-block;background:#eef1f6;border-radius:4px;padding:0 6px;font-size:12px;margin:1px 3px 1px 0;color:#374151}\
.util{display:flex;align-items:center;gap:8px;white-space:nowrap}\
svg{display:block}\
.unavailable{color:#a12a17;background:#fdf3f1;border-radius:6px;padding:10px 12px}\
.empty{color:#6b7280;padding:6px 0}\
ul.alerts{list-style:none;margin:0;padding:0}\
ul.alerts li{padding:8px 0;border-bottom:1px solid #eef0f4}\
ul.alerts li:last-child{border-bottom:none}\
footer{color:#6b7280;font-size:12px;padding:0 28px 24px}\
@media (max-width:1100px){.cols{grid-template-columns:1fr}}";

/// Line colour of throughput sparklines.
const THROUGHPUT_COLOUR: &str = "#2563eb";
/// Line colour of round-trip sparklines.
const LATENCY_COLOUR: &str = "#7c3aed";

/// The whole document.
pub(super) fn page(snapshot: &Snapshot<'_>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Egress status" }
                style { (CSS) }
            }
            body {
                (top(snapshot))
                main {
                    (paths(snapshot))
                    div.cols {
                        (alerts(snapshot))
                        (slas(snapshot))
                    }
                    div style="height:16px" {}
                    (latency(snapshot))
                    (collectors(snapshot))
                }
                footer {
                    "Egress query service · JSON API: " code { "/api/v1/paths" } ", "
                    code { "/api/v1/slas" } ", " code { "/api/v1/alerts" } " · " code { "/openapi.json" }
                }
            }
        }
    }
}

fn unavailable(reason: &Unavailable) -> Markup {
    html! { p.unavailable { "Unavailable: " (reason.0) } }
}

/// The header: title, time, and one tile per section with its headline figure.
fn top(snapshot: &Snapshot<'_>) -> Markup {
    let tile = |value: String, label: &str, class: &str| {
        html! { div class=(format!("tile {class}")) { div.n { (value) } div.l { (label) } } }
    };
    let paths = snapshot.paths.as_ref().ok().map(|paths| {
        let with = |status: &str| paths.iter().filter(|p| p.status == status).count();
        (with("ok"), paths.len())
    });
    let breaches = snapshot
        .slas
        .as_ref()
        .ok()
        .map(|rows| rows.iter().filter(|r| r.verdict_name == "breach").count());
    let firing = snapshot
        .alerts
        .as_ref()
        .ok()
        .map(|alerts| alerts.iter().filter(|a| a.state == AlertState::Firing).count());
    let exporters = snapshot.exporters.as_ref().ok().map(|exporters| {
        let reporting = exporters
            .iter()
            .filter(|e| {
                exporter_status(e, snapshot.now) == "ok" || exporter_status(e, snapshot.now) == "degraded"
            })
            .count();
        (reporting, exporters.len())
    });
    let unknown = || "?".to_owned();
    html! {
        header.top {
            div {
                h1 { "Egress status" }
                div.sub { (utc(snapshot.now)) " · refreshes every " (REFRESH_SECONDS) " s" }
            }
            div.tiles {
                @match paths {
                    Some((ok, total)) => (tile(format!("{ok} / {total}"), "paths carrying traffic", if ok == total { "good" } else { "warn" })),
                    None => (tile(unknown(), "paths carrying traffic", "bad")),
                }
                @match breaches {
                    Some(n) => (tile(n.to_string(), "SLA breaches", if n == 0 { "good" } else { "bad" })),
                    None => (tile(unknown(), "SLA breaches", "bad")),
                }
                @match firing {
                    Some(n) => (tile(n.to_string(), "firing alerts", if n == 0 { "good" } else { "bad" })),
                    None => (tile(unknown(), "firing alerts", "bad")),
                }
                @match exporters {
                    Some((reporting, total)) => (tile(format!("{reporting} / {total}"), "exporters reporting", if reporting == total { "good" } else { "bad" })),
                    None => (tile(unknown(), "exporters reporting", "bad")),
                }
            }
        }
    }
}

/// `ok`, `idle` or `no data` as a badge.
fn path_badge(status: &str) -> Markup {
    let (class, text) = match status {
        "ok" => ("ok", "ok"),
        "idle" => ("idle", "idle"),
        _ => ("nodata", "no data"),
    };
    html! { span class=(format!("badge {class}")) { (text) } }
}

/// A verdict (`ok`, `breach`, `no_data`) as a badge.
fn verdict_badge(verdict: &str) -> Markup {
    let (class, text) = match verdict {
        "ok" => ("ok", "ok"),
        "breach" => ("breach", "breach"),
        "no_data" => ("nodata", "no data"),
        other => ("none", other),
    };
    html! { span class=(format!("badge {class}")) { (text) } }
}

/// The SLA results about one path (its subject or its `path` label).
fn results_for<'r>(slas: &'r Section<Vec<ResultRow>>, label: &str) -> Vec<&'r ResultRow> {
    match slas {
        Ok(rows) => rows
            .iter()
            .filter(|r| r.subject == label || label_value(r, "path") == Some(label))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn label_value<'r>(row: &'r ResultRow, key: &str) -> Option<&'r str> {
    row.labels_keys
        .iter()
        .position(|k| k == key)
        .and_then(|index| row.labels_values.get(index))
        .map(String::as_str)
}

fn paths(snapshot: &Snapshot<'_>) -> Markup {
    html! {
        section #paths {
            h2 { "Egress paths" small { "throughput over the last " (span(THROUGHPUT_WINDOW)) "; trend over the last " (span(HISTORY_SECONDS)) } }
            @match &snapshot.paths {
                Err(reason) => (unavailable(reason)),
                Ok(paths) if paths.is_empty() => p.empty { "No egress path is configured in the model." },
                Ok(paths) => table {
                    thead { tr {
                        th { "Path" } th { "Status" } th.num { "Throughput" } th { "Last " (span(HISTORY_SECONDS)) }
                        th { "Utilisation" } th.num { "Capacity" } th.num { "RTT p95" } th { "SLAs" }
                    } }
                    tbody {
                        @for path in paths { (path_row(snapshot, path)) }
                    }
                },
            }
        }
    }
}

fn path_row(snapshot: &Snapshot<'_>, path: &PathStatus<'_>) -> Markup {
    let results = results_for(&snapshot.slas, path.label);
    let limit = results
        .iter()
        .find(|r| r.kind == "throughput")
        .map(|r| r.threshold);
    let trend = match &snapshot.history {
        Ok(history) => history.get(path.label).cloned(),
        Err(_) => None,
    };
    let round_trips: Vec<&Series> = match &snapshot.latency {
        Ok(series) => series.iter().filter(|s| s.path == path.label).collect(),
        Err(_) => Vec::new(),
    };
    let mut details: Vec<String> = vec![format!(
        "{} ({})",
        if path.exporter_name.is_empty() {
            "exporter"
        } else {
            path.exporter_name
        },
        path.exporter_address
    )];
    let interface = if path.if_name.is_empty() {
        format!("ifIndex {}", path.if_index)
    } else {
        format!("{} (ifIndex {})", path.if_name, path.if_index)
    };
    details.push(interface);
    details.extend(
        [path.kind, path.provider, path.site]
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    );
    html! {
        tr {
            td.path { div.label { (path.label) } div.meta { (details.join(" · ")) } }
            td { (path_badge(path.status)) }
            td.num { (bits_per_second(path.throughput_bps)) div.meta { (count(path.records)) " records" } }
            td {
                @match &trend {
                    Some(values) => {
                        @let peak = values.iter().flatten().copied().fold(0.0_f64, f64::max);
                        (sparkline(values, THROUGHPUT_COLOUR, &format!("{}: peak {} over the last {}", path.label, bits_per_second(peak), span(HISTORY_SECONDS))))
                        div.meta { "peak " (bits_per_second(peak)) }
                    }
                    None if snapshot.history.is_err() => span.meta { "unavailable" },
                    None => span.meta { "no outbound flows" },
                }
            }
            td {
                @match path.utilisation {
                    Some(utilisation) => div.util { (utilisation_bar(utilisation, limit)) span { (percent(utilisation)) } },
                    None => span.meta { "no capacity" },
                }
            }
            td.num {
                @match path.capacity_bps {
                    Some(capacity) => (bits_per_second(capacity as f64)),
                    None => "—",
                }
            }
            td.num {
                @if round_trips.is_empty() { span.meta { "—" } }
                @for series in &round_trips {
                    @if let Some(point) = series.points.last() {
                        div { (milliseconds(point.p95_ms)) " " span.meta { (series.source) } }
                    }
                }
            }
            td {
                @if results.is_empty() { span.meta { "—" } }
                @for result in &results {
                    div.nowrap title=(sla_title(result)) {
                        (verdict_badge(&result.verdict_name)) span.meta { (result.sla) }
                    }
                }
            }
        }
    }
}

/// `transit-latency (latency): 23.4 ms of 50 ms`.
fn sla_title(row: &ResultRow) -> String {
    let check = label_value(row, "check")
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    format!(
        "{}{check}: {} of {}",
        row.sla,
        sla_figure(row, row.value),
        sla_figure(row, row.threshold)
    )
}

fn alerts(snapshot: &Snapshot<'_>) -> Markup {
    html! {
        section #alerts {
            h2 { "Alerts" small { "pending and firing" } }
            @match &snapshot.alerts {
                Err(reason) => (unavailable(reason)),
                Ok(alerts) if alerts.is_empty() => p.empty { "No alert is pending or firing." },
                Ok(alerts) => ul.alerts { @for alert in alerts { (alert_item(snapshot.now, alert)) } },
            }
        }
    }
}

fn alert_item(now: u32, alert: &AlertView) -> Markup {
    let (class, state) = match alert.state {
        AlertState::Firing => ("firing", "firing"),
        AlertState::Pending => ("pending", "pending"),
        AlertState::Resolved => ("ok", "resolved"),
    };
    let name = alert.labels.get("alertname").map_or("(unnamed)", String::as_str);
    let summary = alert
        .annotations
        .get("summary")
        .or_else(|| alert.annotations.get("description"));
    let since = u32::try_from(alert.starts_at.timestamp()).unwrap_or(0);
    html! {
        li {
            span class=(format!("badge {class}")) { (state) }
            " " strong { (name) }
            @if let Some(severity) = alert.labels.get("severity") { " " span.chip { (severity) } }
            @if !alert.silenced_by.is_empty() { " " span.badge.none { "silenced" } }
            span.meta { " since " (age(now, since)) }
            div {
                @for (key, value) in alert.labels.iter().filter(|(k, _)| *k != "alertname" && *k != "severity") {
                    span.chip { (key) "=" (value) }
                }
            }
            @if let Some(summary) = summary { div { (summary) } }
            div.meta {
                "value " (compact(alert.value))
                @if let Some(threshold) = alert.threshold { " · threshold " (compact(threshold)) }
            }
        }
    }
}

/// A result's value or threshold in the unit of its kind and check. A result with an error
/// budget (`details.objective`) holds a burn rate, shown as a plain number.
fn sla_figure(row: &ResultRow, value: f64) -> String {
    let burn_rate = serde_json::from_str::<serde_json::Value>(&row.details)
        .is_ok_and(|details| details.get("objective").is_some());
    match (row.kind.as_str(), label_value(row, "check")) {
        _ if burn_rate => compact(value),
        ("throughput", _) | ("exporter_health", Some("loss")) | ("latency", Some("unreachable")) => {
            percent(value)
        }
        ("exporter_health", Some("silence")) => duration(value),
        ("latency", Some("latency")) => milliseconds(value),
        ("exfiltration", _) => format!("{}B", compact(value)),
        _ => compact(value),
    }
}

/// Breaches first, then no data, then the rest; stable within a verdict (SLA, subject order).
fn by_severity(rows: &[ResultRow]) -> Vec<&ResultRow> {
    let severity = |verdict: &str| match verdict {
        "breach" => 0,
        "no_data" => 1,
        "ok" => 3,
        _ => 2,
    };
    let mut ordered: Vec<&ResultRow> = rows.iter().collect();
    ordered.sort_by_key(|r| severity(&r.verdict_name));
    ordered
}

fn slas(snapshot: &Snapshot<'_>) -> Markup {
    html! {
        section #slas {
            h2 { "SLA verdicts" small { "latest result per SLA and subject" } }
            @match &snapshot.slas {
                Err(reason) => (unavailable(reason)),
                Ok(rows) => {
                    @let ordered = by_severity(rows);
                    @let not_evaluated: Vec<&String> = snapshot.sla_names.iter().filter(|name| !rows.iter().any(|r| &r.sla == *name)).collect();
                    @if ordered.is_empty() && not_evaluated.is_empty() {
                        p.empty { "No SLA is configured." }
                    } @else {
                        table {
                            thead { tr { th { "Verdict" } th { "SLA" } th { "Subject" } th.num { "Value" } th.num { "Threshold" } } }
                            tbody {
                                @for row in &ordered {
                                    tr {
                                        td { (verdict_badge(&row.verdict_name)) div.meta { (age(snapshot.now, row.time)) } }
                                        td { div.label { (row.sla) } div.meta { (row.kind) } }
                                        td { (row.subject) @if let Some(check) = label_value(row, "check") { div.meta { (check) } } }
                                        td.num { (sla_figure(row, row.value)) div.meta { (count(row.samples)) " samples" } }
                                        td.num { (sla_figure(row, row.threshold)) }
                                    }
                                }
                                @for name in &not_evaluated {
                                    tr {
                                        td { span.badge.none { "not evaluated" } }
                                        td { div.label { (name) } }
                                        td.meta colspan="3" { "no result in the last " (span(super::LATEST_LOOKBACK)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The values of a series in slots of [`LATENCY_STEP`] from the first bucket of the window to
/// the bucket holding `now`; a bucket without samples is a gap.
fn latency_slots(series: &Series, from: u32, now: u32) -> Vec<Option<f64>> {
    let first = from / LATENCY_STEP * LATENCY_STEP;
    let slots = (now / LATENCY_STEP * LATENCY_STEP).saturating_sub(first) / LATENCY_STEP + 1;
    let by_bucket: BTreeMap<u32, f64> = series.points.iter().map(|p| (p.bucket, p.p95_ms)).collect();
    (0..slots)
        .map(|slot| by_bucket.get(&(first + slot * LATENCY_STEP)).copied())
        .collect()
}

fn latency(snapshot: &Snapshot<'_>) -> Markup {
    html! {
        section #latency {
            h2 { "Round trips" small { "per path and source over the last " (span(LATENCY_WINDOW)) "; percentiles of the latest " (span(LATENCY_STEP)) }  }
            @match &snapshot.latency {
                Err(reason) => (unavailable(reason)),
                Ok(series) if series.is_empty() => p.empty { "No probe answered and no flow carried a round-trip time in the last " (span(LATENCY_WINDOW)) "." },
                Ok(series) => table {
                    thead { tr { th { "Path" } th { "Source" } th.num { "Samples" } th.num { "p50" } th.num { "p95" } th.num { "p99" } th { "p95 trend" } } }
                    tbody {
                        @for one in series {
                            @let samples: u64 = one.points.iter().map(|p| p.samples).sum();
                            tr {
                                td.label { (one.path) }
                                td { span.chip { (one.source) } }
                                td.num { (count(samples)) }
                                @match one.points.last() {
                                    Some(point) => {
                                        td.num { (milliseconds(point.p50_ms)) }
                                        td.num { strong { (milliseconds(point.p95_ms)) } }
                                        td.num { (milliseconds(point.p99_ms)) }
                                    }
                                    None => { td {} td {} td {} }
                                }
                                td { (sparkline(&latency_slots(one, snapshot.latency_from, snapshot.now), LATENCY_COLOUR, &format!("{} ({}): p95 per {}", one.path, one.source, span(LATENCY_STEP)))) }
                            }
                        }
                    }
                },
            }
        }
    }
}

/// `ok`, `degraded` (loss or decode errors), `silent` (nothing for [`SILENT_AFTER`]) or `none`
/// (nothing in the lookback).
fn exporter_status(exporter: &ExporterHealth, now: u32) -> &'static str {
    match &exporter.activity {
        Some(activity) if activity.last_minute > 0 => {
            let last_seen = activity.last_minute.saturating_add(60).min(now);
            if now.saturating_sub(last_seen) > SILENT_AFTER {
                "silent"
            } else if activity.records_lost > 0 || activity.decode_errors > 0 {
                "degraded"
            } else {
                "ok"
            }
        }
        _ => "none",
    }
}

fn collectors(snapshot: &Snapshot<'_>) -> Markup {
    html! {
        section #collectors {
            h2 { "Collector health" small { "per exporter; counters over the last " (span(super::EXPORTER_WINDOW)) } }
            @match &snapshot.exporters {
                Err(reason) => (unavailable(reason)),
                Ok(exporters) if exporters.is_empty() => p.empty { "No exporter is configured or has sent datagrams." },
                Ok(exporters) => table {
                    thead { tr {
                        th { "Exporter" } th { "Status" } th.num { "Datagrams" } th.num { "Records" }
                        th.num { "Decode errors" } th.num { "Sequence loss" } th.num { "Last seen" }
                    } }
                    tbody {
                        @for exporter in exporters {
                            @let status = exporter_status(exporter, snapshot.now);
                            tr {
                                td {
                                    div.label { @if exporter.name.is_empty() { (exporter.address) } @else { (exporter.name) } }
                                    @if !exporter.name.is_empty() { div.meta { (exporter.address) } }
                                }
                                td { span class=(format!("badge {status}")) { @if status == "none" { "no data" } @else { (status) } } }
                                @match &exporter.activity {
                                    Some(activity) => {
                                        td.num { (count(activity.datagrams)) }
                                        td.num { (count(activity.records)) }
                                        td.num { (count(activity.decode_errors)) }
                                        td.num {
                                            (count(activity.records_lost))
                                            @let sent = activity.records + activity.records_lost;
                                            @if sent > 0 { div.meta { (percent(activity.records_lost as f64 / sent as f64)) } }
                                        }
                                        td.num {
                                            @if activity.last_minute > 0 {
                                                (age(snapshot.now, activity.last_minute.saturating_add(60).min(snapshot.now)))
                                            } @else { "—" }
                                        }
                                    }
                                    None => {
                                        td.num { "0" } td.num { "0" } td.num { "0" } td.num { "0" }
                                        td.num.meta { "not in " (span(super::EXPORTER_LOOKBACK)) }
                                    }
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_style_sheet_needs_no_escaping() {
        assert!(!CSS.contains(['&', '<', '>', '"']), "CSS would be escaped");
        let rendered = html! { style { (CSS) } }.into_string();
        assert_eq!(rendered, format!("<style>{CSS}</style>"));
    }
}
