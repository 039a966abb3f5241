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

mod cluster;
pub(crate) mod input;
mod manifest;
mod shard;
mod write;

pub use manifest::{ModelRef, ScoreManifest, ScoredFile};
pub use shard::Shard;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use tads_sql::ModelRegistry;
use tads_sql::functions::{ModelFunction, ModelScore};
use tads_store::{Location, Output, Progress};

use crate::alerts::AlertQuery;
use crate::config::ScoreConfig;
use crate::{Error, Result, alerts, ident};
pub(crate) use input::Unit;
pub(crate) use write::Shared;
pub(crate) use write::UnitResult;

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
    /// Files scored at once, and the alert pass's partitions (0: one per core).
    pub concurrency: usize,
    /// Bytes the alert pass's sort may hold before it spills to disk (0: [`SORT_MEMORY`]).
    pub memory: usize,
    /// Fusion, alert and severity settings.
    pub config: ScoreConfig,
    /// The run's id (default: a fresh one, see [`new_run_id`]).
    pub run_id: Option<String>,
    /// A round of `tads watch`: only these files, with alert state carried in and out.
    pub follow: Option<Follow>,
    /// Run the plans on this Ballista cluster of `tads cluster` processes (`df://host:port`):
    /// its executors read the input and write the scored files ([`cluster`]).
    pub cluster: Option<String>,
}

/// What a round of `tads watch` scores: some files of a dataset that is still being written
/// (they are read as they are: no finished-dataset check), each key's alert walk going on
/// from where the previous round left it.
#[derive(Debug, Clone, Default)]
pub struct Follow {
    /// The files to score, relative to the data location, in the order to walk them.
    pub files: Vec<String>,
    /// Files scored before whose rows may be the previous day of these (for the drift
    /// baseline's medians; see [`crate::watch`]).
    pub context: Vec<String>,
    /// Every key's alert state after the files scored before.
    pub carried: Arc<crate::alerts::Carried>,
    /// The drift baseline's levels of complete days, known from earlier rounds: the days
    /// before the second field are taken from them rather than computed again.
    pub levels: Option<(Arc<crate::drift::DayLevels>, i64)>,
}

impl ScoreJob {
    /// The run's memory pool in bytes (`memory`, or [`SORT_MEMORY`] for 0).
    pub fn memory_limit(&self) -> usize {
        if self.memory == 0 {
            SORT_MEMORY
        } else {
            self.memory
        }
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
    /// With [`ScoreJob::follow`]: every key's alert state after these files.
    pub carried: Option<crate::alerts::Carried>,
    /// The drift baseline's levels per key and day, when it ran.
    pub levels: Option<crate::drift::DayLevels>,
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

/// The run's session: the alert pass's sort holds at most `--memory` before it spills, in
/// `--threads` partitions (one per core by default). Each partition's sort keeps a reserve for
/// merging what it spilled: DataFusion's 10 MB, or less where the pool is small, so the reserves
/// leave the sorts most of the pool.
fn session(job: &ScoreJob) -> Result<SessionContext> {
    let memory = job.memory_limit();
    let ctx = tads_sql::session_with_memory_limit(memory)?;
    let mut state = ctx.state();
    let execution = &mut state.config_mut().options_mut().execution;
    if job.concurrency > 0 {
        execution.target_partitions = job.concurrency;
    }
    let reserve = memory / (4 * execution.target_partitions.max(1));
    execution.sort_spill_reservation_bytes = reserve.clamp(256 << 10, 10 << 20);
    Ok(SessionContext::new_with_state(state))
}

/// Scores the dataset and writes the output.
pub async fn score(job: &ScoreJob, progress: Arc<dyn Progress>) -> Result<ScoreReport> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let mut run = Prepared::new(job, progress.as_ref())
        .await
        .map_err(|e| crate::on_cluster(job.cluster.as_deref(), e))?;
    let levels = run.levels.take();
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
    // Whatever fails from here leaves no output that a reader would take as complete.
    match run.write(job, &output, progress, started_at, run_id).await {
        Ok((manifest, alerts, carried)) => Ok(ScoreReport {
            manifest,
            alerts,
            elapsed: clock.elapsed(),
            carried,
            levels,
        }),
        Err(e) => {
            output.abort().await;
            Err(crate::on_cluster(job.cluster.as_deref(), e))
        }
    }
}

/// A run checked and planned, before anything is written.
struct Prepared {
    ctx: SessionContext,
    model: ModelRef,
    /// The input's manifest and marker before reading ([`input::input_state`]).
    input_manifest: Option<(Option<bytes::Bytes>, bool)>,
    file_schema: SchemaRef,
    units: Vec<Unit>,
    rows_in: u64,
    /// The alert pass's query, when alerts are on.
    alerts: Option<AlertPlan>,
    /// Why there are no alerts although they were not turned off.
    alerts_skipped: Option<String>,
    /// `SELECT *, pca_scores(…)` for files written again.
    select: String,
    /// The scores (and with alerts the key and time) alone, for files whose chunks are kept.
    select_scores: String,
    drift: Vec<crate::drift::DriftNotice>,
    /// The drift baseline's levels, when it ran.
    levels: Option<crate::drift::DayLevels>,
    /// On a cluster, the call whose column [`crate::drift::SHIFT_COLUMN`] the plans read.
    shift: Option<String>,
}

/// The parts of [`AlertQuery`] a run owns.
struct AlertPlan {
    model_sql: String,
    metrics: String,
    filter: String,
    region: bool,
    project: bool,
    /// Every column the pass reads is inside the files (none is a partition column), so the
    /// files can be walked one by one ([`alerts::ordered`]).
    in_files: bool,
}

impl Prepared {
    async fn new(job: &ScoreJob, progress: &dyn Progress) -> Result<Self> {
        if job.data.overlaps(&job.out) {
            return Err(Error::Input(format!(
                "--out {}: overlaps the input {}; write the scores somewhere else",
                job.out, job.data
            )));
        }
        job.config.validate().map_err(Error::Input)?;
        let registry = ModelRegistry::new();
        let loaded = registry.load_model(&job.models, &job.model).await?;
        if job.follow.is_none() {
            input::note_missing_detectors(job, &registry, &loaded);
        }
        let model = ModelRef::of(&loaded);
        let ctx = match &job.cluster {
            None => session(job)?,
            Some(url) => crate::cluster_session(url, session(job)?.state()).await?,
        };
        tads_sql::register_all(&ctx, &registry)?;
        ctx.register_udf(ScalarUDF::new_from_impl(ModelFunction::fused(
            registry.clone(),
            job.config.fusion,
        )));
        for score in [
            ModelScore::All,
            ModelScore::FusedTopMetric,
            ModelScore::FusedTopDeviation,
        ] {
            ctx.register_udf(ScalarUDF::new_from_impl(
                ModelFunction::new(score, registry.clone()).with_fusion(job.config.fusion),
            ));
        }
        // The input's manifest as it was before reading: checked again before the output's
        // manifest is written, so a dataset replaced while it was read is never scored silently.
        let (input_manifest, partitions) = match &job.follow {
            None => (
                input::input_state(&job.data).await?,
                tads_sql::register_dataset(&ctx, "input", &job.data).await?,
            ),
            // Files of a dataset still being written, chosen by the follower.
            Some(f) => {
                let partitions =
                    tads_sql::register_files(&ctx, "input", &job.data, &f.files).await?;
                // The drift baseline's medians also see the rows of the day before.
                let mut all = f.context.clone();
                all.extend(f.files.iter().cloned());
                tads_sql::register_file_list(&ctx, crate::drift::CONTEXT, &job.data, &all).await?;
                (None, partitions)
            }
        };
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
        input::check_columns(&table_schema, &model, job)?;
        if job.shard.is_some() && partitions.contains(&job.shard_by) {
            return Err(Error::Input(format!(
                "--shard-by: `{}` is a partition column; shard by a column inside the files",
                job.shard_by
            )));
        }
        let (with_alerts, alerts_skipped) = alert_columns(job, &table_schema, &partitions)?;
        if let Some(g) = model.group_by.as_ref().filter(|g| partitions.contains(g)) {
            return Err(Error::Input(format!(
                "model `{}` is grouped by `{g}`, a partition column of {}; score data whose files hold it",
                model.name, job.data
            )));
        }
        let units = match &job.follow {
            None => input::units(&job.data).await?,
            Some(f) => input::units_of(&job.data, &f.files).await?,
        };
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
        let (metrics, drift, levels) = crate::drift::metrics(
            job,
            &ctx,
            &registry,
            &model,
            &table_schema,
            &partitions,
            &filter,
        )
        .await?;
        let metrics = crate::drift::with_time(job, metrics, &table_schema, &partitions);
        // On a cluster the drift shifts are a column of the tables the plans read.
        let shift = (job.cluster.is_some() && metrics.contains(crate::drift::SHIFT_COLUMN))
            .then(|| crate::drift::shift_call(job));
        if let Some(call) = &shift {
            cluster::add_shift_column(&ctx, "input", call).await?;
        }
        // One pca_scores() call: one standardization and projection per row for all five
        // scores. Its struct is split into columns in Rust (`write_unit`), not by `s['field']`
        // in SQL, which DataFusion would evaluate as one call per field.
        let select = format!(
            "SELECT *, pca_scores({m}, {metrics}) AS {SCORES_STRUCT} FROM {{table}}{filter}"
        );
        // The same without the input's columns, for files whose column chunks are kept as they
        // are (`passthrough`); with alerts, the key and time that find each row's alert.
        let rules = &job.config.alerts;
        let key_time = if with_alerts {
            format!(", {}, {}", ident(&rules.key), ident(&rules.time))
        } else {
            String::new()
        };
        let select_scores = format!(
            "SELECT pca_scores({m}, {metrics}) AS {SCORES_STRUCT}{key_time} FROM {{table}}"
        );
        let alerts = with_alerts.then(|| AlertPlan {
            model_sql: m,
            metrics,
            filter,
            region: table_schema.field_with_name("region").is_ok(),
            project: table_schema.field_with_name("project_id").is_ok(),
            in_files: !["region", "project_id"]
                .into_iter()
                .chain(model.features.iter().map(String::as_str))
                .any(|c| partitions.iter().any(|p| p == c)),
        });
        Ok(Self {
            ctx,
            model,
            input_manifest,
            file_schema,
            units,
            rows_in,
            alerts,
            alerts_skipped,
            select,
            select_scores,
            drift,
            levels,
            shift,
        })
    }

    /// The alert pass over the files one after another, when their statistics say each key's
    /// rows are in time order across them ([`alerts::ordered`]); `None` when they are not (or a
    /// file turns out not to be), and the pass sorts instead.
    async fn walk_files(
        &self,
        job: &ScoreJob,
        query: &AlertQuery<'_>,
        progress: &Arc<dyn Progress>,
    ) -> Result<Option<alerts::Alerts>> {
        let rules = &job.config.alerts;
        let Some(chains) = alerts::ordered::chains(&self.units, &rules.key, &rules.time) else {
            return Ok(None);
        };
        let mut tables = Vec::with_capacity(chains.len());
        for (c, chain) in chains.iter().enumerate() {
            let mut names = Vec::with_capacity(chain.len());
            for (f, &unit) in chain.iter().enumerate() {
                let name = format!("__tads_walk_{c}_{f}");
                let table = write::unit_table(&job.data, &self.units[unit], &self.file_schema)?;
                self.ctx.register_table(&name, Arc::new(table))?;
                names.push(name);
            }
            tables.push(names);
        }
        let found = alerts::ordered::find_ordered(
            &self.ctx,
            query,
            rules,
            &job.config.severity,
            &tables,
            Arc::clone(progress),
        )
        .await;
        for name in tables.iter().flatten() {
            let _ = self.ctx.deregister_table(name);
        }
        let found = found?;
        if found.is_none() {
            eprintln!(
                "note: {}: a key's rows are not in time order inside a file; sorting them for the alerts instead",
                job.data
            );
            progress.phase("finding alerts (sorting)");
        }
        Ok(found)
    }

    /// Finds the alerts, writes every file and the alerts, then the manifest; returns the
    /// manifest and the alerts.
    async fn write(
        self,
        job: &ScoreJob,
        output: &Arc<Output>,
        progress: Arc<dyn Progress>,
        started_at: DateTime<Utc>,
        run_id: String,
    ) -> Result<(
        ScoreManifest,
        Vec<crate::alerts::Alert>,
        Option<crate::alerts::Carried>,
    )> {
        let rules = &job.config.alerts;
        let carried_in = job.follow.as_ref().map(|f| Arc::clone(&f.carried));
        let mut carried = None;
        let mut alert_pass = None;
        let found = match &self.alerts {
            Some(plan) => {
                progress.phase("finding alerts");
                let query = AlertQuery {
                    table: "input",
                    model_sql: &plan.model_sql,
                    model_name: &self.model.name,
                    metrics: &plan.metrics,
                    features: &self.model.features,
                    filter: &plan.filter,
                    region: plan.region,
                    project: plan.project,
                };
                // On a cluster, the walk's per-file plans would each be a job: it sorts.
                let walked = match job.follow.is_none()
                    && job.cluster.is_none()
                    && rules.walk == crate::config::WalkOrder::Auto
                    && plan.in_files
                {
                    true => self.walk_files(job, &query, &progress).await?,
                    false => None,
                };
                let found = match walked {
                    Some(found) => {
                        alert_pass = Some("files in time order".to_string());
                        found
                    }
                    None => {
                        let (found, ends) = alerts::find(
                            &self.ctx,
                            &query,
                            rules,
                            &job.config.severity,
                            carried_in.clone(),
                            Arc::clone(&progress),
                        )
                        .await?;
                        carried = ends;
                        alert_pass = Some("sorted".to_string());
                        found
                    }
                };
                Some(Arc::new(found))
            }
            None => None,
        };
        progress.phase("scoring");
        // A session whose plans have one partition, so that a file's rows come back in file
        // order.
        let mut state = self.ctx.state();
        let options = state.config_mut().options_mut();
        options.execution.target_partitions = 1;
        options.optimizer.repartition_file_scans = false;
        let ordered = SessionContext::new_with_state(state);
        let shared = Arc::new(Shared {
            ctx: self.ctx,
            ordered,
            select_scores: self.select_scores,
            data: job.data.clone(),
            file_schema: self.file_schema,
            select: self.select,
            output: Arc::clone(output),
            progress,
            sharded: job.shard.is_some(),
            alerts: found
                .clone()
                .map(|a| (a, rules.key.clone(), rules.time.clone())),
            next_table: AtomicU64::new(0),
            shift: self.shift,
        });
        let results = match job.cluster {
            None => write::score_units(&shared, self.units, job.concurrency).await?,
            Some(_) => cluster::score_units(&shared, self.units, job.concurrency).await?,
        };
        let mut files: Vec<ScoredFile> = results.iter().flat_map(|r| r.files.clone()).collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let summary = match &found {
            Some(a) => Some(write::write_alerts(output, a, &self.model, &run_id).await?),
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
            model: self.model,
            shard: job.shard,
            shard_by: job.shard.map(|_| job.shard_by.clone()),
            rows_in: self.rows_in,
            rows: files.iter().map(|f| f.rows).sum(),
            rows_unscored: results.iter().map(|r| r.unscored).sum(),
            columns: SCORE_COLUMNS.iter().map(|c| c.to_string()).collect(),
            config: job.config.clone(),
            alerts: summary,
            alerts_skipped: self.alerts_skipped,
            alert_pass,
            drift: self.drift,
            files,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Data(format!("manifest: {e}")))?;
        // A followed dataset is still being written: its files were picked one by one.
        if job.follow.is_none() && input::input_state(&job.data).await? != self.input_manifest {
            return Err(Error::Data(format!(
                "{}: the input changed while it was being scored (its manifest was replaced or removed, or a writer is at work); score it again when it is finished",
                job.data
            )));
        }
        output.finish(json).await?;
        drop(shared);
        let alerts = found
            .and_then(|a| Arc::try_unwrap(a).ok())
            .map(|a| a.list)
            .unwrap_or_default();
        // Without alerts (or without their columns), the state passes through unchanged.
        let carried = carried.or_else(|| carried_in.map(|c| c.as_ref().clone()));
        Ok((manifest, alerts, carried))
    }
}

/// Whether the run finds alerts, and if not although they are on, why: the default key and time
/// columns are a guess about the data, so without them the run scores without alerts and says
/// why; columns the user named must be there, and inside the files.
fn alert_columns(
    job: &ScoreJob,
    table_schema: &Schema,
    partitions: &[String],
) -> Result<(bool, Option<String>)> {
    let rules = &job.config.alerts;
    if !rules.enabled {
        return Ok((false, None));
    }
    let defaults = crate::config::AlertRules::default();
    let guessed = rules.key == defaults.key && rules.time == defaults.time;
    match alerts::check_columns(table_schema, rules, &job.data.to_string(), !guessed) {
        Ok(()) => {}
        Err(e) if guessed => return Ok((false, Some(format!("no alerts: {e}")))),
        Err(e) => return Err(e),
    }
    for (what, col) in [("key", &rules.key), ("time", &rules.time)] {
        if partitions.contains(col) {
            return Err(Error::Input(format!(
                "alerts.{what}: `{col}` is a partition column of {}; name a column inside the files",
                job.data
            )));
        }
    }
    Ok((true, None))
}
