//! `seasonal_zscore(model, metric, ts, x)`: one metric's z-score against its slot (hour of the
//! day or of the week) in the model's seasonal baseline.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::Float64Array;
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, exec_err, internal_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
};

use super::common::{
    doc, finite_rows, for_each_model_run, is_metric, is_text, is_time, metric_arrays, micros_of,
    scalar_text,
};
use super::mad_zscore::metric_position;
use crate::registry::ModelRegistry;

const NAME: &str = "seasonal_zscore";

/// `seasonal_zscore(model, metric, ts, x)`.
#[derive(Debug)]
pub struct SeasonalZscore {
    registry: ModelRegistry,
    signature: Signature,
    documentation: Documentation,
}

impl SeasonalZscore {
    /// The function, with models from `registry`.
    pub fn new(registry: ModelRegistry) -> Self {
        use datafusion::arrow::datatypes::TimeUnit;
        Self {
            registry,
            signature: super::common::any_with_example(vec![
                DataType::Utf8,
                DataType::Utf8,
                DataType::Timestamp(TimeUnit::Microsecond, None),
                DataType::Float64,
            ]),
            documentation: doc(
                "A metric's z-score against the model's seasonal baseline (`tads train --seasonal`): \
                 (x - centre) / scale of the row's slot, the hour of the day or of the week that \
                 training found the metric to repeat over, in the units the scoring plan reads the \
                 metric in (the daily cycle and the drift baseline taken out); the plain robust z \
                 for a metric without a cycle. NULL where any input is NULL, NaN or infinite, and \
                 where the model has no seasonal section.",
                "seasonal_zscore(model, metric, ts, x)",
                "SELECT ts, seasonal_zscore('m', 'cpu_pct', ts, cpu_pct) FROM telemetry",
            )
            .with_argument("model", "A model name (literal or column).")
            .with_argument("metric", "One of its features (a literal).")
            .with_argument("ts", "The row's timestamp.")
            .with_argument("x", "The value; any numeric type.")
            .build(),
        }
    }
}

impl PartialEq for SeasonalZscore {
    fn eq(&self, other: &Self) -> bool {
        self.registry.same(&other.registry)
    }
}
impl Eq for SeasonalZscore {}
impl Hash for SeasonalZscore {
    fn hash<H: Hasher>(&self, state: &mut H) {
        NAME.hash(state);
    }
}

impl SeasonalZscore {
    /// The models it scores with.
    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }
}

impl ScalarUDFImpl for SeasonalZscore {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<&DataType> = args.arg_fields.iter().map(|f| f.data_type()).collect();
        let [model, metric, ts, x] = types.as_slice() else {
            return plan_err!(
                "{NAME}: expects (model, metric, ts, x), got {} arguments",
                types.len()
            );
        };
        if !is_text(model) || !is_text(metric) || !is_time(ts) || !is_metric(x) {
            return plan_err!(
                "{NAME}: expects (model text, metric text, ts timestamp, x numeric), got ({model}, {metric}, {ts}, {x})"
            );
        }
        let Some(metric) = args.scalar_arguments[1].and_then(scalar_text) else {
            return plan_err!("{NAME}: the metric name must be a string literal");
        };
        if let Some(name) = args.scalar_arguments[0].and_then(scalar_text) {
            let Some(m) = self.registry.get(&name) else {
                return plan_err!("{NAME}: {}", self.registry.unknown(&name));
            };
            metric_position(NAME, &m.artifact, &metric).or_else(|e| plan_err!("{e}"))?;
        }
        Ok(Arc::new(Field::new(NAME, DataType::Float64, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [model, metric, ts, x] = args.args.as_slice() else {
            return internal_err!("{NAME}: arity checked at plan time");
        };
        let ColumnarValue::Scalar(metric) = metric else {
            return internal_err!("{NAME}: metric literal checked at plan time");
        };
        let metric = scalar_text(metric).unwrap_or_default();
        let x = metric_arrays(std::slice::from_ref(x), n)?;
        let micros = micros_of(ts, n)?;
        let mut valid = finite_rows(&x, n);
        let values = x[0].values();
        let mut out = vec![f64::NAN; n];
        for_each_model_run(NAME, &self.registry, model, None, n, |m, rows| {
            let j = metric_position(NAME, &m.artifact, &metric).or_else(|e| exec_err!("{e}"))?;
            for i in rows {
                if let Some(t) = micros[i]
                    && let Some(z) = m.scorer.season_z(j, t, values[i])
                {
                    out[i] = z;
                }
            }
            Ok(())
        })?;
        for (v, o) in valid.iter_mut().zip(&out) {
            *v = *v && o.is_finite();
        }
        Ok(ColumnarValue::Array(Arc::new(Float64Array::new(
            out.into(),
            Some(NullBuffer::from(valid)),
        ))))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.documentation)
    }
}
