//! The validation context every section and every plug-in kind checks its
//! keys with: the problems found so far (each with its key path) and the
//! helpers that read durations, URLs, argv steps and choices the same way
//! everywhere. A leaf of `config/`: it imports only `config::{duration,
//! raw}`, `run/` and `util`, so a kind's own file (an executor, a source,
//! an outlet) can hold its validation without reaching `config/mod.rs`.

use std::path::PathBuf;
use std::time::Duration;

use super::duration;
pub use super::error::join;
pub use super::error::{ConfigError, ConfigErrors, ConfigWarning};
use super::raw::step::RawStep;
use crate::run::step::Step;

/// The variables an argv template may use.
pub const TEMPLATE_VARIABLES: [&str; 5] = crate::run::template::VARIABLES;

/// `{lease}` is the etcd lease of the node owning the target: without
/// `[cluster]` there is none, and a step that fences with it would get an
/// empty token, so the config is refused instead.
pub const LEASE_WITHOUT_CLUSTER: &str = "{lease} is the cluster's fencing token and needs a [cluster] section; without one there is no lease to pass";

/// Validation context: the file name and the problems found so far.
pub struct Cx<'a> {
    /// The config file named in every error.
    pub file: &'a str,
    /// The errors found so far.
    pub errors: Vec<ConfigError>,
    /// Valid but probably not meant; reported by `check`, never fatal.
    pub warnings: Vec<ConfigWarning>,
    /// A `[prometheus]` section exists (Prometheus rules and `version_query` need it).
    pub has_prometheus: bool,
    /// The default server (`[prometheus]` itself) can be asked.
    pub prom_default: bool,
    /// The names of `[prometheus.servers.NAME]`.
    pub prom_servers: Vec<String>,
    /// A `[cluster]` section exists (`{lease}` needs it).
    pub has_cluster: bool,
}

impl Cx<'_> {
    /// Record a warning at `path`.
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Record an error at `path`.
    pub fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            path: path.into(),
            message: message.into(),
        });
    }

    /// One of a fixed set of words: `options[i].0` maps to `options[i].1`;
    /// `None` (key absent) is the first option. Anything else is an error
    /// listing the valid words.
    pub fn choice<T: Copy>(
        &mut self,
        p: &str,
        key: &str,
        value: Option<&str>,
        options: &[(&str, T)],
    ) -> Option<T> {
        let word = value.unwrap_or(options[0].0);
        if let Some((_, v)) = options.iter().find(|(w, _)| *w == word) {
            return Some(*v);
        }
        let words: Vec<String> = options.iter().map(|(w, _)| format!("{w:?}")).collect();
        let list = match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => words.join(""),
        };
        self.err(join(p, key), format!("invalid {key} {word:?} (use {list})"));
        None
    }

    /// A required key; reports it missing.
    pub fn required<'v, T: ?Sized>(
        &mut self,
        parent: &str,
        key: &str,
        value: Option<&'v T>,
    ) -> Option<&'v T> {
        if value.is_none() {
            self.err(join(parent, key), "required key is missing");
        }
        value
    }

    /// A duration with a default; `nonzero` where zero makes no sense.
    pub fn duration(
        &mut self,
        parent: &str,
        key: &str,
        value: Option<&str>,
        default: &str,
        nonzero: bool,
    ) -> Option<Duration> {
        let text = value.unwrap_or(default);
        match duration::parse(text) {
            Ok(d) if nonzero && d.is_zero() => {
                self.err(
                    join(parent, key),
                    format!("{key} = {text:?} must be greater than zero"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(message) => {
                self.err(join(parent, key), message);
                None
            }
        }
    }

    /// A non-empty string.
    pub fn non_empty(&mut self, path: &str, value: &str) -> Option<String> {
        if value.trim().is_empty() {
            self.err(path, "must not be empty");
            None
        } else {
            Some(value.to_string())
        }
    }

    /// An http(s) URL with a host.
    pub fn http_url(&mut self, path: &str, value: &str) -> Option<url::Url> {
        match url::Url::parse(value) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                self.err(
                    path,
                    format!("URL {value:?} must start with http:// or https://"),
                );
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                self.err(path, format!("URL {value:?} has no host"));
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                self.err(path, format!("invalid URL {value:?}: {e}"));
                None
            }
        }
    }

    /// An HTTP status code to expect.
    pub fn status(&mut self, path: &str, value: Option<i64>) -> Option<Option<u16>> {
        match value {
            None => Some(None),
            Some(s @ 100..=599) => Some(Some(s as u16)),
            Some(s) => {
                self.err(
                    path,
                    format!("expect_status = {s} is not an HTTP status code (100..599)"),
                );
                None
            }
        }
    }

    /// An absolute path.
    pub fn absolute(&mut self, path: &str, value: &str) -> Option<PathBuf> {
        let p = PathBuf::from(value);
        if p.is_absolute() {
            Some(p)
        } else {
            self.err(path, format!("{value:?} must be an absolute path"));
            None
        }
    }

    /// An argv run directly (no shell): at least a program. With
    /// `templates`, `{name}` placeholders must be known variables.
    pub fn argv(&mut self, path: &str, argv: &[String], templates: bool) -> Option<Vec<String>> {
        let mut ok = true;
        match argv.first() {
            None => {
                self.err(
                    path,
                    "empty command: give at least the program, e.g. [\"systemctl\", \"restart\", \"app\"]",
                );
                return None;
            }
            Some(program) if program.trim().is_empty() => {
                self.err(path, "program name (first element) is empty");
                ok = false;
            }
            Some(_) => {}
        }
        if templates {
            for arg in argv {
                for name in template_names(arg) {
                    if name == "lease" && !self.has_cluster {
                        self.err(path, LEASE_WITHOUT_CLUSTER);
                        ok = false;
                    } else if !TEMPLATE_VARIABLES.contains(&name) {
                        let allowed: Vec<String> = TEMPLATE_VARIABLES
                            .iter()
                            .map(|v| format!("{{{v}}}"))
                            .collect();
                        self.err(
                            path,
                            format!(
                                "unknown template variable {{{name}}} in argument {arg:?}; allowed: {}",
                                allowed.join(", ")
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
        // Never a value in a shell's script text or as the program: pass
        // it as ROLLBACKD_* or as a positional argument (run::script).
        if templates && ok {
            if let Some(m) = crate::run::template::misplaced(argv, &TEMPLATE_VARIABLES) {
                self.err(path, m.to_string());
                ok = false;
            }
        }
        ok.then(|| argv.to_vec())
    }

    /// A list of steps (plain argv or `{ argv, cwd, env, timeout }`), each
    /// checked at `path[i]`.
    pub fn step_list(&mut self, path: &str, list: &[RawStep]) -> Option<Vec<Step>> {
        let checked: Vec<Option<Step>> = list
            .iter()
            .enumerate()
            .map(|(i, raw)| self.step(&format!("{path}[{i}]"), raw))
            .collect();
        checked.into_iter().collect()
    }

    /// One step.
    pub fn step(&mut self, path: &str, raw: &RawStep) -> Option<Step> {
        let t = match raw {
            RawStep::Argv(argv) => return self.argv(path, argv, true).map(Step::from),
            RawStep::Table(t) => t,
        };
        let argv = self
            .required(path, "argv", t.argv.as_deref())
            .and_then(|a| self.argv(&join(path, "argv"), a, true));
        let cwd = match t.cwd.as_deref() {
            None => Some(None),
            Some(c) => self.absolute(&join(path, "cwd"), c).map(Some),
        };
        let env = self.env(&join(path, "env"), t.env.as_ref());
        let timeout = match t.timeout.as_deref() {
            None => Some(None),
            Some(text) => self
                .duration(path, "timeout", Some(text), "0s", true)
                .map(Some),
        };
        Some(Step {
            argv: argv?,
            cwd: cwd?,
            env: env?,
            timeout: timeout?,
        })
    }

    /// An `env` table: names a shell would accept (no `=`, not empty).
    pub fn env(
        &mut self,
        path: &str,
        env: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let env = env.cloned().unwrap_or_default();
        let mut ok = true;
        for (name, value) in &env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                self.err(
                    join(path, name),
                    format!("invalid environment variable name {name:?}"),
                );
                ok = false;
            }
        }
        ok.then_some(env)
    }

    /// A list of argv, each checked with [`Cx::argv`] at `path[i]`.
    pub fn argv_list(&mut self, path: &str, list: &[Vec<String>]) -> Option<Vec<Vec<String>>> {
        let checked: Vec<Option<Vec<String>>> = list
            .iter()
            .enumerate()
            .map(|(i, argv)| self.argv(&format!("{path}[{i}]"), argv, true))
            .collect();
        checked.into_iter().collect()
    }
}

/// `{name}` placeholders in an argument, read by the one template grammar
/// execution uses ([`crate::run::template`]).
pub fn template_names(arg: &str) -> Vec<&str> {
    crate::run::template::names(arg)
}
