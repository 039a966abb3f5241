//! The protocol every TADS writer follows, so that no reader takes an unfinished output for a
//! finished one and nothing a user wrote is lost:
//! 1. refuse a non-empty target unless asked to overwrite, and even then only a TADS output
//!    (one with `_manifest.json` or `_tads_in_progress.json`) holding nothing but what its
//!    manifest lists (see [`check_target`]);
//! 2. take the lock `_tads_lock.json` (created only if absent: one writer at a time), put
//!    `_tads_in_progress.json`; with overwrite, drop the old manifest, then the old files;
//! 3. put each file whole ([`Location::put`]), so no reader ever sees a partial file;
//! 4. check the lock is still this run's, put `_manifest.json` last, then remove the marker and
//!    the lock.
//!
//! A reader that finds no manifest, or finds the marker, is looking at an unfinished output. If a
//! run fails it removes what it wrote ([`Output::abort`]); if it is killed, the marker stays.

use std::sync::Mutex;

use std::collections::BTreeSet;

use object_store::path::Path;
use serde::Serialize;

use crate::{Error, IN_PROGRESS, LOCK, Location, Lock, MANIFEST, Result, Scheme};

/// An output being written: its location and what has been put there so far.
#[derive(Debug)]
pub struct Output {
    location: Location,
    written: Mutex<Vec<Path>>,
    lock: Lock,
}

#[derive(Serialize)]
struct Marker<'a> {
    writer: &'a str,
    id: &'a str,
    started_at: String,
    note: &'a str,
}

impl Output {
    /// Takes the output's lock ([`LOCK`], see [`crate::lock`]; with `break_lock`, one left there
    /// is removed first), checks the target, puts the in-progress marker and, with `overwrite`,
    /// removes the output that was there. `writer` names the command (`tads score`), `id` the
    /// run. A second writer on the same output is refused, naming the first.
    pub async fn begin(
        location: &Location,
        overwrite: bool,
        break_lock: bool,
        writer: &str,
        id: &str,
    ) -> Result<Self> {
        let lock = Lock::acquire(location, LOCK, writer, id, break_lock).await?;
        match prepare(location, overwrite, writer, id).await {
            Ok(()) => Ok(Self {
                location: location.clone(),
                written: Mutex::new(Vec::new()),
                lock,
            }),
            Err(e) => {
                let _ = lock.release().await;
                Err(e)
            }
        }
    }

    /// Where the output goes.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Puts one whole file at `relative`, remembering it for [`Output::abort`].
    pub async fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.location.child(relative);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(path);
        self.location.put(relative, bytes).await
    }

    /// Remembers `relative` for [`Output::abort`] before another process puts it whole (an
    /// executor of a Ballista cluster, writing through a plan); returns its path.
    pub fn expect(&self, relative: &str) -> Path {
        let path = self.location.child(relative);
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(path.clone());
        path
    }

    /// Puts the manifest, then removes the marker and the lock: the output is complete. Fails,
    /// writing no manifest, if this run no longer holds the lock (it was broken).
    pub async fn finish(&self, manifest: Vec<u8>) -> Result<()> {
        self.lock.check().await?;
        self.location.put(MANIFEST, manifest).await?;
        self.lock.check().await?;
        self.location
            .delete(&self.location.child(IN_PROGRESS))
            .await?;
        self.lock.release().await
    }

    /// Best effort after a failure: removes every file this run put, the marker last.
    pub async fn abort(&self) {
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
        for path in written {
            let _ = self.location.delete(&path).await;
        }
        if self.lock.check().await.is_ok() {
            let _ = self
                .location
                .delete(&self.location.child(IN_PROGRESS))
                .await;
        }
        let _ = self.lock.release().await;
    }
}

/// With the lock held: checks the target, puts the marker, removes the old output.
async fn prepare(location: &Location, overwrite: bool, writer: &str, id: &str) -> Result<()> {
    let old = check_target(location, overwrite).await?;
    let marker = Marker {
        writer,
        id,
        started_at: chrono::Utc::now().to_rfc3339(),
        note: "a run is writing here, or one was killed: this is not a finished output",
    };
    let marker = serde_json::to_vec_pretty(&marker).unwrap_or_default();
    location.put(IN_PROGRESS, marker).await?;
    // The old manifest goes first, so that from here on nothing claims the output is complete.
    let manifest_path = location.child(MANIFEST);
    let marker_path = location.child(IN_PROGRESS);
    if old.iter().any(|o| o.location == manifest_path) {
        location.delete(&manifest_path).await?;
    }
    for o in old
        .iter()
        .filter(|o| o.location != manifest_path && o.location != marker_path)
    {
        location.delete(&o.location).await?;
    }
    // Replaced, or empty as far as listing shows: a killed writer's staging files go too.
    if overwrite || old.is_empty() {
        let names = old.iter().filter_map(|o| location.relative(&o.location));
        remove_local_staging(location, &names.collect());
    }
    Ok(())
}

/// Makes sure the target is empty, or (with `overwrite`) a TADS output that may be replaced.
/// Returns the objects to remove once the in-progress marker is in place.
///
/// Only what the old manifest lists, and TADS's own marker and manifest, may be replaced; an
/// output with a marker but no manifest (a killed run) may lose the files a TADS writer names
/// (see [`is_output_file`]). Anything else in the target is named in the error, and nothing is
/// removed.
pub async fn check_target(
    location: &Location,
    overwrite: bool,
) -> Result<Vec<object_store::ObjectMeta>> {
    let mut existing = location.list_all().await?;
    // The lock is this run's own (taken before the check).
    existing.retain(|o| location.relative(&o.location).as_deref() != Some(LOCK));
    if existing.is_empty() {
        return Ok(existing);
    }
    let relative = |o: &object_store::ObjectMeta| location.relative(&o.location);
    let ours = existing
        .iter()
        .any(|o| matches!(relative(o).as_deref(), Some(MANIFEST | IN_PROGRESS)));
    let target = |message: String| Error::Target {
        location: location.to_string(),
        message,
    };
    if !overwrite {
        return Err(target(format!(
            "is not empty ({} objects); pass --overwrite to replace {}",
            existing.len(),
            if ours { "the output there" } else { "it" }
        )));
    }
    if !ours {
        return Err(target(
            "holds files that are not a TADS output (no _manifest.json); refusing to overwrite them"
                .into(),
        ));
    }
    let listed = match location.get_opt(MANIFEST).await? {
        Some(bytes) => listed_files(&bytes),
        None => None,
    };
    let foreign: Vec<String> = existing
        .iter()
        .filter_map(relative)
        .filter(|rel| !is_replaceable(rel, listed.as_ref()))
        .collect();
    if !foreign.is_empty() {
        return Err(target(format!(
            "holds {} that TADS did not write: {}; move {} away or choose another target (nothing was removed)",
            plural(foreign.len(), "file"),
            name_some(&foreign),
            if foreign.len() == 1 { "it" } else { "them" },
        )));
    }
    Ok(existing)
}

/// Whether `relative` may be removed when the output is replaced: TADS's own files, and what
/// the old manifest lists (without a readable manifest: what a TADS writer would name so).
fn is_replaceable(relative: &str, listed: Option<&BTreeSet<String>>) -> bool {
    matches!(relative, MANIFEST | IN_PROGRESS | LOCK)
        || match listed {
            Some(listed) => listed.contains(relative),
            None => is_output_file(relative),
        }
}

/// The files a TADS manifest lists, below its output: `files[].path` and `alerts.path`. `None`
/// if the manifest is not JSON of that shape.
pub fn listed_files(manifest: &[u8]) -> Option<BTreeSet<String>> {
    let json: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let files = json.get("files")?.as_array()?;
    let mut listed: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.get("path")?.as_str().map(str::to_string))
        .collect();
    if let Some(alerts) = json
        .get("alerts")
        .and_then(|a| a.get("path"))
        .and_then(|p| p.as_str())
    {
        listed.insert(alerts.to_string());
    }
    Some(listed)
}

/// Whether `relative` is named as a TADS writer names its files: `alerts/alerts.parquet`, a
/// Parquet file below `scored/` (`tads score`), or `k=v/…/part-N.parquet` (`tads generate`).
pub fn is_output_file(relative: &str) -> bool {
    let parts: Vec<&str> = relative.split('/').collect();
    let Some((last, dirs)) = parts.split_last() else {
        return false;
    };
    if relative == "alerts/alerts.parquet"
        || (parts.len() > 1 && parts[0] == "scored" && last.ends_with(".parquet"))
    {
        return true;
    }
    let part_file = last
        .strip_prefix("part-")
        .and_then(|n| n.strip_suffix(".parquet"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    part_file && !dirs.is_empty() && dirs.iter().all(|d| d.contains('='))
}

/// `n thing` or `n things`.
fn plural(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// The first few of `names`, comma-separated, and how many more there are.
fn name_some(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Removes the staging files (`name#N`) that a killed local writer left beside the files in
/// `names`, TADS's output files, manifest, marker and lock; object stores do not list them, so
/// only the file system can find them.
fn remove_local_staging(location: &Location, names: &BTreeSet<String>) {
    if location.scheme() != Scheme::Local {
        return;
    }
    let Ok(root) = location.url().to_file_path() else {
        return;
    };
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
                continue;
            }
            let Some((base, n)) = path.to_str().and_then(|p| p.rsplit_once('#')) else {
                continue;
            };
            let staged = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            let rel = std::path::Path::new(base)
                .strip_prefix(&root)
                .ok()
                .and_then(|r| r.to_str())
                .map(str::to_string);
            // TADS's own manifest, marker and lock too: a writer killed while it put one of
            // them leaves its staging file, which no listing shows. Only the lock's holder
            // writes the others, but another writer may be putting the lock right now (to find
            // it taken): its staging file goes only once it is a minute old.
            let own = |r: &str| matches!(r, MANIFEST | IN_PROGRESS);
            let stale_lock = |r: &str| {
                r == LOCK
                    && entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() >= 60))
            };
            if staged
                && rel.is_some_and(|r| {
                    names.contains(&r) || is_output_file(&r) || own(&r) || stale_lock(&r)
                })
            {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tads_names_its_files_so() {
        for ours in [
            "date=2026-01-01/part-00000.parquet",
            "scored/date=2026-01-01/part-00000.1.parquet",
            "scored/whatever.parquet",
            "alerts/alerts.parquet",
        ] {
            assert!(is_output_file(ours), "{ours}");
        }
        for theirs in [
            "NOTES.txt",
            "sub/important.csv",
            "part-00000.parquet",
            "date=2026-01-01/notes.parquet",
            "scored/notes.txt",
            "alerts/other.parquet",
        ] {
            assert!(!is_output_file(theirs), "{theirs}");
        }
    }

    #[test]
    fn staging_files_a_killed_writer_left_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("date=2026-01-01")).unwrap();
        let left = [
            "_tads_lock.json#1",
            "_tads_in_progress.json#2",
            "_manifest.json#1",
            "date=2026-01-01/part-00000.parquet#3",
        ];
        // A lock's staging file younger than a minute may be another writer's put in flight.
        let kept = [
            "notes.txt#1",
            "date=2026-01-01/mine.csv#2",
            "date=2026-01-01/part-00000.parquet",
            "_tads_lock.json#2",
        ];
        for f in left.iter().chain(&kept) {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        std::fs::File::options()
            .write(true)
            .open(root.join("_tads_lock.json#1"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let location = Location::parse(root.to_str().unwrap()).unwrap();
        remove_local_staging(&location, &BTreeSet::new());
        for f in left {
            assert!(!root.join(f).exists(), "{f} is left");
        }
        for f in kept {
            assert!(root.join(f).exists(), "{f} was removed");
        }
    }

    #[test]
    fn a_manifest_lists_its_files_and_alerts() {
        let json = br#"{"files": [{"path": "scored/a.parquet"}], "alerts": {"path": "alerts/alerts.parquet"}}"#;
        let listed = listed_files(json).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains("alerts/alerts.parquet"));
        assert!(listed_files(b"not json").is_none());
    }
}
