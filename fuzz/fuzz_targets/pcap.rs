//! Fuzz target: a pcap or pcapng file in, its UDP datagrams out, each then decoded as
//! `egress decode` does; a panic, OOM or timeout is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|capture: &[u8]| {
    if let Ok((datagrams, _summary)) = egress_collector::capture::read_datagrams_from(capture, "fuzz") {
        egress_fuzz::decode_captured(&datagrams);
    }
});
