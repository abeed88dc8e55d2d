//! Validation of `[cluster]`: etcd endpoints, TLS, authentication, lease and prefix.

use super::*;

/// `[cluster]`: etcd URLs of one scheme, a prefix and a node name that make
/// sane keys, a lease TTL in whole seconds of at least 2s, TLS and auth
/// keys in their pairs.
pub(super) fn cluster(cx: &mut Cx, raw: &RawCluster) -> Option<ClusterConfig> {
    let p = "cluster";
    let mut ok = true;
    let etcd = etcd_endpoints(cx, p, raw, &mut ok);
    let tls = etcd.iter().any(|u| u.scheme() == "https");
    let prefix = prefix(cx, p, raw);
    let node = node(cx, p, raw);
    let lease_ttl = lease_ttl(cx, p, raw);
    let mut file = |cx: &mut Cx, key: &str, value: Option<&str>| -> Option<Option<PathBuf>> {
        let Some(value) = value else {
            return Some(None);
        };
        match cx.absolute(&join(p, key), value) {
            Some(f) => Some(Some(f)),
            None => {
                ok = false;
                None
            }
        }
    };
    let ca_file = file(cx, "ca_file", raw.ca_file.as_deref());
    let cert_file = file(cx, "cert_file", raw.cert_file.as_deref());
    let key_file = file(cx, "key_file", raw.key_file.as_deref());
    let password_file = file(cx, "password_file", raw.password_file.as_deref());
    if raw.password.is_some() {
        cx.err(
            join(p, "password"),
            "passwords are never read from the config file: put it in a file named by password_file",
        );
        ok = false;
    }
    let client_cert = client_cert(cx, p, cert_file.flatten(), key_file.flatten(), &mut ok);
    if !tls && !etcd.is_empty() {
        for (key, set) in [
            ("ca_file", raw.ca_file.is_some()),
            ("cert_file", raw.cert_file.is_some()),
            ("key_file", raw.key_file.is_some()),
        ] {
            if set {
                cx.err(
                    join(p, key),
                    format!("{key} is set but the etcd endpoints are http://: TLS keys only matter with https://"),
                );
                ok = false;
            }
        }
    }
    let auth = auth(cx, p, raw, password_file.flatten(), &mut ok);
    if auth.is_some() && !tls {
        if let Some(remote) = etcd.iter().find(|u| !url_is_loopback(u)) {
            cx.err(
                join(p, "etcd"),
                format!(
                    "{:?} is plaintext to a remote host and username is set: the password would cross the network unencrypted; use https://",
                    remote.as_str()
                ),
            );
            ok = false;
        }
    }
    let on_etcd_down = cx.choice(
        p,
        "on_etcd_down",
        raw.on_etcd_down.as_deref(),
        &[
            ("hold", crate::config::OnEtcdDown::Hold),
            ("act_alone", crate::config::OnEtcdDown::ActAlone),
        ],
    );
    let config = ClusterConfig {
        etcd,
        prefix: prefix?,
        node: node?,
        lease_ttl: lease_ttl?,
        ca_file: ca_file?,
        client_cert,
        auth,
        on_etcd_down: on_etcd_down?,
    };
    ok.then_some(config)
}

/// `etcd`: at least one endpoint ([`etcd_url`]), none twice, all of one
/// scheme. The valid ones; `ok` is cleared on any problem.
fn etcd_endpoints(cx: &mut Cx, p: &str, raw: &RawCluster, ok: &mut bool) -> Vec<url::Url> {
    let mut etcd = Vec::new();
    match raw.etcd.as_deref() {
        None => {
            cx.err(
                join(p, "etcd"),
                "required key is missing (e.g. etcd = [\"http://10.0.0.5:2379\"])",
            );
            *ok = false;
        }
        Some([]) => {
            cx.err(
                join(p, "etcd"),
                "etcd = [] names no endpoint; give at least one, e.g. [\"http://10.0.0.5:2379\"]",
            );
            *ok = false;
        }
        Some(list) => {
            for (i, text) in list.iter().enumerate() {
                let path = format!("{p}.etcd[{i}]");
                match etcd_url(cx, &path, text) {
                    Some(u) if etcd.contains(&u) => {
                        cx.err(path, format!("{text:?} is listed twice"));
                        *ok = false;
                    }
                    Some(u) => etcd.push(u),
                    None => *ok = false,
                }
            }
            let https = etcd.iter().filter(|u| u.scheme() == "https").count();
            if https != 0 && https != etcd.len() {
                cx.err(
                    join(p, "etcd"),
                    format!(
                        "etcd = {list:?} mixes http:// and https://; use one scheme for every endpoint"
                    ),
                );
                *ok = false;
            }
        }
    }
    etcd
}

/// `prefix`: starts with `/`, no spaces or control characters; a `/` is
/// added at its end when missing.
fn prefix(cx: &mut Cx, p: &str, raw: &RawCluster) -> Option<String> {
    let prefix_text = raw.prefix.as_deref().unwrap_or(DEFAULT_CLUSTER_PREFIX);
    if !prefix_text.starts_with('/') {
        cx.err(
            join(p, "prefix"),
            format!("prefix = {prefix_text:?} must start with \"/\" (e.g. \"/rollbackd/\")"),
        );
        None
    } else if prefix_text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        cx.err(
            join(p, "prefix"),
            format!("prefix = {prefix_text:?} must not contain spaces or control characters"),
        );
        None
    } else if prefix_text.ends_with('/') {
        Some(prefix_text.to_string())
    } else {
        Some(format!("{prefix_text}/"))
    }
}

/// `node`: 1 to 128 characters, no `/`, spaces or control characters
/// (unset: the hostname, found at start).
fn node(cx: &mut Cx, p: &str, raw: &RawCluster) -> Option<Option<String>> {
    match raw.node.as_deref() {
        None => Some(None),
        Some(n) if n.is_empty() || n.len() > 128 => {
            cx.err(
                join(p, "node"),
                format!(
                    "node = {n:?} must be 1 to 128 characters (leave it out to use the hostname)"
                ),
            );
            None
        }
        Some(n)
            if n.chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control()) =>
        {
            cx.err(
                join(p, "node"),
                format!("node = {n:?} must not contain \"/\", spaces or control characters"),
            );
            None
        }
        Some(n) => Some(Some(n.to_string())),
    }
}

/// `lease_ttl`: whole seconds from [`MIN_LEASE_TTL`] to [`MAX_LEASE_TTL`].
fn lease_ttl(cx: &mut Cx, p: &str, raw: &RawCluster) -> Option<Duration> {
    cx.duration(p, "lease_ttl", raw.lease_ttl.as_deref(), DEFAULT_LEASE_TTL, true)
        .and_then(|d| {
            let text = raw.lease_ttl.as_deref().unwrap_or(DEFAULT_LEASE_TTL);
            let problem = if d < MIN_LEASE_TTL {
                Some(format!("lease_ttl = {text:?} is below the minimum of 2s"))
            } else if d > MAX_LEASE_TTL {
                Some(format!(
                    "lease_ttl = {text:?} is above the maximum of 1h (a dead node's targets would wait that long)"
                ))
            } else if d.subsec_nanos() != 0 {
                Some(format!(
                    "lease_ttl = {text:?} must be whole seconds (etcd leases count seconds)"
                ))
            } else {
                None
            };
            match problem {
                Some(m) => {
                    cx.err(join(p, "lease_ttl"), m);
                    None
                }
                None => Some(d),
            }
        })
}

/// `cert_file` and `key_file` (their valid values): both or neither; `ok`
/// is cleared when only one is set.
fn client_cert(
    cx: &mut Cx,
    p: &str,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    ok: &mut bool,
) -> Option<ClusterClientCert> {
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Some(ClusterClientCert {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        (Some(_), None) => {
            cx.err(join(p, "cert_file"), "cert_file is set but key_file is not");
            *ok = false;
            None
        }
        (None, Some(_)) => {
            cx.err(join(p, "key_file"), "key_file is set but cert_file is not");
            *ok = false;
            None
        }
    }
}

/// `username` and `password_file` (its valid value): both or neither;
/// `ok` is cleared on any problem.
fn auth(
    cx: &mut Cx,
    p: &str,
    raw: &RawCluster,
    password_file: Option<PathBuf>,
    ok: &mut bool,
) -> Option<ClusterAuth> {
    let username = match raw.username.as_deref() {
        None => None,
        Some(u) => {
            let u = cx.non_empty(&join(p, "username"), u);
            *ok &= u.is_some();
            u
        }
    };
    match (username, password_file) {
        (Some(username), Some(password_file)) => Some(ClusterAuth {
            username,
            password_file,
        }),
        (None, None) => None,
        (Some(_), None) => {
            cx.err(
                join(p, "username"),
                "username is set but password_file is not",
            );
            *ok = false;
            None
        }
        // username was set but invalid: reported already.
        (None, Some(_)) if raw.username.is_some() => None,
        (None, Some(_)) => {
            cx.err(
                join(p, "password_file"),
                "password_file is set but username is not",
            );
            *ok = false;
            None
        }
    }
}

/// An etcd client URL: `http://` or `https://`, a host, no credentials,
/// no path. etcd's port is not a web server's, so it must be given.
pub(super) fn etcd_url(cx: &mut Cx, path: &str, value: &str) -> Option<url::Url> {
    let url = cx.http_url(path, value)?;
    if !url.username().is_empty() || url.password().is_some() {
        cx.err(
            path,
            format!("credentials do not belong in {value:?}: set username and password_file"),
        );
        return None;
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        cx.err(
            path,
            format!("URL {value:?} must not have a path (use e.g. \"http://10.0.0.5:2379\")"),
        );
        return None;
    }
    if url.port().is_none() {
        cx.err(
            path,
            format!("URL {value:?} has no port (etcd's client port is usually 2379)"),
        );
        return None;
    }
    Some(url)
}

/// Whether a URL's host is this machine.
pub(super) fn url_is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
