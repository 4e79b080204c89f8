//! A real network with a delayed path, for the latency tests: a network namespace holding a
//! TCP target that the root namespace reaches by two paths, one direct and one through a
//! userspace delay line whose delay the test changes at run time. In: nothing but root
//! privileges, `ip` (iproute2) and `/dev/net/tun`. Out: a [`DelayRig`] with one [`ProbePath`]
//! per path (target `host:port`, source address, device). At drop the listener is closed, the
//! namespace and every link are deleted and the delay-line threads are joined.
//!
//! This kernel has no `netem` qdisc, so the delay is made in this process: two TUN devices, one
//! in each namespace, and a thread per direction that reads packets from one device and writes
//! them to the other. Moving a TUN device into another namespace (`ip link set DEV netns NS`)
//! keeps the file descriptor this process holds, so both ends of the delay line stay readable.
//!
//! ```text
//!  root namespace (prober)                          namespace egress-tgt-<pid>-<n>
//!  -----------------------                          ------------------------------
//!                     fast path (veth pair)
//!  eg<pid>-<n>a  10.200.K.1/24  <==================>  eg<pid>-<n>b  10.200.K.2/24
//!                                                                       \
//!                     slow path (delay line)                             TCP listener
//!  eg<pid>-<n>s  10.200.K+1.1/24  (TUN)             (TUN)               /  0.0.0.0:PORT
//!        |                                          eg<pid>-<n>t  10.200.K+1.2/24
//!        | fd read                                          ^ fd write
//!        v                                                  |
//!      [ delay thread: hold each packet for `delay` ] ------+      (root -> target)
//!      [ reverse thread: forwards at once         ] <------ fd read (target -> root)
//! ```
//!
//! Each namespace routes the other's /24 by its connected route, so no policy routing is
//! needed: a connection from the root namespace to `10.200.K.2` takes the veth pair and one to
//! `10.200.K+1.2` takes the TUN devices. The delay is applied in one direction only (root to
//! target), so a TCP connect RTT through the slow path grows by exactly the delay.
//!
//! The listener is bound inside the namespace by a short-lived thread that enters it with
//! `setns(2)` (only that thread changes namespace); the socket keeps its namespace after the
//! thread is gone, and the accept loop runs in an ordinary thread.
//!
//! Names carry the process id and a per-process counter, so rigs of concurrent tests and test
//! processes never meet; `K` is the first even third octet whose two /24s no root-namespace
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

/// Prefix of every namespace a rig creates; the rest is `<pid>-<n>`.
const NAMESPACE_PREFIX: &str = "egress-tgt-";

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
}

/// Two paths from the root namespace to a TCP listener in a namespace of its own, one direct
/// and one through a userspace delay line (see the module header for the topology).
pub struct DelayRig {
    namespace: String,
    fast: ProbePath,
    slow: ProbePath,
    /// The delay line's TUN device inside the namespace.
    tun_target: String,
    delay_micros: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
    delay_threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for DelayRig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayRig")
            .field("namespace", &self.namespace)
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
    /// Creates the namespace, both paths and the listener, with no delay yet.
    pub fn start() -> Result<DelayRig> {
        let _setup = SETUP.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        delete_stale_leftovers();

        let pid = std::process::id();
        let n = RIG_COUNTER.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("{NAMESPACE_PREFIX}{pid}-{n}");
        let link = |suffix: char| format!("eg{pid}-{n}{suffix}");
        let (veth_root, veth_target, tun_root, tun_target) = (link('a'), link('b'), link('s'), link('t'));
        let octet = free_subnet_pair()?;
        let fast_net = [10, 200, octet];
        let slow_net = [10, 200, octet + 1];
        let address = |net: [u8; 3], host: u8| Ipv4Addr::new(net[0], net[1], net[2], host);

        // From here on a failure must not leave the namespace behind: the guard deletes it.
        ip(&["netns", "add", &namespace])?;
        let mut guard = NamespaceGuard {
            namespace: namespace.clone(),
            armed: true,
        };
        ip_in(&namespace, &["link", "set", "lo", "up"])?;

        ip(&[
            "link",
            "add",
            &veth_root,
            "type",
            "veth",
            "peer",
            "name",
            &veth_target,
            "netns",
            &namespace,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", address(fast_net, 1)),
            "dev",
            &veth_root,
        ])?;
        ip(&["link", "set", &veth_root, "up"])?;
        ip_in(
            &namespace,
            &[
                "addr",
                "add",
                &format!("{}/24", address(fast_net, 2)),
                "dev",
                &veth_target,
            ],
        )?;
        ip_in(&namespace, &["link", "set", &veth_target, "up"])?;

        let root_end = Arc::new(
            Iface::without_packet_info(&tun_root, Mode::Tun)
                .with_context(|| format!("open TUN {tun_root}"))?,
        );
        let target_end = Arc::new(
            Iface::without_packet_info(&tun_target, Mode::Tun)
                .with_context(|| format!("open TUN {tun_target}"))?,
        );
        ip(&["link", "set", &tun_target, "netns", &namespace])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", address(slow_net, 1)),
            "dev",
            &tun_root,
        ])?;
        ip(&["link", "set", &tun_root, "up"])?;
        ip_in(
            &namespace,
            &[
                "addr",
                "add",
                &format!("{}/24", address(slow_net, 2)),
                "dev",
                &tun_target,
            ],
        )?;
        ip_in(&namespace, &["link", "set", &tun_target, "up"])?;

        let listener = listen_in_namespace(&namespace)?;
        let port = listener.local_addr()?.port();
        let stopping = Arc::new(AtomicBool::new(false));
        let accept_thread = {
            let stopping = Arc::clone(&stopping);
            thread::Builder::new()
                .name("netns-accept".into())
                .spawn(move || accept_loop(&listener, &stopping))?
        };

        let delay_micros = Arc::new(AtomicU64::new(0));
        let mut delay_threads = Vec::new();
        delay_threads.extend(delay_line(
            &root_end,
            &target_end,
            Some(Arc::clone(&delay_micros)),
            &stopping,
        )?);
        delay_threads.extend(delay_line(&target_end, &root_end, None, &stopping)?);

        let rig = DelayRig {
            namespace,
            fast: ProbePath {
                target: SocketAddr::new(address(fast_net, 2).into(), port),
                source: address(fast_net, 1).into(),
                device: veth_root,
            },
            slow: ProbePath {
                target: SocketAddr::new(address(slow_net, 2).into(), port),
                source: address(slow_net, 1).into(),
                device: tun_root,
            },
            tun_target,
            delay_micros,
            stopping,
            accept_thread: Some(accept_thread),
            delay_threads,
        };
        // The rig now owns the cleanup (its Drop deletes the namespace).
        guard.armed = false;
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
    pub fn namespace(&self) -> &str {
        &self.namespace
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
        // target's TUN device is deleted by name: deleting the namespace alone would leave it
        // until the kernel frees the namespace, which waits for its TIME_WAIT sockets (minutes).
        let _ = ip(&["link", "del", &self.slow.device]);
        let _ = ip_in(&self.namespace, &["link", "del", &self.tun_target]);
        let _ = ip(&["link", "del", &self.fast.device]);
        let _ = ip(&["netns", "del", &self.namespace]);
        for thread in self.delay_threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Deletes the namespace if the rig fails half-way through its start.
struct NamespaceGuard {
    namespace: String,
    armed: bool,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = ip(&["netns", "del", &self.namespace]);
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

/// The first even third octet `K` such that neither `10.200.K.0/24` nor `10.200.K+1.0/24` is
/// used by an address of the root namespace.
fn free_subnet_pair() -> Result<u8> {
    let addresses = ip_output(&["-4", "-o", "addr", "show"])?;
    let used = |octet: u8| addresses.contains(&format!(" 10.200.{octet}."));
    (2..=252u8)
        .step_by(2)
        .find(|&octet| !used(octet) && !used(octet + 1))
        .context("no free 10.200.K.0/24 pair")
}

/// Deletes namespaces and root-namespace links left by rigs of processes that are gone.
fn delete_stale_leftovers() {
    let dead = |pid: &str| !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(namespaces) = ip_output(&["netns", "list"]) {
        for name in namespaces
            .lines()
            .filter_map(|line| line.split_whitespace().next())
        {
            let Some(rest) = name.strip_prefix(NAMESPACE_PREFIX) else {
                continue;
            };
            if dead(rest.split('-').next().unwrap_or("")) {
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

/// Runs `ip -n NAMESPACE ARGS`.
fn ip_in(namespace: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", namespace];
    all.extend_from_slice(args);
    ip(&all)
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
