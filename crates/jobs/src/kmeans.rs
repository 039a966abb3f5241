//! The k-means section of a model (`tads train --kmeans`): one pass over the training rows keeps
//! a bounded, deterministic sample of their standardized values (the rows with the smallest hash,
//! [`tads_model::kmeans::Sample`], one per partition, merged), and the centroids and the
//! distance's limits are fitted on it in memory.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tads_model::ModelArtifact;
use tads_model::kmeans::{SAMPLE_ROWS, Sample};

use crate::train::amend;
use crate::{Error, Result};

/// Samples the training rows of `telemetry` (quoted feature columns `cols`, rows passing
/// `filter`), standardized by `model`, and stores the fitted k-means section in it. A model whose
/// training rows give nothing to fit (no finite row inside the robust cut, or all alike) is kept
/// as it is, with a note on stderr.
pub(crate) async fn single(
    ctx: &SessionContext,
    cols: &[String],
    filter: &str,
    model: ModelArtifact,
    tail_quantile: Option<f64>,
) -> Result<ModelArtifact> {
    let x = cols
        .iter()
        .map(|c| format!("CAST({c} AS DOUBLE)"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {x} FROM telemetry WHERE {filter}");
    let streams = ctx.sql(&sql).await?.execute_stream_partitioned().await?;
    let centre = Arc::new((
        model.median.clone(),
        model.scale.iter().map(|s| 1.0 / s).collect::<Vec<f64>>(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in streams {
        let centre = Arc::clone(&centre);
        tasks.spawn(async move {
            let (median, inv) = centre.as_ref();
            let mut sample = Sample::new(SAMPLE_ROWS);
            let mut z = vec![0.0; median.len()];
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let columns: Vec<_> = batch
                    .columns()
                    .iter()
                    .map(|c| c.as_primitive::<Float64Type>().clone())
                    .collect();
                for i in 0..batch.num_rows() {
                    if columns.iter().any(|c| c.is_null(i)) {
                        continue;
                    }
                    for (j, c) in columns.iter().enumerate() {
                        z[j] = (c.value(i) - median[j]) * inv[j];
                    }
                    sample.offer(&z);
                }
            }
            Ok::<_, Error>(sample)
        });
    }
    let mut merged = Sample::new(SAMPLE_ROWS);
    while let Some(done) = tasks.join_next().await {
        let part = done.map_err(|e| Error::Data(format!("a k-means task failed: {e}")))??;
        merged.merge(part);
    }
    let rows = merged.rows();
    match tads_model::kmeans::train(&rows, model.robust_z_cut, tail_quantile) {
        Some(k) => amend(model, |m| m.kmeans = Some(k)),
        None => {
            eprintln!(
                "note: model `{}`: no k-means section (the {} sampled training rows give nothing to fit: none inside the robust cut, or all alike)",
                model.name,
                rows.len()
            );
            Ok(model)
        }
    }
}
