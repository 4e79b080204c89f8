//! Decoder state across a restart: export from one decoder, JSON, import into a fresh one.

use std::net::IpAddr;

use super::*;
use crate::decode::netflow::tests::{ipfix, v9, EXPORTER_A, NOW};
use crate::decode::{DecodeOutput, Decoder, DecoderConfig};
use crate::normalise::SamplingSource;

/// v9 template 256: source address, octets, sampler id.
const V9_FLOW_TEMPLATE: &[u8] = &[
    0x00, 0x00, // flowset id 0: templates
    0x00, 0x14, // flowset length 20
    0x01, 0x00, // template id 256
    0x00, 0x03, // field count 3
    0x00, 0x08, 0x00, 0x04, // IPV4_SRC_ADDR (8), 4 bytes
    0x00, 0x01, 0x00, 0x04, // IN_BYTES (1), 4 bytes
    0x00, 0x30, 0x00, 0x01, // FLOW_SAMPLER_ID (48), 1 byte
];

/// v9 options template 257: scope System, sampler id and sampling interval.
const V9_OPTIONS_TEMPLATE: &[u8] = &[
    0x00, 0x01, // flowset id 1: options templates
    0x00, 0x18, // flowset length 24
    0x01, 0x01, // template id 257
    0x00, 0x04, // option scope length 4
    0x00, 0x08, // option length 8
    0x00, 0x01, 0x00, 0x04, // scope: System (1), 4 bytes
    0x00, 0x30, 0x00, 0x01, // FLOW_SAMPLER_ID (48), 1 byte
    0x00, 0x22, 0x00, 0x04, // SAMPLING_INTERVAL (34), 4 bytes
    0x00, 0x00, // padding
];

/// v9 options data of template 257: sampler 5 samples 1 in 100.
const V9_OPTIONS_DATA: &[u8] = &[
    0x01, 0x01, // flowset id 257
    0x00, 0x0d, // flowset length 13
    0x00, 0x00, 0x00, 0x00, // scope System: 0
    0x05, // FLOW_SAMPLER_ID 5
    0x00, 0x00, 0x00, 0x64, // SAMPLING_INTERVAL 100
];

/// v9 data of template 256: 10.0.0.1, 1000 bytes, sampler 5.
const V9_DATA: &[u8] = &[
    0x01, 0x00, // flowset id 256
    0x00, 0x10, // flowset length 16
    10, 0, 0, 1, // IPV4_SRC_ADDR
    0x00, 0x00, 0x03, 0xe8, // IN_BYTES 1000
    0x05, // FLOW_SAMPLER_ID 5
    0x00, 0x00, 0x00, // padding
];

/// IPFIX template 300: sourceIPv4Address, octetDeltaCount (8 bytes), selectorId (2 bytes).
const IPFIX_FLOW_TEMPLATE: &[u8] = &[
    0x00, 0x02, // set id 2: templates
    0x00, 0x14, // set length 20
    0x01, 0x2c, // template id 300
    0x00, 0x03, // field count 3
    0x00, 0x08, 0x00, 0x04, // sourceIPv4Address (8), 4 bytes
    0x00, 0x01, 0x00, 0x08, // octetDeltaCount (1), 8 bytes
    0x01, 0x2e, 0x00, 0x02, // selectorId (302), 2 bytes
];

/// IPFIX options template 301: scope selectorId; samplingPacketInterval, samplingPacketSpace.
const IPFIX_OPTIONS_TEMPLATE: &[u8] = &[
    0x00, 0x03, // set id 3: options templates
    0x00, 0x16, // set length 22
    0x01, 0x2d, // template id 301
    0x00, 0x03, // field count 3
    0x00, 0x01, // scope field count 1
    0x01, 0x2e, 0x00, 0x02, // scope: selectorId (302), 2 bytes
    0x01, 0x31, 0x00, 0x04, // samplingPacketInterval (305), 4 bytes
    0x01, 0x32, 0x00, 0x04, // samplingPacketSpace (306), 4 bytes
];

/// IPFIX options data of template 301: selector 7 takes 1 packet, skips 63 (1 in 64).
const IPFIX_OPTIONS_DATA: &[u8] = &[
    0x01, 0x2d, // set id 301
    0x00, 0x0e, // set length 14
    0x00, 0x07, // selectorId 7
    0x00, 0x00, 0x00, 0x01, // samplingPacketInterval 1
    0x00, 0x00, 0x00, 0x3f, // samplingPacketSpace 63
];

/// IPFIX data of template 300: 10.0.0.2, 2000 bytes, selector 7.
const IPFIX_DATA: &[u8] = &[
    0x01, 0x2c, // set id 300
    0x00, 0x12, // set length 18
    10, 0, 0, 2, // sourceIPv4Address
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0xd0, // octetDeltaCount 2000
    0x00, 0x07, // selectorId 7
];

const V9_SOURCE_ID: u32 = 3;
const IPFIX_DOMAIN: u32 = 9;

/// A decoder that has learned both protocols' templates and options from `EXPORTER_A`: v9
/// datagram 1 seen (next: 2), IPFIX sequence 0 with one options record (next: 1).
fn learned_decoder(config: &DecoderConfig) -> Decoder {
    let mut decoder = Decoder::new(config);
    let mut out = DecodeOutput::default();
    let v9_setup = v9(
        V9_SOURCE_ID,
        1,
        &[V9_FLOW_TEMPLATE, V9_OPTIONS_TEMPLATE, V9_OPTIONS_DATA],
    );
    let ipfix_setup = ipfix(
        IPFIX_DOMAIN,
        0,
        &[IPFIX_FLOW_TEMPLATE, IPFIX_OPTIONS_TEMPLATE, IPFIX_OPTIONS_DATA],
    );
    for datagram in [v9_setup, ipfix_setup] {
        decoder
            .decode(EXPORTER_A, NOW, &datagram, &mut out)
            .expect("valid setup datagram");
    }
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    decoder
}

/// Decodes the data-only datagrams (v9 sequence `v9_sequence`, IPFIX `ipfix_sequence`) at `at`.
fn decode_data(decoder: &mut Decoder, at: u32, v9_sequence: u32, ipfix_sequence: u32) -> DecodeOutput {
    let mut out = DecodeOutput::default();
    decoder
        .decode(
            EXPORTER_A,
            at,
            &v9(V9_SOURCE_ID, v9_sequence, &[V9_DATA]),
            &mut out,
        )
        .expect("v9 data");
    decoder
        .decode(
            EXPORTER_A,
            at,
            &ipfix(IPFIX_DOMAIN, ipfix_sequence, &[IPFIX_DATA]),
            &mut out,
        )
        .expect("ipfix data");
    out
}

fn rates(out: &DecodeOutput) -> Vec<(u64, u64, SamplingSource)> {
    out.flows
        .iter()
        .map(|f| (f.bytes, f.sampling_rate, f.sampling_source))
        .collect()
}

fn lost(decoder: &mut Decoder) -> u64 {
    decoder
        .accounting
        .drain(0)
        .iter()
        .map(|row| row.records_lost)
        .sum()
}

#[test]
fn restored_decoder_decodes_data_at_once_with_the_learned_sampling_rates() {
    let config = DecoderConfig::default();
    let before = learned_decoder(&config);
    let snapshot = before.export_state();
    let json = serde_json::to_string(&snapshot).expect("serialise");
    let restored: DecoderSnapshot = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(restored, snapshot, "JSON round trip");
    assert_eq!(
        restored.counts(),
        SnapshotCounts {
            exporters: 1,
            templates: 4,
            sampling_rates: 2,
            sequences: 2,
        }
    );

    let mut after = Decoder::new(&config);
    assert_eq!(after.import_state(&restored, NOW + 60), 4);
    assert_eq!(after.learned(), before.learned());
    assert_eq!(
        after.export_state(),
        snapshot,
        "what was imported exports unchanged"
    );
    let out = decode_data(&mut after, NOW + 60, 2, 1);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(after.held_sets(), 0);
    assert_eq!(
        rates(&out),
        [
            (1000, 100, SamplingSource::Options),
            (2000, 64, SamplingSource::Options)
        ]
    );

    // Without the restore, the same datagrams wait for templates that have not come.
    let mut cold = Decoder::new(&config);
    let out = decode_data(&mut cold, NOW + 60, 2, 1);
    assert!(out.flows.is_empty());
    assert_eq!(cold.held_sets(), 2);
}

#[test]
fn sequences_continue_across_a_restore_and_the_downtime_is_not_loss() {
    let config = DecoderConfig::default();
    let snapshot = learned_decoder(&config).export_state();
    assert_eq!(
        snapshot
            .sequences
            .iter()
            .map(|s| (s.protocol, s.next_sequence))
            .collect::<Vec<_>>(),
        [(SnapshotProtocol::Netflow9, 2), (SnapshotProtocol::Ipfix, 1)]
    );

    // The next datagrams carry the expected numbers: no gap.
    let mut after = Decoder::new(&config);
    after.import_state(&snapshot, NOW + 10);
    decode_data(&mut after, NOW + 10, 2, 1);
    assert_eq!(
        (lost(&mut after), after.accounting.missed_while_stopped()),
        (0, 0)
    );
    // v9 then skips datagram 3, IPFIX record 2 (one record per datagram so far): loss.
    decode_data(&mut after, NOW + 11, 4, 3);
    assert_eq!(lost(&mut after), 1 + 1);

    // The exporter went on while the collector was stopped: v9 sent datagrams 2..=5 (one record
    // each, as far as the restored mean knows), IPFIX records 1..=3. Not loss, but missed.
    let mut gap = Decoder::new(&config);
    gap.import_state(&snapshot, NOW + 10);
    decode_data(&mut gap, NOW + 10, 6, 4);
    assert_eq!(lost(&mut gap), 0);
    assert_eq!(gap.accounting.missed_while_stopped(), 4 + 3);
    // From then on, gaps are loss again.
    decode_data(&mut gap, NOW + 11, 8, 6);
    assert_eq!(lost(&mut gap), 1 + 1);

    // The exporter restarted while the collector was stopped: its numbers start again, below
    // the restored ones. That is neither loss nor a late datagram: the window follows it.
    let mut restarted = Decoder::new(&config);
    restarted.import_state(&snapshot, NOW + 10);
    decode_data(&mut restarted, NOW + 10, 0, 0);
    decode_data(&mut restarted, NOW + 11, 2, 2);
    assert_eq!(lost(&mut restarted), 1 + 1);
    assert_eq!(restarted.accounting.missed_while_stopped(), 0);
}

#[test]
fn state_too_old_is_not_restored() {
    let config = DecoderConfig {
        template_ttl_seconds: 600,
        ..DecoderConfig::default()
    };
    let snapshot = learned_decoder(&config).export_state();

    // Past the template TTL: the scope (sampling rates) and sequences come back, templates not.
    let mut late = Decoder::new(&config);
    assert_eq!(late.import_state(&snapshot, NOW + 601), 0);
    let learned = late.learned();
    assert!(learned.templates.is_empty(), "{learned:?}");
    assert_eq!(learned.sampling_rates.len(), 2);
    assert_eq!(late.export_state().sequences.len(), 2);

    // An exporter silent for longer than the restore limit is forgotten entirely.
    let mut stale = Decoder::new(&DecoderConfig::default());
    let day_later = NOW + u32::try_from(STATE_MAX_AGE_SECONDS).expect("fits") + 1;
    assert_eq!(stale.import_state(&snapshot, day_later), 0);
    assert_eq!(stale.export_state(), DecoderSnapshot::default());
}

#[test]
fn merge_keeps_the_newest_entry_whatever_the_order() {
    let config = DecoderConfig::default();
    let older = learned_decoder(&config).export_state();
    // The exporter redefined template 256 (one field) and its sampler 5 later.
    let mut newer = older.clone();
    let v9_scope = newer
        .scopes
        .iter_mut()
        .find(|s| s.protocol == SnapshotProtocol::Netflow9)
        .expect("v9 scope");
    v9_scope.last_active = NOW + 100;
    let template = v9_scope
        .templates
        .iter_mut()
        .find(|t| t.template_id == 256)
        .expect("template 256");
    template.refreshed = NOW + 100;
    template.fields.truncate(1);
    let rate = v9_scope
        .sampling_rates
        .iter_mut()
        .find(|r| r.sampler_id == Some(5))
        .expect("sampler 5");
    rate.rate = 1000;
    rate.learned = NOW + 100;
    newer.sequences[0].next_sequence = 40;
    newer.sequences[0].last_seen = NOW + 100;

    let forward = DecoderSnapshot::merge([older.clone(), newer.clone()], &config, NOW + 200);
    let backward = DecoderSnapshot::merge([newer.clone(), older], &config, NOW + 200);
    assert_eq!(forward, backward);
    assert_eq!(forward, newer);
}

#[test]
fn hand_edited_state_never_panics_and_keeps_only_usable_templates() {
    let snapshot = DecoderSnapshot {
        scopes: vec![ScopeSnapshot {
            exporter: IpAddr::from([192, 0, 2, 9]),
            protocol: SnapshotProtocol::Netflow5,
            observation_domain: 0,
            last_active: NOW,
            templates: vec![TemplateSnapshot {
                template_id: 256,
                options: false,
                refreshed: NOW,
                fields: vec![FieldSnapshot(1, 0, 4)],
            }],
            sampling_rates: Vec::new(),
        }],
        ..DecoderSnapshot::default()
    };
    let mut decoder = Decoder::new(&DecoderConfig::default());
    // NetFlow v5 has no templates: ignored.
    assert_eq!(decoder.import_state(&snapshot, NOW), 0);

    let mut bad = snapshot.scopes[0].clone();
    bad.protocol = SnapshotProtocol::Ipfix;
    bad.templates = vec![
        // A set id, not a template id.
        TemplateSnapshot {
            template_id: 2,
            ..bad.templates[0].clone()
        },
        // No fields.
        TemplateSnapshot {
            template_id: 257,
            fields: Vec::new(),
            ..bad.templates[0].clone()
        },
        // Only zero-length fields: kept (as when received), its data is an error, not a panic.
        TemplateSnapshot {
            template_id: 258,
            fields: vec![FieldSnapshot(1, 0, 0)],
            ..bad.templates[0].clone()
        },
    ];
    let snapshot = DecoderSnapshot {
        scopes: vec![bad],
        ..DecoderSnapshot::default()
    };
    assert_eq!(decoder.import_state(&snapshot, NOW), 1);
    let data: &[u8] = &[
        0x01, 0x02, // set id 258
        0x00, 0x08, // set length 8
        0x00, 0x00, 0x00, 0x01, // a record the template cannot describe
    ];
    let mut out = DecodeOutput::default();
    decoder
        .decode(IpAddr::from([192, 0, 2, 9]), NOW, &ipfix(0, 0, &[data]), &mut out)
        .expect("header is valid");
    assert!(out.flows.is_empty());
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
}
