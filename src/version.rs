//! Versions: reading a target's live version, and how version names order
//! ([`order`], what the executors use to find the previous one).
//!
//! Reading: `version_command` (trimmed stdout),
//! `version_url` (plain-text body, or the string at `version_json_pointer`
//! in a JSON body), `version_query` (the `version_label` label of a PromQL
//! result), or the release a `symlink` target's `current` points to.
//!
//! A version that cannot be read is not a change: the worker keeps the last
//! one and logs the reason once. A version that was read but is outside the
//! version charset ([`name`]: what `trigger --to-version` accepts) is an
//! *unknown version*: the target's version becomes `unknown version "RAW"`
//! (escaped; status and the record show it), and it is never substituted
//! into a step.

pub mod live;
pub mod name;
pub mod order;

use std::time::Duration;

use crate::config::VersionSource;
use crate::sources::prometheus::Prometheus;
pub use name::NotAVersion;

/// How long one version read may take.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest `version_url` body read.
pub const MAX_VERSION_BODY: usize = 64 * 1024;

/// Longest version string accepted (it lands in argv templates and subjects).
pub const MAX_VERSION_LEN: usize = name::MAX_LEN;

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
    ///
    /// `E` is the caller's error: [`VersionError`], or its text where the
    /// caller keeps the last error as text to log it once (the daemon's
    /// worker).
    pub async fn read(&self) -> Result<Option<String>, VersionError> {
        let v = match &self.source {
            None => return Ok(None),
            Some(VersionSource::Symlink(current)) => {
                live::live_release(current).map_err(|error| VersionError::Symlink {
                    current: current.clone(),
                    error: error.to_string(),
                })?
            }
            Some(VersionSource::Command(argv)) => {
                let deadline = tokio::time::Instant::now() + VERSION_TIMEOUT;
                let report = crate::run::process::run_step(argv, deadline).await;
                match (report.ok, report.stdout.trim()) {
                    (true, v) if !v.is_empty() => v.to_string(),
                    (true, _) => return Err(VersionError::CommandSilent { argv: argv.clone() }),
                    (false, _) => {
                        return Err(VersionError::CommandFailed {
                            argv: argv.clone(),
                            error: report.error.unwrap_or_default(),
                        })
                    }
                }
            }
            Some(VersionSource::Url { url, json_pointer }) => self
                .read_url(url, json_pointer.as_deref())
                .await
                .map_err(|problem| VersionError::Url {
                    url: url.clone(),
                    problem,
                })?,
            Some(VersionSource::Query { query, label, .. }) => {
                self.read_query(query, label).await?
            }
        };
        Ok(check(&v).map(Some)?)
    }

    async fn read_url(&self, url: &url::Url, pointer: Option<&str>) -> Result<String, UrlProblem> {
        let fetch = async {
            let mut response = self
                .client
                .get(url.clone())
                .timeout(VERSION_TIMEOUT)
                .send()
                .await
                .map_err(|e| UrlProblem::Request(crate::util::error_chain(&e)))?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| UrlProblem::Body(crate::util::error_chain(&e)))?
            {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_VERSION_BODY {
                    return Err(UrlProblem::TooLarge);
                }
            }
            if !status.is_success() {
                return Err(UrlProblem::Status(status));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(VERSION_TIMEOUT, fetch)
            .await
            .map_err(|_| UrlProblem::Timeout)??;
        Ok(version_from_body(&body, pointer)?)
    }

    async fn read_query(&self, query: &str, label: &str) -> Result<String, VersionError> {
        let prometheus = self.prometheus.as_ref().ok_or(VersionError::NoPrometheus)?;
        let in_query = |problem: String| VersionError::Query {
            query: query.to_string(),
            problem,
        };
        let series = prometheus
            .instant(query)
            .await
            .map_err(|e| in_query(e.to_string()))?;
        version_from_series(&series, label).map_err(|e| in_query(e.to_string()))
    }
}

/// Why the live version could not be read, naming the source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VersionError {
    /// The `symlink` target's `current` cannot be read.
    #[error("cannot read symlink {}: {error}", current.display())]
    Symlink {
        /// The symlink.
        current: std::path::PathBuf,
        /// Why.
        error: String,
    },
    /// `version_command` succeeded without printing anything.
    #[error("version_command {argv:?} printed nothing")]
    CommandSilent {
        /// The command.
        argv: Vec<String>,
    },
    /// `version_command` failed.
    #[error("version_command {argv:?} failed: {error}")]
    CommandFailed {
        /// The command.
        argv: Vec<String>,
        /// Its exit status and last stderr line.
        error: String,
    },
    /// `version_url` gave no version.
    #[error("version_url {}: {problem}", crate::util::redact_url(url))]
    Url {
        /// The URL.
        url: url::Url,
        /// What went wrong.
        problem: UrlProblem,
    },
    /// `version_query` without a `[prometheus]` server.
    #[error("version_query needs [prometheus]")]
    NoPrometheus,
    /// `version_query` gave no version.
    #[error("version_query {query:?}: {problem}")]
    Query {
        /// The PromQL query.
        query: String,
        /// What went wrong.
        problem: String,
    },
    /// What the source gave is not a usable version.
    #[error(transparent)]
    Invalid(#[from] InvalidVersion),
}

/// Why `version_url` gave no version.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UrlProblem {
    /// The request failed.
    #[error("{0}")]
    Request(String),
    /// Reading the body failed.
    #[error("reading the body: {0}")]
    Body(String),
    /// The body is larger than [`MAX_VERSION_BODY`].
    #[error("body larger than {MAX_VERSION_BODY} bytes")]
    TooLarge,
    /// Not a 2xx answer.
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    /// No answer within [`VERSION_TIMEOUT`].
    #[error("no answer within {}", crate::util::fmt_duration(VERSION_TIMEOUT))]
    Timeout,
    /// The body holds no version.
    #[error(transparent)]
    Content(#[from] BodyError),
}

/// Why a `version_url` body holds no version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Without a JSON pointer the body must be text.
    #[error("body is not UTF-8 text")]
    NotText,
    /// With a JSON pointer the body must be JSON.
    #[error("body is not JSON ({0}), but version_json_pointer is set")]
    NotJson(String),
    /// The pointer points at nothing.
    #[error("JSON has nothing at {0:?}")]
    Nothing(String),
    /// The pointer points at something other than a string or number.
    #[error("JSON at {pointer:?} is not a string or number: {found}")]
    NotAVersion {
        /// `version_json_pointer`.
        pointer: String,
        /// What is there.
        found: String,
    },
}

/// Why a `version_query` result names no version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    /// No series carries the label.
    #[error("no series has a label {0:?} (set version_label)")]
    NoLabel(String),
    /// Series name different versions.
    #[error("series disagree on {label:?}: {} (a rollout in progress?)", versions.iter().map(|v| name::escaped(v)).collect::<Vec<_>>().join(", "))]
    Disagree {
        /// `version_label`.
        label: String,
        /// The versions named.
        versions: Vec<String>,
    },
}

/// What the source gave is not a usable version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidVersion {
    /// Nothing: no version yet (the last one is kept).
    #[error("the version is empty")]
    Empty,
    /// Outside the version charset ([`name`]): an *unknown version*. The
    /// target's version becomes [`InvalidVersion::shown`], which is never
    /// substituted into a step.
    #[error("{shown}: {why}; it is never passed to a step")]
    NotAName {
        /// `unknown version "RAW"`, escaped ([`name::unknown`]).
        shown: String,
        /// What is wrong with it.
        why: name::NotAVersion,
    },
}

impl InvalidVersion {
    /// What the target's version becomes: `unknown version "RAW"` for a
    /// value outside the charset (status and the record show it, escaped),
    /// `None` for nothing at all.
    pub fn shown(&self) -> Option<&str> {
        match self {
            InvalidVersion::Empty => None,
            InvalidVersion::NotAName { shown, .. } => Some(shown),
        }
    }
}

impl VersionError {
    /// The [`InvalidVersion::shown`] text when the source answered with
    /// something outside the version charset.
    pub fn unknown_version(&self) -> Option<&str> {
        match self {
            VersionError::Invalid(e) => e.shown(),
            _ => None,
        }
    }
}

/// The version in a `version_url` body: the trimmed text, or with a JSON
/// pointer the string (or number) it points at.
pub fn version_from_body(body: &[u8], pointer: Option<&str>) -> Result<String, BodyError> {
    let Some(pointer) = pointer else {
        let text = std::str::from_utf8(body).map_err(|_| BodyError::NotText)?;
        return Ok(text.trim().to_string());
    };
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    match json.pointer(pointer) {
        None => Err(BodyError::Nothing(pointer.to_string())),
        Some(serde_json::Value::String(s)) => Ok(s.trim().to_string()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(BodyError::NotAVersion {
            pointer: pointer.to_string(),
            found: other.to_string(),
        }),
    }
}

/// The version named by `label` on a query's series. Series that disagree
/// (a rollout in progress) are not a version yet.
pub fn version_from_series(
    series: &[crate::sources::prometheus::Series],
    label: &str,
) -> Result<String, SeriesError> {
    let mut versions: Vec<&str> = series
        .iter()
        .filter_map(|s| s.labels.get(label).map(String::as_str))
        .filter(|v| !v.is_empty())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    match versions.as_slice() {
        [] => Err(SeriesError::NoLabel(label.to_string())),
        [v] => Ok(v.to_string()),
        many => Err(SeriesError::Disagree {
            label: label.to_string(),
            versions: many.iter().map(|v| v.to_string()).collect(),
        }),
    }
}

/// A version is a name of the version charset ([`name::check`]); anything
/// else the source said is an unknown version.
pub fn check(v: &str) -> Result<String, InvalidVersion> {
    match name::check(v) {
        Ok(()) => Ok(v.to_string()),
        Err(name::NotAVersion::Empty) => Err(InvalidVersion::Empty),
        Err(why) => Err(InvalidVersion::NotAName {
            shown: name::unknown(v),
            why,
        }),
    }
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
            .to_string()
            .contains("nothing at \"/nope\""));
        assert!(ok("v1", Some("/v"))
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        assert!(ok(r#"{"v": [1]}"#, Some("/v"))
            .unwrap_err()
            .to_string()
            .contains("not a string"));
        assert_eq!(check(""), Err(InvalidVersion::Empty));
        assert_eq!(check("v1.2"), Ok("v1.2".into()));
    }

    #[test]
    fn hostile_versions_are_unknown() {
        // (what the source said, shown as)
        let cases = [
            (
                "v2$(touch /tmp/x)",
                r#"unknown version "v2$(touch /tmp/x)""#,
            ),
            ("-rf", r#"unknown version "-rf""#),
            ("~root", r#"unknown version "~root""#),
            ("v1\nv2", r#"unknown version "v1\nv2""#),
            ("a b", r#"unknown version "a b""#),
        ];
        for (raw, shown) in cases {
            let e = check(raw).unwrap_err();
            assert_eq!(e.shown(), Some(shown), "{raw:?}");
            let e = VersionError::Invalid(e);
            assert_eq!(e.unknown_version(), Some(shown));
            assert!(e.to_string().starts_with(shown), "{e}");
            assert!(
                e.to_string().ends_with("it is never passed to a step"),
                "{e}"
            );
        }
        let long = "v".repeat(MAX_VERSION_LEN + 1);
        assert!(check(&long)
            .unwrap_err()
            .shown()
            .unwrap()
            .ends_with("\"..."));
        // Trimmed bodies: a trailing newline is not part of the version.
        assert_eq!(version_from_body(b"v1.2.3\n", None), Ok("v1.2.3".into()));
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
            .to_string()
            .contains("disagree"));
        assert!(version_from_series(&[s("v1")], "rev")
            .unwrap_err()
            .to_string()
            .contains("no series has a label \"rev\""));
    }
}
