//! `rollbackd trigger TARGET --reason R [--to-version V]`,
//! `POST /v1/targets/{name}/rollback`: roll a target back now through the
//! same pipeline ([`Event::ManualTrigger`]).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::MethodRouter;
use serde_json::Value;

use super::{event_body, event_line, reason_text, target_route, ApiCommand, ClientArgs, Invoke};
use super::{Method, Request, TargetCommand};
use crate::api::{reason, who, ApiError, ApiResult, ApiState, EventRequest};
use crate::decide::Event;

/// Roll a target back now through the same pipeline (confirmation skipped).
#[derive(clap::Args, Debug)]
pub struct Trigger {
    /// Target name.
    target: String,
    /// Why (recorded and mailed; at most 1000 characters).
    #[arg(long, value_parser = reason_text)]
    reason: String,
    /// Go back to this version (tag, release directory, image tag or
    /// kubernetes revision) instead of the previous one; it is checked
    /// to exist first.
    #[arg(long, value_name = "V")]
    to_version: Option<String>,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

impl ApiCommand for Trigger {
    const ROUTE: &'static str = "/v1/targets/{name}/rollback";
    const METHOD: Method = Method::Post;
    const MUTATES: bool = true;
    fn handler() -> MethodRouter<Arc<ApiState>> {
        target_route::<Self>()
    }
}

impl TargetCommand for Trigger {
    fn event(_: &ApiState, name: String, req: &EventRequest) -> ApiResult<(String, Event)> {
        let Some(reason) = reason(req)? else {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "a manual rollback needs a reason: {\"reason\": \"...\"}".into(),
            ));
        };
        let to_version = match req.to_version.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "to_version is empty: name the version to go back to, or leave it out".into(),
                ))
            }
            Some(v) => Some(v.to_string()),
        };
        let event = Event::ManualTrigger {
            by: who(req)?,
            reason,
            to_version,
        };
        Ok((name, event))
    }
}

impl Invoke for Trigger {
    fn request(&self) -> Request {
        let mut body = event_body(Some(&self.reason));
        if let Some(v) = &self.to_version {
            body["to_version"] = Value::String(v.clone());
        }
        Request::to::<Self>(&[&self.target]).with_body(body)
    }

    fn print(&self, v: Value) -> anyhow::Result<String> {
        let to = self
            .to_version
            .as_deref()
            .map_or_else(String::new, |v| format!(" to {v}"));
        event_line(
            v,
            &format!("manual rollback of {}{to} requested", self.target),
        )
    }
}
