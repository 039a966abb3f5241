//! `tads watch`: follows a dataset that is still being written, scoring each round of newly
//! landed files with the plan and outputs of `tads score`, and carrying every key's alert state
//! from one round to the next, with a checkpoint that makes a restart exactly-once.
//!
//! * **Finding files.** A round lists the data and takes the Parquet files not done yet (in
//!   path order, at most [`WatchJob::max_files`]). A file is read only once it is stable: its
//!   size and time unchanged between two listings [`WatchJob::settle`] apart (or since the
//!   previous round's listing). Names a writer stages under (hidden `_`/`.` names, no
//!   `.parquet` suffix) are never taken. Each round lists afresh in a new session, so
//!   DataFusion's listing cache never hides a new file.
//! * **Scoring.** A round is a `tads score` run over its files alone
//!   ([`crate::score::Follow`]), written as a complete output of its own to
//!   `<out>/rounds/<round>/` (scored files in the input's partitioning, `alerts/alerts.parquet`
//!   with the round's alerts, `_manifest.json`). Each key's alert walk starts where the
//!   previous round left it, so an alert may open in one file and close in a later one; an
//!   alert still open at the round's end is written as open and goes on in the next round. The
//!   drift baseline's medians also read the files done before whose rows may be the previous
//!   day's.
//! * **Exactly once.** When a round's output is complete, one checkpoint,
//!   `<out>/_watch/checkpoint.json` (every file done, each key's alert state), replaces the
//!   previous one in a single put: a conditional put on S3 (`If-Match` the version this watcher
//!   read or last wrote, so a checkpoint another writer put in between is never overwritten),
//!   a rename on a local disk. A watcher killed at any moment
//!   restarts from the last checkpoint: the round it was in is scored again into the same
//!   folder, which is replaced. So every file is scored once into the output, and the alerts
//!   are those of one `tads score` over all the files.
//! * **One watcher per output**: `<out>/_watch/lock.json` names the holder; one whose process is
//!   gone (same host) is taken over.
//! * **A corrupt file** is reported once and recorded in the checkpoint with its error; the
//!   others go on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use tads_sql::ModelRegistry;
use tads_store::{Location, Lock, Progress, Version};

use crate::alerts::Alert;
use crate::config::ScoreConfig;
use crate::score::{Follow, ModelRef, ScoreJob, ScoreReport};
use crate::{Error, Result, ident};

mod checkpoint;

pub use checkpoint::{Checkpoint, FileDone, KeptLevel};
use checkpoint::{read_checkpoint, span};

/// The checkpoint, below the output root.
pub const CHECKPOINT: &str = "_watch/checkpoint.json";

/// The watcher's lock, below the output root.
pub const LOCK: &str = "_watch/lock.json";

/// Where the rounds go, below the output root: `rounds/000001/`, …
pub const ROUNDS: &str = "rounds";

/// What to follow.
#[derive(Debug, Clone)]
pub struct WatchJob {
    /// The dataset being written.
    pub data: Location,
    /// Where models live.
    pub models: Location,
    /// The model's name.
    pub model: String,
    /// Where the rounds and the checkpoint go.
    pub out: Location,
    /// Fusion, alert, severity and drift settings.
    pub config: ScoreConfig,
    /// Files scored at once and the alert pass's partitions (0: one per core).
    pub concurrency: usize,
    /// The memory pool of a round, in bytes (0: the score job's default).
    pub memory: usize,
    /// At most this many files per round (the first rounds of a long backlog stay small).
    pub max_files: usize,
    /// How long a new file's size must hold still before it is read.
    pub settle: Duration,
    /// Remove a watcher's lock left at `out` first (its process is known to be gone).
    pub break_lock: bool,
}

/// One round's outcome, before it is committed.
#[derive(Debug)]
pub struct Round {
    /// Its number (1, 2, …).
    pub number: u64,
    /// Where its output went.
    pub out: Location,
    /// The files it scored.
    pub files: Vec<String>,
    /// The files it skipped, with why.
    pub skipped: Vec<(String, String)>,
    /// The score run (none when every file was skipped).
    pub report: Option<ScoreReport>,
    /// Ids of this round's alerts that were already open before it (their events are updates
    /// or resolutions, not openings).
    pub continued: BTreeSet<String>,
    checkpoint: Checkpoint,
}

impl Round {
    /// The round's alerts: every alert that opened, went on or closed in its files.
    pub fn alerts(&self) -> &[Alert] {
        self.report.as_ref().map_or(&[], |r| r.alerts.as_slice())
    }

    /// Rows scored.
    pub fn rows(&self) -> u64 {
        self.report.as_ref().map_or(0, |r| r.manifest.rows_in)
    }
}

/// A watcher holding its output's lock.
pub struct Watcher {
    job: WatchJob,
    lock: Lock,
    checkpoint: Checkpoint,
    /// The committed checkpoint's version (`None` before the first commit): the next commit
    /// replaces exactly this one, or fails.
    version: Option<Version>,
    /// Each candidate file's size and time at the last listing.
    seen: HashMap<String, (u64, DateTime<Utc>)>,
    /// Listings made.
    listings: u64,
}

/// Every this many listings, the whole prefix is listed (see [`Watcher::candidates`]).
const FULL_LISTING: u64 = 10;

impl Watcher {
    /// Takes the output's lock and reads its checkpoint, refusing one of another dataset or
    /// model.
    pub async fn open(job: WatchJob) -> Result<Self> {
        if job.data.overlaps(&job.out) {
            return Err(Error::Input(format!(
                "--out {}: overlaps the input {}; write the scores somewhere else",
                job.out, job.data
            )));
        }
        if let Some(file) = job.data.file() {
            return Err(Error::Input(format!(
                "--data {}{file}: is one file; tads watch follows a folder (or an s3:// prefix) where files land",
                job.data
            )));
        }
        job.config.validate().map_err(Error::Input)?;
        let registry = ModelRegistry::new();
        let model = ModelRef::of(&registry.load_model(&job.models, &job.model).await?);
        let id = format!(
            "watch-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            std::process::id()
        );
        let lock = Lock::acquire(&job.out, LOCK, "tads watch", &id, job.break_lock).await?;
        match read_checkpoint(&job, &model).await {
            Ok((checkpoint, version)) => Ok(Self {
                job,
                lock,
                checkpoint,
                version,
                seen: HashMap::new(),
                listings: 0,
            }),
            Err(e) => {
                let _ = lock.release().await;
                Err(e)
            }
        }
    }

    /// The checkpoint as last committed (or a fresh one).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The keys with an alert open after the last committed round.
    pub fn open_alerts(&self) -> usize {
        self.checkpoint
            .carried
            .values()
            .filter(|s| s.is_open())
            .count()
    }

    /// Lists the data: the Parquet files not done yet, by path, with size and time. Most
    /// listings start after the last file done in path order (`start-after` on S3, so a prefix
    /// that grows is not listed whole every round); the first and every [`FULL_LISTING`]-th
    /// list the whole prefix, which finds files that land late under a name before that one.
    async fn candidates(&self, full: bool) -> Result<BTreeMap<String, (u64, DateTime<Utc>)>> {
        let data = &self.job.data;
        let hidden = |rel: &str| {
            rel.split('/')
                .any(|p| p.starts_with('_') || p.starts_with('.'))
        };
        let last_done = self.checkpoint.files.keys().next_back();
        let objects = match last_done {
            Some(after) if !full => data.list_after(after).await?,
            _ => data.list_all().await?,
        };
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let rel = data.relative(&o.location)?;
                (rel.ends_with(".parquet")
                    && !hidden(&rel)
                    && !self.checkpoint.files.contains_key(&rel))
                .then_some((rel, (o.size, o.last_modified)))
            })
            .collect())
    }

    /// The new files that are ready to read: stable since the last listing, or over a wait of
    /// `settle`. At most `max_files`, in path order.
    pub async fn ready(&mut self) -> Result<Vec<String>> {
        // Both listings of a round of the same kind (a file found by a full listing is still
        // there in the second).
        let full = self.listings.is_multiple_of(FULL_LISTING);
        self.listings += 1;
        let first = self.candidates(full).await?;
        let moving = first
            .iter()
            .any(|(rel, stat)| self.seen.get(rel) != Some(stat));
        let ready: Vec<String> = if moving {
            tokio::time::sleep(self.job.settle).await;
            let second = self.candidates(full).await?;
            let ready = second
                .iter()
                .filter(|(rel, stat)| first.get(*rel) == Some(stat))
                .map(|(rel, _)| rel.clone())
                .collect();
            self.seen = second.into_iter().collect();
            ready
        } else {
            self.seen = first.clone().into_iter().collect();
            first.into_keys().collect()
        };
        Ok(ready.into_iter().take(self.job.max_files.max(1)).collect())
    }

    /// Scores the next round of ready files, writing its output; `None` when no file is
    /// ready. Nothing is committed: see [`Watcher::commit`].
    pub async fn round(&mut self, progress: Arc<dyn Progress>) -> Result<Option<Round>> {
        let files = self.ready().await?;
        if files.is_empty() {
            return Ok(None);
        }
        let number = self.checkpoint.rounds + 1;
        let mut checkpoint = self.checkpoint.clone();
        checkpoint.rounds = number;
        let mut good = Vec::new();
        let mut skipped = Vec::new();
        for file in files {
            match self.inspect(&file).await {
                Ok(done) => {
                    checkpoint
                        .files
                        .insert(file.clone(), done.with_round(number));
                    good.push(file);
                }
                Err(e) => {
                    let error = e.to_string();
                    let bytes = self.seen.get(&file).map_or(0, |s| s.0);
                    checkpoint.files.insert(
                        file.clone(),
                        FileDone {
                            round: number,
                            bytes,
                            rows: 0,
                            first_ts: None,
                            last_ts: None,
                            error: Some(error.clone()),
                        },
                    );
                    skipped.push((file, error));
                }
            }
        }
        let out = self.job.out.sub(&format!("{ROUNDS}/{number:06}"));
        let mut round = Round {
            number,
            out: out.clone(),
            files: good.clone(),
            skipped,
            report: None,
            continued: BTreeSet::new(),
            checkpoint,
        };
        if good.is_empty() {
            return Ok(Some(round));
        }
        let (first_ts, last_ts) = span(&round.checkpoint, &good);
        let day = |t: i64| t.div_euclid(86_400);
        let (first_day, last_day) = (first_ts.map(day), last_ts.map(day));
        // The previous day's levels are known when the checkpoint kept them.
        let known = first_day.filter(|d| {
            self.checkpoint
                .levels_through
                .is_some_and(|through| through >= d - 1)
        });
        let trailing = self
            .trailing_needed(&good, first_day, last_day, known)
            .await?;
        let context = self.context(first_ts, last_day, known.is_some(), trailing);
        let levels = known.map(|d| (Arc::new(self.checkpoint.day_levels()), d));
        let carried = Arc::new(self.checkpoint.carried.clone());
        let job = ScoreJob {
            data: self.job.data.clone(),
            models: self.job.models.clone(),
            model: self.job.model.clone(),
            out,
            shard: None,
            shard_by: "host_id".into(),
            // A round folder left by a killed watcher is this round's own: replace it.
            overwrite: true,
            break_lock: true,
            concurrency: self.job.concurrency,
            memory: self.job.memory,
            config: self.job.config.clone(),
            // Unique across outputs (the PostgreSQL mirror keys runs by id).
            run_id: Some(format!(
                "watch-{:08x}-round-{number:06}",
                tads_sql::functions::fnv1a64(self.job.out.url().as_str().as_bytes()) as u32
            )),
            follow: Some(Follow {
                files: good,
                context,
                carried: Arc::clone(&carried),
                levels,
            }),
            cluster: None,
        };
        let mut report = crate::score::score(&job, progress).await?;
        round.continued = report
            .alerts
            .iter()
            .filter(|a| {
                carried
                    .get(&a.host_id)
                    .and_then(|s| s.open_start())
                    .is_some_and(|start| start == a.start_ts)
            })
            .map(|a| a.alert_id.clone())
            .collect();
        if let Some(ends) = report.carried.take() {
            round.checkpoint.carried = ends;
        }
        // Days before the last one are complete (files land in time order): keep their levels.
        if let (Some(levels), Some(last)) = (&report.levels, last_day)
            && round.checkpoint.levels_through.is_none_or(|t| t < last - 1)
        {
            round.checkpoint.keep_levels(levels, last - 1);
        }
        round.report = Some(report);
        Ok(Some(round))
    }

    /// Commits a round whose output is complete: the checkpoint is replaced in one put, only
    /// if it is still the one this watcher committed or read (a conditional put on S3, see
    /// [`tads_store::Location::put_if`]). Another writer's checkpoint is never overwritten: the
    /// round is not committed and the watcher stops with an error.
    pub async fn commit(&mut self, round: &Round) -> Result<()> {
        self.lock.check().await?;
        let mut checkpoint = round.checkpoint.clone();
        checkpoint.updated_at = Utc::now();
        let json = serde_json::to_vec_pretty(&checkpoint)
            .map_err(|e| Error::Data(format!("checkpoint: {e}")))?;
        let Some(version) = self
            .job
            .out
            .put_if(CHECKPOINT, json, self.version.as_ref())
            .await?
        else {
            return Err(Error::Data(format!(
                "{}{CHECKPOINT}: changed by another writer since this watcher read it \
                 (another tads watch on the same --out?); round {} was not committed",
                self.job.out, checkpoint.rounds
            )));
        };
        self.version = Some(version);
        self.checkpoint = checkpoint;
        Ok(())
    }

    /// Says this watcher is alive: its lock gets the time now, and counts as gone after
    /// `stale_after` without another beat (see [`tads_store::Lock::heartbeat`]).
    pub async fn heartbeat(&mut self, stale_after: Duration) -> Result<()> {
        Ok(self.lock.heartbeat(stale_after).await?)
    }

    /// Releases the lock.
    pub async fn close(self) -> Result<()> {
        Ok(self.lock.release().await?)
    }

    /// A new file's rows and time span (from its footer and a query DataFusion answers from
    /// the statistics); an error for a file that cannot be read.
    async fn inspect(&self, file: &str) -> Result<FileDone> {
        let data = &self.job.data;
        let units = crate::score::input::units_of(data, &[file.to_string()]).await?;
        let unit = units
            .first()
            .ok_or_else(|| Error::Data(format!("{data}{file}: not found")))?;
        let mut done = FileDone {
            round: 0,
            bytes: unit.meta.size,
            rows: unit.rows,
            first_ts: None,
            last_ts: None,
            error: None,
        };
        let time = &self.job.config.alerts.time;
        let ctx = tads_sql::session();
        tads_sql::register_files(&ctx, "f", data, &[file.to_string()]).await?;
        let has_time = ctx
            .table("f")
            .await?
            .schema()
            .field_with_unqualified_name(time)
            .is_ok_and(|f| {
                matches!(
                    f.data_type(),
                    datafusion::arrow::datatypes::DataType::Timestamp(..)
                )
            });
        if has_time && unit.rows > 0 {
            let t = ident(time);
            let batches = ctx
                .sql(&format!(
                    "SELECT CAST(to_unixtime(min({t})) AS BIGINT), CAST(to_unixtime(max({t})) AS BIGINT) FROM f"
                ))
                .await?
                .collect()
                .await?;
            if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
                let first = b.column(0).as_primitive::<Int64Type>();
                let last = b.column(1).as_primitive::<Int64Type>();
                done.first_ts = first.is_valid(0).then(|| first.value(0));
                done.last_ts = last.is_valid(0).then(|| last.value(0));
            }
        }
        Ok(done)
    }

    /// Whether the drift baseline may compare some row of the round with the trailing hours
    /// before it, so that their files must be read: unless the round lies within one day whose
    /// previous day's levels the checkpoint kept, with enough rows, for every key of the round's
    /// files. The usual round (within a day, after the first) is so, and reads no earlier file.
    async fn trailing_needed(
        &self,
        files: &[String],
        first_day: Option<i64>,
        last_day: Option<i64>,
        known: Option<i64>,
    ) -> Result<bool> {
        let drift = &self.job.config.drift;
        if drift.baseline == crate::drift::Baseline::Off || drift.trailing_hours == 0 {
            return Ok(false);
        }
        let (Some(day), true) = (known, first_day == last_day) else {
            return Ok(true);
        };
        let ctx = tads_sql::session();
        tads_sql::register_files(&ctx, "f", &self.job.data, files).await?;
        let key = ident(&self.job.config.alerts.key);
        let batches = ctx
            .sql(&format!("SELECT DISTINCT CAST({key} AS VARCHAR) FROM f"))
            .await?
            .collect()
            .await?;
        let leveled = |k: &str| {
            self.checkpoint
                .levels
                .get(k)
                .and_then(|days| days.get(&(day - 1)))
                .is_some_and(|(rows, _)| u64::try_from(*rows).unwrap_or(0) >= drift.min_rows)
        };
        for b in &batches {
            let keys = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )?;
            let keys = keys.as_string::<i32>();
            if (0..keys.len()).any(|i| keys.is_valid(i) && !leveled(keys.value(i))) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The files done before that hold rows of the days whose levels the round's rows are
    /// compared with (for the drift baseline's medians): from the day before the first row's
    /// day (from that day itself when the levels before it are `known`) to the day before the
    /// last row's, by the time spans the checkpoint records; and those of the trailing hours
    /// before the first row (`drift.trailing_hours`, for a day without a previous day). A round
    /// within one day whose previous day is known needs only the latter; one after a restart
    /// reads the previous day once.
    fn context(
        &self,
        first_ts: Option<i64>,
        last_day: Option<i64>,
        known: bool,
        trailing: bool,
    ) -> Vec<String> {
        let (Some(first_ts), Some(last)) = (first_ts, last_day) else {
            return Vec::new();
        };
        let first = first_ts.div_euclid(86_400);
        let trailing = if trailing {
            i64::from(self.job.config.drift.trailing_hours) * 3_600
        } else {
            0
        };
        // The trailing hours start at the first row's hour.
        let hours_from = first_ts.div_euclid(3_600) * 3_600 - trailing;
        let from = ((first - i64::from(!known)) * 86_400).min(hours_from);
        let until = (last * 86_400).max(if trailing > 0 { first_ts } else { i64::MIN });
        if from >= until {
            return Vec::new();
        }
        self.checkpoint
            .files
            .iter()
            .filter(|(_, d)| {
                d.error.is_none()
                    && d.last_ts.is_some_and(|t| t >= from)
                    && d.first_ts.is_some_and(|t| t < until)
            })
            .map(|(f, _)| f.clone())
            .collect()
    }
}
