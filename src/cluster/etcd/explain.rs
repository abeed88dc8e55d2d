//! Why this node cannot use etcd, said so that an operator can fix it: the
//! endpoint, etcd's own words, and which `[cluster]` keys to check when
//! etcd refused the login or the TLS handshake. Said once per kind of
//! failure (not at every retry) until etcd is reachable again.

/// What kind of failure a session error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// etcd refused `username` / `password_file`.
    Login,
    /// The TLS handshake failed or etcd closed a TLS connection (a client
    /// certificate etcd does not trust shows up as a closed connection).
    Tls,
    /// Anything else: down, unreachable, slow.
    Other,
}

/// Classify `why` (the session's error text) for a node whose endpoints
/// are `https` or not.
pub(super) fn kind(why: &str, https: bool) -> Kind {
    let lower = why.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&[
        "authentication failed",
        "invalid user id or password",
        "unauthenticated",
        "user name is empty",
        "permission denied",
        "invalid auth token",
    ]) {
        return Kind::Login;
    }
    if https
        && has(&[
            "certificate",
            "tls",
            "handshake",
            "unknownissuer",
            "unknown issuer",
            "connection closed",
            "operation was canceled",
            "broken pipe",
            "connection reset",
        ])
    {
        return Kind::Tls;
    }
    Kind::Other
}

/// The WARN line: `etcd at URL ...: WHY; check ...`.
pub(super) fn say(kind: Kind, endpoints: &[String], why: &str) -> String {
    let at = endpoints.join(", ");
    match kind {
        Kind::Login => format!(
            "etcd at {at} refused this node's authentication: {why}; check cluster.username and cluster.password_file (the user must exist in etcd, with a role that may read and write the cluster prefix)"
        ),
        Kind::Tls => format!(
            "etcd at {at} failed or closed the TLS connection: {why}; check that cluster.ca_file holds the CA that signed etcd's server certificate, and that etcd trusts the CA of cluster.cert_file and cluster.key_file (etcd --trusted-ca-file with --client-cert-auth)"
        ),
        Kind::Other => format!("etcd at {at} unreachable: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_refusal() {
        let login = "etcd unavailable: connect to http://127.0.0.1:1: grpc request error: code: 'Client specified an invalid argument', message: \"etcdserver: authentication failed, invalid user ID or password\"";
        let closed = "lease grant failed: grpc request error: code: 'The operation was cancelled', message: \"operation was canceled\", source: tonic::transport::Error(Transport, hyper::Error(Canceled, \"connection closed\"))";
        assert_eq!(kind(login, false), Kind::Login);
        assert_eq!(kind(login, true), Kind::Login);
        assert_eq!(kind(closed, true), Kind::Tls);
        assert_eq!(kind(closed, false), Kind::Other);
        assert_eq!(kind("connect: no answer within 666ms", true), Kind::Other);
        let eps = vec!["https://10.0.0.5:2379".to_string()];
        let s = say(Kind::Tls, &eps, closed);
        assert!(s.starts_with("etcd at https://10.0.0.5:2379 failed or closed the TLS connection: lease grant failed"), "{s}");
        assert!(s.contains("cluster.cert_file"), "{s}");
        let s = say(Kind::Login, &eps, login);
        assert!(
            s.contains("cluster.password_file") && s.contains("invalid user ID or password"),
            "{s}"
        );
    }
}
