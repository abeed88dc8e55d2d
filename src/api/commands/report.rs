//! `rollbackd report ID`, `GET /v1/incidents/{id}`: one incident; the
//! client prints its rollback record, from the record file when the config
//! is known (it works with the daemon down).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::routing::MethodRouter;
use axum::Json;
use serde_json::Value;

use super::incidents::IncidentView;
use super::{answer, on, ApiCommand, ClientArgs, Invoke, Method, Request};
use crate::api::{find_incident, ApiResult, ApiState};
use crate::decide::Incident;

/// Print an incident's rollback record (Markdown; from the record file when --config is given).
#[derive(clap::Args, Debug)]
pub struct Report {
    /// Incident ID.
    id: String,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

impl ApiCommand for Report {
    const ROUTE: &'static str = "/v1/incidents/{id}";
    const METHOD: Method = Method::Get;
    const MUTATES: bool = false;
    fn handler() -> MethodRouter<Arc<ApiState>> {
        on::<Self, _, _>(incident)
    }
}

impl Invoke for Report {
    fn request(&self) -> Request {
        Request::to::<Self>(&[&self.id])
    }

    fn print(&self, v: Value) -> anyhow::Result<String> {
        let inc: Incident = answer(v)?;
        Ok(crate::notify::record::render(&inc))
    }

    /// The record file first: it works with the daemon down.
    fn local(&self, state_dir: Option<&Path>) -> anyhow::Result<Option<String>> {
        let Some(dir) = state_dir else {
            return Ok(None);
        };
        let path = crate::notify::record::path(&dir.join("incidents"), &self.id)?;
        Ok(std::fs::read_to_string(&path).ok())
    }
}

async fn incident(
    State(api): State<Arc<ApiState>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<IncidentView>> {
    find_incident(&api, &id).map(|i| Json(i.into()))
}
