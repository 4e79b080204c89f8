//! Decode micro-benchmarks: export datagrams in (read from pcaps before timing), records/s of
//! [`Decoder::decode`] and allocations per record out. No sockets, no ClickHouse: this is the
//! decode cost alone, the part of Egress's CPU the null sink measures end to end.
//!
//! Datasets, per protocol (NetFlow v5, v9, IPFIX, sFlow v5):
//! - `real/<protocol>`: every capture of `../shared/fixtures/captures/<folder>` (real devices'
//!   datagrams; `-data`/`-template` halves are skipped, their `-combined` file holds both),
//!   in file order, exporter = the datagram's source address;
//! - `generated/<protocol>`: softflowd's / pmacctd's streams written by `bench/make-streams.sh`
//!   (`$EGRESS_BENCH_STREAMS`, default `bench/streams`).
//!
//! A missing dataset is skipped with a message.
//!
//! Throughput is in flow records (sFlow: flow samples) per second. Allocations are counted by
//! a counting global allocator around one pass over the dataset with a warmed decoder (templates
//! known, output buffers reused), the steady state of a receive worker; the first pass (learning
//! templates, growing buffers) is reported beside it.
//!
//! Run: `cargo bench -p egress-collector --bench decode`.

// The counting allocator must implement `GlobalAlloc`, an unsafe trait; it only forwards to
// the system allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use egress_collector::capture::read_datagrams;
use egress_collector::decode::{DecodeOutput, Decoder, DecoderConfig};

/// Forwards to the system allocator and counts allocations (realloc counts as one).
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// One dataset: datagrams with their exporter.
struct Dataset {
    name: String,
    datagrams: Vec<(IpAddr, Vec<u8>)>,
}

/// (protocol, captures folder, generated stream file).
const PROTOCOLS: [(&str, &str, &str); 4] = [
    ("netflow5", "netflow-v5", "netflow5.pcap"),
    ("netflow9", "netflow-v9", "netflow9.pcap"),
    ("ipfix", "ipfix", "ipfix.pcap"),
    ("sflow5", "sflow-v5", "sflow5.pcap"),
];

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/captures")
}

fn streams_dir() -> PathBuf {
    std::env::var_os("EGRESS_BENCH_STREAMS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/streams"))
}

fn read_files(name: String, files: &[PathBuf]) -> Option<Dataset> {
    let mut datagrams = Vec::new();
    for file in files {
        match read_datagrams(file) {
            Ok((captured, _)) => {
                datagrams.extend(captured.into_iter().map(|d| (d.source.ip(), d.payload)));
            }
            Err(error) => eprintln!("skipping {}: {error}", file.display()),
        }
    }
    (!datagrams.is_empty()).then_some(Dataset { name, datagrams })
}

fn datasets() -> Vec<Dataset> {
    let mut sets = Vec::new();
    for (protocol, folder, stream) in PROTOCOLS {
        let dir = captures_dir().join(folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".pcap") && !name.ends_with("-data.pcap") && !name.ends_with("-template.pcap")
        });
        files.sort();
        match read_files(format!("real/{protocol}"), &files) {
            Some(set) => sets.push(set),
            None => eprintln!("real/{protocol}: no captures in {} (skipped)", dir.display()),
        }
        let path = streams_dir().join(stream);
        match path
            .exists()
            .then(|| read_files(format!("generated/{protocol}"), std::slice::from_ref(&path)))
        {
            Some(Some(set)) => sets.push(set),
            _ => eprintln!(
                "generated/{protocol}: no {} (run bench/make-streams.sh; skipped)",
                path.display()
            ),
        }
    }
    sets
}

/// Decodes every datagram once; returns the flow records produced.
fn decode_all(decoder: &mut Decoder, datagrams: &[(IpAddr, Vec<u8>)], out: &mut DecodeOutput) -> u64 {
    let mut records = 0;
    for (exporter, payload) in datagrams {
        out.clear();
        // Errors are part of real captures (and counted by the decoder); the records of a
        // partly bad datagram still count.
        let _ = decoder.decode(*exporter, 0, payload, out);
        records += out.flows.len() as u64;
    }
    records
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for set in datasets() {
        let mut decoder = Decoder::new(&DecoderConfig::default());
        let mut out = DecodeOutput::default();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let records = decode_all(&mut decoder, &set.datagrams, &mut out);
        let first_pass = ALLOCATIONS.load(Ordering::Relaxed) - before;
        if records == 0 {
            eprintln!("{}: no flow records (skipped)", set.name);
            continue;
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let steady_records = decode_all(&mut decoder, &set.datagrams, &mut out);
        let steady = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!(
            "{}: {} datagrams, {} records; allocations per record: {:.3} warmed, {:.3} first pass",
            set.name,
            set.datagrams.len(),
            records,
            steady as f64 / steady_records.max(1) as f64,
            first_pass as f64 / records as f64,
        );
        group.throughput(Throughput::Elements(steady_records));
        group.bench_function(&set.name, |b| {
            b.iter(|| decode_all(&mut decoder, &set.datagrams, &mut out))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = decode
}
criterion_main!(benches);
