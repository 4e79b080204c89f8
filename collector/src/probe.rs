//! Active prober: Egress's own latency measurements, sent out through each egress path.
//!
//! In: the `[probes]` configuration ([`ProbeConfig`]): per egress path, targets (`host:port`),
//! an optional source address and/or device the probes are bound to (so that they leave through
//! that path), and whether to add an ICMP echo. Out: every `interval_seconds`, one
//! [`ProbeRow`] per target and method, inserted into the `probes` table in one insert per round
//! ([`run`]). At shutdown the round in flight is abandoned (each round is bounded by
//! `timeout_ms`) and nothing is buffered: a probe result is only worth having now.
//!
//! Methods:
//! - **TCP connect** ([`tcp_connect`]): the time from `connect()` to the completed handshake, i.e.
//!   one SYN / SYN-ACK round trip plus the far end's kernel. Needs no privileges. A refused
//!   connection is a *failure* (the probe did not measure the path), with the reason in `error`.
//! - **ICMP echo** ([`icmp_echo`], IPv4 only): a raw socket, so root or `CAP_NET_RAW`. Whether
//!   raw sockets may be opened is checked once at start; if not, ICMP probes are skipped with one
//!   logged reason, and TCP probes go on.
//! - **Hop trace** ([`traceroute`], IPv4 only, raw socket): UDP datagrams to ports 33434 and up
//!   with rising TTL, each answered by an ICMP time-exceeded from the router where the TTL ran
//!   out, or port-unreachable from the target itself (the classic traceroute). Run on demand
//!   (API, through [`PathTracer`]) or when a path's latency SLA fires; the caller stores the
//!   hops.
//!
//! Binding: `bind_device` sets `SO_BINDTODEVICE` (the probe leaves through that interface
//! whatever the routing table says; root), `bind_address` binds the source address (policy
//! routing on the source then chooses the path). Both may be set.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use egress_query::api::{HopTracer, TraceError};
pub use egress_query::probes::Hop;
use egress_query::probes::{ProbeMethod, ProbeRow, PROBES_TABLE};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::sink::clickhouse::ClickHouseSink;

/// Errors of this module (probe *failures* are not errors: they are rows with `success = 0`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The target is not `host:port`, or the host did not resolve.
    #[error("target {target:?}: {reason}")]
    Resolve { target: String, reason: String },
    /// A socket could not be opened, bound or used.
    #[error("{context}: {source}")]
    Socket {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The operation exists for IPv4 only (ICMP echo and hop traces).
    #[error("{0} is IPv4 only")]
    Ipv4Only(&'static str),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, ProbeError>;

/// The `[probes]` section: what to probe, how often, through which path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Seconds between two probe rounds (every target of every path once per round).
    pub interval_seconds: u64,
    /// Milliseconds a probe waits for its answer before it counts as failed (`timeout`). Must be
    /// shorter than the interval.
    pub timeout_ms: u64,
    /// The egress paths to probe, each with its targets. Empty: the prober does nothing.
    pub paths: Vec<PathProbes>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 10,
            timeout_ms: 2000,
            paths: Vec::new(),
        }
    }
}

/// The probes of one egress path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathProbes {
    /// Egress path label stored in `probes.path` and used by the latency SLA, e.g. the
    /// `egress_path` of the flows leaving through it (`edge1 / et-0/0/1 (Transit A)`).
    pub path: String,
    /// Targets as `host:port` (TCP connect); the host alone is used for ICMP echo. IPv6 hosts in
    /// brackets: `[2001:db8::1]:443`.
    pub targets: Vec<String>,
    /// Source address the probes are sent from (policy routing chooses the path by it).
    #[serde(default)]
    pub bind_address: Option<IpAddr>,
    /// Network device the probes are bound to (`SO_BINDTODEVICE`, needs root or
    /// `CAP_NET_RAW`), e.g. `eth1`.
    #[serde(default)]
    pub bind_device: Option<String>,
    /// Also send an ICMP echo to each target's host (IPv4, raw socket: root or `CAP_NET_RAW`;
    /// skipped with a logged reason when not permitted).
    #[serde(default)]
    pub icmp: bool,
}

impl PathProbes {
    /// The source binding of this path's probes.
    pub fn binding(&self) -> Binding {
        Binding {
            address: self.bind_address,
            device: self.bind_device.clone(),
        }
    }
}

impl ProbeConfig {
    /// Time between rounds.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds)
    }

    /// How long one probe waits.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Every problem, each starting with its key (without the `probes.` prefix). Empty when the
    /// configuration is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.interval_seconds == 0 {
            problems.push("interval_seconds: must be at least 1".to_owned());
        }
        if self.timeout_ms == 0 {
            problems.push("timeout_ms: must be at least 1".to_owned());
        } else if self.timeout_ms >= self.interval_seconds.saturating_mul(1000) {
            problems.push(format!(
                "timeout_ms: {} must be shorter than interval_seconds ({} s)",
                self.timeout_ms, self.interval_seconds
            ));
        }
        for (i, path) in self.paths.iter().enumerate() {
            let key = format!("paths[{i}]");
            if path.path.trim().is_empty() {
                problems.push(format!("{key}.path: must not be empty"));
            }
            if self.paths[..i].iter().any(|p| p.path == path.path) {
                problems.push(format!("{key}.path: {:?} is listed twice", path.path));
            }
            if path.targets.is_empty() {
                problems.push(format!("{key}.targets: must list at least one host:port"));
            }
            for (j, target) in path.targets.iter().enumerate() {
                if let Err(reason) = split_target(target) {
                    problems.push(format!("{key}.targets[{j}]: {reason}"));
                }
            }
            if matches!(&path.bind_device, Some(d) if d.is_empty() || d.len() >= 16) {
                problems.push(format!(
                    "{key}.bind_device: must be an interface name of 1 to 15 characters"
                ));
            }
        }
        problems
    }
}

/// `(host, port)` of `host:port` (`[v6]:port` for IPv6), or why not.
fn split_target(target: &str) -> std::result::Result<(&str, u16), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("{target:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{target:?} has no host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{target:?}: port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(format!("{target:?}: port 0"));
    }
    Ok((host, port))
}

/// Where probes leave from: a source address, a device, both or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// Source address (port chosen by the kernel).
    pub address: Option<IpAddr>,
    /// Device name for `SO_BINDTODEVICE`.
    pub device: Option<String>,
}

impl Binding {
    /// A socket of `domain`, bound as configured. Binding to a device comes first: binding the
    /// address then checks it against that device.
    fn socket(&self, domain: Domain, kind: Type, protocol: Option<Protocol>) -> Result<Socket> {
        let socket = Socket::new(domain, kind, protocol).map_err(|source| ProbeError::Socket {
            context: "open socket",
            source,
        })?;
        if let Some(device) = &self.device {
            socket
                .bind_device(Some(device.as_bytes()))
                .map_err(|source| ProbeError::Socket {
                    context: "bind to device (SO_BINDTODEVICE)",
                    source,
                })?;
        }
        if let Some(address) = self.address {
            socket
                .bind(&SockAddr::from(SocketAddr::new(address, 0)))
                .map_err(|source| ProbeError::Socket {
                    context: "bind source address",
                    source,
                })?;
        }
        Ok(socket)
    }
}

/// What one probe measured: the round trip, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; round trip in microseconds.
    Answered { rtt_us: u32 },
    /// Not answered in time, refused, unreachable...: the reason as stored in `probes.error`.
    Failed { error: String },
}

impl Outcome {
    fn from_io(error: &std::io::Error) -> Self {
        let error = match error.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timeout".to_owned(),
            _ => error.to_string(),
        };
        Self::Failed { error }
    }

    fn elapsed(since: Instant) -> Self {
        Self::Answered {
            rtt_us: u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX),
        }
    }
}

/// Resolves `target` (`host:port`), preferring an address of the binding's family.
pub async fn resolve(target: &str, binding: &Binding) -> Result<SocketAddr> {
    let fail = |reason: String| ProbeError::Resolve {
        target: target.to_owned(),
        reason,
    };
    let (host, port) = split_target(target).map_err(fail)?;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| fail(e.to_string()))?
        .collect();
    let same_family = |a: &&SocketAddr| binding.address.is_none_or(|b| b.is_ipv4() == a.is_ipv4());
    addresses
        .iter()
        .find(same_family)
        .or(addresses.first())
        .copied()
        .ok_or_else(|| fail("no address".to_owned()))
}

/// One TCP connect to `target` from `binding`: the handshake time, or why it failed. The
/// connection is closed at once.
pub async fn tcp_connect(target: SocketAddr, binding: &Binding, timeout: Duration) -> Outcome {
    let socket = match binding.socket(Domain::for_address(target), Type::STREAM, Some(Protocol::TCP)) {
        Ok(socket) => socket,
        Err(error) => {
            return Outcome::Failed {
                error: error.to_string(),
            }
        }
    };
    if let Err(error) = socket.set_nonblocking(true) {
        return Outcome::from_io(&error);
    }
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    let started = Instant::now();
    match tokio::time::timeout(timeout, socket.connect(target)).await {
        Ok(Ok(_stream)) => Outcome::elapsed(started),
        Ok(Err(error)) => Outcome::from_io(&error),
        Err(_) => Outcome::Failed {
            error: "timeout".to_owned(),
        },
    }
}

/// Whether this process may open raw ICMP sockets (root or `CAP_NET_RAW`): `Err` with the
/// reason otherwise.
pub fn icmp_permitted() -> std::result::Result<(), String> {
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .map(drop)
        .map_err(|e| format!("cannot open a raw ICMP socket: {e}"))
}

/// Internet checksum (RFC 1071) of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP packet read from a raw IPv4 socket: the sender and the ICMP message (IP header
/// removed). `None` when the bytes are not an IPv4 packet with an ICMP message.
fn icmp_message(packet: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    let source: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    let message = packet.get(header_len..)?;
    (message.len() >= 8).then_some((Ipv4Addr::from(source), message))
}

/// Reads ICMP messages from `socket` until `accept` returns a value or `deadline` passes.
/// Blocking: run it on a blocking thread.
fn receive_until<T>(
    socket: &mut Socket,
    deadline: Instant,
    mut accept: impl FnMut(Ipv4Addr, &[u8]) -> Option<T>,
) -> std::io::Result<Option<T>> {
    let mut buffer = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        socket.set_read_timeout(Some(deadline - now))?;
        let len = match socket.read(&mut buffer) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if let Some((source, message)) = buffer.get(..len).and_then(icmp_message) {
            if let Some(value) = accept(source, message) {
                return Ok(Some(value));
            }
        }
    }
}

/// One ICMP echo to `target` (IPv4) from `binding`. Blocking (raw socket); [`probe_round`]
/// runs it on a blocking thread.
pub fn icmp_echo(target: IpAddr, binding: &Binding, timeout: Duration) -> Outcome {
    let IpAddr::V4(target) = target else {
        return Outcome::Failed {
            error: ProbeError::Ipv4Only("ICMP echo").to_string(),
        };
    };
    let mut socket = match binding.socket(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
        Ok(socket) => socket,
        Err(error) => {
            return Outcome::Failed {
                error: error.to_string(),
            }
        }
    };
    // A raw socket sees every ICMP message of the host: the identifier and sequence number pick
    // out the reply to this request.
    let identifier: u16 = rand::random();
    let sequence: u16 = rand::random();
    let mut request = vec![
        8, 0, // type echo request, code 0
        0, 0, // checksum, filled below
    ];
    request.extend_from_slice(&identifier.to_be_bytes());
    request.extend_from_slice(&sequence.to_be_bytes());
    request.extend_from_slice(b"egress-probe");
    let sum = checksum(&request);
    request[2..4].copy_from_slice(&sum.to_be_bytes());
    let started = Instant::now();
    if let Err(error) = socket.send_to(&request, &SocketAddrV4::new(target, 0).into()) {
        return Outcome::from_io(&error);
    }
    let reply = receive_until(&mut socket, started + timeout, |source, message| {
        let is_reply = source == target
            && message[0] == 0
            && message[4..6] == identifier.to_be_bytes()
            && message[6..8] == sequence.to_be_bytes();
        is_reply.then_some(())
    });
    match reply {
        Ok(Some(())) => Outcome::elapsed(started),
        Ok(None) => Outcome::Failed {
            error: "timeout".to_owned(),
        },
        Err(error) => Outcome::from_io(&error),
    }
}

/// First destination port of trace datagrams (the classic traceroute's), one more per TTL.
pub const TRACE_BASE_PORT: u16 = 33434;

/// Traces the route to `target` (IPv4) from `binding`: UDP datagrams with TTL 1, 2, ... up to
/// `max_hops`, one per TTL, each waiting up to `timeout` for the ICMP time-exceeded of a router
/// or the port-unreachable (or any unreachable) of the end. Stops at the first unreachable.
/// Blocking (raw socket, root): call it from `tokio::task::spawn_blocking`.
pub fn traceroute(target: IpAddr, binding: &Binding, max_hops: u8, timeout: Duration) -> Result<Vec<Hop>> {
    let IpAddr::V4(target) = target else {
        return Err(ProbeError::Ipv4Only("hop trace"));
    };
    let mut icmp = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(|source| {
        ProbeError::Socket {
            context: "open raw ICMP socket",
            source,
        }
    })?;
    let udp = binding.socket(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let mut hops = Vec::new();
    for ttl in 1..=max_hops {
        let port = TRACE_BASE_PORT.wrapping_add(u16::from(ttl) - 1);
        let io = |context| move |source| ProbeError::Socket { context, source };
        udp.set_ttl_v4(u32::from(ttl)).map_err(io("set TTL"))?;
        let started = Instant::now();
        udp.send_to(b"egress-trace", &SocketAddrV4::new(target, port).into())
            .map_err(io("send trace datagram"))?;
        // The ICMP error quotes the datagram's IP header and the first 8 bytes of its UDP
        // header: the destination address and port identify this probe.
        let answer = receive_until(&mut icmp, started + timeout, |source, message| {
            let (kind, quoted) = (message[0], message.get(8..)?);
            let quoted_header_len = usize::from(quoted.first()? & 0x0f) * 4;
            let quoted_destination: [u8; 4] = quoted.get(16..20)?.try_into().ok()?;
            let quoted_port = quoted.get(quoted_header_len + 2..quoted_header_len + 4)?;
            let ours = Ipv4Addr::from(quoted_destination) == target && quoted_port == port.to_be_bytes();
            // 11: time exceeded (a router on the way); 3: destination unreachable (the end).
            (ours && (kind == 11 || kind == 3)).then_some((source, kind == 3, started.elapsed()))
        })
        .map_err(io("receive ICMP"))?;
        match answer {
            Some((source, reached, rtt)) => {
                hops.push(Hop {
                    ttl,
                    address: Some(IpAddr::V4(source)),
                    rtt_us: Some(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX)),
                });
                if reached {
                    break;
                }
            }
            None => hops.push(Hop {
                ttl,
                address: None,
                rtt_us: None,
            }),
        }
    }
    Ok(hops)
}

/// Hop traces through the prober's paths, from each path's binding: the [`HopTracer`] of the
/// query API (`POST /api/v1/trace`), and what the monitor calls when a path's latency SLA starts
/// firing.
#[derive(Debug, Clone)]
pub struct PathTracer {
    paths: Vec<PathProbes>,
}

impl PathTracer {
    /// A tracer for the paths of `config`.
    pub fn new(config: &ProbeConfig) -> Self {
        Self {
            paths: config.paths.clone(),
        }
    }
}

impl HopTracer for PathTracer {
    fn trace(
        &self,
        path: &str,
        target: &str,
        max_hops: u8,
        hop_timeout: Duration,
    ) -> std::result::Result<Vec<Hop>, TraceError> {
        let probes = self
            .paths
            .iter()
            .find(|p| p.path == path)
            .ok_or_else(|| TraceError::UnknownPath(path.to_owned()))?;
        // `host`, `address` or `host:port` (the port plays no part in a UDP trace); IPv4 only.
        let (host, port) = match target.parse::<IpAddr>() {
            Ok(address) => (address.to_string(), 0),
            Err(_) => match split_target(target) {
                Ok((host, port)) => (host.to_owned(), port),
                Err(_) => (target.to_owned(), 0),
            },
        };
        let address = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map_err(|e| TraceError::BadTarget(format!("{target:?}: {e}")))?
            .map(|a| a.ip())
            .find(IpAddr::is_ipv4)
            .ok_or_else(|| TraceError::BadTarget(format!("{target:?} has no IPv4 address")))?;
        traceroute(address, &probes.binding(), max_hops, hop_timeout)
            .map_err(|e| TraceError::Failed(e.to_string()))
    }
}

/// Probes every target of every path once, concurrently, and returns one row per probe, ordered
/// by path, target and method. `time` is the round's start (Unix seconds). ICMP probes are sent
/// only when `icmp_allowed` (see [`icmp_permitted`]).
pub async fn probe_round(config: &ProbeConfig, time: u32, icmp_allowed: bool) -> Vec<ProbeRow> {
    let timeout = config.timeout();
    let mut probes = JoinSet::new();
    for path in &config.paths {
        for target in &path.targets {
            let (path_label, target, binding) = (path.path.clone(), target.clone(), path.binding());
            let icmp = path.icmp && icmp_allowed;
            probes.spawn(async move {
                let row = |target: String, method, outcome: Outcome| {
                    let (rtt_us, error) = match outcome {
                        Outcome::Answered { rtt_us } => (Some(rtt_us), String::new()),
                        Outcome::Failed { error } => (None, error),
                    };
                    ProbeRow {
                        time,
                        path: path_label.clone(),
                        target,
                        method,
                        rtt_us,
                        success: u8::from(rtt_us.is_some()),
                        error,
                    }
                };
                let address = match resolve(&target, &binding).await {
                    Ok(address) => address,
                    Err(error) => {
                        let failed = || Outcome::Failed {
                            error: error.to_string(),
                        };
                        let mut rows = vec![row(target.clone(), ProbeMethod::Tcp, failed())];
                        if icmp {
                            let host = split_target(&target)
                                .map_or(target.as_str(), |(h, _)| h)
                                .to_owned();
                            rows.push(row(host, ProbeMethod::Icmp, failed()));
                        }
                        return rows;
                    }
                };
                let mut rows = vec![row(
                    target.clone(),
                    ProbeMethod::Tcp,
                    tcp_connect(address, &binding, timeout).await,
                )];
                if icmp {
                    let host = split_target(&target)
                        .map_or(target.as_str(), |(h, _)| h)
                        .to_owned();
                    let echo =
                        tokio::task::spawn_blocking(move || icmp_echo(address.ip(), &binding, timeout))
                            .await
                            .unwrap_or_else(|e| Outcome::Failed { error: e.to_string() });
                    rows.push(row(host, ProbeMethod::Icmp, echo));
                }
                rows
            });
        }
    }
    let mut rows = Vec::new();
    while let Some(joined) = probes.join_next().await {
        match joined {
            Ok(mut some) => rows.append(&mut some),
            Err(error) => tracing::error!(%error, "probe task failed"),
        }
    }
    rows.sort_by(|a, b| (&a.path, &a.target, a.method as i8).cmp(&(&b.path, &b.target, b.method as i8)));
    rows
}

/// Probes every `interval_seconds` until `shutdown`, inserting each round into `probes`. A
/// failed insert loses that round's rows (logged at error); the next round is independent.
pub async fn run(config: ProbeConfig, sink: ClickHouseSink, shutdown: CancellationToken) {
    if config.paths.is_empty() {
        return;
    }
    let icmp_allowed = match icmp_permitted() {
        Ok(()) => true,
        Err(reason) => {
            if config.paths.iter().any(|p| p.icmp) {
                tracing::warn!(%reason, "ICMP echo probes skipped; TCP probes continue");
            }
            false
        }
    };
    let mut ticker = tokio::time::interval(config.interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let rows = tokio::select! {
            _ = shutdown.cancelled() => break,
            rows = probe_round(&config, now, icmp_allowed) => rows,
        };
        let failed = rows.iter().filter(|r| r.success == 0).count();
        tracing::debug!(probes = rows.len(), failed, "probe round done");
        if let Err(error) = sink.insert(PROBES_TABLE, &rows).await {
            tracing::error!(%error, probes = rows.len(), "probe results lost: insert failed");
        }
    }
}

#[cfg(test)]
mod tests;
