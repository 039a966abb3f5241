//! Live updates of `tads serve` over a served `tads watch` output: a round committed while the
//! server runs shows in `GET /api/live` (Server-Sent Events), in the API (every round's rows, each
//! alert's latest record, the same as one `tads score` over all the files), in `/metrics` (the
//! watch's rounds and lag), and in the dashboard's fleet page in headless Chromium without a
//! reload.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::serve::{get, installed, scrape, serve_env};
use crate::support::assert_ok;
use crate::watch::{land, setup, watch};

/// Reads `response` (an SSE stream) until an event named `name`; its data.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String, name: &str) -> Value {
    let wait = async {
        loop {
            while let Some(cut) = buffer.find("\n\n") {
                let block: String = buffer.drain(..cut + 2).collect();
                let field = |f: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
                };
                if field("event:").as_deref() == Some(name) {
                    return serde_json::from_str(&field("data:").unwrap()).unwrap();
                }
            }
            let chunk = response.chunk().await.unwrap().expect("the stream ended");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("no `{name}` event within 60 s"))
}

#[tokio::test]
async fn a_served_watch_output_updates_live_over_sse_the_api_and_the_dashboard() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, models, files, reference) = setup(tmp.path()).await;
    let (data, out) = (tmp.path().join("watched"), tmp.path().join("out"));
    std::fs::create_dir_all(&data).unwrap();
    let half = files.len() / 2;
    for rel in &files[..half] {
        land(&all, &data, rel);
    }
    assert_ok(&watch(&data, &models, &out, &["--once"]).output().unwrap());

    // The watcher's alert outbox (its default one) where the server looks for it.
    let state = tmp.path().join("state");
    let server = serve_env(
        &[
            "--data",
            out.to_str().unwrap(),
            "--models",
            models.to_str().unwrap(),
            "--live-every",
            "200ms",
        ],
        &[("XDG_STATE_HOME", &state)],
    );
    let api = |path: &str| format!("{}{path}", server.base);
    let (_, before) = get(&api("/api/datasets/scored"), None).await;
    let rows_before = before["rows"].as_i64().unwrap();
    assert!(
        rows_before > 0 && (rows_before as usize) < reference.rows.len(),
        "{before}"
    );
    let mut live = reqwest::Client::new()
        .get(api("/api/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let mut buffer = String::new();
    let hello = next_event(&mut live, &mut buffer, "hello").await;
    assert_eq!(hello["version"], 0, "{hello}");

    // The dashboard's fleet page, open while the next round lands.
    let node_path = installed("TADS_TEST_NODE_PATH", "node/node_modules");
    let shots = tmp.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut browser = Command::new("node")
        .arg(root.join("tests/browser/live.cjs"))
        .arg(&server.base)
        .arg(&shots)
        .env("NODE_PATH", &node_path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(browser.stdout.take().unwrap());
    let mut line = String::new();
    said.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the page did not load");

    for rel in &files[half..] {
        land(&all, &data, rel);
    }
    // This round's alerts go to a webhook that is down: they wait in the outbox.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let webhook = format!("http://{}/", down.local_addr().unwrap());
    drop(down);
    assert_ok(
        &watch(&data, &models, &out, &["--once", "--webhook", &webhook])
            .env("XDG_STATE_HOME", &state)
            .output()
            .unwrap(),
    );

    let update = next_event(&mut live, &mut buffer, "scores").await;
    assert!(update["version"].as_u64().unwrap() >= 1, "{update}");
    let tables = update["tables"].as_array().unwrap();
    assert!(tables.iter().any(|t| t == "scored") && tables.iter().any(|t| t == "alerts"));

    // The API now reads every round: the rows and alerts of one score run over all the files.
    let (_, after) = get(&api("/api/datasets/scored"), None).await;
    assert_eq!(
        after["rows"].as_i64().unwrap() as usize,
        reference.rows.len()
    );
    let (s, alerts) = get(&api("/api/alerts?limit=10000"), None).await;
    assert_eq!(s, 200, "{alerts}");
    let served: std::collections::BTreeMap<String, (u64, String, bool)> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["alert_id"].as_str().unwrap().to_string(),
                (
                    a["points"].as_u64().unwrap(),
                    a["severity"].as_str().unwrap().to_string(),
                    a["open"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    let expected: std::collections::BTreeMap<String, (u64, String, bool)> = reference
        .alerts
        .iter()
        .map(|(id, a)| (id.clone(), (a.3, a.5.clone(), a.6)))
        .collect();
    assert!(expected.len() < 10_000, "the limit holds every alert");
    assert_eq!(served, expected, "each alert once, in its latest state");

    let metrics = scrape(&server.base).await;
    let rounds = metrics
        .lines()
        .find(|l| l.starts_with("tads_watch_rounds{table=\"scored\"}"))
        .unwrap_or_else(|| panic!("no tads_watch_rounds in\n{metrics}"));
    assert!(rounds.ends_with(" 2"), "{rounds}");
    assert!(metrics.contains("tads_watch_last_round_age_seconds{table=\"scored\"}"));
    let waiting = metrics
        .lines()
        .find(|l| l.starts_with("tads_delivery_waiting{table=\"scored\",target=\"webhook\"}"))
        .unwrap_or_else(|| panic!("no tads_delivery_waiting in\n{metrics}"));
    let waiting: f64 = waiting.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(waiting >= 1.0, "the down webhook's events wait: {waiting}");
    assert!(metrics.contains("tads_live_updates_total"), "{metrics}");

    // The page read the API again by itself, without a reload, and shows the new alerts.
    let status = browser.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut said, &mut rest).unwrap();
    assert!(status.success(), "the live page failed:\n{rest}");
    let seen: Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["same_page"], true, "{seen}");
    assert_eq!(
        seen["changed"], true,
        "the fleet page shows the new round: {seen}"
    );
    if std::env::var("TADS_BLESS").is_ok() {
        std::fs::copy(
            shots.join("live.png"),
            root.join("docs/img/dashboard-live.png"),
        )
        .unwrap();
    }
}
