//! Writing a planned dataset as hive-partitioned Parquet into a [`Location`], atomically.
//!
//! The protocol, which every TADS writer follows:
//! 1. refuse a non-empty target unless asked to overwrite, and even then only a TADS dataset;
//! 2. put `_tads_in_progress.json`; with `--overwrite`, drop the old manifest, then the old files;
//! 3. encode each file in memory and put it whole (local files are staged and renamed), so no
//!    reader ever sees a partial Parquet file;
//! 4. put `_manifest.json` last, then remove the marker.
//!
//! A reader that finds no manifest, or finds the marker, is looking at an unfinished dataset.
//! If a run fails it removes what it wrote; if it is killed, the marker stays behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tads_store::{Location, Output};

use crate::config::GenConfig;
use crate::plan::{FileTask, Plan, TARGET_ROWS_PER_FILE};
use crate::{Error, Result};

pub use tads_store::{IN_PROGRESS, MANIFEST, NoProgress, Progress};

/// How to write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Replace an existing TADS dataset at the target.
    pub overwrite: bool,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Remove a lock left at the target first (its writer is known to be gone).
    pub break_lock: bool,
}

/// One written file, as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path below the dataset root.
    pub path: String,
    /// Value of the `date` partition.
    pub date: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// `_manifest.json`: what a finished dataset holds. Written last; its presence means complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `tads-dataset`.
    pub kind: String,
    /// Version of this manifest format.
    pub format_version: u32,
    /// `ds-` and 16 hex digits of the SHA-256 of the generator arguments: equal arguments,
    /// equal id (and equal rows).
    pub dataset_id: String,
    /// TADS version that wrote it.
    pub tads_version: String,
    /// When the run finished.
    pub created_at: DateTime<Utc>,
    /// Every argument of the generator, seed included.
    pub arguments: GenConfig,
    /// The seed (also in `arguments`).
    pub seed: u64,
    /// Total rows.
    pub rows: u64,
    /// Number of hosts.
    pub hosts: u32,
    /// First timestamp.
    pub start: DateTime<Utc>,
    /// Last timestamp.
    pub end: DateTime<Utc>,
    /// Hive partition columns, outermost first.
    pub partitioning: Vec<String>,
    /// Number of injected events.
    pub events: u64,
    /// Injected events by anomaly type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Rows labelled anomalous.
    pub anomalous_rows: u64,
    /// Every data file.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Reads and checks the manifest at `location`, or `None` if there is none.
    pub async fn read(location: &Location) -> Result<Option<Self>> {
        let Some(bytes) = location.get_opt(MANIFEST).await? else {
            return Ok(None);
        };
        let m: Self = serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
            location: location.to_string(),
            message: e.to_string(),
        })?;
        if m.kind != "tads-dataset" {
            return Err(Error::Manifest {
                location: location.to_string(),
                message: format!("kind is `{}`, not `tads-dataset`", m.kind),
            });
        }
        Ok(Some(m))
    }
}

/// The id of the dataset `config` generates.
pub fn dataset_id(config: &GenConfig) -> String {
    let json = serde_json::to_vec(config).unwrap_or_default();
    let digest = Sha256::digest(&json);
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("ds-{hex}")
}

/// The Parquet settings of generated data of `profile`: zstd, about 1M-row row groups,
/// dictionaries only for the string columns, delta-encoded timestamps.
pub fn writer_properties(profile: crate::Profile) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(TARGET_ROWS_PER_FILE as usize))
        .set_dictionary_enabled(false)
        .set_created_by(format!("tads {}", env!("CARGO_PKG_VERSION")))
        .set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED);
    for col in ["host_id", "region", "project_id", "anomaly_type"] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(col), true);
    }
    for m in profile.metrics() {
        b = b.set_column_encoding(ColumnPath::from(m.column()), Encoding::BYTE_STREAM_SPLIT);
    }
    b.build()
}

/// Generates the rows of one file and encodes them as Parquet in memory.
pub fn encode_file(plan: &Plan, task: &FileTask, progress: &dyn Progress) -> Result<Vec<u8>> {
    let profile = plan.config.profile;
    let schema = crate::plan::schema(profile);
    let capacity = (task.rows as usize).saturating_mul(70);
    let mut writer = ArrowWriter::try_new(
        Vec::with_capacity(capacity),
        schema,
        Some(writer_properties(profile)),
    )
    .map_err(|e| Error::Internal(format!("parquet writer: {e}")))?;
    for host in task.hosts.0..task.hosts.1 {
        let batch = plan.host_batch(host, task.points)?;
        writer
            .write(&batch)
            .map_err(|e| Error::Internal(format!("encoding {}: {e}", task.path)))?;
        progress.rows(batch.num_rows() as u64);
    }
    writer
        .into_inner()
        .map_err(|e| Error::Internal(format!("encoding {}: {e}", task.path)))
}

/// What a finished write reports.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    /// The manifest as written.
    pub manifest: Manifest,
    /// Wall time of the whole write.
    pub elapsed: std::time::Duration,
}

impl WriteSummary {
    /// Rows per second over the whole write.
    pub fn rows_per_second(&self) -> f64 {
        self.manifest.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bytes of Parquet written.
    pub fn bytes(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.bytes).sum()
    }
}

/// Writes the dataset `plan` describes into `location` and returns its manifest.
pub async fn write_dataset(
    plan: Arc<Plan>,
    location: &Location,
    options: &WriteOptions,
    progress: Arc<dyn Progress>,
) -> Result<WriteSummary> {
    let started = Instant::now();
    let (id, output) = begin(&plan, location, options, "tads generate").await?;
    let written = write_files(
        Arc::clone(&plan),
        Arc::clone(&output),
        options.threads,
        progress,
    );
    let files = match written.await {
        Ok(files) => files,
        Err(e) => {
            output.abort().await;
            return Err(e);
        }
    };

    let points = plan.config.points_per_host();
    finish(&output, manifest(&plan, id, points, files), started).await
}

/// Takes the dataset's output for `writer` (see [`Output::begin`]); the dataset's id with it.
pub(crate) async fn begin(
    plan: &Plan,
    location: &Location,
    options: &WriteOptions,
    writer: &str,
) -> Result<(String, Arc<Output>)> {
    let id = dataset_id(&plan.config);
    let output =
        Output::begin(location, options.overwrite, options.break_lock, writer, &id).await?;
    Ok((id, Arc::new(output)))
}

/// Puts `manifest` last: the dataset is complete.
pub(crate) async fn finish(
    output: &Output,
    manifest: Manifest,
    started: Instant,
) -> Result<WriteSummary> {
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    output.finish(json).await?;
    Ok(WriteSummary {
        manifest,
        elapsed: started.elapsed(),
    })
}

/// The manifest of the first `points` points of every host in `files` (every point: the
/// whole dataset; fewer: what `generate --follow` wrote before it stopped).
pub(crate) fn manifest(plan: &Plan, id: String, points: u64, files: Vec<FileEntry>) -> Manifest {
    let c = &plan.config;
    let last = c.start_micros() + (points.max(1) as i64 - 1) * c.interval.micros();
    let events: Vec<_> = plan
        .hosts
        .iter()
        .flat_map(|h| &h.events)
        .filter(|e| e.start < points)
        .collect();
    let mut by_type = std::collections::BTreeMap::new();
    for t in c.profile.kinds() {
        by_type.insert(t.as_str().to_string(), 0u64);
    }
    for e in &events {
        *by_type.entry(e.kind.as_str().to_string()).or_default() += 1;
    }
    Manifest {
        kind: "tads-dataset".into(),
        format_version: 1,
        dataset_id: id,
        tads_version: env!("CARGO_PKG_VERSION").into(),
        created_at: Utc::now(),
        arguments: c.clone(),
        seed: c.seed,
        rows: files.iter().map(|f| f.rows).sum(),
        hosts: c.hosts,
        start: c.start,
        end: DateTime::from_timestamp_micros(last).unwrap_or(c.start),
        partitioning: vec!["date".into()],
        events: events.len() as u64,
        events_by_type: by_type,
        anomalous_rows: events.iter().map(|e| e.end().min(points) - e.start).sum(),
        files,
    }
}

/// Encodes the files on a rayon pool and stores each as soon as it is ready. At most one encoded
/// file per worker is held in memory at a time.
async fn write_files(
    plan: Arc<Plan>,
    output: Arc<Output>,
    threads: usize,
    progress: Arc<dyn Progress>,
) -> Result<Vec<FileEntry>> {
    let handle = tokio::runtime::Handle::current();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("tads-gen-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("thread pool: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let failed = AtomicBool::new(false);
        let results: Vec<Result<FileEntry>> = pool.install(|| {
            plan.files
                .par_iter()
                .map(|task| {
                    if failed.load(Ordering::Relaxed) {
                        return Err(Error::Cancelled);
                    }
                    let result = (|| {
                        let bytes = encode_file(&plan, task, progress.as_ref())?;
                        let len = bytes.len() as u64;
                        handle.block_on(output.put(&task.path, bytes))?;
                        progress.file_done();
                        Ok(FileEntry {
                            path: task.path.clone(),
                            date: task.date.clone(),
                            rows: task.rows,
                            bytes: len,
                        })
                    })();
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    result
                })
                .collect()
        });
        // Report the first real failure, not the cancellations it caused.
        let mut files = Vec::with_capacity(results.len());
        let mut first_error = None;
        for r in results {
            match r {
                Ok(f) => files.push(f),
                Err(Error::Cancelled) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(files), Err)
    })
    .await
    .map_err(|e| Error::Internal(format!("writer thread: {e}")))?
}
