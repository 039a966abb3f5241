//! `tads eval`: detection quality of a score run against the labels in its rows.
//!
//! The numbers are computed by the SQL in `sql/eval/` (compiled into TADS, so the REPL and this
//! job run the same text) over two tables: `scored`, the run's `scored/` rows, and `alerts`, its
//! `alerts/` file.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use serde::{Deserialize, Serialize};
use tads_store::Location;

use crate::score::ScoreManifest;
use crate::{Error, Result};

/// The evaluation queries, by name, as shipped in `sql/eval/`.
pub const QUERIES: [(&str, &str); 6] = [
    ("point", include_str!("../../../sql/eval/point.sql")),
    (
        "point_adjusted",
        include_str!("../../../sql/eval/point_adjusted.sql"),
    ),
    ("events", include_str!("../../../sql/eval/events.sql")),
    (
        "false_alerts",
        include_str!("../../../sql/eval/false_alerts.sql"),
    ),
    ("by_region", include_str!("../../../sql/eval/by_region.sql")),
    (
        "by_project",
        include_str!("../../../sql/eval/by_project_id.sql"),
    ),
];

/// The label columns evaluation needs in the scored rows.
pub const LABELS: [&str; 3] = ["is_anomaly", "anomaly_type", "anomaly_id"];

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
    /// Per region.
    pub by_region: BTreeMap<String, Breakdown>,
    /// Per project.
    pub by_project: BTreeMap<String, Breakdown>,
}

/// A column of a result, cast to `to`.
fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Data(format!("eval: no column `{name}` in a result")))?;
    Ok(cast(col, to)?)
}

/// A column of a result as f64 values (NULL as `None`).
fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let col = column(batch, name, &DataType::Float64)?;
    let col = col.as_primitive::<Float64Type>();
    Ok((0..col.len())
        .map(|i| col.is_valid(i).then(|| col.value(i)))
        .collect())
}

fn ints(batch: &RecordBatch, name: &str) -> Result<Vec<u64>> {
    let col = column(batch, name, &DataType::Int64)?;
    let col = col.as_primitive::<Int64Type>();
    Ok((0..col.len())
        .map(|i| {
            if col.is_valid(i) {
                col.value(i).max(0) as u64
            } else {
                0
            }
        })
        .collect())
}

fn texts(batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let col = column(batch, name, &DataType::Utf8)?;
    let col = col.as_string::<i32>();
    Ok((0..col.len())
        .map(|i| {
            if col.is_valid(i) {
                col.value(i).to_string()
            } else {
                "(none)".into()
            }
        })
        .collect())
}

fn counts(batch: &RecordBatch, row: usize) -> Result<Counts> {
    let int = |n| ints(batch, n).map(|v| v.get(row).copied().unwrap_or(0));
    let float = |n| floats(batch, n).map(|v| v.get(row).copied().flatten());
    Ok(Counts {
        tp: int("tp")?,
        fp: int("fp")?,
        r#fn: int("fn")?,
        tn: if batch.column_by_name("tn").is_some() {
            int("tn")?
        } else {
            0
        },
        precision: float("precision")?,
        recall: float("recall")?,
        f1: float("f1")?,
    })
}

fn breakdown(batches: &[RecordBatch], key: &str) -> Result<BTreeMap<String, Breakdown>> {
    let mut out = BTreeMap::new();
    for b in batches {
        let (keys, events, detected) = (texts(b, key)?, ints(b, "events")?, ints(b, "detected")?);
        for (i, k) in keys.into_iter().enumerate() {
            out.insert(
                k,
                Breakdown {
                    point: counts(b, i)?,
                    events: events[i],
                    detected: detected[i],
                },
            );
        }
    }
    Ok(out)
}

/// Evaluates the score output at `out`.
pub async fn evaluate(out: &Location) -> Result<EvalReport> {
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
    tads_sql::register_dataset(&ctx, "scored", &out.sub("scored")).await?;
    tads_sql::register_dataset(&ctx, "alerts", &out.sub("alerts")).await?;
    let schema = ctx.table("scored").await?.schema().as_arrow().clone();
    let missing: Vec<&str> = LABELS
        .iter()
        .chain(["ts", "host_id", "region", "project_id"].iter())
        .copied()
        .filter(|c| schema.field_with_name(c).is_err())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Input(format!(
            "--scored {out}: the scored rows have no column {}; eval needs the labels of generated data (is_anomaly, anomaly_type, anomaly_id) and ts, host_id, region, project_id",
            missing.join(", ")
        )));
    }
    let mut results: BTreeMap<&str, Vec<RecordBatch>> = BTreeMap::new();
    for (name, sql) in QUERIES {
        let batches = ctx
            .sql(sql)
            .await
            .map_err(|e| Error::Data(format!("sql/eval/{name}.sql: {}", e.strip_backtrace())))?
            .collect()
            .await?;
        results.insert(name, batches);
    }
    let first = |name: &str| -> Result<RecordBatch> {
        results
            .get(name)
            .and_then(|b| b.iter().find(|b| b.num_rows() > 0))
            .cloned()
            .ok_or_else(|| Error::Data(format!("sql/eval/{name}.sql: no result row")))
    };
    let mut events = BTreeMap::new();
    for b in &results["events"] {
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
    let fa = first("false_alerts")?;
    Ok(EvalReport {
        run_id: manifest.run_id,
        model: manifest.model.name,
        point: counts(&first("point")?, 0)?,
        point_adjusted: counts(&first("point_adjusted")?, 0)?,
        events,
        alerts: ints(&fa, "alerts")?[0],
        false_alerts: ints(&fa, "false_alerts")?[0],
        host_days: ints(&fa, "host_days")?[0],
        false_alerts_per_100_host_days: floats(&fa, "false_alerts_per_100_host_days")?[0]
            .unwrap_or(0.0),
        by_region: breakdown(&results["by_region"], "region")?,
        by_project: breakdown(&results["by_project"], "project_id")?,
    })
}
