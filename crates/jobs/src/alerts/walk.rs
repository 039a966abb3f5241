//! The walk of the alert pass: each key's rows in time order through one [`AlertMachine`],
//! the alerts it builds, and the state a key's walk carries from one round of `tads watch` to
//! the next ([`KeyState`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tads_model::{
    AdaptState, Adaptive, AlertMachine, Cooldown, Event, Hold, Severity, Step, push_adaptive,
};
use tads_store::Progress;

use super::{Alert, Alerts, micros, strings};
use crate::config::AlertRules;
use crate::drift::runs::Keys;
use crate::{Error, Result, ident};

/// What [`find`] needs to know about the data and the model.
pub(crate) struct AlertQuery<'a> {
    /// The registered table with every row to score.
    pub table: &'a str,
    /// The SQL expression naming each row's model.
    pub model_sql: &'a str,
    /// The model's display name (for alert ids).
    pub model_name: &'a str,
    /// The metrics as the model reads them, comma-separated: the quoted columns, or
    /// expressions of them (a drift baseline shifts each by its key's level).
    pub metrics: &'a str,
    /// The model's features: the columns whose values an alert reports at its peak.
    pub features: &'a [String],
    /// ` WHERE …` (the shard), or empty.
    pub filter: &'a str,
    /// Whether the data has `region` and `project_id` columns.
    pub region: bool,
    /// See `region`.
    pub project: bool,
}

/// One row kept aside: of a run of high scores that may still become an alert, or held after
/// an alert's dip by `alerts.hold_rows` until a later row shows whether it belongs to the alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Held {
    ts: i64,
    score: Option<f64>,
    top: Option<String>,
    /// The top metric's value and its gap to what the model expected (absent in a
    /// checkpoint written before they were kept).
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    gap: Option<f64>,
}

impl Held {
    fn of(r: &Row<'_>) -> Self {
        Self {
            ts: r.ts,
            score: r.score,
            top: r.top.map(str::to_string),
            value: r.value,
            gap: r.gap,
        }
    }

    fn row(&self) -> Row<'_> {
        Row {
            ts: self.ts,
            score: self.score,
            top: self.top.as_deref(),
            value: self.value,
            gap: self.gap,
        }
    }
}

/// An alert's top metric at its peak row: what was seen against what the model expected
/// (the row's reconstruction from the other metrics, `pca_top_deviation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtPeak {
    /// The peak row's top metric.
    pub metric: String,
    /// What the model expected of it.
    pub expected: f64,
    /// What was seen.
    pub actual: f64,
}

/// What one row gives an alert.
struct Row<'a> {
    ts: i64,
    score: Option<f64>,
    top: Option<&'a str>,
    value: Option<f64>,
    gap: Option<f64>,
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
    /// The top metric at the first row with the peak score, where the model gave it.
    #[serde(default)]
    at_peak: Option<AtPeak>,
    /// Rows held by `alerts.hold_rows` since the last row: the alert's if a run that would
    /// open a new alert reopens it before the hold ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    held: Vec<Held>,
}

impl Building {
    fn add(&mut self, r: Row<'_>) {
        self.end_ts = r.ts;
        self.points += 1;
        if let Some(s) = r.score.filter(|s| !s.is_nan()) {
            if s > self.peak {
                self.at_peak = match (r.top, r.value, r.gap) {
                    (Some(metric), Some(actual), Some(gap)) => Some(AtPeak {
                        metric: metric.to_string(),
                        expected: actual - gap,
                        actual,
                    }),
                    _ => None,
                };
            }
            self.peak = self.peak.max(s);
        }
        if let Some(t) = r.top {
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
            at_peak: self.at_peak,
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
    /// The adaptive threshold's days (`alerts.adaptive`).
    #[serde(default)]
    adapt: AdaptState,
    held: Vec<Held>,
    open: Option<Building>,
}

impl KeyState {
    /// Whether an alert is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The time of the first row whose alert is not known yet: held while a run of high scores
    /// may still open an alert, or held by the hold while an alert may still bridge it.
    pub(crate) fn first_held(&self) -> Option<i64> {
        self.held
            .first()
            .or_else(|| self.open.as_ref().and_then(|b| b.held.first()))
            .map(|h| h.ts)
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
            settle(ctx).await;
            let mut state = ctx.state();
            state.config_mut().options_mut().execution.target_partitions = 1;
            let single = SessionContext::new_with_state(state);
            find_in(&single, q, rules, severity, carried, progress).await
        }
        other => other,
    }
}

/// Waits (up to 2 s) until nothing holds memory of `ctx`'s pool: the tasks of a failed attempt
/// end as its streams drop, but only once the runtime gets to them, and until then their
/// reservations would leave the single partition of the retry short of the pool.
async fn settle(ctx: &SessionContext) {
    let pool = Arc::clone(&ctx.runtime_env().memory_pool);
    for _ in 0..100 {
        if pool.reserved() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
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
    let sql = format!(
        "SELECT *, row_number() OVER (PARTITION BY __k ORDER BY __t) AS __n \
         FROM ({} FROM {}{})",
        select(q, rules, true),
        q.table,
        q.filter
    );
    let streams = ctx.sql(&sql).await?.execute_stream_partitioned().await?;
    let walk = Arc::new(Walk::new(q, rules, severity, carried.clone())?);
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
    Ok((Alerts::from_list(list), ends))
}

/// The columns the walk reads, without `FROM`: the key, the time, the fused score, and at rows
/// that can be inside an alert the top metric, region and project.
///
/// `key_as_text`: the key cast to text, as the sort wants it (partitioning and sorting by a
/// dictionary key was slower); the walk over files in time order takes the key column as it is
/// and finds each row's state by its dictionary code.
pub(super) fn select(q: &AlertQuery<'_>, rules: &AlertRules, key_as_text: bool) -> String {
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
    let key = match key_as_text {
        true => format!("CAST({} AS VARCHAR)", ident(&rules.key)),
        false => ident(&rules.key),
    };
    let mut select = format!(
        "SELECT {key} AS __k, {time} AS __t, {score} AS __s",
        time = ident(&rules.time),
    );
    // The top metric at rows that can be inside an alert; at rows that can be an alert's peak
    // (at or above enter), one text `metric<US>value<US>gap`: also the metric's own value (read
    // from its column: the model may read it shifted) and its gap to what the model expected.
    // One string column, NULL elsewhere, so that the sort's rows grow only where they must.
    let top = format!("anomaly_top_metric({m}, {x})");
    let value = q
        .features
        .iter()
        .map(|f| {
            format!(
                " WHEN '{}' THEN CAST({} AS DOUBLE)",
                f.replace('\'', "''"),
                ident(f)
            )
        })
        .collect::<String>();
    let packed = format!(
        "concat({top}, '{SEP}', CAST(CASE {top}{value} END AS VARCHAR), '{SEP}', \
         CAST(anomaly_top_deviation({m}, {x}) AS VARCHAR))"
    );
    select.push_str(&format!(
        ", CASE WHEN {score} >= {enter} THEN {packed} WHEN {score} >= {exit} THEN {top} END AS __top",
        enter = rules.enter,
        exit = rules.exit
    ));
    for (wanted, column, alias) in [
        (q.region, "region", "__region"),
        (q.project, "project_id", "__project"),
    ] {
        if wanted {
            select.push_str(&hot(&format!("CAST({column} AS VARCHAR)"), alias));
        }
    }
    select
}

/// What walking one partition of the alert pass needs.
pub(crate) struct Walk {
    model_name: String,
    rules: AlertRules,
    severity: Severity,
    cooldown: Cooldown,
    adaptive: Option<Adaptive>,
    hold: Option<Hold>,
    region: bool,
    project: bool,
    /// Each key's state from the previous round (`tads watch`).
    carried: Option<Arc<Carried>>,
}

/// The separator of the hot rows' packed text (ASCII unit separator).
pub(crate) const SEP: char = '\u{1f}';

/// `metric<SEP>value<SEP>gap` as its parts (an empty part as `None`; the metric's name may
/// itself hold the separator, the numbers cannot).
fn unpack(packed: &str) -> (Option<&str>, Option<f64>, Option<f64>) {
    let mut parts = packed.rsplitn(3, SEP);
    let gap = parts.next().and_then(|g| g.parse().ok());
    let value = parts.next().and_then(|v| v.parse().ok());
    match parts.next() {
        // Not packed (a row below enter): the whole text is the metric.
        None => (Some(packed).filter(|m| !m.is_empty()), None, None),
        metric => (metric.filter(|m| !m.is_empty()), value, gap),
    }
}

/// The columns of one batch of the alert pass's plan.
pub(crate) struct Cols {
    pub(super) keys: Keys,
    pub(super) times: datafusion::arrow::array::TimestampMicrosecondArray,
    scores: datafusion::arrow::array::Float64Array,
    tops: StringArray,
    region: Option<StringArray>,
    project: Option<StringArray>,
}

impl Cols {
    /// A batch's columns as the walk reads them: each row's key, time and fused score; at rows
    /// that can be inside an alert the packed top metric (see [`select`]), and the region and
    /// project (read at the row that opens one).
    pub(crate) fn from_parts(
        keys: Keys,
        times: datafusion::arrow::array::TimestampMicrosecondArray,
        scores: datafusion::arrow::array::Float64Array,
        tops: StringArray,
        region: Option<StringArray>,
        project: Option<StringArray>,
    ) -> Self {
        Self {
            keys,
            times,
            scores,
            tops,
            region,
            project,
        }
    }

    pub(super) fn of(
        batch: &datafusion::arrow::array::RecordBatch,
        region: bool,
        project: bool,
    ) -> Result<Self> {
        Ok(Self {
            keys: Keys::new(batch.column(0))
                .map_err(|e| Error::Data(format!("alerts: key column: {e}")))?,
            times: micros(batch.column(1))?,
            scores: batch.column(2).as_primitive::<Float64Type>().clone(),
            tops: strings(batch.column(3))?,
            region: region.then(|| strings(batch.column(4))).transpose()?,
            project: project
                .then(|| strings(batch.column(4 + usize::from(region))))
                .transpose()?,
        })
    }

    /// The batch's latest time.
    pub(crate) fn latest(&self) -> Option<i64> {
        datafusion::arrow::compute::max(&self.times)
    }

    /// Row `i`'s key, if it has a key and a time.
    pub(super) fn key(&self, i: usize) -> Option<&str> {
        (!self.keys.is_null(i) && self.times.is_valid(i)).then(|| self.keys.text(i))
    }

    /// What row `i` gives an alert.
    fn row(&self, i: usize) -> Row<'_> {
        let packed = self.tops.is_valid(i).then(|| self.tops.value(i));
        let (top, value, gap) = packed.map_or((None, None, None), unpack);
        Row {
            ts: self.times.value(i),
            score: self.scores.is_valid(i).then(|| self.scores.value(i)),
            top,
            value,
            gap,
        }
    }

    fn text(a: &Option<StringArray>, i: usize) -> Option<String> {
        a.as_ref()
            .filter(|a| a.is_valid(i))
            .map(|a| a.value(i).to_string())
    }
}

impl Walk {
    pub(crate) fn new(
        q: &AlertQuery<'_>,
        rules: &AlertRules,
        severity: &Severity,
        carried: Option<Arc<Carried>>,
    ) -> Result<Self> {
        Ok(Self {
            model_name: q.model_name.to_string(),
            rules: rules.clone(),
            severity: *severity,
            cooldown: rules.cooldown.resolve().map_err(Error::Input)?,
            adaptive: rules.adaptive(),
            hold: rules.hold(),
            region: q.region,
            project: q.project,
            carried,
        })
    }

    /// Feeds row `i` of `c` to the walk of `key`, whose state is `s`; an alert it closes goes
    /// to `alerts`.
    pub(super) fn step(
        &self,
        key: &str,
        s: &mut KeyState,
        c: &Cols,
        i: usize,
        alerts: &mut Vec<Alert>,
    ) {
        let rules = &self.rules;
        let row = c.row(i);
        let (ts, score) = (row.ts, row.score);
        if !s.machine.is_open() {
            s.held.push(Held::of(&row));
        }
        let step = Step {
            score,
            enter: Some(rules.enter),
            exit: Some(rules.exit),
            min_points: rules.min_points,
            instant: Some(rules.instant),
            cooldown: Some(self.cooldown),
            ts: Some(ts),
            hold: self.hold,
        };
        let event = push_adaptive(&mut s.machine, &mut s.adapt, self.adaptive.as_ref(), step);
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
                    region: Cols::text(&c.region, i),
                    project: Cols::text(&c.project, i),
                    at_peak: None,
                    held: Vec::new(),
                };
                for h in s.held.drain(..).skip(from) {
                    b.add(h.row());
                }
                s.open = Some(b);
            }
            Event::Inside { .. } => {
                if let Some(b) = s.open.as_mut() {
                    // The rows held since the previous one are the alert's too.
                    for h in std::mem::take(&mut b.held) {
                        b.add(h.row());
                    }
                    b.add(row);
                }
            }
            Event::Held { .. } => {
                if let Some(b) = s.open.as_mut() {
                    b.held.push(Held::of(&row));
                }
            }
            Event::Closed { .. } => {
                if let Some(b) = s.open.take() {
                    alerts.push(b.finish(key, &self.model_name, &self.severity, false));
                }
                s.held.clear();
            }
            Event::Outside => {
                let keep = s.machine.pending_rows() as usize;
                let drop = s.held.len().saturating_sub(keep);
                s.held.drain(..drop);
            }
        }
    }

    /// The alert open on `key` as it stands (its end the last row walked), if one is open.
    pub(super) fn open_alert(&self, key: &str, s: &KeyState) -> Option<Alert> {
        s.open
            .clone()
            .map(|b| b.finish(key, &self.model_name, &self.severity, true))
    }

    /// A key's last row: an alert still open is listed as open; when carrying state, it goes
    /// on (and the state is kept in `ends`).
    pub(super) fn end(
        &self,
        key: String,
        mut s: KeyState,
        alerts: &mut Vec<Alert>,
        ends: &mut Carried,
    ) {
        let open = if self.carried.is_some() {
            s.open.clone()
        } else {
            s.open.take()
        };
        if let Some(b) = open {
            alerts.push(b.finish(&key, &self.model_name, &self.severity, true));
        }
        if self.carried.is_some() {
            ends.insert(key, s);
        }
    }

    /// Runs one partition's rows, sorted by key and time with every key's rows in it, through
    /// one [`AlertMachine`] per key. Returns the alerts and, when carrying state, each key's
    /// state after its last row.
    async fn run(
        &self,
        mut stream: datafusion::execution::SendableRecordBatchStream,
        progress: &dyn Progress,
    ) -> Result<(Vec<Alert>, Carried)> {
        let mut alerts: Vec<Alert> = Vec::new();
        let mut ends = Carried::new();
        let mut series: Option<Series> = None;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let c = Cols::of(&batch, self.region, self.project)?;
            for i in 0..batch.num_rows() {
                let Some(key) = c.key(i) else { continue };
                if series.as_ref().is_none_or(|s| s.key != key) {
                    if let Some(s) = series.take() {
                        self.end(s.key, s.state, &mut alerts, &mut ends);
                    }
                    series = Some(Series::new(key, self.carried.as_deref()));
                }
                if let Some(s) = series.as_mut() {
                    self.step(key, &mut s.state, &c, i, &mut alerts);
                }
            }
            progress.rows(batch.num_rows() as u64);
        }
        if let Some(s) = series.take() {
            self.end(s.key, s.state, &mut alerts, &mut ends);
        }
        Ok((alerts, ends))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_held_after_a_dip_are_not_known_yet() {
        // An open alert whose last rows the hold keeps after a dip: until a later run bridges
        // them or the alert closes, their alert is not known, so the walk over files in time
        // order must not write them yet.
        let held = |ts| Held {
            ts,
            score: Some(0.1),
            top: None,
            value: None,
            gap: None,
        };
        let mut s = KeyState {
            machine: AlertMachine::new(),
            adapt: AdaptState::default(),
            held: Vec::new(),
            open: Some(Building {
                start_ts: 0,
                opened_ts: 0,
                end_ts: 10,
                points: 2,
                peak: 3.0,
                tops: BTreeMap::new(),
                region: None,
                project: None,
                at_peak: None,
                held: vec![held(20), held(30)],
            }),
        };
        assert_eq!(s.first_held(), Some(20));
        s.open.as_mut().unwrap().held.clear();
        assert_eq!(s.first_held(), None);
        s.held.push(held(40));
        assert_eq!(s.first_held(), Some(40));
    }

    #[test]
    fn packed_hot_rows_unpack_into_metric_value_and_gap() {
        let p = |parts: [&str; 3]| parts.join(&SEP.to_string());
        assert_eq!(
            unpack(&p(["cpu_pct", "97.5", "56.25"])),
            (Some("cpu_pct"), Some(97.5), Some(56.25))
        );
        let odd = format!("a{SEP}b");
        assert_eq!(
            unpack(&p([&odd, "-1e-7", "2"])),
            (Some(odd.as_str()), Some(-1e-7), Some(2.0))
        );
        // NULL parts (no top metric where the SPE is 0) are empty.
        assert_eq!(unpack(&p(["", "", ""])), (None, None, None));
        assert_eq!(unpack(&p(["m", "", ""])), (Some("m"), None, None));
        // Below enter only the metric is sent.
        assert_eq!(unpack("mem_pct"), (Some("mem_pct"), None, None));
    }
}
