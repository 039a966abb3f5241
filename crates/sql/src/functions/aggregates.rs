//! The training aggregates: `robust_stats(x)` (exact median and MAD) and `pca_fit(x1, …, xd)`
//! (count, means and co-moments, merged across partitions with Chan's formulas). Both skip rows
//! with a NULL, NaN or infinite input and work under GROUP BY.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, ListArray, StructArray, UInt64Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, UInt64Type};
use datafusion::common::{Result, ScalarValue, internal_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Documentation, Signature};
use tads_model::{CoMoments, RobustStats};

use super::common::{doc, finite_rows, is_metric, metric_arrays};
use datafusion::logical_expr::ColumnarValue;

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

/// A one-row list scalar of `values`.
fn list_scalar(values: Vec<f64>) -> ScalarValue {
    let len = values.len();
    let list = ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        OffsetBuffer::from_lengths([len]),
        Arc::new(Float64Array::from(values)),
        None,
    );
    ScalarValue::List(Arc::new(list))
}

/// A one-row struct scalar.
fn struct_scalar(fields: Fields, columns: Vec<ArrayRef>) -> Result<ScalarValue> {
    Ok(ScalarValue::Struct(Arc::new(StructArray::try_new(
        fields, columns, None,
    )?)))
}

/// Finite rows of the inputs, as compact Float64 columns.
fn finite_columns(values: &[ArrayRef]) -> Result<Vec<Float64Array>> {
    let n = values.first().map_or(0, |v| v.len());
    let args: Vec<ColumnarValue> = values
        .iter()
        .map(|v| ColumnarValue::Array(Arc::clone(v)))
        .collect();
    let columns = metric_arrays(&args, n)?;
    let keep = finite_rows(&columns, n);
    if keep.iter().all(|k| *k) {
        return Ok(columns);
    }
    let mask = keep.into();
    columns
        .iter()
        .map(|c| Ok(filter(c, &mask)?.as_primitive().clone()))
        .collect()
}

fn check_numeric(function: &str, arg_types: &[DataType], min: usize) -> Result<()> {
    if arg_types.len() < min {
        return plan_err!(
            "{function}: expects at least {min} numeric argument(s), got {}",
            arg_types.len()
        );
    }
    if let Some((i, t)) = arg_types.iter().enumerate().find(|(_, t)| !is_metric(t)) {
        return plan_err!("{function}: argument {} must be numeric, got {t}", i + 1);
    }
    Ok(())
}

// ---------------------------------------------------------------- robust_stats

/// `robust_stats(x)`: the exact median and scaled MAD of x.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RobustStatsUdaf {
    signature: Signature,
}

impl Default for RobustStatsUdaf {
    fn default() -> Self {
        Self {
            signature: super::common::any_with_example_of(
                datafusion::logical_expr::TypeSignature::Any(1),
                vec![DataType::Float64],
            ),
        }
    }
}

fn robust_fields() -> Fields {
    Fields::from(vec![
        Field::new("median", DataType::Float64, true),
        Field::new("mad", DataType::Float64, true),
        Field::new("count", DataType::UInt64, false),
        Field::new("mean_ad", DataType::Float64, true),
        Field::new("low", DataType::Float64, true),
        Field::new("high", DataType::Float64, true),
    ])
}

static ROBUST_DOC: std::sync::LazyLock<Documentation> = std::sync::LazyLock::new(|| {
    doc(
        "The exact median and MAD of x, the MAD scaled by 1.4826 so that it estimates the standard \
         deviation of normal data: a struct {median, mad, count, mean_ad, low, high}, where mean_ad is the mean absolute deviation from the median scaled by 1.2533 (the spread of a sparse metric whose MAD is 0) and low and high are the 0.5 % and 99.5 % quantiles (interpolated as percentile_cont; they floor a model's scale). NULL, NaN and infinite values are \
         skipped; no value left gives NULL. Exact, so it keeps every value of a group in memory \
         (8 bytes a row).",
        "robust_stats(x)",
        "SELECT host_id, robust_stats(cpu_pct)['median'] FROM telemetry GROUP BY host_id",
    )
    .with_argument("x", "Any numeric expression.")
    .build()
});

impl AggregateUDFImpl for RobustStatsUdaf {
    fn name(&self) -> &str {
        "robust_stats"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        check_numeric(self.name(), arg_types, 1)?;
        Ok(DataType::Struct(robust_fields()))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(RobustStatsAccumulator::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[values]", args.name),
            list_type(),
            true,
        ))])
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&ROBUST_DOC)
    }
}

#[derive(Debug, Default)]
struct RobustStatsAccumulator {
    values: Vec<f64>,
}

impl Accumulator for RobustStatsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for c in finite_columns(values)? {
            self.values.extend_from_slice(c.values());
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(lists) = states.first() else {
            return internal_err!("robust_stats: no state to merge");
        };
        let lists = lists.as_list::<i32>();
        for i in (0..lists.len()).filter(|i| lists.is_valid(*i)) {
            let values = lists.value(i);
            self.values.extend_from_slice(
                values
                    .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                    .values(),
            );
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![list_scalar(std::mem::take(&mut self.values))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut values = self.values.clone();
        match RobustStats::exact(&mut values) {
            None => ScalarValue::try_from(&DataType::Struct(robust_fields())),
            Some(s) => struct_scalar(
                robust_fields(),
                vec![
                    Arc::new(Float64Array::from(vec![s.median])),
                    Arc::new(Float64Array::from(vec![s.mad])),
                    Arc::new(UInt64Array::from(vec![s.count])),
                    Arc::new(Float64Array::from(vec![s.mean_ad])),
                    Arc::new(Float64Array::from(vec![s.low])),
                    Arc::new(Float64Array::from(vec![s.high])),
                ],
            ),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.capacity() * 8
    }
}

// ---------------------------------------------------------------- pca_fit

/// `pca_fit(x1, …, xd)`: count, means and co-moments of the rows.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PcaFitUdaf {
    signature: Signature,
}

impl Default for PcaFitUdaf {
    fn default() -> Self {
        Self {
            signature: super::common::any_with_example(vec![DataType::Float64, DataType::Float64]),
        }
    }
}

fn pca_fields() -> Fields {
    Fields::from(vec![
        Field::new("count", DataType::UInt64, false),
        Field::new("mean", list_type(), false),
        Field::new("m2", list_type(), false),
    ])
}

static PCA_FIT_DOC: std::sync::LazyLock<Documentation> = std::sync::LazyLock::new(|| {
    doc(
        "The sufficient statistics of a PCA: a struct {count, mean, m2} with the number of rows, \
         each argument's mean, and the d×d sums of products of deviations (row-major; divide by \
         count - 1 for the covariance). Rows with any NULL, NaN or infinite argument are skipped. \
         Partial results merge exactly (Chan, Golub and LeVeque), so partitions fit in parallel.",
        "pca_fit(x1, ..., xd)",
        "SELECT region, pca_fit(cpu_pct, net_rx_mbps, latency_ms)['m2'] FROM telemetry GROUP BY region",
    )
    .with_argument("x1, ..., xd", "Numeric expressions, usually standardized metrics.")
    .build()
});

impl AggregateUDFImpl for PcaFitUdaf {
    fn name(&self) -> &str {
        "pca_fit"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        check_numeric(self.name(), arg_types, 1)?;
        Ok(DataType::Struct(pca_fields()))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(PcaFitAccumulator {
            moments: CoMoments::new(args.exprs.len()),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[count]", args.name),
                DataType::UInt64,
                true,
            )),
            Arc::new(Field::new(
                format!("{}[mean]", args.name),
                list_type(),
                true,
            )),
            Arc::new(Field::new(format!("{}[m2]", args.name), list_type(), true)),
        ])
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&PCA_FIT_DOC)
    }
}

#[derive(Debug)]
struct PcaFitAccumulator {
    moments: CoMoments,
}

impl Accumulator for PcaFitAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let columns = finite_columns(values)?;
        let slices: Vec<&[f64]> = columns.iter().map(|c| c.values().as_ref()).collect();
        self.moments.update(&slices);
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [count, mean, m2] = states else {
            return internal_err!("pca_fit: expected 3 state columns, got {}", states.len());
        };
        let count = count.as_primitive::<UInt64Type>();
        let (mean, m2) = (mean.as_list::<i32>(), m2.as_list::<i32>());
        let d = self.moments.dims();
        for i in (0..count.len()).filter(|i| count.is_valid(*i) && count.value(*i) > 0) {
            let values = |l: &ListArray| {
                l.value(i)
                    .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                    .values()
                    .to_vec()
            };
            let Some(part) = CoMoments::from_parts(d, count.value(i), values(mean), values(m2))
            else {
                return internal_err!("pca_fit: a partial state of the wrong width");
            };
            self.moments.merge(&part);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::UInt64(Some(self.moments.count())),
            list_scalar(self.moments.mean().to_vec()),
            list_scalar(self.moments.m2().to_vec()),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.moments.count() == 0 {
            return ScalarValue::try_from(&DataType::Struct(pca_fields()));
        }
        let list = |v: &[f64]| -> Result<ArrayRef> { list_scalar(v.to_vec()).to_array() };
        struct_scalar(
            pca_fields(),
            vec![
                Arc::new(UInt64Array::from(vec![self.moments.count()])),
                list(self.moments.mean())?,
                list(self.moments.m2())?,
            ],
        )
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + (self.moments.mean().len() + self.moments.m2().len()) * 8
    }
}
