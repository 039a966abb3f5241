//! Locks: one owner for an output or a model name while it is written.
//!
//! A lock is a small JSON object (the run id, the writer, the process id and the host) put with
//! create-only semantics ([`Location::put_new`]: a hard link on a local disk, `If-None-Match: *`
//! on S3), so of two writers that race for it exactly one wins. The loser is refused with a
//! message naming the holder. A lock whose process is gone (same host, no such pid) is stale: on
//! a local disk the next run takes it over (saying so), elsewhere it is named and removed only
//! when asked (`--break-lock`).

use serde::{Deserialize, Serialize};

use crate::{Error, Location, Result, Scheme};

/// How often [`Lock::acquire`] tries again when the lock it lost to is gone when read.
const ACQUIRE_ATTEMPTS: usize = 3;

/// What a lock says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The command holding it (`tads score`).
    pub writer: String,
    /// The holder's run id.
    pub run_id: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// When it was taken (RFC 3339).
    pub started_at: String,
    /// For a holder that beats (`tads watch`): when it last said it is alive (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
    /// For a holder that beats: after how many seconds without a beat it counts as gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after_secs: Option<u64>,
}

impl LockInfo {
    /// Whether the holder is known to be gone: it ran on this host and its process is not
    /// alive, or it beats and has not for longer than it said it would. (Without `/proc`, or
    /// for another host without a heartbeat, this cannot be told: `false`.)
    pub fn is_stale(&self) -> bool {
        let dead = self.host == host_name()
            && std::path::Path::new("/proc/self").exists()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists();
        dead || self
            .silent_for()
            .is_some_and(|(silent, limit)| silent > limit)
    }

    /// Seconds since the last heartbeat, and the holder's limit, for a holder that beats.
    fn silent_for(&self) -> Option<(i64, i64)> {
        let beat = chrono::DateTime::parse_from_rfc3339(self.heartbeat_at.as_deref()?).ok()?;
        let limit = i64::try_from(self.stale_after_secs?).ok()?;
        Some(((chrono::Utc::now() - beat.to_utc()).num_seconds(), limit))
    }

    /// The same holder (a heartbeat changes nothing of who holds the lock).
    fn same_holder(&self, other: &Self) -> bool {
        (
            &self.writer,
            &self.run_id,
            self.pid,
            &self.host,
            &self.started_at,
        ) == (
            &other.writer,
            &other.run_id,
            other.pid,
            &other.host,
            &other.started_at,
        )
    }
}

/// A lock held by this process; [`Lock::release`] removes it.
#[derive(Debug)]
pub struct Lock {
    location: Location,
    relative: String,
    info: LockInfo,
}

impl Lock {
    /// Takes the lock at `relative` below `location` for `writer`'s run `run_id`. If another
    /// run holds it, fails naming that run; with `break_lock`, removes a lock that is there
    /// first (the user says its writer is gone).
    pub async fn acquire(
        location: &Location,
        relative: &str,
        writer: &str,
        run_id: &str,
        break_lock: bool,
    ) -> Result<Self> {
        let info = LockInfo {
            writer: writer.to_string(),
            run_id: run_id.to_string(),
            pid: std::process::id(),
            host: host_name(),
            started_at: chrono::Utc::now().to_rfc3339(),
            heartbeat_at: None,
            stale_after_secs: None,
        };
        let bytes = serde_json::to_vec_pretty(&info).unwrap_or_default();
        if break_lock {
            location.delete(&location.child(relative)).await?;
        }
        let taken = |info: LockInfo| Self {
            location: location.clone(),
            relative: relative.to_string(),
            info,
        };
        // A holder that finishes between our failed put and our read of its lock leaves no lock
        // to name: then the lock is free, and we try again (a few times, as others may race).
        let mut holder = None;
        for _ in 0..ACQUIRE_ATTEMPTS {
            if location.put_new(relative, bytes.clone()).await? {
                return Ok(taken(info));
            }
            holder = read(location, relative).await?;
            if holder.is_none() {
                continue;
            }
            // A lock whose process is provably gone (this host, no such pid) is taken over on a
            // local disk, so a rerun after a crash or `kill -9` needs no clean-up.
            if let Some(stale) = holder.as_ref().filter(|h| h.is_stale())
                && take_over(location, relative, stale)
                && location.put_new(relative, bytes.clone()).await?
            {
                eprintln!(
                    "note: {location}{relative}: removed the lock of {} run {} (pid {} on {}), which is no longer running",
                    stale.writer, stale.run_id, stale.pid, stale.host
                );
                return Ok(taken(info));
            }
            holder = read(location, relative).await?;
            if holder.is_some() {
                break;
            }
        }
        Err(Error::Target {
            location: location.to_string(),
            message: describe_holder(relative, holder.as_ref()),
        })
    }

    /// Fails unless this run still holds the lock (nobody broke it and took it over).
    pub async fn check(&self) -> Result<()> {
        let now = read(&self.location, &self.relative).await?;
        if now.as_ref().is_some_and(|n| n.same_holder(&self.info)) {
            return Ok(());
        }
        Err(Error::Target {
            location: self.location.to_string(),
            message: format!(
                "this run ({}) no longer holds {}: {}",
                self.info.run_id,
                self.relative,
                match now {
                    Some(other) => format!("run {} (pid {}) took it over", other.run_id, other.pid),
                    None => "it was removed".into(),
                }
            ),
        })
    }

    /// Says the holder is alive: rewrites the lock with the time now, and that the holder counts
    /// as gone after `stale_after` without another beat (then another run may take it over,
    /// from any host, as when its process is gone). Fails if this run no longer holds it.
    pub async fn heartbeat(&mut self, stale_after: std::time::Duration) -> Result<()> {
        self.check().await?;
        self.info.heartbeat_at = Some(chrono::Utc::now().to_rfc3339());
        self.info.stale_after_secs = Some(stale_after.as_secs().max(1));
        let bytes = serde_json::to_vec_pretty(&self.info).unwrap_or_default();
        self.location.put(&self.relative, bytes).await
    }

    /// Removes the lock, if it is still this run's.
    /// On a local disk, the lock's folder goes too if that leaves it empty (a refused run
    /// leaves no trace).
    pub async fn release(&self) -> Result<()> {
        if self.check().await.is_ok() {
            let path = self.location.child(&self.relative);
            self.location.delete(&path).await?;
        }
        if self.location.scheme() == Scheme::Local
            && let Ok(root) = self.location.url().to_file_path()
            && let Some(dir) = root.join(&self.relative).parent()
        {
            // Fails, harmlessly, unless the folder is empty.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}

/// Removes the stale lock `stale` at `relative` on a local disk, and only that one: it is moved
/// aside under a name of this process's (atomic), and put back if what was moved is not it (a
/// run that took the lock over in between keeps it; a run that lost it fails its own
/// [`Lock::check`]). Whether the stale lock is gone. Other stores: `false` (`--break-lock`).
fn take_over(location: &Location, relative: &str, stale: &LockInfo) -> bool {
    if location.scheme() != Scheme::Local {
        return false;
    }
    let Ok(root) = location.url().to_file_path() else {
        return false;
    };
    let path = root.join(relative);
    let aside = root.join(format!(
        "{relative}.stale-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    if std::fs::rename(&path, &aside).is_err() {
        return false;
    }
    let moved: Option<LockInfo> = std::fs::read(&aside)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if moved.as_ref() == Some(stale) {
        let _ = std::fs::remove_file(&aside);
        return true;
    }
    // Not the stale lock: put it back unless another lock is there by now.
    let _ = std::fs::hard_link(&aside, &path);
    let _ = std::fs::remove_file(&aside);
    false
}

/// The lock at `relative`, if there is one and it can be read.
async fn read(location: &Location, relative: &str) -> Result<Option<LockInfo>> {
    let bytes = location.get_opt(relative).await?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Why a lock could not be taken, and what to do.
fn describe_holder(relative: &str, holder: Option<&LockInfo>) -> String {
    let Some(h) = holder else {
        return format!(
            "is locked by another run ({relative}); wait for it to finish, or pass --break-lock \
             if you know it is gone"
        );
    };
    let who = format!(
        "is locked by {} run {} (pid {} on {}, since {}{})",
        h.writer,
        h.run_id,
        h.pid,
        h.host,
        h.started_at,
        beat(h)
    );
    if h.is_stale() {
        format!(
            "{who}, which is no longer running; pass --break-lock to remove the stale {relative}"
        )
    } else {
        format!("{who}; wait for it to finish, or pass --break-lock if you know it is gone")
    }
}

/// `, last heartbeat N s ago` for a holder that beats.
fn beat(h: &LockInfo) -> String {
    h.silent_for().map_or(String::new(), |(s, _)| {
        format!(", last heartbeat {s} s ago")
    })
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `localhost`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes the lock as run-3 and releases it; the error if it is refused.
    async fn err_of(loc: &Location) -> Option<String> {
        match Lock::acquire(loc, "m/_tads_lock.json", "tads train", "run-3", false).await {
            Ok(l) => {
                l.release().await.unwrap();
                None
            }
            Err(e) => Some(e.to_string()),
        }
    }

    /// Puts a lock like `info` whose process is gone.
    async fn lock_as_gone(loc: &Location, info: &LockInfo) {
        let gone = LockInfo {
            pid: u32::MAX - 1,
            ..info.clone()
        };
        loc.put("m/_tads_lock.json", serde_json::to_vec(&gone).unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let first = Lock::acquire(&loc, "m/_tads_lock.json", "tads train", "run-1", false)
            .await
            .unwrap();
        let err = Lock::acquire(&loc, "m/_tads_lock.json", "tads train", "run-2", false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("locked by tads train run run-1"), "{err}");
        assert!(err.contains("wait for it to finish"), "{err}");
        first.check().await.unwrap();
        first.release().await.unwrap();
        let second = Lock::acquire(&loc, "m/_tads_lock.json", "tads train", "run-2", false)
            .await
            .unwrap();
        // A holder that is gone: the lock is stale, and --break-lock takes it over.
        let gone = LockInfo {
            pid: u32::MAX - 1,
            ..second.info.clone()
        };
        loc.put("m/_tads_lock.json", serde_json::to_vec(&gone).unwrap())
            .await
            .unwrap();
        assert!(second.check().await.is_err(), "another process's");
        assert!(
            err_of(&loc).await.is_none(),
            "a stale local lock is taken over"
        );
        // With --break-lock, whatever is there is removed first.
        lock_as_gone(&loc, &second.info).await;
        let third = Lock::acquire(&loc, "m/_tads_lock.json", "tads train", "run-3", true)
            .await
            .unwrap();
        assert!(second.check().await.is_err());
        third.release().await.unwrap();
        assert!(loc.get_opt("m/_tads_lock.json").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_holder_that_stopped_beating_is_stale_even_on_another_host() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let mut held = Lock::acquire(&loc, "m/_tads_lock.json", "tads watch", "w-1", false)
            .await
            .unwrap();
        held.heartbeat(std::time::Duration::from_secs(60))
            .await
            .unwrap();
        // Beating changes nothing of who holds it, and a live holder is not stale.
        held.check().await.unwrap();
        let err = err_of(&loc).await.unwrap();
        assert!(err.contains("last heartbeat 0 s ago"), "{err}");
        // The same lock from another host whose last beat is ten minutes old: stale.
        let silent = LockInfo {
            host: "elsewhere".into(),
            heartbeat_at: Some((chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339()),
            ..held.info.clone()
        };
        assert!(silent.is_stale());
        loc.put("m/_tads_lock.json", serde_json::to_vec(&silent).unwrap())
            .await
            .unwrap();
        assert!(err_of(&loc).await.is_none(), "taken over");
        assert!(held.check().await.is_err());
    }
}
