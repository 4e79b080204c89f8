//! SLA configuration: the `[monitor]` section and the `[[slas]]` list, with defaults in one
//! place (the `Default` impls) and [`validate`], which reports every problem at once, each
//! starting with its key (`slas[2].throughput.max_utilisation: ...`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `[monitor]` section: how often SLAs are evaluated and where the monitor serves and keeps
/// its state. (`listen` and `alert_state_path` may move to the top-level configuration.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Seconds between two evaluations of every SLA.
    pub evaluation_interval_seconds: u64,
    /// Address the query API listens on, `host:port`.
    pub listen: String,
    /// File holding the alert states across restarts.
    pub alert_state_path: String,
    /// Who may use the query API: tokens and roles, rate limit, TLS (`[monitor.api]`).
    pub api: crate::api::ApiAccessConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            evaluation_interval_seconds: 60,
            listen: "127.0.0.1:9478".to_owned(),
            alert_state_path: ".local/alerts.json".to_owned(),
            api: crate::api::ApiAccessConfig::default(),
        }
    }
}

impl MonitorConfig {
    /// Every problem with this section, each starting with its key (without `monitor.`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.evaluation_interval_seconds == 0 {
            problems.push("evaluation_interval_seconds: must be at least 1".to_owned());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!("listen: {:?} is not an address:port", self.listen));
        }
        if self.alert_state_path.is_empty() {
            problems.push("alert_state_path: must not be empty".to_owned());
        }
        problems.extend(self.api.problems().into_iter().map(|p| format!("api.{p}")));
        problems
    }
}

/// SLA kinds. The kind's settings are in the sub-table of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    /// Utilisation of egress paths, and a dead-path floor.
    Throughput,
    /// Volume from internal hosts to non-internal destinations.
    Exfiltration,
    /// Silent exporters and export loss.
    ExporterHealth,
    /// Good-event ratio with multi-window burn-rate alerting.
    Objective,
    /// Round-trip percentile of the active probes, and unreachable paths.
    Latency,
}

impl KindName {
    /// The name in the configuration, in results and in the `sla_kind` alert label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::Exfiltration => "exfiltration",
            Self::ExporterHealth => "exporter_health",
            Self::Objective => "objective",
            Self::Latency => "latency",
        }
    }
}

/// Alert severity, the `severity` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    #[default]
    Warning,
    Info,
}

impl Severity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

/// One `[[slas]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    /// Unique name; the `alertname` label of its alerts.
    pub name: String,
    /// `throughput`, `exfiltration`, `exporter_health`, `objective` or `latency`; its settings
    /// are in the sub-table of that name.
    pub kind: KindName,
    /// Seconds of data each evaluation looks at, ending at the evaluation time.
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
    /// Seconds a breach must last before its alert fires (Prometheus `for`).
    #[serde(default)]
    pub for_seconds: u64,
    /// Seconds an alert keeps firing after the breach ends (Prometheus `keep_firing_for`).
    #[serde(default)]
    pub keep_firing_for_seconds: u64,
    /// `critical`, `warning` (default) or `info`; the `severity` label.
    #[serde(default)]
    pub severity: Severity,
    /// Extra labels on every alert of this SLA (e.g. `team`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Settings of a `throughput` SLA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<ThroughputConfig>,
    /// Settings of an `exfiltration` SLA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exfiltration: Option<ExfiltrationConfig>,
    /// Settings of an `exporter_health` SLA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter_health: Option<ExporterHealthConfig>,
    /// Settings of an `objective` SLA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<ObjectiveConfig>,
    /// Settings of a `latency` SLA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyConfig>,
}

fn default_window_seconds() -> u64 {
    300
}

/// `[slas.throughput]`: utilisation of egress paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThroughputConfig {
    /// Egress path labels to watch; empty watches every external interface with a capacity.
    pub paths: Vec<String>,
    /// Breach when the window's bit rate is above this share of the capacity (0.8 = 80 %).
    pub max_utilisation: f64,
    /// Dead-path floor in bit/s: breach when the rate is below it while the exporter is
    /// sending. 0 turns the floor off.
    pub min_bps: u64,
    /// Fewer sampled records in the window than this gives "no data" (except below the floor).
    pub min_samples: u64,
}

impl Default for ThroughputConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            max_utilisation: 0.8,
            min_bps: 0,
            min_samples: 10,
        }
    }
}

/// How sources are grouped into exfiltration subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceGroup {
    /// One subject per internal source address.
    #[serde(rename = "host")]
    Host,
    /// One subject per IPv4 /24 of internal sources (IPv6 sources stay per address).
    #[serde(rename = "subnet/24")]
    Subnet24,
}

/// Baseline: the same hour of the week over the last `days` days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// Days of history; one point per week (7 days) in it, so at least 14.
    pub days: u32,
    /// Breach above median + k × MAD of the points.
    pub k: f64,
    /// Never breach below this many bytes in the window, whatever the baseline.
    pub min_bytes: u64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            days: 14,
            k: 3.0,
            min_bytes: 100_000_000,
        }
    }
}

/// What "one destination" means for the bulk check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkBy {
    /// Destination autonomous system.
    DstAs,
    /// Destination IPv4 /24 (IPv6 destinations per address).
    Dst24,
}

/// Bulk to one destination: per source subject × destination AS or /24.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkConfig {
    /// `dst_as` or `dst_24`.
    pub by: BulkBy,
    /// Breach above this many bytes (scaled) from one subject to one destination in the window.
    pub limit_bytes: u64,
}

/// Traffic that never counts (excluded in the SQL).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowList {
    /// Destination prefixes, e.g. `203.0.113.0/24`.
    pub cidrs: Vec<String>,
    /// Destination AS numbers.
    pub asns: Vec<u32>,
    /// Cloud labels (`dst_cloud`); a label also allows everything below it (`aws` allows
    /// `aws/S3/eu-west-1`).
    pub clouds: Vec<String>,
    /// Source hosts or prefixes, e.g. `10.0.0.9` or `10.9.0.0/16`.
    pub hosts: Vec<String>,
    /// UTC hours in which traffic is allowed, `start-end` (end exclusive, may wrap: `22-06`).
    pub hours_utc: Option<String>,
}

/// `[slas.exfiltration]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExfiltrationConfig {
    /// `host` or `subnet/24`.
    pub group: SourceGroup,
    /// Breach above this many bytes (scaled) to non-internal destinations in the window; 0 off.
    pub limit_bytes: u64,
    /// Breach above the subject's usual volume at this time of the week; absent: off.
    pub baseline: Option<BaselineConfig>,
    /// Breach on bulk to one destination; absent: off.
    pub bulk: Option<BulkConfig>,
    /// Traffic that never counts.
    pub allow: AllowList,
    /// Fewer sampled records behind a subject's volume than this gives "no data".
    pub min_samples: u64,
    /// At most this many subjects (largest volumes first) get a result per evaluation.
    pub max_subjects: u64,
}

impl Default for ExfiltrationConfig {
    fn default() -> Self {
        Self {
            group: SourceGroup::Host,
            limit_bytes: 0,
            baseline: None,
            bulk: None,
            allow: AllowList::default(),
            min_samples: 10,
            max_subjects: 1000,
        }
    }
}

/// `[slas.exporter_health]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterHealthConfig {
    /// Breach when nothing arrived from an exporter for longer than this.
    pub silent_seconds: u64,
    /// Breach when records_lost / (records + records_lost) over the window is above this.
    pub max_loss_ratio: f64,
    /// Fewer records (received + lost) in the window than this gives "no data" for the loss.
    pub min_samples: u64,
}

impl Default for ExporterHealthConfig {
    fn default() -> Self {
        Self {
            silent_seconds: 300,
            max_loss_ratio: 0.01,
            min_samples: 10,
        }
    }
}

/// Names of good-event definitions (`good = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoodName {
    /// A minute of a path is good when its utilisation is at most `max_utilisation`.
    PathUtilisationBelow,
}

/// What a good event is, resolved from an [`ObjectiveConfig`] by [`ObjectiveConfig::good_events`].
/// One event is one minute of one subject. (Round-trip events are the latency kind's own
/// `objective`, see [`LatencyConfig`].)
#[derive(Debug, Clone, PartialEq)]
pub enum GoodEvents {
    /// A minute of a path is good when its utilisation is at most `max_utilisation`; minutes in
    /// which the path's exporter sent nothing are not events.
    PathUtilisationBelow {
        /// Utilisation ratio limit of a good minute.
        max_utilisation: f64,
        /// Path labels; empty: every path with a capacity.
        paths: Vec<String>,
    },
}

/// One multi-window burn-rate alert condition: both windows burn faster than `factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnRateWindow {
    /// Long window, seconds.
    pub long_seconds: u64,
    /// Short window, seconds.
    pub short_seconds: u64,
    /// Burn-rate factor both windows must exceed.
    pub factor: f64,
}

/// `[slas.objective]`: an SLO on good events, alerting on multi-window burn rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// The good-event definition: `path_utilisation_below` (a minute of a path is good when
    /// its utilisation is at most `max_utilisation`).
    pub good: GoodName,
    /// For `path_utilisation_below`: utilisation ratio limit of a good minute.
    #[serde(default)]
    pub max_utilisation: Option<f64>,
    /// For `path_utilisation_below`: path labels; empty: every path with a capacity.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Target ratio of good events, e.g. 0.999.
    pub objective: f64,
    /// Burn-rate windows; default the SRE workbook's 1h/5m at 14.4 and 6h/30m at 6.
    #[serde(default = "default_burn_windows")]
    pub windows: Vec<BurnRateWindow>,
    /// Fewer events in a short window than this skips the pair; all skipped gives "no data".
    #[serde(default = "default_min_events")]
    pub min_events: u64,
}

/// What one latency subject is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyScope {
    /// One subject per egress path, over all of its targets.
    #[default]
    Path,
    /// One subject per path and target: tells "the path is slow" (every target) from "the far
    /// end is slow" (one target).
    Target,
}

/// Where the round trips of a latency SLA come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencySource {
    /// The active probes (`probes` table); the only source with an `unreachable` check.
    #[default]
    Probes,
    /// The round trips exporters put in the outbound flows' records (`flows.rtt_*_us`), per
    /// `egress_path`. See [`crate::sla::latency`] for how one flow gives one round trip.
    Flows,
    /// Both, merged into one sample set per path; the details count the samples of each.
    Both,
}

impl LatencySource {
    /// `probes`, `flows` or `both`, as in the configuration and in `details.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probes => "probes",
            Self::Flows => "flows",
            Self::Both => "both",
        }
    }

    /// Whether the probes are read.
    pub fn probes(self) -> bool {
        self != Self::Flows
    }

    /// Whether the flows' round trips are read.
    pub fn flows(self) -> bool {
        self != Self::Probes
    }
}

/// `[slas.latency]`: a round trip from probes, flows or both against `threshold_ms`, judged as
/// a percentile over the window or, with `objective`, as a good-event ratio (round trip at most
/// `threshold_ms`) with multi-window burn rates; and, when probes are read, an `unreachable`
/// check for subjects whose probes all fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// The percentile compared with the threshold, as a fraction: 0.5, 0.95 (default), 0.99.
    pub percentile: f64,
    /// Breach when the percentile round trip over the window is above this many milliseconds;
    /// with `objective`, a round trip at most this long is a good event.
    pub threshold_ms: f64,
    /// `path` (default): one subject per egress path; `target`: one per path and target
    /// (probes only: flows have no probe target).
    pub per: LatencyScope,
    /// `probes` (default), `flows` (outbound flows' exporter-measured round trips, per
    /// `egress_path`) or `both` (one sample set per path).
    pub source: LatencySource,
    /// Path labels (`probes.path`, `flows.egress_path`) to watch; empty watches every path with
    /// samples in the window. A listed path without samples gives "no data".
    pub paths: Vec<String>,
    /// Fewer samples than this gives "no data": in the window for the percentile (answered
    /// probes plus flow round trips) and the unreachable check (all probes); with `objective`,
    /// in each burn-rate window (a pair with fewer is skipped).
    pub min_samples: u64,
    /// Target ratio of good events (round trip at most `threshold_ms`), e.g. 0.99: the latency
    /// check becomes burn-rate alerting over `windows` instead of a percentile over
    /// `window_seconds`. Failed probes are not latency events (they count in `unreachable`).
    pub objective: Option<f64>,
    /// Burn-rate windows of `objective`; default the SRE workbook's 1h/5m at 14.4 and 6h/30m
    /// at 6.
    pub windows: Vec<BurnRateWindow>,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            percentile: 0.95,
            threshold_ms: 100.0,
            per: LatencyScope::Path,
            source: LatencySource::Probes,
            paths: Vec::new(),
            min_samples: 5,
            objective: None,
            windows: default_burn_windows(),
        }
    }
}

fn default_burn_windows() -> Vec<BurnRateWindow> {
    vec![
        BurnRateWindow {
            long_seconds: 3600,
            short_seconds: 300,
            factor: 14.4,
        },
        BurnRateWindow {
            long_seconds: 21600,
            short_seconds: 1800,
            factor: 6.0,
        },
    ]
}

fn default_min_events() -> u64 {
    3
}

/// Parses `start-end` UTC hours (`22-06`); `None` when malformed.
pub(crate) fn parse_hours(text: &str) -> Option<(u64, u64)> {
    let (start, end) = text.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    (start < 24 && end <= 24 && start != end).then_some((start, end))
}

/// Parses an address or prefix (`10.0.0.9` is `10.0.0.9/32`).
pub(crate) fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Label names results set themselves: the fixed alert labels and every kind's subject labels.
/// User labels (`labels = {...}`) may not use them.
pub const RESERVED_LABELS: &[&str] = &[
    "alertname",
    "severity",
    "sla_kind",
    "path",
    "exporter",
    "exporter_address",
    "if_index",
    "host",
    "subnet",
    "destination_as",
    "destination_net",
    "check",
    "target",
];

/// Every problem with `slas`, each starting with its key (`slas[2].throughput.max_utilisation:
/// ...`). Empty when the list is usable.
pub fn validate(slas: &[SlaConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, sla) in slas.iter().enumerate() {
        let key = format!("slas[{i}]");
        let mut problem = |suffix: &str, text: String| problems.push(format!("{key}{suffix}: {text}"));
        if sla.name.is_empty() {
            problem(".name", "must not be empty".into());
        } else if !names.insert(sla.name.as_str()) {
            problem(".name", format!("{:?} is used by an earlier SLA", sla.name));
        }
        if sla.window_seconds == 0 {
            problem(".window_seconds", "must be at least 1".into());
        }
        for label in sla.labels.keys() {
            let valid = label
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || label.starts_with("__") {
                problem(".labels", format!("{label:?} is not a Prometheus label name"));
            }
            if RESERVED_LABELS.contains(&label.as_str()) {
                problem(".labels", format!("{label:?} is set by Egress"));
            }
        }
        let present = [
            (KindName::Throughput, sla.throughput.is_some()),
            (KindName::Exfiltration, sla.exfiltration.is_some()),
            (KindName::ExporterHealth, sla.exporter_health.is_some()),
            (KindName::Objective, sla.objective.is_some()),
            (KindName::Latency, sla.latency.is_some()),
        ];
        for (kind, is_present) in present {
            if kind == sla.kind && !is_present {
                problem(
                    &format!(".{}", kind.as_str()),
                    format!("a {} SLA needs this table", kind.as_str()),
                );
            }
            if kind != sla.kind && is_present {
                problem(
                    &format!(".{}", kind.as_str()),
                    format!("does not belong to a {} SLA", sla.kind.as_str()),
                );
            }
        }
        if let Some(t) = &sla.throughput {
            if !(t.max_utilisation > 0.0 && t.max_utilisation.is_finite()) {
                problem(
                    ".throughput.max_utilisation",
                    format!("{} must be above 0", t.max_utilisation),
                );
            }
        }
        if let Some(e) = &sla.exfiltration {
            let k = ".exfiltration";
            if e.limit_bytes == 0 && e.baseline.is_none() && e.bulk.is_none() {
                problem(
                    k,
                    "set limit_bytes, baseline or bulk (nothing would ever breach)".into(),
                );
            }
            if let Some(b) = &e.baseline {
                if b.days < 14 {
                    problem(
                        &format!("{k}.baseline.days"),
                        format!("{} gives fewer than two weeks", b.days),
                    );
                }
                if !(b.k >= 0.0 && b.k.is_finite()) {
                    problem(&format!("{k}.baseline.k"), format!("{} must be 0 or more", b.k));
                }
            }
            if let Some(b) = &e.bulk {
                if b.limit_bytes == 0 {
                    problem(&format!("{k}.bulk.limit_bytes"), "must be above 0".into());
                }
            }
            if e.max_subjects == 0 {
                problem(&format!("{k}.max_subjects"), "must be at least 1".into());
            }
            for (j, cidr) in e.allow.cidrs.iter().enumerate() {
                if cidr.parse::<ipnet::IpNet>().is_err() {
                    problem(
                        &format!("{k}.allow.cidrs[{j}]"),
                        format!("{cidr:?} is not a prefix"),
                    );
                }
            }
            for (j, host) in e.allow.hosts.iter().enumerate() {
                if parse_net(host).is_none() {
                    problem(
                        &format!("{k}.allow.hosts[{j}]"),
                        format!("{host:?} is not an address or prefix"),
                    );
                }
            }
            for (j, cloud) in e.allow.clouds.iter().enumerate() {
                if cloud.is_empty() {
                    problem(&format!("{k}.allow.clouds[{j}]"), "must not be empty".into());
                }
            }
            if let Some(hours) = &e.allow.hours_utc {
                if parse_hours(hours).is_none() {
                    problem(
                        &format!("{k}.allow.hours_utc"),
                        format!("{hours:?} is not `start-end` in hours 0-24, e.g. \"22-06\""),
                    );
                }
            }
        }
        if let Some(h) = &sla.exporter_health {
            if h.silent_seconds == 0 {
                problem(".exporter_health.silent_seconds", "must be at least 1".into());
            }
            if !(0.0..1.0).contains(&h.max_loss_ratio) {
                problem(
                    ".exporter_health.max_loss_ratio",
                    format!("{} must be at least 0 and below 1", h.max_loss_ratio),
                );
            }
        }
        if let Some(l) = &sla.latency {
            if !(l.percentile > 0.0 && l.percentile < 1.0) {
                problem(
                    ".latency.percentile",
                    format!(
                        "{} must be between 0 and 1, exclusive (0.95 is p95)",
                        l.percentile
                    ),
                );
            }
            if !(l.threshold_ms > 0.0 && l.threshold_ms.is_finite()) {
                problem(
                    ".latency.threshold_ms",
                    format!("{} must be above 0", l.threshold_ms),
                );
            }
            if l.min_samples == 0 {
                problem(".latency.min_samples", "must be at least 1".into());
            }
            for (j, path) in l.paths.iter().enumerate() {
                if path.is_empty() {
                    problem(&format!(".latency.paths[{j}]"), "must not be empty".into());
                }
            }
            if l.per == LatencyScope::Target && l.source.flows() {
                problem(
                    ".latency.per",
                    format!(
                        "\"target\" needs source = \"probes\" (flows have no probe target), not {:?}",
                        l.source.as_str()
                    ),
                );
            }
            if let Some(objective) = l.objective {
                burn_rate_problems(".latency", objective, &l.windows, &mut problem);
            }
        }
        if let Some(o) = &sla.objective {
            burn_rate_problems(".objective", o.objective, &o.windows, &mut problem);
            match (o.good, o.max_utilisation) {
                (GoodName::PathUtilisationBelow, None) => {
                    problem(
                        ".objective.max_utilisation",
                        "path_utilisation_below needs it".into(),
                    );
                }
                (GoodName::PathUtilisationBelow, Some(m)) if !(m > 0.0 && m.is_finite()) => {
                    problem(".objective.max_utilisation", format!("{m} must be above 0"));
                }
                (GoodName::PathUtilisationBelow, Some(_)) => {}
            }
        }
    }
    problems
}

/// Problems of an objective and its burn-rate windows (`objective` and `windows` under `table`).
fn burn_rate_problems(
    table: &str,
    objective: f64,
    windows: &[BurnRateWindow],
    problem: &mut impl FnMut(&str, String),
) {
    if !(objective > 0.0 && objective < 1.0) {
        problem(
            &format!("{table}.objective"),
            format!("{objective} must be between 0 and 1, exclusive"),
        );
    }
    if windows.is_empty() {
        problem(
            &format!("{table}.windows"),
            "needs at least one window pair".into(),
        );
    }
    for (j, w) in windows.iter().enumerate() {
        if w.short_seconds == 0
            || w.short_seconds > w.long_seconds
            || w.long_seconds % 60 != 0
            || w.short_seconds % 60 != 0
        {
            problem(
                &format!("{table}.windows[{j}]"),
                "needs 0 < short_seconds <= long_seconds, both whole minutes".into(),
            );
        }
        if !(w.factor > 0.0 && w.factor.is_finite()) {
            problem(
                &format!("{table}.windows[{j}].factor"),
                format!("{} must be above 0", w.factor),
            );
        }
    }
}

impl ObjectiveConfig {
    /// The good-event definition with its settings; `None` when a required key is missing
    /// (reported by [`validate`]).
    pub fn good_events(&self) -> Option<GoodEvents> {
        match self.good {
            GoodName::PathUtilisationBelow => Some(GoodEvents::PathUtilisationBelow {
                max_utilisation: self.max_utilisation?,
                paths: self.paths.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        monitor: MonitorConfig,
        slas: Vec<SlaConfig>,
    }

    const EXAMPLE: &str = r#"
[monitor]
evaluation_interval_seconds = 60
listen = "127.0.0.1:9478"
alert_state_path = ".local/alerts.json"

[[slas]]
name = "transit-utilisation"
kind = "throughput"
window_seconds = 300
for_seconds = 120
keep_firing_for_seconds = 0
severity = "critical"
labels = { team = "neteng" }
[slas.throughput]
paths = []
max_utilisation = 0.8
min_bps = 0
min_samples = 10

[[slas]]
name = "exfil"
kind = "exfiltration"
[slas.exfiltration]
limit_bytes = 1_000_000_000
group = "subnet/24"
baseline = { days = 14, k = 3.0, min_bytes = 100_000_000 }
bulk = { by = "dst_as", limit_bytes = 500_000_000 }
allow = { cidrs = ["203.0.113.0/24"], asns = [64999], clouds = ["aws"], hosts = ["10.0.0.9"], hours_utc = "22-06" }

[[slas]]
name = "exporters"
kind = "exporter_health"
[slas.exporter_health]
silent_seconds = 300
max_loss_ratio = 0.01

[[slas]]
name = "transit-slo"
kind = "objective"
[slas.objective]
good = "path_utilisation_below"
max_utilisation = 0.9
objective = 0.999
"#;

    #[test]
    fn the_contract_example_parses_and_validates() {
        let file: File = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(file.monitor, MonitorConfig::default());
        assert!(validate(&file.slas).is_empty(), "{:?}", validate(&file.slas));
        assert_eq!(
            file.slas[1].exfiltration.as_ref().unwrap().group,
            SourceGroup::Subnet24
        );
        let objective = file.slas[3].objective.as_ref().unwrap();
        assert_eq!(objective.windows, default_burn_windows());
        assert!(matches!(
            objective.good_events(),
            Some(GoodEvents::PathUtilisationBelow { max_utilisation, .. }) if max_utilisation == 0.9
        ));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = EXAMPLE.replace("min_bps = 0", "min_bps = 0\nmax_bps = 1");
        assert!(toml::from_str::<File>(&text).is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let mut file: File = toml::from_str(EXAMPLE).unwrap();
        file.slas[0].throughput.as_mut().unwrap().max_utilisation = 0.0;
        file.slas[0].labels.insert("severity".into(), "x".into());
        let exfil = file.slas[1].exfiltration.as_mut().unwrap();
        exfil.allow.cidrs.push("10.0.0.0/33".into());
        exfil.allow.hours_utc = Some("25-3".into());
        exfil.baseline.as_mut().unwrap().days = 7;
        file.slas[2].exporter_health.as_mut().unwrap().max_loss_ratio = 1.5;
        file.slas[3].name = "exfil".into();
        file.slas[3].throughput = Some(ThroughputConfig::default());
        let problems = validate(&file.slas);
        for key in [
            "slas[0].throughput.max_utilisation:",
            "slas[0].labels:",
            "slas[1].exfiltration.allow.cidrs[1]:",
            "slas[1].exfiltration.allow.hours_utc:",
            "slas[1].exfiltration.baseline.days:",
            "slas[2].exporter_health.max_loss_ratio:",
            "slas[3].name:",
            "slas[3].throughput:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 8, "{problems:#?}");
    }

    #[test]
    fn latency_sources_and_objectives_are_checked() {
        let text = "name = \"rtt\"\nkind = \"latency\"\nwindow_seconds = 300\n\
                    [latency]\nsource = \"both\"\nper = \"target\"\nobjective = 1.5\n\
                    windows = [{ long_seconds = 3600, short_seconds = 30, factor = 14.4 }]\n";
        let sla: SlaConfig = toml::from_str(text).unwrap();
        let latency = sla.latency.as_ref().unwrap();
        assert_eq!(
            (latency.source, latency.objective),
            (LatencySource::Both, Some(1.5))
        );
        let problems = validate(&[sla]);
        for key in [
            "slas[0].latency.per:",
            "slas[0].latency.objective:",
            "slas[0].latency.windows[0]:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let default: LatencyConfig = toml::from_str("").unwrap();
        assert_eq!(
            (default.source, default.objective, default.windows.len()),
            (LatencySource::Probes, None, 2)
        );
    }

    #[test]
    fn hours_parse_and_wrap() {
        assert_eq!(parse_hours("22-06"), Some((22, 6)));
        assert_eq!(parse_hours("0-24"), Some((0, 24)));
        assert_eq!(parse_hours("5-5"), None);
        assert_eq!(parse_hours("x"), None);
    }
}
