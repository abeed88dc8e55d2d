//! The executor seam: what every `execute/KIND.rs` implements for its
//! `Config` ([`Kind`]), and the values the seam passes (the executor's
//! [`Identity`], why a plan is refused: [`ExecError`], why a named version
//! is: [`VersionCheckError`]). A leaf of `execute/`: it imports only `run/`,
//! `report`, `config::{cx, raw::step, version_source}` and
//! `version::name`, so a kind's file imports neither `config/mod.rs` nor
//! `execute/mod.rs` (which name every kind).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::time::Instant;

use crate::config::cx::Cx;
use crate::config::raw::step::join;
use crate::config::version_source::VersionSource;
use crate::report::{ExecResult, StepReport};
use crate::run::plan::{Act, Budget, Runner, StepError};
use crate::run::process::Context;
use crate::run::step::Step;
use crate::run::template::Vars;

/// One executor kind (`[target.rollback] kind = NAME`): its keys, their
/// validation, and everything the daemon, `check`, `drill` and `trigger
/// --to-version` ask of it. Implemented by the `Config` of each
/// `execute/KIND.rs`; [`ExecutorKind`](super::kinds::ExecutorKind) holds
/// one of them and dispatches to it. Every method is required: a new kind
/// says what it does for each, nothing is given to it by default.
/// Four items have a default that does nothing (no version source of its
/// own, no secret file, no scripts for a drill to read, nothing to fill in
/// before `pre`); every other item is required, so the compiler lists what
/// a new kind must say.
pub trait Kind: Sized {
    /// The `kind` key's value (`"docker"`), for records and logs.
    const NAME: &'static str;
    /// The kind's own keys in `[target.rollback]`; a key of another kind
    /// is refused ("key K does not apply to rollback kind ...").
    const KEYS: &'static [&'static str];
    /// Whether a version a person names (`trigger --to-version V`) must be
    /// in the version charset before [`Kind::check_version`] sees it (it
    /// reaches argv). `false` only where the kind parses it itself
    /// (kubernetes: revision numbers, also written `revision N`).
    const VERSIONS_ARE_NAMES: bool;

    /// The keys as written: serde, `deny_unknown_fields`, every key
    /// optional (whether one is required is decided by [`Kind::build`]).
    type Raw: serde::de::DeserializeOwned + Default;

    /// Validate the keys under key path `p` (`target[0].rollback`) into the
    /// typed config; every problem goes into `cx` with its key path.
    fn build(cx: &mut Cx, p: &str, raw: Self::Raw) -> Option<Self>;

    /// Where the executor's own keys use `{var}`: key paths relative to
    /// `[target.rollback]` (`steps[1]`, `body`), or `kind` when the
    /// executor itself needs the value (git checks out `{to_version}`).
    fn uses_var(&self, var: &str) -> Vec<String>;

    /// Whether it finds `{to_version}` itself when nobody named it.
    fn finds_own_version(&self) -> bool;

    /// The target's version source when the target names none (symlink:
    /// the release `current` points to; git: `git describe`).
    fn version_source(&self) -> Option<VersionSource> {
        None
    }

    /// What it acts on, for `target` (see [`Identity`]); `cwd` and `env`
    /// are the plan's.
    fn identity(
        &self,
        target: &str,
        cwd: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Identity;

    /// Secret files it reads, as (key, path), for `check`'s mode warning.
    fn secret_files(&self) -> Vec<(&'static str, PathBuf)> {
        Vec::new()
    }

    /// Programs it runs, which a drill checks are installed.
    fn programs(&self) -> Vec<String>;

    /// Its argv steps whose `sh -c` scripts a drill reads for the programs
    /// they call (a miss is a warning).
    fn scripts(&self) -> Vec<&[String]> {
        Vec::new()
    }

    /// Before the `pre` steps run: fill in what the executor finds itself
    /// (symlink: `{to_version}`, so that `pre` can use it), and refuse a
    /// plan whose templates cannot be completed (nothing is run then).
    fn resolve(&self, _vars: &mut Vars) -> Result<(), String> {
        Ok(())
    }

    /// Read-only checks and the changes it would make, as a drill shows
    /// them; the steps run (all read-only) are in the runner.
    fn prepare(
        &self,
        vars: &Vars,
        r: &mut Runner,
    ) -> impl Future<Output = Result<Vec<Act>, ExecError>> + Send;

    /// Roll back: the executor's own steps, in `context` (the plan's `cwd`
    /// and `env`), under `budget`.
    fn run(
        &self,
        context: &Context,
        vars: &Vars,
        budget: Budget,
    ) -> impl Future<Output = ExecResult> + Send;

    /// Whether `version` exists for the executor, read-only, with probes
    /// that end by `deadline`; `Err` says what is wrong, naming it.
    fn check_version(
        &self,
        version: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), VersionCheckError>> + Send;

    /// Go to exactly `version` (checked): returns the version's name from
    /// here on (kubernetes: `revision 3` is `3`, and `to_revision` is set).
    fn go_to(&mut self, version: &str) -> String;
}

/// What a target's rollback acts on: two targets with equal keys roll back
/// the same service, so only one may have an open incident at a time (the
/// other waits: `decide::peers`). One function per executor kind, in its
/// own file; fleets use the same key for their members.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// Equal for the same executor kind and keys.
    pub key: String,
    /// As a person reads it (`symlink /srv/app/current`), without secrets.
    pub shown: String,
}

impl Identity {
    /// An identity shown as its key.
    pub fn same(key: String) -> Identity {
        Identity {
            shown: key.clone(),
            key,
        }
    }
}

/// Why an executor's read-only checks refused a plan (nothing was
/// changed), or a step of it failed; the kind's error names its values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// A step failed, or its template could not be completed.
    #[error(transparent)]
    Step(#[from] StepError),
    /// The kind's own refusal, as its error says it.
    #[error("{0}")]
    Refused(String),
}

impl ExecError {
    /// A kind's own error, as it says it.
    pub fn refused(e: impl std::fmt::Display) -> ExecError {
        ExecError::Refused(e.to_string())
    }
}

/// Why a version a person named (`trigger --to-version V`) is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VersionCheckError {
    /// The executor does not know it.
    #[error("unknown version {}: {why}", crate::version::name::escaped(version))]
    Unknown {
        /// As typed.
        version: String,
        /// What is wrong with it.
        why: String,
    },
    /// Refused for another reason (it is live already, it cannot be
    /// checked, the kind cannot choose), as the kind says it.
    #[error("{0}")]
    Refused(String),
}

impl VersionCheckError {
    /// `version` is unknown to the executor, because `why`.
    pub fn unknown(version: &str, why: impl std::fmt::Display) -> VersionCheckError {
        VersionCheckError::Unknown {
            version: version.to_string(),
            why: why.to_string(),
        }
    }
}

/// Run a read-only probe of a version check (`git rev-parse`, `docker
/// image inspect`) until `deadline`.
pub async fn probe(argv: Vec<String>, deadline: Instant) -> StepReport {
    crate::run::process::run_step_in(&argv, deadline, "version check", None).await
}

/// Whether `template` uses `{var}`.
pub fn uses(template: &str, var: &str) -> bool {
    crate::run::template::names(template).contains(&var)
}

/// `key[i]` for each step of `list` whose argv uses `{var}`.
pub fn steps_using(key: &str, list: &[Step], var: &str) -> Vec<String> {
    list.iter()
        .enumerate()
        .filter(|(_, s)| s.argv.iter().any(|a| uses(a, var)))
        .map(|(i, _)| format!("{key}[{i}]"))
        .collect()
}

/// A required non-empty string key.
pub fn required_text(cx: &mut Cx, p: &str, key: &str, value: Option<&str>) -> Option<String> {
    cx.required(p, key, value)
        .and_then(|v| cx.non_empty(&join(p, key), v))
}

/// An optional non-empty string key.
pub fn optional_text(
    cx: &mut Cx,
    p: &str,
    key: &str,
    value: Option<&str>,
) -> Option<Option<String>> {
    match value {
        None => Some(None),
        Some(v) => cx.non_empty(&join(p, key), v).map(Some),
    }
}

/// A program key (`kubectl`, `docker`) with its default, the key's name.
pub fn program(cx: &mut Cx, p: &str, key: &str, value: Option<&str>) -> Option<String> {
    optional_text(cx, p, key, value).map(|v| v.unwrap_or_else(|| key.to_string()))
}

/// An optional argv template key.
pub fn optional_argv(
    cx: &mut Cx,
    p: &str,
    key: &str,
    value: Option<&[String]>,
) -> Option<Option<Vec<String>>> {
    match value {
        None => Some(None),
        Some(argv) => cx.argv(&join(p, key), argv, true).map(Some),
    }
}

/// A required absolute path key.
pub fn required_path(cx: &mut Cx, p: &str, key: &str, value: Option<&str>) -> Option<PathBuf> {
    cx.required(p, key, value)
        .and_then(|v| cx.absolute(&join(p, key), v))
}
