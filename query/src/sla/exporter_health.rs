//! Exporter health SLA: silent exporters and export loss.
//!
//! In: the configured exporters of the [`EvalContext`] plus every exporter seen in the last day
//! (`exporter_stats`). The time of the last datagram comes from `exporter_stats` (minute rows,
//! read as "up to the end of that minute") and from `flows` over the recent past (one range
//! scan of `max(2 × silent_seconds, window)`); the loss ratio is
//! `records_lost / (records + records_lost)` over the window's minutes of `exporter_stats`.
//!
//! Out: two results per exporter, told apart by the `check` label: `silence` (value = seconds
//! since the last datagram, threshold = `silent_seconds`; a silent exporter is a breach, never
//! no data and never zero traffic) and `loss` (value = loss ratio, threshold =
//! `max_loss_ratio`; fewer than `min_samples` records gives no data).

use std::collections::BTreeMap;

use clickhouse::{Client, Row};
use serde::Deserialize;

use super::{
    display_address, result, EvalContext, ExporterHealthConfig, Param, Result, SlaConfig, SlaResult,
    SqlQuery, Verdict,
};
use crate::schema::{to_v6, EXPORTER_STATS_TABLE, FLOWS_TABLE};

/// How far back `exporter_stats` is read for exporters seen recently.
pub const SEEN_LOOKBACK_SECONDS: u32 = 86_400;

/// Per exporter, from `exporter_stats`.
#[derive(Debug, Row, Deserialize)]
struct StatsRow {
    exporter: String,
    last_minute: u32,
    records: u64,
    records_lost: u64,
}

/// Per exporter, from `flows`.
#[derive(Debug, Row, Deserialize)]
struct LastFlow {
    exporter: String,
    last_seen: u32,
}

fn stats_query(sla: &SlaConfig, ctx: &EvalContext) -> SqlQuery {
    let loss_from = u64::from(ctx.now).saturating_sub(sla.window_seconds + 60);
    let mut query = SqlQuery::new(
        "exporter_health.stats",
        format!(
            "SELECT IPv6NumToString(exporter_address) AS exporter, toUInt32(max(minute)) AS last_minute, \
             toUInt64(sumIf(records, minute > toDateTime(?))) AS records, \
             toUInt64(sumIf(records_lost, minute > toDateTime(?))) AS records_lost \
             FROM {}.{EXPORTER_STATS_TABLE} \
             WHERE minute >= toDateTime(?) AND minute <= toDateTime(?) AND datagrams > 0 \
             GROUP BY exporter_address",
            ctx.database
        ),
    );
    query.params = vec![
        Param::U64(loss_from),
        Param::U64(loss_from),
        Param::U64(ctx.now.saturating_sub(SEEN_LOOKBACK_SECONDS).into()),
        Param::U64(ctx.now.into()),
    ];
    query
}

fn flows_lookback(sla: &SlaConfig, spec: &ExporterHealthConfig) -> u64 {
    (2 * spec.silent_seconds).max(sla.window_seconds)
}

fn last_flow_query(sla: &SlaConfig, spec: &ExporterHealthConfig, ctx: &EvalContext) -> SqlQuery {
    let mut query = SqlQuery::new(
        "exporter_health.last_flow",
        format!(
            "SELECT IPv6NumToString(exporter_address) AS exporter, toUInt32(max(time_received)) AS last_seen \
             FROM {}.{FLOWS_TABLE} \
             WHERE time_received >= toDateTime(?) AND time_received <= toDateTime(?) \
             GROUP BY exporter_address",
            ctx.database
        ),
    );
    query.params = vec![
        Param::U64(u64::from(ctx.now).saturating_sub(flows_lookback(sla, spec))),
        Param::U64(ctx.now.into()),
    ];
    query
}

/// The queries of an exporter-health SLA.
pub fn queries(sla: &SlaConfig, spec: &ExporterHealthConfig, ctx: &EvalContext) -> Vec<SqlQuery> {
    vec![stats_query(sla, ctx), last_flow_query(sla, spec, ctx)]
}

/// What is known about one exporter.
#[derive(Debug, Default)]
struct Seen {
    name: Option<String>,
    last_seen: Option<u32>,
    records: u64,
    records_lost: u64,
}

/// Evaluates an exporter-health SLA.
pub async fn evaluate(
    client: &Client,
    sla: &SlaConfig,
    spec: &ExporterHealthConfig,
    ctx: &EvalContext,
) -> Result<Vec<SlaResult>> {
    let stats: Vec<StatsRow> = stats_query(sla, ctx)
        .fetch(client, ctx.query_timeout, &sla.name)
        .await?;
    let flows: Vec<LastFlow> = last_flow_query(sla, spec, ctx)
        .fetch(client, ctx.query_timeout, &sla.name)
        .await?;
    // Keyed by the stored text form (`::ffff:192.0.2.1`).
    let mut exporters: BTreeMap<String, Seen> = BTreeMap::new();
    for exporter in &ctx.exporters {
        exporters
            .entry(to_v6(exporter.address).to_string())
            .or_default()
            .name = Some(exporter.name.clone());
    }
    for row in &stats {
        let seen = exporters.entry(row.exporter.clone()).or_default();
        // A minute row covers datagrams up to the end of that minute.
        let last = row.last_minute.saturating_add(60).min(ctx.now);
        seen.last_seen = seen.last_seen.max(Some(last));
        seen.records += row.records;
        seen.records_lost += row.records_lost;
    }
    for row in &flows {
        let seen = exporters.entry(row.exporter.clone()).or_default();
        seen.last_seen = seen.last_seen.max(Some(row.last_seen.min(ctx.now)));
    }
    let mut results = Vec::new();
    for (address, seen) in exporters {
        let display = display_address(&address);
        let name = seen.name.clone().unwrap_or_else(|| display.clone());
        let labels = |check: &str| {
            BTreeMap::from([
                ("exporter".to_owned(), name.clone()),
                ("exporter_address".to_owned(), display.clone()),
                ("check".to_owned(), check.to_owned()),
            ])
        };
        // Never seen in the day: at least that long silent.
        let silent_seconds = match seen.last_seen {
            Some(last) => ctx.now.saturating_sub(last),
            None => SEEN_LOOKBACK_SECONDS,
        };
        let mut silence = result(sla, ctx, name.clone(), labels("silence"));
        silence.value = f64::from(silent_seconds);
        silence.threshold = spec.silent_seconds as f64;
        silence.verdict = if u64::from(silent_seconds) > spec.silent_seconds {
            Verdict::Breach
        } else {
            Verdict::Ok
        };
        silence.samples = seen.records;
        silence.details = serde_json::json!({
            "check": "silence",
            "exporter_address": display,
            "last_seen": seen.last_seen,
            "silent_seconds": silent_seconds,
            "seen_in_lookback": seen.last_seen.is_some(),
        });
        results.push(silence);

        let total = seen.records + seen.records_lost;
        let ratio = if total == 0 {
            0.0
        } else {
            seen.records_lost as f64 / total as f64
        };
        let mut loss = result(sla, ctx, name.clone(), labels("loss"));
        loss.value = ratio;
        loss.threshold = spec.max_loss_ratio;
        loss.verdict = if total < spec.min_samples {
            Verdict::NoData
        } else if ratio > spec.max_loss_ratio {
            Verdict::Breach
        } else {
            Verdict::Ok
        };
        loss.samples = total;
        loss.details = serde_json::json!({
            "check": "loss",
            "exporter_address": display,
            "records": seen.records,
            "records_lost": seen.records_lost,
            "loss_ratio": ratio,
        });
        results.push(loss);
    }
    Ok(results)
}

/// The alert summary of an exporter-health result.
pub(crate) fn summary(r: &SlaResult, _sla: &SlaConfig) -> String {
    if r.details["check"] == "silence" {
        if r.details["seen_in_lookback"] == false {
            format!("exporter {} has sent nothing for at least a day", r.subject)
        } else {
            format!(
                "exporter {} silent for {:.0} s (limit {:.0} s)",
                r.subject, r.value, r.threshold
            )
        }
    } else if r.verdict == Verdict::NoData {
        format!(
            "exporter {}: no data for the loss ratio ({} records)",
            r.subject, r.samples
        )
    } else {
        format!(
            "exporter {} lost {:.2}% of records (limit {:.2}%): {} lost of {}",
            r.subject,
            r.value * 100.0,
            r.threshold * 100.0,
            r.details["records_lost"],
            r.samples
        )
    }
}
