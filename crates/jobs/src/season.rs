//! Trains the seasonal baseline detector (`tads train --seasonal-baseline`, see
//! [`tads_model::season`]): per key (the model, or each member of a group), the period of its
//! metrics and each slot's median and MAD of their distance from the previous day's median.
//!
//! Four statements over the training rows, each grouped by key and a time bucket, their small
//! results joined from memory: the day medians; the hourly medians of the distances, from which
//! the period is found in Rust; each slot's median, then its MAD; and, when a training tail is
//! asked for, its quantile of the largest |z|.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use tads_model::season::{self, Detected, SlotStat};
use tads_model::{ModelArtifact, ModelGroup, SeasonParams};

use crate::seasonal::TIME;
use crate::train::{amend, amend_members, collect_rows, f64_at};
use crate::{Result, ident, nan_as_null};

/// What the statements need.
pub(crate) struct BaselineInput<'a> {
    pub(crate) ctx: &'a SessionContext,
    pub(crate) cols: &'a [String],
    pub(crate) filter: &'a str,
    pub(crate) mode: crate::train::Quantiles,
    pub(crate) tail_quantile: Option<f64>,
}

const DAYS: &str = "__tads_season_days";
const PERIODS: &str = "__tads_season_periods";
const SLOTS: &str = "__tads_season_slots";
const FINAL: &str = "__tads_season_final";

/// The key expression: `''` for one model, the group column as text for a group.
fn key_sql(key: Option<&str>) -> String {
    key.map_or_else(
        || "''".to_string(),
        |k| format!("CAST({} AS VARCHAR)", ident(k)),
    )
}

/// Registers `columns` as the in-memory table `name`.
pub(crate) fn register(
    ctx: &SessionContext,
    name: &str,
    columns: Vec<(String, ArrayRef)>,
) -> Result<()> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(datafusion::error::DataFusionError::from)?;
    ctx.deregister_table(name)?;
    ctx.register_table(
        name,
        Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
    )?;
    Ok(())
}

/// The training rows as `w(__k, __hr, __x{j}, __w{j})`: the key, the hour since the epoch, each
/// value and its distance from the previous day's median, as the scoring plan's drift baseline
/// measures a row (the day medians are joined from memory; the first day has none, and drops
/// out). Registers the day medians as a table that the caller deregisters (`forget_days`).
/// With `per`, each day's medians are those of the row's own value of that column within its
/// key (as scoring's drift baseline takes each host's own), not of the key's rows together.
pub(crate) async fn rows_sql(
    input: &BaselineInput<'_>,
    key: Option<&str>,
    per: Option<&str>,
) -> Result<String> {
    let ts = ident(TIME);
    let k = key_sql(key);
    let p = crate::seasonal::per_sql(per);
    let d = input.cols.len();
    let day = format!("CAST(floor(to_unixtime({ts}) / 86400) AS BIGINT)");
    let hour = format!("CAST(floor(to_unixtime({ts}) / 3600) AS BIGINT)");
    let list = |f: &dyn Fn(usize) -> String| (0..d).map(f).collect::<Vec<_>>().join(", ");
    let filter = input.filter;
    crate::train::in_memory(
        input.ctx,
        DAYS,
        &format!(
            "SELECT {k} AS __k, {p} AS __p, {day} AS __day, {} FROM telemetry \
             WHERE {filter} AND {ts} IS NOT NULL GROUP BY 1, 2, 3",
            list(&|j| format!(
                "{} AS __m{j}",
                input.mode.small_median(&nan_as_null(&input.cols[j]))
            ))
        ),
    )
    .await?;
    Ok(format!(
        "WITH t AS (SELECT {k} AS __k, {p} AS __p, {day} AS __day, {hour} AS __hr, {} \
           FROM telemetry WHERE {filter} AND {ts} IS NOT NULL), \
         w AS (SELECT t.__k, t.__hr, {}, {} FROM t JOIN {DAYS} d ON t.__k = d.__k \
           AND t.__p = d.__p AND t.__day = d.__day + 1)",
        list(&|j| format!("{} AS __x{j}", nan_as_null(&input.cols[j]))),
        list(&|j| format!("t.__x{j}")),
        list(&|j| format!("t.__x{j} - d.__m{j} AS __w{j}")),
    ))
}

/// Deregisters the day medians `rows_sql` registered.
pub(crate) fn forget_days(ctx: &SessionContext) -> Result<()> {
    ctx.deregister_table(DAYS)?;
    Ok(())
}

/// Per key, the period found in its hourly medians.
async fn periods(input: &BaselineInput<'_>, rows: &str) -> Result<BTreeMap<String, Detected>> {
    let d = input.cols.len();
    Ok(hourly(input, rows)
        .await?
        .into_iter()
        .filter_map(|(k, h)| season::detect(&h, d).map(|p| (k, p)))
        .collect())
}

/// Per key, each feature's median distance from the previous day's median per hour since the
/// epoch (the rows `rows` makes).
pub(crate) async fn hourly(
    input: &BaselineInput<'_>,
    rows: &str,
) -> Result<BTreeMap<String, BTreeMap<i64, Vec<Option<f64>>>>> {
    let d = input.cols.len();
    let medians = (0..d)
        .map(|j| input.mode.small_median(&format!("__w{j}")))
        .collect::<Vec<_>>()
        .join(", ");
    let batch = collect_rows(
        input.ctx,
        &format!("{rows} SELECT __k, __hr, {medians} FROM w GROUP BY 1, 2"),
    )
    .await?;
    let keys = crate::train_groups::keys_of(&batch)?;
    let hours = batch.column(1).as_primitive::<Int64Type>();
    let mut hourly: BTreeMap<String, BTreeMap<i64, Vec<Option<f64>>>> = BTreeMap::new();
    for (i, key) in keys.into_iter().enumerate() {
        if hours.is_valid(i) {
            let values = (0..d).map(|j| f64_at(&batch, 2 + j, i)).collect();
            hourly
                .entry(key)
                .or_default()
                .insert(hours.value(i), values);
        }
    }
    Ok(hourly)
}

/// Per key, each slot's statistics (`slots[s][j]`).
async fn slots(
    input: &BaselineInput<'_>,
    rows: &str,
    found: &BTreeMap<String, Detected>,
) -> Result<BTreeMap<String, Vec<Vec<SlotStat>>>> {
    let d = input.cols.len();
    register(
        input.ctx,
        PERIODS,
        vec![
            (
                "__k".into(),
                Arc::new(StringArray::from_iter_values(found.keys())),
            ),
            (
                "__p".into(),
                Arc::new(Int64Array::from_iter_values(
                    found.values().map(|f| i64::from(f.period_hours)),
                )),
            ),
        ],
    )?;
    let slot = "w.__hr % p.__p";
    let list = |f: &dyn Fn(usize) -> String| (0..d).map(f).collect::<Vec<_>>().join(", ");
    crate::train::in_memory(
        input.ctx,
        SLOTS,
        &format!(
            "{rows} SELECT w.__k, {slot} AS __slot, {}, {} FROM w JOIN {PERIODS} p ON w.__k = p.__k \
             GROUP BY 1, 2",
            list(&|j| format!("{} AS __c{j}", input.mode.small_median(&format!("w.__w{j}")))),
            list(&|j| format!("count(w.__w{j}) AS __n{j}")),
        ),
    )
    .await?;
    let batch = collect_rows(
        input.ctx,
        &format!(
            "{rows} SELECT w.__k, {slot} AS __slot, {}, {}, {} FROM w JOIN {PERIODS} p ON w.__k = p.__k \
             JOIN {SLOTS} s ON s.__k = w.__k AND s.__slot = {slot} GROUP BY 1, 2, {}",
            list(&|j| format!("s.__c{j}")),
            list(&|j| input.mode.small_median(&format!("abs(w.__w{j} - s.__c{j})"))),
            list(&|j| format!("s.__n{j}")),
            list(&|j| format!("s.__c{j}, s.__n{j}")),
        ),
    )
    .await?;
    let keys = crate::train_groups::keys_of(&batch)?;
    let at = |c: usize, i: usize| f64_at(&batch, c, i);
    let mut out: BTreeMap<String, Vec<Vec<SlotStat>>> = BTreeMap::new();
    for (i, key) in keys.into_iter().enumerate() {
        let (Some(p), Some(s)) = (found.get(&key), at(1, i)) else {
            continue;
        };
        let table = out
            .entry(key)
            .or_insert_with(|| vec![vec![SlotStat::default(); d]; p.period_hours as usize]);
        let Some(row) = table.get_mut(s as usize) else {
            continue;
        };
        for (j, stat) in row.iter_mut().enumerate() {
            *stat = SlotStat {
                rows: at(2 + 2 * d + j, i).map_or(0, |n| n as u64),
                median: at(2 + j, i),
                mad: at(2 + d + j, i),
            };
        }
    }
    input.ctx.deregister_table(PERIODS)?;
    input.ctx.deregister_table(SLOTS)?;
    Ok(out)
}

/// A key's model, the period found, its slots' statistics and the section built from them.
struct Found<'a> {
    model: &'a ModelArtifact,
    period: Detected,
    stats: Vec<Vec<SlotStat>>,
    section: SeasonParams,
}

/// Per key, the training tail of the largest |z| of its section, measured in the training rows'
/// space: a feature with its own slot statistics from the previous day's median (`__r` = 1) by its slot
/// median, the others from their value by the model's median. One row per key and slot goes
/// into memory.
async fn tails(
    input: &BaselineInput<'_>,
    rows: &str,
    q: f64,
    built: &BTreeMap<String, Found<'_>>,
) -> Result<BTreeMap<String, f64>> {
    let d = input.cols.len();
    let (mut keys, mut periods, mut slot) = (Vec::new(), Vec::new(), Vec::new());
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); 3 * d];
    for (key, f) in built {
        for s in 0..f.period.period_hours as usize {
            keys.push(key.clone());
            periods.push(i64::from(f.period.period_hours));
            slot.push(s as i64);
            for j in 0..d {
                let own = season::own_stat(&f.period, j, f.stats.get(s).and_then(|r| r.get(j)));
                let (r, c) = own.map_or((0.0, f.model.median[j]), |(m, _)| (1.0, m));
                columns[j].push(r);
                columns[d + j].push(c);
                columns[2 * d + j].push(f.section.scale[s][j]);
            }
        }
    }
    let mut table: Vec<(String, ArrayRef)> = vec![
        ("__k".into(), Arc::new(StringArray::from(keys))),
        ("__p".into(), Arc::new(Int64Array::from(periods))),
        ("__slot".into(), Arc::new(Int64Array::from(slot))),
    ];
    for (i, c) in columns.into_iter().enumerate() {
        let name = ["__r", "__c", "__s"][i / d];
        table.push((format!("{name}{}", i % d), Arc::new(Float64Array::from(c))));
    }
    register(input.ctx, FINAL, table)?;
    // x − r·(x − w) is w (the distance from the previous day's median) where r is 1, else x.
    let z: Vec<String> = (0..d)
        .map(|j| format!("abs(w.__x{j} - f.__r{j} * (w.__x{j} - w.__w{j}) - f.__c{j}) / f.__s{j}"))
        .collect();
    let zmax = if d == 1 {
        z[0].clone()
    } else {
        format!("greatest({})", z.join(", "))
    };
    let batch = collect_rows(
        input.ctx,
        &format!(
            "{rows} SELECT w.__k, {} FROM w JOIN {FINAL} f ON f.__k = w.__k \
             AND f.__slot = w.__hr % f.__p GROUP BY 1",
            input.mode.quantile(q, &zmax)
        ),
    )
    .await?;
    input.ctx.deregister_table(FINAL)?;
    let keys = crate::train_groups::keys_of(&batch)?;
    Ok(keys
        .into_iter()
        .enumerate()
        .filter_map(|(i, k)| {
            f64_at(&batch, 1, i)
                .filter(|v| v.is_finite())
                .map(|v| (k, v))
        })
        .collect())
}

/// The sections of the models `models` (by key; `""` for one model): those whose training data
/// repeats over a day or a week.
async fn sections(
    input: &BaselineInput<'_>,
    key: Option<&str>,
    models: &BTreeMap<String, &ModelArtifact>,
) -> Result<BTreeMap<String, SeasonParams>> {
    let per = crate::seasonal::per_column(input.ctx, key).await?;
    let rows = rows_sql(input, key, per).await?;
    let found: BTreeMap<String, Detected> = periods(input, &rows)
        .await?
        .into_iter()
        .filter(|(k, _)| models.contains_key(k))
        .collect();
    let mut built: BTreeMap<String, Found<'_>> = BTreeMap::new();
    if !found.is_empty() {
        let mut stats = slots(input, &rows, &found).await?;
        for (k, period) in found {
            let (Some(model), Some(stats)) = (models.get(&k).copied(), stats.remove(&k)) else {
                continue;
            };
            let section = season::build(model, &period, &stats, TIME);
            built.insert(
                k,
                Found {
                    model,
                    period,
                    stats,
                    section,
                },
            );
        }
    }
    let tails = match input.tail_quantile {
        Some(q) if !built.is_empty() => tails(input, &rows, q, &built).await?,
        _ => BTreeMap::new(),
    };
    forget_days(input.ctx)?;
    Ok(built
        .into_iter()
        .map(|(k, f)| {
            let tail = tails.get(&k).copied();
            (k, SeasonParams { tail, ..f.section })
        })
        .collect())
}

fn note(m: &ModelArtifact) {
    eprintln!(
        "note: model `{}`: no seasonal baseline (its training data shows no daily or weekly cycle: \
         no metric's hourly medians correlate by {} or more at 24 or 168 hours, or it covers less \
         than a week, or it has no timestamp column `{TIME}`)",
        m.name,
        season::MIN_STRENGTH
    );
}

/// A group's members by their key's text, as the per-key statements of the history detectors
/// (this one and the forecast residual) return their sections.
pub(crate) fn members_by_key(group: &ModelGroup) -> BTreeMap<String, &ModelArtifact> {
    group
        .members
        .iter()
        .map(|m| (group.key_of(m).to_string(), m))
        .collect()
}

/// Finds and stores the seasonal baseline of one model.
pub(crate) async fn single(
    input: &BaselineInput<'_>,
    model: ModelArtifact,
) -> Result<ModelArtifact> {
    let found = if crate::seasonal::has_time(input.ctx).await? {
        sections(input, None, &BTreeMap::from([(String::new(), &model)])).await?
    } else {
        BTreeMap::new()
    };
    let section = found.into_values().next();
    if section.is_none() {
        note(&model);
    }
    amend(model, |m| m.season = section)
}

/// Finds and stores the seasonal baseline of each member of a group, by the group's column.
pub(crate) async fn group(input: &BaselineInput<'_>, group: ModelGroup) -> Result<ModelGroup> {
    let mut found = if crate::seasonal::has_time(input.ctx).await? {
        sections(input, Some(&group.group_by), &members_by_key(&group)).await?
    } else {
        BTreeMap::new()
    };
    let missing = group.members.len() - found.len();
    if missing > 0 {
        eprintln!(
            "note: group `{}`: {missing} of {} members have no seasonal baseline (no daily or weekly cycle found in their training data)",
            group.name,
            group.members.len()
        );
    }
    amend_members(group, |key, m| m.season = found.remove(key))
}
