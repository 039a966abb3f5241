//! Durable files in a local directory: written whole or not at all, listed in name order, and
//! moved aside with a warning when they cannot be read.
//!
//! A file is written to a hidden temporary name (`.NAME.PID.tmp`), flushed to disk, renamed to
//! its name and the directory flushed, so a crash leaves either no file or the whole file; a
//! leftover temporary file is never listed and [`clean_temps`] removes it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Writes `bytes` to `path` atomically and durably (temporary file, fsync, rename, fsync of the
/// directory), creating the directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Serialises `value` as JSON and writes it with [`write_atomic`].
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_atomic(path, &json)
}

/// Reads a JSON file; the error is one line, for a warning.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Flushes a directory's entries (a rename or a removal in it) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The names of the files in `dir`, sorted, hidden ones too; none when it does not exist.
pub fn names(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// The `*.json` files in `dir` in name order, hidden (temporary) files left out; none when the
/// directory does not exist.
pub fn list_json(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(names(dir)?
        .into_iter()
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .map(|n| dir.join(n))
        .collect())
}

/// Removes the temporary files a crash left in `dir` (hidden `*.tmp`); returns how many.
pub fn clean_temps(dir: &Path) -> std::io::Result<usize> {
    let temps: Vec<String> = names(dir)?
        .into_iter()
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect();
    for name in &temps {
        remove(&dir.join(name))?;
    }
    Ok(temps.len())
}

/// Renames `path` to `<path>.<suffix>` (kept for a look, no longer listed) and prints a warning
/// with `why`; returns the new path.
pub fn set_aside(path: &Path, suffix: &str, why: &str) -> std::io::Result<PathBuf> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".");
    aside.push(suffix);
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    eprintln!(
        "warning: outbox: {} ({}); moved aside as {}",
        path.display(),
        why.replace('\n', " "),
        aside.display()
    );
    Ok(aside)
}

/// Removes a file; one that is already gone is fine.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_are_not_listed_and_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("b.json"), b"{}").unwrap();
        write_atomic(&dir.path().join("a.json"), b"{}").unwrap();
        std::fs::write(dir.path().join(".c.json.1.tmp"), b"{").unwrap();
        let names: Vec<_> = list_json(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.json", "b.json"]);
        assert_eq!(clean_temps(dir.path()).unwrap(), 1);
        assert!(!dir.path().join(".c.json.1.tmp").exists());
        assert!(list_json(&dir.path().join("missing")).unwrap().is_empty());
    }
}
