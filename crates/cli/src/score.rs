//! `tads score`.

use std::sync::Arc;

use clap::Args;
use tads_jobs::score::{SCORE_COLUMNS, ScoreJob, Shard, score};
use tads_store::Location;

use crate::progress::RowBar;
use crate::{UserError, mib, si, thousands};

/// Arguments of `tads score`.
#[derive(Debug, Args)]
#[command(
    about = "Score every row of a Parquet dataset with a model; write <out>/scored/ and <out>/_manifest.json",
    long_about = "Score every row of a Parquet dataset with a trained model.\n\n\
Writes each input row with the columns pca_spe (squared prediction error in the model's standardized \
space), pca_t2 (Hotelling's T² in the kept components), mad_zmax (largest robust |z| over the metrics) \
and top_metric (the metric contributing most to the SPE) to <out>/scored/, in the input's partitioning \
(date=…/part-….parquet), then <out>/_manifest.json. Rows with a NULL or non-finite metric keep NULL \
scores. The job streams: one DataFusion plan per input file, files scored concurrently, so memory \
does not grow with the dataset.\n\n\
--shard i/n scores only the rows whose shard_of(<shard-by>, n) is i (FNV-1a of the key's text): run \
n jobs with their own --out on n machines; together they score every row exactly once.",
    after_help = "Examples:\n  tads score --data data/generated/telemetry --model fleet --out data/scores\n  \
tads score --data s3://bucket/telemetry --models s3://bucket/models --model fleet --out s3://bucket/scores/shard-1 --shard 1/4"
)]
pub(crate) struct ScoreArgs {
    /// The data to score: a directory (hive-partitioned or flat), a .parquet file or s3://bucket/prefix
    #[arg(long, value_name = "DIR|FILE|URL")]
    data: String,
    /// The model's name
    #[arg(long)]
    model: String,
    /// Where models live: a directory or s3://bucket/prefix
    #[arg(long, value_name = "DIR|URL", default_value = "./models")]
    models: String,
    /// Where to write: a directory or s3://bucket/prefix (gets scored/ and _manifest.json)
    #[arg(long, value_name = "DIR|URL")]
    out: String,
    /// Score only shard i of n of the --shard-by keys, e.g. 2/4
    #[arg(long, value_name = "i/n")]
    shard: Option<Shard>,
    /// The column whose values are split into shards
    #[arg(long, default_value = "host_id", requires = "shard")]
    shard_by: String,
    /// Files scored at once (default: one per core)
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Replace an earlier TADS output at --out
    #[arg(long)]
    overwrite: bool,
    /// Print nothing but errors
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) async fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let user = |e: String| UserError(e);
    let data = Location::parse_data(&args.data).map_err(|e| user(format!("--data {e}")))?;
    let models = Location::parse(&args.models).map_err(|e| user(format!("--models {e}")))?;
    let out = Location::parse(&args.out).map_err(|e| user(format!("--out {e}")))?;
    let job = ScoreJob {
        data,
        models,
        model: args.model.clone(),
        out,
        shard: args.shard,
        shard_by: args.shard_by.clone(),
        overwrite: args.overwrite,
        concurrency: args.threads,
    };
    let bar = Arc::new(RowBar::new(0, 0, args.quiet));
    let result = score(&job, bar.clone()).await;
    bar.finish();
    let report = result.map_err(|e| user(e.to_string()))?;
    if !args.quiet {
        let m = &report.manifest;
        println!(
            "scored {} rows{} with `{}` in {:.2}s: {} rows/s",
            thousands(m.rows_in),
            m.shard.map_or(String::new(), |s| format!(
                " (shard {s}: {} kept)",
                thousands(m.rows)
            )),
            m.model.name,
            report.elapsed.as_secs_f64(),
            si(report.rows_per_second())
        );
        if m.rows_unscored > 0 {
            println!(
                "{} rows have a NULL or non-finite metric: their scores are NULL",
                thousands(m.rows_unscored)
            );
        }
        println!(
            "wrote {} files ({}) with {} to {}scored/, manifest {}_manifest.json (run {})",
            m.files.len(),
            mib(report.bytes()),
            SCORE_COLUMNS.join(", "),
            job.out,
            job.out,
            m.run_id
        );
    }
    Ok(())
}
