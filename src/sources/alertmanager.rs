//! Alerts pushed by Alertmanager's webhook (`POST /v1/alertmanager`,
//! payload version 4). The API parses and checks a whole payload before it
//! changes anything ([`AlertStore::ingest`]); a rule's source then counts
//! the firing alerts whose labels match its `match` table. The value is
//! that count, so the rule is breached while a matching alert fires and Ok
//! once it resolves; `for` applies as for every rule.
//!
//! Alert labels are only compared, never copied into incidents or argv: a
//! rule's report names its configured `match`, not what an alert carried.
//!
//! The store is bounded like Alertmanager's: an alert stops firing at its
//! `endsAt`, or when it was not re-sent within `resolve_timeout` (5m), and
//! is then forgotten. At most [`AlertLimits::max_per_rule`] alerts are kept
//! per rule's `match` (alerts matching no rule share one such bucket) and
//! [`AlertLimits::max_total`] in all; alerts beyond are dropped, counted in
//! the POST's answer and in `rollbackd_alerts_dropped_total`. The file
//! `state_dir/alerts.json` is written at most once a second by a flusher
//! thread, not on every POST. [`AlertStore::subscribe`] wakes whoever waits
//! for the firing set to change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

use super::{Context, Cx, Kind, Observe, RuleInput, SourceError};
use crate::config::cx::join;

/// `match = { label = "value", ... }`: every label must equal its value.
pub type AlertMatch = BTreeMap<String, String>;

/// The keys of a `source = "alertmanager"` rule.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertKeys {
    /// The label match: a table of label = "value".
    #[serde(rename = "match")]
    pub match_: Option<toml::Value>,
}

/// Pushed: Alertmanager posts to `POST /v1/alertmanager` (`api/`), the
/// [`AlertStore`] keeps the alerts and wakes the targets that have alert
/// rules; a rule reads the store. The value is the number of matching
/// firing alerts, breached when above 0; `above` does not apply.
impl Kind for AlertMatch {
    const NAME: &'static str = "alertmanager";
    const PUSHED: bool = true;
    const RANGED: bool = false;
    type Keys = AlertKeys;
    type Live = AlertmanagerSource;

    fn usable(_: &mut Cx, _: &str) -> bool {
        true
    }

    fn validate(cx: &mut Cx, p: &str, rule: &RuleInput, keys: AlertKeys) -> Option<(Self, f64)> {
        if rule.above.is_some() {
            cx.err(
                join(p, "above"),
                "key above does not apply to source \"alertmanager\" (breached while a matching alert fires)",
            );
        }
        alert_match(cx, p, keys.match_.as_ref()).map(|m| (m, 0.0))
    }

    fn check_poll(&self, _: &mut Cx, _: &str, _: Duration) {}

    fn describe(&self) -> String {
        describe(self)
    }

    fn above_baseline(&self) -> Option<f64> {
        None
    }

    fn build(&self, cx: &Context) -> AlertmanagerSource {
        AlertmanagerSource::build(self.clone(), cx.alerts.clone())
    }

    fn keeps(&self, _: &AlertmanagerSource, _: &Context) -> bool {
        true
    }

    /// The store is local: nothing to wait for.
    fn budget(&self, _: &Context) -> Duration {
        Duration::ZERO
    }
}

/// `match = { label = "value", ... }` of an Alertmanager rule.
fn alert_match(cx: &mut Cx, p: &str, value: Option<&toml::Value>) -> Option<AlertMatch> {
    let path = join(p, "match");
    let table = match value {
        None => {
            cx.err(
                path,
                "alertmanager rule needs match = { label = \"value\", ... }",
            );
            return None;
        }
        Some(toml::Value::Table(t)) => t,
        Some(other) => {
            cx.err(
                path,
                format!("match must be a table of label = \"value\", not {other}"),
            );
            return None;
        }
    };
    if table.is_empty() {
        cx.err(
            path,
            "match is empty: it would match every alert; name at least one label",
        );
        return None;
    }
    let mut out = AlertMatch::new();
    let mut ok = true;
    for (k, v) in table {
        match v {
            toml::Value::String(s) => {
                out.insert(k.clone(), s.clone());
            }
            other => {
                cx.err(
                    format!("{path}.{k}"),
                    format!("label value must be a string, not {other}"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

impl Observe for AlertmanagerSource {
    fn sample(
        &mut self,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<f64, SourceError>> + Send {
        std::future::ready(AlertmanagerSource::sample(self, now))
    }

    fn detail(&self) -> Option<String> {
        None
    }

    fn window(&self) -> Option<Duration> {
        None
    }

    fn range(&mut self) -> Option<&mut super::prometheus::PromSource> {
        None
    }
}

/// Why a webhook payload was refused as a whole (the API answers 400 with
/// this text). Names the field at fault and the value it had.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON, or not the shape of a version 4 payload.
    #[error("invalid Alertmanager webhook payload: {0}")]
    Json(serde_json::Error),
    /// A `version` other than `"4"`.
    #[error("unsupported Alertmanager webhook payload version {0:?} (expected \"4\")")]
    Version(String),
    /// The group's `status` is neither `firing` nor `resolved`.
    #[error("invalid status {0:?} (expected \"firing\" or \"resolved\")")]
    Status(String),
    /// An alert's `status` is neither `firing` nor `resolved`.
    #[error(
        "alerts[{index}].status: invalid status {status:?} (expected \"firing\" or \"resolved\")"
    )]
    AlertStatus {
        /// The alert's position in `alerts`.
        index: usize,
        /// The status it had.
        status: String,
    },
    /// An alert without a fingerprint cannot be told apart from others.
    #[error("alerts[{index}].fingerprint: must not be empty")]
    EmptyFingerprint {
        /// The alert's position in `alerts`.
        index: usize,
    },
}

/// Why `state_dir/alerts.json` was not reloaded (the store starts empty).
#[derive(Debug, thiserror::Error)]
pub enum StoreFileError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {detail}", path.display())]
    Read {
        /// The store's file.
        path: PathBuf,
        /// The I/O error.
        detail: std::io::Error,
    },
    /// The file is not a saved store; it was renamed to `moved_to`.
    #[error(
        "cannot parse {}: {detail}; moved it to {} and started with no alerts",
        path.display(),
        moved_to.display()
    )]
    Parse {
        /// The store's file.
        path: PathBuf,
        /// Where the unreadable file now is (`alerts.json.bad`).
        moved_to: PathBuf,
        /// The JSON error.
        detail: serde_json::Error,
    },
}

/// Alertmanager's webhook body (version 4). Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    /// Payload version; only `"4"` is understood.
    pub version: String,
    /// `firing` or `resolved` (of the group).
    pub status: String,
    /// The alerts of the group.
    pub alerts: Vec<WebhookAlert>,
    /// Receiver name (informational).
    #[serde(default)]
    pub receiver: String,
    /// Group key (informational).
    #[serde(default)]
    pub group_key: String,
}

/// One alert of a webhook payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Identifying labels.
    pub labels: BTreeMap<String, String>,
    /// Informational annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing.
    pub starts_at: DateTime<Utc>,
    /// When it ended (Alertmanager sends year 1 while it fires without end).
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Alertmanager's identity of the label set.
    pub fingerprint: String,
}

/// What one payload did to the store (the API's answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    /// Alerts that changed the store (new firing, or resolved).
    pub accepted: usize,
    /// Deliveries already seen (same fingerprint, startsAt and status).
    pub duplicates: usize,
    /// Alerts firing in the store after this payload.
    pub firing: usize,
    /// New alerts not kept: their rule's bucket or the whole store was
    /// full ([`AlertLimits`]).
    #[serde(default)]
    pub dropped: usize,
    /// Alerts forgotten by this payload's housekeeping: past `endsAt`, not
    /// re-sent within `resolve_timeout`, or resolved a day ago.
    #[serde(default)]
    pub expired: usize,
    /// Alerts held after this payload (firing or not): the caller records
    /// it (`rollbackd_alerts_stored`); a source never reaches for the
    /// metrics registry. Not part of the webhook's answer.
    #[serde(skip)]
    pub stored: usize,
}

/// Bounds of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertLimits {
    /// A firing alert not re-sent within this time has resolved (as in
    /// Alertmanager; its default is 5m).
    pub resolve_timeout: Duration,
    /// Alerts kept per rule's `match` (and for alerts matching no rule).
    pub max_per_rule: usize,
    /// Alerts kept in all.
    pub max_total: usize,
}

impl Default for AlertLimits {
    fn default() -> AlertLimits {
        AlertLimits {
            resolve_timeout: Duration::from_secs(5 * 60),
            max_per_rule: 1_000,
            max_total: 10_000,
        }
    }
}

/// How often the flusher thread writes a changed store to its file.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    labels: BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    firing: bool,
    seen: DateTime<Utc>,
}

/// The alerts and the bookkeeping of their bounds, under one lock.
#[derive(Debug, Default)]
struct Inner {
    alerts: HashMap<String, Stored>,
    /// The `match` of every alertmanager rule built so far.
    matchers: Vec<AlertMatch>,
    /// Alerts kept per matcher; the last slot counts alerts matching none.
    counts: Vec<usize>,
    /// Changed since the last write to the file.
    dirty: bool,
}

impl Inner {
    /// The buckets an alert counts in: every matcher it matches, or the
    /// last ("no rule") slot.
    fn buckets(&self, labels: &BTreeMap<String, String>) -> Vec<usize> {
        let hit: Vec<usize> = self
            .matchers
            .iter()
            .enumerate()
            .filter(|(_, m)| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map(|(i, _)| i)
            .collect();
        if hit.is_empty() {
            vec![self.matchers.len()]
        } else {
            hit
        }
    }

    fn recount(&mut self) {
        let mut counts = vec![0; self.matchers.len() + 1];
        for s in self.alerts.values() {
            for b in self.buckets(&s.labels) {
                counts[b] += 1;
            }
        }
        self.counts = counts;
    }

    /// Keep `s` unless its bucket or the store is full.
    fn admit(&mut self, fp: String, s: Stored, limits: &AlertLimits) -> bool {
        if self.counts.len() != self.matchers.len() + 1 {
            self.recount();
        }
        let buckets = self.buckets(&s.labels);
        if self.alerts.len() >= limits.max_total
            || buckets
                .iter()
                .any(|b| self.counts[*b] >= limits.max_per_rule)
        {
            return false;
        }
        for b in buckets {
            self.counts[b] += 1;
        }
        self.alerts.insert(fp, s);
        true
    }

    /// Forget what is over; returns (forgotten, whether a firing one was).
    fn expire(&mut self, now: DateTime<Utc>, limits: &AlertLimits) -> (usize, bool) {
        let forget = now - ChronoDuration::hours(FORGET_AFTER);
        let gone: Vec<String> = self
            .alerts
            .iter()
            .filter(|(_, s)| {
                if s.firing {
                    !is_firing(s, now, limits)
                } else {
                    s.seen <= forget
                }
            })
            .map(|(fp, _)| fp.clone())
            .collect();
        let mut firing_gone = false;
        for fp in &gone {
            if let Some(s) = self.alerts.remove(fp) {
                firing_gone |= s.firing;
                if self.counts.len() == self.matchers.len() + 1 {
                    for b in self.buckets(&s.labels) {
                        self.counts[b] = self.counts[b].saturating_sub(1);
                    }
                }
            }
        }
        (gone.len(), firing_gone)
    }
}

/// Firing alerts by fingerprint, shared by the API (writer) and the
/// alertmanager sources (readers).
#[derive(Debug)]
pub struct AlertStore {
    inner: Mutex<Inner>,
    limits: AlertLimits,
    /// `state_dir/alerts.json` once [`AlertStore::persist_in`] was called:
    /// changes are saved there, so a restart does not forget what fires
    /// until Alertmanager's next repeat.
    file: Mutex<Option<PathBuf>>,
    /// Set once [`AlertStore::start_flusher`] runs: saves are left to it.
    flusher: AtomicBool,
    /// The last save failed (logged once until a save works again).
    save_failed: AtomicBool,
    /// Bumped whenever the firing set changes.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Default for AlertStore {
    fn default() -> AlertStore {
        AlertStore::with_limits(AlertLimits::default())
    }
}

/// File name of the saved store inside `state_dir`.
pub const ALERTS_FILE: &str = "alerts.json";

/// How long resolved alerts are remembered to recognise redeliveries.
const FORGET_AFTER: i64 = 24;

impl AlertStore {
    /// The daemon's store.
    pub fn global() -> Arc<AlertStore> {
        static STORE: OnceLock<Arc<AlertStore>> = OnceLock::new();
        STORE
            .get_or_init(|| Arc::new(AlertStore::default()))
            .clone()
    }

    /// An empty store with these bounds.
    pub fn with_limits(limits: AlertLimits) -> AlertStore {
        AlertStore {
            inner: Mutex::new(Inner::default()),
            limits,
            file: Mutex::new(None),
            flusher: AtomicBool::new(false),
            save_failed: AtomicBool::new(false),
            generation: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver whose value (a generation counter) changes whenever the
    /// set of firing alerts changes: a new firing alert, a resolution, an
    /// expiry. Cheap way for a worker to re-evaluate at once after a POST.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count the alerts of a rule's `match` separately from now on (called
    /// when an alertmanager rule's source is built).
    pub fn register(&self, m: &AlertMatch) {
        let mut inner = self.lock();
        if !inner.matchers.contains(m) {
            inner.matchers.push(m.clone());
            inner.recount();
        }
    }

    /// Alerts kept now (firing or remembered as resolved).
    pub fn len(&self) -> usize {
        self.lock().alerts.len()
    }

    /// Whether no alert is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parse and check a webhook body, then apply it. A malformed payload
    /// is refused as a whole with the reason and changes nothing.
    pub fn ingest(&self, body: &[u8], now: DateTime<Utc>) -> Result<IngestReport, PayloadError> {
        let payload: WebhookPayload = serde_json::from_slice(body).map_err(PayloadError::Json)?;
        check(&payload)?;
        let limits = self.limits;
        let mut inner = self.lock();
        let mut report = IngestReport::default();
        let (expired, mut firing_changed) = inner.expire(now, &limits);
        report.expired = expired;
        for a in payload.alerts {
            let firing = a.status == "firing";
            let ends_at = a.ends_at.filter(|t| t.year() > 1);
            let stored = Stored {
                labels: a.labels,
                starts_at: a.starts_at,
                ends_at,
                firing,
                seen: now,
            };
            match inner.alerts.get_mut(&a.fingerprint) {
                Some(s) if s.starts_at == a.starts_at && s.firing == firing => {
                    s.seen = now;
                    s.ends_at = ends_at;
                    report.duplicates += 1;
                }
                // A resolved delivery for an older episode than the one we
                // hold changes nothing.
                Some(s) if !firing && a.starts_at < s.starts_at => report.duplicates += 1,
                // Same fingerprint, same labels: the same buckets.
                Some(s) => {
                    firing_changed |= s.firing || firing;
                    *s = stored;
                    report.accepted += 1;
                }
                None => {
                    if inner.admit(a.fingerprint, stored, &limits) {
                        firing_changed |= firing;
                        report.accepted += 1;
                    } else {
                        report.dropped += 1;
                    }
                }
            }
        }
        report.firing = inner
            .alerts
            .values()
            .filter(|s| is_firing(s, now, &limits))
            .count();
        if report.accepted + report.duplicates + report.expired > 0 {
            inner.dirty = true;
        }
        report.stored = inner.alerts.len();
        drop(inner);
        if report.dropped > 0 {
            tracing::warn!(
                dropped = report.dropped,
                max_per_rule = limits.max_per_rule,
                max_total = limits.max_total,
                "alert store full: new alerts dropped"
            );
        }
        if firing_changed {
            self.bump();
        }
        if !self.flusher.load(Ordering::Relaxed) {
            self.flush();
        }
        Ok(report)
    }

    /// Load `dir/alerts.json` (if any) into the store, dropping alerts whose
    /// `endsAt` has passed and resolved ones too old to matter, and save
    /// every later change there. Returns how many alerts fire after loading.
    /// A file that cannot be read is set aside as `alerts.json.bad` (and
    /// reported) so that nothing is lost and the daemon starts anyway.
    pub fn persist_in(&self, dir: &Path, now: DateTime<Utc>) -> Result<usize, StoreFileError> {
        let path = dir.join(ALERTS_FILE);
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.clone());
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(detail) => return Err(StoreFileError::Read { path, detail }),
        };
        let loaded: HashMap<String, Stored> = match serde_json::from_slice(&text) {
            Ok(l) => l,
            Err(detail) => {
                let moved_to = dir.join(format!("{ALERTS_FILE}.bad"));
                let _ = std::fs::rename(&path, &moved_to);
                return Err(StoreFileError::Parse {
                    path,
                    moved_to,
                    detail,
                });
            }
        };
        let limits = self.limits;
        let mut inner = self.lock();
        let mut dropped = 0;
        for (fp, s) in loaded {
            if inner.alerts.contains_key(&fp) {
                continue;
            }
            if !inner.admit(fp, s, &limits) {
                dropped += 1;
            }
        }
        inner.expire(now, &limits);
        if dropped > 0 {
            tracing::warn!(dropped, "alerts over the store's bounds not reloaded");
        }
        let firing = inner
            .alerts
            .values()
            .filter(|s| is_firing(s, now, &limits))
            .count();
        drop(inner);
        self.bump();
        Ok(firing)
    }

    /// Save the store from now on in a background thread, at most once per
    /// [`FLUSH_INTERVAL`] and only when it changed, instead of on every
    /// POST. The thread ends when the store is dropped.
    pub fn start_flusher(self: &Arc<AlertStore>) {
        if self.flusher.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("alert-store-flush".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_INTERVAL);
                let Some(store) = weak.upgrade() else { break };
                store.flush();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the alert store's flusher; saving on every change");
            self.flusher.store(false, Ordering::SeqCst);
        }
    }

    /// Write the store to its file if it changed (a temporary file, fsync,
    /// rename). Also called at shutdown.
    pub fn flush(&self) {
        let Some(path) = self.file.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return;
        };
        let bytes = {
            let mut inner = self.lock();
            if !inner.dirty {
                return;
            }
            inner.dirty = false;
            serde_json::to_vec(&inner.alerts)
        };
        let written = bytes
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomic(&path, &b));
        match written {
            Ok(()) => {
                if self.save_failed.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %path.display(), "alert store saved again");
                }
            }
            Err(e) => {
                self.lock().dirty = true;
                if !self.save_failed.swap(true, Ordering::Relaxed) {
                    tracing::error!(path = %path.display(), error = %e, "cannot save the alert store; a restart forgets alerts until Alertmanager repeats them");
                }
            }
        }
    }

    /// Firing alerts whose labels include every pair of `m`.
    pub fn count_matching(&self, m: &AlertMatch, now: DateTime<Utc>) -> usize {
        let limits = self.limits;
        let inner = self.lock();
        inner
            .alerts
            .values()
            .filter(|s| is_firing(s, now, &limits))
            .filter(|s| m.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .count()
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Firing, not past an `endsAt` Alertmanager gave it (an Alertmanager that
/// died does not leave an alert firing forever), and re-sent within
/// `resolve_timeout`.
fn is_firing(s: &Stored, now: DateTime<Utc>, limits: &AlertLimits) -> bool {
    let timeout = ChronoDuration::from_std(limits.resolve_timeout).unwrap_or(ChronoDuration::MAX);
    s.firing && s.ends_at.is_none_or(|e| e > now) && s.seen + timeout > now
}

fn check(p: &WebhookPayload) -> Result<(), PayloadError> {
    if p.version != "4" {
        return Err(PayloadError::Version(p.version.clone()));
    }
    if !matches!(p.status.as_str(), "firing" | "resolved") {
        return Err(PayloadError::Status(p.status.clone()));
    }
    for (index, a) in p.alerts.iter().enumerate() {
        if !matches!(a.status.as_str(), "firing" | "resolved") {
            return Err(PayloadError::AlertStatus {
                index,
                status: a.status.clone(),
            });
        }
        if a.fingerprint.trim().is_empty() {
            return Err(PayloadError::EmptyFingerprint { index });
        }
    }
    Ok(())
}

/// A rule's view of the store: the count of matching firing alerts.
#[derive(Debug)]
pub struct AlertmanagerSource {
    matcher: AlertMatch,
    store: Arc<AlertStore>,
}

impl AlertmanagerSource {
    /// Build for a rule's `match` over `store`.
    pub fn build(matcher: AlertMatch, store: Arc<AlertStore>) -> AlertmanagerSource {
        store.register(&matcher);
        AlertmanagerSource { matcher, store }
    }

    /// Number of matching firing alerts (never an error: no alert is Ok).
    pub fn sample(&self, now: DateTime<Utc>) -> Result<f64, SourceError> {
        Ok(self.store.count_matching(&self.matcher, now) as f64)
    }
}

/// `alertmanager match {alertname="X", service="y"}`.
pub fn describe(m: &AlertMatch) -> String {
    let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("alertmanager match {{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 18, 12, 0, 0).unwrap()
    }

    fn payload(status: &str, fp: &str, starts: &str) -> String {
        format!(
            r#"{{"version":"4","status":"{status}","receiver":"rollbackd","groupKey":"{{}}:{{}}",
            "truncatedAlerts":0,"groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},
            "externalURL":"http://am","alerts":[{{"status":"{status}",
            "labels":{{"alertname":"HighErrorRate","service":"frontend"}},"annotations":{{}},
            "startsAt":"{starts}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"{fp}"}}]}}"#
        )
    }

    fn m() -> AlertMatch {
        [("alertname".to_string(), "HighErrorRate".to_string())].into()
    }

    #[test]
    fn firing_then_duplicate_then_resolved() {
        let s = AlertStore::default();
        let p = payload("firing", "abc", "2026-11-18T11:59:00Z");
        let r = s.ingest(p.as_bytes(), now()).unwrap();
        assert_eq!((r.accepted, r.duplicates, r.firing), (1, 0, 1));
        let r = s.ingest(p.as_bytes(), now()).unwrap();
        assert_eq!((r.accepted, r.duplicates, r.firing), (0, 1, 1));
        assert_eq!(s.count_matching(&m(), now()), 1);
        let other: AlertMatch = [("service".to_string(), "backend".to_string())].into();
        assert_eq!(s.count_matching(&other, now()), 0);
        let p = payload("resolved", "abc", "2026-11-18T11:59:00Z");
        let r = s.ingest(p.as_bytes(), now()).unwrap();
        assert_eq!((r.accepted, r.firing), (1, 0));
        assert_eq!(s.count_matching(&m(), now()), 0);
    }

    #[test]
    fn persisted_store_reloads_firing_alerts_and_drops_ended_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = AlertStore::default();
        assert_eq!(s.persist_in(dir.path(), now()).unwrap(), 0);
        let firing = payload("firing", "abc", "2026-11-18T11:59:00Z");
        s.ingest(firing.as_bytes(), now()).unwrap();
        let ends_soon = payload("firing", "def", "2026-11-18T11:58:00Z")
            .replace("0001-01-01T00:00:00Z", "2026-11-18T12:02:00Z");
        s.ingest(ends_soon.as_bytes(), now()).unwrap();
        assert!(!dir.path().join("alerts.json.tmp").exists());

        // A new process: both fire a minute later ...
        let later = now() + ChronoDuration::minutes(1);
        let r = AlertStore::default();
        assert_eq!(r.persist_in(dir.path(), later).unwrap(), 2);
        assert_eq!(r.count_matching(&m(), later), 2);
        // ... and redeliveries are still recognised.
        let rep = r.ingest(firing.as_bytes(), later).unwrap();
        assert_eq!((rep.accepted, rep.duplicates), (0, 1));
        // After "def"'s endsAt only "abc" is loaded.
        let much_later = now() + ChronoDuration::minutes(3);
        let r = AlertStore::default();
        assert_eq!(r.persist_in(dir.path(), much_later).unwrap(), 1);
        assert_eq!(r.len(), 1);
        // Not re-sent within resolve_timeout (5m): resolved and forgotten.
        let r = AlertStore::default();
        assert_eq!(
            r.persist_in(dir.path(), now() + ChronoDuration::minutes(6))
                .unwrap(),
            0
        );
        assert!(r.is_empty());
    }

    fn distinct(n: usize, from: usize, alertname: &str) -> String {
        let alerts: Vec<String> = (from..from + n)
            .map(|i| {
                format!(
                    r#"{{"status":"firing","labels":{{"alertname":"{alertname}","i":"{i}"}},"startsAt":"2026-11-18T11:59:00Z","fingerprint":"fp{i}"}}"#
                )
            })
            .collect();
        format!(
            r#"{{"version":"4","status":"firing","alerts":[{}]}}"#,
            alerts.join(",")
        )
    }

    #[test]
    fn store_is_bounded_per_rule_and_in_total() {
        let s = AlertStore::with_limits(AlertLimits {
            resolve_timeout: Duration::from_secs(300),
            max_per_rule: 10,
            max_total: 25,
        });
        s.register(&m());
        let mut rx = s.subscribe();
        let r = s
            .ingest(distinct(15, 0, "HighErrorRate").as_bytes(), now())
            .unwrap();
        assert_eq!((r.accepted, r.dropped, r.firing), (10, 5, 10));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert_eq!(s.count_matching(&m(), now()), 10);
        // Alerts of no rule have their own bucket.
        let r = s
            .ingest(distinct(15, 100, "Other").as_bytes(), now())
            .unwrap();
        assert_eq!((r.accepted, r.dropped), (10, 5));
        rx.mark_unchanged();
        // A repeat changes nothing and wakes nobody.
        let r = s
            .ingest(distinct(15, 0, "HighErrorRate").as_bytes(), now())
            .unwrap();
        assert_eq!((r.accepted, r.duplicates, r.dropped), (0, 10, 5));
        assert!(!rx.has_changed().unwrap());
        // After resolve_timeout without a repeat they are gone, making room.
        let later = now() + ChronoDuration::minutes(6);
        assert_eq!(s.count_matching(&m(), later), 0);
        let r = s
            .ingest(distinct(3, 200, "HighErrorRate").as_bytes(), later)
            .unwrap();
        assert_eq!((r.accepted, r.expired, r.firing), (3, 20, 3));
        assert!(rx.has_changed().unwrap());
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn total_cap_holds_across_buckets() {
        let s = AlertStore::with_limits(AlertLimits {
            resolve_timeout: Duration::from_secs(300),
            max_per_rule: 100,
            max_total: 25,
        });
        let r = s.ingest(distinct(40, 0, "A").as_bytes(), now()).unwrap();
        assert_eq!((r.accepted, r.dropped), (25, 15));
    }

    #[test]
    fn unreadable_store_file_is_set_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ALERTS_FILE), "{torn").unwrap();
        let s = AlertStore::default();
        let e = s.persist_in(dir.path(), now()).unwrap_err().to_string();
        assert!(
            e.contains("alerts.json") && e.contains("alerts.json.bad"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("alerts.json.bad")).unwrap(),
            "{torn"
        );
        // The store still works and saves.
        let p = payload("firing", "abc", "2026-11-18T11:59:00Z");
        s.ingest(p.as_bytes(), now()).unwrap();
        assert!(dir.path().join(ALERTS_FILE).exists());
    }

    #[test]
    fn malformed_payloads_name_the_problem_and_change_nothing() {
        let s = AlertStore::default();
        for (body, want) in [
            (
                "not json".to_string(),
                "invalid Alertmanager webhook payload",
            ),
            (
                payload("firing", "abc", "2026").replace("\"4\"", "\"3\""),
                "invalid Alertmanager webhook payload",
            ),
            (
                payload("firing", "abc", "2026-11-18T11:59:00Z").replace("\"4\"", "\"3\""),
                "version \"3\"",
            ),
            (
                payload("firing", "", "2026-11-18T11:59:00Z"),
                "alerts[0].fingerprint",
            ),
            (
                payload("firing", "abc", "2026-11-18T11:59:00Z")
                    .replace("\"status\":\"firing\",\n", "\"status\":\"burning\",\n"),
                "burning",
            ),
            (r#"{"version":"4","status":"firing"}"#.to_string(), "alerts"),
        ] {
            let e = s.ingest(body.as_bytes(), now()).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
        assert_eq!(s.count_matching(&m(), now()), 0);
    }

    fn rss_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// `cargo test --lib --release alert_store_rss -- --ignored --nocapture`:
    /// the memory 50,000 distinct firing alerts take in a bounded store and
    /// in one without bounds (as the store was before issue 14). Numbers
    /// in BENCHMARKS.md.
    #[test]
    #[ignore]
    fn alert_store_rss() {
        let labels = |n: usize| {
            format!(
                r#"{{"status":"firing","labels":{{"alertname":"Flood","instance":"host-{n}","job":"node"}},"annotations":{{"summary":"flood {n}"}},"startsAt":"2026-11-18T11:59:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp{n:08}"}}"#
            )
        };
        let bodies: Vec<String> = (0..50)
            .map(|b| {
                let alerts: Vec<String> = (0..1000).map(|i| labels(b * 1000 + i)).collect();
                format!(
                    r#"{{"version":"4","status":"firing","alerts":[{}]}}"#,
                    alerts.join(",")
                )
            })
            .collect();
        let flood: AlertMatch = [("alertname".to_string(), "Flood".to_string())].into();
        for (name, limits) in [
            ("bounded (default limits)", AlertLimits::default()),
            (
                "unbounded (before)",
                AlertLimits {
                    resolve_timeout: Duration::from_secs(1 << 30),
                    max_per_rule: usize::MAX,
                    max_total: usize::MAX,
                },
            ),
        ] {
            let before = rss_kb();
            let s = AlertStore::with_limits(limits);
            s.register(&flood);
            let t = std::time::Instant::now();
            for b in &bodies {
                s.ingest(b.as_bytes(), now()).unwrap();
            }
            let took = t.elapsed();
            let bytes = serde_json::to_vec(&s.lock().alerts).unwrap().len();
            eprintln!(
                "{name}: kept {} alerts, RSS +{} kB, ingest {took:?}, alerts.json would be {bytes} bytes",
                s.len(),
                rss_kb().saturating_sub(before)
            );
            std::mem::forget(s);
        }
    }
}
