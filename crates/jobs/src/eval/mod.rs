//! `tads eval`: detection quality of a score run against the labels in its rows.
//!
//! The numbers are computed by the SQL in `sql/eval/` (compiled into TADS, so the REPL and this
//! job run the same text) over two tables: `scored`, the run's `scored/` rows seen through a
//! view that names the label `is_anomaly`, the alert key `host_id` and the time `ts` (and, for
//! data without generated events, adds them as runs of labelled rows), and `alerts`, its
//! `alerts/` file.

mod input;
mod read;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use tads_store::Location;

pub use input::{Columns, DEFAULT_LABELS};
use read::{Row, breakdown, counts, floats, ints, texts};

use crate::score::ScoreManifest;
use crate::{Error, Result};

/// The evaluation queries, by name, as shipped in `sql/eval/`; each reads the tables `scored`
/// and `alerts`.
pub const QUERIES: [(&str, &str); 8] = [
    ("point", include_str!("../../../../sql/eval/point.sql")),
    (
        "point_adjusted",
        include_str!("../../../../sql/eval/point_adjusted.sql"),
    ),
    ("events", include_str!("../../../../sql/eval/events.sql")),
    (
        "false_alerts",
        include_str!("../../../../sql/eval/false_alerts.sql"),
    ),
    ("overall", include_str!("../../../../sql/eval/overall.sql")),
    ("au_prc", include_str!("../../../../sql/eval/au_prc.sql")),
    (
        "by_region",
        include_str!("../../../../sql/eval/by_region.sql"),
    ),
    (
        "by_project",
        include_str!("../../../../sql/eval/by_project_id.sql"),
    ),
];

/// `sql/eval/runs.sql`: the events of data without `anomaly_id`, as runs of labelled rows.
pub const RUNS: &str = include_str!("../../../../sql/eval/runs.sql");

/// The `anomaly_type` of events found as runs of labelled rows.
pub const RUN_EVENT_TYPE: &str = "labelled";

/// Confusion counts and the rates from them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Rows predicted and labelled.
    pub tp: u64,
    /// Rows predicted, not labelled.
    pub fp: u64,
    /// Rows labelled, not predicted.
    pub r#fn: u64,
    /// Rows neither.
    pub tn: u64,
    /// tp / (tp + fp); `None` without predictions.
    pub precision: Option<f64>,
    /// tp / (tp + fn); `None` without labelled rows.
    pub recall: Option<f64>,
    /// 2 tp / (2 tp + fp + fn).
    pub f1: Option<f64>,
}

/// Detection of one anomaly type's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventStats {
    /// Labelled events.
    pub events: u64,
    /// Events with at least one row inside an alert.
    pub detected: u64,
    /// detected / events.
    pub recall: f64,
    /// Median time to detect, seconds (detected events only).
    pub ttd_median_s: Option<f64>,
    /// 90th percentile of the time to detect, seconds.
    pub ttd_p90_s: Option<f64>,
    /// The share of the type's labelled rows inside alerts.
    pub point_recall: f64,
}

/// The point-wise numbers and the events of one region or project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Point-wise counts and rates.
    #[serde(flatten)]
    pub point: Counts,
    /// Labelled events.
    pub events: u64,
    /// Events detected.
    pub detected: u64,
}

/// Everything `tads eval` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The score run evaluated.
    pub run_id: String,
    /// Its model.
    pub model: String,
    /// Point-wise: a row is predicted when it is inside an alert.
    pub point: Counts,
    /// Point-adjusted: every row of an event counts once any of its rows is predicted.
    pub point_adjusted: Counts,
    /// Per anomaly type.
    pub events: BTreeMap<String, EventStats>,
    /// Alerts in the run.
    pub alerts: u64,
    /// Alerts none of whose rows is labelled.
    pub false_alerts: u64,
    /// Distinct (host, UTC day) pairs scored.
    pub host_days: u64,
    /// false_alerts per 100 host-days.
    pub false_alerts_per_100_host_days: f64,
    /// false_alerts per key-day (the same pairs as `host_days`, of the alert key).
    #[serde(default)]
    pub false_alerts_per_key_day: f64,
    /// Per region (empty when the rows have no `region`).
    pub by_region: BTreeMap<String, Breakdown>,
    /// Per project (empty when the rows have no `project_id`).
    pub by_project: BTreeMap<String, Breakdown>,
    /// The label column used.
    #[serde(default)]
    pub label: String,
    /// The series key (the score run's `alerts.key`).
    #[serde(default)]
    pub key: String,
    /// Where events come from: `anomaly_id` (generated data) or `runs` (maximal runs of
    /// labelled rows of one key in time order).
    #[serde(default)]
    pub events_from: String,
    /// Events over all types.
    #[serde(default)]
    pub event_count: u64,
    /// Events detected over all types.
    #[serde(default)]
    pub events_detected: u64,
    /// events_detected / event_count; `None` without events.
    #[serde(default)]
    pub event_recall: Option<f64>,
    /// Unlabelled rows.
    #[serde(default)]
    pub normal_rows: u64,
    /// Unlabelled rows inside an alert.
    #[serde(default)]
    pub normal_rows_in_alert: u64,
    /// normal_rows_in_alert / normal_rows: the fraction of normal time in alert.
    #[serde(default)]
    pub normal_in_alert: Option<f64>,
    /// Area under the precision-recall curve of `score` (average precision), all rows.
    #[serde(default)]
    pub au_prc: Option<f64>,
    /// The mean over keys with a labelled row of each key's own AU-PRC.
    #[serde(default)]
    pub au_prc_mean_by_key: Option<f64>,
    /// The keys in that mean.
    #[serde(default)]
    pub au_prc_keys: u64,
    /// Composite F-score: the harmonic mean of point-wise precision and event recall.
    #[serde(default)]
    pub fc1: Option<f64>,
}

/// Evaluates the score output at `out` against the label column `label` (default: the first of
/// [`DEFAULT_LABELS`] present).
pub async fn evaluate(out: &Location, label: Option<&str>) -> Result<EvalReport> {
    let manifest = ScoreManifest::read(out).await?.ok_or_else(|| {
        Error::Input(format!(
            "--scored {out}: has no {} (not the output of a finished `tads score` run)",
            tads_store::MANIFEST
        ))
    })?;
    if manifest.alerts.is_none() {
        return Err(Error::Input(format!(
            "--scored {out}: run {} was scored without alerts (--no-alerts); nothing to evaluate",
            manifest.run_id
        )));
    }
    let ctx = tads_sql::session();
    tads_sql::register_dataset(&ctx, "scored_rows", &out.sub("scored")).await?;
    tads_sql::register_dataset(&ctx, "alerts", &out.sub("alerts")).await?;
    let schema = ctx.table("scored_rows").await?.schema().as_arrow().clone();
    let rules = &manifest.config.alerts;
    let columns = Columns::find(&schema, label, &rules.key, &rules.time)
        .map_err(|e| Error::Input(format!("--scored {out}: {e}")))?;
    columns.register(&ctx, "scored_rows").await?;
    measure(&ctx, &columns, manifest.run_id, manifest.model.name).await
}

/// Runs the queries over the tables `scored` (registered by [`Columns::register`]) and `alerts`
/// of `ctx`, and gathers the report of run `run_id` of model `model`.
pub async fn measure(
    ctx: &SessionContext,
    columns: &Columns,
    run_id: String,
    model: String,
) -> Result<EvalReport> {
    let mut results: BTreeMap<&str, Vec<RecordBatch>> = BTreeMap::new();
    for (name, sql) in QUERIES {
        if (name == "by_region" && !columns.region) || (name == "by_project" && !columns.project_id)
        {
            continue;
        }
        let batches = ctx
            .sql(sql)
            .await
            .map_err(|e| Error::Data(format!("sql/eval/{name}.sql: {}", e.strip_backtrace())))?
            .collect()
            .await
            .map_err(|e| Error::Data(format!("sql/eval/{name}.sql: {}", e.strip_backtrace())))?;
        results.insert(name, batches);
    }
    let first = |name: &str| -> Result<RecordBatch> {
        results
            .get(name)
            .and_then(|b| b.iter().find(|b| b.num_rows() > 0))
            .cloned()
            .ok_or_else(|| Error::Data(format!("sql/eval/{name}.sql: no result row")))
    };
    let (fa, overall, prc) = (first("false_alerts")?, first("overall")?, first("au_prc")?);
    let (fa, overall, prc) = (Row(&fa), Row(&overall), Row(&prc));
    let none = Vec::new();
    Ok(EvalReport {
        run_id,
        model,
        point: counts(&first("point")?, 0)?,
        point_adjusted: counts(&first("point_adjusted")?, 0)?,
        events: events(&results["events"])?,
        alerts: fa.int("alerts")?,
        false_alerts: fa.int("false_alerts")?,
        host_days: fa.int("host_days")?,
        false_alerts_per_100_host_days: fa.float("false_alerts_per_100_host_days")?.unwrap_or(0.0),
        false_alerts_per_key_day: fa.float("false_alerts_per_key_day")?.unwrap_or(0.0),
        by_region: breakdown(results.get("by_region").unwrap_or(&none), "region")?,
        by_project: breakdown(results.get("by_project").unwrap_or(&none), "project_id")?,
        label: columns.label.clone(),
        key: columns.key.clone(),
        events_from: if columns.anomaly_id {
            "anomaly_id"
        } else {
            "runs"
        }
        .into(),
        event_count: overall.int("events")?,
        events_detected: overall.int("detected")?,
        event_recall: overall.float("event_recall")?,
        normal_rows: overall.int("normal_rows")?,
        normal_rows_in_alert: overall.int("normal_rows_in_alert")?,
        normal_in_alert: overall.float("normal_in_alert")?,
        au_prc: prc.float("au_prc")?,
        au_prc_mean_by_key: prc.float("au_prc_mean_by_key")?,
        au_prc_keys: prc.int("au_prc_keys")?,
        fc1: overall.float("fc1")?,
    })
}

/// The rows of `sql/eval/events.sql`, by anomaly type.
fn events(batches: &[RecordBatch]) -> Result<BTreeMap<String, EventStats>> {
    let mut events = BTreeMap::new();
    for b in batches {
        let types = texts(b, "anomaly_type")?;
        let (n, d) = (ints(b, "events")?, ints(b, "detected")?);
        let (recall, med, p90, pr) = (
            floats(b, "recall")?,
            floats(b, "ttd_median_s")?,
            floats(b, "ttd_p90_s")?,
            floats(b, "point_recall")?,
        );
        for (i, t) in types.into_iter().enumerate() {
            events.insert(
                t,
                EventStats {
                    events: n[i],
                    detected: d[i],
                    recall: recall[i].unwrap_or(0.0),
                    ttd_median_s: med[i],
                    ttd_p90_s: p90[i],
                    point_recall: pr[i].unwrap_or(0.0),
                },
            );
        }
    }
    Ok(events)
}
