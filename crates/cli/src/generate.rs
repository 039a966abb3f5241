//! `tads generate`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::Args;
use tads_gen::{
    AnomalyConfig, AnomalyType, GenConfig, Plan, Profile, Span, SpanRange, WriteOptions,
};
use tads_store::Location;

use crate::progress::RowBar;
use crate::{UserError, mib, si, thousands};

/// Arguments of `tads generate`.
#[derive(Debug, Args)]
#[command(
    about = "Generate seeded synthetic host telemetry with labelled anomalies as hive-partitioned Parquet",
    long_about = "Generate seeded synthetic host telemetry with labelled anomalies as hive-partitioned Parquet.\n\n\
Each host gets its own baseline and a shared latent load with daily and weekly seasonality that drives \
CPU, disk, network, latency and errors together. Spikes, bursts, trends, correlation breaks and level \
shifts are injected at --anomaly-rate events per host-day and labelled on every row they touch \
(is_anomaly, anomaly_type, anomaly_id).\n\n\
With --profile network each key is a network link (link-0000, still in the host_id column, so train, \
score and eval run unchanged) with bandwidth_mbps, latency_ms, packet_loss_pct (0-100, mostly near 0), \
jitter_ms and retransmits (whole counts), driven by the same daily utilisation cycle; it injects loss bursts, \
jitter storms, bandwidth collapses and latency steps.\n\n\
Output: <out>/date=YYYY-MM-DD/part-NNNNN.parquet (zstd, rows sorted by host_id, ts) and \
<out>/_manifest.json, written last. The same arguments always give the same rows.\n\nWith --follow it keeps writing: one file per --flush of data time (date=YYYY-MM-DD/part-HHMMSS.parquet), each once its time has passed since the start (or --speed times faster), until Ctrl-C or the end of --duration; then the manifest lists what was written. `tads watch` follows such a folder.",
    after_help = "Examples:\n  tads generate --out ./data/generated/telemetry --hosts 50 --duration 7d\n  \
AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true tads generate --out s3://bucket/telemetry"
)]
pub(crate) struct GenerateArgs {
    /// Where to write: a directory, file:///path or s3://bucket/prefix
    #[arg(long, value_name = "DIR|URL")]
    out: String,
    /// Number of hosts (links with --profile network)
    #[arg(long, default_value_t = GenConfig::default().hosts)]
    hosts: u32,
    /// What the rows are: `server` hosts (CPU, memory, disk, network, latency, errors) or `network` links (bandwidth, latency, packet loss, jitter, retransmits)
    #[arg(long, default_value_t = Profile::Server)]
    profile: Profile,
    /// First timestamp, RFC 3339 (2026-01-01T00:00:00Z) or a date (midnight UTC)
    #[arg(long, value_parser = tads_gen::config::parse_start, default_value = "2026-01-01T00:00:00Z")]
    start: DateTime<Utc>,
    /// Time span covered, e.g. 7d, 36h, 1w
    #[arg(long, default_value_t = GenConfig::default().duration)]
    duration: Span,
    /// Time between two rows of a host, e.g. 10s, 1m
    #[arg(long, default_value_t = GenConfig::default().interval)]
    interval: Span,
    /// Seed of every random choice
    #[arg(long, default_value_t = GenConfig::default().seed)]
    seed: u64,
    /// Expected anomaly events per host-day (0 for clean data)
    #[arg(long, allow_negative_numbers = true, default_value_t = GenConfig::default().anomaly_rate)]
    anomaly_rate: f64,
    /// Number of regions hosts are spread over
    #[arg(long, default_value_t = GenConfig::default().regions)]
    regions: u32,
    /// Number of projects hosts are spread over
    #[arg(long, default_value_t = GenConfig::default().projects)]
    projects: u32,
    /// Replace an existing TADS dataset at --out (never a folder that is not one)
    #[arg(long)]
    overwrite: bool,
    /// Remove the lock a writer that is gone (killed, or on a lost machine) left at --out
    #[arg(long)]
    break_lock: bool,
    /// Worker threads (default: one per core)
    #[arg(long, default_value_t = 0, value_parser = crate::parse_threads)]
    threads: usize,
    /// No progress bar and no summary
    #[arg(long, short)]
    quiet: bool,
    /// Keep writing: one file of --flush data time at a time, each when its time has passed (or --speed times faster), until Ctrl-C or the end of --duration; for `tads watch`
    #[arg(long, help_heading = "Following")]
    follow: bool,
    /// Data time per file with --follow, e.g. 1m, 10m
    #[arg(
        long,
        help_heading = "Following",
        default_value = "1m",
        requires = "follow"
    )]
    flush: Span,
    /// With --follow, how many times faster than real time the data comes
    #[arg(
        long,
        help_heading = "Following",
        default_value_t = 1.0,
        requires = "follow"
    )]
    speed: f64,

    /// Kinds to inject, comma-separated. Server: spike, burst, trend, correlation_break, level_shift (default: all). Network: loss_burst, jitter_storm, bandwidth_collapse, latency_step (default: these four), spike, level_shift. Loss bursts and jitter storms take the burst's magnitude and duration, a bandwidth collapse the break's duration and the shift's magnitude (downwards), a latency step the shift's
    #[arg(long, value_delimiter = ',', help_heading = "Anomalies")]
    anomaly_types: Option<Vec<AnomalyType>>,
    /// Spike height in standard deviations of the metric
    #[arg(long, help_heading = "Anomalies", allow_negative_numbers = true, default_value_t = AnomalyConfig::default().spike_magnitude)]
    spike_magnitude: f64,
    /// Spike length in points, MIN..MAX
    #[arg(long, help_heading = "Anomalies", value_parser = parse_points, default_value = "1..3")]
    spike_points: (u32, u32),
    /// Burst elevation in standard deviations
    #[arg(long, help_heading = "Anomalies", allow_negative_numbers = true, default_value_t = AnomalyConfig::default().burst_magnitude)]
    burst_magnitude: f64,
    /// Burst length, MIN..MAX
    #[arg(long, help_heading = "Anomalies", default_value_t = AnomalyConfig::default().burst_duration)]
    burst_duration: SpanRange,
    /// Drift reached at the end of a trend, in standard deviations
    #[arg(long, help_heading = "Anomalies", allow_negative_numbers = true, default_value_t = AnomalyConfig::default().trend_magnitude)]
    trend_magnitude: f64,
    /// Trend length, MIN..MAX
    #[arg(long, help_heading = "Anomalies", default_value_t = AnomalyConfig::default().trend_duration)]
    trend_duration: SpanRange,
    /// Correlation-break length, MIN..MAX
    #[arg(long, help_heading = "Anomalies", default_value_t = AnomalyConfig::default().break_duration)]
    break_duration: SpanRange,
    /// Level-shift step in standard deviations
    #[arg(long, help_heading = "Anomalies", allow_negative_numbers = true, default_value_t = AnomalyConfig::default().shift_magnitude)]
    shift_magnitude: f64,
    /// Level-shift length, MIN..MAX
    #[arg(long, help_heading = "Anomalies", default_value_t = AnomalyConfig::default().shift_duration)]
    shift_duration: SpanRange,
    /// Quiet time between two events on one host
    #[arg(long, help_heading = "Anomalies", default_value_t = AnomalyConfig::default().min_gap)]
    min_gap: Span,
}

fn parse_points(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{text}` is not a point range (write e.g. 1..3 or 2)");
    let (a, b) = text.split_once("..").unwrap_or((text, text));
    let a: u32 = a.trim().parse().map_err(|_| bad())?;
    let b: u32 = b.trim().parse().map_err(|_| bad())?;
    Ok((a, b))
}

impl GenerateArgs {
    fn config(&self) -> GenConfig {
        GenConfig {
            hosts: self.hosts,
            start: self.start,
            duration: self.duration,
            interval: self.interval,
            seed: self.seed,
            anomaly_rate: self.anomaly_rate,
            regions: self.regions,
            projects: self.projects,
            profile: self.profile,
            anomalies: AnomalyConfig {
                types: self
                    .anomaly_types
                    .clone()
                    .unwrap_or_else(|| self.profile.default_kinds().to_vec()),
                spike_magnitude: self.spike_magnitude,
                spike_points: self.spike_points,
                burst_magnitude: self.burst_magnitude,
                burst_duration: self.burst_duration,
                trend_magnitude: self.trend_magnitude,
                trend_duration: self.trend_duration,
                break_duration: self.break_duration,
                shift_magnitude: self.shift_magnitude,
                shift_duration: self.shift_duration,
                min_gap: self.min_gap,
            },
        }
    }
}

/// Maps generator errors to user errors where the user can fix them.
fn classify(e: tads_gen::Error) -> anyhow::Error {
    match e {
        tads_gen::Error::Internal(_) | tads_gen::Error::Cancelled => anyhow::Error::new(e),
        other => UserError(other.to_string()).into(),
    }
}

pub(crate) async fn run(args: GenerateArgs, pg: &crate::pg::PgArgs) -> anyhow::Result<()> {
    let config = args.config();
    let out = Location::parse(&args.out).map_err(|e| UserError(format!("--out {e}")))?;
    pg.target()?;
    let started_at = chrono::Utc::now();
    let run = crate::pg::Run {
        id: crate::pg::run_id("generate", started_at),
        kind: "generate",
        model: None,
        dataset: None,
        output: Some(out.to_string()),
        started_at,
    };
    let plan = Arc::new(Plan::new(&config).map_err(classify)?);
    let bar = Arc::new(RowBar::new(
        plan.total_rows(),
        plan.files.len() as u64,
        args.quiet || args.follow,
    ));
    let options = WriteOptions {
        overwrite: args.overwrite,
        threads: args.threads,
        break_lock: args.break_lock,
    };
    let result = if args.follow {
        let follow = tads_gen::FollowOptions {
            flush_micros: args.flush.micros(),
            speed: args.speed,
        };
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let quiet = args.quiet;
        let announce = |f: &tads_gen::writer::FileEntry| {
            if !quiet {
                eprintln!("wrote {} ({} rows)", f.path, thousands(f.rows));
            }
        };
        tads_gen::follow_dataset(Arc::clone(&plan), &out, &options, follow, stop, announce).await
    } else {
        tads_gen::write_dataset(Arc::clone(&plan), &out, &options, bar.clone()).await
    };
    bar.finish();
    let record = match &result {
        Ok(s) => {
            let m = &s.manifest;
            let dataset = tads_pg::Record::Dataset(tads_pg::DatasetRow {
                id: m.dataset_id.clone(),
                uri: out.url().to_string(),
                seed: m.seed as i64,
                arguments: serde_json::to_value(&m.arguments).unwrap_or_default(),
                rows: m.rows as i64,
                events_by_type: m.events_by_type.clone(),
                created_at: m.created_at,
            });
            vec![dataset, run.finished(Ok(()), m.rows, m.files.len() as u64)]
        }
        Err(e) => vec![run.finished(Err(e.to_string()), 0, 0)],
    };
    crate::pg::mirror(pg, tads_pg::Batch::new(record), args.quiet).await?;
    let summary = result.map_err(classify)?;
    if !args.quiet {
        let m = &summary.manifest;
        println!(
            "wrote {} rows ({} {}s, {} events) in {} files ({}) to {} in {:.2}s: {} rows/s",
            thousands(m.rows),
            m.hosts,
            config.profile.key_prefix(),
            m.events,
            m.files.len(),
            mib(summary.bytes()),
            out,
            summary.elapsed.as_secs_f64(),
            si(summary.rows_per_second()),
        );
        let by_type: Vec<String> = m
            .events_by_type
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "events by type: {}; dataset {}",
            by_type.join(", "),
            m.dataset_id
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ranges() {
        assert_eq!(parse_points("1..3").unwrap(), (1, 3));
        assert_eq!(parse_points("2").unwrap(), (2, 2));
        assert!(parse_points("a..b").is_err());
    }
}
