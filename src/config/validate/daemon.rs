//! Validation of `[daemon]`: paths, listen, polling, guards (blast radius, settle), journal and pause limits.

use super::*;

/// `[daemon]`, every key with its default.
pub(super) fn daemon(cx: &mut Cx, raw: RawDaemon) -> Option<DaemonConfig> {
    let p = "daemon";
    let state_dir = cx
        .non_empty(
            &join(p, "state_dir"),
            raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR),
        )
        .map(PathBuf::from);
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(
                join(p, "listen"),
                format!(
                    "invalid listen address {listen_text:?} (use IP:PORT, e.g. \"127.0.0.1:9797\")"
                ),
            );
            None
        }
    };
    let poll_interval = poll_interval(cx, p, &raw);
    let api_token_file = match raw.api_token_file.as_deref() {
        None => Some(None),
        Some(f) => cx
            .non_empty(&join(p, "api_token_file"), f)
            .map(|f| Some(PathBuf::from(f))),
    };
    if let Some(addr) = listen {
        if !addr.ip().is_loopback() && raw.api_token_file.is_none() {
            cx.err(
                join(p, "listen"),
                format!(
                    "listen = {listen_text:?} is not a loopback address: set api_token_file so that the API requires a token"
                ),
            );
        }
    }
    let public_url = match raw.public_url.as_deref() {
        None => Some(None),
        Some(u) => cx.http_url(&join(p, "public_url"), u).map(Some),
    };
    let global_cap = global_cap(cx, p, &raw);
    let blast = blast_radius(cx, p, raw.max_simultaneous_breaches.as_ref());
    let journal_max_size = journal_max_size(cx, p, &raw);
    let log_format = log_format(cx, p, &raw);
    let max_pause = cx.duration(p, "max_pause", raw.max_pause.as_deref(), "24h", true);
    let settle = settle(cx, p, &raw);
    let removed_target_memory = cx.duration(
        p,
        "removed_target_memory",
        raw.removed_target_memory.as_deref(),
        "7d",
        false,
    );
    Some(DaemonConfig {
        max_pause: max_pause?,
        settle: settle?,
        removed_target_memory: removed_target_memory?,
        state_dir: state_dir?,
        listen: listen?,
        poll_interval: poll_interval?,
        dry_run: raw.dry_run.unwrap_or(false),
        api_token_file: api_token_file?,
        public_url: public_url?,
        max_rollbacks_per_hour: global_cap?,
        max_simultaneous_breaches: blast?,
        journal_max_size: journal_max_size?,
        log_format: log_format?,
    })
}

/// `poll_interval`: a duration of at least [`MIN_POLL_INTERVAL`].
fn poll_interval(cx: &mut Cx, p: &str, raw: &RawDaemon) -> Option<Duration> {
    cx.duration(
        p,
        "poll_interval",
        raw.poll_interval.as_deref(),
        DEFAULT_POLL_INTERVAL,
        true,
    )
    .and_then(|d| {
        if d < MIN_POLL_INTERVAL {
            cx.err(
                join(p, "poll_interval"),
                format!(
                    "poll_interval = {:?} is below the minimum of 100ms",
                    raw.poll_interval.as_deref().unwrap_or_default()
                ),
            );
            None
        } else {
            Some(d)
        }
    })
}

/// `max_rollbacks_per_hour`, the global cap: at least 1 when set.
fn global_cap(cx: &mut Cx, p: &str, raw: &RawDaemon) -> Option<Option<NonZeroU32>> {
    match raw.max_rollbacks_per_hour {
        None => Some(None),
        Some(n) => match u32::try_from(n).ok().and_then(NonZeroU32::new) {
            Some(v) => Some(Some(v)),
            None => {
                cx.err(
                    join(p, "max_rollbacks_per_hour"),
                    format!("max_rollbacks_per_hour = {n} must be at least 1 (to stop automatic rollbacks use dry_run)"),
                );
                None
            }
        },
    }
}

/// `journal_max_size`: a size of at least 64KiB.
fn journal_max_size(cx: &mut Cx, p: &str, raw: &RawDaemon) -> Option<u64> {
    match raw.journal_max_size.as_deref() {
        None => Some(crate::config::DEFAULT_JOURNAL_MAX_BYTES),
        Some(text) => match duration::parse_size(text) {
            Ok(n) if n >= 64 * 1024 => Some(n),
            Ok(_) => {
                cx.err(
                    join(p, "journal_max_size"),
                    format!("journal_max_size = {text:?} is below the minimum of 64KiB"),
                );
                None
            }
            Err(message) => {
                cx.err(join(p, "journal_max_size"), message);
                None
            }
        },
    }
}

/// `log_format`: `text`, `json` or `journald` (unset: decided at start).
fn log_format(cx: &mut Cx, p: &str, raw: &RawDaemon) -> Option<Option<LogFormat>> {
    match raw.log_format.as_deref() {
        None => Some(None),
        Some(f) => match LogFormat::parse(f) {
            Some(f) => Some(Some(f)),
            None => {
                cx.err(
                    join(p, "log_format"),
                    format!("invalid log_format {f:?} (use \"text\", \"json\" or \"journald\")"),
                );
                None
            }
        },
    }
}

/// `settle`: a duration of at most [`MAX_SETTLE`].
fn settle(cx: &mut Cx, p: &str, raw: &RawDaemon) -> Option<Duration> {
    cx.duration(p, "settle", raw.settle.as_deref(), "0s", false)
        .and_then(|d| {
            if d > MAX_SETTLE {
                cx.err(
                    join(p, "settle"),
                    format!(
                        "settle = {:?} is too long: it delays every automatic rollback; at most \"10m\"",
                        raw.settle.as_deref().unwrap_or_default()
                    ),
                );
                None
            } else {
                Some(d)
            }
        })
}

/// The longest `[daemon] settle`: a hold before every automatic rollback.
pub(super) const MAX_SETTLE: Duration = Duration::from_secs(600);

/// With the blast-radius guard on and enough targets for it to trip, a rule
/// whose `for` (plus `[daemon] settle`) is shorter than the guard's
/// `within` can roll back before the guard sees the peers whose breaches
/// begin within `within`: one warning naming those rules.
pub(super) fn blast_radius_blind_spot(
    cx: &mut Cx,
    d: &DaemonConfig,
    targets: &[Option<TargetConfig>],
) {
    let Some(b) = d.max_simultaneous_breaches else {
        return;
    };
    if (targets.len() as u64) < u64::from(b.targets) {
        return;
    }
    let short: Vec<(String, Duration)> = targets
        .iter()
        .flatten()
        .flat_map(|t| t.rules.iter().map(move |r| (t, r)))
        .filter(|(_, r)| !r.shadow && r.for_ + d.settle < b.within)
        .map(|(t, r)| {
            let name = format!("{}/{} (for = {:?})", t.name, r.name, fmt_duration(r.for_));
            (name, r.for_)
        })
        .collect();
    let Some(shortest) = short.iter().map(|(_, f)| *f).min() else {
        return;
    };
    let names: Vec<&str> = short.iter().map(|(n, _)| n.as_str()).collect();
    let named = if names.len() > 5 {
        format!("{} and {} more", names[..5].join(", "), names.len() - 5)
    } else {
        names.join(", ")
    };
    cx.warn(
        "daemon.max_simultaneous_breaches.within",
        format!(
            "within = {:?} is longer than for + settle ({:?}) of {named}: such a target can roll \
             back before the blast-radius guard sees the breaches that begin on other targets \
             within {:?} (it is escalated after the fact, but its rollback stands); set [daemon] \
             settle = {:?} (within minus the shortest for) to hold triggers until the guard can \
             see them",
            fmt_duration(b.within),
            fmt_duration(d.settle),
            fmt_duration(b.within),
            fmt_duration(b.within.saturating_sub(shortest)),
        ),
    );
}

/// `[daemon] max_simultaneous_breaches`: `3`, `{ targets = 3, fraction =
/// 0.5, within = "1m" }`, or `0` / `false` (off). Absent: the defaults.
pub(super) fn blast_radius(
    cx: &mut Cx,
    parent: &str,
    value: Option<&toml::Value>,
) -> Option<Option<BlastRadius>> {
    let path = join(parent, "max_simultaneous_breaches");
    let mut b = BlastRadius::default();
    match value {
        None => return Some(Some(b)),
        Some(toml::Value::Boolean(false)) => return Some(None),
        Some(toml::Value::Boolean(true)) => return Some(Some(b)),
        Some(toml::Value::Integer(0)) => return Some(None),
        Some(toml::Value::Integer(n)) if *n >= 2 && *n <= 100_000 => {
            b.targets = *n as u32;
            return Some(Some(b));
        }
        Some(toml::Value::Table(t)) => {
            let mut ok = true;
            for (k, v) in t {
                match (k.as_str(), v) {
                    ("targets", toml::Value::Integer(n)) if *n >= 2 && *n <= 100_000 => {
                        b.targets = *n as u32
                    }
                    ("fraction", toml::Value::Float(f)) if *f > 0.0 && *f <= 1.0 => b.fraction = *f,
                    ("fraction", toml::Value::Integer(1)) => b.fraction = 1.0,
                    ("within", toml::Value::String(d)) => {
                        match cx.duration(&path, "within", Some(d), "", true) {
                            Some(d) => b.within = d,
                            None => ok = false,
                        }
                    }
                    ("targets", v) => {
                        cx.err(
                            join(&path, "targets"),
                            format!("targets = {v} must be an integer from 2 to 100000"),
                        );
                        ok = false;
                    }
                    ("fraction", v) => {
                        cx.err(
                            join(&path, "fraction"),
                            format!("fraction = {v} must be a number above 0 and at most 1"),
                        );
                        ok = false;
                    }
                    ("within", v) => {
                        cx.err(
                            join(&path, "within"),
                            format!("within = {v} must be a duration string such as \"1m\""),
                        );
                        ok = false;
                    }
                    (other, _) => {
                        cx.err(
                            join(&path, other),
                            format!("unknown key {other:?} (expected targets, fraction, within)"),
                        );
                        ok = false;
                    }
                }
            }
            return ok.then_some(Some(b));
        }
        Some(v) => cx.err(
            path,
            format!(
                "max_simultaneous_breaches = {v} must be a number of targets (2 or more), a table \
                 {{ targets, fraction, within }}, or 0 / false to turn the guard off"
            ),
        ),
    }
    None
}
