//! The `egress` binary: CLI parsing and wiring only; every subcommand calls a library function.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::info;

use egress_collector::config::Config;
use egress_collector::decode::DecoderConfig;
use egress_collector::simulate::{self, SimulateConfig};

mod monitor;
mod telemetry;

/// Egress: flow telemetry collector and egress-path SLA monitor.
#[derive(Debug, Parser)]
#[command(name = "egress", version, about)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` is used when absent.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive NetFlow v5/v9, IPFIX and sFlow v5 and store every flow in ClickHouse.
    Collector(ServiceArgs),
    /// Decode pcap/pcapng captures of export datagrams and print the records.
    Decode(DecodeArgs),
    /// Evaluate the SLAs, send alerts, and serve the query API.
    Monitor(ServiceArgs),
    /// Create or upgrade the ClickHouse schema.
    Migrate(MigrateArgs),
    /// Virtual edge routers that export flows to a collector.
    Simulate(SimulateArgs),
    /// Everything the local system needs in one process: the collector, the monitor and,
    /// optionally, simulated exporters feeding them.
    Run(RunArgs),
}

/// Configuration flags shared by the long-running subcommands. Each maps onto a config key;
/// precedence: file < `EGRESS__SECTION__KEY` environment variables < these flags < `--set`.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML configuration file (see deploy/egress.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// UDP address to receive on (repeatable; replaces `collector.listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// ClickHouse HTTP URL (`clickhouse.url`).
    #[arg(long, value_name = "URL")]
    clickhouse_url: Option<String>,
    /// ClickHouse database (`clickhouse.database`).
    #[arg(long, value_name = "NAME")]
    database: Option<String>,
    /// Address of the /metrics endpoint (`collector.metrics_listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// `clickhouse` or `null` (`collector.sink`): null decodes everything and stores nothing.
    #[arg(long, value_name = "SINK")]
    sink: Option<String>,
    /// Receive workers per listen address (`collector.workers`).
    #[arg(long)]
    workers: Option<usize>,
    /// Any other key, as `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut sets = Vec::new();
        if !self.listen.is_empty() {
            let list: Vec<String> = self.listen.iter().map(|a| format!("\"{a}\"")).collect();
            sets.push(format!("collector.listen=[{}]", list.join(", ")));
        }
        if let Some(url) = &self.clickhouse_url {
            sets.push(format!("clickhouse.url=\"{url}\""));
        }
        if let Some(database) = &self.database {
            sets.push(format!("clickhouse.database=\"{database}\""));
        }
        if let Some(address) = &self.metrics_listen {
            sets.push(format!("collector.metrics_listen=\"{address}\""));
        }
        if let Some(sink) = &self.sink {
            sets.push(format!("collector.sink=\"{sink}\""));
        }
        if let Some(workers) = self.workers {
            sets.push(format!("collector.workers={workers}"));
        }
        sets.extend(self.sets.iter().cloned());
        Ok(Config::load(self.config.as_deref(), std::env::vars(), &sets)?)
    }
}

#[derive(Debug, Args)]
struct ServiceArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DecodeFormat {
    Json,
    Table,
}

#[derive(Debug, Args)]
struct DecodeArgs {
    /// pcap or pcapng files of export datagrams (any UDP port; exporter = source address).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// `json`: one object per flow record, with the `flows` column names; `table`: readable.
    #[arg(long, value_enum, default_value = "table")]
    format: DecodeFormat,
    /// Also print interface counter samples (sFlow) as JSON objects with `"record": "counter"`.
    #[arg(long)]
    counters: bool,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the DDL for the given server version (e.g. `18.16` or `25.3`) instead of applying it.
    #[arg(long, value_name = "VERSION")]
    print_ddl: Option<String>,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// The collector's listen address.
    #[arg(long, value_name = "ADDR:PORT")]
    target: SocketAddr,
    /// netflow5, netflow9, ipfix or sflow5.
    #[arg(long, value_name = "P")]
    protocol: String,
    /// Flow records (sFlow: flow samples) per second over the whole fleet.
    #[arg(long, value_name = "RECORDS_PER_S", default_value_t = 1000)]
    rate: u64,
    /// Number of virtual routers; router i sends from --bind-base + i.
    #[arg(long, value_name = "N", default_value_t = 1)]
    exporters: u32,
    /// Seconds to run (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// 1-in-N sampling announced by every router (default: per protocol).
    #[arg(long, value_name = "N")]
    sampling_rate: Option<u32>,
    /// Address of the first router (default 127.0.0.10).
    #[arg(long, value_name = "ADDR")]
    bind_base: Option<std::net::IpAddr>,
    /// Seed of the traffic model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl SimulateArgs {
    fn to_config(&self) -> anyhow::Result<SimulateConfig> {
        Ok(SimulateConfig {
            target: self.target,
            protocol: self
                .protocol
                .parse()
                .map_err(|e| anyhow::anyhow!("--protocol {}: {e}", self.protocol))?,
            records_per_second: self.rate,
            exporters: self.exporters,
            duration: self.duration.map(std::time::Duration::from_secs_f64),
            sampling_rate: self.sampling_rate,
            bind_base: self.bind_base,
            seed: self.seed,
            ..SimulateConfig::default()
        })
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Simulated exporters to start, as `PROTOCOL=RECORDS_PER_S` (repeatable; protocols
    /// netflow5, netflow9, ipfix, sflow5); they send to the first listen address.
    #[arg(long, value_name = "PROTOCOL=RATE")]
    simulate: Vec<String>,
    /// Virtual routers per simulated protocol.
    #[arg(long, default_value_t = 2)]
    simulate_exporters: u32,
    /// A timeline on top of the simulated traffic: `demo` (a compressed day, then an
    /// exfiltrating host and a saturated transit; see `egress_collector::simulate::scenario`).
    #[arg(long, value_name = "NAME", requires = "simulate")]
    scenario: Option<simulate::scenario::Scenario>,
    /// Plays the scenario's timeline this many times faster (its day and its events).
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0, requires = "scenario")]
    scenario_speed: f64,
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    let telemetry = init_tracing(&cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = match cli.command {
        Command::Decode(args) => decode(args),
        Command::Collector(args) => runtime.block_on(collector(args)),
        Command::Monitor(args) => runtime.block_on(async move {
            let config = args.config.load()?;
            monitor::run(config, shutdown_on_signal()).await
        }),
        Command::Migrate(args) => runtime.block_on(migrate(args)),
        Command::Simulate(args) => runtime.block_on(simulate_only(args)),
        Command::Run(args) => runtime.block_on(run(args)),
    };
    telemetry.shutdown();
    outcome
}

/// Fixes glibc's mmap threshold at 4 MiB, so that the collector's large buffers (RowBinary
/// batches of about 15 MB, spool segments) are mapped on their own and returned to the system
/// when freed. By default glibc raises the threshold after the first such buffer is freed (up
/// to 32 MiB) and serves the next ones from its heap, which keeps the high-water mark: at the
/// ClickHouse sink's limit (0.7 M rows/s here, batches going through the spool) peak RSS was
/// about 200 MiB with the default and about 90 MiB with this (`GLIBC_TUNABLES=
/// glibc.malloc.mmap_threshold=4194304` on the same benchmark). The cost is the page faults
/// of a fresh mapping per batch. Small allocations (rows, chunks, frames) are not affected.
/// No effect on other C libraries.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 4 << 20;
        // Setting one threshold stops glibc adjusting the other, which would fall back to its
        // 128 KiB default: the heap would then be shrunk and grown again around every freed
        // chunk of records (0.33-0.37 cores instead of 0.28-0.30 at 0.5 M records/s into
        // ClickHouse).
        const TRIM_THRESHOLD: libc::c_int = 32 << 20;
        // SAFETY: `mallopt` only sets an allocator parameter; it is called before any other
        // thread exists, and a value it refuses (return 0) leaves the default in place.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// Logs to stderr (`--log`, else `RUST_LOG`, else `info`) and, for the long-running
/// subcommands whose `[telemetry]` resolves to an OTLP endpoint, traces and metrics over OTLP
/// (see `telemetry`). Runs before the async runtime exists, as the exporters' blocking HTTP
/// client requires; so the configuration is read here once more than by the subcommand.
fn init_tracing(cli: &Cli) -> anyhow::Result<telemetry::Telemetry> {
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let config = match &cli.command {
        Command::Collector(args) | Command::Monitor(args) => Some(args.config.load()?),
        Command::Run(args) => Some(args.config.load()?),
        Command::Decode(_) | Command::Migrate(_) | Command::Simulate(_) => None,
    };
    telemetry::init(&filter, config.as_ref().map(|c| &c.telemetry))
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
        cancel.cancel();
    });
    token
}

async fn collector(args: ServiceArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let running = egress_collector::pipeline::start(config, shutdown_on_signal()).await?;
    telemetry::observe_collector(&running.metrics);
    running.wait().await;
    Ok(())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    if let Some(version) = args.print_ddl {
        let version = egress_query::connection::ServerVersion::parse(&version)
            .map_err(|e| anyhow::anyhow!("--print-ddl {version}: {e}"))?;
        for migration in egress_query::migrate::ddl(&version, &config.clickhouse) {
            println!("-- migration {}: {}", migration.version, migration.name);
            for statement in &migration.statements {
                println!("{statement};\n");
            }
        }
        return Ok(());
    }
    let client = egress_query::connection::client(&config.clickhouse)?;
    let version = egress_query::connection::server_version(&client).await?;
    let report = egress_query::migrate::migrate(&client, &config.clickhouse, &version).await?;
    println!(
        "ClickHouse {}: applied {:?}, already present {:?}",
        report.server_version, report.applied, report.present
    );
    Ok(())
}

async fn simulate_only(args: SimulateArgs) -> anyhow::Result<()> {
    let report = simulate::run(args.to_config()?, shutdown_on_signal()).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let shutdown = shutdown_on_signal();
    let running = egress_collector::pipeline::start(config.clone(), shutdown.clone()).await?;
    telemetry::observe_collector(&running.metrics);
    // The collector applies the migrations (when `collector.migrate_on_start`); the monitor waits
    // until they are all recorded, so that two migrations never race.
    let monitor = monitor::start(config, false, shutdown.clone()).await?;
    info!(address = %monitor.api_address, "query API at http://{}/api/v1/paths", monitor.api_address);
    let target = *running.listening.first().context("no listen address")?;
    let target = if target.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], target.port()))
    } else {
        target
    };
    if !(args.scenario_speed.is_finite() && args.scenario_speed > 0.0) {
        anyhow::bail!("--scenario-speed {}: must be above 0", args.scenario_speed);
    }
    if let Some(scenario) = args.scenario {
        for step in scenario.timeline(args.scenario_speed) {
            info!(%scenario, "scenario {step}");
        }
    }
    let mut simulators = Vec::new();
    for (index, spec) in args.simulate.iter().enumerate() {
        let (protocol, rate) = spec
            .split_once('=')
            .with_context(|| format!("--simulate {spec}: expected PROTOCOL=RECORDS_PER_S"))?;
        let mut config = SimulateConfig {
            target,
            protocol: protocol
                .parse()
                .map_err(|e| anyhow::anyhow!("--simulate {spec}: {e}"))?,
            records_per_second: rate.parse().with_context(|| format!("--simulate {spec}: rate"))?,
            exporters: args.simulate_exporters,
            // Each protocol's routers get their own loopback addresses: 127.0.0.10, .11, ...
            bind_base: Some(std::net::IpAddr::from([
                127,
                0,
                0,
                10 + (index as u32 * args.simulate_exporters) as u8,
            ])),
            seed: index as u64 + 1,
            ..SimulateConfig::default()
        };
        if let Some(scenario) = args.scenario {
            scenario.apply(index, args.scenario_speed, &mut config);
        }
        info!(%target, spec, "starting simulated exporters");
        simulators.push(tokio::spawn(simulate::run(config, shutdown.clone())));
    }
    if let Some(address) = running.metrics_address {
        info!(%address, "metrics at http://{address}/metrics");
    }
    running.wait().await;
    monitor.wait().await;
    for simulator in simulators {
        match simulator.await {
            Ok(Ok(report)) => info!(
                protocol = %report.protocol,
                records = report.flow_records(),
                datagrams = report.datagrams(),
                "simulator stopped"
            ),
            Ok(Err(error)) => tracing::warn!(%error, "simulator failed"),
            Err(error) => tracing::warn!(%error, "simulator task failed"),
        }
    }
    Ok(())
}

fn decode(args: DecodeArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for path in &args.files {
        let decoded = match egress_collector::decode_file::decode_capture(path, &DecoderConfig::default()) {
            Ok(decoded) => decoded,
            Err(error) => {
                eprintln!("{error}");
                failed = true;
                continue;
            }
        };
        match args.format {
            DecodeFormat::Json => {
                for flow in &decoded.flows {
                    writeln!(out, "{}", egress_collector::decode_file::flow_json(flow))?;
                }
                if args.counters {
                    for counter in &decoded.counters {
                        let mut value = egress_collector::decode_file::counter_json(counter);
                        if let Some(object) = value.as_object_mut() {
                            object.insert("record".into(), "counter".into());
                        }
                        writeln!(out, "{value}")?;
                    }
                }
            }
            DecodeFormat::Table => egress_collector::decode_file::write_table(&mut out, &decoded.flows)?,
        }
        out.flush()?;
        eprint!("{}", egress_collector::decode_file::summary(path, &decoded));
    }
    if failed {
        anyhow::bail!("some files could not be read");
    }
    Ok(())
}
