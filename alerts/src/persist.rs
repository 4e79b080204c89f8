//! Persistence: the alert state (active alerts with their timers, silences) in one JSON file.
//!
//! Stage: wraps the pure `state` and `silence` modules with I/O. In: evaluations and silence
//! changes; out: notifications, and the file at `alert_state_path`, rewritten after every change
//! (temporary file in the same directory, fsync, rename over the old one, fsync of the directory)
//! so that a crash leaves either the old or the new state, never a torn one. Loaded at start-up:
//! a firing alert is not re-notified before its resend interval, and its resolution is still
//! delivered later. Nothing happens at shutdown: the file is always current.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::silence::{self, Silence, SilenceRequest, Silences};
use crate::state::{AlertBook, AlertRule, AlertSample, Notification};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the state file failed.
    #[error("alert state {path}: {source}")]
    Io {
        /// The state file (or its temporary sibling).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("alert state {path}: {problem}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A silence request was refused.
    #[error(transparent)]
    Silence(#[from] silence::Error),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Version of the file layout, checked on load.
const FORMAT_VERSION: u32 = 1;

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    alerts: AlertBook,
    silences: Silences,
}

/// Alert state backed by a file; every mutating call saves before it returns.
#[derive(Debug)]
pub struct AlertStore {
    path: PathBuf,
    alerts: AlertBook,
    silences: Silences,
}

impl AlertStore {
    /// Loads the state from `path`, or starts empty when the file does not exist.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let (alerts, silences) = match fs::read(&path) {
            Ok(bytes) => {
                let corrupt = |problem: String| Error::Corrupt {
                    path: path.clone(),
                    problem,
                };
                let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if file.version != FORMAT_VERSION {
                    return Err(corrupt(format!(
                        "format version {} (expected {FORMAT_VERSION})",
                        file.version
                    )));
                }
                let mut silences = file.silences;
                silences.compile().map_err(|e| corrupt(e.to_string()))?;
                (file.alerts, silences)
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(err) => return Err(io(err)),
        };
        Ok(AlertStore {
            path,
            alerts,
            silences,
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Active alerts.
    pub fn alerts(&self) -> &AlertBook {
        &self.alerts
    }

    /// Silences.
    pub fn silences(&self) -> &Silences {
        &self.silences
    }

    /// Applies one evaluation of a rule (see [`AlertBook::evaluate`]) and saves.
    pub fn evaluate(
        &mut self,
        rule: &AlertRule,
        samples: &[AlertSample],
        now: DateTime<Utc>,
    ) -> Result<Vec<Notification>> {
        let notifications = self.alerts.evaluate(rule, samples, &self.silences, now);
        self.save()?;
        Ok(notifications)
    }

    /// Resolves the alerts of rules that are gone (see [`AlertBook::retire_rules`]) and saves.
    pub fn retire_rules(
        &mut self,
        existing_rules: &BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Notification>> {
        let notifications = self.alerts.retire_rules(existing_rules, now);
        self.save()?;
        Ok(notifications)
    }

    /// Creates a silence and saves.
    pub fn create_silence(&mut self, request: SilenceRequest, now: DateTime<Utc>) -> Result<Silence> {
        self.silences.prune(now);
        let silence = self.silences.create(request, now)?;
        self.save()?;
        Ok(silence)
    }

    /// Expires a silence and saves.
    pub fn expire_silence(&mut self, id: &str, now: DateTime<Utc>) -> Result<()> {
        self.silences.expire(id, now)?;
        self.save()
    }

    /// Writes the state atomically: temporary file, fsync, rename, fsync of the directory.
    pub fn save(&self) -> Result<()> {
        let file = StateFile {
            version: FORMAT_VERSION,
            alerts: self.alerts.clone(),
            silences: self.silences.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            problem: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let mut out = File::create(&tmp).map_err(io_at(&tmp))?;
        out.write_all(&json).map_err(io_at(&tmp))?;
        out.sync_all().map_err(io_at(&tmp))?;
        drop(out);
        fs::rename(&tmp, &self.path).map_err(io_at(&self.path))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io_at(&dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Matcher;
    use crate::state::{NotificationStatus, SampleVerdict};
    use chrono::{Duration, TimeZone};
    use std::collections::BTreeMap;

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(seconds)
    }

    fn rule() -> AlertRule {
        AlertRule {
            name: "exfiltration".into(),
            for_duration: Duration::zero(),
            keep_firing_for: Duration::zero(),
            resend_interval: Duration::seconds(3600),
            evaluation_interval: Duration::seconds(60),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            generator_url: String::new(),
        }
    }

    fn sample(verdict: SampleVerdict) -> AlertSample {
        AlertSample {
            labels: [("host".to_string(), "10.1.2.3".to_string())].into(),
            annotations: BTreeMap::new(),
            verdict,
            value: 5e9,
            threshold: Some(1e9),
        }
    }

    #[test]
    fn restart_neither_repages_nor_forgets_to_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/alerts.json");
        let mut store = AlertStore::open(&path).unwrap();
        let fired = store
            .evaluate(&rule(), &[sample(SampleVerdict::Breaching)], t(0))
            .unwrap();
        assert_eq!(fired.len(), 1);
        let silence = store
            .create_silence(
                SilenceRequest {
                    matchers: vec![Matcher::parse("host=~10\\.9\\..+").unwrap()],
                    starts_at: None,
                    ends_at: t(7200),
                    created_by: "ops".into(),
                    comment: "other host".into(),
                },
                t(0),
            )
            .unwrap();
        drop(store);
        assert!(!path.with_extension("json.tmp").exists());

        let mut store = AlertStore::open(&path).unwrap();
        assert_eq!(store.silences().list().len(), 1);
        assert_eq!(store.silences().list()[0].id, silence.id);
        // The reloaded regex matcher works.
        assert!(store
            .silences()
            .is_muted(&[("host".to_string(), "10.9.0.1".to_string())].into(), t(60)));
        // Still firing, within the resend interval: no re-page.
        assert!(store
            .evaluate(&rule(), &[sample(SampleVerdict::Breaching)], t(60))
            .unwrap()
            .is_empty());
        drop(store);

        let mut store = AlertStore::open(&path).unwrap();
        let resolved = store.evaluate(&rule(), &[], t(120)).unwrap();
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, NotificationStatus::Resolved);
        assert_eq!(resolved[0].fingerprint, fired[0].fingerprint);
        assert_eq!(resolved[0].starts_at, t(0));
        store.expire_silence(&silence.id, t(130)).unwrap();
        drop(store);
        let store = AlertStore::open(&path).unwrap();
        assert_eq!(store.alerts().alerts().count(), 0);
        assert!(!store
            .silences()
            .is_muted(&[("host".to_string(), "10.9.0.1".to_string())].into(), t(140)));
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        fs::write(&path, b"{\"version\": 1, \"alerts\": ").unwrap();
        let err = AlertStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("alerts.json"), "{err}");
        fs::write(
            &path,
            br#"{"version": 9, "alerts": {"alerts": {}}, "silences": {"silences": []}}"#,
        )
        .unwrap();
        assert!(AlertStore::open(&path)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
    }
}
