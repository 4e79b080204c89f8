//! Simulate: virtual edge routers that export NetFlow v5, NetFlow v9, IPFIX or sFlow v5.
//!
//! Not a pipeline stage but a traffic source for `egress simulate`, `egress run`, the
//! integration tests and the benchmarks. In: a [`SimulateConfig`]. Out: UDP datagrams to
//! `config.target`, one socket per virtual exporter (exporter `i` sends from `127.0.0.(10+i)`
//! by default), and a [`SimulateReport`] of exactly what was sent, to compare with what the
//! collector stored.
//!
//! Layout: [`fleet`] (routers, interfaces, the traffic model) → [`encode`] (pure datagram
//! builders) → [`VirtualExporter`] (sans-I/O: which datagram comes next: templates, counters,
//! data) → [`run`] (sockets and pacing).
//!
//! Pacing is a token bucket per exporter: every [`TICK`] the records due since the start
//! (`rate * elapsed`, or its integral over a [`scenario::Diurnal`] shape) are sent in full
//! datagrams; a partial datagram goes out when records have
//! waited [`FLUSH_AFTER`], and at the end of the run. A run with a `duration` therefore sends
//! exactly `floor(rate * duration)` generated records (plus scenario records), unless the host
//! cannot keep up.
//!
//! Scenarios ([`scenario`]) are timed changes on top of the background traffic: a daily shape
//! of the record rate and scenario flows ([`FlowSpec`]) that start and stop at given times.
//!
//! Shutdown: `run` takes a [`CancellationToken`] (tokio-util's, always available, no feature
//! needed). On cancellation, or when `duration` has elapsed, every exporter sends what is due,
//! stops, and its counts go into the report.

pub mod encode;
pub mod fleet;
pub mod scenario;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::time::{Instant, MissedTickBehavior};
pub use tokio_util::sync::CancellationToken;

use crate::normalise::{Direction, FlowType};
use encode::{DatagramSummary, ExportClock, ExportEncoder};
use fleet::{RecordShape, Router, SimulatedFlow, TrafficGenerator};

/// How often each exporter wakes up to send what is due.
pub const TICK: Duration = Duration::from_millis(2);
/// A partial datagram is sent once its oldest record has waited this long (low rates).
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// At most this many datagrams per exporter and tick, so a late exporter cannot starve others.
const MAX_DATAGRAMS_PER_TICK: usize = 512;
/// The first exporter's address when `bind_base` is not set.
pub const DEFAULT_BIND_BASE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));
/// The socket send buffer asked for (the kernel may grant less).
const SEND_BUFFER_BYTES: usize = 4 << 20;

/// Errors of a simulation run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulateError {
    /// Every problem of the configuration, each naming its key.
    #[error("invalid simulate configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("cannot bind exporter {name} to {address}: {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("exporter task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T> = std::result::Result<T, SimulateError>;

/// The export protocol of the virtual fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Netflow5,
    Netflow9,
    Ipfix,
    Sflow5,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Self::Netflow5, Self::Netflow9, Self::Ipfix, Self::Sflow5];

    /// The name accepted by [`FromStr`] and printed by [`fmt::Display`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Netflow5 => "netflow5",
            Self::Netflow9 => "netflow9",
            Self::Ipfix => "ipfix",
            Self::Sflow5 => "sflow5",
        }
    }

    /// The `flow_type` the collector stores for this protocol.
    pub fn flow_type(self) -> FlowType {
        match self {
            Self::Netflow5 => FlowType::Netflow5,
            Self::Netflow9 => FlowType::Netflow9,
            Self::Ipfix => FlowType::Ipfix,
            Self::Sflow5 => FlowType::Sflow5,
        }
    }

    /// The protocol's usual collector port: 2055, 4739 (IANA IPFIX) or 6343 (IANA sFlow).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Netflow5 | Self::Netflow9 => 2055,
            Self::Ipfix => 4739,
            Self::Sflow5 => 6343,
        }
    }

    /// 1-in-1000 for sFlow (a typical switch setting), 1-in-100 for the flow protocols.
    pub fn default_sampling_rate(self) -> u32 {
        match self {
            Self::Sflow5 => 1000,
            _ => 100,
        }
    }

    /// Share of IPv6 traffic by default: none for NetFlow v5 (IPv4 only), a quarter otherwise.
    pub fn default_ipv6_share(self) -> f64 {
        match self {
            Self::Netflow5 => 0.0,
            _ => 0.25,
        }
    }

    fn record_shape(self) -> RecordShape {
        match self {
            Self::Sflow5 => RecordShape::PacketSamples,
            _ => RecordShape::Flows,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    /// Accepts `netflow5|netflow9|ipfix|sflow5` and the short forms `v5`, `v9`, `v10`, `sflow`.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "netflow5" | "netflow-v5" | "nf5" | "v5" => Ok(Self::Netflow5),
            "netflow9" | "netflow-v9" | "nf9" | "v9" => Ok(Self::Netflow9),
            "ipfix" | "v10" => Ok(Self::Ipfix),
            "sflow5" | "sflow" | "sflow-v5" => Ok(Self::Sflow5),
            other => Err(format!(
                "unknown protocol {other:?}: expected netflow5, netflow9, ipfix or sflow5"
            )),
        }
    }
}

/// A scenario flow on top of the background traffic, e.g. "host X exfiltrates to Y at rate R".
/// Exported once a second by exporter `exporter` as one flow record (sFlow: as many packet
/// samples as the rate and the sampling rate give), between `start_after` and `stop_after`.
/// Its direction follows the destination: to an internal address (10.0.0.0/8, fd00::/8) it
/// enters on the transit, otherwise it leaves on it; the transit is `transit_if_index`, or the
/// router's first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// 0-based index of the exporter that sees the flow.
    pub exporter: u32,
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// Volume on the wire, before sampling, in bytes per second.
    pub bytes_per_second: u64,
    /// Size of its IP packets on the wire, 46 to 1500 bytes.
    #[serde(default = "FlowSpec::default_packet_size")]
    pub packet_size: u16,
    /// Seconds after the start of the run when the flow starts (default 0).
    #[serde(default, with = "seconds")]
    pub start_after: Duration,
    /// Seconds after the start of the run when the flow stops; absent: never.
    #[serde(default, with = "optional_seconds")]
    pub stop_after: Option<Duration>,
    /// ifIndex of the external interface the flow crosses; absent: the router's first transit.
    #[serde(default)]
    pub transit_if_index: Option<u32>,
}

impl FlowSpec {
    fn default_packet_size() -> u16 {
        1400
    }
}

/// What to simulate. Defaults in [`Default`]; [`SimulateConfig::validate`] reports every
/// problem at once.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateConfig {
    /// Where the datagrams go (the collector's listener).
    pub target: SocketAddr,
    pub protocol: Protocol,
    /// Generated flow records (sFlow: flow samples) per second, over the whole fleet.
    pub records_per_second: u64,
    /// Number of virtual routers (`edge1` ... `edgeN`).
    pub exporters: u32,
    /// How long to run, in seconds; absent: until shutdown.
    #[serde(with = "optional_seconds")]
    pub duration: Option<Duration>,
    /// 1-in-N packet sampling announced by every exporter (v5 header, v9/IPFIX options data,
    /// sFlow samples); absent: [`Protocol::default_sampling_rate`].
    pub sampling_rate: Option<u32>,
    /// Address of the first exporter; exporter `i` sends from this address plus `i`. Absent:
    /// 127.0.0.10 (all of 127.0.0.0/8 is loopback on Linux).
    pub bind_base: Option<IpAddr>,
    /// NetFlow v9/IPFIX: templates and sampler options are sent again after this many data
    /// datagrams (0: only by time).
    pub template_refresh_datagrams: u32,
    /// NetFlow v9/IPFIX: templates and sampler options are sent again after this long.
    #[serde(with = "seconds")]
    pub template_refresh_interval: Duration,
    /// sFlow: interface counter samples are sent this often (and at the start).
    #[serde(with = "seconds")]
    pub counter_interval: Duration,
    /// Share of IPv6 flows, 0 to 1; absent: [`Protocol::default_ipv6_share`].
    pub ipv6_share: Option<f64>,
    /// Seed of the traffic model: the same seed gives the same flows.
    pub seed: u64,
    /// Scenario flows on top of the background traffic.
    pub extra_flows: Vec<FlowSpec>,
    /// A daily shape of `records_per_second` (then the peak rate); absent: a constant rate.
    pub diurnal: Option<scenario::Diurnal>,
}

impl Default for SimulateConfig {
    fn default() -> Self {
        Self {
            target: SocketAddr::from(([127, 0, 0, 1], 2055)),
            protocol: Protocol::Netflow9,
            records_per_second: 1_000,
            exporters: 1,
            duration: None,
            sampling_rate: None,
            bind_base: None,
            template_refresh_datagrams: 100,
            template_refresh_interval: Duration::from_secs(10),
            counter_interval: Duration::from_secs(10),
            ipv6_share: None,
            seed: 1,
            extra_flows: Vec::new(),
            diurnal: None,
        }
    }
}

impl SimulateConfig {
    /// The defaults, sending `protocol` to `target`.
    pub fn new(target: SocketAddr, protocol: Protocol) -> Self {
        Self {
            target,
            protocol,
            ..Self::default()
        }
    }

    pub fn effective_sampling_rate(&self) -> u32 {
        self.sampling_rate
            .unwrap_or_else(|| self.protocol.default_sampling_rate())
    }

    pub fn effective_ipv6_share(&self) -> f64 {
        self.ipv6_share
            .unwrap_or_else(|| self.protocol.default_ipv6_share())
    }

    pub fn first_exporter_address(&self) -> IpAddr {
        self.bind_base.unwrap_or(DEFAULT_BIND_BASE)
    }

    /// The virtual routers this configuration runs.
    pub fn routers(&self) -> Vec<Router> {
        fleet::fleet(self.exporters, self.first_exporter_address())
    }

    /// Every problem with the configuration, each naming its key.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.records_per_second == 0 && self.extra_flows.is_empty() {
            problems.push("records_per_second: must be above 0 (or give extra_flows)".to_string());
        }
        if self.exporters == 0 || self.exporters > 4096 {
            problems.push(format!("exporters: {} is not between 1 and 4096", self.exporters));
        }
        let rate = self.effective_sampling_rate();
        if rate == 0 {
            problems.push("sampling_rate: must be at least 1".to_string());
        }
        if self.protocol == Protocol::Netflow5 && rate > 0x3fff {
            problems.push(format!(
                "sampling_rate: {rate} does not fit NetFlow v5's 14 bits (max 16383)"
            ));
        }
        let base = self.first_exporter_address();
        if base.is_ipv4() != self.target.is_ipv4() {
            problems.push(format!(
                "bind_base: {base} and target {} are of different address families",
                self.target
            ));
        }
        if let IpAddr::V4(v4) = base {
            let last = u64::from(u32::from(v4)) + u64::from(self.exporters.saturating_sub(1));
            let octets_left = 255 - u64::from(v4.octets()[3]);
            if last > u64::from(u32::MAX)
                || (base == DEFAULT_BIND_BASE && u64::from(self.exporters) > octets_left)
            {
                problems.push(format!(
                    "exporters: {} addresses from {base} do not fit",
                    self.exporters
                ));
            }
        }
        let share = self.effective_ipv6_share();
        if !(0.0..=1.0).contains(&share) {
            problems.push(format!("ipv6_share: {share} is not between 0 and 1"));
        }
        if self.protocol == Protocol::Netflow5 && share > 0.0 {
            problems.push("ipv6_share: NetFlow v5 carries IPv4 only".to_string());
        }
        if self.template_refresh_interval.is_zero() {
            problems.push("template_refresh_interval: must be above 0".to_string());
        }
        if self.counter_interval.is_zero() {
            problems.push("counter_interval: must be above 0".to_string());
        }
        if let Some(diurnal) = &self.diurnal {
            problems.extend(diurnal.problems("diurnal"));
        }
        let routers = if self.exporters <= 4096 {
            self.routers()
        } else {
            Vec::new()
        };
        for (i, spec) in self.extra_flows.iter().enumerate() {
            if let (Some(if_index), Some(router)) =
                (spec.transit_if_index, routers.get(spec.exporter as usize))
            {
                if !router.external_interfaces().any(|i| i.if_index == if_index) {
                    problems.push(format!(
                        "extra_flows[{i}].transit_if_index: {} has no external interface {if_index}",
                        router.name
                    ));
                }
            }
            if spec.stop_after.is_some_and(|stop| stop <= spec.start_after) {
                problems.push(format!("extra_flows[{i}].stop_after: must be after start_after"));
            }
            if spec.exporter >= self.exporters {
                problems.push(format!(
                    "extra_flows[{i}].exporter: {} is not below {}",
                    spec.exporter, self.exporters
                ));
            }
            if spec.src_addr.is_ipv4() != spec.dst_addr.is_ipv4() {
                problems.push(format!(
                    "extra_flows[{i}]: source and destination of different address families"
                ));
            }
            if self.protocol == Protocol::Netflow5 && !(spec.src_addr.is_ipv4() && spec.dst_addr.is_ipv4()) {
                problems.push(format!("extra_flows[{i}]: NetFlow v5 carries IPv4 only"));
            }
            if !(46..=1500).contains(&spec.packet_size) {
                problems.push(format!(
                    "extra_flows[{i}].packet_size: {} is not 46 to 1500",
                    spec.packet_size
                ));
            }
            if spec.bytes_per_second == 0 {
                problems.push(format!("extra_flows[{i}].bytes_per_second: must be above 0"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SimulateError::Config(problems))
        }
    }
}

/// What one virtual exporter sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExporterReport {
    pub name: String,
    pub exporter_address: IpAddr,
    /// NetFlow v9 source id, IPFIX observation domain, sFlow sub-agent id (0 for v5).
    pub observation_domain: u32,
    pub sampling_rate: u32,
    /// Datagrams sent, of every kind.
    pub datagrams: u64,
    /// Of which template or counter datagrams.
    pub refresh_datagrams: u64,
    /// Flow records (sFlow: flow samples) sent, scenario records included.
    pub flow_records: u64,
    /// Of which from `extra_flows`.
    pub scenario_records: u64,
    /// Sum of the records' byte counts as exported (sampled; sFlow: frame lengths).
    pub bytes: u64,
    /// Sum of the records' packet counts as exported (sFlow: one per sample).
    pub packets: u64,
    pub template_records: u64,
    pub options_records: u64,
    pub counter_samples: u64,
    /// Datagrams the socket refused (not counted above; their sequence numbers were used, so
    /// the collector sees them as lost).
    pub send_errors: u64,
}

impl ExporterReport {
    fn new(router: &Router, protocol: Protocol, sampling_rate: u32) -> Self {
        Self {
            name: router.name.clone(),
            exporter_address: router.exporter_address,
            observation_domain: observation_domain(protocol),
            sampling_rate,
            datagrams: 0,
            refresh_datagrams: 0,
            flow_records: 0,
            scenario_records: 0,
            bytes: 0,
            packets: 0,
            template_records: 0,
            options_records: 0,
            counter_samples: 0,
            send_errors: 0,
        }
    }

    /// Counts one datagram that was sent.
    pub fn add(&mut self, datagram: &ExportDatagram) {
        let s = &datagram.summary;
        self.datagrams += 1;
        self.refresh_datagrams += u64::from(datagram.is_refresh);
        self.flow_records += s.flow_records;
        self.scenario_records += datagram.scenario_records;
        self.bytes += s.bytes;
        self.packets += s.packets;
        self.template_records += s.template_records;
        self.options_records += s.options_records;
        self.counter_samples += s.counter_samples;
    }
}

/// The observation domain every virtual exporter uses for `protocol`.
pub fn observation_domain(protocol: Protocol) -> u32 {
    match protocol {
        Protocol::Netflow5 => 0,
        Protocol::Netflow9 => encode::netflow::OBSERVATION_DOMAIN_V9,
        Protocol::Ipfix => encode::netflow::OBSERVATION_DOMAIN_IPFIX,
        Protocol::Sflow5 => encode::sflow::SUB_AGENT_ID,
    }
}

/// What a run sent, per exporter and in total.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SimulateReport {
    pub protocol: Protocol,
    pub target: SocketAddr,
    /// Wall time of the run.
    #[serde(with = "seconds")]
    pub elapsed: Duration,
    pub exporters: Vec<ExporterReport>,
}

impl SimulateReport {
    fn total(&self, field: impl Fn(&ExporterReport) -> u64) -> u64 {
        self.exporters.iter().map(field).sum()
    }

    pub fn datagrams(&self) -> u64 {
        self.total(|e| e.datagrams)
    }

    pub fn flow_records(&self) -> u64 {
        self.total(|e| e.flow_records)
    }

    pub fn bytes(&self) -> u64 {
        self.total(|e| e.bytes)
    }

    pub fn packets(&self) -> u64 {
        self.total(|e| e.packets)
    }

    pub fn send_errors(&self) -> u64 {
        self.total(|e| e.send_errors)
    }

    /// Flow records sent per second of the run.
    pub fn records_per_second(&self) -> f64 {
        self.flow_records() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One datagram a [`VirtualExporter`] produced, with what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportDatagram {
    pub summary: DatagramSummary,
    /// Templates/options (v9, IPFIX) or counter samples (sFlow).
    pub is_refresh: bool,
    /// Records generated by the traffic model (they count against the rate).
    pub generated_records: u64,
    /// Records from `extra_flows`.
    pub scenario_records: u64,
}

/// Running state of one [`FlowSpec`].
#[derive(Debug)]
struct ScenarioFlow {
    spec: FlowSpec,
    /// Wire bytes not yet exported (less than one sampled unit).
    carry: u128,
    /// Milliseconds since the start up to which the flow was exported.
    exported_until_ms: u64,
}

/// One virtual exporter without I/O: decides and encodes the next datagram. [`run`] drives it
/// with the clock and the socket; tests drive it directly.
#[derive(Debug)]
pub struct VirtualExporter {
    protocol: Protocol,
    sampling_rate: u32,
    generator: TrafficGenerator,
    encoder: ExportEncoder,
    template_refresh_datagrams: u32,
    refresh_interval_ms: u64,
    /// Data datagrams since the last refresh, and when it was (None: never).
    datagrams_since_refresh: u32,
    last_refresh_unix_ms: Option<u64>,
    /// Generated records waiting for a datagram (generated ahead, never dropped).
    pending: Vec<SimulatedFlow>,
    scenario: Vec<ScenarioFlow>,
    scenario_pending: Vec<SimulatedFlow>,
    /// Scratch: the records offered to the encoder.
    batch: Vec<SimulatedFlow>,
}

impl VirtualExporter {
    /// The exporter for `router` as `config` describes it (its scenario flows included).
    pub fn new(router: Router, config: &SimulateConfig) -> Self {
        let sampling_rate = config.effective_sampling_rate();
        let encoder = ExportEncoder::new(config.protocol, &router, sampling_rate);
        let scenario = config
            .extra_flows
            .iter()
            .filter(|spec| spec.exporter == router.index)
            .map(|spec| ScenarioFlow {
                spec: spec.clone(),
                carry: 0,
                exported_until_ms: 0,
            })
            .collect();
        let refresh_interval = match config.protocol {
            Protocol::Sflow5 => config.counter_interval,
            _ => config.template_refresh_interval,
        };
        let generator = TrafficGenerator::new(
            router,
            config.seed,
            config.protocol.record_shape(),
            config.effective_ipv6_share(),
        );
        Self {
            protocol: config.protocol,
            sampling_rate,
            generator,
            encoder,
            template_refresh_datagrams: config.template_refresh_datagrams,
            refresh_interval_ms: refresh_interval.as_millis() as u64,
            datagrams_since_refresh: 0,
            last_refresh_unix_ms: None,
            pending: Vec::new(),
            scenario,
            scenario_pending: Vec::new(),
            batch: Vec::new(),
        }
    }

    pub fn router(&self) -> &Router {
        self.generator.router()
    }

    /// The most records a data datagram can hold.
    pub fn max_records_per_datagram(&self) -> usize {
        self.encoder.max_records_per_datagram()
    }

    /// Whether the next datagram must be templates (v9, IPFIX) or counters (sFlow).
    pub fn refresh_due(&self, clock: ExportClock) -> bool {
        if self.protocol == Protocol::Netflow5 {
            return false;
        }
        let Some(last) = self.last_refresh_unix_ms else {
            return true;
        };
        let by_count = self.protocol != Protocol::Sflow5
            && self.template_refresh_datagrams > 0
            && self.datagrams_since_refresh >= self.template_refresh_datagrams;
        by_count || clock.unix_ms.saturating_sub(last) >= self.refresh_interval_ms
    }

    /// Whether scenario records are waiting.
    pub fn scenario_pending(&self) -> bool {
        !self.scenario_pending.is_empty()
    }

    /// Exports the scenario flows for every whole second up to `elapsed_ms` since the start.
    pub fn poll_scenario(&mut self, elapsed_ms: u64) {
        let due_until = elapsed_ms / 1000 * 1000;
        let rate = u128::from(self.sampling_rate.max(1));
        let router = self.generator.router().clone();
        for flow in &mut self.scenario {
            if due_until <= flow.exported_until_ms {
                continue;
            }
            // The part of [exported_until, due_until) inside [start_after, stop_after).
            let start_ms = flow.spec.start_after.as_millis() as u64;
            let stop_ms = flow.spec.stop_after.map_or(u64::MAX, |d| d.as_millis() as u64);
            let window_ms = due_until
                .min(stop_ms)
                .saturating_sub(flow.exported_until_ms.max(start_ms));
            flow.exported_until_ms = due_until;
            if window_ms == 0 {
                continue;
            }
            flow.carry += u128::from(flow.spec.bytes_per_second) * u128::from(window_ms) / 1000;
            let packet = u128::from(flow.spec.packet_size);
            let template = scenario_record(&router, &flow.spec, window_ms);
            match self.protocol.record_shape() {
                RecordShape::Flows => {
                    let sampled_bytes = flow.carry / rate;
                    if sampled_bytes == 0 {
                        continue;
                    }
                    flow.carry -= sampled_bytes * rate;
                    let packets = sampled_bytes.div_ceil(packet);
                    self.scenario_pending.push(SimulatedFlow {
                        bytes: sampled_bytes.min(u128::from(u32::MAX)) as u64,
                        packets: packets as u64,
                        ..template
                    });
                }
                RecordShape::PacketSamples => {
                    let samples = flow.carry / (rate * packet);
                    flow.carry -= samples * rate * packet;
                    let frame = u64::from(flow.spec.packet_size) + 18;
                    for _ in 0..samples.min(100_000) {
                        self.scenario_pending.push(SimulatedFlow {
                            bytes: frame,
                            packets: 1,
                            ..template.clone()
                        });
                    }
                }
            }
        }
    }

    /// Encodes the next datagram into `out`: the refresh datagram when due, otherwise waiting
    /// scenario records and then up to `max_generated` generated records. `None` when there is
    /// nothing to send.
    pub fn next_datagram(
        &mut self,
        clock: ExportClock,
        max_generated: usize,
        out: &mut Vec<u8>,
    ) -> Option<ExportDatagram> {
        if self.refresh_due(clock) {
            if let Some(summary) = self.encoder.encode_refresh(clock, out) {
                self.datagrams_since_refresh = 0;
                self.last_refresh_unix_ms = Some(clock.unix_ms);
                return Some(ExportDatagram {
                    summary,
                    is_refresh: true,
                    generated_records: 0,
                    scenario_records: 0,
                });
            }
        }
        let capacity = self.encoder.max_records_per_datagram();
        let scenario = self.scenario_pending.len().min(capacity);
        let generated = max_generated.min(capacity - scenario);
        if scenario + generated == 0 {
            return None;
        }
        while self.pending.len() < generated {
            let flow = self.generator.next_flow();
            self.pending.push(flow);
        }
        self.batch.clear();
        self.batch.extend_from_slice(&self.scenario_pending[..scenario]);
        self.batch.extend_from_slice(&self.pending[..generated]);
        let summary = self.encoder.encode_flows(clock, &self.batch, out);
        let scenario_taken = summary.consumed.min(scenario);
        let generated_taken = summary.consumed - scenario_taken;
        self.scenario_pending.drain(..scenario_taken);
        self.pending.drain(..generated_taken);
        self.datagrams_since_refresh = self.datagrams_since_refresh.saturating_add(1);
        Some(ExportDatagram {
            summary,
            is_refresh: false,
            generated_records: generated_taken as u64,
            scenario_records: scenario_taken as u64,
        })
    }
}

/// The record of a scenario flow for one export window, volumes left to the caller.
fn scenario_record(router: &Router, spec: &FlowSpec, window_ms: u64) -> SimulatedFlow {
    let internal_destination = match spec.dst_addr {
        IpAddr::V4(a) => a.octets()[0] == 10,
        IpAddr::V6(a) => a.octets()[0] == 0xfd,
    };
    let transit = router
        .external_interfaces()
        .find(|i| spec.transit_if_index.is_none_or(|wanted| i.if_index == wanted))
        .map_or(0, |i| i.if_index);
    let internal = router.internal_interfaces().next().map_or(0, |i| i.if_index);
    let (in_if, out_if, direction) = if internal_destination {
        (transit, internal, Direction::Ingress)
    } else {
        (internal, transit, Direction::Egress)
    };
    let unspecified = if spec.dst_addr.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(0.into())
    };
    SimulatedFlow {
        src_addr: spec.src_addr,
        dst_addr: spec.dst_addr,
        src_port: spec.src_port,
        dst_port: spec.dst_port,
        proto: spec.proto,
        tos: 0,
        tcp_flags: if spec.proto == 6 {
            fleet::tcp_flags::ACK | fleet::tcp_flags::PSH
        } else {
            0
        },
        bytes: 0,
        packets: 0,
        in_if,
        out_if,
        src_as: 0,
        dst_as: 0,
        src_mask: 0,
        dst_mask: 0,
        next_hop: unspecified,
        vlan: 0,
        direction,
        start_age_ms: window_ms.min(u64::from(u32::MAX)) as u32,
        end_age_ms: 0,
    }
}

/// Generated records due after `elapsed` from an exporter whose (peak) rate is
/// `records_per_second`: `rate × elapsed`, shaped by `diurnal` when set.
pub fn records_due(diurnal: Option<&scenario::Diurnal>, records_per_second: u64, elapsed: Duration) -> u64 {
    match diurnal {
        Some(diurnal) => diurnal.records_due(records_per_second, elapsed),
        None => (u128::from(records_per_second) * elapsed.as_nanos() / 1_000_000_000) as u64,
    }
}

/// How long each virtual router has been up at the start of a run: 3 days plus 7 h 13 min per
/// router index, so every exporter has its own uptime.
fn uptime_at_start_ms(index: u32) -> u64 {
    3 * 86_400_000 + u64::from(index % 100) * (7 * 3_600_000 + 13 * 60_000)
}

/// Runs the fleet until `duration` has elapsed or `shutdown` is cancelled.
pub async fn run(config: SimulateConfig, shutdown: CancellationToken) -> Result<SimulateReport> {
    config.validate()?;
    let routers = config.routers();
    let mut sockets = Vec::with_capacity(routers.len());
    for router in &routers {
        let address = SocketAddr::new(router.exporter_address, 0);
        let socket = bind(address).map_err(|source| SimulateError::Bind {
            name: router.name.clone(),
            address,
            source,
        })?;
        sockets.push(socket);
    }
    let start = Instant::now();
    let start_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let exporters = u64::from(config.exporters.max(1));
    let mut tasks = Vec::with_capacity(routers.len());
    for (router, socket) in routers.into_iter().zip(sockets) {
        let index = u64::from(router.index);
        let rate =
            config.records_per_second / exporters + u64::from(index < config.records_per_second % exporters);
        let run = ExporterRun {
            report: ExporterReport::new(&router, config.protocol, config.effective_sampling_rate()),
            boot_unix_ms: start_unix_ms.saturating_sub(uptime_at_start_ms(router.index)),
            exporter: VirtualExporter::new(router, &config),
            socket,
            target: config.target,
            records_per_second: rate,
            diurnal: config.diurnal,
            duration: config.duration,
            start,
            start_unix_ms,
        };
        tasks.push(tokio::spawn(run.run(shutdown.clone())));
    }
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        reports.push(task.await?);
    }
    Ok(SimulateReport {
        protocol: config.protocol,
        target: config.target,
        elapsed: start.elapsed(),
        exporters: reports,
    })
}

/// An unconnected UDP socket on `address` with a large send buffer.
fn bind(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // A smaller buffer than asked for only means more waiting for the socket to drain.
    let _ = socket.set_send_buffer_size(SEND_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(StdUdpSocket::from(socket))
}

/// One exporter's task: the token bucket around a [`VirtualExporter`].
struct ExporterRun {
    exporter: VirtualExporter,
    report: ExporterReport,
    socket: UdpSocket,
    target: SocketAddr,
    records_per_second: u64,
    /// The shape of the rate over the day, if any ([`records_due`]).
    diurnal: Option<scenario::Diurnal>,
    duration: Option<Duration>,
    start: Instant,
    start_unix_ms: u64,
    boot_unix_ms: u64,
}

impl ExporterRun {
    async fn run(mut self, shutdown: CancellationToken) -> ExporterReport {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buffer = Vec::with_capacity(encode::MAX_DATAGRAM_BYTES);
        let mut generated_sent: u64 = 0;
        let mut last_flush = self.start;
        loop {
            let cancelled = tokio::select! {
                biased;
                _ = shutdown.cancelled() => true,
                _ = ticker.tick() => false,
            };
            let now = Instant::now();
            let mut elapsed = now - self.start;
            let ended = self.duration.is_some_and(|d| elapsed >= d);
            if let Some(duration) = self.duration {
                elapsed = elapsed.min(duration);
            }
            let elapsed_ms = elapsed.as_millis() as u64;
            let clock = ExportClock {
                unix_ms: self.start_unix_ms + elapsed_ms,
                boot_unix_ms: self.boot_unix_ms,
            };
            self.exporter.poll_scenario(elapsed_ms);
            let due = records_due(self.diurnal.as_ref(), self.records_per_second, elapsed);
            let capacity = self.exporter.max_records_per_datagram() as u64;
            let mut sent_this_tick = 0;
            loop {
                let owed = due.saturating_sub(generated_sent);
                let flush = ended || cancelled || now - last_flush >= FLUSH_AFTER;
                let worth_sending =
                    owed >= capacity || self.exporter.scenario_pending() || (flush && owed > 0);
                if !worth_sending && !self.exporter.refresh_due(clock) {
                    break;
                }
                if sent_this_tick >= MAX_DATAGRAMS_PER_TICK && !ended {
                    break;
                }
                let Some(datagram) =
                    self.exporter
                        .next_datagram(clock, owed.min(capacity) as usize, &mut buffer)
                else {
                    break;
                };
                generated_sent += datagram.generated_records;
                if !datagram.is_refresh && datagram.summary.consumed == 0 {
                    break; // nothing the encoder could take: try again next tick
                }
                if !datagram.is_refresh {
                    last_flush = now;
                }
                sent_this_tick += 1;
                match self.socket.send_to(&buffer, self.target).await {
                    Ok(_) => self.report.add(&datagram),
                    Err(_) => self.report.send_errors += 1,
                }
            }
            if ended || cancelled {
                return self.report;
            }
        }
    }
}

/// Serde of a [`Duration`] as seconds (a number, fractions allowed).
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Serde of an optional [`Duration`] as seconds.
mod optional_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_some(&duration.as_secs_f64()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(deserializer)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
