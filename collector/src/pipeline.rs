//! The collector's wiring: starts every stage, owns the channels between them and the
//! shutdown order.
//!
//! ```text
//! listener workers (threads) --Chunk--> Batcher --Batch--> SinkWriter --> ClickHouse | null
//! ```
//! Start: the decoder state saved by the previous run (`collector.state_path`, see
//! [`crate::state`]) is loaded before any worker receives, and every worker imports it.
//!
//! Shutdown (the token is cancelled): the workers stop receiving, flush their chunks, publish
//! their decoder state and exit; the state file is written once more; the workers' senders
//! have dropped, so the batcher drains its queue, flushes every open batch and exits; the
//! writer drains and inserts what is left (retrying for at most
//! `batch.shutdown_timeout_seconds`); then the side tasks (metrics endpoint, kernel drop poller,
//! retention) are stopped and joined.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::batch::Batcher;
use crate::config::{Config, SinkKind};
use crate::enrich::Enricher;
use crate::listener::{self, Worker};
use crate::metrics::Metrics;
use crate::sink::{ClickHouseSink, Sink, SinkWriter};
use crate::state::{StateExchange, StateSaver, WorkerState};

/// A running collector.
#[derive(Debug)]
pub struct RunningCollector {
    /// The addresses actually bound (port 0 resolved), one per listen address.
    pub listening: Vec<SocketAddr>,
    /// The metrics endpoint's address, if one was configured.
    pub metrics_address: Option<SocketAddr>,
    pub metrics: Metrics,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl RunningCollector {
    /// Stops the collector in order and waits until everything received is written.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(error) = self.done.await {
            error!(%error, "collector task failed during shutdown");
        }
    }

    /// Waits until the collector stops (after `shutdown` is cancelled by someone else).
    pub async fn wait(self) {
        if let Err(error) = self.done.await {
            error!(%error, "collector task failed");
        }
    }
}

/// Starts the collector. Returns once the sockets are bound and the metrics endpoint listens;
/// the stages run until `shutdown` is cancelled (see [`RunningCollector::shutdown`]).
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<RunningCollector> {
    let metrics = Metrics::new();
    // Before anything starts: a locked or unusable spool directory stops the start. It only
    // matters when there is a server to be down, and stays locked until the writer stops.
    let spool = match (config.collector.sink, config.spool.enabled) {
        (SinkKind::Clickhouse, true) => Some(
            crate::spool::Spool::open(&config.spool).with_context(|| "spool (key: spool.dir)".to_owned())?,
        ),
        _ => None,
    };
    let sockets = listener::bind(
        &config.collector.listen,
        config.collector.workers,
        config.collector.receive_buffer_bytes,
    )?;
    let mut listening: Vec<SocketAddr> = Vec::new();
    for bound in &sockets {
        if !listening.contains(&bound.address) {
            listening.push(bound.address);
        }
    }
    metrics
        .receive_buffer_bytes
        .set(sockets.iter().map(|s| s.receive_buffer_bytes as i64).sum());
    info!(
        listen = ?listening,
        workers = config.collector.workers,
        receive_buffer_bytes = sockets.first().map(|s| s.receive_buffer_bytes).unwrap_or(0),
        sink = ?config.collector.sink,
        "collector listening"
    );

    // Bound now, answered once the workers receive: the endpoint is the collector's readiness
    // (a load balancer or a benchmark that starts sending when it answers must not find
    // sockets that nobody drains yet; at 180 k datagrams/s the 4 MiB receive buffers of a
    // start still in progress overflowed within 40 ms).
    let metrics_listener = match config.collector.metrics_listen {
        Some(address) => Some(crate::http::bind(address).await?),
        None => None,
    };
    let metrics_address = match &metrics_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };

    let sink = match config.collector.sink {
        SinkKind::Null => Sink::Null,
        SinkKind::Clickhouse => {
            let client = egress_query::connection::client(&config.clickhouse)
                .context("building the ClickHouse client (key: clickhouse)")?;
            let sink = ClickHouseSink::new(client).with_insert_timeout(config.clickhouse.insert_timeout());
            Sink::ClickHouse(Box::new(sink))
        }
    };

    let queue_capacity = config.collector.queue_capacity_chunks();
    metrics.queue_capacity_chunks.set(queue_capacity as i64);
    let (chunk_tx, chunk_rx) = mpsc::channel(queue_capacity);
    let (batch_tx, batch_rx) = mpsc::channel(2);
    let model = egress_query::model::EgressModel::build(&config.model, &config.exporters)?;
    let enricher = Arc::new(Enricher::new(model));
    let state = persistence(&config, sockets.len()).await;
    let worker_stop = CancellationToken::new();
    let mut worker_threads = Vec::new();
    let mut kernel_sockets = Vec::new();
    for (index, bound) in sockets.into_iter().enumerate() {
        kernel_sockets.push(
            bound
                .socket
                .try_clone()
                .context("cloning a socket for drop accounting")?,
        );
        let worker = Worker {
            socket: bound.socket,
            decoder_config: config.decoder.clone(),
            enricher: enricher.clone(),
            metrics: metrics.clone(),
            output: chunk_tx.clone(),
            chunk_records: config.collector.chunk_records,
            stats_interval: Duration::from_secs(config.collector.stats_interval_seconds),
            state: match &state {
                Some((exchange, _)) => exchange.worker(index),
                None => WorkerState::disabled(),
            },
            controls: listener::ExporterControls::new(&config.collector),
        };
        let stop = worker_stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("egress-recv-{index}"))
            .spawn(move || worker.run(stop))
            .context("starting a receive worker")?;
        worker_threads.push(thread);
    }
    drop(chunk_tx);
    let state_saver = state.map(|(exchange, path)| {
        let interval = Duration::from_secs(config.collector.state_save_interval_seconds);
        StateSaver::spawn(path, exchange, interval)
    });

    let side_tasks = CancellationToken::new();
    let kernel_drops = tokio::spawn(poll_kernel_drops(
        kernel_sockets,
        metrics.clone(),
        side_tasks.clone(),
    ));
    let (schema_ready_tx, schema_ready_rx) = tokio::sync::watch::channel(false);
    let schema = match &sink {
        Sink::ClickHouse(clickhouse) => Some(tokio::spawn(maintain_schema(
            config.clone(),
            schema_ready_tx,
            clickhouse.deduplication_switch(),
            side_tasks.clone(),
        ))),
        Sink::Null => None,
    };
    let mut batcher = Batcher::new(config.batch.clone());
    if matches!(sink, Sink::ClickHouse(_)) {
        batcher = batcher.encoding_flows();
    }
    let batcher = tokio::spawn(batcher.run(chunk_rx, batch_tx));
    let writer = tokio::spawn(
        SinkWriter {
            sink,
            metrics: metrics.clone(),
            config: config.batch.clone(),
            schema_ready: schema.is_some().then_some(schema_ready_rx),
            spool,
        }
        .run(batch_rx, shutdown.clone()),
    );

    if let Some(listener) = metrics_listener {
        crate::http::serve(listener, metrics.clone(), shutdown.clone());
    }

    let stop = shutdown.clone();
    let final_metrics = metrics.clone();
    let done = tokio::spawn(async move {
        stop.cancelled().await;
        info!("stopping: draining listeners, batches and sink");
        worker_stop.cancel();
        let joined = tokio::task::spawn_blocking(move || {
            for thread in worker_threads {
                if thread.join().is_err() {
                    error!("a receive worker panicked");
                }
            }
        })
        .await;
        if joined.is_err() {
            error!("joining receive workers failed");
        }
        if let Some(saver) = state_saver {
            saver.finish().await;
        }
        for (name, task) in [("batcher", batcher), ("writer", writer)] {
            if let Err(error) = task.await {
                error!(%error, stage = name, "stage failed during shutdown");
            }
        }
        side_tasks.cancel();
        let _ = kernel_drops.await;
        if let Some(schema) = schema {
            let _ = schema.await;
        }
        // The account of the run: what was decoded (flow records and sFlow counter samples) is
        // written, still in the spool, or dropped (by reason in /metrics).
        let decoded: u64 = crate::normalise::FlowType::ALL
            .iter()
            .map(|t| final_metrics.decoded(*t).get())
            .sum();
        let dropped: u64 = crate::metrics::DropReason::ALL
            .iter()
            .map(|r| final_metrics.dropped(*r).get())
            .sum();
        info!(
            records_decoded = decoded,
            records_written = final_metrics.records_written.get(),
            counter_samples_written = final_metrics.counter_samples_written.get(),
            records_spooled = final_metrics.records_spooled.get(),
            records_dropped = dropped,
            "collector stopped"
        );
    });

    Ok(RunningCollector {
        listening,
        metrics_address,
        metrics,
        shutdown,
        done,
    })
}

/// Runs the collector until `shutdown` is cancelled and everything is flushed.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running.wait().await;
    Ok(())
}

/// Loads the saved decoder state (unless `collector.state_path` is empty) for `workers`
/// workers: the exchange they restore from and publish to, and the file's path.
async fn persistence(config: &Config, workers: usize) -> Option<(StateExchange, std::path::PathBuf)> {
    if config.collector.state_path.is_empty() {
        info!("collector.state_path is empty: decoder state is not kept across restarts");
        return None;
    }
    let path = std::path::PathBuf::from(&config.collector.state_path);
    let decoder_config = config.decoder.clone();
    let load_path = path.clone();
    let restored = tokio::task::spawn_blocking(move || {
        crate::state::restore(&load_path, &decoder_config, listener::unix_now())
    })
    .await
    .unwrap_or_else(|error| {
        warn!(%error, "loading the decoder state failed; starting empty");
        Default::default()
    });
    let exchange = StateExchange::new(
        restored,
        workers,
        Duration::from_secs(config.collector.state_save_interval_seconds),
        config.decoder.clone(),
    );
    Some((exchange, path))
}

async fn poll_kernel_drops(sockets: Vec<std::net::UdpSocket>, metrics: Metrics, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Some(drops) = listener::kernel_receive_drops(&sockets) {
            let previous = metrics.kernel_receive_drops.get();
            if drops as i64 > previous {
                warn!(
                    dropped = drops as i64 - previous,
                    "the kernel dropped datagrams: receive buffers full"
                );
            }
            metrics.kernel_receive_drops.set(drops as i64);
        }
    }
}

/// Applies the migrations (retrying while ClickHouse is unreachable; the writer holds its
/// batches until `ready` says the schema is there, and learns from `deduplicates` whether the
/// server deduplicates inserts), then, on servers without TTL, drops expired partitions every
/// hour.
async fn maintain_schema(
    config: Config,
    ready: tokio::sync::watch::Sender<bool>,
    deduplicates: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
) {
    let client = match egress_query::connection::client(&config.clickhouse) {
        Ok(client) => client,
        Err(error) => {
            error!(%error, "cannot build the ClickHouse client");
            return;
        }
    };
    let ch = &config.clickhouse;
    let mut delay = Duration::from_secs(1);
    let version = loop {
        let attempt = async {
            let version = egress_query::connection::server_version(&client).await?;
            if config.collector.migrate_on_start {
                let report = egress_query::migrate::migrate(&client, ch, &version).await?;
                info!(server = %version, applied = ?report.applied, "schema up to date");
            }
            Ok::<_, anyhow::Error>(version)
        };
        match attempt.await {
            Ok(version) => {
                deduplicates.store(
                    version.has_insert_deduplication(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let _ = ready.send(true);
                break version;
            }
            Err(error) => {
                warn!(%error, retry_in_s = delay.as_secs(), "ClickHouse not ready for migrations");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    if version.has_ttl() {
        return;
    }
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        match egress_query::retention::enforce(&client, ch).await {
            Ok(dropped) if !dropped.is_empty() => {
                info!(partitions = ?dropped, "retention: dropped expired partitions")
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "retention: could not drop expired partitions"),
        }
    }
}
