//! Rate search: a function that measures one run at a rate in, the highest lossless rate out.
//!
//! A rate passes when every one of its runs stored at least `threshold` (99.9 %) of what was
//! sent. From `start_rate` the rate doubles while it passes (or halves while it fails) until
//! one passing and one failing rate bracket the limit, then the bracket is bisected
//! `bisect_steps` times. A point whose sender could not reach 90 % of the asked rate while the
//! collector kept up ends the climb: the figure is then a lower bound set by the sender.

use anyhow::Result;

use crate::procstat::Usage;
use crate::replay::ReplayReport;

/// Below this share of the asked rate, the sender is the limit.
const SENDER_SHORTFALL: f64 = 0.9;
/// Halvings tried when even the start rate loses records.
const MAX_HALVINGS: usize = 8;

/// How to search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// Records per second of the first run.
    pub start_rate: f64,
    /// Never ask for more than this.
    pub max_rate: f64,
    /// Runs per rate; all must pass.
    pub runs_per_point: usize,
    pub bisect_steps: usize,
    /// Stored / sent needed to pass.
    pub threshold: f64,
}

/// One run at one rate.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Records per second asked of the sender.
    pub asked_rate: f64,
    pub sent: ReplayReport,
    /// What the collector stored, in its unit.
    pub stored: u64,
    /// What it should have stored, in the same unit.
    pub expected: u64,
    /// CPU and peak memory of the collector over the run (CPU is the difference).
    pub usage: Usage,
    /// Where the collector says it lost records (Egress's metrics), or empty.
    pub loss_note: String,
    /// CPU seconds of the rest of the machine's work over the same time.
    pub others: OtherCpu,
}

/// CPU seconds of what runs beside the collector during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OtherCpu {
    /// The benchmark process (the replay's sender threads, nearly all of it).
    pub sender_seconds: f64,
    /// The ClickHouse server, for `egress-clickhouse`.
    pub server_seconds: Option<f64>,
}

impl RunResult {
    pub fn stored_fraction(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        self.stored as f64 / self.expected as f64
    }

    /// CPU cores the collector used while the stream was sent (and drained).
    pub fn cpu_cores(&self) -> f64 {
        self.usage.cpu_seconds / self.sent.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU cores of the sender and of the ClickHouse server over the same time.
    pub fn other_cores(&self) -> (f64, Option<f64>) {
        let elapsed = self.sent.elapsed.as_secs_f64().max(1e-9);
        (
            self.others.sender_seconds / elapsed,
            self.others.server_seconds.map(|s| s / elapsed),
        )
    }
}

/// All runs at one rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub asked_rate: f64,
    pub runs: Vec<RunResult>,
    pub passed: bool,
}

impl Point {
    /// Mean achieved records per second over the runs.
    pub fn records_per_second(&self) -> f64 {
        mean(self.runs.iter().map(|r| r.sent.records_per_second()))
    }

    pub fn datagrams_per_second(&self) -> f64 {
        mean(self.runs.iter().map(|r| r.sent.datagrams_per_second()))
    }

    pub fn cpu_cores(&self) -> f64 {
        mean(self.runs.iter().map(RunResult::cpu_cores))
    }

    /// Mean CPU cores of the sender and (when measured in every run) of the ClickHouse server.
    pub fn other_cores(&self) -> (f64, Option<f64>) {
        let sender = mean(self.runs.iter().map(|r| r.other_cores().0));
        let server: Option<Vec<f64>> = self.runs.iter().map(|r| r.other_cores().1).collect();
        (sender, server.map(|s| mean(s.into_iter())))
    }

    pub fn peak_rss_bytes(&self) -> u64 {
        self.runs
            .iter()
            .map(|r| r.usage.peak_rss_bytes)
            .max()
            .unwrap_or(0)
    }

    /// The worst run's stored fraction.
    pub fn stored_fraction(&self) -> f64 {
        self.runs
            .iter()
            .map(RunResult::stored_fraction)
            .fold(f64::INFINITY, f64::min)
    }

    fn sender_limited(&self) -> bool {
        self.records_per_second() < self.asked_rate * SENDER_SHORTFALL
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Every point measured, in order.
    pub points: Vec<Point>,
    /// The highest passing point, if any passed.
    pub best: Option<Point>,
    /// The best point was limited by the sender, not by the collector.
    pub sender_limited: bool,
}

/// Searches the highest passing rate, calling `measure` once per run.
pub fn search(
    config: &SearchConfig,
    mut measure: impl FnMut(f64) -> Result<RunResult>,
) -> Result<SearchResult> {
    let mut points = Vec::new();
    let mut point_at = |rate: f64, points: &mut Vec<Point>| -> Result<Point> {
        let mut runs = Vec::new();
        let mut passed = true;
        for _ in 0..config.runs_per_point.max(1) {
            let run = measure(rate)?;
            passed = run.stored_fraction() >= config.threshold;
            runs.push(run);
            // One failing run fails the point; no need for the others.
            if !passed {
                break;
            }
        }
        let point = Point {
            asked_rate: rate,
            runs,
            passed,
        };
        points.push(point.clone());
        Ok(point)
    };

    let mut best: Option<Point> = None;
    let mut failed_rate: Option<f64> = None;
    let mut sender_limited = false;
    let mut rate = config.start_rate.min(config.max_rate);
    let first = point_at(rate, &mut points)?;
    if first.passed {
        let mut last = first;
        loop {
            if last.sender_limited() {
                sender_limited = true;
                best = Some(last);
                break;
            }
            best = Some(last);
            if rate * 2.0 > config.max_rate {
                break;
            }
            rate *= 2.0;
            last = point_at(rate, &mut points)?;
            if !last.passed {
                failed_rate = Some(rate);
                break;
            }
        }
    } else {
        failed_rate = Some(rate);
        for _ in 0..MAX_HALVINGS {
            rate /= 2.0;
            let point = point_at(rate, &mut points)?;
            if point.passed {
                best = Some(point);
                break;
            }
            failed_rate = Some(rate);
        }
    }

    if let (Some(mut low), Some(mut high), false) =
        (best.as_ref().map(|p| p.asked_rate), failed_rate, sender_limited)
    {
        for _ in 0..config.bisect_steps {
            let middle = (low + high) / 2.0;
            let point = point_at(middle, &mut points)?;
            if point.passed {
                low = middle;
                if point.sender_limited() {
                    sender_limited = true;
                    best = Some(point);
                    break;
                }
                best = Some(point);
            } else {
                high = middle;
            }
        }
    }
    Ok(SearchResult {
        points,
        best,
        sender_limited,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A collector that stores everything up to `capacity` records/s and half of the excess,
    /// with a sender that reaches at most `sender_max`.
    fn fake(capacity: f64, sender_max: f64) -> impl FnMut(f64) -> Result<RunResult> {
        move |rate| {
            let achieved = rate.min(sender_max);
            let expected = achieved as u64;
            let stored = if achieved <= capacity {
                expected
            } else {
                (capacity + (achieved - capacity) / 2.0) as u64
            };
            Ok(RunResult {
                asked_rate: rate,
                sent: ReplayReport {
                    records: expected,
                    datagrams: expected / 30,
                    elapsed: Duration::from_secs(1),
                    ..ReplayReport::default()
                },
                stored,
                expected,
                usage: Usage::default(),
                loss_note: String::new(),
                others: OtherCpu::default(),
            })
        }
    }

    fn config() -> SearchConfig {
        SearchConfig {
            start_rate: 100_000.0,
            max_rate: 100e6,
            runs_per_point: 2,
            bisect_steps: 3,
            threshold: 0.999,
        }
    }

    #[test]
    fn doubles_then_bisects_to_the_capacity() {
        let result = search(&config(), fake(300_000.0, 1e9)).unwrap();
        let asked: Vec<f64> = result.points.iter().map(|p| p.asked_rate).collect();
        // 100k, 200k pass; 400k fails; 300k passes; 350k, 325k fail.
        assert_eq!(asked, [100e3, 200e3, 400e3, 300e3, 350e3, 325e3]);
        assert_eq!(result.best.unwrap().asked_rate, 300e3);
        assert!(!result.sender_limited);
        // A passing point ran twice, a failing one stopped at its first run.
        assert_eq!(result.points[0].runs.len(), 2);
        assert_eq!(result.points[2].runs.len(), 1);
    }

    #[test]
    fn halves_when_the_start_rate_already_loses() {
        let result = search(&config(), fake(30_000.0, 1e9)).unwrap();
        let best = result.best.unwrap();
        assert!(
            best.asked_rate <= 30_000.0 && best.asked_rate >= 25_000.0,
            "{}",
            best.asked_rate
        );
    }

    #[test]
    fn stops_climbing_when_the_sender_is_the_limit() {
        let result = search(&config(), fake(1e9, 250_000.0)).unwrap();
        assert!(result.sender_limited);
        let best = result.best.unwrap();
        assert_eq!(best.records_per_second(), 250_000.0);
        assert_eq!(
            result.points.len(),
            3,
            "100k, 200k, then 400k asked, 250k reached"
        );
    }

    #[test]
    fn nothing_passes_when_everything_loses() {
        let result = search(&config(), fake(0.0, 1e9)).unwrap();
        assert!(result.best.is_none());
    }
}
