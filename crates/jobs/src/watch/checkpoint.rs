//! `<out>/_watch/checkpoint.json`: the files a watcher is done with, every key's alert state
//! and the drift levels it keeps, committed in one write after each round.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tads_store::Version;

use super::{CHECKPOINT, WatchJob};
use crate::alerts::Carried;
use crate::drift::DayLevels;
use crate::score::ModelRef;
use crate::{Error, Result};

/// A file the watcher is done with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDone {
    /// The round that took it.
    pub round: u64,
    /// Its size when read.
    pub bytes: u64,
    /// Its rows (0 for a file that could not be read).
    pub rows: u64,
    /// Its first and last time (seconds since the epoch), when it has the alerts' time column.
    pub first_ts: Option<i64>,
    /// See `first_ts`.
    pub last_ts: Option<i64>,
    /// Why it was skipped, for a file that could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `<out>/_watch/checkpoint.json`: what the watcher has done, committed after each round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always `tads-watch`.
    pub kind: String,
    /// Version of this format.
    pub format_version: u32,
    /// The followed dataset's URL.
    pub data: String,
    /// The model's name.
    pub model: String,
    /// The model's fingerprint: a checkpoint of another model is refused.
    pub model_fingerprint: String,
    /// Rounds committed.
    pub rounds: u64,
    /// When the last round was committed.
    pub updated_at: DateTime<Utc>,
    /// Every file done, by path relative to the data.
    pub files: BTreeMap<String, FileDone>,
    /// Every key's alert state after the files done.
    pub carried: Carried,
    /// The drift baseline's levels of the last complete days (the rows of each day and the
    /// bits of its per-metric medians, per key and day), so that a round does not read a whole
    /// day again to find the level it is compared with.
    #[serde(default)]
    pub levels: BTreeMap<String, BTreeMap<i64, KeptLevel>>,
    /// The last day (days since the epoch) whose levels are complete in `levels`.
    #[serde(default)]
    pub levels_through: Option<i64>,
}

/// One key's level of one day as the checkpoint keeps it: the day's rows and the bits of each
/// metric's median (bits, so that a level read back is the very number computed).
pub type KeptLevel = (i64, Vec<Option<u64>>);

/// How many complete days of levels the checkpoint keeps.
const LEVEL_DAYS: i64 = 2;

impl Checkpoint {
    /// The levels kept, as the drift baseline takes them.
    pub(super) fn day_levels(&self) -> DayLevels {
        self.levels
            .iter()
            .map(|(key, days)| {
                let days = days
                    .iter()
                    .map(|(day, (rows, bits))| {
                        (
                            *day,
                            (*rows, bits.iter().map(|b| b.map(f64::from_bits)).collect()),
                        )
                    })
                    .collect();
                (key.clone(), days)
            })
            .collect()
    }

    /// Keeps the levels of the complete days up to `through` (the last `LEVEL_DAYS` of them).
    pub(super) fn keep_levels(&mut self, levels: &DayLevels, through: i64) {
        let from = through - LEVEL_DAYS + 1;
        self.levels = levels
            .iter()
            .map(|(key, days)| {
                let days: BTreeMap<i64, KeptLevel> = days
                    .range(from..=through)
                    .map(|(day, (rows, m))| {
                        (
                            *day,
                            (*rows, m.iter().map(|v| v.map(f64::to_bits)).collect()),
                        )
                    })
                    .collect();
                (key.clone(), days)
            })
            .filter(|(_, days)| !days.is_empty())
            .collect();
        self.levels_through = Some(through);
    }
}

/// The first and last time (seconds since the epoch) of the rows of `files`, by the time spans
/// `checkpoint` records for them.
pub(super) fn span(checkpoint: &Checkpoint, files: &[String]) -> (Option<i64>, Option<i64>) {
    let spans = files.iter().filter_map(|f| checkpoint.files.get(f));
    let first = spans.clone().filter_map(|d| d.first_ts).min();
    let last = spans.filter_map(|d| d.last_ts).max();
    (first, last)
}

impl FileDone {
    pub(super) fn with_round(mut self, round: u64) -> Self {
        self.round = round;
        self
    }
}

/// The checkpoint at `job.out` with the version read (for the next commit's conditional put),
/// or a fresh one; one of another dataset or model is refused.
pub(super) async fn read_checkpoint(
    job: &WatchJob,
    model: &ModelRef,
) -> Result<(Checkpoint, Option<Version>)> {
    let data = job.data.data_url().to_string();
    let Some((bytes, version)) = job.out.get_versioned(CHECKPOINT).await? else {
        let fresh = Checkpoint {
            kind: "tads-watch".into(),
            format_version: 1,
            data,
            model: model.name.clone(),
            model_fingerprint: model.fingerprint.clone(),
            rounds: 0,
            updated_at: Utc::now(),
            files: BTreeMap::new(),
            carried: Carried::new(),
            levels: BTreeMap::new(),
            levels_through: None,
        };
        return Ok((fresh, None));
    };
    let at = format!("{}{CHECKPOINT}", job.out);
    let c: Checkpoint = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Data(format!("{at}: not a tads watch checkpoint ({e})")))?;
    if c.kind != "tads-watch" {
        return Err(Error::Data(format!(
            "{at}: kind is `{}`, not tads-watch",
            c.kind
        )));
    }
    if c.data != data {
        return Err(Error::Input(format!(
            "{at}: follows {}, not --data {data}; give that --data, or another --out",
            c.data
        )));
    }
    if c.model != model.name || c.model_fingerprint != model.fingerprint {
        return Err(Error::Input(format!(
            "{at}: was scored with model `{}` ({}), not `{}` ({}); give another --out to watch with this model",
            c.model, c.model_fingerprint, model.name, model.fingerprint
        )));
    }
    Ok((c, Some(version)))
}
