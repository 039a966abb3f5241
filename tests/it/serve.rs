//! `tads serve` over real HTTP: the demo's dataset, scores and models served by the real
//! binary on a free port of 127.0.0.1, every route's answer checked against what DataFusion
//! reads from the same files, the errors, the token, `/metrics`, and the OpenAPI document driven
//! by schemathesis (from PyPI, installed by `scripts/test.sh`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{assert_ok, assert_user_error, register_dir, scalar, tads, tads_session};

/// A running `tads serve`, stopped when dropped.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub(crate) base: String,
    /// `grpc://127.0.0.1:PORT` of Flight SQL, with `--flight`
    pub(crate) flight: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tads serve` on a free port with `args`; waits for its "listening on" line.
pub(crate) fn serve(args: &[&str]) -> Server {
    serve_env(args, &[])
}

/// [`serve`] with environment variables set for the server.
pub(crate) fn serve_env(args: &[&str], env: &[(&str, &Path)]) -> Server {
    let mut child = tads()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("TADS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut flight = None;
    loop {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if let Some(at) = line.trim().strip_prefix("flight sql on ") {
            flight = Some(at.to_string());
            continue;
        }
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no listening line: {line:?}"))
            .to_string();
        return Server {
            child,
            base,
            flight,
        };
    }
}

/// `tads serve` over the demo in `d` (its data, scores and models), with `extra` arguments.
pub(crate) fn serve_demo(d: &Path, extra: &[&str]) -> Server {
    let path = |p: &str| d.join(p).to_str().unwrap().to_string();
    let (data, scores, models) = (path("data"), path("scores"), path("models"));
    let mut args = vec!["--data", &data, "--data", &scores, "--models", &models];
    args.extend_from_slice(extra);
    serve(&args)
}

/// The Parquet files below `dir`.
fn count_parquet(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| match p.is_dir() {
            true => count_parquet(&p),
            false => usize::from(p.extension().is_some_and(|e| e == "parquet")),
        })
        .sum()
}

/// The demo's folder (data, models, scores), made once per test.
pub(crate) fn demo(dir: &Path) -> PathBuf {
    let d = dir.join("demo");
    assert_ok(
        &tads()
            .args(["demo", "--hosts", "6", "--days", "2", "--dir"])
            .arg(&d)
            .output()
            .unwrap(),
    );
    d
}

/// Where `scripts/test.sh` installed a test tool: `$env`, else `~/.cache/tads/<under_cache>`.
pub(crate) fn installed(env: &str, under_cache: &str) -> PathBuf {
    std::env::var(env).map_or_else(
        |_| {
            PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/tads")
                .join(under_cache)
        },
        PathBuf::from,
    )
}

/// Runs `command`; panics with its output unless it succeeds; returns its output.
pub(crate) fn run_ok(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// `GET /metrics` of the server at `base`: the Prometheus text.
pub(crate) async fn scrape(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// GET with an optional bearer token: status and JSON body.
pub(crate) async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

#[tokio::test]
async fn the_api_answers_what_datafusion_reads_and_schemathesis_finds_no_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let d = demo(tmp.path());
    let (data, scores, models) = (d.join("data"), d.join("scores"), d.join("models"));
    let server = serve_demo(&d, &[]);
    let api = |path: &str| format!("{}{path}", server.base);

    // What the same files hold, read by DataFusion directly.
    let ctx = tads_session(&models).await;
    register_dir(&ctx, "t", &data).await;
    register_dir(&ctx, "a", &scores.join("alerts")).await;
    let rows: i64 = scalar(&ctx, "SELECT count(*) FROM t")
        .await
        .parse()
        .unwrap();
    let alerts: i64 = scalar(&ctx, "SELECT count(*) FROM a")
        .await
        .parse()
        .unwrap();
    assert!(alerts > 0, "the demo has alerts");

    let (s, health) = get(&api("/api/health"), None).await;
    assert_eq!(
        (s, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    assert_eq!(health["datasets"], 3, "telemetry, scored, alerts: {health}");

    let (_, list) = get(&api("/api/datasets"), None).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["telemetry", "scored", "alerts"]);

    let (s, t) = get(&api("/api/datasets/telemetry"), None).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["rows"].as_i64(), Some(rows));
    assert!(
        t["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "cpu_pct")
    );
    let (_, summary) = get(&api("/api/datasets/telemetry/summary"), None).await;
    assert_eq!(summary["rows"].as_i64(), Some(rows), "{summary}");
    assert_eq!(summary["hosts"], 6, "{summary}");
    let (_, s_summary) = get(&api("/api/datasets/scored/summary"), None).await;
    assert_eq!(s_summary["alerts"].as_i64(), Some(alerts), "{s_summary}");

    let (_, top) = get(
        &api("/api/datasets/telemetry/topk?column=host_id&k=3"),
        None,
    )
    .await;
    let values = top["values"].as_array().unwrap();
    assert_eq!(values.len(), 3, "{top}");
    assert_eq!(values[0]["count"].as_i64(), Some(rows / 6), "{top}");
    let (_, hist) = get(
        &api("/api/datasets/telemetry/histogram?metric=cpu_pct&bins=10"),
        None,
    )
    .await;
    let bins = hist["bins"].as_array().unwrap();
    assert!(!bins.is_empty() && bins.len() <= 10, "{hist}");
    let total: i64 = bins.iter().map(|b| b["count"].as_i64().unwrap()).sum();
    assert_eq!(Some(total), hist["count"].as_i64());
    assert_eq!(total, rows, "cpu_pct has no NULLs in generated data");

    let (s, series) = get(
        &api("/api/datasets/telemetry/timeseries?metrics=cpu_pct,latency_ms&agg=p95&bucket=6h"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{series}");
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 8, "two days in 6-hour buckets: {series}");
    let in_buckets: i64 = points.iter().map(|p| p["rows"].as_i64().unwrap()).sum();
    assert_eq!(in_buckets, rows);
    assert!(
        points
            .iter()
            .all(|p| p["cpu_pct"].is_number() && p["latency_ms"].is_number())
    );
    let (s, bad) = get(
        &api("/api/datasets/telemetry/timeseries?metrics=cpu_pct&bucket=7q"),
        None,
    )
    .await;
    assert_eq!(s, 400, "{bad}");

    let (_, models_list) = get(&api("/api/models"), None).await;
    let first = models_list[0]["name"].as_str().unwrap().to_string();
    assert_eq!(
        models_list[0]["scoring_space"],
        serde_json::json!(false),
        "{models_list}"
    );
    let (s, model) = get(&api(&format!("/api/models/{first}")), None).await;
    assert_eq!(
        (s, model["name"].as_str()),
        (200, Some(first.as_str())),
        "{model}"
    );

    let (_, all) = get(&api("/api/alerts?limit=10000"), None).await;
    assert_eq!(all.as_array().unwrap().len() as i64, alerts);
    let starts: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["start_ts"].as_str().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let host = all[0]["host_id"].as_str().unwrap().to_string();
    let (_, of_host) = get(&api(&format!("/api/alerts?host={host}&limit=10000")), None).await;
    let expected: i64 = scalar(
        &ctx,
        &format!("SELECT count(*) FROM a WHERE host_id = '{host}'"),
    )
    .await
    .parse()
    .unwrap();
    assert_eq!(of_host.as_array().unwrap().len() as i64, expected);
    let (_, critical) = get(&api("/api/alerts?severity=critical&limit=10000"), None).await;
    assert!(
        critical
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["severity"] == "critical")
    );

    let (s, line) = get(
        &api(&format!(
            "/api/hosts/{host}/timeline?metrics=cpu_pct,mem_pct"
        )),
        None,
    )
    .await;
    assert_eq!(s, 200, "{line}");
    let points = line["rows"].as_array().unwrap();
    assert_eq!(points.len() as i64, rows / 6, "every row of the host");
    assert!(
        points
            .windows(2)
            .all(|w| w[0]["ts"].as_str() < w[1]["ts"].as_str())
    );
    assert!(points[0]["cpu_pct"].is_number() && points[0].get("disk_read_mbps").is_none());
    assert_eq!(line["alerts"].as_array().unwrap().len() as i64, expected);
    let in_alerts = points.iter().filter(|p| p["alert_id"].is_string()).count();
    assert!(in_alerts > 0, "the host's alerts cover some of its rows");

    // The run, evaluated as `tads eval --json` evaluates it.
    let (_, runs) = get(&api("/api/runs"), None).await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["alerts"].as_i64(), Some(alerts));
    let run = runs[0]["id"].as_str().unwrap().to_string();
    let (s, eval) = get(&api(&format!("/api/runs/{run}/eval")), None).await;
    assert_eq!(s, 200, "{eval}");
    let cli = tads()
        .args(["eval", "--json", "--scored"])
        .arg(&scores)
        .output()
        .unwrap();
    assert_ok(&cli);
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    for field in [
        "point",
        "events",
        "alerts",
        "false_alerts",
        "event_recall",
        "au_prc",
    ] {
        assert_eq!(eval[field], cli[field], "{field}");
    }
    let (_, by_region) = get(
        &api(&format!("/api/runs/{run}/errors?group_by=region")),
        None,
    )
    .await;
    assert_eq!(by_region["groups"], cli["by_region"]);
    let (_, by_type) = get(&api(&format!("/api/runs/{run}/errors")), None).await;
    assert!(
        by_type["groups"]["spike"]["events"].as_u64() > Some(0),
        "{by_type}"
    );

    // Errors: JSON, a 4xx, and nothing reaches outside the served tables.
    for (path, status, needle) in [
        ("/api/datasets/..%2F..%2Fetc%2Fpasswd", 404, "no dataset"),
        ("/api/models/..%2F..%2Fetc%2Fpasswd", 404, "no model"),
        ("/api/models/../../etc/passwd", 404, ""),
        (
            "/api/datasets/telemetry/topk?column=nope",
            400,
            "column=nope",
        ),
        (
            "/api/datasets/telemetry/histogram?metric=host_id",
            400,
            "metric=host_id",
        ),
        (
            "/api/datasets/telemetry/topk?column=host_id&k=0",
            400,
            "k=0",
        ),
        ("/api/alerts?severity=loud", 400, "severity=loud"),
        ("/api/alerts?since=yesterday", 400, "since=yesterday"),
        (
            "/api/hosts/x/timeline?metrics=cpu_pct;DROP",
            400,
            "not a numeric column",
        ),
        ("/nowhere", 404, "no such route"),
        ("/api/runs/nope/eval", 404, "no served score run"),
        (
            "/api/runs/nope/errors?group_by=planet",
            400,
            "group_by=planet",
        ),
    ] {
        let (s, body) = get(&api(path), None).await;
        assert_eq!(s, status, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{path}: {body}"
        );
    }
    // A quote in a host is data, not SQL.
    let (s, none) = get(&api("/api/alerts?host=x'%20OR%20'1'='1"), None).await;
    assert_eq!((s, none.as_array().map(Vec::len)), (200, Some(0)), "{none}");

    let metrics = scrape(&server.base).await;
    for needle in [
        "tads_http_requests_total{route=\"/api/alerts\",status=\"200\"}",
        "tads_http_requests_total{route=\"/api/alerts\",status=\"400\"}",
        "tads_http_request_duration_seconds",
        "tads_alerts_open{severity=\"critical\"}",
        "tads_models_loaded",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    // The files each table reads: the demo's data files, counted on disk.
    let files = count_parquet(&data);
    assert!(
        metrics.contains(&format!(
            "tads_files_served{{table=\"telemetry\"}} {files}\n"
        )),
        "{files} files of telemetry in\n{metrics}"
    );

    // The OpenAPI document, driven by schemathesis: no 5xx; status codes, content types, headers
    // and bodies as documented; invalid input refused; methods not offered refused.
    let venv = installed("TADS_TEST_VENV", "venv-test");
    let st = venv.join("bin/schemathesis");
    assert!(st.exists(), "{} missing: run scripts/test.sh", st.display());
    let mut out = Command::new(&st);
    out.args(["run", &api("/api/openapi.json")])
        .args([
            // Every check but "a schema-valid request is accepted": a column name is valid by the
            // schema (a string), but only the dataset's own columns are accepted (400 otherwise).
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--seed",
            "7",
            // A stream that ends only when the server stops (tests/it/live.rs reads it).
            "--exclude-path",
            "/api/live",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache (.schemathesis/) goes to the temporary folder, not the repository.
        .current_dir(tmp.path());
    run_ok(&mut out, "schemathesis");
}

#[tokio::test]
async fn a_token_guards_the_api_and_is_needed_beyond_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let d = demo(tmp.path());
    let scores = d.join("scores");
    let server = serve(&[
        "--data",
        scores.to_str().unwrap(),
        "--token",
        "s3cret-token",
        "--token-all",
    ]);
    let api = |path: &str| format!("{}{path}", server.base);
    let (s, body) = get(&api("/api/alerts"), None).await;
    assert_eq!(s, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    assert_eq!(get(&api("/api/alerts"), Some("wrong-token!")).await.0, 401);
    assert_eq!(get(&api("/api/alerts"), Some("s3cret-token")).await.0, 200);
    assert_eq!(
        get(&api("/api/health"), None).await.0,
        200,
        "health needs no token"
    );

    // Without --token-all, reading needs no token.
    let open = serve(&[
        "--data",
        scores.to_str().unwrap(),
        "--token",
        "s3cret-token",
    ]);
    assert_eq!(get(&format!("{}/api/alerts", open.base), None).await.0, 200);

    // Beyond loopback without a token: refused, one line, exit 2.
    let out = tads()
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(&scores)
        .env_remove("TADS_TOKEN")
        .output()
        .unwrap();
    assert_user_error(&out, "needs --token");
    let out = tads()
        .args(["serve", "--listen", "localhost:eighty"])
        .output()
        .unwrap();
    assert_user_error(&out, "--listen localhost:eighty");
}

/// The dashboard in headless Chromium (Debian's `chromium`, driven by `playwright-core` from
/// npm, both installed by `scripts/test.sh`): `tests/browser/dashboard.cjs` loads every page with
/// no console error and checks what it shows against the API, a host's charts with the alerts
/// shaded among them, and starts a score job from the Jobs page and sees it finish. With `TADS_BLESS=1` its screenshots replace those in `docs/img/`.
#[test]
fn the_dashboard_loads_every_page_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let d = demo(tmp.path());
    let server = serve(&[
        "--data",
        d.join("data").to_str().unwrap(),
        "--data",
        d.join("scores").to_str().unwrap(),
        "--models",
        d.join("models").to_str().unwrap(),
        "--work",
        tmp.path().join("work").to_str().unwrap(),
    ]);
    let node_path = installed("TADS_TEST_NODE_PATH", "node/node_modules");
    assert!(
        node_path.join("playwright-core").exists(),
        "{} has no playwright-core: run scripts/test.sh",
        node_path.display()
    );
    let shots = tmp.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Command::new("node");
    out.arg(root.join("tests/browser/dashboard.cjs"))
        .arg(&server.base)
        .arg(&shots)
        .env("NODE_PATH", &node_path);
    let text = run_ok(&mut out, "the dashboard in Chromium");
    let seen: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    for page in ["fleet", "alerts", "host", "quality", "jobs"] {
        let shot = shots.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "{page}.png"
        );
        if std::env::var_os("TADS_BLESS").is_some() {
            let img = root.join("docs/img");
            std::fs::create_dir_all(&img).unwrap();
            std::fs::copy(&shot, img.join(format!("dashboard-{page}.png"))).unwrap();
        }
    }
}
