//! What a score run writes about itself: `<out>/_manifest.json` ([`ScoreManifest`]), with its
//! files ([`ScoredFile`]) and its model ([`ModelRef`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tads_sql::registry::Loaded;
use tads_store::Location;

use super::Shard;
use crate::alerts::AlertSummary;
use crate::config::ScoreConfig;
use crate::{Error, Result, ident};

/// One scored output file, as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredFile {
    /// Path below the output root (`scored/date=…/part-….parquet`).
    pub path: String,
    /// The input file it came from, relative to the input.
    pub source: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// The model a run scored with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Its name.
    pub name: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Its features, in order.
    pub features: Vec<String>,
    /// For a group of models: the column whose values pick a row's member.
    pub group_by: Option<String>,
}

impl ModelRef {
    /// The model (or group) `load_model` found.
    pub(crate) fn of(loaded: &Loaded) -> Self {
        match loaded {
            Loaded::Single(m) => Self {
                name: m.artifact.name.clone(),
                fingerprint: m.artifact.fingerprint.clone(),
                features: m.artifact.features.clone(),
                group_by: None,
            },
            Loaded::Group(g) => Self {
                name: g.name.clone(),
                fingerprint: g.fingerprint.clone(),
                features: g.features.clone(),
                group_by: Some(g.group_by.clone()),
            },
        }
    }

    /// The SQL expression that names each row's model: the name, or for a group
    /// `concat('<name>/', CAST("<group_by>" AS VARCHAR))`.
    pub fn sql(&self) -> String {
        let name = self.name.replace('\'', "''");
        match &self.group_by {
            None => format!("'{name}'"),
            Some(col) => format!("concat('{name}/', CAST({} AS VARCHAR))", ident(col)),
        }
    }
}

/// `<out>/_manifest.json` of a score run. Written last; its presence means complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreManifest {
    /// Always `tads-score`.
    pub kind: String,
    /// Version of this manifest format.
    pub format_version: u32,
    /// This run's id.
    pub run_id: String,
    /// TADS version that wrote it.
    pub tads_version: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When the manifest was written.
    pub finished_at: DateTime<Utc>,
    /// The input dataset's URL.
    pub data: String,
    /// The model.
    pub model: ModelRef,
    /// The shard scored, if only one.
    pub shard: Option<Shard>,
    /// The sharded column, when sharded.
    pub shard_by: Option<String>,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows: u64,
    /// Rows written without scores (a metric NULL or not finite).
    pub rows_unscored: u64,
    /// The columns added to each row.
    pub columns: Vec<String>,
    /// The effective fusion, alert and severity settings.
    pub config: ScoreConfig,
    /// The alerts written, when alerts were on.
    pub alerts: Option<AlertSummary>,
    /// Why there are no alerts although they were not turned off (the data lacks the default
    /// key or time column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts_skipped: Option<String>,
    /// How the alert pass put each key's rows in time order: `files in time order, scored once`
    /// (the files walked one after another and written as they were walked), `files in time
    /// order` (walked, then scored again to be written) or `sorted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_pass: Option<String>,
    /// Keys whose level moved away from the training level (with `drift.baseline =
    /// "previous_day"`): each reported once, with the metric that moved most.
    #[serde(default)]
    pub drift: Vec<crate::drift::DriftNotice>,
    /// The output files, sorted by path.
    pub files: Vec<ScoredFile>,
}

impl ScoreManifest {
    /// Reads the manifest of a score output; `None` if there is none.
    pub async fn read(out: &Location) -> Result<Option<Self>> {
        let Some(bytes) = out.get_opt(tads_store::MANIFEST).await? else {
            return Ok(None);
        };
        // The kind first: another TADS output's manifest is named as such, not as a bad field.
        let kind = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(String::from));
        if let Some(kind) = kind.filter(|k| k != "tads-score") {
            return Err(Error::Data(format!(
                "{out}{}: kind is `{kind}`, not a score output",
                tads_store::MANIFEST
            )));
        }
        let manifest: Self = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Data(format!("{out}{}: {e}", tads_store::MANIFEST)))?;
        Ok(Some(manifest))
    }
}
