//! Latency SLA: round trips from the active probes and from the flows' exporter-measured RTT,
//! as a percentile or a good-event ratio, and unreachable paths.
//!
//! In: one sample set per evaluation, read by one range scan of each source the SLA uses
//! (`source`): the `probes` table (written by the collector's prober, see [`crate::probes`])
//! and/or the outbound flows' `rtt_*_us` columns per `egress_path`. The two are one
//! `UNION ALL` sub-select (`samples_sql`), so that `both` takes its percentile over the
//! merged samples, not an average of two percentiles. Out: per subject (path, or path and
//! target with `per = "target"`, probes only), results told apart by the `check` label, so
//! that each has its own alert that fires and resolves on its own:
//!
//! - `latency`: value = the configured percentile (p50/p95/p99...) of the answered round trips
//!   in milliseconds over `window_seconds`, threshold = `threshold_ms`; or, with `objective`,
//!   the burn rate of the good-event ratio (a round trip of at most `threshold_ms` is good)
//!   against the objective, judged by the objective kind's multi-window arithmetic
//!   ([`objective::budget_result`]), threshold = the deciding pair's factor. Fewer than
//!   `min_samples` samples gives no data, and so does a subject whose probes all failed: a
//!   path that does not answer has no latency, never a figure of 0 or of the timeout. Failed
//!   probes are not latency events either; they are the `unreachable` check's.
//! - `unreachable` (only when probes are read): value = failure ratio of the window's probes,
//!   threshold 1. Breach when every probe failed (at least `min_samples` of them), ok when any
//!   answered; fewer probes: no data.
//!
//! A path listed in `paths` without any sample in the window gets no data on every check (the
//! prober is not probing it or no exporter measures it; that is not a verdict on the path).
//!
//! Every figure says where it came from: `details.source` is `probes`, `flows` or `both`, and
//! `details.samples_by_source` counts the answered probes and the flow round trips behind it.
//!
//! **One flow, one round trip.** A flow's network round trip is `rtt_client_us +
//! rtt_server_us` when both are known (observation point to client and back, plus to server
//! and back: the client-to-server round trip, which is what a probe through the path
//! measures), else the one that is known (sFlow `extended_tcp_info` and NetScaler export one
//! full round trip in `rtt_client_us`). nProbe exports each side as half a round trip (RTT/2,
//! see `docs/schema.md`), so its figure is doubled. Application latency (`rtt_app_us`) is
//! server think time, not the path's, and is not used. A flow without any of the two is not a
//! sample (NULL is unknown, never 0). Every flow record with a round trip is one sample,
//! whatever its sampling rate or size: a round trip is a measurement, not a volume.
//!
//! The percentile is `quantileExact` (exact; probes are few and flows with RTT are filtered in
//! the scan) with the `-If` combinator on answered samples, over a non-`Nullable` column: the
//! sub-select turns NULLs into 0 only on rows the `-If` condition or the `WHERE` leaves out,
//! which runs on 18.16 and current servers alike (no aggregate over a `Nullable` column).

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::{Client, Row};
use serde::Deserialize;

use super::objective::{self, BurnBudget, MinuteEvents, SubjectEvents};
use super::{
    human_duration, result, EvalContext, LatencyConfig, LatencyScope, LatencySource, Param, Result,
    SlaConfig, SlaResult, SqlQuery, Verdict,
};
use crate::probes::PROBES_TABLE;
use crate::schema::FLOWS_TABLE;

/// The network round trip of one flow in microseconds, NULL when neither side is known (see
/// the module header for the choice).
pub(crate) const FLOW_RTT_US: &str = "multiIf(rtt_source = 'nprobe', 2, 1) * \
     ifNull(rtt_client_us + rtt_server_us, ifNull(rtt_client_us, rtt_server_us))";

/// Sample figures of one subject over the window.
#[derive(Debug, Clone, Row, Deserialize)]
struct SubjectSamples {
    path: String,
    target: String,
    /// Probes sent (answered or not).
    probes: u64,
    /// Probes answered.
    successes: u64,
    /// Flow round trips.
    flow_samples: u64,
    /// The configured percentile of the answered samples, microseconds.
    level_us: f64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
}

impl SubjectSamples {
    fn empty(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            target: String::new(),
            probes: 0,
            successes: 0,
            flow_samples: 0,
            level_us: 0.0,
            p50_us: 0.0,
            p95_us: 0.0,
            p99_us: 0.0,
        }
    }

    /// Round trips behind the latency figure: answered probes and flow round trips.
    fn answered(&self) -> u64 {
        self.successes + self.flow_samples
    }
}

/// Good and total round trips of one subject in one minute.
#[derive(Debug, Clone, Row, Deserialize)]
struct SubjectMinute {
    path: String,
    target: String,
    minute: u32,
    good: u64,
    total: u64,
}

/// The sample sub-select of the sources `spec` reads, over `[from, to)`: columns `path`,
/// `target` (empty unless `per = "target"`), `source` (`probes`, `flows`), `answered` (0 for a
/// failed probe), `round_trip_us` (0 when not answered) and `time`. Appends its parameters to
/// `query`.
fn samples_sql(query: &mut SqlQuery, spec: &LatencyConfig, ctx: &EvalContext, from: u64, to: u64) {
    round_trips_sql(query, spec.source, spec.per, &spec.paths, &ctx.database, from, to);
}

/// The sub-select of [`samples_sql`] for any sources, scope and path list (empty: every path)
/// in `database` (a checked identifier): the latency SLA and `GET /api/v1/latency` read round
/// trips through this one definition.
pub(crate) fn round_trips_sql(
    query: &mut SqlQuery,
    source: LatencySource,
    per: LatencyScope,
    paths: &[String],
    database: &str,
    from: u64,
    to: u64,
) {
    let paths = |query: &mut SqlQuery, column: &str| {
        if !paths.is_empty() {
            let marks = vec!["?"; paths.len()].join(", ");
            query.push(
                &format!(" AND {column} IN ({marks})"),
                paths.iter().cloned().map(Param::Str),
            );
        }
    };
    let target = match per {
        LatencyScope::Path => "materialize('')",
        LatencyScope::Target => "target",
    };
    query.push("(", []);
    if source.probes() {
        query.push(
            &format!(
                "SELECT path, {target} AS target, materialize('probes') AS source, \
                 toUInt8(success) AS answered, toUInt64(ifNull(rtt_us, 0)) AS round_trip_us, time \
                 FROM {database}.{PROBES_TABLE} \
                 WHERE time >= toDateTime(?) AND time < toDateTime(?)"
            ),
            [Param::U64(from), Param::U64(to)],
        );
        paths(query, "path");
    }
    if source == LatencySource::Both {
        query.push(" UNION ALL ", []);
    }
    if source.flows() {
        query.push(
            &format!(
                "SELECT egress_path AS path, materialize('') AS target, \
                 materialize('flows') AS source, toUInt8(1) AS answered, \
                 toUInt64(ifNull({FLOW_RTT_US}, 0)) AS round_trip_us, time_received AS time \
                 FROM {database}.{FLOWS_TABLE} \
                 WHERE time_received >= toDateTime(?) AND time_received < toDateTime(?) \
                 AND traffic_direction = 'outbound' AND egress_path != '' \
                 AND (isNotNull(rtt_client_us) OR isNotNull(rtt_server_us))"
            ),
            [Param::U64(from), Param::U64(to)],
        );
        paths(query, "egress_path");
    }
    query.push(")", []);
}

fn window_query(sla: &SlaConfig, spec: &LatencyConfig, ctx: &EvalContext) -> SqlQuery {
    let percentile =
        |name: &str| format!("toFloat64(quantileExactIf(?)(round_trip_us, answered = 1)) AS {name}");
    let mut query = SqlQuery::new(
        "latency.window",
        format!(
            "SELECT path, target, toUInt64(countIf(source = 'probes')) AS probes, \
             toUInt64(sumIf(answered, source = 'probes')) AS successes, \
             toUInt64(countIf(source = 'flows')) AS flow_samples, {}, {}, {}, {} FROM ",
            percentile("level_us"),
            percentile("p50_us"),
            percentile("p95_us"),
            percentile("p99_us"),
        ),
    );
    // Aggregate parameters must be constants: the client puts the bound value in as a literal.
    query.params = [spec.percentile, 0.5, 0.95, 0.99].map(Param::F64).to_vec();
    let now = u64::from(ctx.now);
    samples_sql(&mut query, spec, ctx, now.saturating_sub(sla.window_seconds), now);
    query.push(" GROUP BY path, target ORDER BY path, target", []);
    query
}

/// Good (round trip at most `threshold_ms`) and total answered samples per subject and minute
/// over the longest burn-rate window.
fn minute_query(spec: &LatencyConfig, ctx: &EvalContext) -> SqlQuery {
    let (from, to) = objective::burn_minute_range(&spec.windows, ctx);
    let mut query = SqlQuery::new(
        "latency.minutes",
        "SELECT path, target, toUInt32(toStartOfMinute(time)) AS minute, \
         toUInt64(countIf(answered = 1 AND round_trip_us <= ?)) AS good, \
         toUInt64(countIf(answered = 1)) AS total FROM ",
    );
    query.params.push(Param::U64(threshold_us(spec)));
    samples_sql(&mut query, spec, ctx, from, to);
    query.push(" GROUP BY path, target, minute ORDER BY path, target, minute", []);
    query
}

/// `threshold_ms` in whole microseconds (a good round trip is at most this).
fn threshold_us(spec: &LatencyConfig) -> u64 {
    (spec.threshold_ms * 1000.0).floor() as u64
}

/// The queries of a latency SLA.
pub fn queries(sla: &SlaConfig, spec: &LatencyConfig, ctx: &EvalContext) -> Vec<SqlQuery> {
    let mut queries = vec![window_query(sla, spec, ctx)];
    if spec.objective.is_some() {
        queries.push(minute_query(spec, ctx));
    }
    queries
}

/// Evaluates a latency SLA.
pub async fn evaluate(
    client: &Client,
    sla: &SlaConfig,
    spec: &LatencyConfig,
    ctx: &EvalContext,
) -> Result<Vec<SlaResult>> {
    let mut rows: Vec<SubjectSamples> = window_query(sla, spec, ctx)
        .fetch(client, ctx.query_timeout, &sla.name)
        .await?;
    let minutes: Vec<SubjectMinute> = match spec.objective {
        Some(_) => {
            minute_query(spec, ctx)
                .fetch(client, ctx.query_timeout, &sla.name)
                .await?
        }
        None => Vec::new(),
    };
    // Subjects with samples in the burn-rate windows but none in `window_seconds` count too.
    let mut seen: BTreeSet<(String, String)> =
        rows.iter().map(|r| (r.path.clone(), r.target.clone())).collect();
    for minute in &minutes {
        if seen.insert((minute.path.clone(), minute.target.clone())) {
            rows.push(SubjectSamples {
                target: minute.target.clone(),
                ..SubjectSamples::empty(&minute.path)
            });
        }
    }
    // Listed paths without samples are subjects too (no data); with `per = "target"` the
    // targets of a path without probes are unknown, so the path stands alone with an empty
    // target.
    let seen_paths: BTreeSet<&str> = seen.iter().map(|(path, _)| path.as_str()).collect();
    let missing: Vec<SubjectSamples> = spec
        .paths
        .iter()
        .filter(|p| !seen_paths.contains(p.as_str()))
        .map(|path| SubjectSamples::empty(path))
        .collect();
    rows.extend(missing);
    let mut events: BTreeMap<(&str, &str), BTreeMap<u32, MinuteEvents>> = BTreeMap::new();
    for m in &minutes {
        events.entry((&m.path, &m.target)).or_default().insert(
            m.minute,
            MinuteEvents {
                good: m.good,
                total: m.total,
            },
        );
    }
    let mut results = Vec::with_capacity(2 * rows.len());
    for row in &rows {
        let minutes = events
            .remove(&(row.path.as_str(), row.target.as_str()))
            .unwrap_or_default();
        results.extend(judge(sla, spec, ctx, row, minutes));
    }
    Ok(results)
}

/// The `latency` result of one subject, and its `unreachable` result when probes are read.
/// `minutes` are its good-event counts (used with `objective` only).
fn judge(
    sla: &SlaConfig,
    spec: &LatencyConfig,
    ctx: &EvalContext,
    row: &SubjectSamples,
    minutes: BTreeMap<u32, MinuteEvents>,
) -> Vec<SlaResult> {
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
    let answered = row.answered() > 0;
    let ms = |us: f64| answered.then_some(us / 1000.0);
    let figures = serde_json::json!({
        "percentile": spec.percentile,
        "threshold_ms": spec.threshold_ms,
        "samples_by_source": { "probes": row.successes, "flows": row.flow_samples },
        "probes": row.probes,
        "failures": failures,
        "failure_ratio": failure_ratio,
        "p50_ms": ms(row.p50_us),
        "p95_ms": ms(row.p95_us),
        "p99_ms": ms(row.p99_us),
        "window_seconds": sla.window_seconds,
    });
    let details = |check: &str, source: LatencySource, extra: Option<&serde_json::Value>| {
        let mut details = figures.clone();
        details["check"] = check.into();
        details["source"] = source.as_str().into();
        if let Some(serde_json::Value::Object(extra)) = extra {
            for (key, value) in extra {
                details[key.as_str()] = value.clone();
            }
        }
        details
    };

    let latency = match spec.objective {
        None => {
            let mut latency = result(sla, ctx, subject.clone(), labels("latency"));
            latency.threshold = spec.threshold_ms;
            latency.samples = row.answered();
            latency.details = details("latency", spec.source, None);
            if row.answered() >= spec.min_samples {
                latency.value = row.level_us / 1000.0;
                latency.verdict = if latency.value > spec.threshold_ms {
                    Verdict::Breach
                } else {
                    Verdict::Ok
                };
            }
            latency
        }
        Some(target_ratio) => {
            let budget = BurnBudget {
                objective: target_ratio,
                windows: &spec.windows,
                min_events: spec.min_samples,
            };
            let events = SubjectEvents {
                subject: subject.clone(),
                labels: labels("latency"),
                minutes,
            };
            let (_, to) = objective::burn_minute_range(&spec.windows, ctx);
            let mut latency = objective::budget_result(sla, &budget, ctx, events, to);
            latency.details = details("latency", spec.source, Some(&latency.details));
            latency
        }
    };
    if !spec.source.probes() {
        return vec![latency];
    }

    let mut unreachable = result(sla, ctx, subject, labels("unreachable"));
    unreachable.threshold = 1.0;
    unreachable.samples = row.probes;
    unreachable.details = details("unreachable", LatencySource::Probes, None);
    if row.probes >= spec.min_samples {
        unreachable.value = failure_ratio;
        unreachable.verdict = if row.successes > 0 {
            Verdict::Ok
        } else {
            Verdict::Breach
        };
    }
    vec![latency, unreachable]
}

/// `from probes`, `from flow RTT` or `from probes and flow RTT`, from `details.source`.
fn source_text(r: &SlaResult) -> &'static str {
    match r.details["source"].as_str() {
        Some("flows") => "from flow RTT",
        Some("both") => "from probes and flow RTT",
        _ => "from probes",
    }
}

/// The alert summary of a latency result.
pub(crate) fn summary(r: &SlaResult, sla: &SlaConfig) -> String {
    let window = human_duration(sla.window_seconds);
    let percentile = r.details["percentile"].as_f64().unwrap_or(0.0) * 100.0;
    let objective = r.details["objective"].as_f64();
    match (r.details["check"].as_str(), r.verdict) {
        (_, Verdict::NoData) => format!(
            "{}: too few round trips to judge ({} samples), {}",
            r.subject,
            r.samples,
            source_text(r)
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
        _ => match objective {
            Some(objective) => format!(
                "{}: round trips within {:.1} ms burn the {objective} objective's budget at {:.1}x \
                 (alert factor {:.1}), {}",
                r.subject,
                r.details["threshold_ms"].as_f64().unwrap_or(0.0),
                r.value,
                r.threshold,
                source_text(r)
            ),
            None => format!(
                "{}: p{percentile:.0} round trip {:.1} ms over {window} (limit {:.1} ms), {}",
                r.subject,
                r.value,
                r.threshold,
                source_text(r)
            ),
        },
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

    fn subject(probes: u64, successes: u64, level_us: f64) -> SubjectSamples {
        SubjectSamples {
            path: "transit-a".into(),
            target: "192.0.2.1:443".into(),
            probes,
            successes,
            flow_samples: 0,
            level_us,
            p50_us: level_us,
            p95_us: level_us,
            p99_us: level_us,
        }
    }

    fn two(results: Vec<SlaResult>) -> [SlaResult; 2] {
        results.try_into().expect("latency and unreachable")
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
        assert!(sql.contains("quantileExactIf(0.95)(round_trip_us, answered = 1)) AS level_us"));
        assert!(sql.contains("quantileExactIf(0.99)"));
        assert!(sql.contains("time >= toDateTime(1699999700) AND time < toDateTime(1700000000)"));
        assert!(sql.contains("AND path IN ('transit-a', 'transit-b')) GROUP BY path, target"));
        assert!(sql.contains("SELECT path, target AS target"));
        assert!(!sql.contains("UNION ALL") && !sql.contains("egress.flows"));
        assert_eq!(query.sql.matches('?').count(), query.params.len());
    }

    #[test]
    fn flows_and_both_read_the_outbound_flows_round_trips() {
        let spec = LatencyConfig {
            source: LatencySource::Flows,
            paths: vec!["transit-a".into()],
            ..LatencyConfig::default()
        };
        let sql = window_query(&sla(spec.clone()), &spec, &ctx()).with_literals();
        assert!(
            !sql.contains("egress.probes") && !sql.contains("UNION ALL"),
            "{sql}"
        );
        assert!(sql.contains("traffic_direction = 'outbound'"), "{sql}");
        assert!(sql.contains("AND egress_path IN ('transit-a')"), "{sql}");
        let spec = LatencyConfig {
            source: LatencySource::Both,
            objective: Some(0.99),
            ..spec
        };
        let queries = queries(&sla(spec.clone()), &spec, &ctx());
        assert_eq!(queries.len(), 2);
        for query in &queries {
            assert_eq!(query.sql.matches('?').count(), query.params.len());
            assert_eq!(query.sql.matches("UNION ALL").count(), 1);
        }
        assert!(queries[1].with_literals().contains("round_trip_us <= 100000"));
    }

    #[test]
    fn all_failed_is_unreachable_and_never_a_latency() {
        let spec = LatencyConfig::default();
        let [latency, unreachable] = two(judge(
            &sla(spec.clone()),
            &spec,
            &ctx(),
            &subject(30, 0, 0.0),
            BTreeMap::new(),
        ));
        assert_eq!(latency.verdict, Verdict::NoData);
        assert_eq!(latency.value, 0.0);
        assert_eq!(latency.details["p95_ms"], serde_json::Value::Null);
        assert_eq!(unreachable.verdict, Verdict::Breach);
        assert_eq!(unreachable.value, 1.0);
        assert_eq!(unreachable.labels["check"], "unreachable");
    }

    #[test]
    fn flows_alone_have_no_unreachable_check() {
        let spec = LatencyConfig {
            source: LatencySource::Flows,
            ..LatencyConfig::default()
        };
        let row = SubjectSamples {
            flow_samples: 12,
            ..subject(0, 0, 40_000.0)
        };
        let results = judge(&sla(spec.clone()), &spec, &ctx(), &row, BTreeMap::new());
        assert_eq!(results.len(), 1);
        assert_eq!((results[0].verdict, results[0].samples), (Verdict::Ok, 12));
        assert_eq!(results[0].details["source"], "flows");
        assert!(summary(&results[0], &sla(spec)).ends_with("from flow RTT"));
    }

    #[test]
    fn slow_fast_and_too_few() {
        let spec = LatencyConfig {
            threshold_ms: 50.0,
            ..LatencyConfig::default()
        };
        let sla = sla(spec.clone());
        let judged = |row: SubjectSamples| two(judge(&sla, &spec, &ctx(), &row, BTreeMap::new()));
        let [slow, reachable] = judged(subject(30, 29, 80_500.0));
        assert_eq!((slow.verdict, slow.value), (Verdict::Breach, 80.5));
        assert_eq!(reachable.verdict, Verdict::Ok);
        assert!((reachable.value - 1.0 / 30.0).abs() < 1e-9);
        let [fast, _] = judged(subject(30, 30, 1_200.0));
        assert_eq!((fast.verdict, fast.value), (Verdict::Ok, 1.2));
        let [few, few_unreachable] = judged(subject(4, 4, 1_200.0));
        assert_eq!(
            (few.verdict, few_unreachable.verdict),
            (Verdict::NoData, Verdict::NoData)
        );
        assert!(summary(&slow, &sla).contains("p95 round trip 80.5 ms over 5m (limit 50.0 ms), from probes"));
    }

    #[test]
    fn objective_burns_on_slow_minutes() {
        let spec = LatencyConfig {
            threshold_ms: 50.0,
            objective: Some(0.99),
            ..LatencyConfig::default()
        };
        let sla = sla(spec.clone());
        let (_, to) = objective::burn_minute_range(&spec.windows, &ctx());
        // Six hours of minutes with 6 round trips each; the last hour has 1 slow in 6 (16.7 %
        // bad: burn rate 16.7 on a 1 % budget, above 14.4 in both 1h and 5m).
        let minutes: BTreeMap<u32, MinuteEvents> = (1..=360u64)
            .map(|m| {
                let good = if m <= 60 { 5 } else { 6 };
                ((to - m * 60) as u32, MinuteEvents { good, total: 6 })
            })
            .collect();
        let [latency, _] = two(judge(&sla, &spec, &ctx(), &subject(30, 30, 0.0), minutes));
        assert_eq!(latency.verdict, Verdict::Breach, "{latency:#?}");
        assert!((latency.value - 100.0 / 6.0).abs() < 1e-6, "{}", latency.value);
        assert_eq!(latency.threshold, 14.4);
        assert_eq!(latency.details["source"], "probes");
        assert_eq!(latency.details["windows"].as_array().unwrap().len(), 2);
        assert!(summary(&latency, &sla).contains("burn the 0.99 objective's budget at 16.7x"));
        let [none, _] = two(judge(&sla, &spec, &ctx(), &subject(30, 30, 0.0), BTreeMap::new()));
        assert_eq!(none.verdict, Verdict::NoData);
    }
}
