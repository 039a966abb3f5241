//! Integration tests of TADS: the real `tads` binary, real Parquet, DataFusion reading it back,
//! and a real S3-compatible server (moto, started by `scripts/test.sh`).
//!
//! One test binary with modules inside: linking many binaries is slow on two cores.

mod alerts;
mod bad_input;
mod cluster;
mod deliver;
mod flight;
mod generate;
mod golden;
mod jobs;
mod kill;
mod live;
mod network;
mod pg;
mod prometheus;
mod s3;
mod score;
mod serve;
mod slt;
mod space;
mod sql;
mod support;
mod train;
mod watch;
