//! The one redaction of URLs written to logs, records, status and metrics:
//! the userinfo (`user:password@`) and every query or fragment value
//! (DingTalk's `?access_token=...`, signed `&sign=...`) become `***`;
//! scheme, host, port, path and parameter names stay, so that a reader
//! still knows which endpoint it was. Pure.

/// What replaces a secret.
pub const MASK: &str = "***";

/// A URL as shown to people.
pub fn redact_url(url: &url::Url) -> String {
    redact_one(url.as_str())
}

/// `text` with every URL in it (`scheme://...`) redacted: for messages that
/// quote a URL they did not build (an HTTP client's error names the URL it
/// failed on).
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let before = &rest[..at];
        let scheme_len = before
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
            .count();
        let start = at - scheme_len;
        let after = &rest[at + 3..];
        let len = after
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')' | ']')
            })
            .unwrap_or(after.len());
        let end = at + 3 + len;
        out.push_str(&rest[..start]);
        if scheme_len == 0 {
            out.push_str(&rest[start..end]);
        } else {
            out.push_str(&redact_one(&rest[start..end]));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One URL's text (`scheme://authority/path?query#fragment`).
fn redact_one(url: &str) -> String {
    let Some(at) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = (&url[..at + 3], &url[at + 3..]);
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_len);
    let mut out = String::from(scheme);
    match authority.rfind('@') {
        Some(i) => {
            let userinfo = &authority[..i];
            out.push_str(MASK);
            if userinfo.contains(':') {
                out.push(':');
                out.push_str(MASK);
            }
            out.push_str(&authority[i..]);
        }
        None => out.push_str(authority),
    }
    let (path, query) = match tail.find(['?', '#']) {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    out.push_str(path);
    // `?a=1&b=2#c=3`: each value masked, names kept; a bare word too.
    let mut part = String::new();
    let flush = |part: &mut String, out: &mut String| {
        if !part.is_empty() {
            match part.split_once('=') {
                Some((name, value)) if !value.is_empty() => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(MASK);
                }
                Some(_) => out.push_str(part),
                None => out.push_str(MASK),
            }
            part.clear();
        }
    };
    for c in query.chars() {
        if matches!(c, '?' | '&' | ';' | '#') {
            flush(&mut part, &mut out);
            out.push(c);
        } else {
            part.push(c);
        }
    }
    flush(&mut part, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_table() {
        let cases = [
            (
                "https://oapi.dingtalk.com/robot/send?access_token=abc123",
                "https://oapi.dingtalk.com/robot/send?access_token=***",
            ),
            (
                "https://bot:s3cret@chat.example.com:8443/hooks/ops",
                "https://***:***@chat.example.com:8443/hooks/ops",
            ),
            (
                "http://token@127.0.0.1:9/x?a=1&b=&c#frag=2",
                "http://***@127.0.0.1:9/x?a=***&b=&***#frag=***",
            ),
            ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
            ("http://127.0.0.1:9090/", "http://127.0.0.1:9090/"),
            ("https://u:p@h/p@th?x=@", "https://***:***@h/p@th?x=***"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_one(url), want, "{url}");
            let parsed = url::Url::parse(url).unwrap();
            assert!(!redact_url(&parsed).contains("s3cret"));
            assert!(!redact_url(&parsed).contains("abc123"));
        }
    }

    #[test]
    fn urls_in_text_are_redacted() {
        let text = "POST https://oapi.dingtalk.com/robot/send?access_token=abc123 failed: \
                    error sending request for url (http://user:pass@127.0.0.1:9/hook?sign=x&timestamp=1): \
                    connection refused; see smtp://mail:25 and \"etcd+https://root:pw@e:2379\"";
        assert_eq!(
            redact_urls(text),
            "POST https://oapi.dingtalk.com/robot/send?access_token=*** failed: \
             error sending request for url (http://***:***@127.0.0.1:9/hook?sign=***&timestamp=***): \
             connection refused; see smtp://mail:25 and \"etcd+https://***:***@e:2379\""
        );
        assert_eq!(redact_urls("no url here: a://"), "no url here: a://");
        assert_eq!(redact_urls("://x?y=1"), "://x?y=1");
    }
}
