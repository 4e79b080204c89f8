//! `egress-bench`: CLI parsing and wiring only; the procedure is in the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use egress_bench::collectors::CollectorKind;
use egress_bench::query::{self, QueryBenchConfig};
use egress_bench::streams::{self, Protocol};
use egress_bench::BenchConfig;

/// Replays real exporters' streams to Egress and to nfcapd, nfacctd and sfacctd at stepped
/// rates and prints the highest lossless rate of each, side by side.
#[derive(Debug, Parser)]
#[command(name = "egress-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the benchmark.
    Run(RunArgs),
    /// Only write the stream pcaps (softflowd and pmacctd fed by a generated traffic pcap).
    Streams(StreamsArgs),
    /// Time SLA evaluation and every dashboard query over generated flows on ClickHouse 18.16.
    Query(QueryArgs),
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// Flows to generate (spread over two days).
    #[arg(long, default_value_t = 100_000_000)]
    flows: u64,
    /// Keep the ClickHouse data in DIR; a later run with the same --flows reuses it.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// SLA evaluations to time.
    #[arg(long, value_name = "N", default_value_t = 5)]
    runs: usize,
    /// Runs of each dashboard query (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 3)]
    panel_runs: usize,
}

#[derive(Debug, Args)]
struct StreamsArgs {
    /// Directory to write `ipfix.pcap`, `netflow9.pcap`, `netflow5.pcap`, `sflow5.pcap` to.
    #[arg(long, default_value = "bench/streams")]
    out: PathBuf,
    /// Protocols to write (default: all).
    #[arg(long, value_delimiter = ',')]
    protocols: Vec<Protocol>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A few minutes instead of hours: IPFIX and sFlow, 2-second runs, one run per rate.
    #[arg(long)]
    quick: bool,
    /// Stream pcaps to replay (missing ones are generated there); default: fresh ones in a
    /// temporary directory.
    #[arg(long, value_name = "DIR")]
    streams: Option<PathBuf>,
    /// Protocols (ipfix, netflow9, netflow5, sflow5).
    #[arg(long, value_delimiter = ',')]
    protocols: Vec<Protocol>,
    /// Collectors (egress-null, egress-clickhouse, nfcapd, nfacctd, sfacctd).
    #[arg(long, value_delimiter = ',')]
    collectors: Vec<CollectorKind>,
    /// Seconds per run.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Runs per rate (all must store >= 99.9%).
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Records per second of the first run.
    #[arg(long, value_name = "RECORDS_PER_S")]
    start_rate: Option<f64>,
    /// Never ask for more records per second than this.
    #[arg(long, value_name = "RECORDS_PER_S")]
    max_rate: Option<f64>,
    /// Bisections after the doubling has found a failing rate.
    #[arg(long, value_name = "N")]
    bisect: Option<usize>,
    /// Sender threads.
    #[arg(long, value_name = "N")]
    senders: Option<usize>,
    /// Sockets (loopback source addresses, one exporter each) per sender thread.
    #[arg(long, value_name = "N")]
    sources: Option<usize>,
    /// The `egress` binary (default: beside this one, else `egress` on PATH).
    #[arg(long, value_name = "PATH")]
    egress: Option<PathBuf>,
    /// Extra Egress setting, `section.key=value` (repeatable), e.g. `collector.workers=2`.
    #[arg(long = "egress-set", value_name = "KEY=VALUE")]
    egress_sets: Vec<String>,
    /// Skip the direct ClickHouse ingest reference.
    #[arg(long)]
    no_direct: bool,
}

impl RunArgs {
    fn to_config(&self) -> anyhow::Result<BenchConfig> {
        let egress = match &self.egress {
            Some(path) => path.clone(),
            None => default_egress()?,
        };
        let mut config = if self.quick {
            BenchConfig::quick(egress)
        } else {
            BenchConfig::full(egress)
        };
        config.streams_dir = self.streams.clone();
        if !self.protocols.is_empty() {
            config.protocols = self.protocols.clone();
        }
        if !self.collectors.is_empty() {
            config.collectors = self.collectors.clone();
        }
        if let Some(seconds) = self.duration {
            config.duration = Duration::try_from_secs_f64(seconds).context("--duration")?;
        }
        if let Some(runs) = self.runs {
            config.search.runs_per_point = runs.max(1);
        }
        if let Some(rate) = self.start_rate {
            config.search.start_rate = rate;
        }
        if let Some(rate) = self.max_rate {
            config.search.max_rate = rate;
        }
        if let Some(steps) = self.bisect {
            config.search.bisect_steps = steps;
        }
        if let Some(senders) = self.senders {
            config.senders = senders.max(1);
        }
        if let Some(sources) = self.sources {
            config.sources_per_sender = sources.max(1);
        }
        config.egress_sets = self.egress_sets.clone();
        config.direct = !self.no_direct;
        Ok(config)
    }
}

/// `egress` beside this binary (both built in the same target directory), else on PATH.
fn default_egress() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let beside = me.with_file_name("egress");
    Ok(if beside.exists() {
        beside
    } else {
        PathBuf::from("egress")
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Streams(args) => {
            let protocols = if args.protocols.is_empty() {
                Protocol::ALL.to_vec()
            } else {
                args.protocols
            };
            for path in streams::generate(&args.out, &protocols)? {
                println!("{}", path.display());
            }
        }
        Command::Run(args) => {
            let config = args.to_config()?;
            eprintln!("egress: {}", config.egress.display());
            let report = egress_bench::run(&config, &mut std::io::stderr())?;
            print!("{}", egress_bench::render(&report));
        }
        Command::Query(args) => {
            let config = QueryBenchConfig {
                flows: args.flows,
                keep: args.keep,
                sla_runs: args.runs,
                panel_runs: args.panel_runs,
            };
            let report = query::run(&config, &mut std::io::stderr())?;
            print!("{}", query::render(&report));
            anyhow::ensure!(report.passes(), "issue 7's bounds are not met");
        }
    }
    Ok(())
}
