//! The detectors fitted on a sample of the training rows, k-means (`tads train --kmeans`),
//! Isolation Forest (`--iforest`) and one-class SVM (`--ocsvm`, on the sample's first 1,000 rows): one pass over the training rows keeps a bounded,
//! deterministic sample of their standardized values (the rows with the smallest hash,
//! [`tads_model::kmeans::Sample`], one per partition, merged), and each detector and its limits
//! are fitted on it in memory. A group of models gets one sample per member, standardized by the
//! member's own medians and scales.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tads_model::kmeans::{SAMPLE_ROWS, Sample};
use tads_model::{ModelArtifact, ModelGroup, Scorer};

use crate::train::{amend, amend_members};
use crate::{Error, Result, ident};

/// The rows a group member's sample keeps at most: fewer than a single model's, so that a
/// group of many members stays within memory.
pub(crate) const MEMBER_SAMPLE_ROWS: usize = 2_000;

/// What the sampling pass needs: the session with the training table `telemetry`, the quoted
/// feature columns and the training filter.
pub(crate) struct SampledInput<'a> {
    pub(crate) ctx: &'a SessionContext,
    pub(crate) cols: &'a [String],
    pub(crate) filter: &'a str,
    pub(crate) tail_quantile: Option<f64>,
    /// Fit k-means.
    pub(crate) kmeans: bool,
    /// Grow an Isolation Forest.
    pub(crate) iforest: bool,
    /// Fit a one-class SVM.
    pub(crate) ocsvm: bool,
}

/// Each key's model, prepared for scoring: what standardizes its rows (`Scorer::robust_z`).
type Scorers = HashMap<String, Scorer>;

/// One sample per key (`""` without a group column) of the rows `sql` returns: the key first
/// when `keyed`, then the features as doubles.
async fn samples(
    ctx: &SessionContext,
    sql: &str,
    keyed: bool,
    scorers: Scorers,
    cap: usize,
) -> Result<BTreeMap<String, Sample>> {
    let streams = ctx.sql(sql).await?.execute_stream_partitioned().await?;
    let scorers = Arc::new(scorers);
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in streams {
        let scorers = Arc::clone(&scorers);
        tasks.spawn(async move {
            let mut found: HashMap<String, Sample> = HashMap::new();
            while let Some(batch) = stream.next().await {
                offer_batch(&batch?, keyed, &scorers, cap, &mut found)?;
            }
            Ok::<_, Error>(found)
        });
    }
    let mut merged: BTreeMap<String, Sample> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let part = done.map_err(|e| Error::Data(format!("a k-means task failed: {e}")))??;
        for (key, sample) in part {
            merged
                .entry(key)
                .or_insert_with(|| Sample::new(cap))
                .merge(sample);
        }
    }
    Ok(merged)
}

/// Offers each row of `batch` with every feature present to its key's sample, standardized by
/// its key's model (rows of a key without a model are left out).
fn offer_batch(
    batch: &RecordBatch,
    keyed: bool,
    scorers: &Scorers,
    cap: usize,
    found: &mut HashMap<String, Sample>,
) -> Result<()> {
    let first = usize::from(keyed);
    let keys = keyed
        .then(|| cast(batch.column(0), &DataType::Utf8))
        .transpose()
        .map_err(datafusion::error::DataFusionError::from)?;
    let keys = keys.as_ref().map(|k| k.as_string::<i32>());
    let columns: Vec<_> = batch.columns()[first..]
        .iter()
        .map(|c| c.as_primitive::<Float64Type>().clone())
        .collect();
    let mut z = vec![0.0; columns.len()];
    for i in 0..batch.num_rows() {
        let key = keys.map_or("", |k| if k.is_valid(i) { k.value(i) } else { "" });
        let Some(scorer) = scorers.get(key) else {
            continue;
        };
        if columns.iter().any(|c| c.is_null(i)) {
            continue;
        }
        for (j, c) in columns.iter().enumerate() {
            z[j] = scorer.robust_z(j, c.value(i));
        }
        found
            .entry(key.to_string())
            .or_insert_with(|| Sample::new(cap))
            .offer(&z);
    }
    Ok(())
}

/// Sets the detectors `input` asks for in `m`, fitted on `sample`; one that cannot be fitted
/// (no finite row inside the robust cut, or all alike) is left out with a note on stderr.
fn fit(input: &SampledInput<'_>, m: &mut ModelArtifact, sample: Option<&Sample>) {
    let rows = sample.map(Sample::rows).unwrap_or_default();
    let tail = input.tail_quantile;
    let name = m.name.clone();
    let note = |what: &str| {
        eprintln!(
            "note: model `{name}`: no {what} (its {} sampled training rows give nothing to fit: none inside the robust cut, or all alike)",
            rows.len()
        );
    };
    if input.kmeans {
        let found = tads_model::kmeans::train(&rows, m.robust_z_cut, tail);
        if found.is_none() {
            note("k-means section");
        }
        m.kmeans = found;
    }
    if input.iforest {
        let found = tads_model::iforest::train(&rows, tail);
        if found.is_none() {
            note("Isolation Forest");
        }
        m.iforest = found;
    }
    if input.ocsvm {
        let found = tads_model::ocsvm::train(&rows, tail);
        if found.is_none() {
            note("one-class SVM");
        }
        m.ocsvm = found;
    }
}

fn features(input: &SampledInput<'_>) -> String {
    input
        .cols
        .iter()
        .map(|c| format!("CAST({c} AS DOUBLE)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Samples the training rows standardized by `model` and stores the detectors fitted on them.
pub(crate) async fn single(
    input: &SampledInput<'_>,
    model: ModelArtifact,
) -> Result<ModelArtifact> {
    let sql = format!(
        "SELECT {} FROM telemetry WHERE {}",
        features(input),
        input.filter
    );
    let scorers = Scorers::from([(String::new(), Scorer::new(&model))]);
    let found = samples(input.ctx, &sql, false, scorers, SAMPLE_ROWS).await?;
    amend(model, |m| fit(input, m, found.get("")))
}

/// The same for each member of a group, one sample of at most [`MEMBER_SAMPLE_ROWS`] rows per
/// member, by the group's column.
pub(crate) async fn group(input: &SampledInput<'_>, group: ModelGroup) -> Result<ModelGroup> {
    let key = format!("CAST({} AS VARCHAR)", ident(&group.group_by));
    let sql = format!(
        "SELECT {key}, {} FROM telemetry WHERE {}",
        features(input),
        input.filter
    );
    let scorers: Scorers = group
        .members
        .iter()
        .map(|m| (group.key_of(m).to_string(), Scorer::new(m)))
        .collect();
    let found = samples(input.ctx, &sql, true, scorers, MEMBER_SAMPLE_ROWS).await?;
    amend_members(group, |k, m| fit(input, m, found.get(k)))
}
