//! `kind = "webhook"`: POST a JSON body to a CI/CD endpoint that performs the
//! rollback. Success is a 2xx answer within the step's time. The bearer
//! token is read from `token_file` at the moment of the call and never
//! appears in a record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::process::{substitute_json, OUTPUT_LIMIT};
use super::runner::{Act, Budget, Runner};
use super::verify::error_chain;
use super::{ExecResult, StepReport, Vars};
use crate::util::fmt_duration;

/// One prepared request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Endpoint.
    pub url: url::Url,
    /// Read when the request is sent.
    pub token_file: Option<PathBuf>,
    /// The JSON body, variables substituted.
    pub body: String,
}

impl Request {
    /// `POST URL (bearer token from F) BODY`, for the drill.
    pub fn describe(&self) -> String {
        let token = self
            .token_file
            .as_ref()
            .map(|f| format!(" (bearer token from {})", f.display()))
            .unwrap_or_default();
        format!("POST {}{token} {}", self.url, self.body)
    }
}

/// The keys of a `webhook` rollback.
#[derive(Debug, Clone, Copy)]
pub struct Webhook<'a> {
    /// Endpoint.
    pub url: &'a url::Url,
    /// Token file.
    pub token_file: Option<&'a Path>,
    /// Body template, or `None` for the default body.
    pub body: Option<&'a str>,
}

impl Webhook<'_> {
    /// Build the request; a missing variable stops before anything is sent.
    pub fn prepare(&self, vars: &Vars) -> Result<Vec<Act>, String> {
        let body = match self.body {
            Some(template) => substitute_json(template, vars)
                .map_err(|e| format!("webhook body cannot be built: {e}; nothing was sent"))?,
            None => serde_json::json!({
                "target": vars.target,
                "incident": vars.incident,
                "from_version": vars.from_version,
                "to_version": vars.to_version,
            })
            .to_string(),
        };
        Ok(vec![Act::Post(Request {
            url: self.url.clone(),
            token_file: self.token_file.map(Path::to_path_buf),
            body,
        })])
    }

    /// Call the endpoint.
    pub async fn run(&self, vars: &Vars, budget: Budget) -> ExecResult {
        let r = Runner::new(budget, vars);
        let acts = self.prepare(vars);
        r.finish(acts).await
    }
}

/// Send the request; the report has `["POST", url]` as argv, the answer's
/// body (bounded tail) as stdout and no exit code.
pub async fn post(request: &Request, deadline: Instant, limit: &str) -> StepReport {
    let started = Instant::now();
    let mut report = StepReport {
        argv: vec!["POST".to_string(), request.url.to_string()],
        exit_code: None,
        ok: false,
        duration: Duration::ZERO,
        stdout: String::new(),
        stderr: String::new(),
        error: None,
        leftovers: Vec::new(),
    };
    let budget = deadline.saturating_duration_since(started);
    if budget.is_zero() {
        report.error = Some("not started: the plan deadline had already passed".into());
        return report;
    }
    match send(request, budget).await {
        Ok((status, body)) => {
            report.stdout = tail(&body);
            report.ok = status.is_success();
            if !report.ok {
                let line = body
                    .lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(|l| format!(": {}", l.chars().take(300).collect::<String>()))
                    .unwrap_or_default();
                report.error = Some(format!("HTTP {status} (expected 2xx){line}"));
            }
        }
        Err(SendError::Timeout) => {
            report.error = Some(format!(
                "timed out after {} ({limit}); request abandoned",
                fmt_duration(Duration::from_secs(budget.as_secs_f64().round() as u64))
            ));
        }
        Err(SendError::Other(e)) => report.error = Some(e),
    }
    report.duration = started.elapsed();
    report
}

enum SendError {
    Timeout,
    Other(String),
}

async fn send(
    request: &Request,
    budget: Duration,
) -> Result<(reqwest::StatusCode, String), SendError> {
    let client = reqwest::Client::builder()
        .timeout(budget)
        .no_proxy()
        .build()
        .map_err(|e| SendError::Other(format!("cannot build the HTTP client: {e}")))?;
    let mut builder = client
        .post(request.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(request.body.clone());
    if let Some(file) = &request.token_file {
        let token = tokio::fs::read_to_string(file).await.map_err(|e| {
            SendError::Other(format!("cannot read token_file {}: {e}", file.display()))
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(SendError::Other(format!(
                "token_file {} is empty",
                file.display()
            )));
        }
        builder = builder.bearer_auth(token);
    }
    let work = async {
        let response = builder.send().await?;
        let status = response.status();
        let body = response.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    // The client timeout covers the request; this also bounds a slow body.
    match tokio::time::timeout(budget, work).await {
        Err(_) => Err(SendError::Timeout),
        Ok(Err(e)) if e.is_timeout() => Err(SendError::Timeout),
        Ok(Err(e)) => Err(SendError::Other(format!(
            "POST {} failed: {}",
            request.url,
            error_chain(&e)
        ))),
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// At most [`OUTPUT_LIMIT`] bytes: the tail, on a character boundary.
fn tail(text: &str) -> String {
    if text.len() <= OUTPUT_LIMIT {
        return text.to_string();
    }
    let mut start = text.len() - OUTPUT_LIMIT + 100;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!(
        "[output truncated: {} bytes in all, only the tail is kept]\n{}",
        text.len(),
        &text[start..]
    )
}
