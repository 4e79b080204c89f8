//! Notifiers: notifications in, HTTP deliveries out.
//!
//! Stage: after `state`. In: the [`Notification`]s of an evaluation. Each is routed to receivers
//! (see `config` for the routing rules); each receiver turns its share into one or more
//! [`delivery::OutgoingRequest`]s — the payload builders are pure functions, one module per
//! receiver kind — and one shared function, [`delivery::deliver`], sends them all with the same
//! retry rules and delivery log. No state survives a call: a notification whose delivery fails
//! is logged as failed, not queued (the resend interval sends it again while it fires).
//!
//! Request granularity: generic webhook = one request per `alertname` group (Alertmanager's
//! `group_by: [alertname]`); Alertmanager = one request for the whole batch; Slack and PagerDuty
//! = one request per alert (PagerDuty needs one event per dedup key; Slack reads better so).

pub mod alertmanager;
pub mod delivery;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{AlertingConfig, ReceiverConfig, ReceiverKind, DEFAULT_PAGERDUTY_URL};
use crate::labels::{self, Matcher};
use crate::state::Notification;
use delivery::{DeliveryLog, OutgoingRequest, RetryPolicy};

pub use webhook::verify_signature;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A secret (env var or file) named in the configuration cannot be read.
    #[error("{key}: {problem}")]
    Secret {
        /// Configuration key that names the secret (`alerting.receivers[0].secret_env`).
        key: String,
        /// What went wrong.
        problem: String,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// A route matcher is invalid (already caught by validation).
    #[error(transparent)]
    Matcher(#[from] labels::Error),
    /// The HTTP client cannot be built (TLS set-up).
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Where and how one receiver delivers, secrets resolved.
#[derive(Clone)]
pub enum Target {
    /// Generic webhook with its HMAC key.
    Webhook {
        /// Endpoint.
        url: String,
        /// HMAC-SHA256 key.
        secret: Vec<u8>,
    },
    /// Alertmanager base URL.
    Alertmanager {
        /// Base URL (`/api/v2/alerts` is appended).
        url: String,
    },
    /// Slack incoming webhook URL.
    Slack {
        /// Webhook URL (secret).
        url: String,
    },
    /// PagerDuty Events v2.
    Pagerduty {
        /// Events URL.
        url: String,
        /// Integration routing key (secret).
        routing_key: String,
    },
}

impl std::fmt::Debug for Target {
    // Secrets stay out of logs: only the kind and the public URL are printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Webhook { url, .. } => write!(f, "Webhook({url})"),
            Target::Alertmanager { url } => write!(f, "Alertmanager({url})"),
            Target::Slack { .. } => write!(f, "Slack(<secret url>)"),
            Target::Pagerduty { url, .. } => write!(f, "Pagerduty({url})"),
        }
    }
}

impl Target {
    /// The receiver kind.
    pub fn kind(&self) -> ReceiverKind {
        match self {
            Target::Webhook { .. } => ReceiverKind::Webhook,
            Target::Alertmanager { .. } => ReceiverKind::Alertmanager,
            Target::Slack { .. } => ReceiverKind::Slack,
            Target::Pagerduty { .. } => ReceiverKind::Pagerduty,
        }
    }
}

/// One receiver, ready to deliver.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Name from the configuration.
    pub name: String,
    /// Where to.
    pub target: Target,
    /// Retry bounds.
    pub policy: RetryPolicy,
}

impl Receiver {
    /// Builds the requests for `notifications` (pure).
    pub fn requests(&self, notifications: &[&Notification], external_url: &str) -> Vec<OutgoingRequest> {
        if notifications.is_empty() {
            return Vec::new();
        }
        match &self.target {
            Target::Webhook { url, secret } => {
                webhook::requests(&self.name, url, secret, notifications, external_url)
            }
            Target::Alertmanager { url } => vec![alertmanager::request(url, notifications)],
            Target::Slack { url } => notifications
                .iter()
                .map(|n| slack::request(url, n, external_url))
                .collect(),
            Target::Pagerduty { url, routing_key } => notifications
                .iter()
                .map(|n| pagerduty::request(url, routing_key, n, external_url))
                .collect(),
        }
    }
}

/// A route: matchers and the receivers (by index) they send to.
#[derive(Debug, Clone)]
struct Route {
    matchers: Vec<Matcher>,
    receivers: Vec<usize>,
}

/// Outcome of one [`Notifier::dispatch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Requests delivered.
    pub delivered: usize,
    /// Requests that failed after their retries.
    pub failed: usize,
    /// Notifications no route matched (not delivered).
    pub unrouted: usize,
}

/// Routes notifications to receivers and delivers them.
#[derive(Debug, Clone)]
pub struct Notifier {
    client: reqwest::Client,
    receivers: Vec<Arc<Receiver>>,
    routes: Vec<Route>,
    external_url: String,
    log: Arc<dyn DeliveryLog>,
}

impl Notifier {
    /// Validates the configuration, reads the secrets it names (env vars or files), and builds
    /// the HTTPS client (rustls, certificates verified against the compiled-in webpki roots).
    pub fn from_config(config: &AlertingConfig, log: Arc<dyn DeliveryLog>) -> Result<Self> {
        config.validate()?;
        let receivers = config
            .receivers
            .iter()
            .enumerate()
            .map(|(i, r)| receiver_from_config(i, r).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let mut routes = Vec::new();
        for route in &config.routes {
            let matchers = route
                .matchers
                .iter()
                .map(|m| Matcher::parse(m))
                .collect::<labels::Result<Vec<_>>>()?;
            let receivers = route
                .receivers
                .iter()
                .filter_map(|name| config.receivers.iter().position(|r| &r.name == name))
                .collect();
            routes.push(Route { matchers, receivers });
        }
        Self::new(
            receivers.into_iter().map(Arc::unwrap_or_clone).collect(),
            config.external_url.clone(),
            log,
        )
        .map(|notifier| Notifier { routes, ..notifier })
    }

    /// A notifier over already-built receivers, without routes (everyone gets everything).
    pub fn new(receivers: Vec<Receiver>, external_url: String, log: Arc<dyn DeliveryLog>) -> Result<Self> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("egress/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        Ok(Notifier {
            client,
            receivers: receivers.into_iter().map(Arc::new).collect(),
            routes: Vec::new(),
            external_url,
            log,
        })
    }

    /// The receivers.
    pub fn receivers(&self) -> impl Iterator<Item = &Receiver> {
        self.receivers.iter().map(|r| r.as_ref())
    }

    /// Indices of the receivers a notification goes to.
    fn route(&self, notification: &Notification) -> Vec<usize> {
        if self.routes.is_empty() {
            return (0..self.receivers.len()).collect();
        }
        let mut chosen: Vec<usize> = self
            .routes
            .iter()
            .filter(|route| labels::all_match(&route.matchers, &notification.labels))
            .flat_map(|route| route.receivers.iter().copied())
            .collect();
        chosen.sort_unstable();
        chosen.dedup();
        chosen
    }

    /// The notifier stage: takes the notifications of each evaluation from `batches` and
    /// delivers them in the background (one task per batch, so that a receiver that is retrying
    /// delays nobody). Shutdown: when every sender is dropped, it stops taking batches, waits
    /// for the deliveries in flight (each bounded by its receiver's `max_delivery_seconds`) and
    /// returns their summed report.
    pub async fn run(self, mut batches: tokio::sync::mpsc::Receiver<Vec<Notification>>) -> DispatchReport {
        let mut in_flight = tokio::task::JoinSet::new();
        let mut total = DispatchReport::default();
        let add = |total: &mut DispatchReport, report: DispatchReport| {
            total.delivered += report.delivered;
            total.failed += report.failed;
            total.unrouted += report.unrouted;
        };
        loop {
            tokio::select! {
                batch = batches.recv() => match batch {
                    Some(batch) => {
                        let notifier = self.clone();
                        in_flight.spawn(async move { notifier.dispatch(&batch).await });
                    }
                    None => break,
                },
                Some(done) = in_flight.join_next() => match done {
                    Ok(report) => add(&mut total, report),
                    Err(err) => tracing::error!(%err, "delivery task ended abnormally"),
                },
            }
        }
        while let Some(done) = in_flight.join_next().await {
            match done {
                Ok(report) => add(&mut total, report),
                Err(err) => tracing::error!(%err, "delivery task ended abnormally"),
            }
        }
        total
    }

    /// Delivers `notifications` to their receivers: receivers in parallel, each receiver's
    /// requests in order, each with its retries. Returns when every request has been delivered
    /// or has failed; the monitor spawns it so that evaluation never waits on a receiver.
    pub async fn dispatch(&self, notifications: &[Notification]) -> DispatchReport {
        let mut report = DispatchReport::default();
        let mut per_receiver: Vec<Vec<&Notification>> = vec![Vec::new(); self.receivers.len()];
        for notification in notifications {
            let chosen = self.route(notification);
            if chosen.is_empty() {
                report.unrouted += 1;
                if self.receivers.is_empty() {
                    // No receiver configured at all: the alert is still in the API and state.
                    tracing::info!(
                        alertname = notification.alertname(),
                        status = notification.status.as_str(),
                        "alert not sent: no receivers are configured"
                    );
                    continue;
                }
                tracing::warn!(alertname = notification.alertname(), fingerprint = %notification.fingerprint, "no route matches the alert: not delivered");
            }
            for index in chosen {
                per_receiver[index].push(notification);
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (receiver, share) in self.receivers.iter().zip(per_receiver) {
            let requests = receiver.requests(&share, &self.external_url);
            if requests.is_empty() {
                continue;
            }
            let (receiver, client, log) = (receiver.clone(), self.client.clone(), self.log.clone());
            tasks.spawn(async move {
                let mut outcome = (0, 0);
                for request in &requests {
                    let ok = delivery::deliver(
                        &client,
                        &receiver.name,
                        receiver.target.kind(),
                        request,
                        &receiver.policy,
                        log.as_ref(),
                    )
                    .await;
                    if ok {
                        outcome.0 += 1;
                    } else {
                        outcome.1 += 1;
                    }
                }
                outcome
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((delivered, failed)) => {
                    report.delivered += delivered;
                    report.failed += failed;
                }
                Err(err) => tracing::error!(%err, "delivery task ended abnormally"),
            }
        }
        report
    }
}

fn receiver_from_config(index: usize, config: &ReceiverConfig) -> Result<Receiver> {
    let key = |name: &str| format!("alerting.receivers[{index}].{name}");
    let secret =
        |env_key: &str, env: &Option<String>, file_key: &str, file: &Option<String>| -> Result<String> {
            read_secret(env.as_deref(), file.as_deref()).map_err(|problem| Error::Secret {
                key: key(if env.is_some() { env_key } else { file_key }),
                problem,
            })
        };
    let url = config.url.clone().unwrap_or_default();
    let target = match config.kind {
        ReceiverKind::Webhook => Target::Webhook {
            url,
            secret: secret(
                "secret_env",
                &config.secret_env,
                "secret_file",
                &config.secret_file,
            )?
            .into_bytes(),
        },
        ReceiverKind::Alertmanager => Target::Alertmanager { url },
        ReceiverKind::Slack => Target::Slack {
            url: secret("url_env", &config.url_env, "url_file", &config.url_file)?,
        },
        ReceiverKind::Pagerduty => Target::Pagerduty {
            url: config
                .url
                .clone()
                .unwrap_or_else(|| DEFAULT_PAGERDUTY_URL.to_string()),
            routing_key: secret(
                "routing_key_env",
                &config.routing_key_env,
                "routing_key_file",
                &config.routing_key_file,
            )?,
        },
    };
    Ok(Receiver {
        name: config.name.clone(),
        target,
        policy: RetryPolicy {
            timeout: Duration::from_secs(config.timeout_seconds),
            max_attempts: config.max_attempts,
            max_total: Duration::from_secs(config.max_delivery_seconds),
            initial_backoff: Duration::from_millis(config.initial_backoff_ms),
        },
    })
}

/// Reads a secret from an environment variable or a file (trailing newline trimmed).
fn read_secret(env: Option<&str>, file: Option<&str>) -> std::result::Result<String, String> {
    let value = match (env, file) {
        (Some(var), _) => std::env::var(var).map_err(|e| format!("environment variable {var}: {e}"))?,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| format!("file {path}: {e}"))?,
        (None, None) => return Err("no secret source".to_string()),
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err("the secret is empty".to_string());
    }
    Ok(value)
}

/// Formats a measured value for humans: integers as is, small ratios with 3 decimals,
/// large numbers with an SI prefix (`5.2G`).
pub(crate) fn human_value(value: f64) -> String {
    let magnitude = value.abs();
    if !value.is_finite() {
        return value.to_string();
    }
    for (scale, suffix) in [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if magnitude >= scale {
            return format!("{:.2}{suffix}", value / scale);
        }
    }
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

/// The human subject of an alert: annotation `subject`, else label `subject`, else the labels
/// other than `alertname` and `severity` as `k=v` pairs.
pub(crate) fn subject(notification: &Notification) -> String {
    if let Some(subject) = notification
        .annotations
        .get("subject")
        .or(notification.labels.get("subject"))
    {
        return subject.clone();
    }
    notification
        .labels
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity" | "sla_kind"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_values_are_readable() {
        assert_eq!(human_value(0.9312), "0.931");
        assert_eq!(human_value(5_200_000_000.0), "5.20G");
        assert_eq!(human_value(42.0), "42");
    }

    #[test]
    fn secrets_come_from_files_or_env_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(read_secret(None, file.to_str()).unwrap(), "s3cret");
        let config: AlertingConfig = toml::from_str(
            r#"
            [[receivers]]
            name = "hook"
            kind = "webhook"
            url = "http://127.0.0.1:1/"
            secret_env = "EGRESS_TEST_SECRET_THAT_IS_NOT_SET"
            "#,
        )
        .unwrap();
        let err =
            Notifier::from_config(&config, Arc::new(delivery::MemoryDeliveryLog::default())).unwrap_err();
        assert!(
            err.to_string().contains("alerting.receivers[0].secret_env"),
            "{err}"
        );
    }
}
