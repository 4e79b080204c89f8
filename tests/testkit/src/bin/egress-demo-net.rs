//! `egress-demo-net`: the probe targets of the local demo (`deploy/local/run.sh`), one of which
//! slows down after a while, so that the latency SLA has something to see.
//!
//! In: flags (below). Out: a [`DelayRig`] (two network namespaces, a TCP listener reached by a
//! direct path and by a path through a userspace delay line; see `egress_testkit::netns`), the
//! file `--out` holding the TOML value of `probes.paths` for `egress run --set
//! "probes.paths=$(cat FILE)"` (written once both paths answer), and a delay on the slow path
//! that follows the schedule: `--base-delay-ms` from the start, then rising linearly from
//! `--rise-after` seconds over `--rise-over` seconds to `--rise-to-ms`, where it stays. Every
//! time is divided by `--speed` (as `egress run --scenario-speed`). The defaults match the
//! `demo` scenario's timeline (`egress_collector::simulate::scenario::LATENCY_RISE`, 180 s).
//!
//! Needs root, `ip` (iproute2) and `/dev/net/tun`; exits with status 3 and a message when the
//! machine cannot build the rig, so the caller can go on without the latency scenario.
//!
//! Shutdown: on SIGTERM or SIGINT the rig is dropped (listener closed, links and namespaces
//! deleted, delay-line threads joined) and `--out` is removed.
//!
//! ```text
//! egress-demo-net --out .local/demo-probes.toml \
//!     [--slow-path "netflow9-edge1 / et-0/0/1 (Transit A)"] [--fast-path "netflow9-edge1 / et-0/0/2 (Transit B)"] \
//!     [--base-delay-ms 20] [--rise-after 180] [--rise-over 30] [--rise-to-ms 250] [--speed 1]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use egress_testkit::netns::{self, DelayRig};

/// Exit status when this machine cannot build the rig (not root, no `ip netns`, no TUN).
const UNAVAILABLE: i32 = 3;

/// The command line, with the demo's defaults.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    out: PathBuf,
    slow_path: String,
    fast_path: String,
    base_delay: Duration,
    rise_after: Duration,
    rise_over: Duration,
    rise_to: Duration,
    speed: f64,
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Options> {
        let mut options = Options {
            out: PathBuf::new(),
            slow_path: "netflow9-edge1 / et-0/0/1 (Transit A)".into(),
            fast_path: "netflow9-edge1 / et-0/0/2 (Transit B)".into(),
            base_delay: Duration::from_millis(20),
            rise_after: Duration::from_secs(180),
            rise_over: Duration::from_secs(30),
            rise_to: Duration::from_millis(250),
            speed: 1.0,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag}: a value is missing"))?;
            let millis = |v: &str| -> Result<Duration> {
                Ok(Duration::from_millis(
                    v.parse().with_context(|| format!("{flag} {v}"))?,
                ))
            };
            let seconds = |v: &str| -> Result<Duration> {
                Duration::try_from_secs_f64(v.parse().with_context(|| format!("{flag} {v}"))?)
                    .with_context(|| format!("{flag} {v}"))
            };
            match flag.as_str() {
                "--out" => options.out = PathBuf::from(value),
                "--slow-path" => options.slow_path = value,
                "--fast-path" => options.fast_path = value,
                "--base-delay-ms" => options.base_delay = millis(&value)?,
                "--rise-after" => options.rise_after = seconds(&value)?,
                "--rise-over" => options.rise_over = seconds(&value)?,
                "--rise-to-ms" => options.rise_to = millis(&value)?,
                "--speed" => {
                    options.speed = value.parse().with_context(|| format!("--speed {value}"))?;
                    if !(options.speed.is_finite() && options.speed > 0.0) {
                        bail!("--speed {value}: must be above 0");
                    }
                }
                other => {
                    bail!("unknown flag {other} (see the header of tests/testkit/src/bin/egress-demo-net.rs)")
                }
            }
        }
        if options.out.as_os_str().is_empty() {
            bail!("--out FILE is required");
        }
        Ok(options)
    }

    /// The slow path's delay `elapsed` after the start.
    fn delay_at(&self, elapsed: Duration) -> Duration {
        let rise_after = self.rise_after.div_f64(self.speed);
        let rise_over = self.rise_over.div_f64(self.speed);
        if elapsed < rise_after {
            return self.base_delay;
        }
        let progress = if rise_over.is_zero() {
            1.0
        } else {
            ((elapsed - rise_after).as_secs_f64() / rise_over.as_secs_f64()).min(1.0)
        };
        let base = self.base_delay.as_secs_f64();
        Duration::from_secs_f64(base + (self.rise_to.as_secs_f64() - base).max(0.0) * progress)
    }
}

/// The TOML value of `probes.paths`: one TCP connect target per path (no ICMP: the listener
/// answers TCP only, and the slow path's router would answer ICMP itself).
fn probe_paths_toml(options: &Options, rig: &DelayRig) -> String {
    let entry = |path: &str, target: std::net::SocketAddr| {
        format!("{{ path = {}, targets = [\"{target}\"] }}", toml_string(path))
    };
    format!(
        "[{}, {}]",
        entry(&options.slow_path, rig.slow_target()),
        entry(&options.fast_path, rig.fast_target())
    )
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("egress-demo-net: {error:#}");
            std::process::exit(2);
        }
    };
    if !netns::available() || !effective_root() {
        eprintln!(
            "egress-demo-net: network namespaces need root, `ip netns` and /dev/net/tun: the latency \
             scenario is off"
        );
        std::process::exit(UNAVAILABLE);
    }
    if let Err(error) = run(&options) {
        eprintln!("egress-demo-net: {error:#}");
        let _ = std::fs::remove_file(&options.out);
        std::process::exit(1);
    }
}

/// Whether this process runs as root (the effective uid in /proc/self/status is 0).
fn effective_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn run(options: &Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let rig = DelayRig::start().context("building the namespaces and the delay line")?;
    let start = Instant::now();
    rig.set_delay(options.delay_at(Duration::ZERO));
    let temporary = options.out.with_extension("tmp");
    std::fs::write(&temporary, probe_paths_toml(options, &rig))
        .with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, &options.out).with_context(|| format!("write {}", options.out.display()))?;
    println!(
        "egress-demo-net: {} -> {} (delay line: {:?} now, rising from +{:.0}s to {:?}); {} -> {} (direct)",
        options.slow_path,
        rig.slow_target(),
        rig.delay(),
        options.rise_after.div_f64(options.speed).as_secs_f64(),
        options.rise_to,
        options.fast_path,
        rig.fast_target()
    );
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("watching SIGTERM")?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // The delay last logged: a change is logged from 25 ms on, and the final value.
        let mut logged = rig.delay();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    let delay = options.delay_at(start.elapsed());
                    if delay == rig.delay() {
                        continue;
                    }
                    rig.set_delay(delay);
                    if delay.abs_diff(logged) >= Duration::from_millis(25) || delay == options.rise_to {
                        logged = delay;
                        println!(
                            "egress-demo-net: +{:.0}s: {} delay {:?}",
                            start.elapsed().as_secs_f64(),
                            options.slow_path,
                            delay
                        );
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    drop(rig);
    let _ = std::fs::remove_file(&options.out);
    println!("egress-demo-net: stopped, namespaces deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Result<Options> {
        Options::parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn schedule_rises_after_its_time() {
        let o = options(&["--out", "x", "--speed", "2"]).expect("options");
        assert_eq!(o.delay_at(Duration::ZERO), Duration::from_millis(20));
        assert_eq!(o.delay_at(Duration::from_secs(89)), Duration::from_millis(20));
        // Half-way up the 15 s (30 s / 2) ramp from 20 to 250 ms.
        let half = o.delay_at(Duration::from_millis(97_500)).as_secs_f64();
        assert!((half - 0.135).abs() < 1e-6, "{half}");
        assert_eq!(o.delay_at(Duration::from_secs(500)), Duration::from_millis(250));
    }

    #[test]
    fn flags_are_checked() {
        assert!(options(&[]).is_err(), "--out is required");
        assert!(options(&["--out", "x", "--speed", "0"]).is_err());
        assert!(options(&["--out", "x", "--delay", "5"]).is_err());
        assert!(options(&["--out"]).is_err());
        assert_eq!(toml_string("a \"b\" \\ c"), r#""a \"b\" \\ c""#);
    }
}
