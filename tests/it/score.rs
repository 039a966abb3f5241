//! `tads score`: every row with the scores SQL gives, the input's partitioning, shards whose
//! union is the whole run, any user's Parquet, bad input, and S3.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Float32Array, Float64Array, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tads_jobs::score::ScoreManifest;
use tads_store::Location;

use crate::support::{
    SMALL, assert_ok, assert_user_error, files_below, generate, generate_with_env, s3, scalar,
    score_cmd, tads, tads_session, train_cmd,
};

/// A generated dataset with a trained model `m`, in a temporary directory.
struct Scored {
    tmp: tempfile::TempDir,
    data: PathBuf,
    models: PathBuf,
}

impl Scored {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let models = tmp.path().join("models");
        assert_ok(&generate(data.to_str().unwrap(), SMALL));
        assert_ok(&train_cmd("m", &data, &models, &[]));
        Self { tmp, data, models }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `tads score --data <data> --models <models> --model m --out <out>` and `args`.
    fn score(&self, out: &Path, args: &[&str]) -> std::process::Output {
        score_cmd("m", &self.data, &self.models, out, args)
    }
}

async fn manifest(out: &Path) -> ScoreManifest {
    ScoreManifest::read(&Location::parse(out.to_str().unwrap()).unwrap())
        .await
        .unwrap()
        .expect("a manifest")
}

/// A session with the models of `models` and the tables `raw` (input) and `scored`.
async fn session(data: &Path, models: &Path, scored: &Path) -> datafusion::prelude::SessionContext {
    let ctx = tads_session(models).await;
    for (name, path) in [("raw", data), ("scored", scored)] {
        let loc = Location::parse_data(path.to_str().unwrap()).unwrap();
        tads_sql::register_dataset(&ctx, name, &loc).await.unwrap();
    }
    ctx
}

const METRICS: &str = "cpu_pct, mem_pct, disk_read_mbps, disk_write_mbps, net_rx_mbps, net_tx_mbps, latency_ms, error_rate";

#[tokio::test]
async fn every_row_gets_the_scores_sql_gives_in_the_input_partitioning() {
    let f = Scored::new();
    let out = f.out("scores");
    let run = f.score(&out, &[]);
    assert_ok(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("scored 25,920 rows with `m`") && stdout.contains("rows/s"),
        "{stdout}"
    );

    // The output mirrors the input's files, under scored/, with the alerts, the manifest and no
    // marker.
    let inputs: Vec<String> = files_below(&f.data)
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .map(|p| format!("scored/{p}"))
        .collect();
    let mut expected = inputs.clone();
    expected.push("_manifest.json".into());
    expected.push("alerts/alerts.parquet".into());
    expected.sort();
    assert_eq!(files_below(&out), expected);

    let m = manifest(&out).await;
    assert_eq!((m.rows_in, m.rows, m.rows_unscored), (25_920, 25_920, 0));
    assert_eq!(m.model.name, "m");
    assert_eq!(m.files.len(), inputs.len());
    assert!(m.run_id.starts_with("run-"));

    // Each row's scores equal what the SQL functions give on the raw row, and nothing is lost.
    let ctx = session(&f.data, &f.models, &out.join("scored")).await;
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM scored").await, "25920");
    // With the default drift baseline, each metric is shifted by how far its host's median of
    // the previous UTC day lies from the model's median; on the first day, which has no previous
    // day, by how far the median of the medians of the twelve hours before the row's hour lies
    // from it (an hour without rows counting as the model's median), once those hours hold 12
    // rows (none before).
    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.models.join("m").join("model.json")).unwrap())
            .unwrap();
    let day = |t: &str| format!("CAST(floor(to_unixtime({t}) / 86400) AS BIGINT)");
    let levels = METRICS
        .split(", ")
        .map(|m| format!("median({m}) AS {m}"))
        .collect::<Vec<_>>()
        .join(", ");
    // And by the model's daily cycle at the row's UTC hour, where it found one.
    let hour = |t: &str| format!("CAST(floor(to_unixtime({t}) / 3600) AS BIGINT)");
    let cycle_at = |j: usize, hour: &str| -> String {
        let Some(profile) = model["seasonal"]["profile"].as_array() else {
            return "0.0".into();
        };
        let arms: String = profile
            .iter()
            .enumerate()
            .map(|(h, row)| format!(" WHEN {h} THEN {:?}", row[j].as_f64().unwrap()))
            .collect();
        format!("(CASE {hour} % 24{arms} END)")
    };
    let cycle = |j: usize| cycle_at(j, &hour("r.ts"));
    assert!(model["seasonal"]["features"].is_array(), "{model}");
    let r: Vec<String> = METRICS
        .split(", ")
        .enumerate()
        .map(|(j, m)| {
            let median = model["median"][j].as_f64().unwrap();
            format!(
                "(r.{m} - (COALESCE(p.{m} - {median:?}, CASE WHEN p.host_id IS NULL AND t.n >= 12 \
                 THEN t.{m} - {median:?} END, 0.0) + {}))",
                cycle(j)
            )
        })
        .collect();
    let r = r.join(", ");
    ctx.sql(&format!(
        "CREATE VIEW prev AS SELECT host_id, {} + 1 AS day, {levels} FROM raw GROUP BY 1, 2 \
         HAVING count(*) >= 12",
        day("ts")
    ))
    .await
    .unwrap();
    // Each hour's medians less the cycle, and the median of those of the twelve hours before.
    let less_cycle: String = METRICS
        .split(", ")
        .enumerate()
        .map(|(j, m)| format!(", {m} - {} AS {m}", cycle_at(j, "hour")))
        .collect();
    ctx.sql(&format!(
        "CREATE VIEW hourly AS SELECT host_id, hour, n{less_cycle} FROM \
         (SELECT host_id, {} AS hour, count(*) AS n, {levels} FROM raw GROUP BY 1, 2)",
        hour("ts")
    ))
    .await
    .unwrap();
    // Each hour of the window without rows (or without a metric's median) counts as the
    // model's median: the window's rows, padded with that many copies of it.
    let median_of = |j: usize| format!("{:?}", model["median"][j].as_f64().unwrap());
    let in_window: String = METRICS
        .split(", ")
        .enumerate()
        .map(|(j, m)| format!(", COALESCE(h.{m}, {}) AS {m}", median_of(j)))
        .collect();
    ctx.sql(&format!(
        "CREATE VIEW in_window AS SELECT c.host_id, c.hour, h.n{in_window} FROM hourly c \
         JOIN hourly h ON h.host_id = c.host_id AND h.hour >= c.hour - 12 AND h.hour < c.hour"
    ))
    .await
    .unwrap();
    ctx.sql(
        "CREATE VIEW window_rows AS SELECT host_id, hour, count(*) AS hours, sum(n) AS n \
         FROM in_window GROUP BY 1, 2",
    )
    .await
    .unwrap();
    let names = METRICS.replace(", ", ", w.");
    let padding: String = (0..METRICS.split(", ").count())
        .map(|j| format!(", {}", median_of(j)))
        .collect();
    let medians: String = METRICS
        .split(", ")
        .map(|m| format!(", median({m}) AS {m}"))
        .collect();
    ctx.sql(&format!(
        "CREATE VIEW trail AS SELECT p.host_id, p.hour, c.n{medians} FROM \
         (SELECT w.host_id, w.hour, w.{names} FROM in_window w \
          UNION ALL SELECT c.host_id, c.hour{padding} FROM window_rows c \
          JOIN (SELECT unnest(range(12)) AS i) k ON k.i < 12 - c.hours) p \
         JOIN window_rows c ON c.host_id = p.host_id AND c.hour = p.hour GROUP BY 1, 2, 3"
    ))
    .await
    .unwrap();
    let mismatches = scalar(
        &ctx,
        &format!(
            "SELECT count(*) FROM raw r JOIN scored s ON r.host_id = s.host_id AND r.ts = s.ts \
             AND r.date = s.date \
             LEFT JOIN prev p ON p.host_id = r.host_id AND p.day = {} \
             LEFT JOIN trail t ON t.host_id = r.host_id AND t.hour = {} \
             WHERE (s.pca_spe IS DISTINCT FROM pca_score('m', {r})) \
                OR (s.pca_t2 IS DISTINCT FROM pca_t2('m', {r})) \
                OR (s.mad_zmax IS DISTINCT FROM mad_zmax('m', {r})) \
                OR (s.top_metric IS DISTINCT FROM anomaly_top_metric('m', {r}))",
            day("r.ts"),
            hour("r.ts")
        ),
    )
    .await;
    assert_eq!(mismatches, "0");
    // The shift is real: on later days the scores differ from the unshifted ones.
    let plain = METRICS
        .split(", ")
        .map(|m| format!("r.{m}"))
        .collect::<Vec<_>>()
        .join(", ");
    let shifted = scalar(
        &ctx,
        &format!(
            "SELECT count(*) FROM raw r JOIN scored s ON r.host_id = s.host_id AND r.ts = s.ts \
             WHERE s.pca_spe IS DISTINCT FROM pca_score('m', {plain})"
        ),
    )
    .await;
    assert_ne!(shifted, "0");
    let joined = scalar(
        &ctx,
        "SELECT count(*) FROM raw r JOIN scored s ON r.host_id = s.host_id AND r.ts = s.ts",
    )
    .await;
    assert_eq!(joined, "25920");

    // A second run refuses to overwrite without --overwrite, and replaces it with it.
    let again = f.score(&out, &[]);
    assert_user_error(&again, "--overwrite");
    assert_ok(&f.score(&out, &["--overwrite", "--quiet"]));
    assert_ne!(manifest(&out).await.run_id, m.run_id);
}

#[tokio::test]
async fn shards_split_the_hosts_and_their_union_is_the_single_run() {
    let f = Scored::new();
    let whole = f.out("whole");
    assert_ok(&f.score(&whole, &["--quiet"]));
    let mut rows = 0;
    let mut outs = vec![];
    for i in 1..=3 {
        let out = f.out(&format!("shard-{i}"));
        assert_ok(&f.score(&out, &["--quiet", "--shard", &format!("{i}/3")]));
        let m = manifest(&out).await;
        assert_eq!(m.rows_in, 25_920);
        assert_eq!(m.shard.unwrap().index, i);
        rows += m.rows;
        outs.push(out);
    }
    assert_eq!(rows, 25_920);
    // No host is in two shards, and every shard row equals the single run's row.
    let ctx = tads_sql::session();
    tads_sql::register_all(&ctx, &tads_sql::ModelRegistry::new()).unwrap();
    for (i, out) in outs.iter().enumerate() {
        let loc = Location::parse(out.join("scored").to_str().unwrap()).unwrap();
        tads_sql::register_dataset(&ctx, &format!("s{i}"), &loc)
            .await
            .unwrap();
    }
    let loc = Location::parse(whole.join("scored").to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "whole", &loc)
        .await
        .unwrap();
    let union = "(SELECT * FROM s0 UNION ALL SELECT * FROM s1 UNION ALL SELECT * FROM s2)";
    assert_eq!(
        scalar(
            &ctx,
            &format!(
                "SELECT count(*) FROM (SELECT host_id FROM {union} GROUP BY host_id \
                 HAVING count(DISTINCT shard_of(host_id, 3)) > 1)"
            )
        )
        .await,
        "0"
    );
    let differing = scalar(
        &ctx,
        &format!(
            "SELECT count(*) FROM (SELECT host_id, ts, pca_spe, pca_t2, mad_zmax, top_metric FROM whole \
             EXCEPT SELECT host_id, ts, pca_spe, pca_t2, mad_zmax, top_metric FROM {union})"
        ),
    )
    .await;
    assert_eq!(differing, "0");
    // Every shard scores at least one host: 6 hosts over 3 shards.
    for i in 0..3 {
        let n: u64 = scalar(&ctx, &format!("SELECT count(DISTINCT host_id) FROM s{i}"))
            .await
            .parse()
            .unwrap();
        assert!(n >= 1, "shard {} is empty", i + 1);
    }
}

/// A user's file: integer and float32 metrics, other column names, a NULL and a NaN.
fn user_file(path: &Path) {
    user_file_with(path, None, false);
}

/// [`user_file`] in row groups of `row_group` rows, with an `extra` integer column last.
fn user_file_with(path: &Path, row_group: Option<usize>, extra: bool) {
    let n = 400;
    let mut fields = vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Float32, true),
        Field::new("c", DataType::Float64, true),
    ];
    if extra {
        fields.push(Field::new("extra", DataType::Int32, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let a: Int32Array = (0..n).map(|i| Some(100 + (i * 7) % 13)).collect();
    let b: Float32Array = (0..n)
        .map(|i| match i {
            5 => None,
            _ => Some(((i as f32) * 0.37).sin() * 4.0 + 20.0),
        })
        .collect();
    let c: Float64Array = (0..n)
        .map(|i| match i {
            9 => Some(f64::NAN),
            _ => Some(f64::from((i * 7) % 13) * 2.0 + ((i as f64) * 0.11).cos()),
        })
        .collect();
    let device: StringArray = (0..n).map(|i| Some(format!("dev-{}", i % 5))).collect();
    let mut columns: Vec<datafusion::arrow::array::ArrayRef> =
        vec![Arc::new(device), Arc::new(a), Arc::new(b), Arc::new(c)];
    if extra {
        columns.push(Arc::new((0..n).collect::<Int32Array>()));
    }
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
    let props = row_group.map(|rows| {
        parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows))
            .build()
    });
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, props)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[tokio::test]
async fn any_users_parquet_file_scores_with_nulls_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("metrics.parquet");
    user_file(&file);
    let models = tmp.path().join("models");
    assert_ok(&train_cmd("u", &file, &models, &[]));
    let out = tmp.path().join("out");
    let run = score_cmd(
        "u",
        &file,
        &models,
        &out,
        &["--shard", "1/1", "--shard-by", "device"],
    );
    assert_ok(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("2 rows have a NULL or non-finite metric"),
        "{stdout}"
    );
    // No host_id or ts column: scored without alerts, and the run says why.
    assert!(
        stdout.contains("no alerts:") && stdout.contains("has no column `host_id` for alerts.key"),
        "{stdout}"
    );
    assert_eq!(
        files_below(&out),
        ["_manifest.json", "scored/metrics.parquet"]
    );
    let m = manifest(&out).await;
    assert!(m.alerts.is_none() && m.alerts_skipped.is_some());
    assert_eq!((m.rows, m.rows_unscored), (400, 2));
    let ctx = tads_sql::session();
    let loc = Location::parse_data(out.join("scored/metrics.parquet").to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "s", &loc).await.unwrap();
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM s WHERE pca_spe IS NULL AND pca_t2 IS NULL AND mad_zmax IS NULL AND top_metric IS NULL"
        )
        .await,
        "2"
    );
    // The user's columns come through unchanged.
    assert_eq!(
        scalar(&ctx, "SELECT count(DISTINCT device) FROM s").await,
        "5"
    );
}

fn footer(path: &Path) -> parquet::file::metadata::ParquetMetaData {
    use parquet::file::reader::FileReader;
    parquet::file::reader::SerializedFileReader::new(std::fs::File::open(path).unwrap())
        .unwrap()
        .metadata()
        .clone()
}

/// A scored file keeps its input's column chunks (unless the run is sharded or the file's
/// columns are not the dataset's), and every row, across row groups that batches straddle, has
/// its own scores.
#[tokio::test]
async fn a_files_column_chunks_are_kept_and_each_row_gets_its_own_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // part-1: the dataset's columns (with `extra`), in row groups of 150, 150 and 100 rows;
    // part-0 lacks `extra`, so it cannot keep its chunks.
    user_file_with(&data.join("part-0.parquet"), None, false);
    user_file_with(&data.join("part-1.parquet"), Some(150), true);
    let models = tmp.path().join("models");
    assert_ok(&train_cmd("u", &data, &models, &["--features", "a,b,c"]));

    let kept = tmp.path().join("kept");
    assert_ok(&score_cmd("u", &data, &models, &kept, &["--quiet"]));
    let input = footer(&data.join("part-1.parquet"));
    let output = footer(&kept.join("scored/part-1.parquet"));
    assert_eq!(output.num_row_groups(), 3);
    for (i, o) in input.row_groups().iter().zip(output.row_groups()) {
        assert_eq!(i.num_rows(), o.num_rows());
        assert_eq!(o.num_columns(), i.num_columns() + 6);
        for (a, b) in i.columns().iter().zip(o.columns()) {
            assert_eq!(
                (a.column_path(), a.compressed_size(), a.encodings_mask()),
                (b.column_path(), b.compressed_size(), b.encodings_mask())
            );
        }
    }
    // Rewritten (no row groups of 150), and with `extra` as NULL where the input has none.
    let rewritten = footer(&kept.join("scored/part-0.parquet"));
    assert_eq!(rewritten.num_row_groups(), 1);

    // Each row has its own scores, in both files, and every row is there in the input's order.
    let ctx = tads_session(&models).await;
    let loc = Location::parse_data(kept.join("scored").to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "s", &loc).await.unwrap();
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM s").await, "800");
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM s WHERE (pca_spe IS DISTINCT FROM pca_score('u', a, b, c)) \
             OR (top_metric IS DISTINCT FROM anomaly_top_metric('u', a, b, c)) \
             OR (score IS DISTINCT FROM anomaly_score('u', a, b, c))"
        )
        .await,
        "0"
    );
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM s WHERE extra IS NULL").await,
        "400"
    );
    let file = |p: &Path| {
        let f = std::fs::File::open(p).unwrap();
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(f, 1024).unwrap();
        r.map(|b| b.unwrap()).collect::<Vec<_>>()
    };
    let (a, b) = (
        file(&data.join("part-1.parquet")),
        file(&kept.join("scored/part-1.parquet")),
    );
    let a = datafusion::arrow::compute::concat_batches(&a[0].schema(), &a).unwrap();
    let b = datafusion::arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
    for c in 0..a.num_columns() {
        // The scored file reads strings as views, as DataFusion reads the input.
        let kept = datafusion::arrow::compute::cast(b.column(c), a.column(c).data_type()).unwrap();
        assert_eq!(a.column(c), &kept, "column {c}");
    }

    // A sharded run rewrites every file, with the same scores.
    let sharded = tmp.path().join("sharded");
    assert_ok(&score_cmd(
        "u",
        &data,
        &models,
        &sharded,
        &["--quiet", "--shard", "1/1", "--shard-by", "device"],
    ));
    assert_eq!(
        footer(&sharded.join("scored/part-1.parquet")).num_row_groups(),
        1
    );
    let loc = Location::parse_data(sharded.join("scored").to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "r", &loc).await.unwrap();
    let join = "SELECT count(*) FROM s JOIN r ON s.device = r.device \
                AND (s.a IS NOT DISTINCT FROM r.a) AND (s.b IS NOT DISTINCT FROM r.b) \
                AND (s.c IS NOT DISTINCT FROM r.c) AND (s.extra IS NOT DISTINCT FROM r.extra)";
    let joined: u64 = scalar(&ctx, join).await.parse().unwrap();
    assert!(joined >= 798, "{joined} rows joined");
    let same = format!(
        "{join} WHERE (s.pca_spe IS NOT DISTINCT FROM r.pca_spe) \
         AND (s.score IS NOT DISTINCT FROM r.score) AND (s.top_metric IS NOT DISTINCT FROM r.top_metric)"
    );
    assert_eq!(scalar(&ctx, &same).await, joined.to_string());
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let f = Scored::new();
    let out = f.out("bad");
    let out_str = out.to_str().unwrap();
    let run = score_cmd("nope", &f.data, &f.models, &out, &[]);
    assert_user_error(&run, "no such model");
    assert!(!out.exists());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--shard".into(), "0/3".into()], "--shard"),
        (vec!["--shard-by".into(), "x".into()], "--shard"),
        (
            vec![
                "--shard".into(),
                "1/2".into(),
                "--shard-by".into(),
                "nope".into(),
            ],
            "no column `nope`",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_user_error(&f.score(&out, &args), needle);
        assert!(!out.exists(), "{args:?} wrote {out_str}");
    }
    // The output may not overlap the input.
    let inside = f.data.join("scores");
    assert_user_error(&f.score(&inside, &[]), "overlaps the input");
    assert!(!inside.exists());
    // A model whose features the data lacks names the missing column.
    let other = tempfile::tempdir().unwrap();
    let file = other.path().join("u.parquet");
    user_file(&file);
    assert_ok(&train_cmd("u", &file, &f.models, &[]));
    let run = score_cmd("u", &f.data, &f.models, &out, &[]);
    assert_user_error(&run, "has no column `a`, which model `u` needs");
    // A file that is not Parquet: one line naming the dataset, nothing written.
    let broken = f.out("broken");
    std::fs::create_dir_all(broken.join("date=2026-01-01")).unwrap();
    std::fs::write(
        broken.join("date=2026-01-01/part-0.parquet"),
        b"not parquet",
    )
    .unwrap();
    let run = score_cmd("m", &broken, &f.models, &out, &[]);
    assert_user_error(&run, "cannot read the schema of its Parquet files");
    assert_user_error(&run, &broken.display().to_string());
    assert!(!out.exists());
    // A single file that is not Parquet is named itself, not its folder.
    let file = broken.join("date=2026-01-01/part-0.parquet");
    let run = score_cmd("m", &file, &f.models, &out, &[]);
    assert_user_error(&run, &format!("{}: cannot read the schema", file.display()));
    assert!(!out.exists());
    // Scoring a score output is refused before anything is written.
    let scores = f.out("scores");
    assert_ok(&f.score(&scores, &["--quiet"]));
    let run = score_cmd("m", &scores.join("scored"), &f.models, &out, &[]);
    assert_user_error(&run, "already has a column `pca_spe`");
    assert!(!out.exists());
}

#[tokio::test]
async fn scores_from_s3_to_s3() {
    let server = s3();
    let bucket = server.bucket("tads-score");
    let env = server.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = format!("s3://{bucket}/telemetry");
    let models = format!("s3://{bucket}/models");
    let out = format!("s3://{bucket}/scores");
    assert_ok(&generate_with_env(&data, SMALL, &env));
    let run = |args: &[&str]| {
        tads()
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    assert_ok(&run(&[
        "train", "--quiet", "--model", "m", "--data", &data, "--models", &models,
    ]));
    assert_ok(&run(&[
        "score", "--quiet", "--model", "m", "--data", &data, "--models", &models, "--out", &out,
    ]));
    let out = server.location(&out);
    let m = ScoreManifest::read(&out).await.unwrap().expect("manifest");
    assert_eq!(m.rows, 25_920);
    let ctx = tads_sql::session();
    let scored = server.location(&format!("s3://{bucket}/scores/scored"));
    tads_sql::register_dataset(&ctx, "s", &scored)
        .await
        .unwrap();
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM s WHERE pca_spe IS NOT NULL").await,
        "25920"
    );
    assert_eq!(
        scalar(&ctx, "SELECT count(DISTINCT date) FROM s").await,
        "3"
    );
}

#[test]
fn an_output_that_resolves_into_the_input_is_refused_and_the_input_survives() {
    let f = Scored::new();
    let before = files_below(&f.data);
    let link = f.out("dslink");
    std::os::unix::fs::symlink(&f.data, &link).unwrap();
    let outs = [
        link.clone(),
        link.join("scores"),
        f.out("nothing/../dslink"),
        f.data.join("date=2026-01-01/../scores"),
        PathBuf::from(format!("file://{}", link.display())),
    ];
    for out in &outs {
        let run = f.score(out, &["--overwrite", "--quiet"]);
        assert_user_error(&run, "overlaps the input");
        assert_eq!(files_below(&f.data), before, "--out {}", out.display());
    }
    // The reverse: the input named through the link, the output the real folder.
    let run = score_cmd("m", &link, &f.models, &f.data, &["--overwrite"]);
    assert_user_error(&run, "overlaps the input");
    assert_eq!(files_below(&f.data), before);
    // A symlink does not let scores be written inside the input either.
    let inside = f.out("inside");
    std::os::unix::fs::symlink(f.data.join("new"), &inside).unwrap();
    assert_user_error(&f.score(&inside, &[]), "overlaps the input");
    assert!(!f.data.join("new").exists());
    assert_eq!(files_below(&f.data), before);
}

/// Writes a lock at `out` as a `tads score` run with process `pid` on this host would.
fn lock_as(out: &Path, pid: u32) {
    std::fs::create_dir_all(out).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = serde_json::json!({
        "writer": "tads score", "run_id": "run-other", "pid": pid,
        "host": host.trim(), "started_at": "2026-01-01T00:00:00Z",
    });
    std::fs::write(out.join(tads_store::LOCK), lock.to_string()).unwrap();
}

#[test]
fn an_output_has_one_writer_and_a_stale_lock_is_broken_on_request() {
    let f = Scored::new();
    let out = f.out("scores");
    assert_ok(&f.score(&out, &["--quiet"]));
    let before = files_below(&out);
    // A live writer (this test's own process stands for it): refused, nothing touched.
    lock_as(&out, std::process::id());
    let run = f.score(&out, &["--overwrite", "--quiet"]);
    assert_user_error(&run, "is locked by tads score run run-other");
    assert_user_error(&run, "wait for it to finish");
    let mut with_lock = before.clone();
    with_lock.push(tads_store::LOCK.to_string());
    with_lock.sort();
    assert_eq!(files_below(&out), with_lock);
    // A writer that is gone (this host, no such pid): its lock is taken over, with a note.
    lock_as(&out, u32::MAX - 1);
    let run = f.score(&out, &["--overwrite", "--quiet"]);
    assert_ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("removed the lock of tads score run run-other")
            && stderr.contains("no longer running"),
        "{stderr}"
    );
    assert_eq!(files_below(&out), before, "the lock is gone after the run");
    // --break-lock removes a lock whatever its holder.
    lock_as(&out, std::process::id());
    assert_ok(&f.score(&out, &["--overwrite", "--break-lock", "--quiet"]));
    assert_eq!(files_below(&out), before);
    // Two runs at once: never both; the output left is complete.
    let spawn = || {
        tads()
            .args(["score", "--quiet", "--overwrite", "--model", "m", "--data"])
            .arg(&f.data)
            .arg("--models")
            .arg(&f.models)
            .arg("--out")
            .arg(&out)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let runs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for run in runs.iter().filter(|r| !r.status.success()) {
        assert_user_error(run, "is locked by tads score run");
    }
    assert!(runs.iter().any(|r| r.status.success()));
    assert_eq!(files_below(&out), before);
}

/// A file of three float metrics `a`, `b`, `c` over 400 rows, `c` at row `i` from `at(i)`.
pub(crate) fn three_metrics(path: &Path, at: impl Fn(usize) -> Option<f64>) {
    let n = 400;
    let schema = Arc::new(Schema::new(
        ["a", "b", "c"]
            .map(|f| Field::new(f, DataType::Float64, true))
            .to_vec(),
    ));
    let wave = |i: usize, k: f64| ((i as f64) * k).sin() * 3.0 + 10.0;
    let a: Float64Array = (0..n).map(|i| Some(wave(i, 0.37))).collect();
    let b: Float64Array = (0..n)
        .map(|i| Some(wave(i, 0.37) * 2.0 + wave(i, 0.05)))
        .collect();
    let c: Float64Array = (0..n).map(|i| at(i).or(Some(wave(i, 0.11)))).collect();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(a), Arc::new(b), Arc::new(c)],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[tokio::test]
async fn a_value_far_out_of_range_is_scored_highest_and_too_large_training_values_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (
        tmp.path().join("train.parquet"),
        tmp.path().join("test.parquet"),
    );
    three_metrics(&train, |_| None);
    three_metrics(&test, |i| (i == 200).then_some(1e160));
    let models = tmp.path().join("models");
    assert_ok(&train_cmd("w", &train, &models, &[]));
    let out = tmp.path().join("out");
    assert_ok(&score_cmd("w", &test, &models, &out, &["--quiet"]));
    let m = manifest(&out).await;
    assert_eq!((m.rows, m.rows_unscored), (400, 0));
    let ctx = tads_sql::session();
    let loc = Location::parse_data(out.join("scored").to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "s", &loc).await.unwrap();
    // The 1e160 row is the most anomalous of all, with finite scores.
    assert_eq!(
        scalar(&ctx, "SELECT c FROM s ORDER BY score DESC LIMIT 1").await,
        "1e160"
    );
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM s WHERE c > 1e150 AND score > 1e50 AND score < 1e300 AND pca_spe IS NOT NULL"
        )
        .await,
        "1"
    );
    // Values near ±1e308 would overflow the MAD into a non-finite scale: refused, named.
    let huge = tmp.path().join("huge.parquet");
    three_metrics(&huge, |i| {
        Some(if i % 2 == 0 { f64::MAX } else { -f64::MAX })
    });
    assert_user_error(
        &train_cmd("h", &huge, &models, &[]),
        "feature `c`: its values are too large for robust statistics",
    );
}

#[tokio::test]
async fn a_file_without_a_non_metric_column_reads_it_as_null() {
    let f = Scored::new();
    // Rewrite one input file without `region` (the writer protocol's files are plain Parquet).
    let file = files_below(&f.data)
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .nth(1)
        .map(|p| f.data.join(p))
        .unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let keep: Vec<usize> = (0..batches[0].num_columns())
        .filter(|&i| batches[0].schema().field(i).name() != "region")
        .collect();
    let schema = Arc::new(batches[0].schema().project(&keep).unwrap());
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&file).unwrap(),
        Arc::clone(&schema),
        None,
    )
    .unwrap();
    for b in &batches {
        w.write(&b.project(&keep).unwrap()).unwrap();
    }
    w.close().unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();

    let out = f.out("scores");
    assert_ok(&f.score(&out, &["--quiet"]));
    let ctx = session(&f.data, &f.models, &out.join("scored")).await;
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM scored").await, "25920");
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM scored WHERE region IS NULL").await,
        rows.to_string()
    );
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM scored WHERE score IS NULL").await,
        "0"
    );
}
