//! Where TADS reads and writes.
//!
//! Every TADS command that takes a `--data`, `--out` or `--models` argument accepts the same three
//! spellings: a local directory (`./out`, `/data/tads`), a `file://` URL, or an `s3://bucket/prefix`
//! URL. [`Location::parse`] turns any of them into an [`object_store::ObjectStore`] and a prefix
//! inside it, so the generator, the jobs and DataFusion all go through one code path and local
//! directories behave exactly like S3 (whole-object puts, listing by prefix).
//!
//! S3 is configured from the usual environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`, ...), so any S3-compatible server works.
//! Credentials must come from that environment: TADS never falls back to probing a cloud
//! instance-metadata endpoint, which on a laptop only hangs.
#![deny(missing_docs)]

pub mod finished;
pub mod lock;
pub mod output;
pub mod resolve;
pub mod staged;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};
use url::Url;

pub use finished::check_finished;
pub use lock::Lock;
pub use output::Output;
pub use resolve::Resolved;
pub use staged::StagedFile;

/// Name of the manifest every TADS writer puts last: its presence means the output is complete.
pub const MANIFEST: &str = "_manifest.json";
/// Name of the marker a TADS writer puts first and removes after the manifest: its presence means
/// a writer is at work, or was killed, and the output is not to be read.
pub const IN_PROGRESS: &str = "_tads_in_progress.json";
/// Name of the lock a TADS writer holds on its output while it writes (see [`lock`]).
pub const LOCK: &str = "_tads_lock.json";

/// The version of an object as read (its ETag and, where the store keeps them, its version
/// id), for a conditional replace ([`Location::put_if`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(UpdateVersion);

/// Hears how far a job has come. Called from many threads.
pub trait Progress: Send + Sync {
    /// The job has `rows` rows in `files` files to do (called once, when known).
    fn total(&self, _rows: u64, _files: u64) {}
    /// `rows` more rows are done.
    fn rows(&self, rows: u64);
    /// One more file has been stored.
    fn file_done(&self) {}
    /// The job starts a new phase (`finding alerts`, `scoring`); row and file counts start
    /// again (files are stored in a job's last phase).
    fn phase(&self, _name: &str) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {
    fn rows(&self, _rows: u64) {}
}

/// Errors of this crate. Each one names the location it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text given as a location is not a directory, `file://` or `s3://` URL.
    #[error("{location}: {reason}")]
    InvalidLocation {
        /// The location as the user wrote it.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target of a write cannot be written as asked (not empty, not a TADS output).
    #[error("{location}: {message}")]
    Target {
        /// The target.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The object store refused or failed an operation.
    #[error("{location}: {}", describe_store_error(.source))]
    Store {
        /// The location (URL) the operation was about.
        location: String,
        /// The underlying object store error.
        #[source]
        source: object_store::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A one-line description of an object store error, without the nested debug dumps that
/// `object_store` errors carry (request bodies, retry internals).
pub fn describe_store_error(err: &object_store::Error) -> String {
    use std::error::Error as _;
    let mut msg = match err {
        object_store::Error::NotFound { path, .. } => format!("not found: {path}"),
        object_store::Error::PermissionDenied { path, .. } => format!("permission denied: {path}"),
        object_store::Error::Unauthenticated { path, .. } => {
            format!("not authenticated (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): {path}")
        }
        other => other.to_string(),
    };
    // The innermost cause is usually the useful part ("Connection refused", "No such file").
    let mut cause = err.source();
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    if let Some(last) = last
        && !msg.contains(&last)
    {
        msg = format!("{msg} ({last})");
    }
    msg.replace('\n', " ")
}

/// Which kind of storage a [`Location`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// A directory on the local file system.
    Local,
    /// A bucket and prefix on S3 or an S3-compatible server.
    S3,
}

/// A directory-like place in an object store: the store, the prefix inside it, and the URL that
/// names both.
#[derive(Clone)]
pub struct Location {
    scheme: Scheme,
    url: Url,
    prefix: Path,
    store: Arc<dyn ObjectStore>,
    /// For a single-file input: the file's name inside `prefix`.
    file: Option<String>,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Location")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.show(&self.url))
    }
}

impl Location {
    /// Parses a location: a local path (relative paths are made absolute against the current
    /// directory; the directory need not exist yet), a `file://` URL or an `s3://bucket/prefix`
    /// URL. Any other scheme is an error naming the scheme.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_with(text, &[])
    }

    /// Parses an input dataset: everything [`Location::parse`] takes, and also a single Parquet
    /// file (an existing local file, or an `s3://` key ending in `.parquet`). For a file, the
    /// location is its directory and [`Location::file`] names it.
    pub fn parse_data(text: &str) -> Result<Self> {
        Self::parse_data_with(text, &[])
    }

    /// [`Location::parse_data`] with explicit S3 settings (see [`Location::parse_with`]).
    pub fn parse_data_with(text: &str, s3_options: &[(&str, &str)]) -> Result<Self> {
        let is_local_file = !text.contains("://") && std::path::Path::new(text).is_file()
            || text.starts_with("file://")
                && Url::parse(text)
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                    .is_some_and(|p| p.is_file());
        // An S3 file has a key: `s3://x.parquet` is a bucket (and its `s3:/` no local folder).
        let is_s3_file = text.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme.to_ascii_lowercase().as_str(), "s3" | "s3a") && rest.contains('/')
        }) && text.ends_with(".parquet");
        if !is_local_file && !is_s3_file {
            return Self::parse_with(text, s3_options);
        }
        let trimmed = text.trim_end_matches('/');
        let (parent, name) = trimmed.rsplit_once('/').unwrap_or((".", trimmed));
        let parent = if parent.is_empty() { "/" } else { parent };
        let mut location = Self::parse_with(parent, s3_options)?;
        location.file = Some(name.to_string());
        Ok(location)
    }

    /// The file this location stands for, when it is a single-file input.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The data as a message names it: the file's path for a single-file input (where the
    /// location itself shows its directory), the location otherwise.
    pub fn shown(&self) -> String {
        self.show(&self.data_url())
    }

    /// A URL of this location's store as messages show it: a local path itself, not its URL
    /// form (`my data`, not `my%20data`); an S3 URL as it is.
    fn show(&self, url: &Url) -> String {
        match self.scheme {
            Scheme::Local => match url.to_file_path() {
                Ok(path) => path.display().to_string(),
                Err(()) => url.path().to_string(),
            },
            Scheme::S3 => url.to_string(),
        }
    }

    /// The URL of the data: the file's for a single-file input, the directory's otherwise.
    pub fn data_url(&self) -> Url {
        match &self.file {
            Some(name) => self.url.join(name).unwrap_or_else(|_| self.url.clone()),
            None => self.url.clone(),
        }
    }

    /// Like [`Location::parse`], with S3 settings that take precedence over the environment:
    /// pairs of an `object_store` Amazon config key and its value (`("aws_endpoint",
    /// "http://127.0.0.1:9000")`, `("aws_allow_http", "true")`, `("aws_access_key_id", ..)`).
    /// Ignored for local locations.
    pub fn parse_with(text: &str, s3_options: &[(&str, &str)]) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidLocation {
            location: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(invalid("empty location".into()));
        }
        match text.split_once("://") {
            None => Self::local(std::path::Path::new(text), text),
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "file" => {
                    let url =
                        Url::parse(text).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
                    let path = url
                        .to_file_path()
                        .map_err(|()| invalid("a file:// URL needs an absolute path".into()))?;
                    Self::local(&path, text)
                }
                "s3" | "s3a" => Self::s3(rest, text, s3_options),
                other => Err(invalid(format!(
                    "unknown URL scheme `{other}://` (use a local directory, file:// or s3://bucket/prefix)"
                ))),
            },
        }
    }

    fn local(path: &std::path::Path, text: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidLocation {
            location: text.to_string(),
            reason,
        };
        let abs = std::path::absolute(path)
            .map(|p| lexically_normal(&p))
            .map_err(|e| invalid(format!("cannot resolve path: {e}")))?;
        if abs.is_file() {
            return Err(invalid("is a file, not a directory".into()));
        }
        let prefix = Path::from_absolute_path(&abs)
            .map_err(|e| invalid(format!("not a usable path: {e}")))?;
        let mut url = Url::from_directory_path(&abs)
            .map_err(|()| invalid("not an absolute local path".into()))?;
        url.set_fragment(None);
        Ok(Self {
            scheme: Scheme::Local,
            url,
            prefix,
            store: Arc::new(LocalFileSystem::new()),
            file: None,
        })
    }

    fn s3(rest: &str, text: &str, options: &[(&str, &str)]) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidLocation {
            location: text.to_string(),
            reason,
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(
                "an s3:// URL needs a bucket: s3://bucket/prefix".into(),
            ));
        }
        // The key as a URL reads it, which is how DataFusion reads the location (its table URL):
        // `%20` is a space, `a/../b` is `b`, `a//b` is `a/b`. The store prefix comes from the
        // same URL, so that TADS lists, writes and checks for overlaps where DataFusion reads.
        let key = key
            .split('/')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let url = Url::parse(&format!(
            "s3://{bucket}/{key}{}",
            if key.is_empty() { "" } else { "/" }
        ))
        .map_err(|e| invalid(format!("not a valid URL: {e}")))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "`?` and `#` start a URL's query and fragment; write them in a key as %3F and %23"
                    .into(),
            ));
        }
        // The URL drops tabs and line breaks and reads `user@` and `:port`: the bucket must be
        // the URL's host as written.
        if rest.chars().any(char::is_control) || url.host_str() != Some(bucket) {
            return Err(invalid(format!("`{bucket}` is not a bucket name")));
        }
        let prefix = Path::from_url_path(url.path())
            .map_err(|e| invalid(format!("not a usable S3 key: {e}")))?;
        let has_credentials = [
            "AWS_ACCESS_KEY_ID",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
            || options.iter().any(|(k, _)| {
                matches!(
                    *k,
                    "aws_access_key_id" | "access_key_id" | "aws_skip_signature" | "skip_signature"
                )
            })
            || std::env::var("AWS_SKIP_SIGNATURE")
                .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        if !has_credentials {
            return Err(invalid(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_SKIP_SIGNATURE=true for a public bucket)"
                    .into(),
            ));
        }
        // Our timeouts first, then the environment (as `from_env` reads it), then explicit
        // options: each later one wins. A dead endpoint fails in seconds, not minutes.
        let client = |k| AmazonS3ConfigKey::Client(k);
        let mut builder = AmazonS3Builder::new()
            .with_config(client(ClientConfigKey::ConnectTimeout), "5s")
            .with_config(client(ClientConfigKey::Timeout), "300s");
        // `vars_os`: `vars` panics on a variable that is not UTF-8, anywhere in the environment.
        for (key, value) in std::env::vars_os() {
            let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                continue;
            };
            if key.starts_with("AWS_")
                && let Ok(key) = key.to_ascii_lowercase().parse()
            {
                builder = builder.with_config(key, value);
            }
        }
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|_| invalid(format!("unknown S3 setting `{key}`")))?;
            builder = builder.with_config(key, *value);
        }
        let store = builder
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| invalid(describe_store_error(&e)))?;
        Ok(Self {
            scheme: Scheme::S3,
            url,
            prefix,
            store: Arc::new(store),
            file: None,
        })
    }

    /// The kind of storage.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The object store that holds this location.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix of this location inside its store.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The full URL of this location, ending in `/` (`file:///abs/dir/`, `s3://bucket/prefix/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL of the store itself (`file:///`, `s3://bucket`), the key under which DataFusion's
    /// object store registry must know it.
    pub fn store_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path("/");
        url
    }

    /// The store path of `relative` (a `/`-separated path) below this location.
    pub fn child(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.clone().join(part))
    }

    /// The directory `relative` below this location, as a location of its own (same store).
    pub fn sub(&self, relative: &str) -> Self {
        let relative = relative.trim_matches('/');
        let url = self
            .url
            .join(&format!("{relative}/"))
            .unwrap_or_else(|_| self.url.clone());
        Self {
            scheme: self.scheme,
            url,
            prefix: self.child(relative),
            store: Arc::clone(&self.store),
            file: None,
        }
    }

    /// The path of `path` relative to this location, or `None` if it is not below it.
    pub fn relative(&self, path: &Path) -> Option<String> {
        let parts: Vec<_> = path
            .prefix_match(&self.prefix)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }

    fn store_err(&self, source: object_store::Error) -> Error {
        Error::Store {
            location: self.to_string(),
            source,
        }
    }

    /// Lists every object below this location, recursively.
    pub async fn list_all(&self) -> Result<Vec<ObjectMeta>> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        match self.store.list(prefix).try_collect::<Vec<_>>().await {
            Ok(list) => Ok(list),
            // A local directory that does not exist yet is simply empty.
            Err(object_store::Error::NotFound { .. }) if self.scheme == Scheme::Local => Ok(vec![]),
            Err(e) => Err(self.store_err(e)),
        }
    }

    /// Lists the objects below this location whose path sorts after `relative` (S3 lists from
    /// there with `start-after`, so a prefix that grows is not listed whole again).
    pub async fn list_after(&self, relative: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let offset = self.child(relative);
        match self
            .store
            .list_with_offset(prefix, &offset)
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(list) => Ok(list),
            Err(object_store::Error::NotFound { .. }) if self.scheme == Scheme::Local => Ok(vec![]),
            Err(e) => Err(self.store_err(e)),
        }
    }

    /// Writes `bytes` at `relative` below this location as one whole object: a reader sees the
    /// old object or the complete new one, never a part (local files are staged and renamed).
    pub async fn put(&self, relative: &str, bytes: impl Into<PutPayload>) -> Result<()> {
        let path = self.child(relative);
        self.store
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| self.store_err(e))
    }

    /// Writes `bytes` at `relative` only if no object is there yet, in one atomic step (a hard
    /// link on a local disk, a conditional put on S3). Returns `false`, writing nothing, if one
    /// is there.
    pub async fn put_new(&self, relative: &str, bytes: impl Into<PutPayload>) -> Result<bool> {
        let path = self.child(relative);
        let opts = PutOptions::from(PutMode::Create);
        match self.store.put_opts(&path, bytes.into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.store_err(e)),
        }
    }

    /// Reads the whole object at `relative` with its version, or `None` if there is none: the
    /// version [`Location::put_if`] compares with.
    pub async fn get_versioned(&self, relative: &str) -> Result<Option<(bytes::Bytes, Version)>> {
        let path = self.child(relative);
        match self.store.get(&path).await {
            Ok(r) => {
                let version = Version(UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                });
                let bytes = r.bytes().await.map_err(|e| self.store_err(e))?;
                Ok(Some((bytes, version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err(e)),
        }
    }

    /// Replaces the object at `relative` with `bytes` in one whole write, only if it is still
    /// the one read as `expected` (`None`: only if there is none yet). Returns the new object's
    /// version, or `None`, writing nothing, when another writer has changed it since.
    ///
    /// On S3 this is one conditional put (`If-Match` on the ETag, `If-None-Match: *` for a new
    /// object), so two writers can never both replace the same version. A local file system
    /// has no conditional replace: the version is compared, then the file is replaced by a
    /// rename, which is atomic for readers; writers are kept apart by a [`Lock`].
    pub async fn put_if(
        &self,
        relative: &str,
        bytes: impl Into<PutPayload>,
        expected: Option<&Version>,
    ) -> Result<Option<Version>> {
        let path = self.child(relative);
        let mode = match (self.scheme, expected) {
            (_, None) => PutMode::Create,
            (Scheme::S3, Some(v)) => PutMode::Update(v.0.clone()),
            (Scheme::Local, Some(v)) => {
                let now = match self.store.head(&path).await {
                    Ok(meta) => Some(meta.e_tag),
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => return Err(self.store_err(e)),
                };
                if now.flatten() != v.0.e_tag {
                    return Ok(None);
                }
                PutMode::Overwrite
            }
        };
        match self.store.put_opts(&path, bytes.into(), mode.into()).await {
            Ok(r) => Ok(Some(Version(UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            }))),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(None),
            Err(e) => Err(self.store_err(e)),
        }
    }

    /// Reads the whole object at `relative`, or `None` if there is none.
    pub async fn get_opt(&self, relative: &str) -> Result<Option<bytes::Bytes>> {
        let path = self.child(relative);
        match self.store.get(&path).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|e| self.store_err(e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err(e)),
        }
    }

    /// Deletes the object at `path` (a full store path); a missing object is not an error.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_err(e)),
        }
    }
}

/// `path` with `.` and `..` resolved by the text alone (`/a/b/../c` is `/a/c`), as a shell
/// user means it; object store paths may hold neither.
pub(crate) fn lexically_normal(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_paths_and_file_urls_alike() {
        let dir = tempfile::tempdir().unwrap();
        let a = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let b = Location::parse(&format!("file://{}", dir.path().display())).unwrap();
        assert_eq!(a.url(), b.url());
        assert_eq!(a.scheme(), Scheme::Local);
        assert!(a.url().as_str().ends_with('/'));
        assert_eq!(a.store_url().as_str(), "file:///");
        let child = a.child("date=2026-01-01/part-0.parquet");
        assert_eq!(
            a.relative(&child).unwrap(),
            "date=2026-01-01/part-0.parquet"
        );
    }

    #[test]
    fn dot_and_dot_dot_in_local_paths_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let plain = Location::parse(&format!("{d}/models")).unwrap();
        for text in [
            format!("{d}/x/../models"),
            format!("{d}/./models/"),
            format!("{d}/a/b/../../models"),
        ] {
            assert_eq!(Location::parse(&text).unwrap().url(), plain.url(), "{text}");
        }
        assert!(
            Location::parse("../x")
                .unwrap()
                .prefix()
                .as_ref()
                .ends_with("x")
        );
    }

    #[test]
    fn a_single_file_is_data_but_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.parquet");
        std::fs::write(&path, b"x").unwrap();
        let loc = Location::parse_data(path.to_str().unwrap()).unwrap();
        assert_eq!(loc.file(), Some("one.parquet"));
        assert!(loc.data_url().as_str().ends_with("/one.parquet"));
        assert_eq!(
            loc.url(),
            Location::parse(dir.path().to_str().unwrap()).unwrap().url()
        );
        let d = Location::parse_data(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(d.file(), None);
        assert_eq!(d.data_url(), *d.url());
    }

    #[test]
    fn rejects_unknown_schemes_and_bad_s3_urls() {
        let err = Location::parse("gs://bucket/x").unwrap_err().to_string();
        assert!(err.contains("unknown URL scheme `gs://`"), "{err}");
        let err = Location::parse("s3:///x").unwrap_err().to_string();
        assert!(err.contains("needs a bucket"), "{err}");
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn s3_keys_are_where_their_url_says() {
        // Found by fuzzing (fuzz/corpus/location/): the store prefix TADS lists and writes under
        // and the URL DataFusion reads were different keys for `a%20b`, `data/../scores`, `a//b`
        // or `data~1`, and `s3://x.parquet` became a local folder `s3:`.
        let opts = [("aws_skip_signature", "true"), ("aws_region", "us-east-1")];
        let s3 = |t: &str| Location::parse_with(t, &opts).unwrap();
        for (text, key) in [
            ("s3://b/a b/c", "a b/c"),
            ("s3://b/a%20b/c", "a b/c"),
            ("s3://b/data/../scores", "scores"),
            ("s3://b/./x//y/", "x/y"),
            ("s3://b/data~1", "data~1"),
            ("s3a://b/k", "k"),
            ("s3://b", ""),
        ] {
            let loc = s3(text);
            assert_eq!(loc.prefix().as_ref(), key, "{text}");
            assert_eq!(
                Path::from_url_path(loc.url().path()).unwrap(),
                *loc.prefix(),
                "{text}"
            );
            assert_eq!(s3(loc.url().as_str()).prefix(), loc.prefix(), "{text}");
        }
        // Scores at data/../scores are not written inside the data.
        let (data, out) = (s3("s3://b/data"), s3("s3://b/data/../scores"));
        assert_eq!(data.relative(&out.child("scored/part-0.parquet")), None);
        assert!(!data.overlaps(&out));
        for bad in [
            "s3://b/x?y",
            "s3://b/x#y",
            "s3://b/a%00b",
            "s3://\n",
            "s3://b:9000/x",
            "s3://me@b/x",
            "s3://b/a\tb",
        ] {
            assert!(Location::parse_with(bad, &opts).is_err(), "{bad}");
        }
        let bucket = Location::parse_data_with("s3://x.parquet", &opts).unwrap();
        assert_eq!((bucket.scheme(), bucket.file()), (Scheme::S3, None));
        let file = Location::parse_data_with("S3://b/k/x.parquet", &opts).unwrap();
        assert_eq!(
            (file.scheme(), file.file()),
            (Scheme::S3, Some("x.parquet"))
        );
        assert_eq!(file.prefix().as_ref(), "k");
    }

    #[test]
    fn a_local_location_prints_as_its_path() {
        // Found by fuzzing (fuzz/corpus/location/): it printed its URL's path, `my%20data`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my data/ünï %41");
        let loc = Location::parse(path.to_str().unwrap()).unwrap();
        assert_eq!(loc.to_string(), format!("{}/", path.display()));
        assert_eq!(Location::parse(&loc.to_string()).unwrap().url(), loc.url());
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = Location::parse(file.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a file"), "{err}");
    }

    #[tokio::test]
    async fn put_list_get_delete_round_trip_locally() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().join("nested/out").to_str().unwrap()).unwrap();
        assert!(loc.list_all().await.unwrap().is_empty());
        loc.put("a/b.txt", b"hello".to_vec()).await.unwrap();
        let listed = loc.list_all().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(loc.relative(&listed[0].location).unwrap(), "a/b.txt");
        assert_eq!(
            loc.get_opt("a/b.txt").await.unwrap().unwrap().as_ref(),
            b"hello"
        );
        assert!(loc.get_opt("missing").await.unwrap().is_none());
        loc.delete(&listed[0].location).await.unwrap();
        loc.delete(&listed[0].location).await.unwrap();
        assert!(loc.list_all().await.unwrap().is_empty());
    }
}
