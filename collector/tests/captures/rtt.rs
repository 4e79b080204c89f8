//! Latency check: the `rtt_*` columns of every decoded flow against what TShark shows.
//!
//! In: one capture's decoded flows. Out: the mismatches. A file listed in [`EXPECTED`] must give
//! those values (client, server, application µs, source) for its flows, in order; every other
//! file must store NULL and `none` for every flow: unknown stays unknown, never 0.
//!
//! None of the reference captures carries a latency element. Checked with
//! `tshark -r FILE -d udp.port==PORT,cflow -V | grep -E 'Type: .*\((5755[4-9]|5759[5-7])\)'`
//! (nProbe v9 57554-57559, 57595-57597) on every `netflow-v9/*` and `ipfix/*` file, the `pens`
//! of `expected.json` (no PEN 9, 35632 or 5951 among them), and
//! `tshark -r FILE -V | grep 'Format: '` on every `sflow-v5/*` file (no 0:2209
//! `extended_tcp_info`): the nProbe captures (`graylog-nprobe-*`, `logstash-nfv9-nprobe*.pcap`)
//! export only standard fields plus L7_PROTO (57590/57591), and the Cisco NBAR capture only
//! application ids. So [`EXPECTED`] is empty, and the decoding itself is proven against TShark
//! on generated exports carrying every latency element it dissects (`tests/rtt_tshark.rs`) and
//! by the hand-built datagrams of the decoder unit tests.

use egress_collector::decode_file::DecodedCapture;
use egress_query::schema::RttSource;

/// Latency of one flow: client, server, application (µs) and source.
type Latency = (Option<u32>, Option<u32>, Option<u32>, RttSource);

/// Files whose flows carry latency, with the values TShark shows, in flow order.
const EXPECTED: &[(&str, &[Latency])] = &[];

/// The mismatches of one capture.
pub fn check(file: &str, decoded: &DecodedCapture) -> Vec<String> {
    let got: Vec<Latency> = decoded
        .flows
        .iter()
        .map(|f| (f.rtt_client_us, f.rtt_server_us, f.rtt_app_us, f.rtt_source))
        .collect();
    match EXPECTED.iter().find(|(name, _)| *name == file) {
        Some((_, expected)) if got != *expected => {
            vec![format!("rtt columns {got:?}, tshark shows {expected:?}")]
        }
        Some(_) => Vec::new(),
        None => got
            .iter()
            .enumerate()
            .filter(|(_, latency)| **latency != (None, None, None, RttSource::None))
            .map(|(index, latency)| format!("flow {index}: rtt columns {latency:?}, expected NULL"))
            .collect(),
    }
}
