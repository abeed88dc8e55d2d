//! Issue 18: recovery is evidence (item 0), and the blast-radius guard
//! counts breach starts, escalates targets that acted too early and can
//! hold a trigger until it sees its peers (item 10).

use super::*;

/// The `paged` rule (an Alertmanager rule) with `status`.
fn paged(status: RuleStatus, at: Time) -> RuleReport {
    report(status, None, at)
        .rule("paged")
        .source("alertmanager alertname=Down")
        .value(0.0)
        .threshold(0.0)
}

fn unknown_status(at: Time, why: &str) -> RuleStatus {
    RuleStatus::Unknown {
        since: at,
        why: why.into(),
    }
}

/// `health` with `status` (the probe that caused the incident) and `paged`.
fn two(health: RuleStatus, paged_status: RuleStatus, at: Time) -> Event {
    Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![report(health, Some(0.9), at), paged(paged_status, at)],
    }
}

/// `confirm = "required"`: the probe `health` breached, `paged` is Ok.
fn awaiting(c: &DecideConfig) -> TargetState {
    let (s, _) = run(
        c,
        watching_on("v2", "v1"),
        vec![(
            two(RuleStatus::Breached { since: t(0) }, RuleStatus::Ok, t(40)),
            t(40),
        )],
    );
    assert_eq!(s.phase.name(), "AwaitingConfirmation");
    let Cause::Rules { breached, .. } = &s.incident().unwrap().cause else {
        panic!("cause")
    };
    assert_eq!(breached.len(), 1);
    assert_eq!(breached[0].rule, "health");
    s
}

fn confirm_cfg() -> DecideConfig {
    let mut c = cfg();
    c.confirm = true;
    c.confirm_timeout = Duration::from_secs(1800);
    c
}

fn with_no_data(mut r: RuleReport, why: &str) -> RuleReport {
    r.no_data = Some(why.into());
    r
}

#[test]
fn awaiting_confirmation_resolves_only_on_the_causing_rules_health() {
    let c = confirm_cfg();
    let s = awaiting(&c);
    let min_samples = unknown_status(t(60), "1 of 3 probes (min_samples = 3)");
    let health_ok_by_policy = Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![
            with_no_data(report(RuleStatus::Ok, None, t(60)), "no samples"),
            paged(RuleStatus::Ok, t(60)),
        ],
    };
    let health_gone = Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![paged(RuleStatus::Ok, t(60))],
    };
    let cases: Vec<(&str, Event, &str)> = vec![
        (
            "the probe has too few samples, the other rule is ok (issue 18 item 0)",
            two(min_samples.clone(), RuleStatus::Ok, t(60)),
            "AwaitingConfirmation",
        ),
        (
            "every rule unknown",
            two(
                min_samples.clone(),
                unknown_status(t(60), "store empty"),
                t(60),
            ),
            "AwaitingConfirmation",
        ),
        (
            "the probe is ok only by no_data = ok",
            health_ok_by_policy,
            "AwaitingConfirmation",
        ),
        (
            "the causing rule is no longer evaluated",
            health_gone,
            "AwaitingConfirmation",
        ),
        (
            "the probe is ok, the other rule pending",
            two(RuleStatus::Ok, RuleStatus::Pending { since: t(59) }, t(60)),
            "AwaitingConfirmation",
        ),
        (
            "the probe still breached",
            two(RuleStatus::Breached { since: t(0) }, RuleStatus::Ok, t(60)),
            "AwaitingConfirmation",
        ),
        (
            "the probe ok on data, the other rule unknown",
            two(RuleStatus::Ok, unknown_status(t(60), "store empty"), t(60)),
            "Resolved",
        ),
        (
            "both ok",
            two(RuleStatus::Ok, RuleStatus::Ok, t(60)),
            "Resolved",
        ),
    ];
    for (name, event, want) in cases {
        let (next, actions) = step(&c, s.clone(), event, t(60)).unwrap();
        assert_eq!(next.phase.name(), want, "{name}");
        if want == "Resolved" {
            assert_eq!(kinds(&actions), vec!["record", "notify:Resolved"], "{name}");
        } else {
            assert!(actions.is_empty(), "{name}: {actions:?}");
            assert_eq!(next.incident(), s.incident(), "{name}: the wait goes on");
        }
    }
}

#[test]
fn after_a_restart_the_wait_goes_on_until_evidence_and_approval_still_works() {
    let c = confirm_cfg();
    let s = awaiting(&c);
    let id = open_id(&s);
    // Restart: the probe's samples died with the process, the Alertmanager
    // rule has no alert firing.
    let (s, _) = run(
        &c,
        s,
        vec![
            (Event::Recovered, t(100)),
            (
                two(
                    unknown_status(t(100), "0 of 3 probes (min_samples = 3)"),
                    RuleStatus::Ok,
                    t(100),
                ),
                t(100),
            ),
            (
                two(
                    unknown_status(t(100), "2 of 3 probes (min_samples = 3)"),
                    RuleStatus::Ok,
                    t(102),
                ),
                t(102),
            ),
            // Enough samples again: the release still answers 500.
            (
                two(
                    RuleStatus::Pending { since: t(104) },
                    RuleStatus::Ok,
                    t(104),
                ),
                t(104),
            ),
        ],
    );
    assert_eq!(s.phase.name(), "AwaitingConfirmation");
    assert_eq!(open_id(&s), id, "same incident");
    let approve = Event::Approve {
        incident: id,
        by: "alice".into(),
    };
    let (s, actions) = step(&c, s, approve, t(110)).unwrap();
    assert_eq!(s.phase.name(), "RollingBack");
    assert!(kinds(&actions).contains(&"execute".to_string()));
}

/// Verifying a rollback the probe `health` triggered, by the rules only
/// (`verify_url` off) or with gates.
fn verifying(c: &DecideConfig) -> TargetState {
    let (s, _) = run(
        c,
        watching_on("v2", "v1"),
        vec![(
            two(RuleStatus::Breached { since: t(0) }, RuleStatus::Ok, t(40)),
            t(40),
        )],
    );
    let (s, _) = run(c, s.clone(), vec![(exec_ok(&s), t(45))]);
    assert_eq!(s.phase.name(), "Verifying");
    s
}

#[test]
fn verification_needs_the_triggering_rules_or_the_gates() {
    let mut rules_only = cfg();
    rules_only.verify_url = false;
    let s = verifying(&rules_only);
    let unknown_probe = || {
        two(
            unknown_status(t(50), "1 of 3 probes (min_samples = 3)"),
            RuleStatus::Ok,
            t(50),
        )
    };
    // Another rule's Ok does not stand in for the probe that triggered it.
    let (next, actions) = step(&rules_only, s.clone(), unknown_probe(), t(50)).unwrap();
    assert_eq!(next.phase.name(), "Verifying");
    assert!(actions.is_empty(), "{actions:?}");
    // ... and at the deadline the rollback did not help, saying why.
    let (next, _) = step(&rules_only, next, unknown_probe(), t(106)).unwrap();
    assert_eq!(next.phase.name(), "Failed");
    let why = next.incident().unwrap().error.clone().unwrap();
    assert!(
        why.contains("health has no data yet") && why.contains("not evidence of recovery"),
        "{why}"
    );
    // The probe Ok on data: verified, naming it.
    let (next, _) = step(
        &rules_only,
        s.clone(),
        two(RuleStatus::Ok, unknown_status(t(50), "store empty"), t(50)),
        t(50),
    )
    .unwrap();
    assert_eq!(next.phase.name(), "RolledBack");
    let how = next.incident().unwrap().verification.clone().unwrap();
    assert!(
        how.contains("the rule that triggered it is ok on fresh data: health"),
        "{how}"
    );
    // The probe Ok only by no_data = "ok": not evidence.
    let by_policy = Event::Evaluated {
        fleet: Fleet::default(),
        rules: vec![
            with_no_data(report(RuleStatus::Ok, None, t(50)), "no samples"),
            paged(RuleStatus::Ok, t(50)),
        ],
    };
    let (next, _) = step(&rules_only, s, by_policy, t(50)).unwrap();
    assert_eq!(next.phase.name(), "Verifying");

    // With gates: the gates passing show health while the probe has no
    // data yet (a crashed release's probe window refills).
    let gated = cfg();
    let s = verifying(&gated);
    let id = open_id(&s);
    let (next, _) = run(
        &gated,
        s,
        vec![
            (unknown_probe(), t(50)),
            (
                Event::VerifyChecked {
                    incident: id,
                    ok: true,
                    detail: "HTTP 200 in 3ms".into(),
                    checks: vec![],
                },
                t(51),
            ),
        ],
    );
    assert_eq!(next.phase.name(), "RolledBack");

    // A manual rollback names no rule: a rule Ok on data shows health.
    let trigger = Event::ManualTrigger {
        by: "ops".into(),
        reason: "bad build".into(),
        to_version: None,
    };
    let (s, _) = run(&rules_only, watching_on("v2", "v1"), vec![(trigger, t(10))]);
    let (s, _) = run(&rules_only, s.clone(), vec![(exec_ok(&s), t(12))]);
    let (next, _) = step(&rules_only, s, unknown_probe(), t(50)).unwrap();
    assert_eq!(next.phase.name(), "RolledBack");
}

fn guard_4s() -> DecideConfig {
    let mut c = cfg();
    c.verify_url = false;
    c.blast_radius = Some(crate::config::BlastRadius {
        targets: 3,
        fraction: 0.5,
        within: Duration::from_secs(4),
    });
    c
}

fn breach_with(f: Fleet, at: Time) -> Event {
    Event::Evaluated {
        rules: vec![report(RuleStatus::Breached { since: t(0) }, Some(0.9), at)],
        fleet: f,
    }
}

fn ok_with(f: Fleet, at: Time) -> Event {
    Event::Evaluated {
        rules: vec![report(RuleStatus::Ok, Some(0.0), at)],
        fleet: f,
    }
}

#[test]
fn the_guard_escalates_a_target_that_acted_before_its_peers_began() {
    let c = guard_4s();
    // web's breach began at 0 and held its 1s; nobody else yet: it acts.
    let (s, actions) = step(
        &c,
        watching_on("v2", "v1"),
        breach_with(fleet(4, &[]), t(1)),
        t(1),
    )
    .unwrap();
    assert_eq!(s.phase.name(), "RollingBack");
    assert!(kinds(&actions).contains(&"execute".to_string()));
    let (s, _) = run(&c, s.clone(), vec![(exec_ok(&s), t(2))]);
    // One peer began 1.2s later: not enough for the guard.
    let (s, actions) = step(&c, s, ok_with(fleet(4, &[("b", 1)]), t(2)), t(2)).unwrap();
    assert!(!kinds(&actions).contains(&"notify:BlastRadius".to_string()));
    assert_eq!(s.phase.name(), "RolledBack");
    // A second began 2.4s after web (b has since rolled back too: its
    // start still counts): the guard trips for web's breach after it acted.
    let peers = fleet(4, &[("b", 1), ("c", 2)]);
    let (s, actions) = step(&c, s, ok_with(peers.clone(), t(3)), t(3)).unwrap();
    assert_eq!(kinds(&actions), vec!["record", "notify:BlastRadius"]);
    assert_eq!(s.phase.name(), "RolledBack", "the outcome stands");
    let inc = s.incident().unwrap();
    let why = inc.blast_radius_after_acting.clone().unwrap();
    assert!(
        why.contains("breaches began on 3 of 4 targets within 4s"),
        "{why}"
    );
    assert!(why.contains("already rolled back"), "{why}");
    assert!(why.contains("cannot be undone"), "{why}");
    assert!(inc
        .timeline
        .last()
        .unwrap()
        .message
        .starts_with("escalated: "));
    // Once.
    let (_, actions) = step(&c, s, ok_with(peers, t(4)), t(4)).unwrap();
    assert!(actions.is_empty(), "{actions:?}");

    // Not for an incident that did not act, nor for peers outside `within`.
    let (esc, _) = run(
        &c,
        watching_on("v2", "v1"),
        vec![(breach_with(fleet(4, &[("b", -1), ("c", 1)]), t(1)), t(1))],
    );
    assert_eq!(esc.phase.name(), "Escalated");
    let (_, actions) = step(
        &c,
        esc,
        ok_with(fleet(4, &[("b", -1), ("c", 1), ("d", 2)]), t(3)),
        t(3),
    )
    .unwrap();
    assert!(actions.is_empty(), "{actions:?}");
    let (s, _) = run(
        &c,
        watching_on("v2", "v1"),
        vec![(breach_with(fleet(4, &[]), t(1)), t(1))],
    );
    let (_, actions) = step(&c, s, ok_with(fleet(4, &[("b", 5), ("c", 6)]), t(7)), t(7)).unwrap();
    assert!(
        actions.is_empty(),
        "peers 5s later are another event: {actions:?}"
    );
    // Guard off: nothing.
    let mut off = c.clone();
    off.blast_radius = None;
    let (s, _) = run(
        &off,
        watching_on("v2", "v1"),
        vec![(breach_with(fleet(4, &[]), t(1)), t(1))],
    );
    let (_, actions) = step(
        &off,
        s,
        ok_with(fleet(4, &[("b", 1), ("c", 2)]), t(3)),
        t(3),
    )
    .unwrap();
    assert!(actions.is_empty());
}

#[test]
fn settle_holds_a_trigger_until_the_guard_sees_its_peers() {
    let mut c = guard_4s();
    c.settle = Duration::from_secs(3);
    // The breach held its `for` at 1s: held, no incident yet.
    let (s, actions) = step(
        &c,
        watching_on("v2", "v1"),
        breach_with(fleet(4, &[]), t(1)),
        t(1),
    )
    .unwrap();
    assert_eq!(s.phase.name(), "Watching");
    assert!(actions.is_empty());
    assert_eq!(s.settling, Some(t(1)));
    let (s, actions) = step(&c, s, breach_with(fleet(4, &[("b", 1)]), t(3)), t(3)).unwrap();
    assert_eq!(s.phase.name(), "Watching");
    assert!(actions.is_empty());
    // The hold is over; two peers began meanwhile: escalated, none acts.
    let (s, actions) = step(
        &c,
        s,
        breach_with(fleet(4, &[("b", 1), ("c", 2)]), t(4)),
        t(4),
    )
    .unwrap();
    assert_eq!(s.phase.name(), "Escalated");
    assert_eq!(kinds(&actions), vec!["record", "notify:BlastRadius"]);
    assert_eq!(s.settling, None);
    // Alone after the hold: it acts.
    let (s, _) = run(
        &c,
        watching_on("v2", "v1"),
        vec![
            (breach_with(fleet(4, &[]), t(1)), t(1)),
            (breach_with(fleet(4, &[]), t(4)), t(4)),
        ],
    );
    assert_eq!(s.phase.name(), "RollingBack");
    assert_eq!(s.settling, None);
    // A breach that ends during the hold ends it.
    let (s, _) = run(
        &c,
        watching_on("v2", "v1"),
        vec![
            (breach_with(fleet(4, &[]), t(1)), t(1)),
            (ok_with(fleet(4, &[]), t(2)), t(2)),
        ],
    );
    assert_eq!(s.phase.name(), "Watching");
    assert_eq!(s.settling, None);
    // Without settle nothing is held.
    let (s, _) = run(
        &guard_4s(),
        watching_on("v2", "v1"),
        vec![(breach_with(fleet(4, &[]), t(1)), t(1))],
    );
    assert_eq!(s.phase.name(), "RollingBack");
}

#[test]
fn older_journals_read_without_the_new_fields() {
    let (s, _) = run(
        &cfg(),
        watching_on("v2", "v1"),
        vec![(breached(t(40)), t(40))],
    );
    let json = serde_json::to_value(&s).unwrap();
    assert!(json.get("settling").is_none());
    let inc = &json["phase"]["incident"];
    assert!(inc.get("blast_radius_after_acting").is_none(), "{inc}");
    let back: TargetState = serde_json::from_value(json).unwrap();
    assert_eq!(back, s);
}
