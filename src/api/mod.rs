//! The HTTP API (docs/api.md): status and incidents, confirmation,
//! manual trigger, pause and resume, the Alertmanager webhook, `/metrics`,
//! `/healthz` and the page behind an email link. Each API command (its
//! route, handler, CLI arguments and rendering) is one file in
//! [`commands`]; this module holds what they share: the router, the
//! event request and answer, [`send`], the free-text caps and errors.
//!
//! Handlers never change a target's state themselves: they send an event to
//! the target's worker ([`crate::handle::TargetHandle`]) and answer with
//! what the state machine made of it, so the API goes through the same
//! journal, guards and notifications as everything else. Errors are JSON
//! `{"error": "..."}` with a status code that says who must act: 400 bad
//! request, 401 no or wrong token, 404 unknown target or incident, 409 the
//! event does not fit the target's state.

pub mod auth;
pub mod commands;
pub mod conn;
mod page;

pub use commands::incidents::{IncidentView, IncidentsQuery};
pub use commands::pause::parse_pause_for;
pub use commands::reload::ReloadResponse;
pub use commands::status::{ClusterStatus, StatusResponse, TargetStatus};

use crate::confirm::links;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::Window;
use crate::decide::{Event, Incident, Pause};
use crate::handle::{Command, DaemonRequest, Refusal, TargetHandle};
use crate::sources::alertmanager::AlertStore;

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

/// The router with every route: each command's ([`commands::routes`]),
/// the Alertmanager intake, `/healthz`, `/metrics` and the email-link page.
pub fn router(state: Arc<ApiState>) -> Router {
    let (open, guarded) = commands::routes(Router::new(), Router::new());
    // The token is checked before a body is read: a client without it
    // gets its 401 at once instead of holding a connection for its body.
    let mutating = guarded
        .route("/v1/alertmanager", post(alertmanager))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ));
    open.route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
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

fn find_incident(api: &ApiState, id: &str) -> ApiResult<Incident> {
    let all = api.incidents.read().unwrap_or_else(|p| p.into_inner());
    all.get(id)
        .cloned()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no incident {id:?}")))
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
