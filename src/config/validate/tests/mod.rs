//! The tests of config validation, one file per section, and the
//! config builder they share.

use super::*;
use crate::config::{load_str, VersionSource};

mod cluster;
mod daemon;
mod errors;
mod notify;
mod prometheus;
mod rollback;
mod target;

const RULE: &str = r#"
        name = "health"
        source = "probe"
        url = "http://127.0.0.1:3000/health"
        above = 0.5
    "#;
const ROLLBACK: &str = r#"
        kind = "command"
        steps = [["systemctl", "restart", "web"]]
    "#;

/// A config built from parts; a part left out gets a valid default.
/// Parts: `top` (before everything), `daemon`, `target`, `rule`,
/// `rollback`, `verify`, `after` (after the first target).
fn config(parts: &[(&str, &str)]) -> String {
    let part = |name: &str, default: &'static str| {
        parts
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(default.to_string(), |(_, v)| v.to_string())
    };
    let verify = match parts.iter().find(|(n, _)| *n == "verify") {
        Some((_, v)) => format!("[target.verify]\n{v}"),
        None => String::new(),
    };
    format!(
        "{top}\n[daemon]\n{daemon}\n[[target]]\nname = \"web\"\n{target}\n\
             [[target.rule]]\n{rule}\n[target.rollback]\n{rollback}\n{verify}\n{after}\n",
        top = part("top", ""),
        daemon = part("daemon", ""),
        target = part("target", ""),
        rule = part("rule", RULE),
        rollback = part("rollback", ROLLBACK),
        after = part("after", ""),
    )
}

fn errors(text: &str) -> Vec<ConfigError> {
    match load_str("rollbackd.toml", text) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}
