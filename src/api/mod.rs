//! The HTTP API (DESIGN.md section 5): status and incidents, confirmation,
//! manual trigger, pause and resume, the Alertmanager webhook, `/metrics`,
//! `/healthz` and the page behind an email link.
//!
//! Handlers never change a target's state themselves: they send an event to
//! the target's worker ([`crate::daemon::TargetHandle`]) and answer with
//! what the state machine made of it, so the API goes through the same
//! journal, guards and notifications as everything else. Errors are JSON
//! `{"error": "..."}` with a status code that says who must act: 400 bad
//! request, 401 no or wrong token, 404 unknown target or incident, 409 the
//! event does not fit the target's state.

pub mod auth;
pub mod links;
mod page;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::Window;
use crate::daemon::{Command, TargetHandle};
use crate::decide::{Event, Incident, Pause, Phase, TargetState, Time};
use crate::sources::alertmanager::AlertStore;

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Global dry-run.
    pub dry_run: bool,
    /// Set while the journal cannot be written: nothing that needs a
    /// journal entry is acted on until it can (the error, with the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_error: Option<String>,
    /// Every target, in config order.
    pub targets: Vec<TargetStatus>,
}

/// One target in `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    /// Target name.
    pub name: String,
    /// State name (`Watching`, `AwaitingConfirmation`, ...).
    pub phase: String,
    /// The release window active now, if any (decisions are dry-run).
    pub window: Option<String>,
    /// Paused by whom, since when.
    pub paused: Option<Pause>,
    /// Confirmation, verification or cooldown deadline of the phase.
    pub until: Option<Time>,
    /// The full decision state: versions, rules with values, incident.
    pub state: TargetState,
}

/// Answer of the routes that send an event (approve, reject, trigger, pause, resume).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventResponse {
    /// Target name.
    pub target: String,
    /// State name after the event.
    pub phase: String,
    /// The incident the target holds after the event.
    pub incident: Option<Incident>,
    /// Paused by whom, since when.
    pub paused: Option<Pause>,
}

/// Body of approve, reject, trigger, pause and resume (all optional but `reason` for trigger).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// Who acts (defaults to `api`).
    #[serde(default)]
    pub by: Option<String>,
    /// Why (required for a manual trigger).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Everything the handlers share.
pub struct ApiState {
    /// Target name -> its worker.
    pub targets: BTreeMap<String, TargetHandle>,
    /// Target names in config order.
    pub order: Vec<String>,
    /// Every incident seen (journal at start, then live).
    pub incidents: Arc<RwLock<BTreeMap<String, Incident>>>,
    /// Bearer token for mutating routes, when configured.
    pub token: Option<String>,
    /// Alerts fed by the webhook.
    pub alerts: Arc<AlertStore>,
    /// Email link signing.
    pub links: Arc<links::LinkKeys>,
    /// Release windows, to show whether one is active.
    pub windows: Vec<Window>,
    /// Global dry-run.
    pub dry_run: bool,
    /// Set while the journal cannot be written (the error), for `status`.
    pub journal_error: Arc<RwLock<Option<String>>>,
}

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::global().inc("rollbackd_api_errors_total", &[("status", self.0.as_str())]);
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router with every route.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/incidents", get(incidents))
        .route("/v1/incidents/{id}", get(incident))
        .route("/v1/incidents/{id}/approve", post(approve))
        .route("/v1/incidents/{id}/reject", post(reject))
        .route("/v1/targets/{name}/rollback", post(trigger))
        .route("/v1/targets/{name}/pause", post(pause))
        .route("/v1/targets/{name}/resume", post(resume))
        .route("/v1/alertmanager", post(alertmanager))
        .route("/v1/confirm/{token}", get(page::show).post(page::act))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such route (see docs/api.md)".into(),
            )
        })
        .with_state(state)
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::global().render(),
    )
}

fn until(phase: &Phase) -> Option<Time> {
    match phase {
        Phase::AwaitingConfirmation { deadline, .. } | Phase::Verifying { deadline, .. } => {
            Some(*deadline)
        }
        Phase::Done { until, .. } => Some(*until),
        Phase::Watching | Phase::RollingBack { .. } => None,
    }
}

async fn status(State(api): State<Arc<ApiState>>) -> Json<StatusResponse> {
    let now = Utc::now();
    let window = api
        .windows
        .iter()
        .find(|w| w.contains(now))
        .map(|w| w.name.clone());
    let targets = api
        .order
        .iter()
        .filter_map(|n| api.targets.get(n))
        .map(|h| {
            let state = h.state.borrow().clone();
            TargetStatus {
                name: h.name.clone(),
                phase: state.phase.name().to_string(),
                window: window.clone(),
                paused: state.paused.clone(),
                until: until(&state.phase),
                state,
            }
        })
        .collect();
    let journal_error = api
        .journal_error
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(StatusResponse {
        dry_run: api.dry_run,
        journal_error,
        targets,
    })
}

async fn incidents(State(api): State<Arc<ApiState>>) -> Json<Vec<Incident>> {
    let all = api.incidents.read().unwrap_or_else(|p| p.into_inner());
    Json(all.values().rev().cloned().collect())
}

fn find_incident(api: &ApiState, id: &str) -> ApiResult<Incident> {
    let all = api.incidents.read().unwrap_or_else(|p| p.into_inner());
    all.get(id)
        .cloned()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no incident {id:?}")))
}

async fn incident(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Incident>> {
    find_incident(&api, &id).map(Json)
}

/// Parse an optional JSON body; empty means defaults.
fn body(bytes: &Bytes) -> ApiResult<EventRequest> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(EventRequest::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn who(req: &EventRequest) -> String {
    req.by
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(100).collect())
        .unwrap_or_else(|| "api".to_string())
}

/// Send an event to a target's worker and wait for what the machine made of it.
pub async fn send(api: &ApiState, target: &str, event: Event) -> ApiResult<EventResponse> {
    let handle = api
        .targets
        .get(target)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no target {target:?}")))?;
    let (reply, answer) = oneshot::channel();
    let unavailable = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the worker of target {target:?} is not running (shutting down?)"),
        )
    };
    handle
        .commands
        .send(Command { event, reply })
        .await
        .map_err(|_| unavailable())?;
    let state = answer
        .await
        .map_err(|_| unavailable())?
        .map_err(|e| ApiError(StatusCode::CONFLICT, e))?;
    Ok(EventResponse {
        target: target.to_string(),
        phase: state.phase.name().to_string(),
        incident: state.incident().cloned(),
        paused: state.paused.clone(),
    })
}

async fn approve(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let inc = find_incident(&api, &id)?;
    let event = Event::Approve {
        incident: id,
        by: who(&req),
    };
    send(&api, &inc.target, event).await.map(Json)
}

async fn reject(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let inc = find_incident(&api, &id)?;
    let event = Event::Reject {
        incident: id,
        by: who(&req),
        reason: req
            .reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "no reason given".into()),
    };
    send(&api, &inc.target, event).await.map(Json)
}

async fn trigger(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let Some(reason) = req.reason.clone().filter(|r| !r.trim().is_empty()) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a manual rollback needs a reason: {\"reason\": \"...\"}".into(),
        ));
    };
    let event = Event::ManualTrigger {
        by: who(&req),
        reason,
    };
    send(&api, &name, event).await.map(Json)
}

async fn pause(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    send(&api, &name, Event::Pause { by: who(&req) })
        .await
        .map(Json)
}

async fn resume(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    send(&api, &name, Event::Resume { by: who(&req) })
        .await
        .map(Json)
}

async fn alertmanager(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Json<crate::sources::alertmanager::IngestReport>> {
    auth::require(&api, &headers)?;
    match api.alerts.ingest(&bytes, Utc::now()) {
        Ok(report) => {
            let m = crate::metrics::global();
            m.add(
                "rollbackd_alerts_received_total",
                &[("result", "accepted")],
                report.accepted as f64,
            );
            m.add(
                "rollbackd_alerts_received_total",
                &[("result", "duplicate")],
                report.duplicates as f64,
            );
            tracing::info!(
                accepted = report.accepted,
                duplicates = report.duplicates,
                firing = report.firing,
                "alertmanager webhook"
            );
            Ok(Json(report))
        }
        Err(e) => {
            tracing::warn!(error = %e, "alertmanager webhook refused");
            Err(ApiError(StatusCode::BAD_REQUEST, e))
        }
    }
}

/// Serve the API on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
