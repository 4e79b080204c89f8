use super::*;
use crate::normalise::{FlowRecord, FlowType};
use egress_query::schema::ExporterStatsRow;
use proptest::prelude::*;

fn record(n: u64) -> FlowRecord {
    let mut r = FlowRecord::new([192, 0, 2, 1].into(), 7, FlowType::Netflow9);
    r.bytes = n;
    r.rtt_client_us = (n % 3 == 0).then_some(n as u32);
    r
}

fn flows(first: u64, count: u64) -> Batch {
    Batch::Flows((first..first + count).map(record).collect())
}

fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        enabled: true,
        dir: dir.to_owned(),
        max_bytes,
        fsync: FsyncPolicy::Batch,
    }
}

/// Replays everything: the batches in order.
fn drain(spool: &mut Spool) -> Vec<Batch> {
    let mut out = Vec::new();
    while let Some(spooled) = spool.oldest_except(&[]).unwrap() {
        spool.remove(spooled.sequence).unwrap();
        out.push(spooled.batch);
    }
    out
}

#[test]
fn batches_come_back_in_order_with_every_field_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let stats = Batch::Stats(
        vec![ExporterStatsRow {
            minute: 1_790_000_040,
            exporter_address: "::ffff:192.0.2.1".parse().unwrap(),
            observation_domain: 3,
            flow_type: FlowType::Ipfix,
            datagrams: 10,
            records: 100,
            records_lost: 2,
            decode_error_kinds: vec!["truncated".into()],
            decode_error_counts: vec![1],
            templates_known: 4,
        }]
        .into(),
    );
    {
        let mut spool = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
        assert!(spool.is_empty());
        spool.append(&flows(0, 100)).unwrap();
        spool.append(&stats).unwrap();
        spool.append(&flows(100, 50)).unwrap();
        assert_eq!((spool.batches(), spool.flow_records()), (3, 150));
        // A second collector on the same directory is refused while this one holds it.
        assert!(matches!(
            Spool::open(&config(dir.path(), 1 << 30)),
            Err(SpoolError::Locked(_))
        ));
    }
    // A crash mid-write leaves a .tmp file: removed at open, never replayed.
    fs::write(dir.path().join("00000000000000000099.tmp"), b"half a segment").unwrap();
    let mut spool = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    assert_eq!(spool.batches(), 3);
    assert!(!dir.path().join("00000000000000000099.tmp").exists());
    assert_eq!(drain(&mut spool), vec![flows(0, 100), stats, flows(100, 50)]);
    assert_eq!(spool.bytes(), 0);
    // New segments continue after the old sequence numbers.
    spool.append(&flows(7, 1)).unwrap();
    assert_eq!(spool.oldest_except(&[]).unwrap().unwrap().sequence, 3);
}

#[test]
fn rowbinary_flow_batches_come_back_byte_for_byte_and_count_as_flow_records() {
    let dir = tempfile::tempdir().unwrap();
    let rows: crate::batch::Rows<FlowRecord> = (0..40).map(record).collect();
    let encoded = Batch::EncodedFlows(EncodedFlows::encode(&rows));
    let mut spool = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    spool.append(&flows(0, 10)).unwrap();
    spool.append(&encoded).unwrap();
    assert_eq!((spool.batches(), spool.flow_records()), (2, 50));
    drop(spool);
    let mut spool = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    assert_eq!(drain(&mut spool), vec![flows(0, 10), encoded]);
}

#[test]
fn the_bound_drops_the_oldest_batches_and_says_how_many_rows() {
    let dir = tempfile::tempdir().unwrap();
    let one = {
        let mut probe = Spool::open(&config(&dir.path().join("probe"), 1 << 30)).unwrap();
        // The largest of the batches below (postcard integers grow with their values).
        probe.append(&flows(3000, 1000)).unwrap();
        probe.bytes()
    };
    let mut spool = Spool::open(&config(dir.path(), one * 3)).unwrap();
    for i in 0..3 {
        assert_eq!(spool.append(&flows(i * 1000, 1000)).unwrap(), Evicted::default());
    }
    let evicted = spool.append(&flows(3000, 1000)).unwrap();
    assert_eq!(evicted.flows, 1000);
    assert!(spool.bytes() <= one * 3);
    let kept = drain(&mut spool);
    assert_eq!(
        kept,
        vec![flows(1000, 1000), flows(2000, 1000), flows(3000, 1000)]
    );
}

#[test]
fn batches_replayed_side_by_side_are_skipped_and_removed_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    for i in 0..3 {
        spool.append(&flows(i * 10, 10)).unwrap();
    }
    let first = spool.oldest_except(&[]).unwrap().unwrap();
    let second = spool.oldest_except(&[first.sequence]).unwrap().unwrap();
    assert_eq!(first.batch, flows(0, 10));
    assert_eq!(second.batch, flows(10, 10));
    // The second insert finishes first: its segment goes, the first stays the oldest.
    spool.remove(second.sequence).unwrap();
    assert!(!dir.path().join(format!("{:020}.seg", second.sequence)).exists());
    assert_eq!((spool.batches(), spool.flow_records()), (2, 20));
    assert_eq!(
        spool.oldest_except(&[first.sequence]).unwrap().unwrap().batch,
        flows(20, 10)
    );
    assert!(
        spool.oldest_except(&[0, 1, 2]).unwrap().is_none(),
        "everything is in flight"
    );
    // A sequence already gone (evicted by the bound meanwhile) is no error.
    spool.remove(second.sequence).unwrap();
    spool.remove(first.sequence).unwrap();
    assert_eq!(drain(&mut spool), vec![flows(20, 10)]);
    assert_eq!(spool.bytes(), 0);
}

#[test]
fn a_corrupt_segment_is_set_aside_and_the_next_one_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    spool.append(&flows(0, 10)).unwrap();
    spool.append(&flows(10, 10)).unwrap();
    // Flip one payload byte of the first segment: the checksum no longer matches.
    let first = dir.path().join(format!("{:020}.seg", 0));
    let mut bytes = fs::read(&first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&first, bytes).unwrap();
    assert_eq!(drain(&mut spool), vec![flows(10, 10)]);
    assert_eq!(spool.corrupt_segments(), 1);
    assert!(dir.path().join(format!("{:020}.bad", 0)).exists());
    // A truncated segment is caught at open by its length.
    drop(spool);
    let mut spool = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    spool.append(&flows(20, 10)).unwrap();
    // Sequence numbers go on after the set-aside segment's (0): this is segment 1.
    let path = dir.path().join(format!("{:020}.seg", 1));
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    drop(spool);
    let mut spool = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    assert!(spool.is_empty());
    assert_eq!(drain(&mut spool), Vec::<Batch>::new());
}

#[derive(Debug, Clone)]
enum Op {
    Append(u64),
    Replay,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..40).prop_map(Op::Append),
        2 => Just(Op::Replay),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Against a model queue: whatever the interleaving of appends, replays and restarts (and
    /// with a bound that forces evictions), what comes out is the newest batches in the order
    /// they went in, nothing twice, and every row either replayed, still spooled, or counted as
    /// evicted.
    #[test]
    fn spool_behaves_like_a_bounded_queue(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        // Room for about eight of the largest batches, so long runs evict.
        let bound = {
            let probe_dir = tempfile::tempdir().unwrap();
            let mut probe = Spool::open(&config(probe_dir.path(), u64::MAX)).unwrap();
            probe.append(&flows(10_000, 40)).unwrap();
            8 * probe.bytes()
        };
        let mut spool = Spool::open(&config(dir.path(), bound)).unwrap();
        let mut model: VecDeque<Batch> = VecDeque::new();
        let (mut appended, mut replayed, mut evicted) = (0u64, 0u64, 0u64);
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Append(rows) => {
                    let batch = flows(next, rows);
                    next += rows;
                    appended += rows;
                    let out = spool.append(&batch).unwrap();
                    let mut dropped = out.flows;
                    evicted += dropped;
                    while dropped > 0 {
                        let oldest = model.pop_front().expect("evicted rows exist in the model");
                        dropped -= oldest.len() as u64;
                    }
                    model.push_back(batch);
                }
                Op::Replay => {
                    let got = spool.oldest_except(&[]).unwrap();
                    let want = model.pop_front();
                    prop_assert_eq!(got.as_ref().map(|s| &s.batch), want.as_ref());
                    if let Some(spooled) = got {
                        replayed += spooled.batch.len() as u64;
                        spool.remove(spooled.sequence).unwrap();
                    }
                }
                Op::Reopen => {
                    drop(spool);
                    spool = Spool::open(&config(dir.path(), bound)).unwrap();
                }
            }
            prop_assert!(spool.bytes() <= bound);
            prop_assert_eq!(spool.batches(), model.len());
        }
        let left: u64 = model.iter().map(|b| b.len() as u64).sum();
        prop_assert_eq!(appended, replayed + left + evicted);
        prop_assert_eq!(drain(&mut spool), Vec::from(model));
    }
}
