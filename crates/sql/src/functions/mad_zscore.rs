//! `mad_zscore`: a robust z-score, from explicit statistics or from a model.

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
    doc, finite_rows, for_each_model_run, is_metric, is_text, metric_arrays, scalar_text,
};
use crate::registry::ModelRegistry;

/// `mad_zscore(x, median, mad)` or `mad_zscore('model', 'metric', x)`.
#[derive(Debug)]
pub struct MadZscore {
    registry: ModelRegistry,
    signature: Signature,
    documentation: Documentation,
}

impl MadZscore {
    /// The function, with models from `registry`.
    pub fn new(registry: ModelRegistry) -> Self {
        Self {
            registry,
            signature: super::common::any_with_example(vec![DataType::Float64, DataType::Float64, DataType::Float64]),
            documentation: doc(
                "A robust z-score (x - median) / mad. With a model, the median and the scaled MAD \
                 (1.4826 MAD) of one of its metrics. NULL where any input is NULL, NaN or infinite, \
                 and where mad is 0 or negative.",
                "mad_zscore(x, median, mad) | mad_zscore(model, metric, x)",
                "SELECT mad_zscore(cpu_pct, 40.0, 6.5), mad_zscore('m', 'cpu_pct', cpu_pct) FROM telemetry",
            )
            .with_argument("x", "The value; any numeric type.")
            .with_argument("median, mad", "The centre and the (already scaled) spread.")
            .with_argument("model, metric", "A model name (literal or column) and one of its features (a literal).")
            .build(),
        }
    }

    /// The feature index of the model form's metric, checked at plan time when literal.
    fn feature_index(&self, model: &str, metric: &str) -> Result<usize> {
        let Some(m) = self.registry.get(model) else {
            return plan_err!("mad_zscore: {}", self.registry.unknown(model));
        };
        metric_position("mad_zscore", &m.artifact, metric).or_else(|e| plan_err!("{e}"))
    }
}

/// The position of `metric` among the model's features, or the error naming both.
pub(super) fn metric_position(
    function: &str,
    model: &tads_model::ModelArtifact,
    metric: &str,
) -> std::result::Result<usize, String> {
    model
        .features
        .iter()
        .position(|f| f == metric)
        .ok_or_else(|| {
            format!(
                "{function}: model `{}` has no metric `{metric}` (its metrics: {})",
                model.name,
                model.features.join(", ")
            )
        })
}

impl PartialEq for MadZscore {
    fn eq(&self, other: &Self) -> bool {
        self.registry.same(&other.registry)
    }
}
impl Eq for MadZscore {}
impl Hash for MadZscore {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "mad_zscore".hash(state);
    }
}

impl MadZscore {
    /// The models it scores with.
    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }
}

impl ScalarUDFImpl for MadZscore {
    fn name(&self) -> &str {
        "mad_zscore"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<&DataType> = args.arg_fields.iter().map(|f| f.data_type()).collect();
        if types.len() != 3 {
            return plan_err!(
                "mad_zscore: expects (x, median, mad) or (model, metric, x), got {} arguments",
                types.len()
            );
        }
        if is_text(types[0]) {
            if !is_text(types[1]) || !is_metric(types[2]) {
                return plan_err!(
                    "mad_zscore: the model form is (model text, metric text, x numeric), got ({}, {}, {})",
                    types[0],
                    types[1],
                    types[2]
                );
            }
            let Some(metric) = args.scalar_arguments[1].and_then(scalar_text) else {
                return plan_err!("mad_zscore: the metric name must be a string literal");
            };
            if let Some(model) = args.scalar_arguments[0].and_then(scalar_text) {
                self.feature_index(&model, &metric)?;
            }
        } else if !types.iter().all(|t| is_metric(t)) {
            return plan_err!(
                "mad_zscore: expects numeric (x, median, mad), got ({}, {}, {})",
                types[0],
                types[1],
                types[2]
            );
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Float64, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [a, b, c] = args.args.as_slice() else {
            return internal_err!("mad_zscore: arity checked at plan time");
        };
        let mut out = vec![0.0; n];
        let valid = if is_text(&a.data_type()) {
            let ColumnarValue::Scalar(metric) = b else {
                return internal_err!("mad_zscore: metric literal checked at plan time");
            };
            let metric = scalar_text(metric).unwrap_or_default();
            let x = metric_arrays(std::slice::from_ref(c), n)?;
            let mut valid = finite_rows(&x, n);
            let mut scored = vec![false; n];
            let values = x[0].values();
            for_each_model_run(self.name(), &self.registry, a, None, n, |m, rows| {
                let j = metric_position(self.name(), &m.artifact, &metric)
                    .or_else(|e| exec_err!("{e}"))?;
                for i in rows {
                    out[i] = m.scorer.robust_z(j, values[i]);
                    scored[i] = true;
                }
                Ok(())
            })?;
            for i in 0..n {
                valid[i] = valid[i] && scored[i];
            }
            valid
        } else {
            let cols = metric_arrays(&args.args, n)?;
            let valid = finite_rows(&cols, n);
            let (x, m, s) = (cols[0].values(), cols[1].values(), cols[2].values());
            for i in 0..n {
                out[i] = (x[i] - m[i]) / s[i];
            }
            (0..n).map(|i| valid[i] && s[i] > 0.0).collect()
        };
        let valid: Vec<bool> = valid
            .iter()
            .zip(&out)
            .map(|(v, o)| *v && o.is_finite())
            .collect();
        Ok(ColumnarValue::Array(Arc::new(Float64Array::new(
            out.into(),
            Some(NullBuffer::from(valid)),
        ))))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.documentation)
    }
}
