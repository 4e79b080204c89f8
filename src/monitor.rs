//! The monitor's wiring: rules → evaluate → state → notify/, and the query API beside them.
//!
//! Every `monitor.evaluation_interval_seconds` each SLA is evaluated in ClickHouse
//! (`egress_query::sla`), its results are written to `sla_results`, and turned into alert
//! samples for the alert state machine (`egress_alerts::AlertStore`, persisted to
//! `monitor.alert_state_path` after every change). The notifications it returns go, through a
//! bounded channel, to the notifier stage (webhook, Alertmanager, Slack, PagerDuty), whose every
//! delivery attempt is written to `alert_deliveries`. An SLA whose evaluation fails (ClickHouse
//! unreachable) is skipped for that cycle: its alerts keep their state, nothing resolves
//! because the data could not be read. Closed hours of the rollups are computed every cycle,
//! and on servers without TTL expired partitions are dropped every hour.
//!
//! Shutdown: the evaluation loop stops, the notifier finishes the deliveries in flight, the
//! delivery log is flushed, the API stops.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, field, info, info_span, warn, Instrument};

use egress_alerts::notify::delivery::{DeliveryAttempt, DeliveryLog, DeliveryOutcome};
use egress_alerts::notify::Notifier;
use egress_alerts::{AlertRule, AlertSample, AlertStore, LabelSet, Notification, SampleVerdict};
use egress_collector::config::Config;
use egress_collector::sink::ClickHouseSink;
use egress_query::api::{self, AlertsView, AlertsViewError, ApiState};
use egress_query::connection::{self, ClickHouseConfig, ServerVersion};
use egress_query::model::EgressModel;
use egress_query::schema::{AlertDeliveryRow, ALERT_DELIVERIES_TABLE};
use egress_query::sla::{self, EvalContext, SlaConfig, SlaResult, SlaSpec};

/// A running monitor.
#[derive(Debug)]
pub struct RunningMonitor {
    /// The query API's address.
    pub api_address: SocketAddr,
    done: tokio::task::JoinHandle<()>,
}

impl RunningMonitor {
    /// Waits until the monitor has stopped (after its shutdown token was cancelled).
    pub async fn wait(self) {
        if let Err(error) = self.done.await {
            error!(%error, "monitor task failed");
        }
    }
}

/// Starts the monitor and its API; returns once the API listens. `apply_migrations`: the
/// monitor creates the schema itself (`egress monitor`); otherwise it waits until the collector
/// of the same process has (`egress run`), so that two migrations never race.
pub async fn start(
    config: Config,
    apply_migrations: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningMonitor> {
    let ch = config.clickhouse.clone();
    let client = connection::client(&ch).context("building the ClickHouse client (key: clickhouse)")?;
    let model = EgressModel::build(&config.model, &config.exporters)
        .context("the egress model (keys: model, exporters)")?;
    let store = AlertStore::open(&config.monitor.alert_state_path)
        .with_context(|| format!("monitor.alert_state_path: {}", config.monitor.alert_state_path))?;
    let store = Arc::new(Mutex::new(store));

    let (delivery_tx, delivery_rx) = mpsc::channel::<AlertDeliveryRow>(10_000);
    let delivery_log: Arc<dyn DeliveryLog> = Arc::new(ClickHouseDeliveryLog { rows: delivery_tx });
    let notifier = Notifier::from_config(&config.alerting, delivery_log).context("the alerting receivers")?;
    let (notify_tx, notify_rx) = mpsc::channel::<Vec<Notification>>(256);
    let notifier_task = tokio::spawn(notifier.run(notify_rx));
    let delivery_writer = tokio::spawn(write_deliveries(
        ClickHouseSink::new(client.clone()).with_insert_timeout(ch.insert_timeout()),
        delivery_rx,
    ));

    let paths = model.paths().iter().map(api::PathInfo::from).collect();
    let sla_names = config.slas.iter().map(|s| s.name.clone()).collect();
    let alerts_view: Arc<dyn AlertsView> = Arc::new(StoreView { store: store.clone() });
    let tracer: Arc<dyn api::HopTracer> = Arc::new(egress_collector::probe::PathTracer::new(&config.probes));
    let state =
        ApiState::new(client.clone(), &ch.database, paths, sla_names, alerts_view)?.with_tracer(tracer);
    // The API's recording tracer, so that traces attached to alerts show in GET /api/v1/trace.
    let tracer = state.tracer().expect("a tracer was just given");
    let prober = (!config.probes.paths.is_empty()).then(|| {
        let sink = ClickHouseSink::new(client.clone()).with_insert_timeout(ch.insert_timeout());
        tokio::spawn(egress_collector::probe::run(
            config.probes.clone(),
            sink,
            shutdown.clone(),
        ))
    });
    let address: SocketAddr = config
        .monitor
        .listen
        .parse()
        .with_context(|| format!("monitor.listen: {:?}", config.monitor.listen))?;
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("cannot listen for the API on {address} (key: monitor.listen)"))?;
    let api_address = listener.local_addr()?;
    let access_config = config.monitor.api.clone();
    let access = api::Access::load(&access_config)?;
    if !access.requires_tokens() && !api_address.ip().is_loopback() {
        warn!(%api_address, "the query API is open to anyone who can reach it: configure monitor.api.tokens");
    }
    let state = state.with_access(access);
    let api_stop = shutdown.clone();
    let api_task = tokio::spawn(async move {
        let served = api::serve(
            listener,
            api::router(state),
            &access_config,
            api_stop.cancelled_owned(),
        )
        .await;
        if let Err(error) = served {
            error!(%error, "query API stopped");
        }
    });
    info!(%api_address, slas = config.slas.len(), "monitor started");

    let done = tokio::spawn(async move {
        let alerting = AlertPipes {
            store: &store,
            tracer: &tracer,
            notify: &notify_tx,
        };
        evaluation_loop(&config, &client, &model, &alerting, apply_migrations, &shutdown).await;
        drop(notify_tx);
        let report = notifier_task.await;
        if let Err(error) = report {
            error!(%error, "notifier failed");
        }
        // The notifier owned the last sender of delivery rows: the writer drains and stops.
        let _ = delivery_writer.await;
        if let Some(prober) = prober {
            let _ = prober.await;
        }
        let _ = api_task.await;
        info!("monitor stopped");
    });
    Ok(RunningMonitor { api_address, done })
}

/// Runs the monitor until `shutdown` is cancelled.
/// Standalone (`egress monitor`), it applies the migrations when `collector.migrate_on_start`
/// says so, and otherwise waits for `egress migrate`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let apply_migrations = config.collector.migrate_on_start;
    start(config, apply_migrations, shutdown).await?.wait().await;
    Ok(())
}

/// Where evaluation results go: the alert state, the hop tracer for latency alerts, and the
/// notifier's queue.
#[derive(Clone, Copy)]
struct AlertPipes<'a> {
    store: &'a Mutex<AlertStore>,
    tracer: &'a Arc<dyn api::HopTracer>,
    notify: &'a mpsc::Sender<Vec<Notification>>,
}

async fn evaluation_loop(
    config: &Config,
    client: &clickhouse::Client,
    model: &EgressModel,
    alerting: &AlertPipes<'_>,
    apply_migrations: bool,
    shutdown: &CancellationToken,
) {
    let AlertPipes {
        store,
        tracer,
        notify,
    } = *alerting;
    let ch = &config.clickhouse;
    let Some(version) = migrated(client, ch, apply_migrations, shutdown).await else {
        return;
    };
    let interval = Duration::from_secs(config.monitor.evaluation_interval_seconds);
    let instruments = crate::telemetry::MonitorInstruments::new();
    // SLAs that were removed from the configuration resolve their alerts.
    let names: std::collections::BTreeSet<String> = config.slas.iter().map(|s| s.name.clone()).collect();
    match store
        .lock()
        .map_err(|_| "poisoned")
        .map(|mut s| s.retire_rules(&names, Utc::now()))
    {
        Ok(Ok(notifications)) if !notifications.is_empty() => {
            let _ = notify.send(notifications).await;
        }
        Ok(Err(error)) => warn!(%error, "could not retire removed SLAs"),
        _ => {}
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_retention = None::<tokio::time::Instant>;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // One trace per cycle: its SLA evaluations, by verdict, and how long it took.
        let cycle = info_span!(
            "evaluation_cycle",
            slas = config.slas.len(),
            results = field::Empty,
            breaching = field::Empty,
            ok = field::Empty,
            no_data = field::Empty,
            failed = field::Empty,
            notifications = field::Empty,
            duration_ms = field::Empty,
        );
        let started = std::time::Instant::now();
        async {
            let now = Utc::now();
            let now_secs = u32::try_from(now.timestamp()).unwrap_or(u32::MAX);
            if let Err(error) = egress_query::rollups::close_hours(client, ch, now_secs).await {
                warn!(%error, "rollups: closing hours failed");
            }
            let ctx = EvalContext::from_model(now_secs, &ch.database, model, ch.query_timeout());
            let mut notifications = Vec::new();
            let mut all_results = Vec::new();
            let mut verdicts = VerdictCounts::default();
            for sla in &config.slas {
                let evaluation = info_span!(
                    "sla_evaluation",
                    sla = %sla.name,
                    kind = sla.kind.as_str(),
                    results = field::Empty,
                    outcome = field::Empty,
                    "otel.status_code" = field::Empty,
                );
                let results = match SlaSpec::of(sla) {
                    Ok(spec) => {
                        spec.evaluate(client, sla, &ctx)
                            .instrument(evaluation.clone())
                            .await
                    }
                    Err(error) => Err(error),
                };
                let results = match results {
                    Ok(results) => results,
                    Err(error) => {
                        evaluation.record("outcome", "failed");
                        evaluation.record("otel.status_code", "error");
                        instruments.evaluated(&sla.name, sla.kind.as_str(), "failed");
                        verdicts.failed += 1;
                        // The state stays as it was: a failed read is not a recovery.
                        evaluation.in_scope(|| {
                        warn!(sla = %sla.name, %error, "SLA evaluation failed; its alerts keep their state")
                    });
                        continue;
                    }
                };
                evaluation.record("results", results.len());
                evaluation.record("outcome", "ok");
                instruments.evaluated(&sla.name, sla.kind.as_str(), "ok");
                let mut samples: Vec<AlertSample> = results.iter().map(|r| alert_sample(r, sla)).collect();
                verdicts.count(&samples);
                if sla.kind == sla::KindName::Latency {
                    attach_traces(&mut samples, store, tracer, config)
                        .instrument(evaluation.clone())
                        .await;
                }
                let rule = alert_rule(sla, config);
                match store
                    .lock()
                    .map_err(|_| "alert state lock poisoned".to_owned())
                    .and_then(|mut s| s.evaluate(&rule, &samples, now).map_err(|e| e.to_string()))
                {
                    Ok(mut n) => notifications.append(&mut n),
                    Err(error) => error!(sla = %sla.name, %error, "alert state could not be updated"),
                }
                all_results.extend(results);
            }
            if let Err(error) =
                sla::write_results(client, &ch.database, &all_results, ch.insert_timeout()).await
            {
                warn!(%error, results = all_results.len(), "sla_results could not be written");
            }
            cycle.record("results", all_results.len());
            cycle.record("breaching", verdicts.breaching);
            cycle.record("ok", verdicts.ok);
            cycle.record("no_data", verdicts.no_data);
            cycle.record("failed", verdicts.failed);
            cycle.record("notifications", notifications.len());
            if let Ok(store) = store.lock() {
                let firing = store
                    .alerts()
                    .alerts()
                    .filter(|a| a.phase == egress_alerts::state::AlertPhase::Firing)
                    .count();
                instruments.firing(firing as u64);
            }
            if !notifications.is_empty() && notify.send(notifications).await.is_err() {
                error!("the notifier has stopped; notifications lost");
            }
        }
        .instrument(cycle.clone())
        .await;
        cycle.record("duration_ms", started.elapsed().as_millis() as u64);
        if !version.has_ttl() && last_retention.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_retention = Some(tokio::time::Instant::now());
            for result in [
                egress_query::retention::enforce(client, ch)
                    .await
                    .map_err(|e| e.to_string()),
                egress_query::rollups::enforce_retention(client, ch)
                    .await
                    .map_err(|e| e.to_string()),
            ] {
                match result {
                    Ok(dropped) if !dropped.is_empty() => {
                        info!(partitions = ?dropped, "retention: dropped expired partitions")
                    }
                    Ok(_) => {}
                    Err(error) => warn!(%error, "retention failed"),
                }
            }
        }
    }
}

/// Results of one cycle by verdict, for the cycle's span.
#[derive(Debug, Default)]
struct VerdictCounts {
    breaching: u64,
    ok: u64,
    no_data: u64,
    /// SLAs whose evaluation failed.
    failed: u64,
}

impl VerdictCounts {
    fn count(&mut self, samples: &[AlertSample]) {
        for sample in samples {
            match sample.verdict {
                SampleVerdict::Breaching => self.breaching += 1,
                SampleVerdict::Ok => self.ok += 1,
                SampleVerdict::NoData => self.no_data += 1,
            }
        }
    }
}

/// Applies the migrations, retrying while ClickHouse is unreachable; `None` at shutdown.
async fn migrated(
    client: &clickhouse::Client,
    ch: &ClickHouseConfig,
    apply: bool,
    shutdown: &CancellationToken,
) -> Option<ServerVersion> {
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = async {
            let version = connection::server_version(client).await?;
            if apply {
                egress_query::migrate::migrate(client, ch, &version).await?;
            } else {
                // The collector applies them: wait until all are recorded (distinct versions:
                // two collectors migrating at once may record one twice).
                let sql = format!(
                    "SELECT count(DISTINCT version) FROM {}.{}",
                    ch.database,
                    egress_query::migrate::MIGRATIONS_TABLE
                );
                let applied: u64 = client.query(&sql).fetch_one().await?;
                let wanted = egress_query::migrate::ddl(&version, ch).len() as u64;
                anyhow::ensure!(
                    applied >= wanted,
                    "{applied} of {wanted} migrations applied so far"
                );
            }
            Ok::<_, anyhow::Error>(version)
        };
        match attempt.await {
            Ok(version) => return Some(version),
            Err(error) => warn!(%error, retry_in_s = delay.as_secs(), "ClickHouse not ready for the monitor"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// A breaching latency sample whose alert is not firing yet gets a hop trace from its path's
/// binding to its target (the `target` label, or the path's first probe target) as the
/// annotation `trace`; while the alert fires, the trace it started with is kept. So the firing
/// notification and the stored alert show the route the packets took when latency went bad.
async fn attach_traces(
    samples: &mut [AlertSample],
    store: &Mutex<AlertStore>,
    tracer: &Arc<dyn api::HopTracer>,
    config: &Config,
) {
    for sample in samples.iter_mut() {
        if sample.verdict != SampleVerdict::Breaching
            || sample.labels.get("check").map(String::as_str) != Some("latency")
        {
            continue;
        }
        let fingerprint = egress_alerts::Fingerprint::of(&sample.labels).to_string();
        let kept = store.lock().ok().and_then(|s| {
            s.alerts()
                .get(&fingerprint)
                .filter(|a| a.phase == egress_alerts::state::AlertPhase::Firing)
                .and_then(|a| a.annotations.get("trace").cloned())
        });
        if let Some(trace) = kept {
            sample.annotations.insert("trace".to_owned(), trace);
            continue;
        }
        let Some(path) = sample.labels.get("path").cloned() else {
            continue;
        };
        let target = sample.labels.get("target").cloned().or_else(|| {
            config
                .probes
                .paths
                .iter()
                .find(|p| p.path == path)
                .and_then(|p| p.targets.first().cloned())
        });
        let Some(target) = target else { continue };
        let tracer = tracer.clone();
        let (trace_path, trace_target) = (path.clone(), target.clone());
        let hops = tokio::task::spawn_blocking(move || {
            tracer.trace(&trace_path, &trace_target, api::MAX_HOPS, api::HOP_TIMEOUT)
        })
        .await;
        let text = match hops {
            Ok(Ok(hops)) => format!("{target} via {path}: {}", format_hops(&hops)),
            Ok(Err(error)) => format!("trace to {target} via {path} failed: {error}"),
            Err(error) => format!("trace to {target} via {path} failed: {error}"),
        };
        info!(%path, %target, trace = %text, "hop trace attached to a latency alert");
        sample.annotations.insert("trace".to_owned(), text);
    }
}

/// `1 10.0.0.1 0.4 ms · 2 * · 3 203.0.113.7 80.3 ms`
fn format_hops(hops: &[egress_query::probes::Hop]) -> String {
    hops.iter()
        .map(|hop| match (hop.address, hop.rtt_us) {
            (Some(address), Some(rtt)) => format!("{} {address} {:.1} ms", hop.ttl, f64::from(rtt) / 1000.0),
            (Some(address), None) => format!("{} {address}", hop.ttl),
            (None, _) => format!("{} *", hop.ttl),
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The alert rule of one SLA. No rule labels: the SLA's user labels are already in every
/// sample, and rule labels would override subject labels.
fn alert_rule(sla: &SlaConfig, config: &Config) -> AlertRule {
    let base = config.alerting.external_url.trim_end_matches('/');
    AlertRule {
        name: sla.name.clone(),
        for_duration: chrono::Duration::seconds(sla.for_seconds as i64),
        keep_firing_for: chrono::Duration::seconds(sla.keep_firing_for_seconds as i64),
        resend_interval: chrono::Duration::seconds(config.alerting.resend_interval_seconds as i64),
        evaluation_interval: chrono::Duration::seconds(config.monitor.evaluation_interval_seconds as i64),
        labels: LabelSet::default(),
        annotations: Default::default(),
        generator_url: if base.is_empty() {
            String::new()
        } else {
            format!("{base}/api/v1/slas/{}/history", sla.name)
        },
    }
}

fn alert_sample(result: &SlaResult, sla: &SlaConfig) -> AlertSample {
    let sample = result.alert_sample(sla);
    AlertSample {
        labels: sample.labels.into_iter().collect(),
        annotations: sample.annotations,
        verdict: match sample.breaching {
            Some(true) => SampleVerdict::Breaching,
            Some(false) => SampleVerdict::Ok,
            None => SampleVerdict::NoData,
        },
        value: sample.value,
        threshold: sample.threshold,
    }
}

/// Delivery attempts go to `alert_deliveries` through a bounded queue (never blocking the
/// notifier); a full queue drops the log row, not the notification, and says so.
#[derive(Debug)]
struct ClickHouseDeliveryLog {
    rows: mpsc::Sender<AlertDeliveryRow>,
}

impl DeliveryLog for ClickHouseDeliveryLog {
    fn record(&self, attempt: DeliveryAttempt) {
        let row = AlertDeliveryRow {
            time: u32::try_from(attempt.time.timestamp()).unwrap_or(0),
            receiver: attempt.receiver,
            kind: attempt.kind,
            fingerprint: attempt.fingerprint,
            alertname: attempt.alertname,
            status: attempt.status,
            attempt: attempt.attempt,
            http_status: attempt.http_status,
            outcome: match attempt.outcome {
                DeliveryOutcome::Delivered => egress_query::schema::DeliveryOutcome::Delivered,
                DeliveryOutcome::Retrying => egress_query::schema::DeliveryOutcome::Retrying,
                DeliveryOutcome::Failed => egress_query::schema::DeliveryOutcome::Failed,
            },
            error: attempt.error,
        };
        if self.rows.try_send(row).is_err() {
            warn!("alert_deliveries queue full: one delivery log row dropped");
        }
    }
}

/// Writes delivery rows in small batches, retrying while ClickHouse is down.
async fn write_deliveries(sink: ClickHouseSink, mut rows: mpsc::Receiver<AlertDeliveryRow>) {
    let mut batch = Vec::new();
    while let Some(row) = rows.recv().await {
        batch.push(row);
        while let Ok(row) = rows.try_recv() {
            batch.push(row);
        }
        let mut delay = Duration::from_millis(200);
        for _ in 0..10 {
            match sink.insert(ALERT_DELIVERIES_TABLE, &batch).await {
                Ok(()) => break,
                Err(error) => {
                    warn!(%error, rows = batch.len(), "alert_deliveries insert failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        batch.clear();
    }
}

/// The API's view of the alert store.
#[derive(Debug)]
struct StoreView {
    store: Arc<Mutex<AlertStore>>,
}

impl StoreView {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut AlertStore) -> Result<T, AlertsViewError>,
    ) -> Result<T, AlertsViewError> {
        let mut store = self
            .store
            .lock()
            .map_err(|_| AlertsViewError::Unavailable("alert state lock poisoned".to_owned()))?;
        f(&mut store)
    }
}

impl AlertsView for StoreView {
    fn alerts(&self) -> Result<Vec<api::AlertView>, AlertsViewError> {
        self.with(|store| {
            let now = Utc::now();
            Ok(store
                .alerts()
                .alerts()
                .map(|alert| api::AlertView {
                    fingerprint: alert.fingerprint().to_string(),
                    labels: alert.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    annotations: alert.annotations.clone(),
                    state: match alert.phase {
                        egress_alerts::state::AlertPhase::Pending => api::AlertState::Pending,
                        egress_alerts::state::AlertPhase::Firing => api::AlertState::Firing,
                    },
                    starts_at: alert.fired_at.unwrap_or(alert.active_at),
                    ends_at: None,
                    value: alert.value,
                    threshold: alert.threshold,
                    silenced_by: store
                        .silences()
                        .muting(&alert.labels, now)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                })
                .collect())
        })
    }

    fn silences(&self) -> Result<Vec<api::SilenceView>, AlertsViewError> {
        let now = Utc::now();
        self.with(|store| {
            Ok(store
                .silences()
                .list()
                .iter()
                .map(|s| api::SilenceView {
                    id: s.id.clone(),
                    matchers: s
                        .matchers
                        .iter()
                        .map(|m| api::SilenceMatcher {
                            name: m.name.clone(),
                            value: m.value.clone(),
                            is_regex: m.is_regex,
                            is_equal: m.is_equal,
                        })
                        .collect(),
                    starts_at: s.starts_at,
                    ends_at: s.ends_at,
                    created_by: s.created_by.clone(),
                    comment: s.comment.clone(),
                    state: match s.status(now) {
                        egress_alerts::silence::SilenceStatus::Pending => api::SilenceState::Pending,
                        egress_alerts::silence::SilenceStatus::Active => api::SilenceState::Active,
                        egress_alerts::silence::SilenceStatus::Expired => api::SilenceState::Expired,
                    },
                })
                .collect())
        })
    }

    fn create_silence(&self, silence: api::NewSilence) -> Result<String, AlertsViewError> {
        let value = serde_json::to_value(&silence).map_err(|e| AlertsViewError::Invalid(e.to_string()))?;
        let request: egress_alerts::SilenceRequest =
            serde_json::from_value(value).map_err(|e| AlertsViewError::Invalid(e.to_string()))?;
        self.with(|store| {
            store
                .create_silence(request, Utc::now())
                .map(|s| s.id)
                .map_err(|e| AlertsViewError::Invalid(e.to_string()))
        })
    }

    fn expire_silence(&self, id: &str) -> Result<(), AlertsViewError> {
        self.with(|store| {
            if store.silences().get(id).is_none() {
                return Err(AlertsViewError::NotFound(id.to_owned()));
            }
            store
                .expire_silence(id, Utc::now())
                .map_err(|e| AlertsViewError::Unavailable(e.to_string()))
        })
    }
}
