//! TADS's PostgreSQL mirror.
//!
//! Parquet stays the source of truth; PostgreSQL gets a faithful, queryable copy of what TADS
//! produces: generated datasets, models, runs (with progress while they work), alerts and eval
//! results, in a schema of its own (`tads` by default) under versioned migrations.
//!
//! * [`Pg`]: a connection target parsed from a URL, with the password masked everywhere it is
//!   shown; TLS by `sslmode` (see [`Pg::parse`]).
//! * [`migrate`]: the migrations, applied under an advisory lock, so that two processes
//!   migrating at once both succeed.
//! * [`Batch`] and [`Record`]: what one command mirrors, delivered in one transaction by
//!   upserts on natural keys (dataset id, model fingerprint, run id, alert id, eval key), so
//!   delivering the same batch twice leaves the same rows.
//! * [`Outbox`]: a local directory of batches not delivered yet; [`mirror`] tries it first and
//!   keeps a batch there whenever PostgreSQL cannot take it, so nothing is lost while it is down.
//! * [`RunTracker`]: a run's progress, written every few seconds while a job works.
#![deny(missing_docs)]

mod deliver;
mod outbox;
mod records;
mod target;

pub use deliver::{MIGRATIONS, deliver, migrate};
pub use outbox::{Outbox, Pending};
pub use records::{AlertRow, Batch, DatasetRow, EvalRow, ModelRow, Record, RunRow};
pub use target::{Pg, mask_url};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Errors of the mirror. Messages are one line and never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL or a setting is wrong.
    #[error("{0}")]
    Config(String),
    /// PostgreSQL could not be reached or refused the work.
    #[error("{0}")]
    Server(String),
    /// The local outbox could not be read or written.
    #[error("{0}")]
    Outbox(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What [`mirror`] did with a batch.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Mirrored {
    /// Delivered now, with `synced` older batches from the outbox before it.
    Delivered {
        /// Records in the batch.
        records: usize,
        /// Older batches delivered from the outbox first.
        synced: usize,
    },
    /// Kept in the outbox (PostgreSQL could not take it: `reason`).
    Queued {
        /// Where the batch waits.
        path: std::path::PathBuf,
        /// Why it was not delivered (one line, no password).
        reason: String,
    },
}

/// Delivers the outbox's pending batches, oldest first, over `client`; returns how many were
/// delivered. Stops at the first failure (the rest stay pending).
pub async fn sync(pg: &Pg, client: &mut tokio_postgres::Client, outbox: &Outbox) -> Result<usize> {
    let mut delivered = 0;
    for pending in outbox.pending()? {
        deliver(pg, client, &pending.batch).await?;
        outbox.remove(&pending)?;
        delivered += 1;
    }
    Ok(delivered)
}

/// Mirrors `batch`: connects, migrates if needed, delivers the outbox's older batches and then
/// this one. If any of that fails, the batch is written to the outbox instead and the reason
/// is returned in [`Mirrored::Queued`]; only a failure to write the outbox itself is an error.
pub async fn mirror(pg: &Pg, outbox: &Outbox, batch: Batch) -> Result<Mirrored> {
    let attempt = async {
        let mut client = pg.connect().await?;
        migrate(pg, &mut client).await?;
        let synced = sync(pg, &mut client, outbox).await?;
        deliver(pg, &mut client, &batch).await?;
        Ok::<_, Error>(synced)
    };
    match attempt.await {
        Ok(synced) => Ok(Mirrored::Delivered {
            records: batch.len(),
            synced,
        }),
        Err(e) => {
            let path = outbox.save(&batch)?;
            Ok(Mirrored::Queued {
                path,
                reason: e.to_string(),
            })
        }
    }
}

/// A run's counters, shared with the job, and a task that writes them to `runs` every
/// `every` while the job works. If PostgreSQL is unreachable or drops, the task stops trying
/// (the run's final state goes through [`mirror`] and the outbox).
pub struct RunTracker {
    rows: Arc<AtomicU64>,
    files: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<u64>>,
}

impl RunTracker {
    /// Starts tracking `run` (inserted as `running` right away when PostgreSQL answers).
    pub fn start(pg: Pg, run: RunRow, every: Duration) -> Self {
        let rows = Arc::new(AtomicU64::new(0));
        let files = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, f, s) = (Arc::clone(&rows), Arc::clone(&files), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let Ok(mut client) = pg.connect().await else {
                return 0;
            };
            if migrate(&pg, &mut client).await.is_err() {
                return 0;
            }
            let batch = Batch::new(vec![Record::Run(run.clone())]);
            if deliver(&pg, &mut client, &batch).await.is_err() {
                return 0;
            }
            let mut updates = 0u64;
            let update = format!(
                "UPDATE {}.runs SET rows_done = $2, files_done = $3, rows_per_second = $4, updated_at = now() WHERE id = $1 AND status = 'running'",
                pg.schema_ident()
            );
            loop {
                let stopping = s.load(Ordering::Relaxed);
                let (rows, files) = (r.load(Ordering::Relaxed), f.load(Ordering::Relaxed));
                let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
                let sent = client
                    .execute(&update, &[&run.id, &(rows as i64), &(files as i64), &rate])
                    .await;
                if sent.is_err() {
                    return updates;
                }
                updates += 1;
                if stopping {
                    return updates;
                }
                // Sleep in small steps so that stopping is prompt.
                let until = Instant::now() + every;
                while Instant::now() < until && !s.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Self {
            rows,
            files,
            stop,
            task: Some(task),
        }
    }

    /// Adds rows done.
    pub fn rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds a file done.
    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts counting rows and files again (a new phase of the job: the one pass over files
    /// in time order that falls back to sorting writes its files again).
    pub fn reset_counts(&self) {
        self.rows.store(0, Ordering::Relaxed);
        self.files.store(0, Ordering::Relaxed);
    }

    /// Stops the updates (after a last one) and returns how many were written (0 when
    /// PostgreSQL was not reachable).
    pub async fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.take() {
            Some(t) => t.await.unwrap_or(0),
            None => 0,
        }
    }
}

impl Drop for RunTracker {
    fn drop(&mut self) {
        // A tracker dropped without `finish` (the job failed early) stops its task too.
        self.stop.store(true, Ordering::Relaxed);
    }
}
