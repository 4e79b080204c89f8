//! The storage contract: every ClickHouse table Egress writes, its row struct and its DDL.
//!
//! Rows are serialised by the `clickhouse` crate as RowBinary. The row structs are chosen so that
//! one struct fits both server generations Egress supports:
//! - addresses are 16 bytes on the wire, which is both `IPv6` (current servers) and
//!   `FixedString(16)` (ClickHouse 18.x); IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`);
//! - times are `DateTime` (seconds, UTC), a `u32` on the wire, which every version has;
//! - enumerations are `Enum8`, an `i8` on the wire.
//!
//! The DDL per server generation lives in [`crate::migrate`]; the column reference for users is
//! `docs/schema.md`, and the tests check that every column of every table is documented there.

use std::net::{IpAddr, Ipv6Addr};

use clickhouse::Row;

pub use crate::label::Label;
use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};

/// Name of the flow table.
pub const FLOWS_TABLE: &str = "flows";
/// Name of the per-exporter, per-minute accounting table.
pub const EXPORTER_STATS_TABLE: &str = "exporter_stats";
/// Name of the interface counter table (sFlow counter samples).
pub const INTERFACE_COUNTERS_TABLE: &str = "interface_counters";
/// Name of the SLA evaluation results table.
pub const SLA_RESULTS_TABLE: &str = "sla_results";
/// Name of the alert notification delivery log.
pub const ALERT_DELIVERIES_TABLE: &str = "alert_deliveries";

/// The export protocol a record came from. Stored as `Enum8` in `flows.flow_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum FlowType {
    /// Only in `exporter_stats`: datagrams whose protocol could not be recognised.
    Unknown = 0,
    Netflow5 = 1,
    Netflow9 = 2,
    Ipfix = 3,
    Sflow5 = 4,
}

impl FlowType {
    /// Every value, in `Enum8` order.
    pub const ALL: [FlowType; 5] = [
        Self::Unknown,
        Self::Netflow5,
        Self::Netflow9,
        Self::Ipfix,
        Self::Sflow5,
    ];

    /// The name stored in ClickHouse and printed by `egress decode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Netflow5 => "netflow5",
            Self::Netflow9 => "netflow9",
            Self::Ipfix => "ipfix",
            Self::Sflow5 => "sflow5",
        }
    }
}

/// Where a record's `sampling_rate` came from. Stored as `Enum8` in `flows.sampling_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum SamplingSource {
    /// No rate known; `sampling_rate` is 1 and volumes are as exported.
    Unknown = 0,
    /// NetFlow v5 header `sampling_interval` (mode bits masked).
    Header = 1,
    /// NetFlow v9 / IPFIX options data (sampler or selector tables).
    Options = 2,
    /// A sampling field inside the data record itself.
    Record = 3,
    /// sFlow's per-sample `sampling_rate`.
    Sflow = 4,
    /// The exporter's `sampling.default` from the configuration (the export said nothing).
    ConfigDefault = 5,
    /// The exporter's `sampling.override` from the configuration (wins over the export).
    ConfigOverride = 6,
}

impl SamplingSource {
    /// Every value, in `Enum8` order.
    pub const ALL: [SamplingSource; 7] = [
        Self::Unknown,
        Self::Header,
        Self::Options,
        Self::Record,
        Self::Sflow,
        Self::ConfigDefault,
        Self::ConfigOverride,
    ];

    /// The name stored in ClickHouse and printed by `egress decode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Header => "header",
            Self::Options => "options",
            Self::Record => "record",
            Self::Sflow => "sflow",
            Self::ConfigDefault => "config_default",
            Self::ConfigOverride => "config_override",
        }
    }
}

/// Flow direction as exported (NetFlow v9/IPFIX element 61, sFlow from the interface fields).
/// Stored as `Enum8` in `flows.direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum Direction {
    #[default]
    Unknown = 0,
    Ingress = 1,
    Egress = 2,
}

impl Direction {
    /// Every value, in `Enum8` order.
    pub const ALL: [Direction; 3] = [Self::Unknown, Self::Ingress, Self::Egress];

    /// The name stored in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// Where a flow goes relative to the network, from the egress model (classification at ingest).
/// Stored as `Enum8` in `flows.traffic_direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum TrafficDirection {
    /// Not classified (no model, or no address or interface to judge by).
    #[default]
    Unknown = 0,
    /// Leaves the network: egress. Out through an external interface of its exporter, or, where
    /// the exporter's interfaces are not configured, from an internal to a non-internal address.
    Outbound = 1,
    /// Enters the network: in through an external interface, or from a non-internal to an
    /// internal address.
    Inbound = 2,
    /// Between two internal addresses.
    Internal = 3,
    /// Between two non-internal addresses (passing through).
    Transit = 4,
}

impl TrafficDirection {
    /// Every value, in `Enum8` order.
    pub const ALL: [TrafficDirection; 5] = [
        Self::Unknown,
        Self::Outbound,
        Self::Inbound,
        Self::Internal,
        Self::Transit,
    ];

    /// The name stored in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
            Self::Internal => "internal",
            Self::Transit => "transit",
        }
    }
}

/// What an interface faces, from the egress model. Stored as `Enum8` in `flows.in_if_role` and
/// `flows.out_if_role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum InterfaceRole {
    /// Not configured.
    #[default]
    Unknown = 0,
    /// Towards the internal network.
    Internal = 1,
    /// Towards another network (transit, peering, cloud, WAN).
    External = 2,
}

impl InterfaceRole {
    /// Every value, in `Enum8` order.
    pub const ALL: [InterfaceRole; 3] = [Self::Unknown, Self::Internal, Self::External];

    /// The name stored in ClickHouse and used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Internal => "internal",
            Self::External => "external",
        }
    }
}

/// What kind of network an external interface connects to. Stored as `Enum8` in
/// `flows.in_if_kind` and `flows.out_if_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum InterfaceKind {
    /// Not an external interface, or not configured.
    #[default]
    None = 0,
    /// An IP transit provider.
    Transit = 1,
    /// A peering (private or at an exchange).
    Peering = 2,
    /// A direct connection to a cloud provider.
    Cloud = 3,
    /// A wide-area link to another site of one's own.
    Wan = 4,
}

impl InterfaceKind {
    /// Every value, in `Enum8` order.
    pub const ALL: [InterfaceKind; 5] = [Self::None, Self::Transit, Self::Peering, Self::Cloud, Self::Wan];

    /// The name stored in ClickHouse and used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Transit => "transit",
            Self::Peering => "peering",
            Self::Cloud => "cloud",
            Self::Wan => "wan",
        }
    }
}

/// Which exporter measurement a flow's `rtt_*` columns came from. Stored as `Enum8` in
/// `flows.rtt_source`.
///
/// The values are as the exporter measured them; the source says which definition applies:
/// nProbe exports half the round trip per side (`RTT/2`), Cisco AVC ART, NetScaler AppFlow and
/// sFlow `extended_tcp_info` a full round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum RttSource {
    /// The record carried no latency element; every `rtt_*` column is NULL.
    #[default]
    None = 0,
    /// nProbe's CLIENT/SERVER_NW_LATENCY_MS and APPL_LATENCY_MS (NetFlow v9 57595-57597, IPFIX
    /// PEN 35632 elements 123-125) or the older *_DELAY_SEC/USEC pairs (57554-57559).
    Nprobe = 1,
    /// Cisco AVC Application Response Time (IPFIX PEN 9): means of the client network,
    /// server network and server response time sums (9316, 9319, 9303) over their counts
    /// (IANA 278 connectionCountNew; 9292 server responses).
    CiscoArt = 2,
    /// NetScaler AppFlow round trip time (PEN 5951 element 128).
    Netscaler = 3,
    /// sFlow `extended_tcp_info` (flow record 0:2209) `rtt`.
    SflowTcpInfo = 4,
}

impl RttSource {
    /// Every value, in `Enum8` order.
    pub const ALL: [RttSource; 5] = [
        Self::None,
        Self::Nprobe,
        Self::CiscoArt,
        Self::Netscaler,
        Self::SflowTcpInfo,
    ];

    /// The name stored in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Nprobe => "nprobe",
            Self::CiscoArt => "cisco_art",
            Self::Netscaler => "netscaler",
            Self::SflowTcpInfo => "sflow_tcp_info",
        }
    }
}

/// The outcome of one SLA evaluation for one subject. Stored as `Enum8` in `sla_results.verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum Verdict {
    /// Within the SLA.
    Ok = 0,
    /// The SLA is breached.
    Breach = 1,
    /// Too few samples to judge; never read as `ok`.
    NoData = 2,
}

impl Verdict {
    /// Every value, in `Enum8` order.
    pub const ALL: [Verdict; 3] = [Self::Ok, Self::Breach, Self::NoData];

    /// The name stored in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Breach => "breach",
            Self::NoData => "no_data",
        }
    }
}

/// The outcome of one notification delivery attempt. Stored as `Enum8` in
/// `alert_deliveries.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize_repr, Deserialize_repr)]
#[repr(i8)]
pub enum DeliveryOutcome {
    /// The receiver accepted the notification.
    Delivered = 0,
    /// The attempt failed and will be retried.
    Retrying = 1,
    /// The attempt failed and will not be retried.
    Failed = 2,
}

impl DeliveryOutcome {
    /// Every value, in `Enum8` order.
    pub const ALL: [DeliveryOutcome; 3] = [Self::Delivered, Self::Retrying, Self::Failed];

    /// The name stored in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
        }
    }
}

/// Renders an enum's values as the body of a ClickHouse `Enum8(...)` type.
pub fn enum8_body<T: Copy>(values: &[T], name: impl Fn(T) -> &'static str, code: impl Fn(T) -> i8) -> String {
    values
        .iter()
        .map(|v| format!("'{}' = {}", name(*v), code(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Maps any address to the 16-byte form stored in ClickHouse (IPv4 becomes `::ffff:a.b.c.d`).
pub fn to_v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The inverse of [`to_v6`] for display: IPv4-mapped addresses print as IPv4.
pub fn from_v6(addr: Ipv6Addr) -> IpAddr {
    match addr.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(addr),
    }
}

/// One flow record, as stored in `flows`. Field order is column order.
///
/// `bytes` and `packets` are as exported (sampled); the volume on the wire is
/// `bytes * sampling_rate`. Unknown numeric fields are 0 (ClickHouse defaults), except
/// `sampling_rate`, which is 1 when unknown so that the product is always the exported volume,
/// and the latencies (`rtt_*`), which are `Nullable` so that unknown is never read as 0 µs.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct FlowRow {
    /// Collector clock when the datagram arrived, Unix seconds.
    pub time_received: u32,
    /// Flow start, Unix seconds (exporter clock), or `time_received` when not exported.
    pub time_flow_start: u32,
    /// Flow end, Unix seconds (exporter clock), or `time_received` when not exported.
    pub time_flow_end: u32,
    pub exporter_address: Ipv6Addr,
    /// NetFlow v9 source id, IPFIX observation domain id, sFlow sub-agent id; 0 for v5.
    pub observation_domain: u32,
    pub flow_type: FlowType,
    pub sampling_rate: u64,
    pub sampling_source: SamplingSource,
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub bytes: u64,
    pub packets: u64,
    pub in_if: u32,
    pub out_if: u32,
    pub src_as: u32,
    pub dst_as: u32,
    pub src_mask: u8,
    pub dst_mask: u8,
    pub next_hop: Ipv6Addr,
    pub tcp_flags: u8,
    pub tos: u8,
    pub vlan: u16,
    /// EtherType of the flow's network layer: 0x0800 IPv4, 0x86dd IPv6, 0 unknown.
    pub etype: u16,
    pub direction: Direction,
    /// Where the flow goes relative to the network (classification from the egress model).
    pub traffic_direction: TrafficDirection,
    /// `edge1 / et-0/0/1 (Transit A)` for outbound flows, empty otherwise.
    pub egress_path: Label,
    /// The exporter's name from the model; empty when the exporter is not configured.
    pub exporter_name: Label,
    /// The exporter's site from the model; empty when not configured.
    pub exporter_site: Label,
    pub in_if_name: Label,
    pub out_if_name: Label,
    pub in_if_role: InterfaceRole,
    pub out_if_role: InterfaceRole,
    pub in_if_kind: InterfaceKind,
    pub out_if_kind: InterfaceKind,
    pub in_if_provider: Label,
    pub out_if_provider: Label,
    /// 1 when `src_addr` is inside the model's internal prefixes, else 0.
    pub src_internal: u8,
    /// 1 when `dst_addr` is inside the model's internal prefixes, else 0.
    pub dst_internal: u8,
    /// Cloud label of `dst_addr` from the cloud range files (`aws/S3/eu-west-1`); empty if none.
    pub dst_cloud: Label,
    /// Network latency between the observation point and the client, microseconds, as the
    /// exporter measured it (see [`RttSource`]); `None` (NULL) when not exported, never 0.
    pub rtt_client_us: Option<u32>,
    /// Network latency between the observation point and the server, microseconds; `None`
    /// when not exported.
    pub rtt_server_us: Option<u32>,
    /// Application (server response) latency, microseconds; `None` when not exported.
    pub rtt_app_us: Option<u32>,
    /// Which exporter measurement the `rtt_*` fields came from; `None` when they are all NULL.
    pub rtt_source: RttSource,
}

impl FlowRow {
    /// Appends the row in ClickHouse's RowBinary format, columns in [`FlowRow`]'s field order
    /// (the order `<FlowRow as clickhouse::Row>::COLUMN_NAMES` lists): integers little-endian,
    /// enums as their `Int8` value, addresses as their 16 bytes, strings with a LEB128 length,
    /// `Nullable` with a leading null byte. The same bytes the `clickhouse` crate's serde
    /// serializer writes (a test in the collector's sink holds them equal), written without
    /// serde's per-field dispatch: the collector's insert path spent a fifth of its time there.
    pub fn write_row_binary(&self, out: &mut Vec<u8>) {
        fn string(out: &mut Vec<u8>, value: &str) {
            let mut len = value.len() as u64;
            loop {
                let byte = (len & 0x7f) as u8;
                len >>= 7;
                if len == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
            out.extend_from_slice(value.as_bytes());
        }
        fn nullable(out: &mut Vec<u8>, value: Option<u32>) {
            match value {
                Some(value) => {
                    out.push(0);
                    out.extend_from_slice(&value.to_le_bytes());
                }
                None => out.push(1),
            }
        }
        out.extend_from_slice(&self.time_received.to_le_bytes());
        out.extend_from_slice(&self.time_flow_start.to_le_bytes());
        out.extend_from_slice(&self.time_flow_end.to_le_bytes());
        out.extend_from_slice(&self.exporter_address.octets());
        out.extend_from_slice(&self.observation_domain.to_le_bytes());
        out.push(self.flow_type as i8 as u8);
        out.extend_from_slice(&self.sampling_rate.to_le_bytes());
        out.push(self.sampling_source as i8 as u8);
        out.extend_from_slice(&self.src_addr.octets());
        out.extend_from_slice(&self.dst_addr.octets());
        out.extend_from_slice(&self.src_port.to_le_bytes());
        out.extend_from_slice(&self.dst_port.to_le_bytes());
        out.push(self.proto);
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.packets.to_le_bytes());
        out.extend_from_slice(&self.in_if.to_le_bytes());
        out.extend_from_slice(&self.out_if.to_le_bytes());
        out.extend_from_slice(&self.src_as.to_le_bytes());
        out.extend_from_slice(&self.dst_as.to_le_bytes());
        out.push(self.src_mask);
        out.push(self.dst_mask);
        out.extend_from_slice(&self.next_hop.octets());
        out.push(self.tcp_flags);
        out.push(self.tos);
        out.extend_from_slice(&self.vlan.to_le_bytes());
        out.extend_from_slice(&self.etype.to_le_bytes());
        out.push(self.direction as i8 as u8);
        out.push(self.traffic_direction as i8 as u8);
        string(out, &self.egress_path);
        string(out, &self.exporter_name);
        string(out, &self.exporter_site);
        string(out, &self.in_if_name);
        string(out, &self.out_if_name);
        out.push(self.in_if_role as i8 as u8);
        out.push(self.out_if_role as i8 as u8);
        out.push(self.in_if_kind as i8 as u8);
        out.push(self.out_if_kind as i8 as u8);
        string(out, &self.in_if_provider);
        string(out, &self.out_if_provider);
        out.push(self.src_internal);
        out.push(self.dst_internal);
        string(out, &self.dst_cloud);
        nullable(out, self.rtt_client_us);
        nullable(out, self.rtt_server_us);
        nullable(out, self.rtt_app_us);
        out.push(self.rtt_source as i8 as u8);
    }

    /// An empty record for `exporter` received at `time_received`; decoders fill in the rest.
    pub fn new(exporter: IpAddr, time_received: u32, flow_type: FlowType) -> Self {
        Self {
            time_received,
            time_flow_start: time_received,
            time_flow_end: time_received,
            exporter_address: to_v6(exporter),
            observation_domain: 0,
            flow_type,
            sampling_rate: 1,
            sampling_source: SamplingSource::Unknown,
            src_addr: Ipv6Addr::UNSPECIFIED,
            dst_addr: Ipv6Addr::UNSPECIFIED,
            src_port: 0,
            dst_port: 0,
            proto: 0,
            bytes: 0,
            packets: 0,
            in_if: 0,
            out_if: 0,
            src_as: 0,
            dst_as: 0,
            src_mask: 0,
            dst_mask: 0,
            next_hop: Ipv6Addr::UNSPECIFIED,
            tcp_flags: 0,
            tos: 0,
            vlan: 0,
            etype: 0,
            direction: Direction::Unknown,
            traffic_direction: TrafficDirection::Unknown,
            egress_path: Label::EMPTY,
            exporter_name: Label::EMPTY,
            exporter_site: Label::EMPTY,
            in_if_name: Label::EMPTY,
            out_if_name: Label::EMPTY,
            in_if_role: InterfaceRole::Unknown,
            out_if_role: InterfaceRole::Unknown,
            in_if_kind: InterfaceKind::None,
            out_if_kind: InterfaceKind::None,
            in_if_provider: Label::EMPTY,
            out_if_provider: Label::EMPTY,
            src_internal: 0,
            dst_internal: 0,
            dst_cloud: Label::EMPTY,
            rtt_client_us: None,
            rtt_server_us: None,
            rtt_app_us: None,
            rtt_source: RttSource::None,
        }
    }
}

/// One interface counter sample (sFlow generic interface counters), as stored in
/// `interface_counters`. Counters are the device's running totals, not deltas.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct InterfaceCounterRow {
    pub time_received: u32,
    pub exporter_address: Ipv6Addr,
    /// sFlow agent address (may differ from the datagram's source address).
    pub agent_address: Ipv6Addr,
    pub sub_agent_id: u32,
    pub sequence_number: u32,
    pub if_index: u32,
    pub if_type: u32,
    /// Interface speed in bit/s.
    pub if_speed: u64,
    /// 0 unknown, 1 full duplex, 2 half duplex, 3 in, 4 out (sFlow `ifDirection`).
    pub if_direction: u32,
    /// Bit 0 admin up, bit 1 oper up (sFlow `ifStatus`).
    pub if_status: u32,
    pub in_octets: u64,
    pub in_ucast_pkts: u32,
    pub in_multicast_pkts: u32,
    pub in_broadcast_pkts: u32,
    pub in_discards: u32,
    pub in_errors: u32,
    pub in_unknown_protos: u32,
    pub out_octets: u64,
    pub out_ucast_pkts: u32,
    pub out_multicast_pkts: u32,
    pub out_broadcast_pkts: u32,
    pub out_discards: u32,
    pub out_errors: u32,
    pub promiscuous_mode: u32,
}

/// Per exporter, observation domain and minute: what the collector received and decoded, as
/// stored in `exporter_stats`. One collector may write several rows for the same minute (one per
/// flush); sum them.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct ExporterStatsRow {
    /// Start of the minute, Unix seconds.
    pub minute: u32,
    pub exporter_address: Ipv6Addr,
    pub observation_domain: u32,
    pub flow_type: FlowType,
    pub datagrams: u64,
    pub records: u64,
    /// Records the exporter's sequence numbers say were sent but never arrived.
    pub records_lost: u64,
    /// Decode errors in this minute, by kind (parallel to `decode_error_counts`).
    pub decode_error_kinds: Vec<String>,
    pub decode_error_counts: Vec<u64>,
    /// Templates known for this exporter and domain at the end of the minute.
    pub templates_known: u32,
}

/// One SLA evaluation result for one subject, as stored in `sla_results` (one row per SLA and
/// subject per evaluation).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct SlaResultRow {
    /// Evaluation time, Unix seconds.
    pub time: u32,
    /// SLA name.
    pub sla: String,
    /// SLA kind: `throughput`, `exfiltration`, `exporter_health`, `objective`, ...
    pub kind: String,
    /// Human subject, e.g. `edge1 / et-0/0/1 (Transit A)` or `10.1.2.3`.
    pub subject: String,
    /// Subject label names, parallel to `labels_values`.
    pub labels_keys: Vec<String>,
    pub labels_values: Vec<String>,
    /// The measured value (utilisation ratio, bytes, seconds silent, burn rate).
    pub value: f64,
    pub threshold: f64,
    pub verdict: Verdict,
    /// Sampled records behind the value.
    pub samples: u64,
    /// JSON: baseline, top destinations, and so on.
    pub details: String,
}

/// One notification delivery attempt, as stored in `alert_deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct AlertDeliveryRow {
    /// When the attempt finished, Unix seconds.
    pub time: u32,
    /// Receiver name from the configuration.
    pub receiver: String,
    /// Notifier kind: `webhook`, `alertmanager`, `slack`, `pagerduty`.
    pub kind: String,
    /// Alert fingerprint (Prometheus-compatible, 16 hex digits).
    pub fingerprint: String,
    pub alertname: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// HTTP status of the answer; 0 when there was no answer.
    pub http_status: u16,
    pub outcome: DeliveryOutcome,
    /// Why the attempt failed; empty when delivered.
    pub error: String,
}
