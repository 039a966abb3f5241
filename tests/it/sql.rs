//! `tads sql` through `-c`, `-f` and a pseudo-terminal, the analytics queries of
//! `sql/analytics/` on a generated dataset, and `tads demo`. Outputs that do not depend on
//! timing are compared with snapshots in `tests/snapshots/` (`TADS_BLESS=1` rewrites them).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::support::{SMALL, assert_ok, assert_user_error, generate, tads};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The SMALL dataset, generated once for this module's tests.
fn data() -> &'static Path {
    static DATA: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DATA
        .get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let data = tmp.path().join("data");
            assert_ok(&generate(data.to_str().unwrap(), SMALL));
            (tmp, data)
        })
        .1
}

fn sql(args: &[&str]) -> std::process::Output {
    tads()
        .arg("sql")
        .arg("--data")
        .arg(data())
        .args(args)
        .output()
        .unwrap()
}

/// Compares `text` with `tests/snapshots/<name>`, or writes it there under `TADS_BLESS`.
fn snapshot(name: &str, text: &str) {
    let path = root().join("tests/snapshots").join(name);
    if std::env::var_os("TADS_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TADS_BLESS=1 writes it)", path.display()));
    assert_eq!(text, expected, "differs from {}", path.display());
}

/// CSV output as a header and rows of fields.
fn csv(out: &std::process::Output) -> (Vec<String>, Vec<Vec<String>>) {
    assert_ok(out);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let header = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(String::from)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

#[test]
fn commands_and_files_run_without_a_terminal_in_every_format() {
    let out = sql(&[
        "-q",
        "-c",
        "SELECT count(*) AS n, count(DISTINCT host_id) AS hosts FROM telemetry",
    ]);
    assert_ok(&out);
    snapshot("sql_count_table.txt", &String::from_utf8_lossy(&out.stdout));
    for (format, needle) in [
        ("csv", "n,hosts\n25920,6"),
        ("tsv", "n\thosts\n25920\t6"),
        ("json", r#"[{"n":25920,"hosts":6}]"#),
        ("ndjson", r#"{"n":25920,"hosts":6}"#),
    ] {
        let out = sql(&[
            "-q",
            "--format",
            format,
            "-c",
            "SELECT count(*) AS n, count(DISTINCT host_id) AS hosts FROM telemetry",
        ]);
        assert_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(needle), "{format}: {text}");
        // --maxrows is the table's: the other formats print every row of a large result (a
        // CSV for another tool once stopped after two batches).
        let out = sql(&["-q", "--format", format, "-c", "SELECT ts FROM telemetry"]);
        assert_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        let rows = match format {
            "csv" | "tsv" => text.lines().count().saturating_sub(1),
            "json" => text.matches('{').count(),
            _ => text.lines().count(),
        };
        assert_eq!(rows, 25_920, "{format}");
    }
    // A failing statement is reported on one line; the next still runs; the exit code says so.
    let out = sql(&[
        "-q",
        "--format",
        "csv",
        "-c",
        "SELECT nope FROM telemetry",
        "-c",
        "SELECT 41 + 1 AS answer",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("nope"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("answer\n42"));
}

#[test]
fn every_tads_function_is_registered_and_documented() {
    let out = tads()
        .args([
            "sql",
            "-q",
            "--format",
            "csv",
            "-c",
            "SELECT name, kind, syntax FROM tads_help() ORDER BY name",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    snapshot("sql_tads_help.csv", &text);
    for f in [
        "pca_score",
        "pca_t2",
        "pca_contrib",
        "pca_top_metric",
        "pca_top_deviation",
        "kmeans_distance",
        "iforest_score",
        "seasonal_zmax",
        "forecast_zmax",
        "ocsvm_score",
        "seasonal_zscore",
        "pca_scores",
        "anomaly_score",
        "anomaly_top_metric",
        "anomaly_top_deviation",
        "mad_zscore",
        "mad_zmax",
        "robust_stats",
        "pca_fit",
        "sketch_quantile",
        "alert_state",
        "shard_of",
    ] {
        assert!(text.contains(&format!("\n{f},")), "{f} missing:\n{text}");
    }
    // DataFusion's own listings know them too, with their descriptions.
    let (_, rows) = csv(
        &tads()
            .args([
                "sql",
                "-q",
                "--format",
                "csv",
                "-c",
                "SELECT routine_name FROM information_schema.routines WHERE routine_name IN ('pca_score', 'alert_state', 'robust_stats') AND description IS NOT NULL ORDER BY 1",
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for f in [
        "pca_score",
        "robust_stats",
        "sketch_quantile",
        "alert_state",
        "tads_help",
    ] {
        let out = tads()
            .args(["sql", "-q", "--format", "json", "-c"])
            .arg(format!("SHOW FUNCTIONS LIKE '{f}'"))
            .output()
            .unwrap();
        assert_ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("\"function_name\":\"{f}\"")),
            "SHOW FUNCTIONS: {text}"
        );
    }
    let one = tads()
        .args(["sql", "-q", "-c", "SELECT * FROM tads_help('nope')"])
        .output()
        .unwrap();
    assert_user_error(&one, "no TADS function `nope`");
}

#[test]
fn the_analytics_queries_run_on_generated_data() {
    let dir = root().join("sql/analytics");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let (header, rows) = csv(&sql(&[
            "-q",
            "--format",
            "csv",
            "-f",
            file.to_str().unwrap(),
        ]));
        let expect = |cols: &[&str], n: std::ops::RangeInclusive<usize>| {
            assert_eq!(&header[..cols.len()], cols, "{name}: columns");
            assert!(n.contains(&rows.len()), "{name}: {} rows", rows.len());
            assert!(
                rows.iter().all(|r| r.len() == header.len()),
                "{name}: ragged"
            );
        };
        match name.as_str() {
            "summary" => {
                expect(&["rows", "hosts", "regions", "projects"], 1..=1);
                assert_eq!(&rows[0][..2], ["25920", "6"]);
            }
            "events_by_type" => expect(&["anomaly_type", "events", "rows", "hosts"], 5..=5),
            "top_k" => {
                expect(&["dimension", "rank", "value", "anomalous_rows"], 10..=20);
                let dims: std::collections::BTreeSet<_> =
                    rows.iter().map(|r| r[0].as_str()).collect();
                assert_eq!(dims.len(), 4, "{dims:?}");
            }
            // 3 days in 6-hour buckets.
            "timeseries" => expect(&["bucket", "rows", "cpu_pct_mean", "cpu_pct_p95"], 12..=12),
            "histogram" => {
                expect(&["bin", "bin_from", "bin_to", "rows", "pct"], 2..=20);
                let total: u64 = rows.iter().map(|r| r[3].parse::<u64>().unwrap()).sum();
                assert_eq!(total, 25_920);
            }
            other => panic!("sql/analytics/{other}.sql has no test here: add one"),
        }
        if name != "timeseries" {
            // Exact aggregates over seeded data: the whole result is a regression baseline.
            let out = sql(&["-q", "--format", "csv", "-f", file.to_str().unwrap()]);
            snapshot(
                &format!("analytics_{name}.csv"),
                &String::from_utf8_lossy(&out.stdout),
            );
        }
    }
}

#[test]
fn an_interactive_session_through_a_pseudo_terminal() {
    let script = root().join("tests/it/pty_session.py");
    // The REPL keeps its history in ./.history: run it in a folder of its own.
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .current_dir(cwd.path())
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_tads"))
        .args(["sql", "--data"])
        .arg(data())
        .env("HOME", data().parent().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = std::fs::read_to_string(cwd.path().join(".history")).unwrap_or_default();
    assert!(history.contains("tads_help()"), "history: {history}");
    // The banner, the answer, the error (and the session going on), the help, a clean exit.
    for needle in [
        "telemetry:",
        "tads_help()",
        "| 25920 |",
        "No field named nope",
        "pca_score | scalar",
    ] {
        assert!(
            text.contains(needle),
            "`{needle}` not in the session:\n{text}"
        );
    }
    assert!(
        text.to_lowercase().contains("error"),
        "the bad query's error is shown:\n{text}"
    );
}

#[test]
fn the_demo_runs_the_whole_pipeline_and_says_how_to_open_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = tads()
        .args(["demo", "--hosts", "8", "--days", "2", "--dir"])
        .arg(&dir)
        .env_remove("TADS_PG_URL")
        .output()
        .unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "1/4 generate",
        "trained `hosts`",
        "alerts to",
        "top metric",
        "point-wise",
        "correlation_break",
        "false alerts per 100 host-days",
        "tads sql --data",
    ] {
        assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    }
    for sub in [
        "data/_manifest.json",
        "models/hosts/group.json",
        "scores/_manifest.json",
    ] {
        assert!(dir.join(sub).exists(), "{sub}");
    }
    // The printed command opens the results.
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("tads sql --data"))
        .unwrap();
    let args: Vec<&str> = line.split_whitespace().skip(2).collect();
    let out = tads()
        .arg("sql")
        .args(&args)
        .args([
            "-q",
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM alerts",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    // Running it again replaces the demo's own outputs.
    assert_ok(
        &tads()
            .args(["demo", "--hosts", "8", "--days", "2", "--dir"])
            .arg(&dir)
            .output()
            .unwrap(),
    );
}

#[test]
fn a_failing_statement_in_a_file_exits_2_and_the_rest_still_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("q.sql");
    std::fs::write(
        &file,
        "-- one bad statement among good ones\nSELECT 1 AS one;\nSELECT nope\n  FROM telemetry;\nSELECT 41 + 1 AS answer;\n",
    )
    .unwrap();
    let out = sql(&["-q", "--format", "csv", "-f", file.to_str().unwrap()]);
    assert_user_error(&out, "nope");
    assert_user_error(&out, "q.sql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("one\n1") && stdout.contains("answer\n42"),
        "{stdout}"
    );
    // A file without failures still exits 0.
    std::fs::write(&file, "SELECT 1 AS one;\nSELECT 2 AS two;\n").unwrap();
    assert_ok(&sql(&["-q", "-f", file.to_str().unwrap()]));
}

#[test]
fn deep_sql_is_one_line_and_exit_2_never_a_crash() {
    let terms = vec!["1"; 10_000].join("+");
    let out = sql(&["-q", "-c", &format!("SELECT {terms}")]);
    assert_user_error(&out, "-c: the SQL is nested about 9999 levels deep");
    let ors = vec!["cpu_pct=1"; 8_001].join(" OR ");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("deep.sql");
    std::fs::write(
        &file,
        format!("SELECT count(*) FROM telemetry WHERE {ors};\n"),
    )
    .unwrap();
    let out = sql(&["-q", "-f", file.to_str().unwrap()]);
    assert_user_error(&out, "deep.sql: the SQL is nested");
    let models = tmp.path().join("models");
    let out = tads()
        .args(["train", "--model", "x", "--data"])
        .arg(data())
        .arg("--models")
        .arg(&models)
        .args(["--where", &ors])
        .output()
        .unwrap();
    assert_user_error(&out, "--where: the SQL is nested");
    assert!(!models.exists());
    let deep = format!("alerts.enter={}1{}", "[".repeat(50_000), "]".repeat(50_000));
    let out = tads()
        .args(["score", "--model", "x", "--data"])
        .arg(data())
        .arg("--models")
        .arg(&models)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .args(["--set", &deep])
        .output()
        .unwrap();
    assert_user_error(&out, "--set alerts.enter: brackets nested 50000 deep");
    // A long but sane filter still runs.
    let ors = vec!["cpu_pct=1"; 1_000].join(" OR ");
    let out = sql(&[
        "-q",
        "--format",
        "csv",
        "-c",
        &format!("SELECT count(*) AS n FROM telemetry WHERE {ors}"),
    ]);
    assert_ok(&out);
}
