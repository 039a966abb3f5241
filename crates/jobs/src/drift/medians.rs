//! The exact medians behind the drift baseline: per key and UTC day, and per key and hour of
//! the days without a previous day, read in windows of days that fit the memory pool.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};

use super::{BaselineQuery, DayLevels};
use crate::train::collect;
use crate::{Result, ident};

/// Adds one batch of `(key, day, rows, medians…)` to the levels per key and day.
pub(super) fn add_levels(batch: &RecordBatch, d: usize, levels: &mut DayLevels) -> Result<()> {
    let keys = cast(batch.column(0), &DataType::Utf8)?;
    let keys = keys.as_string::<i32>();
    let days = batch.column(1).as_primitive::<Int64Type>();
    let counts = batch.column(2).as_primitive::<Int64Type>();
    let medians: Vec<ArrayRef> = (0..d)
        .map(|j| cast(batch.column(3 + j), &DataType::Float64))
        .collect::<std::result::Result<_, _>>()?;
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
    Ok(())
}

/// Bytes the median of one value holds while it is computed (the value and its share of the
/// growing buffer).
const MEDIAN_BYTES_PER_VALUE: usize = 16;

/// `(key, day, rows, median of each of the first d metrics)` per key and UTC day. DataFusion's
/// exact median holds every value of its group and cannot spill, so the rows are read a window
/// of days at a time, as many days as half the memory pool holds by the average day's rows (a
/// time predicate the Parquet statistics prune by); a window that still runs out of memory is
/// split in two days, or for one day in two halves of its keys (`shard_of`), and read again.
pub(super) async fn day_medians(q: &BaselineQuery<'_>, d: usize) -> Result<Vec<RecordBatch>> {
    let key = ident(q.key);
    let time = ident(q.time);
    let day = bucket(&time, 86_400);
    let mut base = base_conditions(q, &key);
    if let Some((_, until)) = q.known.filter(|_| d > 0) {
        base.push(format!(
            "{day} >= {until} AND {time} >= to_timestamp_micros({})",
            (until - 1) * 86_400_000_000
        ));
    }
    if d == 0 {
        // Counts alone (the daily cycle's keys): they hold no values, so one statement.
        let sql = format!(
            "SELECT {}, {day}, count(*) FROM {} WHERE {} GROUP BY {key}, {day}",
            as_text(&key),
            q.table,
            base.join(" AND ")
        );
        return Ok(q.ctx.sql(&sql).await?.collect().await?);
    }
    let span = collect(
        q.ctx,
        &format!(
            "SELECT min({day}), max({day}), count(*) FROM {} WHERE {}",
            q.table,
            base.join(" AND ")
        ),
    )
    .await?;
    let first = span.column(0).as_primitive::<Int64Type>();
    let last = span.column(1).as_primitive::<Int64Type>();
    if first.is_null(0) || last.is_null(0) {
        return Ok(Vec::new());
    }
    let (first, last) = (first.value(0), last.value(0));
    let rows = span.column(2).as_primitive::<Int64Type>().value(0).max(1) as usize;
    let days = (last - first + 1).max(1) as usize;
    let fits = (q.memory / 2) / (MEDIAN_BYTES_PER_VALUE * d);
    let per_window = (fits / (rows / days).max(1)).clamp(1, days) as i64;
    let windows = (first..=last)
        .step_by(per_window as usize)
        .map(|from| (from, per_window.min(last - from + 1)))
        .collect();
    let grouped = Grouped {
        key: &key,
        bucket: &day,
        base: &base,
        d,
    };
    grouped
        .run(q, windows, |from, n| {
            // The days themselves, and a margin of a day around them on the column, which the
            // statistics of row groups prune by whatever the column's time zone; nothing when
            // one window holds every day (a predicate per row that keeps every row).
            (n < days as i64).then(|| {
                format!(
                    "{day} >= {from} AND {day} < {to} AND {}",
                    prune(&time, from - 1, from + n + 1),
                    to = from + n
                )
            })
        })
        .await
}

/// `(key, hour, rows, medians…)` per key and hour (hours since the epoch) of the given days and
/// the `k` hours before each, read a run of consecutive days at a time (split as
/// [`day_medians`]'s windows are).
pub(super) async fn hour_medians(
    q: &BaselineQuery<'_>,
    d: usize,
    days: &[i64],
    k: i64,
) -> Result<Vec<RecordBatch>> {
    let key = ident(q.key);
    let time = ident(q.time);
    let hour = bucket(&time, 3_600);
    let base = base_conditions(q, &key);
    // Runs of consecutive days.
    let mut windows: Vec<(i64, i64)> = Vec::new();
    for &day in days {
        match windows.last_mut() {
            Some((from, n)) if *from + *n == day => *n += 1,
            _ => windows.push((day, 1)),
        }
    }
    let grouped = Grouped {
        key: &key,
        bucket: &hour,
        base: &base,
        d,
    };
    grouped
        .run(q, windows, |from, n| {
            Some(format!(
                "{hour} >= {lo} AND {hour} < {hi} AND {}",
                prune(&time, from - 2, from + n + 1),
                lo = from * 24 - k,
                hi = (from + n) * 24
            ))
        })
        .await
}

/// The key as text, as the levels are keyed. The statements group by the key column itself
/// (a dictionary column groups by its small codes) and cast only the groups.
fn as_text(key: &str) -> String {
    format!("CAST({key} AS VARCHAR)")
}

/// `CAST(floor(to_unixtime(time) / seconds) AS BIGINT)`: the time's bucket number.
fn bucket(time: &str, seconds: i64) -> String {
    format!("CAST(floor(to_unixtime({time}) / {seconds}) AS BIGINT)")
}

/// A loose predicate on the time column from day `from` to day `to` (exclusive), for pruning.
fn prune(time: &str, from: i64, to: i64) -> String {
    let us = |day: i64| day * 86_400_000_000;
    format!(
        "{time} >= to_timestamp_micros({}) AND {time} < to_timestamp_micros({})",
        us(from),
        us(to)
    )
}

/// The conditions every baseline statement has: a key, and the run's filter.
fn base_conditions(q: &BaselineQuery<'_>, key: &str) -> Vec<String> {
    let mut base = vec![format!("{key} IS NOT NULL")];
    if let Some(f) = q.filter.trim().strip_prefix("WHERE") {
        base.push(format!("({f})"));
    }
    base
}

/// One `GROUP BY key, bucket` statement of the baseline, with each metric's exact median.
struct Grouped<'a> {
    key: &'a str,
    bucket: &'a str,
    base: &'a [String],
    d: usize,
}

impl Grouped<'_> {
    /// Runs the statement over each window of days `(first day, days)`, whose rows `window`
    /// selects; a window that runs out of memory is split in two, or for one day in two halves
    /// of its keys (`shard_of`), and read again.
    async fn run(
        &self,
        q: &BaselineQuery<'_>,
        windows: Vec<(i64, i64)>,
        window: impl Fn(i64, i64) -> Option<String>,
    ) -> Result<Vec<RecordBatch>> {
        let medians: String = q.features[..self.d]
            .iter()
            .map(|f| {
                // NaN left out by the aggregate's filter rather than a CASE that copies the
                // column with NaN as NULL: the same values, without a copy of every row.
                let x = format!("CAST({} AS DOUBLE)", ident(f));
                format!(", median({x}) FILTER (WHERE NOT isnan({x}))")
            })
            .collect();
        // (first day, days, shards, shard): the key's shard_of(key, shards) is `shard`.
        let mut windows: Vec<(i64, i64, u32, u32)> = windows
            .into_iter()
            .rev()
            .map(|(from, n)| (from, n, 1, 1))
            .collect();
        let mut out = Vec::new();
        while let Some((from, n, shards, shard)) = windows.pop() {
            let mut conditions = self.base.to_vec();
            conditions.extend(window(from, n));
            if shards > 1 {
                conditions.push(format!(
                    "shard_of({}, {shards}) = {shard}",
                    as_text(self.key)
                ));
            }
            let sql = format!(
                "SELECT {}, {bucket}, count(*){medians} FROM {} WHERE {} GROUP BY {}, {bucket}",
                as_text(self.key),
                q.table,
                conditions.join(" AND "),
                self.key,
                bucket = self.bucket,
            );
            match q.ctx.sql(&sql).await?.collect().await {
                Ok(batches) => out.extend(batches),
                Err(e) if e.to_string().contains("Resources exhausted") && shards < 1 << 12 => {
                    if n > 1 {
                        let half = n / 2;
                        windows.push((from + half, n - half, shards, shard));
                        windows.push((from, half, shards, shard));
                    } else {
                        windows.push((from, n, shards * 2, shard + shards));
                        windows.push((from, n, shards * 2, shard));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}
