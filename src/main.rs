//! The `rollbackd` binary: CLI parsing, logging, config, runtime and exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use rollbackd::client::Verb;
use rollbackd::config::{self, Config, LogFormat};
use rollbackd::daemon::Daemon;

/// Exit codes (README: 0 ok, 1 runtime failure, 2 usage, 64 invalid config, 69 daemon unreachable).
const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 64;
const EXIT_UNREACHABLE: u8 = 69;

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
    // Every API command (status, incidents, report, approve, reject,
    // trigger, pause, resume, reload): its verb, arguments and help.
    #[command(flatten)]
    Api(Verb),
    /// Rehearse a target's rollback (dry-run unless --live), or list past drills.
    // Listed between `incidents` and `report` in `--help`, as it always
    // was: the API commands take display orders 3.. in their order, and a
    // tie sorts by name.
    #[command(display_order = 5)]
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
    /// Print shell completions, e.g. `rollbackd completions bash > /usr/share/bash-completion/completions/rollbackd`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout; used by scripts/package.sh.
    #[command(hide = true)]
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo { .. } | Command::Drill { .. } => "warn",
        Command::Run { .. } | Command::Check { .. } => "info",
        _ => "warn",
    };
    // `run` reads its log format from the config, so the config comes
    // first; its errors go to stderr as `check` prints them.
    let mut loaded = None;
    if let Command::Run { config } = &cli.command {
        match load_or_report(config) {
            Ok(c) => loaded = Some(c),
            Err(code) => return code,
        }
    }
    init_logging(
        default_level,
        loaded.as_ref().and_then(|c| c.daemon.log_format),
    );
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => match loaded {
            Some(loaded) => {
                let path = config_path_for_reload(&config);
                finish(runtime().and_then(|rt| rt.block_on(run(loaded, &path))))
            }
            None => ExitCode::from(EXIT_CONFIG),
        },
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "rollbackd",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => finish(
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("failed to write the man page"),
        ),
        Command::Demo { dir } => demo(dir),
        Command::Api(verb) => client_command(&verb),
        Command::Drill {
            target,
            config,
            live,
            to_version,
            history,
        } => drill(&config, target, live, to_version, history),
    }
}

/// `rollbackd check`: exit 0 with the warnings, or 64 listing every problem.
fn check(config: &Path) -> ExitCode {
    match config::load(config) {
        Ok(c) => {
            for w in config::secrets::check_modes(&c) {
                eprintln!("{}: {w}", config.display());
            }
            for w in &c.warnings {
                eprintln!("{}: {w}", config.display());
            }
            for w in config::versions::warnings(&c) {
                eprintln!("{}: {w}", config.display());
            }
            for w in rollbackd::execute::shared_executor_warnings(&c) {
                eprintln!("{}: {w}", config.display());
            }
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
    }
}

/// `rollbackd demo`: exit 0 when the rollback was verified.
fn demo(dir: Option<PathBuf>) -> ExitCode {
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

/// An API command against the daemon, with its exit code.
fn client_command(verb: &Verb) -> ExitCode {
    use rollbackd::client::{ClientError, Endpoint};
    let (command, args) = (verb.invoke(), verb.client());
    let result = Endpoint::resolve(
        args.api.as_deref(),
        args.config.as_deref(),
        Path::new(DEFAULT_CONFIG),
    )
    .and_then(|ep| {
        let rt = runtime().map_err(ClientError::Other)?;
        rt.block_on(rollbackd::client::run(&ep, command, args.json))
    });
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rollbackd: {e}");
            if let (ClientError::Config(_), Some(note)) = (&e, command.invalid_config_note()) {
                eprintln!("rollbackd: {note}");
            }
            ExitCode::from(match e {
                ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
                ClientError::Config(_) | ClientError::ConfigRejected(_) => EXIT_CONFIG,
                ClientError::Api { .. } | ClientError::Other(_) => EXIT_FAILURE,
            })
        }
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
    use rollbackd::drill;
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

/// Logging to stderr as text or JSON, or natively to the journal.
///
/// `configured` is `[daemon] log_format`; without it the format is
/// journald when stderr is systemd's journal stream, else text. Text has
/// ANSI colour only when stderr is a terminal and `NO_COLOR` is unset. When
/// the journal socket cannot be reached, journald falls back to text with a
/// warning.
fn init_logging(default_level: &str, configured: Option<LogFormat>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter);
    let text = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour())
    };
    match configured.unwrap_or_else(default_log_format) {
        LogFormat::Text => registry.with(text()).init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Journald => match tracing_journald::layer() {
            // No prefix: the fields `target`, `incident`, `rule` become
            // TARGET=, INCIDENT=, RULE= (next to the layer's own TARGET=
            // with the module path), so `journalctl TARGET=shop` matches.
            Ok(journal) => registry
                .with(
                    journal
                        .with_field_prefix(None)
                        .with_syslog_identifier("rollbackd".into()),
                )
                .init(),
            Err(e) => {
                registry.with(text()).init();
                tracing::warn!(error = %e, "cannot reach the journal socket (/run/systemd/journal/socket); logging text to stderr instead");
            }
        },
    }
}

/// Journald when stderr is the journal stream systemd connected
/// (`JOURNAL_STREAM` names its device and inode), else text.
fn default_log_format() -> LogFormat {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return LogFormat::Text;
    };
    let ours = std::fs::metadata("/proc/self/fd/2")
        .map(|m| format!("{}:{}", m.dev(), m.ino()))
        .unwrap_or_default();
    if stream == ours {
        LogFormat::Journald
    } else {
        LogFormat::Text
    }
}

/// ANSI colour: only on a terminal, and never with `NO_COLOR` set
/// (no-color.org: present and not empty).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollbackd: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The file a reload re-reads: absolute, so a later `cd` cannot change it.
fn config_path_for_reload(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The daemon until SIGINT or SIGTERM. SIGHUP reloads the config, SIGUSR1
/// writes every target's state to the log (signal-hook, tokio stream).
/// Readiness, status and the watchdog are the daemon's (it knows when it
/// listens and whether its workers are alive).
async fn run(config: Config, path: &Path) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    rollbackd::hostenv::setup();
    rollbackd::metrics::global().config_loaded(true, chrono::Utc::now());
    for w in config::secrets::check_modes(&config) {
        tracing::warn!("{w}");
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    for w in rollbackd::execute::shared_executor_warnings(&config) {
        tracing::warn!("{w}");
    }
    let daemon = Daemon::build(config)?.with_config_path(path);
    let cancel = CancellationToken::new();
    let handle = daemon.handle();
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("failed to install the signal handlers")?;
    let signals_handle = signals.handle();
    let stop = cancel.clone();
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            match signal {
                SIGHUP => {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    let handle = handle.clone();
                    // The reload answers through the log; the loop goes on.
                    tokio::spawn(async move {
                        let _ = handle.reload().await;
                    });
                }
                SIGUSR1 => handle.dump_status().await,
                _ => {
                    let name = if signal == SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    };
                    tracing::info!("{name} received");
                    stop.cancel();
                }
            }
        }
    });
    let result = daemon.run(cancel).await;
    signals_handle.close();
    result
}
