//! Where a target's live version is read from: a leaf of `config/`, so
//! that an executor kind that can tell the live version itself (symlink,
//! git) names its default source in its own file.

use std::path::PathBuf;

/// Where a target's live version is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionSource {
    /// argv run directly; trimmed stdout is the version.
    Command(Vec<String>),
    /// For `symlink` targets without an explicit source: the name of the
    /// release directory `current` points to.
    Symlink(PathBuf),
    /// `version_url`: HTTP GET; the body (plain text), or the string at
    /// `json_pointer` in a JSON body.
    Url {
        /// The URL fetched.
        url: url::Url,
        /// RFC 6901 pointer such as `/build/version`.
        json_pointer: Option<String>,
    },
    /// `version_query`: the value of `label` on the query's result series.
    Query {
        /// PromQL, e.g. `app_build_info{job="app"}`.
        query: String,
        /// The label naming the version (default `version`).
        label: String,
        /// `version_prometheus`: the named server asked; `None` is `[prometheus]`.
        server: Option<String>,
    },
}
