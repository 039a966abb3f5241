//! The exact medians behind the drift baseline: per key and UTC day, and per key and hour of
//! the days without a previous day, read in windows of days that fit the memory pool.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::runs::{Keys, PerKey};
use super::{BaselineQuery, DayLevels};
use crate::train::collect;
use crate::{Error, Result, ident};

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
pub(super) const MEDIAN_BYTES_PER_VALUE: usize = 16;

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

/// The baseline's grouping by key and bucket, with each metric's exact median: by
/// [`grouped_medians`] here, or by DataFusion's `GROUP BY` on a cluster.
struct Grouped<'a> {
    key: &'a str,
    bucket: &'a str,
    base: &'a [String],
    d: usize,
}

impl Grouped<'_> {
    /// Groups each window of days `(first day, days)`, whose rows `window` selects; a window
    /// that runs out of memory is split in two, or for one day in two halves of its keys
    /// (`shard_of`), and read again.
    async fn run(
        &self,
        q: &BaselineQuery<'_>,
        windows: Vec<(i64, i64)>,
        window: impl Fn(i64, i64) -> Option<String>,
    ) -> Result<Vec<RecordBatch>> {
        let metrics: String = q.features[..self.d]
            .iter()
            .map(|f| {
                let x = format!("CAST({} AS DOUBLE)", ident(f));
                match q.on_cluster {
                    // NaN left out by the aggregate's filter rather than a CASE that copies
                    // the column with NaN as NULL: the same values, without a copy of every row.
                    true => format!(", median({x}) FILTER (WHERE NOT isnan({x}))"),
                    false => format!(", {x}"),
                }
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
            let found = if q.on_cluster {
                let sql = format!(
                    "SELECT {}, {bucket}, count(*){metrics} FROM {} WHERE {} GROUP BY {}, {bucket}",
                    as_text(self.key),
                    q.table,
                    conditions.join(" AND "),
                    self.key,
                    bucket = self.bucket,
                );
                async { Ok(q.ctx.sql(&sql).await?.collect().await?) }.await
            } else {
                let sql = format!(
                    "SELECT {}, {bucket}{metrics} FROM {} WHERE {}",
                    self.key,
                    q.table,
                    conditions.join(" AND "),
                    bucket = self.bucket,
                );
                grouped_medians(q.ctx, &sql, self.d).await.map(|b| vec![b])
            };
            match found {
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
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// One key and bucket's rows: how many, and each metric's values (NaN and NULL left out).
struct Group {
    rows: i64,
    values: Vec<Vec<f64>>,
}

/// One partition's groups, by key and bucket.
type Groups = HashMap<(String, i64), Group>;

/// `(key, bucket, rows, median of each metric)` per key and bucket of the rows of `sql`
/// (`key, bucket, d metrics as DOUBLE`): the same numbers as `GROUP BY key, bucket` with
/// `count(*)` and `median(x) FILTER (WHERE NOT isnan(x))`, exactly, without DataFusion's two
/// phases of aggregation, which pass every value through lists from the partial aggregate to the
/// final one. Each partition of the scan is grouped in a task of its own; the values held are
/// reserved from the memory pool, so a window that does not fit fails as DataFusion's own
/// statement would ("Resources exhausted") and is split.
async fn grouped_medians(ctx: &SessionContext, sql: &str, d: usize) -> Result<RecordBatch> {
    let streams = ctx.sql(sql).await?.execute_stream_partitioned().await?;
    let pool = Arc::clone(&ctx.runtime_env().memory_pool);
    // A JoinSet aborts the other partitions when one fails and this returns early.
    let mut tasks = tokio::task::JoinSet::new();
    for stream in streams {
        let reservation = MemoryConsumer::new("drift baseline medians").register(&pool);
        tasks.spawn(group_partition(stream, d, reservation));
    }
    let mut groups = Groups::new();
    // The partitions' reservations are held until the medians are taken.
    let mut reservations = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (part, reservation) =
            done.map_err(|e| Error::Data(format!("a drift baseline task failed: {e}")))??;
        reservations.push(reservation);
        for (k, g) in part {
            match groups.entry(k) {
                Entry::Vacant(v) => {
                    v.insert(g);
                }
                Entry::Occupied(mut o) => {
                    let o = o.get_mut();
                    o.rows += g.rows;
                    for (mine, theirs) in o.values.iter_mut().zip(g.values) {
                        mine.extend(theirs);
                    }
                }
            }
        }
    }
    let mut keys = StringBuilder::new();
    let mut buckets = Int64Builder::with_capacity(groups.len());
    let mut rows = Int64Builder::with_capacity(groups.len());
    let mut medians: Vec<Float64Builder> = (0..d)
        .map(|_| Float64Builder::with_capacity(groups.len()))
        .collect();
    for ((key, bucket), mut g) in groups {
        keys.append_value(key);
        buckets.append_value(bucket);
        rows.append_value(g.rows);
        for (values, out) in g.values.iter_mut().zip(medians.iter_mut()) {
            out.append_option(median(values));
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(keys.finish()),
        Arc::new(buckets.finish()),
        Arc::new(rows.finish()),
    ];
    columns.extend(medians.iter_mut().map(|m| Arc::new(m.finish()) as ArrayRef));
    drop(reservations);
    Ok(RecordBatch::try_from_iter(
        columns
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("c{i}"), c)),
    )?)
}

/// Groups one partition's rows (`key, bucket, metrics…`), reserving the values it holds.
async fn group_partition(
    mut stream: SendableRecordBatchStream,
    d: usize,
    reservation: MemoryReservation,
) -> Result<(Groups, MemoryReservation)> {
    // Groups by the key's number among `names` and the bucket, found through each key's last
    // group (a key's next row is most often in the same bucket): no key text and no hashing
    // per row.
    let mut groups: Vec<(usize, i64, Group)> = Vec::new();
    let mut index: HashMap<(usize, i64), usize> = HashMap::new();
    let mut last: Vec<Option<(i64, usize)>> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut numbers: HashMap<String, usize> = HashMap::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        reservation.try_grow(batch.num_rows() * d * MEDIAN_BYTES_PER_VALUE)?;
        let keys = Keys::new(batch.column(0))?;
        let buckets = batch.column(1).as_primitive::<Int64Type>();
        let metrics: Vec<&Float64Array> = (0..d)
            .map(|j| batch.column(2 + j).as_primitive::<Float64Type>())
            .collect();
        // Each key's number once per dictionary code (or run of one key), not per row.
        let mut number_of = PerKey::new(&keys);
        for i in 0..batch.num_rows() {
            if keys.is_null(i) || buckets.is_null(i) {
                continue;
            }
            let number = number_of.get(&keys, i, |k| {
                *numbers.entry(k.to_string()).or_insert_with(|| {
                    names.push(k.to_string());
                    last.push(None);
                    names.len() - 1
                })
            });
            let bucket = buckets.value(i);
            let slot = match last[number] {
                Some((b, slot)) if b == bucket => slot,
                _ => {
                    let slot = *index.entry((number, bucket)).or_insert_with(|| {
                        groups.push((
                            number,
                            bucket,
                            Group {
                                rows: 0,
                                values: vec![Vec::new(); d],
                            },
                        ));
                        groups.len() - 1
                    });
                    last[number] = Some((bucket, slot));
                    slot
                }
            };
            let g = &mut groups[slot].2;
            g.rows += 1;
            for (values, m) in g.values.iter_mut().zip(&metrics) {
                if m.is_valid(i) && !m.value(i).is_nan() {
                    values.push(m.value(i));
                }
            }
        }
    }
    let groups = groups
        .into_iter()
        .map(|(number, bucket, g)| ((names[number].clone(), bucket), g))
        .collect();
    Ok((groups, reservation))
}

/// The exact median as DataFusion's `median` takes it: the middle value in total order, or the
/// mean of the two middle values; `None` without values.
///
/// The values are selected as integers whose order is [`f64::total_cmp`]'s (each value's bits
/// turned once, rather than both sides of every comparison), and turned back before it returns:
/// `values` keeps the same values, in another order.
pub(super) fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let turn = |values: &mut [f64]| {
        for v in values.iter_mut() {
            *v = f64::from_bits(total_order(v.to_bits()));
        }
    };
    turn(values);
    let bits = |v: &f64| v.to_bits() as i64;
    let (low, high, _) = values.select_nth_unstable_by_key(n / 2, bits);
    let high = f64::from_bits(total_order(high.to_bits()));
    let low = match n % 2 {
        1 => None,
        _ => low.iter().map(bits).max(),
    };
    turn(values);
    match low {
        None => Some(high),
        Some(low) => Some((f64::from_bits(total_order(low as u64)) + high) / 2.0),
    }
}

/// The bits of a value as an integer whose signed order is [`f64::total_cmp`]'s: the bits
/// other than the sign's are flipped for a negative value (as `total_cmp` does at every
/// comparison). Turning twice gives the value back.
fn total_order(bits: u64) -> u64 {
    let b = bits as i64;
    (b ^ ((((b >> 63) as u64) >> 1) as i64)) as u64
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{DictionaryArray, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Int32Type;
    use datafusion::datasource::MemTable;

    use super::*;

    /// Rows of 3 keys × 4 buckets with odd and even counts, NaN, NULL, ±0, ±inf and groups
    /// whose one metric has no value: the grouping gives what DataFusion's
    /// `GROUP BY key, bucket` with `count(*)` and `median(x) FILTER (WHERE NOT isnan(x))` gives,
    /// bit for bit, with the key as a dictionary and as text, in one partition and in four.
    #[tokio::test]
    async fn the_grouping_gives_datafusions_exact_medians() {
        let n = 403;
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let (mut keys, mut buckets, mut a, mut b) = (vec![], vec![], vec![], vec![]);
        for i in 0..n {
            let r = next();
            keys.push(Some(["h1", "h2", "h3"][(r % 3) as usize]).filter(|_| i % 97 != 5));
            buckets.push(Some((r / 3 % 4) as i64 + 19_000).filter(|_| i % 89 != 3));
            a.push(match r % 11 {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(-0.0),
                3 => Some(0.0),
                4 => Some(f64::INFINITY),
                _ => Some((r % 1000) as f64 / 7.0 - 50.0),
            });
            // The second metric only where the bucket is even: odd buckets have no value.
            b.push(Some((r % 13) as f64).filter(|_| r / 3 % 2 == 0));
        }
        let dict: DictionaryArray<Int32Type> = keys.iter().copied().collect();
        for (key, partitions) in [
            (Arc::new(dict) as ArrayRef, 1),
            (Arc::new(StringArray::from(keys.clone())) as ArrayRef, 4),
        ] {
            let batch = RecordBatch::try_from_iter([
                ("k", key),
                (
                    "bucket",
                    Arc::new(Int64Array::from(buckets.clone())) as ArrayRef,
                ),
                ("a", Arc::new(Float64Array::from(a.clone())) as ArrayRef),
                ("b", Arc::new(Float64Array::from(b.clone())) as ArrayRef),
            ])
            .unwrap();
            let size = n / partitions + 1;
            let parts = (0..partitions)
                .map(|p| {
                    let from = (p * size).min(n);
                    vec![batch.slice(from, size.min(n - from))]
                })
                .collect();
            let ctx = SessionContext::new();
            let table = MemTable::try_new(batch.schema(), parts).unwrap();
            ctx.register_table("t", Arc::new(table)).unwrap();
            let ours =
                grouped_medians(&ctx, "SELECT k, bucket, a, b FROM t WHERE k IS NOT NULL", 2)
                    .await
                    .unwrap();
            let theirs = ctx
                .sql(
                    "SELECT CAST(k AS VARCHAR), bucket, count(*), \
                     median(a) FILTER (WHERE NOT isnan(a)), median(b) FILTER (WHERE NOT isnan(b)) \
                     FROM t WHERE k IS NOT NULL AND bucket IS NOT NULL GROUP BY k, bucket",
                )
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let rows = |batches: &[RecordBatch]| {
                let mut out = Vec::new();
                for batch in batches {
                    let keys = cast(batch.column(0), &DataType::Utf8).unwrap();
                    let keys = keys.as_string::<i32>();
                    let number = |c: usize, i: usize| {
                        let c = batch.column(c).as_primitive::<Float64Type>();
                        c.is_valid(i).then(|| c.value(i).to_bits())
                    };
                    for i in 0..batch.num_rows() {
                        out.push((
                            keys.value(i).to_string(),
                            batch.column(1).as_primitive::<Int64Type>().value(i),
                            batch.column(2).as_primitive::<Int64Type>().value(i),
                            number(3, i),
                            number(4, i),
                        ));
                    }
                }
                out.sort();
                out
            };
            let (ours, theirs) = (rows(&[ours]), rows(&theirs));
            assert_eq!(ours.len(), 12, "{ours:?}");
            assert!(ours.iter().any(|r| r.4.is_none()), "a group without values");
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [f64::INFINITY, 1.0]), Some(f64::INFINITY));
        let zero = median(&mut [-2.0, 0.0, -0.0, -5.0, 7.0]).map(f64::to_bits);
        assert_eq!(zero, Some((-0.0f64).to_bits()));
        assert_eq!(median(&mut [-3.0, -1.0]), Some(-2.0));
        // The values stay, in some order.
        let mut v = [-1.5, 3.0, f64::NEG_INFINITY, -0.0, 2.0, -7.25];
        assert_eq!(median(&mut v), Some(-0.75));
        v.sort_by(f64::total_cmp);
        assert_eq!(v, [f64::NEG_INFINITY, -7.25, -1.5, -0.0, 2.0, 3.0]);
    }
}
