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

use crate::registry::ModelRegistry;

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

/// Every TADS aggregate function.
pub fn aggregate_udfs() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(RobustStatsUdaf::default()),
        AggregateUDF::new_from_impl(PcaFitUdaf::default()),
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
