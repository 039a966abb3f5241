//! The daily cycle of a model's features, found in the training data.
//!
//! Two statements: the median of every feature per UTC day (and group value, and host where the
//! data has `host_id`), then per UTC hour of the day the median of each row's distance from its
//! day's median. A feature has a cycle
//! when its hours' medians lie at least one scale apart; the others get 0. At least three days
//! are needed. Scoring subtracts the row's hour (see [`crate::drift`]).

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use tads_model::{ModelArtifact, ModelGroup, Seasonal};

use crate::train::{amend, amend_members, collect, f64_at};
use crate::{Result, ident, nan_as_null};

/// The time column a daily cycle is looked for in.
pub const TIME: &str = "ts";

/// Days of training data a cycle needs.
const MIN_DAYS: i64 = 3;

/// What the statements need.
pub(crate) struct SeasonInput<'a> {
    pub(crate) ctx: &'a SessionContext,
    pub(crate) cols: &'a [String],
    pub(crate) filter: &'a str,
    pub(crate) mode: crate::train::Quantiles,
}

/// The column whose values each take their own day's median: scoring's drift baseline measures
/// each host from its own previous day (`alerts.key`, `host_id` by default), also in a model of
/// many hosts, so the training statements that measure rows as scoring does follow it.
const PER: &str = "host_id";

/// [`PER`] where the training table has it and the models are not already one per value of it
/// (`key`, the group column).
pub(crate) async fn per_column(
    ctx: &SessionContext,
    key: Option<&str>,
) -> Result<Option<&'static str>> {
    let has = column_type(ctx, PER).await?.is_some();
    Ok((has && key != Some(PER)).then_some(PER))
}

/// The SQL of a row's value of `per` as text (`''` without one).
pub(crate) fn per_sql(per: Option<&str>) -> String {
    per.map_or_else(
        || "''".to_string(),
        |c| format!("COALESCE(CAST({} AS VARCHAR), '')", ident(c)),
    )
}

/// Whether the training table has a timestamp column `ts`.
pub(crate) async fn has_time(ctx: &SessionContext) -> Result<bool> {
    Ok(column_type(ctx, TIME)
        .await?
        .is_some_and(|t| matches!(t, DataType::Timestamp(..))))
}

/// The type of the training table's column `name`, if it has one.
pub(crate) async fn column_type(ctx: &SessionContext, name: &str) -> Result<Option<DataType>> {
    let schema = ctx.table("telemetry").await?.schema().as_arrow().clone();
    Ok(schema
        .field_with_name(name)
        .ok()
        .map(|f| f.data_type().clone()))
}

/// The days seen and the hour-of-day profile (24 hours × d features, `None` where unknown).
type Profile = (i64, Vec<Vec<Option<f64>>>);

/// Per group value (`""` without a group): its [`Profile`].
async fn profiles(input: &SeasonInput<'_>, key: Option<&str>) -> Result<BTreeMap<String, Profile>> {
    let ts = ident(TIME);
    let day = format!("CAST(floor(to_unixtime({ts}) / 86400) AS BIGINT)");
    let hour = format!("(CAST(floor(to_unixtime({ts}) / 3600) AS BIGINT) % 24)");
    let k = key.map_or_else(
        || "''".to_string(),
        |k| format!("CAST({} AS VARCHAR)", ident(k)),
    );
    let p = per_sql(per_column(input.ctx, key).await?);
    let d = input.cols.len();
    let medians = (0..d)
        .map(|j| {
            let m = input.mode.small_median(&nan_as_null(&input.cols[j]));
            format!("{m} AS __m{j}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let values = (0..d)
        .map(|j| format!("{} AS __x{j}", nan_as_null(&input.cols[j])))
        .collect::<Vec<_>>()
        .join(", ");
    let distances = (0..d)
        .map(|j| input.mode.small_median(&format!("t.__x{j} - d.__m{j}")))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = input.filter;
    // The day medians first, joined from memory (see `train::in_memory`).
    let d_table = crate::train::in_memory(
        input.ctx,
        "__tads_day_medians",
        &format!(
            "SELECT {k} AS __k, {p} AS __p, {day} AS __day, {medians} FROM telemetry \
             WHERE {filter} AND {ts} IS NOT NULL GROUP BY 1, 2, 3"
        ),
    )
    .await?;
    let sql = format!(
        "WITH t AS (SELECT {k} AS __k, {p} AS __p, {day} AS __day, {hour} AS __hour, {values} \
           FROM telemetry WHERE {filter} AND {ts} IS NOT NULL) \
         SELECT t.__k, t.__hour, count(DISTINCT t.__day), {distances} \
         FROM {d_table} d JOIN t ON t.__k = d.__k AND t.__p = d.__p AND t.__day = d.__day \
         GROUP BY 1, 2"
    );
    let batch: RecordBatch = collect(input.ctx, &sql).await?;
    input.ctx.deregister_table(&d_table)?;
    let keys = crate::train_groups::keys_of(&batch)?;
    let hours = batch.column(1).as_primitive::<Int64Type>();
    let days = batch.column(2).as_primitive::<Int64Type>();
    let mut out: BTreeMap<String, Profile> = BTreeMap::new();
    for (i, key) in keys.into_iter().enumerate() {
        if hours.is_null(i) {
            continue;
        }
        let h = hours.value(i).rem_euclid(24) as usize;
        let entry = out
            .entry(key)
            .or_insert_with(|| (0, vec![vec![None; d]; 24]));
        entry.0 = entry.0.max(days.value(i));
        for j in 0..d {
            entry.1[h][j] = f64_at(&batch, 3 + j, i).filter(|v| v.is_finite());
        }
    }
    Ok(out)
}

/// The cycle of a model from its profile: features whose hours lie a scale or more apart.
fn seasonal_of(model: &ModelArtifact, days: i64, profile: &[Vec<Option<f64>>]) -> Option<Seasonal> {
    if days < MIN_DAYS {
        return None;
    }
    let d = model.dims();
    let mut table = vec![vec![0.0; d]; 24];
    let mut features = Vec::new();
    for j in 0..d {
        let column: Vec<f64> = profile.iter().filter_map(|h| h[j]).collect();
        if column.len() < 24 {
            continue;
        }
        let (lo, hi) = column
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        if hi - lo >= model.scale[j] {
            for (h, v) in column.iter().enumerate() {
                table[h][j] = *v;
            }
            features.push(model.features[j].clone());
        }
    }
    (!features.is_empty()).then(|| Seasonal {
        time: TIME.to_string(),
        profile: table,
        features,
    })
}

/// Finds and stores the daily cycle of one model.
pub(crate) async fn single(input: &SeasonInput<'_>, model: ModelArtifact) -> Result<ModelArtifact> {
    if !has_time(input.ctx).await? {
        return Ok(model);
    }
    let found = profiles(input, None).await?;
    amend(model, |m| {
        m.seasonal = found.get("").and_then(|(days, p)| seasonal_of(m, *days, p));
    })
}

/// Finds and stores the daily cycle of each member of a group, by the group's column.
pub(crate) async fn group(input: &SeasonInput<'_>, group: ModelGroup) -> Result<ModelGroup> {
    if !has_time(input.ctx).await? {
        return Ok(group);
    }
    let found = profiles(input, Some(&group.group_by)).await?;
    amend_members(group, |key, m| {
        m.seasonal = found
            .get(key)
            .and_then(|(days, p)| seasonal_of(m, *days, p));
    })
}
