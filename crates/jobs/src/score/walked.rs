//! `tads score` with alerts in one pass, for data whose files are in time order per key.
//!
//! Without it, the alert pass reads and scores every file to find the alerts, and the scoring
//! pass reads and scores every file again to write it with each row's alert. Here each file of
//! a chain ([`alerts::ordered::chains`]) is scored once, by the plan of the files that keep
//! their column chunks (`passthrough`), in file order: its rows are walked through the alert
//! machines, each key's state carried from file to file, and the file is written as soon as
//! every row's alert is known. A row's alert is known once no key still holds it in a run of
//! high scores that may yet open an alert, which is at the latest after the next file (or
//! when such a run ends); until then the file's scores wait in memory, so memory is bounded by
//! a few files' scores (the model's features, read for the walk, are not kept). A task of the
//! chain's own scores its files in order, a file ahead of the walk, starting a file's scan as
//! soon as the scan before it has fed the drift baseline; a walked file is written in a task of
//! its own (at most two at once). So scoring, walking and writing overlap, and a chain left
//! alone at the end of a run still keeps both cores busy.
//!
//! The walk needs a little more than the written scores at the rows that can be inside an
//! alert: the top metric's value and its gap to what the model expected where the score
//! reaches `alerts.enter` (an alert's peak), and the region and project where it reaches
//! `alerts.exit`. The gap is computed for those few rows alone, by `anomaly_top_deviation` over
//! a table of them. A key whose time goes backwards inside a file stops the pass; the run then
//! sorts and writes every file again (the files written so far are replaced).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Fields, Float64Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use tads_model::Severity;

use super::write::{Shared, UnitResult, unit_table};
use super::{SCORES_STRUCT, Unit};
use crate::alerts::ordered::ChainWalk;
use crate::alerts::{Alert, AlertQuery, Alerts, Cols, SEP, Walk, micros};
use crate::config::AlertRules;
use crate::drift::runs::Keys;
use crate::drift::{ChainLevels, Columns, DayLevels, Stop, Streamed, feeding_table};
use crate::{Error, Result, ident, passthrough};

/// What the one-pass run needs besides the shared state of the writers.
pub(super) struct Pass<'a> {
    pub(super) query: &'a AlertQuery<'a>,
    pub(super) rules: &'a AlertRules,
    pub(super) severity: &'a Severity,
}

/// The columns of the one-pass plan after the scores struct: the key, the time, then the
/// columns the hot rows' second look reads (the model's features, the model's group column),
/// and the region and project.
struct Layout {
    /// `SELECT … FROM {table}`.
    sql: String,
    /// The columns it reads from `{table}`, in order: the key, the time, then the others.
    columns: String,
    /// The model's features, in order.
    names: Vec<String>,
    /// Where each feature is among the plan's columns (after the struct).
    features: Vec<usize>,
    region: Option<usize>,
    project: Option<usize>,
}

impl Layout {
    fn new(q: &AlertQuery<'_>, rules: &AlertRules, group_by: Option<&str>) -> Self {
        let mut columns: Vec<String> = vec![rules.key.clone(), rules.time.clone()];
        let place = |name: &str, columns: &mut Vec<String>| -> usize {
            match columns.iter().position(|c| c == name) {
                Some(i) => i + 1,
                None => {
                    columns.push(name.to_string());
                    columns.len()
                }
            }
        };
        let features = q.features.iter().map(|f| place(f, &mut columns)).collect();
        if let Some(g) = group_by {
            place(g, &mut columns);
        }
        let region = q.region.then(|| place("region", &mut columns));
        let project = q.project.then(|| place("project_id", &mut columns));
        let list: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        let sql = format!(
            "SELECT pca_scores({}, {}) AS {SCORES_STRUCT}, {} FROM {{table}}",
            q.model_sql,
            q.metrics,
            list.join(", ")
        );
        Self {
            sql,
            columns: list.join(", "),
            names: q.features.to_vec(),
            features,
            region,
            project,
        }
    }
}

/// What a walk over the chains gave: the files' results, the alerts and the drift baseline's
/// levels measured on the way (empty without a deferred baseline); or why it stopped.
type Walked = std::result::Result<(Vec<UnitResult>, Vec<Alert>, DayLevels), Stop>;

/// Scores every file of `chains` (indices into `units`, each chain in time order) in one pass,
/// writing each with its rows' alerts, `concurrency` chains at once (0: one per core), and
/// measures a deferred drift baseline on the way (`streamed`); [`Stop::Unordered`] when a
/// key's time goes backwards inside a file.
pub(super) async fn score_chains(
    shared: &Arc<Shared>,
    pass: &Pass<'_>,
    group_by: Option<&str>,
    units: &[Unit],
    (chains, concurrency): (Vec<Vec<usize>>, usize),
    streamed: Option<Arc<Streamed>>,
) -> Result<Walked> {
    let run = Arc::new(Run {
        shared: Arc::clone(shared),
        walk: Walk::new(pass.query, pass.rules, pass.severity, None)?,
        layout: Layout::new(pass.query, pass.rules, group_by),
        hot_sql: format!(
            "SELECT anomaly_top_deviation({}, {}) FROM {{table}}",
            pass.query.model_sql, pass.query.metrics
        ),
        enter: pass.rules.enter,
        exit: pass.rules.exit,
        streamed,
    });
    // A JoinSet aborts the other chains when one fails and this returns early; at most
    // `concurrency` chains run at once (each holds a few files' scores).
    let concurrency = match concurrency {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for chain in chains {
        let chain: Vec<Unit> = chain.into_iter().map(|i| units[i].clone()).collect();
        let (run, permits) = (Arc::clone(&run), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits
                .acquire()
                .await
                .map_err(|e| Error::Data(format!("a scoring task failed: {e}")))?;
            run.chain(chain).await
        });
    }
    let mut results = Vec::new();
    let mut alerts = Vec::new();
    let mut levels = DayLevels::new();
    // A chain that stops ends the pass once the other chains are done, so that none is
    // stopped in the middle of writing a file the sort will write again.
    let mut stopped = None;
    while let Some(done) = tasks.join_next().await {
        match task_result(done)? {
            Ok((r, a, l)) => {
                results.extend(r);
                alerts.extend(a);
                levels.extend(l);
            }
            Err(stop) => stopped = Some(stop),
        }
    }
    Ok(match stopped {
        Some(stop) => Err(stop),
        None => Ok((results, alerts, levels)),
    })
}

/// The outcome of a spawned scoring or writing task: its own result, or the failure of the
/// task itself.
fn task_result<T>(joined: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    joined.map_err(|e| Error::Data(format!("a scoring task failed: {e}")))?
}

/// Why a chain's drift baseline stopped, if it did.
fn stopped(levels: &Mutex<ChainLevels>) -> Option<Stop> {
    levels.lock().map_or(Some(Stop::Memory), |l| l.stopped())
}

/// A spawned task, aborted when dropped.
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A file being written in a task of its own.
type Writing = tokio::task::JoinHandle<Result<UnitResult>>;

/// Files of a chain written at once beside the walk of the next: the writing (encoding the
/// scores, copying the input's column chunks, putting the file) then overlaps the walk and the
/// scoring of the files after it, and memory holds at most this many files' scores more.
const WRITES_IN_FLIGHT: usize = 2;

/// Files of a chain scored ahead of its walk, besides the one being scored.
const SCORED_AHEAD: usize = 1;

/// What every chain's task shares.
struct Run {
    shared: Arc<Shared>,
    walk: Walk,
    layout: Layout,
    /// `SELECT anomaly_top_deviation(…) FROM {table}` over a table of hot rows.
    hot_sql: String,
    enter: f64,
    exit: f64,
    /// A drift baseline measured as the files are scored.
    streamed: Option<Arc<Streamed>>,
}

/// A file scored: the scores struct's fields, and in file order each batch to write (the
/// scores struct, the key and the time) with the columns the walk reads.
type Scored = (Fields, Vec<(RecordBatch, Cols)>);

impl Run {
    /// Scores, walks and writes one chain's files; `None` when a key's time goes backwards.
    /// Files are written in tasks of their own while the next file is walked; whatever
    /// happens, none of those writes is still running when this returns.
    async fn chain(self: Arc<Self>, units: Vec<Unit>) -> Result<Walked> {
        let mut writing = VecDeque::new();
        let mut results = Vec::new();
        let walked = self.walk_chain(&units, &mut writing, &mut results).await;
        let complete = matches!(walked, Ok(Ok(_)));
        for w in writing {
            let written = task_result(w.await);
            // A failed or stopped walk reports its own error; its writes only had to end.
            if complete {
                results.push(written?);
            }
        }
        Ok(walked?.map(|(list, levels)| (results, list, levels)))
    }

    /// Writes one file with `alerts` in a task of its own.
    fn spawn_write(
        self: &Arc<Self>,
        unit: &Unit,
        fields: Fields,
        parts: Vec<RecordBatch>,
        alerts: Arc<Alerts>,
    ) -> Writing {
        let (run, unit) = (Arc::clone(self), unit.clone());
        tokio::spawn(async move { run.write(&unit, &fields, parts, &alerts).await })
    }

    /// [`Run::chain`]'s walk: the writes it starts go to `writing` (at most
    /// [`WRITES_IN_FLIGHT`] at once, the finished ones moved to `results` in file order).
    async fn walk_chain(
        self: &Arc<Self>,
        units: &[Unit],
        writing: &mut VecDeque<Writing>,
        results: &mut Vec<UnitResult>,
    ) -> Result<std::result::Result<(Vec<Alert>, DayLevels), Stop>> {
        let mut walk = ChainWalk::new(&self.walk);
        // The chain's keys' levels, when the drift baseline is measured on the way.
        let levels = self
            .streamed
            .as_ref()
            .map(|s| Arc::new(Mutex::new(s.chain())));
        // Files walked but not written yet: (unit, fields, the batches to write, latest time).
        let mut waiting: VecDeque<(usize, Fields, Vec<RecordBatch>, i64)> = VecDeque::new();
        // The files are scored in order by a task of their own, up to [`SCORED_AHEAD`] files
        // ahead of the walk, so that scoring goes on while the walk waits for a write. A file's
        // scan starts as soon as the scan before it has fed the drift baseline every row, while
        // that file's last scores are computed: at most two files are scored at once. (The
        // task is aborted when this returns early, and with it the file it scores.)
        let (tx, mut rx) = tokio::sync::mpsc::channel(SCORED_AHEAD);
        let (run, chain, fed) = (Arc::clone(self), units.to_vec(), levels.clone());
        let _scoring = Aborting(tokio::spawn(async move {
            let start = |unit: &Unit| {
                let (scanned, is_scanned) = tokio::sync::oneshot::channel();
                let (run, unit, fed) = (Arc::clone(&run), unit.clone(), fed.clone());
                let task = tokio::spawn(async move { run.score_file(&unit, fed, scanned).await });
                (Aborting(task), is_scanned)
            };
            let mut next = chain.first().map(start);
            for u in 0..chain.len() {
                let Some((mut current, is_scanned)) = next.take() else {
                    break;
                };
                // Told, or dropped untold: the scan failed, or there is no baseline to feed.
                let _ = is_scanned.await;
                next = chain.get(u + 1).map(start);
                let scored = task_result((&mut current.0).await);
                let failed = scored.is_err();
                if tx.send(scored).await.is_err() || failed {
                    break;
                }
            }
        }));
        for u in 0..units.len() {
            let Some(scored) = rx.recv().await else {
                return Err(Error::Data("a scoring task failed".into()));
            };
            let (fields, batches) = scored?;
            if let Some(stop) = levels.as_ref().and_then(|l| stopped(l)) {
                return Ok(Err(stop));
            }
            let mut latest = i64::MIN;
            let mut parts = Vec::with_capacity(batches.len());
            for (part, cols) in batches {
                latest = latest.max(cols.latest().unwrap_or(i64::MIN));
                if !walk.feed(&cols) {
                    return Ok(Err(Stop::Unordered));
                }
                parts.push(part);
            }
            waiting.push_back((u, fields, parts, latest));
            // Write the files whose rows' alerts are all known.
            while waiting
                .front()
                .is_some_and(|(_, _, _, latest)| !walk.holds_until(*latest))
            {
                let Some((u, fields, parts, _)) = waiting.pop_front() else {
                    break;
                };
                let alerts = Arc::new(walk.so_far());
                writing.push_back(self.spawn_write(&units[u], fields, parts, alerts));
                while writing.len() > WRITES_IN_FLIGHT
                    && let Some(w) = writing.pop_front()
                {
                    results.push(task_result(w.await)?);
                }
            }
        }
        let list = walk.finish();
        if !waiting.is_empty() {
            let alerts = Arc::new(Alerts::from_list(list.clone()));
            for (u, fields, parts, _) in waiting {
                let alerts = Arc::clone(&alerts);
                writing.push_back(self.spawn_write(&units[u], fields, parts, alerts));
            }
        }
        let levels = match levels {
            Some(l) => l
                .lock()
                .map_err(|_| Error::Data("a scoring task failed".into()))?
                .finish(),
            None => DayLevels::new(),
        };
        Ok(Ok((list, levels)))
    }

    /// One file's scores and the columns the walk reads, in file order; with `levels`, its rows
    /// are added to the chain's drift baseline as the scan reads them, before they are scored,
    /// and `scanned` is told once they all are.
    async fn score_file(
        &self,
        unit: &Unit,
        levels: Option<Arc<Mutex<ChainLevels>>>,
        scanned: tokio::sync::oneshot::Sender<()>,
    ) -> Result<Scored> {
        let shared = &self.shared;
        let table = format!(
            "__tads_walked_{}",
            shared
                .next_table
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let raw = format!("{table}_raw");
        let listing = Arc::new(unit_table(&shared.data, unit, &shared.file_schema)?);
        let scored = async {
            match levels {
                None => {
                    // No baseline to feed: the next file need not wait.
                    drop(scanned);
                    shared.ordered.register_table(&table, listing)?;
                }
                Some(levels) => {
                    shared.ordered.register_table(&raw, listing)?;
                    let df = shared
                        .ordered
                        .sql(&format!("SELECT {} FROM {raw}", self.layout.columns))
                        .await?;
                    let schema = Arc::new(df.schema().as_arrow().clone());
                    let columns = Columns {
                        key: 0,
                        time: 1,
                        features: self.layout.features.iter().map(|c| c - 1).collect(),
                    };
                    let stream = df.execute_stream().await?;
                    let fed = feeding_table(schema, stream, levels, columns, scanned)?;
                    shared.ordered.register_table(&table, Arc::new(fed))?;
                }
            }
            let df = shared
                .ordered
                .sql(&self.layout.sql.replace("{table}", &table))
                .await?;
            let fields = passthrough::score_fields(df.schema().as_arrow())?;
            // Each batch as it comes: what is written, and what the walk reads at its hot rows
            // (the model's features are not kept).
            let mut stream = df.execute_stream().await?;
            let mut batches = Vec::new();
            while let Some(batch) = stream.try_next().await? {
                batches.push(self.hot_rows(&batch)?);
            }
            let mut gaps = self.gaps(&batches).await?.into_iter();
            let batches = batches
                .into_iter()
                .map(|b| {
                    let cols = self.cols(&b, &mut gaps)?;
                    Ok((b.part, cols))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok::<_, Error>((fields, batches))
        }
        .await;
        let _ = shared.ordered.deregister_table(&table);
        let _ = shared.ordered.deregister_table(&raw);
        scored
    }

    /// Writes one file with its rows' alerts.
    async fn write(
        &self,
        unit: &Unit,
        fields: &Fields,
        parts: Vec<RecordBatch>,
        alerts: &Alerts,
    ) -> Result<UnitResult> {
        let stream = futures::stream::iter(parts.into_iter().map(Ok));
        let result =
            passthrough::write_scored(&self.shared, unit, fields, stream, Some(alerts)).await?;
        self.shared.progress.file_done();
        Ok(result)
    }

    /// A scored batch split into what is written and what the walk reads at its hot rows.
    fn hot_rows(&self, batch: &RecordBatch) -> Result<Batch> {
        let n = batch.num_rows();
        let scores = batch
            .column(0)
            .as_struct_opt()
            .ok_or_else(|| Error::Data("the scores column is not a struct".into()))?;
        let score = scores
            .column_by_name(super::SCORE_COLUMNS[4])
            .ok_or_else(|| Error::Data("the scores have no fused score".into()))?
            .as_primitive::<Float64Type>()
            .clone();
        let at_least = |limit: f64| -> Vec<bool> {
            (0..n)
                .map(|i| score.is_valid(i) && score.value(i) >= limit)
                .collect()
        };
        let (enter, exit) = (at_least(self.enter), at_least(self.exit));
        // The inputs (every column after the scores) at the rows whose score reaches enter.
        let hot = match enter.contains(&true) {
            true => {
                let inputs = batch.project(&(1..batch.num_columns()).collect::<Vec<_>>())?;
                Some(filter_record_batch(
                    &inputs,
                    &BooleanArray::from(enter.clone()),
                )?)
            }
            false => None,
        };
        // Region and project as text where the score reaches exit.
        let text_where = |column: Option<usize>| -> Result<Option<StringArray>> {
            let Some(c) = column else { return Ok(None) };
            let keys = Keys::new(batch.column(c)).map_err(Error::from)?;
            let mut out = StringBuilder::new();
            for (i, hot) in exit.iter().enumerate() {
                out.append_option((*hot && !keys.is_null(i)).then(|| keys.text(i)));
            }
            Ok(Some(out.finish()))
        };
        Ok(Batch {
            part: batch.project(&[0, 1, 2])?,
            region: text_where(self.layout.region)?,
            project: text_where(self.layout.project)?,
            score,
            enter,
            exit,
            hot,
        })
    }

    /// A batch's columns as the walk reads them (see the module's documentation); `gaps`
    /// yields the gap of each row whose score reaches enter, in order.
    fn cols(&self, b: &Batch, gaps: &mut impl Iterator<Item = Option<f64>>) -> Result<Cols> {
        let scores = b
            .part
            .column(0)
            .as_struct_opt()
            .ok_or_else(|| Error::Data("the scores column is not a struct".into()))?;
        let top = scores
            .column_by_name(super::SCORE_COLUMNS[3])
            .ok_or_else(|| Error::Data("the scores have no top metric".into()))?;
        let top = cast(top, &DataType::Utf8)?;
        let top = top.as_string::<i32>();
        // The features among the hot rows' columns (the batch's less the scores).
        let features: Vec<ArrayRef> = match &b.hot {
            Some(hot) => self
                .layout
                .features
                .iter()
                .map(|&c| cast(hot.column(c - 1), &DataType::Float64))
                .collect::<std::result::Result<_, _>>()?,
            None => Vec::new(),
        };
        let names = &self.layout.names;
        let mut tops = StringBuilder::new();
        let mut k = 0;
        for i in 0..b.part.num_rows() {
            let metric = top.is_valid(i).then(|| top.value(i));
            if b.enter[i] {
                let value = metric
                    .and_then(|m| names.iter().position(|f| f == m))
                    .map(|j| features[j].as_primitive::<Float64Type>())
                    .filter(|c| c.is_valid(k))
                    .map_or_else(String::new, |c| c.value(k).to_string());
                let gap = gaps
                    .next()
                    .flatten()
                    .map_or_else(String::new, |g| g.to_string());
                k += 1;
                tops.append_value(format!("{}{SEP}{value}{SEP}{gap}", metric.unwrap_or("")));
            } else if b.exit[i] {
                tops.append_option(metric);
            } else {
                tops.append_null();
            }
        }
        Ok(Cols::from_parts(
            Keys::new(b.part.column(1)).map_err(Error::from)?,
            micros(b.part.column(2))?,
            b.score.clone(),
            tops.finish(),
            b.region.clone(),
            b.project.clone(),
        ))
    }

    /// `anomaly_top_deviation` at the hot rows of every batch, in order: one statement for a
    /// file.
    async fn gaps(&self, batches: &[Batch]) -> Result<Vec<Option<f64>>> {
        let rows: Vec<RecordBatch> = batches.iter().filter_map(|b| b.hot.clone()).collect();
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let ctx: &SessionContext = &self.shared.ordered;
        let table = format!(
            "__tads_hot_{}",
            self.shared
                .next_table
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mem = MemTable::try_new(first.schema(), vec![rows])?;
        ctx.register_table(&table, Arc::new(mem))?;
        let out = async {
            let batches = ctx
                .sql(&self.hot_sql.replace("{table}", &table))
                .await?
                .collect()
                .await?;
            let mut gaps = Vec::new();
            for b in &batches {
                let g = b.column(0).as_primitive::<Float64Type>();
                gaps.extend((0..g.len()).map(|i| g.is_valid(i).then(|| g.value(i))));
            }
            Ok::<_, Error>(gaps)
        }
        .await;
        let _ = ctx.deregister_table(&table);
        out
    }
}

/// One scored batch, split: what is written, and what the walk reads at its hot rows.
struct Batch {
    /// The scores struct, the key and the time.
    part: RecordBatch,
    score: Float64Array,
    /// Rows whose score reaches `alerts.enter`, and `alerts.exit`.
    enter: Vec<bool>,
    exit: Vec<bool>,
    /// The inputs at the rows that reach enter.
    hot: Option<RecordBatch>,
    /// Region and project as text at the rows that reach exit.
    region: Option<StringArray>,
    project: Option<StringArray>,
}
