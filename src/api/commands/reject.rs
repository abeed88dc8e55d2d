//! `rollbackd reject ID [--reason R]`, `POST /v1/incidents/{id}/reject`:
//! reject the rollback of an incident awaiting confirmation
//! ([`Event::Reject`]).

use std::sync::Arc;

use axum::routing::MethodRouter;
use serde_json::Value;

use super::{event_body, event_line, reason_text, target_route, ApiCommand, ClientArgs, Invoke};
use super::{Method, Request, TargetCommand};
use crate::api::{find_incident, reason, who, ApiResult, ApiState, EventRequest};
use crate::decide::Event;

/// Reject the rollback of an incident awaiting confirmation.
#[derive(clap::Args, Debug)]
pub struct Reject {
    /// Incident ID.
    id: String,
    /// Why (recorded and mailed; at most 1000 characters).
    #[arg(long, value_parser = reason_text)]
    reason: Option<String>,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

impl ApiCommand for Reject {
    const ROUTE: &'static str = "/v1/incidents/{id}/reject";
    const METHOD: Method = Method::Post;
    const MUTATES: bool = true;
    fn handler() -> MethodRouter<Arc<ApiState>> {
        target_route::<Self>()
    }
}

impl TargetCommand for Reject {
    fn event(api: &ApiState, id: String, req: &EventRequest) -> ApiResult<(String, Event)> {
        let (by, reason) = (who(req)?, reason(req)?);
        let inc = find_incident(api, &id)?;
        let event = Event::Reject {
            incident: id,
            by,
            reason: reason.unwrap_or_else(|| "no reason given".into()),
        };
        Ok((inc.target, event))
    }
}

impl Invoke for Reject {
    fn request(&self) -> Request {
        Request::to::<Self>(&[&self.id]).with_body(event_body(self.reason.as_deref()))
    }

    fn print(&self, v: Value) -> anyhow::Result<String> {
        event_line(v, &format!("incident {} rejected", self.id))
    }
}
