//! End-to-end benchmarks of the jobs on 10M generated rows (165 hosts x 7 days at 10 s, the data
//! `benches/compare/run.sh` uses): `tads score` from Parquet to Parquet, with and without the
//! alert pass, and `tads train` (three SQL passes over the data).
//!
//! `cargo bench --bench e2e`; `-- --save-baseline NAME` / `-- --baseline NAME` to compare.
//! The data is generated once into `$TADS_BENCH_DATA` (default
//! `~/.cache/tads/compare/telemetry-165h`, shared with the comparison script) and reused;
//! `TADS_BENCH_HOSTS` changes its size (e.g. 17 hosts for about 1M rows). Each job's own
//! output goes to a temporary directory and is replaced on every iteration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tads_gen::{GenConfig, MANIFEST, NoProgress, Plan, Span, WriteOptions, write_dataset};
use tads_jobs::config::ScoreConfig;
use tads_jobs::score::{ScoreJob, score};
use tads_jobs::train::{TrainJob, train};
use tads_store::Location;

/// The allocator of the `tads` binary, so that the jobs run as they do there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The bench's data: generated on first use, reused after.
fn data(runtime: &tokio::runtime::Runtime) -> (Location, u64) {
    let hosts: u32 = std::env::var("TADS_BENCH_HOSTS")
        .ok()
        .map(|h| h.parse().expect("TADS_BENCH_HOSTS: a number of hosts"))
        .unwrap_or(165);
    let dir = std::env::var_os("TADS_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME or TADS_BENCH_DATA must be set");
            PathBuf::from(home).join(format!(".cache/tads/compare/telemetry-{hosts}h"))
        });
    let location = Location::parse(dir.to_str().expect("a UTF-8 path")).unwrap();
    let config = GenConfig {
        hosts,
        duration: Span::from_secs(7 * 86_400),
        ..GenConfig::default()
    };
    let plan = Arc::new(Plan::new(&config).unwrap());
    let rows = plan.total_rows();
    if !dir.join(MANIFEST).exists() {
        eprintln!("generating {rows} rows into {}", dir.display());
        let options = WriteOptions {
            overwrite: true,
            threads: 0,
            break_lock: false,
        };
        runtime
            .block_on(write_dataset(
                plan,
                &location,
                &options,
                Arc::new(NoProgress),
            ))
            .unwrap();
    }
    (location, rows)
}

fn bench(c: &mut Criterion) {
    // As the `tads` binary runs.
    tads_cli::no_transparent_huge_pages();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (data, rows) = data(&runtime);
    let scratch = tempfile::tempdir().unwrap();
    let models = Location::parse(scratch.path().join("models").to_str().unwrap()).unwrap();
    let train_job = TrainJob {
        data: data.clone(),
        models: models.clone(),
        name: "e2e".into(),
        features: None,
        filter: None,
        options: Default::default(),
        overwrite: true,
        group_by: None,
        break_lock: false,
        threads: 0,
        quantiles: Default::default(),
        memory: None,
        cluster: None,
    };
    // The model the score benches use.
    runtime.block_on(train(&train_job)).unwrap();

    let mut g = c.benchmark_group("e2e");
    g.sample_size(10);
    // Seconds per run: one run per sample, ten samples.
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(rows));

    g.bench_function("train", |b| {
        b.iter(|| runtime.block_on(train(&train_job)).unwrap())
    });
    for (name, alerts) in [("score_no_alerts", false), ("score", true)] {
        let mut config = ScoreConfig::default();
        config.alerts.enabled = alerts;
        let job = ScoreJob {
            data: data.clone(),
            models: models.clone(),
            model: "e2e".into(),
            out: Location::parse(scratch.path().join(name).to_str().unwrap()).unwrap(),
            shard: None,
            shard_by: "host_id".into(),
            overwrite: true,
            break_lock: false,
            concurrency: 0,
            memory: 0,
            config,
            run_id: None,
            follow: None,
            cluster: None,
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let report = runtime.block_on(score(&job, Arc::new(NoProgress))).unwrap();
                assert_eq!(report.manifest.rows, rows);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
