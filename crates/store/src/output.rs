//! The protocol every TADS writer follows, so that no reader takes an unfinished output for a
//! finished one and nothing a user wrote is lost:
//! 1. refuse a non-empty target unless asked to overwrite, and even then only a TADS output
//!    (one with `_manifest.json` or `_tads_in_progress.json`);
//! 2. put `_tads_in_progress.json`; with overwrite, drop the old manifest, then the old files;
//! 3. put each file whole ([`Location::put`]), so no reader ever sees a partial file;
//! 4. put `_manifest.json` last, then remove the marker.
//!
//! A reader that finds no manifest, or finds the marker, is looking at an unfinished output. If a
//! run fails it removes what it wrote ([`Output::abort`]); if it is killed, the marker stays.

use std::sync::Mutex;

use object_store::path::Path;
use serde::Serialize;

use crate::{Error, IN_PROGRESS, Location, MANIFEST, Result};

/// An output being written: its location and what has been put there so far.
#[derive(Debug)]
pub struct Output {
    location: Location,
    written: Mutex<Vec<Path>>,
}

#[derive(Serialize)]
struct Marker<'a> {
    writer: &'a str,
    id: &'a str,
    started_at: String,
    note: &'a str,
}

impl Output {
    /// Checks the target, puts the in-progress marker and, with `overwrite`, removes the output
    /// that was there. `writer` names the command (`tads score`), `id` the run.
    pub async fn begin(
        location: &Location,
        overwrite: bool,
        writer: &str,
        id: &str,
    ) -> Result<Self> {
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
        Ok(Self {
            location: location.clone(),
            written: Mutex::new(Vec::new()),
        })
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

    /// Puts the manifest, then removes the marker: the output is complete.
    pub async fn finish(&self, manifest: Vec<u8>) -> Result<()> {
        self.location.put(MANIFEST, manifest).await?;
        self.location
            .delete(&self.location.child(IN_PROGRESS))
            .await
    }

    /// Best effort after a failure: removes every file this run put, the marker last.
    pub async fn abort(&self) {
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
        for path in written {
            let _ = self.location.delete(&path).await;
        }
        let _ = self
            .location
            .delete(&self.location.child(IN_PROGRESS))
            .await;
    }
}

/// Makes sure the target is empty, or (with `overwrite`) a TADS output that may be replaced.
/// Returns the objects to remove once the in-progress marker is in place.
pub async fn check_target(
    location: &Location,
    overwrite: bool,
) -> Result<Vec<object_store::ObjectMeta>> {
    let existing = location.list_all().await?;
    if existing.is_empty() {
        return Ok(existing);
    }
    let ours = existing.iter().any(|o| {
        matches!(
            location.relative(&o.location).as_deref(),
            Some(MANIFEST | IN_PROGRESS)
        )
    });
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
    Ok(existing)
}
