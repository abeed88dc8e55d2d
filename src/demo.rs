//! `rollbackd demo`: a self-contained demonstration on loopback and a temp
//! dir. A demo web service runs from `current -> releases/v1`; the demo
//! deploys `v2`, which answers 503 slowly; the real daemon (same config
//! parser, same loop, `config/demo.toml` with compressed durations) detects
//! the breach, rolls back through the symlink executor, verifies, and writes
//! the email to the outbox. The timeline is printed as it happens.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::daemon::{Daemon, Observation};
use crate::decide::{Event, NotifyKind, Outcome, Phase, TargetState};
use crate::rules::RuleStatus;

/// The demo config, embedded in the binary.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// The demo gives up after this long.
pub const DEMO_DEADLINE: Duration = Duration::from_secs(80);

/// The release a demo service directory runs: what `releases/X/release.txt` says.
async fn health(State(dir): State<PathBuf>) -> (StatusCode, String) {
    let current = dir.join("current");
    let release = std::fs::read_link(&current)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "none".into());
    let behaviour = std::fs::read_to_string(current.join("release.txt")).unwrap_or_default();
    if behaviour.trim() == "healthy" {
        (StatusCode::OK, format!("ok {release}\n"))
    } else {
        // The bad release: slow and failing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{release}: database pool exhausted\n"),
        )
    }
}

/// Create `dir/releases/{v1 healthy, v2 broken}` with `current -> v1`.
pub fn create_releases(dir: &Path) -> anyhow::Result<()> {
    for (version, behaviour) in [("v1", "healthy"), ("v2", "broken")] {
        let release = dir.join("releases").join(version);
        std::fs::create_dir_all(&release)
            .with_context(|| format!("failed to create {}", release.display()))?;
        std::fs::write(release.join("release.txt"), format!("{behaviour}\n"))?;
    }
    switch_release(dir, "v1")
}

/// Point `dir/current` at `releases/version` atomically (a deploy).
pub fn switch_release(dir: &Path, version: &str) -> anyhow::Result<()> {
    let tmp = dir.join("current.deploy-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(dir.join("releases").join(version), &tmp)
        .with_context(|| format!("failed to create {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join("current")).context("failed to switch current")?;
    Ok(())
}

/// Serve the demo web service for the release tree in `dir` on 127.0.0.1.
/// `GET /api/health` answers 200 for a healthy release and a slow 503 for
/// the broken one. Returns the address; the server stops with `cancel`.
pub async fn serve(dir: PathBuf, cancel: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("failed to bind the demo service to 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/api/health", get(health))
        .with_state(dir);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "demo service failed");
        }
    });
    Ok(addr)
}

/// Fill the demo config template.
pub fn demo_config(dir: &Path, port: u16) -> String {
    let dir = dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    DEMO_CONFIG
        .replace("{{DIR}}", &dir)
        .replace("{{PORT}}", &port.to_string())
}

struct Timeline {
    start: DateTime<Utc>,
    out: std::io::Stdout,
}

impl Timeline {
    fn line(&mut self, at: DateTime<Utc>, text: &str) {
        let offset = (at - self.start).num_milliseconds() as f64 / 1000.0;
        let _ = writeln!(
            self.out,
            "{}  +{:>5.1}s  {}",
            at.format("%H:%M:%S%.3f"),
            offset,
            text
        );
    }
}

/// What the demo produced.
#[derive(Debug)]
pub struct DemoResult {
    /// The rollback was executed and verified.
    pub verified: bool,
    /// The demo's directory (kept for inspection).
    pub dir: PathBuf,
    /// Mails written to the outbox.
    pub mails: Vec<PathBuf>,
    /// The incident record.
    pub record: Option<PathBuf>,
}

/// What the demo follows while the daemon runs, from its observations.
struct Progress {
    /// Where the timeline is printed.
    tl: Timeline,
    /// `v2` is deployed.
    deployed: bool,
    /// Every rule was seen ok on `v1`: time to deploy `v2`.
    healthy_seen: bool,
    /// How the incident ended, once it did.
    outcome: Option<Outcome>,
    /// The mails and the record seen so far.
    result: DemoResult,
}

impl Progress {
    /// Print one observation; `true` once the mail that ends the incident
    /// is written (the demo is over).
    fn observe(&mut self, observed: Observation) -> bool {
        match observed {
            Observation::Step {
                at,
                event,
                from,
                to,
                state,
                ..
            } => self.step(at, &event, &from, &to, &state),
            Observation::Mail { at, path, kind, .. } => {
                self.tl.line(
                    at,
                    &format!("mail ({kind:?}) written to {}", path.display()),
                );
                self.result.mails.push(path);
                if matches!(
                    kind,
                    NotifyKind::RolledBack
                        | NotifyKind::RollbackFailed
                        | NotifyKind::DidNotHelp
                        | NotifyKind::Escalated
                        | NotifyKind::WouldRollBack
                ) {
                    return true;
                }
            }
            Observation::Record { path, .. } => self.result.record = Some(path),
        }
        false
    }

    /// A decision step: the version seen, the rules that are not ok (all of
    /// them on a phase change), the phase change and, once the rollback
    /// ran, its steps.
    fn step(
        &mut self,
        at: DateTime<Utc>,
        event: &Event,
        from: &str,
        to: &str,
        state: &TargetState,
    ) {
        let tl = &mut self.tl;
        match event {
            Event::VersionObserved { version } => match &state.previous_version {
                Some(prev) => tl.line(at, &format!("version change seen: {prev} -> {version}")),
                None => tl.line(at, &format!("live version: {version}")),
            },
            Event::Evaluated { rules, .. } => {
                for r in rules {
                    if !matches!(r.status, RuleStatus::Ok) || from != to {
                        tl.line(at, &format!("rule {}", r.explain()));
                    }
                }
                if !self.deployed && rules.iter().all(|r| r.status == RuleStatus::Ok) {
                    self.healthy_seen = true;
                }
            }
            _ => {}
        }
        if from == to {
            return;
        }
        let why = state.last_note();
        tl.line(at, &format!("{from} -> {to}: {why}"));
        if let Phase::Done { incident, .. } = &state.phase {
            self.outcome = incident.outcome;
        }
        if to == "Verifying" {
            if let Some(inc) = state.incident() {
                for s in &inc.steps {
                    tl.line(
                        at,
                        &format!(
                            "  step {} -> {} in {}",
                            s.argv.join(" "),
                            if s.ok { "ok" } else { "failed" },
                            crate::util::fmt_duration(s.duration)
                        ),
                    );
                }
            }
        }
    }
}

/// `dir`, created, or a fresh temp dir (kept) when `None`.
fn demo_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("rollbackd-demo-")
            .tempdir()
            .context("failed to create a temp dir")?
            .keep(),
    })
}

/// Run the demo in `dir` (a fresh temp dir when `None`), printing the
/// timeline to stdout.
pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<DemoResult> {
    let dir = demo_dir(dir)?;
    let cancel = CancellationToken::new();
    create_releases(&dir)?;
    let addr = serve(dir.clone(), cancel.clone()).await?;
    let config_text = demo_config(&dir, addr.port());
    let config = crate::config::load_str("config/demo.toml (embedded)", &config_text)
        .map_err(|e| anyhow::anyhow!("the embedded demo config is invalid:\n{e}"))?;
    let daemon = Daemon::build(config)?;
    let mut events = daemon.subscribe();
    let state_dir = daemon.state_dir().to_path_buf();

    let tl = Timeline {
        start: Utc::now(),
        out: std::io::stdout(),
    };
    println!("rollbackd demo in {}", dir.display());
    println!(
        "demo service on http://{addr}/api/health, running {}/current -> releases/v1\n",
        dir.display()
    );
    let daemon_task = tokio::spawn(daemon.run(cancel.clone()));

    let mut p = Progress {
        tl,
        deployed: false,
        healthy_seen: false,
        outcome: None,
        result: DemoResult {
            verified: false,
            dir: dir.clone(),
            mails: Vec::new(),
            record: None,
        },
    };
    let deadline = tokio::time::Instant::now() + DEMO_DEADLINE;
    let mut deploy_at = tokio::time::Instant::now() + Duration::from_secs(3600);
    loop {
        let observed = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                p.tl.line(Utc::now(), "demo deadline reached without a verified rollback");
                break;
            }
            _ = tokio::time::sleep_until(deploy_at), if !p.deployed => {
                p.deployed = true;
                switch_release(&dir, "v2")?;
                p.tl.line(Utc::now(), "deploy: current -> releases/v2 (this release answers 503, slowly)");
                continue;
            }
            o = events.recv() => o,
        };
        let observed = match observed {
            Ok(o) => o,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        if p.observe(observed) {
            break;
        }
        // Deploy the bad release once v1 has been seen healthy for a moment.
        if !p.deployed
            && p.healthy_seen
            && deploy_at > tokio::time::Instant::now() + Duration::from_secs(2)
        {
            p.tl.line(Utc::now(), "v1 is healthy; deploying v2 in 1.5 s");
            deploy_at = tokio::time::Instant::now() + Duration::from_millis(1500);
        }
    }
    cancel.cancel();
    daemon_task
        .await
        .context("daemon task panicked")?
        .context("daemon failed")?;

    let live = crate::execute::symlink::live_release(&dir.join("current"))
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    let (outcome, mut result) = (p.outcome, p.result);
    result.verified = outcome == Some(Outcome::RolledBack) && live == "v1";
    print_result(&result, outcome, &live, &state_dir);
    Ok(result)
}

/// The demo's summary: the outcome, the live release, the record, the
/// mails and the journal.
fn print_result(result: &DemoResult, outcome: Option<Outcome>, live: &str, state_dir: &Path) {
    println!();
    println!(
        "result:   {}",
        match outcome {
            Some(o) => o.label(),
            None => "NO INCIDENT",
        }
    );
    println!(
        "current:  {} -> releases/{live}",
        result.dir.join("current").display()
    );
    if let Some(r) = &result.record {
        println!("record:   {}", r.display());
    }
    for m in &result.mails {
        println!("mail:     {}", m.display());
    }
    println!("journal:  {}", state_dir.join("journal.jsonl").display());
}
