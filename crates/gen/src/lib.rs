//! The seeded synthetic telemetry generator of TADS.
//!
//! It makes host telemetry that is realistic enough for anomaly detection to be a real problem,
//! and labels every anomaly it injects, so that detectors can be scored against ground truth.
//!
//! * Each host has its own baseline and a latent load with daily and weekly seasonality that
//!   drives CPU, disk, network, latency and errors together ([`metrics`]).
//! * Anomalies of five kinds are scheduled per host ([`anomaly`]): spikes, bursts, slow trends,
//!   correlation breaks (in range, but decoupled from the load) and level shifts; every row an
//!   event touches carries `is_anomaly`, `anomaly_type` and `anomaly_id`.
//! * The network profile ([`Profile::Network`]) makes links instead of hosts: bandwidth, latency,
//!   packet loss, jitter and retransmits, with loss bursts, jitter storms, bandwidth collapses
//!   and latency steps.
//! * Everything random comes from streams keyed by (seed, host, day), so the same
//!   [`GenConfig`] gives the same rows whatever the number of threads, and any file can be made
//!   on its own ([`plan`]).
//! * [`write_dataset`] writes hive-partitioned (`date=YYYY-MM-DD/`) zstd Parquet into a local
//!   directory or S3, in parallel, with a `_manifest.json` written last ([`writer`]).
//! * [`follow_dataset`] writes the same telemetry as a stream of small files, one per flush
//!   window as its time passes, for `tads watch` to follow ([`follow`]).
//!
//! ```no_run
//! # async fn run() -> tads_gen::Result<()> {
//! use std::sync::Arc;
//! let config = tads_gen::GenConfig { hosts: 10, ..Default::default() };
//! let plan = Arc::new(tads_gen::Plan::new(&config)?);
//! let out = tads_store::Location::parse("./out/telemetry")?;
//! let summary = tads_gen::write_dataset(plan, &out, &Default::default(), Arc::new(tads_gen::NoProgress)).await?;
//! println!("{} rows", summary.manifest.rows);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod anomaly;
pub mod config;
pub mod follow;
pub mod metrics;
pub mod plan;
pub mod profile;
pub mod writer;

pub use anomaly::{AnomalyType, Event};
pub use config::{AnomalyConfig, GenConfig, Span, SpanRange};
pub use follow::{FollowOptions, follow_dataset};
pub use metrics::Metric;
pub use plan::{Plan, schema};
pub use profile::Profile;
pub use writer::{
    IN_PROGRESS, MANIFEST, Manifest, NoProgress, Progress, WriteOptions, WriteSummary,
    write_dataset,
};

/// Errors of the generator. Their messages are one line and name what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range; `field` is its command-line flag without `--`.
    #[error("--{field}: {message}")]
    Config {
        /// The flag.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The target cannot be written as asked (not empty, not ours).
    #[error("{location}: {message}")]
    Target {
        /// The target.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// A `_manifest.json` that cannot be read.
    #[error("{location}/_manifest.json: {message}")]
    Manifest {
        /// The dataset.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] tads_store::Error),
    /// The run stopped because another file failed.
    #[error("cancelled")]
    Cancelled,
    /// A broken invariant inside the generator.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
