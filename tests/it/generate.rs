//! `tads generate` into local directories: layout, schema, labels, pruning, determinism,
//! atomicity and bad input.

use std::collections::BTreeMap;
use std::fs::File;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int32Type, TimeUnit, TimestampMicrosecondType};
use datafusion::arrow::util::display::array_value_to_string;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use tads_gen::Manifest;
use tads_store::Location;

use crate::support::{
    SMALL, assert_ok, assert_user_error, files_below, generate, query, scalar, tads,
};

async fn manifest(dir: &std::path::Path) -> Manifest {
    let loc = Location::parse(dir.to_str().unwrap()).unwrap();
    Manifest::read(&loc).await.unwrap().expect("a manifest")
}

async fn table(dir: &std::path::Path) -> datafusion::prelude::SessionContext {
    let ctx = tads_sql::session();
    let loc = Location::parse(dir.to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "t", &loc).await.unwrap();
    ctx
}

#[tokio::test]
async fn writes_a_labelled_hive_partitioned_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("telemetry");
    let out = tads()
        .args(["generate", "--out", dir.to_str().unwrap()])
        .args(SMALL)
        .output()
        .unwrap();
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("wrote 25,920 rows") && stdout.contains("rows/s"),
        "{stdout}"
    );

    let files = files_below(&dir);
    assert_eq!(
        files,
        [
            "_manifest.json",
            "date=2026-01-01/part-00000.parquet",
            "date=2026-01-02/part-00000.parquet",
            "date=2026-01-03/part-00000.parquet"
        ]
    );
    let m = manifest(&dir).await;
    assert_eq!((m.rows, m.hosts, m.seed), (25_920, 6, 7));
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.files.iter().map(|f| f.rows).sum::<u64>(), m.rows);
    assert!(m.dataset_id.starts_with("ds-"));
    assert_eq!(m.end.to_rfc3339(), "2026-01-03T23:59:00+00:00");

    let ctx = table(&dir).await;
    // The schema, partition column included.
    let schema = ctx.table("t").await.unwrap().schema().as_arrow().clone();
    let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(
        ty("ts"),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    for dict in ["host_id", "region", "project_id"] {
        assert!(
            matches!(ty(dict), DataType::Dictionary(_, v) if *v == DataType::Utf8),
            "{dict}"
        );
    }
    for m in tads_gen::Metric::SERVER {
        assert_eq!(ty(m.column()), DataType::Float64);
    }
    assert_eq!(ty("is_anomaly"), DataType::Boolean);
    assert!(matches!(ty("anomaly_type"), DataType::Dictionary(_, v) if *v == DataType::Utf8));
    assert_eq!(ty("anomaly_id"), DataType::Int64);
    assert_eq!(ty("date"), DataType::Utf8);

    assert_eq!(scalar(&ctx, "SELECT count(*) FROM t").await, "25920");
    assert_eq!(
        scalar(&ctx, "SELECT count(DISTINCT host_id) FROM t").await,
        "6"
    );
    // Labels agree with each other.
    let inconsistent = "SELECT count(*) FROM t WHERE is_anomaly <> (anomaly_type IS NOT NULL) \
                        OR is_anomaly <> (anomaly_id IS NOT NULL)";
    assert_eq!(scalar(&ctx, inconsistent).await, "0");
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM t WHERE is_anomaly").await,
        m.anomalous_rows.to_string()
    );
    // Events by type, as the manifest counts them.
    let batches = query(
        &ctx,
        "SELECT CAST(anomaly_type AS VARCHAR), count(DISTINCT anomaly_id) FROM t \
         WHERE is_anomaly GROUP BY 1",
    )
    .await;
    let mut seen = BTreeMap::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let k = array_value_to_string(b.column(0), i).unwrap();
            let v = b
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(i);
            seen.insert(k, v as u64);
        }
    }
    let expected: BTreeMap<_, _> = m
        .events_by_type
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(seen.len(), 5, "every kind injected: {seen:?}");
    // An event never spans two hosts.
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM (SELECT anomaly_id FROM t WHERE is_anomaly GROUP BY anomaly_id HAVING count(DISTINCT host_id) > 1)").await,
        "0"
    );
    // Plausible ranges.
    let range = "SELECT count(*) FROM t WHERE cpu_pct < 0 OR cpu_pct > 100 OR mem_pct < 0 OR mem_pct > 100 \
                 OR disk_read_mbps < 0 OR disk_write_mbps < 0 OR net_rx_mbps < 0 OR net_tx_mbps < 0 \
                 OR latency_ms < 0 OR error_rate < 0 OR isnan(cpu_pct) OR isnan(latency_ms)";
    assert_eq!(scalar(&ctx, range).await, "0");

    // Every file: zstd, rows sorted by (host_id, ts), one day only.
    for f in &m.files {
        let file = File::open(dir.join(&f.path)).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let meta = builder.metadata().clone();
        assert_eq!(meta.file_metadata().num_rows() as u64, f.rows);
        for rg in meta.row_groups() {
            for col in rg.columns() {
                assert!(
                    matches!(col.compression(), Compression::ZSTD(_)),
                    "{}",
                    col.column_path()
                );
            }
        }
        let mut last: Option<(String, i64)> = None;
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            let hosts = batch
                .column_by_name("host_id")
                .unwrap()
                .as_dictionary::<Int32Type>();
            let names = hosts.values().as_string::<i32>();
            let ts = batch
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            for i in 0..batch.num_rows() {
                let key = (
                    names.value(hosts.keys().value(i) as usize).to_string(),
                    ts.value(i),
                );
                let day = chrono::DateTime::from_timestamp_micros(key.1)
                    .unwrap()
                    .format("%Y-%m-%d")
                    .to_string();
                assert_eq!(day, f.date);
                if let Some(prev) = &last {
                    assert!(*prev < key, "{prev:?} before {key:?} in {}", f.path);
                }
                last = Some(key);
            }
        }
    }
}

#[tokio::test]
async fn a_date_filter_prunes_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    assert_ok(&generate(dir.to_str().unwrap(), SMALL));
    let ctx = table(&dir).await;
    let batches = query(
        &ctx,
        "EXPLAIN SELECT avg(cpu_pct) FROM t WHERE date = '2026-01-02'",
    )
    .await;
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(
        plan.contains("date=2026-01-02/part-00000.parquet"),
        "{plan}"
    );
    assert!(
        !plan.contains("date=2026-01-01") && !plan.contains("date=2026-01-03"),
        "{plan}"
    );
    // And the filtered query sees exactly that day's rows.
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(cpu_pct) FROM t WHERE date = '2026-01-02'"
        )
        .await,
        "8640"
    );
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(cpu_pct) FROM t WHERE date >= '2026-01-02'"
        )
        .await,
        "17280"
    );
}

#[tokio::test]
async fn the_same_seed_gives_the_same_bytes_on_one_thread_or_two() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--hosts",
        "300",
        "--duration",
        "3d",
        "--interval",
        "2m",
        "--seed",
        "11",
        "--anomaly-rate",
        "1",
    ];
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    assert_ok(&generate(
        one.to_str().unwrap(),
        &[&args[..], &["--threads", "1"]].concat(),
    ));
    assert_ok(&generate(
        two.to_str().unwrap(),
        &[&args[..], &["--threads", "2"]].concat(),
    ));
    let files = files_below(&one);
    assert_eq!(files, files_below(&two));
    assert!(files.len() > 3);
    for f in files.iter().filter(|f| f.ends_with(".parquet")) {
        let a = std::fs::read(one.join(f)).unwrap();
        let b = std::fs::read(two.join(f)).unwrap();
        assert!(a == b, "{f} differs");
    }
    let (mut a, b) = (manifest(&one).await, manifest(&two).await);
    a.created_at = b.created_at;
    assert_eq!(a, b);
    // A different seed gives different data.
    let three = tmp.path().join("three");
    let mut other = args.to_vec();
    other[7] = "12";
    assert_ok(&generate(three.to_str().unwrap(), &other));
    let f = "date=2026-01-01/part-00000.parquet";
    assert_ne!(
        std::fs::read(one.join(f)).unwrap(),
        std::fs::read(three.join(f)).unwrap()
    );
}

#[tokio::test]
async fn refuses_a_non_empty_target_unless_overwrite_and_only_a_tads_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let d = dir.to_str().unwrap();
    assert_ok(&generate(d, SMALL));
    let before = files_below(&dir);
    let again = generate(d, SMALL);
    assert_user_error(&again, "is not empty");
    assert_user_error(&again, "--overwrite");
    assert_eq!(
        files_below(&dir),
        before,
        "a refused run changed the target"
    );

    // --overwrite replaces the dataset, including files the new one does not have.
    let shorter = [
        "--hosts",
        "2",
        "--duration",
        "1d",
        "--interval",
        "1m",
        "--seed",
        "8",
    ];
    assert_ok(&generate(d, &[&shorter[..], &["--overwrite"]].concat()));
    assert_eq!(
        files_below(&dir),
        ["_manifest.json", "date=2026-01-01/part-00000.parquet"]
    );
    assert_eq!(manifest(&dir).await.seed, 8);

    // A folder that is not a TADS dataset is never overwritten.
    let other = tmp.path().join("mine");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "keep me").unwrap();
    let out = generate(
        other.to_str().unwrap(),
        &[&shorter[..], &["--overwrite"]].concat(),
    );
    assert_user_error(&out, "not a TADS output");
    assert_eq!(files_below(&other), ["notes.txt"]);
}

#[tokio::test]
async fn a_killed_run_leaves_nothing_that_looks_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k");
    let mut child = tads()
        .args([
            "generate",
            "--quiet",
            "--threads",
            "1",
            "--out",
            dir.to_str().unwrap(),
        ])
        .args(["--hosts", "2000", "--duration", "2d", "--interval", "10s"])
        .spawn()
        .unwrap();
    let marker = dir.join(tads_store::IN_PROGRESS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the marker never appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dir.join("_manifest.json").exists());
    assert!(marker.exists());
    // No partial Parquet file under a final name: every .parquet present is complete.
    for f in files_below(&dir).iter().filter(|f| f.ends_with(".parquet")) {
        let file = File::open(dir.join(f)).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(file).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    // Readers refuse it; the killed run's lock is taken over (its process is gone), so a plain
    // re-run is refused only because the target is not empty, and --overwrite replaces it.
    let ctx = tads_sql::session();
    let loc = Location::parse(dir.to_str().unwrap()).unwrap();
    let err = tads_sql::register_dataset(&ctx, "t", &loc)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a finished dataset"), "{err}");
    // The takeover is said on its own line, then the refusal.
    let plain = generate(dir.to_str().unwrap(), SMALL);
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(plain.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert!(
        lines.len() == 2
            && lines[0].starts_with("note: ")
            && lines[0].contains("which is no longer running")
            && lines[1].starts_with("error: ")
            && lines[1].contains("--overwrite to replace the output there"),
        "{stderr}"
    );
    assert_ok(&generate(
        dir.to_str().unwrap(),
        &[SMALL, &["--overwrite"]].concat(),
    ));
    assert!(!marker.exists());
    assert!(!dir.join(tads_store::LOCK).exists());
    assert_eq!(manifest(&dir).await.rows, 25_920);
    assert_eq!(files_below(&dir).len(), 4, "{:?}", files_below(&dir));
}

#[test]
fn bad_input_is_one_line_exit_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--hosts", "0"], "--hosts: must be at least 1"),
        (vec!["--duration", "7x"], "--duration"),
        (vec!["--interval", "0s"], "--interval"),
        (vec!["--start", "yesterday"], "--start"),
        (
            vec!["--anomaly-rate", "-1"],
            "--anomaly-rate: -1 is not between 0 and 1000",
        ),
        (vec!["--spike-magnitude", "-3"], "--spike-magnitude"),
        (
            vec!["--anomaly-types", "meteor"],
            "unknown anomaly type `meteor`",
        ),
        (vec!["--duration", "1m", "--interval", "1h"], "--duration"),
        (vec!["--profile", "wifi"], "unknown profile `wifi`"),
        (
            vec!["--profile", "network", "--anomaly-types", "burst"],
            "--anomaly-types: `burst` is not an anomaly of the network profile",
        ),
    ];
    for (args, needle) in cases {
        let res = generate(o, &args);
        assert_user_error(&res, needle);
        assert!(!out.exists(), "{args:?} wrote something");
    }
    assert_user_error(
        &generate("gs://bucket/x", &[]),
        "unknown URL scheme `gs://`",
    );
    // A target below a regular file cannot be created.
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let below = file.join("sub");
    assert_user_error(
        &generate(below.to_str().unwrap(), &["--hosts", "1"]),
        "plain-file/sub",
    );
    assert_user_error(
        &generate(file.to_str().unwrap(), &["--hosts", "1"]),
        "is a file",
    );
    // A missing flag is a usage error too.
    let res = tads().args(["generate"]).output().unwrap();
    assert_user_error(&res, "--out");
}

#[test]
fn help_explains_the_subcommands() {
    let out = tads().arg("--help").output().unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("generate") && text.contains("labelled anomalies"),
        "{text}"
    );
    let out = tads().args(["generate", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--out",
        "--hosts",
        "--start",
        "--duration",
        "--interval",
        "--seed",
        "--anomaly-rate",
        "--regions",
        "--projects",
        "--overwrite",
        "--quiet",
    ] {
        assert!(text.contains(flag), "{flag} missing from help");
    }
    // `--help` shows each command's long explanation, not only its one-line summary.
    for (command, needle) in [
        ("score", "With alerts.adaptive (the default)"),
        ("serve", "It listens on 127.0.0.1 only unless --token"),
        ("watch", "--settle"),
        ("sql", "tads_help()"),
    ] {
        let out = tads().args([command, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
        assert!(
            text.contains(needle),
            "tads {command} --help lacks {needle:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn overwrite_removes_only_what_the_old_manifest_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ds");
    let d = dir.to_str().unwrap();
    assert_ok(&generate(d, SMALL));
    std::fs::write(dir.join("NOTES.txt"), "n").unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/important.csv"), "a").unwrap();
    let before = files_below(&dir);
    let shorter = ["--hosts", "2", "--duration", "1d", "--overwrite"];
    let run = generate(d, &shorter);
    assert_user_error(
        &run,
        "2 files that TADS did not write: NOTES.txt, sub/important.csv",
    );
    assert_user_error(&run, "nothing was removed");
    assert_eq!(
        files_below(&dir),
        before,
        "a refused overwrite removed files"
    );
    // A killed run's output (a marker, no manifest): still only files TADS names so.
    std::fs::remove_file(dir.join("_manifest.json")).unwrap();
    std::fs::write(dir.join(tads_store::IN_PROGRESS), "{}").unwrap();
    std::fs::write(dir.join("date=2026-01-01/notes.parquet"), "mine").unwrap();
    let run = generate(d, &shorter);
    assert_user_error(&run, "3 files that TADS did not write");
    assert_user_error(&run, "date=2026-01-01/notes.parquet");
    assert!(dir.join("date=2026-01-01/part-00000.parquet").exists());
    // Once the user's files are gone, the overwrite goes through.
    for f in [
        "NOTES.txt",
        "sub/important.csv",
        "date=2026-01-01/notes.parquet",
    ] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    assert_ok(&generate(d, &shorter));
    assert_eq!(manifest(&dir).await.hosts, 2);
}

#[test]
fn threads_beyond_four_per_core_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t");
    let run = generate(
        out.to_str().unwrap(),
        &[SMALL, &["--threads", "100000"]].concat(),
    );
    assert_user_error(&run, "--threads");
    assert_user_error(&run, "per core");
    assert!(!out.exists());
    let run = tads()
        .args(["score", "--data", "d", "--model", "m", "--out", "o"])
        .args(["--threads", "100000"])
        .output()
        .unwrap();
    assert_user_error(&run, "at most");
    let cores = std::thread::available_parallelism().unwrap().get();
    let most = (4 * cores).to_string();
    assert_ok(&generate(
        out.to_str().unwrap(),
        &["--hosts", "2", "--duration", "1h", "--threads", &most],
    ));
}

#[test]
fn readers_look_for_the_marker_up_the_tree_and_check_the_manifest_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ds");
    assert_ok(&generate(dir.to_str().unwrap(), SMALL));
    let day = dir.join("date=2026-01-02");
    let models = tmp.path().join("models");
    let readers = |data: &std::path::Path| {
        let sql = tads()
            .args([
                "sql",
                "-q",
                "-c",
                "SELECT count(*) FROM telemetry",
                "--data",
            ])
            .arg(data)
            .output()
            .unwrap();
        let train = tads()
            .args(["train", "--quiet", "--model", "x", "--overwrite", "--data"])
            .arg(data)
            .arg("--models")
            .arg(&models)
            .output()
            .unwrap();
        [sql, train]
    };
    for run in readers(&day) {
        assert_ok(&run);
    }
    // A file the manifest lists is missing: an error, not fewer rows.
    let part = day.join("part-00000.parquet");
    let aside = tmp.path().join("aside.parquet");
    std::fs::rename(&part, &aside).unwrap();
    for run in readers(&dir) {
        assert_user_error(&run, "file(s) its manifest");
        assert_user_error(&run, "part-00000.parquet");
    }
    std::fs::rename(&aside, &part).unwrap();
    // A Parquet file the manifest does not list is read, and said.
    let extra = day.join("part-extra.parquet");
    std::fs::copy(&part, &extra).unwrap();
    for run in readers(&dir) {
        assert_ok(&run);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains("1 Parquet file(s) below it are not in its manifest")
                && stderr.contains("part-extra.parquet"),
            "{stderr}"
        );
    }
    std::fs::remove_file(&extra).unwrap();
    // A writer at work (or killed) at the dataset's root: its day folders are not finished.
    std::fs::write(dir.join(tads_store::IN_PROGRESS), "{}").unwrap();
    for run in readers(&day) {
        assert_user_error(&run, "is not a finished dataset");
    }
}

/// Two `generate --overwrite` runs into one folder at once, with other seeds: never a mix. One
/// may be refused (the folder is locked by the other); what is left is one run's whole dataset,
/// and a reader sees exactly its rows.
#[tokio::test]
async fn two_generates_into_one_folder_never_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ds");
    let with_seed = |seed: &'static str| -> Vec<&'static str> {
        let mut args: Vec<&'static str> = SMALL.to_vec();
        let at = args.iter().position(|a| *a == "--seed").unwrap();
        args[at + 1] = seed;
        args.push("--overwrite");
        args
    };
    let spawn = |seed: &'static str| {
        tads()
            .arg("generate")
            .arg("--out")
            .arg(&dir)
            .args(with_seed(seed))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for round in 0..3 {
        let (a, b) = (spawn("3"), spawn("4"));
        let runs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        assert!(
            runs.iter().any(|r| r.status.success()),
            "round {round}: neither run finished"
        );
        for run in runs.iter().filter(|r| !r.status.success()) {
            assert_user_error(run, "is locked by tads generate run");
        }
        // What is left is one seed's complete dataset: its manifest lists exactly the files
        // there, and every row is read.
        let manifest: Manifest =
            serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap();
        let mut listed: Vec<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
        listed.push("_manifest.json".into());
        listed.sort();
        assert_eq!(files_below(&dir), listed, "round {round}");
        let ctx = tads_sql::session();
        let loc = Location::parse_data(dir.to_str().unwrap()).unwrap();
        tads_sql::register_dataset(&ctx, "t", &loc).await.unwrap();
        let rows = scalar(&ctx, "SELECT count(*) FROM t").await;
        assert_eq!(rows, manifest.rows.to_string(), "round {round}");
    }
}
