//! Generation benchmarks: rows made in memory, rows encoded to zstd Parquet, and the whole
//! `write_dataset` into a local directory (the target: ≥ 5M rows/s end to end on 2 cores).
//!
//! `cargo bench --bench generate`; `-- --save-baseline NAME` / `-- --baseline NAME` to compare.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tads_gen::writer::encode_file;
use tads_gen::{GenConfig, NoProgress, Plan, Span, WriteOptions, write_dataset};
use tads_store::Location;

fn config(hosts: u32, days: i64) -> GenConfig {
    GenConfig {
        hosts,
        duration: Span::from_secs(days * 86_400),
        interval: Span::from_secs(10),
        anomaly_rate: 0.5,
        ..GenConfig::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("generate");
    g.sample_size(10);

    // One file's worth of rows (121 host-days of 8640 rows), made into Arrow batches.
    let plan = Plan::new(&config(121, 1)).unwrap();
    let task = plan.files[0].clone();
    g.throughput(Throughput::Elements(task.rows));
    g.bench_function("rows_in_memory", |b| {
        b.iter(|| {
            for h in task.hosts.0..task.hosts.1 {
                black_box(plan.host_batch(h, task.points).unwrap());
            }
        })
    });
    g.bench_function("rows_to_parquet_bytes", |b| {
        b.iter(|| black_box(encode_file(&plan, &task, &NoProgress).unwrap().len()))
    });

    // The whole write: 8.4M rows (140 hosts x 7 days), all cores, into a local directory.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let plan = Arc::new(Plan::new(&config(140, 7)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let out = Location::parse(dir.path().join("t").to_str().unwrap()).unwrap();
    let options = WriteOptions {
        overwrite: true,
        threads: 0,
        break_lock: false,
    };
    g.throughput(Throughput::Elements(plan.total_rows()));
    g.bench_function("end_to_end_local_parquet", |b| {
        b.iter(|| {
            runtime
                .block_on(write_dataset(
                    Arc::clone(&plan),
                    &out,
                    &options,
                    Arc::new(NoProgress),
                ))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
