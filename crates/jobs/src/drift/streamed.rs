//! The drift baseline measured while the files are scored, for a run that walks chains of files
//! in time order (`score::walked`).
//!
//! Before scoring, a run otherwise reads every row once more to take each key's median per day
//! (and per hour on days without a previous day). When each key's rows come in time order, the
//! scan that scores a file can measure them itself: every batch is added to its key's hours
//! before the batch is scored, and a key's first row of a new day closes the days before it. A
//! day's shift needs only the day before, which is complete by then; an hour's trailing shift
//! needs only the hours before it. So each shift is written once, before the first row that
//! reads it, and is never changed: the rows get exactly the shifts, levels and notices the
//! medians read beforehand give (`streamed_and_precomputed_baselines_agree` checks it). A key
//! whose hours go backwards, or values that do not fit the memory pool, stop the walk; the run
//! then measures the baseline beforehand and scores again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;
use tads_sql::ModelRegistry;
use tads_sql::registry::LoadedModel;

use super::medians::{MEDIAN_BYTES_PER_VALUE, median};
use super::shifts::{day_shift, day_shifts, member, notice, previous_day, profile, trailing_shift};
use super::{DayLevels, DriftNotice, DriftSettings, Level, Shared, runs};

/// What every chain of a run shares: the baselines the shift function reads, and how to find
/// each key's model.
pub(crate) struct Streamed {
    shared: Shared,
    settings: DriftSettings,
    registry: ModelRegistry,
    model: String,
    grouped: bool,
    features: Vec<String>,
    pool: Arc<dyn MemoryPool>,
}

/// Why a walk stopped measuring the baseline as it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A key's hours went backwards.
    Unordered,
    /// The values of the days held did not fit the memory pool.
    Memory,
}

impl Streamed {
    /// For a run whose shift function reads `shared` (empty until the files are scored).
    pub(crate) fn new(
        shared: Shared,
        settings: DriftSettings,
        registry: ModelRegistry,
        model: &crate::score::ModelRef,
        pool: Arc<dyn MemoryPool>,
    ) -> Self {
        Self {
            shared,
            settings,
            registry,
            model: model.name.clone(),
            grouped: model.group_by.is_some(),
            features: model.features.clone(),
            pool,
        }
    }

    /// The state of one chain of files (its keys are in no other chain).
    pub(crate) fn chain(self: &Arc<Self>) -> ChainLevels {
        ChainLevels {
            reservation: MemoryConsumer::new("drift baseline (streamed)").register(&self.pool),
            run: Arc::clone(self),
            keys: Vec::new(),
            numbers: HashMap::new(),
            stopped: None,
        }
    }

    /// The drift notices of the levels every chain measured, by key.
    pub(crate) fn notices(&self, levels: &DayLevels) -> Vec<DriftNotice> {
        let s = &self.settings;
        let mut out: Vec<DriftNotice> = levels
            .iter()
            .filter_map(|(key, by_day)| {
                let model = self.registry.get(&member(&self.model, self.grouped, key))?;
                let shifts = day_shifts(by_day, &model.artifact.median, s);
                notice(key, &shifts, &model.artifact.scale, s, &self.features)
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// One hour's rows of a key: how many, and each metric's values (NaN and NULL left out).
struct Hour {
    rows: i64,
    values: Vec<Vec<f64>>,
}

/// One key's state along a chain.
struct Key {
    text: String,
    model: Option<Arc<LoadedModel>>,
    /// The hour of its latest row (`i64::MIN` before any) and that hour's day.
    hour: i64,
    day: i64,
    /// The current day has no previous day's baseline: its hours take the trailing one.
    lacking: bool,
    /// The hours of the current day and of the trailing window before it.
    hours: BTreeMap<i64, Hour>,
    /// The levels of complete hours in the trailing window (on days that need them).
    hour_levels: BTreeMap<i64, Level>,
    /// The levels of complete days.
    days: BTreeMap<i64, Level>,
}

/// One chain's keys, fed each batch before it is scored.
pub(crate) struct ChainLevels {
    run: Arc<Streamed>,
    keys: Vec<Key>,
    numbers: HashMap<String, usize>,
    reservation: MemoryReservation,
    stopped: Option<Stop>,
}

/// Where a batch's key, time and metrics are.
#[derive(Debug, Clone)]
pub(crate) struct Columns {
    pub(crate) key: usize,
    pub(crate) time: usize,
    pub(crate) features: Vec<usize>,
}

impl ChainLevels {
    /// Why the chain stopped measuring, if it did.
    pub(crate) fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    /// Adds a batch's rows to their keys' hours, writing the shifts its rows need first.
    fn add(&mut self, batch: &RecordBatch, columns: &Columns) -> DfResult<()> {
        if self.stopped.is_some() {
            return Ok(());
        }
        let metrics: Vec<ArrayRef> = columns
            .features
            .iter()
            .map(|&c| cast(batch.column(c), &DataType::Float64))
            .collect::<Result<_, _>>()?;
        let metrics: Vec<_> = metrics
            .iter()
            .map(|m| m.as_primitive::<Float64Type>())
            .collect();
        let (mut start, mut held) = (0, 0);
        let mut stop = None;
        runs::for_each_run(
            batch.column(columns.key),
            batch.column(columns.time),
            |n, at| {
                if let Some((key, hour)) = at
                    && stop.is_none()
                {
                    let k = self.number(key);
                    if self.enter(k, hour) {
                        let hour = self.keys[k].hours.entry(hour).or_insert_with(|| Hour {
                            rows: 0,
                            values: vec![Vec::new(); metrics.len()],
                        });
                        hour.rows += n as i64;
                        for (values, m) in hour.values.iter_mut().zip(&metrics) {
                            push_values(values, m, start..start + n);
                        }
                        held += n;
                    } else {
                        stop = Some(Stop::Unordered);
                    }
                }
                start += n;
            },
        )?;
        let bytes = held * metrics.len() * MEDIAN_BYTES_PER_VALUE;
        if stop.is_none() && self.reservation.try_grow(bytes).is_err() {
            stop = Some(Stop::Memory);
        }
        if stop.is_some() {
            self.stopped = stop;
            self.keys.clear();
            self.reservation.free();
        }
        Ok(())
    }

    /// The number of `key`, added with its model (and its daily cycle written) when new.
    fn number(&mut self, key: &str) -> usize {
        if let Some(&k) = self.numbers.get(key) {
            return k;
        }
        let run = &self.run;
        let model = run.registry.get(&member(&run.model, run.grouped, key));
        if let Some(profile) = model.as_deref().and_then(|m| profile(m, &run.settings))
            && let Ok(mut shared) = run.shared.write()
        {
            shared.profiles.insert(key.to_string(), profile);
        }
        self.keys.push(Key {
            text: key.to_string(),
            model,
            hour: i64::MIN,
            day: i64::MIN,
            lacking: false,
            hours: BTreeMap::new(),
            hour_levels: BTreeMap::new(),
            days: BTreeMap::new(),
        });
        self.numbers.insert(key.to_string(), self.keys.len() - 1);
        self.keys.len() - 1
    }

    /// Moves key `k` to `hour`: a new day closes the days before it and writes its shift, a
    /// new hour of a day without a previous day writes the hour's trailing shift. False when
    /// the hour lies before the key's latest.
    fn enter(&mut self, k: usize, hour: i64) -> bool {
        let s = &self.run.settings;
        let d = self.run.features.len();
        let key = &mut self.keys[k];
        if hour == key.hour {
            return true;
        }
        if hour < key.hour {
            return false;
        }
        let day = hour.div_euclid(24);
        if day != key.day {
            close_days(key, day * 24, d);
            // What the trailing window of this day's hours can still reach.
            let keep = day * 24 - i64::from(s.trailing_hours);
            let kept = key.hours.split_off(&keep);
            let freed: i64 = key.hours.values().map(|h| h.rows).sum();
            self.reservation
                .shrink((freed as usize * d * MEDIAN_BYTES_PER_VALUE).min(self.reservation.size()));
            key.hours = kept;
            key.hour_levels = key.hour_levels.split_off(&keep);
            key.day = day;
            key.lacking = false;
            if let Some(model) = &key.model {
                match previous_day(&key.days, day, s) {
                    Some(level) => {
                        let shift = day_shift(level, &model.artifact.median);
                        if let Ok(mut shared) = self.run.shared.write() {
                            shared
                                .shifts
                                .entry(key.text.clone())
                                .or_default()
                                .insert(day, shift);
                        }
                    }
                    None => key.lacking = s.trailing_hours > 0,
                }
            }
        }
        key.hour = hour;
        if key.lacking
            && let Some(model) = &key.model
        {
            for h in hour - i64::from(s.trailing_hours)..hour {
                if !key.hour_levels.contains_key(&h)
                    && let Some(values) = key.hours.get_mut(&h)
                {
                    let level = level_of(std::slice::from_mut(values), d);
                    key.hour_levels.insert(h, level);
                }
            }
            if let Some(shift) = trailing_shift(&key.hour_levels, hour, model, s, d)
                && let Ok(mut shared) = self.run.shared.write()
            {
                shared
                    .hourly
                    .entry(key.text.clone())
                    .or_default()
                    .insert(hour, shift);
            }
        }
        true
    }

    /// Every key's levels per day, the last days closed.
    pub(crate) fn finish(&mut self) -> DayLevels {
        let d = self.run.features.len();
        let mut out = DayLevels::new();
        for mut key in self.keys.drain(..) {
            close_days(&mut key, i64::MAX, d);
            out.insert(key.text, key.days);
        }
        self.reservation.free();
        out
    }
}

/// Closes the days of `key`'s hours before hour `until` that are not closed yet: their levels.
fn close_days(key: &mut Key, until: i64, d: usize) {
    let mut by_day: BTreeMap<i64, Vec<&mut Hour>> = BTreeMap::new();
    for (hour, values) in key.hours.range_mut(..until) {
        let day = hour.div_euclid(24);
        if !key.days.contains_key(&day) {
            by_day.entry(day).or_default().push(values);
        }
    }
    for (day, mut hours) in by_day {
        let level = level_of_hours(&mut hours, d);
        key.days.insert(day, level);
    }
}

/// Appends the values of `m` at `rows` that are neither NULL nor NaN to `values`: the run's
/// slice whole when it has neither (the common case), else value by value.
fn push_values(values: &mut Vec<f64>, m: &Float64Array, rows: std::ops::Range<usize>) {
    let slice = &m.values()[rows.clone()];
    let nulls = m
        .nulls()
        .is_some_and(|n| n.slice(rows.start, rows.len()).null_count() > 0);
    if !nulls && !slice.iter().any(|v| v.is_nan()) {
        values.extend_from_slice(slice);
        return;
    }
    values.reserve(slice.len());
    values.extend(
        slice
            .iter()
            .zip(rows)
            .filter(|&(v, i)| m.is_valid(i) && !v.is_nan())
            .map(|(v, _)| *v),
    );
}

/// The level of some hours together: their rows and each metric's exact median (as the
/// medians read beforehand keep it: a median that is not finite is none).
fn level_of(hours: &mut [Hour], d: usize) -> Level {
    let mut refs: Vec<&mut Hour> = hours.iter_mut().collect();
    level_of_hours(&mut refs, d)
}

fn level_of_hours(hours: &mut [&mut Hour], d: usize) -> Level {
    let rows = hours.iter().map(|h| h.rows).sum();
    let medians = (0..d)
        .map(|j| {
            let m = match hours {
                [one] => median(&mut one.values[j]),
                _ => {
                    let mut all = Vec::with_capacity(hours.iter().map(|h| h.values[j].len()).sum());
                    for h in hours.iter() {
                        all.extend_from_slice(&h.values[j]);
                    }
                    median(&mut all)
                }
            };
            m.filter(|v| v.is_finite())
        })
        .collect();
    (rows, medians)
}

/// A file's rows as a table whose one scan adds each batch to the chain's levels before
/// passing it on (see the module's doc); `fed` is told when every row has been added (and
/// dropped unsent when the scan fails), so that the next file's scan may start.
pub(crate) fn feeding_table(
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    levels: Arc<Mutex<ChainLevels>>,
    columns: Columns,
    fed: tokio::sync::oneshot::Sender<()>,
) -> crate::Result<StreamingTable> {
    let feed = Feed {
        schema: Arc::clone(&schema),
        stream: Mutex::new(Some((stream, fed))),
        levels,
        columns,
    };
    Ok(StreamingTable::try_new(schema, vec![Arc::new(feed)])?)
}

/// Batches the scan and the levels may run ahead of the plan that scores them.
const FED_AHEAD: usize = 2;

struct Feed {
    schema: SchemaRef,
    stream: Mutex<Option<(SendableRecordBatchStream, tokio::sync::oneshot::Sender<()>)>>,
    levels: Arc<Mutex<ChainLevels>>,
    columns: Columns,
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("columns", &self.columns)
            .finish()
    }
}

impl PartitionStream for Feed {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = Arc::clone(&self.schema);
        let Some((stream, done)) = self.stream.lock().ok().and_then(|mut s| s.take()) else {
            let failed = futures::stream::once(async {
                Err(DataFusionError::Execution(
                    "a file fed to the drift baseline was read twice".into(),
                ))
            });
            return Box::pin(RecordBatchStreamAdapter::new(schema, failed));
        };
        let (levels, columns) = (Arc::clone(&self.levels), self.columns.clone());
        let mut fed = stream.map(move |batch| {
            let batch = batch?;
            levels
                .lock()
                .map_err(|_| DataFusionError::Execution("a scoring task failed".into()))?
                .add(&batch, &columns)?;
            Ok(batch)
        });
        // The scan and the levels run in a task of their own, a few batches ahead of the plan
        // that scores them (so on another core): a batch is added before it is scored, which is
        // all the shifts need (adding the next ones first only writes shifts later rows read).
        let mut ahead = RecordBatchReceiverStreamBuilder::new(schema, FED_AHEAD);
        let tx = ahead.tx();
        ahead.spawn(async move {
            let mut complete = true;
            while let Some(batch) = fed.next().await {
                complete &= batch.is_ok();
                if tx.send(batch).await.is_err() {
                    return Ok(());
                }
            }
            if complete {
                let _ = done.send(());
            }
            Ok(())
        });
        ahead.build()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{DictionaryArray, Float64Array, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::Int32Type;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::super::{BaselineQuery, Baselines, baselines};
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    /// A model `m` of the metrics `a` and `b` with a daily cycle.
    fn registry() -> ModelRegistry {
        let names = ["a", "b"].map(String::from);
        let columns: Vec<Vec<f64>> = (0..2)
            .map(|j| (0..200).map(|i| ((i * (j + 3)) % 17) as f64).collect())
            .collect();
        let options = tads_model::TrainOptions::default();
        let fitted = tads_model::train::fit_in_memory(&columns, &options).unwrap();
        let mut artifact =
            tads_model::train::artifact("m", &names, &fitted, &options, 200, "mem", None).unwrap();
        artifact.seasonal = Some(tads_model::Seasonal {
            time: "ts".into(),
            profile: (0..24)
                .map(|h| vec![f64::from(h) * 0.25, -f64::from(h) / 7.0])
                .collect(),
            features: names.to_vec(),
        });
        let registry = ModelRegistry::new();
        registry.insert(artifact.seal()).unwrap();
        registry
    }

    /// Rows of three keys over five days, every 10 minutes, in time order per key and
    /// interleaved: h1 with a level that moves on day 2, h2 with a day of too few rows and then a
    /// day without rows, h3 from the middle of day 1 on; some NaN and NULL metrics, NULL keys
    /// and NULL times.
    fn rows() -> RecordBatch {
        let (mut keys, mut times, mut a, mut b) = (vec![], vec![], vec![], vec![]);
        let start = 20_000 * 24 * HOUR;
        let mut state = 11u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / f64::from(u32::MAX >> 1)
        };
        for step in 0..(5 * 24 * 6) {
            let t = start + step * HOUR / 6;
            let day = step / (24 * 6);
            for (key, keep) in [
                ("h1", true),
                ("h2", (day != 1 || step % 30 == 0) && day != 2),
                ("h3", step >= 24 * 6 + 80),
            ] {
                if !keep {
                    continue;
                }
                let level = if key == "h1" && day >= 2 { 40.0 } else { 0.0 };
                keys.push(Some(key).filter(|_| step % 97 != 13));
                times.push(Some(t).filter(|_| step % 89 != 7));
                a.push(Some(level + 10.0 * next()).filter(|_| step % 31 != 0));
                b.push(Some(if step % 23 == 0 {
                    f64::NAN
                } else {
                    5.0 * next()
                }));
            }
        }
        let keys: DictionaryArray<Int32Type> = keys.into_iter().collect();
        RecordBatch::try_from_iter([
            ("host_id", Arc::new(keys) as ArrayRef),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")) as ArrayRef,
            ),
            ("a", Arc::new(Float64Array::from(a)) as ArrayRef),
            ("b", Arc::new(Float64Array::from(b)) as ArrayRef),
        ])
        .unwrap()
    }

    /// What a run reads of the baselines: every shift, hourly shift and cycle.
    fn entries(b: &Baselines) -> Vec<(String, char, i64, Vec<u64>)> {
        let mut out = Vec::new();
        for (tag, series) in [('d', &b.shifts), ('h', &b.hourly)] {
            for (key, by) in series {
                for (at, v) in by {
                    out.push((
                        key.clone(),
                        tag,
                        *at,
                        v.iter().map(|x| x.to_bits()).collect(),
                    ));
                }
            }
        }
        for (key, p) in &b.profiles {
            let bits = p.iter().flatten().map(|x| x.to_bits()).collect();
            out.push((key.clone(), 'p', 0, bits));
        }
        out.sort();
        out
    }

    /// The baselines measured while the rows stream by, in batches of many sizes, are the ones
    /// the medians read beforehand give: the same shifts, hourly shifts and cycles (bit for
    /// bit), levels and notices.
    #[tokio::test]
    async fn streamed_and_precomputed_baselines_agree() {
        let registry = registry();
        let batch = rows();
        let settings = DriftSettings {
            notice_scales: 1.0,
            ..DriftSettings::default()
        };
        let ctx = SessionContext::new();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap();
        ctx.register_table("input", Arc::new(table)).unwrap();
        let features = ["a", "b"].map(String::from);
        let q = BaselineQuery {
            ctx: &ctx,
            table: "input",
            key: "host_id",
            time: "ts",
            features: &features,
            filter: "",
            model: "m",
            grouped: false,
            registry: &registry,
            memory: 1 << 30,
            known: None,
            on_cluster: false,
        };
        let before = baselines(&q, &settings).await.unwrap();
        assert!(!before.hourly.is_empty() && !before.shifts.is_empty());
        assert!(!before.notices.is_empty(), "h1's level moves");
        let model = crate::score::ModelRef {
            name: "m".into(),
            fingerprint: String::new(),
            features: features.to_vec(),
            group_by: None,
        };
        let columns = Columns {
            key: 0,
            time: 1,
            features: vec![2, 3],
        };
        // A run writing into `shared`.
        let streamed = |shared: &Shared| {
            Arc::new(Streamed::new(
                Arc::clone(shared),
                settings.clone(),
                registry.clone(),
                &model,
                Arc::clone(&ctx.runtime_env().memory_pool),
            ))
        };
        for size in [1, 7, 144, 1000, batch.num_rows()] {
            let shared: Shared = Arc::default();
            let streamed = streamed(&shared);
            let mut chain = streamed.chain();
            for from in (0..batch.num_rows()).step_by(size) {
                let part = batch.slice(from, size.min(batch.num_rows() - from));
                chain.add(&part, &columns).unwrap();
            }
            assert_eq!(chain.stopped(), None);
            let levels = chain.finish();
            assert_eq!(levels, before.levels, "batches of {size}");
            assert_eq!(streamed.notices(&levels), before.notices);
            assert_eq!(entries(&shared.read().unwrap()), entries(&before));
        }
        // A key whose hours go backwards stops the chain.
        let mut chain = streamed(&Arc::default()).chain();
        chain
            .add(&batch.slice(batch.num_rows() - 100, 100), &columns)
            .unwrap();
        chain.add(&batch.slice(0, 100), &columns).unwrap();
        assert_eq!(chain.stopped(), Some(Stop::Unordered));
    }
}
