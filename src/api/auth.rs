//! Bearer-token check for mutating routes, compared in constant time, and
//! who a request is as far as its head tells (for the listener's reserve).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, Standing};

/// Read `api_token_file` (trimmed). An empty file is an error: it would
/// make every request with an empty token pass.
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read api_token_file {}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("api_token_file {} is empty", path.display());
    }
    Ok(token)
}

/// Equal in time independent of where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 401 unless the request carries `Authorization: Bearer <token>` (when a
/// token is configured).
pub fn require(api: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &api.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match given {
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "this route needs Authorization: Bearer <token> (the token of api_token_file)".into(),
        )),
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError(StatusCode::UNAUTHORIZED, "wrong API token".into())),
    }
}

/// Middleware for the mutating routes: 401 before the body is read, so a
/// client without the token cannot make the daemon wait for its body.
pub async fn guard(State(api): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    match require(&api, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Who sent a request, from its head: an operator when it presents the
/// token; without a token configured, a local operator when it comes from
/// loopback to any route but the Alertmanager intake (anyone on the host
/// could act then anyway); a guest otherwise.
pub fn standing(token: Option<&str>, parts: &Parts, peer: IpAddr) -> Standing {
    match token {
        Some(token) => {
            let given = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer);
            match given {
                Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Standing::Operator,
                _ => Standing::Guest,
            }
        }
        None if peer.is_loopback() && parts.uri.path() != "/v1/alertmanager" => Standing::Local,
        None => Standing::Guest,
    }
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme
/// is case-insensitive (RFC 9110 section 11.1): `bearer`, `BEARER` and
/// `Bearer` are the same; any run of spaces may follow it.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    #[test]
    fn standing_from_the_head() {
        use super::{standing, Standing};
        let parts = |path: &str, auth: Option<&str>| {
            let mut b = axum::http::Request::builder().uri(path);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(()).unwrap().into_parts().0
        };
        let lo: std::net::IpAddr = [127, 0, 0, 1].into();
        let far: std::net::IpAddr = [10, 0, 0, 1].into();
        let s = |t, p: &str, a, peer| standing(t, &parts(p, a), peer);
        let pause = "/v1/targets/web/pause";
        assert_eq!(
            s(Some("t"), pause, Some("Bearer t"), far),
            Standing::Operator
        );
        assert_eq!(s(Some("t"), pause, Some("Bearer x"), lo), Standing::Guest);
        assert_eq!(s(Some("t"), pause, None, lo), Standing::Guest);
        assert_eq!(
            s(Some("t"), "/v1/alertmanager", Some("bearer t"), far),
            Standing::Operator
        );
        assert_eq!(s(None, pause, None, lo), Standing::Local);
        assert_eq!(s(None, "/v1/alertmanager", None, lo), Standing::Guest);
        assert_eq!(s(None, pause, None, far), Standing::Guest);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        use super::bearer;
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn constant_time_eq_compares() {
        use super::constant_time_eq as eq;
        assert!(eq(b"secret", b"secret"));
        assert!(!eq(b"secret", b"secreT"));
        assert!(!eq(b"secret", b"secret2"));
        assert!(eq(b"", b""));
    }
}
