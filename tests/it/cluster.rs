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
    SMALL, Service, assert_ok, assert_user_error, free_port, generate, query, s3, tads, train_cmd,
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

/// Waits until something listens on `port`.
fn wait_for(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scheduler and two executors, each a `tads cluster` process with the S3 environment;
/// the scheduler's URL.
fn start_cluster(
    env: &[(&'static str, String)],
    executor_models: Option<&Path>,
) -> (Vec<Service>, String) {
    let port = free_port();
    let spawn = |cmd: &mut std::process::Command| {
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut scheduler = spawn(tads().args(["cluster", "scheduler", "--port", &port.to_string()]));
    wait_for(port, "the scheduler", &mut scheduler);
    let url = format!("df://127.0.0.1:{port}");
    let mut services = vec![Service(scheduler)];
    for _ in 0..2 {
        let (flight, grpc) = (free_port(), free_port());
        let mut cmd = tads();
        cmd.args(["cluster", "executor", "--scheduler", &url])
            .args([
                "--port",
                &flight.to_string(),
                "--grpc-port",
                &grpc.to_string(),
            ])
            .args(["--concurrent-tasks", "2"]);
        if let Some(m) = executor_models {
            cmd.arg("--models").arg(m);
        }
        let mut executor = spawn(&mut cmd);
        wait_for(flight, "an executor", &mut executor);
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
    let (_, data, _) = fixture();
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
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(&url),
        "{stderr}"
    );
}
