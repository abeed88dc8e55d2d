//! rollbackd: turns monitoring into safe, automatic, verified rollbacks.
//!
//! # Layout
//!
//! - [`api`]: the HTTP API (axum): status, incidents, confirmation, trigger, pause, webhook, the email-link page; [`api::commands`] defines each API command once, for the route, the client and the CLI (with how `status` and `incidents` render the answers).
//! - [`client`]: the client commands (`status`, `approve`, ...) talking to the API.
//! - [`config`]: raw (serde) TOML -> validated, typed config; every error with its key path.
//! - [`sources`]: produce samples (Prometheus, HTTP probe, host /proc, Alertmanager); they never decide anything.
//! - [`rules`]: turn samples into a rule status (`for` duration, baselines, no-data policy).
//! - [`decide`]: the pure per-target incident state machine, `step(cfg, guards, state, event, now)`; it owns every decision (guards such as the global cap are inputs, refusals are data, verification is an action) and imports no I/O or effect module.
//! - [`execute`]: carries out a rollback plan: one file per executor kind, and the verification gates.
//! - [`run`]: the floor under the executors: process running, escaped children, the one `{var}` template grammar (validation and execution), the webhook HTTP client, the plan runner.
//! - [`notify`]: the rollback record, email and webhooks via a durable outbox, SMTP delivery.
//! - [`report`]: what effects report back to the decision core (step, plan and gate results).
//! - [`metrics`]: the daemon's own metrics, typed `prometheus-client` families.
//! - [`journal`]: append-only, fsync'd event log and recovery at start.
//! - [`confirm`]: confirmation answers: signed approve/reject email links, `confirm_command` (a team's own approval flow).
//! - [`version`]: reads a target's live version (command, URL, PromQL label, symlink); [`version::order`] orders version names (the executors' "previous version").
//! - [`lock`]: the exclusive lock on `state_dir`: one daemon per journal.
//! - [`cluster`]: optional HA on etcd: the etcd session and lease, per-target ownership locks, owner-checked shared state, commands forwarded to the owner.
//! - [`hostenv`]: process setup at start: open-file limit, child subreaper.
//! - [`daemon`]: build and bind (the bound address is known before it runs), the per-target worker (poll -> step -> journal), the effects runner (plan, hooks, notifications, `confirm_command`), the [`daemon::Clock`] seam for in-process tests under paused time, the worker's side of `[cluster]`, reload, readiness and watchdog, shutdown.
//! - [`handle`]: the command types the API and the daemon share (a target's handle, commands, refusals, reload errors); the API imports these and never `daemon`.
//! - [`demo`]: the self-contained demonstration behind `rollbackd demo`.
//! - [`drill`]: `rollbackd drill`: a synthetic breach through the decision machine, the executor in dry-run unless `--live`; the rehearsal record.
//! - [`util`]: duration, value, argv and error-chain formatting, serde adapters.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod client;
pub mod cluster;
pub mod config;
pub mod confirm;
pub mod daemon;
pub mod decide;
pub mod demo;
pub mod drill;
pub mod execute;
pub mod handle;
pub mod hostenv;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod rules;
pub mod run;
pub mod sources;
pub mod util;
pub mod version;
