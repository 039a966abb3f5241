//! `sketch_quantile(x, q, centroids)`: the `q` quantile of x from a t-digest of at most
//! `centroids` centroids, as DataFusion's `approx_percentile_cont(q, centroids) WITHIN GROUP
//! (ORDER BY x)` computes it, with an accumulator of its own for GROUP BY. Its digests are
//! updated and merged as DataFusion's are, so it gives the same value wherever the partitions'
//! states merge in the same order (across partitions that order, and with it the last digits,
//! varies from run to run for both).
//!
//! DataFusion runs `approx_percentile_cont` under GROUP BY through its generic adapter, which
//! keeps, for every group, a vector of the row numbers the group had in the largest batch it
//! met: on rows sorted by key and day, a batch's 8,192 rows belong to one group, so every group
//! of every sketch holds 32 KiB more than its digest. With one group per host and day, 165
//! hosts × 70 days × 8 features held 3.5 GB at 100M rows. Here a group holds its digest alone.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray, UInt64Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, Signature,
    TypeSignature,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion_functions_aggregate_common::tdigest::TDigest;

use super::common::doc;

/// `sketch_quantile(x, q, centroids)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SketchQuantileUdaf {
    signature: Signature,
}

impl Default for SketchQuantileUdaf {
    fn default() -> Self {
        Self {
            // Checked and coerced by `coerce_types`; the example lets SHOW FUNCTIONS list it.
            signature: super::common::any_with_example_of(
                TypeSignature::UserDefined,
                vec![DataType::Float64, DataType::Float64, DataType::Int64],
            ),
        }
    }
}

static SKETCH_DOC: std::sync::LazyLock<Documentation> = std::sync::LazyLock::new(|| {
    doc(
        "The q quantile of x (0 ≤ q ≤ 1) from a t-digest of at most `centroids` centroids: the \
         value approx_percentile_cont(q, centroids) WITHIN GROUP (ORDER BY x) gives, in memory \
         bounded by the groups × centroids whatever the rows (under GROUP BY, DataFusion's own \
         holds up to 32 KiB more per group). NULL and NaN are skipped; no value left gives NULL. \
         What `tads train --quantiles sketch` takes its medians and quantiles with.",
        "sketch_quantile(x, q, centroids)",
        "SELECT host_id, sketch_quantile(cpu_pct, 0.5, 200) FROM telemetry GROUP BY host_id",
    )
    .with_argument("x", "Any numeric expression (taken as DOUBLE).")
    .with_argument("q", "The quantile, a literal between 0 and 1.")
    .with_argument(
        "centroids",
        "The digest's size, a literal (more is closer, and larger).",
    )
    .build()
});

/// A literal argument of the call, as a float.
fn literal(name: &str, exprs: &[Arc<dyn PhysicalExpr>], i: usize) -> Result<f64> {
    let value = exprs
        .get(i)
        .and_then(|e| e.downcast_ref::<Literal>())
        .map(|l| l.value().clone());
    match value {
        Some(ScalarValue::Float64(Some(v))) => Ok(v),
        Some(ScalarValue::Int64(Some(v))) => Ok(v as f64),
        _ => plan_err!("sketch_quantile: {name} must be a literal"),
    }
}

/// The quantile and the digests' size of a call.
fn parameters(exprs: &[Arc<dyn PhysicalExpr>]) -> Result<(f64, usize)> {
    let q = literal("q", exprs, 1)?;
    if !(0.0..=1.0).contains(&q) {
        return plan_err!("sketch_quantile: q must lie between 0 and 1, got {q}");
    }
    let size = literal("centroids", exprs, 2)?;
    if !(size >= 1.0 && size.fract() == 0.0) {
        return plan_err!("sketch_quantile: centroids must be a positive integer, got {size}");
    }
    Ok((q, size as usize))
}

impl AggregateUDFImpl for SketchQuantileUdaf {
    fn name(&self) -> &str {
        "sketch_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [x, q, c] = arg_types else {
            return plan_err!(
                "sketch_quantile: expects 3 arguments (x, q, centroids), got {}",
                arg_types.len()
            );
        };
        for (name, t) in [("x", x), ("q", q), ("centroids", c)] {
            if !t.is_numeric() && !t.is_null() {
                return plan_err!("sketch_quantile: {name} must be numeric, got {t}");
            }
        }
        Ok(vec![DataType::Float64, DataType::Float64, DataType::Int64])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let (q, size) = parameters(args.exprs)?;
        Ok(Box::new(SketchOne {
            q,
            digest: TDigest::new(size),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let f = |part: &str, t: DataType| Field::new(format_state_name(args.name, part), t, false);
        Ok(vec![
            f("max_size", DataType::UInt64),
            f("sum", DataType::Float64),
            f("count", DataType::Float64),
            f("max", DataType::Float64),
            f("min", DataType::Float64),
            Field::new_list(
                format_state_name(args.name, "centroids"),
                Field::new_list_field(DataType::Float64, true),
                false,
            ),
        ]
        .into_iter()
        .map(Arc::new)
        .collect())
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let (q, size) = parameters(args.exprs)?;
        Ok(Box::new(SketchGroups {
            q,
            size,
            digests: Vec::new(),
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&SKETCH_DOC)
    }
}

/// The values of `x` to add: not NULL, not NaN, and passing the filter; with their row.
fn rows_to_add<'a>(
    x: &'a Float64Array,
    filter: Option<&'a BooleanArray>,
) -> impl Iterator<Item = (usize, f64)> + 'a {
    (0..x.len()).filter_map(move |i| {
        let kept = filter.is_none_or(|f| f.is_valid(i) && f.value(i));
        (kept && x.is_valid(i) && !x.value(i).is_nan()).then(|| (i, x.value(i)))
    })
}

/// The digest of every row of a state's columns.
fn digests_of(states: &[ArrayRef]) -> Result<Vec<TDigest>> {
    let rows = states.first().map_or(0, |s| s.len());
    (0..rows)
        .map(|i| {
            let state = states
                .iter()
                .map(|s| ScalarValue::try_from_array(s, i))
                .collect::<Result<Vec<_>>>()?;
            Ok(TDigest::from_scalar_state(&state))
        })
        .collect()
}

/// The quantile of a digest, NULL for an empty one.
fn quantile_of(digest: &TDigest, q: f64) -> Option<f64> {
    (digest.count() > 0.0).then(|| digest.estimate_quantile(q))
}

/// Bytes a digest holds.
fn digest_bytes(d: &TDigest) -> usize {
    size_of::<TDigest>() + size_of_val(d.centroids())
}

/// One digest: `sketch_quantile` without GROUP BY.
#[derive(Debug)]
struct SketchOne {
    q: f64,
    digest: TDigest,
}

impl Accumulator for SketchOne {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let x = values[0].as_primitive::<Float64Type>();
        let mut v: Vec<f64> = rows_to_add(x, None).map(|(_, v)| v).collect();
        v.sort_by(f64::total_cmp);
        self.digest = self.digest.merge_sorted_f64(&v);
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let mut digests = digests_of(states)?;
        digests.push(self.digest.clone());
        self.digest = TDigest::merge_digests(&digests);
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.digest.to_scalar_state())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(quantile_of(&self.digest, self.q)))
    }

    fn size(&self) -> usize {
        size_of_val(self) - size_of::<TDigest>() + digest_bytes(&self.digest)
    }
}

/// A digest per group.
#[derive(Debug)]
struct SketchGroups {
    q: f64,
    size: usize,
    digests: Vec<TDigest>,
}

impl SketchGroups {
    /// The digests `emit_to` hands over, taken out.
    fn take(&mut self, emit_to: EmitTo) -> Vec<TDigest> {
        emit_to.take_needed(&mut self.digests)
    }

    fn grow(&mut self, groups: usize) {
        if self.digests.len() < groups {
            let size = self.size;
            self.digests.resize_with(groups, || TDigest::new(size));
        }
    }
}

impl GroupsAccumulator for SketchGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let x = values[0].as_primitive::<Float64Type>();
        let mut entries: Vec<(usize, f64)> = rows_to_add(x, opt_filter)
            .map(|(i, v)| (group_indices[i], v))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let sorted: Vec<f64> = entries.iter().map(|e| e.1).collect();
        let mut start = 0;
        for run in entries.chunk_by(|a, b| a.0 == b.0) {
            let (g, end) = (run[0].0, start + run.len());
            self.digests[g] = self.digests[g].merge_sorted_f64(&sorted[start..end]);
            start = end;
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let states = digests_of(values)?;
        // Each group merges its rows' digests in row order, its own last (as DataFusion's).
        let mut entries: Vec<(usize, usize)> = group_indices
            .iter()
            .enumerate()
            .map(|(i, &g)| (g, i))
            .collect();
        entries.sort_by_key(|e| e.0);
        for run in entries.chunk_by(|a, b| a.0 == b.0) {
            let g = run[0].0;
            let mut digests: Vec<TDigest> = run.iter().map(|&(_, i)| states[i].clone()).collect();
            digests.push(self.digests[g].clone());
            self.digests[g] = TDigest::merge_digests(&digests);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let q = self.q;
        let values: Float64Array = self
            .take(emit_to)
            .iter()
            .map(|d| quantile_of(d, q))
            .collect();
        Ok(Arc::new(values))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(state_columns(&self.take(emit_to)))
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own group: a digest of its value, or an empty one.
        let x = values[0].as_primitive::<Float64Type>();
        let mut digests = vec![TDigest::new(self.size); x.len()];
        for (i, v) in rows_to_add(x, opt_filter) {
            digests[i] = digests[i].merge_sorted_f64(&[v]);
        }
        Ok(state_columns(&digests))
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self.digests.capacity() * size_of::<TDigest>()
            + self
                .digests
                .iter()
                .map(|d| size_of_val(d.centroids()))
                .sum::<usize>()
    }
}

/// The state columns of `digests`, one row each (as [`TDigest::to_scalar_state`] lays out one).
fn state_columns(digests: &[TDigest]) -> Vec<ArrayRef> {
    let column = |f: &dyn Fn(&TDigest) -> f64| -> ArrayRef {
        Arc::new(digests.iter().map(f).collect::<Float64Array>())
    };
    let sizes: UInt64Array = digests.iter().map(|d| d.max_size() as u64).collect();
    let centroids: Float64Array = digests
        .iter()
        .flat_map(|d| d.centroids().iter().flat_map(|c| [c.mean(), c.weight()]))
        .collect();
    let lists = ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        OffsetBuffer::from_lengths(digests.iter().map(|d| 2 * d.centroids().len())),
        Arc::new(centroids),
        None,
    );
    vec![
        Arc::new(sizes),
        column(&TDigest::sum),
        column(&TDigest::count),
        column(&TDigest::max),
        column(&TDigest::min),
        Arc::new(lists),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// A session with `sketch_quantile`, `partitions` partitions and batches of 97 rows, and
    /// the table `t`: 20,000 rows in 7 groups `g`, every 13th `x` NULL.
    async fn session(partitions: usize) -> Result<SessionContext> {
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new()
                .with_target_partitions(partitions)
                .with_batch_size(97),
        );
        ctx.register_udaf(datafusion::logical_expr::AggregateUDF::new_from_impl(
            SketchQuantileUdaf::default(),
        ));
        ctx.sql(
            "CREATE TABLE t AS SELECT value % 7 AS g, \
               CASE WHEN value % 13 = 0 THEN NULL ELSE sin(value) * (value % 11) END AS x \
               FROM generate_series(1, 20000)",
        )
        .await?
        .collect()
        .await?;
        Ok(ctx)
    }

    /// Runs `sql` and checks that its first column is true on every row, and that it has `rows`.
    async fn all_true(ctx: &SessionContext, sql: &str, rows: usize) -> Result<()> {
        let batches = ctx.sql(sql).await?.collect().await?;
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            rows,
            "{sql}"
        );
        for b in &batches {
            let same = b.column(0).as_boolean();
            assert!(same.iter().all(|s| s == Some(true)), "{sql}: {b:?}");
        }
        Ok(())
    }

    const CASES: [(f64, usize); 3] = [(0.5, 200), (0.01, 100), (0.995, 1000)];

    /// In one partition (where the order digests merge in is fixed), `sketch_quantile` gives
    /// exactly what `approx_percentile_cont` gives, grouped and not; NaN is skipped as NULL is.
    #[tokio::test]
    async fn gives_approx_percentile_conts_values() -> Result<()> {
        let ctx = session(1).await?;
        for (q, c) in CASES {
            let ours = format!("sketch_quantile(x, {q}, {c})");
            let theirs = format!("approx_percentile_cont({q}, {c}) WITHIN GROUP (ORDER BY x)");
            for (by, rows) in [("", 1), (" GROUP BY g", 7)] {
                let sql = format!("SELECT {ours} = {theirs} FROM t{by}");
                all_true(&ctx, &sql, rows).await?;
            }
        }
        let nan = "CASE WHEN g = 3 AND x > 1 THEN 'NaN'::DOUBLE ELSE x END";
        let sql = format!(
            "SELECT sketch_quantile({nan}, 0.9, 100) = sketch_quantile(\
               CASE WHEN isnan({nan}) THEN NULL ELSE {nan} END, 0.9, 100) FROM t GROUP BY g"
        );
        all_true(&ctx, &sql, 7).await
    }

    /// Over three partitions (states merged, in any order), it stays within 1 % of the range of
    /// the exact quantile; a group with no value gives NULL; parameters out of range are refused.
    #[tokio::test]
    async fn merged_across_partitions_it_stays_close_to_the_exact_quantile() -> Result<()> {
        let ctx = session(3).await?;
        for (q, c) in CASES {
            let close = format!(
                "abs(sketch_quantile(x, {q}, {c}) - percentile_cont({q}) WITHIN GROUP \
                 (ORDER BY x)) <= 0.01 * (max(x) - min(x))"
            );
            let sql = format!("SELECT {close} FROM (SELECT * FROM t UNION ALL SELECT * FROM t)");
            all_true(&ctx, &sql, 1).await?;
            all_true(&ctx, &format!("{sql} GROUP BY g"), 7).await?;
        }
        let sql = "SELECT sketch_quantile(x, 0.5, 100) IS NULL FROM t WHERE x IS NULL GROUP BY g";
        all_true(&ctx, sql, 7).await?;
        for bad in ["sketch_quantile(x, 1.5, 100)", "sketch_quantile(x, 0.5, 0)"] {
            let sql = format!("SELECT {bad} FROM t");
            let err = match ctx.sql(&sql).await {
                Ok(df) => df.collect().await.map(|_| ()).unwrap_err(),
                Err(e) => e,
            };
            assert!(err.to_string().contains("sketch_quantile"), "{err}");
        }
        Ok(())
    }
}
