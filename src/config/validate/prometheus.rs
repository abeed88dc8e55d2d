//! Validation of `[prometheus]` servers, Prometheus rules (`query`, baselines, traffic guard, `step`) and version sources.

use super::*;
use crate::sources::prometheus::{promql, server_ref};

/// `[prometheus]` (the default server) and `[prometheus.servers.NAME]`.
/// `[prometheus]` may go without a `url` only when named servers exist;
/// it then sets nothing else (no key is inherited by the named servers).
#[allow(clippy::type_complexity)]
pub(super) fn prometheus_servers(
    cx: &mut Cx,
    raw: Option<&RawPrometheus>,
) -> (
    Option<Option<PrometheusConfig>>,
    Option<std::collections::BTreeMap<String, PrometheusConfig>>,
) {
    let Some(raw) = raw else {
        return (Some(None), Some(Default::default()));
    };
    let default = if raw.url.is_none() && !raw.servers.is_empty() {
        for (key, set) in [
            ("timeout", raw.timeout.is_some()),
            ("username", raw.username.is_some()),
            ("password_file", raw.password_file.is_some()),
            ("bearer_token_file", raw.bearer_token_file.is_some()),
            ("headers", raw.headers.is_some()),
            ("blind_after", raw.blind_after.is_some()),
        ] {
            if set {
                cx.err(
                    join("prometheus", key),
                    format!(
                        "{key} applies to the default server, which has no url: set prometheus.url, \
                         or move {key} to each [prometheus.servers.NAME]"
                    ),
                );
            }
        }
        Some(None)
    } else {
        prometheus(cx, "prometheus", raw).map(Some)
    };
    let mut servers = std::collections::BTreeMap::new();
    let mut ok = true;
    for (name, server) in &raw.servers {
        let p = format!("prometheus.servers.{name}");
        if name == crate::config::DEFAULT_PROMETHEUS {
            cx.err(
                p,
                "the name \"default\" means [prometheus] itself; choose another name",
            );
            ok = false;
        } else if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            cx.err(
                p,
                format!("invalid server name {name:?} (use letters, digits, '_' and '-')"),
            );
            ok = false;
        } else if let Some(c) = prometheus(cx, &p, server) {
            servers.insert(name.clone(), c);
        } else {
            ok = false;
        }
    }
    (default, ok.then_some(servers))
}

/// `[prometheus]` or `[prometheus.servers.NAME]` at `p`.
pub(super) fn prometheus(cx: &mut Cx, p: &str, raw: &RawPrometheus) -> Option<PrometheusConfig> {
    let url = cx
        .required(p, "url", raw.url.as_deref())
        .and_then(|u| cx.http_url(&join(p, "url"), u));
    let timeout = cx.duration(
        p,
        "timeout",
        raw.timeout.as_deref(),
        DEFAULT_PROMETHEUS_TIMEOUT,
        true,
    );
    let blind_after = cx.duration(
        p,
        "blind_after",
        raw.blind_after.as_deref(),
        DEFAULT_BLIND_AFTER,
        true,
    );
    let file = |cx: &mut Cx, key: &str, v: &str| cx.absolute(&join(p, key), v);
    let auth = match (
        raw.username.as_deref(),
        raw.password_file.as_deref(),
        raw.bearer_token_file.as_deref(),
    ) {
        (None, None, None) => Some(None),
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            cx.err(
                join(p, "bearer_token_file"),
                "use either basic auth (username, password_file) or bearer_token_file, not both",
            );
            None
        }
        (None, None, Some(t)) => file(cx, "bearer_token_file", t)
            .map(|token_file| Some(PrometheusAuth::Bearer { token_file })),
        (Some(u), Some(f), None) => {
            let username = cx.non_empty(&join(p, "username"), u);
            let password_file = file(cx, "password_file", f);
            Some(Some(PrometheusAuth::Basic {
                username: username?,
                password_file: password_file?,
            }))
        }
        (Some(_), None, None) => {
            cx.err(join(p, "password_file"), "username needs password_file");
            None
        }
        (None, Some(_), None) => {
            cx.err(join(p, "username"), "password_file needs username");
            None
        }
    };
    let mut headers = Vec::new();
    let mut headers_ok = true;
    for (name, value) in raw.headers.iter().flatten() {
        let path = format!("{p}.headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            cx.err(path, format!("invalid HTTP header name {name:?}"));
            headers_ok = false;
        } else if reqwest::header::HeaderValue::from_str(value).is_err() {
            cx.err(
                path,
                format!("invalid value for header {name:?}: control characters or non-ASCII"),
            );
            headers_ok = false;
        } else if name.eq_ignore_ascii_case("authorization")
            && auth.as_ref().is_some_and(Option::is_some)
        {
            cx.err(
                path,
                "Authorization is set by username/password_file or bearer_token_file already",
            );
            headers_ok = false;
        } else {
            headers.push((name.clone(), value.clone()));
        }
    }
    Some(PrometheusConfig {
        url: url?,
        timeout: timeout?,
        auth: auth?,
        headers: headers_ok.then_some(headers)?,
        blind_after: blind_after?,
    })
}

/// `version_url` (+ `version_json_pointer`) or `version_query` (+
/// `version_label`); at most one version source per target.
pub(super) fn version_source(
    cx: &mut Cx,
    p: &str,
    raw: &RawTarget,
) -> Option<Option<crate::config::VersionSource>> {
    let set: Vec<&str> = [
        ("version_command", raw.version_command.is_some()),
        ("version_url", raw.version_url.is_some()),
        ("version_query", raw.version_query.is_some()),
    ]
    .iter()
    .filter(|(_, s)| *s)
    .map(|(k, _)| *k)
    .collect();
    if set.len() > 1 {
        cx.err(
            join(p, set[1]),
            format!(
                "set only one of {} (the live version comes from one place)",
                set.join(", ")
            ),
        );
        return None;
    }
    let mut ok = true;
    if raw.version_json_pointer.is_some() && raw.version_url.is_none() {
        cx.err(
            join(p, "version_json_pointer"),
            "version_json_pointer needs version_url",
        );
        ok = false;
    }
    if raw.version_prometheus.is_some() && raw.version_query.is_none() {
        cx.err(
            join(p, "version_prometheus"),
            "version_prometheus needs version_query",
        );
        ok = false;
    }
    if raw.version_label.is_some() && raw.version_query.is_none() {
        cx.err(
            join(p, "version_label"),
            "version_label needs version_query",
        );
        ok = false;
    }
    let pointer = match raw.version_json_pointer.as_deref() {
        Some(ptr) if !ptr.is_empty() && !ptr.starts_with('/') => {
            cx.err(
                join(p, "version_json_pointer"),
                format!(
                    "invalid JSON pointer {ptr:?}: it starts with '/', e.g. \"/build/version\""
                ),
            );
            return None;
        }
        other => other.map(str::to_string),
    };
    if !ok {
        return None;
    }
    if let Some(u) = raw.version_url.as_deref() {
        let url = cx.http_url(&join(p, "version_url"), u)?;
        return Some(Some(crate::config::VersionSource::Url {
            url,
            json_pointer: pointer,
        }));
    }
    if let Some(q) = raw.version_query.as_deref() {
        if !cx.has_prometheus {
            cx.err(
                join(p, "version_query"),
                "version_query needs a [prometheus] section with the server's url",
            );
            return None;
        }
        let query = promql(cx, &join(p, "version_query"), q);
        let label = match raw.version_label.as_deref() {
            None => Some(DEFAULT_VERSION_LABEL.to_string()),
            Some(l) if valid_label_name(l) => Some(l.to_string()),
            Some(l) => {
                cx.err(
                    join(p, "version_label"),
                    format!("invalid label name {l:?} (letters, digits and '_', not starting with a digit)"),
                );
                None
            }
        };
        let server = server_ref(
            cx,
            p,
            "version_prometheus",
            raw.version_prometheus.as_deref(),
        );
        return Some(Some(crate::config::VersionSource::Query {
            query: query?,
            label: label?,
            server: server?,
        }));
    }
    Some(None)
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(super) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
