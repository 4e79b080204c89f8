//! SLA evaluation stage of the monitor: `rules` → **`evaluate`** → `state` → `notify`.
//!
//! In: the `[[slas]]` of the configuration ([`SlaConfig`], checked by [`validate`]), a ClickHouse
//! client and an [`EvalContext`] (evaluation time, database, the egress paths with their
//! capacities and the configured exporters). Out: one [`SlaResult`] per SLA and subject
//! (path, host, exporter...) per evaluation, with a value, a threshold and a [`Verdict`]; each
//! result converts to an [`AlertSample`] for the alert state machine and to a row of
//! `sla_results`. Nothing is kept between evaluations: every evaluation reads what it needs
//! from ClickHouse, so a restart loses nothing here.
//!
//! Kinds: [`throughput`], [`exfiltration`], [`exporter_health`], [`objective`], [`latency`].
//! Each kind module has a `queries` function (the SQL it runs, with bound parameters) and an
//! `evaluate` function; [`SlaSpec`] is the one place that dispatches on the kind, so a new kind
//! adds a module, a config field and a match arm here, and nothing in alerting or the API.
//!
//! Rules every query follows (ClickHouse 18.16 and current servers alike): parameters are bound
//! with the client's `?` placeholders ([`SqlQuery`]), never pasted; addresses are bound as text
//! and turned into 16 bytes by `IPv6StringToNum(?)`; the database name is checked with
//! [`is_identifier`]; time filters are ranges on `time_received` (the `ORDER BY` prefix of
//! `flows`), each kind scanning its window once. "Too few samples behind a value" is
//! [`Verdict::NoData`], never [`Verdict::Ok`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use clickhouse::{Client, RowOwned, RowRead};
use serde::Serialize;

use crate::connection::{self, is_identifier, ConnectionError};
use crate::model::{EgressModel, EgressPath};
use crate::schema::{SlaResultRow, SLA_RESULTS_TABLE};

mod config;
pub mod exfiltration;
pub mod exporter_health;
pub mod latency;
pub mod objective;
pub mod throughput;

pub use config::{
    validate, AllowList, BaselineConfig, BulkBy, BulkConfig, BurnRateWindow, ExfiltrationConfig,
    ExporterHealthConfig, GoodEvents, GoodName, KindName, LatencyConfig, LatencyScope, LatencySource,
    MonitorConfig, ObjectiveConfig, Severity, SlaConfig, SourceGroup, ThroughputConfig, RESERVED_LABELS,
};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlaError {
    /// The database name would need quoting; Egress only accepts plain identifiers.
    #[error("database name {0:?} must be letters, digits and `_`, not starting with a digit")]
    InvalidDatabase(String),
    /// The SLA's configuration lacks the sub-table of its kind (run [`validate`] first).
    #[error("sla {0:?}: no configuration for its kind")]
    MissingKindConfig(String),
    /// A query failed or timed out.
    #[error("sla {sla:?}: {source}")]
    Query {
        sla: String,
        #[source]
        source: ConnectionError,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, SlaError>;

/// What an evaluation concluded about one subject: the `sla_results.verdict` enum of the
/// storage contract.
pub use crate::schema::Verdict;

/// One SLA × subject × evaluation: the generic result every kind produces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaResult {
    /// Evaluation time, Unix seconds.
    pub time: u32,
    /// SLA name.
    pub sla: String,
    /// Kind name (`throughput`, `exfiltration`, ...).
    pub kind: String,
    /// Human subject, e.g. `edge1 / et-0/0/1 (Transit A)` or `10.1.2.3`.
    pub subject: String,
    /// Labels identifying the subject (`path`, `exporter`, `host`, ...); become alert labels.
    pub labels: BTreeMap<String, String>,
    /// Measured value: utilisation ratio, bytes, seconds silent, loss ratio, burn rate.
    pub value: f64,
    /// The threshold `value` was compared with.
    pub threshold: f64,
    /// Ok, breach or no data.
    pub verdict: Verdict,
    /// Sampled records behind the value.
    pub samples: u64,
    /// Kind-specific figures (baseline, top destinations, bit rates...), as a JSON object.
    pub details: serde_json::Value,
}

/// An egress path with a capacity, as the throughput and objective kinds see it. Filled by the
/// lead from the egress model (`egress_query::model`): one per external interface with a
/// `capacity_bps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCapacity {
    /// Path label, `edge1 / et-0/0/1 (Transit A)` (the `egress_path` column's value).
    pub label: String,
    /// Exporter address.
    pub exporter: IpAddr,
    /// Exporter name from the model, or the address.
    pub exporter_name: String,
    /// Outgoing interface (SNMP ifIndex).
    pub if_index: u32,
    /// Capacity in bit/s.
    pub capacity_bps: u64,
}

impl PathCapacity {
    /// The path of the egress model, if it has a capacity (paths without one have no
    /// utilisation).
    pub fn from_model(path: &EgressPath) -> Option<Self> {
        let capacity_bps = path.capacity_bps.filter(|c| *c > 0)?;
        Some(Self {
            label: path.label.clone(),
            exporter: path.exporter_address,
            exporter_name: if path.exporter_name.is_empty() {
                crate::schema::from_v6(crate::schema::to_v6(path.exporter_address)).to_string()
            } else {
                path.exporter_name.clone()
            },
            if_index: path.if_index,
            capacity_bps,
        })
    }
}

/// A configured exporter, as exporter health sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterRef {
    /// Address the exporter sends from.
    pub address: IpAddr,
    /// Name from the model, or the address.
    pub name: String,
}

/// What one evaluation needs besides the SLAs.
#[derive(Debug, Clone)]
pub struct EvalContext {
    /// Evaluation time, Unix seconds; windows end here (exclusive).
    pub now: u32,
    /// Database holding the Egress tables.
    pub database: String,
    /// Egress paths with capacities (throughput, objective).
    pub paths: Vec<PathCapacity>,
    /// Configured exporters (exporter health; exporters seen in the last day are added).
    pub exporters: Vec<ExporterRef>,
    /// How long one query may take.
    pub query_timeout: Duration,
}

impl EvalContext {
    /// The context of an evaluation at `now` from the egress model: its paths with a capacity
    /// and its exporters.
    pub fn from_model(now: u32, database: &str, model: &EgressModel, query_timeout: Duration) -> Self {
        Self {
            now,
            database: database.to_owned(),
            paths: model
                .paths()
                .iter()
                .filter_map(PathCapacity::from_model)
                .collect(),
            exporters: model
                .exporters()
                .iter()
                .map(|e| ExporterRef {
                    address: e.address,
                    name: if e.name.is_empty() {
                        crate::schema::from_v6(crate::schema::to_v6(e.address)).to_string()
                    } else {
                        e.name.into()
                    },
                })
                .collect(),
            query_timeout,
        }
    }
}

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// Unsigned integer (times, counts, interface indexes, AS numbers, hours).
    U64(u64),
    /// Float (ratios, rates).
    F64(f64),
    /// Text (addresses as text, labels, keys).
    Str(String),
}

/// One query: SQL with `?` placeholders and the values bound to them, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlQuery {
    /// What the query is for, e.g. `throughput.window` (for logs, errors and the SQL dump).
    pub name: &'static str,
    /// SQL text; every `?` is a placeholder.
    pub sql: String,
    /// Bound values, in placeholder order.
    pub params: Vec<Param>,
}

impl SqlQuery {
    /// A query without parameters yet.
    pub fn new(name: &'static str, sql: impl Into<String>) -> Self {
        Self {
            name,
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// Appends `sql` and the values of its placeholders.
    pub fn push(&mut self, sql: &str, params: impl IntoIterator<Item = Param>) {
        self.sql.push_str(sql);
        self.params.extend(params);
    }

    /// The SQL with every placeholder replaced by its value as a literal, escaped the way the
    /// client escapes bound values. For reading and for `tests/chdb/check_sla_sql.py`; the
    /// queries themselves always travel with bound values.
    pub fn with_literals(&self) -> String {
        let mut out = String::with_capacity(self.sql.len() + 16 * self.params.len());
        let mut params = self.params.iter();
        for c in self.sql.chars() {
            if c != '?' {
                out.push(c);
                continue;
            }
            match params.next() {
                Some(Param::U64(v)) => out.push_str(&v.to_string()),
                Some(Param::F64(v)) => out.push_str(&format!("{v:?}")),
                Some(Param::Str(s)) => {
                    out.push('\'');
                    for ch in s.chars() {
                        if matches!(ch, '\\' | '\'' | '`') {
                            out.push('\\');
                        }
                        out.push(ch);
                    }
                    out.push('\'');
                }
                None => out.push('?'),
            }
        }
        out
    }

    /// The client's query with every value bound to its placeholder.
    pub(crate) fn bound(&self, client: &Client) -> clickhouse::query::Query {
        let mut query = client.query(&self.sql);
        for param in &self.params {
            query = match param {
                Param::U64(v) => query.bind(*v),
                Param::F64(v) => query.bind(*v),
                Param::Str(s) => query.bind(s.as_str()),
            };
        }
        query
    }

    /// Runs the query with its values bound and reads every row.
    pub(crate) async fn fetch<T: RowOwned + RowRead>(
        &self,
        client: &Client,
        timeout: Duration,
        sla: &str,
    ) -> Result<Vec<T>> {
        connection::run(timeout, self.name, self.bound(client).fetch_all::<T>())
            .await
            .map_err(|source| SlaError::Query {
                sla: sla.to_owned(),
                source,
            })
    }
}

/// The first and last 16-byte address of a prefix (IPv4 prefixes mapped into `::ffff:0:0/96`),
/// as bound text, for `col >= IPv6StringToNum(?) AND col <= IPv6StringToNum(?)`.
pub(crate) fn range_params(net: &ipnet::IpNet) -> [Param; 2] {
    let (first, last) = match net {
        ipnet::IpNet::V4(v4) => (v4.network().to_ipv6_mapped(), v4.broadcast().to_ipv6_mapped()),
        ipnet::IpNet::V6(v6) => (v6.network(), v6.broadcast()),
    };
    [Param::Str(first.to_string()), Param::Str(last.to_string())]
}

/// Display form of a stored address text: `::ffff:a.b.c.d` prints as `a.b.c.d`.
pub(crate) fn display_address(text: &str) -> String {
    match text.parse::<Ipv6Addr>() {
        Ok(v6) => crate::schema::from_v6(v6).to_string(),
        Err(_) => text.to_owned(),
    }
}

/// Bytes in human units for annotations: `2.1 GB` (decimal units, as link capacities are).
pub fn human_bytes(bytes: f64) -> String {
    human(bytes, "B")
}

/// Bit rate in human units: `8.2 Gbit/s`.
pub fn human_bps(bps: f64) -> String {
    human(bps, "bit/s")
}

fn human(value: f64, unit: &str) -> String {
    const PREFIXES: [&str; 6] = ["", "k", "M", "G", "T", "P"];
    let mut scaled = value;
    let mut prefix = 0;
    while scaled.abs() >= 1000.0 && prefix + 1 < PREFIXES.len() {
        scaled /= 1000.0;
        prefix += 1;
    }
    if prefix == 0 {
        format!("{scaled:.0} {unit}")
    } else {
        format!("{scaled:.1} {}{unit}", PREFIXES[prefix])
    }
}

/// Window lengths in annotations: `5m`, `1h`, `90s`.
pub fn human_duration(seconds: u64) -> String {
    if seconds % 3600 == 0 && seconds > 0 {
        format!("{}h", seconds / 3600)
    } else if seconds % 60 == 0 && seconds > 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// The kind-specific part of one SLA, borrowed from its configuration: the ONE place that
/// dispatches on the kind.
#[derive(Debug, Clone, Copy)]
pub enum SlaSpec<'a> {
    Throughput(&'a ThroughputConfig),
    Exfiltration(&'a ExfiltrationConfig),
    ExporterHealth(&'a ExporterHealthConfig),
    Objective(&'a ObjectiveConfig),
    Latency(&'a LatencyConfig),
}

impl<'a> SlaSpec<'a> {
    /// The spec of `sla`, or an error when its kind's sub-table is missing.
    pub fn of(sla: &'a SlaConfig) -> Result<Self> {
        let missing = || SlaError::MissingKindConfig(sla.name.clone());
        Ok(match sla.kind {
            KindName::Throughput => Self::Throughput(sla.throughput.as_ref().ok_or_else(missing)?),
            KindName::Exfiltration => Self::Exfiltration(sla.exfiltration.as_ref().ok_or_else(missing)?),
            KindName::ExporterHealth => {
                Self::ExporterHealth(sla.exporter_health.as_ref().ok_or_else(missing)?)
            }
            KindName::Objective => Self::Objective(sla.objective.as_ref().ok_or_else(missing)?),
            KindName::Latency => Self::Latency(sla.latency.as_ref().ok_or_else(missing)?),
        })
    }

    /// The queries this SLA runs in `ctx` (for the SQL dump and for reading; `evaluate` runs
    /// the same, plus follow-up queries that depend on the first results, e.g. the top
    /// destinations of the breaching hosts).
    pub fn queries(&self, sla: &SlaConfig, ctx: &EvalContext) -> Vec<SqlQuery> {
        match self {
            Self::Throughput(spec) => throughput::queries(sla, spec, ctx),
            Self::Exfiltration(spec) => exfiltration::queries(sla, spec, ctx),
            Self::ExporterHealth(spec) => exporter_health::queries(sla, spec, ctx),
            Self::Objective(spec) => objective::queries(sla, spec, ctx),
            Self::Latency(spec) => latency::queries(sla, spec, ctx),
        }
    }

    /// Runs the queries and turns their rows into results.
    pub async fn evaluate(
        &self,
        client: &Client,
        sla: &SlaConfig,
        ctx: &EvalContext,
    ) -> Result<Vec<SlaResult>> {
        match self {
            Self::Throughput(spec) => throughput::evaluate(client, sla, spec, ctx).await,
            Self::Exfiltration(spec) => exfiltration::evaluate(client, sla, spec, ctx).await,
            Self::ExporterHealth(spec) => exporter_health::evaluate(client, sla, spec, ctx).await,
            Self::Objective(spec) => objective::evaluate(client, sla, spec, ctx).await,
            Self::Latency(spec) => latency::evaluate(client, sla, spec, ctx).await,
        }
    }
}

/// Evaluates every SLA at `ctx.now`. An SLA whose queries fail is logged and skipped (its
/// alerts keep their state); the others still produce results.
pub async fn evaluate_all(client: &Client, slas: &[SlaConfig], ctx: &EvalContext) -> Result<Vec<SlaResult>> {
    if !is_identifier(&ctx.database) {
        return Err(SlaError::InvalidDatabase(ctx.database.clone()));
    }
    let mut results = Vec::new();
    for sla in slas {
        let evaluated = match SlaSpec::of(sla) {
            Ok(spec) => spec.evaluate(client, sla, ctx).await,
            Err(e) => Err(e),
        };
        match evaluated {
            Ok(mut r) => results.append(&mut r),
            Err(error) => tracing::warn!(sla = %sla.name, %error, "sla evaluation failed"),
        }
    }
    Ok(results)
}

/// Input of the alert state machine for one result (the contract's `AlertSample`, with
/// `breaching` an `Option`: `None` is "no data", which neither fires nor resolves an alert).
/// It maps field by field onto `egress_alerts::state::AlertSample` (`Some(true)` → `Breaching`,
/// `Some(false)` → `Ok`, `None` → `NoData`); the monitor does the mapping so that this crate
/// does not depend on the alerts crate. User labels are already in `labels`: pass none as rule
/// labels, which would override the subject labels.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSample {
    /// alertname (the SLA name), severity, sla_kind, the subject labels and the user labels.
    pub labels: BTreeMap<String, String>,
    /// `summary` and `description` with the figures.
    pub annotations: BTreeMap<String, String>,
    /// `Some(true)` breach, `Some(false)` ok, `None` no data.
    pub breaching: Option<bool>,
    /// The result's value.
    pub value: f64,
    /// The threshold the value was compared with (`None` for no data without a threshold).
    pub threshold: Option<f64>,
}

impl SlaResult {
    /// The alert sample for this result of `sla`: labels `alertname` (the SLA name),
    /// `severity`, `sla_kind`, the subject labels and the user labels (which [`validate`] keeps
    /// off the others' names, so that a user label can never merge two subjects into one alert).
    pub fn alert_sample(&self, sla: &SlaConfig) -> AlertSample {
        // `validate` keeps user labels off the fixed and subject label names.
        let mut labels = sla.labels.clone();
        labels.extend(self.labels.clone());
        labels.insert("alertname".to_owned(), sla.name.clone());
        labels.insert("severity".to_owned(), sla.severity.as_str().to_owned());
        labels.insert("sla_kind".to_owned(), self.kind.clone());
        let (summary, description) = self.annotations(sla);
        let annotations = BTreeMap::from([
            ("summary".to_owned(), summary),
            ("description".to_owned(), description),
        ]);
        AlertSample {
            labels,
            annotations,
            breaching: match self.verdict {
                Verdict::Ok => Some(false),
                Verdict::Breach => Some(true),
                Verdict::NoData => None,
            },
            value: self.value,
            threshold: (self.verdict != Verdict::NoData || self.threshold != 0.0).then_some(self.threshold),
        }
    }

    /// (summary, description), from the kind's details.
    fn annotations(&self, sla: &SlaConfig) -> (String, String) {
        let summary = match sla.kind {
            KindName::Throughput => throughput::summary(self, sla),
            KindName::Exfiltration => exfiltration::summary(self, sla),
            KindName::ExporterHealth => exporter_health::summary(self, sla),
            KindName::Objective => objective::summary(self, sla),
            KindName::Latency => latency::summary(self, sla),
        };
        let description = format!(
            "SLA {} ({}) on {}: value {:.4}, threshold {:.4}, verdict {}, {} samples. Details: {}",
            sla.name,
            self.kind,
            self.subject,
            self.value,
            self.threshold,
            self.verdict.as_str(),
            self.samples,
            self.details
        );
        (summary, description)
    }

    /// The `sla_results` row of this result.
    pub fn to_row(&self) -> SlaResultRow {
        SlaResultRow {
            time: self.time,
            sla: self.sla.clone(),
            kind: self.kind.clone(),
            subject: self.subject.clone(),
            labels_keys: self.labels_keys(),
            labels_values: self.labels_values(),
            value: finite(self.value),
            threshold: finite(self.threshold),
            verdict: self.verdict,
            samples: self.samples,
            details: self.details.to_string(),
        }
    }

    /// Subject label names, sorted (`sla_results.labels_keys`).
    pub fn labels_keys(&self) -> Vec<String> {
        self.labels.keys().cloned().collect()
    }

    /// Subject label values in the order of [`Self::labels_keys`] (`sla_results.labels_values`).
    pub fn labels_values(&self) -> Vec<String> {
        self.labels.values().cloned().collect()
    }
}

/// Infinite or NaN values (a burn rate over nothing) are stored as the largest finite value or
/// 0, which every reader can parse.
fn finite(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(f64::MIN, f64::MAX)
    }
}

/// Inserts `results` into `sla_results` (one insert). Nothing to insert is not an error.
pub async fn write_results(
    client: &Client,
    database: &str,
    results: &[SlaResult],
    timeout: Duration,
) -> Result<()> {
    if !is_identifier(database) {
        return Err(SlaError::InvalidDatabase(database.to_owned()));
    }
    if results.is_empty() {
        return Ok(());
    }
    let table = format!("{database}.{SLA_RESULTS_TABLE}");
    let failed = |source: clickhouse::error::Error| SlaError::Query {
        sla: String::new(),
        source: ConnectionError::Query {
            query: format!("INSERT INTO {table}"),
            source,
        },
    };
    // The crate quotes the table name as one identifier: the database goes on the client.
    let client = client.clone().with_database(database);
    let write = async {
        let mut insert = client.insert::<SlaResultRow>(SLA_RESULTS_TABLE).await?;
        for result in results {
            insert.write(&result.to_row()).await?;
        }
        insert.end().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(outcome) => outcome.map_err(failed),
        Err(_) => Err(SlaError::Query {
            sla: String::new(),
            source: ConnectionError::Timeout {
                query: format!("INSERT INTO {table}"),
                timeout,
            },
        }),
    }
}

/// Helper for kinds: a result with the SLA's identity filled in.
pub(crate) fn result(
    sla: &SlaConfig,
    ctx: &EvalContext,
    subject: String,
    labels: BTreeMap<String, String>,
) -> SlaResult {
    SlaResult {
        time: ctx.now,
        sla: sla.name.clone(),
        kind: sla.kind.as_str().to_owned(),
        subject,
        labels,
        value: 0.0,
        threshold: 0.0,
        verdict: Verdict::NoData,
        samples: 0,
        details: serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_strings_and_keep_numbers() {
        let mut query = SqlQuery::new("t", "SELECT ? , ?, ?");
        query.params = vec![Param::U64(7), Param::F64(0.5), Param::Str("a'b\\".into())];
        assert_eq!(query.with_literals(), "SELECT 7 , 0.5, 'a\\'b\\\\'");
    }

    #[test]
    fn ranges_cover_mapped_ipv4_and_ipv6() {
        let v4: ipnet::IpNet = "203.0.113.0/24".parse().unwrap();
        assert_eq!(
            range_params(&v4),
            [
                Param::Str("::ffff:203.0.113.0".into()),
                Param::Str("::ffff:203.0.113.255".into())
            ]
        );
        let v6: ipnet::IpNet = "2001:db8::/32".parse().unwrap();
        assert_eq!(
            range_params(&v6),
            [
                Param::Str("2001:db8::".into()),
                Param::Str("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".into())
            ]
        );
        assert_eq!(display_address("::ffff:10.0.0.5"), "10.0.0.5");
    }

    #[test]
    fn context_from_the_egress_model_keeps_paths_with_a_capacity() {
        #[derive(serde::Deserialize)]
        struct File {
            model: crate::model::ModelConfig,
            exporters: Vec<crate::model::ExporterConfig>,
        }
        let file: File = toml::from_str(
            r#"
            [model]
            internal_prefixes = ["10.0.0.0/8"]
            [[exporters]]
            address = "192.0.2.1"
            name = "edge1"
            [[exporters.interfaces]]
            if_index = 1
            name = "et-0/0/1"
            role = "external"
            kind = "transit"
            provider = "Transit A"
            capacity_bps = 10_000_000_000
            [[exporters.interfaces]]
            if_index = 2
            name = "et-0/0/2"
            role = "external"
            kind = "peering"
            [[exporters]]
            address = "192.0.2.2"
            "#,
        )
        .unwrap();
        let model = EgressModel::from_parts(&file.model, &file.exporters, Vec::new());
        let ctx = EvalContext::from_model(60, "egress", &model, Duration::from_secs(5));
        assert_eq!(
            ctx.paths,
            [PathCapacity {
                label: "edge1 / et-0/0/1 (Transit A)".into(),
                exporter: IpAddr::from([192, 0, 2, 1]),
                exporter_name: "edge1".into(),
                if_index: 1,
                capacity_bps: 10_000_000_000,
            }]
        );
        let names: Vec<&str> = ctx.exporters.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["edge1", "192.0.2.2"]);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(2.1e9), "2.1 GB");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bps(8.2e9), "8.2 Gbit/s");
        assert_eq!(human_duration(300), "5m");
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(90), "90s");
    }
}
