//! The README's bad-input table, generated from the binary: each case runs, must exit 2 with one
//! line `error: …` (no panic, no backtrace), and the table of cases and messages must be the one
//! between `<!-- bad-input:begin -->` and `<!-- bad-input:end -->` in README.md. With
//! `TADS_BLESS=1` the test writes the table into the README instead.

use std::path::Path;

use crate::support::{SMALL, assert_ok, generate, tads, train_cmd};

const BEGIN: &str = "<!-- bad-input:begin -->";
const END: &str = "<!-- bad-input:end -->";

#[test]
fn every_bad_input_gets_one_line_and_exit_2_as_the_readme_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (data, models) = (root.join("data"), root.join("models"));
    assert_ok(&generate(data.to_str().unwrap(), SMALL));
    assert_ok(&train_cmd("m", &data, &models, &[]));
    let (d, m) = (data.to_str().unwrap(), models.to_str().unwrap());
    let out = root.join("out");
    let o = out.to_str().unwrap();
    let inside = data.join("scores");
    let inside_models = data.join("models");
    let im = inside_models.to_str().unwrap();
    let deep = format!("SELECT {}", vec!["1"; 10_000].join("+"));
    let one_file = format!("{d}/date=2026-01-01/part-00000.parquet");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("no hosts", vec!["generate", "--out", o, "--hosts", "0"]),
        (
            "a duration that is not one",
            vec!["generate", "--out", o, "--duration", "3x"],
        ),
        (
            "an unknown URL scheme",
            vec!["generate", "--out", "ftp://host/x"],
        ),
        (
            "absurd thread counts",
            vec!["generate", "--out", o, "--threads", "100000"],
        ),
        (
            "no such data",
            vec![
                "train",
                "--data",
                "/nonexistent/tads",
                "--model",
                "x",
                "--models",
                m,
            ],
        ),
        (
            "no such feature",
            vec![
                "train",
                "--data",
                d,
                "--model",
                "x",
                "--models",
                m,
                "--features",
                "nope",
            ],
        ),
        (
            "a predicate that does not parse",
            vec![
                "train",
                "--data",
                d,
                "--model",
                "x",
                "--models",
                m,
                "--where",
                "cpu_pct >",
            ],
        ),
        (
            "a tail quantile out of range",
            vec![
                "train",
                "--data",
                d,
                "--model",
                "x",
                "--models",
                m,
                "--tail-quantile",
                "2",
            ],
        ),
        (
            "models inside the data",
            vec!["train", "--data", d, "--model", "x", "--models", im],
        ),
        (
            "a model that exists",
            vec!["train", "--data", d, "--model", "m", "--models", m],
        ),
        (
            "no such model",
            vec![
                "score", "--data", d, "--model", "nope", "--models", m, "--out", o,
            ],
        ),
        (
            "a shard out of range",
            vec![
                "score", "--data", d, "--model", "m", "--models", m, "--out", o, "--shard", "3/2",
            ],
        ),
        (
            "hysteresis upside down",
            vec![
                "score",
                "--data",
                d,
                "--model",
                "m",
                "--models",
                m,
                "--out",
                o,
                "--set",
                "alerts.exit=5",
            ],
        ),
        (
            "an adaptive quantile out of range",
            vec![
                "score",
                "--data",
                d,
                "--model",
                "m",
                "--models",
                m,
                "--out",
                o,
                "--set",
                "alerts.adaptive_quantile=1.5",
            ],
        ),
        (
            "a drift setting out of range",
            vec![
                "score",
                "--data",
                d,
                "--model",
                "m",
                "--models",
                m,
                "--out",
                o,
                "--set",
                "drift.min_rows=0",
            ],
        ),
        (
            "an unknown setting",
            vec![
                "score",
                "--data",
                d,
                "--model",
                "m",
                "--models",
                m,
                "--out",
                o,
                "--set",
                "fusion.nope=1",
            ],
        ),
        (
            "a receiver URL that is not http",
            vec![
                "score",
                "--data",
                d,
                "--model",
                "m",
                "--models",
                m,
                "--out",
                o,
                "--webhook",
                "ftp://host/hook",
            ],
        ),
        (
            "scores written inside the input",
            vec![
                "score",
                "--data",
                d,
                "--model",
                "m",
                "--models",
                m,
                "--out",
                inside.to_str().unwrap(),
            ],
        ),
        (
            "eval of a dataset, not a score run",
            vec!["eval", "--scored", d],
        ),
        ("SQL nested 10,000 deep", vec!["sql", "-c", &deep]),
        (
            "watching a single file",
            vec![
                "watch", "--data", &one_file, "--model", "m", "--models", m, "--out", o, "--once",
            ],
        ),
        (
            "watching into the followed folder",
            vec![
                "watch",
                "--data",
                d,
                "--model",
                "m",
                "--models",
                m,
                "--out",
                inside.to_str().unwrap(),
                "--once",
            ],
        ),
        (
            "a watch interval of zero",
            vec![
                "watch", "--data", d, "--model", "m", "--out", o, "--every", "0s",
            ],
        ),
        (
            "a Prometheus query without a column name",
            vec!["import", "prometheus", "--query", "rate(x[1m])", "--out", o],
        ),
        (
            "a follow speed of zero",
            vec!["generate", "--out", o, "--follow", "--speed", "0"],
        ),
    ];
    let mut rows = Vec::new();
    for (case, args) in &cases {
        let run = tads().args(args).output().expect("run tads");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{case}: {stderr}");
        let line = stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "{case}: not one line: {stderr}");
        assert!(
            line.starts_with("error: ") && !line.contains("panicked"),
            "{case}: {line}"
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let message = line
            .replace(&root.display().to_string(), "DIR")
            .replace(
                &format!("at most {} (4 per core, {cores} cores here)", 4 * cores),
                "at most 4 per core (N cores here)",
            )
            .replace('|', "\\|");
        rows.push(format!("| {case} | `tads {}` | {message} |", args[0]));
    }
    assert!(
        !out.exists() && !inside.exists() && !inside_models.exists(),
        "a refused run wrote something"
    );
    let table = format!(
        "| case | command | what TADS says (exit 2) |\n|---|---|---|\n{}\n",
        rows.join("\n")
    );
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no {BEGIN} … {END} block");
    };
    let current = &readme[b + BEGIN.len()..e];
    let wanted = format!("\n{table}");
    if std::env::var("TADS_BLESS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{wanted}{}", &readme[..b + BEGIN.len()], &readme[e..]);
        std::fs::write(&readme_path, updated).unwrap();
    } else {
        assert_eq!(
            current, wanted,
            "README.md's bad-input table is out of date: run the test with TADS_BLESS=1"
        );
    }
}

/// A reader that goes away before the output is written (`tads eval --json … | true`) ends the
/// process quietly with the shell's code for SIGPIPE, 141: no panic, no backtrace.
#[test]
fn a_closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models, out) = (
        tmp.path().join("data"),
        tmp.path().join("models"),
        tmp.path().join("out"),
    );
    assert_ok(&generate(data.to_str().unwrap(), SMALL));
    assert_ok(&train_cmd("m", &data, &models, &[]));
    assert_ok(&crate::support::score_cmd(
        "m",
        &data,
        &models,
        &out,
        &["--quiet"],
    ));
    let mut child = tads()
        .args(["eval", "--json", "--scored"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end at once: the evaluation runs first, then writes into a closed pipe.
    drop(child.stdout.take());
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(141), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
