//! Latency SLA: round-trip percentiles of the active probes, and unreachable paths.
//!
//! In: the `probes` table (written by the collector's prober, see [`crate::probes`]), one range
//! scan of the window grouped by path (or path and target, `per = "target"`). Out: two results
//! per subject, told apart by the `check` label, so that each has its own alert that fires and
//! resolves on its own:
//!
//! - `latency`: value = the configured percentile (p50/p95/p99...) of the *successful* probes'
//!   round trip in milliseconds, threshold = `threshold_ms`. Fewer than `min_samples` successful
//!   probes gives no data, and so does a subject whose probes all failed: a path that does not
//!   answer has no latency, never a figure of 0 or of the timeout.
//! - `unreachable`: value = failure ratio of the window's probes, threshold 1. Breach when every
//!   probe failed (at least `min_samples` of them), ok when any answered; fewer probes: no data.
//!
//! A path listed in `paths` without any probe in the window gets no data on both checks (the
//! prober is not running or not probing it; that is not a verdict on the path).
//!
//! Every figure says where it came from: `details.source = "probes"`. Flow RTT (the `flows`
//! RTT columns) as a second source and a good-event ratio with burn rates are later additions
//! to this module; the configuration has room for them (`source`, an `objective` good-event
//! kind) without changing these results.
//!
//! The percentile is `quantileExact` (exact, and probes are few: one per target per interval),
//! over `ifNull(rtt_us, 0)` with the `-If` combinator on `success = 1`, which runs on 18.16 and
//! current servers alike (no aggregate over a `Nullable` column is needed).

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::{Client, Row};
use serde::Deserialize;

use super::{
    human_duration, result, EvalContext, LatencyConfig, LatencyScope, Param, Result, SlaConfig, SlaResult,
    SqlQuery, Verdict,
};
use crate::probes::PROBES_TABLE;

/// Probe figures of one subject over the window.
#[derive(Debug, Clone, Row, Deserialize)]
struct SubjectProbes {
    path: String,
    target: String,
    probes: u64,
    successes: u64,
    /// The configured percentile, microseconds.
    level_us: f64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
}

fn window_query(sla: &SlaConfig, spec: &LatencyConfig, ctx: &EvalContext) -> SqlQuery {
    let (target, group_by) = match spec.per {
        LatencyScope::Path => ("''", "path"),
        LatencyScope::Target => ("target", "path, target"),
    };
    let percentile =
        |name: &str| format!("toFloat64(quantileExactIf(?)(ifNull(rtt_us, 0), success = 1)) AS {name}");
    let mut query = SqlQuery::new(
        "latency.window",
        format!(
            "SELECT path, {target} AS target, toUInt64(count()) AS probes, \
             toUInt64(sum(success)) AS successes, {}, {}, {}, {} \
             FROM {}.{PROBES_TABLE} \
             WHERE time >= toDateTime(?) AND time < toDateTime(?)",
            percentile("level_us"),
            percentile("p50_us"),
            percentile("p95_us"),
            percentile("p99_us"),
            ctx.database
        ),
    );
    // Aggregate parameters must be constants: the client puts the bound value in as a literal.
    query.params = [spec.percentile, 0.5, 0.95, 0.99].map(Param::F64).to_vec();
    query
        .params
        .push(Param::U64(u64::from(ctx.now).saturating_sub(sla.window_seconds)));
    query.params.push(Param::U64(ctx.now.into()));
    if !spec.paths.is_empty() {
        let marks = vec!["?"; spec.paths.len()].join(", ");
        query.push(
            &format!(" AND path IN ({marks})"),
            spec.paths.iter().cloned().map(Param::Str),
        );
    }
    query.push(&format!(" GROUP BY {group_by} ORDER BY {group_by}"), []);
    query
}

/// The queries of a latency SLA.
pub fn queries(sla: &SlaConfig, spec: &LatencyConfig, ctx: &EvalContext) -> Vec<SqlQuery> {
    vec![window_query(sla, spec, ctx)]
}

/// Evaluates a latency SLA.
pub async fn evaluate(
    client: &Client,
    sla: &SlaConfig,
    spec: &LatencyConfig,
    ctx: &EvalContext,
) -> Result<Vec<SlaResult>> {
    let mut rows: Vec<SubjectProbes> = window_query(sla, spec, ctx)
        .fetch(client, ctx.query_timeout, &sla.name)
        .await?;
    // Listed paths without probes are subjects too (no data); with `per = "target"` the targets
    // of a path without probes are unknown, so the path stands alone with an empty target.
    let seen: BTreeSet<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    let missing: Vec<SubjectProbes> = spec
        .paths
        .iter()
        .filter(|p| !seen.contains(p.as_str()))
        .map(|path| SubjectProbes {
            path: path.clone(),
            target: String::new(),
            probes: 0,
            successes: 0,
            level_us: 0.0,
            p50_us: 0.0,
            p95_us: 0.0,
            p99_us: 0.0,
        })
        .collect();
    rows.extend(missing);
    let mut results = Vec::with_capacity(2 * rows.len());
    for row in rows {
        results.extend(judge(sla, spec, ctx, &row));
    }
    Ok(results)
}

/// The `latency` and `unreachable` results of one subject.
fn judge(sla: &SlaConfig, spec: &LatencyConfig, ctx: &EvalContext, row: &SubjectProbes) -> [SlaResult; 2] {
    let subject = if row.target.is_empty() {
        row.path.clone()
    } else {
        format!("{} → {}", row.path, row.target)
    };
    let labels = |check: &str| {
        let mut labels = BTreeMap::from([
            ("path".to_owned(), row.path.clone()),
            ("check".to_owned(), check.to_owned()),
        ]);
        if spec.per == LatencyScope::Target && !row.target.is_empty() {
            labels.insert("target".to_owned(), row.target.clone());
        }
        labels
    };
    let failures = row.probes.saturating_sub(row.successes);
    let failure_ratio = if row.probes == 0 {
        0.0
    } else {
        failures as f64 / row.probes as f64
    };
    let answered = row.successes > 0;
    let ms = |us: f64| answered.then_some(us / 1000.0);
    let details = |check: &str| {
        serde_json::json!({
            "check": check,
            "source": "probes",
            "percentile": spec.percentile,
            "probes": row.probes,
            "failures": failures,
            "failure_ratio": failure_ratio,
            "p50_ms": ms(row.p50_us),
            "p95_ms": ms(row.p95_us),
            "p99_ms": ms(row.p99_us),
            "window_seconds": sla.window_seconds,
        })
    };

    let mut latency = result(sla, ctx, subject.clone(), labels("latency"));
    latency.threshold = spec.threshold_ms;
    latency.samples = row.successes;
    latency.details = details("latency");
    if row.successes >= spec.min_samples {
        latency.value = row.level_us / 1000.0;
        latency.verdict = if latency.value > spec.threshold_ms {
            Verdict::Breach
        } else {
            Verdict::Ok
        };
    }

    let mut unreachable = result(sla, ctx, subject, labels("unreachable"));
    unreachable.threshold = 1.0;
    unreachable.samples = row.probes;
    unreachable.details = details("unreachable");
    if row.probes >= spec.min_samples {
        unreachable.value = failure_ratio;
        unreachable.verdict = if answered { Verdict::Ok } else { Verdict::Breach };
    }
    [latency, unreachable]
}

/// The alert summary of a latency result.
pub(crate) fn summary(r: &SlaResult, sla: &SlaConfig) -> String {
    let window = human_duration(sla.window_seconds);
    let percentile = r.details["percentile"].as_f64().unwrap_or(0.0) * 100.0;
    match (r.details["check"].as_str(), r.verdict) {
        (_, Verdict::NoData) => format!(
            "{}: too few probes in {window} to judge ({} samples)",
            r.subject, r.samples
        ),
        (Some("unreachable"), _) => format!(
            "{}: {:.0}% of {} probes failed in {window}{}",
            r.subject,
            r.value * 100.0,
            r.samples,
            if r.verdict == Verdict::Breach {
                " (unreachable)"
            } else {
                ""
            }
        ),
        _ => format!(
            "{}: p{percentile:.0} round trip {:.1} ms over {window} (limit {:.1} ms), from probes",
            r.subject, r.value, r.threshold
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::{KindName, Severity};

    fn sla(spec: LatencyConfig) -> SlaConfig {
        SlaConfig {
            name: "rtt".into(),
            kind: KindName::Latency,
            window_seconds: 300,
            for_seconds: 0,
            keep_firing_for_seconds: 0,
            severity: Severity::Warning,
            labels: BTreeMap::new(),
            throughput: None,
            exfiltration: None,
            exporter_health: None,
            objective: None,
            latency: Some(spec),
        }
    }

    fn ctx() -> EvalContext {
        EvalContext {
            now: 1_700_000_000,
            database: "egress".into(),
            paths: Vec::new(),
            exporters: Vec::new(),
            query_timeout: std::time::Duration::from_secs(5),
        }
    }

    fn subject(probes: u64, successes: u64, level_us: f64) -> SubjectProbes {
        SubjectProbes {
            path: "transit-a".into(),
            target: "192.0.2.1:443".into(),
            probes,
            successes,
            level_us,
            p50_us: level_us,
            p95_us: level_us,
            p99_us: level_us,
        }
    }

    #[test]
    fn the_query_binds_levels_window_and_paths() {
        let spec = LatencyConfig {
            per: LatencyScope::Target,
            paths: vec!["transit-a".into(), "transit-b".into()],
            ..LatencyConfig::default()
        };
        let query = window_query(&sla(spec.clone()), &spec, &ctx());
        let sql = query.with_literals();
        assert!(sql.contains("quantileExactIf(0.95)(ifNull(rtt_us, 0), success = 1)) AS level_us"));
        assert!(sql.contains("quantileExactIf(0.99)"));
        assert!(sql.contains("time >= toDateTime(1699999700) AND time < toDateTime(1700000000)"));
        assert!(sql.contains("AND path IN ('transit-a', 'transit-b') GROUP BY path, target"));
        assert!(sql.contains("SELECT path, target AS target"));
        assert_eq!(query.sql.matches('?').count(), query.params.len());
    }

    #[test]
    fn all_failed_is_unreachable_and_never_a_latency() {
        let spec = LatencyConfig::default();
        let [latency, unreachable] = judge(&sla(spec.clone()), &spec, &ctx(), &subject(30, 0, 0.0));
        assert_eq!(latency.verdict, Verdict::NoData);
        assert_eq!(latency.value, 0.0);
        assert_eq!(latency.details["p95_ms"], serde_json::Value::Null);
        assert_eq!(unreachable.verdict, Verdict::Breach);
        assert_eq!(unreachable.value, 1.0);
        assert_eq!(unreachable.labels["check"], "unreachable");
    }

    #[test]
    fn slow_fast_and_too_few() {
        let spec = LatencyConfig {
            threshold_ms: 50.0,
            ..LatencyConfig::default()
        };
        let sla = sla(spec.clone());
        let [slow, reachable] = judge(&sla, &spec, &ctx(), &subject(30, 29, 80_500.0));
        assert_eq!((slow.verdict, slow.value), (Verdict::Breach, 80.5));
        assert_eq!(reachable.verdict, Verdict::Ok);
        assert!((reachable.value - 1.0 / 30.0).abs() < 1e-9);
        let [fast, _] = judge(&sla, &spec, &ctx(), &subject(30, 30, 1_200.0));
        assert_eq!((fast.verdict, fast.value), (Verdict::Ok, 1.2));
        let [few, few_unreachable] = judge(&sla, &spec, &ctx(), &subject(4, 4, 1_200.0));
        assert_eq!(
            (few.verdict, few_unreachable.verdict),
            (Verdict::NoData, Verdict::NoData)
        );
        assert!(summary(&slow, &sla).contains("p95 round trip 80.5 ms over 5m (limit 50.0 ms)"));
    }
}
