//! The verify URL check: one GET, healthy when it answers the expected status
//! (any 2xx by default) within the client's timeout.

use std::error::Error;

/// Check the URL once. Returns whether it is healthy and a detail for the
/// record (`HTTP 200 in 12ms`, `connection refused`, ...).
pub async fn check_url(
    client: &reqwest::Client,
    url: &url::Url,
    expect_status: Option<u16>,
) -> (bool, String) {
    let started = std::time::Instant::now();
    match client.get(url.clone()).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let healthy = match expect_status {
                Some(want) => status == want,
                None => response.status().is_success(),
            };
            if healthy {
                let ms = started.elapsed().as_millis();
                (true, format!("HTTP {status} in {ms}ms"))
            } else {
                let expected = expect_status.map_or_else(|| "2xx".to_string(), |s| s.to_string());
                (false, format!("HTTP {status} (expected {expected})"))
            }
        }
        Err(e) => (false, error_chain(&e)),
    }
}

/// The error and its sources joined with `: `, skipping a source whose text
/// the message already contains (hyper and reqwest often repeat it).
pub(crate) fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chain_joins_and_dedups() {
        let e = E(
            "error sending request",
            Some(Box::new(E(
                "connect",
                Some(Box::new(E("connection refused", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "error sending request: connect: connection refused"
        );
        let e = E(
            "timed out: operation timed out",
            Some(Box::new(E("operation timed out", None))),
        );
        assert_eq!(error_chain(&e), "timed out: operation timed out");
    }
}
