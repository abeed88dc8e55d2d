//! What a version name may be: the one charset rule for every version that
//! can reach a step (`trigger --to-version`, `version_command`,
//! `version_url`, `version_query`, a symlink's live release, what `git
//! describe`, `docker inspect` or a release directory report). Pure, and a
//! leaf (the template module and the executors import it).
//!
//! A version is 1 to [`MAX_LEN`] characters of ASCII letters, digits and
//! `. _ + : @ / -`, and does not start with `-`. None of those characters
//! is rewritten by a shell (no `~`, `$`, quotes, spaces, globs, `=`, braces
//! or parentheses), so even a value that reached a script could not be
//! read as syntax, and it can never be taken for an option. Anything else
//! is an *unknown version*: it is shown escaped ([`escaped`]) in logs,
//! status and the record, and never substituted into a step.

/// Longest version accepted (it lands in argv templates and mail subjects).
pub const MAX_LEN: usize = 200;

/// The rule in words, for error messages and docs.
pub const RULE: &str =
    "letters, digits and . _ + : @ / -, not starting with -, at most 200 characters";

/// Why a string is not a version name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAVersion {
    /// Nothing.
    #[error("the version is empty")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("the version is longer than {MAX_LEN} characters")]
    TooLong,
    /// It would be read as an option.
    #[error("a version must not start with '-' ({RULE})")]
    Dash,
    /// A character outside the charset.
    #[error("{found} is not allowed in a version ({RULE})")]
    Char {
        /// The first such character, escaped and quoted.
        found: String,
    },
}

/// Whether `c` may appear in a version name.
pub fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | ':' | '@' | '/' | '-')
}

/// Check `v` against the charset.
pub fn check(v: &str) -> Result<(), NotAVersion> {
    if v.is_empty() {
        return Err(NotAVersion::Empty);
    }
    if v.len() > MAX_LEN {
        return Err(NotAVersion::TooLong);
    }
    if v.starts_with('-') {
        return Err(NotAVersion::Dash);
    }
    match v.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(NotAVersion::Char {
            found: format!("{:?}", c),
        }),
        None => Ok(()),
    }
}

/// Whether `v` is a version name.
pub fn is_valid(v: &str) -> bool {
    check(v).is_ok()
}

/// A raw value shown to people: quoted, control characters and quotes
/// escaped (`"v2$(touch x)\n"`), cut to 80 characters with `...`. The
/// result is a display string, never a version.
pub fn escaped(raw: &str) -> String {
    let cut: String = raw.chars().take(80).collect();
    let more = if cut.len() < raw.len() { "..." } else { "" };
    format!("{cut:?}{more}")
}

/// The start of [`unknown`]'s text.
pub const UNKNOWN: &str = "unknown version ";

/// How an unknown version is shown wherever a version would be (status,
/// the record, the journal): `unknown version "RAW"`, escaped. It contains
/// a space and quotes, so it can never pass [`check`] and is never
/// substituted.
pub fn unknown(raw: &str) -> String {
    format!("{UNKNOWN}{}", escaped(raw))
}

/// A value that failed [`check`] as shown to people: itself when it is
/// already [`unknown`]'s text, else [`unknown`] of it.
pub fn shown(value: &str) -> String {
    if value.starts_with(UNKNOWN) {
        value.to_string()
    } else {
        unknown(value)
    }
}

/// A version an executor found (a release directory, `git describe`, an
/// image tag): itself when it is a version name, else [`shown`].
pub fn as_found(value: String) -> String {
    if is_valid(&value) {
        value
    } else {
        shown(&value)
    }
}

/// Why a value is not a version, for a value that may already be
/// [`unknown`]'s text (then: it was refused when it was read).
pub fn why_not(value: &str) -> String {
    if value.starts_with(UNKNOWN) {
        format!("it was refused when it was read ({RULE})")
    } else {
        check(value)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charset_table() {
        // (value, valid)
        let cases = [
            ("v1.2.3", true),
            ("2024-10-01_1200", true),
            ("registry:5000/app@sha256:abc", true),
            ("1.0.0+build.7", true),
            ("release/v2", true),
            ("3", true),
            ("", false),
            ("-rf", false),
            ("--to=x", false),
            ("~root", false),
            ("v~1", false),
            ("v2$(touch x)", false),
            ("v2`id`", false),
            ("a b", false),
            ("a;b", false),
            ("a|b", false),
            ("a&b", false),
            ("a>b", false),
            ("a*", false),
            ("a?", false),
            ("[a]", false),
            ("{a}", false),
            ("a=b", false),
            ("'a'", false),
            ("\"a\"", false),
            ("a\nb", false),
            ("a\\b", false),
            ("a!b", false),
            ("a#b", false),
            ("a%b", false),
            ("a,b", false),
            ("revision 3", false),
            ("vé", false),
        ];
        for (v, want) in cases {
            assert_eq!(is_valid(v), want, "{v:?}");
        }
        assert!(is_valid(&"a".repeat(MAX_LEN)));
        assert_eq!(check(&"a".repeat(MAX_LEN + 1)), Err(NotAVersion::TooLong));
    }

    #[test]
    fn messages_name_the_character() {
        assert_eq!(
            check("v2$(x)").unwrap_err().to_string(),
            "'$' is not allowed in a version (letters, digits and . _ + : @ / -, not starting with -, at most 200 characters)"
        );
        assert!(check("-x")
            .unwrap_err()
            .to_string()
            .contains("start with '-'"));
    }

    #[test]
    fn unknown_is_escaped_and_never_valid() {
        assert_eq!(
            unknown("v2$(touch /tmp/x)"),
            r#"unknown version "v2$(touch /tmp/x)""#
        );
        assert_eq!(unknown("a\nb\u{1b}"), r#"unknown version "a\nb\u{1b}""#);
        assert!(unknown(&"x".repeat(300)).ends_with("\"..."));
        assert!(!is_valid(&unknown("v1")));
    }
}
