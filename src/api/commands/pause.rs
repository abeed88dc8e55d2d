//! `rollbackd pause TARGET [--for D] [--reason R]`,
//! `POST /v1/targets/{name}/pause`: hold automatic action on a target
//! ([`Event::Pause`]); the `for` grammar the CLI and the API share.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::MethodRouter;
use serde_json::Value;

use super::{answer, event_body, reason_text, target_route, ApiCommand, ClientArgs, Invoke};
use super::{Method, Request, TargetCommand};
use crate::api::{reason, who, ApiError, ApiResult, ApiState, EventRequest, EventResponse};
use crate::decide::Event;

/// Hold automatic action on a target (breaches escalate instead); the
/// pause ends by itself after --for (default `[daemon] max_pause`).
#[derive(clap::Args, Debug)]
pub struct Pause {
    /// Target name.
    target: String,
    /// How long, e.g. 2h; exactly 0 means until `resume` (default: `[daemon] max_pause`, 24h).
    #[arg(long = "for", value_name = "DURATION", value_parser = pause_for)]
    for_: Option<String>,
    /// Why (shown in status and in escalations; at most 1000 characters).
    #[arg(long, value_parser = reason_text)]
    reason: Option<String>,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

impl ApiCommand for Pause {
    const ROUTE: &'static str = "/v1/targets/{name}/pause";
    const METHOD: Method = Method::Post;
    const MUTATES: bool = true;
    fn handler() -> MethodRouter<Arc<ApiState>> {
        target_route::<Self>()
    }
}

impl TargetCommand for Pause {
    fn event(_: &ApiState, name: String, req: &EventRequest) -> ApiResult<(String, Event)> {
        let duration = match req.for_.as_deref() {
            None => None,
            Some(text) => {
                Some(parse_pause_for(text).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?)
            }
        };
        let event = Event::Pause {
            by: who(req)?,
            reason: reason(req)?,
            duration,
        };
        Ok((name, event))
    }
}

impl Invoke for Pause {
    fn request(&self) -> Request {
        let mut body = event_body(self.reason.as_deref());
        if let Some(d) = &self.for_ {
            body["for"] = Value::String(d.clone());
        }
        Request::to::<Self>(&[&self.target]).with_body(body)
    }

    fn print(&self, v: Value) -> anyhow::Result<String> {
        let r: EventResponse = answer(v)?;
        let until = match r.paused.as_ref().and_then(|p| p.until) {
            Some(u) => format!("until {}", u.format("%Y-%m-%d %H:%M:%SZ")),
            None => "until resumed".to_string(),
        };
        Ok(format!(
            "{} paused {until}: target {} is now {}\n",
            self.target, r.target, r.phase
        ))
    }
}

/// `pause --for`: checked as the API checks it, before the daemon is asked.
fn pause_for(text: &str) -> Result<String, String> {
    parse_pause_for(text).map(|_| text.to_string())
}

/// Longest `for` a pause may ask for; `"0"` is the way to say "until resumed".
const MAX_PAUSE_FOR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A pause's `for` (API body and `rollbackd pause --for`): exactly `"0"` is
/// until resumed (`Duration::ZERO`); anything else is a positive duration
/// in the config grammar (`"2h"`, `"90m"`) of at most 10 years. A zero
/// duration written any other way (`"0s"`, `"0m0s"`) and spaces around the
/// value are errors: "until resumed" must be asked for explicitly.
pub fn parse_pause_for(text: &str) -> Result<Duration, String> {
    if text.trim() != text {
        return Err(format!(
            "invalid \"for\" {text:?}: remove the spaces around the duration \
             (e.g. \"2h\", or \"0\" for until resumed)"
        ));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let d = crate::config::duration::parse(text)
        .map_err(|e| format!("invalid \"for\": {e} (e.g. \"2h\", or \"0\" for until resumed)"))?;
    if d.is_zero() {
        return Err(format!(
            "\"for\" = {text:?} is zero: write \"0\" to pause until resumed, \
             or a positive duration such as \"2h\""
        ));
    }
    if d > MAX_PAUSE_FOR {
        return Err(format!(
            "\"for\" = {text:?} is longer than 10 years; use \"0\" to pause until resumed"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_for_zero_only_as_0_and_no_spaces() {
        assert_eq!(parse_pause_for("0"), Ok(Duration::ZERO));
        assert_eq!(parse_pause_for("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_pause_for("1ms"), Ok(Duration::from_millis(1)));
        for zero in ["0s", "0ms", "0m0s", "0h", "00s"] {
            let e = parse_pause_for(zero).unwrap_err();
            assert!(e.contains("is zero") && e.contains("\"0\""), "{zero}: {e}");
        }
        for spaced in [" 0", "0 ", " 2h", "2h\n", "\t2h"] {
            let e = parse_pause_for(spaced).unwrap_err();
            assert!(e.contains("remove the spaces"), "{spaced:?}: {e}");
        }
        for bad in ["", "00", "soon", "2 h", "-1h"] {
            let e = parse_pause_for(bad).unwrap_err();
            assert!(e.starts_with("invalid \"for\""), "{bad:?}: {e}");
        }
        assert!(parse_pause_for("4000d").unwrap_err().contains("10 years"));
    }
}
