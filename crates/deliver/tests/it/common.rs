//! A small HTTP/1.1 receiver on 127.0.0.1 that records what it is sent and answers as told,
//! a real Alertmanager started on 127.0.0.1, and sample events.
//!
//! TADS's own integration tests (`tests/it/deliver.rs` at the workspace's root) use this file
//! too, through `#[path]`: it has no `crate::` paths.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tads_deliver::{AlertEvent, EventKind, Expected, Timing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// The path (with the query).
    pub path: String,
    /// The body, as JSON.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
    /// The status answered.
    pub status: u16,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    /// `status` with `body`.
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![],
            body: body.to_string(),
        }
    }

    /// 429 with `Retry-After: secs`.
    pub fn too_many(secs: u64) -> Self {
        Self {
            status: 429,
            headers: vec![("Retry-After".into(), secs.to_string())],
            body: "rate limited".into(),
        }
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Request>,
    plans: HashMap<String, VecDeque<Reply>>,
}

/// The receiver; it stops when dropped.
pub struct Receiver {
    base: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(stream, shared).await;
                });
            }
        });
        Self { base, inner, task }
    }

    /// The URL of `path` here.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next requests to `path` get these answers, in order; then 200 again.
    pub fn plan(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut inner = self.inner.lock().unwrap();
        inner
            .plans
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    /// Every request to `path`, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        let inner = self.inner.lock().unwrap();
        inner
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The bodies of the requests to `path` answered with 2xx.
    pub fn accepted(&self, path: &str) -> Vec<Value> {
        self.requests(path)
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.body)
            .collect()
    }

    /// Waits (up to `within`) for an accepted request to `path` whose body satisfies `pred`.
    pub async fn wait_for(
        &self,
        path: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let until = Instant::now() + within;
        loop {
            if let Some(b) = self.accepted(path).into_iter().find(|b| pred(b)) {
                return Some(b);
            }
            if Instant::now() > until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads one request (Content-Length bodies only), answers, closes.
async fn serve(mut stream: TcpStream, shared: Arc<Mutex<Inner>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    let reply = {
        let mut inner = shared.lock().unwrap();
        let reply = inner
            .plans
            .get_mut(&path)
            .and_then(|q| q.pop_front())
            .unwrap_or_else(|| Reply::status(200, "ok"));
        inner.requests.push(Request {
            path,
            body,
            at: Instant::now(),
            status: reply.status,
        });
        reply
    };
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// A URL nothing listens on.
pub async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/nobody")
}

/// A fixed time in the past: alerts' data times.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// An event of alert `id`; a resolved one ends 30 minutes after it started.
pub fn event(id: &str, kind: EventKind) -> AlertEvent {
    AlertEvent {
        alert_id: id.to_string(),
        kind,
        host: "host-0007".into(),
        model: "fleet-pca".into(),
        severity: "warning".into(),
        region: Some("eu-west".into()),
        project: Some("checkout".into()),
        starts_at: t0(),
        ends_at: (kind == EventKind::Resolved).then(|| t0() + TimeDelta::minutes(30)),
        peak_score: if kind == EventKind::Opened { 7.5 } else { 9.25 },
        points: if kind == EventKind::Opened { 3 } else { 30 },
        top_metrics: vec!["cpu_user".into(), "mem_used".into()],
        expected: vec![Expected {
            metric: "cpu_user".into(),
            expected: 0.21,
            actual: 0.97,
        }],
        generator_url: Some(format!("http://tads.example/alerts/{id}")),
    }
}

/// Short clocks for tests.
pub fn fast() -> Timing {
    Timing {
        resend_every: Duration::from_millis(200),
        resolved_for: Duration::from_millis(600),
        slack_gap: Duration::from_secs(1),
        backoff_first: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        http_timeout: Duration::from_secs(5),
    }
}

/// `t` plus `ms` milliseconds.
pub fn plus(t: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
    t + TimeDelta::milliseconds(ms)
}

/// The names of the files in `dir` (sorted), none if it is missing.
pub fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`, which `scripts/test.sh` installs) on
/// a free port of 127.0.0.1, with its config, data and log in a temporary directory; it stops
/// when dropped.
pub struct Alertmanager {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl Alertmanager {
    /// Starts one and waits until it is ready. With `webhook`, it notifies that URL of every
    /// alert, firing and resolved (grouped by `alert_id`, quickly).
    pub async fn start(webhook: Option<&str>) -> Self {
        let bin = alertmanager_binary();
        let dir = tempfile::tempdir().unwrap();
        let receiver = match webhook {
            Some(url) => format!(
                "  - name: local\n    webhook_configs:\n      - url: '{url}'\n        send_resolved: true\n"
            ),
            None => "  - name: local\n".to_string(),
        };
        let config = format!(
            "route:\n  receiver: local\n  group_by: ['alert_id']\n  group_wait: 100ms\n  \
             group_interval: 500ms\n  repeat_interval: 1h\nreceivers:\n{receiver}"
        );
        std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let mut child = tokio::process::Command::new(&bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if get(&format!("{base}/-/ready")).await.0 == 200 {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("alertmanager exited ({status}):\n{}", log_of(dir.path()));
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "alertmanager not ready after 30 s:\n{}",
                log_of(dir.path())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            base,
            dir,
            _child: child,
        }
    }

    /// Its temporary directory (free for the test's own files too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        log_of(self.dir.path())
    }

    /// TADS's alerts it lists (it lists only those not resolved).
    pub async fn tads_alerts(&self) -> Vec<Value> {
        let (status, body) = get(&format!("{}/api/v2/alerts", self.base)).await;
        assert_eq!(status, 200, "{body}");
        let all: Vec<Value> = serde_json::from_str(&body).unwrap();
        all.into_iter()
            .filter(|a| a["labels"]["alertname"] == "TadsAnomaly")
            .collect()
    }
}

fn alertmanager_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus-alertmanager"))
            .find(|p| p.is_file())
    });
    let bin = found.unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus-alertmanager"));
    assert!(
        bin.is_file(),
        "prometheus-alertmanager is not installed; run scripts/test.sh, which installs it \
         (apt-get install -y prometheus-alertmanager)"
    );
    bin
}

/// GET `url`: the status (0 when there is no answer) and the body.
async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
}
