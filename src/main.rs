//! The `rollbackd` binary: CLI parsing, logging, config, runtime and exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use rollbackd::config::{self, Config};
use rollbackd::daemon::Daemon;

/// Exit codes (DESIGN.md section 4).
const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 64;

const DEFAULT_CONFIG: &str = "/etc/rollbackd/rollbackd.toml";

/// Turns monitoring into safe, automatic, verified rollbacks.
#[derive(Parser)]
#[command(name = "rollbackd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file without side effects (exit 0, or 64 listing every problem).
    Check {
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Self-contained demonstration on loopback and a temp dir.
    Demo {
        /// Directory to run in (default: a new temp dir, kept for inspection).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Targets, their state and the latest rule values (read from the journal).
    Status {
        /// Config file (for `state_dir`).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Open and recent incidents with their timeline (read from the journal).
    Incidents {
        /// Config file (for `state_dir`).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Rehearse a target's rollback (dry-run unless --live), or list past drills.
    Drill {
        /// Target to rehearse (with --history: only its drills).
        #[arg(required_unless_present = "history")]
        target: Option<String>,
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Run the plan for real (against a staging target).
        #[arg(long)]
        live: bool,
        /// The version to go back to (default: the one before the live one, from the journal).
        #[arg(long)]
        to_version: Option<String>,
        /// Print the rehearsal record instead: date, target, mode, duration, success.
        #[arg(long)]
        history: bool,
    },
    /// Print an incident's rollback record (Markdown).
    Report {
        /// Incident ID.
        id: String,
        /// Config file (for `state_dir`).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo { .. } | Command::Drill { .. } => "warn",
        _ => "info",
    };
    init_logging(default_level);
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} target(s), {} rule(s))",
                    config.display(),
                    c.targets.len(),
                    c.targets.iter().map(|t| t.rules.len()).sum::<usize>()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => {
            let config = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            finish(runtime().and_then(|rt| rt.block_on(run(config))))
        }
        Command::Demo { dir } => {
            match runtime().and_then(|rt| rt.block_on(rollbackd::demo::run(dir))) {
                Ok(r) if r.verified => {
                    println!("\ndemo ok: the bad release was detected, rolled back and verified");
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    eprintln!(
                        "\ndemo failed: the rollback was not verified (see {})",
                        r.dir.display()
                    );
                    ExitCode::from(EXIT_FAILURE)
                }
                Err(e) => finish(Err(e)),
            }
        }
        Command::Status { config } => with_config(&config, |c| {
            print!("{}", rollbackd::status::render_status(&c.daemon.state_dir)?);
            Ok(())
        }),
        Command::Incidents { config } => with_config(&config, |c| {
            print!(
                "{}",
                rollbackd::status::render_incidents(&c.daemon.state_dir)?
            );
            Ok(())
        }),
        Command::Drill {
            target,
            config,
            live,
            to_version,
            history,
        } => drill(&config, target, live, to_version, history),
        Command::Report { id, config } => with_config(&config, |c| {
            let path = rollbackd::status::record_path(&c.daemon.state_dir.join("incidents"), &id)?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("no record for incident {id:?} at {}", path.display()))?;
            print!("{text}");
            Ok(())
        }),
    }
}

/// `rollbackd drill`: exit 0 when the drill succeeded, 1 when not.
fn drill(
    config: &Path,
    target: Option<String>,
    live: bool,
    to_version: Option<String>,
    history: bool,
) -> ExitCode {
    use rollbackd::execute::drill;
    let config = match load_or_report(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if history {
        return finish(
            drill::history(&config.daemon.state_dir, target.as_deref()).map(|t| print!("{t}")),
        );
    }
    let target = target.unwrap_or_default();
    let options = drill::DrillOptions { live, to_version };
    match runtime().and_then(|rt| rt.block_on(drill::run(&config, &target, &options))) {
        Ok(d) => {
            print!("{}", d.text);
            if d.record.success {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => finish(Err(e)),
    }
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")
}

fn load_or_report(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn with_config(path: &Path, f: impl FnOnce(&Config) -> anyhow::Result<()>) -> ExitCode {
    match load_or_report(path) {
        Ok(c) => finish(f(&c)),
        Err(code) => code,
    }
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollbackd: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The daemon until SIGINT or SIGTERM; tells systemd when it is ready and
/// keeps its watchdog fed.
async fn run(config: Config) -> anyhow::Result<()> {
    let daemon = Daemon::build(config)?;
    let cancel = CancellationToken::new();
    let signals = cancel.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        signals.cancel();
    });
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        let period = std::time::Duration::from_micros(usec / 2);
        let token = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => { let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]); }
                }
            }
        });
    }
    daemon.run(cancel).await
}
