//! How `tads train` takes its medians, MADs and quantiles: exact, or from mergeable t-digest
//! sketches in bounded memory, or chosen by the rows and the memory (`--quantiles`).

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use tads_model::robust::{MAD_SCALE, MEAN_AD_SCALE, SCALE_TAIL};

use crate::train::collect;
use crate::{Result, nan_as_null};

/// How training takes its medians, MADs and quantiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantiles {
    /// Exact where they fit in memory, sketched where they do not: the training rows times the
    /// features times [`EXACT_BYTES_PER_VALUE`] against [`TrainJob::memory`].
    #[default]
    Auto,
    /// Exact: each statement holds every value it orders in memory.
    Exact,
    /// Mergeable t-digest sketches (`sketch_quantile`, DataFusion's `approx_percentile_cont`
    /// with a grouped accumulator of its own): bounded memory
    /// whatever the rows, merged across partitions; within the tolerance `tads train --help`
    /// states of the exact values.
    Sketch,
}

/// Centroids of the t-digests behind the sketched medians, MADs and limits.
pub const SKETCH_CENTROIDS: usize = 1000;

/// Centroids of the sketched medians of the daily cycle (per key and day, per key and hour).
pub const SMALL_SKETCH_CENTROIDS: usize = 200;

/// Peak bytes exact training takes per value (row × feature), measured: 33 at 10M rows of 8
/// features on 2026-12-01 (2,661 MB; 25 before the daily cycle took per-host day medians), 18
/// at 100M on 2026-11-29 (`benches/scaling.sh`).
pub const EXACT_BYTES_PER_VALUE: u64 = 34;

/// Half of the memory this machine has available now (Linux's `MemAvailable`), or 4 GiB where
/// that cannot be read.
fn half_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024 / 2)
}

/// The mode [`Quantiles::Auto`] comes to for `rows` training rows of `d` features, and why.
pub fn auto_quantiles(rows: u64, d: usize, memory: Option<usize>) -> (Quantiles, String) {
    let need = rows * d as u64 * EXACT_BYTES_PER_VALUE;
    let (budget, named) = match memory {
        Some(m) => (m as u64, "--memory"),
        None => (half_available(), "half the memory available"),
    };
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let fits = need <= budget;
    let why = format!(
        "{} rows × {d} features need about {:.1} GiB exact, {} {named} ({:.1} GiB)",
        rows,
        gib(need),
        if fits { "within" } else { "more than" },
        gib(budget)
    );
    (
        if fits {
            Quantiles::Exact
        } else {
            Quantiles::Sketch
        },
        why,
    )
}

impl Quantiles {
    /// The aggregate of the `q` quantile of `x` (a continuous one, interpolated).
    pub(crate) fn quantile(self, q: f64, x: &str) -> String {
        match self {
            Self::Auto | Self::Exact => {
                format!("percentile_cont({q}) WITHIN GROUP (ORDER BY {x})")
            }
            Self::Sketch => format!("sketch_quantile({x}, {q}, {SKETCH_CENTROIDS})"),
        }
    }

    /// The aggregate of the median of `x` within many small groups (days, hours of the day):
    /// exact, or a sketch of [`SMALL_SKETCH_CENTROIDS`] (a group's sketch holds that many
    /// centroids at most, so memory grows with the keys × days, never with the rows).
    pub(crate) fn small_median(self, x: &str) -> String {
        match self {
            Self::Auto | Self::Exact => format!("median({x})"),
            Self::Sketch => format!("sketch_quantile({x}, 0.5, {SMALL_SKETCH_CENTROIDS})"),
        }
    }

    /// Pass 1 over `source` (a table expression aliased `t` with the columns `cols`, and
    /// `t.__key` when `keyed`): `[t.__key,] count(*)` and, per column, a struct `{median, mad,
    /// count, mean_ad, low, high}` as
    /// `robust_stats` gives it. Sketched, the medians come first and the MAD and mean absolute
    /// deviation from them in a second statement, which joins them from memory (a join whose
    /// small side were still being computed would let the big side's rows pile up in memory).
    pub(crate) async fn robust_pass(
        self,
        ctx: &SessionContext,
        source: &str,
        cols: &[String],
        keyed: bool,
    ) -> Result<RecordBatch> {
        let tcols: Vec<String> = cols.iter().map(|c| format!("t.{c}")).collect();
        let (key, group) = if keyed {
            ("t.__key, ", " GROUP BY t.__key")
        } else {
            ("", "")
        };
        if self != Self::Sketch {
            let stats = tcols
                .iter()
                .map(|c| format!("robust_stats({c})"))
                .collect::<Vec<_>>()
                .join(", ");
            return collect(
                ctx,
                &format!("SELECT {key}count(*), {stats} FROM {source}{group}"),
            )
            .await;
        }
        // Finite values as doubles (robust_stats skips NULL, NaN and infinities).
        let fin = |c: &str| {
            format!(
                "(CASE WHEN abs(CAST({c} AS DOUBLE)) > 1.7976931348623157e308 THEN NULL ELSE {} END)",
                nan_as_null(c)
            )
        };
        let medians = tcols
            .iter()
            .enumerate()
            .map(|(j, c)| {
                format!(
                    "{} AS __m{j}, {} AS __lo{j}, {} AS __hi{j}",
                    self.quantile(0.5, &fin(c)),
                    self.quantile(1.0 - SCALE_TAIL, &fin(c)),
                    self.quantile(SCALE_TAIL, &fin(c))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mkey = if keyed { "t.__key AS __mk, " } else { "" };
        let table = in_memory(
            ctx,
            MEDIANS,
            &format!("SELECT {mkey}{medians} FROM {source}{group}"),
        )
        .await?;
        let stats = tcols
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let dev = format!("abs({} - m.__m{j})", fin(c));
                format!(
                    "named_struct('median', max(m.__m{j}), 'mad', {} * {MAD_SCALE:?}, \
                     'count', arrow_cast(count({}), 'UInt64'), 'mean_ad', avg({dev}) * {MEAN_AD_SCALE:?}, \
                     'low', max(m.__lo{j}), 'high', max(m.__hi{j}))",
                    self.quantile(0.5, &dev),
                    fin(c)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let join = if keyed {
            format!("{table} m JOIN {source} ON t.__key = m.__mk")
        } else {
            format!("{table} m CROSS JOIN {source}")
        };
        let out = collect(
            ctx,
            &format!("SELECT {key}count(*), {stats} FROM {join}{group}"),
        )
        .await;
        ctx.deregister_table(MEDIANS)?;
        out
    }
}

/// The in-memory table of the sketched medians of pass 1.
const MEDIANS: &str = "__tads_medians";

/// Runs `sql` and registers its result as the in-memory table `name` (replacing one of that
/// name); returns the name. Joined with a big table, a small side that is already complete
/// keeps the join's memory bounded.
pub(crate) async fn in_memory(ctx: &SessionContext, name: &str, sql: &str) -> Result<String> {
    let df = ctx.sql(sql).await?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, std::sync::Arc::new(table))?;
    Ok(name.to_string())
}
