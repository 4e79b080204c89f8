//! Fuzz target: sFlow v5 datagrams (joined by `egress_fuzz::DATAGRAM_SEPARATOR`) in, one
//! decoder's records, errors and state out; a panic, OOM or timeout is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    egress_fuzz::decode_datagrams(egress_fuzz::Protocol::Sflow, input);
});
