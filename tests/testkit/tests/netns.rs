//! The delay rig gives a real delayed path: TCP connect RTTs measured from the root namespace
//! through the direct path stay fast, through the delay line they grow by the delay, and they
//! recover when the delay is removed. Also checks that the rig leaves nothing behind.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use egress_testkit::netns::{self, DelayRig};

/// TCP connect RTTs (handshake time) of `count` connections to `target`, in order.
fn connect_rtts(target: SocketAddr, count: usize) -> Vec<Duration> {
    (0..count)
        .map(|_| {
            let started = Instant::now();
            let stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                .unwrap_or_else(|error| panic!("connect {target}: {error}"));
            let rtt = started.elapsed();
            drop(stream);
            rtt
        })
        .collect()
}

fn median(mut rtts: Vec<Duration>) -> Duration {
    rtts.sort();
    rtts[rtts.len() / 2]
}

fn ip_output(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn slow_path_rtt_follows_the_delay_and_fast_path_stays_fast() {
    if !netns::available() {
        eprintln!("skipped: /dev/net/tun or `ip netns` is unavailable (root needed)");
        return;
    }
    let rig = DelayRig::start().expect("start rig");
    eprintln!("{rig:?}");
    let namespaces = [
        rig.target_namespace().to_owned(),
        rig.router_namespace().to_owned(),
    ];
    let devices = [rig.fast_path().device.clone(), rig.slow_path().device.clone()];
    assert_ne!(rig.fast_target().ip(), rig.slow_target().ip());

    let fast = median(connect_rtts(rig.fast_target(), 5));
    let slow = median(connect_rtts(rig.slow_target(), 5));
    eprintln!("no delay: fast {fast:?}, slow {slow:?}");
    assert!(fast < Duration::from_millis(10), "fast path {fast:?}");
    assert!(
        slow < Duration::from_millis(10),
        "slow path without delay {slow:?}"
    );

    rig.set_delay(Duration::from_millis(80));
    assert_eq!(rig.delay(), Duration::from_millis(80));
    let delayed = connect_rtts(rig.slow_target(), 5);
    let fast_meanwhile = median(connect_rtts(rig.fast_target(), 5));
    eprintln!("80 ms delay: slow {delayed:?}, fast {fast_meanwhile:?}");
    for rtt in &delayed {
        assert!(
            *rtt >= Duration::from_millis(80),
            "slow path with 80 ms delay: {rtt:?}"
        );
        assert!(
            *rtt < Duration::from_millis(500),
            "slow path with 80 ms delay: {rtt:?}"
        );
    }
    assert!(
        fast_meanwhile < Duration::from_millis(10),
        "fast path during delay {fast_meanwhile:?}"
    );

    // Probes bound to a path's source address leave through it as well.
    let bound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    bound
        .bind(&SocketAddr::new(rig.slow_path().source, 0).into())
        .unwrap();
    let started = Instant::now();
    bound
        .connect_timeout(&rig.slow_target().into(), Duration::from_secs(2))
        .unwrap();
    let bound_rtt = started.elapsed();
    eprintln!("80 ms delay, bound to {}: {bound_rtt:?}", rig.slow_path().source);
    assert!(
        bound_rtt >= Duration::from_millis(80),
        "bound slow probe {bound_rtt:?}"
    );

    rig.set_delay(Duration::ZERO);
    let recovered = median(connect_rtts(rig.slow_target(), 5));
    eprintln!("delay removed: slow {recovered:?}");
    assert!(
        recovered < Duration::from_millis(10),
        "slow path after removing the delay {recovered:?}"
    );

    drop(rig);
    let left = ip_output(&["netns", "list"]);
    for namespace in namespaces {
        assert!(!left.contains(&namespace), "namespace {namespace} left behind");
    }
    let links = ip_output(&["-o", "link", "show"]);
    for device in devices {
        assert!(
            !links.contains(&format!(": {device}")),
            "link {device} left behind"
        );
    }
}

#[test]
fn two_rigs_at_once_get_their_own_subnets() {
    if !netns::available() {
        eprintln!("skipped: /dev/net/tun or `ip netns` is unavailable (root needed)");
        return;
    }
    let first = DelayRig::start().expect("start first rig");
    let second = DelayRig::start().expect("start second rig");
    let targets = [
        first.fast_target(),
        first.slow_target(),
        second.fast_target(),
        second.slow_target(),
    ];
    for (i, a) in targets.iter().enumerate() {
        for b in &targets[i + 1..] {
            assert_ne!(a.ip(), b.ip());
        }
    }
    second.set_delay(Duration::from_millis(50));
    let first_slow = median(connect_rtts(first.slow_target(), 3));
    let second_slow = median(connect_rtts(second.slow_target(), 3));
    assert!(
        first_slow < Duration::from_millis(10),
        "first rig slow path {first_slow:?}"
    );
    assert!(
        second_slow >= Duration::from_millis(50),
        "second rig slow path {second_slow:?}"
    );
}

/// A TCP connect with the given TTL: `Ok(rtt)` when the target answered, `Err` with the error
/// otherwise (a hop that drops the SYN answers ICMP time exceeded: EHOSTUNREACH at once).
fn connect_with_ttl(target: SocketAddr, ttl: u32) -> Result<Duration, std::io::Error> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_ttl_v4(ttl)?;
    let started = Instant::now();
    socket.connect_timeout(&target.into(), Duration::from_secs(2))?;
    Ok(started.elapsed())
}

#[test]
fn slow_path_has_a_router_hop_and_fast_path_none() {
    if !netns::available() {
        eprintln!("skipped: /dev/net/tun or `ip netns` is unavailable (root needed)");
        return;
    }
    let rig = DelayRig::start().expect("start rig");
    assert_eq!(rig.fast_path().hops, vec![rig.fast_target().ip()]);
    assert_eq!(rig.slow_path().hops.len(), 2);
    assert_eq!(rig.slow_path().hops[1], rig.slow_target().ip());

    connect_with_ttl(rig.fast_target(), 1).expect("fast target is the first hop");
    rig.set_delay(Duration::from_millis(30));
    let started = Instant::now();
    let first_hop = connect_with_ttl(rig.slow_target(), 1).expect_err("TTL 1 ends at the router");
    let first_hop_rtt = started.elapsed();
    eprintln!("slow path, TTL 1: {first_hop} after {first_hop_rtt:?}");
    assert_eq!(
        first_hop.raw_os_error(),
        Some(nix::libc::EHOSTUNREACH),
        "{first_hop}"
    );
    assert!(
        first_hop_rtt >= Duration::from_millis(30),
        "first hop {first_hop_rtt:?}"
    );
    let second_hop = connect_with_ttl(rig.slow_target(), 2).expect("TTL 2 reaches the target");
    eprintln!("slow path, TTL 2: {second_hop:?}");
    assert!(
        second_hop >= Duration::from_millis(30),
        "second hop {second_hop:?}"
    );
}
