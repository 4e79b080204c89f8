use std::time::Instant;

use egress_query::model::{ExporterConfig, InterfaceConfig, Kind, ModelConfig, Role};
use egress_query::schema::{to_v6, InterfaceKind};

use super::*;
use crate::normalise::FlowType;

const EDGE1: [u8; 4] = [192, 0, 2, 1];
const UNCONFIGURED: [u8; 4] = [192, 0, 2, 9];

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

fn exporter(address: [u8; 4], default: Option<u64>, override_rate: Option<u64>) -> ExporterConfig {
    ExporterConfig {
        address: address.into(),
        name: None,
        site: None,
        sampling_default: default,
        sampling_override: override_rate,
        interfaces: Vec::new(),
    }
}

/// edge1 with transit A (1), peering (3), internal ae0 (10) and ae1 (11); a second exporter
/// with only a sampling default; internal 10/8 and fd00::/8; one cloud range.
fn enricher() -> Enricher {
    let edge1 = ExporterConfig {
        name: Some("edge1".to_owned()),
        site: Some("fra1".to_owned()),
        interfaces: vec![
            interface(
                1,
                "et-0/0/1",
                Role::External,
                Some(Kind::Transit),
                Some("Transit A"),
            ),
            interface(3, "et-0/0/3", Role::External, Some(Kind::Peering), None),
            interface(10, "ae0", Role::Internal, None, None),
            interface(11, "ae1", Role::Internal, None, None),
        ],
        ..exporter(EDGE1, None, None)
    };
    let model = ModelConfig {
        internal_prefixes: vec!["10.0.0.0/8".parse().expect("v4"), "fd00::/8".parse().expect("v6")],
        cloud_ranges: Vec::new(),
    };
    let clouds = vec![
        (
            "52.94.0.0/16".parse().expect("net"),
            "aws/AMAZON/eu-west-1".to_owned(),
        ),
        (
            "52.94.5.0/24".parse().expect("net"),
            "aws/S3/eu-west-1".to_owned(),
        ),
    ];
    Enricher::new(EgressModel::from_parts(
        &model,
        &[edge1, exporter(UNCONFIGURED, Some(100), None)],
        clouds,
    ))
}

fn flow(exporter: [u8; 4], src: &str, dst: &str, in_if: u32, out_if: u32) -> FlowRecord {
    let mut record = FlowRecord::new(exporter.into(), 0, FlowType::Ipfix);
    record.src_addr = to_v6(src.parse().expect("src"));
    record.dst_addr = to_v6(dst.parse().expect("dst"));
    record.in_if = in_if;
    record.out_if = out_if;
    record
}

fn enriched(enricher: &Enricher, record: FlowRecord) -> FlowRecord {
    let exporter = crate::normalise::from_v6(record.exporter_address);
    let mut records = [record];
    enricher.apply(exporter, &mut records);
    let [record] = records;
    record
}

#[test]
fn outbound_through_a_configured_external_interface_gets_its_path_and_names() {
    let enricher = enricher();
    let record = enriched(&enricher, flow(EDGE1, "10.1.2.3", "52.94.5.7", 10, 1));
    assert_eq!(record.traffic_direction, TrafficDirection::Outbound);
    assert_eq!(record.egress_path, "edge1 / et-0/0/1 (Transit A)");
    assert_eq!(
        (record.exporter_name.as_str(), record.exporter_site.as_str()),
        ("edge1", "fra1")
    );
    assert_eq!(
        (record.in_if_name.as_str(), record.out_if_name.as_str()),
        ("ae0", "et-0/0/1")
    );
    assert_eq!(
        (record.in_if_role, record.out_if_role),
        (InterfaceRole::Internal, InterfaceRole::External)
    );
    assert_eq!(
        (record.in_if_kind, record.out_if_kind),
        (InterfaceKind::None, InterfaceKind::Transit)
    );
    assert_eq!(
        (record.in_if_provider.as_str(), record.out_if_provider.as_str()),
        ("", "Transit A")
    );
    assert_eq!((record.src_internal, record.dst_internal), (1, 0));
    assert_eq!(record.dst_cloud, "aws/S3/eu-west-1", "longest prefix");

    // The interfaces decide, not the addresses: out through the peering is egress even from a
    // non-internal source, and the path has no provider part.
    let record = enriched(&enricher, flow(EDGE1, "198.51.100.1", "52.94.6.1", 10, 3));
    assert_eq!(record.traffic_direction, TrafficDirection::Outbound);
    assert_eq!(record.egress_path, "edge1 / et-0/0/3");
    assert_eq!(record.dst_cloud, "aws/AMAZON/eu-west-1");
}

#[test]
fn inbound_and_internal_by_interfaces() {
    let enricher = enricher();
    let inbound = enriched(&enricher, flow(EDGE1, "198.51.100.1", "10.1.2.3", 1, 10));
    assert_eq!(inbound.traffic_direction, TrafficDirection::Inbound);
    assert_eq!(inbound.egress_path, "");
    assert_eq!(inbound.in_if_provider, "Transit A");
    assert_eq!(inbound.dst_cloud, "");
    // Between two internal interfaces: internal, even with an external destination address.
    let across = enriched(&enricher, flow(EDGE1, "10.1.2.3", "198.51.100.1", 10, 11));
    assert_eq!(across.traffic_direction, TrafficDirection::Internal);
    assert_eq!(across.egress_path, "");
}

#[test]
fn addresses_decide_where_interfaces_are_not_configured() {
    let enricher = enricher();
    let cases = [
        (
            UNCONFIGURED,
            "10.1.2.3",
            "198.51.100.1",
            TrafficDirection::Outbound,
        ),
        (
            UNCONFIGURED,
            "198.51.100.1",
            "10.1.2.3",
            TrafficDirection::Inbound,
        ),
        (UNCONFIGURED, "10.1.2.3", "10.9.9.9", TrafficDirection::Internal),
        (
            UNCONFIGURED,
            "198.51.100.1",
            "203.0.113.1",
            TrafficDirection::Transit,
        ),
        (
            UNCONFIGURED,
            "fd00:1::5",
            "2001:db8::1",
            TrafficDirection::Outbound,
        ),
        // A configured exporter with an unconfigured interface (out_if 0) falls back too.
        (EDGE1, "10.1.2.3", "198.51.100.1", TrafficDirection::Outbound),
        // An exporter not in the configuration at all.
        (
            [192, 0, 2, 200],
            "198.51.100.1",
            "fd12::1",
            TrafficDirection::Inbound,
        ),
    ];
    for (exporter, src, dst, expected) in cases {
        let record = enriched(&enricher, flow(exporter, src, dst, 0, 0));
        assert_eq!(record.traffic_direction, expected, "{src} -> {dst}");
        assert_eq!(record.egress_path, "", "no external interface, no path");
    }
    let unknown = enriched(&enricher, flow(UNCONFIGURED, "::", "::", 0, 0));
    assert_eq!(unknown.traffic_direction, TrafficDirection::Unknown);
}

#[test]
fn without_internal_prefixes_addresses_classify_nothing() {
    let enricher = Enricher::new(EgressModel::from_parts(
        &ModelConfig::default(),
        &[exporter(EDGE1, None, None)],
        Vec::new(),
    ));
    let record = enriched(&enricher, flow(EDGE1, "10.1.2.3", "198.51.100.1", 0, 0));
    assert_eq!(record.traffic_direction, TrafficDirection::Unknown);
    assert_eq!(record.src_internal, 0);
}

fn record(rate: u64, source: SamplingSource) -> FlowRecord {
    let mut r = FlowRecord::new(EDGE1.into(), 0, FlowType::Netflow9);
    r.sampling_rate = rate;
    r.sampling_source = source;
    r
}

fn sampling_only(exporters: &[ExporterConfig]) -> Enricher {
    Enricher::new(EgressModel::from_parts(
        &ModelConfig::default(),
        exporters,
        Vec::new(),
    ))
}

#[test]
fn default_fills_only_unknown_rates() {
    let enricher = sampling_only(&[exporter(EDGE1, Some(512), None)]);
    let mut records = [
        record(1, SamplingSource::Unknown),
        record(100, SamplingSource::Options),
    ];
    enricher.apply(EDGE1.into(), &mut records);
    assert_eq!(
        (records[0].sampling_rate, records[0].sampling_source),
        (512, SamplingSource::ConfigDefault)
    );
    assert_eq!(
        (records[1].sampling_rate, records[1].sampling_source),
        (100, SamplingSource::Options)
    );
}

#[test]
fn override_wins_and_other_exporters_are_untouched() {
    let enricher = sampling_only(&[exporter(EDGE1, Some(512), Some(2048))]);
    let mut mine = [record(100, SamplingSource::Header)];
    enricher.apply("::ffff:192.0.2.1".parse().expect("addr"), &mut mine);
    assert_eq!(
        (mine[0].sampling_rate, mine[0].sampling_source),
        (2048, SamplingSource::ConfigOverride)
    );
    let mut other = [record(1, SamplingSource::Unknown)];
    enricher.apply([192, 0, 2, 2].into(), &mut other);
    assert_eq!(other[0].sampling_source, SamplingSource::Unknown);
}

/// Records per second of [`Enricher::apply`] on outbound flows with every name set and a
/// cloud table of 5000 ranges. Run with
/// `cargo test --release -p egress-collector enrich::tests::apply_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run in release mode"]
fn apply_throughput() {
    let clouds = (0..5000u32)
        .map(|i| {
            let network = std::net::Ipv4Addr::from(0x3400_0000 + (i << 8));
            (
                ipnet::IpNet::from(ipnet::Ipv4Net::new(network, 24).expect("net")),
                format!("aws/EC2/r{}", i % 20),
            )
        })
        .collect();
    let edge1 = ExporterConfig {
        name: Some("edge1".to_owned()),
        site: Some("fra1".to_owned()),
        interfaces: vec![
            interface(
                1,
                "et-0/0/1",
                Role::External,
                Some(Kind::Transit),
                Some("Transit A"),
            ),
            interface(10, "ae0", Role::Internal, None, None),
        ],
        ..exporter(EDGE1, None, None)
    };
    let config = ModelConfig {
        internal_prefixes: vec!["10.0.0.0/8".parse().expect("v4"), "fd00::/8".parse().expect("v6")],
        cloud_ranges: Vec::new(),
    };
    let model = EgressModel::from_parts(&config, &[edge1], clouds);
    let enricher = Enricher::new(model);
    let template: Vec<FlowRecord> = (0..1024u32)
        .map(|i| {
            let mut r = flow(EDGE1, "10.1.2.3", "52.0.0.1", 10, 1);
            r.dst_addr = to_v6(std::net::Ipv4Addr::from(0x3400_0000 + i * 977).into());
            r
        })
        .collect();
    // One datagram-sized batch at a time, as a worker does; the copy of the decoded records is
    // timed alone and taken off.
    let rounds = 2000;
    let started = Instant::now();
    let mut copied = 0usize;
    for _ in 0..rounds {
        copied += std::hint::black_box(template.clone()).len();
    }
    let copying = started.elapsed();
    let started = Instant::now();
    let mut clouds_seen = 0usize;
    for _ in 0..rounds {
        let mut records = template.clone();
        enricher.apply(EDGE1.into(), &mut records);
        clouds_seen += records.iter().filter(|r| !r.dst_cloud.is_empty()).count();
    }
    let elapsed = started.elapsed().saturating_sub(copying);
    println!(
        "apply: {copied} records in {elapsed:?} (copies excluded): {:.2} M records/s ({clouds_seen} cloud hits)",
        copied as f64 / elapsed.as_secs_f64() / 1e6
    );
    assert!(clouds_seen > 0);

    // The same lookups with no names and no cloud ranges: what the string copies cost.
    let bare = ExporterConfig {
        interfaces: vec![
            InterfaceConfig {
                name: None,
                provider: None,
                ..interface(1, "", Role::External, Some(Kind::Transit), None)
            },
            InterfaceConfig {
                name: None,
                ..interface(10, "", Role::Internal, None, None)
            },
        ],
        ..exporter(EDGE1, None, None)
    };
    let bare = Enricher::new(EgressModel::from_parts(&config, &[bare], Vec::new()));
    let started = Instant::now();
    for _ in 0..rounds {
        let mut records = template.clone();
        bare.apply(EDGE1.into(), &mut records);
        std::hint::black_box(&records);
    }
    let elapsed = started.elapsed().saturating_sub(copying);
    println!(
        "apply without names: {:.2} M records/s",
        copied as f64 / elapsed.as_secs_f64() / 1e6
    );
}
