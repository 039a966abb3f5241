//! `tads train`: the DataFusion job against the in-memory reference trainer, pruning, bad input,
//! and S3.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Float64Type;
use tads_model::train::{TrainOptions, fit_in_memory};
use tads_model::{KRule, ModelArtifact};
use tads_store::Location;

use crate::support::{
    FEATURES, SMALL, assert_ok, assert_user_error, generate, query, s3, score_cmd, tads,
    tads_session,
};

fn train(args: &[&str]) -> std::process::Output {
    tads().arg("train").args(args).output().unwrap()
}

/// A generated dataset and an empty models folder, in a temporary directory.
struct Fixture {
    tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    models: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let models = tmp.path().join("models");
        assert_ok(&generate(data.to_str().unwrap(), SMALL));
        Self { tmp, data, models }
    }

    /// `tads train --data <data> --models <models>` with `args`.
    fn train(&self, args: &[&str]) -> std::process::Output {
        let base = [
            "--data",
            self.data.to_str().unwrap(),
            "--models",
            self.models.to_str().unwrap(),
        ];
        train(&[&base[..], args].concat())
    }
}

fn read_model(dir: &std::path::Path, name: &str) -> ModelArtifact {
    ModelArtifact::from_json(&std::fs::read(dir.join(name).join("model.json")).unwrap()).unwrap()
}

fn close(a: f64, b: f64, rel: f64, what: &str) {
    assert!(
        (a - b).abs() <= rel * b.abs().max(1e-12),
        "{what}: {a} vs {b}"
    );
}

#[tokio::test]
async fn the_sql_job_equals_the_in_memory_reference() {
    let f = Fixture::new();
    let (data, models) = (&f.data, &f.models);
    let out = f.train(&["--model", "m", "--k", "3", "--trim", "0.01"]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("trained `m` on 25,920 rows") && stdout.contains("rows/s"),
        "{stdout}"
    );
    let model = read_model(models, "m");
    assert_eq!(model.features, FEATURES);
    assert_eq!(model.pca.k, 3);
    assert_eq!(model.training.rows_seen, 25_920);

    // The same rows, in memory.
    let ctx = tads_sql::session();
    tads_sql::register_dataset(&ctx, "t", &Location::parse(data.to_str().unwrap()).unwrap())
        .await
        .unwrap();
    let batches = query(&ctx, &format!("SELECT {} FROM t", FEATURES.join(", "))).await;
    let columns: Vec<Vec<f64>> = (0..8)
        .map(|j| {
            batches
                .iter()
                .flat_map(|b| b.column(j).as_primitive::<Float64Type>().values().to_vec())
                .collect()
        })
        .collect();
    let options = TrainOptions {
        k_rule: KRule::Fixed(3),
        trim: Some(0.01),
        ..TrainOptions::default()
    };
    let reference = fit_in_memory(&columns, &options).unwrap();
    assert_eq!(
        model.median, reference.standardizer.median,
        "medians are exact both ways"
    );
    assert_eq!(model.mad, reference.standardizer.mad);
    assert_eq!(model.training.rows_used, reference.rows_used);
    for i in 0..8 {
        close(
            model.pca.eigenvalues[i],
            reference.pca.eigenvalues[i],
            1e-9,
            &format!("eigenvalue {i}"),
        );
    }
    for i in 0..3 {
        let sign = (0..8)
            .map(|j| model.pca.components[j][i] * reference.pca.components[i][j])
            .sum::<f64>()
            .signum();
        for j in 0..8 {
            let (a, b) = (
                model.pca.components[j][i],
                sign * reference.pca.components[i][j],
            );
            assert!((a - b).abs() < 1e-9, "component {i}[{j}]: {a} vs {b}");
        }
    }
    // The job's SPE quantiles are of the scores SQL gives, to single precision (2^-24 relative).
    close(
        model.thresholds.spe_empirical_99.unwrap(),
        reference.spe_quantiles.0.unwrap(),
        1e-7,
        "SPE q99",
    );
    close(
        model.thresholds.spe_empirical_999.unwrap(),
        reference.spe_quantiles.1.unwrap(),
        1e-7,
        "SPE q999",
    );
}

#[test]
fn a_partition_filter_selects_the_training_rows() {
    let f = Fixture::new();
    let out = f.train(&[
        "--model",
        "day1",
        "--where",
        "date = '2026-01-01'",
        "--features",
        "cpu_pct,net_rx_mbps,latency_ms",
    ]);
    assert_ok(&out);
    let model = read_model(&f.models, "day1");
    assert_eq!(model.training.rows_seen, 6 * 1440);
    assert_eq!(
        model.training.filter.as_deref(),
        Some("date = '2026-01-01'")
    );
    assert_eq!(model.features, ["cpu_pct", "net_rx_mbps", "latency_ms"]);
    assert!(model.pca.k >= 1 && model.pca.k <= 2);
}

#[test]
fn trains_on_a_single_parquet_file() {
    let f = Fixture::new();
    let file = f.data.join("date=2026-01-02/part-00000.parquet");
    let models = &f.models;
    let out = train(&[
        "--data",
        file.to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
        "--model",
        "one",
    ]);
    assert_ok(&out);
    let model = read_model(models, "one");
    assert_eq!(model.training.rows_seen, 6 * 1440);
    assert!(
        model
            .training
            .data_uri
            .ends_with("date=2026-01-02/part-00000.parquet"),
        "{}",
        model.training.data_uri
    );
    assert_eq!(
        model.features, FEATURES,
        "no partition column from a single file"
    );
}

#[test]
fn bad_training_input_is_one_line_exit_2() {
    let f = Fixture::new();
    let models = &f.models;
    let m = models.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--model", "x", "--features", "cpu_pct,nope"],
            "--features: no column `nope`",
        ),
        (
            vec!["--model", "x", "--features", "host_id"],
            "--features: column `host_id` is Dictionary",
        ),
        (vec!["--model", "x", "--where", "date >"], "--where date >:"),
        (
            vec!["--model", "x", "--where", "date = '1999-01-01'"],
            "no rows match --where",
        ),
        (vec!["--model", "bad/name"], "not a model name"),
        (
            vec!["--model", "x", "--k", "9"],
            "k must be between 1 and 7",
        ),
        (vec!["--model", "x", "--trim", "0.7"], "--trim: 0.7"),
        (vec!["--model", "x", "--k", "2", "--variance", "0.9"], "--k"),
    ];
    for (args, needle) in cases {
        assert_user_error(&f.train(&args), needle);
    }
    // A feature with no finite value: the one line names the data and the feature.
    let nan = f.tmp.path().join("nan.parquet");
    crate::score::three_metrics(&nan, |_| Some(f64::NAN));
    let refused = train(&[
        "--data",
        nan.to_str().unwrap(),
        "--model",
        "x",
        "--models",
        m,
    ]);
    assert_user_error(&refused, ": feature `c` has no finite value");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let folder = f.tmp.path().to_str().unwrap();
    assert!(stderr.starts_with(&format!("error: {folder}")), "{stderr}");
    assert!(
        !models.join("x").exists(),
        "a refused training wrote a model"
    );
    assert_user_error(
        &train(&[
            "--data",
            f.tmp.path().join("none").to_str().unwrap(),
            "--model",
            "x",
            "--models",
            m,
        ]),
        "holds no .parquet files",
    );
    // An existing model is kept unless --overwrite.
    assert_ok(&f.train(&["--model", "x", "--k", "2"]));
    let before = std::fs::read(models.join("x/model.json")).unwrap();
    assert_user_error(&f.train(&["--model", "x", "--k", "3"]), "pass --overwrite");
    assert_eq!(std::fs::read(models.join("x/model.json")).unwrap(), before);
    assert_ok(&f.train(&["--model", "x", "--k", "3", "--overwrite"]));
    assert_eq!(read_model(models, "x").pca.k, 3);
}

#[tokio::test]
async fn trains_from_s3_into_s3() {
    let s3 = s3();
    let bucket = s3.bucket("tads-train-e2e");
    let data = format!("s3://{bucket}/telemetry");
    let models = format!("s3://{bucket}/models");
    let env: Vec<(&str, String)> = s3.env();
    let out = tads()
        .args([
            "generate",
            "--quiet",
            "--out",
            &data,
            "--hosts",
            "3",
            "--duration",
            "1d",
            "--interval",
            "1m",
        ])
        .envs(env.clone())
        .output()
        .unwrap();
    assert_ok(&out);
    let out = tads()
        .args([
            "train", "--quiet", "--data", &data, "--models", &models, "--model", "s3m",
        ])
        .envs(env)
        .output()
        .unwrap();
    assert_ok(&out);
    let loc = s3.location(&models);
    let bytes = loc
        .get_opt("s3m/model.json")
        .await
        .unwrap()
        .expect("model in S3");
    let model = ModelArtifact::from_json(&bytes).unwrap();
    assert_eq!(model.training.rows_seen, 3 * 1440);
    assert!(
        model
            .training
            .data_uri
            .starts_with("s3://tads-train-e2e/telemetry")
    );
    // The registry loads it back from S3.
    let registry = tads_sql::ModelRegistry::new();
    assert_eq!(registry.load_dir(&loc).await.unwrap(), 1);
    assert_eq!(
        registry.get("s3m").unwrap().artifact.fingerprint,
        model.fingerprint
    );
}

/// Components equal up to sign, to `rel`.
fn same_components(a: &ModelArtifact, b: &ModelArtifact, rel: f64) {
    assert_eq!(a.pca.k, b.pca.k, "k");
    for c in 0..a.pca.k {
        let dot: f64 = (0..a.dims())
            .map(|j| a.pca.components[j][c] * b.pca.components[j][c])
            .sum();
        close(dot.abs(), 1.0, rel, "component alignment");
    }
}

#[tokio::test]
async fn group_by_trains_the_model_each_value_would_get_alone() {
    let f = Fixture::new();
    // host-0001 keeps only its first 30 minutes: too few rows for a model of 8 features.
    let filter = "host_id <> 'host-0001' OR ts < '2026-01-01T00:30:00Z'";
    let out = f.train(&[
        "--model",
        "hosts",
        "--group-by",
        "host_id",
        "--where",
        filter,
    ]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("trained `hosts`: 5 models by host_id")
            && stdout.contains("1 values got no model")
            && stdout.contains("`host-0001`: 30 rows, fewer than 80"),
        "{stdout}"
    );
    let group = tads_model::ModelGroup::from_json(
        &std::fs::read(f.models.join("hosts").join("group.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(group.group_by, "host_id");
    assert_eq!(group.members.len(), 5);
    assert_eq!(group.skipped[0].key, "host-0001");
    assert_eq!(group.rows_seen, 5 * 4320 + 30);

    // Each member is the model `--where host_id = …` trains on that host alone.
    for member in &group.members {
        let key = group.key_of(member).to_string();
        let alone = format!("alone-{key}");
        assert_ok(&f.train(&[
            "--model",
            &alone,
            "--where",
            &format!("({filter}) AND host_id = '{key}'"),
        ]));
        let single = read_model(&f.models, &alone);
        assert_eq!(member.median, single.median, "{key} median");
        assert_eq!(member.mad, single.mad, "{key} mad");
        assert_eq!(member.training.rows_used, single.training.rows_used);
        for (a, b) in member.pca.eigenvalues.iter().zip(&single.pca.eigenvalues) {
            close(*a, *b, 1e-9, "eigenvalue");
        }
        same_components(member, &single, 1e-9);
        close(
            member.thresholds.spe_empirical_99.unwrap(),
            single.thresholds.spe_empirical_99.unwrap(),
            1e-9,
            "empirical SPE limit",
        );
        // The daily cycle is found per member, as on the member's rows alone.
        assert_eq!(member.seasonal, single.seasonal, "{key} daily cycle");
        // The training tail is measured per member over that member's rows.
        let (t, u) = (
            member.thresholds.tail.unwrap(),
            single.thresholds.tail.unwrap(),
        );
        for (a, b) in [(t.spe, u.spe), (t.t2, u.t2), (t.zmax, u.zmax)] {
            close(a.unwrap(), b.unwrap(), 1e-9, "training tail");
        }
    }

    // Scoring with the group: every row by its own member, host-0001's rows NULL (against the
    // training level: the drift baseline and the daily cycle, tested in score.rs, shift rows).
    let scores = f.tmp.path().join("scores");
    let run = score_cmd(
        "hosts",
        &f.data,
        &f.models,
        &scores,
        &[
            "--set",
            "drift.baseline=off",
            "--set",
            "drift.seasonal=false",
        ],
    );
    assert_ok(&run);
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("4,320 rows have a NULL"),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    let v = scored_counts(
        &f.models,
        &scores,
        "SELECT count(*) FILTER (WHERE host_id = 'host-0001' AND pca_spe IS NOT NULL), \
                count(*) FILTER (WHERE host_id = 'host-0003' AND NOT \
                  abs(pca_spe - pca_score('alone-host-0003', cpu_pct, mem_pct, disk_read_mbps, \
                  disk_write_mbps, net_rx_mbps, net_tx_mbps, latency_ms, error_rate)) \
                  <= 1e-9 * (1 + pca_spe)), \
                count(*) FILTER (WHERE pca_spe IS NULL) FROM s",
    )
    .await;
    assert_eq!(v, [0, 0, 4320]);

    // A group replaces a model of the same name only with --overwrite, and then only one kind stays.
    assert_user_error(
        &f.train(&["--model", "hosts"]),
        "group.json exists; pass --overwrite",
    );
    assert_ok(&f.train(&["--model", "hosts", "--overwrite"]));
    assert!(f.models.join("hosts/model.json").exists());
    assert!(!f.models.join("hosts/group.json").exists());
    assert_user_error(
        &f.train(&["--model", "g2", "--group-by", "nope"]),
        "--group-by: no column `nope`",
    );
}

/// Two trainings of one name at once, `args` each: exactly one writes, the other is refused
/// (the name is locked, or its model already exists), and what is left is the winner's file.
fn race(f: &Fixture, name: &str, first: &[&str], second: &[&str]) {
    let spawn = |extra: &[&str]| {
        tads()
            .args(["train", "--quiet", "--model", name, "--data"])
            .arg(&f.data)
            .arg("--models")
            .arg(&f.models)
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(first), spawn(second));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let ok: Vec<bool> = [&a, &b].iter().map(|o| o.status.success()).collect();
    assert_eq!(
        ok.iter().filter(|s| **s).count(),
        1,
        "both or neither succeeded: {} / {}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let loser = if ok[0] { &b } else { &a };
    let stderr = String::from_utf8_lossy(&loser.stderr);
    assert_eq!(loser.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is locked by tads train run") || stderr.contains("pass --overwrite"),
        "{stderr}"
    );
    let winner_group = if ok[0] { first } else { second }.contains(&"--group-by");
    let dir = f.models.join(name);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let expected = if winner_group {
        "group.json"
    } else {
        "model.json"
    };
    assert_eq!(left, [expected], "in {}", dir.display());
}

#[test]
fn two_trainings_of_one_name_never_both_write() {
    let f = Fixture::new();
    for round in 0..3 {
        race(&f, &format!("p{round}"), &["--k", "2"], &["--k", "3"]);
        race(
            &f,
            &format!("g{round}"),
            &["--k", "2"],
            &["--k", "2", "--group-by", "region"],
        );
    }
}

#[test]
fn a_stale_name_lock_is_named_and_broken_on_request() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.models.join("s")).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = serde_json::json!({
        "writer": "tads train", "run_id": "train-old", "pid": u32::MAX - 1,
        "host": host.trim(), "started_at": "2026-01-01T00:00:00Z",
    });
    std::fs::write(f.models.join("s").join(tads_store::LOCK), lock.to_string()).unwrap();
    // Its process is gone: the next training takes the lock over and says so.
    let run = f.train(&["--model", "s", "--k", "2"]);
    assert_ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("removed the lock of tads train run train-old"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(f.models.join("s")).unwrap().collect();
    assert_eq!(left.len(), 1, "only model.json is left");
}

/// `--threads` sets the partitions training runs in: one partition or four give the same model
/// (exact medians and MADs; components and limits to rounding, since partitions merge their
/// co-moments in any order).
#[test]
fn one_thread_or_four_train_the_same_model() {
    let f = Fixture::new();
    assert_ok(&f.train(&["--model", "one", "--threads", "1", "--quiet"]));
    assert_ok(&f.train(&["--model", "four", "--threads", "4", "--quiet"]));
    let (one, four) = (read_model(&f.models, "one"), read_model(&f.models, "four"));
    assert_eq!(one.features, four.features);
    assert_eq!(one.median, four.median, "exact medians");
    assert_eq!(one.mad, four.mad, "exact MADs");
    assert_eq!(one.training.rows_used, four.training.rows_used);
    same_components(&one, &four, 1e-9);
    for (a, b, what) in [
        (
            one.thresholds.spe_jm_999,
            four.thresholds.spe_jm_999,
            "SPE limit",
        ),
        (one.thresholds.t2_999, four.thresholds.t2_999, "T² limit"),
    ] {
        close(a.unwrap_or(0.0), b.unwrap_or(0.0), 1e-9, what);
    }
}

/// `--quantiles sketch` (t-digests, bounded memory) trains the exact model within the tolerance
/// `tads train --help` states: medians within 1 % of a feature's scale, MADs within 3 %, every
/// limit within 5 %, the daily cycle within 5 % of a scale, the same components; and a group.
#[test]
fn sketched_quantiles_train_the_exact_model_within_the_stated_tolerance() {
    let f = Fixture::new();
    assert_ok(&f.train(&["--model", "exact", "--quiet"]));
    assert_ok(&f.train(&["--model", "sketch", "--quantiles", "sketch", "--quiet"]));
    let (e, s) = (
        read_model(&f.models, "exact"),
        read_model(&f.models, "sketch"),
    );
    assert_eq!(e.features, s.features);
    assert_eq!(e.training.rows_seen, s.training.rows_seen);
    for j in 0..e.dims() {
        let what = &e.features[j];
        assert!(
            (e.median[j] - s.median[j]).abs() <= 0.01 * e.scale[j],
            "{what}: median {} against {} (scale {})",
            s.median[j],
            e.median[j],
            e.scale[j]
        );
        close(s.scale[j], e.scale[j], 0.03, &format!("{what}: scale"));
    }
    same_components(&e, &s, 0.01);
    let (te, ts) = (&e.thresholds, &s.thresholds);
    let (tail_e, tail_s) = (te.tail.unwrap(), ts.tail.unwrap());
    for (a, b, what) in [
        (ts.spe_jm_99, te.spe_jm_99, "spe_jm_99"),
        (ts.spe_jm_999, te.spe_jm_999, "spe_jm_999"),
        (ts.spe_empirical_99, te.spe_empirical_99, "spe_empirical_99"),
        (
            ts.spe_empirical_999,
            te.spe_empirical_999,
            "spe_empirical_999",
        ),
        (ts.t2_999, te.t2_999, "t2_999"),
        (tail_s.spe, tail_e.spe, "tail spe"),
        (tail_s.t2, tail_e.t2, "tail t2"),
        (tail_s.zmax, tail_e.zmax, "tail zmax"),
    ] {
        close(a.unwrap(), b.unwrap(), 0.05, what);
    }
    let (ce, cs) = (e.seasonal.clone().unwrap(), s.seasonal.clone().unwrap());
    for (h, (re, rs)) in ce.profile.iter().zip(&cs.profile).enumerate() {
        for j in 0..e.dims() {
            assert!(
                (re[j] - rs[j]).abs() <= 0.05 * e.scale[j],
                "cycle of {} at {h}h: {} against {}",
                e.features[j],
                rs[j],
                re[j]
            );
        }
    }
    // A group trains sketched too, one member per host.
    assert_ok(&f.train(&[
        "--model",
        "hosts",
        "--group-by",
        "host_id",
        "--quantiles",
        "sketch",
        "--quiet",
    ]));
    let group: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.models.join("hosts/group.json")).unwrap()).unwrap();
    assert_eq!(group["members"].as_array().unwrap().len(), 6, "{group}");
}

/// `--quantiles auto` (the default) is exact where the training rows × features × 34 bytes fit
/// in `--memory` (default: half the memory available) and sketched beyond, and says which.
#[test]
fn auto_quantiles_are_exact_where_they_fit_and_sketched_beyond() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models) = (tmp.path().join("data"), tmp.path().join("models"));
    // 24 hosts × 3 days at one row a minute: 103,680 rows × 8 features, about 20 MiB exact.
    let args = [
        "--hosts",
        "24",
        "--duration",
        "3d",
        "--interval",
        "1m",
        "--seed",
        "3",
    ];
    assert_ok(&generate(data.to_str().unwrap(), &args));
    let run = |name: &str, extra: &[&str]| {
        let base = [
            "--data",
            data.to_str().unwrap(),
            "--models",
            models.to_str().unwrap(),
            "--model",
            name,
        ];
        let out = train(&[&base[..], extra].concat());
        assert_ok(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let fits = run("fits", &[]);
    assert!(
        fits.contains("medians and quantiles exact: 103680 rows × 8 features need about 0.0 GiB exact, within half the memory available"),
        "{fits}"
    );
    let tight = run("tight", &["--memory", "16M"]);
    assert!(
        tight.contains("medians and quantiles sketched (t-digests): 103680 rows × 8 features")
            && tight.contains("more than --memory (0.0 GiB)"),
        "{tight}"
    );
    let exact = run("exact", &["--quantiles", "exact"]);
    assert!(exact.contains("medians and quantiles exact\n"), "{exact}");
    let (f, t, e) = (
        read_model(&models, "fits"),
        read_model(&models, "tight"),
        read_model(&models, "exact"),
    );
    assert_eq!(f.median, e.median, "auto within memory is exact");
    assert_eq!(f.mad, e.mad);
    assert_ne!(t.median, e.median, "auto beyond --memory sketches");
    for j in 0..e.dims() {
        assert!((t.median[j] - e.median[j]).abs() <= 0.01 * e.scale[j]);
    }
}

/// `--kmeans --iforest --ocsvm`: the same sections on one thread or four (a sample chosen by the
/// rows' values and fixed seeds), and `fusion.detectors = ["kmeans"]` (or `["iforest"]`,
/// `["ocsvm"]`) scores each row as `kmeans_distance` over the model's limit (raised to its
/// training tail) says (or `iforest_score` / `ocsvm_score` put at 0 at its training median and
/// 1 at its limit).
#[tokio::test]
async fn sampled_detectors_train_alike_on_any_thread_count_and_score_as_sql_says() {
    let f = Fixture::new();
    for (name, threads) in [("k1", "1"), ("k4", "4")] {
        let run = f.train(&[
            "--model",
            name,
            "--threads",
            threads,
            "--kmeans",
            "--iforest",
            "--ocsvm",
            "--quiet",
        ]);
        assert_ok(&run);
    }
    let (one, four) = (read_model(&f.models, "k1"), read_model(&f.models, "k4"));
    let km = one.kmeans.clone().expect("a k-means section");
    assert_eq!(Some(&km), four.kmeans.as_ref());
    let forest = one.iforest.clone().expect("an Isolation Forest");
    assert_eq!(Some(&forest), four.iforest.as_ref());
    assert_eq!((forest.trees.len(), forest.psi), (100, 256));
    let svm = one.ocsvm.clone().expect("a one-class SVM");
    assert_eq!(Some(&svm), four.ocsvm.as_ref());
    assert_eq!(svm.sample_rows, 1_000);
    assert!(
        svm.support.len() >= 50,
        "{} support vectors",
        svm.support.len()
    );
    assert_eq!(km.k, 8);
    assert!(km.sample_rows > 1000 && km.sample_rows <= 20_000, "{km:?}");
    assert!(read_model(&f.models, "k1").validate().is_ok());

    let limit = km.limit.max(km.tail.unwrap_or(0.0));
    let x = FEATURES.join(", ");
    let signal = format!("kmeans_distance('k1', {x}) / {limit:?}");
    let v = score_alone(&f, "k1", "kmeans", &signal).await;
    assert!(v[0] > 10_000, "rows scored: {}", v[0]);
    assert_eq!(v[1], 0, "rows whose score is not the k-means signal");
    assert!(v[2] > 0, "no row above the k-means limit");

    // The forest alone: its score put at 0 at the training median and 1 at the limit.
    let limit = forest.limit.max(forest.tail.unwrap_or(0.0));
    let median = forest.median;
    let signal =
        format!("greatest(iforest_score('k1', {x}) - {median:?}, 0) / ({limit:?} - {median:?})");
    let v = score_alone(&f, "k1", "iforest", &signal).await;
    assert!(v[0] > 10_000, "rows scored: {}", v[0]);
    assert_eq!(v[1], 0, "rows whose score is not the forest's signal");

    // The one-class SVM alike.
    let limit = svm.limit.max(svm.tail.unwrap_or(f64::MIN));
    let median = svm.median;
    let signal =
        format!("greatest(ocsvm_score('k1', {x}) - {median:?}, 0) / ({limit:?} - {median:?})");
    let v = score_alone(&f, "k1", "ocsvm", &signal).await;
    assert!(v[0] > 10_000, "rows scored: {}", v[0]);
    assert_eq!(
        v[1], 0,
        "rows whose score is not the one-class SVM's signal"
    );
    assert!(v[2] > 0, "no row above the one-class SVM's limit");
}

/// `--seasonal-baseline`: generated hosts follow a daily cycle, so training finds a period of
/// 24 hours with slots for the cycling metrics, for one model and for each member of a group;
/// `fusion.detectors = ["seasonal"]` scores each row as `seasonal_zmax` over the section's
/// limit (raised to its training tail) says. `--forecast` alike, with a daily component.
#[tokio::test]
async fn the_seasonal_baseline_finds_the_daily_period_and_scores_as_sql_says() {
    // Nine days: a daily period needs seven days of distances from the previous day's median.
    let tmp = tempfile::tempdir().unwrap();
    let (data, models) = (tmp.path().join("data"), tmp.path().join("models"));
    let nine_days = [
        "--hosts",
        "5",
        "--duration",
        "9d",
        "--interval",
        "5m",
        "--anomaly-rate",
        "1",
        "--seed",
        "7",
    ];
    assert_ok(&generate(data.to_str().unwrap(), &nine_days));
    let f = Fixture { tmp, data, models };
    // Without the daily cycle, so that the plan reads the columns as SQL does below; one host
    // (each generated host cycles in its own local time: over five, their cycles blur).
    let run = f.train(&[
        "--model",
        "s1",
        "--where",
        "CAST(host_id AS VARCHAR) = 'host-0000'",
        "--no-seasonal",
        "--seasonal-baseline",
        "--forecast",
        "--quiet",
    ]);
    assert_ok(&run);
    let m = read_model(&f.models, "s1");
    let season = m.season.clone().expect("a seasonal section");
    assert_eq!(season.period_hours, 24, "{:?}", season.strength);
    assert!(season.tail.is_some());
    // The metric whose daily cycle is strongest.
    let strongest = |strength: &[f64]| {
        (0..strength.len())
            .max_by(|&a, &b| strength[a].total_cmp(&strength[b]))
            .unwrap()
    };
    let j = strongest(&season.strength);
    let name = &m.features[j];
    assert!(season.features.contains(name), "{season:?}");
    // Without the daily cycle the slots' centres carry it: they differ by hour by more than
    // a slot's scale.
    let centers: Vec<f64> = season.center.iter().map(|r| r[j]).collect();
    let spread = centers.iter().cloned().fold(f64::MIN, f64::max)
        - centers.iter().cloned().fold(f64::MAX, f64::min);
    let smallest = season.scale.iter().map(|r| r[j]).fold(f64::MAX, f64::min);
    assert!(
        spread > smallest,
        "{name}'s hourly centres {centers:?}, scales from {smallest}"
    );
    let limit = season.limit.max(season.tail.unwrap_or(0.0));
    let x = FEATURES.join(", ");
    let signal = format!("seasonal_zmax('s1', {x}, ts) / {limit:?}");
    let v = score_alone(&f, "s1", "seasonal", &signal).await;
    assert!(v[0] > 10_000, "rows scored: {}", v[0]);
    assert_eq!(v[1], 0, "rows whose score is not the seasonal signal");
    assert!(v[2] > 0, "no row above the seasonal limit");

    // The forecast: a daily component for the metric whose cycle is strongest, whose forecast
    // swings over the day by more than the metric's robust scale; scored alone as
    // forecast_zmax over its limit says.
    let forecast = m.forecast.clone().expect("a forecast section");
    assert_eq!(forecast.periods, vec![24]);
    let j = strongest(&forecast.strength[0]);
    assert!(
        forecast.strength[0][j] >= tads_model::forecast::MIN_STRENGTH,
        "{:?}",
        forecast.strength
    );
    let hours: Vec<f64> = forecast.center.iter().map(|r| r[j]).collect();
    let swing = hours.iter().cloned().fold(f64::MIN, f64::max)
        - hours.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        swing > m.scale[j],
        "{}'s forecast {hours:?}, scale {}",
        m.features[j],
        m.scale[j]
    );
    let tail = forecast.tail.expect("a training tail");
    let limit = forecast.limit.max(tail);
    let signal = format!("forecast_zmax('s1', {x}, ts) / {limit:?}");
    let v = score_alone(&f, "s1", "forecast", &signal).await;
    assert!(v[0] > 10_000, "rows scored: {}", v[0]);
    assert_eq!(v[1], 0, "rows whose score is not the forecast signal");
    // A group: each member its own period and slots.
    let run = f.train(&[
        "--model",
        "hosts",
        "--group-by",
        "host_id",
        "--seasonal-baseline",
        "--forecast",
        "--quiet",
    ]);
    assert_ok(&run);
    let group = tads_model::ModelGroup::from_json(
        &std::fs::read(f.models.join("hosts/group.json")).unwrap(),
    )
    .unwrap();
    let with = group.members.iter().filter(|m| m.season.is_some()).count();
    // A member's daily cycle (trained by default) is already taken out of the rows the plan
    // scores, so its slots' centres lie near the median: they keep only what the cycle did not.
    for m in group.members.iter().filter(|m| m.season.is_some()) {
        let season = m.season.as_ref().unwrap();
        assert!(m.seasonal.is_some(), "{}: no daily cycle", m.name);
        for (j, f) in m.features.iter().enumerate() {
            for row in &season.center {
                assert!(
                    (row[j] - m.median[j]).abs() < 3.0 * m.scale[j],
                    "{}: {f}'s centre {} against median {} (scale {})",
                    m.name,
                    row[j],
                    m.median[j],
                    m.scale[j]
                );
            }
        }
    }
    assert!(
        with >= 4,
        "{with} of {} members have a seasonal section",
        group.members.len()
    );
    // Every member has a forecast (nine days: a daily component), valid as its model is.
    let mut at_tail = String::from("CASE CAST(host_id AS VARCHAR)");
    for m in &group.members {
        let forecast = m.forecast.as_ref().expect("a member's forecast");
        assert_eq!(forecast.periods, vec![24], "{}", m.name);
        let tail = forecast.tail.expect("a training tail");
        let level = tail / forecast.limit.max(tail);
        at_tail.push_str(&format!(" WHEN '{}' THEN {level:?}", group.key_of(m)));
    }
    at_tail.push_str(" END");
    // Scored as the plan scores (each host's rows from its previous day's median), the
    // training rows after the first day lie at or above each member's training tail as often
    // as training measured: the plan's space is the one the interval and the tail were
    // measured in.
    let out = f.tmp.path().join("forecast-plan");
    let settings = ["--no-alerts", "--set", "fusion.detectors=forecast"];
    assert_ok(&score_cmd("hosts", &f.data, &f.models, &out, &settings));
    let v = scored_counts(
        &f.models,
        &out,
        &format!(
            "SELECT count(score), count(*) FILTER (WHERE score >= {at_tail}) FROM s \
             WHERE ts >= (SELECT min(ts) FROM s) + INTERVAL '1 day'"
        ),
    )
    .await;
    let share = v[1] as f64 / v[0] as f64;
    assert!(
        (0.04..=0.06).contains(&share),
        "{share} of the rows at or above their member's training tail (trained at 0.95)"
    );
    assert!(group.validate().is_ok());
}

/// One day of data has no previous day to measure a row from: the seasonal baseline and the
/// forecast are left out with a note each, for one model and for a group, and the rest of the
/// model is trained and written.
#[test]
fn a_day_of_data_trains_without_the_history_detectors_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models) = (tmp.path().join("data"), tmp.path().join("models"));
    let one_day = ["--hosts", "2", "--duration", "1d", "--interval", "5m"];
    assert_ok(&generate(data.to_str().unwrap(), &one_day));
    let f = Fixture { tmp, data, models };
    let history = ["--seasonal-baseline", "--forecast", "--quiet"];
    let run = f.train(&[&["--model", "one"][..], &history].concat());
    assert_ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("model `one`: no seasonal baseline")
            && stderr.contains("model `one`: no forecast: it needs a timestamp column `ts` and rows after the first training day"),
        "{stderr}"
    );
    let m = read_model(&f.models, "one");
    assert!(m.season.is_none() && m.forecast.is_none());
    let run = f.train(&[&["--model", "two", "--group-by", "host_id"][..], &history].concat());
    assert_ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("group `two`: 2 of 2 members have no forecast"),
        "{stderr}"
    );
    // Scoring with a detector the model lacks says so instead of leaving it out silently.
    let out = f.tmp.path().join("scores");
    let settings = ["--quiet", "--set", "fusion.detectors=pca,forecast"];
    let run = score_cmd("two", &f.data, &f.models, &out, &settings);
    assert_ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(
            "note: fusion.detectors names `forecast`, but model `two` was trained without it \
             (`tads train --forecast`): its signal is left out of the scores"
        ),
        "{stderr}"
    );
}

/// Scores the fixture's data with `model` and `fusion.detectors = [detector]` (no alerts, no
/// drift baseline, no daily cycle, so the plan reads the columns as SQL does) and counts, over
/// the scored rows: the rows with a score, those whose score is not `signal` (a SQL expression
/// over the metric columns; to single precision, as both are rounded so where they are made),
/// and those above 1.
async fn score_alone(f: &Fixture, model: &str, detector: &str, signal: &str) -> Vec<i64> {
    let out = f.tmp.path().join(format!("{detector}-scores"));
    let detectors = format!("fusion.detectors={detector}");
    let settings = [
        "--no-alerts",
        "--set",
        &detectors,
        "--set",
        "drift.baseline=off",
        "--set",
        "drift.seasonal=false",
    ];
    assert_ok(&score_cmd(model, &f.data, &f.models, &out, &settings));
    scored_counts(
        &f.models,
        &out,
        &format!(
            "SELECT count(score), \
                    count(*) FILTER (WHERE NOT abs(score - {signal}) <= 3e-7 * (1 + score)), \
                    count(*) FILTER (WHERE score > 1) FROM s"
        ),
    )
    .await
}

/// The counts (one row of integers) `sql` gives over the scored rows of the run at `out` as table
/// `s`, in a session with the models of `models`.
async fn scored_counts(models: &std::path::Path, out: &std::path::Path, sql: &str) -> Vec<i64> {
    let ctx = tads_session(models).await;
    let loc = Location::parse(out.join("scored").to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "s", &loc).await.unwrap();
    let batches = query(&ctx, sql).await;
    let b = &batches[0];
    (0..b.num_columns())
        .map(|i| {
            b.column(i)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0)
        })
        .collect()
}
