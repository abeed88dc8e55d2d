//! Signed approve/reject links for confirmation emails.
//!
//! A token says "ACTION incident ID, valid until T", signed with
//! HMAC-SHA256 under a key kept in `state_dir/confirm.key` (32 random bytes,
//! created 0600 at first start). Tokens are single-use: a used one is
//! remembered in `state_dir/confirm-used` and refused afterwards, also
//! after a restart. The GET behind a link only shows a page; the POST from
//! that page acts, so mail scanners that follow links approve nothing.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// Approve the rollback.
    Approve,
    /// Reject it.
    Reject,
}

impl LinkAction {
    /// `approve` or `reject`.
    pub fn name(self) -> &'static str {
        match self {
            LinkAction::Approve => "approve",
            LinkAction::Reject => "reject",
        }
    }
}

/// A token that checked out: signed by us, not expired, not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The incident it is bound to.
    pub incident: String,
    /// What it does.
    pub action: LinkAction,
    /// Valid until.
    pub expires: DateTime<Utc>,
    /// Identity for the single-use check (the signature, hex).
    pub id: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a token we issued (bad format or signature).
    #[error("invalid confirmation link: {0}")]
    Invalid(String),
    /// Past its expiry.
    #[error("this confirmation link expired at {0}")]
    Expired(String),
    /// Already used once.
    #[error("this confirmation link was already used")]
    Used,
}

/// The signing key and the set of used tokens.
#[derive(Debug)]
pub struct LinkKeys {
    key: Vec<u8>,
    used_path: PathBuf,
    used: Mutex<HashSet<String>>,
}

impl LinkKeys {
    /// Load `state_dir/confirm.key` (creating it with mode 0600 from 32
    /// bytes of /dev/urandom at first start) and the used-token list.
    pub fn open(state_dir: &Path) -> anyhow::Result<LinkKeys> {
        let key_path = state_dir.join("confirm.key");
        let key = match std::fs::read_to_string(&key_path) {
            Ok(text) => decode_hex(text.trim())
                .filter(|k| k.len() >= 16)
                .with_context(|| {
                    format!(
                        "{} is not a hex key of 16 bytes or more; remove it to create a new one",
                        key_path.display()
                    )
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut key))
                    .context("failed to read /dev/urandom for the confirmation key")?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path)
                    .with_context(|| format!("failed to create {}", key_path.display()))?;
                f.write_all(format!("{}\n", encode_hex(&key)).as_bytes())
                    .and_then(|_| f.sync_all())
                    .with_context(|| format!("failed to write {}", key_path.display()))?;
                key
            }
            Err(e) => {
                return Err(e).with_context(|| format!("failed to read {}", key_path.display()))
            }
        };
        let used_path = state_dir.join("confirm-used");
        let used = std::fs::read_to_string(&used_path)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        Ok(LinkKeys {
            key,
            used_path,
            used: Mutex::new(used),
        })
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any size");
        mac.update(payload);
        mac
    }

    /// A token for `action` on `incident`, valid until `expires`.
    pub fn issue(&self, incident: &str, action: LinkAction, expires: DateTime<Utc>) -> String {
        let payload = format!("{}\n{incident}\n{}", action.name(), expires.timestamp());
        let sig = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", encode_hex(payload.as_bytes()), encode_hex(&sig))
    }

    /// Check a token: our signature (compared in constant time), not
    /// expired at `now`, not used.
    pub fn check(&self, token: &str, now: DateTime<Utc>) -> Result<Claim, LinkError> {
        let invalid = |why: &str| LinkError::Invalid(why.to_string());
        let (payload_hex, sig_hex) = token
            .split_once('.')
            .ok_or_else(|| invalid("malformed token"))?;
        let payload = decode_hex(payload_hex).ok_or_else(|| invalid("malformed token"))?;
        let sig = decode_hex(sig_hex).ok_or_else(|| invalid("malformed token"))?;
        self.mac(&payload)
            .verify_slice(&sig)
            .map_err(|_| invalid("the signature does not match"))?;
        let text = String::from_utf8(payload).map_err(|_| invalid("malformed token"))?;
        let mut parts = text.splitn(3, '\n');
        let (Some(action), Some(incident), Some(expires)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("malformed token"));
        };
        let action = match action {
            "approve" => LinkAction::Approve,
            "reject" => LinkAction::Reject,
            _ => return Err(invalid("unknown action")),
        };
        let expires = expires
            .parse::<i64>()
            .ok()
            .and_then(|s| Utc.timestamp_opt(s, 0).single())
            .ok_or_else(|| invalid("malformed expiry"))?;
        if now >= expires {
            return Err(LinkError::Expired(
                expires.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            ));
        }
        let id = sig_hex.to_ascii_lowercase();
        if self
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
        {
            return Err(LinkError::Used);
        }
        Ok(Claim {
            incident: incident.to_string(),
            action,
            expires,
            id,
        })
    }

    /// Remember a token as used (appended to `confirm-used`, fsync'd).
    pub fn mark_used(&self, claim: &Claim) -> anyhow::Result<()> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.used_path)
            .with_context(|| format!("failed to open {}", self.used_path.display()))?;
        f.write_all(format!("{}\n", claim.id).as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("failed to write {}", self.used_path.display()))?;
        used.insert(claim.id.clone());
        Ok(())
    }

    /// Approve and reject links under `public_url` for an incident.
    pub fn links(
        &self,
        public_url: &url::Url,
        incident: &str,
        expires: DateTime<Utc>,
    ) -> crate::notify::ConfirmLinks {
        let mut base = public_url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let url = |a| {
            base.join(&format!("v1/confirm/{}", self.issue(incident, a, expires)))
                .unwrap_or_else(|_| base.clone())
        };
        crate::notify::ConfirmLinks {
            approve: url(LinkAction::Approve),
            reject: url(LinkAction::Reject),
        }
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_are_bound_signed_expiring_and_single_use() {
        let dir = tempfile::tempdir().unwrap();
        let keys = LinkKeys::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("confirm.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let now = Utc.with_ymd_and_hms(2026, 11, 18, 12, 0, 0).unwrap();
        let exp = now + chrono::Duration::minutes(5);
        let t = keys.issue("20261118-120000-web-1", LinkAction::Approve, exp);
        let c = keys.check(&t, now).unwrap();
        assert_eq!(c.incident, "20261118-120000-web-1");
        assert_eq!(c.action, LinkAction::Approve);
        // Tampered payload (reject instead of approve) fails the signature.
        let forged = keys.issue("20261118-120000-web-1", LinkAction::Reject, exp);
        let mixed = format!(
            "{}.{}",
            forged.split('.').next().unwrap(),
            t.split('.').nth(1).unwrap()
        );
        assert!(matches!(
            keys.check(&mixed, now),
            Err(LinkError::Invalid(_))
        ));
        assert!(matches!(
            keys.check("zz.zz", now),
            Err(LinkError::Invalid(_))
        ));
        assert!(matches!(keys.check(&t, exp), Err(LinkError::Expired(_))));
        keys.mark_used(&c).unwrap();
        assert_eq!(keys.check(&t, now), Err(LinkError::Used));
        // The key and the used list survive a restart.
        let again = LinkKeys::open(dir.path()).unwrap();
        assert_eq!(again.check(&t, now), Err(LinkError::Used));
        let other = again.issue("x", LinkAction::Reject, exp);
        assert!(keys.check(&other, now).is_ok());
        // Links keep the public_url's path.
        let base = url::Url::parse("https://ops.example.com/rollbackd").unwrap();
        let l = keys.links(&base, "x", exp);
        assert!(l
            .approve
            .as_str()
            .starts_with("https://ops.example.com/rollbackd/v1/confirm/"));
    }
}
