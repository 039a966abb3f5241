//! What TADS mirrors, as plain rows that serialize to the outbox.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A generated dataset (`datasets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRow {
    /// The dataset id (`ds-…`).
    pub id: String,
    /// Where it was written.
    pub uri: String,
    /// Its seed.
    pub seed: i64,
    /// Every generator argument.
    pub arguments: serde_json::Value,
    /// Rows.
    pub rows: i64,
    /// Injected events by anomaly type.
    pub events_by_type: BTreeMap<String, u64>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// A model, a group, or a group's member (`models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    /// Its fingerprint (the key).
    pub fingerprint: String,
    /// Its name (`fleet`, `hosts`, `hosts/host-0001`).
    pub name: String,
    /// `model`, `group` or `member`.
    pub kind: String,
    /// Features in order.
    pub features: Vec<String>,
    /// Retained components (none for a group).
    pub k: Option<i32>,
    /// The limits (none for a group).
    pub thresholds: Option<serde_json::Value>,
    /// Training rows used (seen, for a group).
    pub rows: i64,
    /// The training data's URI.
    pub training_data: String,
    /// When it was trained.
    pub created_at: DateTime<Utc>,
}

/// A job run (`runs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// The run id (the key).
    pub id: String,
    /// `generate`, `train`, `score` or `eval`.
    pub kind: String,
    /// The model, if any.
    pub model: Option<String>,
    /// The input dataset's URI, if any.
    pub dataset: Option<String>,
    /// Where it wrote.
    pub output: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// Rows done.
    pub rows_done: i64,
    /// Files done.
    pub files_done: i64,
    /// Rows per second.
    pub rows_per_second: Option<f64>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished (none while running).
    pub finished_at: Option<DateTime<Utc>>,
    /// The error of a failed run.
    pub error: Option<String>,
}

/// An alert (`alerts`): every column of the alerts output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    /// The key.
    pub alert_id: String,
    /// Host.
    pub host_id: String,
    /// Region.
    pub region: Option<String>,
    /// Project.
    pub project_id: Option<String>,
    /// First row's time.
    pub start_ts: DateTime<Utc>,
    /// Last row's time.
    pub end_ts: DateTime<Utc>,
    /// When it was raised.
    pub opened_ts: DateTime<Utc>,
    /// Rows.
    pub points: i64,
    /// Peak fused score.
    pub peak_score: f64,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Top metrics.
    pub top_metrics: Vec<String>,
    /// Model name.
    pub model: String,
    /// Model fingerprint.
    pub model_fingerprint: String,
    /// The score run.
    pub run_id: String,
    /// Still open at the end of the data.
    pub open: bool,
}

/// One row of eval numbers (`eval_results`): a breakdown (`point`, `point_adjusted`, `events`,
/// `false_alerts`, `by_region`, `by_project`) and its key (`all`, a type, a region, a project).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// The score run evaluated.
    pub run_id: String,
    /// The breakdown.
    pub breakdown: String,
    /// Its key.
    pub key: String,
    /// The numbers.
    pub metrics: serde_json::Value,
}

/// One thing to mirror.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "table", content = "rows", rename_all = "snake_case")]
pub enum Record {
    /// A dataset.
    Dataset(DatasetRow),
    /// Models.
    Models(Vec<ModelRow>),
    /// A run.
    Run(RunRow),
    /// Alerts.
    Alerts(Vec<AlertRow>),
    /// Eval numbers.
    Eval(Vec<EvalRow>),
}

impl Record {
    /// Rows in it.
    pub fn len(&self) -> usize {
        match self {
            Self::Dataset(_) | Self::Run(_) => 1,
            Self::Models(v) => v.len(),
            Self::Alerts(v) => v.len(),
            Self::Eval(v) => v.len(),
        }
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one command mirrors, delivered in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// When it was made (outbox files sort by it).
    pub created_at: DateTime<Utc>,
    /// The records, delivered in order.
    pub records: Vec<Record>,
}

impl Batch {
    /// A batch of `records`, made now.
    pub fn new(records: Vec<Record>) -> Self {
        Self {
            created_at: Utc::now(),
            records,
        }
    }

    /// Rows in all its records.
    pub fn len(&self) -> usize {
        self.records.iter().map(Record::len).sum()
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows per table, e.g. `1 run, 248 alerts`.
    pub fn describe(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.records {
            let name = match r {
                Record::Dataset(_) => "dataset",
                Record::Models(_) => "models",
                Record::Run(_) => "run",
                Record::Alerts(_) => "alerts",
                Record::Eval(_) => "eval rows",
            };
            *counts.entry(name).or_default() += r.len();
        }
        counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
