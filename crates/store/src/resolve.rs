//! Where a [`Location`] really is: local paths with every symlink and `..` resolved, `s3://`
//! URLs reduced to bucket and key, so that two spellings of one place compare equal and
//! [`Location::overlaps`] can tell when writing one location would clobber another.

use std::path::{Path, PathBuf};

use crate::{Location, Scheme};

/// A location reduced to the place it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A local path, absolute, with every symlink and `..` resolved (for a path that does not
    /// exist yet: its nearest existing ancestor resolved, the rest appended).
    Local(PathBuf),
    /// A bucket and the `/`-separated parts of a key (no empty parts).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key's parts.
        parts: Vec<String>,
    },
}

impl Resolved {
    /// Whether `self` is `other` or lies below it.
    pub fn is_within(&self, other: &Resolved) -> bool {
        match (self, other) {
            (Resolved::Local(a), Resolved::Local(b)) => a.starts_with(b),
            (
                Resolved::S3 { bucket, parts },
                Resolved::S3 {
                    bucket: other_bucket,
                    parts: other_parts,
                },
            ) => bucket == other_bucket && parts.starts_with(other_parts),
            _ => false,
        }
    }
}

impl Location {
    /// The place this location names (for a single-file input, the file), resolved: see
    /// [`Resolved`].
    pub fn resolved(&self) -> Resolved {
        let url = self.data_url();
        match self.scheme {
            Scheme::Local => {
                let path = url
                    .to_file_path()
                    .unwrap_or_else(|()| PathBuf::from(url.path()));
                Resolved::Local(resolve_path(&path))
            }
            Scheme::S3 => Resolved::S3 {
                bucket: url.host_str().unwrap_or_default().to_string(),
                parts: url
                    .path()
                    .split('/')
                    .filter(|p| !p.is_empty() && *p != ".")
                    .map(str::to_string)
                    .collect(),
            },
        }
    }

    /// Whether an output written at `out` would overlap this input: the input lies inside the
    /// output (it would be replaced), or, for a directory input, the output lies inside the input
    /// (it would be written into the data). Both sides are [`Location::resolved`] first, so a
    /// symlink, `..` or a `file://` spelling does not hide the overlap.
    pub fn overlaps(&self, out: &Location) -> bool {
        let (data, out_place) = (self.resolved(), out.resolved());
        data.is_within(&out_place) || (self.file.is_none() && out_place.is_within(&data))
    }
}

/// Symlinks followed before giving up on a chain (as the kernel's `ELOOP`).
const MAX_LINKS: usize = 40;

/// `path` (absolute) with symlinks and `..` resolved as the file system would: the longest
/// existing ancestor is canonicalized, a dangling symlink is followed by its text, and the parts
/// that do not exist yet are appended.
pub fn resolve_path(path: &Path) -> PathBuf {
    // Through its components: a trailing `/` would make a dangling symlink unreadable.
    resolve_with(&crate::lexically_normal(path), MAX_LINKS)
}

fn resolve_with(path: &Path, links_left: usize) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    // A dangling symlink: follow its text, relative to its own directory.
    if links_left > 0
        && let Ok(target) = std::fs::read_link(path)
        && let Some(parent) = path.parent()
    {
        return resolve_with(
            &crate::lexically_normal(&parent.join(target)),
            links_left - 1,
        );
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => resolve_with(parent, links_left).join(name),
        _ => crate::lexically_normal(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(text: &str) -> Location {
        Location::parse_data(text).unwrap()
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_dot_dot_and_file_urls_resolve_to_one_place() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("ds/date=1")).unwrap();
        std::os::unix::fs::symlink(root.join("ds"), root.join("dslink")).unwrap();
        let ds = loc(root.join("ds").to_str().unwrap());
        for out in [
            root.join("dslink"),
            root.join("dslink/new/deeper"),
            root.join("x/../dslink"),
            root.join("ds/date=1/../scores"),
        ] {
            let out = Location::parse(out.to_str().unwrap()).unwrap();
            assert!(ds.overlaps(&out), "{out}");
        }
        let url = Location::parse(&format!("file://{}/dslink/", root.display())).unwrap();
        assert!(ds.overlaps(&url));
        // The reverse: the input named through the link, the output plainly.
        let through_link = loc(root.join("dslink").to_str().unwrap());
        let plain = Location::parse(root.join("ds").to_str().unwrap()).unwrap();
        assert!(through_link.overlaps(&plain));
        // A sibling whose name starts alike does not overlap.
        let sibling = Location::parse(root.join("ds2").to_str().unwrap()).unwrap();
        assert!(!ds.overlaps(&sibling));
        // A dangling symlink into the data is followed.
        std::os::unix::fs::symlink(root.join("ds/not-yet"), root.join("dangling")).unwrap();
        for text in [root.join("dangling"), root.join("dangling/")] {
            let dangling = Location::parse(text.to_str().unwrap()).unwrap();
            assert!(ds.overlaps(&dangling), "{dangling}");
        }
    }

    #[test]
    fn a_single_file_input_conflicts_only_with_an_output_holding_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("one.parquet"), b"x").unwrap();
        let file = loc(tmp.path().join("one.parquet").to_str().unwrap());
        let holder = Location::parse(tmp.path().to_str().unwrap()).unwrap();
        let beside = Location::parse(tmp.path().join("out").to_str().unwrap()).unwrap();
        assert!(file.overlaps(&holder));
        assert!(!file.overlaps(&beside));
    }

    #[test]
    fn s3_compares_bucket_and_normalized_key() {
        let a = Resolved::S3 {
            bucket: "b".into(),
            parts: vec!["data".into()],
        };
        let inside = Resolved::S3 {
            bucket: "b".into(),
            parts: vec!["data".into(), "scores".into()],
        };
        let other_bucket = Resolved::S3 {
            bucket: "c".into(),
            parts: vec!["data".into(), "scores".into()],
        };
        assert!(inside.is_within(&a));
        assert!(!a.is_within(&inside));
        assert!(!other_bucket.is_within(&a));
        assert!(!Resolved::Local("/data".into()).is_within(&a));
        let options = [("aws_skip_signature", "true"), ("aws_region", "us-east-1")];
        let parse = |t: &str| Location::parse_with(t, &options).unwrap();
        let data = parse("s3://b/data");
        assert_eq!(data.resolved(), a);
        assert!(data.overlaps(&parse("s3a://b//data/scores/")));
        assert!(parse("s3://b/data/x").overlaps(&parse("s3://b/")));
        assert!(!data.overlaps(&parse("s3://b/data2")));
    }
}
