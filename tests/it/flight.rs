//! `tads serve --flight` over a real gRPC connection: ADBC's Flight SQL driver (from PyPI,
//! installed by `scripts/test.sh`) queries the demo's tables with a TADS function, lists the
//! tables, runs a prepared statement, and is refused without the token, on a wrong query and on
//! anything that would change the session (read-only).

use std::process::Command;

use serde_json::Value;

use crate::serve::{demo, installed, run_ok, serve_demo};
use crate::support::{query, register_dir, tads_session};

const TOKEN: &str = "flight-test-token";

/// Runs `queries` through ADBC against `uri`: one JSON answer per query.
fn adbc(uri: &str, token: &str, queries: &[&str]) -> Vec<Value> {
    let venv = installed("TADS_TEST_VENV", "venv-test");
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/test.sh",
        python.display()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flight/adbc_query.py");
    let out = run_ok(
        Command::new(&python)
            .arg(script)
            .arg(uri)
            .arg(token)
            .args(queries),
        "adbc_query.py",
    );
    let answers: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), queries.len(), "one answer per query:\n{out}");
    answers
}

/// The error an answer carries (empty when it has none).
fn error(answer: &Value) -> String {
    answer["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn adbc_queries_tads_functions_over_flight_sql_with_the_token_and_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let d = demo(tmp.path());
    let (data, scores, models) = (d.join("data"), d.join("scores"), d.join("models"));
    let server = serve_demo(&d, &["--flight", "127.0.0.1:0", "--token", TOKEN]);
    let uri = server.flight.clone().expect("a `flight sql on` line");

    let metrics = "cpu_pct, mem_pct, disk_read_mbps, disk_write_mbps, net_rx_mbps, net_tx_mbps, \
                   latency_ms, error_rate";
    let scored = format!(
        "SELECT host_id, pca_score(concat('hosts/', host_id), {metrics}) AS spe \
         FROM telemetry ORDER BY host_id, ts LIMIT 5"
    );
    let answers = adbc(
        &uri,
        TOKEN,
        &[
            &scored,
            "!tables",
            "!prepared SELECT count(*) AS n FROM alerts",
            "SELECT pca_score('no-such-model', 1.0, 2.0)",
            "CREATE VIEW v AS SELECT 1",
            "INSERT INTO alerts SELECT * FROM alerts",
        ],
    );

    // The same query on the same files, read by DataFusion directly.
    let ctx = tads_session(&models).await;
    register_dir(&ctx, "telemetry", &data).await;
    register_dir(&ctx, "alerts", &scores.join("alerts")).await;
    let expected = cells(&query(&ctx, &scored).await);
    assert_eq!(answers[0]["columns"], serde_json::json!(["host_id", "spe"]));
    let rows = answers[0]["rows"].as_array().expect("rows").clone();
    assert_eq!(rows.len(), 5, "{}", answers[0]);
    for (got, want) in rows.iter().zip(&expected) {
        assert_eq!(got[0].as_str(), Some(want[0].as_str()), "{got} vs {want:?}");
        let (g, w) = (got[1].as_f64().unwrap(), want[1].parse::<f64>().unwrap());
        assert!(w > 0.0 && g == w, "spe over Flight {g}, in DataFusion {w}");
    }

    let tables = &answers[1]["tables"];
    for t in ["telemetry", "scored", "alerts"] {
        assert!(
            tables.as_array().unwrap().iter().any(|n| n == t),
            "{t} not among {tables}"
        );
    }
    let alerts = query(&ctx, "SELECT count(*) AS n FROM alerts").await;
    let n = &cells(&alerts)[0][0];
    assert_eq!(answers[2]["rows"][0][0].to_string(), *n, "{}", answers[2]);

    assert!(
        error(&answers[3]).contains("pca_score") && error(&answers[3]).contains("no-such-model"),
        "a wrong query names the function and the model: {}",
        answers[3]
    );
    for a in &answers[4..] {
        assert!(error(a).contains("read-only"), "refused as read-only: {a}");
    }

    // Without the token, and with a wrong one, nothing is answered.
    for token in ["", "wrong"] {
        let refused = adbc(&uri, token, &["SELECT 1"]);
        assert!(
            error(&refused[0]).contains("Bearer <token>"),
            "token {token:?}: {}",
            refused[0]
        );
    }
}

/// Every cell of `batches` as arrow displays it, row by row (floats in their shortest exact form).
fn cells(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<Vec<String>> {
    use datafusion::arrow::util::display::array_value_to_string;
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                b.columns()
                    .iter()
                    .map(|c| array_value_to_string(c, r).unwrap())
                    .collect()
            })
        })
        .collect()
}
