//! Preparing a score run: the settings checked, the model loaded, the session opened, the input
//! registered and its columns checked, the drift baseline measured, and the scoring and alert
//! queries planned, all before anything is written.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use tads_sql::ModelRegistry;
use tads_sql::functions::{ModelFunction, ModelScore};
use tads_store::Progress;

use super::{ModelRef, SCORES_STRUCT, ScoreJob, Unit, cluster, input};
use crate::{Error, Result, alerts, ident};

/// A run checked and planned, before anything is written.
pub(super) struct Prepared {
    pub(super) ctx: SessionContext,
    pub(super) model: ModelRef,
    /// The input's manifest and marker before reading ([`input::input_state`]).
    pub(super) input_manifest: Option<(Option<bytes::Bytes>, bool)>,
    pub(super) file_schema: SchemaRef,
    pub(super) units: Vec<Unit>,
    pub(super) rows_in: u64,
    /// The alert pass's query, when alerts are on.
    pub(super) alerts: Option<AlertPlan>,
    /// Why there are no alerts although they were not turned off.
    pub(super) alerts_skipped: Option<String>,
    /// `SELECT *, pca_scores(…)` for files written again.
    pub(super) select: String,
    /// The scores (and with alerts the key and time) alone, for files whose chunks are kept.
    pub(super) select_scores: String,
    pub(super) drift: Vec<crate::drift::DriftNotice>,
    /// The drift baseline's levels, when it ran.
    pub(super) levels: Option<crate::drift::DayLevels>,
    /// On a cluster, the call whose column [`crate::drift::SHIFT_COLUMN`] the plans read.
    pub(super) shift: Option<String>,
    /// The drift baseline is measured later: while the files are walked in time order, or else
    /// just before scoring ([`crate::drift::Planned::deferred`]).
    pub(super) deferred: Option<crate::drift::Shared>,
    pub(super) registry: ModelRegistry,
}

/// The parts of [`AlertQuery`](crate::alerts::AlertQuery) a run owns.
pub(super) struct AlertPlan {
    pub(super) model_sql: String,
    pub(super) metrics: String,
    pub(super) filter: String,
    pub(super) region: bool,
    pub(super) project: bool,
    /// Every column the pass reads is inside the files (none is a partition column), so the
    /// files can be walked one by one ([`alerts::ordered`]).
    pub(super) in_files: bool,
}

impl AlertPlan {
    /// The alert pass's query over the table `input`, for `model`'s rows.
    pub(super) fn query<'a>(&'a self, model: &'a ModelRef) -> crate::alerts::AlertQuery<'a> {
        crate::alerts::AlertQuery {
            table: "input",
            model_sql: &self.model_sql,
            model_name: &model.name,
            metrics: &self.metrics,
            features: &model.features,
            filter: &self.filter,
            region: self.region,
            project: self.project,
        }
    }
}

impl Prepared {
    pub(super) async fn new(job: &ScoreJob, progress: &dyn Progress) -> Result<Self> {
        if job.data.overlaps(&job.out) {
            return Err(Error::Input(format!(
                "--out {}: overlaps the input {}; write the scores somewhere else",
                job.out, job.data
            )));
        }
        let (ctx, registry, model) = open(job).await?;
        let (input_manifest, partitions) = register_input(job, &ctx).await?;
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
        // A run that may walk its files in time order measures the baseline as it goes.
        let defer = with_alerts
            && job.follow.is_none()
            && job.cluster.is_none()
            && filter.is_empty()
            && job.config.alerts.walk == crate::config::WalkOrder::Auto
            && job.config.drift.streamed;
        let crate::drift::Planned {
            metrics,
            notices: drift,
            levels,
            deferred,
        } = crate::drift::metrics(
            job,
            &ctx,
            &registry,
            &model,
            &table_schema,
            &partitions,
            &filter,
            defer,
        )
        .await?;
        let metrics = crate::drift::with_time(job, metrics, &table_schema, &partitions);
        // On a cluster the drift shifts are a column of the tables the plans read.
        let shift = (job.cluster.is_some() && metrics.contains(crate::drift::SHIFT_COLUMN))
            .then(|| crate::drift::shift_call(job));
        if let Some(call) = &shift {
            cluster::add_shift_column(&ctx, "input", call).await?;
        }
        let (select, select_scores) = selects(job, &m, &metrics, &filter, with_alerts);
        let in_files = !["region", "project_id"]
            .into_iter()
            .chain(model.features.iter().map(String::as_str))
            .any(|c| partitions.iter().any(|p| p == c));
        let alerts = with_alerts.then(|| AlertPlan {
            model_sql: m,
            metrics,
            filter,
            region: table_schema.field_with_name("region").is_ok(),
            project: table_schema.field_with_name("project_id").is_ok(),
            in_files,
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
            deferred,
            registry,
        })
    }
}

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

/// Checks the settings, loads the model and opens the session (on the cluster, when one is
/// named) with the scoring functions registered.
async fn open(job: &ScoreJob) -> Result<(SessionContext, ModelRegistry, ModelRef)> {
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
    Ok((ctx, registry, model))
}

/// Registers the input as the table `input`; returns the input's manifest state before reading
/// (none when following) and the hive partition columns.
async fn register_input(
    job: &ScoreJob,
    ctx: &SessionContext,
) -> Result<(Option<(Option<bytes::Bytes>, bool)>, Vec<String>)> {
    // The input's manifest as it was before reading: checked again before the output's
    // manifest is written, so a dataset replaced while it was read is never scored silently.
    let (input_manifest, partitions) = match &job.follow {
        None => (
            input::input_state(&job.data).await?,
            tads_sql::register_dataset(ctx, "input", &job.data).await?,
        ),
        // Files of a dataset still being written, chosen by the follower.
        Some(f) => {
            let partitions = tads_sql::register_files(ctx, "input", &job.data, &f.files).await?;
            // The drift baseline's medians also see the rows of the day before.
            let mut all = f.context.clone();
            all.extend(f.files.iter().cloned());
            tads_sql::register_file_list(ctx, crate::drift::CONTEXT, &job.data, &all).await?;
            (None, partitions)
        }
    };
    Ok((input_manifest, partitions))
}

/// The scoring queries (`{table}` stands for a file's table): `SELECT *, pca_scores(…)` for files
/// written again, and the scores alone (with alerts, beside the key and time) for files whose
/// column chunks are kept.
fn selects(
    job: &ScoreJob,
    m: &str,
    metrics: &str,
    filter: &str,
    with_alerts: bool,
) -> (String, String) {
    // One pca_scores() call: one standardization and projection per row for all five
    // scores. Its struct is split into columns in Rust (`write_unit`), not by `s['field']`
    // in SQL, which DataFusion would evaluate as one call per field.
    let select =
        format!("SELECT *, pca_scores({m}, {metrics}) AS {SCORES_STRUCT} FROM {{table}}{filter}");
    // The same without the input's columns, for files whose column chunks are kept as they
    // are (`passthrough`); with alerts, the key and time that find each row's alert.
    let rules = &job.config.alerts;
    let key_time = if with_alerts {
        format!(", {}, {}", ident(&rules.key), ident(&rules.time))
    } else {
        String::new()
    };
    let select_scores =
        format!("SELECT pca_scores({m}, {metrics}) AS {SCORES_STRUCT}{key_time} FROM {{table}}");
    (select, select_scores)
}
