//! The daemon in-process, under tokio's paused time: decisions that take
//! minutes or hours of wall time (confirmation timeouts, cooldowns, pauses
//! that end, rate limits, windows, restarts) run in milliseconds, with
//! realistic durations instead of shortened ones.
//!
//! Each test builds the real daemon ([`Daemon::build_with`] and a
//! [`TokioClock`]) on `127.0.0.1:0` with a symlink executor on a real
//! release tree, the real journal, outbox and records in a temp dir, and an
//! Alertmanager rule fed through the alert store (no network: under paused
//! time a socket wait would let the clock jump past every timeout). The
//! real-server tests (Prometheus, Alertmanager, SMTP, git, processes,
//! SIGKILL) stay in their own files.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Arc;

use rollbackd::daemon::{Clock, Daemon, Options, TargetHandle, TokioClock};
use rollbackd::decide::{Event, TargetState, Time};
use rollbackd::sources::alertmanager::AlertStore;
use tokio_util::sync::CancellationToken;

/// A unique alert name per target (each daemon has its own alert store;
/// unique names keep a mix-up visible).
fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One watched target: a release tree (current -> v1, v2 is the bad
/// release) and the alert that pages for it.
struct Target {
    name: String,
    dir: PathBuf,
    alert: String,
    clock: TokioClock,
    alerts: Arc<AlertStore>,
    handle: Option<TargetHandle>,
    repeater: Option<tokio::task::JoinHandle<()>>,
}

/// A daemon in this process on `127.0.0.1:0`.
struct Harness {
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    clock: TokioClock,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    config: String,
    targets: Vec<Target>,
}

/// `[[target]]` for `t`: one rule breached while its alert fires for
/// `rule_for`, the symlink executor, verification by the rules for 2
/// minutes.
fn target_block(t: &Target, extra: &str, rule_for: &str) -> String {
    format!(
        r#"
[[target]]
name = "{name}"
{extra}

  [[target.rule]]
  name = "paged"
  source = "alertmanager"
  match = {{ alertname = "{alert}" }}
  for = "{rule_for}"

  [target.rollback]
  kind = "symlink"
  current = "{dir}/current"
  releases = "{dir}/releases"

  [target.verify]
  within = "2m"
"#,
        name = t.name,
        alert = t.alert,
        dir = t.dir.display()
    )
}

impl Harness {
    /// One target, `web`.
    async fn start(daemon_extra: &str, target_extra: &str) -> Harness {
        Harness::start_many(&["web"], daemon_extra, target_extra).await
    }

    /// Targets `names`, each on its own release tree, every one with
    /// `target_extra`.
    async fn start_many(names: &[&str], daemon_extra: &str, target_extra: &str) -> Harness {
        Harness::start_many_for(names, daemon_extra, target_extra, "0s").await
    }

    /// [`Harness::start_many`] with the rule's `for` = `rule_for`. The
    /// blast-radius guard is off unless `daemon_extra` sets it.
    async fn start_many_for(
        names: &[&str],
        daemon_extra: &str,
        target_extra: &str,
        rule_for: &str,
    ) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let clock = TokioClock::new();
        let alerts = Arc::new(AlertStore::default());
        let targets: Vec<Target> = names
            .iter()
            .map(|name| {
                let dir = root.join(name);
                rollbackd::demo::create_releases(&dir).unwrap();
                Target {
                    name: name.to_string(),
                    dir,
                    alert: unique("Down"),
                    clock,
                    alerts: alerts.clone(),
                    handle: None,
                    repeater: None,
                }
            })
            .collect();
        let mut config = format!(
            r#"
[daemon]
state_dir = "{root}/state"
listen = "127.0.0.1:0"
poll_interval = "5s"
{guard}{daemon_extra}

[notify.email]
from = "rollbackd <rollbackd@test.invalid>"
to = ["oncall@example.com"]
outbox_dir = "{root}/state/outbox"
"#,
            root = root.display(),
            guard = if daemon_extra.contains("max_simultaneous_breaches") {
                ""
            } else {
                "max_simultaneous_breaches = 0\n"
            },
        );
        for t in &targets {
            config.push_str(&target_block(t, target_extra, rule_for));
        }
        let mut h = Harness::boot(Some(tmp), root, clock, config, targets).await;
        for i in 0..h.targets.len() {
            h.targets[i]
                .wait_for("version v1 to be seen", |s| {
                    s.version.as_deref() == Some("v1")
                })
                .await;
        }
        h
    }

    async fn boot(
        tmp: Option<tempfile::TempDir>,
        root: PathBuf,
        clock: TokioClock,
        text: String,
        mut targets: Vec<Target>,
    ) -> Harness {
        let config = rollbackd::config::load_str("decisions.toml", &text).expect("valid config");
        let options = Options {
            clock: Arc::new(clock),
            alerts: targets[0].alerts.clone(),
        };
        let daemon = Daemon::build_with(config, options).unwrap();
        let bound = daemon.bind().await.unwrap();
        assert!(bound.local_addr().ip().is_loopback());
        assert_ne!(bound.local_addr().port(), 0, "the bound port is known");
        let handle = bound.handle();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(bound.run(cancel.clone()));
        for t in &mut targets {
            t.handle = loop {
                if let Some(h) = handle.target(&t.name).await {
                    break Some(h);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
        }
        Harness {
            tmp,
            root,
            clock,
            cancel,
            task,
            config: text,
            targets,
        }
    }

    /// The first (or only) target.
    fn web(&mut self) -> &mut Target {
        &mut self.targets[0]
    }

    fn target(&mut self, name: &str) -> &mut Target {
        self.targets
            .iter_mut()
            .find(|t| t.name == name)
            .expect("a configured target")
    }

    /// Stop the daemon (gracefully) and start a new one on the same
    /// state_dir and config; alerts keep firing across it.
    async fn restart(mut self) -> Harness {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
        let tmp = self.tmp.take();
        let targets = std::mem::take(&mut self.targets);
        Harness::boot(
            tmp,
            self.root.clone(),
            self.clock,
            self.config.clone(),
            targets,
        )
        .await
    }

    fn now(&self) -> Time {
        self.clock.now()
    }

    /// The mails in the outbox, oldest first: (kind, text with the
    /// quoted-printable soft breaks and escapes undone).
    fn mails(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(self.root.join("state/outbox")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|f| {
                let text = std::fs::read_to_string(&f).ok()?;
                let kind = text
                    .lines()
                    .find_map(|l| l.strip_prefix("X-Rollbackd-Kind: "))?
                    .to_string();
                Some((kind, common::decode_quoted_printable(&text)))
            })
            .collect()
    }

    /// The text of the mails of `kind`.
    fn mails_of(&self, kind: &str) -> Vec<String> {
        self.mails()
            .into_iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, m)| m)
            .collect()
    }

    /// Execute actions journaled for `target`.
    fn executions(&self, target: &str) -> usize {
        common::journal(&self.root.join("state"))
            .iter()
            .filter(|e| e["target"] == target)
            .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["action"] == "execute")
            .count()
    }

    /// Let simulated time pass (the workers poll meanwhile).
    async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    async fn stop(mut self) {
        for t in &mut self.targets {
            if let Some(r) = t.repeater.take() {
                r.abort();
            }
        }
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }
}

impl Target {
    fn handle(&self) -> &TargetHandle {
        self.handle.as_ref().expect("running")
    }

    /// Page: the alert fires and, as Alertmanager does, is re-sent every
    /// minute until it is resolved (the store forgets an alert that is not
    /// re-sent within its resolve_timeout).
    fn fire(&mut self) {
        let starts = self.clock.now();
        post_alert(&self.alerts, &self.clock, &self.alert, "firing", starts);
        let (clock, alert, alerts) = (self.clock, self.alert.clone(), self.alerts.clone());
        if let Some(r) = self.repeater.take() {
            r.abort();
        }
        self.repeater = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                post_alert(&alerts, &clock, &alert, "firing", starts);
            }
        }));
    }

    fn resolve(&mut self) {
        if let Some(r) = self.repeater.take() {
            r.abort();
        }
        post_alert(
            &self.alerts,
            &self.clock,
            &self.alert,
            "resolved",
            self.clock.now(),
        );
    }

    fn state(&self) -> TargetState {
        self.handle().state.borrow().clone()
    }

    fn phase(&self) -> &'static str {
        self.handle().state.borrow().phase.name()
    }

    /// Wait (in simulated time, up to a day) for `f` to hold.
    async fn wait_for(&mut self, what: &str, f: impl Fn(&TargetState) -> bool) -> TargetState {
        let name = self.name.clone();
        let rx = &mut self.handle.as_mut().expect("running").state;
        let waited = tokio::time::timeout(Duration::from_secs(86_400), async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if f(&s) {
                        return s.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    panic!("{name}: the worker stopped while waiting for {what}");
                }
            }
        })
        .await;
        match waited {
            Ok(s) => s,
            Err(_) => panic!(
                "{name}: {what}: not within a day; state: {:#?}",
                self.state()
            ),
        }
    }

    async fn wait_phase(&mut self, phase: &str) -> TargetState {
        self.wait_for(&format!("phase {phase}"), |s| s.phase.name() == phase)
            .await
    }

    /// Deploy `version` and wait until the daemon has seen it.
    async fn deploy(&mut self, version: &str) {
        rollbackd::demo::switch_release(&self.dir, version).unwrap();
        self.wait_for(&format!("version {version}"), |s| {
            s.version.as_deref() == Some(version)
        })
        .await;
    }

    /// Deploy the bad release and page.
    async fn bad_release(&mut self) {
        self.deploy("v2").await;
        self.fire();
    }

    /// An API command (what `approve`, `reject`, `pause`, `trigger` send).
    async fn command(&self, event: Event) -> Result<TargetState, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.handle()
            .commands
            .send(rollbackd::daemon::Command { event, reply })
            .await
            .unwrap();
        answer.await.unwrap().map_err(|e| e.to_string())
    }

    /// The release `current` points at.
    fn live(&self) -> String {
        let link = std::fs::read_link(self.dir.join("current")).unwrap();
        link.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// The open (or last) incident's id.
    fn incident_id(&self) -> String {
        self.state().incident().expect("an incident").id.clone()
    }
}

/// What Alertmanager's webhook posts for one alert.
fn post_alert(alerts: &AlertStore, clock: &TokioClock, alert: &str, status: &str, starts: Time) {
    let now = clock.now();
    let ends = if status == "firing" {
        "0001-01-01T00:00:00Z".to_string()
    } else {
        now.to_rfc3339()
    };
    let body = format!(
        r#"{{"version":"4","status":"{status}","receiver":"r","groupKey":"g","alerts":[{{"status":"{status}","labels":{{"alertname":"{alert}"}},"annotations":{{}},"startsAt":"{starts}","endsAt":"{ends}","fingerprint":"{alert}"}}]}}"#,
        starts = starts.to_rfc3339()
    );
    alerts
        .ingest(body.as_bytes(), now)
        .expect("the alert is accepted");
}

#[tokio::test(start_paused = true)]
async fn confirmation_timeout_of_15_minutes_rolls_back_and_verifies() {
    let mut h = Harness::start(
        "",
        "confirm = \"required\"\nconfirm_timeout = \"15m\"\non_confirm_timeout = \"rollback\"",
    )
    .await;
    h.web().bad_release().await;
    h.web().wait_phase("AwaitingConfirmation").await;
    let asked = h.now();
    assert_eq!(h.web().live(), "v2");
    h.web().wait_phase("Verifying").await;
    let waited = h.now() - asked;
    assert!(
        waited >= chrono::Duration::minutes(15) && waited < chrono::Duration::minutes(16),
        "acted after {waited}"
    );
    assert_eq!(h.web().live(), "v1");
    // The page clears: verified.
    h.web().resolve();
    let done = h.web().wait_phase("RolledBack").await;
    let timeline = serde_json::to_string(&done.incident().unwrap().timeline).unwrap();
    assert!(
        timeline.contains("on_confirm_timeout = rollback"),
        "{timeline}"
    );
    assert_eq!(h.executions("web"), 1);
    let kinds: Vec<String> = h.mails().into_iter().map(|(k, _)| k).collect();
    assert!(
        kinds.contains(&"awaiting_confirmation".to_string()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"rolled_back".to_string()), "{kinds:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reject_suppresses_for_the_cooldown_and_a_breach_after_it_asks_again() {
    let mut h = Harness::start(
        "",
        "cooldown = \"30m\"\nconfirm = \"required\"\nconfirm_timeout = \"2h\"",
    )
    .await;
    h.web().bad_release().await;
    h.web().wait_phase("AwaitingConfirmation").await;
    let first = h.web().incident_id();
    let s = h
        .web()
        .command(Event::Reject {
            incident: first.clone(),
            by: "alice".into(),
            reason: "known issue, fix underway".into(),
        })
        .await
        .expect("reject is accepted while waiting");
    assert_eq!(s.phase.name(), "Suppressed");
    let rejected_at = h.now();
    // A second answer to the same incident is refused, with the reason.
    let again = h
        .web()
        .command(Event::Approve {
            incident: first.clone(),
            by: "bob".into(),
        })
        .await
        .expect_err("the incident no longer waits");
    assert!(again.contains("not awaiting confirmation"), "{again}");
    let mail = h.mails_of("rejected").pop().expect("a rejection mail");
    assert!(mail.contains("known issue, fix underway"), "{mail}");
    // The page goes on for the whole cooldown: nothing is executed.
    h.pass(Duration::from_secs(29 * 60)).await;
    assert_eq!(h.web().phase(), "Suppressed");
    assert_eq!(h.web().live(), "v2");
    assert_eq!(h.executions("web"), 0);
    // After it, the breach that is still there opens a new incident, and
    // asks again.
    let s = h
        .web()
        .wait_for("a new incident", |s| {
            s.incident().is_some_and(|i| i.id != first)
        })
        .await;
    assert_eq!(s.phase.name(), "AwaitingConfirmation");
    assert!(h.now() - rejected_at >= chrono::Duration::minutes(30));
    assert_eq!(h.executions("web"), 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn signals_recovering_while_waiting_resolve_the_incident_without_action() {
    let mut h = Harness::start("", "confirm = \"required\"\nconfirm_timeout = \"1h\"").await;
    h.web().bad_release().await;
    h.web().wait_phase("AwaitingConfirmation").await;
    h.pass(Duration::from_secs(10 * 60)).await;
    // Someone fixes it by hand before anybody answers.
    h.web().deploy("v1").await;
    h.web().resolve();
    let s = h.web().wait_phase("Resolved").await;
    let v = serde_json::to_string(&s.incident().unwrap().verification).unwrap();
    assert!(v.contains("signals recovered"), "{v}");
    let mail = h.mails_of("resolved").pop().expect("a resolved mail");
    assert!(mail.contains("no rollback was run"), "{mail}");
    assert_eq!(h.executions("web"), 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_breach_during_the_cooldown_waits_for_its_end() {
    let mut h = Harness::start("", "cooldown = \"30m\"").await;
    h.web().bad_release().await;
    h.web().wait_phase("Verifying").await;
    h.web().resolve();
    h.web().wait_phase("RolledBack").await;
    let done = h.now();
    assert_eq!((h.web().live(), h.executions("web")), ("v1".into(), 1));
    // v1 misbehaves too, right away: the cooldown holds every action.
    h.web().fire();
    h.pass(Duration::from_secs(25 * 60)).await;
    assert_eq!(h.web().phase(), "RolledBack");
    assert_eq!(h.executions("web"), 1);
    // At its end the breach is an incident of its own.
    let first = h.web().state().incident().unwrap().id.clone();
    h.web()
        .wait_for("a new incident", |s| {
            s.incident().is_some_and(|i| i.id != first)
        })
        .await;
    assert!(
        h.now() - done >= chrono::Duration::minutes(30),
        "{}",
        h.now() - done
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn per_target_rate_limit_escalates_within_the_hour_and_acts_after_it() {
    let mut h = Harness::start("", "cooldown = \"1m\"\nmax_rollbacks_per_hour = 1").await;
    for v in ["v3", "v4"] {
        let release = h.web().dir.join("releases").join(v);
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(release.join("release.txt"), "broken\n").unwrap();
    }
    h.web().bad_release().await;
    h.web().wait_phase("Verifying").await;
    h.web().resolve();
    h.web().wait_phase("RolledBack").await;
    let first_rollback = h.now();
    h.pass(Duration::from_secs(5 * 60)).await;
    // A new bad release within the hour: the limit escalates it.
    h.web().deploy("v3").await;
    h.web().fire();
    let s = h.web().wait_phase("Escalated").await;
    let error = s.incident().unwrap().error.clone().unwrap_or_default();
    assert!(error.contains("max_rollbacks_per_hour"), "{error}");
    assert_eq!(h.web().live(), "v3");
    assert_eq!(h.executions("web"), 1);
    assert!(!h.mails_of("escalated").is_empty());
    // An hour after the first rollback the next bad release is rolled back.
    h.web().resolve();
    let wait = chrono::Duration::minutes(61) - (h.now() - first_rollback);
    h.pass(wait.to_std().unwrap()).await;
    h.web().deploy("v4").await;
    h.web().fire();
    h.web().wait_phase("Verifying").await;
    assert_eq!(h.executions("web"), 2);
    assert_ne!(h.web().live(), "v4");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_two_hour_pause_escalates_breaches_ends_by_itself_and_a_breach_then_acts() {
    let mut h = Harness::start("", "").await;
    let s = h
        .web()
        .command(Event::Pause {
            by: "alice".into(),
            reason: Some("db maintenance".into()),
            duration: Some(Duration::from_secs(2 * 3600)),
        })
        .await
        .unwrap();
    let paused = s.paused.clone().expect("paused");
    assert_eq!(paused.reason.as_deref(), Some("db maintenance"));
    assert_eq!(
        paused.until.expect("ends") - paused.at,
        chrono::Duration::hours(2)
    );
    // A breach while paused escalates, naming the pause; nothing runs.
    h.web().bad_release().await;
    let s = h.web().wait_phase("Escalated").await;
    let error = s.incident().unwrap().error.clone().unwrap_or_default();
    assert!(error.contains("paused"), "{error}");
    assert_eq!(h.web().live(), "v2");
    h.web().resolve();
    h.web().deploy("v1").await;
    // The pause ends by itself at its end, journaled, with a notification.
    h.web()
        .wait_for("the pause to end", |s| s.paused.is_none())
        .await;
    assert!(h.now() >= paused.until.unwrap());
    let mail = h.mails_of("pause_ended").pop().expect("a PAUSE ENDED mail");
    assert!(mail.contains("(db maintenance) ended at"), "{mail}");
    let journaled = common::journal(&h.root.join("state")).iter().any(|e| {
        e["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["kind"] == "pause_ended"))
    });
    assert!(journaled, "the end of the pause is journaled");
    // A breach after that acts.
    h.web().bad_release().await;
    h.web().wait_phase("Verifying").await;
    assert_eq!(h.web().live(), "v1");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn only_within_escalates_a_release_deployed_two_hours_ago() {
    let mut h = Harness::start("", "only_within = \"1h\"").await;
    h.web().deploy("v2").await;
    h.pass(Duration::from_secs(2 * 3600)).await;
    h.web().fire();
    let s = h.web().wait_phase("Escalated").await;
    let error = s.incident().unwrap().error.clone().unwrap_or_default();
    assert!(
        error.contains("only_within = 1h: v2 was deployed"),
        "{error}"
    );
    let mail = h.mails_of("escalated").pop().expect("an ESCALATED mail");
    assert!(mail.contains("only_within = 1h: v2 was deployed"), "{mail}");
    assert_eq!(h.web().live(), "v2", "nothing was rolled back");
    assert_eq!(h.executions("web"), 0);
    h.stop().await;
}

/// A release window around now (UTC wall clock) lasting `hours`.
fn window_now(hours: u32) -> String {
    use chrono::Timelike;
    let now = chrono::Utc::now();
    let start = now - chrono::Duration::minutes(5);
    let end = now + chrono::Duration::hours(i64::from(hours));
    format!(
        "[[window]]\nname = \"friday release\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\nstart = \"{:02}:{:02}\"\nend = \"{:02}:{:02}\"\ntimezone = \"UTC\"\n",
        start.hour(),
        start.minute(),
        end.hour(),
        end.minute()
    )
}

#[tokio::test(start_paused = true)]
async fn inside_a_release_window_a_breach_is_a_dry_run_and_after_it_acts() {
    // The window is config, not [daemon]: put it after the daemon keys.
    let mut h = Harness::start(&format!("\n{}", window_now(2)), "cooldown = \"10m\"").await;
    h.web().bad_release().await;
    let s = h.web().wait_phase("DryRun").await;
    let inc = s.incident().unwrap();
    let text = serde_json::to_string(&inc.timeline).unwrap();
    assert!(text.contains("friday release"), "{text}");
    assert_eq!(h.web().live(), "v2");
    assert_eq!(h.executions("web"), 0);
    assert!(!h.mails_of("would_roll_back").is_empty(), "{:?}", h.mails());
    // After the window the breach (still paging) is rolled back.
    h.web().wait_phase("Verifying").await;
    assert_eq!(h.web().live(), "v1");
    assert_eq!(h.executions("web"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_while_awaiting_confirmation_keeps_the_id_and_the_deadline() {
    let mut h = Harness::start(
        "",
        "confirm = \"required\"\nconfirm_timeout = \"20m\"\non_confirm_timeout = \"rollback\"",
    )
    .await;
    h.web().bad_release().await;
    let s = h.web().wait_phase("AwaitingConfirmation").await;
    let (id, deadline) = match &s.phase {
        rollbackd::decide::Phase::AwaitingConfirmation { incident, deadline } => {
            (incident.id.clone(), *deadline)
        }
        _ => unreachable!(),
    };
    h.pass(Duration::from_secs(5 * 60)).await;
    let mut h = h.restart().await;
    let s = h.web().state();
    match &s.phase {
        rollbackd::decide::Phase::AwaitingConfirmation {
            incident,
            deadline: d,
        } => {
            assert_eq!((&incident.id, *d), (&id, deadline));
        }
        other => panic!("after the restart: {other:?}"),
    }
    // The timeout acts at the original deadline, not 20 minutes later.
    h.web().wait_phase("Verifying").await;
    assert!(h.now() >= deadline && h.now() - deadline < chrono::Duration::minutes(1));
    assert_eq!(h.executions("web"), 1);
    assert_eq!(h.web().incident_id(), id);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn global_cap_escalates_the_second_target_survives_a_restart_and_frees_after_an_hour() {
    let mut h = Harness::start_many(
        &["a", "b"],
        "max_rollbacks_per_hour = 1",
        "cooldown = \"2m\"",
    )
    .await;
    // The first breach rolls back: the cap allows one.
    h.target("a").bad_release().await;
    h.target("a").wait_phase("Verifying").await;
    let first = h.now();
    assert_eq!(h.target("a").live(), "v1");
    // The second target's breach escalates naming the global limit.
    h.target("b").bad_release().await;
    let s = h.target("b").wait_phase("Escalated").await;
    let refused = s.incident().unwrap().id.clone();
    let error = s.incident().unwrap().error.clone().unwrap_or_default();
    assert!(error.contains("max_rollbacks_per_hour = 1"), "{error}");
    assert!(s.rollbacks.is_empty(), "a refused rollback is not counted");
    assert_eq!(h.target("b").live(), "v2", "nothing ran on b");
    let mail = h
        .mails_of("escalated")
        .into_iter()
        .find(|m| m.contains(&refused))
        .expect("the escalation mail for b");
    assert!(mail.contains("global rate limit"), "{mail}");
    assert_eq!((h.executions("a"), h.executions("b")), (1, 0));
    // The journal holds the refusal on the step that escalated.
    let journaled = common::journal(&h.root.join("state")).iter().any(|e| {
        e["target"] == "b"
            && e["actions"].as_array().is_some_and(|a| {
                a.iter().any(|a| {
                    a["action"] == "global_limit_refused"
                        && a["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains("global rate limit"))
                })
            })
    });
    assert!(
        journaled,
        "no global_limit_refused action for b in the journal"
    );
    // After a restart the cap still holds: a's rollback of the last hour
    // is counted from the journal, so b's next breach (after its
    // cooldown) escalates again.
    let mut h = h.restart().await;
    let s = h
        .target("b")
        .wait_for("a new incident escalated by the global limit", |s| {
            s.phase.name() == "Escalated" && s.incident().is_some_and(|i| i.id != refused)
        })
        .await;
    assert!(s.rollbacks.is_empty());
    assert_eq!(h.target("b").live(), "v2");
    assert_eq!(h.executions("b"), 0);
    // An hour after a's rollback, b's breach is rolled back.
    h.target("b")
        .wait_for("b rolled back", |s| s.phase.name() == "Verifying")
        .await;
    assert!(h.now() - first >= chrono::Duration::hours(1));
    assert_eq!(h.target("b").live(), "v1");
    assert_eq!(h.executions("b"), 1);
    h.stop().await;
}

/// Issue 18 item 10: four targets, the guard `{ targets = 3, fraction =
/// 0.5, within = "4s" }`, `for = "1s"`, failures beginning 1.2 s apart
/// (a shared cause). Each target that rolled back recovers at once (its
/// alert resolves), so its breach is over when the next peers trigger.
/// `settle` is `[daemon] settle`, or nothing.
async fn four_failures_1200ms_apart(settle: &str) -> Harness {
    let daemon = format!(
        "max_simultaneous_breaches = {{ targets = 3, fraction = 0.5, within = \"4s\" }}\n{settle}"
    );
    let mut h = Harness::start_many_for(&["t0", "t1", "t2", "t3"], &daemon, "", "1s").await;
    for t in &mut h.targets {
        t.deploy("v2").await;
    }
    for i in 0..4 {
        h.targets[i].fire();
        h.pass(Duration::from_millis(1200)).await;
        // A target that acted recovers: its breach ends.
        for t in &mut h.targets {
            if t.repeater.is_some() && t.live() == "v1" {
                t.resolve();
            }
        }
    }
    // Long enough for every hold, rollback and verification to end.
    h.pass(Duration::from_secs(30)).await;
    h
}

#[tokio::test(start_paused = true)]
async fn the_blast_radius_guard_counts_breach_starts_of_targets_that_already_acted() {
    let h = four_failures_1200ms_apart("").await;
    let executions: Vec<usize> = h.targets.iter().map(|t| h.executions(&t.name)).collect();
    // t0 and t1 acted before a third breach began: nothing could stop
    // them. t2 and t3 count t0's and t1's starts although both have
    // rolled back and recovered since: they escalate.
    assert_eq!(executions, vec![1, 1, 0, 0]);
    for t in &h.targets[2..] {
        let s = t.state();
        assert_eq!(s.phase.name(), "Escalated", "{}", t.name);
        let err = s.incident().unwrap().error.clone().unwrap();
        assert!(err.starts_with("blast radius: breaches began on"), "{err}");
    }
    // t0 and t1 are escalated after the fact, saying they were already
    // rolled back: a rollback cannot be undone.
    for t in &h.targets[..2] {
        let s = t.state();
        let inc = s.incident().unwrap();
        let why = inc
            .blast_radius_after_acting
            .clone()
            .unwrap_or_else(|| panic!("{}: not escalated after acting: {inc:#?}", t.name));
        assert!(why.contains("already rolled back"), "{why}");
        assert!(why.contains("cannot be undone"), "{why}");
        assert_eq!(
            s.phase.name(),
            "RolledBack",
            "{}: the outcome stands",
            t.name
        );
    }
    let mails = h.mails_of("blast_radius");
    for name in ["t0", "t1"] {
        let needle = format!("had already rolled {name} back");
        assert!(
            mails.iter().any(|m| m.contains(&needle)),
            "no mail says {needle:?}: {mails:#?}"
        );
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn with_settle_the_guard_sees_its_peers_and_none_rolls_back() {
    let h = four_failures_1200ms_apart("settle = \"3s\"").await;
    let executions: Vec<usize> = h.targets.iter().map(|t| h.executions(&t.name)).collect();
    assert_eq!(executions, vec![0, 0, 0, 0]);
    for t in &h.targets {
        let s = t.state();
        assert_eq!(s.phase.name(), "Escalated", "{}", t.name);
        let err = s.incident().unwrap().error.clone().unwrap();
        assert!(err.starts_with("blast radius: breaches began on"), "{err}");
        assert_eq!(t.live(), "v2", "{}", t.name);
    }
    h.stop().await;
}
