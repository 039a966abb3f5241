//! `tads watch`: follow a dataset as files land, score each round, carry the alert state and
//! deliver the alerts (see [`tads_jobs::watch`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tads_jobs::watch::{CHECKPOINT, ROUNDS, Round, WatchJob, Watcher};
use tads_store::{Location, NoProgress};

use crate::{UserError, si, thousands};

/// Arguments of `tads watch`.
#[derive(Debug, Args)]
#[command(
    about = "Follow a dataset as files land: score each new file, carry alert state, deliver alerts",
    long_about = "Follow a dataset as files land: score each new file, carry alert state, deliver alerts.\n\n\
Every --every, the Parquet files that landed in --data since the last round (and whose size held \
still for --settle) are scored with the plan of `tads score`, into <out>/rounds/<round>/ (scored/ \
in the input's partitioning, alerts/alerts.parquet, _manifest.json). Each host's alert state \
(an open alert, a run of hot rows, a cooldown) goes on from one round to the next, so an alert \
may open in one file and close in a later one, as if all the rows were scored at once. After \
each round, <out>/_watch/checkpoint.json records the files done and every host's state in one \
atomic write; a watcher stopped or killed at any moment starts again from there, scoring the \
interrupted round again into the same folder. Alerts go to the receivers given (opened, updated, \
resolved; the alert id is the dedup key) through a durable outbox. Stop it with Ctrl-C."
)]
pub(crate) struct WatchArgs {
    /// The dataset to follow: a directory where Parquet files land, or s3://bucket/prefix
    #[arg(long, value_name = "DIR|URL")]
    data: String,
    /// The model's name
    #[arg(long)]
    model: String,
    /// Where models live: a directory or s3://bucket/prefix
    #[arg(long, value_name = "DIR|URL", default_value = "./models")]
    models: String,
    /// Where the rounds and the checkpoint go: a directory or s3://bucket/prefix
    #[arg(long, value_name = "DIR|URL")]
    out: String,
    /// How often to look for new files, e.g. 1s, 10s, 1m
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_interval)]
    every: Duration,
    /// How long a new file's size must hold still before it is read
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    settle: Duration,
    /// Score what is there in rounds until no file is left, then exit
    #[arg(long)]
    once: bool,
    /// At most this many files per round
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_files: usize,
    /// Files scored at once (default: one per core)
    #[arg(long, default_value_t = 0, value_parser = crate::parse_threads)]
    threads: usize,
    /// Memory a round's alert pass may hold before it spills to disk, e.g. 512M or 4G
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = crate::parse_size)]
    memory: usize,
    /// Remove the lock a watcher that is gone (killed, or on a lost machine) left at --out
    #[arg(long)]
    break_lock: bool,
    /// Fusion, alert and severity settings (TOML), as for tads score
    #[arg(long, value_name = "FILE", env = "TADS_CONFIG")]
    config: Option<PathBuf>,
    /// Override one setting, e.g. alerts.enter=1.5 (repeatable; after --config)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print nothing but errors
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    deliver: crate::deliver::DeliverArgs,
}

/// `10s`, `500ms`, `1m`: a positive duration.
pub(crate) fn parse_interval(text: &str) -> Result<Duration, String> {
    match tads_jobs::config::parse_duration(text) {
        Some(us) if us > 0 => Ok(Duration::from_micros(us as u64)),
        _ => Err(format!(
            "`{text}` is not a positive duration like 500ms, 10s, 1m or 1h"
        )),
    }
}

pub(crate) async fn run(args: WatchArgs, pg: &crate::pg::PgArgs) -> anyhow::Result<()> {
    let user = |e: String| UserError(e);
    pg.target()?;
    let data = Location::parse_data(&args.data).map_err(|e| user(format!("--data {e}")))?;
    let models = Location::parse(&args.models).map_err(|e| user(format!("--models {e}")))?;
    let out = Location::parse(&args.out).map_err(|e| user(format!("--out {e}")))?;
    let targets = args.deliver.targets()?;
    let config = crate::score::load_config(args.config.as_deref(), &args.set)?;
    let job = WatchJob {
        data,
        models,
        model: args.model.clone(),
        out: out.clone(),
        config,
        concurrency: args.threads,
        memory: args.memory,
        max_files: args.max_files,
        settle: args.settle,
        break_lock: args.break_lock,
    };
    let mut watcher = Watcher::open(job).await.map_err(|e| user(e.to_string()))?;
    if !args.quiet && !args.once {
        let c = watcher.checkpoint();
        println!(
            "watching {} with `{}` into {out}{ROUNDS}/ every {:?}{}",
            args.data,
            args.model,
            args.every,
            if c.rounds > 0 {
                format!(
                    " (from {out}{CHECKPOINT}: {} rounds, {} files done, {} alerts open)",
                    c.rounds,
                    c.files.len(),
                    watcher.open_alerts()
                )
            } else {
                String::new()
            }
        );
    }
    let outbox = args.deliver.outbox_dir(&out);
    let result = follow(&mut watcher, &args, targets.as_ref(), &outbox, pg).await;
    let closed = watcher.close().await;
    result?;
    closed.map_err(|e| user(e.to_string()))?;
    Ok(())
}

/// The rounds, until Ctrl-C (or with --once, until no file is left).
async fn follow(
    watcher: &mut Watcher,
    args: &WatchArgs,
    targets: Option<&tads_deliver::Targets>,
    outbox: &std::path::Path,
    pg: &crate::pg::PgArgs,
) -> anyhow::Result<()> {
    let user = |e: String| UserError(e);
    let mut stop = crate::interrupted();
    // A watcher that has not beaten for ten rounds (at least a minute) counts as gone.
    let stale_after = (args.every * 10).max(Duration::from_secs(60));
    loop {
        let started = Instant::now();
        if *stop.borrow() {
            return Ok(());
        }
        watcher
            .heartbeat(stale_after)
            .await
            .map_err(|e| user(e.to_string()))?;
        let round = tokio::select! {
            r = watcher.round(Arc::new(NoProgress)) => r.map_err(|e| user(e.to_string()))?,
            _ = stop.changed() => {
                // The round's output may be half-written: it is not committed, and the next
                // watcher replaces it.
                eprintln!("stopped: the round in progress is scored again by the next tads watch");
                return Ok(());
            }
        };
        match &round {
            Some(round) => {
                for (file, error) in &round.skipped {
                    eprintln!("warning: skipped {file}: {error}");
                }
                // Queued before the checkpoint: a watcher killed in between queues the round's
                // events again, under the same alert ids, rather than losing them.
                if let Some(targets) = targets {
                    let url = round.out.url().join(tads_jobs::score::ALERTS_FILE).ok();
                    let events = crate::deliver::round_events(
                        round.alerts(),
                        &round.continued,
                        &args.model,
                        url.as_ref().map(|u| u.as_str()),
                    );
                    crate::deliver::deliver(outbox, targets.clone(), &events, true).await?;
                }
                watcher
                    .commit(round)
                    .await
                    .map_err(|e| user(e.to_string()))?;
                if !args.quiet {
                    println!(
                        "{}",
                        describe(round, started.elapsed(), watcher.open_alerts())
                    );
                }
                mirror(round, args, pg, started).await?;
            }
            None => {
                if let Some(targets) = targets {
                    // Re-sends and retries fall due while no file lands.
                    crate::deliver::deliver(outbox, targets.clone(), &[], true).await?;
                }
                if args.once {
                    return Ok(());
                }
            }
        }
        if round.is_some() && args.once {
            continue;
        }
        if crate::sleep_or_interrupted(args.every.saturating_sub(started.elapsed()), &mut stop)
            .await
        {
            return Ok(());
        }
    }
}

/// With --pg: the round as a run, and its alerts (an alert's row is replaced as it goes on and
/// closes), after the checkpoint (a round mirrored twice replaces its rows).
async fn mirror(
    round: &Round,
    args: &WatchArgs,
    pg: &crate::pg::PgArgs,
    started: Instant,
) -> anyhow::Result<()> {
    let Some(report) = &round.report else {
        return Ok(());
    };
    let m = &report.manifest;
    let run = crate::pg::Run {
        id: m.run_id.clone(),
        kind: "watch",
        model: Some(args.model.clone()),
        dataset: Some(args.data.clone()),
        output: Some(round.out.to_string()),
        started_at: chrono::Utc::now()
            - chrono::Duration::from_std(started.elapsed()).unwrap_or_default(),
    };
    let records = vec![
        run.finished(Ok(()), m.rows_in, m.files.len() as u64),
        tads_pg::Record::Alerts(
            round
                .alerts()
                .iter()
                .map(|a| crate::score::alert_row(a, m))
                .collect(),
        ),
    ];
    crate::pg::mirror(pg, tads_pg::Batch::new(records), true).await
}

/// One line per round: files, rows, rate, alerts opened and resolved.
fn describe(round: &Round, elapsed: Duration, open: usize) -> String {
    let alerts = round.alerts();
    let resolved = alerts.iter().filter(|a| !a.open).count();
    let opened = alerts
        .iter()
        .filter(|a| !round.continued.contains(&a.alert_id))
        .count();
    let rows = round.rows();
    format!(
        "round {}: {} files, {} rows in {:.2}s ({} rows/s): {opened} alerts opened, {resolved} resolved, {open} open{}",
        round.number,
        round.files.len(),
        thousands(rows),
        elapsed.as_secs_f64(),
        si(rows as f64 / elapsed.as_secs_f64().max(1e-9)),
        if round.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} files skipped", round.skipped.len())
        }
    )
}
