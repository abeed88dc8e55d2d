//! Table and property tests of the state machine: no I/O, no sleeping.

use std::time::Duration;

use chrono::{NaiveTime, TimeZone, Utc, Weekday};
use proptest::prelude::*;

use super::*;
use crate::config::Window;
use crate::report::ExecResult;
use crate::rules::{RuleReport, RuleStatus};

pub(super) fn t(secs: i64) -> Time {
    Utc.with_ymd_and_hms(2026, 11, 18, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

pub(super) fn cfg() -> DecideConfig {
    DecideConfig {
        dry_run: false,
        windows: vec![],
        cooldown: Duration::from_secs(600),
        verify_within: Duration::from_secs(60),
        verify_rules: true,
        verify_url: true,
        method: "symlink".into(),
        max_rollbacks_per_hour: 1,
        confirm: false,
        confirm_timeout: Duration::from_secs(300),
        on_confirm_timeout: crate::config::OnConfirmTimeout::Escalate,
        blind_after: Duration::from_secs(300),
        only_within: None,
        has_after: true,
        blast_radius: None,
        rto: Duration::from_secs(300),
        max_pause: Duration::from_secs(24 * 3600),
        settle: Duration::ZERO,
        verify_gates: 0,
        has_on_failure: false,
        needs_vars: vec![],
        version_source: true,
    }
}

/// A step without a global cap (most tables); [`global_cap`] gives one.
fn step(
    cfg: &DecideConfig,
    state: TargetState,
    event: Event,
    now: Time,
) -> Result<(TargetState, Vec<Action>), StepError> {
    super::step(cfg, &Guards::default(), state, event, now)
}

/// Guards with a global cap of `max` and rollbacks started at `started`.
fn global_cap(max: u32, started: &[Time]) -> Guards {
    Guards {
        global: Some(GlobalCap {
            max_per_hour: max,
            started: started.to_vec(),
        }),
        ..Guards::default()
    }
}

fn report(status: RuleStatus, value: Option<f64>, at: Time) -> RuleReport {
    RuleReport::ok("health", at)
        .source("probe GET http://127.0.0.1/health failure_ratio")
        .status(status)
        .value(value)
        .window(Duration::from_secs(30))
}

fn ok(at: Time) -> Event {
    Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![report(RuleStatus::Ok, Some(0.0), at)],
    }
}
fn pending(at: Time) -> Event {
    Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![report(RuleStatus::Pending { since: at }, Some(0.9), at)],
    }
}
pub(super) fn breached(at: Time) -> Event {
    Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![report(RuleStatus::Breached { since: t(0) }, Some(0.9), at)],
    }
}
fn unknown(at: Time) -> Event {
    Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![report(
            RuleStatus::Unknown {
                since: at,
                why: "connection refused".into(),
            },
            None,
            at,
        )],
    }
}

fn watching_on(version: &str, previous: &str) -> TargetState {
    let mut s = TargetState::new("web");
    s.version = Some(version.into());
    s.previous_version = Some(previous.into());
    s
}

fn run(
    cfg: &DecideConfig,
    mut s: TargetState,
    events: Vec<(Event, Time)>,
) -> (TargetState, Vec<Action>) {
    let mut all = Vec::new();
    for (e, now) in events {
        let (next, actions) = step(cfg, s, e, now).expect("step");
        s = next;
        all.extend(actions);
    }
    (s, all)
}

fn kinds(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Execute { .. } => "execute".to_string(),
            Action::Verify { .. } => "verify".to_string(),
            Action::RunAfter { .. } => "after".to_string(),
            Action::RunOnFailure { .. } => "on_failure".to_string(),
            Action::Notify { kind, .. } => format!("notify:{kind:?}"),
            Action::NotifyTarget { kind, .. } => format!("notify-target:{kind:?}"),
            Action::WriteRecord { .. } => "record".to_string(),
            Action::GlobalLimitRefused { .. } => "global_limit_refused".to_string(),
        })
        .collect()
}

fn open_id(s: &TargetState) -> String {
    s.incident().expect("incident").id.clone()
}

fn exec_ok(s: &TargetState) -> Event {
    Event::ExecFinished {
        incident: open_id(s),
        result: ExecResult {
            ok: true,
            steps: vec![],
            from_version: Some("v2".into()),
            to_version: Some("v1".into()),
            error: None,
        },
    }
}

#[test]
fn table_of_single_evaluations_from_watching() {
    let mut dry = cfg();
    dry.dry_run = true;
    let mut windowed = cfg();
    windowed.windows = vec![Window {
        name: "weekly-release".into(),
        days: vec![Weekday::Wed],
        start: NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
        end: NaiveTime::from_hms_opt(23, 59, 0).unwrap(),
        timezone: chrono_tz::UTC,
    }];
    let mixed = Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![
            report(RuleStatus::Breached { since: t(0) }, Some(0.9), t(40)),
            report(RuleStatus::Ok, None, t(40))
                .rule("cpu")
                .unknown(t(0), "no data"),
        ],
    };
    let cases: Vec<(&str, DecideConfig, Event, &str, Vec<&str>)> = vec![
        ("all ok", cfg(), ok(t(40)), "Watching", vec![]),
        ("pending", cfg(), pending(t(40)), "Watching", vec![]),
        ("unknown", cfg(), unknown(t(40)), "Watching", vec![]),
        (
            "breach while another rule is blind: the blind rule abstains",
            cfg(),
            mixed,
            "RollingBack",
            vec!["record", "notify:RollbackStarted", "execute"],
        ),
        (
            "breach",
            cfg(),
            breached(t(40)),
            "RollingBack",
            vec!["record", "notify:RollbackStarted", "execute"],
        ),
        (
            "breach in dry-run",
            dry,
            breached(t(40)),
            "DryRun",
            vec!["record", "notify:WouldRollBack"],
        ),
        (
            "breach inside a release window",
            windowed,
            breached(t(40)),
            "DryRun",
            vec!["record", "notify:WouldRollBack"],
        ),
    ];
    for (name, cfg, event, phase, want) in cases {
        let (s, actions) = step(&cfg, watching_on("v2", "v1"), event, t(40)).unwrap();
        assert_eq!(s.phase.name(), phase, "{name}");
        assert_eq!(kinds(&actions), want, "{name}");
    }
}

#[test]
fn full_rollback_verifies_then_cools_down() {
    let c = cfg();
    let (s, _) = run(&c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
    let inc = s.incident().unwrap().clone();
    assert_eq!(inc.from_version.as_deref(), Some("v2"));
    assert_eq!(inc.to_version.as_deref(), Some("v1"));
    assert!(
        inc.timeline[0].message.contains("health = 0.9 > 0.5"),
        "{:?}",
        inc.timeline
    );
    let (s, a) = run(&c, s.clone(), vec![(exec_ok(&s), t(45))]);
    assert_eq!(s.phase.name(), "Verifying");
    assert_eq!(kinds(&a), vec!["verify", "record"]);
    // Rules still breached from before the rollback: not yet healthy.
    let (s, a) = run(&c, s, vec![(breached(t(46)), t(46))]);
    assert_eq!(s.phase.name(), "Verifying");
    assert!(a.is_empty());
    let id = open_id(&s);
    let (s, a) = run(
        &c,
        s,
        vec![
            (
                Event::VerifyChecked {
                    checks: vec![],
                    incident: id.clone(),
                    ok: true,
                    detail: "HTTP 200 in 3ms".into(),
                },
                t(50),
            ),
            (ok(t(51)), t(51)),
        ],
    );
    assert_eq!(s.phase.name(), "RolledBack");
    assert_eq!(kinds(&a), vec!["after", "record", "notify:RolledBack"]);
    assert_eq!(s.loop_guard.as_deref(), Some("v1"));
    let inc = s.incident().unwrap();
    assert_eq!(inc.verify_finished, Some(t(51)));
    assert!(inc
        .verification
        .as_deref()
        .unwrap()
        .contains("healthy 6s after"));
    assert_eq!(s.after_running.as_deref(), Some(inc.id.as_str()));

    // While the after steps run, the rollback is not over: a breach waits
    // and a manual trigger is refused.
    let id = inc.id.clone();
    let mut cooled = s.clone();
    if let Phase::Done { until, .. } = &mut cooled.phase {
        *until = t(52);
    }
    let (still, a) = run(&c, cooled.clone(), vec![(breached(t(60)), t(60))]);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(still.phase.name(), "Watching");
    let trigger = Event::ManualTrigger {
        to_version: None,
        by: "ops".into(),
        reason: "security fix".into(),
    };
    let mut done = s.clone();
    done.rollbacks.clear();
    assert!(step(&c, done, trigger, t(60)).is_err());
    let after_done = Event::AfterFinished {
        incident: id.clone(),
        result: ExecResult {
            ok: true,
            steps: vec![],
            from_version: None,
            to_version: None,
            error: None,
        },
    };
    let (s, a) = run(&c, s, vec![(after_done, t(53))]);
    assert_eq!(s.after_running, None);
    assert_eq!(kinds(&a), vec!["record"]);

    // The version changes to v1 through our own rollback: not a new deploy.
    let (s, _) = run(
        &c,
        s,
        vec![(
            Event::VersionObserved {
                version: "v1".into(),
            },
            t(55),
        )],
    );
    assert_eq!(s.loop_guard.as_deref(), Some("v1"));
    // Breach during cooldown: nothing.
    let (s, a) = run(&c, s, vec![(breached(t(100)), t(100))]);
    assert_eq!(s.phase.name(), "RolledBack");
    assert!(a.is_empty());
    // After cooldown, a breach on v1 hits the loop guard.
    let (s, a) = run(&c, s, vec![(breached(t(700)), t(700))]);
    assert_eq!(s.phase.name(), "Escalated");
    assert_eq!(kinds(&a), vec!["record", "notify:Escalated"]);
    assert!(s
        .incident()
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("loop guard"));
}

#[test]
fn new_deploy_rearms_but_rate_limit_holds_within_the_hour() {
    let c = cfg();
    let mut s = watching_on("v1", "v0");
    s.loop_guard = Some("v1".into());
    s.rollbacks = vec![t(0)];
    let (s, _) = run(
        &c,
        s,
        vec![(
            Event::VersionObserved {
                version: "v3".into(),
            },
            t(10),
        )],
    );
    assert_eq!(s.loop_guard, None);
    assert_eq!(s.previous_version.as_deref(), Some("v1"));
    assert_eq!(s.deployed_at, Some(t(10)));
    let (s, a) = run(&c, s, vec![(breached(t(100)), t(100))]);
    assert_eq!(s.phase.name(), "Escalated");
    assert!(!kinds(&a).contains(&"execute".to_string()));
    assert!(s
        .incident()
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("rate limit"));
    // An hour after the first rollback the limit has room again.
    let mut s = s;
    s.phase = Phase::Watching;
    let (s, a) = run(&c, s, vec![(breached(t(3601)), t(3601))]);
    assert_eq!(s.phase.name(), "RollingBack");
    assert!(kinds(&a).contains(&"execute".to_string()));
}

#[test]
fn failures_close_the_incident_and_name_the_cause() {
    let c = cfg();
    let (s, _) = run(&c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
    let failed = Event::ExecFinished {
        incident: open_id(&s),
        result: ExecResult {
            ok: false,
            steps: vec![],
            from_version: None,
            to_version: None,
            error: Some("step 1 of 1 (pm2 stop app) failed: exited with status 1: boom".into()),
        },
    };
    let (f, a) = run(&c, s.clone(), vec![(failed, t(41))]);
    assert_eq!(f.phase.name(), "Failed");
    assert_eq!(kinds(&a), vec!["record", "notify:RollbackFailed"]);
    assert!(f
        .incident()
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("boom"));

    // Executor fine, service still unhealthy at the verify deadline.
    let (v, _) = run(&c, s.clone(), vec![(exec_ok(&s), t(45))]);
    let (v, a) = run(&c, v, vec![(breached(t(104)), t(104))]);
    assert_eq!(v.phase.name(), "Verifying");
    assert!(a.is_empty());
    let (v, a) = run(&c, v, vec![(breached(t(105)), t(105))]);
    assert_eq!(v.phase.name(), "Failed");
    assert_eq!(kinds(&a), vec!["record", "notify:DidNotHelp"]);
    let err = v.incident().unwrap().error.clone().unwrap();
    assert!(err.contains("rollback did not help"), "{err}");
    assert!(err.contains("health = 0.9 > 0.5"), "{err}");
    assert_eq!(v.loop_guard.as_deref(), Some("v1"));
}

#[test]
fn stale_results_are_errors_not_panics() {
    let c = cfg();
    let stale = Event::ExecFinished {
        incident: "nope".into(),
        result: ExecResult {
            ok: true,
            steps: vec![],
            from_version: None,
            to_version: None,
            error: None,
        },
    };
    assert!(step(&c, watching_on("v2", "v1"), stale.clone(), t(1)).is_err());
    let (s, _) = run(&c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
    let err = step(&c, s, stale, t(41)).unwrap_err();
    assert_eq!(
        err,
        StepError::Unexpected {
            event: "exec_finished",
            phase: "RollingBack"
        }
    );
}

#[test]
fn after_steps_interrupted_by_a_restart_are_not_rerun() {
    let c = cfg();
    let (s, _) = run(&c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
    let (s, _) = run(&c, s.clone(), vec![(exec_ok(&s), t(45))]);
    let id = open_id(&s);
    let checked = Event::VerifyChecked {
        checks: vec![],
        incident: id,
        ok: true,
        detail: "HTTP 200".into(),
    };
    let (s, _) = run(&c, s, vec![(checked, t(50)), (ok(t(51)), t(51))]);
    assert!(s.after_running.is_some());
    let (s, a) = run(&c, s, vec![(Event::Recovered, t(60))]);
    assert_eq!(s.after_running, None);
    assert_eq!(kinds(&a), vec!["record"]);
    let note = &s.incident().unwrap().timeline.last().unwrap().message;
    assert!(note.contains("not run again"), "{note}");
}

#[test]
fn recovery_never_reruns_an_interrupted_rollback() {
    let c = cfg();
    let (s, _) = run(&c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
    let (s, a) = run(&c, s, vec![(Event::Recovered, t(300))]);
    assert_eq!(s.phase.name(), "Verifying");
    assert_eq!(kinds(&a), vec!["notify:Interrupted", "verify", "record"]);
    let (_, a) = run(&c, s, vec![(Event::Recovered, t(310))]);
    assert_eq!(kinds(&a), vec!["verify"]);
}

#[test]
fn confirmation_table() {
    let mut c = cfg();
    c.confirm = true;
    c.confirm_timeout = Duration::from_secs(60);
    let waiting = |c: &DecideConfig| {
        let (s, a) = run(c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
        assert_eq!(s.phase.name(), "AwaitingConfirmation");
        assert_eq!(kinds(&a), vec!["record", "notify:AwaitingConfirmation"]);
        s
    };
    let s = waiting(&c);
    let id = open_id(&s);
    let approve = Event::Approve {
        incident: id.clone(),
        by: "alice".into(),
    };
    let reject = Event::Reject {
        incident: id.clone(),
        by: "bob".into(),
        reason: "known".into(),
    };

    // Approve runs the plan and names the approver; a second approve is refused.
    let (a, acts) = run(&c, s.clone(), vec![(approve.clone(), t(50))]);
    assert_eq!(a.phase.name(), "RollingBack");
    assert!(kinds(&acts).contains(&"execute".to_string()));
    assert_eq!(a.incident().unwrap().confirmed_by.as_deref(), Some("alice"));
    assert!(step(&c, a, approve.clone(), t(51)).is_err());

    // Reject suppresses until the cooldown ends.
    let (r, acts) = run(&c, s.clone(), vec![(reject, t(50))]);
    assert_eq!(r.phase.name(), "Suppressed");
    assert_eq!(kinds(&acts), vec!["record", "notify:Rejected"]);
    // One name for the state: Suppressed, also on the wire; older journals
    // spelled the outcome `rejected`.
    let inc = r.incident().unwrap();
    assert_eq!(inc.outcome, Some(Outcome::Suppressed));
    assert_eq!(inc.phase_name(), "Suppressed");
    assert_eq!(
        serde_json::to_value(Outcome::Suppressed).unwrap(),
        "suppressed"
    );
    assert_eq!(
        serde_json::from_value::<Outcome>("rejected".into()).unwrap(),
        Outcome::Suppressed
    );
    let (r, acts) = run(&c, r, vec![(breached(t(100)), t(100))]);
    assert_eq!(r.phase.name(), "Suppressed");
    assert!(acts.is_empty());

    // Signals recover while waiting: resolved, nothing executed.
    let (r, acts) = run(&c, s.clone(), vec![(ok(t(60)), t(60))]);
    assert_eq!(r.phase.name(), "Resolved");
    assert_eq!(kinds(&acts), vec!["record", "notify:Resolved"]);

    // Still breached at the deadline: escalate (default) or roll back.
    let (e, acts) = run(
        &c,
        s.clone(),
        vec![(breached(t(99)), t(99)), (breached(t(100)), t(100))],
    );
    assert_eq!(e.phase.name(), "Escalated");
    assert_eq!(kinds(&acts), vec!["record", "notify:Escalated"]);
    let mut rb = c.clone();
    rb.on_confirm_timeout = crate::config::OnConfirmTimeout::Rollback;
    let (r, acts) = run(&rb, s.clone(), vec![(breached(t(100)), t(100))]);
    assert_eq!(r.phase.name(), "RollingBack");
    assert!(kinds(&acts).contains(&"execute".to_string()));
    // ... unless monitoring is blind then.
    let (r, _) = run(&rb, s.clone(), vec![(unknown(t(100)), t(100))]);
    assert_eq!(r.phase.name(), "Escalated");

    // Recovery keeps the wait: same ID, same deadline.
    let (r, acts) = run(&c, s.clone(), vec![(Event::Recovered, t(70))]);
    assert_eq!(r, s);
    assert!(acts.is_empty());

    // Paused while waiting: approval escalates naming the guard.
    let (p, _) = run(
        &c,
        s,
        vec![
            (
                Event::Pause {
                    by: "ops".into(),
                    reason: None,
                    duration: None,
                },
                t(45),
            ),
            (approve, t(50)),
        ],
    );
    assert_eq!(p.phase.name(), "Escalated");
    assert!(p
        .incident()
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("paused"));
}

#[test]
fn manual_trigger_and_global_refusal() {
    let c = cfg();
    let trigger = Event::ManualTrigger {
        to_version: None,
        by: "alice".into(),
        reason: "CVE".into(),
    };
    let (s, a) = run(&c, watching_on("v2", "v1"), vec![(trigger.clone(), t(10))]);
    assert_eq!(s.phase.name(), "RollingBack");
    assert!(kinds(&a).contains(&"execute".to_string()));
    assert!(matches!(s.incident().unwrap().cause, Cause::Manual { .. }));
    // A second trigger while it runs is refused, saying why.
    assert_eq!(
        step(&c, s.clone(), trigger.clone(), t(11)).unwrap_err(),
        StepError::InFlight {
            target: "web".into(),
            phase: "RollingBack"
        }
    );
    assert_eq!(
        step(&c, s.clone(), trigger.clone(), t(11))
            .unwrap_err()
            .to_string(),
        "target web already has a rollback in flight (RollingBack); nothing done"
    );
    // The global cap is reached (by other targets' rollbacks): the step
    // itself escalates naming the guard, and nothing counts.
    let (s, a) = super::step(
        &c,
        &global_cap(2, &[t(-3000), t(0)]),
        watching_on("v2", "v1"),
        trigger.clone(),
        t(12),
    )
    .unwrap();
    assert_eq!(s.phase.name(), "Escalated");
    assert_eq!(
        kinds(&a),
        vec!["global_limit_refused", "record", "notify:Escalated"]
    );
    assert!(s.rollbacks.is_empty());
    let err = s.incident().unwrap().error.clone().unwrap();
    assert_eq!(
        err,
        "global rate limit: [daemon] max_rollbacks_per_hour = 2 reached across all targets \
         (2 rollbacks started in the last hour)"
    );
    // A rollback older than an hour no longer counts.
    let (s2, a) = super::step(
        &c,
        &global_cap(2, &[t(-3600), t(0)]),
        watching_on("v2", "v1"),
        trigger.clone(),
        t(12),
    )
    .unwrap();
    assert_eq!(s2.phase.name(), "RollingBack");
    assert!(kinds(&a).contains(&"execute".to_string()));
    // Paused: a manual trigger escalates too.
    let (s, _) = run(
        &c,
        s,
        vec![
            (
                Event::Pause {
                    by: "ops".into(),
                    reason: None,
                    duration: None,
                },
                t(13),
            ),
            (trigger, t(14)),
        ],
    );
    assert_eq!(s.phase.name(), "Escalated");
    let (s, _) = run(&c, s, vec![(Event::Resume { by: "ops".into() }, t(15))]);
    assert!(s.paused.is_none());
}

/// Every path that can reach an execution, taken once plainly, once
/// paused, once inside a release window and once in dry-run: only the
/// plain one executes, and each guarded one says why it did not.
#[test]
fn every_path_to_an_execution_respects_pause_window_and_dry_run() {
    // Every day 12:00:45 to 12:30 UTC: the breach at t(40) is outside, every
    // decision at t(50) or later inside.
    let window = Window {
        name: "release".into(),
        days: vec![
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ],
        start: NaiveTime::from_hms_opt(12, 0, 45).unwrap(),
        end: NaiveTime::from_hms_opt(12, 30, 0).unwrap(),
        timezone: chrono_tz::UTC,
    };
    let manual = || Event::ManualTrigger {
        to_version: None,
        by: "carol".into(),
        reason: "cve".into(),
    };
    for path in [
        "breach",
        "manual",
        "approve",
        "manual-while-waiting",
        "timeout",
    ] {
        for guard in ["none", "paused", "window", "dry_run"] {
            let mut c = cfg();
            c.max_rollbacks_per_hour = 5;
            c.confirm = !matches!(path, "breach" | "manual");
            c.confirm_timeout = Duration::from_secs(60);
            c.on_confirm_timeout = crate::config::OnConfirmTimeout::Rollback;
            let mut s = watching_on("v2", "v1");
            if c.confirm {
                s = run(&c, s, vec![(breached(t(40)), t(40))]).0;
                assert_eq!(s.phase.name(), "AwaitingConfirmation", "{path}");
            }
            match guard {
                "paused" => {
                    s = run(
                        &c,
                        s,
                        vec![(
                            Event::Pause {
                                by: "ops".into(),
                                reason: None,
                                duration: None,
                            },
                            t(45),
                        )],
                    )
                    .0
                }
                "window" => c.windows = vec![window.clone()],
                "dry_run" => c.dry_run = true,
                _ => {}
            }
            let (event, now) = match path {
                "breach" => (breached(t(50)), t(50)),
                "manual" | "manual-while-waiting" => (manual(), t(50)),
                "approve" => (
                    Event::Approve {
                        incident: open_id(&s),
                        by: "alice".into(),
                    },
                    t(50),
                ),
                _ => (breached(t(100)), t(100)),
            };
            let (s, actions) = step(&c, s, event, now).expect("step");
            let executed = kinds(&actions).contains(&"execute".to_string());
            let case = format!("{path} / {guard}: {:?}", s.phase.name());
            let inc = s.incident().expect("incident");
            let said = format!("{:?} {:?}", inc.error, inc.timeline);
            match guard {
                "none" => assert!(executed && s.phase.name() == "RollingBack", "{case}"),
                "paused" => {
                    assert!(!executed && s.phase.name() == "Escalated", "{case}");
                    assert!(said.contains("paused"), "{case}: {said}");
                }
                "window" => {
                    assert!(!executed && s.phase.name() == "DryRun", "{case}");
                    assert!(said.contains("inside release window"), "{case}: {said}");
                }
                _ => {
                    assert!(!executed && s.phase.name() == "DryRun", "{case}");
                    assert!(said.contains("dry_run = true"), "{case}: {said}");
                }
            }
        }
    }
}

/// Answers that arrive twice or cross each other (a human and
/// `confirm_command`, a link and the CLI, a manual trigger): at most one
/// execution, and a refusal or result for another incident changes nothing.
#[test]
fn crossing_answers_and_stale_refusals_act_at_most_once() {
    let mut c = cfg();
    c.confirm = true;
    c.max_rollbacks_per_hour = 5;
    let (waiting, _) = run(&c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
    let id = open_id(&waiting);
    let approve = |by: &str| Event::Approve {
        incident: id.clone(),
        by: by.into(),
    };
    let reject = Event::Reject {
        incident: id.clone(),
        by: "confirm_command".into(),
        reason: "no".into(),
    };
    let manual = Event::ManualTrigger {
        to_version: None,
        by: "carol".into(),
        reason: "now".into(),
    };
    for (name, events, want) in [
        ("approve twice", vec![approve("alice"), approve("alice")], 1),
        (
            "command then human",
            vec![approve("confirm_command"), approve("bob")],
            1,
        ),
        (
            "approve then reject",
            vec![approve("alice"), reject.clone()],
            1,
        ),
        (
            "reject then approve",
            vec![reject.clone(), approve("alice")],
            0,
        ),
        (
            "approve then manual",
            vec![approve("alice"), manual.clone()],
            1,
        ),
        (
            "manual then approve",
            vec![manual.clone(), approve("alice")],
            1,
        ),
    ] {
        let mut s = waiting.clone();
        let mut executions = 0;
        for (i, e) in events.into_iter().enumerate() {
            if let Ok((next, actions)) = step(&c, s.clone(), e, t(50 + i as i64)) {
                executions += kinds(&actions).iter().filter(|k| *k == "execute").count();
                s = next;
            }
        }
        assert_eq!(executions, want, "{name}");
    }

    // The live version changed while waiting (here: back to the version
    // the loop guard holds): approving, a manual trigger or the timeout
    // escalate naming it instead of rolling back another release.
    let mut guarded = waiting.clone();
    guarded.loop_guard = Some("v1".into());
    let mut rb = c.clone();
    rb.on_confirm_timeout = crate::config::OnConfirmTimeout::Rollback;
    for (name, e, at) in [
        ("approve", approve("alice"), t(50)),
        ("manual", manual.clone(), t(50)),
        ("timeout", breached(t(400)), t(400)),
    ] {
        let (s, actions) = run(
            &rb,
            guarded.clone(),
            vec![
                (
                    Event::VersionObserved {
                        version: "v1".into(),
                    },
                    t(45),
                ),
                (e, at),
            ],
        );
        assert_eq!(s.phase.name(), "Escalated", "{name}");
        assert!(!kinds(&actions).contains(&"execute".to_string()), "{name}");
        let err = s.incident().unwrap().error.clone().unwrap();
        assert!(err.contains("opened on v2 but v1 is live"), "{name}: {err}");
    }

    // An approval for another incident, or a second one, is refused with
    // why; the refusal journaled by older versions is never acted on.
    let (rolling, _) = run(&c, waiting.clone(), vec![(approve("alice"), t(50))]);
    let other = Event::Approve {
        incident: "20261118-120000-web-99".into(),
        by: "alice".into(),
    };
    assert_eq!(
        step(&c, rolling.clone(), other, t(51)).unwrap_err(),
        StepError::UnknownIncident {
            incident: "20261118-120000-web-99".into(),
            target: "web".into(),
            phase: "RollingBack"
        }
    );
    let again = step(&c, rolling.clone(), approve("bob"), t(51)).unwrap_err();
    assert_eq!(
        again.to_string(),
        format!("incident {id} is not awaiting confirmation: target web is RollingBack")
    );
    let legacy = Event::ExecRefused {
        incident: id.clone(),
        reason: "global rate limit".into(),
    };
    assert!(matches!(
        step(&c, rolling.clone(), legacy, t(51)),
        Err(StepError::Unexpected {
            event: "exec_refused",
            ..
        })
    ));
    // An approval when the global cap is reached escalates naming it.
    let (escalated, a) = super::step(
        &c,
        &global_cap(1, &[t(10)]),
        waiting.clone(),
        approve("alice"),
        t(50),
    )
    .unwrap();
    assert_eq!(escalated.phase.name(), "Escalated");
    assert!(!kinds(&a).contains(&"execute".to_string()));
    assert!(escalated
        .incident()
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .starts_with("global rate limit"));

    // Pausing or a window while the plan runs, or a restart then, never
    // starts the plan again.
    let mut w = c.clone();
    w.dry_run = true;
    let (s, actions) = run(
        &w,
        rolling,
        vec![
            (
                Event::Pause {
                    by: "ops".into(),
                    reason: None,
                    duration: None,
                },
                t(52),
            ),
            (Event::Recovered, t(53)),
            (breached(t(54)), t(54)),
        ],
    );
    assert_eq!(s.phase.name(), "Verifying");
    assert!(!kinds(&actions).contains(&"execute".to_string()));
}

#[derive(Debug, Clone)]
enum Gen {
    Eval(Vec<u8>, u8),
    Version(u8),
    ExecDone(bool),
    UrlCheck(bool),
    Recovered,
    Approve,
    Reject,
    Manual,
    Pause,
    Resume,
}

fn gen_event() -> impl Strategy<Value = (Gen, u16, bool)> {
    let ev = prop_oneof![
        6 => (proptest::collection::vec(0u8..4, 1..4), 0u8..4).prop_map(|(r, f)| Gen::Eval(r, f)),
        1 => (0u8..3).prop_map(Gen::Version),
        2 => any::<bool>().prop_map(Gen::ExecDone),
        2 => any::<bool>().prop_map(Gen::UrlCheck),
        1 => Just(Gen::Recovered),
        2 => Just(Gen::Approve),
        1 => Just(Gen::Reject),
        1 => Just(Gen::Manual),
        1 => Just(Gen::Pause),
        1 => Just(Gen::Resume),
    ];
    // Whether the global cap (of 1) is reached by another target.
    (ev, 0u16..400, proptest::bool::weighted(0.2))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Over random event sequences: never two executions in flight, never an
    /// execution while a rule is Unknown, never in dry-run, and the loop
    /// guard and the rate limit always hold.
    #[test]
    fn safety_invariants_hold(
        events in proptest::collection::vec(gen_event(), 1..80),
        dry in any::<bool>(),
        confirm in any::<bool>(),
        on_timeout_rollback in any::<bool>(),
        windowed in any::<bool>(),
    ) {
        let mut c = cfg();
        c.blast_radius = Some(crate::config::BlastRadius::default());
        c.dry_run = dry;
        c.cooldown = Duration::from_secs(120);
        c.confirm = confirm;
        c.confirm_timeout = Duration::from_secs(200);
        if on_timeout_rollback {
            c.on_confirm_timeout = crate::config::OnConfirmTimeout::Rollback;
        }
        if windowed {
            // Every day, 12:20 to 12:40 UTC.
            c.windows = vec![Window {
                name: "w".into(),
                days: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun],
                start: NaiveTime::from_hms_opt(12, 20, 0).unwrap(),
                end: NaiveTime::from_hms_opt(12, 40, 0).unwrap(),
                timezone: chrono_tz::UTC,
            }];
        }
        let mut executed: std::collections::HashSet<String> = Default::default();
        let mut s = watching_on("v2", "v1");
        let mut now = t(0);
        let mut executions: Vec<Time> = Vec::new();
        for (g, dt, global_full) in events {
            now += chrono::Duration::seconds(dt as i64);
            let event = match g {
                Gen::Eval(codes, others) => Event::Evaluated { fleet: Fleet {
                    targets: 4,
                    breaching: (0..others).map(|i| FleetBreach { target: format!("other{i}"), since: now }).collect(),
                }, rules: codes.iter().enumerate().map(|(i, c)| {
                    let status = match c {
                        0 => RuleStatus::Ok,
                        1 => RuleStatus::Pending { since: now },
                        2 => RuleStatus::Breached { since: now },
                        _ => RuleStatus::Unknown { since: now, why: "down".into() },
                    };
                    report(status, Some(1.0), now).rule(&format!("r{i}"))
                }).collect() },
                Gen::Version(v) => Event::VersionObserved { version: format!("v{v}") },
                Gen::ExecDone(ok) => Event::ExecFinished {
                    incident: s.incident().map(|i| i.id.clone()).unwrap_or_default(),
                    result: ExecResult { ok, steps: vec![], from_version: None, to_version: None, error: None },
                },
                Gen::UrlCheck(ok) => Event::VerifyChecked { checks: vec![],
                    incident: s.incident().map(|i| i.id.clone()).unwrap_or_default(),
                    ok,
                    detail: String::new(),
                },
                Gen::Recovered => Event::Recovered,
                Gen::Approve => Event::Approve {
                    incident: s.incident().map(|i| i.id.clone()).unwrap_or_default(),
                    by: "alice".into(),
                },
                Gen::Reject => Event::Reject {
                    incident: s.incident().map(|i| i.id.clone()).unwrap_or_default(),
                    by: "bob".into(),
                    reason: "no".into(),
                },
                Gen::Manual => Event::ManualTrigger { to_version: None, by: "carol".into(), reason: "cve".into() },
                Gen::Pause => Event::Pause { by: "ops".into(), reason: None, duration: None },
                Gen::Resume => Event::Resume { by: "ops".into() },
            };
            let before = s.clone();
            let rules_now = match &event {
                Event::Evaluated { rules, .. } => rules.clone(),
                _ => before.rules.clone(),
            };
            let any_breached = rules_now.iter().any(|r| matches!(r.status, RuleStatus::Breached { .. }));
            let all_unknown = !rules_now.is_empty() && rules_now.iter().all(|r| matches!(r.status, RuleStatus::Unknown { .. }));
            let human = matches!(event, Event::Approve { .. } | Event::ManualTrigger { to_version: None, .. });
            let fleet_wide = match &event {
                Event::Evaluated { fleet, .. } => fleet.breaching.len() >= 2,
                _ => false,
            };
            let guards = if global_full { global_cap(1, &[now]) } else { Guards::default() };
            let Ok((next, actions)) = super::step(&c, &guards, s.clone(), event, now) else { continue };
            for a in &actions {
                if let Action::GlobalLimitRefused { .. } = a {
                    prop_assert!(global_full, "refused by a global cap that had room");
                }
                if let Action::Execute { incident } = a {
                    prop_assert!(!dry, "executed in dry-run");
                    prop_assert!(!global_full, "executed beyond the global cap");
                    prop_assert!(!c.windows.iter().any(|w| w.contains(now)), "executed inside a release window");
                    prop_assert!(before.paused.is_none(), "executed while paused");
                    let on_timeout = matches!(before.phase, Phase::AwaitingConfirmation { .. });
                    prop_assert!(human || !all_unknown, "executed on its own while blind (every rule unknown)");
                    prop_assert!(human || on_timeout || any_breached, "executed on its own without a breached rule");
                    prop_assert!(human || on_timeout || !fleet_wide, "executed while breaches began on 3 of 4 targets at once");
                    prop_assert!(
                        matches!(before.phase, Phase::Watching | Phase::Done { .. } | Phase::AwaitingConfirmation { .. }),
                        "second execution in flight"
                    );
                    prop_assert!(executed.insert(incident.id.clone()), "one incident executed twice (approve twice acts once)");
                    let manual = matches!(incident.cause, Cause::Manual { .. });
                    prop_assert!(manual || before.loop_guard.is_none() || before.loop_guard != before.version, "loop guard ignored");
                    prop_assert!(!c.confirm || manual || incident.confirmed_by.is_some() || matches!(before.phase, Phase::AwaitingConfirmation { .. }), "executed without confirmation");
                    executions.retain(|e| *e > now - chrono::Duration::hours(1));
                    prop_assert!((executions.len() as u32) < c.max_rollbacks_per_hour, "rate limit ignored");
                    executions.push(now);
                }
            }
            s = next;
        }
    }
}

/// Two rules: `health` and `errors`, each one of Ok, Pending, Breached or
/// Unknown. Every combination, from Watching.
#[test]
fn every_combination_of_two_rules_unknown_abstains() {
    use RuleStatus as R;
    let statuses = |at: Time| {
        vec![
            ("ok", R::Ok),
            ("pending", R::Pending { since: at }),
            ("breached", R::Breached { since: t(0) }),
            (
                "unknown",
                R::Unknown {
                    since: t(0),
                    why: "series vanished".into(),
                },
            ),
        ]
    };
    for (a_name, a) in statuses(t(40)) {
        for (b_name, b) in statuses(t(40)) {
            let rules = vec![
                report(a.clone(), Some(1.0), t(40)),
                report(b.clone(), Some(1.0), t(40)).rule("errors"),
            ];
            let event = Event::Evaluated {
                rules,
                fleet: Fleet::default(),
            };
            let (s, actions) = step(&cfg(), watching_on("v2", "v1"), event, t(40)).unwrap();
            let acts = a_name == "breached" || b_name == "breached";
            let name = format!("health {a_name}, errors {b_name}");
            assert_eq!(
                s.phase.name(),
                if acts { "RollingBack" } else { "Watching" },
                "{name}"
            );
            assert_eq!(
                kinds(&actions).contains(&"execute".to_string()),
                acts,
                "{name}"
            );
            if acts {
                let inc = s.incident().unwrap();
                let Cause::Rules {
                    breached,
                    abstained,
                } = &inc.cause
                else {
                    panic!("{name}: cause {:?}", inc.cause)
                };
                assert!(!breached.is_empty(), "{name}");
                let unknown = [a_name, b_name].iter().filter(|n| **n == "unknown").count();
                assert_eq!(abstained.len(), unknown, "{name}: abstained rules named");
                if unknown > 0 {
                    assert!(
                        inc.timeline[0].message.contains("they abstain")
                            && inc.timeline[0].message.contains("series vanished"),
                        "{name}: {}",
                        inc.timeline[0].message
                    );
                }
                // Detection counts from the breach's start, not the trigger.
                assert_eq!(inc.first_evidence, Some(t(0)), "{name}");
            }
        }
    }
}

#[test]
fn blind_targets_never_act_and_are_told_once() {
    let mut c = cfg();
    c.blind_after = Duration::from_secs(60);
    let blind = |at: Time| Event::Evaluated {
        rules: vec![report(
            RuleStatus::Unknown {
                since: t(0),
                why: "connection refused".into(),
            },
            None,
            at,
        )],
        fleet: Fleet::default(),
    };
    let (s, actions) = run(
        &c,
        watching_on("v2", "v1"),
        vec![
            (blind(t(0)), t(0)),
            (blind(t(70)), t(70)),
            (blind(t(80)), t(80)),
        ],
    );
    assert_eq!(s.phase.name(), "Watching");
    assert_eq!(kinds(&actions), vec!["notify-target:Blind"]);
    let Some(Action::NotifyTarget { message, .. }) = actions.last() else {
        panic!()
    };
    assert!(
        message.contains("is blind") && message.contains("No rule has data"),
        "{message}"
    );

    // One rule blind, the other with data: partly blind, the other still acts.
    let mixed = |at: Time| Event::Evaluated {
        rules: vec![
            report(RuleStatus::Ok, Some(0.0), at),
            report(RuleStatus::Ok, None, at)
                .rule("errors")
                .unknown(t(0), "prometheus unreachable"),
        ],
        fleet: Fleet::default(),
    };
    let (_, actions) = run(&c, watching_on("v2", "v1"), vec![(mixed(t(70)), t(70))]);
    let Some(Action::NotifyTarget { message, .. }) = actions.last() else {
        panic!("{actions:?}")
    };
    assert!(
        message.contains("partly blind") && message.contains("still acts on health"),
        "{message}"
    );
}

#[test]
fn rules_behind_an_unreachable_server_are_left_to_its_own_notice() {
    let mut c = cfg();
    c.blind_after = Duration::from_secs(60);
    let unknown = |rule: &str, why: &str, server: Option<&str>, at: Time| {
        let r = report(RuleStatus::Ok, None, at)
            .rule(rule)
            .unknown(t(0), why);
        match server {
            Some(s) => r.unreachable(s, at),
            None => r,
        }
    };
    let refused = "prometheus eu http://127.0.0.1:1/: cannot connect: connection refused";
    // (rules at time at, expected notices so far)
    let eu_down = |at: Time| Event::Evaluated {
        rules: vec![
            report(RuleStatus::Ok, Some(0.0), at),
            unknown("errors", refused, Some("eu"), at),
        ],
        fleet: Fleet::default(),
    };
    let (_, actions) = run(
        &c,
        watching_on("v2", "v1"),
        vec![(eu_down(t(0)), t(0)), (eu_down(t(600)), t(600))],
    );
    assert!(
        actions.is_empty(),
        "the server's notice covers it: {actions:?}"
    );

    // Every rule behind the down server: still no per-target notice.
    let all_eu = |at: Time| Event::Evaluated {
        rules: vec![unknown("errors", refused, Some("eu"), at)],
        fleet: Fleet::default(),
    };
    let (s, actions) = run(
        &c,
        watching_on("v2", "v1"),
        vec![(all_eu(t(0)), t(0)), (all_eu(t(600)), t(600))],
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(s.phase.name(), "Watching");

    // Another rule blind for its own reason is told, naming the server's
    // rules apart; it sees again once that rule has data, even while the
    // server is still down.
    let mixed = |at: Time| Event::Evaluated {
        rules: vec![
            unknown("health", "value is NaN", None, at),
            unknown("errors", refused, Some("eu"), at),
        ],
        fleet: Fleet::default(),
    };
    let (_, actions) = run(
        &c,
        watching_on("v2", "v1"),
        vec![
            (mixed(t(0)), t(0)),
            (mixed(t(70)), t(70)),
            (eu_down(t(80)), t(80)),
        ],
    );
    assert_eq!(
        kinds(&actions),
        vec!["notify-target:Blind", "notify-target:Seeing"]
    );
    let Some(Action::NotifyTarget { message, .. }) = actions.first() else {
        panic!()
    };
    assert!(
        message.contains("health has had no data")
            && !message.contains("errors has had no data")
            && message.contains("notified per server: errors (prometheus eu)"),
        "{message}"
    );
    // The server answers again but the rule has no data yet (a restarted
    // Prometheus): its blind period counts from when the server last went
    // unanswered, not from the start of the outage.
    let answered_at = |last_down: i64, at: Time| Event::Evaluated {
        rules: vec![
            report(RuleStatus::Ok, Some(0.0), at),
            unknown("errors", "prometheus eu: empty result", None, at)
                .unreachable("eu", t(last_down)),
        ],
        fleet: Fleet::default(),
    };
    let (_, actions) = run(
        &c,
        watching_on("v2", "v1"),
        vec![
            (eu_down(t(0)), t(0)),
            (eu_down(t(600)), t(600)),
            (answered_at(600, t(601)), t(601)),
            (answered_at(600, t(630)), t(630)),
        ],
    );
    assert!(actions.is_empty(), "{actions:?}");
    let (_, actions) = run(
        &c,
        watching_on("v2", "v1"),
        vec![
            (eu_down(t(600)), t(600)),
            (answered_at(600, t(660)), t(660)),
        ],
    );
    assert_eq!(
        kinds(&actions),
        vec!["notify-target:Blind"],
        "still blind a blind_after later"
    );
}

fn fleet(targets: usize, others: &[(&str, i64)]) -> Fleet {
    Fleet {
        targets,
        breaching: others
            .iter()
            .map(|(n, s)| FleetBreach {
                target: n.to_string(),
                since: t(*s),
            })
            .collect(),
    }
}

#[test]
fn blast_radius_table() {
    let mut c = cfg();
    c.blast_radius = Some(crate::config::BlastRadius::default());
    let breach_with = |f: Fleet| Event::Evaluated {
        rules: vec![report(
            RuleStatus::Breached { since: t(0) },
            Some(0.9),
            t(40),
        )],
        fleet: f,
    };
    let cases: Vec<(&str, Option<crate::config::BlastRadius>, Fleet, &str)> = vec![
        ("alone", c.blast_radius, fleet(4, &[]), "RollingBack"),
        (
            "one other",
            c.blast_radius,
            fleet(4, &[("b", 5)]),
            "RollingBack",
        ),
        (
            "three of four within a minute",
            c.blast_radius,
            fleet(4, &[("b", 5), ("c", -50)]),
            "Escalated",
        ),
        (
            "three of four but one began two minutes apart",
            c.blast_radius,
            fleet(4, &[("b", 5), ("c", -120)]),
            "RollingBack",
        ),
        (
            "three of ten is under half",
            c.blast_radius,
            fleet(10, &[("b", 5), ("c", 10)]),
            "RollingBack",
        ),
        (
            "five of ten is half",
            c.blast_radius,
            fleet(10, &[("b", 5), ("c", 10), ("d", 1), ("e", 2)]),
            "Escalated",
        ),
        (
            "guard off",
            None,
            fleet(4, &[("b", 5), ("c", 10), ("d", 1)]),
            "RollingBack",
        ),
    ];
    for (name, guard, f, want) in cases {
        let mut c = c.clone();
        c.blast_radius = guard;
        let (s, actions) = step(&c, watching_on("v2", "v1"), breach_with(f), t(40)).unwrap();
        assert_eq!(s.phase.name(), want, "{name}");
        if want == "Escalated" {
            assert_eq!(
                kinds(&actions),
                vec!["record", "notify:BlastRadius"],
                "{name}"
            );
            let err = s.incident().unwrap().error.clone().unwrap();
            assert!(
                err.starts_with("blast radius: breaches began on"),
                "{name}: {err}"
            );
            assert!(err.contains("none is rolled back"), "{name}: {err}");
        }
    }
}

#[test]
fn rto_and_detection_are_recorded() {
    let mut c = cfg();
    c.has_after = false;
    // First bad evidence at t(0) (the rule's since), trigger at t(40).
    let (s, _) = step(&c, watching_on("v2", "v1"), breached(t(40)), t(40)).unwrap();
    let (s, _) = step(&c, s.clone(), exec_ok(&s), t(45)).unwrap();
    let id = open_id(&s);
    let url_ok = Event::VerifyChecked {
        checks: vec![],
        incident: id.clone(),
        ok: true,
        detail: "200".into(),
    };
    let (s, _) = step(&c, s, ok(t(50)), t(50)).unwrap();
    let (s, _) = step(&c, s, url_ok.clone(), t(50)).unwrap();
    let inc = s.incident().unwrap();
    assert_eq!(s.phase.name(), "RolledBack");
    assert_eq!(inc.first_evidence, Some(t(0)));
    assert_eq!(inc.time_to_recovery(), Some(Duration::from_secs(50)));
    assert_eq!(inc.rto_met(), Some(true));

    // The same with an RTO of 30s is missed.
    c.rto = Duration::from_secs(30);
    let (s2, _) = step(&c, watching_on("v2", "v1"), breached(t(40)), t(40)).unwrap();
    let (s2, _) = step(&c, s2.clone(), exec_ok(&s2), t(45)).unwrap();
    let (s2, _) = step(&c, s2, ok(t(50)), t(50)).unwrap();
    let url_ok = Event::VerifyChecked {
        checks: vec![],
        incident: open_id(&s2),
        ok: true,
        detail: "200".into(),
    };
    let (s2, _) = step(&c, s2, url_ok, t(50)).unwrap();
    assert_eq!(s2.incident().unwrap().rto_met(), Some(false));

    // A manual trigger has no first evidence: its clock starts at the trigger.
    let manual = Event::ManualTrigger {
        to_version: None,
        by: "ops".into(),
        reason: "cve".into(),
    };
    let (s3, _) = step(&c, watching_on("v2", "v1"), manual, t(40)).unwrap();
    let inc = s3.incident().unwrap();
    assert_eq!(inc.first_evidence, None);
    assert_eq!(inc.started(), t(40));
    assert_eq!(inc.rto_met(), None, "open");
}

fn pause(reason: Option<&str>, secs: Option<u64>) -> Event {
    Event::Pause {
        by: "ops".into(),
        reason: reason.map(str::to_string),
        duration: secs.map(Duration::from_secs),
    }
}

/// Pauses end: `--for D` at D, no `--for` at `max_pause`, `--for 0` never
/// by itself. The end comes on whatever step is next, with a notification,
/// and a breach after it acts.
#[test]
fn pauses_end_by_themselves() {
    let c = cfg();
    // (duration asked, still paused at, released by)
    let cases: Vec<(Option<u64>, Time, Option<Time>)> = vec![
        (Some(3), t(12), Some(t(13))),
        (None, t(10 + 24 * 3600 - 1), Some(t(10 + 24 * 3600))),
        (Some(0), t(10 + 365 * 24 * 3600), None),
    ];
    for (secs, held, released) in cases {
        let (s, a) = run(
            &c,
            watching_on("v2", "v1"),
            vec![(pause(Some("db maintenance"), secs), t(10))],
        );
        assert!(a.is_empty());
        let p = s.paused.clone().expect("paused");
        assert_eq!(p.reason.as_deref(), Some("db maintenance"));
        assert_eq!(p.until, released, "{secs:?}");
        // Still paused: a breach escalates naming who, why and until when.
        let (h, a) = run(&c, s.clone(), vec![(breached(held), held)]);
        assert_eq!(h.phase.name(), "Escalated", "{secs:?}");
        assert!(!kinds(&a).contains(&"execute".to_string()));
        let why = h.incident().unwrap().error.clone().unwrap();
        assert!(
            why.contains("paused") && why.contains("(db maintenance)"),
            "{why}"
        );
        assert!(
            why.contains(if released.is_some() {
                "until 20"
            } else {
                "until resumed"
            }),
            "{why}"
        );
        let Some(end) = released else {
            continue;
        };
        // At the end, any step releases it with a notification; the
        // breach in the same evaluation acts.
        let (r, a) = run(&c, s, vec![(breached(end), end)]);
        assert!(r.paused.is_none());
        assert_eq!(
            kinds(&a)[..2],
            ["notify-target:PauseEnded".to_string(), "record".to_string()]
        );
        assert!(kinds(&a).contains(&"execute".to_string()));
        assert_eq!(r.phase.name(), "RollingBack");
        let Action::NotifyTarget { message, .. } = &a[0] else {
            panic!("{a:?}")
        };
        assert!(
            message.contains("by ops (db maintenance) ended"),
            "{message}"
        );
    }
    // A new pause replaces the old one (its end too); resume ends it early.
    let (s, _) = run(
        &c,
        watching_on("v2", "v1"),
        vec![
            (pause(None, Some(3)), t(10)),
            (pause(Some("longer"), Some(60)), t(11)),
        ],
    );
    assert_eq!(s.paused.as_ref().unwrap().until, Some(t(71)));
    let (s, a) = run(&c, s, vec![(Event::Resume { by: "ops".into() }, t(12))]);
    assert!(s.paused.is_none() && a.is_empty());
}

fn shadow_report(status: RuleStatus, at: Time) -> RuleReport {
    report(status, Some(2.0), at).rule("p99").shadow()
}

/// A shadow rule never acts: breaching, it writes one "would roll back
/// (shadow rule X)" record and notification per episode and leaves the
/// phase alone; it does not block verification or make a target blind.
#[test]
fn shadow_rules_record_once_per_episode_and_never_act() {
    let c = cfg();
    let eval = |real: RuleStatus, shadow: RuleStatus, at: Time| Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![report(real, Some(0.0), at), shadow_report(shadow, at)],
    };
    let b = RuleStatus::Breached { since: t(0) };
    let (s, a) = run(
        &c,
        watching_on("v2", "v1"),
        vec![(eval(RuleStatus::Ok, b.clone(), t(10)), t(10))],
    );
    assert_eq!(s.phase.name(), "Watching");
    assert_eq!(kinds(&a), ["record", "notify:Shadow"]);
    let Action::Notify { incident, .. } = &a[1] else {
        panic!()
    };
    assert_eq!(incident.outcome, Some(Outcome::Shadow));
    assert!(incident.dry_run);
    assert!(incident
        .timeline
        .last()
        .unwrap()
        .message
        .contains("would roll back (shadow rule p99)"));
    assert_eq!(s.shadow_breached, ["p99"]);
    // Same episode: nothing more. Pending/Unknown keep it; Ok ends it.
    let (s, a) = run(
        &c,
        s,
        vec![
            (eval(RuleStatus::Ok, b.clone(), t(15)), t(15)),
            (
                eval(
                    RuleStatus::Ok,
                    RuleStatus::Unknown {
                        since: t(20),
                        why: "x".into(),
                    },
                    t(20),
                ),
                t(20),
            ),
            (eval(RuleStatus::Ok, b.clone(), t(25)), t(25)),
        ],
    );
    assert!(a.is_empty(), "{:?}", kinds(&a));
    let (s, a) = run(
        &c,
        s,
        vec![
            (eval(RuleStatus::Ok, RuleStatus::Ok, t(30)), t(30)),
            (eval(RuleStatus::Ok, b.clone(), t(35)), t(35)),
        ],
    );
    assert_eq!(kinds(&a), ["record", "notify:Shadow"]);
    assert_eq!(s.phase.name(), "Watching");
    // The real rule still acts; the shadow one does not hold up
    // verification.
    let (s, _) = run(&c, s, vec![(eval(b.clone(), b.clone(), t(40)), t(40))]);
    assert_eq!(s.phase.name(), "RollingBack");
    let exec = exec_ok(&s);
    let id = open_id(&s);
    let (s, _) = run(
        &c,
        s,
        vec![
            (exec, t(41)),
            (
                Event::VerifyChecked {
                    checks: vec![],
                    incident: id,
                    ok: true,
                    detail: "200".into(),
                },
                t(42),
            ),
            (eval(RuleStatus::Ok, b, t(43)), t(43)),
        ],
    );
    assert_eq!(s.phase.name(), "RolledBack");
    // Only a shadow rule without data: not blind.
    let (s, a) = run(
        &c,
        watching_on("v2", "v1"),
        vec![(
            eval(
                RuleStatus::Ok,
                RuleStatus::Unknown {
                    since: t(0),
                    why: "x".into(),
                },
                t(4000),
            ),
            t(4000),
        )],
    );
    assert!(a.is_empty() && s.blind_notified.is_none());
}

/// A journal delta writes a list that emptied as `null`; recovery reads it
/// back as empty.
#[test]
fn shadow_episodes_read_back_from_a_delta_null() {
    let mut s = TargetState::new("web");
    s.shadow_breached = vec!["p99".into()];
    let mut v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["shadow_breached"][0], "p99");
    v["shadow_breached"] = serde_json::Value::Null;
    let back: TargetState = serde_json::from_value(v).unwrap();
    assert!(back.shadow_breached.is_empty());
    let plain: TargetState =
        serde_json::from_value(serde_json::to_value(TargetState::new("web")).unwrap()).unwrap();
    assert_eq!(plain, TargetState::new("web"));
}
fn gate(check: &str, ok: bool, detail: &str, ms: u64) -> crate::report::CheckReport {
    crate::report::CheckReport {
        check: check.into(),
        ok,
        detail: detail.into(),
        latency: Some(Duration::from_millis(ms)),
        output: String::new(),
    }
}

#[test]
fn templates_resolved_before_the_first_step() {
    let needs = |var: &str, at: &str| vec![(var.to_string(), vec![at.to_string()])];
    let mut with_source = cfg();
    with_source.needs_vars = needs("to_version", "rollback.pre[0]");
    let mut without_source = with_source.clone();
    without_source.version_source = false;
    let mut from = cfg();
    from.needs_vars = needs("from_version", "rollback.steps[0]");
    from.version_source = false;
    let mut first_seen = TargetState::new("web");
    first_seen.version = Some("v3".into());
    // (name, config, state, phase, actions, error contains)
    type Case<'a> = (
        &'a str,
        DecideConfig,
        TargetState,
        &'a str,
        Vec<&'a str>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "history known: runs",
            with_source.clone(),
            watching_on("v2", "v1"),
            "RollingBack",
            vec!["record", "notify:RollbackStarted", "execute"],
            "",
        ),
        (
            "no earlier version, no version source",
            without_source.clone(),
            first_seen.clone(),
            "Failed",
            vec!["record", "notify:RollbackFailed"],
            "rollback refused before its first step: {to_version}: no earlier version seen since start; set version_command or use trigger --to-version (used by rollback.pre[0]); nothing was run",
        ),
        (
            "no earlier version, source present",
            with_source.clone(),
            first_seen.clone(),
            "Failed",
            vec!["record", "notify:RollbackFailed"],
            "{to_version}: no earlier version seen since start (only v3 was seen live); use trigger --to-version",
        ),
        (
            "live version unknown",
            from,
            TargetState::new("web"),
            "Failed",
            vec!["record", "notify:RollbackFailed"],
            "{from_version}: the live version is unknown; set version_command (used by rollback.steps[0])",
        ),
        (
            "plan needs nothing",
            cfg(),
            TargetState::new("web"),
            "RollingBack",
            vec!["record", "notify:RollbackStarted", "execute"],
            "",
        ),
    ];
    for (name, c, state, phase, want, error) in cases {
        let (s, a) = step(&c, state, breached(t(40)), t(40)).unwrap();
        assert_eq!(s.phase.name(), phase, "{name}");
        assert_eq!(kinds(&a), want, "{name}");
        let inc = s.incident().unwrap();
        if error.is_empty() {
            assert_eq!(inc.error, None, "{name}");
        } else {
            let got = inc.error.as_deref().unwrap_or_default();
            assert!(got.contains(error), "{name}: {got}");
            assert!(inc.rollback_started.is_none(), "{name}: nothing started");
            assert!(s.rollbacks.is_empty(), "{name}: no rollback counted");
        }
    }
}

#[test]
fn manual_trigger_to_a_named_version_pins_it_and_the_loop_guard() {
    let mut c = cfg();
    c.needs_vars = vec![("to_version".into(), vec!["rollback.kind".into()])];
    c.version_source = false;
    let mut s = TargetState::new("web");
    s.version = Some("v3".into());
    let trigger = Event::ManualTrigger {
        by: "ops".into(),
        reason: "cve in v2 and v3".into(),
        to_version: Some("v1".into()),
    };
    let (s, a) = step(&c, s, trigger, t(10)).unwrap();
    assert_eq!(s.phase.name(), "RollingBack");
    assert_eq!(
        kinds(&a),
        vec!["record", "notify:RollbackStarted", "execute"]
    );
    let inc = s.incident().unwrap();
    assert_eq!(inc.to_version.as_deref(), Some("v1"));
    assert_eq!(inc.requested_version.as_deref(), Some("v1"));
    assert!(inc
        .timeline
        .iter()
        .any(|e| e.message.contains("asked for version v1")));
    let mut done = exec_ok(&s);
    if let Event::ExecFinished { result, .. } = &mut done {
        result.to_version = Some("v1".into());
    }
    let id = open_id(&s);
    let (s, _) = run(
        &c,
        s,
        vec![
            (done, t(20)),
            (
                Event::VerifyChecked {
                    incident: id,
                    ok: true,
                    detail: "HTTP 200".into(),
                    checks: vec![],
                },
                t(21),
            ),
            (ok(t(22)), t(22)),
        ],
    );
    assert_eq!(s.phase.name(), "RolledBack");
    assert_eq!(s.loop_guard.as_deref(), Some("v1"));
}

#[test]
fn failing_gates_make_did_not_help_and_run_on_failure() {
    let mut c = cfg();
    c.verify_gates = 2;
    c.has_on_failure = true;
    let (s, _) = run(&c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
    let (s, _) = run(&c, s.clone(), vec![(exec_ok(&s), t(45))]);
    let id = open_id(&s);
    let checks = vec![
        gate(
            "GET http://127.0.0.1/api",
            false,
            "HTTP 200 in 1.2s, slower than max_latency 500ms",
            1200,
        ),
        gate("smoke-login", true, "exit 0 in 40ms", 40),
    ];
    let checked = Event::VerifyChecked {
        incident: id.clone(),
        ok: false,
        detail: "1 of 2 gates pass".into(),
        checks: checks.clone(),
    };
    let (s, a) = run(&c, s, vec![(checked, t(50)), (ok(t(51)), t(51))]);
    assert_eq!(s.phase.name(), "Verifying", "rules ok but a gate fails");
    assert_eq!(kinds(&a), vec!["verify"], "the next poll checks again");
    assert_eq!(s.incident().unwrap().verify_checks, checks);
    // At the deadline: did not help, on_failure runs, the rollback is not
    // over until it ends.
    let (s, a) = run(&c, s, vec![(ok(t(106)), t(106))]);
    assert_eq!(s.phase.name(), "Failed");
    assert_eq!(kinds(&a), vec!["on_failure", "record", "notify:DidNotHelp"]);
    let inc = s.incident().unwrap().clone();
    let error = inc.error.clone().unwrap();
    assert!(error.starts_with("rollback did not help"), "{error}");
    assert!(
        error.contains("verification gates still fail: GET http://127.0.0.1/api: HTTP 200 in 1.2s, slower than max_latency 500ms"),
        "{error}"
    );
    assert_eq!(s.after_running.as_deref(), Some(id.as_str()));
    let finished = Event::OnFailureFinished {
        incident: id.clone(),
        result: ExecResult {
            ok: true,
            steps: vec![crate::report::StepReport {
                argv: vec!["collect-logs".into()],
                exit_code: Some(0),
                ok: true,
                duration: Duration::from_millis(5),
                stdout: String::new(),
                stderr: String::new(),
                error: None,
                leftovers: vec![],
            }],
            from_version: None,
            to_version: None,
            error: None,
        },
    };
    let (s, a) = run(&c, s, vec![(finished, t(107))]);
    assert_eq!(kinds(&a), vec!["record"]);
    assert_eq!(s.after_running, None);
    assert_eq!(s.incident().unwrap().on_failure_steps.len(), 1);

    // A failed plan runs on_failure too; without on_failure nothing extra.
    for (has, want) in [
        (true, vec!["on_failure", "record", "notify:RollbackFailed"]),
        (false, vec!["record", "notify:RollbackFailed"]),
    ] {
        let mut c = cfg();
        c.has_on_failure = has;
        let (s, _) = run(&c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
        let failed = Event::ExecFinished {
            incident: open_id(&s),
            result: ExecResult {
                ok: false,
                steps: vec![],
                from_version: None,
                to_version: None,
                error: Some("step 2 of 3 (pm2 start app) failed: exited with status 1".into()),
            },
        };
        let (s, a) = run(&c, s, vec![(failed, t(45))]);
        assert_eq!(s.phase.name(), "Failed");
        assert_eq!(kinds(&a), want, "has_on_failure = {has}");
    }
}

#[test]
fn an_impossible_plan_is_refused_without_asking_a_human() {
    let mut c = cfg();
    c.confirm = true;
    c.needs_vars = vec![("to_version".into(), vec!["rollback.steps[0]".into()])];
    c.version_source = false;
    let mut s = TargetState::new("web");
    s.version = Some("v3".into());
    let (s, a) = step(&c, s, breached(t(40)), t(40)).unwrap();
    assert_eq!(s.phase.name(), "Failed");
    assert_eq!(kinds(&a), vec!["record", "notify:RollbackFailed"]);
    // With the history known, the human is asked as usual.
    let (s, a) = step(&c, watching_on("v2", "v1"), breached(t(40)), t(40)).unwrap();
    assert_eq!(s.phase.name(), "AwaitingConfirmation");
    assert_eq!(kinds(&a), vec!["record", "notify:AwaitingConfirmation"]);
}

/// Verification is an action whose result comes back as an event: asked on
/// entering Verifying and at each evaluation, one run at a time; a restart
/// asks again (the run died with the process); no gates, no runs.
#[test]
fn gates_run_once_per_evaluation_one_at_a_time() {
    let c = cfg();
    let (s, _) = run(&c, watching_on("v2", "v1"), vec![(breached(t(40)), t(40))]);
    let (s, a) = run(&c, s.clone(), vec![(exec_ok(&s), t(45))]);
    assert_eq!(kinds(&a), vec!["verify", "record"]);
    let id = open_id(&s);
    let running = |s: &TargetState| match &s.phase {
        Phase::Verifying { gates_running, .. } => *gates_running,
        _ => panic!("not verifying: {}", s.phase.name()),
    };
    assert!(running(&s));
    // A slow run: the polls meanwhile ask for no second one.
    let (s, a) = run(
        &c,
        s,
        vec![(breached(t(46)), t(46)), (breached(t(47)), t(47))],
    );
    assert!(a.is_empty(), "{a:?}");
    let checked = |ok: bool| Event::VerifyChecked {
        incident: id.clone(),
        ok,
        detail: "HTTP 503".into(),
        checks: vec![],
    };
    let (s, a) = run(&c, s, vec![(checked(false), t(48))]);
    assert!(a.is_empty(), "{a:?}");
    assert!(!running(&s));
    let (s, a) = run(&c, s, vec![(breached(t(49)), t(49))]);
    assert_eq!(kinds(&a), vec!["verify"]);
    assert!(running(&s));
    // A restart while a run is under way asks again.
    let (s, a) = run(&c, s, vec![(Event::Recovered, t(50))]);
    assert_eq!(kinds(&a), vec!["verify"]);
    // A state journaled before the flag existed reads as "no run".
    let mut json = serde_json::to_value(&s).unwrap();
    json["phase"]
        .as_object_mut()
        .unwrap()
        .remove("gates_running");
    let old: TargetState = serde_json::from_value(json).unwrap();
    assert!(!running(&old));
    let (_, a) = run(&c, old, vec![(breached(t(51)), t(51))]);
    assert_eq!(kinds(&a), vec!["verify"]);
    // Without gates (rules only) nothing is run.
    let mut rules_only = cfg();
    rules_only.verify_url = false;
    let (s, _) = run(
        &rules_only,
        watching_on("v2", "v1"),
        vec![(breached(t(40)), t(40))],
    );
    let (s, a) = run(&rules_only, s.clone(), vec![(exec_ok(&s), t(45))]);
    assert_eq!(kinds(&a), vec!["record"]);
    let (s, a) = run(&rules_only, s, vec![(breached(t(46)), t(46))]);
    assert!(a.is_empty(), "{a:?}");
    let (_, a) = run(&rules_only, s, vec![(ok(t(47)), t(47))]);
    assert_eq!(kinds(&a), vec!["after", "record", "notify:RolledBack"]);
}

/// What is journaled is decided by comparing states: every field of the
/// state but the rules' live values. A field added to [`TargetState`] fails
/// here (and in `journal_worthy_change`) until it is decided.
#[test]
fn journal_worthy_changes_are_every_field_but_live_rule_values() {
    let (mut s, _) = run(
        &cfg(),
        watching_on("v2", "v1"),
        vec![(breached(t(40)), t(40))],
    );
    s.deployed_at = Some(t(1));
    s.loop_guard = Some("v0".into());
    s.after_running = Some("x".into());
    s.blind_notified = Some(t(2));
    s.paused = Some(Pause {
        by: "ops".into(),
        at: t(3),
        reason: None,
        until: None,
    });
    s.shadow_breached = vec!["shadow".into()];
    s.settling = Some(t(4));
    let json = serde_json::to_value(&s).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let changed = |f: &dyn Fn(&mut TargetState)| {
        let mut next = s.clone();
        f(&mut next);
        s.journal_worthy_change(&next)
    };
    #[allow(clippy::type_complexity)]
    let fields: Vec<(&str, Box<dyn Fn(&mut TargetState)>)> = vec![
        ("after_running", Box::new(|n| n.after_running = None)),
        ("blind_notified", Box::new(|n| n.blind_notified = None)),
        ("deployed_at", Box::new(|n| n.deployed_at = Some(t(9)))),
        ("incident_seq", Box::new(|n| n.incident_seq += 1)),
        ("loop_guard", Box::new(|n| n.loop_guard = None)),
        ("paused", Box::new(|n| n.paused = None)),
        ("phase", Box::new(|n| n.phase = Phase::Watching)),
        ("previous_version", Box::new(|n| n.previous_version = None)),
        ("rollbacks", Box::new(|n| n.rollbacks.clear())),
        ("rules", Box::new(|n| n.rules[0].status = RuleStatus::Ok)),
        ("settling", Box::new(|n| n.settling = None)),
        ("shadow_breached", Box::new(|n| n.shadow_breached.clear())),
        ("target", Box::new(|n| n.target = "other".into())),
        ("version", Box::new(|n| n.version = Some("v9".into()))),
    ];
    let named: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys, named,
        "a field of TargetState was added or removed: decide whether a change of it is worth \
         a journal line (TargetState::journal_worthy_change) and list it here"
    );
    for (key, f) in &fields {
        assert!(changed(f.as_ref()), "a change of {key} is not journaled");
    }
    // The live values of the rules change every poll: not worth a line.
    assert!(!changed(&|n| {
        n.rules[0].value = Some(0.7);
        n.rules[0].at = t(41);
        n.rules[0].detail = Some("3 of 4 probes failed".into());
    }));
    assert!(!changed(&|_| {}));
}

mod evidence;
