use super::*;

fn net(text: &str) -> IpNet {
    text.parse().expect("prefix")
}

fn stored(text: &str) -> Ipv6Addr {
    to_v6(text.parse().expect("address"))
}

fn interface(
    if_index: u32,
    name: &str,
    role: Role,
    kind: Option<Kind>,
    provider: Option<&str>,
) -> InterfaceConfig {
    InterfaceConfig {
        if_index,
        name: Some(name.to_owned()),
        role,
        kind,
        provider: provider.map(str::to_owned),
        capacity_bps: Some(10_000_000_000),
        committed_bps: None,
        description: None,
    }
}

fn exporter(address: &str, name: Option<&str>, interfaces: Vec<InterfaceConfig>) -> ExporterConfig {
    ExporterConfig {
        address: address.parse().expect("address"),
        name: name.map(str::to_owned),
        site: Some("fra1".to_owned()),
        sampling_default: None,
        sampling_override: None,
        interfaces,
    }
}

#[test]
fn internal_prefixes_match_ipv4_ipv6_and_mapped_addresses() {
    let model = ModelConfig {
        internal_prefixes: vec![net("10.0.0.0/8"), net("192.168.0.0/16"), net("fd00::/8")],
        cloud_ranges: Vec::new(),
    };
    let model = EgressModel::from_parts(&model, &[], Vec::new());
    for inside in [
        "10.0.0.0",
        "10.255.255.255",
        "192.168.7.1",
        "fd00::1",
        "fdff:ffff::",
    ] {
        assert!(model.is_internal(stored(inside)), "{inside}");
    }
    assert!(model.is_internal("::ffff:10.1.2.3".parse().expect("mapped")));
    for outside in [
        "11.0.0.0",
        "9.255.255.255",
        "192.169.0.0",
        "fe00::",
        "::",
        "2001:db8::1",
    ] {
        assert!(!model.is_internal(stored(outside)), "{outside}");
    }
    // An IPv6 address whose low 32 bits look like 10.x is not IPv4-mapped.
    assert!(!model.is_internal("::10.1.2.3".parse().expect("compat")));
}

#[test]
fn longest_prefix_wins_and_ranges_around_nested_prefixes_keep_the_outer_value() {
    let table = PrefixTable::new([
        (net("10.0.0.0/8"), "outer"),
        (net("10.1.0.0/16"), "middle"),
        (net("10.1.2.0/24"), "inner"),
        (net("10.1.2.0/24"), "repeated, ignored"),
        (net("10.3.0.0/16"), "sibling"),
        (net("0.0.0.0/0"), "all of IPv4"),
        (net("2001:db8::/32"), "v6"),
        (net("2001:db8:1::/48"), "v6 inner"),
    ]);
    let at = |address: &str| table.lookup(stored(address)).copied();
    assert_eq!(at("10.1.2.3"), Some("inner"));
    assert_eq!(at("10.1.3.0"), Some("middle"));
    assert_eq!(at("10.1.1.255"), Some("middle"));
    assert_eq!(at("10.2.0.0"), Some("outer"));
    assert_eq!(at("10.3.255.255"), Some("sibling"));
    assert_eq!(at("10.4.0.0"), Some("outer"));
    assert_eq!(at("10.255.255.255"), Some("outer"));
    assert_eq!(at("11.0.0.0"), Some("all of IPv4"));
    assert_eq!(at("255.255.255.255"), Some("all of IPv4"));
    assert_eq!(at("0.0.0.0"), Some("all of IPv4"));
    assert_eq!(at("2001:db8:1::5"), Some("v6 inner"));
    assert_eq!(at("2001:db8:2::5"), Some("v6"));
    assert_eq!(at("2001:db9::"), None);
    assert_eq!(at("::"), None);
    assert_eq!(table.lookup(Ipv6Addr::from(u128::MAX)), None);
}

#[test]
fn prefix_table_agrees_with_a_linear_scan() {
    let prefixes = [
        "0.0.0.0/1",
        "10.0.0.0/8",
        "10.0.0.0/9",
        "10.128.0.0/9",
        "10.200.0.0/16",
        "10.200.1.1/32",
        "::/0",
        "::/1",
        "8000::/1",
        "ffff:ffff::/32",
        "2001:db8::/32",
    ];
    let entries: Vec<(IpNet, usize)> = prefixes.iter().enumerate().map(|(i, p)| (net(p), i)).collect();
    let table = PrefixTable::new(entries.clone());
    let probes = [
        "0.0.0.0",
        "9.255.255.255",
        "10.0.0.0",
        "10.127.255.255",
        "10.128.0.0",
        "10.199.255.255",
        "10.200.1.0",
        "10.200.1.1",
        "10.200.1.2",
        "10.255.255.255",
        "127.0.0.1",
        "128.0.0.0",
        "255.255.255.255",
        "::",
        "::1",
        "7fff:ffff::",
        "8000::",
        "2001:db8::1",
        "ffff:ffff::1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ];
    for probe in probes {
        let address = stored(probe);
        let expected = entries
            .iter()
            .filter(|(prefix, _)| {
                let (first, length) = match prefix {
                    IpNet::V4(v4) => (u128::from(v4.network().to_ipv6_mapped()), v4.prefix_len() + 96),
                    IpNet::V6(v6) => (u128::from(v6.network()), v6.prefix_len()),
                };
                u128::from(address) & !host_mask(length) == first
            })
            .max_by_key(|(prefix, _)| match prefix {
                IpNet::V4(v4) => v4.prefix_len() + 96,
                IpNet::V6(v6) => v6.prefix_len(),
            })
            .map(|(_, i)| *i);
        assert_eq!(table.lookup(address).copied(), expected, "{probe}");
    }
}

const AWS_SAMPLE: &str = r#"{
  "syncToken": "1700000000",
  "createDate": "2026-11-01-00-00-00",
  "prefixes": [
    { "ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON", "network_border_group": "ap-northeast-2" },
    { "ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "S3", "network_border_group": "ap-northeast-2" },
    { "ip_prefix": "52.94.0.0/16", "region": "eu-west-1", "service": "AMAZON", "network_border_group": "eu-west-1" },
    { "ip_prefix": "52.94.5.0/24", "region": "eu-west-1", "service": "EC2", "network_border_group": "eu-west-1" }
  ],
  "ipv6_prefixes": [
    { "ipv6_prefix": "2600:1f14::/35", "region": "eu-west-1", "service": "EC2", "network_border_group": "eu-west-1" }
  ]
}"#;

#[test]
fn aws_ranges_are_labelled_by_service_and_region_preferring_a_specific_service() {
    let ranges = parse_aws_ranges(AWS_SAMPLE, "aws").expect("sample parses");
    assert_eq!(
        ranges,
        [
            (net("3.5.140.0/22"), "aws/S3/ap-northeast-2".to_owned()),
            (net("52.94.0.0/16"), "aws/AMAZON/eu-west-1".to_owned()),
            (net("52.94.5.0/24"), "aws/EC2/eu-west-1".to_owned()),
            (net("2600:1f14::/35"), "aws/EC2/eu-west-1".to_owned()),
        ]
    );
    let model = EgressModel::from_parts(&ModelConfig::default(), &[], ranges);
    assert_eq!(
        model.cloud(stored("52.94.5.9")).as_deref(),
        Some("aws/EC2/eu-west-1")
    );
    assert_eq!(
        model.cloud(stored("52.94.6.9")).as_deref(),
        Some("aws/AMAZON/eu-west-1")
    );
    assert_eq!(
        model.cloud(stored("2600:1f14::1")).as_deref(),
        Some("aws/EC2/eu-west-1")
    );
    assert_eq!(model.cloud(stored("8.8.8.8")), None);
    let error = parse_aws_ranges("{\"prefixes\": [{\"ip_prefix\": \"nope\"}]}", "aws").expect_err("bad");
    assert!(error.contains("not AWS ip-ranges.json"), "{error}");
}

#[test]
fn cidr_lists_skip_comments_and_name_the_bad_line() {
    let text = "# Office 365\n\n13.107.6.152/31   # trailing comment\n2603:1006::/40\n52.96.0.1\n";
    let ranges = parse_cidr_list(text, "microsoft/office365").expect("parses");
    assert_eq!(
        ranges.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [net("13.107.6.152/31"), net("2603:1006::/40"), net("52.96.0.1/32")]
    );
    assert!(ranges.iter().all(|(_, label)| label == "microsoft/office365"));
    let error = parse_cidr_list("10.0.0.0/8\n# fine\n10.0.0.0/33\n", "x").expect_err("bad line");
    assert!(error.starts_with("line 3:"), "{error}");
    assert!(error.contains("10.0.0.0/33"), "{error}");
}

#[test]
fn cloud_range_files_are_read_and_problems_name_their_keys() {
    let dir = std::env::temp_dir().join(format!("egress-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let aws = dir.join("ip-ranges.json");
    std::fs::write(&aws, AWS_SAMPLE).expect("write");
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "192.0.2.0/24\nnot a prefix\n").expect("write");
    let config = ModelConfig {
        internal_prefixes: vec![net("10.0.0.0/8")],
        cloud_ranges: vec![
            CloudRangeSource {
                file: aws.clone(),
                format: CloudRangeFormat::Aws,
                label: None,
            },
            CloudRangeSource {
                file: bad.clone(),
                format: CloudRangeFormat::Cidr,
                label: Some("office".to_owned()),
            },
            CloudRangeSource {
                file: dir.join("missing.txt"),
                format: CloudRangeFormat::Cidr,
                label: None,
            },
        ],
    };
    let problems = problems(&config, &[]);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("model.cloud_ranges[1].file: ") && problems[0].contains("line 2"));
    assert!(
        problems[1].starts_with("model.cloud_ranges[2].label: "),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].starts_with("model.cloud_ranges[2].file: cannot read"),
        "{}",
        problems[2]
    );

    let good = ModelConfig {
        cloud_ranges: config.cloud_ranges[..1].to_vec(),
        ..config
    };
    let model = EgressModel::build(&good, &[]).expect("builds");
    assert_eq!(
        model.cloud(stored("3.5.141.1")).as_deref(),
        Some("aws/S3/ap-northeast-2")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn exporter_and_interface_problems_name_their_keys() {
    let mut internal_with_kind = interface(10, "ae0", Role::Internal, Some(Kind::Transit), None);
    internal_with_kind.capacity_bps = Some(0);
    let exporters = [
        exporter(
            "192.0.2.1",
            Some("edge1"),
            vec![
                interface(
                    1,
                    "et-0/0/1",
                    Role::External,
                    Some(Kind::Transit),
                    Some("Transit A"),
                ),
                interface(1, "et-0/0/2", Role::External, Some(Kind::Transit), None),
                internal_with_kind,
            ],
        ),
        exporter("::ffff:192.0.2.1", None, Vec::new()),
    ];
    let model = ModelConfig {
        internal_prefixes: vec![net("10.1.2.3/8")],
        cloud_ranges: Vec::new(),
    };
    let problems = problems(&model, &exporters);
    let keys: Vec<&str> = problems
        .iter()
        .map(|p| p.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        [
            "model.internal_prefixes[0]",
            "exporters[0].interfaces[1].if_index",
            "exporters[0].interfaces[2].kind",
            "exporters[0].interfaces[2].capacity_bps",
            "exporters[1].address",
        ],
        "{problems:?}"
    );
    assert!(problems[0].contains("10.0.0.0/8"), "{}", problems[0]);
}

#[test]
fn exporters_interfaces_and_paths_are_looked_up_and_labelled() {
    let mut unnamed = interface(7, "", Role::External, Some(Kind::Peering), None);
    unnamed.name = None;
    unnamed.capacity_bps = None;
    let exporters = [
        exporter(
            "192.0.2.1",
            Some("edge1"),
            vec![
                interface(10, "ae0", Role::Internal, None, None),
                interface(
                    1,
                    "et-0/0/1",
                    Role::External,
                    Some(Kind::Transit),
                    Some("Transit A"),
                ),
                unnamed,
            ],
        ),
        exporter(
            "2001:db8::1",
            None,
            vec![interface(
                3,
                "xe-0/0/3",
                Role::External,
                Some(Kind::Cloud),
                Some("AWS"),
            )],
        ),
    ];
    let model = EgressModel::from_parts(&ModelConfig::default(), &exporters, Vec::new());
    let edge1 = model
        .exporter(stored("192.0.2.1").into())
        .expect("mapped address finds edge1");
    assert_eq!(edge1.name, "edge1");
    assert!(model.exporter("192.0.2.1".parse().expect("v4")).is_some());
    assert!(model.exporter("192.0.2.2".parse().expect("v4")).is_none());
    let transit = edge1.interface(1).expect("ifIndex 1");
    assert_eq!(transit.path_label, "edge1 / et-0/0/1 (Transit A)");
    assert_eq!(
        (transit.role, transit.kind),
        (InterfaceRole::External, InterfaceKind::Transit)
    );
    assert_eq!(edge1.interface(10).map(|i| i.path_label.as_str()), Some(""));
    assert!(edge1.interface(2).is_none());

    let paths = model.paths();
    let labels: Vec<&str> = paths.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "edge1 / et-0/0/1 (Transit A)",
            "edge1 / ifIndex 7",
            "2001:db8::1 / xe-0/0/3 (AWS)"
        ]
    );
    assert_eq!(paths[0].capacity_bps, Some(10_000_000_000));
    assert_eq!((paths[1].kind, paths[1].capacity_bps), ("peering", None));
    assert_eq!(paths[2].exporter_name, "");
}

#[test]
fn model_config_parses_with_unknown_keys_refused() {
    let config: ModelConfig = serde_json::from_str(
        r#"{"internal_prefixes": ["10.0.0.0/8", "fd00::/8"],
            "cloud_ranges": [{"file": "o365.txt", "format": "cidr", "label": "microsoft/office365"}]}"#,
    )
    .expect("parses");
    assert_eq!(config.internal_prefixes.len(), 2);
    assert_eq!(config.cloud_ranges[0].format, CloudRangeFormat::Cidr);
    let error =
        serde_json::from_str::<InterfaceConfig>(r#"{"if_index": 1, "role": "external", "capcity_bps": 1}"#)
            .expect_err("typo");
    assert!(error.to_string().contains("capcity_bps"), "{error}");
}
