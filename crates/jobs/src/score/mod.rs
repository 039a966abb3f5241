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
mod prepare;
mod shard;
mod walked;
mod write;

pub use manifest::{ModelRef, ScoreManifest, ScoredFile};
pub use shard::Shard;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use tads_store::{Location, Output, Progress};

use crate::alerts::AlertQuery;
use crate::config::ScoreConfig;
use crate::{Error, Result, alerts};
pub(crate) use input::Unit;
use prepare::Prepared;
pub(crate) use write::Shared;
pub(crate) use write::UnitResult;
pub(crate) use write::chunk_path;

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
        Ok((manifest, alerts, carried, measured)) => Ok(ScoreReport {
            manifest,
            alerts,
            elapsed: clock.elapsed(),
            carried,
            levels: measured.or(levels),
        }),
        Err(e) => {
            output.abort().await;
            Err(crate::on_cluster(job.cluster.as_deref(), e))
        }
    }
}

/// What scoring and finding the alerts gave: each file's result, the alerts, each key's state
/// after them (a round of `tads watch`) and how the alert pass ran.
struct Scored {
    results: Vec<UnitResult>,
    found: Option<Arc<alerts::Alerts>>,
    carried: Option<crate::alerts::Carried>,
    alert_pass: Option<String>,
    /// A deferred drift baseline's notices and levels, measured while scoring.
    drift: Option<Measured>,
}

/// A drift baseline's notices and levels.
type Measured = (Vec<crate::drift::DriftNotice>, crate::drift::DayLevels);

/// Says on stderr that the walk over files in time order found a key out of order.
fn unordered_note(job: &ScoreJob, progress: &dyn Progress) {
    eprintln!(
        "note: {}: a key's rows are not in time order inside a file; sorting them for the alerts instead",
        job.data.shown()
    );
    progress.phase("finding alerts (sorting)");
}

/// Says on stderr why the walk over files in time order stopped, before the run measures the
/// drift baseline beforehand and scores the files again.
fn stopped_note(job: &ScoreJob, progress: &dyn Progress, stop: crate::drift::Stop) {
    match stop {
        crate::drift::Stop::Unordered => unordered_note(job, progress),
        crate::drift::Stop::Memory => {
            eprintln!(
                "note: {}: the drift baseline's values of a day do not fit in --memory while the files are scored in time order; measuring it first instead",
                job.data.shown()
            );
            progress.phase("measuring the drift baseline");
        }
    }
}

/// Whether the alert pass may walk the files in time order rather than sort: `alerts.walk =
/// "auto"`, every column it reads inside the files, not a round of `tads watch` (which carries
/// state across rounds) and not on a cluster (where each file's plan would be a job of its own).
fn may_walk(job: &ScoreJob, plan: &prepare::AlertPlan) -> bool {
    job.follow.is_none()
        && job.cluster.is_none()
        && job.config.alerts.walk == crate::config::WalkOrder::Auto
        && plan.in_files
}

/// Chains of files in time order (indices into the run's files), and the files without rows.
type Chains = (Vec<Vec<usize>>, Vec<usize>);

impl Prepared {
    /// When the run can score and find the alerts in one pass over files in time order
    /// ([`walked`]): the alert plan, the chains of files (indices into `units`) and the files
    /// without rows (in no chain). A sharded run, a round of `tads watch`, a cluster, a file
    /// written again rather than keeping its chunks, or files whose statistics do not show
    /// each key's rows in time order take the two passes instead.
    fn walkable(&self, job: &ScoreJob) -> Option<(&prepare::AlertPlan, Chains)> {
        let plan = self.alerts.as_ref()?;
        let rules = &job.config.alerts;
        let usable = may_walk(job, plan)
            && job.shard.is_none()
            && self
                .units
                .iter()
                .all(|u| crate::passthrough::fits(&self.file_schema, u));
        if !usable {
            return None;
        }
        let chains = alerts::ordered::chains(&self.units, &rules.key, &rules.time)?;
        let empty = (0..self.units.len())
            .filter(|&i| self.units[i].rows == 0)
            .collect();
        Some((plan, (chains, empty)))
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
            unordered_note(job, progress.as_ref());
        }
        Ok(found)
    }

    /// The run's writers' shared state, with the alerts that find each row's `alert_id`.
    fn shared(
        &self,
        job: &ScoreJob,
        ordered: &SessionContext,
        output: &Arc<Output>,
        progress: &Arc<dyn Progress>,
        alerts: Option<Arc<alerts::Alerts>>,
    ) -> Arc<Shared> {
        let rules = &job.config.alerts;
        Arc::new(Shared {
            ctx: self.ctx.clone(),
            ordered: ordered.clone(),
            select_scores: self.select_scores.clone(),
            data: job.data.clone(),
            file_schema: Arc::clone(&self.file_schema),
            select: self.select.clone(),
            output: Arc::clone(output),
            progress: Arc::clone(progress),
            sharded: job.shard.is_some(),
            alerts: alerts.map(|a| (a, rules.key.clone(), rules.time.clone())),
            next_table: AtomicU64::new(0),
            shift: self.shift.clone(),
        })
    }

    /// Scores and writes every file and finds the alerts: in one pass over files in time order
    /// where it can ([`walked`]), else the alert pass and then the scoring pass.
    async fn score_all(
        &self,
        job: &ScoreJob,
        output: &Arc<Output>,
        progress: &Arc<dyn Progress>,
    ) -> Result<Scored> {
        // A session whose plans have one partition, so that a file's rows come back in file
        // order.
        let mut state = self.ctx.state();
        let options = state.config_mut().options_mut();
        options.execution.target_partitions = 1;
        options.optimizer.repartition_file_scans = false;
        let ordered = SessionContext::new_with_state(state);
        let Some((plan, (chains, empty))) = self.walkable(job) else {
            let drift = self.measure(job).await?;
            let scored = self
                .two_passes(job, &ordered, output, progress, true)
                .await?;
            return Ok(Scored { drift, ..scored });
        };
        progress.phase("scoring and finding alerts (files in time order)");
        let query = plan.query(&self.model);
        let pass = walked::Pass {
            query: &query,
            rules: &job.config.alerts,
            severity: &job.config.severity,
        };
        let run = self.shared(job, &ordered, output, progress, None);
        let group_by = self.model.group_by.as_deref();
        // A deferred drift baseline is measured as the files are scored.
        let streamed = self.deferred.as_ref().map(|shared| {
            Arc::new(crate::drift::Streamed::new(
                Arc::clone(shared),
                job.config.drift.clone(),
                self.registry.clone(),
                &self.model,
                Arc::clone(&self.ctx.runtime_env().memory_pool),
            ))
        });
        let found = walked::score_chains(
            &run,
            &pass,
            group_by,
            &self.units,
            (chains, job.concurrency),
            streamed.clone(),
        )
        .await?;
        let (mut results, list, levels) = match found {
            Ok(found) => found,
            Err(stop) => {
                stopped_note(job, progress.as_ref(), stop);
                let drift = self.measure(job).await?;
                let walk = stop == crate::drift::Stop::Memory;
                let scored = self
                    .two_passes(job, &ordered, output, progress, walk)
                    .await?;
                return Ok(Scored { drift, ..scored });
            }
        };
        // Files without rows are in no chain.
        let empty: Vec<Unit> = empty.iter().map(|&i| self.units[i].clone()).collect();
        results.extend(write::score_units(&run, empty, job.concurrency).await?);
        Ok(Scored {
            results,
            found: Some(Arc::new(alerts::Alerts::from_list(list))),
            carried: None,
            alert_pass: Some("files in time order, scored once".to_string()),
            drift: streamed.map(|s| (s.notices(&levels), levels)),
        })
    }

    /// Measures a deferred drift baseline before the files are scored (again); its notices and
    /// levels.
    async fn measure(&self, job: &ScoreJob) -> Result<Option<Measured>> {
        let Some(shared) = &self.deferred else {
            return Ok(None);
        };
        let filter = self.alerts.as_ref().map_or("", |a| a.filter.as_str());
        crate::drift::fill(job, &self.ctx, &self.registry, &self.model, filter, shared)
            .await
            .map(Some)
    }

    /// The alert pass (walking the files in time order where `walk` and the files allow, else
    /// sorting), then the scoring pass writing every file.
    async fn two_passes(
        &self,
        job: &ScoreJob,
        ordered: &SessionContext,
        output: &Arc<Output>,
        progress: &Arc<dyn Progress>,
        walk: bool,
    ) -> Result<Scored> {
        let rules = &job.config.alerts;
        let (mut carried, mut alert_pass) = (None, None);
        let found = match &self.alerts {
            Some(plan) => {
                progress.phase("finding alerts");
                let query = plan.query(&self.model);
                let walked = match walk && may_walk(job, plan) {
                    true => self.walk_files(job, &query, progress).await?,
                    false => None,
                };
                let found = match walked {
                    Some(found) => {
                        alert_pass = Some("files in time order".to_string());
                        found
                    }
                    None => {
                        let carried_in = job.follow.as_ref().map(|f| Arc::clone(&f.carried));
                        let (found, ends) = alerts::find(
                            &self.ctx,
                            &query,
                            rules,
                            &job.config.severity,
                            carried_in,
                            Arc::clone(progress),
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
        let run = self.shared(job, ordered, output, progress, found.clone());
        let units = self.units.clone();
        let results = match job.cluster {
            None => write::score_units(&run, units, job.concurrency).await?,
            Some(_) => cluster::score_units(&run, units, job.concurrency).await?,
        };
        Ok(Scored {
            results,
            found,
            carried,
            alert_pass,
            drift: None,
        })
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
        Option<crate::drift::DayLevels>,
    )> {
        let Scored {
            results,
            found,
            carried,
            alert_pass,
            drift,
        } = self.score_all(job, output, &progress).await?;
        let (notices, measured) = match drift {
            Some((notices, levels)) => (notices, Some(levels)),
            None => (self.drift, None),
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
            drift: notices,
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
        let alerts = found
            .and_then(|a| Arc::try_unwrap(a).ok())
            .map(|a| a.list)
            .unwrap_or_default();
        // Without alerts (or without their columns), the state passes through unchanged.
        let carried = carried.or_else(|| job.follow.as_ref().map(|f| f.carried.as_ref().clone()));
        Ok((manifest, alerts, carried, measured))
    }
}
