//! Tests of the alert state machine: examples, then properties over random verdict sequences.

use super::*;
use crate::labels::Matcher;
use crate::silence::SilenceRequest;
use chrono::TimeZone;
use proptest::prelude::*;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn rule(for_s: i64, keep_s: i64, resend_s: i64) -> AlertRule {
    AlertRule {
        name: "transit-utilisation".into(),
        for_duration: Duration::seconds(for_s),
        keep_firing_for: Duration::seconds(keep_s),
        resend_interval: Duration::seconds(resend_s),
        evaluation_interval: Duration::seconds(60),
        labels: [("severity".to_string(), "critical".to_string())].into(),
        annotations: [("summary".to_string(), "utilisation high".to_string())].into(),
        generator_url: String::new(),
    }
}

fn sample(verdict: SampleVerdict) -> AlertSample {
    AlertSample {
        labels: [("path".to_string(), "edge1 / et-0/0/1 (Transit A)".to_string())].into(),
        annotations: BTreeMap::new(),
        verdict,
        value: 0.93,
        threshold: Some(0.8),
    }
}

fn statuses(n: &[Notification]) -> Vec<&'static str> {
    n.iter().map(|n| n.status.as_str()).collect()
}

use SampleVerdict::{Breaching, NoData, Ok as Fine};

#[test]
fn pending_then_firing_then_resolved() {
    let mut book = AlertBook::default();
    let silences = Silences::default();
    let r = rule(120, 0, 3600);
    assert!(book
        .evaluate(&r, &[sample(Breaching)], &silences, t(0))
        .is_empty());
    let alert = book.alerts().next().unwrap();
    assert_eq!(alert.phase, AlertPhase::Pending);
    assert_eq!(alert.labels.get("alertname").unwrap(), "transit-utilisation");
    assert_eq!(alert.labels.get("severity").unwrap(), "critical");
    assert!(book
        .evaluate(&r, &[sample(Breaching)], &silences, t(60))
        .is_empty());
    let fired = book.evaluate(&r, &[sample(Breaching)], &silences, t(120));
    assert_eq!(statuses(&fired), ["firing"]);
    assert_eq!(fired[0].starts_at, t(120));
    // endsAt = now + 4 × max(resend 3600 s, evaluation 60 s).
    assert_eq!(fired[0].ends_at, t(120 + 4 * 3600));
    assert_eq!(fired[0].annotations.get("summary").unwrap(), "utilisation high");
    // No resend before the interval.
    assert!(book
        .evaluate(&r, &[sample(Breaching)], &silences, t(180))
        .is_empty());
    let resent = book.evaluate(&r, &[sample(Breaching)], &silences, t(120 + 3600));
    assert_eq!(statuses(&resent), ["firing"]);
    let resolved = book.evaluate(&r, &[sample(Fine)], &silences, t(3780));
    assert_eq!(statuses(&resolved), ["resolved"]);
    assert_eq!(resolved[0].starts_at, t(120));
    assert_eq!(resolved[0].ends_at, t(3780));
    assert_eq!(resolved[0].fingerprint, fired[0].fingerprint);
    assert_eq!(book.alerts().count(), 0);
}

#[test]
fn zero_for_fires_at_once_and_pending_that_recovers_is_dropped_silently() {
    let silences = Silences::default();
    let mut book = AlertBook::default();
    assert_eq!(
        statuses(&book.evaluate(&rule(0, 0, 60), &[sample(Breaching)], &silences, t(0))),
        ["firing"]
    );

    let mut book = AlertBook::default();
    let r = rule(300, 0, 60);
    book.evaluate(&r, &[sample(Breaching)], &silences, t(0));
    assert!(
        book.evaluate(&r, &[], &silences, t(60)).is_empty(),
        "absent sample: dropped, no message"
    );
    assert_eq!(book.alerts().count(), 0);
}

#[test]
fn no_data_neither_fires_nor_resolves() {
    let silences = Silences::default();
    let mut book = AlertBook::default();
    let r = rule(60, 0, 3600);
    book.evaluate(&r, &[sample(Breaching)], &silences, t(0));
    // Pending stays pending on no data even after `for`.
    assert!(book.evaluate(&r, &[sample(NoData)], &silences, t(120)).is_empty());
    assert_eq!(book.alerts().next().unwrap().phase, AlertPhase::Pending);
    assert_eq!(
        statuses(&book.evaluate(&r, &[sample(Breaching)], &silences, t(180))),
        ["firing"]
    );
    // Firing stays firing on no data.
    assert!(book.evaluate(&r, &[sample(NoData)], &silences, t(240)).is_empty());
    assert_eq!(book.alerts().next().unwrap().phase, AlertPhase::Firing);
    // Absent = not breaching = resolved.
    assert_eq!(statuses(&book.evaluate(&r, &[], &silences, t(300))), ["resolved"]);
}

#[test]
fn keep_firing_for_delays_resolution() {
    let silences = Silences::default();
    let mut book = AlertBook::default();
    let r = rule(0, 300, 3600);
    book.evaluate(&r, &[sample(Breaching)], &silences, t(0));
    assert!(book.evaluate(&r, &[sample(Fine)], &silences, t(60)).is_empty());
    assert!(book.evaluate(&r, &[sample(Fine)], &silences, t(300)).is_empty());
    // A new breach resets the keep-firing clock.
    assert!(book
        .evaluate(&r, &[sample(Breaching)], &silences, t(320))
        .is_empty());
    assert!(book.evaluate(&r, &[sample(Fine)], &silences, t(400)).is_empty());
    assert!(book.evaluate(&r, &[sample(Fine)], &silences, t(660)).is_empty());
    assert_eq!(
        statuses(&book.evaluate(&r, &[sample(Fine)], &silences, t(700))),
        ["resolved"]
    );
}

#[test]
fn silence_suppresses_without_queueing_and_resolution_still_closes() {
    let mut silences = Silences::default();
    let mut book = AlertBook::default();
    let r = rule(0, 0, 3600);
    let request = SilenceRequest {
        matchers: vec![Matcher::parse("path=~edge1 .*").unwrap()],
        starts_at: None,
        ends_at: t(600),
        created_by: "ops".into(),
        comment: "maintenance".into(),
    };
    silences.create(request, t(0)).unwrap();
    assert!(book
        .evaluate(&r, &[sample(Breaching)], &silences, t(0))
        .is_empty());
    assert_eq!(
        book.alerts().next().unwrap().phase,
        AlertPhase::Firing,
        "state advances under a silence"
    );
    assert!(book
        .evaluate(&r, &[sample(Breaching)], &silences, t(540))
        .is_empty());
    // Silence over, alert still firing: the next evaluation notifies.
    let after = book.evaluate(&r, &[sample(Breaching)], &silences, t(600));
    assert_eq!(statuses(&after), ["firing"]);
    assert_eq!(after[0].starts_at, t(0));

    // Fired and silenced the whole time, then resolved: nobody was told, so no resolution.
    let mut book = AlertBook::default();
    let mut silences = Silences::default();
    let request = SilenceRequest {
        matchers: vec![Matcher::parse("alertname=transit-utilisation").unwrap()],
        starts_at: None,
        ends_at: t(6000),
        created_by: "ops".into(),
        comment: "x".into(),
    };
    silences.create(request, t(0)).unwrap();
    book.evaluate(&r, &[sample(Breaching)], &silences, t(0));
    assert!(book.evaluate(&r, &[], &silences, t(60)).is_empty());
}

#[test]
fn subjects_are_separate_alerts_and_retired_rules_resolve() {
    let silences = Silences::default();
    let mut book = AlertBook::default();
    let r = rule(0, 0, 3600);
    let mut other = sample(Breaching);
    other.labels.insert("path".into(), "edge2 / xe-1/0/0".into());
    let fired = book.evaluate(&r, &[sample(Breaching), other], &silences, t(0));
    assert_eq!(fired.len(), 2);
    assert_ne!(fired[0].fingerprint, fired[1].fingerprint);
    let resolved = book.retire_rules(&BTreeSet::new(), t(60));
    assert_eq!(statuses(&resolved), ["resolved", "resolved"]);
    assert_eq!(book.alerts().count(), 0);
}

/// One step of a random scenario.
#[derive(Debug, Clone)]
struct Step {
    advance_s: i64,
    verdict: Option<SampleVerdict>,
    restart: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        1i64..400,
        prop_oneof![
            Just(None),
            Just(Some(Breaching)),
            Just(Some(Fine)),
            Just(Some(NoData))
        ],
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(advance_s, verdict, restart)| Step {
            advance_s,
            verdict,
            restart,
        })
}

proptest! {
    /// Over random verdict sequences, with random silences and restarts (state saved and
    /// reloaded through JSON): no `Resolved` without an earlier `Firing`; no `Firing` before
    /// `for` elapsed in the current episode; `Firing` resends spaced by at least the resend
    /// interval; nothing sent while silenced except a resolution of something already sent.
    #[test]
    fn notifications_follow_the_lifecycle(
        for_s in 0i64..600,
        keep_s in 0i64..600,
        resend_s in 1i64..1800,
        silence in proptest::option::of((0i64..3000, 1i64..3000)),
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let r = rule(for_s, keep_s, resend_s);
        let mut silences = Silences::default();
        if let Some((start, len)) = silence {
            let request = SilenceRequest {
                matchers: vec![Matcher::parse("severity=critical").unwrap()],
                starts_at: Some(t(start)),
                ends_at: t(start + len),
                created_by: "prop".into(),
                comment: "prop".into(),
            };
            silences.create(request, t(0)).unwrap();
        }
        let mut book = AlertBook::default();
        let mut now = 0i64;
        let mut episode_start: Option<i64> = None;
        let mut last_firing: Option<i64> = None;
        for step in steps {
            now += step.advance_s;
            if step.restart {
                let json = serde_json::to_string(&book).unwrap();
                book = serde_json::from_str(&json).unwrap();
            }
            let existed = book.alerts().count() == 1;
            if !existed && step.verdict == Some(Breaching) {
                episode_start = Some(now);
            }
            let samples: Vec<AlertSample> = step.verdict.map(sample).into_iter().collect();
            let sent = book.evaluate(&r, &samples, &silences, t(now));
            prop_assert!(sent.len() <= 1);
            let muted = silences.is_muted(&sample(Breaching).labels.into_iter()
                .chain([("severity".to_string(), "critical".to_string())]).collect(), t(now));
            for n in &sent {
                match n.status {
                    NotificationStatus::Firing => {
                        prop_assert!(!muted, "firing sent under a silence at {now}");
                        let start = episode_start.expect("firing without a breach");
                        prop_assert!(now - start >= for_s, "fired at {now}, episode from {start}, for {for_s}");
                        if let Some(last) = last_firing {
                            prop_assert!(now - last >= resend_s, "resend at {now} after {last}");
                        }
                        last_firing = Some(now);
                    }
                    NotificationStatus::Resolved => {
                        prop_assert!(last_firing.is_some(), "resolved at {now} without firing");
                        last_firing = None;
                    }
                }
            }
            if book.alerts().count() == 0 {
                // Episode over (resolved or dropped): a later resolution needs a new firing.
                episode_start = None;
                last_firing = None;
            }
        }
    }
}
