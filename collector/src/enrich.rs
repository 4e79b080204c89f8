//! Enrich: decoded records in, records with the configuration's knowledge applied out.
//!
//! For now: the per-exporter sampling settings. `sampling_override` replaces whatever the
//! export said (`sampling_source = config_override`); `sampling_default` fills in where the
//! export said nothing (`sampling_source` was `unknown`; it becomes `config_default`).
//! Egress classification and names come here too (monitor issue).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::ExporterConfig;
use crate::normalise::{FlowRecord, SamplingSource};

/// The enrichment tables, built once from the configuration and shared by every worker.
#[derive(Debug, Default, Clone)]
pub struct Enricher {
    exporters: HashMap<IpAddr, ExporterSampling>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ExporterSampling {
    default: Option<u64>,
    override_rate: Option<u64>,
}

impl Enricher {
    pub fn new(exporters: &[ExporterConfig]) -> Self {
        let exporters = exporters
            .iter()
            .filter(|e| e.sampling_default.is_some() || e.sampling_override.is_some())
            .map(|e| {
                let settings = ExporterSampling {
                    default: e.sampling_default,
                    override_rate: e.sampling_override,
                };
                (canonical(e.address), settings)
            })
            .collect();
        Self { exporters }
    }

    /// Applies the settings of `exporter` to `records` (all from one datagram of it).
    pub fn apply(&self, exporter: IpAddr, records: &mut [FlowRecord]) {
        if self.exporters.is_empty() || records.is_empty() {
            return;
        }
        let Some(settings) = self.exporters.get(&canonical(exporter)) else {
            return;
        };
        for record in records {
            if let Some(rate) = settings.override_rate {
                record.sampling_rate = rate;
                record.sampling_source = SamplingSource::ConfigOverride;
            } else if let (Some(rate), SamplingSource::Unknown) = (settings.default, record.sampling_source) {
                record.sampling_rate = rate;
                record.sampling_source = SamplingSource::ConfigDefault;
            }
        }
    }
}

/// IPv4-mapped IPv6 source addresses (dual-stack sockets) match IPv4 settings.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::FlowType;

    fn exporter(address: [u8; 4], default: Option<u64>, override_rate: Option<u64>) -> ExporterConfig {
        ExporterConfig {
            address: address.into(),
            name: None,
            sampling_default: default,
            sampling_override: override_rate,
        }
    }

    fn record(rate: u64, source: SamplingSource) -> FlowRecord {
        let mut r = FlowRecord::new([192, 0, 2, 1].into(), 0, FlowType::Netflow9);
        r.sampling_rate = rate;
        r.sampling_source = source;
        r
    }

    #[test]
    fn default_fills_only_unknown_rates() {
        let enricher = Enricher::new(&[exporter([192, 0, 2, 1], Some(512), None)]);
        let mut records = [
            record(1, SamplingSource::Unknown),
            record(100, SamplingSource::Options),
        ];
        enricher.apply([192, 0, 2, 1].into(), &mut records);
        assert_eq!(
            (records[0].sampling_rate, records[0].sampling_source),
            (512, SamplingSource::ConfigDefault)
        );
        assert_eq!(
            (records[1].sampling_rate, records[1].sampling_source),
            (100, SamplingSource::Options)
        );
    }

    #[test]
    fn override_wins_and_other_exporters_are_untouched() {
        let enricher = Enricher::new(&[exporter([192, 0, 2, 1], Some(512), Some(2048))]);
        let mut mine = [record(100, SamplingSource::Header)];
        enricher.apply("::ffff:192.0.2.1".parse().expect("addr"), &mut mine);
        assert_eq!(
            (mine[0].sampling_rate, mine[0].sampling_source),
            (2048, SamplingSource::ConfigOverride)
        );
        let mut other = [record(1, SamplingSource::Unknown)];
        enricher.apply([192, 0, 2, 2].into(), &mut other);
        assert_eq!(other[0].sampling_source, SamplingSource::Unknown);
    }
}
