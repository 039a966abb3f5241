//! Trains the forecast residual detector (`tads train --forecast`, see
//! [`tads_model::forecast`]): per key (the model, or each member of a group), an MSTL
//! decomposition of each metric's hourly medians and the interval of its training residuals.
//!
//! The training rows are read as the seasonal baseline reads them (each value's distance from
//! the previous day's median, [`crate::season::rows_sql`]); the hourly medians come from the same
//! statement, the decomposition runs in Rust, and two more statements grouped by key measure the
//! residuals' median and interval edges, then (with a training tail asked for) the tail of the
//! largest |z|. The per-slot forecasts are joined from memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use tads_model::forecast::{self, Decomposition, Residuals};
use tads_model::season::cycle_at;
use tads_model::{ForecastParams, ModelArtifact, ModelGroup};

use crate::Result;
use crate::season::{BaselineInput, forget_days, hourly, register, rows_sql};
use crate::seasonal::TIME;
use crate::train::{amend, amend_members, collect_rows, f64_at};

const SLOTS: &str = "__tads_forecast_slots";

/// One key's table rows: its period (profile rows) and, per slot, the values of each column
/// group (`d` values each).
struct KeySlots {
    period: u32,
    slots: Vec<Vec<f64>>,
}

/// Registers `SLOTS(__k, __p, __slot, {prefix}{j} …)`: one row per key and slot, the columns of
/// each prefix in turn (`d` each).
fn register_slots(
    input: &BaselineInput<'_>,
    keys: &BTreeMap<String, KeySlots>,
    prefixes: &[&str],
) -> Result<()> {
    let d = input.cols.len();
    let (mut key, mut period, mut slot) = (Vec::new(), Vec::new(), Vec::new());
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); prefixes.len() * d];
    for (k, t) in keys {
        for (s, values) in t.slots.iter().enumerate() {
            key.push(k.clone());
            period.push(i64::from(t.period));
            slot.push(s as i64);
            for (c, v) in columns.iter_mut().zip(values) {
                c.push(*v);
            }
        }
    }
    let mut table: Vec<(String, ArrayRef)> = vec![
        ("__k".into(), Arc::new(StringArray::from(key))),
        ("__p".into(), Arc::new(Int64Array::from(period))),
        ("__slot".into(), Arc::new(Int64Array::from(slot))),
    ];
    for (i, c) in columns.into_iter().enumerate() {
        let name = format!("{}{}", prefixes[i / d], i % d);
        table.push((name, Arc::new(Float64Array::from(c))));
    }
    register(input.ctx, SLOTS, table)
}

/// `rows` joined with the slot table, each row with its key's slot.
fn joined(rows: &str, select: &str) -> String {
    format!(
        "{rows} SELECT w.__k, {select} FROM w JOIN {SLOTS} f ON f.__k = w.__k \
         AND f.__slot = w.__hr % f.__p GROUP BY 1"
    )
}

/// Per key, each feature's training residuals (distance from the previous day's median less the
/// profile): their median and interval edges.
async fn residuals(
    input: &BaselineInput<'_>,
    rows: &str,
    found: &BTreeMap<String, Decomposition>,
) -> Result<BTreeMap<String, Vec<Residuals>>> {
    let d = input.cols.len();
    let keys = found
        .iter()
        .map(|(k, x)| {
            let t = KeySlots {
                period: x.period_hours(),
                slots: x.profile.clone(),
            };
            (k.clone(), t)
        })
        .collect();
    register_slots(input, &keys, &["__f"])?;
    let r = |j: usize| format!("(w.__w{j} - f.__f{j})");
    let (low, high) = (
        (1.0 - forecast::COVERAGE) / 2.0,
        (1.0 + forecast::COVERAGE) / 2.0,
    );
    let mut select = Vec::with_capacity(3 * d);
    for j in 0..d {
        select.push(input.mode.small_median(&r(j)));
        select.push(input.mode.quantile(low, &r(j)));
        select.push(input.mode.quantile(high, &r(j)));
    }
    let batch = collect_rows(input.ctx, &joined(rows, &select.join(", "))).await?;
    input.ctx.deregister_table(SLOTS)?;
    let keys = crate::train_groups::keys_of(&batch)?;
    Ok(keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let at = |c: usize| f64_at(&batch, 1 + c, i);
            let stats = (0..d)
                .map(|j| Residuals {
                    median: at(3 * j),
                    low: at(3 * j + 1),
                    high: at(3 * j + 2),
                })
                .collect();
            (k, stats)
        })
        .collect())
}

/// Per key, the training tail of the largest |z| of its section, in the training rows' space
/// (each value's distance from the previous day's median).
async fn tails(
    input: &BaselineInput<'_>,
    rows: &str,
    q: f64,
    built: &BTreeMap<String, (&ModelArtifact, ForecastParams)>,
) -> Result<BTreeMap<String, f64>> {
    let d = input.cols.len();
    let keys = built
        .iter()
        .map(|(k, (model, f))| {
            let slots = (0..f.period_hours as usize)
                .map(|s| {
                    // The centre back in the rows' space: the model's median and daily cycle
                    // are what `forecast::build` moved it by.
                    let c =
                        (0..d).map(|j| f.center[s][j] - model.median[j] + cycle_at(model, s, j));
                    c.chain(f.lower.iter().copied())
                        .chain(f.upper.iter().copied())
                        .collect()
                })
                .collect();
            let t = KeySlots {
                period: f.period_hours,
                slots,
            };
            (k.clone(), t)
        })
        .collect();
    register_slots(input, &keys, &["__c", "__l", "__u"])?;
    let z: Vec<String> = (0..d)
        .map(|j| {
            format!(
                "abs(w.__w{j} - f.__c{j}) / CASE WHEN w.__w{j} >= f.__c{j} THEN f.__u{j} ELSE f.__l{j} END"
            )
        })
        .collect();
    let zmax = if d == 1 {
        z[0].clone()
    } else {
        format!("greatest({})", z.join(", "))
    };
    let batch = collect_rows(input.ctx, &joined(rows, &input.mode.quantile(q, &zmax))).await?;
    input.ctx.deregister_table(SLOTS)?;
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

/// The sections of the models `models` (by key; `""` for one model): those with hours of
/// training data after their first day.
async fn sections(
    input: &BaselineInput<'_>,
    key: Option<&str>,
    models: &BTreeMap<String, &ModelArtifact>,
) -> Result<BTreeMap<String, ForecastParams>> {
    let d = input.cols.len();
    let per = crate::seasonal::per_column(input.ctx, key).await?;
    let rows = rows_sql(input, key, per).await?;
    let found: BTreeMap<String, Decomposition> = hourly(input, &rows)
        .await?
        .into_iter()
        .filter(|(k, _)| models.contains_key(k))
        .filter_map(|(k, h)| forecast::decompose(&h, d).map(|x| (k, x)))
        .collect();
    let mut built: BTreeMap<String, (&ModelArtifact, ForecastParams)> = BTreeMap::new();
    if !found.is_empty() {
        let mut stats = residuals(input, &rows, &found).await?;
        for (k, dec) in found {
            let Some(model) = models.get(&k).copied() else {
                continue;
            };
            let r = stats.remove(&k).unwrap_or_default();
            built.insert(k, (model, forecast::build(model, &dec, &r, TIME)));
        }
    }
    let tails = match input.tail_quantile {
        Some(q) if !built.is_empty() => tails(input, &rows, q, &built).await?,
        _ => BTreeMap::new(),
    };
    forget_days(input.ctx)?;
    Ok(built
        .into_iter()
        .map(|(k, (_, f))| {
            let tail = tails.get(&k).copied();
            (k, ForecastParams { tail, ..f })
        })
        .collect())
}

const WHY_NOT: &str = "it needs a timestamp column `ts` and rows after the first training day, \
                       each measured from the previous day's median";

/// Fits and stores the forecast residual detector of one model.
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
        eprintln!("note: model `{}`: no forecast: {WHY_NOT}", model.name);
    }
    amend(model, |m| m.forecast = section)
}

/// Fits and stores the forecast residual detector of each member of a group, by the group's
/// column.
pub(crate) async fn group(input: &BaselineInput<'_>, group: ModelGroup) -> Result<ModelGroup> {
    let mut found = if crate::seasonal::has_time(input.ctx).await? {
        sections(
            input,
            Some(&group.group_by),
            &crate::season::members_by_key(&group),
        )
        .await?
    } else {
        BTreeMap::new()
    };
    let missing = group.members.len() - found.len();
    if missing > 0 {
        eprintln!(
            "note: group `{}`: {missing} of {} members have no forecast: {WHY_NOT}",
            group.name,
            group.members.len()
        );
    }
    amend_members(group, |key, m| m.forecast = found.remove(key))
}
