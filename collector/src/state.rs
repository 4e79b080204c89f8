//! State across restarts: the receive workers' decoder state in one file, so that data
//! arriving right after a restart decodes at once instead of waiting (minutes, on many
//! routers) for the exporters to re-send their templates and options data.
//!
//! In: each worker's [`DecoderSnapshot`] (templates, sampling rates from options data,
//! sequence state; see [`crate::decode::snapshot`] for what is kept and for how long).
//! Out: the file at `collector.state_path`, and the restored snapshot at start-up.
//!
//! # The file
//! JSON (`{"version": 1, "saved_at": <unix seconds>, "decoder": {...}}`), compact, written
//! atomically: a temporary file beside it (named with the process id and a save counter, so
//! two collectors sharing a path cannot tear it), fsync, rename over the old file, fsync of the directory. A
//! crash leaves the old or the new file, never a torn one. Each collector process needs its
//! own path (two sharing one would restore each other's exporters: harmless, but wasteful).
//! An empty `collector.state_path` disables persistence.
//!
//! # When
//! - Start: the pipeline calls [`restore`] before any worker receives. A missing file starts
//!   empty (info); an unreadable or corrupt file, or one of another `version`, is logged as a
//!   warning and the collector starts empty: a state file never stops the collector.
//!   Every worker imports the whole snapshot: `SO_REUSEPORT` hashes an exporter's source
//!   address and port onto a worker, and after a restart (another worker count, another
//!   source port) that may be a different worker than before. Entries another worker owns
//!   cost memory only and age out under `decoder.template_ttl_seconds` (until then
//!   `egress_templates_known`, summed over workers, counts each worker's copy).
//! - Running: every `collector.state_save_interval_seconds` each worker publishes its
//!   snapshot into its slot of a [`StateExchange`] (from its receive loop, between datagrams:
//!   no locking while decoding), and a [`StateSaver`] task merges the slots (newest entry
//!   wins) and writes the file. The file is at most two intervals old after a crash.
//! - Shutdown: each worker publishes once more as it exits; after all workers have joined,
//!   [`StateSaver::finish`] writes the file a last time, before the sink drains.
//!
//! A worker also logs, once its first datagrams after the restart came in, the records the
//! exporters sent while the collector was stopped (from their sequence numbers; not counted
//! as `records_lost`, see [`crate::decode::snapshot`]).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::decode::{Decoder, DecoderConfig, DecoderSnapshot};
use crate::listener::unix_now;

/// Version of the file layout; a file of another version is not restored.
pub const FORMAT_VERSION: u32 = 1;

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("collector state {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("collector state {path}: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("collector state {path}: version {found}, this collector reads version {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

pub type Result<T> = std::result::Result<T, StateError>;

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// Unix seconds when the file was written.
    saved_at: u32,
    decoder: DecoderSnapshot,
}

/// Only the version, read first so that a future layout is reported as such, not as corrupt.
#[derive(Debug, Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Reads the state file: `Ok(None)` if it does not exist, else the snapshot and when it was
/// saved (Unix seconds).
pub fn load(path: &Path) -> Result<Option<(DecoderSnapshot, u32)>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |error: serde_json::Error| StateError::Corrupt {
        path: path.to_path_buf(),
        problem: error.to_string(),
    };
    let VersionOnly { version } = serde_json::from_slice(&bytes).map_err(corrupt)?;
    if version != FORMAT_VERSION {
        return Err(StateError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let file: StateFile = serde_json::from_slice(&bytes).map_err(corrupt)?;
    Ok(Some((file.decoder, file.saved_at)))
}

/// Writes `snapshot` to `path` atomically (temporary file, fsync, rename, fsync of the
/// directory), creating the directory if needed.
pub fn save(path: &Path, snapshot: &DecoderSnapshot, now: u32) -> Result<()> {
    let file = StateFile {
        version: FORMAT_VERSION,
        saved_at: now,
        decoder: snapshot.clone(),
    };
    let json = serde_json::to_vec(&file).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    let io_at = |at: &Path| {
        let at = at.to_path_buf();
        move |source| StateError::Io { path: at, source }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    // Unique per process and save: two collectors (or two pipelines of one process, as in
    // tests) sharing a path never write the same temporary file.
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let save_number = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}.{save_number}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut out = File::create(&tmp)?;
        out.write_all(&json)?;
        out.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(StateError::Io { path: tmp, source });
    }
    fs::rename(&tmp, path).map_err(io_at(path))?;
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io_at(&dir))?;
    Ok(())
}

/// Loads the state to restore at start-up (`now`: Unix seconds), without entries too old to
/// restore. Never fails: a missing file is an empty state, an unusable one a warning and an
/// empty state.
pub fn restore(path: &Path, config: &DecoderConfig, now: u32) -> DecoderSnapshot {
    match load(path) {
        Ok(Some((snapshot, saved_at))) => {
            let restored = DecoderSnapshot::merge([snapshot], config, now);
            let counts = restored.counts();
            info!(
                path = %path.display(),
                saved_seconds_ago = i64::from(now) - i64::from(saved_at),
                exporters = counts.exporters,
                templates = counts.templates,
                sampling_rates = counts.sampling_rates,
                sequences = counts.sequences,
                "decoder state restored: data from these exporters decodes without waiting for templates"
            );
            restored
        }
        Ok(None) => {
            info!(path = %path.display(), "no decoder state to restore; starting empty");
            DecoderSnapshot::default()
        }
        Err(error) => {
            warn!(%error, "decoder state not restored; starting empty (templates are learned again as exporters send them)");
            DecoderSnapshot::default()
        }
    }
}

/// Where the workers hand their snapshots to the saver: the restored snapshot and one slot
/// per worker. Each slot starts with the restored snapshot (what the worker imports), so a
/// save before a worker's first publication does not forget it.
#[derive(Debug, Clone)]
pub struct StateExchange {
    restored: Arc<DecoderSnapshot>,
    slots: Arc<Mutex<Vec<DecoderSnapshot>>>,
    publish_every: Duration,
    decoder_config: DecoderConfig,
}

impl StateExchange {
    /// An exchange for `workers` workers publishing every `publish_every`.
    pub fn new(
        restored: DecoderSnapshot,
        workers: usize,
        publish_every: Duration,
        decoder_config: DecoderConfig,
    ) -> Self {
        Self {
            slots: Arc::new(Mutex::new(vec![restored.clone(); workers])),
            restored: Arc::new(restored),
            publish_every,
            decoder_config,
        }
    }

    /// The handle of worker `slot`.
    pub fn worker(&self, slot: usize) -> WorkerState {
        WorkerState {
            exchange: Some(self.clone()),
            slot,
            last_publish: Instant::now(),
            missed_logged: 0,
        }
    }

    /// The workers' latest snapshots merged into one (newest entry wins), at `now`.
    pub fn merged(&self, now: u32) -> DecoderSnapshot {
        let slots = match self.slots.lock() {
            Ok(slots) => slots.clone(),
            // A worker panicked while publishing: its slot still holds a whole snapshot.
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        DecoderSnapshot::merge(slots, &self.decoder_config, now)
    }
}

/// A receive worker's side of the [`StateExchange`] (a no-op when persistence is off).
#[derive(Debug)]
pub struct WorkerState {
    exchange: Option<StateExchange>,
    slot: usize,
    last_publish: Instant,
    /// `missed_while_stopped` already logged.
    missed_logged: u64,
}

impl WorkerState {
    /// A handle that restores and publishes nothing.
    pub fn disabled() -> Self {
        Self {
            exchange: None,
            slot: 0,
            last_publish: Instant::now(),
            missed_logged: 0,
        }
    }

    /// Imports the restored state into the worker's fresh decoder (before its first receive).
    pub fn restore(&self, decoder: &mut Decoder) {
        if let Some(exchange) = &self.exchange {
            decoder.import_state(&exchange.restored, unix_now());
        }
    }

    /// Publishes the decoder's state if the publication interval has passed. Cheap otherwise;
    /// call it from the receive loop.
    pub fn tick(&mut self, decoder: &Decoder) {
        let due = self
            .exchange
            .as_ref()
            .is_some_and(|exchange| self.last_publish.elapsed() >= exchange.publish_every);
        if due {
            self.publish(decoder);
        }
    }

    /// Publishes the decoder's state now (also at the worker's exit).
    pub fn publish(&mut self, decoder: &Decoder) {
        let Some(exchange) = &self.exchange else {
            return;
        };
        self.last_publish = Instant::now();
        let snapshot = decoder.export_state();
        match exchange.slots.lock() {
            Ok(mut slots) => {
                if let Some(slot) = slots.get_mut(self.slot) {
                    *slot = snapshot;
                }
            }
            Err(_) => debug!(
                slot = self.slot,
                "state exchange poisoned; snapshot not published"
            ),
        }
        let missed = decoder.accounting.missed_while_stopped();
        if missed > self.missed_logged {
            info!(
                worker = self.slot,
                records = missed - self.missed_logged,
                "exporters sent records while the collector was stopped (from their sequence numbers; not counted as records_lost)"
            );
            self.missed_logged = missed;
        }
    }
}

/// The task that writes the state file every interval, and once more at shutdown.
#[derive(Debug)]
pub struct StateSaver {
    path: PathBuf,
    exchange: StateExchange,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl StateSaver {
    /// Starts saving `exchange` to `path` every `interval` (the first save after one interval).
    pub fn spawn(path: PathBuf, exchange: StateExchange, interval: Duration) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(save_periodically(
            path.clone(),
            exchange.clone(),
            interval,
            stop.clone(),
        ));
        Self {
            path,
            exchange,
            stop,
            task,
        }
    }

    /// Stops the periodic saves and writes the file a last time. Call after every worker has
    /// joined (so each has published its final state).
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
        let (path, exchange) = (self.path, self.exchange);
        let saved = tokio::task::spawn_blocking(move || {
            let now = unix_now();
            let snapshot = exchange.merged(now);
            save(&path, &snapshot, now).map(|()| (path, snapshot.counts()))
        })
        .await;
        match saved {
            Ok(Ok((path, counts))) => info!(
                path = %path.display(),
                exporters = counts.exporters,
                templates = counts.templates,
                sampling_rates = counts.sampling_rates,
                sequences = counts.sequences,
                "decoder state saved"
            ),
            Ok(Err(error)) => {
                warn!(%error, "decoder state not saved at shutdown; the next start learns templates again")
            }
            Err(error) => warn!(%error, "saving the decoder state failed"),
        }
    }
}

async fn save_periodically(
    path: PathBuf,
    exchange: StateExchange,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Warn when saving starts failing, not every interval while it keeps failing.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let (path, exchange) = (path.clone(), exchange.clone());
        let saved = tokio::task::spawn_blocking(move || {
            let now = unix_now();
            save(&path, &exchange.merged(now), now)
        })
        .await;
        match saved {
            Ok(Ok(())) => {
                if failing {
                    info!("decoder state saved again");
                }
                failing = false;
            }
            Ok(Err(error)) if !failing => {
                failing = true;
                warn!(%error, "decoder state not saved; a restart will wait for templates again");
            }
            Ok(Err(error)) => debug!(%error, "decoder state still not saved"),
            Err(error) => warn!(%error, "saving the decoder state failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::snapshot::{FieldSnapshot, ScopeSnapshot, SnapshotProtocol, TemplateSnapshot};

    fn snapshot(now: u32) -> DecoderSnapshot {
        DecoderSnapshot {
            scopes: vec![ScopeSnapshot {
                exporter: std::net::IpAddr::from([192, 0, 2, 1]),
                protocol: SnapshotProtocol::Netflow9,
                observation_domain: 3,
                last_active: now,
                templates: vec![TemplateSnapshot {
                    template_id: 256,
                    options: false,
                    refreshed: now,
                    fields: vec![FieldSnapshot(8, 0, 4), FieldSnapshot(1, 0, 4)],
                }],
                sampling_rates: Vec::new(),
            }],
            ..DecoderSnapshot::default()
        }
    }

    #[test]
    fn saved_state_loads_back_and_replaces_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/collector-state.json");
        assert!(load(&path).expect("missing is fine").is_none());
        let now = unix_now();
        save(&path, &DecoderSnapshot::default(), now).expect("first save");
        save(&path, &snapshot(now), now).expect("second save");
        let (loaded, saved_at) = load(&path).expect("load").expect("present");
        assert_eq!((loaded, saved_at), (snapshot(now), now));
        let names: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["collector-state.json"], "no temporary file left");
        assert_eq!(restore(&path, &DecoderConfig::default(), now), snapshot(now));
    }

    #[test]
    fn unusable_files_start_empty_and_name_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let config = DecoderConfig::default();
        for (content, problem) in [
            (
                "{\"version\": 1, \"saved_at\": 0, \"decoder\": {\"scopes\": [",
                "EOF",
            ),
            ("not json", "expected"),
            ("{\"version\": 2, \"anything\": true}", "version 2"),
        ] {
            fs::write(&path, content).expect("write");
            let error = load(&path).expect_err(content).to_string();
            assert!(error.contains(problem) && error.contains("state.json"), "{error}");
            assert_eq!(restore(&path, &config, unix_now()), DecoderSnapshot::default());
        }
    }

    #[test]
    fn exchange_merges_what_the_workers_published() {
        let now = unix_now();
        let exchange = StateExchange::new(snapshot(now - 10), 2, Duration::ZERO, DecoderConfig::default());
        // Before any publication the restored state is what would be saved.
        assert_eq!(exchange.merged(now), snapshot(now - 10));
        let mut worker = exchange.worker(1);
        let mut decoder = Decoder::new(&DecoderConfig::default());
        worker.restore(&mut decoder);
        assert_eq!(decoder.export_state(), snapshot(now - 10));
        // The worker learns a newer definition of template 256 and publishes it.
        let mut newer = snapshot(now);
        newer.scopes[0].templates[0].fields.pop();
        decoder.import_state(&newer, now);
        worker.tick(&decoder);
        assert_eq!(exchange.merged(now), newer);
        // A disabled handle does nothing.
        let mut empty = Decoder::new(&DecoderConfig::default());
        WorkerState::disabled().restore(&mut empty);
        assert_eq!(empty.export_state(), DecoderSnapshot::default());
    }
}
