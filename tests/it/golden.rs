//! The golden fixture under `data/golden/`: a small generated dataset, the model trained on it
//! and the scores of every row. It is a regression baseline that only changes on purpose:
//! `TADS_BLESS=1 cargo test --test it golden` rewrites it (review the diff).

use std::path::{Path, PathBuf};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Float64Type;
use datafusion::arrow::util::display::array_value_to_string;
use tads_model::ModelArtifact;
use tads_store::Location;

use crate::support::{assert_ok, files_below, generate, query, tads};

const ARGS: &[&str] = &[
    "--hosts",
    "2",
    "--duration",
    "1d",
    "--interval",
    "5m",
    "--seed",
    "1",
    "--anomaly-rate",
    "3",
];
const METRICS: &str = "cpu_pct, mem_pct, disk_read_mbps, disk_write_mbps, net_rx_mbps, net_tx_mbps, latency_ms, error_rate";

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/golden")
}

fn train_into(data: &Path, models: &Path, extra: &[&str]) {
    let out = tads()
        .args(["train", "--quiet", "--model", "golden", "--k", "2"])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--models",
            models.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert_ok(&out);
}

/// `host_id,ts,pca_spe,pca_t2,mad_zmax,top_metric` for every row, in (host_id, ts) order.
async fn scores(data: &Path, models: &Path) -> String {
    let ctx = crate::support::tads_session(models).await;
    tads_sql::register_dataset(&ctx, "t", &Location::parse(data.to_str().unwrap()).unwrap())
        .await
        .unwrap();
    let sql = format!(
        "SELECT CAST(host_id AS VARCHAR) AS host, CAST(ts AS VARCHAR) AS time, \
         pca_score('golden', {METRICS}) AS spe, pca_t2('golden', {METRICS}) AS t2, \
         mad_zmax('golden', {METRICS}) AS zmax, pca_top_metric('golden', {METRICS}) AS top \
         FROM t ORDER BY host_id, ts"
    );
    let mut csv = String::from("host_id,ts,pca_spe,pca_t2,mad_zmax,top_metric\n");
    for b in query(&ctx, &sql).await {
        for i in 0..b.num_rows() {
            let text = |c: usize| array_value_to_string(b.column(c), i).unwrap();
            let num =
                |c: usize| format!("{:?}", b.column(c).as_primitive::<Float64Type>().value(i));
            csv.push_str(&format!(
                "{},{},{},{},{},{}\n",
                text(0),
                text(1),
                num(2),
                num(3),
                num(4),
                text(5)
            ));
        }
    }
    csv
}

fn close(a: &str, b: &str, what: &str) {
    let (x, y): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(
        (x - y).abs() <= 1e-9 * y.abs().max(1e-9),
        "{what}: {a} vs {b}"
    );
}

#[tokio::test]
async fn the_golden_fixture_is_reproduced() {
    let root = golden();
    let (data, models) = (root.join("telemetry"), root.join("models"));
    if std::env::var("TADS_BLESS").is_ok() {
        assert_ok(&generate(
            data.to_str().unwrap(),
            &[ARGS, &["--overwrite"]].concat(),
        ));
        train_into(&data, &models, &["--overwrite"]);
        std::fs::write(root.join("scores.csv"), scores(&data, &models).await).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();

    // 1. The generator makes the same bytes.
    let fresh = tmp.path().join("telemetry");
    assert_ok(&generate(fresh.to_str().unwrap(), ARGS));
    let parquet: Vec<String> = files_below(&data)
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert!(!parquet.is_empty(), "no golden data: run with TADS_BLESS=1");
    for f in &parquet {
        assert!(
            std::fs::read(data.join(f)).unwrap() == std::fs::read(fresh.join(f)).unwrap(),
            "the generator changed {f}: review, then TADS_BLESS=1"
        );
    }

    // 2. Training on the committed data gives the committed model.
    let committed =
        ModelArtifact::from_json(&std::fs::read(models.join("golden/model.json")).unwrap())
            .unwrap();
    let retrained_dir = tmp.path().join("models");
    train_into(&data, &retrained_dir, &[]);
    let retrained =
        ModelArtifact::from_json(&std::fs::read(retrained_dir.join("golden/model.json")).unwrap())
            .unwrap();
    assert_eq!(retrained.features, committed.features);
    assert_eq!(retrained.median, committed.median);
    assert_eq!(retrained.mad, committed.mad);
    assert_eq!(
        (retrained.pca.k, retrained.training.rows_used),
        (committed.pca.k, committed.training.rows_used)
    );
    for (a, b) in retrained
        .pca
        .eigenvalues
        .iter()
        .zip(&committed.pca.eigenvalues)
    {
        close(&a.to_string(), &b.to_string(), "eigenvalue");
    }
    for (ra, rb) in retrained
        .pca
        .components
        .iter()
        .zip(&committed.pca.components)
    {
        for (a, b) in ra.iter().zip(rb) {
            close(&a.to_string(), &b.to_string(), "component");
        }
    }
    let t = |m: &ModelArtifact| {
        [
            m.thresholds.spe_jm_99,
            m.thresholds.spe_empirical_99,
            m.thresholds.t2_99,
        ]
    };
    for (a, b) in t(&retrained).iter().zip(t(&committed)) {
        close(
            &a.unwrap().to_string(),
            &b.unwrap().to_string(),
            "threshold",
        );
    }

    // 3. Scoring the committed data with the committed model gives the committed scores.
    let expected = std::fs::read_to_string(root.join("scores.csv")).unwrap();
    let actual = scores(&data, &models).await;
    assert_eq!(actual.lines().count(), expected.lines().count());
    assert_eq!(expected.lines().count(), 2 * 288 + 1);
    for (a, e) in actual.lines().zip(expected.lines()).skip(1) {
        let (a, e): (Vec<&str>, Vec<&str>) = (a.split(',').collect(), e.split(',').collect());
        assert_eq!(a[..2], e[..2]);
        for c in 2..5 {
            close(a[c], e[c], &format!("{} {} column {c}", e[0], e[1]));
        }
        assert_eq!(a[5], e[5], "top metric at {} {}", e[0], e[1]);
    }
}
