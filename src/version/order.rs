//! How version names order: the one comparison the executors use to find
//! "the version before the live one" among release directories (symlink),
//! local image tags (docker) and repository tags (git). Pure.

use std::cmp::Ordering;

/// Version-aware order of version names: digit runs compare as numbers,
/// the rest as text, so `v9 < v10 < v10.1` and `2024-9 < 2024-10`. Ties
/// (`v01` vs `v1`) fall back to plain string order, so the order is total.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = if is_digits(x) && is_digits(y) {
            let (xt, yt) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt))
        } else {
            x.cmp(y)
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

/// The greatest of `names` that sorts before `live` ([`version_cmp`]): the
/// version to go back to when nobody named one. `live` itself need not be
/// among them.
pub fn previous<'a>(names: impl IntoIterator<Item = &'a str>, live: &str) -> Option<&'a str> {
    names
        .into_iter()
        .filter(|n| version_cmp(n, live) == Ordering::Less)
        .max_by(|a, b| version_cmp(a, b))
}

fn is_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// Split into maximal runs of ASCII digits and of everything else.
fn chunks(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_digit = None;
    for (i, c) in s.char_indices() {
        let digit = c.is_ascii_digit();
        if prev_digit.is_some_and(|p| p != digit) {
            out.push(&s[start..i]);
            start = i;
        }
        prev_digit = Some(digit);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order_table() {
        let cases = [
            ("v9", "v10", Ordering::Less),
            ("v10", "v10.1", Ordering::Less),
            ("v10.1", "v10.2", Ordering::Less),
            ("v10.10", "v10.9", Ordering::Greater),
            ("1.2.3", "1.2.3", Ordering::Equal),
            ("v1", "v1-rc1", Ordering::Less),
            ("2024-09-01", "2024-10-01", Ordering::Less),
            ("20240901120000", "20241001120000", Ordering::Less),
            ("v01", "v1", Ordering::Less),
            ("a", "b", Ordering::Less),
            ("", "v1", Ordering::Less),
            (
                "99999999999999999999999",
                "100000000000000000000000",
                Ordering::Less,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(version_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(version_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn sorting_releases() {
        let mut v = vec!["v10", "v2", "v1", "v10.1", "v9"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v, ["v1", "v2", "v9", "v10", "v10.1"]);
    }

    #[test]
    fn previous_table() {
        let names = ["v1", "v2", "v10"];
        assert_eq!(previous(names, "v10"), Some("v2"));
        assert_eq!(previous(names, "v2"), Some("v1"));
        assert_eq!(previous(names, "v1"), None);
        // The live version missing from the list still has a predecessor.
        assert_eq!(previous(names, "v5"), Some("v2"));
        assert_eq!(previous(names, "v1.0.1-3-gabc"), Some("v1"));
    }

    #[test]
    fn chunks_split_digit_runs() {
        assert_eq!(chunks("v10.1-rc2"), ["v", "10", ".", "1", "-rc", "2"]);
        assert!(chunks("").is_empty());
    }
}
