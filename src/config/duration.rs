//! Duration strings as written in config: `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1h30m"`, `"2d"`.
//!
//! The grammar is strict, `^(\d+(ms|s|m|h|d))+$`: no spaces, no sign, no
//! fractions, no bare numbers. A bare `"5"` is rejected on purpose: seconds
//! or minutes is exactly the ambiguity that makes a rollback fire too early.

use std::time::Duration;

/// A duration string outside the grammar; holds the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?} (use e.g. \"30s\", \"5m\", \"1h\")")]
pub struct InvalidDuration(pub String);

/// A size string that is not a number and a known unit, or does not fit
/// in 64 bits; holds the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?} (use e.g. \"64MiB\", \"512KiB\", \"1GiB\")")]
pub struct InvalidSize(pub String);

// Config validation collects messages as text (`ConfigError::message`).
impl From<InvalidDuration> for String {
    fn from(e: InvalidDuration) -> String {
        e.to_string()
    }
}

impl From<InvalidSize> for String {
    fn from(e: InvalidSize) -> String {
        e.to_string()
    }
}

/// Parse a config duration. The error names the value.
pub fn parse(s: &str) -> Result<Duration, InvalidDuration> {
    parse_inner(s).ok_or_else(|| InvalidDuration(s.to_string()))
}

fn parse_inner(s: &str) -> Option<Duration> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut i = 0;
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits_start {
            return None;
        }
        let n: u64 = s[digits_start..i].parse().ok()?;
        let rest = &s[i..];
        let (unit_ms, unit_len): (u64, usize) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('d') {
            (86_400_000, 1)
        } else {
            return None;
        };
        i += unit_len;
        total = total.checked_add(Duration::from_millis(n.checked_mul(unit_ms)?))?;
    }
    Some(total)
}

/// Parse a size such as `"64MiB"`, `"512KiB"`, `"1GiB"`, `"100MB"` or
/// `"4096B"` into bytes. The error names the value.
pub fn parse_size(s: &str) -> Result<u64, InvalidSize> {
    let bad = || InvalidSize(s.to_string());
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let unit: u64 = match &s[digits..] {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("4096B"), Ok(4096));
        for bad in [
            "",
            "64",
            "MiB",
            "64 MiB",
            "64mib",
            "-1MiB",
            "99999999999999999999GiB",
        ] {
            assert_eq!(parse_size(bad), Err(InvalidSize(bad.to_string())));
        }
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        for (input, want) in [
            ("500ms", Some(ms(500))),
            ("30s", Some(ms(30_000))),
            ("5m", Some(ms(300_000))),
            ("1h", Some(ms(3_600_000))),
            ("1h30m", Some(ms(5_400_000))),
            ("2d", Some(ms(172_800_000))),
            ("1m30s500ms", Some(ms(90_500))),
            ("0s", Some(Duration::ZERO)),
            ("007s", Some(ms(7_000))),
            ("5 minutes", None),
            ("5", None),
            ("", None),
            ("-1s", None),
            ("1.5s", None),
            (" 5s", None),
            ("5s ", None),
            ("5S", None),
            ("s", None),
            ("5sec", None),
            ("1h 30m", None),
            ("5ms5", None),
            ("99999999999999999999s", None),
            ("18446744073709551615d", None),
        ] {
            assert_eq!(parse(input).ok(), want, "{input:?}");
        }
    }

    #[test]
    fn error_names_the_value_and_shows_examples() {
        assert_eq!(
            parse("5 minutes").unwrap_err().to_string(),
            r#"invalid duration "5 minutes" (use e.g. "30s", "5m", "1h")"#
        );
        assert_eq!(
            parse_size("64 MiB").unwrap_err().to_string(),
            r#"invalid size "64 MiB" (use e.g. "64MiB", "512KiB", "1GiB")"#
        );
    }
}
