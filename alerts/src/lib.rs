//! Alert state and delivery: SLA verdicts in, notifications out.
//!
//! This crate is the home of the monitor's `state` and `notify/` stages (Prometheus-style alert
//! lifecycle, Alertmanager/webhook/Slack/PagerDuty delivery). It is deliberately empty until the
//! monitor issue builds them: nothing here is wired into the binary yet.
