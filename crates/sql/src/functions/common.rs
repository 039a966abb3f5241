//! Argument handling shared by the TADS functions: the model argument, metric columns of any
//! numeric type, and which rows can be scored.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::logical_expr::{DocSection, Documentation};

use crate::registry::{LoadedModel, ModelRegistry};

/// The documentation section of every TADS function.
pub(crate) const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "TADS anomaly detection",
    description: Some("Robust statistics, PCA scoring and alerting over telemetry"),
};

/// Starts the documentation of a TADS function.
pub(crate) fn doc(
    description: &str,
    syntax: &str,
    example: &str,
) -> datafusion::logical_expr::DocumentationBuilder {
    Documentation::builder(DOC_SECTION, description, syntax).with_sql_example(example)
}

/// A signature that accepts any arguments (the function checks them itself, with messages that
/// name the model and what it expected) and carries an example call, so that `SHOW FUNCTIONS`
/// and `information_schema.parameters` can list the function. Any arguments come first, so the
/// example never coerces a real call.
pub(crate) fn any_with_example(example: Vec<DataType>) -> datafusion::logical_expr::Signature {
    any_with_example_of(
        datafusion::logical_expr::TypeSignature::VariadicAny,
        example,
    )
}

/// [`any_with_example`] for a fixed number of arguments of any type (`TypeSignature::Any(n)`).
pub(crate) fn any_with_example_of(
    any: datafusion::logical_expr::TypeSignature,
    example: Vec<DataType>,
) -> datafusion::logical_expr::Signature {
    use datafusion::logical_expr::{Signature, TypeSignature, Volatility};
    Signature::one_of(
        vec![any, TypeSignature::Exact(example)],
        Volatility::Immutable,
    )
}

/// Whether `t` can name a model (a string, plain, view, large or dictionary-encoded).
pub(crate) fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

/// Whether `t` is accepted as a metric: any integer or float (NULL literals too).
pub(crate) fn is_metric(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Null)
}

/// Whether `t` is a timestamp: the optional last argument of the model functions, the rows'
/// times, which the seasonal detector reads.
pub(crate) fn is_time(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(..))
}

/// The arguments after the model without a last timestamp argument, and whether there was one.
pub(crate) fn split_time<T>(after_model: &[T], kind: impl Fn(&T) -> DataType) -> (&[T], bool) {
    match after_model.split_last() {
        Some((last, rest)) if !rest.is_empty() && is_time(&kind(last)) => (rest, true),
        _ => (after_model, false),
    }
}

/// A timestamp argument as microseconds since the epoch, per row (`None` where NULL).
pub(crate) fn micros_of(arg: &ColumnarValue, n: usize) -> Result<Vec<Option<i64>>> {
    use datafusion::arrow::datatypes::{TimeUnit, TimestampMicrosecondType};
    let array = arg.to_array(n)?;
    let micros = cast(&array, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    Ok(micros
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .collect())
}

/// Plan-time checks of `f('model', x1, …, xd [, ts])`: a text first argument, numeric metrics
/// (and an optional last timestamp, the rows' times), and, if the model is a literal, a known
/// model with exactly d features. Returns that model.
pub(crate) fn check_model_call(
    function: &str,
    registry: &ModelRegistry,
    fields: &[FieldRef],
    model_literal: Option<&ScalarValue>,
) -> Result<Option<Arc<LoadedModel>>> {
    let Some((first, metrics)) = fields.split_first() else {
        return plan_err!(
            "{function}: expects a model name and the model's metrics, got no arguments"
        );
    };
    if !is_text(first.data_type()) {
        return plan_err!(
            "{function}: the first argument must be a model name (text), got {}",
            first.data_type()
        );
    }
    let (metrics, _) = split_time(metrics, |f| f.data_type().clone());
    for (i, f) in metrics.iter().enumerate() {
        if !is_metric(f.data_type()) {
            return plan_err!(
                "{function}: metric argument {} must be numeric, got {}",
                i + 1,
                f.data_type()
            );
        }
    }
    let Some(name) = model_literal.and_then(scalar_text) else {
        return Ok(None);
    };
    let Some(model) = registry.get(&name) else {
        return plan_err!("{function}: {}", registry.unknown(&name));
    };
    let d = model.artifact.dims();
    if metrics.len() != d {
        return plan_err!(
            "{function}: model `{name}` takes {d} metrics ({}), got {}",
            model.artifact.features.join(", "),
            metrics.len()
        );
    }
    Ok(Some(model))
}

/// The text of a string literal, if it is one and not NULL.
pub(crate) fn scalar_text(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s) => s.clone(),
        ScalarValue::Dictionary(_, v) => scalar_text(v),
        _ => None,
    }
}

/// The metric arguments as Float64 arrays of `n` rows.
pub(crate) fn metric_arrays(args: &[ColumnarValue], n: usize) -> Result<Vec<Float64Array>> {
    args.iter()
        .map(|a| {
            let array = a.to_array(n)?;
            let array = if array.data_type() == &DataType::Float64 {
                array
            } else {
                cast(&array, &DataType::Float64)?
            };
            Ok(array.as_primitive().clone())
        })
        .collect()
}

/// Rows where every metric is present and finite.
pub(crate) fn finite_rows(columns: &[Float64Array], n: usize) -> Vec<bool> {
    let mut ok = vec![true; n];
    for c in columns {
        // The common case, no NULLs, is a tight loop over the values alone.
        for (flag, v) in ok.iter_mut().zip(c.values().iter()) {
            *flag &= v.is_finite();
        }
        if let Some(nulls) = c.nulls().filter(|b| b.null_count() > 0) {
            for (flag, valid) in ok.iter_mut().zip(nulls.iter()) {
                *flag &= valid;
            }
        }
    }
    ok
}

/// Calls `f(model, rows)` for each run of consecutive rows that name the same model; rows whose
/// model is NULL, or an untrained member of a known group (`group/value`), are skipped (their
/// results stay NULL). Other unknown models, and models whose width is not `width` (when given),
/// are errors.
pub(crate) fn for_each_model_run(
    function: &str,
    registry: &ModelRegistry,
    model: &ColumnarValue,
    width: Option<usize>,
    n: usize,
    mut f: impl FnMut(&LoadedModel, Range<usize>) -> Result<()>,
) -> Result<()> {
    let lookup = |name: &str| -> Result<Option<Arc<LoadedModel>>> {
        let Some(m) = registry.get(name) else {
            if registry.is_group_member_name(name) {
                return Ok(None);
            }
            return exec_err!("{function}: {}", registry.unknown(name));
        };
        if let Some(d) = width.filter(|d| *d != m.artifact.dims()) {
            return exec_err!(
                "{function}: model `{name}` takes {} metrics ({}), got {d}",
                m.artifact.dims(),
                m.artifact.features.join(", ")
            );
        }
        Ok(Some(m))
    };
    match model {
        ColumnarValue::Scalar(v) => {
            if let Some(m) = scalar_text(v)
                .map(|name| lookup(&name))
                .transpose()?
                .flatten()
            {
                f(m.as_ref(), 0..n)?;
            }
        }
        ColumnarValue::Array(a) => {
            let names: ArrayRef = cast(a, &DataType::Utf8)?;
            let names: &StringArray = names.as_string();
            let mut start = 0;
            while start < n {
                let mut end = start + 1;
                while end < n
                    && names.is_valid(start) == names.is_valid(end)
                    && names.value(start) == names.value(end)
                {
                    end += 1;
                }
                if names.is_valid(start)
                    && let Some(m) = lookup(names.value(start))?
                {
                    f(m.as_ref(), start..end)?;
                }
                start = end;
            }
        }
    }
    Ok(())
}
