//! The egress model: what the network looks like, from the configuration.
//!
//! In: the `[model]` section (internal prefixes, cloud range files) and the `[[exporters]]` list
//! (exporters with their interfaces), as serde types. Out: [`EgressModel`], a compiled lookup
//! structure shared by the collector (classification of every flow at ingest) and the monitor
//! (the egress paths and their capacities, [`EgressModel::paths`]). Building it reads the cloud
//! range files; nothing here does I/O afterwards.
//!
//! An interface is `external` (transit, peering, cloud, WAN: traffic leaving through it leaves
//! the network) or `internal`. The egress path of an outbound flow is its exporter and external
//! output interface, labelled `"{exporter} / {interface} ({provider})"`, e.g.
//! `edge1 / et-0/0/1 (Transit A)`; the exporter is its name or else its address, the interface
//! its name or else `ifIndex N`, and the parentheses are left out without a provider.
//!
//! Addresses are matched in their stored form ([`crate::schema::to_v6`]): IPv4 prefixes are
//! IPv4-mapped (`10.0.0.0/8` is `::ffff:10.0.0.0/104`), so one table serves both families.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::label::Label;

use crate::schema::{to_v6, InterfaceKind, InterfaceRole};

/// Errors building the model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A cloud range file could not be read.
    #[error("cannot read cloud range file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A cloud range file is not in its declared format.
    #[error("cloud range file {path}: {message}")]
    Format { path: String, message: String },
    /// The configuration is inconsistent (see [`problems`]).
    #[error("invalid egress model:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<String> },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, ModelError>;

/// The `[model]` section: what is inside the network, and which destinations are clouds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The network's own address space, as CIDR prefixes (IPv4 and IPv6), e.g.
    /// `["10.0.0.0/8", "fd00::/8"]`. Where an exporter's interfaces are not configured, a flow
    /// from an internal to a non-internal address is outbound (egress).
    pub internal_prefixes: Vec<IpNet>,
    /// Files naming cloud provider address ranges; a flow's destination found in one gets the
    /// range's label in `flows.dst_cloud`. Where ranges overlap, the longest prefix wins; for
    /// the same prefix in two files, the first file listed wins.
    pub cloud_ranges: Vec<CloudRangeSource>,
}

/// One file of cloud provider address ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudRangeSource {
    /// Path of the file; a relative path is relative to the working directory of the process.
    pub file: PathBuf,
    /// `aws` (Amazon's `ip-ranges.json`) or `cidr` (one prefix per line, `#` comments).
    pub format: CloudRangeFormat,
    /// For `cidr`: the label of every range in the file (required), e.g. `microsoft/office365`.
    /// For `aws`: the first part of the label, `aws` by default, giving
    /// `{label}/{service}/{region}`, e.g. `aws/S3/eu-west-1`.
    #[serde(default)]
    pub label: Option<String>,
}

/// The format of a cloud range file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudRangeFormat {
    /// Amazon's `ip-ranges.json`: `prefixes[].ip_prefix` and `ipv6_prefixes[].ipv6_prefix`,
    /// each with `region` and `service`. A prefix listed under the catch-all service `AMAZON`
    /// and under a specific one is labelled with the specific one.
    Aws,
    /// One CIDR prefix per line; blank lines and `#` comments (whole-line or trailing) ignored.
    Cidr,
}

/// Settings for one exporter (a router, firewall or switch), matched on the datagram's source
/// address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    /// The exporter's source address, as seen by the collector.
    pub address: IpAddr,
    /// A human name (e.g. `edge1`), used in egress path labels; the address when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Where the exporter is (e.g. `fra1`), stored in `flows.exporter_site`.
    #[serde(default)]
    pub site: Option<String>,
    /// Sampling rate to use when the export does not say (`sampling_source = config_default`).
    #[serde(default)]
    pub sampling_default: Option<u64>,
    /// Sampling rate that replaces whatever the export says (`sampling_source =
    /// config_override`). For exporters known to report a wrong rate.
    #[serde(default)]
    pub sampling_override: Option<u64>,
    /// The exporter's interfaces, by SNMP ifIndex. With none configured, flows of this
    /// exporter are classified by their addresses alone.
    #[serde(default)]
    pub interfaces: Vec<InterfaceConfig>,
}

/// One interface of an exporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// SNMP ifIndex, as exported in `in_if` / `out_if`.
    pub if_index: u32,
    /// Interface name (e.g. `et-0/0/1`), used in egress path labels; `ifIndex N` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// `external` (traffic leaving through it leaves the network) or `internal`.
    pub role: Role,
    /// For external interfaces only: `transit`, `peering`, `cloud` or `wan`.
    #[serde(default)]
    pub kind: Option<Kind>,
    /// Who is on the other side (e.g. `Transit A`), shown in egress path labels.
    #[serde(default)]
    pub provider: Option<String>,
    /// Capacity in bit/s (e.g. `10_000_000_000`); utilisation SLAs need it.
    #[serde(default)]
    pub capacity_bps: Option<u64>,
    /// Committed rate in bit/s of a burstable contract, compared with the month's 95th
    /// percentile (`GET /api/v1/paths/p95`).
    #[serde(default)]
    pub committed_bps: Option<u64>,
    /// Free text for people; not stored with flows.
    #[serde(default)]
    pub description: Option<String>,
}

/// What an interface faces, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Towards another network.
    External,
    /// Towards the internal network.
    Internal,
}

impl Role {
    /// The stored form.
    pub fn stored(self) -> InterfaceRole {
        match self {
            Self::External => InterfaceRole::External,
            Self::Internal => InterfaceRole::Internal,
        }
    }
}

/// What an external interface connects to, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Transit,
    Peering,
    Cloud,
    Wan,
}

impl Kind {
    /// The stored form.
    pub fn stored(self) -> InterfaceKind {
        match self {
            Self::Transit => InterfaceKind::Transit,
            Self::Peering => InterfaceKind::Peering,
            Self::Cloud => InterfaceKind::Cloud,
            Self::Wan => InterfaceKind::Wan,
        }
    }
}

/// Every problem of the model and exporter configuration, each naming its key
/// (`model.internal_prefixes[0]`, `exporters[2].interfaces[1].kind`, ...). Reads the cloud range
/// files to check them.
pub fn problems(model: &ModelConfig, exporters: &[ExporterConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, prefix) in model.internal_prefixes.iter().enumerate() {
        if *prefix != prefix.trunc() {
            problems.push(format!(
                "model.internal_prefixes[{i}]: {prefix} has host bits set (did you mean {}?)",
                prefix.trunc()
            ));
        }
    }
    for (i, source) in model.cloud_ranges.iter().enumerate() {
        let key = format!("model.cloud_ranges[{i}]");
        match (source.format, &source.label) {
            (CloudRangeFormat::Cidr, None) => {
                problems.push(format!("{key}.label: a cidr file needs a label"));
            }
            (_, Some(label)) if label.trim().is_empty() => {
                problems.push(format!("{key}.label: must not be empty"));
            }
            _ => {}
        }
        if let Err(error) = load_ranges(source) {
            problems.push(format!("{key}.file: {error}"));
        }
    }
    let mut addresses = HashMap::new();
    for (i, exporter) in exporters.iter().enumerate() {
        let key = format!("exporters[{i}]");
        if let Some(first) = addresses.insert(to_v6(exporter.address), i) {
            problems.push(format!(
                "{key}.address: {} is also exporters[{first}].address",
                exporter.address
            ));
        }
        for (field, value) in [
            ("sampling_default", exporter.sampling_default),
            ("sampling_override", exporter.sampling_override),
        ] {
            if value == Some(0) {
                problems.push(format!("{key}.{field}: a sampling rate is at least 1"));
            }
        }
        let mut if_indexes = HashMap::new();
        for (j, interface) in exporter.interfaces.iter().enumerate() {
            let key = format!("{key}.interfaces[{j}]");
            if let Some(first) = if_indexes.insert(interface.if_index, j) {
                problems.push(format!(
                    "{key}.if_index: {} is also interfaces[{first}].if_index of this exporter",
                    interface.if_index
                ));
            }
            if interface.if_index == 0 {
                problems.push(format!("{key}.if_index: 0 means `unknown` in flow records"));
            }
            if interface.role == Role::Internal && interface.kind.is_some() {
                problems.push(format!("{key}.kind: only external interfaces have a kind"));
            }
            if interface.committed_bps == Some(0) {
                problems.push(format!("{key}.committed_bps: must be above 0 (or left out)"));
            }
            if interface.capacity_bps == Some(0) {
                problems.push(format!("{key}.capacity_bps: must be above 0 (or left out)"));
            }
        }
    }
    problems
}

/// A set of prefixes with a value each, answering longest-prefix-match lookups.
///
/// Written by hand rather than taken from a crate: the prefixes are few (a handful of internal
/// ones, some thousands of cloud ranges), fixed after start-up and looked up millions of times a
/// second, which a flat sorted array does best. Building flattens the (nested or disjoint) CIDR
/// prefixes into disjoint address ranges, each carrying the value of the longest prefix that
/// covers it; a lookup is one binary search over those ranges, with no allocation and no pointer
/// chasing. Both families live in one 128-bit space (IPv4 mapped, see the module header).
#[derive(Debug, Clone, Default)]
pub struct PrefixTable<T> {
    /// Disjoint ranges `(first, last)` in increasing order, with an index into `values`.
    ranges: Vec<(u128, u128, u32)>,
    values: Vec<T>,
}

impl<T> PrefixTable<T> {
    /// Builds the table from `(prefix, value)` pairs. For a prefix listed twice, the first
    /// pair wins.
    pub fn new(entries: impl IntoIterator<Item = (IpNet, T)>) -> Self {
        let mut values = Vec::new();
        // (first, last, prefix length in the 128-bit space, value index)
        let mut prefixes: Vec<(u128, u128, u8, u32)> = Vec::new();
        for (prefix, value) in entries {
            let (first, length) = match prefix.trunc() {
                IpNet::V4(v4) => (u128::from(v4.network().to_ipv6_mapped()), v4.prefix_len() + 96),
                IpNet::V6(v6) => (u128::from(v6.network()), v6.prefix_len()),
            };
            let last = first | host_mask(length);
            prefixes.push((first, last, length, values.len() as u32));
            values.push(value);
        }
        // Outer prefixes before the ones they contain; equal prefixes in input order (stable).
        prefixes.sort_by_key(|&(first, _, length, _)| (first, length));
        prefixes.dedup_by_key(|&mut (first, _, length, _)| (first, length));

        let mut ranges: Vec<(u128, u128, u32)> = Vec::new();
        let mut emit = |first: u128, last: u128, value: u32| {
            if let Some(previous) = ranges.last_mut() {
                if previous.2 == value && previous.1.checked_add(1) == Some(first) {
                    previous.1 = last;
                    return;
                }
            }
            ranges.push((first, last, value));
        };
        // CIDR prefixes are nested or disjoint, so the prefixes open at an address form a
        // stack; `next` is the first address not yet given to a range.
        let mut open: Vec<(u128, u32)> = Vec::new();
        let mut next: Option<u128> = Some(0);
        for (first, last, _, value) in prefixes {
            while let Some(&(end, outer)) = open.last() {
                if end >= first {
                    break;
                }
                if let Some(start) = next.filter(|&start| start <= end) {
                    emit(start, end, outer);
                }
                next = end.checked_add(1);
                open.pop();
            }
            if let (Some(&(_, outer)), Some(start)) = (open.last(), next) {
                if start < first {
                    emit(start, first - 1, outer);
                }
            }
            next = Some(first);
            open.push((last, value));
        }
        while let Some((end, value)) = open.pop() {
            if let Some(start) = next.filter(|&start| start <= end) {
                emit(start, end, value);
            }
            next = end.checked_add(1);
        }
        Self { ranges, values }
    }

    /// The value of the longest prefix containing `address` (in its stored, IPv4-mapped form).
    pub fn lookup(&self, address: Ipv6Addr) -> Option<&T> {
        let address = u128::from(address);
        let after = self.ranges.partition_point(|&(first, _, _)| first <= address);
        let &(_, last, value) = self.ranges.get(after.checked_sub(1)?)?;
        (address <= last)
            .then(|| self.values.get(value as usize))
            .flatten()
    }

    /// Whether some prefix contains `address`.
    pub fn contains(&self, address: Ipv6Addr) -> bool {
        self.lookup(address).is_some()
    }

    /// Whether the table has no prefix.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The host bits of a prefix of `length` bits in the 128-bit space.
fn host_mask(length: u8) -> u128 {
    u128::MAX.checked_shr(u32::from(length)).unwrap_or(0)
}

/// The `(prefix, label)` pairs of one cloud range file.
pub fn load_ranges(source: &CloudRangeSource) -> Result<Vec<(IpNet, String)>> {
    let path = source.file.display().to_string();
    let text = std::fs::read_to_string(&source.file).map_err(|source| ModelError::Read {
        path: path.clone(),
        source,
    })?;
    let format_error = |message: String| ModelError::Format {
        path: path.clone(),
        message,
    };
    match source.format {
        CloudRangeFormat::Aws => {
            parse_aws_ranges(&text, source.label.as_deref().unwrap_or("aws")).map_err(format_error)
        }
        CloudRangeFormat::Cidr => {
            let label = source.label.as_deref().unwrap_or_default();
            parse_cidr_list(&text, label).map_err(format_error)
        }
    }
}

/// Amazon's `ip-ranges.json` (the fields Egress reads).
#[derive(Debug, Deserialize)]
struct AwsRanges {
    #[serde(default)]
    prefixes: Vec<AwsPrefix>,
    #[serde(default)]
    ipv6_prefixes: Vec<AwsPrefix>,
}

#[derive(Debug, Deserialize)]
struct AwsPrefix {
    #[serde(alias = "ipv6_prefix")]
    ip_prefix: IpNet,
    region: String,
    service: String,
}

/// The catch-all service of `ip-ranges.json`; every range is also listed under it.
const AWS_CATCH_ALL_SERVICE: &str = "AMAZON";

/// Parses `ip-ranges.json` into `({prefix}, {label}/{service}/{region})` pairs. A prefix listed
/// under several services keeps the first one that is not the catch-all `AMAZON`.
pub fn parse_aws_ranges(text: &str, label: &str) -> std::result::Result<Vec<(IpNet, String)>, String> {
    let ranges: AwsRanges = serde_json::from_str(text).map_err(|e| format!("not AWS ip-ranges.json: {e}"))?;
    let mut chosen: HashMap<IpNet, &AwsPrefix> = HashMap::new();
    let mut order = Vec::new();
    for prefix in ranges.prefixes.iter().chain(&ranges.ipv6_prefixes) {
        match chosen.get(&prefix.ip_prefix) {
            None => {
                order.push(prefix.ip_prefix);
                chosen.insert(prefix.ip_prefix, prefix);
            }
            Some(first)
                if first.service == AWS_CATCH_ALL_SERVICE && prefix.service != AWS_CATCH_ALL_SERVICE =>
            {
                chosen.insert(prefix.ip_prefix, prefix);
            }
            Some(_) => {}
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|net| {
            chosen
                .get(&net)
                .map(|p| (net, format!("{label}/{}/{}", p.service, p.region)))
        })
        .collect())
}

/// Parses a CIDR list: one prefix per line, blank lines and `#` comments ignored. A bad line is
/// an error naming its line number (1-based).
pub fn parse_cidr_list(text: &str, label: &str) -> std::result::Result<Vec<(IpNet, String)>, String> {
    let mut ranges = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let prefix: IpNet = content
            .parse()
            .or_else(|_| content.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("line {}: {content:?} is not a CIDR prefix", number + 1))?;
        ranges.push((prefix, label.to_owned()));
    }
    Ok(ranges)
}

/// One configured interface, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceModel {
    pub if_index: u32,
    /// The configured name, or empty.
    pub name: Label,
    pub role: InterfaceRole,
    pub kind: InterfaceKind,
    /// The configured provider, or empty.
    pub provider: Label,
    pub capacity_bps: Option<u64>,
    pub committed_bps: Option<u64>,
    /// The egress path label; empty for internal interfaces.
    pub path_label: Label,
}

/// One configured exporter, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterModel {
    pub address: IpAddr,
    /// The configured name, or empty.
    pub name: Label,
    /// The configured site, or empty.
    pub site: Label,
    pub sampling_default: Option<u64>,
    pub sampling_override: Option<u64>,
    /// Sorted by `if_index`.
    interfaces: Vec<InterfaceModel>,
}

impl ExporterModel {
    /// The configured interface with `if_index`.
    pub fn interface(&self, if_index: u32) -> Option<&InterfaceModel> {
        self.interfaces
            .binary_search_by_key(&if_index, |i| i.if_index)
            .ok()
            .and_then(|position| self.interfaces.get(position))
    }

    /// Whether any interface is configured (else flows are classified by address).
    pub fn has_interfaces(&self) -> bool {
        !self.interfaces.is_empty()
    }

    /// The configured interfaces, by `if_index`.
    pub fn interfaces(&self) -> &[InterfaceModel] {
        &self.interfaces
    }
}

/// One egress path: an external interface of an exporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressPath {
    /// `edge1 / et-0/0/1 (Transit A)`, as stored in `flows.egress_path`.
    pub label: String,
    pub exporter_address: IpAddr,
    /// The exporter's name, or empty.
    pub exporter_name: String,
    pub site: String,
    pub if_index: u32,
    /// The interface's name, or empty.
    pub if_name: String,
    pub provider: String,
    /// `transit`, `peering`, `cloud`, `wan`, or `none` when not configured.
    pub kind: &'static str,
    /// Capacity in bit/s, when configured.
    pub capacity_bps: Option<u64>,
    /// Committed (burstable billing) rate in bit/s, when configured.
    pub committed_bps: Option<u64>,
}

/// The compiled egress model: internal prefixes, cloud ranges, exporters and interfaces.
#[derive(Debug, Clone, Default)]
pub struct EgressModel {
    internal: PrefixTable<()>,
    clouds: PrefixTable<Label>,
    exporters: Vec<ExporterModel>,
    /// Exporter position by stored (IPv4-mapped) address.
    by_address: HashMap<Ipv6Addr, usize>,
}

impl EgressModel {
    /// Builds the model, reading the cloud range files. Fails on every problem [`problems`]
    /// reports.
    pub fn build(model: &ModelConfig, exporters: &[ExporterConfig]) -> Result<Self> {
        let problems = problems(model, exporters);
        if !problems.is_empty() {
            return Err(ModelError::Invalid { problems });
        }
        let mut clouds = Vec::new();
        for source in &model.cloud_ranges {
            clouds.extend(load_ranges(source)?);
        }
        Ok(Self::from_parts(model, exporters, clouds))
    }

    /// Builds the model with the cloud ranges given rather than read from files.
    pub fn from_parts(
        model: &ModelConfig,
        exporters: &[ExporterConfig],
        cloud_ranges: Vec<(IpNet, String)>,
    ) -> Self {
        let internal = PrefixTable::new(model.internal_prefixes.iter().map(|p| (*p, ())));
        let clouds = PrefixTable::new(
            cloud_ranges
                .into_iter()
                .map(|(prefix, label)| (prefix, Label::from(label))),
        );
        let exporters: Vec<ExporterModel> = exporters.iter().map(compile_exporter).collect();
        let mut by_address = HashMap::new();
        for (position, exporter) in exporters.iter().enumerate() {
            by_address.entry(to_v6(exporter.address)).or_insert(position);
        }
        Self {
            internal,
            clouds,
            exporters,
            by_address,
        }
    }

    /// Whether `address` (stored form) is inside the internal prefixes.
    pub fn is_internal(&self, address: Ipv6Addr) -> bool {
        self.internal.contains(address)
    }

    /// Whether internal prefixes are configured (without them, addresses classify nothing).
    pub fn has_internal_prefixes(&self) -> bool {
        !self.internal.is_empty()
    }

    /// The cloud label of `address` (stored form), longest prefix first.
    pub fn cloud(&self, address: Ipv6Addr) -> Option<Label> {
        self.clouds.lookup(address).copied()
    }

    /// The configured exporter sending from `address` (IPv4 and IPv4-mapped match alike).
    pub fn exporter(&self, address: IpAddr) -> Option<&ExporterModel> {
        self.by_address
            .get(&to_v6(address))
            .and_then(|&position| self.exporters.get(position))
    }

    /// Every configured exporter, in configuration order.
    pub fn exporters(&self) -> &[ExporterModel] {
        &self.exporters
    }

    /// Whether nothing is configured (no prefixes, ranges or exporters): classification has
    /// nothing to say.
    pub fn is_empty(&self) -> bool {
        self.internal.is_empty() && self.clouds.is_empty() && self.exporters.is_empty()
    }

    /// Every external interface of every exporter, in configuration order of exporters and
    /// `if_index` order within one.
    pub fn paths(&self) -> Vec<EgressPath> {
        self.exporters
            .iter()
            .flat_map(|exporter| {
                exporter
                    .interfaces
                    .iter()
                    .filter(|i| i.role == InterfaceRole::External)
                    .map(move |interface| EgressPath {
                        label: interface.path_label.into(),
                        exporter_address: exporter.address,
                        exporter_name: exporter.name.into(),
                        site: exporter.site.into(),
                        if_index: interface.if_index,
                        if_name: interface.name.into(),
                        provider: interface.provider.into(),
                        kind: interface.kind.as_str(),
                        capacity_bps: interface.capacity_bps,
                        committed_bps: interface.committed_bps,
                    })
            })
            .collect()
    }
}

fn compile_exporter(config: &ExporterConfig) -> ExporterModel {
    let exporter_label = config
        .name
        .clone()
        .unwrap_or_else(|| crate::schema::from_v6(to_v6(config.address)).to_string());
    let mut interfaces: Vec<InterfaceModel> = config
        .interfaces
        .iter()
        .map(|interface| {
            let path_label = if interface.role == Role::External {
                Label::from(path_label(&exporter_label, interface))
            } else {
                Label::EMPTY
            };
            InterfaceModel {
                if_index: interface.if_index,
                name: interface.name.as_deref().map(Label::new).unwrap_or_default(),
                role: interface.role.stored(),
                kind: match interface.role {
                    Role::External => interface.kind.map_or(InterfaceKind::None, Kind::stored),
                    Role::Internal => InterfaceKind::None,
                },
                provider: interface.provider.as_deref().map(Label::new).unwrap_or_default(),
                capacity_bps: interface.capacity_bps,
                committed_bps: interface.committed_bps,
                path_label,
            }
        })
        .collect();
    interfaces.sort_by_key(|i| i.if_index);
    interfaces.dedup_by_key(|i| i.if_index);
    ExporterModel {
        address: config.address,
        name: config.name.as_deref().map(Label::new).unwrap_or_default(),
        site: config.site.as_deref().map(Label::new).unwrap_or_default(),
        sampling_default: config.sampling_default,
        sampling_override: config.sampling_override,
        interfaces,
    }
}

/// `"{exporter} / {interface} ({provider})"`, see the module header.
pub fn path_label(exporter: &str, interface: &InterfaceConfig) -> String {
    let name = match &interface.name {
        Some(name) => name.clone(),
        None => format!("ifIndex {}", interface.if_index),
    };
    match interface.provider.as_deref().filter(|p| !p.is_empty()) {
        Some(provider) => format!("{exporter} / {name} ({provider})"),
        None => format!("{exporter} / {name}"),
    }
}

#[cfg(test)]
mod tests;
