//! Decoding a whole capture file, in file order, with one [`Decoder`]: the engine behind
//! `egress decode` and the capture tests.
//!
//! Templates are learned in file order, per exporter (the datagram's source address), exactly
//! as the live collector learns them; the record's `time_received` is the capture timestamp.

use std::path::Path;

use crate::capture::{read_datagrams, CaptureError, CaptureSummary};
use crate::decode::{DecodeError, DecodeOutput, Decoder, DecoderConfig, LearnedState};
use crate::normalise::{FlowRecord, InterfaceCounterRecord};

/// Everything a capture decoded to.
#[derive(Debug, Default)]
pub struct DecodedCapture {
    pub capture: CaptureSummary,
    pub flows: Vec<FlowRecord>,
    pub counters: Vec<InterfaceCounterRecord>,
    /// Every decode error, whole-datagram and partial, in file order.
    pub errors: Vec<DecodeError>,
    pub learned: LearnedState,
    /// Data sets still waiting for a template at the end of the file.
    pub held_sets: usize,
}

/// Reads and decodes `path`.
pub fn decode_capture(path: &Path, config: &DecoderConfig) -> Result<DecodedCapture, CaptureError> {
    let (datagrams, capture) = read_datagrams(path)?;
    let mut decoder = Decoder::new(config);
    let mut result = DecodedCapture { capture, ..Default::default() };
    let mut out = DecodeOutput::default();
    for datagram in &datagrams {
        out.clear();
        if let Err(error) = decoder.decode(datagram.source.ip(), datagram.timestamp, &datagram.payload, &mut out) {
            result.errors.push(error);
        }
        result.flows.append(&mut out.flows);
        result.counters.append(&mut out.counters);
        result.errors.append(&mut out.errors);
    }
    result.learned = decoder.learned();
    result.held_sets = decoder.held_sets();
    Ok(result)
}
