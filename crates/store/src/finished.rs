//! What a reader checks before it reads: that no TADS writer is at work on, or was killed
//! writing, the location or any folder above it, and that the files the output's manifest
//! lists below the location are all there.

use crate::output::listed_files;
use crate::{Error, IN_PROGRESS, Location, MANIFEST, Result};

/// How many folders above a location a reader looks for a marker or a manifest.
const MAX_LEVELS_UP: usize = 16;

impl Location {
    /// The folder above this one (same store), or `None` at the top.
    pub fn parent(&self) -> Option<Location> {
        let parts: Vec<_> = self.prefix.parts().collect();
        let (_, above) = parts.split_last()?;
        let mut url = self.url.join("../").ok()?;
        url.set_fragment(None);
        Some(Location {
            scheme: self.scheme,
            url,
            prefix: above.iter().cloned().collect(),
            store: std::sync::Arc::clone(&self.store),
            file: None,
        })
    }
}

/// Fails if this location, or a folder above it, holds the in-progress marker of a TADS writer,
/// or if the nearest manifest at or above it lists a file below it that `present` (the paths
/// below the location, relative to it) lacks. A manifest that lists no files (not a TADS
/// output's) is not checked against. Returns the Parquet files of `present` that such a
/// manifest does not list (outside hidden `_`/`.` folders): files someone else put there, which
/// a reader should mention.
pub async fn check_finished(location: &Location, present: &[String]) -> Result<Vec<String>> {
    let unfinished = |at: &Location| Error::Target {
        location: location.to_string(),
        message: format!(
            "is not a finished dataset ({at}{IN_PROGRESS} is present: a writer is at work or was killed)"
        ),
    };
    let mut below = String::new(); // this location, relative to `at`
    let mut at = location.clone();
    for _ in 0..MAX_LEVELS_UP {
        if at.get_opt(IN_PROGRESS).await?.is_some() {
            return Err(unfinished(&at));
        }
        if let Some(listed) = at.get_opt(MANIFEST).await?.and_then(|m| listed_files(&m)) {
            let missing: Vec<&str> = listed
                .iter()
                .filter_map(|f| f.strip_prefix(below.as_str()))
                .filter(|f| !present.iter().any(|p| p == f))
                .collect();
            if let Some(first) = missing.first() {
                return Err(Error::Target {
                    location: location.to_string(),
                    message: format!(
                        "is not a complete dataset: {} file(s) its manifest {at}{MANIFEST} lists are missing ({first}{})",
                        missing.len(),
                        if missing.len() > 1 { ", …" } else { "" }
                    ),
                });
            }
            let hidden = |f: &str| {
                f.split('/')
                    .any(|p| p.starts_with('_') || p.starts_with('.'))
            };
            let extra = present
                .iter()
                .filter(|p| p.ends_with(".parquet") && !hidden(p))
                .filter(|p| {
                    !listed
                        .iter()
                        .any(|f| f.strip_prefix(below.as_str()) == Some(p))
                })
                .cloned()
                .collect();
            return Ok(extra);
        }
        let Some(name) = at
            .prefix
            .parts()
            .next_back()
            .map(|p| p.as_ref().to_string())
        else {
            return Ok(Vec::new());
        };
        below = format!("{name}/{below}");
        match at.parent() {
            Some(up) => at = up,
            None => return Ok(Vec::new()),
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_marker_above_and_a_missing_listed_file_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(dir.path().join("out").to_str().unwrap()).unwrap();
        let manifest =
            br#"{"files": [{"path": "scored/a/x.parquet"}, {"path": "scored/b/y.parquet"}]}"#;
        root.put(MANIFEST, manifest.to_vec()).await.unwrap();
        let scored = root.sub("scored");
        assert_eq!(scored.parent().unwrap().url(), root.url());
        let all = ["a/x.parquet".to_string(), "b/y.parquet".to_string()];
        assert!(check_finished(&scored, &all).await.unwrap().is_empty());
        // A Parquet file the manifest does not list is returned; hidden ones and others are not.
        let more = [
            all[0].clone(),
            all[1].clone(),
            "c/z.parquet".to_string(),
            "_tmp/w.parquet".to_string(),
            "notes.txt".to_string(),
        ];
        assert_eq!(
            check_finished(&scored, &more).await.unwrap(),
            ["c/z.parquet"]
        );
        let err = check_finished(&scored, &all[..1])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 file(s)") && err.contains("b/y.parquet"),
            "{err}"
        );
        // Only what lies below the location counts.
        check_finished(&scored.sub("a"), &["x.parquet".into()])
            .await
            .unwrap();
        root.put(IN_PROGRESS, b"{}".to_vec()).await.unwrap();
        let err = check_finished(&scored.sub("a"), &["x.parquet".into()])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a finished dataset"), "{err}");
    }
}
