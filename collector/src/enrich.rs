//! Enrich: decoded records in, records with the configuration's knowledge applied out.
//!
//! Runs in each receive worker on the records of one datagram, before batching; no I/O, no
//! locks (the [`EgressModel`] is built once at start-up and shared read-only).
//!
//! - **Sampling**: `sampling_override` replaces whatever the export said (`sampling_source =
//!   config_override`); `sampling_default` fills in where the export said nothing
//!   (`sampling_source` was `unknown`; it becomes `config_default`).
//! - **Names**: the exporter's name and site, and the name, role, kind and provider of the input
//!   and output interfaces, from the model (empty where it says nothing).
//! - **Addresses**: `src_internal` / `dst_internal` (inside the internal prefixes) and
//!   `dst_cloud` (the longest cloud range containing the destination).
//! - **Traffic direction** ([`classify`]), and the egress path of outbound flows.
//!
//! Cost per record: three binary searches over small sorted arrays (two internal-prefix
//! lookups, one cloud-range lookup), two over the exporter's interfaces, and a 16-byte copy of
//! each name (names are interned [`egress_query::label::Label`]s: no allocation).

use std::net::{IpAddr, Ipv6Addr};

use egress_query::model::{EgressModel, ExporterModel, InterfaceModel};
use egress_query::schema::{InterfaceRole, TrafficDirection};

use crate::normalise::{FlowRecord, SamplingSource};

/// The enrichment tables, built once from the configuration and shared by every worker.
#[derive(Debug, Default, Clone)]
pub struct Enricher {
    model: EgressModel,
}

impl Enricher {
    /// An enricher applying `model`.
    pub fn new(model: EgressModel) -> Self {
        Self { model }
    }

    /// The model applied.
    pub fn model(&self) -> &EgressModel {
        &self.model
    }

    /// Applies the model to `records`, all from one datagram of `exporter`.
    pub fn apply(&self, exporter: IpAddr, records: &mut [FlowRecord]) {
        if self.model.is_empty() || records.is_empty() {
            return;
        }
        let exporter = self.model.exporter(exporter);
        for record in records {
            if let Some(exporter) = exporter {
                apply_sampling(exporter, record);
                record.exporter_name = exporter.name;
                record.exporter_site = exporter.site;
            }
            let input = exporter.and_then(|e| e.interface(record.in_if));
            let output = exporter.and_then(|e| e.interface(record.out_if));
            if let Some(input) = input {
                record.in_if_name = input.name;
                record.in_if_role = input.role;
                record.in_if_kind = input.kind;
                record.in_if_provider = input.provider;
            }
            if let Some(output) = output {
                record.out_if_name = output.name;
                record.out_if_role = output.role;
                record.out_if_kind = output.kind;
                record.out_if_provider = output.provider;
            }
            let src_internal = self.model.is_internal(record.src_addr);
            let dst_internal = self.model.is_internal(record.dst_addr);
            record.src_internal = u8::from(src_internal);
            record.dst_internal = u8::from(dst_internal);
            if let Some(cloud) = self.model.cloud(record.dst_addr) {
                record.dst_cloud = cloud;
            }
            let interfaces = Interfaces {
                configured: exporter.is_some_and(ExporterModel::has_interfaces),
                input,
                output,
            };
            let addresses = Addresses {
                have_prefixes: self.model.has_internal_prefixes(),
                known: record.src_addr != Ipv6Addr::UNSPECIFIED || record.dst_addr != Ipv6Addr::UNSPECIFIED,
                src_internal,
                dst_internal,
            };
            record.traffic_direction = classify(&interfaces, &addresses);
            if record.traffic_direction == TrafficDirection::Outbound {
                if let Some(output) = output.filter(|o| o.role == InterfaceRole::External) {
                    record.egress_path = output.path_label;
                }
            }
        }
    }
}

/// `sampling_override` wins; `sampling_default` fills an unknown rate.
fn apply_sampling(exporter: &ExporterModel, record: &mut FlowRecord) {
    if let Some(rate) = exporter.sampling_override {
        record.sampling_rate = rate;
        record.sampling_source = SamplingSource::ConfigOverride;
    } else if let (Some(rate), SamplingSource::Unknown) = (exporter.sampling_default, record.sampling_source)
    {
        record.sampling_rate = rate;
        record.sampling_source = SamplingSource::ConfigDefault;
    }
}

/// What the model knows of a record's interfaces.
#[derive(Debug, Clone, Copy)]
pub struct Interfaces<'a> {
    /// The exporter has interfaces configured.
    pub configured: bool,
    /// The configured input interface (`in_if`), if any.
    pub input: Option<&'a InterfaceModel>,
    /// The configured output interface (`out_if`), if any.
    pub output: Option<&'a InterfaceModel>,
}

/// What the model knows of a record's addresses.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// Internal prefixes are configured (without them, addresses say nothing).
    pub have_prefixes: bool,
    /// At least one of the addresses is known (not `::`).
    pub known: bool,
    pub src_internal: bool,
    pub dst_internal: bool,
}

/// The traffic direction of one record.
///
/// Interfaces decide first, where the exporter's are configured: out through an external
/// interface is `outbound` (egress), in through one is `inbound` (a flow between two external
/// interfaces counts as outbound: it leaves the network there). A flow between two configured
/// internal interfaces is `internal`, whatever its addresses: it does not leave the network at
/// this exporter, and counting it by address would count egress twice where core routers export
/// too. Otherwise (exporter or interface not configured, e.g. `out_if` 0) the addresses decide:
/// internal to non-internal is `outbound`, the reverse `inbound`, both internal `internal`,
/// neither `transit`. Without internal prefixes or addresses, the direction is `unknown`.
pub fn classify(interfaces: &Interfaces<'_>, addresses: &Addresses) -> TrafficDirection {
    let role = |interface: Option<&InterfaceModel>| interface.map_or(InterfaceRole::Unknown, |i| i.role);
    if interfaces.configured {
        match (role(interfaces.input), role(interfaces.output)) {
            (_, InterfaceRole::External) => return TrafficDirection::Outbound,
            (InterfaceRole::External, _) => return TrafficDirection::Inbound,
            (InterfaceRole::Internal, InterfaceRole::Internal) => return TrafficDirection::Internal,
            _ => {}
        }
    }
    if !addresses.have_prefixes || !addresses.known {
        return TrafficDirection::Unknown;
    }
    match (addresses.src_internal, addresses.dst_internal) {
        (true, false) => TrafficDirection::Outbound,
        (false, true) => TrafficDirection::Inbound,
        (true, true) => TrafficDirection::Internal,
        (false, false) => TrafficDirection::Transit,
    }
}

#[cfg(test)]
mod tests;
