//! `rollbackd approve ID`, `POST /v1/incidents/{id}/approve`: approve the
//! rollback of an incident awaiting confirmation ([`Event::Approve`]).

use std::sync::Arc;

use axum::routing::MethodRouter;
use serde_json::Value;

use super::{event_body, event_line, target_route, ApiCommand, ClientArgs, Invoke, Method};
use super::{Request, TargetCommand};
use crate::api::{find_incident, who, ApiResult, ApiState, EventRequest};
use crate::decide::Event;

/// Approve the rollback of an incident awaiting confirmation.
#[derive(clap::Args, Debug)]
pub struct Approve {
    /// Incident ID.
    id: String,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

impl ApiCommand for Approve {
    const ROUTE: &'static str = "/v1/incidents/{id}/approve";
    const METHOD: Method = Method::Post;
    const MUTATES: bool = true;
    fn handler() -> MethodRouter<Arc<ApiState>> {
        target_route::<Self>()
    }
}

impl TargetCommand for Approve {
    fn event(api: &ApiState, id: String, req: &EventRequest) -> ApiResult<(String, Event)> {
        let by = who(req)?;
        let inc = find_incident(api, &id)?;
        Ok((inc.target, Event::Approve { incident: id, by }))
    }
}

impl Invoke for Approve {
    fn request(&self) -> Request {
        Request::to::<Self>(&[&self.id]).with_body(event_body(None))
    }

    fn print(&self, v: Value) -> anyhow::Result<String> {
        event_line(v, &format!("incident {} approved", self.id))
    }
}
