//! Fuzzing harness shared by the fuzz targets: fuzzer input in, calls into the collector out.
//!
//! A decoder target's input is one or several export datagrams joined by [`DATAGRAM_SEPARATOR`],
//! all fed in order to ONE [`Decoder`], so that templates, options data and held data sets carry
//! over from one datagram to the next as they do on a listener. Each datagram's version field is
//! overwritten with the target's protocol so the fuzzer spends its time inside that decoder
//! instead of in the dispatcher's "unknown version" branch. Nothing is asserted: libFuzzer
//! reports panics, out-of-memory and timeouts.
//!
//! The seed corpora (`seed.sh`) are the reference captures' UDP payloads joined the same way.

use std::net::{IpAddr, Ipv4Addr};

use egress_collector::decode::{DecodeOutput, Decoder, DecoderConfig};

/// Separates datagrams in a decoder target's input. Four bytes that seldom occur in export
/// datagrams; when they do, the datagram is merely split in two, which is still a valid input.
pub const DATAGRAM_SEPARATOR: &[u8] = b"EGRS";

/// Datagrams fed per input at most, so that one input cannot take seconds.
const MAX_DATAGRAMS: usize = 256;

/// Seconds between two datagrams' receive times: the held-set TTL (300 s) expires after five
/// datagrams and the template TTL (3600 s) after sixty, so expiry paths are reached too.
const RECEIVE_INTERVAL_SECONDS: u32 = 61;

/// The protocol a decoder target feeds, as the version bytes written at the datagram's start.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    NetflowV5,
    NetflowV9,
    Ipfix,
    Sflow,
}

impl Protocol {
    fn version_bytes(self) -> &'static [u8] {
        match self {
            Self::NetflowV5 => &[0, 5],
            Self::NetflowV9 => &[0, 9],
            Self::Ipfix => &[0, 10],
            Self::Sflow => &[0, 0, 0, 5],
        }
    }
}

/// Limits small enough that the template LRU and the hold queue overflow within one input.
fn small_decoder_config() -> DecoderConfig {
    DecoderConfig {
        max_templates_per_exporter: 8,
        template_ttl_seconds: 3600,
        max_held_sets_per_exporter: 8,
        held_set_ttl_seconds: 300,
    }
}

/// Splits `input` into datagrams, forces each one's version field to `protocol` and decodes them
/// all with one decoder, then reads the state a caller would read (held sets, learned
/// templates, loss accounting).
pub fn decode_datagrams(protocol: Protocol, input: &[u8]) {
    let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut decoder = Decoder::new(&small_decoder_config());
    let mut out = DecodeOutput::default();
    let mut datagram = Vec::with_capacity(1500);
    let mut time_received = 1_700_000_000u32;
    for chunk in split_datagrams(input).take(MAX_DATAGRAMS) {
        datagram.clear();
        datagram.extend_from_slice(chunk);
        let version = protocol.version_bytes();
        if let Some(head) = datagram.get_mut(..version.len()) {
            head.copy_from_slice(version);
        }
        out.clear();
        // Errors are the expected outcome of most inputs; only a panic is a finding.
        let _ = decoder.decode(exporter, time_received, &datagram, &mut out);
        time_received = time_received.wrapping_add(RECEIVE_INTERVAL_SECONDS);
    }
    let _ = decoder.held_sets();
    let _ = decoder.learned();
    let _ = decoder.accounting.drain(time_received / 60);
}

/// Decodes every datagram as `egress decode` does: one decoder, each datagram's own source
/// address and capture time, whatever its protocol.
pub fn decode_captured(datagrams: &[egress_collector::capture::CapturedDatagram]) {
    let mut decoder = Decoder::new(&small_decoder_config());
    let mut out = DecodeOutput::default();
    for captured in datagrams.iter().take(MAX_DATAGRAMS) {
        out.clear();
        let _ = decoder.decode(
            captured.source.ip(),
            captured.timestamp,
            &captured.payload,
            &mut out,
        );
    }
    let _ = decoder.learned();
}

/// The datagrams of a decoder target's input, in order.
pub fn split_datagrams(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(input);
    std::iter::from_fn(move || {
        let current = rest?;
        match find(current, DATAGRAM_SEPARATOR) {
            Some(at) => {
                rest = current.get(at + DATAGRAM_SEPARATOR.len()..);
                current.get(..at)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
