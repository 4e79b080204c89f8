//! Silences: matchers plus a time window that mute notifications.
//!
//! Stage: consulted by `state` when it decides whether a notification goes out. Input: silence
//! requests from the API (create, expire) and the current time; output: the silences, their
//! status, and whether a label set is muted now. Pure: the caller persists the result.
//!
//! Semantics are Alertmanager's: a silence mutes an alert when every matcher matches its labels
//! and `starts_at <= now < ends_at`. Expiring a silence sets `ends_at` to now (or deletes it when
//! it had not started yet). A muted alert's notifications are dropped, not queued; its state still
//! advances.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::labels::{self, LabelSet, Matcher};

/// Errors of this module; validation errors name the offending field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A field of a silence request is invalid.
    #[error("silence field `{field}`: {problem}")]
    Invalid {
        /// The request field (`matchers`, `matchers[2].value`, `ends_at`, `created_by` ...).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No silence has this id.
    #[error("silence {0}: not found")]
    NotFound(String),
    /// The silence has already expired.
    #[error("silence {0}: already expired")]
    AlreadyExpired(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// A request to create a silence (the body of `POST /silences`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// Matchers that must all match an alert's labels (at least one).
    pub matchers: Vec<Matcher>,
    /// Start of the silence (default: now).
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// End of the silence; must be after `starts_at` and in the future.
    pub ends_at: DateTime<Utc>,
    /// Who created it (free text, required).
    pub created_by: String,
    /// Why (free text, required).
    pub comment: String,
}

/// Whether a silence is waiting, muting, or over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceStatus {
    /// `now < starts_at`.
    Pending,
    /// `starts_at <= now < ends_at`.
    Active,
    /// `ends_at <= now`.
    Expired,
}

/// A stored silence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Silence {
    /// Random 128-bit id as 32 lowercase hex digits.
    pub id: String,
    /// Matchers that must all match.
    pub matchers: Vec<Matcher>,
    /// Start of the window.
    pub starts_at: DateTime<Utc>,
    /// End of the window (exclusive).
    pub ends_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// When it was created or last expired.
    pub updated_at: DateTime<Utc>,
}

impl Silence {
    /// Status at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> SilenceStatus {
        if now < self.starts_at {
            SilenceStatus::Pending
        } else if now < self.ends_at {
            SilenceStatus::Active
        } else {
            SilenceStatus::Expired
        }
    }

    /// Whether it mutes `labels` at `now`.
    pub fn mutes(&self, labels: &LabelSet, now: DateTime<Utc>) -> bool {
        self.status(now) == SilenceStatus::Active && labels::all_match(&self.matchers, labels)
    }
}

/// How long expired silences are kept for listing before [`Silences::prune`] drops them
/// (Alertmanager's default retention, 120 h).
pub const EXPIRED_RETENTION: Duration = Duration::hours(120);

/// All silences, in creation order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Silences {
    silences: Vec<Silence>,
}

impl Silences {
    /// Validates a request and stores the new silence. Every problem is reported at once,
    /// separated by `; `, each naming its field.
    pub fn create(&mut self, request: SilenceRequest, now: DateTime<Utc>) -> Result<Silence> {
        let mut problems: Vec<(String, String)> = Vec::new();
        if request.matchers.is_empty() {
            problems.push(("matchers".into(), "at least one matcher is required".into()));
        }
        let mut matchers = request.matchers;
        for (i, matcher) in matchers.iter_mut().enumerate() {
            if let Err(err) = matcher.compile() {
                let field = match err {
                    labels::Error::EmptyName => format!("matchers[{i}].name"),
                    _ => format!("matchers[{i}].value"),
                };
                problems.push((field, err.to_string()));
            }
        }
        // A silence whose matchers all match the empty label set would mute every alert.
        if !matchers.is_empty() && problems.is_empty() && labels::all_match(&matchers, &LabelSet::new()) {
            problems.push((
                "matchers".into(),
                "the matchers match every alert (empty label set)".into(),
            ));
        }
        let starts_at = request.starts_at.unwrap_or(now).max(now);
        if request.ends_at <= starts_at {
            problems.push((
                "ends_at".into(),
                format!("{} is not after starts_at {starts_at}", request.ends_at),
            ));
        }
        if request.created_by.trim().is_empty() {
            problems.push(("created_by".into(), "required".into()));
        }
        if request.comment.trim().is_empty() {
            problems.push(("comment".into(), "required".into()));
        }
        if !problems.is_empty() {
            let field = problems
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let problem = problems
                .iter()
                .map(|(f, p)| format!("{f}: {p}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::Invalid { field, problem });
        }
        let silence = Silence {
            id: format!("{:032x}", rand::random::<u128>()),
            matchers,
            starts_at,
            ends_at: request.ends_at,
            created_by: request.created_by,
            comment: request.comment,
            updated_at: now,
        };
        self.silences.push(silence.clone());
        Ok(silence)
    }

    /// Ends a silence now. A silence that has not started yet is removed instead.
    pub fn expire(&mut self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let at = self
            .silences
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| Error::NotFound(id.into()))?;
        match self.silences[at].status(now) {
            SilenceStatus::Expired => Err(Error::AlreadyExpired(id.into())),
            SilenceStatus::Pending => {
                self.silences.remove(at);
                Ok(())
            }
            SilenceStatus::Active => {
                self.silences[at].ends_at = now;
                self.silences[at].updated_at = now;
                Ok(())
            }
        }
    }

    /// Every stored silence (including expired ones still retained).
    pub fn list(&self) -> &[Silence] {
        &self.silences
    }

    /// One silence by id.
    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.silences.iter().find(|s| s.id == id)
    }

    /// Whether any active silence mutes `labels` at `now`.
    pub fn is_muted(&self, labels: &LabelSet, now: DateTime<Utc>) -> bool {
        self.silences.iter().any(|s| s.mutes(labels, now))
    }

    /// Ids of the active silences that mute `labels` at `now` (for the API's alert list).
    pub fn muting(&self, labels: &LabelSet, now: DateTime<Utc>) -> Vec<&str> {
        self.silences
            .iter()
            .filter(|s| s.mutes(labels, now))
            .map(|s| s.id.as_str())
            .collect()
    }

    /// Drops silences that expired more than [`EXPIRED_RETENTION`] ago; returns how many.
    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.silences.len();
        self.silences.retain(|s| now - s.ends_at < EXPIRED_RETENTION);
        before - self.silences.len()
    }

    /// Recompiles regex matchers after loading from disk.
    pub(crate) fn compile(&mut self) -> std::result::Result<(), labels::Error> {
        for silence in &mut self.silences {
            for matcher in &mut silence.matchers {
                matcher.compile()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minute)
    }

    fn request(matchers: Vec<Matcher>, starts: Option<i64>, ends: i64) -> SilenceRequest {
        SilenceRequest {
            matchers,
            starts_at: starts.map(t),
            ends_at: t(ends),
            created_by: "ops".into(),
            comment: "maintenance".into(),
        }
    }

    #[test]
    fn silence_mutes_matching_alerts_inside_its_window() {
        let mut silences = Silences::default();
        let m = Matcher::parse("host=~10\\.1\\..*").unwrap();
        let s = silences.create(request(vec![m], Some(10), 20), t(0)).unwrap();
        assert_eq!(s.id.len(), 32);
        let labels: LabelSet = [("host".to_string(), "10.1.2.3".to_string())].into();
        let other: LabelSet = [("host".to_string(), "10.2.2.3".to_string())].into();
        assert!(!silences.is_muted(&labels, t(5)));
        assert!(silences.is_muted(&labels, t(10)));
        assert!(!silences.is_muted(&other, t(10)));
        assert_eq!(silences.muting(&labels, t(10)), [s.id.as_str()]);
        assert!(!silences.is_muted(&labels, t(20)));
        assert_eq!(silences.list()[0].status(t(20)), SilenceStatus::Expired);
    }

    #[test]
    fn expire_ends_an_active_silence_and_removes_a_pending_one() {
        let mut silences = Silences::default();
        let m = || Matcher::parse("alertname=x").unwrap();
        let active = silences.create(request(vec![m()], None, 60), t(0)).unwrap();
        let pending = silences.create(request(vec![m()], Some(30), 60), t(0)).unwrap();
        silences.expire(&active.id, t(5)).unwrap();
        assert_eq!(
            silences.get(&active.id).unwrap().status(t(5)),
            SilenceStatus::Expired
        );
        assert!(matches!(
            silences.expire(&active.id, t(6)),
            Err(Error::AlreadyExpired(_))
        ));
        silences.expire(&pending.id, t(5)).unwrap();
        assert!(silences.get(&pending.id).is_none());
        assert!(matches!(silences.expire("nope", t(5)), Err(Error::NotFound(_))));
        assert_eq!(silences.prune(t(5) + EXPIRED_RETENTION), 1);
    }

    #[test]
    fn validation_names_every_bad_field() {
        let mut silences = Silences::default();
        let bad_regex: Matcher =
            serde_json::from_str(r#"{"name":"host","value":"(","isRegex":true}"#).unwrap();
        let mut req = request(vec![bad_regex], Some(10), 5);
        req.created_by = " ".into();
        let err = silences.create(req, t(0)).unwrap_err().to_string();
        for field in ["matchers[0].value", "ends_at", "created_by"] {
            assert!(err.contains(field), "{err}");
        }
        let err = silences
            .create(request(vec![], None, 5), t(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("matchers"), "{err}");
        let match_all = Matcher::parse("x=~.*").unwrap();
        assert!(silences.create(request(vec![match_all], None, 5), t(0)).is_err());
        assert!(silences.list().is_empty());
    }
}
