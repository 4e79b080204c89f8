//! Writes a generated traffic pcap and prints its totals, for trying exporters by hand:
//! `cargo run -p egress-testkit --example gen_traffic_pcap -- OUT.pcap [FLOWS] [exfil-MiB]`.
//! With an exfiltration size, the upload scenario is written instead of the plain mix.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use egress_testkit::traffic::{write_pcap, Exfiltration, TrafficSpec};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .context("usage: gen_traffic_pcap OUT.pcap [FLOWS] [EXFIL_MIB]")?,
    );
    let flows: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let exfil_mib: Option<u64> = args.next().map(|a| a.parse()).transpose()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let start = std::time::Duration::from_secs(now.as_secs());
    let spec = match exfil_mib {
        Some(mib) => TrafficSpec::exfiltration(
            start,
            &Exfiltration {
                upload_bytes: mib * 1024 * 1024,
                background_flows: flows,
                ..Exfiltration::default()
            },
        ),
        None => TrafficSpec::mixed(start, flows),
    };
    let totals = write_pcap(&path, &spec)?;
    let v4 = totals.ipv4_only();
    println!(
        "flows={} packets={} bytes={} frame_bytes={} ipv4: flows={} packets={} bytes={}",
        totals.flows,
        totals.packets,
        totals.bytes,
        totals.frame_bytes(),
        v4.flows,
        v4.packets,
        v4.bytes
    );
    Ok(())
}
