//! `rollbackd drill TARGET`: a rehearsal of a target's rollback, without a
//! daemon. In dry-run (the default) it prints each step's argv after
//! substitution, checks that each program exists and is executable, runs the
//! executor's read-only checks (tag exists, releases exist, kubectl reaches
//! the cluster, the container exists, the standby is ready) and prints a
//! verdict. With `--live` it runs the plan for real (against a staging
//! target), checks the verify URL within `verify.within`, and runs the
//! `after` steps once it passed.
//!
//! Every drill is appended to `state_dir/drills.jsonl` (one JSON line,
//! fsync'd) with its timing and result; `rollbackd drill --history` prints
//! that rehearsal record.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{StepReport, Vars};
use crate::config::{Config, ExecutorKind, TargetConfig};
use crate::run::plan::{subst, Budget, Runner};
use crate::util::display_argv;
use crate::util::fmt_duration;

/// The rehearsal log, next to the journal.
pub const DRILLS_FILE: &str = "drills.jsonl";

/// How long reading the live version may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// One drill as journaled in `drills.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// When it started.
    pub at: DateTime<Utc>,
    /// Target name.
    pub target: String,
    /// `dry-run` or `live`.
    pub mode: String,
    /// How long the whole drill took.
    #[serde(with = "crate::util::serde_duration")]
    pub duration: Duration,
    /// Whether the verdict was good (dry-run: ready; live: rolled back and verified).
    pub success: bool,
    /// The version live at the start, as found.
    #[serde(default)]
    pub from_version: Option<String>,
    /// The version gone (or that would be gone) to.
    #[serde(default)]
    pub to_version: Option<String>,
    /// The verdict line.
    pub verdict: String,
}

/// What a drill printed and recorded.
#[derive(Debug, Clone)]
pub struct Drill {
    /// The report for the terminal.
    pub text: String,
    /// The line appended to `drills.jsonl`.
    pub record: DrillRecord,
}

/// Options of one drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Run the plan for real.
    pub live: bool,
    /// The version to go back to, overriding what the journal knows.
    pub to_version: Option<String>,
}

/// Run a drill of `target` and journal it.
pub async fn run(config: &Config, target: &str, options: &DrillOptions) -> anyhow::Result<Drill> {
    let t = config
        .targets
        .iter()
        .find(|t| t.name == target)
        .with_context(|| {
            let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
            format!("no target named {target:?} (targets: {})", names.join(", "))
        })?;
    let at = Utc::now();
    let started = Instant::now();
    let mut out = String::new();
    let mode = if options.live { "live" } else { "dry-run" };
    let incident = format!("drill-{}-{}", t.name, at.format("%Y%m%dT%H%M%SZ"));
    line(
        &mut out,
        format!(
            "drill {} ({mode}), kind {}, plan timeout {}{}",
            t.name,
            t.rollback.kind.name(),
            fmt_duration(t.rollback.timeout),
            t.rollback
                .step_timeout
                .map(|s| format!(", step timeout {}", fmt_duration(s)))
                .unwrap_or_default()
        ),
    );

    let vars = versions(config, t, &incident, options, &mut out).await;
    let (success, verdict, from, to) = if options.live {
        live(t, &vars, &mut out).await
    } else {
        dry_run(t, &vars, &mut out).await
    };
    let duration = started.elapsed();
    line(
        &mut out,
        format!("verdict: {verdict} ({})", fmt_duration(duration)),
    );
    let record = DrillRecord {
        at,
        target: t.name.clone(),
        mode: mode.to_string(),
        duration,
        success,
        from_version: from,
        to_version: to,
        verdict,
    };
    append(&config.daemon.state_dir, &record)?;
    Ok(Drill { text: out, record })
}

fn line(out: &mut String, text: impl AsRef<str>) {
    out.push_str(text.as_ref());
    out.push('\n');
}

/// The live version through the target's configured source (the same
/// reader the daemon uses).
async fn live_version(config: &Config, t: &TargetConfig) -> Result<Option<String>, String> {
    let server = match &t.version {
        Some(crate::config::VersionSource::Query { server, .. }) => server.as_deref(),
        _ => None,
    };
    let prometheus = match config.prometheus_server(server) {
        Some(p) => {
            let name = server.unwrap_or(crate::config::DEFAULT_PROMETHEUS);
            Some(
                crate::sources::prometheus::Prometheus::build_named(name, p)
                    .map_err(|e| format!("{e:#}"))?,
            )
        }
        None => None,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(VERSION_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    crate::version::VersionReader::build(t.version.clone(), client, prometheus)
        .read()
        .await
}

/// Versions for the templates: the live one read now through the target's
/// version source, the previous one from the journal (or `--to-version`).
async fn versions(
    config: &Config,
    t: &TargetConfig,
    incident: &str,
    options: &DrillOptions,
    out: &mut String,
) -> Vars {
    let from_version = match live_version(config, t).await {
        Ok(v) => v,
        Err(e) => {
            line(out, format!("  live version: unknown ({e})"));
            None
        }
    };
    let to_version = options.to_version.clone().or_else(|| {
        let states = crate::journal::recover_states(&config.daemon.state_dir).ok()?;
        let state = states.get(&t.name)?;
        state
            .previous_version
            .clone()
            .filter(|p| Some(p) != from_version.as_ref())
    });
    line(
        out,
        format!(
            "  versions: live {}, back to {}",
            from_version.as_deref().unwrap_or("unknown"),
            to_version
                .as_deref()
                .unwrap_or("(chosen by the executor, or unknown)")
        ),
    );
    Vars {
        target: t.name.clone(),
        from_version,
        to_version,
        incident: incident.to_string(),
    }
}

/// Prints the plan, checks programs and runs the read-only checks.
async fn dry_run(
    t: &TargetConfig,
    vars: &Vars,
    out: &mut String,
) -> (bool, String, Option<String>, Option<String>) {
    let plan = &t.rollback;
    let mut problems: Vec<String> = Vec::new();
    let mut r = Runner::new(Budget::start(plan), vars);

    let prepared = super::prepare(&plan.kind, vars, &mut r).await;
    let found = Vars {
        from_version: r.result.from_version.clone(),
        to_version: r.result.to_version.clone(),
        ..vars.clone()
    };

    let mut programs: Vec<String> = Vec::new();
    if !plan.pre.is_empty() {
        line(out, "pre steps (would run first):");
        show_templates(
            &plan.pre,
            &found,
            "pre step",
            out,
            &mut programs,
            &mut problems,
        );
    }
    line(
        out,
        format!("{} checks (read-only, run now):", plan.kind.name()),
    );
    if r.result.steps.is_empty() {
        line(out, "  (none)");
    }
    for step in &r.result.steps {
        line(out, format!("  {}", step_line(step)));
    }
    match &prepared {
        Ok(acts) => {
            line(
                out,
                format!(
                    "  would go from {} to {}",
                    found.from_version.as_deref().unwrap_or("?"),
                    found
                        .to_version
                        .as_deref()
                        .unwrap_or("the previous version")
                ),
            );
            line(out, format!("{} steps (would run):", plan.kind.name()));
            for act in acts {
                line(out, format!("  {}", act.describe()));
                if let Some(p) = act.program() {
                    programs.push(p.to_string());
                }
            }
        }
        Err(e) => {
            line(out, format!("  refused: {e}"));
            problems.push(e.clone());
        }
    }
    if !plan.after.is_empty() {
        line(out, "after steps (would run once verification passed):");
        show_templates(
            &plan.after,
            &found,
            "after step",
            out,
            &mut programs,
            &mut problems,
        );
    }
    if !plan.on_failure.is_empty() {
        line(
            out,
            "on_failure steps (would run if the plan or its verification failed):",
        );
        show_templates(
            &plan.on_failure,
            &found,
            "on_failure step",
            out,
            &mut programs,
            &mut problems,
        );
    }
    // The programs the executor itself calls, even when a check failed
    // before they were reached.
    programs.extend(executor_programs(&plan.kind));
    // Programs inside `sh -c '...'`: the script's first word. A miss is a
    // warning, not a failure: the script may define it (a function, PATH).
    let mut scripts: Vec<&[String]> = plan.pre.iter().map(|s| s.argv.as_slice()).collect();
    if let ExecutorKind::Command { steps } = &plan.kind {
        scripts.extend(steps.iter().map(|s| s.argv.as_slice()));
    }
    scripts.extend(plan.after.iter().map(|s| s.argv.as_slice()));
    scripts.extend(plan.on_failure.iter().map(|s| s.argv.as_slice()));
    scripts.extend(t.verify.commands.iter().map(|s| s.argv.as_slice()));
    let mut inner: Vec<String> = scripts.into_iter().filter_map(shell_program).collect();
    inner.sort();
    inner.dedup();
    programs.retain(|p| p != "symlink");
    programs.sort();
    programs.dedup();
    line(out, "programs:");
    for program in &programs {
        match find_program(program) {
            Ok(path) => line(out, format!("  ok       {program} ({})", path.display())),
            Err(e) => {
                line(out, format!("  MISSING  {program}: {e}"));
                problems.push(format!("{program}: {e}"));
            }
        }
    }
    for program in inner.iter().filter(|p| !programs.contains(p)) {
        match find_program(program) {
            Ok(path) => line(
                out,
                format!("  ok       {program} ({}, inside sh -c)", path.display()),
            ),
            Err(e) => line(
                out,
                format!("  warning: {program} (first word of an sh -c script) not found: {e}"),
            ),
        }
    }
    verify_note(t, out).await;
    let (from, to) = (found.from_version, found.to_version);
    if problems.is_empty() {
        (
            true,
            "ready: every program is there and every check passed".to_string(),
            from,
            to,
        )
    } else {
        (
            false,
            format!("not ready: {}", problems.join("; ")),
            from,
            to,
        )
    }
}

/// Runs the plan, verification (the gates: URL, checks, commands) and the
/// after steps.
async fn live(
    t: &TargetConfig,
    vars: &Vars,
    out: &mut String,
) -> (bool, String, Option<String>, Option<String>) {
    let started = Instant::now();
    let result = super::run_plan(&t.rollback, vars).await;
    line(
        out,
        format!("rollback ({}):", fmt_duration(started.elapsed())),
    );
    for step in &result.steps {
        line(out, format!("  {}", step_line(step)));
    }
    let (from, to) = (result.from_version.clone(), result.to_version.clone());
    if !result.ok {
        let why = result.error.unwrap_or_else(|| "unknown error".into());
        return (false, format!("rollback failed: {why}"), from, to);
    }
    let v = &t.verify;
    let gated = v.url.is_some() || !v.checks.is_empty() || !v.commands.is_empty();
    if !gated {
        line(
            out,
            "verify: no url, checks or commands configured; rules are checked by the daemon only",
        );
    } else {
        let found = Vars {
            from_version: from.clone(),
            to_version: to.clone(),
            ..vars.clone()
        };
        let started = Instant::now();
        let gates = poll_gates(v, &found).await;
        let ok = gates.iter().all(|g| g.ok);
        line(
            out,
            format!(
                "verify: {} after {}",
                if ok { "healthy" } else { "UNHEALTHY" },
                fmt_duration(started.elapsed())
            ),
        );
        for g in &gates {
            let status = if g.ok { "ok    " } else { "FAILED" };
            line(out, format!("  {status} {}: {}", g.check, g.detail));
        }
        if !ok {
            let failing: Vec<String> = gates
                .iter()
                .filter(|g| !g.ok)
                .map(|g| format!("{}: {}", g.check, g.detail))
                .collect();
            return (
                false,
                format!(
                    "rollback did not help: still failing after {}: {}",
                    fmt_duration(t.verify.within),
                    failing.join("; ")
                ),
                from,
                to,
            );
        }
    }
    if !t.rollback.after.is_empty() {
        let found = Vars {
            from_version: from.clone(),
            to_version: to.clone(),
            ..vars.clone()
        };
        let after = super::run_after(&t.rollback, &found).await;
        line(out, "after steps:");
        for step in &after.steps {
            line(out, format!("  {}", step_line(step)));
        }
        if !after.ok {
            let why = after.error.unwrap_or_default();
            return (false, format!("after steps failed: {why}"), from, to);
        }
    }
    let verdict = format!(
        "rolled back {} -> {} and verified",
        from.as_deref().unwrap_or("?"),
        to.as_deref().unwrap_or("?")
    );
    (true, verdict, from, to)
}

/// The verify URL's and checks' answers right now, and the smoke commands
/// that would run (dry-run: information only).
async fn verify_note(t: &TargetConfig, out: &mut String) {
    if let Some(url) = &t.verify.url {
        let client = http_client();
        let (ok, detail) = super::verify::check_url(&client, url, t.verify.expect_status).await;
        line(
            out,
            format!(
                "verify url {url}: {} now ({detail})",
                if ok { "healthy" } else { "unhealthy" }
            ),
        );
    }
    let client = http_client();
    for check in &t.verify.checks {
        let r = super::verify::run_check(&client, check).await;
        line(
            out,
            format!(
                "verify check {}: {} now ({})",
                r.check,
                if r.ok { "passes" } else { "fails" },
                r.detail
            ),
        );
    }
    for step in &t.verify.commands {
        line(
            out,
            format!(
                "verify command (runs after a live rollback, not now): {}",
                display_argv(&step.argv)
            ),
        );
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// Run every verification gate every second until all pass or `within`
/// passed; the last round's results.
async fn poll_gates(
    verify: &crate::config::VerifyConfig,
    vars: &Vars,
) -> Vec<super::verify::CheckReport> {
    let client = http_client();
    let deadline = Instant::now() + verify.within;
    loop {
        let gates = super::verify::run_gates(&client, verify, vars).await;
        if gates.iter().all(|g| g.ok) || Instant::now() >= deadline {
            return gates;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Print argv templates after substitution and collect their programs.
fn show_templates(
    list: &[crate::config::Step],
    vars: &Vars,
    what: &str,
    out: &mut String,
    programs: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    for step in list {
        let argv = &step.argv;
        match subst(argv, vars, what) {
            Ok(argv) => {
                line(out, format!("  {}", display_argv(&argv)));
                programs.extend(argv.first().cloned());
            }
            Err(e) => {
                line(out, format!("  CANNOT RUN {e}"));
                problems.push(e);
                programs.extend(argv.first().cloned());
            }
        }
    }
}

/// The program an `sh -c 'SCRIPT'` step runs first: the script's first
/// word after variable assignments (`X=1 prog ...`) and `exec`. `None` for
/// other steps, shell builtins and words with expansions.
pub fn shell_program(argv: &[String]) -> Option<String> {
    let [shell, flag, script, ..] = argv else {
        return None;
    };
    let name = shell.rsplit('/').next().unwrap_or(shell);
    if !matches!(name, "sh" | "bash" | "dash" | "zsh" | "ksh") || flag != "-c" {
        return None;
    }
    let word = script
        .split(|c: char| c.is_whitespace() || c == ';' || c == '|' || c == '&')
        .filter(|w| !w.is_empty())
        .find(|w| (w.starts_with('=') || !w.contains('=')) && *w != "exec")?;
    const BUILTINS: &[&str] = &[
        "cd", "echo", "exit", "export", "set", "test", "[", "true", "false", "printf", "read",
        "if", "for", "while", "case", "{", "(", ":", ".", "source", "eval", "trap", "umask",
    ];
    if BUILTINS.contains(&word) || word.contains(['$', '`', '(', '"', '\'', '<', '>']) {
        return None;
    }
    Some(word.to_string())
}

/// The programs an executor calls itself.
fn executor_programs(kind: &ExecutorKind) -> Vec<String> {
    match kind {
        ExecutorKind::Kubernetes { kubectl, .. } | ExecutorKind::BlueGreen { kubectl, .. } => {
            vec![kubectl.clone()]
        }
        ExecutorKind::Docker { docker, .. } => vec![docker.clone()],
        ExecutorKind::Git { build, restart, .. } => std::iter::once("git".to_string())
            .chain(build.iter().filter_map(|a| a.first().cloned()))
            .chain(restart.iter().filter_map(|a| a.first().cloned()))
            .collect(),
        ExecutorKind::Command { steps } => steps
            .iter()
            .filter_map(|s| s.argv.first().cloned())
            .collect(),
        ExecutorKind::Symlink { restart, .. } => {
            restart.iter().filter_map(|a| a.first().cloned()).collect()
        }
        ExecutorKind::Webhook { .. } => Vec::new(),
    }
}

/// `ok  argv  (12ms)` or `FAILED argv  (exit 1): why`.
fn step_line(step: &StepReport) -> String {
    let status = if step.ok { "ok    " } else { "FAILED" };
    let mut s = format!(
        "{status} {}  ({})",
        display_argv(&step.argv),
        fmt_duration(step.duration)
    );
    if let Some(e) = &step.error {
        s.push_str(": ");
        s.push_str(e);
    }
    s
}

/// Where `program` would be run from: itself when it names a path, else
/// the first executable file of that name on `PATH`.
pub fn find_program(program: &str) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if !p.exists() {
            Err("no such file".into())
        } else if executable(&p) {
            Ok(p)
        } else {
            Err("not an executable file".into())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| "not found on PATH".to_string())
}

/// Append one record to `state_dir/drills.jsonl` and fsync it.
pub fn append(state_dir: &Path, record: &DrillRecord) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("failed to create state_dir {}", state_dir.display()))?;
    let path = state_dir.join(DRILLS_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    let mut text = serde_json::to_string(record).context("failed to encode the drill record")?;
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", path.display()))
}

/// Every drill in `state_dir/drills.jsonl`, oldest first; unreadable lines
/// are reported, not fatal.
pub fn read(state_dir: &Path) -> anyhow::Result<(Vec<DrillRecord>, Vec<String>)> {
    let path = state_dir.join(DRILLS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for (i, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str(l) {
            Ok(r) => records.push(r),
            Err(e) => problems.push(format!("{}:{}: skipped: {e}", path.display(), i + 1)),
        }
    }
    Ok((records, problems))
}

/// The rehearsal record as a table: date, target, mode, duration, result.
pub fn history(state_dir: &Path, target: Option<&str>) -> anyhow::Result<String> {
    let (records, problems) = read(state_dir)?;
    let mut out = String::new();
    let records: Vec<&DrillRecord> = records
        .iter()
        .filter(|r| target.is_none_or(|t| r.target == t))
        .collect();
    if records.is_empty() {
        line(&mut out, "no drills recorded yet");
    } else {
        line(
            &mut out,
            format!(
                "{:<20}  {:<20}  {:<7}  {:>9}  RESULT",
                "DATE (UTC)", "TARGET", "MODE", "DURATION"
            ),
        );
        for r in &records {
            line(
                &mut out,
                format!(
                    "{:<20}  {:<20}  {:<7}  {:>9}  {}  {}",
                    r.at.format("%Y-%m-%d %H:%M:%S"),
                    r.target,
                    r.mode,
                    fmt_duration(r.duration),
                    if r.success { "success" } else { "FAILED " },
                    r.verdict
                ),
            );
        }
        let ok = records.iter().filter(|r| r.success).count();
        line(
            &mut out,
            format!("{} drill(s), {ok} successful", records.len()),
        );
    }
    for p in problems {
        line(&mut out, p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::shell_program;

    #[test]
    fn shell_program_finds_the_first_word_of_the_script() {
        let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for (argv, want) in [
            (
                s(&["sh", "-c", "pg_dump app > /tmp/app.sql"]),
                Some("pg_dump"),
            ),
            (
                s(&["/bin/bash", "-c", "  PGUSER=app exec pg_restore x"]),
                Some("pg_restore"),
            ),
            (
                s(&["sh", "-c", "cp .env.example .env.local; npm ci"]),
                Some("cp"),
            ),
            (s(&["sh", "-c", "echo hi > x"]), None),
            (s(&["sh", "-c", "$TOOL run"]), None),
            (s(&["sh", "-e", "x"]), None),
            (s(&["python3", "-c", "print(1)"]), None),
            (s(&["sh", "-c"]), None),
        ] {
            assert_eq!(shell_program(&argv).as_deref(), want, "{argv:?}");
        }
    }
}
