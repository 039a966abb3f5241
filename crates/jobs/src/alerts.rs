//! The alerts of a score run.
//!
//! One SQL plan reads the key, the time and the metrics, computes the fused score
//! (`anomaly_score`) and the top metric where the score could matter, hash-partitions the rows
//! by key and sorts each partition by key and time; DataFusion's sort spills to disk beyond its
//! memory pool, so the dataset never has to fit in memory. Each partition's sorted stream then
//! runs, in a task of its own, through one [`AlertMachine`] per key — the same machine as the
//! `alert_state` window function, so SQL and the job agree — and each alert is kept as an
//! interval. `alert_state` itself is not used here because DataFusion evaluates a window
//! function over whole partitions that it holds in memory (the plan's `row_number()` streams).
//!
//! The scored rows later get their `alert_id` from these intervals ([`Alerts::id_of`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray, UInt64Array, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tads_model::{AlertMachine, Cooldown, Event, Severity, Step};
use tads_store::Progress;

use crate::config::AlertRules;
use crate::{Error, Result, ident};

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
        let keys = strings(keys)?;
        let times = micros(times)?;
        let mut out = StringBuilder::new();
        // Rows come in runs of one key: look a key's alerts up once per run, not once per row.
        let mut last: Option<(&str, Option<&Spans>)> = None;
        for i in 0..keys.len() {
            if keys.is_null(i) || times.is_null(i) {
                out.append_null();
                continue;
            }
            let key = keys.value(i);
            let spans = match last {
                Some((k, spans)) if k == key => spans,
                _ => {
                    let spans = self.index.get(key);
                    last = Some((key, spans));
                    spans
                }
            };
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
fn strings(a: &ArrayRef) -> Result<StringArray> {
    Ok(cast(a, &DataType::Utf8)
        .map_err(|e| Error::Data(format!("alerts: key column: {e}")))?
        .as_string::<i32>()
        .clone())
}

/// Any timestamp or date array as microseconds since the epoch.
fn micros(a: &ArrayRef) -> Result<TimestampMicrosecondArray> {
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

/// What [`find`] needs to know about the data and the model.
pub(crate) struct AlertQuery<'a> {
    /// The registered table with every row to score.
    pub table: &'a str,
    /// The SQL expression naming each row's model.
    pub model_sql: &'a str,
    /// The model's display name (for alert ids).
    pub model_name: &'a str,
    /// The quoted metric columns, comma-separated.
    pub metrics: &'a str,
    /// ` WHERE …` (the shard), or empty.
    pub filter: &'a str,
    /// Whether the data has `region` and `project_id` columns.
    pub region: bool,
    /// See `region`.
    pub project: bool,
}

/// One row held while a run of high scores may still become an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Held {
    ts: i64,
    score: Option<f64>,
    top: Option<String>,
}

/// An alert being built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Building {
    start_ts: i64,
    opened_ts: i64,
    end_ts: i64,
    points: u64,
    peak: f64,
    tops: BTreeMap<String, u64>,
    region: Option<String>,
    project: Option<String>,
}

impl Building {
    fn add(&mut self, ts: i64, score: Option<f64>, top: Option<&str>) {
        self.end_ts = ts;
        self.points += 1;
        if let Some(s) = score.filter(|s| !s.is_nan()) {
            self.peak = self.peak.max(s);
        }
        if let Some(t) = top {
            *self.tops.entry(t.to_string()).or_default() += 1;
        }
    }

    fn finish(self, key: &str, model: &str, severity: &Severity, open: bool) -> Alert {
        let mut tops: Vec<(String, u64)> = self.tops.into_iter().collect();
        tops.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let start = DateTime::from_timestamp_micros(self.start_ts).map_or_else(
            || self.start_ts.to_string(),
            |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        );
        Alert {
            alert_id: format!("{model}/{key}/{start}"),
            host_id: key.to_string(),
            region: self.region,
            project_id: self.project,
            start_ts: self.start_ts,
            end_ts: self.end_ts,
            opened_ts: self.opened_ts,
            points: self.points,
            peak_score: self.peak,
            severity: severity.of(self.peak),
            top_metrics: tops.into_iter().take(3).map(|(m, _)| m).collect(),
            open,
        }
    }
}

/// Where one key's walk through its rows stands between two rows: its alert machine, the rows
/// of a run that may still open an alert, and the alert being built. `tads watch` carries it
/// from one round of files to the next (in its checkpoint), so that an alert may open in one
/// file and close in a later one exactly as if all the rows were walked at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    machine: AlertMachine,
    held: Vec<Held>,
    open: Option<Building>,
}

impl KeyState {
    /// Whether an alert is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The open alert's first row's time (microseconds), if one is open.
    pub fn open_start(&self) -> Option<i64> {
        self.open.as_ref().map(|b| b.start_ts)
    }
}

/// Every key's [`KeyState`] after the rows walked so far.
pub type Carried = BTreeMap<String, KeyState>;

/// One key's walk through its rows.
struct Series {
    key: String,
    state: KeyState,
}

impl Series {
    fn new(key: &str, carried: Option<&Carried>) -> Self {
        Self {
            key: key.to_string(),
            state: carried
                .and_then(|c| c.get(key))
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// Runs the alert pass.
///
/// The plan numbers each key's rows in time order (`row_number() OVER (PARTITION BY key ORDER
/// BY time)`), which makes DataFusion hash-partition the rows by key and sort each partition by
/// key and time, spilling as needed. Every key's rows are then in one partition, in order, so
/// the partitions are walked in parallel, one task each; their alerts are merged in key and
/// time order.
///
/// When the sort runs out of memory it could not spill (DataFusion's merge of spilled runs
/// cannot spill, and the partitions share the pool), the pass runs again in one partition,
/// which then has the whole pool: the job never fails for lack of memory it could spill.
///
/// With `carried` (a round of `tads watch`), each key's walk starts where the previous round
/// left it, an alert still open at a key's last row is listed as open, and every key's state at
/// the end is returned, also of keys without rows here.
pub(crate) async fn find(
    ctx: &SessionContext,
    q: &AlertQuery<'_>,
    rules: &AlertRules,
    severity: &Severity,
    carried: Option<Arc<Carried>>,
    progress: Arc<dyn Progress>,
) -> Result<(Alerts, Option<Carried>)> {
    let partitions = ctx.copied_config().target_partitions();
    match find_in(
        ctx,
        q,
        rules,
        severity,
        carried.clone(),
        Arc::clone(&progress),
    )
    .await
    {
        Err(Error::DataFusion(e)) if partitions > 1 && e.contains("Resources exhausted") => {
            eprintln!(
                "note: the alert pass ran out of memory in {partitions} partitions ({e}); \
                 running it again in one partition (or give --memory more)"
            );
            progress.phase("finding alerts (one partition)");
            let mut state = ctx.state();
            state.config_mut().options_mut().execution.target_partitions = 1;
            let single = SessionContext::new_with_state(state);
            find_in(&single, q, rules, severity, carried, progress).await
        }
        other => other,
    }
}

/// [`find`] in the partitions of `ctx`.
async fn find_in(
    ctx: &SessionContext,
    q: &AlertQuery<'_>,
    rules: &AlertRules,
    severity: &Severity,
    carried: Option<Arc<Carried>>,
    progress: Arc<dyn Progress>,
) -> Result<(Alerts, Option<Carried>)> {
    let (m, x) = (q.model_sql, q.metrics);
    let score = format!("anomaly_score({m}, {x})");
    // The top metric, region and project are read only at rows that can be inside an alert
    // (region and project at the row that opens one, whose score is at or above enter, so above
    // exit): carrying them only on such rows keeps the sort's rows small. DataFusion evaluates
    // the repeated condition once per row.
    let hot = |value: &str, alias: &str| {
        format!(
            ", CASE WHEN {score} >= {exit} THEN {value} END AS {alias}",
            exit = rules.exit
        )
    };
    let mut select = format!(
        "SELECT CAST({key} AS VARCHAR) AS __k, {time} AS __t, {score} AS __s",
        key = ident(&rules.key),
        time = ident(&rules.time),
    );
    select.push_str(&hot(&format!("pca_top_metric({m}, {x})"), "__top"));
    for (wanted, column, alias) in [
        (q.region, "region", "__region"),
        (q.project, "project_id", "__project"),
    ] {
        if wanted {
            select.push_str(&hot(&format!("CAST({column} AS VARCHAR)"), alias));
        }
    }
    let sql = format!(
        "SELECT *, row_number() OVER (PARTITION BY __k ORDER BY __t) AS __n \
         FROM ({select} FROM {}{})",
        q.table, q.filter
    );
    let streams = ctx.sql(&sql).await?.execute_stream_partitioned().await?;
    let walk = Arc::new(Walk {
        model_name: q.model_name.to_string(),
        rules: rules.clone(),
        severity: *severity,
        cooldown: rules.cooldown.resolve().map_err(Error::Input)?,
        region: q.region,
        project: q.project,
        carried: carried.clone(),
    });
    // A JoinSet aborts the other walks when one fails and this returns early.
    let mut tasks = tokio::task::JoinSet::new();
    for stream in streams {
        let (walk, progress) = (Arc::clone(&walk), Arc::clone(&progress));
        tasks.spawn(async move { walk.run(stream, progress.as_ref()).await });
    }
    let mut list = Vec::new();
    // Keys without rows here keep their state.
    let mut ends = carried.map(|c| c.as_ref().clone());
    while let Some(done) = tasks.join_next().await {
        let (found, states) =
            done.map_err(|e| Error::Data(format!("an alert task failed: {e}")))??;
        list.extend(found);
        if let Some(ends) = ends.as_mut() {
            ends.extend(states);
        }
    }
    // Each partition's alerts are in key and time order; so is the whole list once merged.
    list.sort_by(|a: &Alert, b: &Alert| {
        (a.host_id.as_str(), a.start_ts).cmp(&(b.host_id.as_str(), b.start_ts))
    });
    let mut alerts = Alerts::default();
    for alert in list {
        alerts.push(alert);
    }
    Ok((alerts, ends))
}

/// What walking one partition of the alert pass needs.
struct Walk {
    model_name: String,
    rules: AlertRules,
    severity: Severity,
    cooldown: Cooldown,
    region: bool,
    project: bool,
    /// Each key's state from the previous round (`tads watch`).
    carried: Option<Arc<Carried>>,
}

impl Walk {
    /// Runs one partition's rows, sorted by key and time with every key's rows in it, through
    /// one [`AlertMachine`] per key. Returns the alerts and, when carrying state, each key's
    /// state after its last row.
    async fn run(
        &self,
        mut stream: datafusion::execution::SendableRecordBatchStream,
        progress: &dyn Progress,
    ) -> Result<(Vec<Alert>, Carried)> {
        let (rules, severity, cooldown) = (&self.rules, &self.severity, self.cooldown);
        let mut alerts: Vec<Alert> = Vec::new();
        let mut ends = Carried::new();
        let mut series: Option<Series> = None;
        let closed = |s: &mut Series, alerts: &mut Vec<Alert>| {
            if let Some(b) = s.state.open.take() {
                alerts.push(b.finish(&s.key, &self.model_name, severity, false));
            }
        };
        // A key's last row: an alert still open is listed as open; carried, it goes on.
        let end = |mut s: Series, alerts: &mut Vec<Alert>, ends: &mut Carried| {
            let open = if self.carried.is_some() {
                s.state.open.clone()
            } else {
                s.state.open.take()
            };
            if let Some(b) = open {
                alerts.push(b.finish(&s.key, &self.model_name, severity, true));
            }
            if self.carried.is_some() {
                ends.insert(s.key, s.state);
            }
        };
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let n = batch.num_rows();
            let keys = strings(batch.column(0))?;
            let times = micros(batch.column(1))?;
            let scores = batch.column(2).as_primitive::<Float64Type>().clone();
            let tops = strings(batch.column(3))?;
            let region = self.region.then(|| strings(batch.column(4))).transpose()?;
            let project = self
                .project
                .then(|| strings(batch.column(4 + usize::from(self.region))))
                .transpose()?;
            let text = |a: &Option<StringArray>, i: usize| {
                a.as_ref()
                    .filter(|a| a.is_valid(i))
                    .map(|a| a.value(i).to_string())
            };
            for i in 0..n {
                if keys.is_null(i) || times.is_null(i) {
                    continue;
                }
                let key = keys.value(i);
                if series.as_ref().is_none_or(|s| s.key != key) {
                    if let Some(s) = series.take() {
                        end(s, &mut alerts, &mut ends);
                    }
                    series = Some(Series::new(key, self.carried.as_deref()));
                }
                let Some(Series { state: s, .. }) = series.as_mut() else {
                    continue;
                };
                let ts = times.value(i);
                let score = scores.is_valid(i).then(|| scores.value(i));
                let top = tops.is_valid(i).then(|| tops.value(i));
                if !s.machine.is_open() {
                    s.held.push(Held {
                        ts,
                        score,
                        top: top.map(str::to_string),
                    });
                }
                let event = s.machine.push(Step {
                    score,
                    enter: Some(rules.enter),
                    exit: Some(rules.exit),
                    min_points: rules.min_points,
                    instant: Some(rules.instant),
                    cooldown: Some(cooldown),
                    ts: Some(ts),
                });
                match event {
                    Event::Opened { back, .. } => {
                        let from = s.held.len() - 1 - back as usize;
                        let mut b = Building {
                            start_ts: s.held[from].ts,
                            opened_ts: ts,
                            end_ts: ts,
                            points: 0,
                            peak: f64::NEG_INFINITY,
                            tops: BTreeMap::new(),
                            region: text(&region, i),
                            project: text(&project, i),
                        };
                        for h in s.held.drain(..).skip(from) {
                            b.add(h.ts, h.score, h.top.as_deref());
                        }
                        s.open = Some(b);
                    }
                    Event::Inside { .. } => {
                        if let Some(b) = s.open.as_mut() {
                            b.add(ts, score, top);
                        }
                    }
                    Event::Closed { .. } => {
                        if let Some(series) = series.as_mut() {
                            closed(series, &mut alerts);
                            series.state.held.clear();
                        }
                    }
                    Event::Outside => {
                        let keep = s.machine.pending_rows() as usize;
                        let drop = s.held.len().saturating_sub(keep);
                        s.held.drain(..drop);
                    }
                }
            }
            progress.rows(n as u64);
        }
        if let Some(s) = series.take() {
            end(s, &mut alerts, &mut ends);
        }
        Ok((alerts, ends))
    }
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
