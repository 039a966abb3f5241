//! Helpers shared by the integration tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;

/// A small dataset (6 hosts, 3 days at 1 minute: 25,920 rows) with every kind of anomaly.
pub const SMALL: &[&str] = &[
    "--hosts",
    "6",
    "--duration",
    "3d",
    "--interval",
    "1m",
    "--anomaly-rate",
    "2",
    "--seed",
    "7",
];

/// The metrics of generated host telemetry, in their column order.
pub const FEATURES: [&str; 8] = [
    "cpu_pct",
    "mem_pct",
    "disk_read_mbps",
    "disk_write_mbps",
    "net_rx_mbps",
    "net_tx_mbps",
    "latency_ms",
    "error_rate",
];

/// A `tads` command with a clean environment for AWS settings.
pub fn tads() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tads"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs `tads generate --quiet` with `args` into `out` and returns its output.
pub fn generate(out: &str, args: &[&str]) -> Output {
    generate_with_env(out, args, &[])
}

/// [`generate`] with extra environment variables (S3 settings).
pub fn generate_with_env(out: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    tads()
        .args(["generate", "--quiet", "--out", out])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run tads")
}

/// Asserts a command succeeded, showing its stderr if not.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a command failed with exit code 2 and one line on stderr containing `needle`.
pub fn assert_user_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Every file below `dir`, relative, sorted.
pub fn files_below(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Runs `sql` and collects the result.
pub async fn query(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// The single value of a one-row, one-column result, formatted.
pub async fn scalar(ctx: &SessionContext, sql: &str) -> String {
    let batches = query(ctx, sql).await;
    let batch = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
    datafusion::arrow::util::display::array_value_to_string(batch.column(0), 0).unwrap()
}

/// The S3-compatible server the tests use (moto, started by `scripts/test.sh`).
pub struct S3 {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// The test S3 server. Fails (never skips) when none is configured.
pub fn s3() -> S3 {
    let endpoint = std::env::var("TADS_TEST_S3_ENDPOINT").expect(
        "the S3 tests need an S3-compatible server: run scripts/test.sh (it starts one) \
         or set TADS_TEST_S3_ENDPOINT=http://127.0.0.1:PORT",
    );
    S3 { endpoint }
}

impl S3 {
    /// Creates a bucket (moto accepts an unsigned PUT) and returns its name.
    pub fn bucket(&self, name: &str) -> String {
        let host = self
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut stream = TcpStream::connect(host).expect("connect to the S3 server");
        write!(
            stream,
            "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "creating bucket {name}: {response}"
        );
        name.to_string()
    }

    /// The environment a `tads` process needs to reach the server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "tads-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "tads-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The same settings for an in-process [`tads_store::Location`].
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint.clone()),
            ("aws_access_key_id", "tads-test".into()),
            ("aws_secret_access_key", "tads-test-secret".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_allow_http", "true".into()),
        ]
    }

    /// An in-process location on this server.
    pub fn location(&self, url: &str) -> tads_store::Location {
        let options = self.options();
        let pairs: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tads_store::Location::parse_with(url, &pairs).unwrap()
    }
}

/// `tads score --model <model> --data <data> --models <models> --out <out>` and `args`.
pub fn score_cmd(model: &str, data: &Path, models: &Path, out: &Path, args: &[&str]) -> Output {
    tads()
        .args(["score", "--model", model, "--data"])
        .arg(data)
        .arg("--models")
        .arg(models)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .expect("run tads")
}

/// `tads train --quiet --model <model> --data <data> --models <models>` and `args`.
pub fn train_cmd(model: &str, data: &Path, models: &Path, args: &[&str]) -> Output {
    tads()
        .args(["train", "--quiet", "--model", model, "--data"])
        .arg(data)
        .arg("--models")
        .arg(models)
        .args(args)
        .output()
        .expect("run tads")
}

/// Registers the dataset in the folder `dir` as table `name` of `ctx`.
pub async fn register_dir(ctx: &SessionContext, name: &str, dir: &Path) {
    tads_sql::register_dataset(
        ctx,
        name,
        &tads_store::Location::parse(dir.to_str().unwrap()).unwrap(),
    )
    .await
    .unwrap();
}

/// A TADS session with every model below `models` loaded and every function registered.
pub async fn tads_session(models: &Path) -> SessionContext {
    let ctx = tads_sql::session();
    let registry = tads_sql::ModelRegistry::new();
    registry
        .load_dir(&tads_store::Location::parse(models.to_str().unwrap()).unwrap())
        .await
        .unwrap();
    tads_sql::register_all(&ctx, &registry).unwrap();
    ctx
}

/// Sends SIGINT (Ctrl-C) to the process `pid`.
pub fn interrupt(pid: u32) {
    let sent = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -INT {pid}");
}

/// Generates the SMALL dataset into `dir`, registers it as table `t` of a fresh session, and
/// returns the session with the files' columns (every column but the `date` partition), quoted
/// and comma-separated: what a test selects to rewrite the rows into files of its own.
pub async fn generated_table(dir: &Path) -> (SessionContext, String) {
    assert_ok(&generate(dir.to_str().unwrap(), SMALL));
    let ctx = tads_sql::session();
    let loc = tads_store::Location::parse(dir.to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "t", &loc).await.unwrap();
    let columns: Vec<String> = ctx
        .table("t")
        .await
        .unwrap()
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != "date")
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    (ctx, columns.join(", "))
}

/// A child process killed when dropped.
pub struct Service(pub std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
