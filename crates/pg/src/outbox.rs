//! The local outbox: batches PostgreSQL has not taken yet, one JSON file each.
//!
//! A batch is written to a temporary name and renamed, so a reader sees a whole batch or none;
//! it is removed only after the transaction that delivered it committed. Delivering a batch
//! twice (a crash between commit and removal) changes nothing: every write is an upsert.

use std::path::{Path, PathBuf};

use crate::{Batch, Error, Result};

/// A directory of pending batches.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// A batch waiting in the outbox.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its file.
    pub path: PathBuf,
    /// The batch.
    pub batch: Batch,
}

impl Outbox {
    /// The outbox in `dir` (created when a batch is first kept).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default place: `$XDG_STATE_HOME/tads/pg-outbox`, else `~/.local/state/tads/pg-outbox`.
    pub fn default_dir() -> PathBuf {
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        state.join("tads/pg-outbox")
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Outbox(format!("outbox {}: {what}: {e}", self.dir.display()))
    }

    /// Keeps `batch`; returns its file.
    pub fn save(&self, batch: &Batch) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.err("cannot create it", e))?;
        let json = serde_json::to_vec(batch).map_err(|e| self.err("cannot encode a batch", e))?;
        let stamp = batch.created_at.format("%Y%m%dT%H%M%S%.6fZ");
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{stamp}-{}-{n}.json", std::process::id());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, &json).map_err(|e| self.err("cannot write a batch", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| self.err("cannot write a batch", e))?;
        Ok(path)
    }

    /// The pending batches, oldest first. A file that cannot be read as a batch does not block
    /// the others: it is renamed `<name>.bad` (kept for a look, no longer pending) and a
    /// warning naming it goes to stderr.
    pub fn pending(&self) -> Result<Vec<Pending>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.err("cannot list it", e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        let mut pending = Vec::with_capacity(paths.len());
        for path in paths {
            let read = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Batch>(&b).map_err(|e| e.to_string()));
            match read {
                Ok(batch) => pending.push(Pending { path, batch }),
                Err(why) => self.set_aside(&path, &why)?,
            }
        }
        Ok(pending)
    }

    /// Renames a batch that cannot be read to `<name>.bad`, with a warning.
    fn set_aside(&self, path: &Path, why: &str) -> Result<()> {
        let mut bad = path.as_os_str().to_owned();
        bad.push(".bad");
        std::fs::rename(path, &bad).map_err(|e| {
            self.err(
                &format!(
                    "{} is not a TADS batch ({why}) and cannot be moved aside",
                    path.display()
                ),
                e,
            )
        })?;
        eprintln!(
            "warning: outbox: {} is not a TADS batch ({}); moved aside as {}",
            path.display(),
            why.replace('\n', " "),
            std::path::Path::new(&bad).display()
        );
        Ok(())
    }

    /// Removes a delivered batch.
    pub fn remove(&self, pending: &Pending) -> Result<()> {
        match std::fs::remove_file(&pending.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("cannot remove a delivered batch", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_batch_is_moved_aside_and_the_rest_stay_pending() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        let good = outbox.save(&Batch::new(vec![])).unwrap();
        let bad = dir.path().join("00000000T000000Z-1-0.json");
        std::fs::write(&bad, b"{ not json").unwrap();
        let pending = outbox.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].path, good);
        assert!(!bad.exists());
        assert!(dir.path().join("00000000T000000Z-1-0.json.bad").exists());
        assert_eq!(outbox.pending().unwrap().len(), 1);
    }
}
