//! Alert state: Prometheus alerting-rule semantics over SLA verdicts.
//!
//! Stage: `rules → evaluate → **state** → notify/`. Input, once per evaluation of a rule (an
//! SLA): its [`AlertSample`]s (one per subject) and the evaluation time `now`, plus the current
//! [`Silences`]. Output: the [`Notification`]s to deliver. Pure: no clock, no I/O; the caller
//! (`persist::AlertStore`) saves the state after every change.
//!
//! Lifecycle of one alert (identity = its full label set, `alertname` included):
//! - inactive → **pending** on the first breaching sample; pending → **firing** once it has
//!   breached for `for_duration` (at once when that is zero). A pending alert that stops breaching
//!   is dropped without any notification.
//! - A firing alert that stops breaching (a sample with verdict `Ok`, or no sample at all) stays
//!   firing for `keep_firing_for` from the first non-breaching evaluation (Prometheus'
//!   `KeepFiringSince`), then is **resolved** and forgotten.
//! - A `NoData` sample neither fires nor resolves: the alert keeps its phase and timers (a pending
//!   alert does not advance to firing on no data). Exporter-health rules send `Breaching` for a
//!   silent exporter, so that case never reaches `NoData`.
//!
//! Notifications: `Firing` when an alert starts firing, again every `resend_interval` while it
//! fires, and `Resolved` once. Decisions:
//! - A muted (silenced) alert's `Firing` notifications are dropped, not queued, and do not count
//!   as sent, so the first evaluation after the silence ends sends one.
//! - `Resolved` goes out only when a `Firing` went out earlier (never for an alert nobody was told
//!   about) — and then even under a silence, so receivers such as PagerDuty close what they
//!   opened instead of keeping an incident open forever.
//! - Alertmanager times follow Prometheus: `startsAt` = when it started firing; `endsAt` of a
//!   firing alert = now + 4 × max(resend interval, evaluation interval) (Alertmanager resolves it
//!   by itself if we stop sending); `endsAt` of a resolved alert = the resolution time.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::labels::{Fingerprint, LabelSet};
use crate::silence::Silences;

/// Label that names the rule, as in Prometheus.
pub const ALERTNAME: &str = "alertname";

/// One alerting rule (one SLA): its timers and the labels/annotations it adds.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// Rule name; becomes the `alertname` label.
    pub name: String,
    /// How long a subject must breach before the alert fires (`for`).
    pub for_duration: Duration,
    /// How long a firing alert keeps firing after the breach ends.
    pub keep_firing_for: Duration,
    /// Interval between repeated `Firing` notifications of a still-firing alert.
    pub resend_interval: Duration,
    /// Evaluation interval of the monitor (used for `endsAt`, see the module doc).
    pub evaluation_interval: Duration,
    /// Labels added to every alert of the rule; they override sample labels of the same name.
    pub labels: LabelSet,
    /// Annotations added to every alert; sample annotations of the same name override them.
    pub annotations: BTreeMap<String, String>,
    /// Link back to the rule (e.g. the SLA status page of the API); may be empty.
    pub generator_url: String,
}

/// What an evaluation said about one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleVerdict {
    /// The subject breaches the SLA.
    Breaching,
    /// The subject is within the SLA.
    Ok,
    /// Too few samples to say: neither fires nor resolves.
    NoData,
}

/// One subject's result of one evaluation (contract: "alert input"). The contract's
/// `breaching: bool` became [`SampleVerdict`] so that no data is not mistaken for ok.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertSample {
    /// Subject labels (path, exporter, host...), severity, SLA kind, user labels.
    pub labels: LabelSet,
    /// Human text: summary, description, baseline, top destinations...
    pub annotations: BTreeMap<String, String>,
    /// Verdict of this evaluation.
    pub verdict: SampleVerdict,
    /// Measured value.
    pub value: f64,
    /// Threshold the value was compared with, if any (shown in messages).
    pub threshold: Option<f64>,
}

/// Phase of an active alert (inactive alerts are not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertPhase {
    /// Breaching, `for` not elapsed yet.
    Pending,
    /// Firing.
    Firing,
}

/// One active alert with its timers (persisted as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Name of the rule that owns it.
    pub rule: String,
    /// Full label set (identity).
    pub labels: LabelSet,
    /// Latest annotations.
    pub annotations: BTreeMap<String, String>,
    /// Pending or firing.
    pub phase: AlertPhase,
    /// First breaching evaluation of this episode (Prometheus `activeAt`).
    pub active_at: DateTime<Utc>,
    /// When it started firing (`startsAt`).
    pub fired_at: Option<DateTime<Utc>>,
    /// Last breaching evaluation.
    pub last_breach_at: DateTime<Utc>,
    /// First non-breaching evaluation while firing (for `keep_firing_for`).
    pub keep_firing_since: Option<DateTime<Utc>>,
    /// Latest value.
    pub value: f64,
    /// Latest threshold.
    pub threshold: Option<f64>,
    /// When the last `Firing` notification went out (None = never).
    pub last_notified_at: Option<DateTime<Utc>>,
    /// Link back to the rule.
    pub generator_url: String,
}

impl Alert {
    /// The alert's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.labels)
    }
}

/// Firing or resolved, as receivers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    /// The alert fires.
    Firing,
    /// The alert has resolved.
    Resolved,
}

impl NotificationStatus {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Firing => "firing",
            NotificationStatus::Resolved => "resolved",
        }
    }
}

/// One alert to tell receivers about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Firing or resolved.
    pub status: NotificationStatus,
    /// Full label set.
    pub labels: LabelSet,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Fingerprint of the labels.
    pub fingerprint: Fingerprint,
    /// When it started firing.
    pub starts_at: DateTime<Utc>,
    /// See the module doc.
    pub ends_at: DateTime<Utc>,
    /// Latest value.
    pub value: f64,
    /// Latest threshold.
    pub threshold: Option<f64>,
    /// Link back to the rule.
    pub generator_url: String,
}

impl Notification {
    /// The `alertname` label.
    pub fn alertname(&self) -> &str {
        self.labels.get(ALERTNAME).map(String::as_str).unwrap_or("")
    }

    fn of(alert: &Alert, status: NotificationStatus, ends_at: DateTime<Utc>) -> Self {
        Notification {
            status,
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            fingerprint: alert.fingerprint(),
            starts_at: alert.fired_at.unwrap_or(alert.active_at),
            ends_at,
            value: alert.value,
            threshold: alert.threshold,
            generator_url: alert.generator_url.clone(),
        }
    }
}

/// Every active alert, keyed by fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertBook {
    alerts: BTreeMap<String, Alert>,
}

impl AlertBook {
    /// Active (pending or firing) alerts, ordered by fingerprint.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// One alert by fingerprint (16 hex digits).
    pub fn get(&self, fingerprint: &str) -> Option<&Alert> {
        self.alerts.get(fingerprint)
    }

    /// Applies one evaluation of `rule` at `now` and returns the notifications to deliver.
    pub fn evaluate(
        &mut self,
        rule: &AlertRule,
        samples: &[AlertSample],
        silences: &Silences,
        now: DateTime<Utc>,
    ) -> Vec<Notification> {
        // Subjects the evaluation spoke about, breaching or no data (both keep the alert).
        let mut kept = BTreeSet::new();
        for sample in samples {
            let mut labels = sample.labels.clone();
            labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            labels.insert(ALERTNAME.to_string(), rule.name.clone());
            let key = Fingerprint::of(&labels).to_string();
            match sample.verdict {
                SampleVerdict::Ok => continue,
                SampleVerdict::NoData => {
                    kept.insert(key);
                    continue;
                }
                SampleVerdict::Breaching => {}
            }
            if !kept.insert(key.clone()) {
                continue; // duplicate subject in one evaluation: the first sample wins
            }
            let mut annotations = rule.annotations.clone();
            annotations.extend(sample.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
            let alert = self.alerts.entry(key).or_insert_with(|| Alert {
                rule: rule.name.clone(),
                labels,
                annotations: BTreeMap::new(),
                phase: AlertPhase::Pending,
                active_at: now,
                fired_at: None,
                last_breach_at: now,
                keep_firing_since: None,
                value: sample.value,
                threshold: None,
                last_notified_at: None,
                generator_url: rule.generator_url.clone(),
            });
            alert.annotations = annotations;
            alert.value = sample.value;
            alert.threshold = sample.threshold;
            alert.last_breach_at = now;
            alert.keep_firing_since = None;
            if alert.phase == AlertPhase::Pending && now - alert.active_at >= rule.for_duration {
                alert.phase = AlertPhase::Firing;
                alert.fired_at = Some(now);
            }
        }

        let mut notifications = Vec::new();
        let mut resolved = Vec::new();
        for (key, alert) in self.alerts.iter_mut().filter(|(_, a)| a.rule == rule.name) {
            if kept.contains(key) {
                continue;
            }
            match alert.phase {
                AlertPhase::Pending => resolved.push(key.clone()),
                AlertPhase::Firing => {
                    let since = *alert.keep_firing_since.get_or_insert(now);
                    if now - since >= rule.keep_firing_for {
                        resolved.push(key.clone());
                    }
                }
            }
        }
        for key in resolved {
            if let Some(alert) = self.alerts.remove(&key) {
                if alert.phase == AlertPhase::Firing && alert.last_notified_at.is_some() {
                    notifications.push(Notification::of(&alert, NotificationStatus::Resolved, now));
                }
            }
        }

        let valid_for = rule.resend_interval.max(rule.evaluation_interval) * 4;
        for alert in self.alerts.values_mut() {
            if alert.rule != rule.name || alert.phase != AlertPhase::Firing {
                continue;
            }
            let due = alert
                .last_notified_at
                .is_none_or(|last| now - last >= rule.resend_interval);
            if due && !silences.is_muted(&alert.labels, now) {
                alert.last_notified_at = Some(now);
                notifications.push(Notification::of(
                    alert,
                    NotificationStatus::Firing,
                    now + valid_for,
                ));
            }
        }
        notifications
    }

    /// Resolves and forgets the alerts of rules that no longer exist (e.g. an SLA removed from
    /// the configuration between two runs), so that nothing stays firing forever.
    pub fn retire_rules(
        &mut self,
        existing_rules: &BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> Vec<Notification> {
        let gone: Vec<String> = self
            .alerts
            .iter()
            .filter(|(_, a)| !existing_rules.contains(&a.rule))
            .map(|(k, _)| k.clone())
            .collect();
        gone.into_iter()
            .filter_map(|key| self.alerts.remove(&key))
            .filter(|a| a.phase == AlertPhase::Firing && a.last_notified_at.is_some())
            .map(|a| Notification::of(&a, NotificationStatus::Resolved, now))
            .collect()
    }
}

#[cfg(test)]
mod tests;
