//! Verification gates: the verify URL (one GET, healthy when it answers the
//! expected status, any 2xx by default, within the client's timeout), the
//! HTTP `checks` (status, body text, latency) and the smoke-test
//! `commands` (exit 0). The daemon runs them on each poll while verifying
//! and reports every result to the decision machine; it decides.

use std::time::Duration;

use crate::config::{Step, VerifyCheck, VerifyConfig};
use crate::run::process::{run_step_with, Context};
use crate::run::template::{substitute, Vars};
use crate::util::{display_argv, fmt_duration};

/// Body bytes read for `body_contains`; the rest is not looked at.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Bytes of a smoke command's output kept in the record.
pub const OUTPUT_KEPT: usize = 2 * 1024;

/// Longest a smoke command runs without a `timeout` of its own.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

pub use crate::report::CheckReport;

/// Run every gate of `verify` once: the URL, each check, each command
/// (with the incident's template variables), in that order.
pub async fn run_gates(
    client: &reqwest::Client,
    verify: &VerifyConfig,
    vars: &Vars,
) -> Vec<CheckReport> {
    let mut out = Vec::new();
    if let Some(url) = &verify.url {
        let started = std::time::Instant::now();
        let (ok, detail) = check_url(client, url, verify.expect_status).await;
        out.push(CheckReport {
            check: format!("GET {}", crate::util::redact_url(url)),
            ok,
            detail,
            latency: Some(started.elapsed()),
            output: String::new(),
        });
    }
    for check in &verify.checks {
        out.push(run_check(client, check).await);
    }
    for step in &verify.commands {
        out.push(run_command(step, vars).await);
    }
    out
}

/// One HTTP check: status, then body text, then latency.
pub async fn run_check(client: &reqwest::Client, check: &VerifyCheck) -> CheckReport {
    let started = std::time::Instant::now();
    let mut report = CheckReport {
        check: format!("GET {}", crate::util::redact_url(&check.url)),
        ok: false,
        detail: String::new(),
        latency: None,
        output: String::new(),
    };
    let mut response = match client.get(check.url.clone()).send().await {
        Ok(r) => r,
        Err(e) => {
            report.detail = crate::util::error_chain(&e);
            return report;
        }
    };
    let status = response.status().as_u16();
    let mut body = Vec::new();
    if check.body_contains.is_some() {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() >= BODY_LIMIT {
                        body.truncate(BODY_LIMIT);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    report.detail = format!(
                        "HTTP {status}, reading the body failed: {}",
                        crate::util::error_chain(&e)
                    );
                    return report;
                }
            }
        }
    }
    let took = started.elapsed();
    report.latency = Some(took);
    let status_ok = match check.expect_status {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    let took_text = fmt_duration(Duration::from_millis(took.as_millis() as u64));
    if !status_ok {
        let expected = check
            .expect_status
            .map_or_else(|| "2xx".to_string(), |s| s.to_string());
        report.detail = format!("HTTP {status} (expected {expected}) in {took_text}");
        return report;
    }
    if let Some(text) = &check.body_contains {
        if !String::from_utf8_lossy(&body).contains(text.as_str()) {
            report.detail =
                format!("HTTP {status} in {took_text}, but the body does not contain {text:?}");
            return report;
        }
    }
    if let Some(max) = check.max_latency {
        if took > max {
            report.detail = format!(
                "HTTP {status} in {took_text}, slower than max_latency {}",
                fmt_duration(max)
            );
            return report;
        }
    }
    report.ok = true;
    report.detail = format!("HTTP {status} in {took_text}");
    report
}

/// One smoke-test command: passes on exit 0; its output is kept.
pub async fn run_command(step: &Step, vars: &Vars) -> CheckReport {
    let mut report = CheckReport {
        check: display_argv(&step.argv),
        ok: false,
        detail: String::new(),
        latency: None,
        output: String::new(),
    };
    let argv = match substitute(&step.argv, vars) {
        Ok(argv) => argv,
        Err(e) => {
            report.detail = format!("cannot run: {e}");
            return report;
        }
    };
    report.check = display_argv(&argv);
    let (cwd, env) = Context::default().for_step(step.cwd.as_deref(), &step.env);
    let limit = step.timeout.unwrap_or(COMMAND_TIMEOUT);
    let deadline = tokio::time::Instant::now() + limit;
    let run = run_step_with(&argv, deadline, "step timeout", cwd.as_deref(), &env);
    let ran = crate::run::process::with_vars(vars, run).await;
    report.latency = Some(ran.duration);
    report.ok = ran.ok;
    report.detail = match &ran.error {
        None => format!(
            "exit 0 in {}",
            fmt_duration(Duration::from_millis(ran.duration.as_millis() as u64))
        ),
        Some(e) => e.clone(),
    };
    let mut output = ran.stdout.clone();
    if !ran.stderr.is_empty() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&ran.stderr);
    }
    if output.len() > OUTPUT_KEPT {
        let mut cut = output.len() - OUTPUT_KEPT;
        while !output.is_char_boundary(cut) {
            cut += 1;
        }
        output = format!("[...]{}", &output[cut..]);
    }
    report.output = output;
    report
}

/// Check the URL once. Returns whether it is healthy and a detail for the
/// record (`HTTP 200 in 12ms`, `connection refused`, ...).
pub async fn check_url(
    client: &reqwest::Client,
    url: &url::Url,
    expect_status: Option<u16>,
) -> (bool, String) {
    let started = std::time::Instant::now();
    match client.get(url.clone()).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let healthy = match expect_status {
                Some(want) => status == want,
                None => response.status().is_success(),
            };
            if healthy {
                let ms = started.elapsed().as_millis();
                (true, format!("HTTP {status} in {ms}ms"))
            } else {
                let expected = expect_status.map_or_else(|| "2xx".to_string(), |s| s.to_string());
                (false, format!("HTTP {status} (expected {expected})"))
            }
        }
        Err(e) => (false, crate::util::error_chain(&e)),
    }
}

/// One line for the verification gates: the only gate's own detail, else
/// how many pass and what fails.
pub fn summary(checks: &[CheckReport]) -> String {
    if let [only] = checks {
        return only.detail.clone();
    }
    let failing: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    if failing.is_empty() {
        format!("all {} gates pass", checks.len())
    } else {
        format!(
            "{} of {} gates pass; failing: {}",
            checks.len() - failing.len(),
            checks.len(),
            failing.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chain_joins_and_dedups() {
        let e = E(
            "error sending request",
            Some(Box::new(E(
                "connect",
                Some(Box::new(E("connection refused", None))),
            ))),
        );
        assert_eq!(
            crate::util::error_chain(&e),
            "error sending request: connect: connection refused"
        );
        let e = E(
            "timed out: operation timed out",
            Some(Box::new(E("operation timed out", None))),
        );
        assert_eq!(
            crate::util::error_chain(&e),
            "timed out: operation timed out"
        );
    }
}
