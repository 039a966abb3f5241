//! The training tail of each signal: `percentile_cont(q)` of the SPE, T² and largest robust |z|
//! over every training row, one SQL statement (one `GROUP BY` for a group of models), written
//! into the model as `thresholds.tail`.
//!
//! The limits of a model come from the rows inside its robust cut and from Gaussian theory
//! (Jackson–Mudholkar, the F distribution, the |z| cut). Real telemetry's normal behaviour has
//! heavier tails than that (quantized, sparse and bursty metrics), and those limits then flag a
//! large share of ordinary rows. The tail is measured over all the training rows, so the fusion
//! can raise each limit to it (`fusion.tail`): where the training data is Gaussian the limits
//! stay as they are, where it is not they widen to keep the training data's own rate.

use std::collections::BTreeMap;

use datafusion::prelude::SessionContext;
use tads_model::{ModelArtifact, ModelGroup, Tail};
use tads_sql::ModelRegistry;

use crate::train::{amend, amend_members, collect, f64_at, percentiles};
use crate::{Result, ident};

/// The default quantile: the limits keep at most 5 % of the training rows above them.
pub const DEFAULT_QUANTILE: f64 = 0.95;

/// What the statements need: the session with the training table `telemetry`, its registry,
/// the feature columns (quoted) and the training filter.
pub(crate) struct TailInput<'a> {
    pub(crate) ctx: &'a SessionContext,
    pub(crate) registry: &'a ModelRegistry,
    pub(crate) cols: &'a [String],
    pub(crate) filter: &'a str,
    pub(crate) quantile: f64,
    pub(crate) mode: crate::train::Quantiles,
}

fn tail_of(
    batch: &datafusion::arrow::array::RecordBatch,
    first: usize,
    row: usize,
    q: f64,
) -> Tail {
    let positive = |v: Option<f64>| v.filter(|v| v.is_finite() && *v > 0.0);
    Tail {
        quantile: q,
        spe: positive(f64_at(batch, first, row)),
        t2: positive(f64_at(batch, first + 1, row)),
        zmax: positive(f64_at(batch, first + 2, row)),
    }
}

fn select(mode: crate::train::Quantiles, model_sql: &str, cols: &[String], q: f64) -> String {
    let x = cols.join(", ");
    ["pca_score", "pca_t2", "mad_zmax"]
        .map(|f| percentiles(mode, &format!("{f}({model_sql}, {x})"), &[q]))
        .join(", ")
}

/// Measures and stores the tail of one model (registered under a temporary name).
pub(crate) async fn single(input: &TailInput<'_>, model: ModelArtifact) -> Result<ModelArtifact> {
    let mut temp = model.clone();
    temp.name = "__tads_tail".into();
    input.registry.insert(temp.seal())?;
    let sql = format!(
        "SELECT {} FROM telemetry WHERE {}",
        select(input.mode, "'__tads_tail'", input.cols, input.quantile),
        input.filter
    );
    let batch = collect(input.ctx, &sql).await?;
    amend(model, |m| {
        m.thresholds.tail = Some(tail_of(&batch, 0, 0, input.quantile));
    })
}

/// Measures and stores the tail of each member of a group, by the group's column.
pub(crate) async fn group(input: &TailInput<'_>, group: ModelGroup) -> Result<ModelGroup> {
    let prefix = "__tads_tail";
    for m in &group.members {
        let mut temp = m.clone();
        temp.name = ModelGroup::member_name(prefix, group.key_of(m));
        input.registry.insert(temp.seal())?;
    }
    let key = format!("CAST({} AS VARCHAR)", ident(&group.group_by));
    let model_sql = format!("concat('{prefix}/', {key})");
    // Only the values that got a member: pca_score refuses a model it does not know.
    let values = group
        .members
        .iter()
        .map(|m| format!("'{}'", group.key_of(m).replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {key}, {} FROM telemetry WHERE {} AND {key} IN ({values}) GROUP BY {key}",
        select(input.mode, &model_sql, input.cols, input.quantile),
        input.filter
    );
    let batch = collect(input.ctx, &sql).await?;
    let keys = crate::train_groups::keys_of(&batch)?;
    let tails: BTreeMap<String, Tail> = keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k, tail_of(&batch, 1, i, input.quantile)))
        .collect();
    amend_members(group, |key, m| m.thresholds.tail = tails.get(key).copied())
}
