//! Kernel benchmarks on in-memory batches of 8192 rows × 8 metrics, one thread:
//! `pca_score` (SPE), `pca_t2`, `mad_zmax`, `anomaly_score` (the fused score),
//! `kmeans_distance` (8 centroids), `iforest_score`, `ocsvm_score`, `seasonal_zmax`, `pca_contrib`
//! (per row), the `pca_fit` accumulator (update and merge), the alert state machine behind
//! `alert_state`, and `mad_zscore(x, median, mad)` through DataFusion (1M rows, one partition). Targets: SPE ≥ 100M rows/s per core, `pca_fit` ≥ 20M rows/s.
//!
//! `cargo bench --bench kernels`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tads_gen::{GenConfig, Metric, Plan, Span};
use tads_model::train::{TrainOptions, artifact, fit_in_memory};
use tads_model::{CoMoments, KRule, Scorer};

const ROWS: usize = 8192;

fn columns() -> Vec<Vec<f64>> {
    let config = GenConfig {
        hosts: 1,
        duration: Span::from_secs(2 * 86_400),
        interval: Span::from_secs(10),
        ..GenConfig::default()
    };
    let plan = Plan::new(&config).unwrap();
    let batch = plan.host_batch(0, (0, ROWS as u64)).unwrap();
    Metric::SERVER
        .iter()
        .map(|m| {
            let c = batch.column_by_name(m.column()).unwrap();
            c.as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cols = columns();
    let refs: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
    let options = TrainOptions {
        k_rule: KRule::Fixed(3),
        ..TrainOptions::default()
    };
    let fitted = fit_in_memory(&cols, &options).unwrap();
    let names: Vec<String> = Metric::SERVER
        .iter()
        .map(|m| m.column().to_string())
        .collect();
    let model = artifact(
        "bench",
        &names,
        &fitted,
        &options,
        ROWS as u64,
        "bench",
        None,
    )
    .unwrap();
    let scorer = Scorer::new(&model);
    let mut out = vec![0.0; ROWS];

    let mut g = c.benchmark_group("kernels");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("pca_score_spe", |b| {
        b.iter(|| scorer.spe(black_box(&refs), &mut out))
    });
    g.bench_function("pca_t2", |b| {
        b.iter(|| scorer.t2(black_box(&refs), &mut out))
    });
    g.bench_function("mad_zmax", |b| {
        b.iter(|| scorer.zmax(black_box(&refs), &mut out))
    });
    let fusion = tads_model::Fusion::default();
    let factors = fusion.factors(&model);
    let (mut t2, mut z) = (vec![0.0; ROWS], vec![0.0; ROWS]);
    g.bench_function("anomaly_score_fused", |b| {
        b.iter(|| {
            scorer.spe_t2_zmax(black_box(&refs), &mut out, &mut t2, &mut z);
            fusion.combine(factors, &mut out, &t2, &z, Default::default());
        })
    });
    // The k-means distance (8 centroids fitted on these rows' standardized values).
    let z_rows: Vec<Vec<f64>> = (0..ROWS)
        .map(|i| {
            (0..cols.len())
                .map(|j| (cols[j][i] - model.median[j]) / model.scale[j])
                .collect()
        })
        .collect();
    let mut with_kmeans = model.clone();
    with_kmeans.kmeans = tads_model::kmeans::train(&z_rows, model.robust_z_cut, Some(0.95));
    let km_scorer = Scorer::new(&with_kmeans);
    g.bench_function("kmeans_distance", |b| {
        b.iter(|| km_scorer.kmeans_distance(black_box(&refs), &mut out))
    });
    // The Isolation Forest score (100 trees of 256 rows, grown on the same rows).
    with_kmeans.iforest = tads_model::iforest::train(&z_rows, Some(0.95));
    let forest_scorer = Scorer::new(&with_kmeans);
    g.bench_function("iforest_score", |b| {
        b.iter(|| forest_scorer.iforest_score(black_box(&refs), &mut out))
    });
    // The one-class SVM score (fitted on the first 1,000 of the same rows).
    with_kmeans.ocsvm = tads_model::ocsvm::train(&z_rows, Some(0.95));
    let svm_scorer = Scorer::new(&with_kmeans);
    g.bench_function("ocsvm_score", |b| {
        b.iter(|| svm_scorer.ocsvm_score(black_box(&refs), &mut out))
    });
    // The seasonal baseline's largest |z| (a daily section on every metric, 10 s rows).
    let period = tads_model::season::Detected {
        period_hours: 24,
        strength: vec![0.9; cols.len()],
    };
    let slots: Vec<Vec<tads_model::season::SlotStat>> = (0..24)
        .map(|h| {
            let stat = tads_model::season::SlotStat {
                rows: 100,
                median: Some(f64::from(h) / 24.0),
                mad: Some(1.0),
            };
            vec![stat; cols.len()]
        })
        .collect();
    let mut with_season = model.clone();
    with_season.season = Some(tads_model::season::build(&model, &period, &slots, "ts"));
    let season_scorer = Scorer::new(&with_season);
    let micros: Vec<Option<i64>> = (0..ROWS as i64).map(|i| Some(i * 10_000_000)).collect();
    g.bench_function("seasonal_zmax", |b| {
        b.iter(|| season_scorer.season_zmax(black_box(&refs), &micros, &mut out))
    });
    // The forecast's largest |z| (a weekly profile on every metric, 10 s rows).
    let decomposition = tads_model::forecast::Decomposition {
        periods: vec![24, 168],
        strength: vec![vec![0.9; cols.len()]; 2],
        profile: (0..168)
            .map(|h| vec![f64::from(h % 24) / 24.0; cols.len()])
            .collect(),
    };
    let mut with_forecast = model.clone();
    let residuals = vec![Default::default(); cols.len()];
    with_forecast.forecast = Some(tads_model::forecast::build(
        &model,
        &decomposition,
        &residuals,
        "ts",
    ));
    let forecast_scorer = Scorer::new(&with_forecast);
    g.bench_function("forecast_zmax", |b| {
        b.iter(|| forecast_scorer.forecast_zmax(black_box(&refs), &micros, &mut out))
    });
    // The alert machine over fused scores with a few alerts in them.
    scorer.spe_t2_zmax(&refs, &mut out, &mut t2, &mut z);
    fusion.combine(factors, &mut out, &t2, &z, Default::default());
    let scores: Vec<f64> = out
        .iter()
        .enumerate()
        .map(|(i, s)| if i % 997 < 5 { 3.0 } else { *s })
        .collect();
    g.bench_function("alert_state_machine", |b| {
        b.iter(|| {
            let mut m = tads_model::AlertMachine::new();
            let mut inside = 0u64;
            for (i, s) in black_box(&scores).iter().enumerate() {
                let e = m.push(tads_model::Step {
                    score: Some(*s),
                    enter: Some(0.8),
                    exit: Some(0.5),
                    min_points: 3,
                    instant: Some(2.0),
                    cooldown: Some(tads_model::Cooldown::Micros(1_800_000_000)),
                    ts: Some(i as i64 * 10_000_000),
                    hold: Some(tads_model::Hold {
                        rows: 12,
                        level: 0.8,
                    }),
                });
                inside += u64::from(!matches!(
                    e,
                    tads_model::Event::Outside | tads_model::Event::Closed { .. }
                ));
            }
            inside
        })
    });
    g.bench_function("pca_contrib_per_row", |b| {
        b.iter(|| {
            for i in 0..ROWS {
                let row: Vec<f64> = refs.iter().map(|c| c[i]).collect();
                black_box(scorer.contributions(&row));
            }
        })
    });
    g.bench_function("pca_fit_update", |b| {
        b.iter(|| {
            let mut m = CoMoments::new(8);
            m.update(black_box(&refs));
            m
        })
    });
    // mad_zscore has no kernel apart from its SQL function: run it through DataFusion over an
    // in-memory table of 128 batches of the same rows, one partition (one core).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ctx = datafusion::prelude::SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(1),
    );
    tads_sql::register_all(&ctx, &tads_sql::ModelRegistry::new()).unwrap();
    let cpu = std::sync::Arc::new(arrow::array::Float64Array::from(cols[0].clone()));
    let batch =
        arrow::array::RecordBatch::try_from_iter([("x", cpu as arrow::array::ArrayRef)]).unwrap();
    let table =
        datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch; 128]]).unwrap();
    ctx.register_table("t", std::sync::Arc::new(table)).unwrap();
    g.throughput(Throughput::Elements(128 * ROWS as u64));
    g.bench_function("mad_zscore_sql_1m_rows", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let df = ctx
                    .sql("SELECT count(mad_zscore(x, 50.0, 4.0)) FROM t")
                    .await
                    .unwrap();
                black_box(df.collect().await.unwrap())
            })
        })
    });
    let mut part = CoMoments::new(8);
    part.update(&refs);
    g.throughput(Throughput::Elements(1));
    g.bench_function("pca_fit_merge_one_state", |b| {
        b.iter(|| {
            let mut m = part.clone();
            m.merge(black_box(&part));
            m
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
