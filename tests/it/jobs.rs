//! `tads serve`'s jobs over real HTTP: generate, train, score and eval started by
//! `POST /api/jobs`, followed over Server-Sent Events to their end, their outputs served at
//! once and checked against what DataFusion reads; a cancelled job leaves no complete-looking
//! output; requests that would reach outside `--work` or take options the API does not allow
//! are refused with a 4xx naming what is wrong.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::serve::{demo, get, serve};
use crate::support::scalar;

/// POST /api/jobs: status and JSON body.
async fn post(base: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/jobs"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Reads a job's event stream to its end: every `job` event's data, in order.
async fn events(base: &str, id: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .get(format!("{base}/api/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .expect("the event stream ends when the job does");
    text.split("\n\n")
        .filter(|block| block.contains("event: job"))
        .map(|block| {
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            serde_json::from_str(&data).unwrap()
        })
        .collect()
}

/// Starts a job and follows it to its end; panics unless it succeeds. Returns its last view.
pub(crate) async fn run_job(base: &str, body: Value) -> Value {
    let (status, job) = post(base, &body).await;
    assert_eq!(status, 202, "{body} → {job}");
    assert_eq!(job["state"], "queued", "{job}");
    let seen = events(base, job["id"].as_str().unwrap()).await;
    let last = seen.last().unwrap().clone();
    assert_eq!(last["state"], "succeeded", "{body}: {last:#}");
    assert_eq!(last["exit_code"], 0);
    assert!(
        seen.iter().any(|v| v["state"] == "running"),
        "the stream shows the job running"
    );
    last
}

#[tokio::test]
async fn jobs_generate_train_score_and_eval_end_to_end_and_are_served_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = demo(tmp.path());
    let work = tmp.path().join("work");
    let server = serve(&[
        "--data",
        d.join("data").to_str().unwrap(),
        "--models",
        d.join("models").to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
    ]);
    let base = server.base.as_str();

    // generate: a new dataset below --work, served as a table when done.
    let gen_job = run_job(
        base,
        json!({"kind": "generate", "args": {"out": "gen", "hosts": 4, "duration": "2d", "seed": 7}}),
    )
    .await;
    let gen_table = gen_job["served_as"][0].as_str().unwrap().to_string();
    let ctx = tads_sql::session();
    crate::support::register_dir(&ctx, "g", &work.join("gen")).await;
    let rows = scalar(&ctx, "SELECT count(*) FROM g").await;
    let (_, dataset) = get(&format!("{base}/api/datasets/{gen_table}"), None).await;
    assert_eq!(dataset["rows"].to_string(), rows, "{dataset}");
    assert_eq!(gen_job["rows_done"].to_string(), rows, "{gen_job}");
    assert!(gen_job["argv"][1] == "generate");

    // train on it by its table id; the model is loaded at once.
    run_job(
        base,
        json!({"kind": "train", "args": {"data": gen_table, "model": "from_api"}}),
    )
    .await;
    let (status, model) = get(&format!("{base}/api/models/from_api"), None).await;
    assert_eq!(status, 200, "{model}");

    // score: rows/s and a phase along the way, every row done at the end, alerts served.
    let scored = run_job(
        base,
        json!({"kind": "score", "args": {"data": gen_table, "model": "from_api", "out": "sc", "set": ["alerts.min_points=2"]}}),
    )
    .await;
    assert_eq!(scored["rows_done"].to_string(), rows, "{scored}");
    let served: Vec<&str> = scored["served_as"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(served.iter().any(|t| t.starts_with("scored")), "{scored}");
    assert!(
        work.join("sc/_manifest.json").exists(),
        "a complete score output"
    );
    let (_, runs) = get(&format!("{base}/api/runs"), None).await;
    assert!(!runs.as_array().unwrap().is_empty(), "{runs}");

    // eval: its --json report is the job's result, equal to the CLI's.
    let scored_table = served.iter().find(|t| t.starts_with("scored")).unwrap();
    let evaluated = run_job(
        base,
        json!({"kind": "eval", "args": {"scored": scored_table}}),
    )
    .await;
    let cli = crate::support::tads()
        .args(["eval", "--json", "--scored"])
        .arg(work.join("sc"))
        .output()
        .unwrap();
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(evaluated["result"]["point"], cli["point"], "{evaluated}");

    // The list, newest first; one job by id.
    let (_, list) = get(&format!("{base}/api/jobs"), None).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["4", "3", "2", "1"]);
    let (status, one) = get(&format!("{base}/api/jobs/3"), None).await;
    assert_eq!((status, one["kind"].as_str()), (200, Some("score")));
    let (_, metrics) = reqwest::get(format!("{base}/metrics"))
        .await
        .map(|r| ((), r))
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("tads_jobs_total{kind=\"score\",state=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tads_job_duration_seconds"), "{metrics}");
}

#[tokio::test]
async fn a_cancelled_job_stops_and_leaves_no_complete_output_and_bad_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let server = serve(&["--work", work.to_str().unwrap()]);
    let base = server.base.as_str();

    // A long generate, cancelled while it runs.
    let (status, job) = post(
        base,
        &json!({"kind": "generate", "args": {"out": "big", "hosts": 3000, "duration": "30d"}}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        let (_, j) = get(&format!("{base}/api/jobs/{id}"), None).await;
        if j["state"] == "running" && j["rows_done"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never ran: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deleted = reqwest::Client::new()
        .delete(format!("{base}/api/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 202);
    let seen = events(base, &id).await;
    let last = seen.last().unwrap();
    assert_eq!(last["state"], "cancelled", "{last}");
    assert!(
        !work.join("big/_manifest.json").exists(),
        "a cancelled generate must not look complete"
    );
    let again = reqwest::Client::new()
        .delete(format!("{base}/api/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status().as_u16(),
        409,
        "an ended job cannot be cancelled"
    );

    // Refusals, each naming what is wrong.
    for (body, code, says) in [
        (
            json!({"kind": "generate", "args": {"out": "../outside"}}),
            400,
            "relative path below",
        ),
        (
            json!({"kind": "generate", "args": {"out": "/tmp/x"}}),
            400,
            "relative path below",
        ),
        (
            json!({"kind": "score", "args": {"data": "nothing-here", "model": "m", "out": "o"}}),
            400,
            "neither a served table nor a folder",
        ),
        (
            json!({"kind": "generate", "args": {"out": "o", "pg": "postgres://x"}}),
            400,
            "args.pg: not an option",
        ),
        (
            json!({"kind": "generate", "args": {}}),
            400,
            "args.out: required",
        ),
        (
            json!({"kind": "generate", "args": {"out": "g", "hosts": "many"}}),
            400,
            "--hosts",
        ),
        (json!({"kind": "delete-everything"}), 400, "kind"),
    ] {
        let (status, answer) = post(base, &body).await;
        assert_eq!(status, code, "{body} → {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body} → {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
    assert!(!tmp.path().join("outside").exists());
    let (status, _) = get(&format!("{base}/api/jobs/77"), None).await;
    assert_eq!(status, 404);

    // A file as --work is refused in one line.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = crate::support::tads()
        .args(["serve", "--listen", "127.0.0.1:0", "--work"])
        .arg(&file)
        .output()
        .unwrap();
    crate::support::assert_user_error(&out, "is a file, not a folder");

    // Without --work, no job runs.
    let plain = serve(&[]);
    let (status, answer) = post(
        &plain.base,
        &json!({"kind": "generate", "args": {"out": "x"}}),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("--work"));
}

/// Bounded requests: a body over the limit is refused with 413 before it is read whole, and
/// clients that send their request a byte at a time, or not at all, hold their own connection
/// only: the server keeps answering everyone else at once.
#[tokio::test]
async fn an_oversized_body_is_refused_and_slow_clients_do_not_hold_up_others() {
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(&["--work", tmp.path().join("work").to_str().unwrap()]);
    let base = server.base.as_str();

    let big = json!({"kind": "generate", "args": {"out": "x", "pad": "y".repeat(100 * 1024)}});
    let (status, answer) = post(base, &big).await;
    assert_eq!(status, 413, "{answer}");

    // 64 slow clients: half opened and silent, half sending a request line a byte per 100 ms.
    let addr = base.strip_prefix("http://").unwrap().to_string();
    let mut slow = Vec::new();
    for i in 0..64 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            slow.push(tokio::spawn(async move {
                for b in b"GET /api/health HTTP/1.1\r\nHost: x\r\n" {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                s
            }));
        } else {
            slow.push(tokio::spawn(async move { s }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        let started = Instant::now();
        let (status, health) = get(&format!("{base}/api/health"), None).await;
        assert_eq!(status, 200, "{health}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a request took {:?} beside slow clients",
            started.elapsed()
        );
    }
    for s in slow {
        s.abort();
    }
}
