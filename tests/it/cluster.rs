//! TADS on Ballista: the same queries with TADS scalar, aggregate and window functions give
//! the same results on an in-process standalone cluster and on a real one (a scheduler and two
//! executors, each a `tads cluster` process on 127.0.0.1, reading the moto S3 server) as in
//! one process; `tads train --cluster` writes the same model (every number within 1e-9);
//! and the cluster's bad inputs are one line each.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use tads_sql::ModelRegistry;
use tads_store::Location;

use crate::support::{
    S3, SMALL, Service, assert_ok, assert_user_error, free_port, generate, query, s3, tads,
    train_cmd,
};

const METRICS: &str = "cpu_pct, mem_pct, disk_read_mbps, disk_write_mbps, net_rx_mbps, net_tx_mbps, latency_ms, error_rate";

/// TADS scalar (model scores, fused score), aggregate (robust_stats) and window (alert_state)
/// functions over the dataset, per host.
fn queries() -> Vec<String> {
    vec![
        format!(
            "SELECT host_id, count(*) AS n, round(sum(pca_score('m', {METRICS})), 6) AS spe, \
             round(max(anomaly_score('m', {METRICS})), 6) AS fused, \
             round((robust_stats(cpu_pct))['median'], 6) AS cpu_median \
             FROM telemetry GROUP BY host_id ORDER BY host_id"
        ),
        format!(
            "SELECT host_id, count(DISTINCT a) AS alerts, count(a) AS rows_in_alert FROM \
             (SELECT host_id, alert_state(anomaly_score('m', {METRICS}), 3.0, 2.0) \
              OVER (PARTITION BY host_id ORDER BY ts) AS a FROM telemetry) \
             GROUP BY host_id ORDER BY host_id"
        ),
    ]
}

/// The SMALL dataset and a model `m` trained on it, made once for this module.
fn fixture() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static F: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let models = tmp.path().join("models");
        assert_ok(&generate(data.to_str().unwrap(), SMALL));
        assert_ok(&train_cmd("m", &data, &models, &[]));
        (tmp, data, models)
    })
}

async fn results(ctx: &SessionContext) -> Vec<String> {
    let mut out = vec![];
    for q in queries() {
        let batches = query(ctx, &q).await;
        out.push(pretty_format_batches(&batches).unwrap().to_string());
    }
    out
}

async fn registered(ctx: &SessionContext, data: &Path, models: &Path) -> ModelRegistry {
    let registry = ModelRegistry::new();
    registry
        .load_dir(&Location::parse(models.to_str().unwrap()).unwrap())
        .await
        .unwrap();
    tads_sql::register_all(ctx, &registry).unwrap();
    let location = Location::parse(data.to_str().unwrap()).unwrap();
    tads_sql::register_dataset(ctx, "telemetry", &location)
        .await
        .unwrap();
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_cluster_gives_the_results_of_one_process() {
    let (_, data, models) = fixture();
    let local = tads_sql::session();
    registered(&local, data, models).await;
    let expected = results(&local).await;

    let registry = ModelRegistry::new();
    let cluster = tads_cluster::standalone(&registry).await.unwrap();
    registered(&cluster, data, models).await;
    // The plan runs on the cluster: Ballista's distributed plan, not DataFusion's local one.
    let plan = query(&cluster, &format!("EXPLAIN {}", queries()[0])).await;
    let plan = pretty_format_batches(&plan).unwrap().to_string();
    assert!(plan.contains("ShuffleWriterExec"), "{plan}");
    assert_eq!(results(&cluster).await, expected);
    // Dictionary columns are read as their values on a cluster (Ballista's shuffle between
    // executors drops the dictionary, and the next stage would fail on the mismatch).
    let typeof_host = "SELECT arrow_typeof(host_id) FROM telemetry LIMIT 1";
    assert_eq!(
        crate::support::scalar(&local, typeof_host).await,
        "Dictionary(Int32, Utf8)"
    );
    assert_eq!(crate::support::scalar(&cluster, typeof_host).await, "Utf8");
    assert_eq!(expected[0].matches("| host-").count(), 6, "{}", expected[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_the_tads_functions_says_what_to_start() {
    use ballista::prelude::SessionContextExt;
    let (_, data, models) = fixture();
    // Plain Ballista: its scheduler and executor know DataFusion's functions only.
    let plain = SessionContext::standalone().await.unwrap();
    registered(&plain, data, models).await;
    let err = plain
        .sql(&queries()[0])
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    let message = tads_cluster::explain("df://localhost:50050", &err);
    assert!(
        message.contains("lacks the TADS functions") && message.contains("tads cluster executor"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

/// Starts `cmd` on `ports` fresh ports and waits until it listens on the first: another
/// test's connection may take a port between `free_port` and the bind, so a process that exits
/// early is started again on fresh ports (three tries; its stderr is in the failure).
fn start_listening(
    what: &str,
    env: &[(&'static str, String)],
    cmd: impl Fn(&[u16]) -> std::process::Command,
    ports: usize,
) -> (Child, Vec<u16>) {
    let mut last = String::new();
    for _ in 0..3 {
        let chosen: Vec<u16> = (0..ports).map(|_| free_port()).collect();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = cmd(&chosen)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", chosen[0])).is_ok() {
                return (child, chosen);
            }
            if let Ok(Some(status)) = child.try_wait() {
                last = format!(
                    "{status}: {}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what} is not listening on {}",
                chosen[0]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("{what} exited early three times, last {last}");
}

/// A scheduler and two executors, each a `tads cluster` process with the S3 environment;
/// the scheduler's URL.
fn start_cluster(
    env: &[(&'static str, String)],
    executor_models: Option<&Path>,
) -> (Vec<Service>, String) {
    let (scheduler, port) = start_listening(
        "the scheduler",
        env,
        |p| {
            let mut cmd = tads();
            cmd.args(["cluster", "scheduler", "--port", &p[0].to_string()]);
            cmd
        },
        1,
    );
    let mut services = vec![Service(scheduler)];
    let url = format!("df://127.0.0.1:{}", port[0]);
    for _ in 0..2 {
        let (executor, _) = start_listening(
            "an executor",
            env,
            |p| {
                let mut cmd = tads();
                cmd.args(["cluster", "executor", "--scheduler", &url])
                    .args(["--port", &p[0].to_string()])
                    .args(["--grpc-port", &p[1].to_string()])
                    .args(["--concurrent-tasks", "2"]);
                if let Some(m) = executor_models {
                    cmd.arg("--models").arg(m);
                }
                cmd
            },
            2,
        );
        services.push(Service(executor));
    }
    // The executors register with the scheduler by heartbeat.
    std::thread::sleep(Duration::from_secs(2));
    (services, url)
}

fn sql_csv(env: &[(&'static str, String)], args: &[&str]) -> String {
    let out = tads()
        .arg("sql")
        .args(args)
        .args(["-q", "--format", "csv"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn three_processes_on_s3_give_the_results_of_one_process() {
    let (_, data, models) = fixture();
    let s3 = s3();
    let bucket = s3.bucket(&format!("tads-cluster-{}", std::process::id()));
    let env = s3.env();
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The dataset on S3, generated again with the same seed; the models on S3, trained there.
    let s3_data = format!("s3://{bucket}/data");
    let s3_models = format!("s3://{bucket}/models");
    assert_ok(&crate::support::generate_with_env(&s3_data, SMALL, &envs));
    let train = tads()
        .args([
            "train", "--quiet", "--model", "m", "--data", &s3_data, "--models", &s3_models,
        ])
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert_ok(&train);
    let (_services, url) = start_cluster(&env, None);
    for q in queries() {
        let local = sql_csv(
            &env,
            &["--data", &s3_data, "--models", &s3_models, "-c", &q],
        );
        let on_cluster = sql_csv(
            &env,
            &[
                "--cluster",
                &url,
                "--data",
                &s3_data,
                "--models",
                &s3_models,
                "-c",
                &q,
            ],
        );
        assert_eq!(on_cluster, local, "{q}");
        assert_eq!(local.lines().count(), 7, "{local}");
    }
    // The same model trained locally and on the cluster: the same fingerprint.
    let local_models = data.parent().unwrap().join("models-local");
    let cluster_models = data.parent().unwrap().join("models-cluster");
    for (dir, extra) in [
        (&local_models, vec![]),
        (&cluster_models, vec!["--cluster", url.as_str()]),
    ] {
        let out = tads()
            .args([
                "train",
                "--quiet",
                "--quantiles",
                "exact",
                "--model",
                "t",
                "--data",
                &s3_data,
                "--models",
            ])
            .arg(dir)
            .args(&extra)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert_ok(&out);
    }
    let model = |dir: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join("t/model.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    // Partial sums merge in the order the executors' tasks finish, so the last digits (and
    // with them the fingerprint) may differ: every number within 1e-9, the rest equal.
    same_model(&model(&cluster_models), &model(&local_models), "");
    let _ = models;
    score_on_the_cluster_as_in_one_process(&s3, &bucket, &envs, &url);
}

/// `tads score --cluster` (the executors read the input and write the scored files on S3)
/// gives every row the scores and alert id of a local run, and the same alerts and counts.
fn score_on_the_cluster_as_in_one_process(s3: &S3, bucket: &str, envs: &[(&str, &str)], url: &str) {
    let data = format!("s3://{bucket}/data");
    let models = format!("s3://{bucket}/models");
    let outs = [
        format!("s3://{bucket}/scores-local"),
        format!("s3://{bucket}/scores-cluster"),
    ];
    for (out, extra) in outs.iter().zip([vec![], vec!["--cluster", url]]) {
        let run = tads()
            .args(["score", "--quiet", "--model", "m", "--data", &data])
            .args(["--models", &models, "--out", out])
            .args(&extra)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert_ok(&run);
    }
    let env: Vec<(&'static str, String)> = s3.env();
    let rows = |out: &str| {
        sql_csv(
            &env,
            &[
                "--data",
                &format!("{out}/scored"),
                "-c",
                "SELECT host_id, ts, cpu_pct, pca_spe, pca_t2, mad_zmax, top_metric, score, alert_id                  FROM telemetry ORDER BY host_id, ts",
            ],
        )
    };
    let (local, on_cluster) = (rows(&outs[0]), rows(&outs[1]));
    assert_eq!(local.lines().count(), 25_921, "{}", &local[..200]);
    assert!(local == on_cluster, "the scored rows differ");
    let alerts = |out: &str| {
        sql_csv(
            &env,
            &[
                "--data",
                &format!("{out}/alerts"),
                "-c",
                "SELECT alert_id, host_id, start_ts, end_ts, points, peak_score, severity                  FROM telemetry ORDER BY alert_id",
            ],
        )
    };
    let (local, on_cluster) = (alerts(&outs[0]), alerts(&outs[1]));
    assert!(local.lines().count() > 1, "no alerts: {local}");
    assert_eq!(on_cluster, local);
    // The manifests count the same rows, unscored rows and files.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let manifest = |out: &str| -> serde_json::Value {
        let bytes = runtime
            .block_on(s3.location(out).get_opt("_manifest.json"))
            .unwrap()
            .expect("a manifest");
        serde_json::from_slice(&bytes).unwrap()
    };
    let (local, on_cluster) = (manifest(&outs[0]), manifest(&outs[1]));
    for field in ["rows_in", "rows", "rows_unscored"] {
        assert_eq!(on_cluster[field], local[field], "{field}");
    }
    let paths = |m: &serde_json::Value| -> Vec<String> {
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(paths(&on_cluster), paths(&local));
}

/// Asserts two models are equal but for numbers within 1e-9 (relative), the fingerprint and
/// the time of training.
fn same_model(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (k, v) in x {
                if k != "fingerprint" && k != "created_at" {
                    same_model(v, &y[k], &format!("{path}.{k}"));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                same_model(u, v, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let scale = x.abs().max(y.abs()).max(1e-12);
            assert!((x - y).abs() / scale <= 1e-9, "{path}: {x} vs {y}");
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn executors_refuse_a_model_they_cannot_find_or_that_differs_from_the_clients() {
    let (tmp, data, models) = fixture();
    // The executors search an empty models directory of their own.
    let empty = tmp.path().join("no-models");
    std::fs::create_dir_all(&empty).unwrap();
    // The client scores with its own models; the executors look for them elsewhere.
    let score_on = |url: &str| {
        tads()
            .args(["sql", "--cluster", url, "--data"])
            .arg(data)
            .arg("--models")
            .arg(models)
            .args(["-c", &queries()[0]])
            .output()
            .unwrap()
    };
    let (_services, url) = start_cluster(&[], Some(&empty));
    let out = score_on(&url);
    assert_user_error(&out, "model `m`");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(empty.to_str().unwrap()), "{stderr}");
    drop(_services);

    // Another model of the same name where the executors look: refused by fingerprint.
    let other = tmp.path().join("other-models");
    assert_ok(&train_cmd("m", data, &other, &["--k", "2"]));
    let (_services, url) = start_cluster(&[], Some(&other));
    assert_user_error(&score_on(&url), "fingerprint");
}

#[test]
fn an_unreachable_scheduler_is_one_line_naming_it() {
    let (_, data, models) = fixture();
    let url = format!("df://127.0.0.1:{}", free_port());
    let out = tads()
        .args(["sql", "--cluster", &url, "--data"])
        .arg(data)
        .args(["-c", "SELECT 1"])
        .output()
        .unwrap();
    assert_user_error(&out, &url);
    let out = tads()
        .args(["train", "--model", "x", "--cluster", &url, "--data"])
        .arg(data)
        .arg("--models")
        .arg(data.parent().unwrap().join("unreachable-models"))
        .output()
        .unwrap();
    assert_user_error(&out, &url);
    let scores = data.parent().unwrap().join("unreachable-scores");
    let out = tads()
        .args(["score", "--model", "m", "--cluster", &url, "--data"])
        .arg(data)
        .arg("--models")
        .arg(models)
        .arg("--out")
        .arg(&scores)
        .output()
        .unwrap();
    assert_user_error(&out, &url);
    assert!(!scores.exists());
    // An executor whose scheduler is not there: the scheduler named, exit 2.
    let (flight, grpc) = (free_port(), free_port());
    let out = tads()
        .args(["cluster", "executor", "--scheduler", &url])
        .args([
            "--port",
            &flight.to_string(),
            "--grpc-port",
            &grpc.to_string(),
        ])
        .output()
        .unwrap();
    let last = last_error(&out);
    assert!(last.contains(&url), "{last}");
    // An executor whose port is taken: the flag and the port named, not a silent exit 0.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = tads()
        .args(["cluster", "executor", "--scheduler", &url, "--port", &port])
        .output()
        .unwrap();
    let last = last_error(&out);
    assert!(
        last.starts_with(&format!(
            "error: --port {port}: cannot listen on 127.0.0.1:{port}"
        )),
        "{last}"
    );
}

/// The last line of a cluster process's stderr (it says what it starts on first), checked to
/// be an error with exit code 2.
fn last_error(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(last.starts_with("error: "), "{stderr}");
    last.to_string()
}
