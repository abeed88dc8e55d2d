//! [`ExecutorKind`]: one variant per executor kind, holding that kind's
//! `Config`, and the one place it is dispatched. The variants come from the
//! registration list (`executor_kinds!` in `execute/mod.rs`, one line per
//! kind); every method here is generated from that list, so a kind is
//! added by its own file and that one line, with no `_ =>` arm that would
//! give it a default.
//!
//! Below `config/` in the sense that matters: this file and the kind files
//! import `config::{cx, raw::step, version_source}`, never `config/mod.rs`
//! or the raw walker, which name this enum.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::time::Instant;

use super::kind::{ExecError, Identity, Kind, VersionCheckError};
use crate::config::cx::Cx;
use crate::config::version_source::VersionSource;
use crate::report::ExecResult;
use crate::run::plan::{Act, Budget, Runner};
use crate::run::process::Context;
use crate::run::template::Vars;

/// Generates [`ExecutorKind`] and its dispatch from the registration list.
macro_rules! define_executor_kind {
    ($($variant:ident($module:ident),)*) => {
        /// One executor kind with its keys (`[target.rollback] kind`).
        #[derive(Debug, Clone, PartialEq)]
        pub enum ExecutorKind {
            $(
                #[doc = concat!("`kind = \"", stringify!($module), "\"`: see [`super::", stringify!($module), "::Config`].")]
                $variant(super::$module::Config),
            )*
        }

        /// Every kind's `kind` value, in registration order (the order of
        /// "use one of ...").
        pub const NAMES: &[&str] = &[$(<super::$module::Config as Kind>::NAME,)*];

        /// The keys of kind `name`; `None` for no such kind.
        pub fn keys_of(name: &str) -> Option<&'static [&'static str]> {
            $(
                if name == <super::$module::Config as Kind>::NAME {
                    return Some(<super::$module::Config as Kind>::KEYS);
                }
            )*
            None
        }

        /// Every kind's keys, each once, in registration order.
        pub fn all_keys() -> Vec<&'static str> {
            let mut keys: Vec<&'static str> = Vec::new();
            $(
                for key in <super::$module::Config as Kind>::KEYS {
                    if !keys.contains(key) {
                        keys.push(key);
                    }
                }
            )*
            keys
        }

        /// Whether `value` has the type of `key` in the first kind that has
        /// that key: `None` when no kind has it (an unknown key), else
        /// serde's message when the type is wrong.
        pub fn check_key(key: &str, value: &toml::Value) -> Option<Result<(), String>> {
            let mut one = toml::Table::new();
            one.insert(key.to_string(), value.clone());
            $(
                if <super::$module::Config as Kind>::KEYS.contains(&key) {
                    return Some(
                        toml::Value::Table(one)
                            .try_into::<<super::$module::Config as Kind>::Raw>()
                            .map(drop)
                            .map_err(|e| e.message().to_string()),
                    );
                }
            )*
            None
        }

        impl ExecutorKind {
            /// Validate the keys of kind `name` (already known to exist;
            /// `keys` holds only its own) under key path `p`.
            pub fn build(cx: &mut Cx, p: &str, name: &str, keys: toml::Table) -> Option<ExecutorKind> {
                $(
                    if name == <super::$module::Config as Kind>::NAME {
                        let raw = match toml::Value::Table(keys).try_into() {
                            Ok(raw) => raw,
                            Err(e) => {
                                // Not expected once every key passed on
                                // its own; report rather than panic.
                                cx.err(p, e.message().to_string());
                                return None;
                            }
                        };
                        return <super::$module::Config as Kind>::build(cx, p, raw)
                            .map(ExecutorKind::$variant);
                    }
                )*
                None
            }

            /// The `kind` key's value, for records and logs.
            pub fn name(&self) -> &'static str {
                match self {
                    $(ExecutorKind::$variant(_) => <super::$module::Config as Kind>::NAME,)*
                }
            }

            /// See [`Kind::VERSIONS_ARE_NAMES`].
            pub fn versions_are_names(&self) -> bool {
                match self {
                    $(ExecutorKind::$variant(_) => <super::$module::Config as Kind>::VERSIONS_ARE_NAMES,)*
                }
            }

            /// See [`Kind::uses_var`].
            pub fn uses_var(&self, var: &str) -> Vec<String> {
                match self {
                    $(ExecutorKind::$variant(k) => k.uses_var(var),)*
                }
            }

            /// See [`Kind::finds_own_version`].
            pub fn finds_own_version(&self) -> bool {
                match self {
                    $(ExecutorKind::$variant(k) => k.finds_own_version(),)*
                }
            }

            /// See [`Kind::version_source`].
            pub fn version_source(&self) -> Option<VersionSource> {
                match self {
                    $(ExecutorKind::$variant(k) => k.version_source(),)*
                }
            }

            /// See [`Kind::identity`].
            pub fn identity(&self, target: &str, cwd: Option<&Path>, env: &BTreeMap<String, String>) -> Identity {
                match self {
                    $(ExecutorKind::$variant(k) => k.identity(target, cwd, env),)*
                }
            }

            /// See [`Kind::secret_files`].
            pub fn secret_files(&self) -> Vec<(&'static str, PathBuf)> {
                match self {
                    $(ExecutorKind::$variant(k) => k.secret_files(),)*
                }
            }

            /// See [`Kind::programs`].
            pub fn programs(&self) -> Vec<String> {
                match self {
                    $(ExecutorKind::$variant(k) => k.programs(),)*
                }
            }

            /// See [`Kind::scripts`].
            pub fn scripts(&self) -> Vec<&[String]> {
                match self {
                    $(ExecutorKind::$variant(k) => k.scripts(),)*
                }
            }

            /// See [`Kind::resolve`].
            pub fn resolve(&self, vars: &mut Vars) -> Result<(), String> {
                match self {
                    $(ExecutorKind::$variant(k) => k.resolve(vars),)*
                }
            }

            /// See [`Kind::prepare`].
            pub async fn prepare(&self, vars: &Vars, r: &mut Runner) -> Result<Vec<Act>, ExecError> {
                match self {
                    $(ExecutorKind::$variant(k) => k.prepare(vars, r).await,)*
                }
            }

            /// See [`Kind::run`].
            pub async fn run(&self, context: &Context, vars: &Vars, budget: Budget) -> ExecResult {
                match self {
                    $(ExecutorKind::$variant(k) => k.run(context, vars, budget).await,)*
                }
            }

            /// See [`Kind::check_version`].
            pub async fn check_version(&self, version: &str, deadline: Instant) -> Result<(), VersionCheckError> {
                match self {
                    $(ExecutorKind::$variant(k) => k.check_version(version, deadline).await,)*
                }
            }

            /// See [`Kind::go_to`].
            pub fn go_to(&mut self, version: &str) -> String {
                match self {
                    $(ExecutorKind::$variant(k) => k.go_to(version),)*
                }
            }
        }
    };
}

executor_kinds!(define_executor_kind);
