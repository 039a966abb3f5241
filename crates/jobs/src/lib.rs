//! TADS jobs as DataFusion plans.
//!
//! A job registers its input as a table, runs SQL that calls the TADS functions, and writes its
//! output through [`tads_store`]. The heavy lifting (reading Parquet, pruning, parallelism) is
//! DataFusion's; the job decides the passes and assembles the result.
//!
//! * [`train`]: robust PCA training in three SQL passes (robust statistics, co-moments inside
//!   the robust cut, SPE quantiles), with an optional trimmed refit.
//!   With `group_by`, one model per value of a column (`group.json`); medians and quantiles
//!   exact or sketched ([`quantiles`]).
//! * [`score`]: every row with its scores, one streamed plan per input file, and its alerts
//!   ([`alerts`], configured by [`config`]).
//! * [`watch`]: follows a dataset being written, scoring each round of new files with the
//!   score job and carrying the alert state, with exactly-once checkpoints.
#![deny(missing_docs)]

pub mod alerts;
pub mod config;
pub mod drift;
pub mod eval;
mod forecast;
pub mod parquet_out;
mod passthrough;
pub mod quantiles;
mod sampled;
pub mod score;
mod season;
mod seasonal;
mod space;
mod tail;
pub mod train;
mod train_groups;
pub mod watch;

pub use tail::DEFAULT_QUANTILE as DEFAULT_TAIL_QUANTILE;
pub use train_groups::min_rows;

/// Teaches this process how the functions the jobs make from data (the drift baseline's shifts)
/// travel with a plan on a Ballista cluster. Call it in the cluster's processes before they
/// start; the jobs call it before they connect.
pub fn carry_on_clusters() {
    tads_cluster::codec::carry(drift::CARRIER);
}

/// A session on the cluster at `url` (`df://host:port`) from `state`, whose plans carry the
/// functions the jobs make from data; an unreachable cluster is an input error naming it.
pub(crate) async fn cluster_session(
    url: &str,
    state: datafusion::execution::SessionState,
) -> Result<datafusion::prelude::SessionContext> {
    carry_on_clusters();
    tads_cluster::connect(url, state)
        .await
        .map_err(|e| Error::Input(e.to_string()))
}

/// `e`, from a job whose plans ran on the cluster at `cluster` when set: Ballista's wrapping
/// taken off, and where the cluster lacks the TADS functions, what to start instead.
pub(crate) fn on_cluster(cluster: Option<&str>, e: Error) -> Error {
    match (cluster, e) {
        (Some(url), Error::DataFusion(m)) => Error::DataFusion(tads_cluster::explain(url, &m)),
        (_, e) => e,
    }
}

/// `"name"`, quoted for SQL.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL expression `x` as a double, NULL where it is NaN (what the medians skip).
pub(crate) fn nan_as_null(x: &str) -> String {
    let x = format!("CAST({x} AS DOUBLE)");
    format!("(CASE WHEN isnan({x}) THEN NULL ELSE {x} END)")
}

/// Errors of the jobs. Messages are one line and name the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job argument does not fit the data (unknown feature, non-numeric column, ...).
    #[error("{0}")]
    Input(String),
    /// The data cannot be used as it is (no rows, every feature constant, ...).
    #[error("{0}")]
    Data(String),
    /// A model could not be built or read.
    #[error(transparent)]
    Model(#[from] tads_model::Error),
    /// Registering data or functions failed.
    #[error(transparent)]
    Sql(#[from] tads_sql::Error),
    /// Reading or writing a store failed.
    #[error(transparent)]
    Store(#[from] tads_store::Error),
    /// DataFusion failed (a bad `--where` predicate lands here too).
    #[error("{0}")]
    DataFusion(String),
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // DataFusion's messages carry a context prefix and sometimes several lines.
        Self::DataFusion(e.strip_backtrace().replace('\n', " "))
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Self::Data(e.to_string())
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
