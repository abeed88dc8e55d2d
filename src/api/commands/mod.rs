//! The API commands, one definition each, shared by the CLI, the client
//! and the router: `rollbackd VERB` and its `/v1/...` route.
//!
//! Each command is one file here with one struct. The struct derives
//! `clap::Args` (its verb, arguments and help: the CLI, the man page and
//! the completions come from it) and implements:
//! - [`ApiCommand`]: its route, method, whether it needs the token, and
//!   its handler;
//! - [`Invoke`]: the request the client sends, and how the answer is
//!   printed (without `--json`);
//! - [`TargetCommand`], for a command that becomes a decision [`Event`] for
//!   one target (approve, reject, trigger, pause, resume): which target and
//!   which event. The handler is then the shared [`target_route`].
//!
//! A new command is its file and one line in the `commands!` list at the
//! end of this file; that line declares its module, adds its verb to
//! [`Verb`] (which `main.rs` flattens into the CLI) and registers its
//! route.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::handler::Handler;
use axum::http::HeaderMap;
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde_json::Value;

use crate::api::{auth, body, send, ApiResult, ApiState, EventRequest, EventResponse};
use crate::decide::Event;

/// How a command's request goes: a read, or a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`: reads, needs no token.
    Get,
    /// `POST`: changes something (see [`ApiCommand::MUTATES`]).
    Post,
}

impl Method {
    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        }
    }

    /// The HTTP method.
    pub fn http(self) -> axum::http::Method {
        match self {
            Method::Get => axum::http::Method::GET,
            Method::Post => axum::http::Method::POST,
        }
    }
}

/// The daemon's side of a command: its route and its handler.
pub trait ApiCommand: Invoke + clap::Args + 'static {
    /// The route, as the router takes it and the client fills it in
    /// (`/v1/targets/{name}/pause`).
    const ROUTE: &'static str;
    /// Its method.
    const METHOD: Method;
    /// It changes something: behind the token guard, which answers 401
    /// before the body is read.
    const MUTATES: bool;
    /// The handler of [`Self::ROUTE`] (built with [`on`], or
    /// [`target_route`] for a [`TargetCommand`]).
    fn handler() -> MethodRouter<Arc<ApiState>>;
}

/// A command that becomes a decision event for one target's worker; the
/// handler ([`target_route`]) checks the token, reads the body, asks this
/// and sends the event.
pub trait TargetCommand: ApiCommand {
    /// The target and the event, from the route's one path segment (a
    /// target name or an incident ID) and the request body. An error is
    /// the answer (400 bad body, 404 unknown incident).
    fn event(api: &ApiState, key: String, req: &EventRequest) -> ApiResult<(String, Event)>;
}

/// The client's side of a command: what it sends and what it prints.
pub trait Invoke {
    /// The request (with [`Request::to`]).
    fn request(&self) -> Request;
    /// What to print from a successful answer, without `--json`.
    fn print(&self, answer: Value) -> anyhow::Result<String>;
    /// An answer found without the daemon (`report` reads the record
    /// file when the config is known); printed as it is, even with
    /// `--json`.
    fn local(&self, _state_dir: Option<&Path>) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    /// The error for a refusal by the daemon (`reload`: a 422 is the
    /// config file it re-read, exit 64).
    fn refused(&self, status: u16, message: String) -> ClientError {
        ClientError::Api { status, message }
    }
    /// Printed after the error when the `--config` file is invalid.
    fn invalid_config_note(&self) -> Option<&'static str> {
        None
    }
}

/// A request from the client: method, path relative to the API's base
/// URL, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Its method.
    pub method: Method,
    /// E.g. `v1/targets/shop/pause`.
    pub path: String,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

impl Request {
    /// `C`'s route with each `{..}` filled by the next of `args`
    /// (URL-encoded) and no leading `/`.
    pub fn to<C: ApiCommand>(args: &[&str]) -> Request {
        let mut args = args.iter();
        let path = C::ROUTE
            .trim_start_matches('/')
            .split('/')
            .map(
                |piece| match piece.starts_with('{').then(|| args.next()).flatten() {
                    Some(arg) => segment(arg),
                    None => piece.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        Request {
            method: C::METHOD,
            path,
            body: None,
        }
    }

    /// With this JSON body.
    pub fn with_body(mut self, body: Value) -> Request {
        self.body = Some(body);
        self
    }
}

fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Why a client command failed; the CLI maps each to its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address (exit 69).
    #[error("rollbackd is not reachable at {url}: {detail} (is the daemon running? point to it with --api URL or --config FILE)")]
    Unreachable {
        /// The API base URL tried.
        url: String,
        /// The connection error.
        detail: String,
    },
    /// The config file is invalid (exit 64).
    #[error("{0}")]
    Config(crate::config::ConfigErrors),
    /// `reload`: the daemon re-read its config file and found it invalid;
    /// it keeps the running one (exit 64, like any invalid config).
    #[error("{0}")]
    ConfigRejected(String),
    /// The daemon answered with an error (exit 1).
    #[error("{status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `error` of the JSON body.
        message: String,
    },
    /// Anything else (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// How a client command finds the daemon.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Config file: its `listen` and `api_token_file` (default /etc/rollbackd/rollbackd.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// API base URL, e.g. http://127.0.0.1:9797 (token from ROLLBACKD_API_TOKEN).
    #[arg(long)]
    pub api: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `C`'s handler on its method.
pub fn on<C: ApiCommand, H, T>(handler: H) -> MethodRouter<Arc<ApiState>>
where
    H: Handler<T, Arc<ApiState>>,
    T: 'static,
{
    axum::routing::on(C::METHOD.filter(), handler)
}

/// The handler of a [`TargetCommand`].
pub fn target_route<C: TargetCommand>() -> MethodRouter<Arc<ApiState>> {
    on::<C, _, _>(target_handler::<C>)
}

async fn target_handler<C: TargetCommand>(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    UrlPath(key): UrlPath<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let (target, event) = C::event(&api, key, &req)?;
    send(&api, &target, event).await.map(Json)
}

/// Who the CLI acts as: `$USER (cli)`.
fn cli_user() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "someone".into());
    format!("{user} (cli)")
}

/// The body of an event request from the CLI: who, and why.
fn event_body(reason: Option<&str>) -> Value {
    serde_json::json!({ "by": cli_user(), "reason": reason })
}

/// An answer as the type it should be.
fn answer<T: serde::de::DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    serde_json::from_value(v).context("unexpected answer from the daemon")
}

/// The line after an event: `{what}: target T is now P (incident I)`.
fn event_line(v: Value, what: &str) -> anyhow::Result<String> {
    let r: EventResponse = answer(v)?;
    let mut line = format!("{what}: target {} is now {}", r.target, r.phase);
    if let Some(i) = &r.incident {
        line.push_str(&format!(" (incident {})", i.id));
    }
    Ok(line + "\n")
}

/// `--reason`: at most [`crate::api::MAX_REASON_CHARS`], as the API takes.
fn reason_text(text: &str) -> Result<String, String> {
    crate::api::free_text("reason", Some(text), crate::api::MAX_REASON_CHARS)
        .map(|_| text.to_string())
}

/// Adds `C`'s route to the open or the guarded router.
fn register<C: ApiCommand>(
    open: Router<Arc<ApiState>>,
    guarded: Router<Arc<ApiState>>,
) -> (Router<Arc<ApiState>>, Router<Arc<ApiState>>) {
    if C::MUTATES {
        (open, guarded.route(C::ROUTE, C::handler()))
    } else {
        (open.route(C::ROUTE, C::handler()), guarded)
    }
}

/// Declares each command's module, the [`Verb`] enum (one variant per
/// command, named as its struct) and [`routes`].
macro_rules! commands {
    ($($module:ident::$command:ident,)*) => {
        // The variants carry no doc comment: clap takes a verb's help from
        // its struct's, and a variant's would replace it.
        /// Every API command: `main.rs` flattens this into the CLI's verbs.
        #[allow(missing_docs)]
        #[derive(clap::Subcommand, Debug)]
        pub enum Verb {
            $($command($module::$command),)*
        }

        impl Verb {
            /// The client's side of the command.
            pub fn invoke(&self) -> &dyn Invoke {
                match self {
                    $(Verb::$command(c) => c,)*
                }
            }

            /// How it finds the daemon.
            pub fn client(&self) -> &ClientArgs {
                match self {
                    $(Verb::$command(c) => &c.client,)*
                }
            }
        }

        /// Every command's route, on the open router or, when it changes
        /// something, on the one behind the token guard.
        pub fn routes(
            open: Router<Arc<ApiState>>,
            guarded: Router<Arc<ApiState>>,
        ) -> (Router<Arc<ApiState>>, Router<Arc<ApiState>>) {
            $(let (open, guarded) = register::<$module::$command>(open, guarded);)*
            (open, guarded)
        }
    };
}

// The registry: one line per command, in the CLI's order.
// The commands' modules: plain `mod` lines (rustfmt and the import check
// do not see a module a macro declares).
pub mod approve;
pub mod incidents;
pub mod pause;
pub mod reject;
pub mod reload;
pub mod report;
pub mod resume;
pub mod status;
pub mod trigger;

commands! {
    status::Status,
    incidents::Incidents,
    report::Report,
    approve::Approve,
    reject::Reject,
    trigger::Trigger,
    pause::Pause,
    resume::Resume,
    reload::Reload,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_filled_with_encoded_arguments() {
        let r = Request::to::<pause::Pause>(&["a b/c"]);
        assert_eq!(r.path, "v1/targets/a+b%2Fc/pause");
        assert_eq!(r.method, Method::Post);
        assert_eq!(Request::to::<status::Status>(&[]).path, "v1/status");
        assert_eq!(
            Request::to::<approve::Approve>(&["i-1"]).path,
            "v1/incidents/i-1/approve"
        );
    }
}
