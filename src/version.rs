//! Versions: reading a target's live version, and how version names order
//! ([`order`], what the executors use to find the previous one).
//!
//! Reading: `version_command` (trimmed stdout),
//! `version_url` (plain-text body, or the string at `version_json_pointer`
//! in a JSON body), `version_query` (the `version_label` label of a PromQL
//! result), or the release a `symlink` target's `current` points to.
//!
//! A version that cannot be read is not a change: the worker keeps the last
//! one and logs the reason once.

pub mod order;

use std::time::Duration;

use crate::config::VersionSource;
use crate::execute;
use crate::sources::prometheus::Prometheus;

/// How long one version read may take.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest `version_url` body read.
pub const MAX_VERSION_BODY: usize = 64 * 1024;

/// Longest version string accepted (it lands in argv templates and subjects).
pub const MAX_VERSION_LEN: usize = 200;

/// Reads one target's version.
#[derive(Debug, Clone)]
pub struct VersionReader {
    source: Option<VersionSource>,
    client: reqwest::Client,
    prometheus: Option<Prometheus>,
}

impl VersionReader {
    /// Build with the shared HTTP client and Prometheus client.
    pub fn build(
        source: Option<VersionSource>,
        client: reqwest::Client,
        prometheus: Option<Prometheus>,
    ) -> VersionReader {
        VersionReader {
            source,
            client,
            prometheus,
        }
    }

    /// Whether a version source is configured at all.
    pub fn configured(&self) -> bool {
        self.source.is_some()
    }

    /// Read the live version now. `Ok(None)` when no source is configured.
    pub async fn read(&self) -> Result<Option<String>, String> {
        let v = match &self.source {
            None => return Ok(None),
            Some(VersionSource::Symlink(current)) => execute::symlink::live_release(current)
                .map_err(|e| format!("cannot read symlink {}: {e}", current.display()))?,
            Some(VersionSource::Command(argv)) => {
                let deadline = tokio::time::Instant::now() + VERSION_TIMEOUT;
                let report = crate::run::process::run_step(argv, deadline).await;
                match (report.ok, report.stdout.trim()) {
                    (true, v) if !v.is_empty() => v.to_string(),
                    (true, _) => return Err(format!("version_command {argv:?} printed nothing")),
                    (false, _) => {
                        return Err(format!(
                            "version_command {argv:?} failed: {}",
                            report.error.unwrap_or_default()
                        ))
                    }
                }
            }
            Some(VersionSource::Url { url, json_pointer }) => {
                self.read_url(url, json_pointer.as_deref()).await?
            }
            Some(VersionSource::Query { query, label, .. }) => {
                self.read_query(query, label).await?
            }
        };
        check(&v).map(Some)
    }

    async fn read_url(&self, url: &url::Url, pointer: Option<&str>) -> Result<String, String> {
        let fetch = async {
            let mut response = self
                .client
                .get(url.clone())
                .timeout(VERSION_TIMEOUT)
                .send()
                .await
                .map_err(|e| format!("version_url {url}: {e}"))?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| format!("version_url {url}: reading the body: {e}"))?
            {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_VERSION_BODY {
                    return Err(format!(
                        "version_url {url}: body larger than {MAX_VERSION_BODY} bytes"
                    ));
                }
            }
            if !status.is_success() {
                return Err(format!("version_url {url}: HTTP {status}"));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(VERSION_TIMEOUT, fetch)
            .await
            .map_err(|_| {
                format!(
                    "version_url {url}: no answer within {}",
                    crate::util::fmt_duration(VERSION_TIMEOUT)
                )
            })??;
        version_from_body(&body, pointer).map_err(|e| format!("version_url {url}: {e}"))
    }

    async fn read_query(&self, query: &str, label: &str) -> Result<String, String> {
        let prometheus = self
            .prometheus
            .as_ref()
            .ok_or("version_query needs [prometheus]")?;
        let series = prometheus
            .instant(query)
            .await
            .map_err(|e| format!("version_query {query:?}: {e}"))?;
        version_from_series(&series, label).map_err(|e| format!("version_query {query:?}: {e}"))
    }
}

/// The version in a `version_url` body: the trimmed text, or with a JSON
/// pointer the string (or number) it points at.
pub fn version_from_body(body: &[u8], pointer: Option<&str>) -> Result<String, String> {
    let Some(pointer) = pointer else {
        let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8 text".to_string())?;
        return Ok(text.trim().to_string());
    };
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("body is not JSON ({e}), but version_json_pointer is set"))?;
    match json.pointer(pointer) {
        None => Err(format!("JSON has nothing at {pointer:?}")),
        Some(serde_json::Value::String(s)) => Ok(s.trim().to_string()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(format!(
            "JSON at {pointer:?} is not a string or number: {other}"
        )),
    }
}

/// The version named by `label` on a query's series. Series that disagree
/// (a rollout in progress) are not a version yet.
pub fn version_from_series(
    series: &[crate::sources::prometheus::Series],
    label: &str,
) -> Result<String, String> {
    let mut versions: Vec<&str> = series
        .iter()
        .filter_map(|s| s.labels.get(label).map(String::as_str))
        .filter(|v| !v.is_empty())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    match versions.as_slice() {
        [] => Err(format!(
            "no series has a label {label:?} (set version_label)"
        )),
        [v] => Ok(v.to_string()),
        many => Err(format!(
            "series disagree on {label:?}: {} (a rollout in progress?)",
            many.join(", ")
        )),
    }
}

/// A version must be one non-empty line of reasonable length.
fn check(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("the version is empty".into());
    }
    if v.contains(['\n', '\r']) {
        return Err(format!(
            "the version is several lines: {:?}",
            v.chars().take(80).collect::<String>()
        ));
    }
    if v.len() > MAX_VERSION_LEN {
        return Err(format!(
            "the version is longer than {MAX_VERSION_LEN} characters: {:?}...",
            v.chars().take(40).collect::<String>()
        ));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::prometheus::Series;

    #[test]
    fn bodies_table() {
        let ok = |b: &str, p: Option<&str>| version_from_body(b.as_bytes(), p);
        assert_eq!(ok("v1.2.3\n", None), Ok("v1.2.3".into()));
        assert_eq!(
            ok(r#"{"build": {"version": "v2"}}"#, Some("/build/version")),
            Ok("v2".into())
        );
        assert_eq!(ok(r#"{"rev": 42}"#, Some("/rev")), Ok("42".into()));
        assert!(ok(r#"{"rev": 42}"#, Some("/nope"))
            .unwrap_err()
            .contains("nothing at \"/nope\""));
        assert!(ok("v1", Some("/v")).unwrap_err().contains("not JSON"));
        assert!(ok(r#"{"v": [1]}"#, Some("/v"))
            .unwrap_err()
            .contains("not a string"));
        assert!(check("a\nb").unwrap_err().contains("several lines"));
        assert!(check("").is_err());
    }

    #[test]
    fn series_table() {
        let s = |v: &str| Series {
            labels: [("version".to_string(), v.to_string())].into(),
            value: 1.0,
        };
        assert_eq!(
            version_from_series(&[s("v1"), s("v1")], "version"),
            Ok("v1".into())
        );
        assert!(version_from_series(&[s("v1"), s("v2")], "version")
            .unwrap_err()
            .contains("disagree"));
        assert!(version_from_series(&[s("v1")], "rev")
            .unwrap_err()
            .contains("no series has a label \"rev\""));
    }
}
