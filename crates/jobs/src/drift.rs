//! Drift: a series whose level moves away from its training level and stays there.
//!
//! Real telemetry drifts: a service's traffic grows, a deployment changes a metric's level for
//! good. A model that compares every row with the training level then alerts for days. With
//! `drift.baseline = "previous_day"` (the default), each row is compared with its key's level of
//! the day before instead: before scoring, one `GROUP BY key, day` statement takes the exact
//! median of every metric per key and UTC day (exact, so that the same rows give the same
//! scores whatever the partitioning, a shard or the thread count), and each metric of a row is shifted
//! by how far the previous day's median lies from the model's median, `x − (m_prev − median)`.
//! The model's scales, components and limits are unchanged; an anomaly shorter than a day
//! stands out of its own day as before, while a level that has held for a day becomes the new
//! normal. A day whose previous day has fewer than `drift.min_rows` rows (the first day, a gap)
//! is compared with the training level.
//!
//! The move is reported once per key, not alerted on for days: keys whose previous-day level
//! lies `drift.notice_scales` or more of a metric's scale away from training on two or more days
//! get a [`DriftNotice`] in the run's report and manifest, with the advice to retrain.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, TimeUnit};
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use tads_sql::ModelRegistry;

use crate::train::collect;
use crate::{Result, ident};

/// The name of the shift function a drift-aware score run registers.
pub const FUNCTION: &str = "tads_drift_shift";

const HOUR_US: i64 = 3_600_000_000;

/// How each row's reference level is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The key's per-metric median of the previous UTC day.
    #[default]
    PreviousDay,
    /// The training level (the model's medians) for every row.
    Off,
}

/// The `[drift]` settings of `tads score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftSettings {
    /// The reference level.
    pub baseline: Baseline,
    /// Rows a previous day needs to serve as a baseline.
    pub min_rows: u64,
    /// A move of this many scales (on some metric, two days or more) is reported.
    pub notice_scales: f64,
    /// Take the model's daily cycle (`seasonal` in `model.json`) out of each row: subtract the
    /// profile's value at the row's UTC hour.
    pub seasonal: bool,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            baseline: Baseline::PreviousDay,
            min_rows: 12,
            notice_scales: 3.0,
            seasonal: true,
        }
    }
}

impl DriftSettings {
    /// Checks the values; the message names the bad one.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.notice_scales.is_finite() && self.notice_scales > 0.0) {
            return Err(format!(
                "drift.notice_scales: {} is not a positive number",
                self.notice_scales
            ));
        }
        if self.min_rows == 0 {
            return Err("drift.min_rows: must be at least 1".into());
        }
        Ok(())
    }
}

/// A key whose level moved away from its training level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftNotice {
    /// The key (`host_id`).
    pub key: String,
    /// The metric that moved most.
    pub metric: String,
    /// The largest move, in the metric's scales (signed: above or below training).
    pub scales: f64,
    /// Days compared with a moved level.
    pub days: u64,
    /// The first such day (`YYYY-MM-DD`).
    pub since: String,
}

/// Each (key, day)'s shift per metric, and the notices.
#[derive(Debug, Default)]
pub struct Baselines {
    shifts: HashMap<String, BTreeMap<i64, Vec<f64>>>,
    /// Per key, the daily cycle of its model (24 hours × d), where it has one.
    profiles: HashMap<String, Arc<Vec<Vec<f64>>>>,
    /// Keys that drifted, by key.
    pub notices: Vec<DriftNotice>,
}

/// A key's rows and per-metric medians of one day.
type Level = (i64, Vec<Option<f64>>);

impl Baselines {
    /// The shift of metric `j` of `key` in hour `hour` (hours since the epoch): the previous
    /// day's level minus the training level, plus the model's cycle at that hour of the day.
    fn shift(&self, key: &str, hour: i64, j: usize) -> f64 {
        let day = hour.div_euclid(24);
        let level = self
            .shifts
            .get(key)
            .and_then(|m| m.get(&day))
            .and_then(|s| s.get(j).copied())
            .unwrap_or(0.0);
        let cycle = self
            .profiles
            .get(key)
            .and_then(|p| p.get(hour.rem_euclid(24) as usize))
            .and_then(|h| h.get(j).copied())
            .unwrap_or(0.0);
        level + cycle
    }

    /// Whether any row gets a shift.
    pub fn is_empty(&self) -> bool {
        self.shifts.values().all(BTreeMap::is_empty) && self.profiles.is_empty()
    }
}

/// What the baseline pass needs to know about the run.
pub(crate) struct BaselineQuery<'a> {
    pub(crate) ctx: &'a SessionContext,
    pub(crate) table: &'a str,
    pub(crate) key: &'a str,
    pub(crate) time: &'a str,
    pub(crate) features: &'a [String],
    pub(crate) filter: &'a str,
    /// The model's name, or a group's (members are `<name>/<key>`).
    pub(crate) model: &'a str,
    pub(crate) grouped: bool,
    pub(crate) registry: &'a ModelRegistry,
}

/// One statement: the exact median of each metric per key and UTC day, then each day's
/// shift from the previous day.
pub(crate) async fn baselines(q: &BaselineQuery<'_>, s: &DriftSettings) -> Result<Baselines> {
    // The medians only when the previous day's level is used (the daily cycle alone needs just
    // the keys).
    let d = if s.baseline == Baseline::Off {
        0
    } else {
        q.features.len()
    };
    let medians: String = q.features[..d]
        .iter()
        .map(|f| {
            let x = format!("CAST({} AS DOUBLE)", ident(f));
            format!(", median(CASE WHEN isnan({x}) THEN NULL ELSE {x} END)")
        })
        .collect();
    let key = format!("CAST({} AS VARCHAR)", ident(q.key));
    let day = format!(
        "CAST(floor(to_unixtime({}) / 86400) AS BIGINT)",
        ident(q.time)
    );
    let sql = format!(
        "SELECT {key}, {day}, count(*){medians} FROM {} {} GROUP BY 1, 2",
        q.table,
        if q.filter.is_empty() {
            format!("WHERE {key} IS NOT NULL")
        } else {
            format!("{} AND {key} IS NOT NULL", q.filter)
        }
    );
    let batch = collect(q.ctx, &sql).await?;
    let keys = cast(batch.column(0), &DataType::Utf8)?;
    let keys = keys.as_string::<i32>();
    let days = batch.column(1).as_primitive::<Int64Type>();
    let counts = batch.column(2).as_primitive::<Int64Type>();
    let medians: Vec<ArrayRef> = (0..d)
        .map(|j| cast(batch.column(3 + j), &DataType::Float64))
        .collect::<std::result::Result<_, _>>()?;
    // Per key: day → (rows, medians).
    let mut levels: HashMap<String, BTreeMap<i64, Level>> = HashMap::new();
    for i in 0..batch.num_rows() {
        if keys.is_null(i) || days.is_null(i) {
            continue;
        }
        let m = (0..d)
            .map(|j| {
                let c = medians[j].as_primitive::<Float64Type>();
                (c.is_valid(i) && c.value(i).is_finite()).then(|| c.value(i))
            })
            .collect();
        levels
            .entry(keys.value(i).to_string())
            .or_default()
            .insert(days.value(i), (counts.value(i), m));
    }
    let mut out = Baselines::default();
    for (key, by_day) in levels {
        let name = if q.grouped {
            format!("{}/{key}", q.model)
        } else {
            q.model.to_string()
        };
        let Some(model) = q.registry.get(&name) else {
            continue;
        };
        let (median, scale) = (&model.artifact.median, &model.artifact.scale);
        if s.seasonal
            && let Some(c) = &model.artifact.seasonal
        {
            out.profiles
                .insert(key.clone(), Arc::new(c.profile.clone()));
        }
        if s.baseline == Baseline::Off {
            continue;
        }
        let mut shifts = BTreeMap::new();
        let mut worst: Option<(usize, f64)> = None;
        let (mut moved_days, mut since) = (0u64, None);
        let mut previous: Option<(i64, &Level)> = None;
        for (&day, level) in &by_day {
            if let Some((p, (rows, m))) = previous
                && day - p == 1
                && *rows as u64 >= s.min_rows
            {
                let shift: Vec<f64> = (0..d)
                    .map(|j| m[j].map_or(0.0, |v| v - median[j]))
                    .collect();
                let mut moved = false;
                for (j, v) in shift.iter().enumerate() {
                    let scales = v / scale[j];
                    if scales.abs() >= s.notice_scales {
                        moved = true;
                    }
                    if worst.is_none_or(|(_, w)| scales.abs() > w.abs()) {
                        worst = Some((j, scales));
                    }
                }
                if moved {
                    moved_days += 1;
                    since.get_or_insert(day);
                }
                shifts.insert(day, shift);
            }
            previous = Some((day, level));
        }
        if moved_days >= 2
            && let (Some((j, scales)), Some(since)) = (worst, since)
        {
            out.notices.push(DriftNotice {
                key: key.clone(),
                metric: q.features[j].clone(),
                scales,
                days: moved_days,
                since: chrono::DateTime::from_timestamp(since * 86_400, 0)
                    .map_or_else(String::new, |t| t.format("%Y-%m-%d").to_string()),
            });
        }
        out.shifts.insert(key, shifts);
    }
    out.notices.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The model's metrics as the scoring plans read them: the columns, or with a drift baseline
/// each column shifted by its key's previous-day level (`tads_drift_shift`), and the drift
/// notices. Without the key and time columns there is no baseline.
pub(crate) async fn metrics(
    job: &crate::score::ScoreJob,
    ctx: &SessionContext,
    registry: &ModelRegistry,
    model: &crate::score::ModelRef,
    schema: &Schema,
    partitions: &[String],
    filter: &str,
) -> Result<(String, Vec<crate::drift::DriftNotice>)> {
    let plain = || {
        model
            .features
            .iter()
            .map(|f| ident(f))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rules = &job.config.alerts;
    let settings = &job.config.drift;
    let usable = (settings.baseline != Baseline::Off || settings.seasonal)
        && crate::alerts::check_columns(schema, rules, "", false).is_ok()
        && !partitions.contains(&rules.key)
        && !partitions.contains(&rules.time);
    if !usable {
        return Ok((plain(), Vec::new()));
    }
    let query = BaselineQuery {
        ctx,
        table: "input",
        key: &rules.key,
        time: &rules.time,
        features: &model.features,
        filter,
        model: &model.name,
        grouped: model.group_by.is_some(),
        registry,
    };
    let found = Arc::new(baselines(&query, settings).await?);
    let notices = found.notices.clone();
    if found.is_empty() {
        return Ok((plain(), notices));
    }
    ctx.register_udf(ShiftFunction::udf(found));
    let (key, time) = (ident(&rules.key), ident(&rules.time));
    let metrics = model
        .features
        .iter()
        .enumerate()
        .map(|(j, f)| {
            format!(
                "(CAST({} AS DOUBLE) - {FUNCTION}({key}, {time}, {j}))",
                ident(f)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok((metrics, notices))
}

/// `tads_drift_shift(key, time, j)`: how far the key's previous-day level of metric `j` (0-based,
/// in the model's feature order) lies from the model's median; 0 where there is no baseline.
#[derive(Debug)]
pub(crate) struct ShiftFunction {
    baselines: Arc<Baselines>,
    signature: Signature,
}

impl ShiftFunction {
    pub(crate) fn udf(baselines: Arc<Baselines>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            baselines,
            signature: Signature::any(3, Volatility::Immutable),
        })
    }
}

impl PartialEq for ShiftFunction {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.baselines, &other.baselines)
    }
}
impl Eq for ShiftFunction {}
impl std::hash::Hash for ShiftFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        FUNCTION.hash(state);
    }
}

impl ScalarUDFImpl for ShiftFunction {
    fn name(&self) -> &str {
        FUNCTION
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [key, time, j] = arrays.as_slice() else {
            return exec_err!("{FUNCTION}: expects (key, time, metric index)");
        };
        let j = cast(j, &DataType::Int64)?;
        let j = j.as_primitive::<Int64Type>();
        if j.is_empty() || j.is_null(0) {
            return exec_err!("{FUNCTION}: the metric index must be a number");
        }
        let j = j.value(0) as usize;
        let keys = cast(key, &DataType::Utf8)?;
        let keys = keys.as_string::<i32>();
        let times = cast(time, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let times = times.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        let mut out = Vec::with_capacity(n);
        // Rows come in runs of one key, day and hour: look each run up once.
        let mut last: Option<(usize, i64, f64)> = None;
        for i in 0..n {
            if keys.is_null(i) || times.is_null(i) {
                out.push(0.0);
                continue;
            }
            let hour = times.value(i).div_euclid(HOUR_US);
            let shift = match last {
                Some((r, h, v)) if h == hour && keys.value(r) == keys.value(i) => v,
                _ => {
                    let v = self.baselines.shift(keys.value(i), hour, j);
                    last = Some((i, hour, v));
                    v
                }
            };
            out.push(shift);
        }
        Ok(ColumnarValue::Array(Arc::new(Float64Array::from(out))))
    }
}
