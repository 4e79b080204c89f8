//! Hostile input: truncated, mutated and random datagrams never panic the decoder or stop the
//! collector, and each failure is counted under its error kind.
//!
//! Seeds are the real datagrams of every reference capture (so mutations reach deep into
//! templates, options and samples), mutated by a seeded RNG: truncation at every kind of
//! offset, bit flips, byte overwrites with boundary values (0, 0xff, lengths), spliced
//! headers, and pure random bytes behind a valid version field.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use egress_collector::capture::read_datagrams;
use egress_collector::config::Config;
use egress_collector::decode::{DecodeErrorKind, DecodeOutput, Decoder, DecoderConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CASES: usize = 120_000;

fn seed_datagrams() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/captures");
    let mut seeds = Vec::new();
    for dir in ["netflow-v5", "netflow-v9", "ipfix", "sflow-v5"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("reference captures") {
            let (datagrams, _) = read_datagrams(&entry.expect("entry").path()).expect("capture");
            seeds.extend(datagrams.into_iter().map(|d| d.payload));
        }
    }
    assert!(
        seeds.len() > 500,
        "expected the reference captures' datagrams, found {}",
        seeds.len()
    );
    seeds
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    match rng.random_range(0..6) {
        // Truncate anywhere.
        0 => data.truncate(rng.random_range(0..=data.len())),
        // Flip a few bits.
        1 => {
            for _ in 0..rng.random_range(1..8) {
                if !data.is_empty() {
                    let i = rng.random_range(0..data.len());
                    data[i] ^= 1 << rng.random_range(0..8);
                }
            }
        }
        // Overwrite 16-bit words (lengths, counts, ids) with boundary values.
        2 => {
            for _ in 0..rng.random_range(1..4) {
                if data.len() >= 2 {
                    let i = rng.random_range(0..data.len() - 1);
                    let value: u16 = [0, 1, 2, 3, 4, 0x7fff, 0xffff, 255, 256][rng.random_range(0..9)];
                    data[i..i + 2].copy_from_slice(&value.to_be_bytes());
                }
            }
        }
        // Random bytes behind a valid version field.
        3 => {
            let header: &[u8] = [&[0, 5][..], &[0, 9], &[0, 10], &[0, 0, 0, 5]][rng.random_range(0..4)];
            let len = rng.random_range(0..1500);
            data = header
                .iter()
                .copied()
                .chain((0..len).map(|_| rng.random()))
                .collect();
        }
        // Duplicate or drop a slice (shifts every following field).
        4 => {
            if data.len() > 8 {
                let a = rng.random_range(0..data.len());
                let b = rng.random_range(a..data.len());
                if rng.random_bool(0.5) {
                    let slice = data[a..b].to_vec();
                    data.splice(a..a, slice);
                } else {
                    data.drain(a..b);
                }
            }
        }
        // Pure noise.
        _ => {
            let len = rng.random_range(0..200);
            data = (0..len).map(|_| rng.random()).collect();
        }
    }
    data
}

#[test]
fn mutated_datagrams_never_panic_and_every_error_is_counted() {
    let seeds = seed_datagrams();
    let mut rng = StdRng::seed_from_u64(0x5eed_e6e5);
    let mut decoder = Decoder::new(&DecoderConfig::default());
    let mut out = DecodeOutput::default();
    let mut returned: BTreeMap<DecodeErrorKind, u64> = BTreeMap::new();
    let mut decoded_records = 0usize;
    for case in 0..CASES {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let datagram = mutate(&mut rng, seed);
        // A handful of exporters, so state (templates, sequences) accumulates across cases.
        let exporter = IpAddr::from([192, 0, 2, (case % 7) as u8]);
        out.clear();
        if let Err(error) = decoder.decode(exporter, 1_700_000_000, &datagram, &mut out) {
            assert_eq!(error.exporter, exporter);
            assert!(
                error.offset <= datagram.len().max(1),
                "offset {} beyond datagram of {}",
                error.offset,
                datagram.len()
            );
            *returned.entry(error.kind).or_default() += 1;
        }
        for error in &out.errors {
            *returned.entry(error.kind).or_default() += 1;
        }
        decoded_records += out.flows.len() + out.counters.len();
    }
    let mut counted: BTreeMap<DecodeErrorKind, u64> = BTreeMap::new();
    for (_, counters) in decoder.accounting.iter() {
        for (kind, n) in &counters.errors {
            *counted.entry(*kind).or_default() += n;
        }
    }
    eprintln!("{CASES} cases: errors by kind {returned:?}, records still decoded {decoded_records}");
    assert_eq!(
        counted, returned,
        "every returned error must be counted in the accounting, by kind"
    );
    assert!(
        returned.values().sum::<u64>() > (CASES / 4) as u64,
        "mutations should mostly fail: {returned:?}"
    );
    assert!(
        returned.len() >= 3,
        "expected several error kinds, got {returned:?}"
    );
    assert!(
        decoded_records > 0,
        "some mutations (bit flips in values) still decode"
    );
}

/// The same through a running collector: hostile datagrams over UDP do not stop it, they are
/// counted in `egress_decode_errors_total`, and a valid datagram afterwards is still decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_survives_hostile_datagrams() {
    let seeds = seed_datagrams();
    let config = Config::load(
        None,
        Vec::new(),
        &[
            "collector.listen=[\"127.0.0.1:0\"]".to_owned(),
            "collector.metrics_listen=\"127.0.0.1:0\"".to_owned(),
            "collector.sink=\"null\"".to_owned(),
            "collector.state_path=\"\"".to_owned(),
        ],
    )
    .expect("config");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = egress_collector::pipeline::start(config, shutdown.clone())
        .await
        .expect("collector");
    let target: SocketAddr = running.listening[0];
    let sender = UdpSocket::bind("127.0.0.1:0").expect("sender");
    let mut rng = StdRng::seed_from_u64(7);
    let hostile = 5_000u64;
    for i in 0..hostile {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let mut datagram = mutate(&mut rng, seed);
        if datagram.len() < 2 {
            datagram = vec![0xde, 0xad];
        }
        sender.send_to(&datagram, target).expect("send");
        if i % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // One well-formed NetFlow v5 datagram with one record, from a fresh exporter address.
    let clean = UdpSocket::bind("127.0.0.2:0").expect("second sender");
    let mut v5 = vec![0u8; 24 + 48];
    v5[0..2].copy_from_slice(&5u16.to_be_bytes()); // version
    v5[2..4].copy_from_slice(&1u16.to_be_bytes()); // count
    v5[24 + 16..24 + 20].copy_from_slice(&3u32.to_be_bytes()); // dPkts
    v5[24 + 20..24 + 24].copy_from_slice(&300u32.to_be_bytes()); // dOctets
    clean.send_to(&v5, target).expect("send clean");

    let metrics = running.metrics.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let received = metrics.datagrams_received.get();
        if received > hostile || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics.render();
    let errors: u64 = text
        .lines()
        .filter(|l| l.starts_with("egress_decode_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        metrics.datagrams_received.get(),
        hostile + 1,
        "every datagram was received"
    );
    assert!(
        errors > hostile / 4,
        "hostile datagrams are counted as decode errors: {errors}"
    );
    let v5_decoded = text
        .lines()
        .find(|l| l.starts_with("egress_records_decoded_total{protocol=\"netflow5\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(v5_decoded >= 1, "the clean datagram after the flood was decoded");
    running.shutdown().await;
}
