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
//! has no such baseline: there each row is compared with its key's level of the
//! `drift.trailing_hours` hours before its own (the median of those hours' medians, the daily
//! cycle taken out, an hour without rows counting as the training level). So a level that moved
//! while no data came in (between training and scoring, most often) alerts for the first half of
//! that window, not for a whole day; an anomaly on such a day that lasts longer than half the
//! window is absorbed into the level, as a day-long one is by the previous-day
//! baseline. The window only looks back, so `tads watch` gives the same scores.
//!
//! A run that walks its files in time order (`score::walked`, the default where the files allow)
//! does not read the rows beforehand: it measures the same medians while it scores, each batch
//! before its rows are scored ([`Streamed`]), so the metrics are read once.
//!
//! The move is reported once per key, not alerted on for days: keys whose previous-day level
//! lies `drift.notice_scales` or more of a metric's scale away from training on two or more days
//! get a [`DriftNotice`] in the run's report and manifest, with the advice to retrain.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use tads_sql::ModelRegistry;

use crate::{Result, ident};

mod carry;
mod field;
mod medians;
mod shifts;
use shifts::{day_shifts, member, notice, profile, trailing_shift};
pub(crate) mod runs;
mod streamed;
pub(crate) use carry::CARRIER;
use medians::{add_levels, day_medians, hour_medians};
pub(crate) use streamed::{ChainLevels, Columns, Stop, Streamed, feeding_table};

/// The name of the shift function a drift-aware score run registers.
pub const FUNCTION: &str = "tads_drift_shift";

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
    /// On a day without a previous-day baseline, the hours before a row's hour whose level it is
    /// compared with (0: the training level; at most 24).
    pub trailing_hours: u32,
    /// When the files are walked in time order, measure the medians in the pass that scores
    /// (the metrics read once) rather than in a pass of their own before it; the same shifts.
    pub streamed: bool,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            baseline: Baseline::PreviousDay,
            min_rows: 12,
            notice_scales: 3.0,
            seasonal: true,
            trailing_hours: 12,
            streamed: true,
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
        if self.trailing_hours > 24 {
            return Err(format!(
                "drift.trailing_hours: {} is more than 24",
                self.trailing_hours
            ));
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

/// The baselines the shift function reads: computed before scoring, or filled in while the files
/// are scored in time order ([`streamed`]), each entry before the first row that needs it.
pub(crate) type Shared = Arc<std::sync::RwLock<Baselines>>;

/// Each (key, day)'s shift per metric, and the notices.
#[derive(Debug, Default)]
pub struct Baselines {
    shifts: HashMap<String, BTreeMap<i64, Vec<f64>>>,
    /// Per key, the shift of each hour (hours since the epoch) of the days without a previous
    /// day's baseline, from the trailing hours' level.
    hourly: HashMap<String, BTreeMap<i64, Vec<f64>>>,
    /// Per key, the daily cycle of its model (24 hours × d), where it has one.
    profiles: HashMap<String, Arc<Vec<Vec<f64>>>>,
    /// Keys that drifted, by key.
    pub notices: Vec<DriftNotice>,
    /// Every key's levels per day that the shifts came from (computed, or given as known).
    pub levels: DayLevels,
}

/// A key's rows and per-metric medians of one day.
pub type Level = (i64, Vec<Option<f64>>);

/// Each key's [`Level`] per UTC day (days since the epoch).
pub type DayLevels = HashMap<String, BTreeMap<i64, Level>>;

impl Baselines {
    /// The shift of every metric of `key` in hour `hour` (hours since the epoch), into `out`:
    /// the previous day's level (or else the trailing hours') minus the training level, plus
    /// the model's cycle at that hour of the day; 0 where there is neither.
    fn shifts_into(&self, key: &str, hour: i64, out: &mut [f64]) {
        let day = hour.div_euclid(24);
        let level = self
            .shifts
            .get(key)
            .and_then(|m| m.get(&day))
            .or_else(|| self.hourly.get(key).and_then(|m| m.get(&hour)));
        let cycle = self
            .profiles
            .get(key)
            .and_then(|p| p.get(hour.rem_euclid(24) as usize));
        for (j, v) in out.iter_mut().enumerate() {
            *v = level.and_then(|s| s.get(j).copied()).unwrap_or(0.0)
                + cycle.and_then(|h| h.get(j).copied()).unwrap_or(0.0);
        }
    }

    /// Whether any row gets a shift.
    pub fn is_empty(&self) -> bool {
        self.shifts.values().all(BTreeMap::is_empty)
            && self.hourly.values().all(BTreeMap::is_empty)
            && self.profiles.is_empty()
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
    /// The run's memory pool in bytes: the medians of one statement hold every value they
    /// cover, so the days are read in windows that fit.
    pub(crate) memory: usize,
    /// Levels already known (`tads watch` keeps those of complete days): the days before the
    /// second field are taken from them, not computed from the table.
    pub(crate) known: Option<(&'a DayLevels, i64)>,
    /// `ctx` runs its plans on a cluster: the medians are then aggregated there (DataFusion's
    /// `GROUP BY`), not from rows brought to this process.
    pub(crate) on_cluster: bool,
}

/// The exact median of each metric per key and UTC day, then each day's shift from the
/// previous day.
pub(crate) async fn baselines(q: &BaselineQuery<'_>, s: &DriftSettings) -> Result<Baselines> {
    // The medians only when the previous day's level is used (the daily cycle alone needs just
    // the keys).
    let d = if s.baseline == Baseline::Off {
        0
    } else {
        q.features.len()
    };
    let batches = day_medians(q, d).await?;
    let mut levels = DayLevels::new();
    for batch in &batches {
        add_levels(batch, d, &mut levels)?;
    }
    if let Some((known, until)) = q.known.filter(|_| d > 0) {
        for (key, days) in known {
            let mine = levels.entry(key.clone()).or_default();
            for (day, level) in days.range(..until) {
                mine.entry(*day).or_insert_with(|| level.clone());
            }
        }
    }
    let mut out = Baselines::default();
    // Per key, its model and the days without a previous day's baseline.
    let mut lacking: Vec<(String, Arc<tads_sql::registry::LoadedModel>, Vec<i64>)> = Vec::new();
    // Days before those `known` have no rows here.
    let scored_from = q.known.map_or(i64::MIN, |(_, until)| until);
    for (key, by_day) in &levels {
        let Some(model) = q.registry.get(&member(q.model, q.grouped, key)) else {
            continue;
        };
        if let Some(profile) = profile(&model, s) {
            out.profiles.insert(key.clone(), profile);
        }
        if s.baseline == Baseline::Off {
            continue;
        }
        let shifts = day_shifts(by_day, &model.artifact.median, s);
        let days: Vec<i64> = by_day
            .range(scored_from..)
            .map(|(day, _)| day)
            .filter(|day| !shifts.contains_key(*day))
            .copied()
            .collect();
        if s.trailing_hours > 0 && !days.is_empty() {
            lacking.push((key.clone(), Arc::clone(&model), days));
        }
        out.notices
            .extend(notice(key, &shifts, &model.artifact.scale, s, q.features));
        out.shifts.insert(key.clone(), shifts);
    }
    out.notices.sort_by(|a, b| a.key.cmp(&b.key));
    out.levels = levels;
    if !lacking.is_empty() {
        out.hourly = trailing(q, s, d, &lacking).await?;
    }
    Ok(out)
}

/// The hourly shifts of the days without a previous day's baseline: each hour's level is the
/// median, per metric, of the medians of the `trailing_hours` hours before it (each less the
/// model's cycle at its hour), where an hour without rows counts as the training level, once
/// those hours hold `min_rows` rows. So a level moves only once it has held for more than half
/// of the hours, also at the start of the data.
async fn trailing(
    q: &BaselineQuery<'_>,
    s: &DriftSettings,
    d: usize,
    lacking: &[(String, Arc<tads_sql::registry::LoadedModel>, Vec<i64>)],
) -> Result<HashMap<String, BTreeMap<i64, Vec<f64>>>> {
    let k = i64::from(s.trailing_hours);
    let mut days: Vec<i64> = lacking
        .iter()
        .flat_map(|(_, _, days)| days.clone())
        .collect();
    days.sort_unstable();
    days.dedup();
    let mut hours = DayLevels::new();
    for batch in &hour_medians(q, d, &days, k).await? {
        add_levels(batch, d, &mut hours)?;
    }
    let mut out = HashMap::new();
    for (key, model, days) in lacking {
        let Some(by_hour) = hours.get(key) else {
            continue;
        };
        let mut shifts = BTreeMap::new();
        for day in days {
            for hour in day * 24..(day + 1) * 24 {
                if !by_hour.contains_key(&hour) {
                    continue;
                }
                if let Some(shift) = trailing_shift(by_hour, hour, model, s, d) {
                    shifts.insert(hour, shift);
                }
            }
        }
        out.insert(key.clone(), shifts);
    }
    Ok(out)
}

/// The table a round of `tads watch` registers for the baseline's medians: its files and the
/// files before them that may hold the previous day's rows.
pub(crate) const CONTEXT: &str = "__tads_context";

/// The drift baseline as a run plans it.
pub(crate) struct Planned {
    /// The model's metrics as the scoring plans read them.
    pub(crate) metrics: String,
    /// The keys that drifted (none yet when the baseline is deferred).
    pub(crate) notices: Vec<DriftNotice>,
    /// The levels per key and day, when the baseline was measured.
    pub(crate) levels: Option<DayLevels>,
    /// The baseline is not measured yet: the baselines the shift function reads, to fill before
    /// scoring ([`fill`]) or while the files are scored in time order ([`Streamed`]).
    pub(crate) deferred: Option<Shared>,
}

/// The model's metrics as the scoring plans read them: the columns, or with a drift baseline
/// each column shifted by its key's previous-day level (`tads_drift_shift`), and the drift
/// notices. Without the key and time columns there is no baseline. With `defer` (and a
/// previous-day baseline) the medians are not read here: see [`Planned::deferred`].
#[allow(clippy::too_many_arguments)]
pub(crate) async fn metrics(
    job: &crate::score::ScoreJob,
    ctx: &SessionContext,
    registry: &ModelRegistry,
    model: &crate::score::ModelRef,
    schema: &Schema,
    partitions: &[String],
    filter: &str,
    defer: bool,
) -> Result<Planned> {
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
        return Ok(Planned {
            metrics: plain(),
            notices: Vec::new(),
            levels: None,
            deferred: None,
        });
    }
    let defer = defer && settings.baseline == Baseline::PreviousDay;
    let (found, notices, levels) = if defer {
        (Baselines::default(), Vec::new(), None)
    } else {
        let (found, notices, levels) = measured(job, ctx, registry, model, filter).await?;
        if found.is_empty() {
            return Ok(Planned {
                metrics: plain(),
                notices,
                levels: Some(levels),
                deferred: None,
            });
        }
        (found, notices, Some(levels))
    };
    let shared: Shared = Arc::new(std::sync::RwLock::new(found));
    ctx.register_udf(ShiftFunction::udf(
        Arc::clone(&shared),
        model.features.len(),
    ));
    ctx.register_udf(field::FieldFunction::udf());
    // One call per row gives every metric's shift as a struct; DataFusion computes the repeated
    // call once per row (common subexpressions) and each field is taken without a copy, by
    // `tads_drift_field` (see `field`: `get_field` would be moved back into one call per
    // metric). On a cluster, where a plan carries the shifts with every call in it, the tables
    // the plans read make the call once, as the column `SHIFT_COLUMN` (see `score::cluster`),
    // whose fields `get_field` takes.
    let (shift, take) = match job.cluster {
        None => (shift_call(job), field::FIELD_FUNCTION),
        Some(_) => (ident(SHIFT_COLUMN), "get_field"),
    };
    let metrics = model
        .features
        .iter()
        .enumerate()
        .map(|(j, f)| {
            format!(
                "(CAST({} AS DOUBLE) - {take}({shift}, '{}'))",
                ident(f),
                field_name(j)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Planned {
        metrics,
        notices,
        levels,
        deferred: defer.then_some(shared),
    })
}

/// Measures a deferred baseline beforehand, as [`metrics`] does without `defer`, into the
/// baselines the shift function reads (replacing whatever a stopped walk wrote); the notices
/// and levels.
pub(crate) async fn fill(
    job: &crate::score::ScoreJob,
    ctx: &SessionContext,
    registry: &ModelRegistry,
    model: &crate::score::ModelRef,
    filter: &str,
    shared: &Shared,
) -> Result<(Vec<DriftNotice>, DayLevels)> {
    let (found, notices, levels) = measured(job, ctx, registry, model, filter).await?;
    match shared.write() {
        Ok(mut s) => *s = found,
        Err(_) => return Err(crate::Error::Data("a scoring task failed".into())),
    }
    Ok((notices, levels))
}

/// The baseline measured beforehand over the run's input, with its notices and its levels
/// (taken out of it).
async fn measured(
    job: &crate::score::ScoreJob,
    ctx: &SessionContext,
    registry: &ModelRegistry,
    model: &crate::score::ModelRef,
    filter: &str,
) -> Result<(Baselines, Vec<DriftNotice>, DayLevels)> {
    let mut found = baselines(&query(job, ctx, registry, model, filter), &job.config.drift).await?;
    let levels = std::mem::take(&mut found.levels);
    let notices = found.notices.clone();
    Ok((found, notices, levels))
}

/// The baseline's statements over the run's input.
fn query<'a>(
    job: &'a crate::score::ScoreJob,
    ctx: &'a SessionContext,
    registry: &'a ModelRegistry,
    model: &'a crate::score::ModelRef,
    filter: &'a str,
) -> BaselineQuery<'a> {
    let rules = &job.config.alerts;
    BaselineQuery {
        ctx,
        table: if job.follow.is_some() {
            CONTEXT
        } else {
            "input"
        },
        key: &rules.key,
        time: &rules.time,
        features: &model.features,
        filter,
        model: &model.name,
        grouped: model.group_by.is_some(),
        registry,
        memory: job.memory_limit(),
        on_cluster: job.cluster.is_some(),
        known: job
            .follow
            .as_ref()
            .and_then(|f| f.levels.as_ref())
            .map(|(levels, until)| (levels.as_ref(), *until)),
    }
}

/// The column that holds [`ShiftFunction`]'s result in the tables a cluster's plans read.
pub(crate) const SHIFT_COLUMN: &str = "__tads_shift";

/// The call of [`ShiftFunction`] on a row.
pub(crate) fn shift_call(job: &crate::score::ScoreJob) -> String {
    let rules = &job.config.alerts;
    format!("{FUNCTION}({}, {})", ident(&rules.key), ident(&rules.time))
}

/// The struct field of metric `j` in [`ShiftFunction`]'s result.
fn field_name(j: usize) -> String {
    format!("m{j}")
}

/// `tads_drift_shift(key, time)`: a struct with one field per metric (`m0`, `m1`, … in the
/// model's feature order), how far the key's previous-day level of that metric lies from the
/// model's median plus the model's daily cycle at the row's hour; 0 where there is neither.
#[derive(Debug)]
pub(crate) struct ShiftFunction {
    baselines: Shared,
    fields: Fields,
    signature: Signature,
}

impl ShiftFunction {
    pub(crate) fn udf(baselines: Shared, width: usize) -> ScalarUDF {
        let fields: Fields = (0..width)
            .map(|j| Field::new(field_name(j), DataType::Float64, false))
            .collect();
        ScalarUDF::new_from_impl(Self {
            baselines,
            fields,
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

impl PartialEq for ShiftFunction {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.baselines, &other.baselines) && self.fields == other.fields
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
        Ok(DataType::Struct(self.fields.clone()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [key, time] = arrays.as_slice() else {
            return exec_err!("{FUNCTION}: expects (key, time)");
        };
        let d = self.fields.len();
        let mut columns: Vec<Vec<f64>> = (0..d).map(|_| Vec::with_capacity(n)).collect();
        let mut row = vec![0.0; d];
        let baselines = self.baselines.read().map_err(|_| {
            datafusion::error::DataFusionError::Execution(format!(
                "{FUNCTION}: a scoring task failed"
            ))
        })?;
        // Rows come in runs of one key and hour: each run is looked up once.
        runs::for_each_run(key, time, |rows, at| {
            match at {
                Some((key, hour)) => baselines.shifts_into(key, hour, &mut row),
                None => row.fill(0.0),
            }
            for (c, v) in columns.iter_mut().zip(&row) {
                c.extend(std::iter::repeat_n(*v, rows));
            }
        })?;
        let columns: Vec<ArrayRef> = columns
            .into_iter()
            .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef)
            .collect();
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            self.fields.clone(),
            columns,
            None,
        )?)))
    }
}

/// The scoring functions' arguments after the model: the metrics, and last the rows' time
/// column (`alerts.time`) when the fusion uses the seasonal or the forecast detector, which read
/// it (a time column that is missing, not a timestamp or a partition leaves them out).
pub(crate) fn with_time(
    job: &crate::score::ScoreJob,
    metrics: String,
    schema: &Schema,
    partitions: &[String],
) -> String {
    let time = &job.config.alerts.time;
    let detectors = job.config.fusion.detectors;
    let usable = (detectors.seasonal || detectors.forecast)
        && !partitions.contains(time)
        && schema
            .field_with_name(time)
            .is_ok_and(|f| matches!(f.data_type(), DataType::Timestamp(..)));
    if usable {
        format!("{metrics}, {}", ident(time))
    } else {
        metrics
    }
}
