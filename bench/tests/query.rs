//! The query benchmark (`egress-bench query`) end to end on a small table, so that it cannot
//! rot: 200,000 generated flows on a real ClickHouse 18.16, every SLA evaluated with results,
//! and every variable and panel query of every dashboard timed over both ranges with rows.

use egress_bench::query::{self, QueryBenchConfig};
use egress_testkit::grafana;

/// Timed queries one range must give: every query variable and every panel target.
fn queries_per_range() -> usize {
    grafana::load_dashboards(&grafana::dashboards_dir())
        .unwrap()
        .iter()
        .map(|dashboard| {
            let variables = dashboard
                .variables()
                .iter()
                .filter(|v| v["type"] == "query")
                .count();
            let targets: usize = dashboard
                .panels()
                .iter()
                .map(|p| p["targets"].as_array().map_or(0, Vec::len))
                .sum();
            variables + targets
        })
        .sum()
}

#[test]
fn times_every_sla_and_every_dashboard_query_over_generated_flows() {
    let config = QueryBenchConfig {
        flows: 200_000,
        keep: None,
        sla_runs: 2,
        panel_runs: 1,
    };
    let mut progress = Vec::new();
    let report = query::run(&config, &mut progress)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", String::from_utf8_lossy(&progress)));
    let text = query::render(&report);
    println!("{text}");

    assert_eq!(report.sla_times.len(), 2);
    assert!(report.load.is_some());
    assert!(report.flows_bytes > 0 && report.rollup_bytes > 0, "{text}");
    for sla in &report.slas {
        assert!(
            sla.ok + sla.breach + sla.no_data > 0,
            "{} gave no result",
            sla.name
        );
    }
    // The generated world breaches on purpose: the silent exporter and the unreachable path
    // at any size; the overfilled 2 Gbit/s path and the uploader need the volume of 100 M
    // flows (at 200,000 flows the paths carry a few Mbit/s, and whether one dips below the
    // SLA's 1 Mbit/s floor depends on the time of day the run ends in).
    let breaches = |name: &str| {
        report
            .slas
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.breach)
    };
    for name in ["exporters", "latency"] {
        assert!(breaches(name) > 0, "no breach of {name}:\n{text}");
    }

    assert_eq!(report.panels.len(), 2 * queries_per_range(), "{text}");
    let empty: Vec<String> = report
        .panels
        .iter()
        .filter(|p| p.rows == 0)
        .map(|p| format!("{} / {} ({})", p.dashboard, p.title, p.range))
        .collect();
    assert!(empty.is_empty(), "queries without rows: {empty:?}\n{text}");
    assert!(
        report.panels.windows(2).all(|w| w[0].median >= w[1].median),
        "heaviest first"
    );
    assert!(
        report.panels.iter().any(|p| p.read_rows > 0),
        "query_log read: {text}"
    );
    assert!(
        text.contains("heaviest panel: ") && (text.contains("\nPASS: ") || text.contains("\nFAIL: ")),
        "{text}"
    );
}
