//! sFlow v5, decoded with `sflow-parser`, sampled headers with `etherparse`.
//! (Skeleton: being written.)

use std::net::IpAddr;

use super::accounting::Accounting;
use super::{DecodeOutput, DecoderConfig, Result};

#[derive(Debug)]
pub struct SflowDecoder {}

impl SflowDecoder {
    pub fn new(_config: &DecoderConfig) -> Self {
        Self {}
    }

    pub fn decode(
        &mut self,
        _exporter: IpAddr,
        _time_received: u32,
        _payload: &[u8],
        _accounting: &mut Accounting,
        _out: &mut DecodeOutput,
    ) -> Result<()> {
        Ok(())
    }
}
