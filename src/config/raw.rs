//! The raw serde layer: mirrors the TOML file, `deny_unknown_fields`
//! everywhere, strings where validation must check the value.
//!
//! serde stops at the first error, but an operator fixing a config wants
//! every problem at once. So the text is parsed to a [`toml::Table`] first,
//! and every section, window, target and rule is deserialized on its own,
//! key by key, so that each unknown key or wrongly typed value is reported
//! with its full key path (`target[0].rule[1].fooo: unknown key`).
//!
//! Every field is optional here; whether a key is required, and what its
//! default is, is decided by [`validate`](super::validate).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

pub(crate) use super::error::join;
use super::error::{ConfigError, ConfigErrors};
pub use step::{RawStep, RawStepTable};

pub mod step;

/// The whole file as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[daemon]`: process-wide settings.
    pub daemon: Option<RawDaemon>,
    /// `[prometheus]`: the default server Prometheus rules query, and its
    /// named servers (`[prometheus.servers.NAME]`).
    pub prometheus: Option<RawPrometheus>,
    /// `[notify]`: where notifications go.
    pub notify: Option<RawNotify>,
    /// `[[window]]`: release windows.
    #[serde(default)]
    pub window: Vec<RawWindow>,
    /// `[[target]]`: the watched services.
    #[serde(default)]
    pub target: Vec<RawTarget>,
    /// `[cluster]`: several rollbackd nodes coordinating through etcd.
    pub cluster: Option<RawCluster>,
}

/// `[cluster]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// etcd client URLs (`http://10.0.0.5:2379`).
    pub etcd: Option<Vec<String>>,
    /// Key prefix of everything this cluster stores.
    pub prefix: Option<String>,
    /// This node's name; absent: the hostname.
    pub node: Option<String>,
    /// Duration string: the ownership lease's TTL.
    pub lease_ttl: Option<String>,
    /// PEM file of the CA that signed etcd's server certificate.
    pub ca_file: Option<String>,
    /// PEM client certificate (with `key_file`).
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<String>,
    /// etcd user (with `password_file`).
    pub username: Option<String>,
    /// File holding the etcd user's password.
    pub password_file: Option<String>,
    /// Password in the config file: never accepted, parsed only to say so.
    pub password: Option<toml::Value>,
    /// `hold` or `act_alone`.
    pub on_etcd_down: Option<String>,
}

/// `[daemon]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// Journal, outbox and records directory.
    pub state_dir: Option<String>,
    /// `IP:PORT` of the HTTP API; checked by validation.
    pub listen: Option<String>,
    /// Duration string: how often rules are evaluated.
    pub poll_interval: Option<String>,
    /// Never execute, record and notify only.
    pub dry_run: Option<bool>,
    /// File holding the API bearer token.
    pub api_token_file: Option<String>,
    /// Base URL for links in email; must be http(s).
    pub public_url: Option<String>,
    /// Global cap on executed rollbacks per hour (all targets).
    pub max_rollbacks_per_hour: Option<i64>,
    /// Blast-radius guard: an integer (targets), a table `{ targets,
    /// fraction, within }`, or `0`/`false` to turn it off.
    pub max_simultaneous_breaches: Option<toml::Value>,
    /// Size string (`"64MiB"`): compact the journal past this size.
    pub journal_max_size: Option<String>,
    /// `text`, `json` or `journald`; absent: journald under systemd's
    /// journal (`JOURNAL_STREAM`), else text.
    pub log_format: Option<String>,
    /// Duration string: how long a pause without `--for` lasts.
    pub max_pause: Option<String>,
    /// Duration string: how much longer than its `for` a breach holds
    /// before the target acts (the blast-radius guard sees its peers).
    pub settle: Option<String>,
    /// Duration string: how long a removed target's state is kept.
    pub removed_target_memory: Option<String>,
}

/// `[prometheus]` (the default server) and each `[prometheus.servers.NAME]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrometheus {
    /// Prometheus base URL.
    pub url: Option<String>,
    /// Duration string: query timeout.
    pub timeout: Option<String>,
    /// Basic auth user (with `password_file`).
    pub username: Option<String>,
    /// File holding the basic auth password.
    pub password_file: Option<String>,
    /// File holding a bearer token.
    pub bearer_token_file: Option<String>,
    /// Extra request headers.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// Duration string: unreachable this long is one notification.
    pub blind_after: Option<String>,
    /// `[prometheus.servers.NAME]`, read by the walker (a `servers` key
    /// inside a named server is unknown).
    #[serde(skip)]
    pub servers: std::collections::BTreeMap<String, RawPrometheus>,
}

/// `[notify]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// Each outlet's tables by its key (`email`: `[notify.email]`,
    /// `webhook`: `[[notify.webhook]]`, see
    /// [`crate::notify::sections::KEYS`]), each key checked against the
    /// outlet's raw type (bad keys reported and left out); an absent
    /// section has no entry. Validation reads them into the outlet's types.
    #[serde(skip)]
    pub outlets: BTreeMap<String, Vec<toml::Table>>,
    /// Duration string: an undeliverable notification moves to `failed/` after this.
    pub give_up_after: Option<String>,
    /// Rate limit per target and channel.
    pub max_per_target_per_hour: Option<i64>,
    /// Rate limit over all targets, per channel.
    pub max_per_hour: Option<i64>,
}

/// `[target.notify]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetNotify {
    /// Recipients replacing `notify.email.to` for this target.
    pub to: Option<Vec<String>>,
    /// Recipients copied.
    pub cc: Option<Vec<String>>,
    /// Names of `[[notify.webhook]]` entries this target notifies.
    pub webhooks: Option<Vec<String>>,
    /// `info`, `warning` or `critical`.
    pub min_severity: Option<String>,
}

/// `[[window]]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Name for logs and records.
    pub name: Option<String>,
    /// Three-letter lowercase day names the window starts on.
    pub days: Option<Vec<String>>,
    /// Local start, `HH:MM`.
    pub start: Option<String>,
    /// Local end, `HH:MM`.
    pub end: Option<String>,
    /// IANA timezone name.
    pub timezone: Option<String>,
}

/// `[[target]]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Unique target name.
    pub name: Option<String>,
    /// argv whose trimmed stdout is the live version.
    pub version_command: Option<Vec<String>>,
    /// Version from an HTTP endpoint.
    pub version_url: Option<String>,
    /// Version from a Prometheus query.
    pub version_query: Option<String>,
    /// JSON pointer into `version_url`'s answer.
    pub version_json_pointer: Option<String>,
    /// Label of `version_query`'s result.
    pub version_label: Option<String>,
    /// The named Prometheus server `version_query` asks (default: `[prometheus]`).
    pub version_prometheus: Option<String>,
    /// Duration string: roll back only releases deployed within this long.
    pub only_within: Option<String>,
    /// Duration string: Unknown this long raises the blind notification.
    pub blind_after: Option<String>,
    /// Duration string: recovery-time objective (first bad evidence to
    /// verified recovery).
    pub rto: Option<String>,
    /// `none` or `required` (human confirmation).
    pub confirm: Option<String>,
    /// Duration string: how long to wait for a human.
    pub confirm_timeout: Option<String>,
    /// `rollback` or `escalate` when nobody answers.
    pub on_confirm_timeout: Option<String>,
    /// argv asked for an answer (exit 0 approve, 1 reject).
    pub confirm_command: Option<Vec<String>>,
    /// Duration string: quiet time after an incident.
    pub cooldown: Option<String>,
    /// Executed rollbacks allowed per hour.
    pub max_rollbacks_per_hour: Option<i64>,
    /// `hold`, `ok` or `breach`.
    pub no_data: Option<String>,
    /// `[[target.rule]]`.
    #[serde(default)]
    pub rule: Vec<RawRule>,
    /// `[target.rollback]`.
    pub rollback: Option<RawRollback>,
    /// `[target.verify]`.
    pub verify: Option<RawVerify>,
    /// `[target.notify]`.
    pub notify: Option<RawTargetNotify>,
}

/// `[[target.rule]]`: the keys every rule has. The keys of its source
/// kind are read by the kind's own file (`sources/KIND.rs`, its `Keys`);
/// here they are only checked to be some kind's key, of its type.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique within the target.
    pub name: Option<String>,
    /// The source kind (`crate::sources::NAMES`).
    pub source: Option<String>,
    /// Threshold: breach when the value is strictly above it.
    pub above: Option<f64>,
    /// Duration string: how long the condition must hold.
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// `hold`, `ok` or `breach`: overrides the target's `no_data`.
    pub no_data: Option<String>,
    /// `act` (default) or `shadow`: evaluated and recorded, never acts.
    pub mode: Option<String>,
    /// The source kinds' keys as written (each a key of some kind, of its
    /// type); validation says which do not apply to the rule's `source`.
    #[serde(skip)]
    pub keys: toml::Table,
}

/// `[target.rollback]`: the keys every executor kind has. The kind's own
/// keys (each kind's `Raw` in its `execute/KIND.rs`) are kept apart, as
/// written, in `kind_keys`, so that validation can say which key does not
/// apply to which kind instead of a bare "unknown key".
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollback {
    /// Executor kind.
    pub kind: Option<String>,
    /// Duration string bounding the whole plan.
    pub timeout: Option<String>,
    /// argv templates run once verification passed.
    pub after: Option<Vec<RawStep>>,
    /// argv templates run before the executor's steps.
    pub pre: Option<Vec<RawStep>>,
    /// argv templates run when the plan or its verification fails.
    pub on_failure: Option<Vec<RawStep>>,
    /// Working directory of every step.
    pub cwd: Option<String>,
    /// Environment added to every step.
    pub env: Option<BTreeMap<String, String>>,
    /// Duration string bounding each step.
    pub step_timeout: Option<String>,
    /// The keys of some executor kind, each of the type that kind reads
    /// (checked by the walker), whichever kind `kind` names.
    #[serde(skip)]
    pub kind_keys: toml::Table,
}

/// `[target.verify]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// Duration string: healthy within this window, or the rollback failed.
    pub within: Option<String>,
    /// URL that must answer `expect_status`.
    pub url: Option<String>,
    /// Status required from `url`.
    pub expect_status: Option<i64>,
    /// Whether every rule must be back to Ok too.
    pub rules: Option<bool>,
    /// HTTP checks that must all pass.
    pub checks: Option<Vec<RawCheck>>,
    /// Smoke-test argv steps that must exit 0.
    pub commands: Option<Vec<RawStep>>,
}

/// `[[target.verify.checks]]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    /// URL fetched.
    pub url: Option<String>,
    /// Status required (default any 2xx).
    pub expect_status: Option<i64>,
    /// Text the body must contain.
    pub body_contains: Option<String>,
    /// Duration string: slower fails.
    pub max_latency: Option<String>,
}

/// Parse TOML text into the raw layer; syntax and unknown-key errors name
/// the file and key path. Every problem in the file is reported, not just
/// the first.
pub fn parse(file: &str, text: &str) -> Result<RawConfig, ConfigErrors> {
    let (raw, errors) = parse_partial(file, text)?;
    if errors.is_empty() {
        Ok(raw)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Like [`parse`], but a file that is valid TOML always yields a
/// [`RawConfig`]: keys with problems are left out of it (an item that is
/// not a table at all becomes a default placeholder, so indices in key
/// paths stay right) and the problems are returned next to it. This lets
/// [`load_str`](super::load_str) report raw and validation problems
/// together. Only a TOML syntax error is returned as `Err`.
pub fn parse_partial(
    file: &str,
    text: &str,
) -> Result<(RawConfig, Vec<ConfigError>), ConfigErrors> {
    let root: toml::Table = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        let message = match e.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                let message = match text.get(span) {
                    Some(key) if message == "duplicate key" => format!("duplicate key {key}"),
                    _ => message,
                };
                format!("invalid TOML at line {line}, column {column}: {message}")
            }
            None => format!("invalid TOML: {message}"),
        };
        ConfigErrors::single(file, "", message)
    })?;
    let mut w = Walker {
        file,
        errors: Vec::new(),
    };
    let raw = w.config(root);
    Ok((raw, w.errors))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Walks the parsed table, collecting every problem with its key path.
struct Walker<'a> {
    file: &'a str,
    errors: Vec<ConfigError>,
}

impl Walker<'_> {
    fn err(&mut self, path: String, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            path,
            message: message.into(),
        });
    }

    fn config(&mut self, mut root: toml::Table) -> RawConfig {
        let daemon = root.remove("daemon");
        let prometheus = root.remove("prometheus");
        let notify = root.remove("notify");
        let window = root.remove("window");
        let target = root.remove("target");
        let cluster = root.remove("cluster");
        // Anything left over is unknown.
        let mut raw: RawConfig = self.flat("", root);
        raw.daemon = daemon.and_then(|v| self.table("daemon", v).map(|t| self.flat("daemon", t)));
        raw.prometheus = prometheus
            .and_then(|v| self.table("prometheus", v))
            .map(|t| self.prometheus(t));
        raw.notify = notify
            .and_then(|v| self.table("notify", v))
            .map(|t| self.notify(t));
        raw.window = self.array("window", window, |w, path, t| w.flat(path, t));
        raw.target = self.array("target", target, |w, path, t| w.target(path, t));
        raw.cluster =
            cluster.and_then(|v| self.table("cluster", v).map(|t| self.flat("cluster", t)));
        raw
    }

    /// `[prometheus]` and its `[prometheus.servers.NAME]` tables.
    fn prometheus(&mut self, mut t: toml::Table) -> RawPrometheus {
        let servers = t.remove("servers");
        let mut raw: RawPrometheus = self.flat("prometheus", t);
        let servers = servers.and_then(|v| self.table("prometheus.servers", v));
        for (name, v) in servers.into_iter().flatten() {
            let path = format!("prometheus.servers.{name}");
            if let Some(t) = self.table(&path, v) {
                let server = self.flat(&path, t);
                raw.servers.insert(name, server);
            }
        }
        raw
    }

    /// `[notify]`: its shared keys, and each outlet's table (or array of
    /// tables) with its keys checked against that outlet's raw type.
    fn notify(&mut self, mut t: toml::Table) -> RawNotify {
        let sections: Vec<(&str, bool, toml::Value)> = crate::notify::sections::KEYS
            .iter()
            .filter_map(|&(key, array)| t.remove(key).map(|v| (key, array, v)))
            .collect();
        let mut notify: RawNotify = self.flat("notify", t);
        for (key, array, value) in sections {
            let path = join("notify", key);
            let tables = if array {
                self.array(&path, Some(value), |w, path, t| w.outlet(key, path, t))
            } else {
                self.table(&path, value)
                    .map(|t| self.outlet(key, &path, t))
                    .into_iter()
                    .collect()
            };
            notify.outlets.insert(key.to_string(), tables);
        }
        notify
    }

    /// One table of outlet `outlet`: each key checked against the outlet's
    /// raw type, as [`Walker::flat`] does; bad keys are left out.
    fn outlet(&mut self, outlet: &str, path: &str, mut t: toml::Table) -> toml::Table {
        let keys: Vec<String> = t.keys().cloned().collect();
        for key in keys {
            if let Err(message) = crate::notify::sections::check_key(outlet, &key, &t[&key]) {
                self.err(join(path, &key), key_message(&message, &t[&key]));
                t.remove(&key);
            }
        }
        t
    }

    fn target(&mut self, path: &str, mut t: toml::Table) -> RawTarget {
        let rule = t.remove("rule");
        let rollback = t.remove("rollback");
        let verify = t.remove("verify");
        let notify = t.remove("notify");
        let mut target: RawTarget = self.flat(path, t);
        let notify_path = join(path, "notify");
        target.notify = notify
            .and_then(|v| self.table(&notify_path, v))
            .map(|t| self.flat(&notify_path, t));
        target.rule = self.array(&join(path, "rule"), rule, |w, path, t| w.rule(path, t));
        let rollback_path = join(path, "rollback");
        target.rollback = rollback
            .and_then(|v| self.table(&rollback_path, v))
            .map(|t| self.rollback(&rollback_path, t));
        let verify_path = join(path, "verify");
        target.verify = verify
            .and_then(|v| self.table(&verify_path, v))
            .map(|t| self.flat(&verify_path, t));
        target
    }

    /// `[target.rollback]`: its common keys, and the keys of executor
    /// kinds ([`crate::execute::kinds`]) type-checked against the kind that
    /// has them; any other key is unknown.
    fn rollback(&mut self, path: &str, t: toml::Table) -> RawRollback {
        let mut kind_keys = toml::Table::new();
        let mut rest = toml::Table::new();
        // Key by key, in the file's order, as `flat` reports them.
        for (key, value) in t {
            let error = match crate::execute::kinds::check_key(&key, &value) {
                None => match key_error::<RawRollback>(&key, &value) {
                    None => {
                        rest.insert(key, value);
                        continue;
                    }
                    Some(error) => error,
                },
                Some(Ok(())) => {
                    kind_keys.insert(key, value);
                    continue;
                }
                Some(Err(message)) => type_error(&message, &value),
            };
            self.err(join(path, &key), error);
        }
        let mut raw: RawRollback = self.flat(path, rest);
        raw.kind_keys = kind_keys;
        raw
    }

    /// `[[target.rule]]`: the source kinds' keys are set apart (a key of
    /// no kind, and a shared key, are left to [`Walker::flat`]).
    fn rule(&mut self, path: &str, mut t: toml::Table) -> RawRule {
        let mut keys = toml::Table::new();
        let names: Vec<String> = t.keys().cloned().collect();
        for key in names {
            let Some(check) = crate::sources::SourceSpec::check_key(&key, &t[&key]) else {
                continue;
            };
            let Some(value) = t.remove(&key) else {
                continue;
            };
            match check {
                Ok(()) => {
                    keys.insert(key, value);
                }
                Err(message) => self.err(join(path, &key), type_error(&message, &value)),
            }
        }
        let mut rule: RawRule = self.flat(path, t);
        rule.keys = keys;
        rule
    }

    /// A value that must be a table (`[section]`).
    fn table(&mut self, path: &str, value: toml::Value) -> Option<toml::Table> {
        match value {
            toml::Value::Table(t) => Some(t),
            other => {
                self.err(
                    path.to_string(),
                    format!(
                        "expected a table [{}], found {} {}",
                        dotted_header(path),
                        other.type_str(),
                        other
                    ),
                );
                None
            }
        }
    }

    /// A value that must be an array of tables (`[[section]]`); each table
    /// is read by `item` with its indexed path.
    fn array<T: Default>(
        &mut self,
        path: &str,
        value: Option<toml::Value>,
        mut item: impl FnMut(&mut Self, &str, toml::Table) -> T,
    ) -> Vec<T> {
        let items = match value {
            None => return Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(other) => {
                self.err(
                    path.to_string(),
                    format!(
                        "expected an array of tables [[{}]], found {}",
                        dotted_header(path),
                        other.type_str()
                    ),
                );
                return Vec::new();
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let item_path = format!("{path}[{i}]");
                match v {
                    toml::Value::Table(t) => item(self, &item_path, t),
                    other => {
                        self.err(
                            item_path,
                            format!("expected a table, found {} {}", other.type_str(), other),
                        );
                        T::default()
                    }
                }
            })
            .collect()
    }

    /// Deserialize one flat table into `T`, key by key, so that every
    /// unknown or mistyped key is reported; bad keys are left out.
    fn flat<T: DeserializeOwned + Default>(&mut self, path: &str, mut t: toml::Table) -> T {
        let keys: Vec<String> = t.keys().cloned().collect();
        for key in keys {
            if let Some(message) = key_error::<T>(&key, &t[&key]) {
                self.err(join(path, &key), message);
                t.remove(&key);
            }
        }
        match toml::Value::Table(t).try_into::<T>() {
            Ok(v) => v,
            Err(e) => {
                // Not expected once every key passed on its own; report
                // rather than panic.
                self.err(path.to_string(), e.message().to_string());
                T::default()
            }
        }
    }
}

/// What is wrong with `key = value` in a table read as `T`: an unknown
/// key, or a value of the wrong type; `None` when `T` reads it.
fn key_error<T: DeserializeOwned>(key: &str, value: &toml::Value) -> Option<String> {
    let mut one = toml::Table::new();
    one.insert(key.to_string(), value.clone());
    let e = toml::Value::Table(one).try_into::<T>().err()?;
    Some(key_message(e.message(), value))
}

/// serde's message about one key, as the raw layer reports it: "unknown
/// key", or what was expected and what was found.
fn key_message(message: &str, value: &toml::Value) -> String {
    if message.starts_with("unknown field") {
        "unknown key".to_string()
    } else {
        type_error(message, value)
    }
}

/// `target.rule` -> `target.rule`, used in "expected [[target.rule]]".
fn dotted_header(path: &str) -> String {
    // Drop indices: `target[0].rule` -> `target.rule`.
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// serde says `invalid type: integer `5`, expected a string`; say what was
/// expected and quote the value as written.
fn type_error(message: &str, value: &toml::Value) -> String {
    match message.split_once(", expected ") {
        Some((_, expected)) if message.starts_with("invalid type") => {
            format!(
                "expected {}, found {} {}",
                expected_name(expected),
                value.type_str(),
                value
            )
        }
        _ => format!("{message} (value {value})"),
    }
}

/// serde's names for what it expected, in TOML terms.
fn expected_name(serde: &str) -> &str {
    match serde {
        "f64" => "a number",
        "i64" => "an integer",
        "a boolean" => "a boolean (true or false)",
        "a sequence" => "an array",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<(String, String)> {
        match parse("t.toml", text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    #[test]
    fn syntax_error_is_one_error_with_line_and_column() {
        let e = parse("t.toml", "[daemon]\nlisten = \n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].path, "");
        assert!(e.0[0].message.contains("line 2, column"), "{e}");
        assert!(
            e.to_string().starts_with("t.toml: invalid TOML at line 2"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_key_names_the_key() {
        let e = parse("t.toml", "[daemon]\nlisten = \"a\"\nlisten = \"b\"\n").unwrap_err();
        assert_eq!(
            e.0[0].message,
            "invalid TOML at line 3, column 1: duplicate key listen"
        );
    }

    #[test]
    fn unknown_keys_are_reported_with_full_paths_everywhere() {
        let errs = errors(
            r#"
            colour = 1
            [daemon]
            listn = "x"
            [notify.email]
            form = "a@b"
            [[window]]
            nam = "w"
            [[target]]
            nme = "a"
              [[target.rule]]
              name = "r"
              [[target.rule]]
              fooo = 1
              barr = 2
              [target.rollback]
              knd = "command"
              [target.verify]
              withn = "5m"
            [[target]]
              [[target.rule]]
              fooo = 1
            "#,
        );
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "colour",
            "daemon.listn",
            "notify.email.form",
            "window[0].nam",
            "target[0].nme",
            "target[0].rule[1].fooo",
            "target[0].rule[1].barr",
            "target[0].rollback.knd",
            "target[0].verify.withn",
            "target[1].rule[0].fooo",
        ] {
            assert!(paths.contains(&want), "{want} missing from {errs:?}");
        }
        assert_eq!(errs.len(), 10, "{errs:?}");
        assert!(errs.iter().all(|(_, m)| m == "unknown key"), "{errs:?}");
    }

    #[test]
    fn wrong_types_name_the_key_and_value() {
        let errs = errors(
            r#"
            [daemon]
            poll_interval = 5
            dry_run = "yes"
            [[target]]
            name = "a"
            max_rollbacks_per_hour = "one"
              [[target.rule]]
              above = "high"
              [target.rollback]
              steps = [["ok"], "pm2 restart"]
            "#,
        );
        let find = |p: &str| {
            errs.iter()
                .find(|(path, _)| path == p)
                .unwrap_or_else(|| panic!("{p} missing from {errs:?}"))
                .1
                .clone()
        };
        assert_eq!(
            find("daemon.poll_interval"),
            "expected a string, found integer 5"
        );
        assert_eq!(
            find("daemon.dry_run"),
            r#"expected a boolean (true or false), found string "yes""#
        );
        assert!(find("target[0].max_rollbacks_per_hour").contains(r#""one""#));
        assert!(find("target[0].rule[0].above").contains("a number"));
        assert!(find("target[0].rollback.steps").contains("pm2 restart"));
        assert_eq!(errs.len(), 5, "{errs:?}");
    }

    #[test]
    fn sections_of_the_wrong_shape() {
        let errs = errors(
            r#"
            daemon = 5
            target = [1, { name = "b" }]
            [[window]]
            name = "w"
            "#,
        );
        assert_eq!(errs[0].0, "daemon");
        assert!(errs[0].1.contains("expected a table [daemon]"), "{errs:?}");
        assert_eq!(errs[1].0, "target[0]");
        assert_eq!(errs.len(), 2, "{errs:?}");

        let errs = errors("[target]\nname = \"a\"\n");
        assert_eq!(errs[0].0, "target");
        assert!(errs[0].1.contains("[[target]]"), "{errs:?}");
    }

    #[test]
    fn partial_parse_keeps_indices_and_good_keys() {
        let (raw, errs) =
            parse_partial("t.toml", "target = [1, { name = \"b\", bogus = 1 }]\n").unwrap();
        assert_eq!(raw.target.len(), 2);
        assert_eq!(raw.target[1].name.as_deref(), Some("b"));
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[1].path, "target[1].bogus");
    }
}
