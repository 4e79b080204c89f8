//! NetFlow v5, v9 and IPFIX, decoded with `netflow_parser`.
//! (Skeleton: being written.)

use std::net::IpAddr;

use super::accounting::Accounting;
use super::{DecodeOutput, DecoderConfig, LearnedState, Result};

#[derive(Debug)]
pub struct NetflowDecoder {}

impl NetflowDecoder {
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

    pub fn held_sets(&self) -> usize {
        0
    }

    pub fn learned(&self) -> LearnedState {
        LearnedState::default()
    }
}
