//! Validation of `[target.rollback]` and `[target.verify]`: executor kinds and their keys, steps, templates, verification gates.

use super::*;

/// Kind-specific keys of every executor kind, including kinds not built yet.
pub(super) const KIND_KEYS: &[(&str, &[&str])] = &[
    ("command", &["steps"]),
    ("symlink", &["current", "releases", "restart"]),
    (
        "kubernetes",
        &[
            "deployment",
            "namespace",
            "context",
            "to_revision",
            "kubectl",
        ],
    ),
    (
        "blue_green",
        &[
            "service",
            "namespace",
            "context",
            "selector_key",
            "colors",
            "kubectl",
        ],
    ),
    ("docker", &["container", "image", "run_args", "docker"]),
    ("git", &["repo", "build", "restart"]),
    ("webhook", &["url", "token_file", "body"]),
];

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
    if !KIND_KEYS.iter().any(|(name, _)| *name == kind_name) {
        let names: Vec<String> = KIND_KEYS.iter().map(|(n, _)| format!("{n:?}")).collect();
        cx.err(
            join(p, "kind"),
            format!(
                "invalid rollback kind {kind_name:?} (use one of {})",
                names.join(", ")
            ),
        );
        return None;
    }
    let own: &[&str] = KIND_KEYS
        .iter()
        .find(|(name, _)| *name == kind_name)
        .map_or(&[], |(_, keys)| keys);
    for key in raw.kind_keys_set() {
        if !own.contains(&key) {
            cx.err(
                join(p, key),
                format!("key {key} does not apply to rollback kind {kind_name:?}"),
            );
        }
    }
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

/// A required non-empty string key.
pub(super) fn required_text(
    cx: &mut Cx,
    p: &str,
    key: &str,
    value: Option<&str>,
) -> Option<String> {
    cx.required(p, key, value)
        .and_then(|v| cx.non_empty(&join(p, key), v))
}

/// An optional non-empty string key.
pub(super) fn optional_text(
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

/// A program key (`kubectl`, `docker`) with its default.
pub(super) fn program(cx: &mut Cx, p: &str, key: &str, value: Option<&str>) -> Option<String> {
    optional_text(cx, p, key, value).map(|v| v.unwrap_or_else(|| key.to_string()))
}

/// An optional argv template key.
pub(super) fn optional_argv(
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

/// The kind-specific keys of `[target.rollback]`.
pub(super) fn executor_kind(
    cx: &mut Cx,
    p: &str,
    kind: &str,
    raw: &RawRollback,
) -> Option<ExecutorKind> {
    match kind {
        "command" => {
            let steps = match cx.required(p, "steps", raw.steps.as_deref()) {
                None => None,
                Some([]) => {
                    cx.err(
                        join(p, "steps"),
                        "no steps: give at least one command, e.g. steps = [[\"systemctl\", \"restart\", \"app\"]]",
                    );
                    None
                }
                Some(list) => cx.step_list(&join(p, "steps"), list),
            };
            Some(ExecutorKind::Command { steps: steps? })
        }
        "symlink" => {
            let current = cx
                .required(p, "current", raw.current.as_deref())
                .and_then(|c| cx.absolute(&join(p, "current"), c));
            let releases = cx
                .required(p, "releases", raw.releases.as_deref())
                .and_then(|r| cx.absolute(&join(p, "releases"), r));
            let restart = optional_argv(cx, p, "restart", raw.restart.as_deref());
            Some(ExecutorKind::Symlink {
                current: current?,
                releases: releases?,
                restart: restart?,
            })
        }
        "kubernetes" => {
            let deployment = required_text(cx, p, "deployment", raw.deployment.as_deref());
            let namespace = required_text(cx, p, "namespace", raw.namespace.as_deref());
            let context = optional_text(cx, p, "context", raw.context.as_deref());
            let to_revision = match raw.to_revision {
                None => Some(None),
                Some(n) if n >= 1 => Some(Some(n as u64)),
                Some(n) => {
                    cx.err(
                        join(p, "to_revision"),
                        format!("to_revision = {n} is not a revision (revisions start at 1)"),
                    );
                    None
                }
            };
            let kubectl = program(cx, p, "kubectl", raw.kubectl.as_deref());
            Some(ExecutorKind::Kubernetes {
                deployment: deployment?,
                namespace: namespace?,
                context: context?,
                to_revision: to_revision?,
                kubectl: kubectl?,
            })
        }
        "blue_green" => {
            let service = required_text(cx, p, "service", raw.service.as_deref());
            let namespace = required_text(cx, p, "namespace", raw.namespace.as_deref());
            let context = optional_text(cx, p, "context", raw.context.as_deref());
            let selector_key = match raw.selector_key.as_deref() {
                None => Some("version".to_string()),
                Some(k) if !k.trim().is_empty() && !k.contains(['=', ',', ' ']) => {
                    Some(k.to_string())
                }
                Some(k) => {
                    cx.err(
                        join(p, "selector_key"),
                        format!("selector_key {k:?} is not a label key"),
                    );
                    None
                }
            };
            let colors = match raw.colors.as_deref() {
                None => Some(["blue".to_string(), "green".to_string()]),
                Some([a, b]) if !a.trim().is_empty() && !b.trim().is_empty() && a != b => {
                    Some([a.clone(), b.clone()])
                }
                Some(other) => {
                    cx.err(
                        join(p, "colors"),
                        format!("colors = {other:?} must be two different non-empty names, e.g. [\"blue\", \"green\"]"),
                    );
                    None
                }
            };
            let kubectl = program(cx, p, "kubectl", raw.kubectl.as_deref());
            Some(ExecutorKind::BlueGreen {
                service: service?,
                namespace: namespace?,
                context: context?,
                selector_key: selector_key?,
                colors: colors?,
                kubectl: kubectl?,
            })
        }
        "docker" => {
            let container = required_text(cx, p, "container", raw.container.as_deref());
            let image = required_text(cx, p, "image", raw.image.as_deref()).and_then(|image| {
                let name = image.rsplit('/').next().unwrap_or(&image);
                if name.contains([':', '@']) {
                    cx.err(
                        join(p, "image"),
                        format!("image {image:?} must not carry a tag or digest: the executor adds :{{to_version}}"),
                    );
                    None
                } else {
                    Some(image)
                }
            });
            let run_args = match raw.run_args.as_deref() {
                None => Some(Vec::new()),
                Some([]) => Some(Vec::new()),
                // Checked like an argv, with a placeholder program.
                Some(args) => {
                    let mut argv = vec!["docker".to_string()];
                    argv.extend_from_slice(args);
                    cx.argv(&join(p, "run_args"), &argv, true)
                        .map(|_| args.to_vec())
                }
            };
            let docker = program(cx, p, "docker", raw.docker.as_deref());
            Some(ExecutorKind::Docker {
                container: container?,
                image: image?,
                run_args: run_args?,
                docker: docker?,
            })
        }
        "git" => {
            let repo = cx
                .required(p, "repo", raw.repo.as_deref())
                .and_then(|r| cx.absolute(&join(p, "repo"), r));
            let build = cx.argv_list(&join(p, "build"), raw.build.as_deref().unwrap_or_default());
            let restart = optional_argv(cx, p, "restart", raw.restart.as_deref());
            Some(ExecutorKind::Git {
                repo: repo?,
                build: build?,
                restart: restart?,
            })
        }
        "webhook" => {
            let url = cx
                .required(p, "url", raw.url.as_deref())
                .and_then(|u| cx.http_url(&join(p, "url"), u));
            let token_file = match raw.token_file.as_deref() {
                None => Some(None),
                Some(f) => cx.absolute(&join(p, "token_file"), f).map(Some),
            };
            let body = match &raw.body {
                None => Some(None),
                Some(value) => webhook_body(cx, &join(p, "body"), value).map(Some),
            };
            Some(ExecutorKind::Webhook {
                url: url?,
                token_file: token_file?,
                body: body?,
            })
        }
        _ => None,
    }
}

/// The webhook body template as JSON text: a string as written, or a table
/// turned into JSON. It must be valid JSON once each variable is replaced
/// by a string's content, so variables belong inside JSON strings.
pub(super) fn webhook_body(cx: &mut Cx, path: &str, value: &toml::Value) -> Option<String> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Table(_) => match serde_json::to_string(value) {
            Ok(s) => s,
            Err(e) => {
                cx.err(path, format!("cannot turn the body table into JSON: {e}"));
                return None;
            }
        },
        other => {
            cx.err(
                path,
                format!(
                    "body must be a JSON string or a table, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    let mut ok = true;
    let mut probe = text.clone();
    for name in template_names(&text) {
        if name == "lease" && !cx.has_cluster {
            cx.err(path, LEASE_WITHOUT_CLUSTER);
            ok = false;
        } else if TEMPLATE_VARIABLES.contains(&name) {
            probe = probe.replace(&format!("{{{name}}}"), "x");
        } else {
            cx.err(
                path,
                format!(
                    "unknown template variable {{{name}}} in the body; allowed: {{target}}, {{from_version}}, {{to_version}}, {{incident}}, {{lease}}"
                ),
            );
            ok = false;
        }
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&probe) {
        cx.err(
            path,
            format!("body is not valid JSON (variables go inside JSON strings, e.g. {{\"version\": \"{{to_version}}\"}}): {e}"),
        );
        ok = false;
    }
    ok.then_some(text)
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
