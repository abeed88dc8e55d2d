//! `source = "host"`: CPU busy fraction from /proc/stat (delta between polls)
//! and memory in use from /proc/meminfo (1 - MemAvailable / MemTotal).
//!
//! /proc/stat counts in ticks of 10 ms. At a `poll_interval` of 100 ms a
//! delta between two polls holds a few ticks per CPU, too coarse to mean
//! anything, so the CPU fraction is taken against the newest earlier
//! reading at least [`MIN_CPU_TICKS`] ticks back (kept in a short ring),
//! not always the previous poll's.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{Context, Cx, Kind, Observe, RuleInput, SourceError};

/// `metric = cpu | memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMetric {
    /// Busy fraction of all CPUs since the previous poll (0..1).
    Cpu,
    /// 1 - MemAvailable / MemTotal (0..1).
    Memory,
}

/// The keys of a `source = "host"` rule.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostKeys {
    /// `cpu` or `memory`.
    pub metric: Option<String>,
}

impl Kind for HostMetric {
    const NAME: &'static str = "host";
    const PUSHED: bool = false;
    const RANGED: bool = false;
    type Keys = HostKeys;
    type Live = HostSource;

    fn usable(_: &mut Cx, _: &str) -> bool {
        true
    }

    fn validate(cx: &mut Cx, p: &str, rule: &RuleInput, keys: HostKeys) -> Option<(Self, f64)> {
        let above = super::above(cx, p, rule.above, "set above");
        let metric = cx
            .required(p, "metric", keys.metric.as_deref())
            .and_then(|m| {
                cx.choice(
                    p,
                    "metric",
                    Some(m),
                    &[("cpu", HostMetric::Cpu), ("memory", HostMetric::Memory)],
                )
            });
        let in_range = above.is_none_or(|v| super::fraction(cx, p, v));
        super::warn_zero_for(cx, p, rule, "host sample");
        in_range.then_some((metric?, above?))
    }

    fn check_poll(&self, _: &mut Cx, _: &str, _: std::time::Duration) {}

    fn describe(&self) -> String {
        match self {
            HostMetric::Cpu => "host cpu".into(),
            HostMetric::Memory => "host memory".into(),
        }
    }

    fn above_baseline(&self) -> Option<f64> {
        None
    }

    fn build(&self, _: &Context) -> HostSource {
        HostSource::build(*self)
    }

    fn keeps(&self, _: &HostSource, _: &Context) -> bool {
        true
    }

    /// /proc is read at once: nothing to wait for.
    fn budget(&self, _: &Context) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl Observe for HostSource {
    fn sample(
        &mut self,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<f64, SourceError>> + Send {
        std::future::ready(HostSource::sample(self, now))
    }

    fn detail(&self) -> Option<String> {
        None
    }

    fn window(&self) -> Option<std::time::Duration> {
        None
    }

    fn range(&mut self) -> Option<&mut super::prometheus::PromSource> {
        None
    }
}

/// The aggregate CPU counters of the `cpu ` line of /proc/stat, in ticks
/// since boot. Only differences between two readings mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// All time except idle and iowait.
    pub busy: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal. guest
    /// and guest_nice are left out: the kernel already counts them in user
    /// and nice.
    pub total: u64,
}

/// Why a /proc file's text could not be turned into a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line or field the value needs is not there (e.g. `MemAvailable`
    /// on kernels before 3.14).
    #[error("missing field {0}")]
    Missing(&'static str),
    /// The field is there but is not a usable number.
    #[error("{0}")]
    Bad(String),
}

impl ParseError {
    /// The source error for this problem in the file at `path`.
    fn at(self, path: &Path) -> SourceError {
        let what = path.display().to_string();
        match self {
            ParseError::Missing(_) => SourceError::Unavailable {
                what,
                detail: self.to_string(),
            },
            ParseError::Bad(detail) => SourceError::BadValue { what, detail },
        }
    }
}

/// Parse the aggregate `cpu ` line of /proc/stat.
pub fn parse_stat(text: &str) -> Result<CpuTimes, ParseError> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu ") || l.starts_with("cpu\t"))
        .ok_or(ParseError::Missing("cpu line"))?;
    let fields = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| {
            f.parse::<u64>()
                .map_err(|e| ParseError::Bad(format!("cpu line: field {f:?}: {e}")))
        })
        .collect::<Result<Vec<u64>, _>>()?;
    // user nice system idle are there on every kernel; iowait and the rest
    // came later and count as 0 when absent.
    if fields.len() < 4 {
        return Err(ParseError::Bad(format!(
            "cpu line: {} fields, need at least 4 (user nice system idle): {line:?}",
            fields.len()
        )));
    }
    let total = fields
        .iter()
        .try_fold(0u64, |acc, &v| acc.checked_add(v))
        .ok_or_else(|| ParseError::Bad(format!("cpu line: counters overflow: {line:?}")))?;
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Ok(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// Parse /proc/meminfo into the fraction of memory in use,
/// `1 - MemAvailable / MemTotal`.
pub fn parse_meminfo(text: &str) -> Result<f64, ParseError> {
    let total = meminfo_kb(text, "MemTotal")?;
    let available = meminfo_kb(text, "MemAvailable")?;
    if total == 0 {
        return Err(ParseError::Bad("MemTotal is 0 kB".into()));
    }
    if available > total {
        return Err(ParseError::Bad(format!(
            "MemAvailable {available} kB exceeds MemTotal {total} kB"
        )));
    }
    Ok(1.0 - available as f64 / total as f64)
}

/// The value of a `Name:   1234 kB` line.
fn meminfo_kb(text: &str, name: &'static str) -> Result<u64, ParseError> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .ok_or(ParseError::Missing(name))?;
    let mut parts = rest.split_whitespace();
    let number = parts.next().ok_or(ParseError::Missing(name))?;
    let value = number
        .parse::<u64>()
        .map_err(|e| ParseError::Bad(format!("{name}: {number:?}: {e}")))?;
    match parts.next() {
        None | Some("kB") => Ok(value),
        Some(unit) => Err(ParseError::Bad(format!(
            "{name}: unit {unit:?}, expected kB"
        ))),
    }
}

/// Least CPU time (ticks summed over all CPUs, 100 per CPU-second) a CPU
/// fraction is computed over.
pub const MIN_CPU_TICKS: u64 = 100;

/// Most CPU readings kept for [`MIN_CPU_TICKS`].
const MAX_CPU_READINGS: usize = 64;

/// A host metric with the previous CPU counters.
#[derive(Debug)]
pub struct HostSource {
    metric: HostMetric,
    /// Where `stat` and `meminfo` are read from: `/proc`, or a test directory.
    proc_root: PathBuf,
    /// Earlier successful CPU readings, oldest first; the busy fraction is
    /// the delta to the newest one at least [`MIN_CPU_TICKS`] back.
    prev_cpu: std::collections::VecDeque<CpuTimes>,
}

impl HostSource {
    /// Build for one metric, reading `/proc`.
    pub fn build(metric: HostMetric) -> HostSource {
        HostSource::with_proc_root(metric, PathBuf::from("/proc"))
    }

    /// Build for one metric, reading `stat` and `meminfo` under `proc_root`
    /// (fake files in tests).
    pub fn with_proc_root(metric: HostMetric, proc_root: PathBuf) -> HostSource {
        HostSource {
            metric,
            proc_root,
            prev_cpu: std::collections::VecDeque::new(),
        }
    }

    /// Read the metric now. CPU needs two readings: the first is `Warming`.
    pub fn sample(&mut self, _now: DateTime<Utc>) -> Result<f64, SourceError> {
        match self.metric {
            HostMetric::Cpu => self.cpu(),
            HostMetric::Memory => {
                let path = self.proc_root.join("meminfo");
                parse_meminfo(&read(&path)?).map_err(|e| e.at(&path))
            }
        }
    }

    fn cpu(&mut self) -> Result<f64, SourceError> {
        let path = self.proc_root.join("stat");
        let now = parse_stat(&read(&path)?).map_err(|e| e.at(&path))?;
        // A counter that went back (a new boot, a different file): start over.
        if self.prev_cpu.back().is_some_and(|p| p.total > now.total) {
            self.prev_cpu.clear();
        }
        let reference = self
            .prev_cpu
            .iter()
            .rev()
            .find(|p| now.total - p.total >= MIN_CPU_TICKS)
            .or(self.prev_cpu.front())
            .copied();
        // Keep only what a later reading may still need: the reference and newer.
        if let Some(r) = reference {
            while self.prev_cpu.front().is_some_and(|p| p.total < r.total) {
                self.prev_cpu.pop_front();
            }
        }
        self.prev_cpu.push_back(now);
        while self.prev_cpu.len() > MAX_CPU_READINGS {
            self.prev_cpu.pop_front();
        }
        let Some(prev) = reference else {
            return Err(SourceError::Warming(format!(
                "first reading of {}, cpu needs two",
                path.display()
            )));
        };
        let d_total = now.total.saturating_sub(prev.total);
        if d_total == 0 {
            return Err(SourceError::Warming(format!(
                "no cpu time passed in {} since the previous reading",
                path.display()
            )));
        }
        // Single counters (iowait notably) may step back; never go below 0.
        let d_busy = now.busy.saturating_sub(prev.busy);
        Ok((d_busy as f64 / d_total as f64).clamp(0.0, 1.0))
    }
}

/// How long one read of a /proc file serves every host rule: the values
/// are the host's, the same for all targets, and a hundred targets polling
/// within a few milliseconds need not read and parse them a hundred times.
const SHARED_READ: std::time::Duration = std::time::Duration::from_millis(50);

/// Most files remembered by the shared read (only `/proc` is shared).
const SHARED_FILES: usize = 16;

fn read(path: &Path) -> Result<String, SourceError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static RECENT: OnceLock<Mutex<HashMap<PathBuf, (Instant, String)>>> = OnceLock::new();
    if !path.starts_with("/proc") {
        // A test's own directory: always read.
        return std::fs::read_to_string(path).map_err(|e| SourceError::Unavailable {
            what: path.display().to_string(),
            detail: e.to_string(),
        });
    }
    let recent = RECENT.get_or_init(Default::default);
    if let Some((at, text)) = recent.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        if at.elapsed() < SHARED_READ {
            return Ok(text.clone());
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| SourceError::Unavailable {
        what: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut recent = recent.lock().unwrap_or_else(|p| p.into_inner());
    if recent.len() >= SHARED_FILES {
        recent.clear();
    }
    recent.insert(path.to_path_buf(), (Instant::now(), text.clone()));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn parse_stat_table() {
        let modern = "cpu  100 5 50 800 40 3 2 0 7 1\ncpu0 50 2 25 400 20 1 1 0 3 0\nintr 1 2\n";
        let cases: &[(&str, &str, Result<CpuTimes, ParseError>)] = &[
            (
                "modern kernel: guest excluded",
                modern,
                Ok(CpuTimes {
                    busy: 160,
                    total: 1000,
                }),
            ),
            (
                "old kernel: 4 fields",
                "cpu 10 0 10 80\n",
                Ok(CpuTimes {
                    busy: 20,
                    total: 100,
                }),
            ),
            (
                "per-cpu lines only",
                "cpu0 1 2 3 4\n",
                Err(ParseError::Missing("cpu line")),
            ),
            ("empty", "", Err(ParseError::Missing("cpu line"))),
            (
                "too few fields",
                "cpu 1 2 3\n",
                Err(ParseError::Bad(
                    "cpu line: 3 fields, need at least 4 (user nice system idle): \"cpu 1 2 3\""
                        .into(),
                )),
            ),
            (
                "not a number",
                "cpu 1 2 x 4\n",
                Err(ParseError::Bad(
                    "cpu line: field \"x\": invalid digit found in string".into(),
                )),
            ),
            (
                "negative",
                "cpu 1 2 -3 4\n",
                Err(ParseError::Bad(
                    "cpu line: field \"-3\": invalid digit found in string".into(),
                )),
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(&parse_stat(text), want, "{name}");
        }
    }

    #[test]
    fn parse_meminfo_table() {
        let ok = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        let cases: &[(&str, &str, Result<f64, ParseError>)] = &[
            ("normal", ok, Ok(0.75)),
            ("no unit", "MemTotal: 200\nMemAvailable: 200\n", Ok(0.0)),
            (
                "old kernel without MemAvailable",
                "MemTotal: 1000 kB\nMemFree: 100 kB\n",
                Err(ParseError::Missing("MemAvailable")),
            ),
            (
                "no MemTotal",
                "MemAvailable: 1 kB\n",
                Err(ParseError::Missing("MemTotal")),
            ),
            (
                "empty value",
                "MemTotal:\nMemAvailable: 1 kB\n",
                Err(ParseError::Missing("MemTotal")),
            ),
            (
                "not a number",
                "MemTotal: lots kB\nMemAvailable: 1 kB\n",
                Err(ParseError::Bad(
                    "MemTotal: \"lots\": invalid digit found in string".into(),
                )),
            ),
            (
                "wrong unit",
                "MemTotal: 1 MB\nMemAvailable: 1 kB\n",
                Err(ParseError::Bad("MemTotal: unit \"MB\", expected kB".into())),
            ),
            (
                "zero total",
                "MemTotal: 0 kB\nMemAvailable: 0 kB\n",
                Err(ParseError::Bad("MemTotal is 0 kB".into())),
            ),
            (
                "available above total",
                "MemTotal: 10 kB\nMemAvailable: 20 kB\n",
                Err(ParseError::Bad(
                    "MemAvailable 20 kB exceeds MemTotal 10 kB".into(),
                )),
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(&parse_meminfo(text), want, "{name}");
        }
    }

    #[test]
    fn cpu_is_the_busy_fraction_between_readings() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        let mut src = HostSource::with_proc_root(HostMetric::Cpu, dir.path().to_path_buf());

        std::fs::write(&stat, "cpu 100 0 100 700 100 0 0 0\n").unwrap();
        assert!(matches!(src.sample(now()), Err(SourceError::Warming(_))));
        // Same counters again: no time passed.
        assert!(matches!(src.sample(now()), Err(SourceError::Warming(_))));
        // +300 busy (user 200, system 100), +100 idle, +100 iowait: 300/500.
        std::fs::write(&stat, "cpu 300 0 200 800 200 0 0 0\n").unwrap();
        assert_eq!(src.sample(now()), Ok(0.6));
        // A broken file does not lose the previous reading.
        std::fs::write(&stat, "cpu oops\n").unwrap();
        let err = src.sample(now()).unwrap_err();
        assert!(matches!(err, SourceError::BadValue { .. }), "{err}");
        std::fs::write(&stat, "cpu 300 0 200 900 200 0 0 0\n").unwrap();
        assert_eq!(src.sample(now()), Ok(0.0));

        std::fs::remove_file(&stat).unwrap();
        let err = src.sample(now()).unwrap_err().to_string();
        assert!(err.starts_with(&stat.display().to_string()), "{err}");
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn short_polls_measure_cpu_over_at_least_min_ticks() {
        // 100 ms polls on 2 CPUs: ~20 ticks between readings. Each value
        // is taken over at least MIN_CPU_TICKS, not over one poll's 20.
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        let mut src = HostSource::with_proc_root(HostMetric::Cpu, dir.path().to_path_buf());
        let write = |busy: u64, idle: u64| {
            std::fs::write(&stat, format!("cpu {busy} 0 0 {idle} 0 0 0 0\n")).unwrap()
        };
        write(1000, 1000);
        assert!(src.sample(now()).is_err());
        // 20 ticks, all busy: against the first reading.
        write(1020, 1000);
        assert_eq!(src.sample(now()), Ok(1.0));
        // 80 more, all idle: 100 ticks since the first, 20 busy.
        write(1020, 1080);
        assert_eq!(src.sample(now()), Ok(0.2));
        // 20 more idle: the newest reading >= 100 back is the second
        // (100 ticks, none busy); the first is no longer needed.
        write(1020, 1100);
        assert_eq!(src.sample(now()), Ok(0.0));
        assert_eq!(src.prev_cpu.len(), 3, "{:?}", src.prev_cpu);
        // A counter going back (reboot) starts over.
        write(10, 10);
        assert!(matches!(src.sample(now()), Err(SourceError::Warming(_))));
    }

    #[test]
    fn memory_errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let meminfo = dir.path().join("meminfo");
        let mut src = HostSource::with_proc_root(HostMetric::Memory, dir.path().to_path_buf());

        let err = src.sample(now()).unwrap_err();
        assert!(matches!(err, SourceError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("meminfo"), "{err}");

        std::fs::write(&meminfo, "MemTotal: 1000 kB\nMemFree: 10 kB\n").unwrap();
        assert_eq!(
            src.sample(now()),
            Err(SourceError::Unavailable {
                what: meminfo.display().to_string(),
                detail: "missing field MemAvailable".into(),
            })
        );

        std::fs::write(&meminfo, "MemTotal: 1000 kB\nMemAvailable: 900 kB\n").unwrap();
        let v = src.sample(now()).unwrap();
        assert!((v - 0.1).abs() < 1e-12, "{v}");
    }

    #[test]
    fn real_proc_gives_fractions() {
        let mut mem = HostSource::build(HostMetric::Memory);
        let v = mem.sample(now()).unwrap();
        assert!((0.0..=1.0).contains(&v), "memory {v}");

        let mut cpu = HostSource::build(HostMetric::Cpu);
        assert!(matches!(cpu.sample(now()), Err(SourceError::Warming(_))));
        // Spin a little so some CPU time passes between the readings.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        match cpu.sample(now()) {
            Ok(v) => assert!((0.0..=1.0).contains(&v), "cpu {v}"),
            // USER_HZ is 100: a coarse clock may not have ticked yet.
            Err(SourceError::Warming(_)) => {}
            Err(e) => panic!("cpu: {e}"),
        }
    }
}
