//! Duration strings as written in config: `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1h30m"`, `"2d"`.

use std::time::Duration;

/// Parse a config duration. The error message names the value.
pub fn parse(s: &str) -> Result<Duration, String> {
    todo!("{s}")
}
