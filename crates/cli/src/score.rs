//! `tads score`.

use std::sync::Arc;

use clap::Args;
use tads_jobs::alerts::AlertSummary;
use tads_jobs::config::ScoreConfig;
use tads_jobs::score::{ALERTS_FILE, SCORE_COLUMNS, ScoreJob, Shard, score};
use tads_store::Location;

use crate::progress::RowBar;
use crate::{UserError, mib, si, thousands};

/// Arguments of `tads score`.
#[derive(Debug, Args)]
#[command(
    about = "Score every row of a Parquet dataset with a model and find its alerts; write <out>/scored/, <out>/alerts/ and <out>/_manifest.json",
    long_about = "Score every row of a Parquet dataset with a trained model.\n\n\
Writes each input row with the columns pca_spe (squared prediction error in the model's standardized \
space), pca_t2 (Hotelling's T² in the kept components), mad_zmax (largest robust |z| over the metrics) \
top_metric (the metric contributing most to the SPE), score (the fused score: the larger of the SPE \
over the model's SPE limit and mad_zmax over its cut, 1.0 at threshold) and alert_id (the alert the \
row belongs to, or NULL) to <out>/scored/, in the input's partitioning (date=…/part-….parquet); the \
alerts to <out>/alerts/alerts.parquet; then <out>/_manifest.json. Rows with a NULL or non-finite \
metric keep NULL scores. Scoring streams: one DataFusion plan per input file, files scored \
concurrently; the alert pass walks the files in time order when their statistics say each host's \
rows are in order (alerts.walk=auto), and otherwise sorts each host's scores by time, spilling to \
disk beyond --memory (1 GiB), so memory does not grow with the dataset.\n\n\
Alerts: per host (alerts.key) in time order (alerts.time), an alert opens when the score is at or \
above alerts.enter for alerts.min_points rows, stays open while it is at or above alerts.exit, and \
no new one opens for alerts.cooldown after it closes. With alerts.adaptive (the default), each host's \
enter (and exit, scaled alike) rises for a UTC day to the 99.5 % quantile of its own quiet scores \
(outside alerts) over the previous three days, so a host that runs hot for days is not in alert all \
that time; alerts.enter stays the floor. Its severity is info, warning or critical by \
the bands severity.warning and severity.critical on its peak score. Settings come from the built-in \
defaults, then --config FILE (TOML; ${VAR:default} is replaced from the environment), then each \
--set key=value; the effective values are written to the manifest.\n\n\
--shard i/n scores only the rows whose shard_of(<shard-by>, n) is i (FNV-1a of the key's text): run \
n jobs with their own --out on n machines; together they score every row exactly once.",
    after_help = "Examples:\n  tads score --data data/generated/telemetry --model fleet --out data/scores\n  \
tads score --data s3://bucket/telemetry --models s3://bucket/models --model fleet --out s3://bucket/scores/shard-1 --shard 1/4\n  \
tads score --cluster df://127.0.0.1:50050 --data s3://bucket/telemetry --models s3://bucket/models --model fleet --out s3://bucket/scores\n  \
tads score --data data/generated/telemetry --model fleet --out data/scores --config tads.toml --set alerts.enter=1.5 --set alerts.cooldown=1h\n\n\
Settings (--set key=value) and their defaults:\n  \
fusion.rule=max            max or weighted\n  \
fusion.pca_weight=0.5      the PCA signal's weight under weighted\n  \
fusion.spe_limit=jm_999    jm_99, jm_999, empirical_99 or empirical_999\n  \
fusion.t2_limit=t2_999     t2_99, t2_999 or off (T² left out)\n  \
fusion.mad_cut=<model's>   the |z| that counts as 1.0\n  \
fusion.tail=true           raise each limit to the model's training tail\n  \
fusion.scoring_tail=true   with tail, also the tails in the scoring space (models with one)\n  \
fusion.residual_pca=true   the scoring space's PCA's SPE in the PCA signal (models with one)\n  \
drift.baseline=previous_day (or off)  drift.min_rows=12  drift.notice_scales=3.0\n  \
drift.seasonal=true  drift.trailing_hours=12  drift.streamed=true (medians measured while scoring)\n  \
alerts.enabled=true        false: no alert pass, alert_id all NULL\n  \
alerts.enter=0.8  alerts.exit=0.5  alerts.min_points=3  alerts.instant=2.0\n  \
alerts.cooldown=30m (or a row count)\n  \
alerts.hold_rows=12  alerts.hold_level=0.8  an alert dipping below exit is held while more\n  \
                           than half of the latest hold_rows scores are at or above hold_level;\n  \
                           an alert opening meanwhile continues it (hold_rows=0: off)\n  \
alerts.adaptive=true  alerts.adaptive_quantile=0.995  alerts.adaptive_days=3  alerts.adaptive_min_rows=12\n  \
alerts.key=host_id  alerts.time=ts\n  \
severity.warning=2.0  severity.critical=4.0"
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
    #[arg(long, default_value_t = 0, value_parser = crate::parse_threads)]
    threads: usize,
    /// Memory the alert pass's sort may hold before it spills to disk, e.g. 512M or 4G
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = crate::parse_size)]
    memory: usize,
    /// Replace an earlier TADS output at --out
    #[arg(long)]
    overwrite: bool,
    /// Remove the lock a writer that is gone (killed, or on a lost machine) left at --out
    #[arg(long)]
    break_lock: bool,
    /// Fusion, alert and severity settings (TOML); see below
    #[arg(long, value_name = "FILE", env = "TADS_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Override one setting, e.g. alerts.enter=1.5 (repeatable; after --config)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Score only: no alert pass (alert_id stays NULL, no alerts/ output)
    #[arg(long)]
    no_alerts: bool,
    /// Run the plans on a Ballista cluster of `tads cluster` processes (df://host:port): its
    /// executors read --data and write --out, which must be shared (s3://, or one directory all
    /// see); one output file per input file; the alerts are found on the cluster too
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// Print nothing but errors
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    deliver: crate::deliver::DeliverArgs,
}

/// Progress to the terminal and, when mirroring, to the run's row in PostgreSQL.
struct Both {
    bar: Arc<RowBar>,
    tracker: Option<tads_pg::RunTracker>,
}

impl tads_store::Progress for Both {
    fn total(&self, rows: u64, files: u64) {
        self.bar.total(rows, files);
    }
    fn rows(&self, rows: u64) {
        self.bar.rows(rows);
        if let Some(t) = &self.tracker {
            t.rows(rows);
        }
    }
    fn file_done(&self) {
        self.bar.file_done();
        if let Some(t) = &self.tracker {
            t.file_done();
        }
    }
    fn phase(&self, name: &str) {
        self.bar.phase(name);
        if let Some(t) = &self.tracker {
            t.reset_counts();
        }
    }
}

/// An alert of the run as a row of the `alerts` table.
pub(crate) fn alert_row(
    a: &tads_jobs::alerts::Alert,
    m: &tads_jobs::score::ScoreManifest,
) -> tads_pg::AlertRow {
    let time = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
    tads_pg::AlertRow {
        alert_id: a.alert_id.clone(),
        host_id: a.host_id.clone(),
        region: a.region.clone(),
        project_id: a.project_id.clone(),
        start_ts: time(a.start_ts),
        end_ts: time(a.end_ts),
        opened_ts: time(a.opened_ts),
        points: a.points as i64,
        peak_score: a.peak_score,
        severity: a.severity.to_string(),
        top_metrics: a.top_metrics.clone(),
        model: m.model.name.clone(),
        model_fingerprint: m.model.fingerprint.clone(),
        run_id: m.run_id.clone(),
        open: a.open,
    }
}

pub(crate) async fn run(args: ScoreArgs, pg: &crate::pg::PgArgs) -> anyhow::Result<()> {
    let target = pg.target()?;
    let user = |e: String| UserError(e);
    let data = Location::parse_data(&args.data).map_err(|e| user(format!("--data {e}")))?;
    let models = Location::parse(&args.models).map_err(|e| user(format!("--models {e}")))?;
    let out = Location::parse(&args.out).map_err(|e| user(format!("--out {e}")))?;
    let targets = args.deliver.targets()?;
    let mut config = load_config(args.config.as_deref(), &args.set)?;
    if args.no_alerts {
        config.alerts.enabled = false;
    }
    let started_at = chrono::Utc::now();
    let mut job = ScoreJob {
        data,
        models,
        model: args.model.clone(),
        out,
        shard: args.shard,
        shard_by: args.shard_by.clone(),
        overwrite: args.overwrite,
        break_lock: args.break_lock,
        concurrency: args.threads,
        memory: args.memory,
        config,
        run_id: None,
        follow: None,
        cluster: args.cluster.clone(),
    };
    let run_id = tads_jobs::score::new_run_id(started_at, &job);
    job.run_id = Some(run_id.clone());
    let run = crate::pg::Run {
        id: run_id,
        kind: "score",
        model: Some(args.model.clone()),
        dataset: Some(job.data.data_url().to_string()),
        output: Some(job.out.to_string()),
        started_at,
    };
    let bar = Arc::new(RowBar::new(0, 0, args.quiet));
    let progress = Arc::new(Both {
        bar: Arc::clone(&bar),
        tracker: target.as_ref().map(|(t, _)| {
            tads_pg::RunTracker::start(t.clone(), run.running(), std::time::Duration::from_secs(2))
        }),
    });
    let result = score(&job, progress.clone()).await;
    bar.finish();
    if let Some(tracker) = Arc::into_inner(progress).and_then(|p| p.tracker) {
        tracker.finish().await;
    }
    let records = match &result {
        Ok(r) => {
            let m = &r.manifest;
            vec![
                run.finished(Ok(()), m.rows_in, m.files.len() as u64),
                tads_pg::Record::Alerts(r.alerts.iter().map(|a| alert_row(a, m)).collect()),
            ]
        }
        Err(e) => vec![run.finished(Err(e.to_string()), 0, 0)],
    };
    crate::pg::mirror(pg, tads_pg::Batch::new(records), args.quiet).await?;
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
        if let Some(why) = &m.alerts_skipped {
            println!("{why}");
        }
        if let Some(a) = &m.alerts {
            println!("{} alerts to {}{ALERTS_FILE}", thousands(a.count), job.out);
            print!("{}", alert_table(a));
        }
        print!("{}", drift_lines(&m.drift));
    }
    if let Some(targets) = targets {
        // The manifest is written: the output is complete, its alerts can go out.
        let m = &report.manifest;
        let alerts_url = m.alerts.as_ref().map(|_| job.out.url().join(ALERTS_FILE));
        let alerts_url = alerts_url.and_then(Result::ok).map(String::from);
        let events = crate::deliver::events(&report.alerts, &m.model.name, alerts_url.as_deref());
        let dir = args.deliver.outbox_dir(&job.out);
        crate::deliver::deliver(&dir, targets, &events, args.quiet).await?;
    }
    Ok(())
}

/// The settings of `--config FILE` and `--set k=v …` over the defaults.
pub(crate) fn load_config(
    file: Option<&std::path::Path>,
    set: &[String],
) -> Result<ScoreConfig, UserError> {
    let text = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| UserError(format!("--config {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let origin = file
        .map(|p| format!("--config {}", p.display()))
        .unwrap_or_default();
    ScoreConfig::load(text.as_deref().map(|t| (origin.as_str(), t)), set)
        .map_err(|e| UserError(e.to_string()))
}

/// The drift notices, at most ten, with the advice to retrain.
pub(crate) fn drift_lines(notices: &[tads_jobs::drift::DriftNotice]) -> String {
    if notices.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "drift: {} keys moved away from their training level (scored against the previous day's level; retrain to make it the model's):\n",
        thousands(notices.len() as u64)
    );
    for n in notices.iter().take(10) {
        out.push_str(&format!(
            "  {}: {} {:+.1} scales on {} days since {}\n",
            n.key, n.metric, n.scales, n.days, n.since
        ));
    }
    if notices.len() > 10 {
        out.push_str(&format!(
            "  … and {} more in the manifest's `drift`\n",
            notices.len() - 10
        ));
    }
    out
}

/// Alerts by first top metric and severity, as a text table.
pub(crate) fn alert_table(a: &AlertSummary) -> String {
    if a.count == 0 {
        return String::new();
    }
    let severities = tads_model::Severity::NAMES;
    let width = a
        .by_top_metric
        .keys()
        .map(|k| k.len())
        .max()
        .unwrap_or(0)
        .max("top metric".len());
    let mut out = format!("{:<width$}", "top metric");
    for s in severities {
        out.push_str(&format!(" {s:>8}"));
    }
    out.push_str(&format!(" {:>8}\n", "total"));
    let mut rows: Vec<(&String, u64)> = a
        .by_top_metric
        .iter()
        .map(|(k, v)| (k, v.values().sum()))
        .collect();
    rows.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(y.0)));
    let count = |m: Option<&std::collections::BTreeMap<String, u64>>, s: &str| {
        m.and_then(|m| m.get(s)).copied().unwrap_or(0)
    };
    for (metric, total) in rows {
        out.push_str(&format!("{metric:<width$}"));
        for s in severities {
            out.push_str(&format!(" {:>8}", count(a.by_top_metric.get(metric), s)));
        }
        out.push_str(&format!(" {total:>8}\n"));
    }
    out.push_str(&format!("{:<width$}", "all"));
    for s in severities {
        out.push_str(&format!(
            " {:>8}",
            a.by_severity.get(s).copied().unwrap_or(0)
        ));
    }
    out.push_str(&format!(" {:>8}\n", a.count));
    out
}
