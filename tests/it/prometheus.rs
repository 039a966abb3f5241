//! `tads import prometheus` against a real Prometheus scraping a real node_exporter on
//! 127.0.0.1 (Debian's `prometheus` and `prometheus-node-exporter`, installed by
//! `scripts/test.sh`): this very machine's CPU, memory and load are imported, a model is
//! trained on them, and `tads watch` scores what `import --follow` keeps pulling and raises an
//! alert when the test takes 40 % of the machine's memory. `scripts/test.sh` runs that test alone,
//! after the others, whose processes would move the machine's memory while it trains and watches.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{
    Service, assert_ok, assert_user_error, free_port, interrupt, scalar, tads, train_cmd,
};

/// GETs `url` and returns the body as JSON.
async fn get(url: &str) -> Option<serde_json::Value> {
    let response = reqwest::get(url).await.ok()?;
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// node_exporter and a Prometheus scraping it every 250 ms; Prometheus's URL.
fn start(dir: &Path) -> (Service, Service, String) {
    let node_port = free_port();
    let node = Service(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter (scripts/test.sh installs it)"),
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n\
             scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{node_port}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let prometheus = Service(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (scripts/test.sh installs it)"),
    );
    (node, prometheus, format!("http://127.0.0.1:{port}"))
}

const QUERIES: [&str; 3] = [
    "load1=node_load1",
    "mem_used_pct=100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    r#"cpu_busy=sum by (instance) (irate(node_cpu_seconds_total{mode!="idle"}[2s]))"#,
];

fn import(url: &str, out: &Path, args: &[&str]) -> Command {
    let mut cmd = tads();
    cmd.args([
        "import",
        "prometheus",
        "--url",
        url,
        "--step",
        "250ms",
        "--out",
    ])
    .arg(out);
    for q in QUERIES {
        cmd.args(["--query", q]);
    }
    cmd.args(args);
    cmd
}

#[tokio::test]
async fn this_machine_imported_from_prometheus_is_trained_on_and_watched() {
    let tmp = tempfile::tempdir().unwrap();
    let (_node, _prometheus, url) = start(tmp.path());
    // Wait for 30 s of samples (120 scrapes).
    let ready = Instant::now();
    let count = format!("{url}/api/v1/query?query=count_over_time(node_load1%5B1m%5D)");
    loop {
        let n = get(&count).await.and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<u64>()
                .ok()
        });
        if n.is_some_and(|n| n >= 120) {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(120),
            "Prometheus has no samples"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // History: the last 25 s, three columns, one host (the exporter's instance).
    let (history, models) = (tmp.path().join("history"), tmp.path().join("models"));
    let run = import(&url, &history, &["--start", "-25s"])
        .output()
        .unwrap();
    assert_ok(&run);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(history.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "tads-import");
    let rows = manifest["rows"].as_u64().unwrap();
    assert!((80..=110).contains(&rows), "{rows} rows for 25 s at 250 ms");
    assert_ok(&train_cmd("node", &history, &models, &[]));
    // PromQL that Prometheus refuses is named in one line.
    let bad = tads()
        .args([
            "import",
            "prometheus",
            "--url",
            &url,
            "--query",
            "bad=sum(",
            "--out",
        ])
        .arg(tmp.path().join("bad"))
        .output()
        .unwrap();
    assert_user_error(&bad, "--query bad: Prometheus refused it");

    // Live: import --follow keeps pulling, tads watch scores each new file.
    let (live, out) = (tmp.path().join("live"), tmp.path().join("watch"));
    let mut follower = import(
        &url,
        &live,
        &["--start", "-1s", "--follow", "--every", "500ms"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // This machine's noise in the seconds before the memory is taken may raise an alert (the
    // model knows only 25 s of it); the default 30-minute cooldown after it would then hold
    // back the memory's alert, so there is none here.
    let watch = |extra: &[&str]| {
        let mut cmd = tads();
        cmd.args(["watch", "--model", "node", "--settle", "100ms"])
            .args(["--set", "alerts.cooldown=0", "--data"])
            .arg(&live)
            .arg("--models")
            .arg(&models)
            .arg("--out")
            .arg(&out)
            .args(extra);
        cmd
    };
    let mut watcher = watch(&["--every", "300ms", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // An anomaly on this machine: 40 % of its memory taken and held for 6 s.
    let (taken_from, taken_until) = take_memory(Duration::from_secs(6));
    std::thread::sleep(Duration::from_secs(3));
    for child in [&mut follower, &mut watcher] {
        interrupt(child.id());
        assert!(child.wait().unwrap().success());
    }
    assert_ok(&watch(&["--once"]).output().unwrap());
    let imported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(live.join("_manifest.json")).unwrap()).unwrap();
    let files = imported["files"].as_array().unwrap().len();
    assert!(files >= 4, "{files} files in 6 s of --follow --every 500ms");
    // Every imported row was scored, once, in the watcher's rounds.
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_watch/checkpoint.json")).unwrap())
            .unwrap();
    let done = checkpoint["files"].as_object().unwrap();
    assert_eq!(done.len(), files);
    let scored: u64 = done.values().map(|f| f["rows"].as_u64().unwrap()).sum();
    assert_eq!(scored, imported["rows"].as_u64().unwrap());

    // The anomaly is in the data: the imported memory use rose while the memory was taken.
    let scored_rows = crate::support::tads_session(&models).await;
    crate::support::register_dir(&scored_rows, "s", &live).await;
    let rise = scalar(
        &scored_rows,
        &format!(
            "SELECT max(mem_used_pct) - min(mem_used_pct) FROM s WHERE ts >= to_timestamp_micros({}) AND ts <= to_timestamp_micros({})",
            micros(taken_from) - 2_000_000,
            micros(taken_until)
        ),
    )
    .await;
    assert!(
        rise.parse::<f64>().unwrap() >= 10.0,
        "memory use rose by {rise} points only"
    );

    // The watcher raised an alert while the memory was taken, on rows whose memory use rose.
    let ctx = tads_sql::session();
    let mut alerts_files = Vec::new();
    for round in std::fs::read_dir(out.join("rounds")).unwrap() {
        let file = round.unwrap().path().join("alerts/alerts.parquet");
        if file.exists() {
            alerts_files.push(file.to_string_lossy().into_owned());
        }
    }
    let (mut during, mut peak) = (0, f64::NAN);
    let window = format!(
        "start_ts <= to_timestamp_micros({until}) AND end_ts >= to_timestamp_micros({from})",
        from = micros(taken_from),
        until = micros(taken_until + Duration::from_secs(1))
    );
    for (i, file) in alerts_files.iter().enumerate() {
        let name = format!("a{i}");
        ctx.register_parquet(&name, file, Default::default())
            .await
            .unwrap();
        let n = scalar(&ctx, &format!("SELECT count(*) FROM {name} WHERE {window}")).await;
        during += n.parse::<u64>().unwrap();
        // The highest score the watcher gave a row while the memory was taken, for the message
        // (a round of files without rows has no scored files to read).
        let round = Path::new(file).parent().unwrap().parent().unwrap();
        let location = tads_store::Location::parse(round.join("scored").to_str().unwrap()).unwrap();
        if tads_sql::register_dataset(&ctx, &format!("r{i}"), &location)
            .await
            .is_err()
        {
            continue;
        }
        let top = scalar(
            &ctx,
            &format!(
                "SELECT max(score) FROM r{i} WHERE ts >= to_timestamp_micros({}) AND ts <= to_timestamp_micros({})",
                micros(taken_from),
                micros(taken_until)
            ),
        )
        .await;
        peak = peak.max(top.parse().unwrap_or(f64::NAN));
    }
    assert!(
        during >= 1,
        "no alert while 40 % of the memory was taken (memory use rose by {rise} points, the \
         highest score then was {peak}; {} alert files)",
        alerts_files.len()
    );
}

/// A time as microseconds since the epoch.
fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// Takes 40 % of this machine's memory (at most 60 % of what is available: far beyond what the
/// other tests running beside this one move it by) and holds it for `hold`, every page touched;
/// returns when it was taken and when freed.
fn take_memory(hold: Duration) -> (SystemTime, SystemTime) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib = |name: &str| -> usize {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let bytes = (kib("MemTotal:") * 2 / 5).min(kib("MemAvailable:") * 3 / 5) * 1024;
    let from = SystemTime::now();
    let mut block = vec![0u8; bytes];
    for i in (0..bytes).step_by(4096) {
        block[i] = 1;
    }
    std::thread::sleep(hold);
    std::hint::black_box(&block);
    drop(block);
    (from, SystemTime::now())
}

#[test]
fn an_unreachable_prometheus_and_a_bad_query_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = tmp.path().join("out");
    let down = import(&format!("http://127.0.0.1:{port}"), &out, &[])
        .output()
        .unwrap();
    assert_user_error(&down, &format!("--url http://127.0.0.1:{port}"));
    assert!(!out.join("_manifest.json").exists());
    let unnamed = tads()
        .args(["import", "prometheus", "--query", "rate(x[1m])", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_user_error(&unnamed, "name its column");
}
