//! The `[alerting]` configuration section: receivers, routes, resend interval.
//!
//! Stage: read once at start-up by the binary, validated, then turned into a
//! `notify::Notifier` (which resolves the secrets). In: TOML-deserialised structs; out: a list of
//! every problem, each naming its key (`alerting.receivers[1].url`).
//!
//! ```toml
//! [alerting]
//! resend_interval_seconds = 3600
//! external_url = "http://egress.example:9478"
//!
//! [[alerting.receivers]]
//! name = "ops-webhook"
//! kind = "webhook"                  # webhook | alertmanager | slack | pagerduty
//! url = "https://hooks.example/egress"
//! secret_env = "EGRESS_WEBHOOK_SECRET"   # HMAC key; or secret_file
//!
//! [[alerting.receivers]]
//! name = "chat"
//! kind = "slack"
//! url_env = "EGRESS_SLACK_URL"           # the Slack URL is a secret: env or file only
//!
//! [[alerting.receivers]]
//! name = "pager"
//! kind = "pagerduty"
//! routing_key_file = "/etc/egress/pagerduty.key"
//!
//! [[alerting.routes]]
//! matchers = ["severity=critical"]
//! receivers = ["pager", "chat"]
//! ```
//!
//! Routing decision: an alert goes to the receivers of every route whose matchers all match (a
//! route without matchers matches everything). With no `routes`, every receiver gets every alert.
//! An alert that matches no route is not delivered (logged as a warning): add a catch-all route.

use serde::{Deserialize, Serialize};

use crate::labels::Matcher;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One or more keys are invalid; each line names its key.
    #[error("invalid alerting configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Default interval between repeated notifications of a still-firing alert (Alertmanager's
/// `repeat_interval` default is 4 h; an hour suits egress alerts that someone must act on).
pub const DEFAULT_RESEND_INTERVAL_SECONDS: u64 = 3600;
/// Default PagerDuty Events API v2 endpoint.
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// The `[alerting]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Seconds between repeated `firing` notifications of an alert that keeps firing.
    #[serde(default = "default_resend")]
    pub resend_interval_seconds: u64,
    /// Base URL of this Egress (put in `externalURL` and links); empty = none.
    #[serde(default)]
    pub external_url: String,
    /// Where notifications go.
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// Which receivers get which alerts; empty = all receivers get all alerts.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            resend_interval_seconds: default_resend(),
            external_url: String::new(),
            receivers: Vec::new(),
            routes: Vec::new(),
        }
    }
}

fn default_resend() -> u64 {
    DEFAULT_RESEND_INTERVAL_SECONDS
}

/// Kind of receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// Generic webhook: Alertmanager webhook v4 body, HMAC-SHA256 signature header.
    Webhook,
    /// Alertmanager API v2 push (`url` = Alertmanager base URL).
    Alertmanager,
    /// Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
}

impl ReceiverKind {
    /// Name used in logs and the `alert_deliveries.kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Webhook => "webhook",
            ReceiverKind::Alertmanager => "alertmanager",
            ReceiverKind::Slack => "slack",
            ReceiverKind::Pagerduty => "pagerduty",
        }
    }
}

/// One `[[alerting.receivers]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Unique name (used by routes and in the delivery log).
    pub name: String,
    /// `webhook`, `alertmanager`, `slack` or `pagerduty`.
    pub kind: ReceiverKind,
    /// Target URL (webhook: the endpoint; alertmanager: base URL, `/api/v2/alerts` is appended;
    /// pagerduty: events URL, default the public one). Not allowed for slack (secret).
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the URL (slack).
    #[serde(default)]
    pub url_env: Option<String>,
    /// File holding the URL (slack).
    #[serde(default)]
    pub url_file: Option<String>,
    /// Environment variable holding the webhook HMAC secret (webhook; required there).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the webhook HMAC secret.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Environment variable holding the PagerDuty routing key.
    #[serde(default)]
    pub routing_key_env: Option<String>,
    /// File holding the PagerDuty routing key.
    #[serde(default)]
    pub routing_key_file: Option<String>,
    /// Timeout of one HTTP attempt, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Attempts per notification, first one included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Upper bound of all attempts and waits of one notification, seconds.
    #[serde(default = "default_max_delivery")]
    pub max_delivery_seconds: u64,
    /// First retry delay in milliseconds; doubled per retry, capped at 60 s.
    #[serde(default = "default_backoff")]
    pub initial_backoff_ms: u64,
}

fn default_timeout() -> u64 {
    10
}
fn default_attempts() -> u32 {
    5
}
fn default_max_delivery() -> u64 {
    300
}
fn default_backoff() -> u64 {
    1000
}

/// One `[[alerting.routes]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Alertmanager-style matchers (`name=value`, `name!=value`, `name=~re`, `name!~re`), all
    /// of which must match; empty = every alert.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Receiver names.
    pub receivers: Vec<String>,
}

impl AlertingConfig {
    /// Checks every key and reports every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.resend_interval_seconds == 0 {
            problems.push("alerting.resend_interval_seconds: must be > 0".to_string());
        }
        if !self.external_url.is_empty() && !is_http_url(&self.external_url) {
            problems.push(format!(
                "alerting.external_url: {:?} is not an http(s) URL",
                self.external_url
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            let key = format!("alerting.receivers[{i}]");
            if r.name.trim().is_empty() {
                problems.push(format!("{key}.name: required"));
            } else if !names.insert(r.name.as_str()) {
                problems.push(format!("{key}.name: duplicate receiver {:?}", r.name));
            }
            if let Some(url) = &r.url {
                if !is_http_url(url) {
                    problems.push(format!("{key}.url: {url:?} is not an http(s) URL"));
                }
            }
            let sources = |a: &Option<String>, b: &Option<String>| a.is_some() as u8 + b.is_some() as u8;
            let url_sources = r.url.is_some() as u8 + sources(&r.url_env, &r.url_file);
            match r.kind {
                ReceiverKind::Webhook | ReceiverKind::Alertmanager if r.url.is_none() => {
                    problems.push(format!("{key}.url: required for kind {}", r.kind.as_str()));
                }
                ReceiverKind::Slack if r.url.is_some() => problems.push(format!(
                    "{key}.url: a Slack webhook URL is a secret; give url_env or url_file instead"
                )),
                ReceiverKind::Slack if url_sources != 1 => problems.push(format!(
                    "{key}.url_env: exactly one of url_env, url_file is required"
                )),
                _ => {}
            }
            if r.kind != ReceiverKind::Slack && (r.url_env.is_some() || r.url_file.is_some()) {
                problems.push(format!("{key}.url_env: only for kind slack (use url)"));
            }
            let secrets = sources(&r.secret_env, &r.secret_file);
            if r.kind == ReceiverKind::Webhook && secrets != 1 {
                problems.push(format!(
                    "{key}.secret_env: exactly one of secret_env, secret_file is required"
                ));
            } else if r.kind != ReceiverKind::Webhook && secrets != 0 {
                problems.push(format!("{key}.secret_env: only for kind webhook"));
            }
            let keys = sources(&r.routing_key_env, &r.routing_key_file);
            if r.kind == ReceiverKind::Pagerduty && keys != 1 {
                problems.push(format!(
                    "{key}.routing_key_env: exactly one of routing_key_env, routing_key_file is required"
                ));
            } else if r.kind != ReceiverKind::Pagerduty && keys != 0 {
                problems.push(format!("{key}.routing_key_env: only for kind pagerduty"));
            }
            if r.timeout_seconds == 0 {
                problems.push(format!("{key}.timeout_seconds: must be > 0"));
            }
            if r.max_attempts == 0 {
                problems.push(format!("{key}.max_attempts: must be > 0"));
            }
            if r.max_delivery_seconds == 0 {
                problems.push(format!("{key}.max_delivery_seconds: must be > 0"));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            let key = format!("alerting.routes[{i}]");
            for (j, m) in route.matchers.iter().enumerate() {
                if let Err(err) = Matcher::parse(m) {
                    problems.push(format!("{key}.matchers[{j}]: {err}"));
                }
            }
            if route.receivers.is_empty() {
                problems.push(format!("{key}.receivers: at least one receiver"));
            }
            for (j, name) in route.receivers.iter().enumerate() {
                if !self.receivers.iter().any(|r| &r.name == name) {
                    problems.push(format!("{key}.receivers[{j}]: unknown receiver {name:?}"));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(problems))
        }
    }
}

fn is_http_url(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(name: &str, kind: ReceiverKind) -> ReceiverConfig {
        ReceiverConfig {
            name: name.into(),
            kind,
            url: None,
            url_env: None,
            url_file: None,
            secret_env: None,
            secret_file: None,
            routing_key_env: None,
            routing_key_file: None,
            timeout_seconds: 10,
            max_attempts: 5,
            max_delivery_seconds: 300,
            initial_backoff_ms: 1000,
        }
    }

    #[test]
    fn every_problem_names_its_key() {
        let mut slack = receiver("chat", ReceiverKind::Slack);
        slack.url = Some("https://hooks.slack.com/services/T/B/X".into());
        let webhook = receiver("chat", ReceiverKind::Webhook);
        let config = AlertingConfig {
            resend_interval_seconds: 0,
            external_url: String::new(),
            receivers: vec![slack, webhook],
            routes: vec![RouteConfig {
                matchers: vec!["sev=~(".into()],
                receivers: vec!["pager".into()],
            }],
        };
        let err = config.validate().unwrap_err().to_string();
        for key in [
            "alerting.resend_interval_seconds",
            "alerting.receivers[0].url: a Slack webhook URL is a secret",
            "alerting.receivers[1].name: duplicate",
            "alerting.receivers[1].url: required",
            "alerting.receivers[1].secret_env",
            "alerting.routes[0].matchers[0]",
            "alerting.routes[0].receivers[0]: unknown receiver \"pager\"",
        ] {
            assert!(err.contains(key), "missing {key} in:\n{err}");
        }
    }

    #[test]
    fn toml_example_parses_and_validates() {
        let text = r#"
            resend_interval_seconds = 1800
            [[receivers]]
            name = "ops-webhook"
            kind = "webhook"
            url = "https://hooks.example/egress"
            secret_env = "EGRESS_WEBHOOK_SECRET"
            [[receivers]]
            name = "pager"
            kind = "pagerduty"
            routing_key_file = "/etc/egress/pd.key"
            [[routes]]
            matchers = ["severity=critical"]
            receivers = ["pager", "ops-webhook"]
        "#;
        let config: AlertingConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.receivers[1].max_attempts, 5);
        assert!(toml::from_str::<AlertingConfig>("bogus = 1").is_err());
    }
}
