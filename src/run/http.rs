//! The small HTTP client under the `webhook` executor: one prepared POST
//! (a CI/CD endpoint that performs the rollback), sent within the plan's
//! deadline, reported like a step. Below the executors and the runner, so
//! neither imports the other for it.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::process::OUTPUT_LIMIT;
use crate::report::StepReport;
use crate::util::{error_chain, fmt_duration};

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
        format!(
            "POST {}{token} {}",
            crate::util::redact_url(&self.url),
            self.body
        )
    }
}

/// Send the request; the report has `["POST", url]` as argv, the answer's
/// body (bounded tail) as stdout and no exit code.
pub async fn post(request: &Request, deadline: Instant, limit: &str) -> StepReport {
    let started = Instant::now();
    let mut report = StepReport::new(vec![
        "POST".to_string(),
        crate::util::redact_url(&request.url),
    ]);
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
            crate::util::redact_url(&request.url),
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
