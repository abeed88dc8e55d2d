//! TOML fragments of test configs, so that a test spells out only the keys
//! it is about. Concatenate them in config order: `daemon`, `email`, then
//! per target `target`, its rules, its rollback and its verify. An empty
//! `&str` for an optional key leaves the key out (the daemon's default).

use std::path::{Path, PathBuf};

/// `key = "value"` on its own line, or nothing when `value` is empty.
fn key(indent: &str, name: &str, value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!("{indent}{name} = \"{value}\"\n")
    }
}

/// `[daemon]`: state in `dir/state`, the API on `127.0.0.1:api_port`, a
/// poll every `poll_interval`; `extra` lines follow.
pub fn daemon(dir: &Path, api_port: u16, poll_interval: &str, extra: &str) -> String {
    format!(
        r#"
[daemon]
state_dir = "{dir}/state"
listen = "127.0.0.1:{api_port}"
poll_interval = "{poll_interval}"
{extra}
"#,
        dir = dir.display()
    )
}

/// `[notify.email]` from rollbackd to `to`, written to `outbox`.
pub fn email(outbox: &Path, to: &[&str]) -> String {
    let to: Vec<String> = to.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"
[notify.email]
from = "rollbackd <rollbackd@test.invalid>"
to = [{to}]
outbox_dir = "{outbox}"
"#,
        to = to.join(", "),
        outbox = outbox.display()
    )
}

/// `[[target]]` `name` with its `cooldown` (optional); `extra` lines
/// (target keys, `[target.notify]`) follow.
pub fn target(name: &str, cooldown: &str, extra: &str) -> String {
    format!(
        "\n[[target]]\nname = \"{name}\"\n{}{extra}\n",
        key("", "cooldown", cooldown)
    )
}

/// The `health` rule: a probe of `url`, breached while more than half of
/// the probes in `window` (optional) fail for `for_`; each probe waits
/// `timeout` (optional).
pub fn health_rule(url: &str, timeout: &str, window: &str, for_: &str) -> String {
    format!(
        r#"
  [[target.rule]]
  name = "health"
  source = "probe"
  url = "{url}"
{}{}  above = 0.5
  for = "{for_}"
"#,
        key("  ", "timeout", timeout),
        key("  ", "window", window),
    )
}

/// The `health` rule on the demo service at `port` as the daemon tests
/// use it: 1 s timeout, 3 s window (it holds `min_samples` probes even
/// when each one times out, as `check` requires), `for = "1s"`.
pub fn demo_health_rule(port: u16) -> String {
    health_rule(
        &format!("http://127.0.0.1:{port}/api/health"),
        "1s",
        "3s",
        "1s",
    )
}

/// The `paged` rule: breached while an alert named `alertname` fires,
/// for `for_` (optional).
pub fn paged_rule(alertname: &str, for_: &str) -> String {
    format!(
        r#"
  [[target.rule]]
  name = "paged"
  source = "alertmanager"
  match = {{ alertname = "{alertname}" }}
{}"#,
        key("  ", "for", for_)
    )
}

/// A `[[notify.webhook]]` to `url` in `format`; `extra` lines follow.
pub fn webhook(url: &str, format: &str, extra: &str) -> String {
    format!("\n[[notify.webhook]]\nurl = \"{url}\"\nformat = \"{format}\"\n{extra}")
}

/// `[target.rollback]` of kind `command` running `steps` (a TOML array of
/// argv) within `timeout` (optional).
pub fn command_rollback(timeout: &str, steps: &str) -> String {
    format!(
        "\n  [target.rollback]\n  kind = \"command\"\n{}  steps = {steps}\n",
        key("  ", "timeout", timeout)
    )
}

/// `[target.rollback]` of kind `symlink` over `dir/current` and
/// `dir/releases` within `timeout`; `extra` lines (e.g. `restart`) follow.
pub fn symlink_rollback(dir: &Path, timeout: &str, extra: &str) -> String {
    format!(
        r#"
  [target.rollback]
  kind = "symlink"
  current = "{dir}/current"
  releases = "{dir}/releases"
  timeout = "{timeout}"
  {extra}
"#,
        dir = dir.display()
    )
}

/// `[target.verify]` within `within`, checking `url` (optional).
pub fn verify(within: &str, url: &str) -> String {
    format!(
        "\n  [target.verify]\n  within = \"{within}\"\n{}",
        key("  ", "url", url)
    )
}

/// `[daemon]` on `api_port` polling every 200 ms (`extra` lines follow)
/// and `[notify.email]` to admin@example.com in `dir/state/outbox`: the
/// head of most daemon tests' configs.
pub fn base(dir: &Path, api_port: u16, daemon_extra: &str) -> String {
    daemon(dir, api_port, "200ms", daemon_extra)
        + &email(&dir.join("state/outbox"), &["admin@example.com"])
}

/// `api_token_file = ...` for `[daemon]`, with `token` written to
/// `dir/api-token`; nothing (an open API) without one.
pub fn api_token(dir: &Path, token: Option<&str>) -> String {
    let Some(token) = token else {
        return String::new();
    };
    let file = dir.join("api-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    format!("api_token_file = \"{}\"", file.display())
}

/// Target `name` (cooldown 1m, `extra` target lines) on the demo service
/// at `port` with its releases in `dir`: the `health` probe rule
/// (`for_`), a symlink rollback within 20 s, verified within 10 s.
pub fn demo_target(name: &str, dir: &Path, port: u16, extra: &str, for_: &str) -> String {
    let url = format!("http://127.0.0.1:{port}/api/health");
    [
        target(name, "1m", extra),
        health_rule(&url, "1s", "3s", for_),
        symlink_rollback(dir, "20s", ""),
        verify("10s", &url),
    ]
    .concat()
}

/// Write `text` to `dir/rollbackd.toml` and return that path.
pub fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rollbackd.toml");
    std::fs::write(&path, text).unwrap();
    path
}
