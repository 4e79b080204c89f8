//! Alert state and delivery: SLA verdicts in, notifications out.
//!
//! The monitor's last two stages, in data-flow order:
//! - [`state`]: Prometheus alerting-rule lifecycle (pending → firing → resolved, `for`,
//!   `keep_firing_for`, resend interval), identity by label set ([`labels`]), muted by
//!   [`silence`]s; pure.
//! - [`persist`]: the whole state (alerts + silences) in one JSON file, written atomically after
//!   every change, so that a restart neither re-pages nor forgets to resolve.
//! - [`notify`]: receivers (generic webhook with HMAC signature, Alertmanager API v2, Slack,
//!   PagerDuty Events v2), routing, delivery with retries, and the delivery log.
//! - [`config`]: the `[alerting]` configuration section.

pub mod config;
pub mod labels;
pub mod notify;
pub mod persist;
pub mod silence;
pub mod state;

pub use labels::{Fingerprint, LabelSet, Matcher};
pub use persist::AlertStore;
pub use silence::{Silence, SilenceRequest, Silences};
pub use state::{AlertBook, AlertRule, AlertSample, Notification, NotificationStatus, SampleVerdict};
