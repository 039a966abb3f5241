//! `tads train`.

use clap::Args;
use tads_jobs::train::{Quantiles, TrainJob, Trained, train};
use tads_model::{KRule, SpaceChoice, TrainOptions};
use tads_store::Location;

use crate::{UserError, si, thousands};

/// `--quantiles`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum QuantileMode {
    /// Exact where it fits in --memory, else sketch.
    Auto,
    /// Exact medians and quantiles (every value in memory).
    Exact,
    /// t-digest sketches: bounded memory.
    Sketch,
}

/// Arguments of `tads train`.
#[derive(Debug, Args)]
#[command(
    about = "Train a robust PCA model on a Parquet dataset and write models/<name>/model.json",
    long_about = "Train a robust PCA model on a Parquet dataset and write <models>/<name>/model.json.\n\n\
Runs as DataFusion SQL over the dataset: robust_stats() gives each feature's median and MAD; rows with a \
robust |z| above --robust-z-cut on any feature are left out; pca_fit() gives the co-moments of the \
standardized rows; the PCA keeps the fewest components that explain --variance of it (or --k); the SPE \
and T² limits are fitted at 0.99 and 0.999. --where filters rows first (a filter on a partition column \
such as date prunes files).",
    after_help = "Examples:\n  tads train --data data/generated/telemetry --model fleet\n  \
tads train --data s3://bucket/telemetry --model fleet --where \"date < '2026-01-04'\" --k 3"
)]
pub(crate) struct TrainArgs {
    /// The training data: a directory (hive-partitioned or flat) or s3://bucket/prefix
    #[arg(long, value_name = "DIR|URL")]
    data: String,
    /// The model's name (letters, digits, _ - .)
    #[arg(long)]
    model: String,
    /// Where models live: a directory or s3://bucket/prefix
    #[arg(long, value_name = "DIR|URL", default_value = "./models")]
    models: String,
    /// Feature columns, comma-separated (default: every numeric column that is not a label)
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    /// A SQL predicate selecting the training rows, e.g. "date < '2026-01-04'"
    #[arg(long = "where", value_name = "SQL")]
    filter: Option<String>,
    /// Keep exactly K components
    #[arg(long, conflicts_with = "variance")]
    k: Option<usize>,
    /// Keep the fewest components explaining this share of the variance
    #[arg(long, default_value_t = 0.95)]
    variance: f64,
    /// Drop this share of highest-SPE rows and fit once more (e.g. 0.01)
    #[arg(long)]
    trim: Option<f64>,
    /// Leave out rows whose robust |z| exceeds this on any feature
    #[arg(long, default_value_t = TrainOptions::default().robust_z_cut)]
    robust_z_cut: f64,
    /// Measure each signal's training tail at this quantile over every training row (the
    /// fusion raises each limit to it, so that heavy-tailed normal data does not alert all the
    /// time; `0` measures none)
    #[arg(long, default_value_t = tads_jobs::DEFAULT_TAIL_QUANTILE, value_name = "Q")]
    tail_quantile: f64,
    /// Do not look for a daily cycle (by default a model of data with a timestamp column `ts`
    /// and three days or more stores each feature's hour-of-day profile where it swings by a
    /// scale or more, and scoring takes it out)
    #[arg(long)]
    no_seasonal: bool,
    /// Scale each metric by its MAD alone (as models trained before this option were). By
    /// default a metric's scale is at least the range of its training values' 0.5 % and 99.5 %
    /// quantiles over 10.3 (half of σ on normal data), so that metrics whose tails are more than
    /// twice as wide as their MAD says (heavy-tailed, quantized, bursty) are measured against
    /// the spread they really have; `model.json` lists them in `tail_scaled_features`
    #[arg(long)]
    no_tail_scale: bool,
    /// Measure the model on the training rows as scoring measures them (each metric less the
    /// previous day's median and the daily cycle, from the second day on; models of two or
    /// more metrics with a timestamp column `ts`): the 0.99 quantile of its SPE, T² and largest
    /// |z| there (the fusion raises each limit to it), and a second PCA fitted there, whose SPE
    /// over its own 0.99 quantile joins the PCA signal (one more pass for the day medians, two
    /// over the rows); `model.json` holds them as `scoring_space`. By default this is measured
    /// where the training rows span 7 days after the first, and kept only where the 0.99
    /// quantile of the model's own SPE there is at least 10× the same quantile over the raw
    /// rows (`thresholds.spe_empirical_99`): real telemetry whose levels move from day to day,
    /// not generated data, whose 0.99 quantiles lie inside its anomalies in both spaces alike.
    /// This flag keeps it wherever it can be measured: for training data that is mostly normal,
    /// since the quantile is a budget of 1 % of the training rows and more anomalies than that
    /// raise the limits into them
    #[arg(long, conflicts_with = "no_scoring_space")]
    scoring_space: bool,
    /// Never measure the model in the scoring space (no extra passes)
    #[arg(long)]
    no_scoring_space: bool,
    /// Also fit the k-means distance detector: 8 centroids of a deterministic sample of up to
    /// 20,000 training rows in the standardized space, and the distance's limit (one more pass
    /// over the data). Scoring uses it with `--set fusion.detectors=pca,mad,kmeans`, SQL with
    /// kmeans_distance()
    #[arg(long)]
    kmeans: bool,
    /// Also grow the Isolation Forest detector: 100 trees of 256 rows each from the same sample
    /// as --kmeans (seeded: the same data gives the same forest). Scoring uses it with
    /// `--set fusion.detectors=pca,mad,iforest`, SQL with iforest_score()
    #[arg(long)]
    iforest: bool,
    /// Also fit the one-class SVM detector (linfa-svm, ν = 0.05, Gaussian kernel) on the first
    /// 1,000 rows of the same sample as --kmeans (its kernel matrix is n × n); its limits come
    /// from the whole sample. Scoring uses it with `--set fusion.detectors=pca,mad,ocsvm`, SQL
    /// with ocsvm_score()
    #[arg(long)]
    ocsvm: bool,
    /// Also fit the seasonal baseline detector: the period of the data (a day or a week, from
    /// the autocorrelation of each metric's hourly medians) and per hour of that period each
    /// repeating metric's median and MAD (four more passes over the data). Scoring uses it with
    /// `--set fusion.detectors=pca,mad,seasonal`, SQL with seasonal_zscore() and seasonal_zmax()
    #[arg(long)]
    seasonal_baseline: bool,
    /// Also fit the forecast residual detector: an MSTL decomposition (daily, and weekly with
    /// two weeks or more) of each metric's hourly medians, its last cycle as the forecast of each
    /// hour, and the interval holding 99 % of the training residuals (three more passes over the
    /// data). Scoring uses it with `--set fusion.detectors=pca,mad,forecast`, SQL with
    /// forecast_zmax()
    #[arg(long)]
    forecast: bool,
    /// Train one model per value of this column (e.g. host_id), written as <models>/<name>/group.json
    #[arg(long, value_name = "COLUMN")]
    group_by: Option<String>,
    /// Replace an existing model of the same name
    #[arg(long)]
    overwrite: bool,
    /// Remove the name's lock left by a training that is gone (killed, or on a lost machine)
    #[arg(long)]
    break_lock: bool,
    /// Partitions the training statements run in (default: one per core)
    #[arg(long, default_value_t = 0, value_parser = crate::parse_threads)]
    threads: usize,
    /// How medians, MADs and limits are taken: `exact` holds every value of a statement in
    /// memory (about 2.7 GB at 10M rows of 8 features, 15 GB at 100M); `sketch` uses mergeable
    /// t-digests in bounded memory whatever the rows, within 1 % of a feature's scale for
    /// medians, 3 % for MADs and 5 % for the limits of the exact values (tested on generated
    /// data); `auto` is exact when rows × features × 34 bytes fit in --memory, else sketch
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    quantiles: QuantileMode,
    /// The memory exact statistics may take before --quantiles auto sketches them, e.g. 8G
    /// (default: half of the memory available)
    #[arg(long, value_name = "SIZE", value_parser = crate::parse_size)]
    memory: Option<usize>,
    /// Run the training's statements on a Ballista cluster of `tads cluster` processes (df://host:port); --data must be readable by its executors
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// Print nothing but errors
    #[arg(long, short)]
    quiet: bool,
}

/// The models of a training run, as rows of the `models` table.
fn model_rows(trained: &Trained) -> Vec<tads_pg::ModelRow> {
    let row = |m: &tads_model::ModelArtifact, kind: &str| tads_pg::ModelRow {
        fingerprint: m.fingerprint.clone(),
        name: m.name.clone(),
        kind: kind.into(),
        features: m.features.clone(),
        k: Some(m.pca.k as i32),
        thresholds: serde_json::to_value(&m.thresholds).ok(),
        rows: m.training.rows_used as i64,
        training_data: m.training.data_uri.clone(),
        created_at: m.training.created_at,
    };
    match trained {
        Trained::Model(m) => vec![row(m, "model")],
        Trained::Group(g) => std::iter::once(tads_pg::ModelRow {
            fingerprint: g.fingerprint.clone(),
            name: g.name.clone(),
            kind: "group".into(),
            features: g.features.clone(),
            k: None,
            thresholds: None,
            rows: g.rows_seen as i64,
            training_data: g.data_uri.clone(),
            created_at: g.created_at,
        })
        .chain(g.members.iter().map(|m| row(m, "member")))
        .collect(),
    }
}

pub(crate) async fn run(args: TrainArgs, pg: &crate::pg::PgArgs) -> anyhow::Result<()> {
    pg.target()?;
    let started_at = chrono::Utc::now();
    let user = |e: String| UserError(e);
    let data = Location::parse_data(&args.data).map_err(|e| user(format!("--data {e}")))?;
    let models = Location::parse(&args.models).map_err(|e| user(format!("--models {e}")))?;
    // Models written inside a dataset folder would become files of the dataset.
    if data.file().is_none() && models.resolved().is_within(&data.resolved()) {
        return Err(user(format!(
            "--models {models}: lies inside the data {data}; keep the models somewhere else"
        ))
        .into());
    }
    if let Some(t) = args.trim
        && !(t > 0.0 && t < 0.5)
    {
        return Err(user(format!("--trim: {t} is not a share between 0 and 0.5")).into());
    }
    if !(args.robust_z_cut.is_finite() && args.robust_z_cut > 0.0) {
        return Err(user(format!(
            "--robust-z-cut: {} is not a positive number",
            args.robust_z_cut
        ))
        .into());
    }
    if !(args.tail_quantile == 0.0 || (args.tail_quantile > 0.5 && args.tail_quantile < 1.0)) {
        return Err(user(format!(
            "--tail-quantile: {} is not 0 (off) or a quantile between 0.5 and 1",
            args.tail_quantile
        ))
        .into());
    }
    let job = TrainJob {
        data,
        models,
        name: args.model.clone(),
        features: args.features.clone(),
        filter: args.filter.clone(),
        options: TrainOptions {
            k_rule: args.k.map_or(KRule::Variance(args.variance), KRule::Fixed),
            robust_z_cut: args.robust_z_cut,
            trim: args.trim,
            tail_quantile: Some(args.tail_quantile).filter(|q| *q > 0.0),
            seasonal: !args.no_seasonal,
            kmeans: args.kmeans,
            iforest: args.iforest,
            ocsvm: args.ocsvm,
            season_baseline: args.seasonal_baseline,
            forecast: args.forecast,
            tail_scale: !args.no_tail_scale,
            scoring_space: match (args.scoring_space, args.no_scoring_space) {
                (true, _) => SpaceChoice::Always,
                (_, true) => SpaceChoice::Never,
                _ => SpaceChoice::Auto,
            },
        },
        overwrite: args.overwrite,
        group_by: args.group_by.clone(),
        break_lock: args.break_lock,
        threads: args.threads,
        quantiles: match args.quantiles {
            QuantileMode::Auto => Quantiles::Auto,
            QuantileMode::Exact => Quantiles::Exact,
            QuantileMode::Sketch => Quantiles::Sketch,
        },
        memory: args.memory,
        cluster: args.cluster.clone(),
    };
    let run = crate::pg::Run {
        id: crate::pg::run_id("train", started_at),
        kind: "train",
        model: Some(args.model.clone()),
        dataset: Some(job.data.data_url().to_string()),
        output: Some(job.models.to_string()),
        started_at,
    };
    let result = train(&job).await;
    let records = match &result {
        Ok(r) => vec![
            tads_pg::Record::Models(model_rows(&r.trained)),
            run.finished(Ok(()), r.rows_seen, 1),
        ],
        Err(e) => vec![run.finished(Err(e.to_string()), 0, 0)],
    };
    crate::pg::mirror(pg, tads_pg::Batch::new(records), args.quiet).await?;
    let report = result.map_err(|e| user(e.to_string()))?;
    if args.quiet {
        return Ok(());
    }
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let (mode, why) = &report.quantiles;
    let mode = if *mode == Quantiles::Sketch {
        "sketched (t-digests)"
    } else {
        "exact"
    };
    match why {
        Some(why) => println!("medians and quantiles {mode}: {why}"),
        None => println!("medians and quantiles {mode}"),
    }
    match &report.trained {
        Trained::Model(m) => {
            let explained: f64 = m.pca.explained_variance_ratio[..m.pca.k].iter().sum();
            println!(
                "trained `{}` on {} rows ({} inside the robust cut) in {:.2}s: {} rows/s",
                m.name,
                thousands(report.rows_seen),
                thousands(m.training.rows_used),
                report.elapsed.as_secs_f64(),
                si(report.rows_per_second())
            );
            println!(
                "k = {} of {} features ({:.1}% of the variance); SPE limit {} (99%) {} (99.9%), empirical {} / {}; T² limit {} (99%)",
                m.pca.k,
                m.dims(),
                100.0 * explained,
                fmt(m.thresholds.spe_jm_99),
                fmt(m.thresholds.spe_jm_999),
                fmt(m.thresholds.spe_empirical_99),
                fmt(m.thresholds.spe_empirical_999),
                fmt(m.thresholds.t2_99)
            );
            if !m.constant_features.is_empty() {
                println!(
                    "constant features (no spread, scaled by 1): {}",
                    m.constant_features.join(", ")
                );
            }
            if !m.sparse_features.is_empty() {
                println!(
                    "sparse features (MAD 0, scaled by their mean absolute deviation): {}",
                    m.sparse_features.join(", ")
                );
            }
            if !m.tail_scaled_features.is_empty() {
                println!(
                    "tail-scaled features (tails over twice as wide as their MAD says; scale: their 0.5–99.5 % range / 10.3): {}",
                    m.tail_scaled_features.join(", ")
                );
            }
            if m.dims() == 1 {
                println!(
                    "one feature: no residual space, so no SPE; scored by T² and its robust |z| alone"
                );
            }
            if let Some(t) = m.thresholds.tail {
                println!(
                    "training tail at {}: SPE {}, T² {}, |z| {} (the fusion raises each limit to at least these)",
                    t.quantile,
                    fmt(t.spe),
                    fmt(t.t2),
                    fmt(t.zmax)
                );
            }
            if let Some(s) = &m.scoring_space {
                let t = s.tail;
                let ratio = s
                    .auto_verdict(m.thresholds.spe_empirical_99)
                    .ratio
                    .map_or(String::new(), |r| {
                        format!("; SPE 0.99 quantile {r:.1}× the raw rows'")
                    });
                println!(
                    "scoring space ({} rows on {} days after the first, each less its previous day and cycle{ratio}): tail at {}: SPE {}, T² {}, |z| {}",
                    thousands(s.rows),
                    s.days,
                    t.quantile,
                    fmt(t.spe),
                    fmt(t.t2),
                    fmt(t.zmax)
                );
                if let Some(r) = &s.residual {
                    let explained: f64 = r.pca.explained_variance_ratio[..r.pca.k].iter().sum();
                    println!(
                        "  its own PCA: k = {} ({:.1}% of the variance), SPE limit {}",
                        r.pca.k,
                        100.0 * explained,
                        fmt(Some(r.limit))
                    );
                }
            }
            println!("wrote {} ({})", report.path, m.fingerprint);
        }
        Trained::Group(g) => {
            println!(
                "trained `{}`: {} models by {} on {} rows in {:.2}s: {} rows/s",
                g.name,
                thousands(g.members.len() as u64),
                g.group_by,
                thousands(report.rows_seen),
                report.elapsed.as_secs_f64(),
                si(report.rows_per_second())
            );
            let mut ks: Vec<usize> = g.members.iter().map(|m| m.pca.k).collect();
            ks.sort_unstable();
            println!(
                "k from {} to {} (median {}) of {} features",
                ks[0],
                ks[ks.len() - 1],
                ks[ks.len() / 2],
                g.features.len()
            );
            let kept = g
                .members
                .iter()
                .filter(|m| m.scoring_space.is_some())
                .count();
            if kept > 0 {
                println!("{kept} of {} members keep a scoring space", g.members.len());
            }
            if !g.skipped.is_empty() {
                let first = &g.skipped[0];
                println!(
                    "{} values got no model (listed in group.json), e.g. `{}`: {}",
                    g.skipped.len(),
                    first.key,
                    first.reason
                );
            }
            println!("wrote {} ({})", report.path, g.fingerprint);
        }
    }
    Ok(())
}
