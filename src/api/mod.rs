//! The HTTP API (docs/api.md): status and incidents, confirmation,
//! manual trigger, pause and resume, the Alertmanager webhook, `/metrics`,
//! `/healthz` and the page behind an email link.
//!
//! Handlers never change a target's state themselves: they send an event to
//! the target's worker ([`crate::handle::TargetHandle`]) and answer with
//! what the state machine made of it, so the API goes through the same
//! journal, guards and notifications as everything else. Errors are JSON
//! `{"error": "..."}` with a status code that says who must act: 400 bad
//! request, 401 no or wrong token, 404 unknown target or incident, 409 the
//! event does not fit the target's state.

pub mod auth;
pub mod conn;
mod page;

use crate::confirm::links;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::Window;
use crate::decide::{Event, Incident, Pause, Phase, TargetState, Time};
use crate::handle::{Command, DaemonRequest, Refusal, TargetHandle};
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
    /// Set in state-lost mode: the state could not be read at start, so no
    /// target is acted on (why, and how an operator gets out of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_lost: Option<String>,
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
    /// With `[cluster]`: which node acts on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// With `[cluster]`: who holds a target's lock, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that owns the target and acts on it (`None`: no node yet).
    pub owner: Option<String>,
    /// Another node owns it: this node only watches.
    pub standby: bool,
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
    /// Pause only: how long, a duration string (`"2h"`); absent is
    /// `[daemon] max_pause`, `"0"` is until resumed.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// Manual trigger only: the version to go back to (checked to exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
}

/// The targets and settings the API serves; a reload replaces it whole.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Target name -> its worker.
    pub targets: BTreeMap<String, TargetHandle>,
    /// Target names in config order.
    pub order: Vec<String>,
    /// Release windows, to show whether one is active.
    pub windows: Vec<Window>,
    /// Global dry-run.
    pub dry_run: bool,
}

/// Answer of `POST /v1/reload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// What changed, e.g. `3 targets: 1 added, 0 removed, 2 updated`.
    pub reloaded: String,
}

/// Everything the handlers share.
pub struct ApiState {
    /// Targets, windows and dry-run as of the latest (re)load.
    pub view: Arc<RwLock<Arc<View>>>,
    /// Every incident seen (journal at start, then live).
    pub incidents: Arc<RwLock<BTreeMap<String, Incident>>>,
    /// Bearer token for mutating routes, when configured.
    pub token: Option<String>,
    /// Alerts fed by the webhook.
    pub alerts: Arc<AlertStore>,
    /// Email link signing.
    pub links: Arc<links::LinkKeys>,
    /// Set while the journal cannot be written (the error), for `status`.
    pub journal_error: Arc<RwLock<Option<String>>>,
    /// Where `POST /v1/reload` goes (`None`: reload not available).
    pub requests: Option<tokio::sync::mpsc::Sender<DaemonRequest>>,
    /// State-lost mode (why), for `status`.
    pub state_lost: Option<String>,
}

impl ApiState {
    /// The view as of now.
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::global().api_error(self.0.as_str());
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router with every route.
pub fn router(state: Arc<ApiState>) -> Router {
    // The token is checked before a body is read: a client without it
    // gets its 401 at once instead of holding a connection for its body.
    let mutating = Router::new()
        .route("/v1/incidents/{id}/approve", post(approve))
        .route("/v1/incidents/{id}/reject", post(reject))
        .route("/v1/targets/{name}/rollback", post(trigger))
        .route("/v1/targets/{name}/pause", post(pause))
        .route("/v1/targets/{name}/resume", post(resume))
        .route("/v1/alertmanager", post(alertmanager))
        .route("/v1/reload", post(reload))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/incidents", get(incidents))
        .route("/v1/incidents/{id}", get(incident))
        .merge(mutating)
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
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
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
    let view = api.view();
    let window = view
        .windows
        .iter()
        .find(|w| w.contains(now))
        .map(|w| w.name.clone());
    let targets = view
        .order
        .iter()
        .filter_map(|n| view.targets.get(n))
        .map(|h| {
            let state = h.state.borrow().clone();
            TargetStatus {
                name: h.name.clone(),
                phase: state.phase.name().to_string(),
                window: window.clone(),
                paused: state.paused.clone(),
                until: until(&state.phase),
                state,
                cluster: h.cluster.borrow().as_ref().map(|o| ClusterStatus {
                    owner: o.owner.as_ref().map(|w| w.node.clone()),
                    standby: o.standby,
                }),
            }
        })
        .collect();
    let journal_error = api
        .journal_error
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(StatusResponse {
        dry_run: view.dry_run,
        journal_error,
        state_lost: api.state_lost.clone(),
        targets,
    })
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

fn find_incident(api: &ApiState, id: &str) -> ApiResult<Incident> {
    let all = api.incidents.read().unwrap_or_else(|p| p.into_inner());
    all.get(id)
        .cloned()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no incident {id:?}")))
}

async fn incident(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<IncidentView>> {
    find_incident(&api, &id).map(|i| Json(i.into()))
}

/// Parse an optional JSON body; empty means defaults.
fn body(bytes: &Bytes) -> ApiResult<EventRequest> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(EventRequest::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// Longest `reason` of a trigger, reject or pause, in characters: a reason
/// goes into the journal, the record, mails and status.
pub const MAX_REASON_CHARS: usize = 1000;
/// Longest `by`, in characters.
pub const MAX_BY_CHARS: usize = 100;

/// A free-text field of a request, trimmed; `None` when absent or blank.
/// Longer than `max` characters is an error naming the field, its length
/// and the cap (never cut silently: what was written is what is recorded).
pub fn free_text<'a>(
    field: &str,
    value: Option<&'a str>,
    max: usize,
) -> Result<Option<&'a str>, String> {
    let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let chars = text.chars().count();
    if chars > max {
        return Err(format!(
            "\"{field}\" is {chars} characters long; at most {max} are accepted \
             (shorten it; details belong in the incident record)"
        ));
    }
    Ok(Some(text))
}

fn text_field<'a>(field: &str, value: Option<&'a str>, max: usize) -> ApiResult<Option<&'a str>> {
    free_text(field, value, max).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))
}

fn who(req: &EventRequest) -> ApiResult<String> {
    Ok(text_field("by", req.by.as_deref(), MAX_BY_CHARS)?
        .unwrap_or("api")
        .to_string())
}

fn reason(req: &EventRequest) -> ApiResult<Option<String>> {
    Ok(text_field("reason", req.reason.as_deref(), MAX_REASON_CHARS)?.map(str::to_string))
}

/// Send an event to a target's worker and wait for what the machine made of it.
pub async fn send(api: &ApiState, target: &str, event: Event) -> ApiResult<EventResponse> {
    let view = api.view();
    let handle = view
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
    let state = answer.await.map_err(|_| unavailable())?.map_err(refused)?;
    Ok(EventResponse {
        target: target.to_string(),
        phase: state.phase.name().to_string(),
        incident: state.incident().cloned(),
        paused: state.paused.clone(),
    })
}

/// A refused command as an answer: every refusal is a conflict with the
/// target's state (or with its journal), with the decision core's words;
/// a node that may not act for want of etcd answers 503.
fn refused(why: Refusal) -> ApiError {
    let status = match why {
        Refusal::Step(_) | Refusal::UnknownVersion(_) | Refusal::NotJournaled => {
            StatusCode::CONFLICT
        }
        // Coordination lost: try again later, or on another node.
        Refusal::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(status, why.to_string())
}

async fn approve(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let by = who(&req)?;
    let inc = find_incident(&api, &id)?;
    let event = Event::Approve { incident: id, by };
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
    let (by, reason) = (who(&req)?, reason(&req)?);
    let inc = find_incident(&api, &id)?;
    let event = Event::Reject {
        incident: id,
        by,
        reason: reason.unwrap_or_else(|| "no reason given".into()),
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
    let Some(reason) = reason(&req)? else {
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
        by: who(&req)?,
        reason,
        to_version,
    };
    send(&api, &name, event).await.map(Json)
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

async fn pause(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let duration = match req.for_.as_deref() {
        None => None,
        Some(text) => {
            Some(parse_pause_for(text).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?)
        }
    };
    let event = Event::Pause {
        by: who(&req)?,
        reason: reason(&req)?,
        duration,
    };
    send(&api, &name, event).await.map(Json)
}

async fn reload(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Json<ReloadResponse>> {
    auth::require(&api, &headers)?;
    let Some(requests) = &api.requests else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not available in this process".into(),
        ));
    };
    let (reply, answer) = oneshot::channel();
    requests
        .send(DaemonRequest::Reload { reply })
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon is stopping".into(),
            )
        })?;
    match answer.await {
        Ok(Ok(reloaded)) => Ok(Json(ReloadResponse { reloaded })),
        // The file is the operator's to fix: 422 with every problem.
        Ok(Err(problems)) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("config not reloaded, the running one is kept:\n{problems}"),
        )),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon stopped during the reload".into(),
        )),
    }
}

async fn resume(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    send(&api, &name, Event::Resume { by: who(&req)? })
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
            m.alerts_received("accepted", report.accepted);
            m.alerts_received("duplicate", report.duplicates);
            m.alerts_dropped(report.dropped);
            m.alerts_expired(report.expired);
            m.alerts_stored(report.stored);
            tracing::info!(
                accepted = report.accepted,
                duplicates = report.duplicates,
                dropped = report.dropped,
                firing = report.firing,
                "alertmanager webhook"
            );
            Ok(Json(report))
        }
        Err(e) => {
            tracing::warn!(error = %e, "alertmanager webhook refused");
            Err(ApiError(StatusCode::BAD_REQUEST, e.to_string()))
        }
    }
}

pub use conn::{
    serve_router, Classify, ConnLimits, Standing, BODY_READ_TIMEOUT, CONNECTION_LIFETIME,
    HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER, RESERVED_FOR_OPERATORS,
};

/// Serve the API on `listener` until `cancel` fires, within the default
/// [`ConnLimits`]; requests presenting the token (or, without a token,
/// operator requests from loopback) may use the operators' reserve.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let token = state.token.clone();
    let classify: Classify =
        Arc::new(move |parts, peer| auth::standing(token.as_deref(), parts, peer));
    serve_router(
        listener,
        router(state),
        cancel,
        ConnLimits::default(),
        classify,
    )
    .await;
    Ok(())
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

    #[test]
    fn free_text_is_trimmed_and_capped_with_a_clear_error() {
        assert_eq!(free_text("reason", None, 5), Ok(None));
        assert_eq!(free_text("reason", Some("  "), 5), Ok(None));
        assert_eq!(free_text("reason", Some(" abc "), 5), Ok(Some("abc")));
        // Characters, not bytes.
        assert_eq!(free_text("reason", Some("ééééé"), 5), Ok(Some("ééééé")));
        assert_eq!(
            free_text("reason", Some("abcdef"), 5).unwrap_err(),
            "\"reason\" is 6 characters long; at most 5 are accepted \
             (shorten it; details belong in the incident record)"
        );
    }
}
