//! `rollbackd resume TARGET`, `POST /v1/targets/{name}/resume`: release a
//! pause ([`Event::Resume`]).

use std::sync::Arc;

use axum::routing::MethodRouter;
use serde_json::Value;

use super::{event_body, event_line, target_route, ApiCommand, ClientArgs, Invoke, Method};
use super::{Request, TargetCommand};
use crate::api::{who, ApiResult, ApiState, EventRequest};
use crate::decide::Event;

/// Release a pause.
#[derive(clap::Args, Debug)]
pub struct Resume {
    /// Target name.
    target: String,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

impl ApiCommand for Resume {
    const ROUTE: &'static str = "/v1/targets/{name}/resume";
    const METHOD: Method = Method::Post;
    const MUTATES: bool = true;
    fn handler() -> MethodRouter<Arc<ApiState>> {
        target_route::<Self>()
    }
}

impl TargetCommand for Resume {
    fn event(_: &ApiState, name: String, req: &EventRequest) -> ApiResult<(String, Event)> {
        Ok((name, Event::Resume { by: who(req)? }))
    }
}

impl Invoke for Resume {
    fn request(&self) -> Request {
        Request::to::<Self>(&[&self.target]).with_body(event_body(None))
    }

    fn print(&self, v: Value) -> anyhow::Result<String> {
        event_line(v, &format!("{} resumed", self.target))
    }
}
