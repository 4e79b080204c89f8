//! The Grafana dashboards of `dashboards/` (official ClickHouse data source plugin,
//! `grafana-clickhouse-datasource` v4) and their provisioning files.
//!
//! In: every `dashboards/*.json`, `dashboards/provisioning/datasources/clickhouse.yaml` and
//! `dashboards/provisioning/dashboards/egress.yaml`. Checked:
//! - the files themselves: unique dashboard uids, unique panel ids, every data source reference
//!   is the provisioned ClickHouse one, panel types Grafana ships, every query panel has SQL
//!   targets whose format matches the panel, no macro that needs `toStartOfInterval` (absent from
//!   ClickHouse 18.16), and the provisioning files point at the uid and the mounted path;
//! - the SQL: every variable and panel query is expanded as Grafana and the plugin do (the
//!   front end's `$__conditionalAll` and template variables, then the back end's `$__timeFilter`,
//!   `$__fromTime`, `$__toTime`, `$__interval_s`; `egress_testkit::grafana`, shared with
//!   `egress-bench query`) for a fixed time range in two scenarios (every variable on "All",
//!   and chosen values), and run on ClickHouse 18.16 against rows covering every panel: each variable query must return exactly the expected options and
//!   each panel query at least one row with a non-zero, non-empty value.
//!
//! [`dump_dashboard_sql`] writes the same expanded queries and the same rows (rendered for
//! current servers) for `tests/chdb/check_dashboards.py`, which runs them on current ClickHouse.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use egress_query::connection::{self, ClickHouseConfig};
use egress_query::migrate::migrate;
use egress_query::rollups::rollups;
use egress_testkit::clickhouse::ClickHouseServer;
use egress_testkit::grafana::{self, expand, Context, Dashboard, Resolved};
use serde_json::{json, Value};

const DATASOURCE_TYPE: &str = "grafana-clickhouse-datasource";
const DATASOURCE_UID: &str = "egress-clickhouse";
/// Where the compose and Kubernetes files mount `dashboards/` in the Grafana container.
const PROVISIONED_PATH: &str = "/var/lib/grafana/dashboards/egress";
/// Panel types that ship with Grafana (no plugin to install).
const PANEL_TYPES: &[&str] = &[
    "timeseries",
    "stat",
    "table",
    "gauge",
    "bargauge",
    "barchart",
    "piechart",
    "text",
    "row",
    "state-timeline",
    "status-history",
    "heatmap",
    "histogram",
];
/// Panel types without queries.
const STATIC_PANEL_TYPES: &[&str] = &["text", "row"];
/// Functions ClickHouse 18.16 lacks, and the plugin macros expanding to them.
const FORBIDDEN_SQL: &[&str] = &["toStartOfInterval", "$__timeInterval", "toIPv6", "JSONExtract"];
/// The dashboards the documentation describes; more may be added.
const DASHBOARD_UIDS: &[&str] = &[
    "egress-overview",
    "egress-sla",
    "egress-exfiltration",
    "egress-latency",
    "egress-collector",
];
const WEEK: u32 = 604_800;

fn dashboards_dir() -> PathBuf {
    grafana::dashboards_dir()
}

fn load_dashboards() -> Vec<Dashboard> {
    grafana::load_dashboards(&dashboards_dir()).expect("dashboards/ loads")
}

/// Every `"datasource"` value in `value`, with the JSON path that leads to it.
fn datasource_references<'a>(value: &'a Value, at: String, found: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "datasource" {
                    found.push((format!("{at}.{key}"), child));
                }
                datasource_references(child, format!("{at}.{key}"), found);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                datasource_references(child, format!("{at}[{index}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn dashboards_are_well_formed() {
    let dashboards = load_dashboards();
    let uids: Vec<&str> = dashboards.iter().map(Dashboard::uid).collect();
    let unique: BTreeSet<&str> = uids.iter().copied().collect();
    assert_eq!(unique.len(), uids.len(), "dashboard uids repeat: {uids:?}");
    for uid in DASHBOARD_UIDS {
        assert!(unique.contains(uid), "no dashboard {uid}; have {uids:?}");
    }
    let expected_datasource = json!({ "type": DATASOURCE_TYPE, "uid": DATASOURCE_UID });
    for dashboard in &dashboards {
        let file = &dashboard.file;
        let uid = dashboard.uid();
        assert!(
            !uid.is_empty() && uid.len() <= 40,
            "{file}: uid must be 1-40 characters"
        );
        for key in ["title", "description"] {
            assert!(
                dashboard.json[key].as_str().is_some_and(|t| !t.is_empty()),
                "{file}: no {key}"
            );
        }
        assert!(
            dashboard.json["id"].is_null(),
            "{file}: provisioned dashboards carry no id"
        );

        let mut references = Vec::new();
        datasource_references(&dashboard.json, file.clone(), &mut references);
        assert!(!references.is_empty(), "{file}: no data source reference");
        for (at, reference) in references {
            assert_eq!(reference, &expected_datasource, "{at}");
        }

        let panels = dashboard.panels();
        assert!(!panels.is_empty(), "{file}: no panels");
        let mut ids = BTreeSet::new();
        for panel in &panels {
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: panel without id"));
            assert!(ids.insert(id), "{file}: panel id {id} repeats");
            let title = panel["title"].as_str().unwrap_or_default();
            let kind = panel["type"].as_str().unwrap_or_default();
            assert!(
                PANEL_TYPES.contains(&kind),
                "{file} / {title}: panel type {kind:?}"
            );
            assert!(
                panel["gridPos"]["w"].as_u64().is_some_and(|w| w <= 24),
                "{file} / {title}"
            );
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if STATIC_PANEL_TYPES.contains(&kind) {
                assert!(
                    targets.is_empty(),
                    "{file} / {title}: a {kind} panel has no query"
                );
                continue;
            }
            assert!(!targets.is_empty(), "{file} / {title}: no query");
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{file} / {title}: no description"
            );
            let time_panel = matches!(kind, "timeseries" | "state-timeline");
            for target in &targets {
                assert_eq!(target["editorType"], "sql", "{file} / {title}");
                let sql = target["rawSql"].as_str().unwrap_or_default();
                assert!(sql.trim_start().starts_with("SELECT"), "{file} / {title}: {sql}");
                // The plugin: format 0 is a time series (long frames made wide), 1 a table.
                let (format, query_type) = if time_panel {
                    (0, "timeseries")
                } else {
                    (1, "table")
                };
                assert_eq!(target["format"], format, "{file} / {title}");
                assert_eq!(target["queryType"], query_type, "{file} / {title}");
                for forbidden in FORBIDDEN_SQL {
                    assert!(!sql.contains(forbidden), "{file} / {title}: {forbidden}");
                }
                assert!(!sql.contains(';'), "{file} / {title}: one statement, no `;`");
            }
        }

        let mut names = BTreeSet::new();
        for variable in dashboard.variables() {
            let name = variable["name"].as_str().unwrap_or_default();
            assert!(names.insert(name), "{file}: variable {name} repeats");
            if variable["type"] == "query" {
                let sql = variable["query"].as_str().unwrap_or_default();
                assert!(sql.trim_start().starts_with("SELECT"), "{file} / ${name}");
                for forbidden in FORBIDDEN_SQL {
                    assert!(!sql.contains(forbidden), "{file} / ${name}: {forbidden}");
                }
            }
        }
    }
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    let full = dashboards_dir().join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn provisioning_points_at_the_datasource_and_the_dashboards() {
    let datasources = yaml("provisioning/datasources/clickhouse.yaml");
    assert_eq!(datasources["apiVersion"].as_u64(), Some(1));
    let list = datasources["datasources"]
        .as_sequence()
        .expect("datasources list");
    assert_eq!(list.len(), 1);
    let datasource = &list[0];
    assert_eq!(datasource["uid"].as_str(), Some(DATASOURCE_UID));
    assert_eq!(datasource["type"].as_str(), Some(DATASOURCE_TYPE));
    let settings = &datasource["jsonData"];
    assert_eq!(settings["protocol"].as_str(), Some("http"));
    // Connection settings come from the environment (Grafana expands ${VAR} when reading).
    for (key, variable) in [
        ("host", "EGRESS_CLICKHOUSE_HOST"),
        ("port", "EGRESS_CLICKHOUSE_PORT"),
        ("username", "EGRESS_CLICKHOUSE_USER"),
        ("defaultDatabase", "EGRESS_CLICKHOUSE_DATABASE"),
    ] {
        assert_eq!(
            settings[key].as_str(),
            Some(format!("${{{variable}}}").as_str()),
            "{key}"
        );
    }
    assert_eq!(
        datasource["secureJsonData"]["password"].as_str(),
        Some("${EGRESS_CLICKHOUSE_PASSWORD}")
    );

    let providers = yaml("provisioning/dashboards/egress.yaml");
    assert_eq!(providers["apiVersion"].as_u64(), Some(1));
    let list = providers["providers"].as_sequence().expect("providers list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["type"].as_str(), Some("file"));
    assert_eq!(list[0]["options"]["path"].as_str(), Some(PROVISIONED_PATH));
}

// ---------------------------------------------------------------------------------------------
// The test world: rows covering every panel, relative to `now`.

const PATH_A: &str = "edge1 / et-0/0/1 (Transit A)";
const PATH_B: &str = "edge2 / et-0/0/2 (Transit B)";
const PATH_C: &str = "edge3 / xe-1/0/0 (Peering C)";
const EDGE1: [u8; 4] = [192, 0, 2, 1];
const EDGE2: [u8; 4] = [192, 0, 2, 2];
const EDGE3: [u8; 4] = [192, 0, 2, 3];
const EDGE4: [u8; 4] = [192, 0, 2, 4];
const SLAS: &[&str] = &["exfil", "exporters", "latency", "slo-999", "utilisation"];
const TARGETS_A: &[&str] = &["192.0.2.9", "192.0.2.9:443"];
const TARGET_B: &str = "198.51.100.9:443";

/// The stored form of an IPv4 address as `IPv6NumToString` prints it.
fn mapped(address: [u8; 4]) -> String {
    Ipv4Addr::from(address).to_ipv6_mapped().to_string()
}

/// The server generation rows are rendered for (addresses differ: `FixedString(16)` on 18.x,
/// `IPv6` on current servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generation {
    Old,
    Current,
}

/// One value of a `VALUES` row.
#[derive(Debug, Clone)]
enum Literal {
    Number(String),
    Text(String),
    Address([u8; 4]),
    Null,
    Texts(Vec<String>),
    Numbers(Vec<u64>),
}

fn num(value: impl ToString) -> Literal {
    Literal::Number(value.to_string())
}

fn text(value: impl Into<String>) -> Literal {
    Literal::Text(value.into())
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Literal {
    fn render(&self, generation: Generation) -> String {
        match self {
            Literal::Number(n) => n.clone(),
            Literal::Text(t) => quote(t),
            Literal::Address(a) => {
                let v6 = Ipv4Addr::from(*a).to_ipv6_mapped();
                match generation {
                    Generation::Current => quote(&v6.to_string()),
                    // The 16 bytes as escapes: a FixedString(16) literal.
                    Generation::Old => {
                        let bytes: String = v6.octets().iter().map(|b| format!("\\x{b:02x}")).collect();
                        format!("'{bytes}'")
                    }
                }
            }
            Literal::Null => "NULL".to_owned(),
            Literal::Texts(items) => {
                format!(
                    "[{}]",
                    items.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", ")
                )
            }
            Literal::Numbers(items) => {
                format!(
                    "[{}]",
                    items.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                )
            }
        }
    }
}

/// Rows for one table.
#[derive(Debug)]
struct Insert {
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<Literal>>,
}

impl Insert {
    fn new(table: &'static str, columns: &'static [&'static str]) -> Self {
        Self {
            table,
            columns,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Literal>) {
        assert_eq!(row.len(), self.columns.len(), "{}", self.table);
        self.rows.push(row);
    }

    fn statement(&self, generation: Generation) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|row| {
                let values: Vec<String> = row.iter().map(|v| v.render(generation)).collect();
                format!("({})", values.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO egress.{} ({}) VALUES\n{}",
            self.table,
            self.columns.join(", "),
            rows.join(",\n")
        )
    }
}

struct Exporter {
    address: [u8; 4],
    name: &'static str,
    site: &'static str,
    path: &'static str,
    out_if: u32,
    provider: &'static str,
    flow_type: &'static str,
    rtt_source: &'static str,
}

const EXPORTERS: [Exporter; 3] = [
    Exporter {
        address: EDGE1,
        name: "edge1",
        site: "par",
        path: PATH_A,
        out_if: 1,
        provider: "Transit A",
        flow_type: "netflow9",
        rtt_source: "nprobe",
    },
    Exporter {
        address: EDGE2,
        name: "edge2",
        site: "par",
        path: PATH_B,
        out_if: 2,
        provider: "Transit B",
        flow_type: "sflow5",
        rtt_source: "sflow_tcp_info",
    },
    Exporter {
        address: EDGE3,
        name: "edge3",
        site: "ams",
        path: PATH_C,
        out_if: 3,
        provider: "Peering C",
        flow_type: "ipfix",
        rtt_source: "nprobe",
    },
];

const FLOW_COLUMNS: &[&str] = &[
    "time_received",
    "time_flow_start",
    "time_flow_end",
    "exporter_address",
    "flow_type",
    "sampling_rate",
    "src_addr",
    "dst_addr",
    "dst_port",
    "proto",
    "bytes",
    "packets",
    "out_if",
    "dst_as",
    "traffic_direction",
    "egress_path",
    "exporter_name",
    "exporter_site",
    "out_if_role",
    "out_if_provider",
    "src_internal",
    "dst_cloud",
    "rtt_client_us",
    "rtt_server_us",
    "rtt_app_us",
    "rtt_source",
];

/// (address, AS, cloud label) of the destinations, in turn.
const DESTINATIONS: [([u8; 4], u32, &str); 4] = [
    ([203, 0, 113, 7], 64501, ""),
    ([52, 95, 0, 1], 16509, "aws/S3/eu-west-1"),
    ([192, 0, 2, 200], 64999, ""),
    ([198, 51, 100, 20], 64510, "gcp/storage"),
];
const HOSTS: [[u8; 4]; 3] = [[10, 0, 0, 5], [10, 0, 0, 6], [10, 0, 1, 1]];

fn flow_row(time: u32, exporter: &Exporter, host: [u8; 4], step: u32, bytes: u64) -> Vec<Literal> {
    let (destination, dst_as, cloud) = DESTINATIONS[step as usize % DESTINATIONS.len()];
    // Every other flow carries the exporter's round-trip measurement.
    let measured = step % 2 == 0;
    let (client, server, app) = match (measured, exporter.rtt_source) {
        (false, _) => (Literal::Null, Literal::Null, Literal::Null),
        (true, "nprobe") => (num(1_000 + step * 10), num(4_000), num(20_000)),
        (true, _) => (num(30_000 + step * 100), Literal::Null, Literal::Null),
    };
    vec![
        num(time),
        num(time - 65),
        num(time - 5),
        Literal::Address(exporter.address),
        text(exporter.flow_type),
        num(100),
        Literal::Address(host),
        Literal::Address(destination),
        num(443),
        num(6),
        num(bytes),
        num(bytes / 1000),
        num(exporter.out_if),
        num(dst_as),
        text("outbound"),
        text(exporter.path),
        text(exporter.name),
        text(exporter.site),
        text("external"),
        text(exporter.provider),
        num(1),
        text(cloud),
        client,
        server,
        app,
        text(if measured { exporter.rtt_source } else { "none" }),
    ]
}

/// Rows for every panel, relative to `now` (a whole minute): flows on three paths for four
/// hours (which fill the minute rollups), the same range one to four weeks earlier for the
/// exfiltration baseline, exporter accounting, SLA results, notification deliveries and probes.
fn world(now: u32) -> Vec<Insert> {
    let mut flows = Insert::new("flows", FLOW_COLUMNS);
    for exporter in &EXPORTERS {
        for step in 0..48u32 {
            let time = now - 300 * step - 17;
            let host = HOSTS[step as usize % HOSTS.len()];
            // 10.0.0.5 is the largest uploader.
            let bytes = if host == HOSTS[0] { 10_000_000 } else { 1_000_000 } + u64::from(step) * 1_000;
            flows.push(flow_row(time, exporter, host, step, bytes));
        }
    }
    // History: each of the four previous weeks, one hour before the same time.
    for week in 1..=4u32 {
        for (step, host) in [HOSTS[0], HOSTS[2]].into_iter().enumerate() {
            let time = now - week * WEEK - 3_600 + step as u32;
            flows.push(flow_row(time, &EXPORTERS[0], host, 1, 500_000 * u64::from(week)));
        }
    }

    let mut stats = Insert::new(
        "exporter_stats",
        &[
            "minute",
            "exporter_address",
            "observation_domain",
            "flow_type",
            "datagrams",
            "records",
            "records_lost",
            "decode_error_kinds",
            "decode_error_counts",
            "templates_known",
        ],
    );
    for step in 0..36u32 {
        let minute = now - 60 - 300 * step;
        stats.push(vec![
            num(minute),
            Literal::Address(EDGE1),
            num(0),
            text("netflow9"),
            num(50),
            num(1_000),
            num(0),
            Literal::Texts(Vec::new()),
            Literal::Numbers(Vec::new()),
            num(4),
        ]);
        stats.push(vec![
            num(minute),
            Literal::Address(EDGE2),
            num(0),
            text("sflow5"),
            num(60),
            num(600),
            num(10),
            Literal::Texts(Vec::new()),
            Literal::Numbers(Vec::new()),
            num(0),
        ]);
        let (kinds, counts) = if step % 3 == 0 {
            (
                vec!["truncated".to_owned(), "missing_template".to_owned()],
                vec![2, 1],
            )
        } else {
            (Vec::new(), Vec::new())
        };
        stats.push(vec![
            num(minute),
            Literal::Address(EDGE3),
            num(7),
            text("ipfix"),
            num(40),
            num(800),
            num(step % 2),
            Literal::Texts(kinds),
            Literal::Numbers(counts),
            num(3),
        ]);
    }
    // edge4: silent for two hours.
    stats.push(vec![
        num(now - 7_200),
        Literal::Address(EDGE4),
        num(0),
        text("netflow5"),
        num(5),
        num(150),
        num(0),
        Literal::Texts(Vec::new()),
        Literal::Numbers(Vec::new()),
        num(0),
    ]);

    let mut results = Insert::new(
        "sla_results",
        &[
            "time",
            "sla",
            "kind",
            "subject",
            "labels_keys",
            "labels_values",
            "value",
            "threshold",
            "verdict",
            "samples",
            "details",
        ],
    );
    let mut result = |time: u32,
                      sla: &str,
                      kind: &str,
                      subject: &str,
                      labels: &[(&str, &str)],
                      (value, threshold): (f64, f64),
                      verdict: &str,
                      details: Value| {
        results.push(vec![
            num(time),
            text(sla),
            text(kind),
            text(subject),
            Literal::Texts(labels.iter().map(|(k, _)| (*k).to_owned()).collect()),
            Literal::Texts(labels.iter().map(|(_, v)| (*v).to_owned()).collect()),
            num(value),
            num(threshold),
            text(verdict),
            num(20),
            text(details.to_string()),
        ]);
    };
    for step in 0..24u32 {
        let time = now - 300 * step - 30;
        for (exporter, utilisation) in EXPORTERS.iter().zip([0.85, 0.4, 0.2]) {
            let if_index = exporter.out_if.to_string();
            result(
                time,
                "utilisation",
                "throughput",
                exporter.path,
                &[
                    ("path", exporter.path),
                    ("exporter", exporter.name),
                    ("if_index", &if_index),
                ],
                (utilisation, 0.8),
                if utilisation > 0.8 { "breach" } else { "ok" },
                json!({
                    "bps": utilisation * 1e9, "capacity_bps": 1_000_000_000u64, "utilisation": utilisation,
                    "max_utilisation": 0.8, "min_bps": 0, "window_seconds": 300, "reason": "",
                }),
            );
        }
        let windows = |long: Value, short: Value| {
            json!({ "objective": 0.999, "windows": [
                { "long_seconds": 3600, "short_seconds": 300, "factor": 14.4,
                  "long_burn_rate": long, "short_burn_rate": short, "long_events": 60, "short_events": 5 },
                { "long_seconds": 21600, "short_seconds": 1800, "factor": 6.0,
                  "long_burn_rate": 3.0, "short_burn_rate": 7.5, "long_events": 360, "short_events": 30 },
            ]})
        };
        result(
            time,
            "slo-999",
            "objective",
            PATH_A,
            &[("path", PATH_A)],
            (7.5, 6.0),
            "breach",
            windows(json!(5.0), json!(7.5)),
        );
        result(
            time,
            "slo-999",
            "objective",
            PATH_B,
            &[("path", PATH_B)],
            (0.0, 0.0),
            "no_data",
            windows(Value::Null, Value::Null),
        );
        result(
            time,
            "exfil",
            "exfiltration",
            "10.0.0.5",
            &[("host", "10.0.0.5")],
            (2e9, 1e9),
            "breach",
            json!({
                "host": "10.0.0.5", "bytes": 2_000_000_000u64, "window_seconds": 300,
                "limit_bytes": 1_000_000_000u64, "baseline": { "median": 1.5e8, "mad": 1e7, "weeks": 2 },
                "reason": "limit",
                "top_destinations": [{ "address": "203.0.113.7", "as": 64501, "bytes": 1_800_000_000u64 }],
            }),
        );
        result(
            time,
            "exfil",
            "exfiltration",
            "10.0.0.6",
            &[("host", "10.0.0.6")],
            (1e7, 1e9),
            "ok",
            json!({ "host": "10.0.0.6", "bytes": 10_000_000u64, "reason": null, "top_destinations": [] }),
        );
        for check in ["silence", "loss"] {
            result(
                time,
                "exporters",
                "exporter_health",
                "edge1",
                &[("exporter", "edge1"), ("check", check)],
                (12.0, 300.0),
                "ok",
                json!({ "check": check }),
            );
        }
        result(
            time,
            "latency",
            "latency",
            PATH_A,
            &[("path", PATH_A), ("check", "latency")],
            (24.0, 100.0),
            "ok",
            json!({ "check": "latency", "source": "probes", "p95_ms": 24.0 }),
        );
    }

    let mut deliveries = Insert::new(
        "alert_deliveries",
        &[
            "time",
            "receiver",
            "kind",
            "fingerprint",
            "alertname",
            "status",
            "attempt",
            "http_status",
            "outcome",
            "error",
        ],
    );
    for (ago, receiver, kind, fingerprint, alertname, status, attempt, http, outcome, error) in [
        (
            3_000,
            "ops",
            "webhook",
            "a1b2c3d4e5f60718",
            "utilisation",
            "firing",
            1,
            503,
            "retrying",
            "HTTP 503",
        ),
        (
            2_990,
            "ops",
            "webhook",
            "a1b2c3d4e5f60718",
            "utilisation",
            "firing",
            2,
            200,
            "delivered",
            "",
        ),
        (
            500,
            "ops",
            "webhook",
            "a1b2c3d4e5f60718",
            "utilisation",
            "resolved",
            1,
            200,
            "delivered",
            "",
        ),
        (
            2_000,
            "ops",
            "webhook",
            "0f1e2d3c4b5a6978",
            "slo-999",
            "firing",
            1,
            200,
            "delivered",
            "",
        ),
        (
            1_990,
            "pager",
            "pagerduty",
            "0f1e2d3c4b5a6978",
            "slo-999",
            "firing",
            3,
            0,
            "failed",
            "connection refused",
        ),
        (
            1_500,
            "ops",
            "alertmanager",
            "1111222233334444",
            "exfil",
            "firing",
            1,
            200,
            "delivered",
            "",
        ),
    ] {
        deliveries.push(vec![
            num(now - ago),
            text(receiver),
            text(kind),
            text(fingerprint),
            text(alertname),
            text(status),
            num(attempt),
            num(http),
            text(outcome),
            text(error),
        ]);
    }

    let mut probes = Insert::new(
        "probes",
        &["time", "path", "target", "method", "rtt_us", "success", "error"],
    );
    for step in 0..36u32 {
        let time = now - 300 * step - 10;
        let failed = step % 6 == 5;
        for (path, target, method, rtt) in [
            (PATH_A, TARGETS_A[1], "tcp", 20_000 + step * 100),
            (PATH_A, TARGETS_A[0], "icmp", 18_000),
            (PATH_B, TARGET_B, "tcp", 35_000),
        ] {
            let (rtt_us, success, error) = if failed {
                (Literal::Null, 0, "timeout")
            } else {
                (num(rtt), 1, "")
            };
            probes.push(vec![
                num(time),
                text(path),
                text(target),
                text(method),
                rtt_us,
                num(success),
                text(error),
            ]);
        }
    }
    vec![flows, stats, results, deliveries, probes]
}

/// The statements that load the world: the inserts, then the hour rollups of the hours closed
/// before `now` (the project's own close statement, which the monitor runs).
fn load_statements(now: u32, generation: Generation) -> Vec<String> {
    let mut statements: Vec<String> = world(now).iter().map(|i| i.statement(generation)).collect();
    let first_hour = (now - 6 * 3_600) / 3_600 * 3_600;
    let current_hour = now / 3_600 * 3_600;
    for rollup in rollups() {
        let close = rollup.close_statement("egress");
        let binds = [now, first_hour, current_hour];
        let mut parts = close.split('?');
        let mut sql = parts.next().unwrap_or_default().to_owned();
        for (bind, part) in binds.iter().zip(parts.by_ref()) {
            sql.push_str(&bind.to_string());
            sql.push_str(part);
        }
        assert!(
            parts.next().is_none(),
            "close statement binds three values: {close}"
        );
        statements.push(sql);
    }
    statements
}

// ---------------------------------------------------------------------------------------------
// Scenarios and the expected variable options.

/// How the variables are set for one run of every query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Every query variable on "All", custom and text variables at their defaults.
    All,
    /// Chosen values (see [`selection`]).
    Selected,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::All => "all",
            Scenario::Selected => "selected",
        }
    }

    fn interval_s(self) -> u32 {
        match self {
            Scenario::All => 60,
            Scenario::Selected => 300,
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The values a variable is set to in [`Scenario::Selected`]; `None`: "All" or its default.
fn selection(dashboard: &str, variable: &str) -> Option<Vec<String>> {
    let values = match (dashboard, variable) {
        ("egress-overview", "site") => vec!["par".to_owned()],
        ("egress-overview", "exporter") | ("egress-exfiltration", "exporter") => vec![mapped(EDGE1)],
        ("egress-overview", "path") | ("egress-latency", "path") => strings(&[PATH_A]),
        ("egress-sla", "sla") => strings(&["slo-999", "utilisation"]),
        ("egress-sla", "slo_period_days") => strings(&["7"]),
        ("egress-exfiltration", "k") => strings(&["5"]),
        ("egress-exfiltration", "baseline_min_bytes") => strings(&["0"]),
        ("egress-exfiltration", "baseline_weeks") => strings(&["4"]),
        ("egress-exfiltration", "allow_asns") => strings(&["64999, 64510"]),
        ("egress-exfiltration", "allow_clouds") => strings(&["aws"]),
        ("egress-latency", "target") => strings(&[TARGETS_A[1]]),
        ("egress-collector", "exporter") => vec![mapped(EDGE3), mapped(EDGE4)],
        _ => return None,
    };
    Some(values)
}

/// What a query variable must list, given the world and the scenario.
fn expected_options(dashboard: &str, variable: &str, scenario: Scenario) -> Vec<String> {
    let selected = scenario == Scenario::Selected;
    let mut options = match (dashboard, variable) {
        ("egress-overview", "site") => strings(&["ams", "par"]),
        ("egress-overview", "exporter") if selected => vec![mapped(EDGE1), mapped(EDGE2)],
        ("egress-overview", "exporter") | ("egress-exfiltration", "exporter") => {
            vec![mapped(EDGE1), mapped(EDGE2), mapped(EDGE3)]
        }
        ("egress-overview", "path") if selected => strings(&[PATH_A]),
        ("egress-overview", "path") | ("egress-latency", "path") => strings(&[PATH_A, PATH_B, PATH_C]),
        ("egress-sla", "sla") => strings(SLAS),
        ("egress-latency", "target") if selected => strings(TARGETS_A),
        ("egress-latency", "target") => strings(&[TARGETS_A[0], TARGETS_A[1], TARGET_B]),
        ("egress-collector", "exporter") => vec![mapped(EDGE1), mapped(EDGE2), mapped(EDGE3), mapped(EDGE4)],
        _ => panic!("no expected options for ${variable} of {dashboard}: add them to the test world"),
    };
    options.sort();
    options
}

/// What a planned query must give.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// At least one row with a value that is not zero or empty.
    Rows,
    /// The first column lists exactly these values (sorted).
    Options(Vec<String>),
}

/// One expanded query of one dashboard in one scenario.
#[derive(Debug, Clone)]
struct Planned {
    label: String,
    sql: String,
    expect: Expect,
}

/// Every variable and panel query of every dashboard, expanded for `[now - 6h, now]` in each
/// scenario.
fn plan(now: u32) -> Vec<Planned> {
    let mut planned = Vec::new();
    for dashboard in load_dashboards() {
        let uid = dashboard.uid().to_owned();
        for scenario in [Scenario::All, Scenario::Selected] {
            let mut context = Context {
                from: now - 6 * 3_600,
                to: now,
                interval_s: scenario.interval_s(),
                variables: BTreeMap::new(),
            };
            let chosen = |name: &str| match scenario {
                Scenario::Selected => selection(&uid, name),
                Scenario::All => None,
            };
            for variable in dashboard.variables() {
                let name = variable["name"].as_str().unwrap_or_default().to_owned();
                let current = variable["current"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let multi = variable["multi"].as_bool().unwrap_or(false);
                let resolved = match variable["type"].as_str().unwrap_or_default() {
                    "constant" => Resolved {
                        all: false,
                        values: vec![variable["query"].as_str().unwrap_or_default().to_owned()],
                        multi: false,
                    },
                    "custom" | "textbox" => {
                        let values = chosen(&name).unwrap_or_else(|| vec![current]);
                        if variable["type"] == "custom" {
                            let options: Vec<&str> = variable["query"]
                                .as_str()
                                .unwrap_or_default()
                                .split(',')
                                .collect();
                            assert!(options.contains(&values[0].as_str()), "${name}: {values:?}");
                        }
                        Resolved {
                            all: false,
                            values,
                            multi,
                        }
                    }
                    "query" => {
                        let raw = variable["query"].as_str().unwrap_or_default();
                        let sql = expand(raw, &context).unwrap_or_else(|e| panic!("{uid} ${name}: {e}"));
                        let options = expected_options(&uid, &name, scenario);
                        planned.push(Planned {
                            label: format!("{uid} | {} | ${name}", scenario.name()),
                            sql,
                            expect: Expect::Options(options.clone()),
                        });
                        match chosen(&name) {
                            Some(values) => {
                                for value in &values {
                                    assert!(options.contains(value), "{uid} ${name}: {value} not an option");
                                }
                                Resolved {
                                    all: false,
                                    values,
                                    multi,
                                }
                            }
                            None => {
                                assert!(variable["includeAll"] == true, "{uid} ${name}: no All");
                                Resolved {
                                    all: true,
                                    values: options,
                                    multi,
                                }
                            }
                        }
                    }
                    other => panic!("{uid} ${name}: variable type {other} not handled"),
                };
                context.variables.insert(name, resolved);
            }
            for panel in dashboard.panels() {
                let title = panel["title"].as_str().unwrap_or_default();
                for target in panel["targets"].as_array().into_iter().flatten() {
                    let raw = target["rawSql"].as_str().unwrap_or_default();
                    let sql = expand(raw, &context).unwrap_or_else(|e| panic!("{uid} / {title}: {e}"));
                    planned.push(Planned {
                        label: format!("{uid} | {} | {title}", scenario.name()),
                        sql,
                        expect: Expect::Rows,
                    });
                }
            }
        }
    }
    planned
}

/// A cell that says nothing: zero, NaN, NULL, empty, the epoch.
fn is_empty_cell(cell: &str) -> bool {
    cell.is_empty()
        || cell == "\\N"
        || cell == "[]"
        || cell.parse::<f64>().is_ok_and(|v| v == 0.0 || v.is_nan())
        || cell.starts_with("1970-01-01")
        || cell.starts_with("0000-00-00")
}

/// Checks the tab-separated answer of one planned query.
fn check_answer(planned: &Planned, answer: &str) -> Result<usize, String> {
    let rows: Vec<&str> = answer.lines().filter(|l| !l.is_empty()).collect();
    match &planned.expect {
        Expect::Rows => {
            let meaningful = rows
                .iter()
                .any(|row| row.split('\t').any(|cell| !is_empty_cell(cell)));
            if rows.is_empty() || !meaningful {
                return Err(format!("no row with a value: {answer:?}"));
            }
        }
        Expect::Options(expected) => {
            let mut options: Vec<String> = rows
                .iter()
                .map(|row| row.split('\t').next().unwrap_or_default().to_owned())
                .collect();
            options.sort();
            if &options != expected {
                return Err(format!("options {options:?}, expected {expected:?}"));
            }
        }
    }
    Ok(rows.len())
}

fn now() -> u32 {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32;
    seconds / 60 * 60
}

#[tokio::test]
async fn every_dashboard_query_returns_rows_on_clickhouse_18() {
    let server = ClickHouseServer::start().expect("clickhouse-server starts");
    let config = ClickHouseConfig {
        url: server.http_url(),
        retention_days: 0,
        ..ClickHouseConfig::default()
    };
    let client = connection::client(&config).unwrap();
    let version = connection::server_version(&client).await.unwrap();
    migrate(&client, &config, &version).await.unwrap();

    let now = now();
    for statement in load_statements(now, Generation::Old) {
        server
            .query_scalar(&statement)
            .unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail()));
    }
    let hours = server
        .query_scalar("SELECT count() FROM egress.flows_1h_path FINAL")
        .unwrap();
    assert!(
        hours.parse::<u32>().unwrap() >= 9,
        "closed hours per path: {hours}"
    );

    let planned = plan(now);
    let mut failures = Vec::new();
    let mut rows = 0;
    for query in &planned {
        match server
            .query_scalar(&query.sql)
            .map_err(|e| e.to_string())
            .and_then(|answer| check_answer(query, &answer))
        {
            Ok(count) => rows += count,
            Err(error) => failures.push(format!("{}: {error}\n{}", query.label, query.sql)),
        }
    }
    let variables = planned
        .iter()
        .filter(|p| matches!(p.expect, Expect::Options(_)))
        .count();
    println!(
        "ClickHouse {}: {} queries ({} panel, {variables} variable) in 2 scenarios, {rows} rows",
        version,
        planned.len(),
        planned.len() - variables
    );
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Where the SQL dump goes: `$EGRESS_DDL_DIR`, else `<target dir>/egress-ddl`.
fn dump_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EGRESS_DDL_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").join("egress-ddl")
}

/// Writes `dashboards-data.sql` (the world's rows for current servers and the hour closes) and
/// `dashboards.sql` (every expanded query with what it must give) for
/// `tests/chdb/check_dashboards.py`.
#[test]
fn dump_dashboard_sql() {
    let now = now();
    let dir = dump_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut data = format!("-- Egress dashboard test rows (database `egress`)\n-- now: {now}\n");
    for statement in load_statements(now, Generation::Current) {
        assert!(
            !statement.contains("\\x"),
            "current servers take addresses as text"
        );
        data.push_str(&statement);
        data.push_str(";\n\n");
    }
    std::fs::write(dir.join("dashboards-data.sql"), data).unwrap();

    let planned = plan(now);
    let mut text = format!("-- Egress dashboard queries, expanded for [now - 6h, now]\n-- now: {now}\n");
    for query in &planned {
        let expect = match &query.expect {
            Expect::Rows => "rows".to_owned(),
            Expect::Options(options) => format!("options {}", serde_json::to_string(options).unwrap()),
        };
        text.push_str(&format!(
            "-- query: {}\n-- expect: {expect}\n{};\n\n",
            query.label, query.sql
        ));
    }
    std::fs::write(dir.join("dashboards.sql"), text).unwrap();
    assert!(planned.len() >= 80, "{} queries", planned.len());
}
