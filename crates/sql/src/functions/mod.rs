//! The TADS SQL functions, and [`register_all`].

mod aggregates;
mod alert_state;
mod common;
mod help;
mod mad_zscore;
mod model_docs;
mod model_scalar;
mod seasonal_zscore;
mod shard;
mod sketch;

use std::sync::Arc;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::prelude::SessionContext;

pub use aggregates::{PcaFitUdaf, RobustStatsUdaf};
pub use alert_state::AlertState;
pub use help::TadsHelp;
pub use mad_zscore::MadZscore;
pub use model_scalar::{ALL_FIELDS, ModelFunction, ModelScore};
pub use seasonal_zscore::SeasonalZscore;
pub use shard::{ShardOf, fnv1a64, shard_of};
pub use sketch::SketchQuantileUdaf;

use crate::registry::ModelRegistry;
use tads_model::Fusion;

/// Every TADS scalar function, scoring with models from `registry`.
pub fn scalar_udfs(registry: &ModelRegistry) -> Vec<ScalarUDF> {
    let mut udfs: Vec<ScalarUDF> = [
        ModelScore::Spe,
        ModelScore::T2,
        ModelScore::MadZmax,
        ModelScore::Contrib,
        ModelScore::TopMetric,
        ModelScore::TopDeviation,
        ModelScore::KMeansDistance,
        ModelScore::IForestScore,
        ModelScore::OcsvmScore,
        ModelScore::SeasonalZmax,
        ModelScore::ForecastZmax,
        ModelScore::FusedTopMetric,
        ModelScore::FusedTopDeviation,
        ModelScore::All,
        ModelScore::Fused,
    ]
    .into_iter()
    .map(|s| ScalarUDF::new_from_impl(ModelFunction::new(s, registry.clone())))
    .collect();
    udfs.push(ScalarUDF::new_from_impl(MadZscore::new(registry.clone())));
    udfs.push(ScalarUDF::new_from_impl(SeasonalZscore::new(
        registry.clone(),
    )));
    udfs.push(ScalarUDF::new_from_impl(ShardOf::default()));
    udfs
}

/// The models (and, for the functions that fuse, the fusion settings) a TADS scalar function
/// scores with; `None` for a function without models. A cluster codec ships this with a plan.
pub fn model_binding(udf: &ScalarUDF) -> Option<(&ModelRegistry, Option<Fusion>)> {
    if let Some(f) = udf.inner().downcast_ref::<ModelFunction>() {
        return Some((f.registry(), Some(f.fusion())));
    }
    if let Some(f) = udf.inner().downcast_ref::<MadZscore>() {
        return Some((f.registry(), None));
    }
    udf.inner()
        .downcast_ref::<SeasonalZscore>()
        .map(|f| (f.registry(), None))
}

/// The TADS scalar function called `name`, scoring with `registry` (and `fusion` where it
/// fuses); `None` if TADS has no scalar function of that name.
pub fn scalar_udf_named(name: &str, registry: &ModelRegistry, fusion: Fusion) -> Option<ScalarUDF> {
    let udf = scalar_udfs(registry)
        .into_iter()
        .find(|u| u.name() == name)?;
    match udf.inner().downcast_ref::<ModelFunction>() {
        Some(f) => Some(ScalarUDF::new_from_impl(
            ModelFunction::new(f.score(), registry.clone()).with_fusion(fusion),
        )),
        None => Some(udf),
    }
}

/// The type the TADS scalar function `name` returns, whatever its models; `None` if TADS has
/// no scalar function of that name.
pub fn return_type_of(name: &str) -> Option<datafusion::arrow::datatypes::DataType> {
    let udf = scalar_udf_named(name, &ModelRegistry::new(), Fusion::default())?;
    match udf.inner().downcast_ref::<ModelFunction>() {
        Some(f) => Some(f.score().return_type()),
        None => udf.return_type(&[]).ok(),
    }
}

/// Every TADS aggregate function.
pub fn aggregate_udfs() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(RobustStatsUdaf::default()),
        AggregateUDF::new_from_impl(PcaFitUdaf::default()),
        AggregateUDF::new_from_impl(SketchQuantileUdaf::default()),
    ]
}

/// Every TADS window function.
pub fn window_udfs() -> Vec<WindowUDF> {
    vec![WindowUDF::new_from_impl(AlertState::default())]
}

/// Registers every TADS function with `ctx`, the `tads_help` table function, and the registry
/// as the table `models`.
pub fn register_all(ctx: &SessionContext, registry: &ModelRegistry) -> crate::Result<()> {
    for udf in scalar_udfs(registry) {
        ctx.register_udf(udf);
    }
    for udaf in aggregate_udfs() {
        ctx.register_udaf(udaf);
    }
    for udwf in window_udfs() {
        ctx.register_udwf(udwf);
    }
    ctx.register_udtf("tads_help", Arc::new(TadsHelp::new(registry)));
    ctx.register_table("models", Arc::new(registry.table()?))?;
    Ok(())
}
