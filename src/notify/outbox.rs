//! The outbox: every notification is written to disk (one `.eml` per mail in
//! `outbox_dir`, one `.json` per webhook call in `outbox_dir/webhook-*/`)
//! before anything else happens to it, and removed only once the server
//! accepted it. Items that could not be delivered in time are moved to
//! `failed/` beside them, never deleted.
//!
//! The files are what lettre's file transport writes (the RFC 5322 message
//! as it goes on the wire), but written here because lettre does not fsync:
//! a temp file, fsync, a no-clobber link to the final name, then an fsync of
//! the directory. Names sort by creation time:
//! `20250601T120000.123Z-<message-id local part>.eml`. Temp files start with
//! `.` and do not end in `.eml`, so a sender scanning for `*.eml` never sees
//! a half-written mail.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::NotifyError;

/// The format of the time prefix of every outbox file name.
const STAMP: &str = "%Y%m%dT%H%M%S%.3fZ";

/// Write the message to the outbox and return its path.
pub async fn write(dir: &Path, message: &lettre::Message) -> Result<PathBuf, NotifyError> {
    let key = local_part(message.headers().get_raw("Message-ID"));
    write_item(dir, &key, "eml", message.formatted()).await
}

/// Write one item (`bytes`) named `TIME-key.ext` durably and return its path.
pub async fn write_item(
    dir: &Path,
    key: &str,
    ext: &'static str,
    bytes: Vec<u8>,
) -> Result<PathBuf, NotifyError> {
    let dir = dir.to_path_buf();
    let stem = format!("{}-{}", chrono::Utc::now().format(STAMP), key);
    let outbox = dir.clone();
    tokio::task::spawn_blocking(move || write_sync(&dir, &stem, ext, &bytes))
        .await
        .map_err(|e| NotifyError::Outbox {
            path: outbox.clone(),
            detail: format!("writer task failed: {e}"),
        })?
        .map_err(|e| NotifyError::Outbox {
            path: outbox,
            detail: e.to_string(),
        })
}

/// The blocking part of [`write`].
fn write_sync(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use crate::journal::with_path;

    std::fs::create_dir_all(dir)
        .map_err(|e| with_path(e, &format!("cannot create {}", dir.display())))?;
    let tmp = dir.join(format!(".{stem}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(with_path(e, &format!("cannot write {}", tmp.display())));
    }
    // `hard_link` fails if the name exists, so two mails written in the same
    // millisecond with the same Message-ID never overwrite each other.
    let mut n = 0u32;
    let path = loop {
        let name = if n == 0 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}-{n}.{ext}")
        };
        let path = dir.join(name);
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => break path,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(with_path(
                    e,
                    &format!("cannot link {} to {}", tmp.display(), path.display()),
                ));
            }
        }
    };
    std::fs::remove_file(&tmp)
        .map_err(|e| with_path(e, &format!("cannot remove {}", tmp.display())))?;
    crate::journal::sync_dir(dir)?;
    Ok(path)
}

/// The items waiting in `dir` (`*.ext`, not temp files), oldest first.
pub fn pending(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.')
            && name.ends_with(&format!(".{ext}"))
            && entry.file_type()?.is_file()
        {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Whether an item with this key is waiting in `dir` (a notification not yet
/// delivered, possibly written before a restart).
pub fn has_pending(dir: &Path, key: &str, ext: &str) -> bool {
    let suffix = format!("-{key}.{ext}");
    pending(dir, ext).is_ok_and(|items| {
        items.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&suffix))
        })
    })
}

/// When `give_up_after` starts counting for an item: when it was written,
/// from the time in its name (or its mtime), so a restart does not reset
/// it. A later mtime wins: `touch` on an item (say, moved back from
/// `failed/` by hand) gives it a fresh `give_up_after`.
pub fn created_at(path: &Path) -> chrono::DateTime<chrono::Utc> {
    let from_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.get(..20))
        .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, STAMP).ok())
        .map(|t| t.and_utc());
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(chrono::DateTime::<chrono::Utc>::from);
    match (from_name, modified) {
        (Some(n), Some(m)) => n.max(m),
        (n, m) => n.or(m).unwrap_or_else(chrono::Utc::now),
    }
}

/// The item was delivered: remove it, durably.
pub fn remove(path: &Path) -> std::io::Result<()> {
    use crate::journal::with_path;
    std::fs::remove_file(path)
        .map_err(|e| with_path(e, &format!("cannot remove {}", path.display())))?;
    if let Some(dir) = path.parent() {
        crate::journal::sync_dir(dir)?;
    }
    Ok(())
}

/// Give up on an item: move it to `failed/` beside it (kept for a human),
/// durably. Returns the new path.
pub fn move_to_failed(path: &Path) -> std::io::Result<PathBuf> {
    use crate::journal::with_path;
    let dir = path.parent().unwrap_or(Path::new("."));
    let failed = dir.join("failed");
    std::fs::create_dir_all(&failed)
        .map_err(|e| with_path(e, &format!("cannot create {}", failed.display())))?;
    let to = failed.join(path.file_name().unwrap_or_default());
    std::fs::rename(path, &to).map_err(|e| {
        with_path(
            e,
            &format!("cannot move {} to {}", path.display(), to.display()),
        )
    })?;
    crate::journal::sync_dir(&failed)?;
    crate::journal::sync_dir(dir)?;
    Ok(to)
}

/// The Message-ID's local part, safe as a file name: `<a.b@host>` -> `a.b`.
pub(crate) fn local_part(message_id: Option<&str>) -> String {
    let id = message_id
        .unwrap_or("")
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let local = id.rsplit_once('@').map_or(id, |(l, _)| l);
    let safe: String = local
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    let safe = safe.trim_start_matches('.');
    if safe.is_empty() {
        "message".into()
    } else {
        safe.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmailConfig;
    use crate::decide::NotifyKind;
    use crate::notify::compose;
    use crate::notify::record::tests::incident;

    fn message() -> lettre::Message {
        let cfg = EmailConfig {
            from: "rollbackd <rollbackd@example.org>".into(),
            to: vec!["ops@example.org".into(), "admin@example.org".into()],
            cc: Vec::new(),
            outbox_dir: "/nonexistent".into(),
            smtp: None,
        };
        compose::build(&cfg, NotifyKind::RolledBack, &incident(), None, None).unwrap()
    }

    #[tokio::test]
    async fn mail_is_written_as_eml() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let path = write(&outbox, &message()).await.unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.ends_with("Z-20250601-120000-frontend-1.rolled_back.eml"),
            "{name}"
        );
        chrono::NaiveDateTime::parse_from_str(&name[..19], "%Y%m%dT%H%M%S%.3f")
            .unwrap_or_else(|e| panic!("{name} starts with a timestamp: {e}"));

        let eml = std::fs::read_to_string(&path).unwrap();
        assert!(eml.contains("\r\n\r\n"), "header/body separator");
        let h = crate::notify::smtp::headers(eml.as_bytes());
        let get = |k: &str| {
            h.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("From"), Some("rollbackd <rollbackd@example.org>"));
        assert_eq!(get("To"), Some("ops@example.org, admin@example.org"));
        assert_eq!(
            get("Subject"),
            Some("[rollbackd] frontend: ROLLED BACK v2 -> v1")
        );
        assert_eq!(
            get("Message-ID"),
            Some("<20250601-120000-frontend-1.rolled_back@rollbackd>")
        );
        assert!(get("Date").is_some());
        let text = crate::notify::text::tests::unwrapped(eml.as_bytes());
        assert!(text.contains("health: 0.83 > 0.5"), "{text}");
    }

    #[tokio::test]
    async fn two_writes_make_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let m = message();
        let a = write(dir.path(), &m).await.unwrap();
        let b = write(dir.path(), &m).await.unwrap();
        assert_ne!(a, b);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "no temp files left: {names:?}");
        assert!(names.iter().all(|n| n.ends_with(".eml")), "{names:?}");
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }

    #[test]
    fn same_stem_gets_a_counter() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_sync(dir.path(), "20250601T120000.000Z-x", "eml", b"a").unwrap();
        let b = write_sync(dir.path(), "20250601T120000.000Z-x", "eml", b"b").unwrap();
        assert_eq!(a.file_name().unwrap(), "20250601T120000.000Z-x.eml");
        assert_eq!(b.file_name().unwrap(), "20250601T120000.000Z-x-1.eml");
        assert_eq!(std::fs::read(&a).unwrap(), b"a");
    }

    #[test]
    fn local_part_is_a_safe_file_name() {
        assert_eq!(local_part(Some("<a.b@host>")), "a.b");
        assert_eq!(local_part(Some("<../x/y@host>")), "_x_y");
        assert_eq!(local_part(None), "message");
    }

    #[tokio::test]
    async fn an_unwritable_outbox_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = write(&file.join("outbox"), &message()).await.unwrap_err();
        assert!(err.to_string().contains("file/outbox"), "{err}");
    }

    #[test]
    fn pending_failed_and_created_at() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_sync(dir.path(), "20250601T120000.000Z-a.kind", "eml", b"a").unwrap();
        write_sync(dir.path(), "20250601T120001.000Z-b", "json", b"b").unwrap();
        std::fs::write(dir.path().join(".x.eml"), "temp").unwrap();
        assert_eq!(pending(dir.path(), "eml").unwrap(), vec![a.clone()]);
        assert!(has_pending(dir.path(), "a.kind", "eml"));
        assert!(!has_pending(dir.path(), "a", "eml"));
        // The name says 2025-06-01, but the file was just written (touched).
        assert!(chrono::Utc::now() - created_at(&a) < chrono::TimeDelta::minutes(1));
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .and_then(|f| f.set_modified(old))
            .unwrap();
        assert_eq!(created_at(&a).to_rfc3339(), "2025-06-01T12:00:00+00:00");
        let moved = move_to_failed(&a).unwrap();
        assert_eq!(
            moved,
            dir.path().join("failed/20250601T120000.000Z-a.kind.eml")
        );
        assert_eq!(std::fs::read(&moved).unwrap(), b"a");
        assert!(pending(dir.path(), "eml").unwrap().is_empty());
        remove(&moved).unwrap();
        assert!(!moved.exists());
        assert!(pending(&dir.path().join("nope"), "eml").unwrap().is_empty());
    }
}
