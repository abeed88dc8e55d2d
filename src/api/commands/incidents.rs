//! `rollbackd incidents [--open]`, `GET /v1/incidents[?open=..]`: open and
//! recent incidents with their timelines, and the list the client prints.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::MethodRouter;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{answer, on, ApiCommand, ClientArgs, Invoke, Method, Request};
use crate::api::{ApiError, ApiResult, ApiState};
use crate::decide::Incident;

/// Open and recent incidents with their timeline.
#[derive(clap::Args, Debug)]
pub struct Incidents {
    /// Only the incidents still under way.
    #[arg(long)]
    open: bool,
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

impl ApiCommand for Incidents {
    const ROUTE: &'static str = "/v1/incidents";
    const METHOD: Method = Method::Get;
    const MUTATES: bool = false;
    fn handler() -> MethodRouter<Arc<ApiState>> {
        on::<Self, _, _>(incidents)
    }
}

impl Invoke for Incidents {
    fn request(&self) -> Request {
        let mut r = Request::to::<Self>(&[]);
        if self.open {
            r.path.push_str("?open=true");
        }
        r
    }

    fn print(&self, v: Value) -> anyhow::Result<String> {
        let list: Vec<Incident> = answer(v)?;
        render_incident_list(&list)
    }
}

/// One incident in `GET /v1/incidents` and `GET /v1/incidents/{id}`: the
/// incident with its current phase and whether it is still open, so that
/// scripts need not read the last timeline entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentView {
    /// The incident (its `outcome` is set once it is done).
    #[serde(flatten)]
    pub incident: Incident,
    /// `AwaitingConfirmation`, `RollingBack`, `Verifying` while open; the
    /// outcome's state name (`RolledBack`, `Failed`, ...) once done.
    pub phase: String,
    /// Still under way: no outcome yet.
    pub open: bool,
}

impl From<Incident> for IncidentView {
    fn from(incident: Incident) -> IncidentView {
        IncidentView {
            phase: incident.phase_name().to_string(),
            open: incident.is_open(),
            incident,
        }
    }
}

/// Query of `GET /v1/incidents`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IncidentsQuery {
    /// `true`: only open incidents; `false`: only closed ones.
    #[serde(default)]
    pub open: Option<bool>,
}

async fn incidents(
    State(api): State<Arc<ApiState>>,
    query: Result<Query<IncidentsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<IncidentView>>> {
    let Query(q) = query.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid query: {} (use ?open=true or ?open=false)",
                e.body_text()
            ),
        )
    })?;
    let all = api.incidents.read().unwrap_or_else(|p| p.into_inner());
    Ok(Json(
        all.values()
            .rev()
            .filter(|i| q.open.is_none_or(|open| i.is_open() == open))
            .cloned()
            .map(IncidentView::from)
            .collect(),
    ))
}

/// Incidents (newest first, as given) with their timelines.
pub fn render_incident_list(incidents: &[Incident]) -> anyhow::Result<String> {
    let mut out = String::new();
    if incidents.is_empty() {
        writeln!(out, "no incidents")?;
    }
    for inc in incidents {
        let state = match inc.outcome {
            Some(o) => o.label().to_string(),
            None => format!("OPEN ({})", inc.phase_name()),
        };
        writeln!(out, "{}  {}  {}", inc.id, state, inc.summary())?;
        for t in &inc.timeline {
            writeln!(
                out,
                "  {}  {:<12} {}",
                t.at.format("%Y-%m-%d %H:%M:%S%.3fZ"),
                t.phase,
                t.message
            )?;
        }
    }
    Ok(out)
}
