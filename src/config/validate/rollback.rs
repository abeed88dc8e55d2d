//! Validation of `[target.rollback]` and `[target.verify]`: executor kinds and their keys, steps, templates, verification gates.

use super::*;
use crate::execute::kinds;

pub(super) fn rollback(cx: &mut Cx, p: &str, raw: &RawRollback) -> Option<RollbackPlan> {
    let timeout = cx.duration(
        p,
        "timeout",
        raw.timeout.as_deref(),
        DEFAULT_ROLLBACK_TIMEOUT,
        true,
    );
    let after = cx.step_list(&join(p, "after"), raw.after.as_deref().unwrap_or_default());
    let pre = cx.step_list(&join(p, "pre"), raw.pre.as_deref().unwrap_or_default());
    let on_failure = cx.step_list(
        &join(p, "on_failure"),
        raw.on_failure.as_deref().unwrap_or_default(),
    );
    let cwd = match raw.cwd.as_deref() {
        None => Some(None),
        Some(c) => cx.absolute(&join(p, "cwd"), c).map(Some),
    };
    let env = cx.env(&join(p, "env"), raw.env.as_ref());
    let step_timeout = match raw.step_timeout.as_deref() {
        None => Some(None),
        Some(text) => cx
            .duration(p, "step_timeout", Some(text), "0s", true)
            .map(Some),
    };
    let kind_name = cx.required(p, "kind", raw.kind.as_deref())?;
    let kind = executor_kind(cx, p, kind_name, raw);
    Some(RollbackPlan {
        kind: kind?,
        timeout: timeout?,
        after: after?,
        pre: pre?,
        step_timeout: step_timeout?,
        on_failure: on_failure?,
        cwd: cwd?,
        env: env?,
    })
}

/// The executor of `[target.rollback]`: kind `name` (one of
/// [`kinds::NAMES`]) built from its own keys; another kind's key is
/// refused.
fn executor_kind(cx: &mut Cx, p: &str, name: &str, raw: &RawRollback) -> Option<ExecutorKind> {
    let Some(own) = kinds::keys_of(name) else {
        let names: Vec<String> = kinds::NAMES.iter().map(|n| format!("{n:?}")).collect();
        cx.err(
            join(p, "kind"),
            format!(
                "invalid rollback kind {name:?} (use one of {})",
                names.join(", ")
            ),
        );
        return None;
    };
    // In registration order, as the keys were always reported.
    for key in kinds::all_keys() {
        if raw.kind_keys.contains_key(key) && !own.contains(&key) {
            cx.err(
                join(p, key),
                format!("key {key} does not apply to rollback kind {name:?}"),
            );
        }
    }
    let keys: toml::Table = raw
        .kind_keys
        .iter()
        .filter(|(key, _)| own.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    ExecutorKind::build(cx, p, name, keys)
}

pub(super) fn verify(cx: &mut Cx, p: &str, raw: &RawVerify) -> Option<VerifyConfig> {
    let within = cx.duration(
        p,
        "within",
        raw.within.as_deref(),
        DEFAULT_VERIFY_WITHIN,
        true,
    );
    let url = match raw.url.as_deref() {
        None => Some(None),
        Some(u) => cx.http_url(&join(p, "url"), u).map(Some),
    };
    let expect_status = cx.status(&join(p, "expect_status"), raw.expect_status);
    if raw.expect_status.is_some() && raw.url.is_none() {
        cx.err(
            join(p, "expect_status"),
            "expect_status needs a url to check",
        );
    }
    let checks: Vec<Option<VerifyCheck>> = raw
        .checks
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| verify_check(cx, &format!("{}[{i}]", join(p, "checks")), c))
        .collect();
    let checks: Option<Vec<VerifyCheck>> = checks.into_iter().collect();
    let commands = cx.step_list(
        &join(p, "commands"),
        raw.commands.as_deref().unwrap_or_default(),
    );
    let rules = raw.rules.unwrap_or(true);
    let gates = raw.url.is_some()
        || raw.checks.as_ref().is_some_and(|c| !c.is_empty())
        || raw.commands.as_ref().is_some_and(|c| !c.is_empty());
    if !rules && !gates {
        cx.err(
            p,
            "verify has nothing to check: set url, checks, commands or rules = true",
        );
        return None;
    }
    Some(VerifyConfig {
        within: within?,
        url: url?,
        expect_status: expect_status?,
        rules,
        checks: checks?,
        commands: commands?,
    })
}

/// One `[[target.verify.checks]]` entry.
pub(super) fn verify_check(cx: &mut Cx, p: &str, raw: &RawCheck) -> Option<VerifyCheck> {
    let url = cx
        .required(p, "url", raw.url.as_deref())
        .and_then(|u| cx.http_url(&join(p, "url"), u));
    let expect_status = cx.status(&join(p, "expect_status"), raw.expect_status);
    let body_contains = match raw.body_contains.as_deref() {
        None => Some(None),
        Some(b) => cx.non_empty(&join(p, "body_contains"), b).map(Some),
    };
    let max_latency = match raw.max_latency.as_deref() {
        None => Some(None),
        Some(text) => cx
            .duration(p, "max_latency", Some(text), "0s", true)
            .map(Some),
    };
    Some(VerifyCheck {
        url: url?,
        expect_status: expect_status?,
        body_contains: body_contains?,
        max_latency: max_latency?,
    })
}
