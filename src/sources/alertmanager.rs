//! Alerts pushed by Alertmanager's webhook (`POST /v1/alertmanager`,
//! payload version 4). The API parses and checks a whole payload before it
//! changes anything ([`AlertStore::ingest`]); a rule's source then counts
//! the firing alerts whose labels match its `match` table. The value is
//! that count, so the rule is breached while a matching alert fires and Ok
//! once it resolves; `for` applies as for every rule.
//!
//! Alert labels are only compared, never copied into incidents or argv: a
//! rule's report names its configured `match`, not what an alert carried.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Datelike, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

use super::SourceError;
use crate::config::AlertMatch;

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    labels: BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    firing: bool,
    seen: DateTime<Utc>,
}

/// Firing alerts by fingerprint, shared by the API (writer) and the
/// alertmanager sources (readers).
#[derive(Debug, Default)]
pub struct AlertStore {
    alerts: Mutex<HashMap<String, Stored>>,
    /// `state_dir/alerts.json` once [`AlertStore::persist_in`] was called:
    /// every accepted payload is saved there, so a restart does not forget
    /// what fires until Alertmanager's next repeat.
    file: Mutex<Option<PathBuf>>,
    /// Bumped whenever a POST changes the alerts, so that the targets
    /// watching them are evaluated at once instead of at their next poll.
    changed: tokio::sync::watch::Sender<u64>,
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

    /// Wakes whenever a POST changed the alerts (new, resolved, re-fired).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Parse and check a webhook body, then apply it. A malformed payload
    /// is refused as a whole with the reason and changes nothing.
    pub fn ingest(&self, body: &[u8], now: DateTime<Utc>) -> Result<IngestReport, String> {
        let payload: WebhookPayload = serde_json::from_slice(body)
            .map_err(|e| format!("invalid Alertmanager webhook payload: {e}"))?;
        check(&payload)?;
        let mut alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = IngestReport::default();
        for a in payload.alerts {
            let firing = a.status == "firing";
            let ends_at = a.ends_at.filter(|t| t.year() > 1);
            match alerts.get_mut(&a.fingerprint) {
                Some(s) if s.starts_at == a.starts_at && s.firing == firing => {
                    s.seen = now;
                    s.ends_at = ends_at;
                    report.duplicates += 1;
                }
                // A resolved delivery for an older episode than the one we
                // hold changes nothing.
                Some(s) if !firing && a.starts_at < s.starts_at => report.duplicates += 1,
                _ => {
                    alerts.insert(
                        a.fingerprint.clone(),
                        Stored {
                            labels: a.labels,
                            starts_at: a.starts_at,
                            ends_at,
                            firing,
                            seen: now,
                        },
                    );
                    report.accepted += 1;
                }
            }
        }
        let forget = now - ChronoDuration::hours(FORGET_AFTER);
        alerts.retain(|_, s| s.firing || s.seen > forget);
        report.firing = alerts.values().filter(|s| is_firing(s, now)).count();
        if report.accepted + report.duplicates > 0 {
            self.save(&alerts);
        }
        drop(alerts);
        if report.accepted > 0 {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(report)
    }

    /// Load `dir/alerts.json` (if any) into the store, dropping alerts whose
    /// `endsAt` has passed and resolved ones too old to matter, and save
    /// every later change there. Returns how many alerts fire after loading.
    /// A file that cannot be read is set aside as `alerts.json.bad` (and
    /// reported) so that nothing is lost and the daemon starts anyway.
    pub fn persist_in(&self, dir: &Path, now: DateTime<Utc>) -> Result<usize, String> {
        let path = dir.join(ALERTS_FILE);
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.clone());
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let loaded: HashMap<String, Stored> = match serde_json::from_slice(&text) {
            Ok(l) => l,
            Err(e) => {
                let bad = dir.join(format!("{ALERTS_FILE}.bad"));
                let _ = std::fs::rename(&path, &bad);
                return Err(format!(
                    "cannot parse {}: {e}; moved it to {} and started with no alerts",
                    path.display(),
                    bad.display()
                ));
            }
        };
        let forget = now - ChronoDuration::hours(FORGET_AFTER);
        let mut alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        for (fp, s) in loaded {
            let ended = s.ends_at.is_some_and(|e| e <= now);
            if (s.firing && !ended) || (!s.firing && s.seen > forget) {
                alerts.entry(fp).or_insert(s);
            }
        }
        Ok(alerts.values().filter(|s| is_firing(s, now)).count())
    }

    /// Write the store to its file: a temporary file, fsync, rename.
    fn save(&self, alerts: &HashMap<String, Stored>) {
        let Some(path) = self.file.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return;
        };
        if let Err(e) = write_atomic(&path, alerts) {
            tracing::error!(path = %path.display(), error = %e, "cannot save the alert store; a restart forgets alerts until Alertmanager repeats them");
        }
    }

    /// Firing alerts whose labels include every pair of `m`.
    pub fn count_matching(&self, m: &AlertMatch, now: DateTime<Utc>) -> usize {
        let alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        alerts
            .values()
            .filter(|s| is_firing(s, now))
            .filter(|s| m.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .count()
    }
}

fn write_atomic(path: &Path, alerts: &HashMap<String, Stored>) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(alerts).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Firing, and not past an `endsAt` Alertmanager gave it (an Alertmanager
/// that died does not leave an alert firing forever).
fn is_firing(s: &Stored, now: DateTime<Utc>) -> bool {
    s.firing && s.ends_at.is_none_or(|e| e > now)
}

fn check(p: &WebhookPayload) -> Result<(), String> {
    if p.version != "4" {
        return Err(format!(
            "unsupported Alertmanager webhook payload version {:?} (expected \"4\")",
            p.version
        ));
    }
    if !matches!(p.status.as_str(), "firing" | "resolved") {
        return Err(format!(
            "invalid status {:?} (expected \"firing\" or \"resolved\")",
            p.status
        ));
    }
    for (i, a) in p.alerts.iter().enumerate() {
        if !matches!(a.status.as_str(), "firing" | "resolved") {
            return Err(format!(
                "alerts[{i}].status: invalid status {:?} (expected \"firing\" or \"resolved\")",
                a.status
            ));
        }
        if a.fingerprint.trim().is_empty() {
            return Err(format!("alerts[{i}].fingerprint: must not be empty"));
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
        assert_eq!(s.persist_in(dir.path(), now()), Ok(0));
        let firing = payload("firing", "abc", "2026-11-18T11:59:00Z");
        s.ingest(firing.as_bytes(), now()).unwrap();
        let ends_soon = payload("firing", "def", "2026-11-18T11:58:00Z")
            .replace("0001-01-01T00:00:00Z", "2026-11-18T12:05:00Z");
        s.ingest(ends_soon.as_bytes(), now()).unwrap();
        assert!(!dir.path().join("alerts.json.tmp").exists());

        // A new process: both fire a minute later ...
        let later = now() + ChronoDuration::minutes(1);
        let r = AlertStore::default();
        assert_eq!(r.persist_in(dir.path(), later), Ok(2));
        assert_eq!(r.count_matching(&m(), later), 2);
        // ... and redeliveries are still recognised.
        let rep = r.ingest(firing.as_bytes(), later).unwrap();
        assert_eq!((rep.accepted, rep.duplicates), (0, 1));
        // After "def"'s endsAt only "abc" is loaded.
        let much_later = now() + ChronoDuration::minutes(10);
        let r = AlertStore::default();
        assert_eq!(r.persist_in(dir.path(), much_later), Ok(1));
        assert_eq!(r.alerts.lock().unwrap().len(), 1);
    }

    #[test]
    fn unreadable_store_file_is_set_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ALERTS_FILE), "{torn").unwrap();
        let s = AlertStore::default();
        let e = s.persist_in(dir.path(), now()).unwrap_err();
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
            let e = s.ingest(body.as_bytes(), now()).unwrap_err();
            assert!(e.contains(want), "{e} should contain {want}");
        }
        assert_eq!(s.count_matching(&m(), now()), 0);
    }
}
