//! `tads generate --follow`: the seeded telemetry of a [`Plan`] written as a stream of small
//! files, one per flush window of data time, each when its window has passed (in real time, or
//! `speed` times faster), until stopped or the plan's horizon is reached. `tads watch` follows
//! such a folder.
//!
//! Each file holds every host's rows of one window (`date=YYYY-MM-DD/part-HHMMSS.parquet`, a
//! window is cut at midnight), sorted by host and time. While it runs the folder carries the
//! writer's in-progress marker, so batch readers (`tads score`) know it is not finished; when it
//! stops, the manifest lists what was written and the folder is a finished dataset.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;

use crate::config::MICROS_PER_DAY;
use crate::plan::{FileTask, Plan};
use crate::writer::{FileEntry, WriteOptions, WriteSummary, begin, encode_file, finish, manifest};
use crate::{Error, NoProgress, Result};

/// How to follow.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// Data time per file, in microseconds (at least one interval).
    pub flush_micros: i64,
    /// How many times faster than real time the data comes (1: real time).
    pub speed: f64,
}

/// The files of a followed dataset: one per flush window of every host, cut at midnight.
pub fn follow_files(plan: &Plan, flush_micros: i64) -> Vec<FileTask> {
    let c = &plan.config;
    let (start, interval) = (c.start_micros(), c.interval.micros());
    let total = c.points_per_host();
    let per_file = (flush_micros / interval).max(1) as u64;
    let hosts = plan.hosts.len();
    let mut files = Vec::new();
    let mut first = 0u64;
    while first < total {
        let t = start + first as i64 * interval;
        let next_day = (t.div_euclid(MICROS_PER_DAY) + 1) * MICROS_PER_DAY;
        let day_end = ((next_day - start) + interval - 1) / interval;
        let end = (first + per_file).min(day_end as u64).min(total);
        let at = DateTime::from_timestamp_micros(t).unwrap_or_default();
        files.push(FileTask {
            date: at.format("%Y-%m-%d").to_string(),
            path: format!(
                "date={}/part-{}.parquet",
                at.format("%Y-%m-%d"),
                at.format("%H%M%S")
            ),
            hosts: (0, hosts),
            points: (first, end),
            rows: (end - first) * hosts as u64,
        });
        first = end;
    }
    files
}

/// Writes the files of [`follow_files`] into `location` as their windows pass, then the
/// manifest of what was written, when `stop` completes or the horizon is reached. `on_file` is
/// told of each file once it is in place.
pub async fn follow_dataset(
    plan: Arc<Plan>,
    location: &tads_store::Location,
    options: &WriteOptions,
    follow: FollowOptions,
    stop: impl Future<Output = ()>,
    on_file: impl Fn(&FileEntry),
) -> Result<WriteSummary> {
    if !(follow.speed.is_finite() && follow.speed > 0.0) {
        return Err(Error::Config {
            field: "speed",
            message: format!("{}: must be a positive number", follow.speed),
        });
    }
    let started = Instant::now();
    let (id, output) = begin(&plan, location, options, "tads generate --follow").await?;
    let tasks = follow_files(&plan, follow.flush_micros);
    let interval = plan.config.interval.micros();
    let mut written = Vec::new();
    let mut points = 0u64;
    tokio::pin!(stop);
    for task in tasks {
        // A window is written once it has passed: its end, in data time from the start.
        let due = (task.points.1 as i64 * interval) as f64 / 1e6 / follow.speed;
        let due = Duration::try_from_secs_f64(due).unwrap_or(Duration::MAX);
        let wait = due.saturating_sub(started.elapsed());
        let stopped = tokio::select! {
            biased;
            _ = &mut stop => true,
            _ = tokio::time::sleep(wait) => false,
        };
        if stopped {
            break;
        }
        let (plan2, task2) = (Arc::clone(&plan), task.clone());
        let encoded = tokio::task::spawn_blocking(move || encode_file(&plan2, &task2, &NoProgress))
            .await
            .map_err(|e| Error::Internal(format!("encoder: {e}")));
        let bytes = match encoded.and_then(|r| r) {
            Ok(b) => b,
            Err(e) => {
                output.abort().await;
                return Err(e);
            }
        };
        let entry = FileEntry {
            path: task.path.clone(),
            date: task.date.clone(),
            rows: task.rows,
            bytes: bytes.len() as u64,
        };
        if let Err(e) = output.put(&task.path, bytes).await {
            output.abort().await;
            return Err(e.into());
        }
        on_file(&entry);
        points = task.points.1;
        written.push(entry);
    }
    finish(&output, manifest(&plan, id, points, written), started).await
}
