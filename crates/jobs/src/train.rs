//! `tads train`: a robust PCA model fitted by DataFusion aggregates over a dataset.
//!
//! Three passes over the data (four with a trimmed refit), each one SQL statement:
//! 1. `robust_stats(f)` of every feature: medians and MADs;
//! 2. `pca_fit(z1, …, zd)` of the standardized rows inside the robust cut: co-moments, then the
//!    PCA is decomposed here;
//! 3. `percentile_cont` of `pca_score` over those rows: the empirical SPE limits (with a trimmed
//!    refit, the rows above the `1 − trim` quantile are dropped and 2–3 run again).
//!
//! The partition filter (`--where date >= '…'`) is part of every pass, so DataFusion prunes
//! files before reading them. See [`tads_model::train`] for the same algorithm in memory.

use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, UInt64Type};
use datafusion::prelude::SessionContext;
use tads_model::SpaceChoice;
use tads_model::train::{Fitted, Standardizer, TrainOptions, artifact};
use tads_model::{CoMoments, ModelArtifact, ModelGroup, RobustStats, pca};
use tads_sql::ModelRegistry;
use tads_store::{Location, Lock};

use crate::{Error, Result, ident};

pub(crate) use crate::quantiles::in_memory;
pub use crate::quantiles::{
    EXACT_BYTES_PER_VALUE, Quantiles, SKETCH_CENTROIDS, SMALL_SKETCH_CENTROIDS, auto_quantiles,
};

/// Columns that are labels or keys, never features.
/// (`label` is the anomaly label of other labelled data sets.)
pub const NOT_FEATURES: [&str; 5] = ["is_anomaly", "anomaly_type", "anomaly_id", "label", "ts"];

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The training data.
    pub data: Location,
    /// Where models live; the model goes to `<models>/<name>/model.json`.
    pub models: Location,
    /// The model's name.
    pub name: String,
    /// Feature columns; `None` for every numeric column that is not a label or partition.
    pub features: Option<Vec<String>>,
    /// A SQL predicate on the data's columns (partition columns prune files).
    pub filter: Option<String>,
    /// The training choices.
    pub options: TrainOptions,
    /// Replace an existing model of that name.
    pub overwrite: bool,
    /// Train one model per value of this column (a group, `group.json`) instead of one model.
    pub group_by: Option<String>,
    /// Remove the name's lock first (its holder is known to be gone).
    pub break_lock: bool,
    /// Partitions the statements run in (0: one per core).
    pub threads: usize,
    /// How the medians, MADs and quantiles are taken.
    pub quantiles: Quantiles,
    /// The memory exact statistics may take before [`Quantiles::Auto`] sketches them (`None`:
    /// half of the memory available when the training starts).
    pub memory: Option<usize>,
    /// Run the statements on this Ballista cluster of `tads cluster` processes (`df://host:port`)
    /// instead of in this process.
    pub cluster: Option<String>,
}

/// What was trained.
#[derive(Debug)]
pub enum Trained {
    /// One model, written as `model.json`.
    Model(Box<ModelArtifact>),
    /// A group of models, written as `group.json`.
    Group(Box<ModelGroup>),
}

/// What a finished training reports.
#[derive(Debug)]
pub struct TrainReport {
    /// The model or group as written.
    pub trained: Trained,
    /// Rows read (after the filter).
    pub rows_seen: u64,
    /// Where it was written.
    pub path: String,
    /// Wall time.
    pub elapsed: Duration,
    /// How the medians and quantiles were taken (never `Auto`), and why when `Auto` chose.
    pub quantiles: (Quantiles, Option<String>),
}

impl TrainReport {
    /// Rows read per second, over all passes.
    pub fn rows_per_second(&self) -> f64 {
        self.rows_seen as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What every training needs once the job is checked: the session with the data as
/// `telemetry`, the registry of its functions, the features, their quoted names and the filter.
pub(crate) struct Prepared {
    pub(crate) ctx: SessionContext,
    pub(crate) registry: ModelRegistry,
    pub(crate) features: Vec<String>,
    pub(crate) filter: String,
    pub(crate) cols: Vec<String>,
}

/// An f64 as a SQL literal that parses back to the same value.
pub(crate) fn literal(v: f64) -> String {
    format!("({v:?})")
}

/// The default features: numeric columns that are neither labels nor partition columns.
pub fn default_features(schema: &Schema, partition_columns: &[String]) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| f.data_type().is_numeric())
        .map(|f| f.name().clone())
        .filter(|n| !NOT_FEATURES.contains(&n.as_str()) && !partition_columns.contains(n))
        .collect()
}

pub(crate) async fn collect(ctx: &SessionContext, sql: &str) -> Result<RecordBatch> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::Data("a training pass returned nothing".into()))?;
    Ok(
        datafusion::arrow::compute::concat_batches(&schema, &batches)
            .map_err(datafusion::error::DataFusionError::from)?,
    )
}

/// The rows of a statement that may return none (a `GROUP BY` key over rows that a join left
/// empty: a day of training data has no previous day), as one batch, empty then.
pub(crate) async fn collect_rows(ctx: &SessionContext, sql: &str) -> Result<RecordBatch> {
    let df = ctx.sql(sql).await?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok(match batches.first() {
        None => RecordBatch::new_empty(schema),
        Some(b) => datafusion::arrow::compute::concat_batches(&b.schema(), &batches)
            .map_err(datafusion::error::DataFusionError::from)?,
    })
}

fn f64_field(batch: &RecordBatch, column: usize, field: &str) -> Option<f64> {
    let s = batch.column(column).as_struct();
    let c = s.column_by_name(field)?.as_primitive::<Float64Type>();
    c.is_valid(0).then(|| c.value(0))
}

/// Why a feature's robust statistics cannot be used, if they cannot: values so large (near
/// ±1e308) that the median or the MAD overflows, which would make a non-finite scale.
pub(crate) fn too_large(name: &str, median: f64, mad: f64) -> Option<String> {
    (!(median.is_finite() && mad.is_finite())).then(|| {
        format!(
            "feature `{name}`: its values are too large for robust statistics (median {median}, MAD {mad}); rescale the column"
        )
    })
}

/// Registers a fitted PCA as a temporary model `name` of the session, for `pca_score`.
pub(crate) fn register_temporary(
    registry: &ModelRegistry,
    name: &str,
    features: &[String],
    standardizer: &Standardizer,
    pca: &tads_model::Pca,
    job: &TrainJob,
) -> Result<()> {
    let fitted = Fitted {
        standardizer: standardizer.clone(),
        pca: pca.clone(),
        rows_used: 2,
        spe_quantiles: (None, None),
    };
    registry.insert(artifact(
        name,
        features,
        &fitted,
        &job.options,
        2,
        "",
        None,
    )?)?;
    Ok(())
}

/// The `q` quantile of `score` for each q (see [`Quantiles::quantile`]), comma-separated.
pub(crate) fn percentiles(mode: Quantiles, score: &str, qs: &[f64]) -> String {
    qs.iter()
        .map(|q| mode.quantile(*q, score))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value at `row` of `column` as an f64, if it is one and not NULL.
pub(crate) fn f64_at(batch: &RecordBatch, column: usize, row: usize) -> Option<f64> {
    let c = datafusion::arrow::compute::cast(batch.column(column), &DataType::Float64).ok()?;
    let c = c.as_primitive::<Float64Type>();
    c.is_valid(row).then(|| c.value(row))
}

/// Trains the model (or group) and writes it.
///
/// The name is locked (`<models>/<name>/_tads_lock.json`, created only if absent) for the whole
/// run, so two trainings of one name, plain or grouped, never both write: the second is refused
/// naming the first. Without `overwrite`, the model file is also put create-only.
pub async fn train(job: &TrainJob) -> Result<TrainReport> {
    let started = Instant::now();
    tads_model::ModelArtifact::check_name(&job.name)?;
    if let Some(f) = &job.filter {
        tads_sql::depth::check_sql_depth("--where", f).map_err(Error::Input)?;
    }
    let run_id = format!(
        "train-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        std::process::id()
    );
    let lock_path = format!("{}/{}", job.name, tads_store::LOCK);
    let lock = Lock::acquire(
        &job.models,
        &lock_path,
        "tads train",
        &run_id,
        job.break_lock,
    )
    .await
    .map_err(|e| Error::Input(format!("model `{}`: {e}", job.name)))?;
    let result = train_locked(job, &lock, started)
        .await
        .map_err(|e| crate::on_cluster(job.cluster.as_deref(), e));
    let released = lock.release().await;
    let report = result?;
    released?;
    Ok(report)
}

/// [`train`] with the name locked.
async fn train_locked(job: &TrainJob, lock: &Lock, started: Instant) -> Result<TrainReport> {
    let files = ["model.json", "group.json"].map(|f| format!("{}/{f}", job.name));
    for path in &files {
        if !job.overwrite && job.models.get_opt(path).await?.is_some() {
            return Err(exists(job, path));
        }
    }
    let prepared = prepare(job).await?;
    let (quantiles, why) = resolve_quantiles(job, &prepared).await?;
    let job = &TrainJob {
        quantiles,
        ..job.clone()
    };
    let (ctx, registry) = (prepared.ctx.clone(), prepared.registry.clone());
    let (cols, filter) = (prepared.cols.clone(), prepared.filter.clone());
    let tail = job
        .options
        .tail_quantile
        .map(|quantile| crate::tail::TailInput {
            ctx: &ctx,
            registry: &registry,
            cols: &cols,
            filter: &filter,
            quantile,
            mode: job.quantiles,
        });
    let season = crate::seasonal::SeasonInput {
        ctx: &ctx,
        cols: &cols,
        filter: &filter,
        mode: job.quantiles,
    };
    let sampled = crate::sampled::SampledInput {
        ctx: &ctx,
        cols: &cols,
        filter: &filter,
        tail_quantile: job.options.tail_quantile,
        kmeans: job.options.kmeans,
        iforest: job.options.iforest,
        ocsvm: job.options.ocsvm,
    };
    let baseline = crate::season::BaselineInput {
        ctx: &ctx,
        cols: &cols,
        filter: &filter,
        mode: job.quantiles,
        tail_quantile: job.options.tail_quantile,
    };
    let (trained, rows_seen, written) = match &job.group_by {
        None => {
            let mut model = train_one(job, prepared).await?;
            if let Some(t) = &tail {
                model = crate::tail::single(t, model).await?;
            }
            if job.options.seasonal {
                model = crate::seasonal::single(&season, model).await?;
            }
            if job.options.kmeans || job.options.iforest || job.options.ocsvm {
                model = crate::sampled::single(&sampled, model).await?;
            }
            if job.options.season_baseline {
                model = crate::season::single(&baseline, model).await?;
            }
            if job.options.forecast {
                model = crate::forecast::single(&baseline, model).await?;
            }
            if job.options.scoring_space != SpaceChoice::Never {
                model =
                    crate::space::single(&baseline, &registry, model, job.options.scoring_space)
                        .await?;
            }
            let rows = model.training.rows_seen;
            let json = model.to_json();
            (Trained::Model(Box::new(model)), rows, (&files[0], json))
        }
        Some(g) => {
            let (mut group, rows) = crate::train_groups::train_groups(job, g, prepared).await?;
            if let Some(t) = &tail {
                group = crate::tail::group(t, group).await?;
            }
            if job.options.seasonal {
                group = crate::seasonal::group(&season, group).await?;
            }
            if job.options.kmeans || job.options.iforest || job.options.ocsvm {
                group = crate::sampled::group(&sampled, group).await?;
            }
            if job.options.season_baseline {
                group = crate::season::group(&baseline, group).await?;
            }
            if job.options.forecast {
                group = crate::forecast::group(&baseline, group).await?;
            }
            if job.options.scoring_space != SpaceChoice::Never {
                group = crate::space::group(&baseline, &registry, group, job.options.scoring_space)
                    .await?;
            }
            let json = group.to_json();
            (Trained::Group(Box::new(group)), rows, (&files[1], json))
        }
    };
    lock.check().await?;
    if job.overwrite {
        job.models.put(written.0, written.1).await?;
    } else if !job.models.put_new(written.0, written.1).await? {
        return Err(exists(job, written.0));
    }
    // One name, one kind: a group replaces a model of the same name, and the other way round.
    for other in files.iter().filter(|f| *f != written.0) {
        job.models.delete(&job.models.child(other)).await?;
    }
    Ok(TrainReport {
        path: format!("{}{}", job.models, written.0),
        trained,
        rows_seen,
        elapsed: started.elapsed(),
        quantiles: (job.quantiles, why),
    })
}

/// The job's quantile mode, with [`Quantiles::Auto`] decided by counting the training rows
/// (Parquet statistics answer without a filter), and the reason when it was decided.
async fn resolve_quantiles(
    job: &TrainJob,
    prepared: &Prepared,
) -> Result<(Quantiles, Option<String>)> {
    if job.quantiles != Quantiles::Auto {
        return Ok((job.quantiles, None));
    }
    let batch = collect(
        &prepared.ctx,
        &format!("SELECT count(*) FROM telemetry WHERE {}", prepared.filter),
    )
    .await?;
    let rows = batch.column(0).as_primitive::<Int64Type>().value(0).max(0) as u64;
    let (mode, reason) = auto_quantiles(rows, prepared.cols.len(), job.memory);
    Ok((mode, Some(reason)))
}

/// `model` changed by `change`, sealed again (a new fingerprint) and checked.
pub(crate) fn amend(
    mut model: ModelArtifact,
    change: impl FnOnce(&mut ModelArtifact),
) -> Result<ModelArtifact> {
    change(&mut model);
    let model = model.seal();
    model.validate()?;
    Ok(model)
}

/// Each member of `group` changed by `change` (given its group value), then the group sealed
/// again and checked.
pub(crate) fn amend_members(
    mut group: ModelGroup,
    mut change: impl FnMut(&str, &mut ModelArtifact),
) -> Result<ModelGroup> {
    let members = std::mem::take(&mut group.members);
    for m in members {
        let key = group.key_of(&m).to_string();
        group.members.push(amend(m, |m| change(&key, m))?);
    }
    let group = group.seal();
    group.validate()?;
    Ok(group)
}

/// The model file at `path` exists and may not be replaced.
fn exists(job: &TrainJob, path: &str) -> Error {
    Error::Input(format!(
        "{}{path} exists; pass --overwrite to replace it",
        job.models
    ))
}

/// Opens the data and checks the features, the filter and the group column.
async fn prepare(job: &TrainJob) -> Result<Prepared> {
    let mut state = tads_sql::session().state();
    if job.threads > 0 {
        state.config_mut().options_mut().execution.target_partitions = job.threads;
    }
    let ctx = match &job.cluster {
        None => SessionContext::new_with_state(state),
        Some(url) => crate::cluster_session(url, state).await?,
    };
    let registry = ModelRegistry::new();
    tads_sql::register_all(&ctx, &registry)?;
    let partitions = tads_sql::register_dataset(&ctx, "telemetry", &job.data).await?;
    let schema = ctx.table("telemetry").await?.schema().as_arrow().clone();
    let features = match &job.features {
        Some(f) => {
            for name in f {
                let field = schema.field_with_name(name).map_err(|_| {
                    Error::Input(format!("--features: no column `{name}` in {}", job.data))
                })?;
                if !field.data_type().is_numeric() {
                    return Err(Error::Input(format!(
                        "--features: column `{name}` is {}, not numeric",
                        field.data_type()
                    )));
                }
            }
            f.clone()
        }
        None => default_features(&schema, &partitions)
            .into_iter()
            .filter(|f| Some(f) != job.group_by.as_ref())
            .collect(),
    };
    if features.is_empty() {
        return Err(Error::Input(format!(
            "{}: has no numeric column to train on",
            job.data
        )));
    }
    let filter = job
        .filter
        .as_deref()
        .map_or_else(|| "TRUE".to_string(), |f| format!("({f})"));
    if let Some(f) = &job.filter {
        // Checked alone first, so that its errors point at the user's text, not at ours.
        let check = format!("SELECT 1 FROM telemetry WHERE {filter} LIMIT 0");
        if let Err(e) = ctx.sql(&check).await {
            return Err(Error::Input(format!(
                "--where {f}: {}",
                e.strip_backtrace().replace('\n', " ")
            )));
        }
    }
    if let Some(g) = &job.group_by {
        if schema.field_with_name(g).is_err() {
            return Err(Error::Input(format!(
                "--group-by: no column `{g}` in {}",
                job.data
            )));
        }
        if features.contains(g) {
            return Err(Error::Input(format!(
                "--group-by: `{g}` is also a feature; leave it out of --features"
            )));
        }
    }
    let cols: Vec<String> = features.iter().map(|f| ident(f)).collect();
    Ok(Prepared {
        ctx,
        registry,
        features,
        filter,
        cols,
    })
}

/// Fits one model over every row.
async fn train_one(job: &TrainJob, prepared: Prepared) -> Result<ModelArtifact> {
    let Prepared {
        ctx,
        registry,
        features,
        filter,
        cols,
    } = prepared;

    // Pass 1: medians and MADs.
    let source = format!(
        "(SELECT {} FROM telemetry WHERE {filter}) t",
        cols.join(", ")
    );
    let batch = job
        .quantiles
        .robust_pass(&ctx, &source, &cols, false)
        .await?;
    let rows_seen = batch.column(0).as_primitive::<Int64Type>().value(0) as u64;
    if rows_seen == 0 {
        return Err(Error::Data(format!(
            "{}: no rows{}",
            job.data,
            job.filter
                .as_ref()
                .map_or(String::new(), |f| format!(" match --where {f}"))
        )));
    }
    let mut stats = Vec::with_capacity(features.len());
    for (j, name) in features.iter().enumerate() {
        let (Some(median), Some(mad)) = (
            f64_field(&batch, j + 1, "median"),
            f64_field(&batch, j + 1, "mad"),
        ) else {
            return Err(Error::Data(format!(
                "{}: feature `{name}` has no finite value",
                job.data
            )));
        };
        if let Some(e) = too_large(name, median, mad) {
            return Err(Error::Data(format!("{}: {e}", job.data)));
        }
        let counts = batch
            .column(j + 1)
            .as_struct()
            .column_by_name("count")
            .map(|c| c.as_primitive::<UInt64Type>().value(0));
        stats.push(RobustStats {
            count: counts.unwrap_or_default(),
            median,
            mad,
            mean_ad: f64_field(&batch, j + 1, "mean_ad").unwrap_or(0.0),
            low: f64_field(&batch, j + 1, "low").unwrap_or(f64::NAN),
            high: f64_field(&batch, j + 1, "high").unwrap_or(f64::NAN),
        });
    }
    let standardizer = Standardizer::new(&stats, job.options.tail_scale);
    let z: Vec<String> = (0..features.len())
        .map(|j| {
            format!(
                "(({} - {}) / {})",
                cols[j],
                literal(standardizer.median[j]),
                literal(standardizer.scale[j])
            )
        })
        .collect();
    let cut = job.options.robust_z_cut;
    let inside = z
        .iter()
        .map(|z| format!("abs({z}) <= {}", literal(cut)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let base = format!("{filter} AND {inside}");

    // Pass 2 (and the refit): co-moments of the standardized rows; then the SPE quantiles.
    let fit = |extra: String| {
        let ctx = &ctx;
        let z = &z;
        let base = &base;
        async move {
            let sql = format!(
                "SELECT pca_fit({}) FROM telemetry WHERE {base}{extra}",
                z.join(", ")
            );
            let batch = collect(ctx, &sql).await?;
            let s = batch.column(0).as_struct();
            if s.is_null(0) {
                return Err(Error::Data(format!(
                    "no row lies inside the robust cut |z| <= {cut}"
                )));
            }
            let count = s.column(0).as_primitive::<UInt64Type>().value(0);
            let list = |i: usize| {
                s.column(i)
                    .as_list::<i32>()
                    .value(0)
                    .as_primitive::<Float64Type>()
                    .values()
                    .to_vec()
            };
            CoMoments::from_parts(z.len(), count, list(1), list(2))
                .ok_or_else(|| Error::Data("pca_fit returned a state of the wrong width".into()))
        }
    };
    // A fitted PCA as a temporary model of the session, scored by the returned expression.
    let register = |name: &str, pca: &tads_model::Pca| -> Result<String> {
        register_temporary(&registry, name, &features, &standardizer, pca, job)?;
        Ok(format!("pca_score('{name}', {})", cols.join(", ")))
    };
    let quantiles = |score: String, extra: String, qs: Vec<f64>| {
        let ctx = &ctx;
        let base = &base;
        async move {
            let select = percentiles(job.quantiles, &score, &qs);
            let batch = collect(
                ctx,
                &format!("SELECT {select} FROM telemetry WHERE {base}{extra}"),
            )
            .await?;
            Ok::<_, Error>(
                (0..qs.len())
                    .map(|i| f64_at(&batch, i, 0))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let invalid = |e: String| Error::Data(format!("{}: {e}", job.data));
    let mut extra = String::new();
    let first = match fit(String::new()).await {
        Ok(m) => pca::fit(&m, job.options.k_rule).map(|p| (m, p)),
        Err(e) => Err(e.to_string()),
    };
    let (mut moments, mut pca) = match first {
        Ok(fitted) => fitted,
        Err(e) => {
            // Inside the robust cut a sparse metric (mostly one value) can be left with that
            // value alone: fit on every row of the filter instead, `(filter AND cut) OR filter`.
            let all = format!(" OR ({filter})");
            let m = fit(all.clone()).await.map_err(|_| invalid(e.clone()))?;
            let p = pca::fit(&m, job.options.k_rule).map_err(|_| invalid(e))?;
            extra = all;
            (m, p)
        }
    };
    if let Some(trim) = job.options.trim.filter(|t| *t > 0.0) {
        // The refit keeps the rows the first fit scores at or below its (1 - trim) quantile.
        let first = register("__tads_trim", &pca)?;
        let q = quantiles(first.clone(), String::new(), vec![1.0 - trim]).await?;
        if let Some(limit) = q[0] {
            extra = format!(" AND {first} <= {}", literal(limit));
            moments = fit(extra.clone()).await?;
            pca = pca::fit(&moments, job.options.k_rule).map_err(invalid)?;
        }
    }
    let q = quantiles(register("__tads_train", &pca)?, extra, vec![0.99, 0.999]).await?;
    let fitted = Fitted {
        standardizer,
        pca,
        rows_used: moments.count(),
        spe_quantiles: (q[0], q[1]),
    };
    let model = artifact(
        &job.name,
        &features,
        &fitted,
        &job.options,
        rows_seen,
        job.data.data_url().as_str(),
        job.filter.clone(),
    )?;
    Ok(model)
}
