//! The alert pass without a sort, for data whose files are in time order per key.
//!
//! Generated data, what `tads watch` and `import prometheus` read, and most exporters' output
//! come as files that each hold a span of time, one after another. The Parquet statistics of
//! each file's key and time columns tell ([`chains`]): files whose key ranges overlap must not
//! overlap in time. Then the files of each such chain are walked one after another, each key
//! carrying its state from one file to the next, as `tads watch` carries it from one round to
//! the next: no hash partitioning and no sort, and memory bounded by one file's scores. Each
//! file's plan still runs on every core (its byte ranges in parallel, walked in order). A key
//! whose time goes backwards inside a file (the statistics cannot see that) stops the walk, and
//! the pass sorts instead ([`find_ordered`] returns `None`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use parquet::basic::LogicalType;
use parquet::file::statistics::Statistics;
use tads_model::Severity;
use tads_store::Progress;

use super::walk::{Cols, Walk, select};
use super::{Alert, AlertQuery, Alerts, Carried, KeyState};
use crate::config::AlertRules;
use crate::drift::runs::PerKey;
use crate::score::Unit;
use crate::{Error, Result};

/// One file's range of keys (as bytes that sort as the keys do) and of raw times.
struct Span {
    index: usize,
    keys: (Vec<u8>, Vec<u8>),
    times: (i64, i64),
}

/// A key statistic as bytes in the key's order: strings as they are, integers big-endian with
/// the sign bit flipped.
fn key_bytes(s: &Statistics) -> Option<(Vec<u8>, Vec<u8>)> {
    let int = |v: i64| ((v as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    match s {
        Statistics::ByteArray(v) => {
            Some((v.min_opt()?.data().to_vec(), v.max_opt()?.data().to_vec()))
        }
        Statistics::Int64(v) => Some((int(*v.min_opt()?), int(*v.max_opt()?))),
        Statistics::Int32(v) => {
            Some((int(i64::from(*v.min_opt()?)), int(i64::from(*v.max_opt()?))))
        }
        _ => None,
    }
}

/// The key and time ranges of `unit` from its row groups' statistics; `None` when a statistic
/// is missing or the time column is not an INT64 of the same logical type as `time_type`'s.
fn span(
    index: usize,
    unit: &Unit,
    key: &str,
    time: &str,
    time_type: &mut Option<Option<LogicalType>>,
) -> Option<Span> {
    let descr = unit.footer.file_metadata().schema_descr();
    let column = |name: &str| {
        descr
            .columns()
            .iter()
            .position(|c| c.path().parts() == [name.to_string()])
    };
    let (k, t) = (column(key)?, column(time)?);
    let logical = descr.column(t).logical_type_ref().cloned();
    if *time_type.get_or_insert_with(|| logical.clone()) != logical {
        return None;
    }
    let mut out: Option<Span> = None;
    for rg in unit.footer.row_groups() {
        if rg.num_rows() == 0 {
            continue;
        }
        let (kmin, kmax) = key_bytes(rg.column(k).statistics()?)?;
        let (tmin, tmax) = match rg.column(t).statistics()? {
            Statistics::Int64(v) => (*v.min_opt()?, *v.max_opt()?),
            _ => return None,
        };
        out = Some(match out {
            None => Span {
                index,
                keys: (kmin, kmax),
                times: (tmin, tmax),
            },
            Some(s) => Span {
                index,
                keys: (s.keys.0.min(kmin), s.keys.1.max(kmax)),
                times: (s.times.0.min(tmin), s.times.1.max(tmax)),
            },
        });
    }
    out
}

/// The files (indices into `units`) as chains to walk one after another, when the statistics
/// say each key's rows are in time order across files: files whose key ranges overlap are one
/// chain, and a chain's files must not overlap in time. `None` otherwise. Empty files are left
/// out.
pub(crate) fn chains(units: &[Unit], key: &str, time: &str) -> Option<Vec<Vec<usize>>> {
    let mut time_type = None;
    let mut spans = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        if unit.rows > 0 {
            spans.push(span(i, unit, key, time, &mut time_type)?);
        }
    }
    spans.sort_by(|a, b| a.keys.0.cmp(&b.keys.0));
    let mut groups: Vec<(Vec<u8>, Vec<Span>)> = Vec::new();
    for s in spans {
        match groups.last_mut() {
            Some((max, group)) if s.keys.0 <= *max => {
                if s.keys.1 > *max {
                    max.clone_from(&s.keys.1);
                }
                group.push(s);
            }
            _ => groups.push((s.keys.1.clone(), vec![s])),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for (_, mut group) in groups {
        group.sort_by_key(|s| s.times);
        if group.windows(2).any(|w| w[0].times.1 >= w[1].times.0) {
            return None;
        }
        out.push(group.into_iter().map(|s| s.index).collect());
    }
    Some(out)
}

/// Walks the chains of registered per-file tables (`tables`, each chain in time order) through
/// the alert machine, each key's state carried from file to file. Chains run concurrently, and
/// within a chain the next file is scored while the current one is walked. `None` when a key's
/// time goes backwards: the data is not in time order after all, and the caller sorts instead.
pub(crate) async fn find_ordered(
    ctx: &SessionContext,
    q: &AlertQuery<'_>,
    rules: &AlertRules,
    severity: &Severity,
    tables: &[Vec<String>],
    progress: Arc<dyn Progress>,
) -> Result<Option<Alerts>> {
    let walk = Arc::new(Walk::new(q, rules, severity, None)?);
    let columns = select(q, rules, false);
    // A JoinSet aborts the other chains when one fails and this returns early.
    let mut chains = tokio::task::JoinSet::new();
    for chain in tables {
        let sqls: Vec<String> = chain
            .iter()
            .map(|table| format!("{columns} FROM {table}{}", q.filter))
            .collect();
        let (ctx, walk, progress) = (ctx.clone(), Arc::clone(&walk), Arc::clone(&progress));
        let (region, project) = (q.region, q.project);
        chains.spawn(async move {
            walk_chain(&ctx, &walk, sqls, (region, project), progress.as_ref()).await
        });
    }
    let mut list: Vec<Alert> = Vec::new();
    while let Some(done) = chains.join_next().await {
        match done.map_err(|e| Error::Data(format!("an alert task failed: {e}")))?? {
            Some(found) => list.extend(found),
            None => return Ok(None),
        }
    }
    Ok(Some(Alerts::from_list(list)))
}

/// One file's rows for the walk, its byte ranges scored in parallel, in file order.
async fn scored(ctx: SessionContext, sql: String) -> Result<Vec<RecordBatch>> {
    let streams = ctx.sql(&sql).await?.execute_stream_partitioned().await?;
    let parts: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(stream.try_collect::<Vec<_>>()))
        .collect();
    let mut out = Vec::new();
    for part in parts {
        out.extend(
            part.await
                .map_err(|e| Error::Data(format!("an alert task failed: {e}")))??,
        );
    }
    Ok(out)
}

/// One chain's walk: every key's state, carried from batch to batch and file to file in time
/// order, and the alerts closed so far.
pub(crate) struct ChainWalk<'a> {
    walk: &'a Walk,
    /// Each key's place in `states`, found by the key's text once per batch and dictionary
    /// code (or per run of one key when the keys are text), not hashed for every row.
    index: HashMap<String, usize>,
    /// Each key, its state and its last time.
    states: Vec<(String, KeyState, i64)>,
    list: Vec<Alert>,
}

impl<'a> ChainWalk<'a> {
    pub(crate) fn new(walk: &'a Walk) -> Self {
        Self {
            walk,
            index: HashMap::new(),
            states: Vec::new(),
            list: Vec::new(),
        }
    }

    /// The place of `key`'s state, a fresh state for a key not seen before.
    fn slot_of(&mut self, key: &str) -> usize {
        if let Some(&slot) = self.index.get(key) {
            return slot;
        }
        self.states
            .push((key.to_string(), KeyState::default(), i64::MIN));
        self.index.insert(key.to_string(), self.states.len() - 1);
        self.states.len() - 1
    }

    /// Walks one batch's rows; false when a key's time goes backwards.
    pub(crate) fn feed(&mut self, c: &Cols) -> bool {
        let mut slots = PerKey::new(&c.keys);
        for i in 0..c.times.len() {
            if c.key(i).is_none() {
                continue;
            }
            let slot = slots.get(&c.keys, i, |key| self.slot_of(key));
            let (key, state, last) = &mut self.states[slot];
            let ts = c.times.value(i);
            if ts < *last {
                return false;
            }
            *last = ts;
            self.walk.step(key, state, c, i, &mut self.list);
        }
        true
    }

    /// Whether some key holds rows at or before `ts` that may still become part of an alert:
    /// until then, those rows' alert is not known.
    pub(crate) fn holds_until(&self, ts: i64) -> bool {
        self.states
            .iter()
            .any(|(_, s, _)| s.first_held().is_some_and(|t| t <= ts))
    }

    /// The alerts so far: those closed, and those open as they stand (their end the key's
    /// last row walked).
    pub(crate) fn so_far(&self) -> Alerts {
        let mut list = self.list.clone();
        list.extend(
            self.states
                .iter()
                .filter_map(|(key, s, _)| self.walk.open_alert(key, s)),
        );
        Alerts::from_list(list)
    }

    /// Every alert, an alert still open at a key's last row listed as open.
    pub(crate) fn finish(mut self) -> Vec<Alert> {
        let mut ends = Carried::new();
        for (key, state, _) in self.states {
            self.walk.end(key, state, &mut self.list, &mut ends);
        }
        self.list
    }
}

/// Walks one chain's files (their statements `sqls`, in time order); `None` when a key's time
/// goes backwards.
async fn walk_chain(
    ctx: &SessionContext,
    walk: &Walk,
    sqls: Vec<String>,
    (region, project): (bool, bool),
    progress: &dyn Progress,
) -> Result<Option<Vec<Alert>>> {
    let mut chain = ChainWalk::new(walk);
    let mut sqls = sqls.into_iter();
    let mut next = sqls
        .next()
        .map(|sql| tokio::spawn(scored(ctx.clone(), sql)));
    while let Some(current) = next.take() {
        let batches = current
            .await
            .map_err(|e| Error::Data(format!("an alert task failed: {e}")))??;
        next = sqls
            .next()
            .map(|sql| tokio::spawn(scored(ctx.clone(), sql)));
        for batch in batches {
            let c = Cols::of(&batch, region, project)?;
            if !chain.feed(&c) {
                if let Some(n) = next {
                    n.abort();
                }
                return Ok(None);
            }
            progress.rows(batch.num_rows() as u64);
        }
    }
    Ok(Some(chain.finish()))
}
