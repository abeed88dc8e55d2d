//! `kind = "symlink"`: re-point `current -> releases/X` atomically (new link,
//! then rename over the old one) to the previous release: `{to_version}` when
//! known and present, else the release directory that sorts just before the
//! live one (version-aware: `v10` sorts after `v9`). Then `restart`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio::time::Instant;

use std::collections::BTreeMap;

use super::kind::{optional_argv, required_path, ExecError, Identity, Kind, VersionCheckError};
use crate::config::cx::Cx;
use crate::config::version_source::VersionSource;
use crate::report::{ExecResult, StepReport};
use crate::run::plan::{self as runner, Act, Budget, Runner};
use crate::run::process::{run_step_in, Context};
use crate::run::template::{substitute, Vars};
use crate::util::display_argv;
use crate::version::order::previous;

/// The keys of a `symlink` rollback, as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// The link the service runs from.
    pub current: Option<String>,
    /// Directory of release directories.
    pub releases: Option<String>,
    /// argv template run after switching.
    pub restart: Option<Vec<String>>,
}

/// A `symlink` rollback: re-point `current` at a previous release
/// directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The symlink the service runs from.
    pub current: PathBuf,
    /// Directory holding one directory per release.
    pub releases: PathBuf,
    /// Run after re-pointing (argv template).
    pub restart: Option<Vec<String>>,
}

impl Kind for Config {
    const NAME: &'static str = "symlink";
    const KEYS: &'static [&'static str] = &["current", "releases", "restart"];
    const VERSIONS_ARE_NAMES: bool = true;
    type Raw = Raw;

    fn build(cx: &mut Cx, p: &str, raw: Raw) -> Option<Config> {
        let current = required_path(cx, p, "current", raw.current.as_deref());
        let releases = required_path(cx, p, "releases", raw.releases.as_deref());
        let restart = optional_argv(cx, p, "restart", raw.restart.as_deref());
        Some(Config {
            current: current?,
            releases: releases?,
            restart: restart?,
        })
    }

    fn uses_var(&self, _var: &str) -> Vec<String> {
        Vec::new()
    }

    /// The release before the live one.
    fn finds_own_version(&self) -> bool {
        true
    }

    /// The name of the release directory `current` points to.
    fn version_source(&self) -> Option<VersionSource> {
        Some(VersionSource::Symlink(self.current.clone()))
    }

    fn identity(
        &self,
        _target: &str,
        _cwd: Option<&Path>,
        _env: &BTreeMap<String, String>,
    ) -> Identity {
        identity(&self.current)
    }

    fn programs(&self) -> Vec<String> {
        self.restart
            .iter()
            .filter_map(|a| a.first().cloned())
            .collect()
    }

    fn resolve(&self, vars: &mut Vars) -> Result<(), String> {
        if vars.to_version.is_none() {
            if let Ok((live, chosen, _)) = preview(&self.current, &self.releases, None) {
                vars.from_version.get_or_insert(live);
                vars.to_version = Some(chosen);
            }
        }
        Ok(())
    }

    async fn prepare(&self, vars: &Vars, r: &mut Runner) -> Result<Vec<Act>, ExecError> {
        let (live, chosen, target) =
            preview(&self.current, &self.releases, vars.to_version.as_deref())
                .map_err(ExecError::refused)?;
        r.result.from_version = Some(live.clone());
        r.result.to_version = Some(chosen.clone());
        let found = Vars {
            from_version: Some(live),
            to_version: Some(chosen),
            ..vars.clone()
        };
        let mut acts = vec![Act::run(vec![
            "symlink".to_string(),
            self.current.display().to_string(),
            "->".to_string(),
            target.display().to_string(),
        ])];
        if let Some(argv) = self.restart.as_deref().filter(|a| !a.is_empty()) {
            acts.push(Act::run(runner::subst(argv, &found, "restart")?));
        }
        Ok(acts)
    }

    async fn run(&self, _context: &Context, vars: &Vars, budget: Budget) -> ExecResult {
        run_with(
            &self.current,
            &self.releases,
            self.restart.as_deref(),
            vars,
            budget,
        )
        .await
    }

    /// A release directory other than the live one.
    async fn check_version(
        &self,
        version: &str,
        _deadline: Instant,
    ) -> Result<(), VersionCheckError> {
        if version.contains('/') || version == "." || version == ".." {
            return Err(VersionCheckError::unknown(
                version,
                "not a release directory name",
            ));
        }
        let dir = self.releases.join(version);
        if !dir.is_dir() {
            return Err(VersionCheckError::unknown(
                version,
                format!("no release directory {}", dir.display()),
            ));
        }
        if live_release(&self.current).is_ok_and(|live| live == version) {
            return Err(VersionCheckError::Refused(format!(
                "version {version:?} is already live ({} -> {})",
                self.current.display(),
                dir.display()
            )));
        }
        Ok(())
    }

    fn go_to(&mut self, version: &str) -> String {
        version.to_string()
    }
}

/// Appended to `current` for the new link before it is renamed over the old
/// one. A stale one (from a crash between the two) is removed first.
pub const TMP_SUFFIX: &str = ".rollbackd-tmp";

pub use crate::version::live::live_release;

/// The release to go to: `wanted` when it is a listed release other than the
/// live one, else the greatest release older than `live`.
fn choose(names: &[String], live: &str, wanted: Option<&str>) -> Option<String> {
    if let Some(wanted) = wanted {
        if wanted != live && names.iter().any(|n| n == wanted) {
            return Some(wanted.to_string());
        }
        tracing::warn!(
            wanted,
            live,
            "to_version is not a release other than the live one; using the previous release"
        );
    }
    previous(names.iter().map(String::as_str), live).map(str::to_string)
}

/// Release directories in `releases`: directories (or links to directories)
/// with UTF-8 names not starting with `.`; `current` itself and its
/// temporary link are skipped in case they live in the same directory.
fn list_releases(releases: &Path, current: &Path) -> io::Result<Vec<String>> {
    let current_id = std::fs::symlink_metadata(current)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(releases)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || name.ends_with(TMP_SUFFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(own) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if Some((own.dev(), own.ino())) == current_id {
            continue;
        }
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Why a symlink rollback is refused (nothing was changed) or the switch
/// failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SymlinkError {
    /// `current` cannot be read as a link to a release (the message names it).
    #[error("{0}")]
    Live(String),
    /// `releases` cannot be listed.
    #[error("cannot list releases in {}: {error}", releases.display())]
    List {
        /// The releases directory.
        releases: PathBuf,
        /// Why.
        error: String,
    },
    /// No release sorts before the live one.
    #[error("no release older than {live:?} in {}", releases.display())]
    NoOlder {
        /// The live release.
        live: String,
        /// The releases directory.
        releases: PathBuf,
    },
    /// The plan deadline passed before the switch.
    #[error("not started: the plan deadline had already passed")]
    NotStarted,
    /// A temporary link left by a crash cannot be removed.
    #[error("cannot remove stale {}: {error}", tmp.display())]
    RemoveStale {
        /// The temporary link.
        tmp: PathBuf,
        /// Why.
        error: String,
    },
    /// The new link cannot be created.
    #[error("cannot create symlink {}: {error}", tmp.display())]
    Create {
        /// The temporary link.
        tmp: PathBuf,
        /// Why.
        error: String,
    },
    /// The new link cannot be renamed over `current`.
    #[error("cannot rename {} over {}: {error}", tmp.display(), current.display())]
    Rename {
        /// The temporary link.
        tmp: PathBuf,
        /// The live link.
        current: PathBuf,
        /// Why.
        error: String,
    },
    /// The blocking task of the switch failed.
    #[error("switch task failed: {0}")]
    Task(String),
}

/// Replace `current` with a link to `target`: new link next to it, rename over
/// it (atomic: readers see the old or the new link, never none), fsync the
/// directory so the switch survives a crash. A failed fsync comes back as a
/// warning: the switch itself is done and visible.
fn switch(current: &Path, target: &Path) -> Result<Option<String>, SymlinkError> {
    let mut tmp = current.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => tracing::info!(path = %tmp.display(), "removed a stale temporary link"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(SymlinkError::RemoveStale {
                tmp,
                error: e.to_string(),
            })
        }
    }
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| SymlinkError::Create {
        tmp: tmp.clone(),
        error: e.to_string(),
    })?;
    if let Err(e) = std::fs::rename(&tmp, current) {
        let _ = std::fs::remove_file(&tmp);
        return Err(SymlinkError::Rename {
            tmp,
            current: current.to_path_buf(),
            error: e.to_string(),
        });
    }
    let parent = current
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::File::open(parent).and_then(|dir| dir.sync_all()) {
        Ok(()) => Ok(None),
        Err(e) => Ok(Some(format!(
            "warning: switched, but fsync of {} failed: {e}",
            parent.display()
        ))),
    }
}

/// Where the new link points: `releases/X`, made absolute when `releases` is
/// relative, since a relative link target would be resolved against the
/// link's directory rather than the daemon's working directory.
fn link_target(releases: &Path, chosen: &str) -> PathBuf {
    if releases.is_absolute() {
        releases.join(chosen)
    } else {
        std::path::absolute(releases)
            .unwrap_or_else(|_| releases.to_path_buf())
            .join(chosen)
    }
}

/// What a symlink rollback would do, found without changing anything: the
/// live release, the one to go to, and where the new link points.
pub fn preview(
    current: &Path,
    releases: &Path,
    to_version: Option<&str>,
) -> Result<(String, String, PathBuf), SymlinkError> {
    let live = live_release(current).map_err(|e| SymlinkError::Live(e.to_string()))?;
    let names = list_releases(releases, current).map_err(|e| SymlinkError::List {
        releases: releases.to_path_buf(),
        error: e.to_string(),
    })?;
    let chosen = choose(&names, &live, to_version).ok_or_else(|| SymlinkError::NoOlder {
        live: live.clone(),
        releases: releases.to_path_buf(),
    })?;
    let target = link_target(releases, &chosen);
    Ok((live, chosen, target))
}

/// Run the symlink plan.
pub async fn run(
    current: &Path,
    releases: &Path,
    restart: Option<&[String]>,
    vars: &Vars,
    deadline: Instant,
) -> ExecResult {
    let budget = Budget {
        deadline,
        step_timeout: None,
    };
    run_with(current, releases, restart, vars, budget).await
}

/// Run the symlink plan under `budget` (the restart has the step timeout).
pub async fn run_with(
    current: &Path,
    releases: &Path,
    restart: Option<&[String]>,
    vars: &Vars,
    budget: Budget,
) -> ExecResult {
    let mut result = ExecResult {
        ok: false,
        steps: Vec::new(),
        from_version: vars.from_version.clone(),
        to_version: None,
        error: None,
    };
    let fail = |mut result: ExecResult, error: String| {
        tracing::warn!("symlink rollback failed: {error}");
        result.error = Some(error);
        result
    };

    let (live, names) = match inspect(current, releases).await {
        Ok(found) => found,
        Err(e) => return fail(result, e),
    };
    result.from_version = Some(live.clone());
    let Some(chosen) = choose(&names, &live, vars.to_version.as_deref()) else {
        let e = SymlinkError::NoOlder {
            live,
            releases: releases.to_path_buf(),
        };
        return fail(result, e.to_string());
    };
    result.to_version = Some(chosen.clone());

    // Substitute before switching: a bad template must not leave the link
    // switched and the service not restarted.
    let restart_vars = Vars {
        from_version: Some(live.clone()),
        to_version: Some(chosen.clone()),
        ..vars.clone()
    };
    crate::run::process::found_vars(&restart_vars);
    let restart = restart.filter(|argv| !argv.is_empty());
    let restart_argv = match restart.map(|argv| substitute(argv, &restart_vars)) {
        None => None,
        Some(Ok(argv)) => Some(argv),
        Some(Err(e)) => {
            let shown = display_argv(restart.unwrap_or_default());
            return fail(
                result,
                format!("restart ({shown}) cannot run: {e}; nothing was changed"),
            );
        }
    };
    let total = 1 + usize::from(restart_argv.is_some());

    let step = switch_step(current, &link_target(releases, &chosen), budget.deadline).await;
    let failure = step.error.as_ref().map(|e| {
        format!(
            "step 1 of {total} ({}) failed: {e}",
            display_argv(&step.argv)
        )
    });
    result.steps.push(step);
    if let Some(failure) = failure {
        return fail(result, failure);
    }
    tracing::info!(from = %live, to = %chosen, current = %current.display(), "symlink switched");

    if let Some(argv) = restart_argv {
        let (deadline, limit) = budget.for_step();
        let step = run_step_in(&argv, deadline, limit, None).await;
        let failure = (!step.ok).then(|| {
            format!(
                "step 2 of 2 ({}) failed: {}",
                display_argv(&argv),
                step.error.as_deref().unwrap_or("unknown error")
            )
        });
        result.steps.push(step);
        if let Some(failure) = failure {
            return fail(result, failure);
        }
    }
    result.ok = true;
    result
}

/// The live release and the listed ones, read off the blocking pool.
async fn inspect(current: &Path, releases: &Path) -> Result<(String, Vec<String>), String> {
    let (current, releases) = (current.to_path_buf(), releases.to_path_buf());
    let found = tokio::task::spawn_blocking(move || {
        let live = live_release(&current)?;
        let names = list_releases(&releases, &current).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot list releases in {}: {e}", releases.display()),
            )
        })?;
        Ok::<_, io::Error>((live, names))
    })
    .await;
    match found {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("cannot inspect releases: {e}")),
    }
}

/// Switch `current` to `target` (unless `deadline` passed), as a step of
/// the record.
async fn switch_step(current: &Path, target: &Path, deadline: Instant) -> StepReport {
    let argv = vec![
        "symlink".to_string(),
        current.display().to_string(),
        "->".to_string(),
        target.display().to_string(),
    ];
    let started = Instant::now();
    let switched = if started >= deadline {
        Err(SymlinkError::NotStarted)
    } else {
        let (current, target) = (current.to_path_buf(), target.to_path_buf());
        tokio::task::spawn_blocking(move || switch(&current, &target))
            .await
            .unwrap_or_else(|e| Err(SymlinkError::Task(e.to_string())))
    };
    let mut step = StepReport {
        argv,
        exit_code: None,
        ok: switched.is_ok(),
        duration: started.elapsed(),
        stdout: String::new(),
        stderr: String::new(),
        error: None,
        leftovers: Vec::new(),
    };
    match switched {
        Ok(warning) => step.stderr = warning.unwrap_or_default(),
        Err(e) => step.error = Some(e.to_string()),
    }
    step
}

/// The executor's identity ([`Kind::identity`]): the `current` link,
/// written without `.` components or a trailing slash, is the service.
pub fn identity(current: &Path) -> Identity {
    let path: PathBuf = current.components().collect();
    Identity::same(format!("symlink {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_table() {
        let names: Vec<String> = ["v1", "v2", "v10"].iter().map(|s| s.to_string()).collect();
        assert_eq!(choose(&names, "v10", None).as_deref(), Some("v2"));
        assert_eq!(choose(&names, "v2", None).as_deref(), Some("v1"));
        assert_eq!(choose(&names, "v1", None), None);
        assert_eq!(choose(&names, "v10", Some("v1")).as_deref(), Some("v1"));
        // Unknown or live to_version: fall back to the previous release.
        assert_eq!(choose(&names, "v10", Some("v7")).as_deref(), Some("v2"));
        assert_eq!(choose(&names, "v10", Some("v10")).as_deref(), Some("v2"));
        // Live release missing from the directory still has a predecessor.
        assert_eq!(choose(&names, "v5", None).as_deref(), Some("v2"));
    }

    #[test]
    fn live_release_relative_and_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let rel = dir.path().join("rel");
        std::os::unix::fs::symlink("releases/v3", &rel).unwrap();
        assert_eq!(live_release(&rel).unwrap(), "v3");
        let abs = dir.path().join("abs");
        std::os::unix::fs::symlink(dir.path().join("releases/v4/"), &abs).unwrap();
        assert_eq!(live_release(&abs).unwrap(), "v4");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let e = live_release(&plain).unwrap_err();
        assert!(e.to_string().contains("is not a symlink"), "{e}");
        let e = live_release(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
