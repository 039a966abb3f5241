//! The sqllogictest files under `sql/` (`*.slt`), run against a TADS session whose models come
//! from `sql/models/`. `TADS_SLT_COMPLETE=1` rewrites their expected results (review the diff);
//! `TADS_BLESS=1` retrains the fixture models `sql/models/tiny` and `tiny_km`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};
use tads_model::train::{TrainOptions, artifact, fit_in_memory};
use tads_model::{KRule, ModelArtifact};
use tads_sql::ModelRegistry;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A TADS session as a sqllogictest database.
struct Tads {
    ctx: SessionContext,
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating()
            || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
        {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for Tads {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let df = self.ctx.sql(sql).await?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = vec![];
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()?;
            for i in 0..batch.num_rows() {
                rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
            }
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}
}

/// The deterministic data the fixture model is trained on: `b` follows `a`, `c` is independent.
fn tiny_data() -> Vec<Vec<f64>> {
    let n = 400;
    let a: Vec<f64> = (0..n)
        .map(|i| {
            let i = f64::from(i);
            10.0 + 3.0 * (i * 0.1).sin() + 0.2 * (i * 7.3).sin()
        })
        .collect();
    let b = a
        .iter()
        .enumerate()
        .map(|(i, a)| 2.0 * a + 0.3 * (i as f64 * 3.1).cos())
        .collect();
    let c = (0..n)
        .map(|i| {
            let i = f64::from(i);
            5.0 + (i * 0.37).cos() + 0.1 * (i * 11.0).sin()
        })
        .collect();
    vec![a, b, c]
}

fn tiny_model() -> ModelArtifact {
    let options = TrainOptions {
        k_rule: KRule::Fixed(1),
        ..TrainOptions::default()
    };
    let fitted = fit_in_memory(&tiny_data(), &options).unwrap();
    let features: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    artifact(
        "tiny",
        &features,
        &fitted,
        &options,
        400,
        "tads:tests/it/slt.rs#tiny_data",
        None,
    )
    .unwrap()
}

/// The tiny model with a k-means section, an Isolation Forest and a one-class SVM fitted on its
/// own training rows, and a seasonal baseline made by hand, as `tiny_km`.
fn tiny_kmeans_model() -> ModelArtifact {
    let mut m = tiny_model();
    let data = tiny_data();
    let rows: Vec<Vec<f64>> = (0..data[0].len())
        .map(|i| {
            (0..3)
                .map(|j| (data[j][i] - m.median[j]) / m.scale[j])
                .collect()
        })
        .collect();
    m.name = "tiny_km".into();
    m.kmeans = tads_model::kmeans::train(&rows, m.robust_z_cut, Some(0.95));
    // A small forest (10 trees of 64 rows) keeps the fixture file small.
    m.iforest = tads_model::iforest::train_with(&rows, Some(0.95), 10, 64);
    m.ocsvm = tads_model::ocsvm::train(&rows, Some(0.95));
    // A daily seasonal baseline on `a` alone: its centre 1 below its median before noon UTC and
    // 1 above after, its spread 0.5 (unscaled MAD) in every hour.
    let period = tads_model::season::Detected {
        period_hours: 24,
        strength: vec![0.9, 0.0, 0.0],
    };
    let slots: Vec<Vec<tads_model::season::SlotStat>> = (0..24)
        .map(|h| {
            let a = tads_model::season::SlotStat {
                rows: 100,
                median: Some(if h < 12 { -1.0 } else { 1.0 }),
                mad: Some(0.5),
            };
            vec![a, Default::default(), Default::default()]
        })
        .collect();
    m.season = Some(tads_model::season::build(&m, &period, &slots, "ts"));
    // A daily forecast on `a` alone: 2 above its median from noon UTC, the interval 1 below it
    // (raised to a's scale, 3.13) and 9 above; `b` and `c` without residuals get the Gaussian
    // interval of their scale.
    let decomposition = tads_model::forecast::Decomposition {
        periods: vec![24],
        strength: vec![vec![0.9, 0.0, 0.0]],
        profile: (0..24)
            .map(|h| vec![if h < 12 { 0.0 } else { 2.0 }, 0.0, 0.0])
            .collect(),
    };
    let a = tads_model::forecast::Residuals {
        median: Some(0.0),
        low: Some(-1.0),
        high: Some(9.0),
    };
    let residuals = [a, Default::default(), Default::default()];
    m.forecast = Some(tads_model::forecast::build(
        &m,
        &decomposition,
        &residuals,
        "ts",
    ));
    assert!(m.kmeans.is_some() && m.iforest.is_some());
    m.seal()
}

#[test]
fn the_fixture_models_are_what_training_makes() {
    for (name, trained) in [("tiny", tiny_model()), ("tiny_km", tiny_kmeans_model())] {
        check_fixture(name, trained);
    }
}

fn check_fixture(name: &str, trained: ModelArtifact) {
    let path = root().join(format!("sql/models/{name}/model.json"));
    if std::env::var("TADS_BLESS").is_ok() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, trained.to_json()).unwrap();
    }
    let committed =
        ModelArtifact::from_json(&std::fs::read(&path).expect("a fixture model.json")).unwrap();
    assert_eq!(
        committed.fingerprint, trained.fingerprint,
        "training changed the fixture model: review, then TADS_BLESS=1"
    );
}

async fn session() -> SessionContext {
    let ctx = tads_sql::session();
    let registry = ModelRegistry::new();
    let models = tads_store::Location::parse(root().join("sql/models").to_str().unwrap()).unwrap();
    assert!(registry.load_dir(&models).await.unwrap() >= 1);
    tads_sql::register_all(&ctx, &registry).unwrap();
    ctx
}

fn slt_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "slt") {
                out.push(p);
            }
        }
    }
    let mut out = vec![];
    walk(&root().join("sql"), &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files under sql/");
    let complete = std::env::var("TADS_SLT_COMPLETE").is_ok();
    let mut failures = vec![];
    for file in &files {
        let mut runner = sqllogictest::Runner::new(|| async {
            Ok::<_, DataFusionError>(Tads {
                ctx: session().await,
            })
        });
        runner.with_column_validator(sqllogictest::strict_column_validator);
        let result = if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::strict_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(file)
                .await
                .map_err(|e| e.display(true).to_string())
        };
        if let Err(e) = result {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
