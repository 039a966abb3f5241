//! A file written in place on a local disk: under a staging name first, renamed to its own name
//! once whole, as [`crate::Location::put`] writes through the object store, but streamed instead
//! of held in memory, so that a writer can hand the kernel byte ranges of another file to copy
//! ([`StagedFile::copy_from`]) instead of reading them and writing them again.
//!
//! The staging name is the object store's own (`name#digits`): its listings skip such files, so
//! a run killed mid-write leaves nothing that a reader of the output takes for a finished file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::path::Path;

use crate::{Location, Scheme};

/// A file being written under its staging name. Dropped before [`StagedFile::commit`], it
/// removes what it wrote.
#[derive(Debug)]
pub struct StagedFile {
    file: File,
    staged: PathBuf,
    target: PathBuf,
    len: u64,
    committed: bool,
}

impl StagedFile {
    /// Starts writing the file `target`, creating its directory if need be.
    pub fn create(target: PathBuf) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut staged = target.clone().into_os_string();
        staged.push(format!(
            "#{}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let staged = PathBuf::from(staged);
        let file = File::options().write(true).create_new(true).open(&staged)?;
        Ok(Self {
            file,
            staged,
            target,
            len: 0,
            committed: false,
        })
    }

    /// Appends bytes `range` of `source` (a file on the same machine), copied by the kernel
    /// (`copy_file_range` where the file systems allow) without passing through this process.
    pub fn copy_from(&mut self, source: &File, range: std::ops::Range<u64>) -> io::Result<()> {
        let want = range.end.saturating_sub(range.start);
        let mut source = source;
        source.seek(SeekFrom::Start(range.start))?;
        let copied = io::copy(&mut source.take(want), &mut self.file)?;
        if copied != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("copied {copied} of {want} bytes: the source file is shorter"),
            ));
        }
        self.len += copied;
        Ok(())
    }

    /// The bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives the file its own name, replacing any file there; returns its length.
    pub fn commit(mut self) -> io::Result<u64> {
        std::fs::rename(&self.staged, &self.target)?;
        self.committed = true;
        Ok(self.len)
    }
}

impl Write for StagedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.staged);
        }
    }
}

impl Location {
    /// The local file behind `path` of this location's store, or `None` when the store is not a
    /// local disk.
    pub fn local_file(&self, path: &Path) -> Option<PathBuf> {
        match self.scheme {
            Scheme::Local => object_store::local::LocalFileSystem::new()
                .path_to_filesystem(path)
                .ok(),
            Scheme::S3 => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path as FsPath;

    /// Whether `path` is a staging name [`StagedFile`] writes (`name#digits`).
    fn is_staged(path: &FsPath) -> bool {
        path.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, s)| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    }

    #[test]
    fn a_staged_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::write(&source, b"0123456789").unwrap();
        let target = dir.path().join("a/b/out.parquet");
        let mut staged = StagedFile::create(target.clone()).unwrap();
        staged.write_all(b"head:").unwrap();
        staged
            .copy_from(&File::open(&source).unwrap(), 2..6)
            .unwrap();
        staged.write_all(b":tail").unwrap();
        assert_eq!(staged.len(), 14);
        // Before the commit only the staging name exists, and it is one the listing skips.
        let names: Vec<PathBuf> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(is_staged(&names[0]), "{names:?}");
        assert!(!target.exists());
        assert_eq!(staged.commit().unwrap(), 14);
        assert_eq!(std::fs::read(&target).unwrap(), b"head:2345:tail");
        assert_eq!(
            std::fs::read_dir(dir.path().join("a/b")).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_dropped_file_leaves_nothing_and_a_short_source_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::write(&source, b"0123").unwrap();
        let mut staged = StagedFile::create(dir.path().join("out")).unwrap();
        let err = staged
            .copy_from(&File::open(&source).unwrap(), 2..10)
            .unwrap_err();
        assert!(err.to_string().contains("copied 2 of 8 bytes"), "{err}");
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
