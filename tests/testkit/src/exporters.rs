//! Real exporters and peer collectors, as child processes on loopback: a traffic pcap goes in
//! (to softflowd or pmacctd), export datagrams come out to a [`UdpTee`], which hands the same
//! datagrams to Egress and to a peer (nfcapd for NetFlow/IPFIX, sfacctd for sFlow) whose
//! [`PeerTotals`] are the reference.
//!
//! Every process runs in the foreground with its files in its own temporary directory and is
//! killed on drop, so a failing test leaves nothing behind. Ports are chosen by binding port 0.
//! None of the tools needs root or a capability here: softflowd and pmacctd read a file rather
//! than an interface, and every listener binds an unprivileged loopback port.
//!
//! Tool behaviour this module relies on (Debian 12: softflowd 1.1.0, pmacct 1.7.7, nfdump 1.7.1),
//! each checked by the `*_peer_*` tests in `tests/e2e_exporters.rs`:
//! - `softflowd -d -r FILE -c none` reads the file at full speed, then expires ("flushed") every flow,
//!   exports it and exits. Flows never split: one record per unidirectional flow. NetFlow v5
//!   carries IPv4 only, so IPv6 flows are not exported in v5. Octets are IP lengths.
//! - softflowd's v9/IPFIX default times are relative to `sysUpTime`, and in `-r` mode flows
//!   that started before softflowd itself (packet timestamps older than its start) come out
//!   ~49.7 days in the future (a 2^32 ms wrap); `-A milli` (absolute milliseconds) gives true
//!   times, so it is the default here for v9 and IPFIX. With `-s N` softflowd samples 1 in N
//!   packets systematically and says so in the v5 header and in IPFIX options data
//!   (samplingPacketInterval 1, samplingPacketSpace N-1); nfcapd scales v5 volumes by the
//!   header rate, not v9/IPFIX volumes.
//! - pmacctd's sfprobe with the default (home-grown) core→plugin queue re-sends the tail of
//!   the capture when it is stopped, and without `pcap_savefile_wait` it exits without sending
//!   its last partial datagram. With `plugin_pipe_zmq: true`, `pcap_savefile_wait: true` and
//!   SIGINT after "finished reading PCAP capture file", every packet is sampled exactly once.
//!   pmacctd sleeps 2 s before it reads the file. sfprobe sends flow samples only (no counter
//!   samples), and each sample's frame length includes a 4-byte FCS.
//! - pmacctd's nfprobe plugin (NetFlow/IPFIX) is deliberately not offered: stopped with
//!   SIGINT it counts the capture's last packets twice (3 to 6 extra packets on the last flow,
//!   even with the ZMQ queue), and while reading a file it expires nothing by timeout, so its
//!   totals never match the capture exactly. softflowd covers v5, v9 and IPFIX instead.
//! - nfcapd writes its file on SIGTERM; sfacctd's print plugin purges its cache on SIGINT.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tempfile::TempDir;

/// How long a helper waits for a tool to start, finish a file or shut down.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket receive buffer asked for by the tee, so a burst of export datagrams is not dropped.
const TEE_RECEIVE_BUFFER: usize = 8 * 1024 * 1024;

/// What a peer collector counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerTotals {
    /// Flow records (NetFlow/IPFIX) or flow samples (sFlow).
    pub records: u64,
    /// Sum of the records' bytes as the peer stores them (unscaled for v9/IPFIX; see the module
    /// notes for v5 sampling).
    pub bytes: u64,
    pub packets: u64,
}

/// An unused loopback UDP port (bound then released; another process could take it first,
/// which on a test machine is rare enough).
pub fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")
        .context("binding a UDP port")?
        .local_addr()?
        .port())
}

/// An unused loopback TCP port, as [`free_udp_port`].
pub fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("binding a TCP port")?
        .local_addr()?
        .port())
}

/// Waits until some process has bound UDP `port` on loopback (our own bind attempt fails).
fn wait_until_udp_bound(port: u16, process: &mut RunningProcess) -> Result<()> {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        if let Some(status) = process.try_wait()? {
            bail!(
                "{} exited with {status} before binding port {port}: {}",
                process.name,
                process.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not bind UDP port {port}: {}",
                process.name,
                process.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A child process whose stdout and stderr go to a log file. It leads its own process group,
/// because pmacctd, sfacctd and nfcapd fork plugin or helper processes; on drop the whole group
/// is killed and the child reaped, so nothing outlives a failed test.
#[derive(Debug)]
struct RunningProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl RunningProcess {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Result<Self> {
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} (is it installed?)"))?;
        Ok(Self { name, child, log })
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// The last lines of the log, for error messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn log_contains(&self, needle: &str) -> bool {
        fs::read_to_string(&self.log).is_ok_and(|text| text.contains(needle))
    }

    /// Sends `signal` (a name such as `INT`) with kill(1): the workspace denies unsafe code,
    /// and std only offers SIGKILL.
    fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{signal} {} ({}) failed", self.child.id(), self.name);
        }
        Ok(())
    }

    /// Waits for the process to exit on its own, killing it after `timeout`.
    fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "{} did not exit within {timeout:?}: {}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle`, failing if the process exits first.
    fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.log_contains(needle) {
            if let Some(status) = self.try_wait()? {
                bail!(
                    "{} exited with {status} before logging {needle:?}: {}",
                    self.name,
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}: {}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for RunningProcess {
    fn drop(&mut self) {
        kill_process_group(&mut self.child);
    }
}

/// Kills a child started as the leader of its own process group (`process_group(0)`), with
/// everything it started (pmacct's plugins may outlive the core process), and reaps it.
pub fn kill_process_group(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Counters shared between a [`UdpTee`] and its thread.
#[derive(Debug, Default)]
struct TeeState {
    stop: AtomicBool,
    datagrams: AtomicU64,
    bytes: AtomicU64,
    forward_errors: AtomicU64,
    /// Every datagram received, in arrival order, when recording.
    recorded: Mutex<Vec<Vec<u8>>>,
    last_arrival: Mutex<Option<Instant>>,
}

/// A UDP tee: every datagram received on its port is forwarded, unchanged and whole, to each
/// target in order, and counted.
///
/// This is how one export stream reaches both Egress and a peer collector. The receivers see
/// the tee's sending socket (127.0.0.1, an ephemeral port) as the exporter, not the exporter's
/// own socket; for loopback tests that is the same host, and one exporter maps to one tee, so
/// per-exporter state (NetFlow v9/IPFIX templates) is unaffected.
#[derive(Debug)]
pub struct UdpTee {
    listen: SocketAddr,
    state: Arc<TeeState>,
    thread: Option<JoinHandle<()>>,
}

impl UdpTee {
    /// Starts a tee on a free loopback port forwarding to `targets`. With `record`, it also
    /// keeps a copy of every datagram (see [`UdpTee::recorded`]).
    pub fn start(targets: &[SocketAddr], record: bool) -> Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: the kernel caps the size at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(TEE_RECEIVE_BUFFER);
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .context("binding the tee")?;
        let receiver: UdpSocket = socket.into();
        receiver.set_read_timeout(Some(Duration::from_millis(50)))?;
        let listen = receiver.local_addr()?;
        let sender = UdpSocket::bind("127.0.0.1:0").context("binding the tee's sending socket")?;
        let state = Arc::new(TeeState::default());
        let targets = targets.to_vec();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("udp-tee".into())
            .spawn(move || forward(&receiver, &sender, &targets, &thread_state, record))?;
        Ok(Self {
            listen,
            state,
            thread: Some(thread),
        })
    }

    /// The address exporters send to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Datagrams received (and forwarded) so far.
    pub fn datagrams(&self) -> u64 {
        self.state.datagrams.load(Ordering::Relaxed)
    }

    /// Bytes of UDP payload received so far.
    pub fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::Relaxed)
    }

    /// Sends that failed (for example a target that is not listening yet).
    pub fn forward_errors(&self) -> u64 {
        self.state.forward_errors.load(Ordering::Relaxed)
    }

    /// The datagrams received so far, in arrival order (empty unless started with `record`).
    /// This is an exporter's stream, ready to be replayed or written as a capture.
    pub fn recorded(&self) -> Vec<Vec<u8>> {
        self.state.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until at least one datagram has arrived and none has for `quiet`; returns the
    /// datagram count. Fails after `timeout`.
    pub fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = *self
                .state
                .last_arrival
                .lock()
                .map_err(|_| anyhow!("tee state poisoned"))?;
            if last.is_some_and(|at| at.elapsed() >= quiet) {
                return Ok(self.datagrams());
            }
            if Instant::now() > deadline {
                bail!(
                    "tee {}: no quiet period of {quiet:?} within {timeout:?}",
                    self.listen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for UdpTee {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The tee's loop: receive, count, forward to every target, until asked to stop.
fn forward(receiver: &UdpSocket, sender: &UdpSocket, targets: &[SocketAddr], state: &TeeState, record: bool) {
    let mut buffer = vec![0u8; 65_536];
    while !state.stop.load(Ordering::Relaxed) {
        let len = match receiver.recv(&mut buffer) {
            Ok(len) => len,
            // Read timeout: look at the stop flag again.
            Err(_) => continue,
        };
        let datagram = &buffer[..len];
        for target in targets {
            if sender.send_to(datagram, target).is_err() {
                state.forward_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if record {
            if let Ok(mut recorded) = state.recorded.lock() {
                recorded.push(datagram.to_vec());
            }
        }
        state.bytes.fetch_add(len as u64, Ordering::Relaxed);
        state.datagrams.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = state.last_arrival.lock() {
            *last = Some(Instant::now());
        }
    }
}

/// The export protocol softflowd speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetflowVersion {
    V5,
    V9,
    Ipfix,
}

impl NetflowVersion {
    /// The value of softflowd's `-v`.
    fn softflowd_arg(self) -> &'static str {
        match self {
            Self::V5 => "5",
            Self::V9 => "9",
            Self::Ipfix => "10",
        }
    }

    /// The name Egress stores in `flows.flow_type`.
    pub fn flow_type(self) -> &'static str {
        match self {
            Self::V5 => "netflow5",
            Self::V9 => "netflow9",
            Self::Ipfix => "ipfix",
        }
    }
}

/// How softflowd should replay a pcap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Softflowd {
    pub version: NetflowVersion,
    /// Systematic 1-in-N packet sampling (`-s N`); `None` counts every packet.
    pub sampling_rate: Option<u32>,
}

/// What softflowd said about a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftflowdReport {
    /// Flow records exported ("Flows exported: N").
    pub flows_exported: u64,
    /// Export datagrams sent ("in N packets").
    pub datagrams: u64,
    /// Wall time of the replay.
    pub elapsed: Duration,
}

impl Softflowd {
    /// An exporter of `version` without sampling.
    pub fn new(version: NetflowVersion) -> Self {
        Self {
            version,
            sampling_rate: None,
        }
    }

    /// Replays `pcap` and exports every flow to `target`; returns when softflowd has exited,
    /// that is after it has sent every record.
    ///
    /// Command: `softflowd -d -r PCAP -n HOST:PORT -v 5|9|10 -c none [-A milli] [-s N]`.
    /// `-c none` is required, not cosmetic: in `-r` mode softflowd 1.1 tests the control
    /// socket's poll result without ever polling (uninitialised memory), and then blocks for
    /// good in `accept()` on the control socket whenever that memory happens to be non-zero
    /// (seen with stdout redirected to a file). Without a control socket the test is skipped.
    /// In the foreground (`-d`) softflowd writes no pid file.
    pub fn replay(&self, pcap: &Path, target: SocketAddr) -> Result<SoftflowdReport> {
        let dir = TempDir::new()?;
        let mut command = Command::new("softflowd");
        command
            .arg("-d")
            .arg("-r")
            .arg(pcap)
            .arg("-n")
            .arg(target.to_string())
            .arg("-v")
            .arg(self.version.softflowd_arg())
            .args(["-c", "none"]);
        if self.version != NetflowVersion::V5 {
            command.args(["-A", "milli"]);
        }
        if let Some(rate) = self.sampling_rate {
            command.arg("-s").arg(rate.to_string());
        }
        let started = Instant::now();
        let mut process = RunningProcess::spawn("softflowd", &mut command, dir.path().join("softflowd.log"))?;
        let status = process.wait(PROCESS_TIMEOUT)?;
        let elapsed = started.elapsed();
        if !status.success() {
            bail!("softflowd exited with {status}: {}", process.log_tail());
        }
        let log = fs::read_to_string(&process.log)?;
        parse_softflowd_report(&log, elapsed)
            .with_context(|| format!("reading softflowd's statistics: {}", process.log_tail()))
    }
}

/// Reads "Flows exported: 100 (100 records) in 4 packets (0 failures)".
fn parse_softflowd_report(log: &str, elapsed: Duration) -> Result<SoftflowdReport> {
    let line = log
        .lines()
        .find(|l| l.starts_with("Flows exported:"))
        .context("no 'Flows exported' line")?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    match numbers.as_slice() {
        [flows, _records, datagrams, failures] => {
            if *failures != 0 {
                bail!("softflowd failed to send {failures} datagrams");
            }
            Ok(SoftflowdReport {
                flows_exported: *flows,
                datagrams: *datagrams,
                elapsed,
            })
        }
        _ => bail!("unexpected statistics line {line:?}"),
    }
}

/// pmacctd reading a pcap with the sfprobe plugin: an sFlow v5 agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmacctdSfprobe {
    /// `sampling_rate`: 1 samples every packet.
    pub sampling_rate: u32,
}

/// What a pmacctd replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmacctdReport {
    /// Wall time, including pmacctd's fixed 2-second start delay.
    pub elapsed: Duration,
}

impl PmacctdSfprobe {
    /// Replays `pcap` and sends sFlow to `tee`; returns after pmacctd has sent its last
    /// datagram and exited. The tee tells when the plugin has drained its queue: it is quiet.
    ///
    /// Configuration (see the module notes for why each line is there):
    /// ```text
    /// daemonize: false
    /// pcap_savefile: PCAP
    /// pcap_savefile_wait: true
    /// plugin_pipe_zmq: true
    /// plugins: sfprobe[sf]
    /// sfprobe_receiver[sf]: HOST:PORT
    /// sfprobe_agentip[sf]: 127.0.0.1
    /// sampling_rate[sf]: N
    /// ```
    /// then SIGINT once pmacctd has logged "finished reading PCAP capture file" and the tee has
    /// been quiet for two seconds.
    pub fn replay(&self, pcap: &Path, tee: &UdpTee) -> Result<PmacctdReport> {
        let target = tee.listen_addr();
        let dir = TempDir::new()?;
        let config = format!(
            "daemonize: false\n\
             pcap_savefile: {pcap}\n\
             pcap_savefile_wait: true\n\
             plugin_pipe_zmq: true\n\
             plugins: sfprobe[sf]\n\
             sfprobe_receiver[sf]: {target}\n\
             sfprobe_agentip[sf]: 127.0.0.1\n\
             sampling_rate[sf]: {rate}\n",
            pcap = pcap.display(),
            rate = self.sampling_rate,
        );
        let config_path = dir.path().join("pmacctd.conf");
        fs::write(&config_path, config)?;
        let started = Instant::now();
        let mut process = RunningProcess::spawn(
            "pmacctd",
            Command::new("pmacctd").arg("-f").arg(&config_path),
            dir.path().join("pmacctd.log"),
        )?;
        process.wait_for_log("finished reading PCAP capture file", PROCESS_TIMEOUT)?;
        // The core has queued every packet; once the plugin has drained the queue (nothing
        // more arrives), the shutdown sends the last partial datagram. Signalling earlier
        // would lose what is still queued. Two quiet seconds, not less: on a loaded machine
        // (CI, parallel builds) the plugin can pause for most of a second between datagrams.
        tee.wait_quiet(Duration::from_secs(2), PROCESS_TIMEOUT)?;
        process.signal("INT")?;
        process.wait(PROCESS_TIMEOUT)?;
        Ok(PmacctdReport {
            elapsed: started.elapsed(),
        })
    }
}

/// nfcapd (nfdump 1.7) collecting NetFlow v5/v9/IPFIX on a loopback port; the peer that counts
/// NetFlow/IPFIX records.
///
/// Command: `nfcapd -w DIR -p PORT -b 127.0.0.1 -B 8388608`; totals come from
/// `nfdump -R DIR -o csv -N` after SIGTERM (which makes nfcapd write its file).
#[derive(Debug)]
pub struct Nfcapd {
    process: RunningProcess,
    port: u16,
    flow_dir: PathBuf,
    _dir: TempDir,
}

impl Nfcapd {
    /// Starts nfcapd on a free port and waits until it listens.
    pub fn start() -> Result<Self> {
        let dir = TempDir::new()?;
        let flow_dir = dir.path().join("flows");
        fs::create_dir(&flow_dir)?;
        let port = free_udp_port()?;
        let mut process = RunningProcess::spawn(
            "nfcapd",
            Command::new("nfcapd").arg("-w").arg(&flow_dir).args([
                "-p",
                &port.to_string(),
                "-b",
                "127.0.0.1",
                "-B",
                "8388608",
            ]),
            dir.path().join("nfcapd.log"),
        )?;
        wait_until_udp_bound(port, &mut process)?;
        Ok(Self {
            process,
            port,
            flow_dir,
            _dir: dir,
        })
    }

    /// Where exporters (or a tee) send.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops nfcapd (it writes its file on SIGTERM) and counts what it stored.
    pub fn finish(mut self) -> Result<PeerTotals> {
        self.stop()?;
        self.totals(None)
    }

    /// Stops nfcapd, which writes its file; [`Nfcapd::totals`] reads it afterwards.
    pub fn stop(&mut self) -> Result<()> {
        if self.process.try_wait()?.is_none() {
            self.process.signal("TERM")?;
            self.process.wait(PROCESS_TIMEOUT)?;
        }
        Ok(())
    }

    /// Counts the stored records matching an nfdump `filter` (for example
    /// `"src ip 10.66.6.6"`), or all of them. Call after [`Nfcapd::stop`].
    pub fn totals(&self, filter: Option<&str>) -> Result<PeerTotals> {
        let mut command = Command::new("nfdump");
        command.arg("-R").arg(&self.flow_dir).args(["-o", "csv", "-N"]);
        if let Some(filter) = filter {
            command.arg(filter);
        }
        let output = command.output().context("running nfdump")?;
        if !output.status.success() {
            bail!("nfdump failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        parse_nfdump_csv(&String::from_utf8_lossy(&output.stdout))
    }
}

/// Sums nfdump's CSV records (columns `ipkt`, `ibyt`) and checks them against its summary.
fn parse_nfdump_csv(csv: &str) -> Result<PeerTotals> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .context("nfdump printed nothing")?
        .split(',')
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .with_context(|| format!("no {name} column"))
    };
    let (packets_at, bytes_at) = (column("ipkt")?, column("ibyt")?);
    let mut totals = PeerTotals::default();
    for line in lines.by_ref() {
        if line == "Summary" || line.is_empty() {
            break;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let field = |at: usize| -> Result<u64> {
            let text = fields.get(at).with_context(|| format!("short record {line:?}"))?;
            text.trim()
                .parse()
                .with_context(|| format!("bad number in {line:?}"))
        };
        totals.packets += field(packets_at)?;
        totals.bytes += field(bytes_at)?;
        totals.records += 1;
    }
    // "flows,bytes,packets,..." then the values.
    let summary: Vec<u64> = lines
        .nth(1)
        .unwrap_or_default()
        .split(',')
        .take(3)
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    if let [flows, bytes, packets] = summary.as_slice() {
        if (*flows, *bytes, *packets) != (totals.records, totals.bytes, totals.packets) {
            bail!("nfdump's summary {summary:?} disagrees with its records {totals:?}");
        }
    }
    Ok(totals)
}

/// sfacctd (pmacct) collecting sFlow on a loopback port with the print plugin; the peer that
/// counts sFlow samples.
///
/// Configuration: `plugins: print[out]`, `aggregate[out]: src_host,dst_host,proto,src_port,
/// dst_port`, CSV output appended every second, no renormalisation. Each flow sample counts as
/// one packet of its frame length, so [`PeerTotals::records`] is the sum of the PACKETS column:
/// the number of flow samples sfacctd accounted.
#[derive(Debug)]
pub struct Sfacctd {
    process: RunningProcess,
    port: u16,
    output: PathBuf,
    _dir: TempDir,
}

impl Sfacctd {
    /// Starts sfacctd on a free port and waits until it listens.
    pub fn start() -> Result<Self> {
        let dir = TempDir::new()?;
        let port = free_udp_port()?;
        let output = dir.path().join("samples.csv");
        let config = format!(
            "daemonize: false\n\
             sfacctd_ip: 127.0.0.1\n\
             sfacctd_port: {port}\n\
             sfacctd_renormalize: false\n\
             plugins: print[out]\n\
             aggregate[out]: src_host,dst_host,proto,src_port,dst_port\n\
             print_output[out]: csv\n\
             print_output_file[out]: {output}\n\
             print_output_file_append[out]: true\n\
             print_refresh_time[out]: 1\n",
            output = output.display(),
        );
        let config_path = dir.path().join("sfacctd.conf");
        fs::write(&config_path, config)?;
        let mut process = RunningProcess::spawn(
            "sfacctd",
            Command::new("sfacctd").arg("-f").arg(&config_path),
            dir.path().join("sfacctd.log"),
        )?;
        wait_until_udp_bound(port, &mut process)?;
        Ok(Self {
            process,
            port,
            output,
            _dir: dir,
        })
    }

    /// Where exporters (or a tee) send.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops sfacctd (its print plugin writes what it holds on SIGINT) and counts the samples.
    pub fn finish(mut self) -> Result<PeerTotals> {
        self.process.signal("INT")?;
        self.process.wait(PROCESS_TIMEOUT)?;
        let mut csv = String::new();
        if self.output.exists() {
            fs::File::open(&self.output)?.read_to_string(&mut csv)?;
        }
        parse_pmacct_csv(&csv)
    }
}

/// Sums the PACKETS and BYTES columns of pmacct print-plugin CSV (appended purges, each with
/// its own header line).
fn parse_pmacct_csv(csv: &str) -> Result<PeerTotals> {
    let mut totals = PeerTotals::default();
    let mut columns: Option<(usize, usize)> = None;
    for line in csv.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        if let (Some(packets), Some(bytes)) = (
            fields.iter().position(|f| *f == "PACKETS"),
            fields.iter().position(|f| *f == "BYTES"),
        ) {
            columns = Some((packets, bytes));
            continue;
        }
        let (packets_at, bytes_at) = columns.context("pmacct CSV without a header line")?;
        let field = |at: usize| -> Result<u64> {
            let text = fields.get(at).with_context(|| format!("short line {line:?}"))?;
            text.trim()
                .parse()
                .with_context(|| format!("bad number in {line:?}"))
        };
        totals.packets += field(packets_at)?;
        totals.bytes += field(bytes_at)?;
    }
    totals.records = totals.packets;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_softflowd_statistics() {
        let log =
            "Flows expired: 100 (0 forced)\nFlows exported: 100 (100 records) in 4 packets (0 failures)\n";
        let report = parse_softflowd_report(log, Duration::ZERO).unwrap();
        assert_eq!((report.flows_exported, report.datagrams), (100, 4));
        let failed = "Flows exported: 100 (100 records) in 4 packets (2 failures)\n";
        assert!(parse_softflowd_report(failed, Duration::ZERO).is_err());
    }

    #[test]
    fn sums_nfdump_csv_and_checks_its_summary() {
        let csv = "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt\n\
                   a,b,0,1.1.1.1,2.2.2.2,1,2,TCP,.,0,0,23,2116,0\n\
                   a,b,0,1.1.1.1,2.2.2.2,1,2,UDP,.,0,0,2,80,0\n\
                   Summary\n\
                   flows,bytes,packets,avg_bps,avg_pps,avg_bpp\n\
                   2,2196,25,1,0,562\n";
        assert_eq!(
            parse_nfdump_csv(csv).unwrap(),
            PeerTotals {
                records: 2,
                bytes: 2196,
                packets: 25
            }
        );
        let wrong = csv.replace("2,2196,25", "3,2196,25");
        assert!(parse_nfdump_csv(&wrong).is_err());
    }

    #[test]
    fn sums_appended_pmacct_csv() {
        let csv = "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES\n\
                   10.0.1.1,198.51.100.1,20000,443,tcp,2,116\n\
                   SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES\n\
                   10.0.1.2,198.51.100.2,20001,80,tcp,9,522\n";
        assert_eq!(
            parse_pmacct_csv(csv).unwrap(),
            PeerTotals {
                records: 11,
                bytes: 638,
                packets: 11
            }
        );
        assert!(parse_pmacct_csv("10.0.1.1,1,2\n").is_err());
    }

    #[test]
    fn dropping_a_peer_kills_its_plugin_processes_too() {
        // Processes of the group that are not zombies (a killed plugin stays a zombie until
        // whoever inherits it reaps it).
        let living = |group: u32| -> usize {
            let ps = Command::new("ps")
                .args(["-e", "-o", "pgid=,stat="])
                .output()
                .unwrap();
            String::from_utf8_lossy(&ps.stdout)
                .lines()
                .filter_map(|line| {
                    line.trim()
                        .split_once(char::is_whitespace)
                        .map(|(g, st)| (g.trim(), st.trim()))
                })
                .filter(|(g, st)| g.parse() == Ok(group) && !st.starts_with('Z'))
                .count()
        };
        let sfacctd = Sfacctd::start().unwrap();
        let group = sfacctd.process.child.id();
        assert!(living(group) >= 2, "sfacctd's core and print plugin run");
        drop(sfacctd);
        let deadline = Instant::now() + Duration::from_secs(5);
        while living(group) > 0 {
            assert!(
                Instant::now() < deadline,
                "something of sfacctd survived its drop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn tee_forwards_whole_datagrams_to_every_target() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for socket in [&a, &b] {
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let tee = UdpTee::start(&[a.local_addr().unwrap(), b.local_addr().unwrap()], true).unwrap();
        let exporter = UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagrams: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + usize::from(i) * 50]).collect();
        for datagram in &datagrams {
            exporter.send_to(datagram, tee.listen_addr()).unwrap();
        }
        let mut buffer = [0u8; 2048];
        for target in [&a, &b] {
            for datagram in &datagrams {
                let len = target.recv(&mut buffer).unwrap();
                assert_eq!(&buffer[..len], datagram.as_slice());
            }
        }
        assert_eq!(
            tee.wait_quiet(Duration::from_millis(100), Duration::from_secs(5))
                .unwrap(),
            20
        );
        assert_eq!(tee.recorded(), datagrams);
        assert_eq!(tee.bytes(), datagrams.iter().map(|d| d.len() as u64).sum::<u64>());
        assert_eq!(tee.forward_errors(), 0);
    }
}
