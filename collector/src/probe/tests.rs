//! Tests of the prober against 127.0.0.1: real sockets, real kernel answers.

use super::*;

fn loopback_config(targets: Vec<String>, icmp: bool) -> ProbeConfig {
    ProbeConfig {
        interval_seconds: 5,
        timeout_ms: 1000,
        paths: vec![PathProbes {
            path: "lo".to_owned(),
            targets,
            bind_address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            bind_device: None,
            icmp,
        }],
    }
}

/// A port nothing listens on: bound, then closed.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_listening_port_answers_with_a_small_rtt() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let binding = Binding {
        address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        device: Some("lo".to_owned()),
    };
    match tcp_connect(target, &binding, Duration::from_secs(1)).await {
        Outcome::Answered { rtt_us } => assert!(rtt_us < 100_000, "{rtt_us} us on loopback"),
        failed => panic!("{failed:?}"),
    }
}

#[tokio::test]
async fn a_closed_port_is_a_failure_with_its_reason() {
    let target = SocketAddr::from(([127, 0, 0, 1], closed_port()));
    assert_eq!(
        tcp_connect(target, &Binding::default(), Duration::from_secs(1)).await,
        Outcome::Failed {
            error: "connection refused".to_owned()
        }
    );
}

#[tokio::test]
async fn a_round_gives_one_row_per_target_and_method() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().to_string();
    let closed = format!("127.0.0.1:{}", closed_port());
    let icmp = icmp_permitted().is_ok();
    let config = loopback_config(
        vec![open.clone(), closed.clone(), "nonexistent.invalid:80".into()],
        icmp,
    );
    let rows = probe_round(&config, 1_700_000_000, icmp).await;
    let tcp: Vec<&ProbeRow> = rows.iter().filter(|r| r.method == ProbeMethod::Tcp).collect();
    assert_eq!(tcp.len(), 3);
    let row = |target: &str| tcp.iter().find(|r| r.target == target).unwrap();
    assert_eq!((row(&open).success, row(&open).error.as_str()), (1, ""));
    assert!(row(&open).rtt_us.is_some());
    assert_eq!(
        (
            row(&closed).success,
            row(&closed).rtt_us,
            row(&closed).error.as_str()
        ),
        (0, None, "connection refused")
    );
    assert_eq!(row("nonexistent.invalid:80").success, 0);
    assert!(row("nonexistent.invalid:80")
        .error
        .contains("nonexistent.invalid"));
    assert!(rows.iter().all(|r| r.time == 1_700_000_000 && r.path == "lo"));
    if icmp {
        // The echo of 127.0.0.1 is answered, once per target that resolved.
        let echoes: Vec<&ProbeRow> = rows.iter().filter(|r| r.method == ProbeMethod::Icmp).collect();
        assert_eq!(echoes.len(), 3);
        let answered = echoes
            .iter()
            .filter(|r| r.target == "127.0.0.1")
            .collect::<Vec<_>>();
        assert_eq!(answered.len(), 2);
        assert!(answered.iter().all(|r| r.success == 1 && r.rtt_us.is_some()));
    }
}

#[test]
fn icmp_echo_of_loopback_is_answered_when_raw_sockets_are_permitted() {
    if let Err(reason) = icmp_permitted() {
        eprintln!("skipped: {reason}");
        return;
    }
    let outcome = icmp_echo(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &Binding::default(),
        Duration::from_secs(1),
    );
    assert!(matches!(outcome, Outcome::Answered { .. }), "{outcome:?}");
    assert_eq!(
        icmp_echo(
            "::1".parse().unwrap(),
            &Binding::default(),
            Duration::from_secs(1)
        ),
        Outcome::Failed {
            error: "ICMP echo is IPv4 only".to_owned()
        }
    );
}

#[test]
fn a_trace_to_loopback_is_one_hop() {
    if let Err(reason) = icmp_permitted() {
        eprintln!("skipped: {reason}");
        return;
    }
    let hops = traceroute(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &Binding::default(),
        8,
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(hops.len(), 1, "{hops:?}");
    assert_eq!(hops[0].ttl, 1);
    assert_eq!(hops[0].address, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert!(hops[0].rtt_us.is_some());
}

#[test]
fn the_path_tracer_traces_from_a_configured_path_only() {
    let tracer = PathTracer::new(&loopback_config(vec!["127.0.0.1:80".into()], false));
    assert!(matches!(
        tracer.trace("elsewhere", "127.0.0.1", 4, Duration::from_millis(300)),
        Err(TraceError::UnknownPath(_))
    ));
    assert!(matches!(
        tracer.trace("lo", "nonexistent.invalid", 4, Duration::from_millis(300)),
        Err(TraceError::BadTarget(_))
    ));
    if let Err(reason) = icmp_permitted() {
        eprintln!("trace skipped: {reason}");
        return;
    }
    for target in ["127.0.0.1", "127.0.0.1:443", "localhost:80"] {
        let hops = tracer.trace("lo", target, 4, Duration::from_millis(500)).unwrap();
        assert_eq!(hops.len(), 1, "{target}: {hops:?}");
        assert_eq!(hops[0].address, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}

#[test]
fn checksum_of_an_echo_request_verifies_to_zero() {
    let mut request = vec![8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c'];
    let sum = checksum(&request);
    request[2..4].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(checksum(&request), 0);
}

#[test]
fn truncated_icmp_packets_are_ignored() {
    assert_eq!(icmp_message(&[]), None);
    assert_eq!(icmp_message(&[0x45; 20]), None);
    // A 20-byte IPv4 header (IHL 5) from 10.0.0.1, then an 8-byte echo reply.
    let mut packet = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 127, 0, 0, 1];
    packet.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1]);
    assert_eq!(
        icmp_message(&packet),
        Some((Ipv4Addr::new(10, 0, 0, 1), &packet[20..]))
    );
}

#[test]
fn configuration_problems_name_their_keys() {
    let config: ProbeConfig = toml::from_str(
        r#"
        interval_seconds = 1
        timeout_ms = 1500
        [[paths]]
        path = "transit-a"
        targets = ["192.0.2.1:443", "no-port", "[2001:db8::1]:0"]
        bind_device = "a-very-long-interface-name"
        [[paths]]
        path = "transit-a"
        targets = []
        "#,
    )
    .unwrap();
    let problems = config.problems();
    for key in [
        "timeout_ms:",
        "paths[0].targets[1]:",
        "paths[0].targets[2]:",
        "paths[0].bind_device:",
        "paths[1].path:",
        "paths[1].targets:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "{key} missing in {problems:?}"
        );
    }
    assert_eq!(problems.len(), 6, "{problems:?}");
    assert!(toml::from_str::<ProbeConfig>("intervall_seconds = 3").is_err());
    assert!(ProbeConfig::default().problems().is_empty());
    assert_eq!(split_target("[2001:db8::1]:443"), Ok(("2001:db8::1", 443)));
}
