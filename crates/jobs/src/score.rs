//! `tads score`: every row of a dataset with its anomaly scores, as Parquet in the input's
//! partitioning.
//!
//! The job is one DataFusion plan per input file, written to
//! `<out>/scored/<the input file's relative path>`. A file whose columns are the dataset's keeps
//! its column chunks as they are: a one-partition plan `SELECT pca_scores(…) FROM <file>`
//! decodes only the metrics, and each of the file's row groups is copied with its score columns
//! added (module `passthrough`). Otherwise (a sharded run, or a file with other columns) the
//! plan is `SELECT *, pca_scores(…) FROM <file> [WHERE shard_of(host_id, n) = i]` and every
//! column is encoded again. Files run concurrently (one per core); an output file rolls over
//! every [`ROWS_PER_FILE`] rows (at a row group boundary when chunks are kept), so memory is
//! bounded by the file size and the concurrency, never by the dataset.
//! `<out>/_manifest.json` is written last (see [`tads_store::output`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use serde::{Deserialize, Serialize};
use tads_sql::ModelRegistry;
use tads_sql::functions::{ModelFunction, ModelScore};
use tads_sql::registry::Loaded;
use tads_store::{IN_PROGRESS, Location, Output, Progress};

use crate::alerts::{AlertQuery, AlertSummary, Alerts};
use crate::config::ScoreConfig;
use crate::{Error, Result, alerts, ident, parquet_out, passthrough};

/// Output files roll over after this many rows.
pub const ROWS_PER_FILE: usize = 1 << 20;

/// The columns `tads score` adds to every row, in order: the fields of `pca_scores` (the fused
/// score last) and the alert the row belongs to.
pub const SCORE_COLUMNS: [&str; 6] = [
    tads_sql::functions::ALL_FIELDS[0],
    tads_sql::functions::ALL_FIELDS[1],
    tads_sql::functions::ALL_FIELDS[2],
    tads_sql::functions::ALL_FIELDS[3],
    tads_sql::functions::ALL_FIELDS[4],
    "alert_id",
];

/// The struct column of `pca_scores` in the scoring plan, split into columns before writing.
const SCORES_STRUCT: &str = "__tads_scores";

/// Where the alerts go, below the output root.
pub const ALERTS_FILE: &str = "alerts/alerts.parquet";

/// The memory DataFusion may hold for the alert pass's sort before it spills to disk.
pub const SORT_MEMORY: usize = 1 << 30;

/// `--shard i/n`: the rows whose key falls in shard `index` of `count` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, 1 to `count`.
    pub index: u32,
    /// How many shards the data is split into.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}` is not a shard i/n with 1 <= i <= n (e.g. 2/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What to score.
#[derive(Debug, Clone)]
pub struct ScoreJob {
    /// The input dataset.
    pub data: Location,
    /// Where models live.
    pub models: Location,
    /// The model's name.
    pub model: String,
    /// Where the output goes: `<out>/scored/…` and `<out>/_manifest.json`.
    pub out: Location,
    /// Score only this shard of the keys.
    pub shard: Option<Shard>,
    /// The column whose values are sharded (`host_id`).
    pub shard_by: String,
    /// Replace an existing TADS output at `out`.
    pub overwrite: bool,
    /// Remove a lock left at `out` first (its writer is known to be gone).
    pub break_lock: bool,
    /// Files scored at once (0: one per core).
    pub concurrency: usize,
    /// Fusion, alert and severity settings.
    pub config: ScoreConfig,
    /// The run's id (default: a fresh one, see [`new_run_id`]).
    pub run_id: Option<String>,
}

/// One scored output file, as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredFile {
    /// Path below the output root (`scored/date=…/part-….parquet`).
    pub path: String,
    /// The input file it came from, relative to the input.
    pub source: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// The model a run scored with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Its name.
    pub name: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Its features, in order.
    pub features: Vec<String>,
    /// For a group of models: the column whose values pick a row's member.
    pub group_by: Option<String>,
}

impl ModelRef {
    /// The model (or group) `load_model` found.
    fn of(loaded: &Loaded) -> Self {
        match loaded {
            Loaded::Single(m) => Self {
                name: m.artifact.name.clone(),
                fingerprint: m.artifact.fingerprint.clone(),
                features: m.artifact.features.clone(),
                group_by: None,
            },
            Loaded::Group(g) => Self {
                name: g.name.clone(),
                fingerprint: g.fingerprint.clone(),
                features: g.features.clone(),
                group_by: Some(g.group_by.clone()),
            },
        }
    }

    /// The SQL expression that names each row's model: the name, or for a group
    /// `concat('<name>/', CAST("<group_by>" AS VARCHAR))`.
    pub fn sql(&self) -> String {
        let name = self.name.replace('\'', "''");
        match &self.group_by {
            None => format!("'{name}'"),
            Some(col) => format!("concat('{name}/', CAST({} AS VARCHAR))", ident(col)),
        }
    }
}

/// `<out>/_manifest.json` of a score run. Written last; its presence means complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreManifest {
    /// Always `tads-score`.
    pub kind: String,
    /// Version of this manifest format.
    pub format_version: u32,
    /// This run's id.
    pub run_id: String,
    /// TADS version that wrote it.
    pub tads_version: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When the manifest was written.
    pub finished_at: DateTime<Utc>,
    /// The input dataset's URL.
    pub data: String,
    /// The model.
    pub model: ModelRef,
    /// The shard scored, if only one.
    pub shard: Option<Shard>,
    /// The sharded column, when sharded.
    pub shard_by: Option<String>,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows: u64,
    /// Rows written without scores (a metric NULL or not finite).
    pub rows_unscored: u64,
    /// The columns added to each row.
    pub columns: Vec<String>,
    /// The effective fusion, alert and severity settings.
    pub config: ScoreConfig,
    /// The alerts written, when alerts were on.
    pub alerts: Option<AlertSummary>,
    /// Why there are no alerts although they were not turned off (the data lacks the default
    /// key or time column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts_skipped: Option<String>,
    /// Keys whose level moved away from the training level (with `drift.baseline =
    /// "previous_day"`): each reported once, with the metric that moved most.
    #[serde(default)]
    pub drift: Vec<crate::drift::DriftNotice>,
    /// The output files, sorted by path.
    pub files: Vec<ScoredFile>,
}

impl ScoreManifest {
    /// Reads the manifest of a score output; `None` if there is none.
    pub async fn read(out: &Location) -> Result<Option<Self>> {
        let Some(bytes) = out.get_opt(tads_store::MANIFEST).await? else {
            return Ok(None);
        };
        // The kind first: another TADS output's manifest is named as such, not as a bad field.
        let kind = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(String::from));
        if let Some(kind) = kind.filter(|k| k != "tads-score") {
            return Err(Error::Data(format!(
                "{out}{}: kind is `{kind}`, not a score output",
                tads_store::MANIFEST
            )));
        }
        let manifest: Self = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Data(format!("{out}{}: {e}", tads_store::MANIFEST)))?;
        Ok(Some(manifest))
    }
}

/// What a finished score run reports.
#[derive(Debug)]
pub struct ScoreReport {
    /// The manifest as written.
    pub manifest: ScoreManifest,
    /// The alerts written (empty without alerts).
    pub alerts: Vec<crate::alerts::Alert>,
    /// Wall time.
    pub elapsed: Duration,
}

impl ScoreReport {
    /// Input rows per second.
    pub fn rows_per_second(&self) -> f64 {
        self.manifest.rows_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bytes of Parquet written.
    pub fn bytes(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.bytes).sum()
    }
}

/// One input file.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub(crate) meta: ObjectMeta,
    pub(crate) relative: String,
    pub(crate) rows: u64,
    /// Its footer.
    pub(crate) footer: Arc<ParquetMetaData>,
}

impl Unit {
    /// What an output chunk of this file will likely take (the input's bytes per row plus about
    /// 32 for the scores), to size its buffer so it is not grown by copying as it is encoded.
    pub(crate) fn chunk_capacity(&self) -> usize {
        let rows = (self.rows as usize).clamp(1, ROWS_PER_FILE);
        (self.meta.size as usize / (self.rows as usize).max(1) + 32)
            .saturating_mul(rows)
            .min(1 << 30)
    }

    /// Stores the encoded output chunk `index` of this file, which holds `rows` rows.
    pub(crate) async fn store_chunk(
        &self,
        output: &Output,
        bytes: Vec<u8>,
        rows: usize,
        index: usize,
    ) -> Result<ScoredFile> {
        let path = chunk_path(&self.relative, index);
        let len = bytes.len() as u64;
        output.put(&path, bytes).await?;
        Ok(ScoredFile {
            path,
            source: self.relative.clone(),
            rows: rows as u64,
            bytes: len,
        })
    }
}

/// The Parquet files of the input, in path order, with their row counts.
pub(crate) async fn input_files(data: &Location) -> Result<Vec<(ObjectMeta, String)>> {
    let objects = data.list_all().await?;
    let present: Vec<String> = objects
        .iter()
        .filter_map(|o| data.relative(&o.location))
        .collect();
    tads_store::check_finished(data, &present)
        .await
        .map_err(|e| Error::Input(e.to_string()))?;
    let hidden = |rel: &str| {
        rel.split('/')
            .any(|p| p.starts_with('_') || p.starts_with('.'))
    };
    let mut files: Vec<(ObjectMeta, String)> = match data.file() {
        Some(name) => objects
            .into_iter()
            .filter_map(|o| {
                let rel = data.relative(&o.location)?;
                (rel == name).then_some((o, rel))
            })
            .collect(),
        None => {
            if objects
                .iter()
                .any(|o| data.relative(&o.location).as_deref() == Some(IN_PROGRESS))
            {
                return Err(Error::Input(format!(
                    "{data}: is not a finished dataset ({IN_PROGRESS} is present: a writer is at work or was killed)"
                )));
            }
            objects
                .into_iter()
                .filter_map(|o| {
                    let rel = data.relative(&o.location)?;
                    (rel.ends_with(".parquet") && !hidden(&rel)).then_some((o, rel))
                })
                .collect()
        }
    };
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

/// A Parquet file's footer (two small reads).
async fn footer(data: &Location, meta: &ObjectMeta) -> Result<ParquetMetaData> {
    let bad = |m: String| {
        Error::Data(format!(
            "{}: not a readable Parquet file ({m})",
            meta.location
        ))
    };
    let store = data.store();
    let size = meta.size;
    if size < 12 {
        return Err(bad(format!("{size} bytes")));
    }
    let read = |range: std::ops::Range<u64>| async move {
        store
            .get_range(&meta.location, range)
            .await
            .map_err(|e| bad(tads_store::describe_store_error(&e)))
    };
    let tail = read(size - 8..size).await?;
    if &tail[4..] != b"PAR1" {
        return Err(bad("no PAR1 footer".into()));
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len + 12 > size {
        return Err(bad(format!("footer of {len} bytes in a file of {size}")));
    }
    let footer = read(size - 8 - len..size - 8).await?;
    ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| bad(e.to_string()))
}

/// A fresh run id: time and a hash of the job, so concurrent shards differ.
pub fn new_run_id(started: DateTime<Utc>, job: &ScoreJob) -> String {
    let key = format!(
        "{}|{}|{}|{:?}|{}",
        started.timestamp_nanos_opt().unwrap_or_default(),
        job.data.data_url(),
        job.model,
        job.shard,
        std::process::id()
    );
    format!(
        "run-{}-{:08x}",
        started.format("%Y%m%dT%H%M%SZ"),
        tads_sql::functions::fnv1a64(key.as_bytes()) as u32
    )
}

/// The model's columns, checked against the input schema.
fn check_columns(schema: &Schema, model: &ModelRef, job: &ScoreJob) -> Result<()> {
    let needed = model.features.iter().chain(model.group_by.iter());
    for name in needed {
        let field = schema.field_with_name(name).map_err(|_| {
            Error::Input(format!(
                "{}: has no column `{name}`, which model `{}` needs (its features: {}{})",
                job.data,
                model.name,
                model.features.join(", "),
                model
                    .group_by
                    .as_ref()
                    .map_or(String::new(), |g| format!("; grouped by {g}"))
            ))
        })?;
        if model.group_by.as_ref() == Some(name) {
            continue;
        }
        if !field.data_type().is_numeric() {
            return Err(Error::Input(format!(
                "{}: column `{name}` is {}, not numeric",
                job.data,
                field.data_type()
            )));
        }
    }
    for name in SCORE_COLUMNS {
        if schema.field_with_name(name).is_ok() {
            return Err(Error::Input(format!(
                "{}: already has a column `{name}` (is it the output of a score run?)",
                job.data
            )));
        }
    }
    if job.shard.is_some() && schema.field_with_name(&job.shard_by).is_err() {
        return Err(Error::Input(format!(
            "--shard-by: {} has no column `{}`",
            job.data, job.shard_by
        )));
    }
    Ok(())
}

/// Scores the dataset and writes the output.
pub async fn score(job: &ScoreJob, progress: Arc<dyn Progress>) -> Result<ScoreReport> {
    let clock = Instant::now();
    let started_at = Utc::now();
    if job.data.overlaps(&job.out) {
        return Err(Error::Input(format!(
            "--out {}: overlaps the input {}; write the scores somewhere else",
            job.out, job.data
        )));
    }
    job.config.validate().map_err(Error::Input)?;
    let registry = ModelRegistry::new();
    let model = ModelRef::of(&registry.load_model(&job.models, &job.model).await?);
    let ctx = tads_sql::session_with_memory_limit(SORT_MEMORY)?;
    tads_sql::register_all(&ctx, &registry)?;
    ctx.register_udf(ScalarUDF::new_from_impl(ModelFunction::fused(
        registry.clone(),
        job.config.fusion,
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(
        ModelFunction::new(ModelScore::All, registry.clone()).with_fusion(job.config.fusion),
    ));
    // The input's manifest as it was before reading: checked again before the output's
    // manifest is written, so a dataset replaced while it was read is never scored silently.
    let input_manifest = input_state(&job.data).await?;
    let partitions = tads_sql::register_dataset(&ctx, "input", &job.data).await?;
    let table_schema = ctx.table("input").await?.schema().as_arrow().clone();
    // The files hold every column but the hive partition columns (those are in the paths).
    let file_schema: SchemaRef = Arc::new(Schema::new(
        table_schema
            .fields()
            .iter()
            .filter(|f| !partitions.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ));
    check_columns(&table_schema, &model, job)?;
    if job.shard.is_some() && partitions.contains(&job.shard_by) {
        return Err(Error::Input(format!(
            "--shard-by: `{}` is a partition column; shard by a column inside the files",
            job.shard_by
        )));
    }
    let rules = &job.config.alerts;
    let mut alerts_skipped = None;
    let defaults = crate::config::AlertRules::default();
    // The default columns are a guess about the data: without them, score without alerts and
    // say why. Columns the user named must be there.
    let guessed = rules.key == defaults.key && rules.time == defaults.time;
    let with_alerts = rules.enabled
        && match alerts::check_columns(&table_schema, rules, &job.data.to_string(), !guessed) {
            Ok(()) => true,
            Err(e) if guessed => {
                alerts_skipped = Some(format!("no alerts: {e}"));
                false
            }
            Err(e) => return Err(e),
        };
    if with_alerts {
        for (what, col) in [("key", &rules.key), ("time", &rules.time)] {
            if partitions.contains(col) {
                return Err(Error::Input(format!(
                    "alerts.{what}: `{col}` is a partition column of {}; name a column inside the files",
                    job.data
                )));
            }
        }
    }
    if let Some(g) = model.group_by.as_ref().filter(|g| partitions.contains(g)) {
        return Err(Error::Input(format!(
            "model `{}` is grouped by `{g}`, a partition column of {}; score data whose files hold it",
            model.name, job.data
        )));
    }

    let files = input_files(&job.data).await?;
    let units: Vec<Unit> = futures::stream::iter(files)
        .map(|(meta, relative)| async move {
            let footer = footer(&job.data, &meta).await?;
            Ok::<_, Error>(Unit {
                meta,
                relative,
                rows: footer.file_metadata().num_rows().max(0) as u64,
                footer: Arc::new(footer),
            })
        })
        .buffered(16)
        .try_collect()
        .await?;
    let rows_in: u64 = units.iter().map(|u| u.rows).sum();
    progress.total(rows_in, units.len() as u64);

    let m = model.sql();
    let filter = match job.shard {
        Some(s) => format!(
            " WHERE shard_of({}, {}) = {}",
            ident(&job.shard_by),
            s.count,
            s.index
        ),
        None => String::new(),
    };
    let (metrics, drift) = crate::drift::metrics(
        job,
        &ctx,
        &registry,
        &model,
        &table_schema,
        &partitions,
        &filter,
    )
    .await?;
    // One pca_scores() call: one standardization and projection per row for all five scores.
    // Its struct is split into columns in Rust (`write_unit`), not by `s['field']` in SQL,
    // which DataFusion would evaluate as one call per field.
    let select =
        format!("SELECT *, pca_scores({m}, {metrics}) AS {SCORES_STRUCT} FROM {{table}}{filter}");
    // The same without the input's columns, for files whose column chunks are kept as they are
    // (`passthrough`); with alerts, the key and time that find each row's alert.
    let key_time = if with_alerts {
        format!(", {}, {}", ident(&rules.key), ident(&rules.time))
    } else {
        String::new()
    };
    let select_scores =
        format!("SELECT pca_scores({m}, {metrics}) AS {SCORES_STRUCT}{key_time} FROM {{table}}");

    let run_id = job
        .run_id
        .clone()
        .unwrap_or_else(|| new_run_id(started_at, job));
    let output = Arc::new(
        Output::begin(
            &job.out,
            job.overwrite,
            job.break_lock,
            "tads score",
            &run_id,
        )
        .await?,
    );
    let found = if with_alerts {
        progress.phase("finding alerts");
        let query = AlertQuery {
            table: "input",
            model_sql: &m,
            model_name: &model.name,
            metrics: &metrics,
            filter: &filter,
            region: table_schema.field_with_name("region").is_ok(),
            project: table_schema.field_with_name("project_id").is_ok(),
        };
        match alerts::find(
            &ctx,
            &query,
            rules,
            &job.config.severity,
            Arc::clone(&progress),
        )
        .await
        {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => {
                output.abort().await;
                return Err(e);
            }
        }
    } else {
        None
    };
    progress.phase("scoring");
    // A session whose plans have one partition, so that a file's rows come back in file order.
    let mut state = ctx.state();
    let options = state.config_mut().options_mut();
    options.execution.target_partitions = 1;
    options.optimizer.repartition_file_scans = false;
    let ordered = SessionContext::new_with_state(state);
    let shared = Arc::new(Shared {
        ctx,
        ordered,
        select_scores,
        data: job.data.clone(),
        file_schema,
        select,
        output: Arc::clone(&output),
        progress,
        sharded: job.shard.is_some(),
        alerts: found
            .clone()
            .map(|a| (a, rules.key.clone(), rules.time.clone())),
        next_table: AtomicU64::new(0),
    });
    let concurrency = if job.concurrency == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        job.concurrency
    };
    let result: Result<Vec<UnitResult>> = futures::stream::iter(units.into_iter().map(|unit| {
        let shared = Arc::clone(&shared);
        async move {
            tokio::spawn(async move { score_unit(&shared, &unit).await })
                .await
                .map_err(|e| Error::Data(format!("a scoring task failed: {e}")))?
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect()
    .await;
    let results = match result {
        Ok(r) => r,
        Err(e) => {
            output.abort().await;
            return Err(e);
        }
    };

    let mut files: Vec<ScoredFile> = results.iter().flat_map(|r| r.files.clone()).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let summary = match &found {
        Some(a) => match write_alerts(&output, a, &model, &run_id).await {
            Ok(s) => Some(s),
            Err(e) => {
                output.abort().await;
                return Err(e);
            }
        },
        None => None,
    };
    let manifest = ScoreManifest {
        kind: "tads-score".into(),
        format_version: 2,
        run_id,
        tads_version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        finished_at: Utc::now(),
        data: job.data.data_url().to_string(),
        model,
        shard: job.shard,
        shard_by: job.shard.map(|_| job.shard_by.clone()),
        rows_in,
        rows: files.iter().map(|f| f.rows).sum(),
        rows_unscored: results.iter().map(|r| r.unscored).sum(),
        columns: SCORE_COLUMNS.iter().map(|c| c.to_string()).collect(),
        config: job.config.clone(),
        alerts: summary,
        alerts_skipped,
        drift,
        files,
    };
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Data(format!("manifest: {e}")))?;
    match input_state(&job.data).await {
        Ok(now) if now == input_manifest => {}
        Ok(_) => {
            output.abort().await;
            return Err(Error::Data(format!(
                "{}: the input changed while it was being scored (its manifest was replaced or removed, or a writer is at work); score it again when it is finished",
                job.data
            )));
        }
        Err(e) => {
            output.abort().await;
            return Err(e);
        }
    }
    if let Err(e) = output.finish(json).await {
        output.abort().await;
        return Err(e.into());
    }
    drop(shared);
    let alerts = found
        .and_then(|a| Arc::try_unwrap(a).ok())
        .map(|a| a.list)
        .unwrap_or_default();
    Ok(ScoreReport {
        manifest,
        alerts,
        elapsed: clock.elapsed(),
    })
}

/// A dataset folder's manifest and whether a writer's marker is there (nothing for a single
/// file): equal before and after a read when nobody wrote in between.
async fn input_state(data: &Location) -> Result<Option<(Option<bytes::Bytes>, bool)>> {
    if data.file().is_some() {
        return Ok(None);
    }
    let manifest = data.get_opt(tads_store::MANIFEST).await?;
    let marker = data.get_opt(tads_store::IN_PROGRESS).await?.is_some();
    Ok(Some((manifest, marker)))
}

/// What every unit needs.
pub(crate) struct Shared {
    ctx: SessionContext,
    /// A session running plans in one partition (rows in file order).
    pub(crate) ordered: SessionContext,
    pub(crate) data: Location,
    /// The columns of the dataset's files (the table's, without its partition columns).
    pub(crate) file_schema: SchemaRef,
    select: String,
    /// The scores (and with alerts the key and time) alone, in `ordered`.
    pub(crate) select_scores: String,
    pub(crate) output: Arc<Output>,
    pub(crate) progress: Arc<dyn Progress>,
    pub(crate) sharded: bool,
    /// The run's alerts, and the key and time columns that find a row's alert.
    pub(crate) alerts: Option<(Arc<Alerts>, String, String)>,
    next_table: AtomicU64,
}

/// What scoring one input file wrote.
pub(crate) struct UnitResult {
    pub(crate) files: Vec<ScoredFile>,
    pub(crate) unscored: u64,
}

/// `part-00003.parquet` → `part-00003.2.parquet` for the third output chunk.
fn chunk_path(relative: &str, chunk: usize) -> String {
    let stem = relative.strip_suffix(".parquet").unwrap_or(relative);
    if chunk == 0 {
        format!("scored/{stem}.parquet")
    } else {
        format!("scored/{stem}.{chunk}.parquet")
    }
}

async fn score_unit(shared: &Shared, unit: &Unit) -> Result<UnitResult> {
    let url = shared
        .data
        .store_url()
        .join(unit.meta.location.as_ref())
        .map_err(|e| Error::Data(format!("{}: {e}", unit.meta.location)))?;
    let url = ListingTableUrl::parse(url.as_str())?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::clone(&shared.file_schema));
    let table = format!(
        "__tads_unit_{}",
        shared.next_table.fetch_add(1, Ordering::Relaxed)
    );
    // Every row of a file whose columns are the dataset's: keep its column chunks.
    let keep = !shared.sharded && passthrough::fits(&shared.file_schema, unit);
    let ctx = if keep { &shared.ordered } else { &shared.ctx };
    ctx.register_table(&table, Arc::new(ListingTable::try_new(config)?))?;
    let result = if keep {
        passthrough::write_unit(shared, unit, &table).await
    } else {
        write_unit(shared, unit, &table).await
    };
    let _ = ctx.deregister_table(&table);
    let result = result?;
    let written: u64 = result.files.iter().map(|f| f.rows).sum();
    if shared.sharded {
        shared.progress.rows(unit.rows.saturating_sub(written));
    }
    shared.progress.file_done();
    Ok(result)
}

async fn write_unit(shared: &Shared, unit: &Unit, table: &str) -> Result<UnitResult> {
    let df = shared
        .ctx
        .sql(&shared.select.replace("{table}", table))
        .await?;
    let scored: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    // The input's columns, then the fields of the scores struct (the plan's last column), then
    // alert_id.
    let (last, input_fields) = scored
        .fields()
        .split_last()
        .ok_or_else(|| Error::Data("the scoring plan has no columns".into()))?;
    let DataType::Struct(score_fields) = last.data_type() else {
        return Err(Error::Data(format!(
            "the scoring plan ends in {}, not the scores struct",
            last.data_type()
        )));
    };
    let mut fields: Vec<_> = input_fields.to_vec();
    fields.extend(score_fields.iter().cloned());
    fields.push(Arc::new(Field::new("alert_id", DataType::Utf8, true)));
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let columns = match &shared.alerts {
        Some((alerts, key, time)) => Some((
            alerts,
            scored
                .index_of(key)
                .map_err(|e| Error::Data(e.to_string()))?,
            scored
                .index_of(time)
                .map_err(|e| Error::Data(e.to_string()))?,
        )),
        None => None,
    };
    let props = parquet_out::writer_properties(&schema);
    let mut stream = df.execute_stream().await?;
    let mut files = Vec::new();
    let mut unscored = 0u64;
    let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
    let mut rows_in_chunk = 0usize;
    let spe = schema
        .index_of("pca_spe")
        .map_err(|e| Error::Data(e.to_string()))?;
    let flush = |writer: ArrowWriter<Vec<u8>>, rows: usize, chunk: usize| async move {
        let bytes = writer
            .into_inner()
            .map_err(|e| Error::Data(format!("encoding Parquet: {e}")))?;
        unit.store_chunk(&shared.output, bytes, rows, chunk).await
    };
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        let ids = match columns {
            Some((alerts, key, time)) => alerts.ids_for(batch.column(key), batch.column(time))?,
            None => new_null_array(&DataType::Utf8, batch.num_rows()),
        };
        let (scores, input) = batch
            .columns()
            .split_last()
            .ok_or_else(|| Error::Data("a scored batch without columns".into()))?;
        let mut all = input.to_vec();
        let scores = scores
            .as_struct_opt()
            .ok_or_else(|| Error::Data("the scores column is not a struct".into()))?;
        all.extend(scores.columns().iter().cloned());
        all.push(ids);
        let batch = RecordBatch::try_new(Arc::clone(&schema), all)
            .map_err(|e| Error::Data(format!("scored batch: {e}")))?;
        unscored += batch.column(spe).null_count() as u64;
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(
                ArrowWriter::try_new(
                    Vec::with_capacity(unit.chunk_capacity()),
                    Arc::clone(&schema),
                    Some(props.clone()),
                )
                .map_err(|e| Error::Data(format!("encoding Parquet: {e}")))?,
            ),
        };
        w.write(&batch)
            .map_err(|e| Error::Data(format!("encoding Parquet: {e}")))?;
        rows_in_chunk += batch.num_rows();
        if !shared.sharded {
            shared.progress.rows(batch.num_rows() as u64);
        }
        if rows_in_chunk >= ROWS_PER_FILE
            && let Some(w) = writer.take()
        {
            files.push(flush(w, rows_in_chunk, files.len()).await?);
            rows_in_chunk = 0;
        }
    }
    if let Some(w) = writer.take() {
        files.push(flush(w, rows_in_chunk, files.len()).await?);
    }
    Ok(UnitResult { files, unscored })
}

/// Writes the alerts file and returns its summary.
async fn write_alerts(
    output: &Output,
    alerts: &Alerts,
    model: &ModelRef,
    run_id: &str,
) -> Result<AlertSummary> {
    let batch = alerts.to_batch(&model.name, &model.fingerprint, run_id)?;
    let props = parquet_out::writer_properties(&batch.schema());
    let encode = |e: parquet::errors::ParquetError| Error::Data(format!("encoding alerts: {e}"));
    let mut writer =
        ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).map_err(encode)?;
    writer.write(&batch).map_err(encode)?;
    output
        .put(ALERTS_FILE, writer.into_inner().map_err(encode)?)
        .await?;
    Ok(alerts.summary(ALERTS_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_nonsense() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["0/4", "5/4", "x/2", "3", "1/0", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn chunks_keep_the_input_path() {
        assert_eq!(
            chunk_path("date=2026-01-01/part-00003.parquet", 0),
            "scored/date=2026-01-01/part-00003.parquet"
        );
        assert_eq!(
            chunk_path("date=2026-01-01/part-00003.parquet", 2),
            "scored/date=2026-01-01/part-00003.2.parquet"
        );
    }
}
