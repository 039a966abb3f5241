//! The alerts of a score run.
//!
//! One SQL plan reads the key, the time and the metrics, computes the fused score
//! (`anomaly_score`) and the top metric where the score could matter, hash-partitions the rows
//! by key and sorts each partition by key and time; DataFusion's sort spills to disk beyond its
//! memory pool, so the dataset never has to fit in memory. Each partition's sorted stream then
//! runs, in a task of its own, through one [`tads_model::AlertMachine`] per key — the same machine as the
//! `alert_state` window function, so SQL and the job agree — and each alert is kept as an
//! interval. `alert_state` itself is not used here because DataFusion evaluates a window
//! function over whole partitions that it holds in memory (the plan's `row_number()` streams).
//!
//! The scored rows later get their `alert_id` from these intervals ([`Alerts::id_of`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray, UInt64Array, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use serde::{Deserialize, Serialize};

use crate::config::AlertRules;
use crate::{Error, Result};

pub(crate) mod ordered;
mod walk;

pub(crate) use walk::{AlertQuery, Cols, SEP, Walk, find};
pub use walk::{AtPeak, Carried, KeyState};

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `<model>/<key>/<start time, RFC 3339>`: the same alert gets the same id in every run.
    pub alert_id: String,
    /// The series' key (the host).
    pub host_id: String,
    /// The host's region, when the data has a `region` column.
    pub region: Option<String>,
    /// The host's project, when the data has a `project_id` column.
    pub project_id: Option<String>,
    /// The first row's time, microseconds since the epoch (UTC).
    pub start_ts: i64,
    /// The last row's time.
    pub end_ts: i64,
    /// When the alert was raised: the time of its `min_points`-th row at or above `enter`
    /// (its rows from `start_ts` on belong to it, but no one could know before this row).
    pub opened_ts: i64,
    /// Rows in the alert.
    pub points: u64,
    /// The largest fused score in it.
    pub peak_score: f64,
    /// `info`, `warning` or `critical`, from the peak.
    pub severity: &'static str,
    /// The metrics that were the top metric most often over the alert, most often first (at
    /// most three).
    pub top_metrics: Vec<String>,
    /// The top metric at the alert's peak: expected against actual, where the model gave it.
    pub at_peak: Option<AtPeak>,
    /// Still open at the series' last row: the data ends inside it.
    pub open: bool,
}

/// How many alerts of each severity, and by top metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertSummary {
    /// Alerts in all.
    pub count: u64,
    /// The alerts file, below the output root.
    pub path: String,
    /// Alerts per severity.
    pub by_severity: BTreeMap<String, u64>,
    /// Alerts per first top metric, then per severity.
    pub by_top_metric: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One key's alerts as (start, end, index into the list), in time order.
type Spans = Vec<(i64, i64, usize)>;

/// The alerts of a run, and an index from key and time to alert.
#[derive(Debug, Default)]
pub struct Alerts {
    /// Every alert, in key and time order.
    pub list: Vec<Alert>,
    /// Per key: (start, end, index into `list`), in time order.
    index: HashMap<String, Spans>,
}

impl Alerts {
    /// The alerts of `list` (in any order), in key and time order with their index.
    pub(super) fn from_list(mut list: Vec<Alert>) -> Self {
        list.sort_by(|a, b| {
            (a.host_id.as_str(), a.start_ts).cmp(&(b.host_id.as_str(), b.start_ts))
        });
        let mut alerts = Self::default();
        for alert in list {
            alerts.push(alert);
        }
        alerts
    }

    fn push(&mut self, alert: Alert) {
        self.index.entry(alert.host_id.clone()).or_default().push((
            alert.start_ts,
            alert.end_ts,
            self.list.len(),
        ));
        self.list.push(alert);
    }

    /// The id of the alert of `key` that covers time `ts`, if any.
    pub fn id_of(&self, key: &str, ts: i64) -> Option<&str> {
        self.id_in(self.index.get(key)?, ts)
    }

    /// The id of the alert among one key's `spans` that covers time `ts`, if any.
    fn id_in(&self, spans: &[(i64, i64, usize)], ts: i64) -> Option<&str> {
        let at = spans.partition_point(|(start, _, _)| *start <= ts);
        let (_, end, i) = spans[..at].last()?;
        (ts <= *end).then(|| self.list[*i].alert_id.as_str())
    }

    /// An `alert_id` column for rows with these keys and times (any string and timestamp types).
    pub fn ids_for(&self, keys: &ArrayRef, times: &ArrayRef) -> Result<ArrayRef> {
        if self.list.is_empty() {
            return Ok(new_null_array(&DataType::Utf8, keys.len()));
        }
        let keys = crate::drift::runs::Keys::new(keys)
            .map_err(|e| Error::Data(format!("alerts: key column: {e}")))?;
        let times = micros(times)?;
        let mut out = StringBuilder::new();
        let mut spans_of = crate::drift::runs::PerKey::new(&keys);
        for i in 0..times.len() {
            if keys.is_null(i) || times.is_null(i) {
                out.append_null();
                continue;
            }
            let spans = spans_of.get(&keys, i, |key| self.index.get(key));
            out.append_option(spans.and_then(|s| self.id_in(s, times.value(i))));
        }
        Ok(Arc::new(out.finish()))
    }

    /// The counts by severity and by top metric.
    pub fn summary(&self, path: &str) -> AlertSummary {
        let mut s = AlertSummary {
            count: self.list.len() as u64,
            path: path.to_string(),
            ..Default::default()
        };
        for a in &self.list {
            *s.by_severity.entry(a.severity.to_string()).or_default() += 1;
            let top = a.top_metrics.first().cloned().unwrap_or_else(|| "-".into());
            *s.by_top_metric
                .entry(top)
                .or_default()
                .entry(a.severity.to_string())
                .or_default() += 1;
        }
        s
    }

    /// The schema of the alerts output.
    pub fn schema() -> SchemaRef {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("alert_id", DataType::Utf8, false),
            Field::new("host_id", DataType::Utf8, false),
            Field::new("region", DataType::Utf8, true),
            Field::new("project_id", DataType::Utf8, true),
            Field::new("start_ts", ts(), false),
            Field::new("end_ts", ts(), false),
            Field::new("opened_ts", ts(), false),
            Field::new("points", DataType::UInt64, false),
            Field::new("peak_score", DataType::Float64, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new(
                "top_metrics",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                false,
            ),
            Field::new("model", DataType::Utf8, false),
            Field::new("model_fingerprint", DataType::Utf8, false),
            Field::new("run_id", DataType::Utf8, false),
            Field::new("open", DataType::Boolean, false),
        ]))
    }

    /// The alerts as one batch of [`Alerts::schema`].
    pub fn to_batch(&self, model: &str, fingerprint: &str, run_id: &str) -> Result<RecordBatch> {
        let l = &self.list;
        let text = |f: &dyn Fn(&Alert) -> Option<&str>| -> ArrayRef {
            Arc::new(l.iter().map(f).collect::<StringArray>())
        };
        let time = |f: &dyn Fn(&Alert) -> i64| -> ArrayRef {
            Arc::new(
                TimestampMicrosecondArray::from(l.iter().map(f).collect::<Vec<i64>>())
                    .with_timezone("UTC"),
            )
        };
        let same = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; l.len()])) };
        let mut tops = ListBuilder::new(StringBuilder::new());
        for a in l {
            tops.append_value(a.top_metrics.iter().map(Some));
        }
        let tops: ArrayRef = Arc::new(tops.finish());
        let columns: Vec<ArrayRef> = vec![
            text(&|a| Some(a.alert_id.as_str())),
            text(&|a| Some(a.host_id.as_str())),
            text(&|a| a.region.as_deref()),
            text(&|a| a.project_id.as_deref()),
            time(&|a| a.start_ts),
            time(&|a| a.end_ts),
            time(&|a| a.opened_ts),
            Arc::new(l.iter().map(|a| a.points).collect::<UInt64Array>()),
            Arc::new(l.iter().map(|a| a.peak_score).collect::<Float64Array>()),
            text(&|a| Some(a.severity)),
            tops,
            same(model),
            same(fingerprint),
            same(run_id),
            Arc::new(l.iter().map(|a| Some(a.open)).collect::<BooleanArray>()),
        ];
        RecordBatch::try_new(Self::schema(), columns)
            .map_err(|e| Error::Data(format!("alerts: {e}")))
    }
}

/// Any string array as `Utf8`.
pub(super) fn strings(a: &ArrayRef) -> Result<StringArray> {
    Ok(cast(a, &DataType::Utf8)
        .map_err(|e| Error::Data(format!("alerts: key column: {e}")))?
        .as_string::<i32>()
        .clone())
}

/// Any timestamp or date array as microseconds since the epoch.
pub(crate) fn micros(a: &ArrayRef) -> Result<TimestampMicrosecondArray> {
    Ok(cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))
        .map_err(|e| Error::Data(format!("alerts: time column: {e}")))?
        .as_primitive::<TimestampMicrosecondType>()
        .clone())
}

/// Checks that the data has the key and time columns the rules name. `hint_off`: a missing
/// column's message also says how to score without alerts.
pub(crate) fn check_columns(
    schema: &Schema,
    rules: &AlertRules,
    data: &str,
    hint_off: bool,
) -> Result<()> {
    let missing = |what: &str, name: &str| {
        let off = if hint_off {
            " or score without alerts (--no-alerts)"
        } else {
            ""
        };
        Error::Input(format!(
            "{data}: has no column `{name}` for alerts.{what}; name the series' {what} column with --set alerts.{what}=COLUMN{off}"
        ))
    };
    schema
        .field_with_name(&rules.key)
        .map_err(|_| missing("key", &rules.key))?;
    let t = schema
        .field_with_name(&rules.time)
        .map_err(|_| missing("time", &rules.time))?;
    if !matches!(
        t.data_type(),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    ) {
        return Err(Error::Input(format!(
            "{data}: alerts.time column `{}` is {}, not a timestamp",
            rules.time,
            t.data_type()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(key: &str, start: i64, end: i64, id: &str) -> Alert {
        Alert {
            alert_id: id.into(),
            host_id: key.into(),
            region: None,
            project_id: None,
            start_ts: start,
            end_ts: end,
            opened_ts: start,
            points: 1,
            peak_score: 1.0,
            severity: "info",
            top_metrics: vec![],
            at_peak: None,
            open: false,
        }
    }

    #[test]
    fn ids_come_from_the_covering_interval() {
        let mut a = Alerts::default();
        a.push(alert("h1", 10, 20, "a"));
        a.push(alert("h1", 40, 40, "b"));
        a.push(alert("h2", 0, 100, "c"));
        let at = |k, t| a.id_of(k, t);
        assert_eq!(
            [
                at("h1", 9),
                at("h1", 10),
                at("h1", 20),
                at("h1", 21),
                at("h1", 40),
                at("h1", 41)
            ],
            [None, Some("a"), Some("a"), None, Some("b"), None]
        );
        assert_eq!([at("h2", 50), at("h3", 50)], [Some("c"), None]);
    }
}
