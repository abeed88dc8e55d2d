//! Bearer-token check for mutating routes, compared in constant time.

use axum::http::{header, HeaderMap, StatusCode};

use super::{ApiError, ApiState};

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
