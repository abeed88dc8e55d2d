//! The notification path as the daemon drives it, through the public API:
//! journal the step, write the record, write the mail to the outbox,
//! journal that it was written, and recover all of it after a restart.

mod common;

use rollbackd::config::{EmailConfig, NotifyConfig};
use rollbackd::decide::{Event, Incident, NotifyKind, Outcome, Phase, TargetState};
use rollbackd::journal::{self, Entry, Journal, Record};
use rollbackd::notify::{record, Notifier};

fn dry_run_incident() -> Incident {
    Incident {
        dry_run: true,
        rollback_started: None,
        rollback_finished: None,
        verify_finished: None,
        verification: None,
        outcome: Some(Outcome::DryRun),
        ..common::rolled_back_incident()
    }
}

#[tokio::test]
async fn dry_run_is_journaled_recorded_mailed_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let incident = dry_run_incident();
    let at = incident.opened_at;

    let (mut j, recovery) = Journal::open(&state_dir).unwrap();
    assert_eq!(recovery.entries, 0);
    let mut state = TargetState::new("frontend");
    state.phase = Phase::Done {
        incident: Box::new(incident.clone()),
        until: at + chrono::Duration::minutes(10),
    };
    j.append(&Entry {
        seq: 0,
        at,
        record: Record::Step {
            target: "frontend".into(),
            event: Event::Evaluated {
                rules: Vec::new(),
                fleet: Default::default(),
            },
            from: "Watching".into(),
            to: "DryRun".into(),
            actions: Vec::new(),
            state: state.into(),
        },
    })
    .unwrap();

    let record_path = record::write(&state_dir.join("incidents"), &incident).unwrap();
    let md = std::fs::read_to_string(&record_path).unwrap();
    assert!(md.contains("| Dry-run | yes |"), "{md}");
    assert!(md.contains("errors = 0.75 > 0.2 (for 1m)"), "{md}");

    let notifier = Notifier::build(
        &NotifyConfig {
            email: Some(EmailConfig {
                from: "rollbackd <rollbackd@localhost>".into(),
                to: vec!["ops@localhost".into()],
                cc: Vec::new(),
                outbox_dir: state_dir.join("outbox"),
                smtp: None,
            }),
            ..NotifyConfig::default()
        },
        None,
    );
    let mail = notifier
        .notify(NotifyKind::WouldRollBack, &incident, None)
        .await
        .unwrap()
        .expect("email is configured");
    let eml = std::fs::read_to_string(&mail).unwrap();
    assert!(
        eml.contains("Subject: [rollbackd] frontend: WOULD ROLL BACK v2 -> v1\r\n"),
        "{eml}"
    );
    j.append(&Entry {
        seq: 0,
        at,
        record: Record::Notified {
            target: "frontend".into(),
            incident: Some(incident.id.clone()),
            kind: NotifyKind::WouldRollBack,
            path: Some(mail.clone()),
        },
    })
    .unwrap();
    drop(j);

    let (_, recovery) = Journal::open(&state_dir).unwrap();
    assert_eq!(recovery.entries, 2);
    assert!(recovery.problems.is_empty(), "{:?}", recovery.problems);
    assert_eq!(recovery.states["frontend"].phase.name(), "DryRun");
    let (entries, _) = journal::read_all(&state_dir.join("journal.jsonl")).unwrap();
    assert!(matches!(
        &entries[1].record,
        Record::Notified { path: Some(p), .. } if *p == mail
    ));

    let silent = Notifier::build(&NotifyConfig::default(), None);
    assert_eq!(
        silent
            .notify(NotifyKind::WouldRollBack, &incident, None)
            .await
            .unwrap(),
        None
    );
}
