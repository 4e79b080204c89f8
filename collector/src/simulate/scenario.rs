//! Scenarios: timed changes on top of the simulated fleet's background traffic, so that the
//! monitor's features show within minutes of `deploy/local/run.sh`.
//!
//! In: a [`Scenario`] (by name, from `egress run --scenario NAME`), a speed factor, and the
//! [`SimulateConfig`] of each simulated protocol's fleet. Out: the same configurations with a
//! [`Diurnal`] shape on their record rate and timed [`FlowSpec`]s (`start_after`) added; the
//! exporters then play the timeline on their own (see `VirtualExporter::poll_scenario` and the
//! pacing in `simulate::run`). Pure: no clock, no I/O.
//!
//! The `demo` timeline, at speed 1 (every time divided by the speed):
//!
//! | from | what | which alert |
//! | --- | --- | --- |
//! | 0 s | a diurnal day compressed into [`DEMO_DAY`]: the record rate of every fleet goes from 40 % at "night" (the start) to 100 % half a day later | none |
//! | [`EXFILTRATION_START`] | internal host [`EXFILTRATION_SOURCE`] uploads [`EXFILTRATION_BYTES_PER_SECOND`] to [`EXFILTRATION_DESTINATION`] through the first fleet's `edge1` Transit A | `exfiltration` |
//! | [`SATURATION_START`] | an offsite backup from [`SATURATION_SOURCE`] to [`SATURATION_DESTINATION`] (an allow-listed destination, so it is no exfiltration) fills the first fleet's `edge2` Transit B with [`SATURATION_BYTES_PER_SECOND`] | `throughput` |
//! | [`LATENCY_RISE`] | the probe target behind the delay line slows down (done by `egress-demo-net`, the test kit's delay-line binary, not by this module) | `latency` |
//!
//! The volumes are sized for `deploy/local/egress.toml`, where that Transit B has a capacity of
//! 1 Gbit/s (the saturation reaches 95 % of it, the throughput SLA's limit is 80 %) and the
//! exfiltration SLA's limit is 1 GB per minute (the upload sends 3 GB a minute). The scenario
//! flows go to the *first* fleet given to `egress run` (`--simulate` order); `edge2`'s flow
//! needs two routers per fleet and is left out with fewer.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use super::{FlowSpec, SimulateConfig};

/// Length of the demo's simulated day, at speed 1.
pub const DEMO_DAY: Duration = Duration::from_secs(600);
/// Share of the peak record rate at the trough of the demo's day.
pub const DEMO_TROUGH_SHARE: f64 = 0.4;
/// When the demo's exfiltration starts, at speed 1.
pub const EXFILTRATION_START: Duration = Duration::from_secs(60);
/// The internal host that exfiltrates (the first fleet's `edge1` serves 10.1.0.0/16).
pub const EXFILTRATION_SOURCE: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 23);
/// Where it uploads to (a documentation address, RFC 5737).
pub const EXFILTRATION_DESTINATION: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);
/// The upload's volume on the wire: 400 Mbit/s.
pub const EXFILTRATION_BYTES_PER_SECOND: u64 = 50_000_000;
/// When the demo's path saturation starts, at speed 1.
pub const SATURATION_START: Duration = Duration::from_secs(120);
/// The backup server behind the saturation (the first fleet's `edge2` serves 10.2.0.0/16).
pub const SATURATION_SOURCE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 50);
/// The offsite backup it sends to, in 198.18.0.0/15 (RFC 2544), which the demo configuration's
/// exfiltration SLA allows.
pub const SATURATION_DESTINATION: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 7);
/// The backup's volume on the wire: 950 Mbit/s, 95 % of a 1 Gbit/s transit.
pub const SATURATION_BYTES_PER_SECOND: u64 = 118_750_000;
/// The transit the backup leaves through: ifIndex 2, `et-0/0/2` (Transit B).
pub const SATURATION_TRANSIT_IF_INDEX: u32 = 2;
/// When the demo's probe target slows down, at speed 1. The simulator does not probe: this is
/// the time `egress-demo-net` (tests/testkit/src/bin) raises its delay line at, kept here so
/// that the whole timeline is written in one place.
pub const LATENCY_RISE: Duration = Duration::from_secs(180);

/// The record rate's daily shape: `rate × share(t)`, with `share` a raised cosine from
/// `trough_share` at the start (night) to 1 half a `period` later (the evening peak) and back.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diurnal {
    /// Length of one simulated day, in seconds.
    #[serde(with = "super::seconds")]
    pub period: Duration,
    /// Share of the peak rate at the trough, 0 to 1.
    pub trough_share: f64,
}

impl Diurnal {
    /// Records due after `elapsed` at a peak rate of `records_per_second`: the integral of the
    /// rate, `rate × (m t − a P/2π sin(2π t/P))` with `m = (1 + s)/2` and `a = (1 − s)/2`. It
    /// never decreases, so the pacing's token bucket keeps working.
    pub fn records_due(&self, records_per_second: u64, elapsed: Duration) -> u64 {
        let period = self.period.as_secs_f64().max(1e-3);
        let t = elapsed.as_secs_f64();
        let share = self.trough_share.clamp(0.0, 1.0);
        let mean = (1.0 + share) / 2.0;
        let amplitude = (1.0 - share) / 2.0;
        let angular = 2.0 * std::f64::consts::PI / period;
        let integral = mean * t - amplitude * (angular * t).sin() / angular;
        (records_per_second as f64 * integral.max(0.0)) as u64
    }

    /// The share of the peak rate at `elapsed`.
    pub fn share(&self, elapsed: Duration) -> f64 {
        let period = self.period.as_secs_f64().max(1e-3);
        let share = self.trough_share.clamp(0.0, 1.0);
        let phase = 2.0 * std::f64::consts::PI * elapsed.as_secs_f64() / period;
        (1.0 + share) / 2.0 - (1.0 - share) / 2.0 * phase.cos()
    }

    /// Problems with the shape, each naming its key under `prefix`.
    pub(crate) fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.period < Duration::from_secs(1) {
            problems.push(format!("{prefix}.period: must be at least 1 second"));
        }
        if !(0.0..=1.0).contains(&self.trough_share) {
            problems.push(format!(
                "{prefix}.trough_share: {} is not between 0 and 1",
                self.trough_share
            ));
        }
        problems
    }
}

/// A named timeline of changes to the simulated traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scenario {
    /// The local run's demonstration: a compressed day, an exfiltrating host, a saturated path
    /// (and, outside the simulator, a probe target that slows down); see the module header.
    Demo,
}

impl Scenario {
    /// The name accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Demo => "demo",
        }
    }

    /// Adds the scenario to the configuration of the `fleet_index`-th fleet (0-based, in the
    /// order of `--simulate`), its times divided by `speed` (above 0; 1 = the times of the
    /// module header).
    pub fn apply(self, fleet_index: usize, speed: f64, config: &mut SimulateConfig) {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        let scaled = |d: Duration| d.div_f64(speed);
        match self {
            Self::Demo => {
                config.diurnal = Some(Diurnal {
                    period: scaled(DEMO_DAY),
                    trough_share: DEMO_TROUGH_SHARE,
                });
                if fleet_index != 0 {
                    return;
                }
                config.extra_flows.push(FlowSpec {
                    exporter: 0,
                    src_addr: IpAddr::V4(EXFILTRATION_SOURCE),
                    dst_addr: IpAddr::V4(EXFILTRATION_DESTINATION),
                    src_port: 50_123,
                    dst_port: 443,
                    proto: 6,
                    bytes_per_second: EXFILTRATION_BYTES_PER_SECOND,
                    packet_size: 1400,
                    start_after: scaled(EXFILTRATION_START),
                    stop_after: None,
                    transit_if_index: None,
                });
                if config.exporters >= 2 {
                    config.extra_flows.push(FlowSpec {
                        exporter: 1,
                        src_addr: IpAddr::V4(SATURATION_SOURCE),
                        dst_addr: IpAddr::V4(SATURATION_DESTINATION),
                        src_port: 40_873,
                        dst_port: 873,
                        proto: 6,
                        bytes_per_second: SATURATION_BYTES_PER_SECOND,
                        packet_size: 1400,
                        start_after: scaled(SATURATION_START),
                        stop_after: None,
                        transit_if_index: Some(SATURATION_TRANSIT_IF_INDEX),
                    });
                }
            }
        }
    }

    /// The timeline for people (logs, the local run's output), times divided by `speed`.
    pub fn timeline(self, speed: f64) -> Vec<String> {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        let at = |d: Duration| format!("+{:.0}s", d.div_f64(speed).as_secs_f64());
        match self {
            Self::Demo => vec![
                format!(
                    "{}: a simulated day lasts {:.0}s, record rates from {:.0}% (night, now) to 100%",
                    at(Duration::ZERO),
                    DEMO_DAY.div_f64(speed).as_secs_f64(),
                    DEMO_TROUGH_SHARE * 100.0
                ),
                format!(
                    "{}: {EXFILTRATION_SOURCE} starts uploading {} Mbit/s to {EXFILTRATION_DESTINATION} \
                     (edge1 of the first fleet)",
                    at(EXFILTRATION_START),
                    EXFILTRATION_BYTES_PER_SECOND * 8 / 1_000_000
                ),
                format!(
                    "{}: a backup from {SATURATION_SOURCE} to {SATURATION_DESTINATION} sends {} Mbit/s \
                     over edge2's Transit B (first fleet)",
                    at(SATURATION_START),
                    SATURATION_BYTES_PER_SECOND * 8 / 1_000_000
                ),
                format!(
                    "{}: the probe target behind the delay line slows down (egress-demo-net)",
                    at(LATENCY_RISE)
                ),
            ],
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "demo" => Ok(Self::Demo),
            other => Err(format!("unknown scenario {other:?}: expected demo")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::Protocol;

    #[test]
    fn diurnal_integral_matches_its_shape() {
        let day = Diurnal {
            period: Duration::from_secs(600),
            trough_share: 0.4,
        };
        assert!((day.share(Duration::ZERO) - 0.4).abs() < 1e-9);
        assert!((day.share(Duration::from_secs(300)) - 1.0).abs() < 1e-9);
        // A whole day sends the mean share, 70 %, of the peak rate.
        let day_total = day.records_due(1000, Duration::from_secs(600));
        assert!((419_999..=420_000).contains(&day_total), "{day_total}");
        // The first minute is close to the trough, the minute around the peak close to 100 %.
        let first = day.records_due(1000, Duration::from_secs(60));
        assert!((24_000..26_000).contains(&first), "{first}");
        let peak =
            day.records_due(1000, Duration::from_secs(330)) - day.records_due(1000, Duration::from_secs(270));
        assert!((59_000..60_000).contains(&peak), "{peak}");
        let mut last = 0;
        for second in 0..1200 {
            let due = day.records_due(1000, Duration::from_secs(second));
            assert!(due >= last, "never decreases");
            last = due;
        }
    }

    #[test]
    fn demo_adds_the_timeline_to_the_first_fleet_only() {
        let mut first = SimulateConfig {
            exporters: 2,
            ..SimulateConfig::new("127.0.0.1:2055".parse().expect("address"), Protocol::Netflow9)
        };
        let mut second = first.clone();
        Scenario::Demo.apply(0, 4.0, &mut first);
        Scenario::Demo.apply(1, 4.0, &mut second);
        assert!(first.validate().is_ok(), "{:?}", first.validate());
        assert_eq!(first.diurnal.map(|d| d.period), Some(Duration::from_secs(150)));
        assert_eq!(second.diurnal, first.diurnal);
        assert!(second.extra_flows.is_empty());
        let starts: Vec<u64> = first
            .extra_flows
            .iter()
            .map(|f| f.start_after.as_secs())
            .collect();
        assert_eq!(starts, [15, 30]);
        assert_eq!(first.extra_flows[1].transit_if_index, Some(2));

        let mut single = SimulateConfig::new("127.0.0.1:2055".parse().expect("address"), Protocol::Netflow5);
        Scenario::Demo.apply(0, 1.0, &mut single);
        assert_eq!(single.extra_flows.len(), 1, "edge2's flow needs a second router");
        assert!(single.validate().is_ok());
        assert_eq!(Scenario::Demo.timeline(1.0).len(), 4);
        assert_eq!("Demo".parse::<Scenario>(), Ok(Scenario::Demo));
        assert!("rush-hour".parse::<Scenario>().is_err());
    }
}
