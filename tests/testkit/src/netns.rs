//! A real network with a delayed path, for the latency tests: a target namespace holding a TCP
//! listener that the root namespace reaches by two paths, one direct and one through a router
//! namespace behind a userspace delay line whose delay the test changes at run time. In: nothing
//! but root privileges, `ip` (iproute2) and `/dev/net/tun`. Out: a [`DelayRig`] with one
//! [`ProbePath`] per path (target `host:port`, source address, device). At drop the listener is
//! closed, both namespaces and every link are deleted and the delay-line threads are joined.
//!
//! This kernel has no `netem` qdisc, so the delay is made in this process: two TUN devices, one
//! in the root namespace and one in the router namespace, and a thread per direction that reads
//! packets from one device and writes them to the other. Moving a TUN device into another
//! namespace (`ip link set DEV netns NS`) keeps the file descriptor this process holds, so both
//! ends of the delay line stay readable and writable from here.
//!
//! ```text
//!  root namespace (prober)                                     egress-tgt-<pid>-<n>
//!  ----------------------                                      --------------------
//!          fast path: veth pair, one hop
//!  eg<pid>-<n>a 10.200.K.1/24 <=================================> eg<pid>-<n>b 10.200.K.2/24
//!                                                                        |
//!          slow path: TUN + delay line + router, two hops          TCP listener
//!                                      egress-rtr-<pid>-<n>        0.0.0.0:PORT
//!                                      --------------------              |
//!  eg<pid>-<n>s 10.200.K+1.1/24       eg<pid>-<n>t 10.200.K+1.2/24       |
//!   (TUN)  route 10.200.K+2.0/24       (TUN)   ip_forward=1              |
//!     |     via 10.200.K+1.2            ^ |                              |
//!     | read                      write | | read                         |
//!     v                                 | v                              |
//!   [ delay thread: holds each packet ]-+ |                              |
//!   [ reverse thread: forwards at once ]<-+                              |
//!                                     eg<pid>-<n>r 10.200.K+2.1/24 <===> eg<pid>-<n>c 10.200.K+2.2/24
//!                                                           route 10.200.K+1.0/24 via 10.200.K+2.1
//! ```
//!
//! A connection from the root namespace to `10.200.K.2` takes the veth pair (the target is the
//! first hop); one to `10.200.K+2.2` takes the TUN devices and is forwarded by the router (first
//! hop `10.200.K+1.2`, which answers TTL 1 with ICMP time exceeded; the target is the second).
//! The delay is applied in one direction only (root to router), so a TCP connect RTT through the
//! slow path grows by exactly the delay, at every hop from the first.
//!
//! The listener is bound inside the target namespace by a short-lived thread that enters it with
//! `setns(2)` (only that thread changes namespace); the socket keeps its namespace after the
//! thread is gone, and the accept loop runs in an ordinary thread.
//!
//! Names carry the process id and a per-process counter, so rigs of concurrent tests and test
//! processes never meet; `K` is the first multiple of 4 whose three /24s no root-namespace
//! address uses. Leftovers of a crashed run (namespaces and links whose process id is no longer
//! running) are deleted when a rig starts.

use std::fmt;
use std::fs::File;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use tun_tap::{Iface, Mode};

/// Prefix of every namespace a rig creates; the rest is `tgt-<pid>-<n>` or `rtr-<pid>-<n>`.
const NAMESPACE_PREFIX: &str = "egress-";

/// Largest IP packet the delay line forwards (the TUN devices' MTU is 1500).
const MAX_PACKET: usize = 65_536;

/// Serialises the choice of subnets and their configuration within this process.
static SETUP: Mutex<()> = Mutex::new(());

/// Distinguishes the rigs of one process.
static RIG_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One way from the root namespace to the target: what a prober connects to, and the source
/// address or device it may bind so the probe leaves through this path (routing by destination
/// already sends it there, so binding is optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePath {
    /// TCP target inside the target namespace (`host:port`), reached through this path.
    pub target: SocketAddr,
    /// This path's address in the root namespace (bind a probe socket to it).
    pub source: IpAddr,
    /// This path's device in the root namespace (`SO_BINDTODEVICE`).
    pub device: String,
    /// The addresses a hop trace along this path meets, first hop first (the last is the
    /// target's address).
    pub hops: Vec<IpAddr>,
}

/// Two paths from the root namespace to a TCP listener in a namespace of its own, one direct
/// and one through a userspace delay line (see the module header for the topology).
pub struct DelayRig {
    target_ns: String,
    router_ns: String,
    fast: ProbePath,
    slow: ProbePath,
    /// The delay line's TUN device inside the router namespace.
    tun_router: String,
    delay_micros: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
    delay_threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for DelayRig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayRig")
            .field("target_ns", &self.target_ns)
            .field("router_ns", &self.router_ns)
            .field("fast", &self.fast)
            .field("slow", &self.slow)
            .field("delay", &self.delay())
            .finish()
    }
}

/// Whether this machine can build a rig: `/dev/net/tun` exists and `ip netns` runs. Tests use
/// it to skip (with a message) where it cannot, never to hide a failure of [`DelayRig::start`].
pub fn available() -> bool {
    Path::new("/dev/net/tun").exists()
        && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|out| out.status.success())
}

impl DelayRig {
    /// Creates the namespaces, both paths and the listener, with no delay yet.
    pub fn start() -> Result<DelayRig> {
        let _setup = SETUP.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        delete_stale_leftovers();

        let pid = std::process::id();
        let n = RIG_COUNTER.fetch_add(1, Ordering::Relaxed);
        let target_ns = format!("{NAMESPACE_PREFIX}tgt-{pid}-{n}");
        let router_ns = format!("{NAMESPACE_PREFIX}rtr-{pid}-{n}");
        let link = |suffix: char| format!("eg{pid}-{n}{suffix}");
        let (fast_root, fast_target) = (link('a'), link('b'));
        let (tun_root, tun_router) = (link('s'), link('t'));
        let (inner_router, inner_target) = (link('r'), link('c'));
        let k = free_subnets()?;
        let net = |offset: u8, host: u8| Ipv4Addr::new(10, 200, k + offset, host);
        let (fast_net, slow_net, inner_net) = (0, 1, 2);

        // From here on a failure must not leave a namespace behind: the guard deletes them.
        let mut guard = NamespaceGuard {
            namespaces: vec![target_ns.clone(), router_ns.clone()],
            armed: true,
        };
        ip_script(&[
            format!("netns add {target_ns}"),
            format!("netns add {router_ns}"),
            format!("-n {target_ns} link set lo up"),
            format!("-n {router_ns} link set lo up"),
            // Fast path.
            format!("link add {fast_root} type veth peer name {fast_target} netns {target_ns}"),
            format!("addr add {}/24 dev {fast_root}", net(fast_net, 1)),
            format!("link set {fast_root} up"),
            format!(
                "-n {target_ns} addr add {}/24 dev {fast_target}",
                net(fast_net, 2)
            ),
            format!("-n {target_ns} link set {fast_target} up"),
            // Router to target, and the target's way back to the slow path's source.
            format!(
                "-n {router_ns} link add {inner_router} type veth peer name {inner_target} netns {target_ns}"
            ),
            format!(
                "-n {router_ns} addr add {}/24 dev {inner_router}",
                net(inner_net, 1)
            ),
            format!("-n {router_ns} link set {inner_router} up"),
            format!(
                "-n {target_ns} addr add {}/24 dev {inner_target}",
                net(inner_net, 2)
            ),
            format!("-n {target_ns} link set {inner_target} up"),
            format!(
                "-n {target_ns} route add {}/24 via {}",
                net(slow_net, 0),
                net(inner_net, 1)
            ),
        ])?;
        enable_forwarding(&router_ns)?;

        let root_end = Arc::new(
            Iface::without_packet_info(&tun_root, Mode::Tun)
                .with_context(|| format!("open TUN {tun_root}"))?,
        );
        let router_end = Arc::new(
            Iface::without_packet_info(&tun_router, Mode::Tun)
                .with_context(|| format!("open TUN {tun_router}"))?,
        );
        ip_script(&[
            format!("link set {tun_router} netns {router_ns}"),
            format!("addr add {}/24 dev {tun_root}", net(slow_net, 1)),
            format!("link set {tun_root} up"),
            format!(
                "route add {}/24 via {} dev {tun_root}",
                net(inner_net, 0),
                net(slow_net, 2)
            ),
            format!("-n {router_ns} addr add {}/24 dev {tun_router}", net(slow_net, 2)),
            format!("-n {router_ns} link set {tun_router} up"),
        ])?;

        let listener = listen_in_namespace(&target_ns)?;
        let port = listener.local_addr()?.port();
        let stopping = Arc::new(AtomicBool::new(false));
        let accept_thread = {
            let stopping = Arc::clone(&stopping);
            thread::Builder::new()
                .name("netns-accept".into())
                .spawn(move || accept_loop(&listener, &stopping))?
        };

        let delay_micros = Arc::new(AtomicU64::new(0));
        let mut delay_threads =
            delay_line(&root_end, &router_end, Some(Arc::clone(&delay_micros)), &stopping)?;
        delay_threads.extend(delay_line(&router_end, &root_end, None, &stopping)?);

        // The rig now owns the cleanup (its Drop deletes the namespaces).
        guard.armed = false;
        let rig = DelayRig {
            target_ns,
            router_ns,
            fast: ProbePath {
                target: SocketAddr::new(net(fast_net, 2).into(), port),
                source: net(fast_net, 1).into(),
                device: fast_root,
                hops: vec![net(fast_net, 2).into()],
            },
            slow: ProbePath {
                target: SocketAddr::new(net(inner_net, 2).into(), port),
                source: net(slow_net, 1).into(),
                device: tun_root,
                hops: vec![net(slow_net, 2).into(), net(inner_net, 2).into()],
            },
            tun_router,
            delay_micros,
            stopping,
            accept_thread: Some(accept_thread),
            delay_threads,
        };
        rig.wait_until_reachable()?;
        Ok(rig)
    }

    /// The direct path (veth pair, no added delay).
    pub fn fast_path(&self) -> &ProbePath {
        &self.fast
    }

    /// The path through the delay line.
    pub fn slow_path(&self) -> &ProbePath {
        &self.slow
    }

    /// TCP target reached by the direct path.
    pub fn fast_target(&self) -> SocketAddr {
        self.fast.target
    }

    /// TCP target reached through the delay line.
    pub fn slow_target(&self) -> SocketAddr {
        self.slow.target
    }

    /// Name of the target namespace (for `ip netns exec` in a test).
    pub fn target_namespace(&self) -> &str {
        &self.target_ns
    }

    /// Name of the router namespace on the slow path.
    pub fn router_namespace(&self) -> &str {
        &self.router_ns
    }

    /// Sets the delay the slow path adds (root to target direction) from now on; packets
    /// already held are released by the new delay, so `set_delay(Duration::ZERO)` takes effect
    /// at once.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_micros.store(micros, Ordering::Relaxed);
    }

    /// The delay the slow path adds now.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::Relaxed))
    }

    /// Both paths accept a connection (links can take a moment after `up`).
    fn wait_until_reachable(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for target in [self.fast.target, self.slow.target] {
            loop {
                match TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
                    Ok(_) => break,
                    Err(_) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(50));
                    }
                    Err(error) => bail!("rig target {target} unreachable: {error}"),
                }
            }
        }
        Ok(())
    }
}

impl Drop for DelayRig {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.set_delay(Duration::ZERO);
        // Wake the accept loop so it sees `stopping` and closes the listener: a socket keeps its
        // namespace alive, and with it the devices inside.
        let _ = TcpStream::connect_timeout(&self.fast.target, Duration::from_millis(500));
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        // Deleting the devices wakes the delay-line readers with an error, and they return. The
        // router's TUN device is deleted by name: deleting the namespace alone would leave it
        // until the kernel frees the namespace, which can wait for TIME_WAIT sockets (minutes).
        let _ = ip(&["link", "del", &self.slow.device]);
        let _ = ip(&["-n", &self.router_ns, "link", "del", &self.tun_router]);
        let _ = ip(&["link", "del", &self.fast.device]);
        for namespace in [&self.router_ns, &self.target_ns] {
            let _ = ip(&["netns", "del", namespace]);
        }
        for thread in self.delay_threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Deletes the namespaces if the rig fails half-way through its start.
struct NamespaceGuard {
    namespaces: Vec<String>,
    armed: bool,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        if self.armed {
            for namespace in &self.namespaces {
                let _ = ip(&["netns", "del", namespace]);
            }
        }
    }
}

/// Starts the two threads of one direction of the delay line: a reader that stamps each
/// packet as it arrives on `from`, and a writer that sends it to `to` once `delay` has passed
/// since then (`None`: at once). Both return when the reader's device is deleted.
fn delay_line(
    from: &Arc<Iface>,
    to: &Arc<Iface>,
    delay_micros: Option<Arc<AtomicU64>>,
    stopping: &Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>> {
    let (held_tx, held_rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader = {
        let from = Arc::clone(from);
        let stopping = Arc::clone(stopping);
        thread::Builder::new()
            .name(format!("netns-read-{}", from.name()))
            .spawn(move || {
                let mut packet = vec![0u8; MAX_PACKET];
                loop {
                    match from.recv(&mut packet) {
                        Ok(len) => {
                            if held_tx.send((Instant::now(), packet[..len].to_vec())).is_err() {
                                return;
                            }
                        }
                        Err(error) if error.kind() == ErrorKind::Interrupted => {}
                        // The device is gone (the rig is dropping) or broken: nothing left to read.
                        Err(error) => {
                            if !stopping.load(Ordering::SeqCst) {
                                eprintln!("netns: delay line reading {} stopped: {error}", from.name());
                            }
                            return;
                        }
                    }
                }
            })?
    };
    let writer = {
        let to = Arc::clone(to);
        thread::Builder::new()
            .name(format!("netns-write-{}", to.name()))
            .spawn(move || {
                while let Ok((arrived, packet)) = held_rx.recv() {
                    let delay = delay_micros
                        .as_ref()
                        .map_or(0, |micros| micros.load(Ordering::Relaxed));
                    let due = arrived + Duration::from_micros(delay);
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    // A packet the kernel refuses is lost, as on a real link.
                    let _ = to.send(&packet);
                }
            })?
    };
    Ok(vec![reader, writer])
}

/// Binds a TCP listener on every address of `namespace` (port chosen by the kernel) from a
/// thread that enters the namespace; the socket stays in it after the thread has returned.
fn listen_in_namespace(namespace: &str) -> Result<TcpListener> {
    let path = format!("/run/netns/{namespace}");
    let handle = File::open(&path).with_context(|| format!("open {path}"))?;
    thread::scope(|scope| {
        scope
            .spawn(|| -> Result<TcpListener> {
                setns(&handle, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {path}"))?;
                Ok(TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?)
            })
            .join()
            .unwrap_or_else(|_| bail!("listener thread panicked"))
    })
}

/// Accepts and closes connections (a TCP connect probe needs only the handshake) until the rig
/// drops.
fn accept_loop(listener: &TcpListener, stopping: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Err(error) = accepted {
            eprintln!("netns: accept failed: {error}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The first third octet `K` (a multiple of 4) such that none of `10.200.K.0/24`,
/// `10.200.K+1.0/24` and `10.200.K+2.0/24` is used by an address or route of the root namespace.
fn free_subnets() -> Result<u8> {
    let used = ip_output(&["-4", "-o", "addr", "show"])? + &ip_output(&["-4", "route", "show"])?;
    let taken = |octet: u8| used.contains(&format!("10.200.{octet}."));
    (4..=248u8)
        .step_by(4)
        .find(|&k| (k..k + 3).all(|octet| !taken(octet)))
        .context("no free 10.200.K.0/24 triple")
}

/// Lets the router namespace forward between its TUN device and its veth.
fn enable_forwarding(namespace: &str) -> Result<()> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            namespace,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ])
        .output()
        .context("run ip netns exec sysctl")?;
    if !out.status.success() {
        bail!(
            "enable forwarding in {namespace}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes namespaces and root-namespace links left by rigs of processes that are gone.
fn delete_stale_leftovers() {
    let dead = |pid: &str| !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(namespaces) = ip_output(&["netns", "list"]) {
        for name in namespaces
            .lines()
            .filter_map(|line| line.split_whitespace().next())
        {
            // "egress-tgt-<pid>-<n>" or "egress-rtr-<pid>-<n>".
            let Some(rest) = name.strip_prefix(NAMESPACE_PREFIX) else {
                continue;
            };
            let pid = rest.split('-').nth(1).unwrap_or("");
            if pid.bytes().all(|b| b.is_ascii_digit()) && dead(pid) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(links) = ip_output(&["-o", "link", "show"]) {
        // Lines look like "7: eg123-0a@if6: <...>".
        for name in links.lines().filter_map(|line| line.split(": ").nth(1)) {
            let name = name.split('@').next().unwrap_or(name);
            let Some(rest) = name.strip_prefix("eg") else {
                continue;
            };
            let Some((pid, _)) = rest.split_once('-') else {
                continue;
            };
            if pid.bytes().all(|b| b.is_ascii_digit()) && dead(pid) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// Runs `ip ARGS` in the root namespace.
fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

/// Runs `ip` once per line, each line's words being the arguments (none contains a space).
fn ip_script(lines: &[String]) -> Result<()> {
    lines
        .iter()
        .try_for_each(|line| ip(&line.split_whitespace().collect::<Vec<_>>()))
}

/// Runs `ip ARGS` and returns its standard output, failing with its standard error.
fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
