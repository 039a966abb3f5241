//! The PostgreSQL mirror against the real server on 127.0.0.1:5432 (`scripts/test.sh` starts it
//! if it is down; a missing server fails these tests, it never skips them). Each test works in
//! a schema of its own and drops it at the end.

use std::path::Path;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use tads_pg::{AlertRow, Batch, Outbox, Pg, Record};

use crate::support::{SMALL, assert_ok, assert_user_error, generate, tads};

/// The server the tests use: `TADS_TEST_PG_URL`, default the local one (trust auth).
fn server() -> String {
    std::env::var("TADS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema for one test, dropped when it goes out of scope.
struct Schema {
    name: String,
}

impl Schema {
    fn new(test: &str) -> Self {
        let name = format!(
            "tads_t_{test}_{}_{}",
            std::process::id(),
            Utc::now().timestamp_subsec_nanos()
        );
        Self { name }
    }

    fn pg(&self) -> Pg {
        Pg::parse(&server(), &self.name).unwrap()
    }

    /// `tads <args> --pg <server> --pg-schema <schema> --pg-outbox <outbox>`.
    fn tads(&self, outbox: &Path, args: &[&str]) -> std::process::Output {
        tads()
            .args(args)
            .args(["--pg", &server(), "--pg-schema", &self.name, "--pg-outbox"])
            .arg(outbox)
            .output()
            .unwrap()
    }

    async fn count(&self, table: &str) -> i64 {
        let client = self.pg().connect().await.unwrap();
        client
            .query_one(&format!("SELECT count(*) FROM {}.{table}", self.name), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// A digest of a table's whole content, to compare before and after.
    async fn digest(&self, table: &str, key: &str) -> String {
        let client = self.pg().connect().await.unwrap();
        client
            .query_one(
                &format!(
                    "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY {key})), '') FROM {}.{table} t",
                    self.name
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let pg = self.pg();
        let name = self.name.clone();
        // Best effort, on a runtime of its own (Drop may run outside one).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(c) = pg.connect().await {
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test]
async fn every_command_mirrors_and_the_counts_equal_the_parquet_outputs() {
    let s = Schema::new("counts");
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox");
    let (data, models, out) = (
        tmp.path().join("data"),
        tmp.path().join("models"),
        tmp.path().join("scores"),
    );
    let run = |args: &[&str]| {
        let o = s.tads(&outbox, args);
        assert_ok(&o);
        assert!(stderr(&o).contains("mirrored"), "{}", stderr(&o));
        o
    };
    let mut gen_args = vec!["generate", "--quiet", "--out", data.to_str().unwrap()];
    gen_args.extend_from_slice(SMALL);
    // --quiet hides the mirror line too; run generate without it.
    gen_args.retain(|a| *a != "--quiet");
    run(&gen_args);
    run(&[
        "train",
        "--model",
        "hosts",
        "--group-by",
        "host_id",
        "--data",
        data.to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
    ]);
    run(&[
        "score",
        "--model",
        "hosts",
        "--data",
        data.to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    run(&["eval", "--scored", out.to_str().unwrap()]);
    assert!(Outbox::new(&outbox).pending().unwrap().is_empty());

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
    let alerts = manifest["alerts"]["count"].as_i64().unwrap();
    assert!(alerts > 0);
    assert_eq!(s.count("alerts").await, alerts);
    let group: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.join("hosts/group.json")).unwrap()).unwrap();
    let members = group["members"].as_array().unwrap().len() as i64;
    assert_eq!(s.count("models").await, members + 1);
    assert_eq!(s.count("datasets").await, 1);
    let client = s.pg().connect().await.unwrap();
    let runs: Vec<(String, String)> = client
        .query(
            &format!(
                "SELECT kind, status FROM {}.runs ORDER BY started_at",
                s.name
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, String)> = ["generate", "train", "score", "eval"]
        .iter()
        .map(|k| (k.to_string(), "succeeded".to_string()))
        .collect();
    assert_eq!(runs, expected);
    // The score run's row is the manifest's run, with its rows.
    let (rows, id): (i64, String) = {
        let r = client
            .query_one(
                &format!(
                    "SELECT rows_done, id FROM {}.runs WHERE kind = 'score'",
                    s.name
                ),
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(rows, manifest["rows_in"].as_i64().unwrap());
    assert_eq!(id, manifest["run_id"].as_str().unwrap());
    let eval: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.eval_results WHERE run_id = $1 AND breakdown = 'events'",
                s.name
            ),
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(eval, 5, "one events row per anomaly type");

    // The Grafana dashboard (grafana/tads-dashboard.json) over this very mirror: every panel's
    // and annotation's SQL, with Grafana's macros and variables expanded as Grafana does
    // (all hosts, all time), runs and gives the columns its panel needs.
    let queries = grafana_queries(&s.name);
    assert_eq!(
        queries.len(),
        6,
        "the variable, the annotation and four panels"
    );
    for (what, sql) in &queries {
        let rows = client
            .query(sql.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{sql}"));
        let columns: Vec<&str> = rows
            .first()
            .map(|r| r.columns().iter().map(|c| c.name()).collect())
            .unwrap_or_default();
        match what.as_str() {
            "annotation TADS alerts" => {
                assert_eq!(rows.len() as i64, alerts, "{what}");
                assert_eq!(columns, ["time", "timeend", "text", "tags"], "{what}");
            }
            "panel Alert peak score over time, per host" => {
                assert_eq!(rows.len() as i64, alerts, "{what}");
                assert_eq!(columns, ["time", "metric", "value"], "{what}");
            }
            "panel Open alerts by severity" => {
                assert_eq!(rows.len(), 3, "{what}");
                let open: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
                let expected = client
                    .query_one(
                        &format!("SELECT count(*) FROM {}.alerts WHERE open", s.name),
                        &[],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0);
                assert_eq!(open, expected, "{what}");
            }
            "panel Runs" => assert_eq!(rows.len(), 4, "{what}"),
            _ => assert!(!rows.is_empty(), "{what}: no rows"),
        }
    }
}

fn alerts(n: usize, run: &str) -> Vec<AlertRow> {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            let start = t0 + chrono::Duration::minutes(i as i64);
            AlertRow {
                alert_id: format!("m/host-{:04}/{}", i % 500, start.to_rfc3339()),
                host_id: format!("host-{:04}", i % 500),
                region: Some("eu-west-1".into()),
                project_id: (i % 3 != 0).then(|| "checkout".into()),
                start_ts: start,
                end_ts: start + chrono::Duration::minutes(5),
                opened_ts: start + chrono::Duration::minutes(2),
                points: 6,
                peak_score: 1.0 + (i % 7) as f64,
                severity: ["info", "warning", "critical"][i % 3].into(),
                top_metrics: vec!["cpu_pct".into(), "latency_ms".into()],
                model: "m".into(),
                model_fingerprint: "sha256:0".into(),
                run_id: run.into(),
                open: i % 10 == 0,
            }
        })
        .collect()
}

#[tokio::test]
async fn an_outage_loses_nothing_and_sync_delivers_exactly_once() {
    let s = Schema::new("outage");
    let tmp = tempfile::tempdir().unwrap();
    let outbox_dir = tmp.path().join("outbox");
    let data = tmp.path().join("data");
    assert_ok(&generate(data.to_str().unwrap(), SMALL));
    let models = tmp.path().join("models");
    assert_ok(&s.tads(
        &outbox_dir,
        &[
            "train",
            "--quiet",
            "--model",
            "m",
            "--group-by",
            "host_id",
            "--data",
            data.to_str().unwrap(),
            "--models",
            models.to_str().unwrap(),
        ],
    ));
    // Score while nothing listens where --pg points: the job finishes, the records wait.
    let out = tmp.path().join("scores");
    let down = tads()
        .args(["score", "--quiet", "--model", "m", "--data"])
        .arg(&data)
        .arg("--models")
        .arg(&models)
        .arg("--out")
        .arg(&out)
        .args([
            "--pg",
            "postgres://postgres:sekrit@127.0.0.1:1/test",
            "--pg-schema",
            &s.name,
        ])
        .arg("--pg-outbox")
        .arg(&outbox_dir)
        .output()
        .unwrap();
    assert_ok(&down);
    let warning = stderr(&down);
    assert!(
        warning.contains("PostgreSQL did not take") && warning.contains("tads pg sync"),
        "{warning}"
    );
    assert!(!warning.contains("sekrit"), "{warning}");
    assert!(out.join("_manifest.json").exists());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
    let alerts = manifest["alerts"]["count"].as_i64().unwrap();
    assert!(alerts > 0);
    let pending = Outbox::new(&outbox_dir).pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].batch.len() as i64, alerts + 1);
    let status = s.tads(&outbox_dir, &["pg", "status"]);
    assert_ok(&status);
    assert!(
        stdout(&status).contains("1 batches waiting"),
        "{}",
        stdout(&status)
    );
    assert_eq!(s.count("alerts").await, 0);

    // Sync against the live server: every alert arrives, once; a second sync finds nothing.
    let sync = s.tads(&outbox_dir, &["pg", "sync"]);
    assert_ok(&sync);
    assert!(
        stdout(&sync).contains("delivered 1 batches"),
        "{}",
        stdout(&sync)
    );
    assert_eq!(s.count("alerts").await, alerts);
    assert_eq!(s.count("runs").await, 2, "the train run and the score run");
    let before = s.digest("alerts", "alert_id").await;
    let again = s.tads(&outbox_dir, &["pg", "sync"]);
    assert_ok(&again);
    assert!(
        stdout(&again).contains("delivered 0 batches"),
        "{}",
        stdout(&again)
    );
    assert_eq!(s.digest("alerts", "alert_id").await, before);

    // Delivering the very same batch again (a crash between commit and removal) changes nothing.
    let pg = s.pg();
    let mut client = pg.connect().await.unwrap();
    tads_pg::deliver(&pg, &mut client, &pending[0].batch)
        .await
        .unwrap();
    assert_eq!(s.count("alerts").await, alerts);
    assert_eq!(s.digest("alerts", "alert_id").await, before);
    assert_eq!(s.count("runs").await, 2);
}

#[tokio::test]
async fn a_hundred_thousand_alerts_go_in_by_copy_and_twice_changes_nothing() {
    let s = Schema::new("bulk");
    let pg = s.pg();
    let mut client = pg.connect().await.unwrap();
    tads_pg::migrate(&pg, &mut client).await.unwrap();
    let batch = Batch::new(vec![Record::Alerts(alerts(100_000, "run-bulk"))]);
    let clock = Instant::now();
    tads_pg::deliver(&pg, &mut client, &batch).await.unwrap();
    let secs = clock.elapsed().as_secs_f64();
    println!(
        "100,000 alerts in {secs:.2}s: {:.0} alerts/s (debug build)",
        100_000.0 / secs
    );
    assert_eq!(s.count("alerts").await, 100_000);
    let before = s.digest("alerts", "alert_id").await;
    tads_pg::deliver(&pg, &mut client, &batch).await.unwrap();
    assert_eq!(s.count("alerts").await, 100_000);
    assert_eq!(s.digest("alerts", "alert_id").await, before);
}

#[tokio::test]
async fn migrations_apply_twice_and_from_two_processes_at_once() {
    let s = Schema::new("migrate");
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox");
    let spawn = || {
        tads()
            .args([
                "pg",
                "migrate",
                "--pg",
                &server(),
                "--pg-schema",
                &s.name,
                "--pg-outbox",
            ])
            .arg(&outbox)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_ok(&a);
    assert_ok(&b);
    let said = format!("{}{}", stdout(&a), stdout(&b));
    assert_eq!(said.matches("applied migrations [1]").count(), 1, "{said}");
    assert_eq!(said.matches("up to date").count(), 1, "{said}");
    let again = s.tads(&outbox, &["pg", "migrate"]);
    assert_ok(&again);
    assert!(stdout(&again).contains("up to date"));
    assert_eq!(s.count("schema_migrations").await, 1);
}

#[test]
fn bad_urls_and_servers_are_one_line_without_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox");
    let cases = [
        (
            "postgres://tads:sekrit@127.0.0.1:notaport/test",
            "not a PostgreSQL URL",
        ),
        (
            "postgres://postgres:sekrit@127.0.0.1:5432/tads_no_such_database",
            "tads_no_such_database",
        ),
        (
            "postgres://tads_no_such_role:sekrit@127.0.0.1:5432/test",
            "tads_no_such_role",
        ),
        (
            "postgres://postgres:sekrit@127.0.0.1:1/test",
            "cannot connect",
        ),
    ];
    for (url, needle) in cases {
        let o = tads()
            .args(["pg", "migrate", "--pg", url, "--pg-outbox"])
            .arg(&outbox)
            .output()
            .unwrap();
        assert_user_error(&o, needle);
        let err = stderr(&o);
        assert!(!err.contains("sekrit"), "{err}");
        assert!(err.contains(":***@"), "the URL is shown masked: {err}");
    }
    let o = tads()
        .args([
            "pg",
            "migrate",
            "--pg",
            &server(),
            "--pg-schema",
            "Bad-Name",
        ])
        .output()
        .unwrap();
    assert_user_error(&o, "--pg-schema");
}

/// `tads watch --pg`: each round is a run, and each alert one row that is replaced as it goes on
/// and closes: an alert open after the first day's round is closed in the table after the
/// second's.
#[tokio::test]
async fn watch_mirrors_each_round_and_replaces_an_alert_as_it_closes() {
    let s = Schema::new("watch");
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox");
    let (all, models, data, out) = (
        tmp.path().join("all"),
        tmp.path().join("models"),
        tmp.path().join("watched"),
        tmp.path().join("watch"),
    );
    assert_ok(&generate(all.to_str().unwrap(), SMALL));
    assert_ok(
        &tads()
            .args(["train", "--quiet", "--model", "fleet", "--data"])
            .arg(&all)
            .arg("--models")
            .arg(&models)
            .output()
            .unwrap(),
    );
    let (pg, schema) = (s.pg(), s.name.clone());
    let open_of = async |id: &str| -> bool {
        let client = pg.connect().await.unwrap();
        let sql = format!("SELECT open FROM {schema}.alerts WHERE alert_id = $1");
        client.query_one(&sql, &[&id]).await.unwrap().get(0)
    };
    let carried = "fleet/host-0004/2026-01-01T23:05:00Z";
    for (day, open) in [("2026-01-01", true), ("2026-01-02", false)] {
        let rel = format!("date={day}/part-00000.parquet");
        std::fs::create_dir_all(data.join(format!("date={day}"))).unwrap();
        std::fs::copy(all.join(&rel), data.join(&rel)).unwrap();
        let run = s.tads(
            &outbox,
            &[
                "watch",
                "--once",
                "--settle",
                "50ms",
                "--model",
                "fleet",
                "--models",
                models.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_ok(&run);
        assert_eq!(open_of(carried).await, open, "{day}");
    }
    assert_eq!(s.count("runs").await, 2);
}

/// The SQL of every query in `grafana/tads-dashboard.json` (the host variable's, the
/// annotations' and the panels' targets) with `$schema`, `$host` (all: `'%'`) and
/// `$__timeFilter(col)` (all time) expanded, named by where it comes from.
fn grafana_queries(schema: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/tads-dashboard.json");
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            out.push((
                format!("variable {}", v["name"]),
                v["query"].as_str().unwrap().to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        let sql = a["target"]["rawSql"].as_str().unwrap().to_string();
        out.push((format!("annotation {}", a["name"].as_str().unwrap()), sql));
    }
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let sql = t["rawSql"].as_str().unwrap().to_string();
            out.push((format!("panel {}", p["title"].as_str().unwrap()), sql));
        }
    }
    out.into_iter()
        .map(|(what, sql)| {
            let sql = expand_time_filter(&sql.replace("$schema", schema).replace("$host", "'%'"));
            (what, sql)
        })
        .collect()
}

/// `$__timeFilter(col)` → `col BETWEEN '-infinity' AND 'infinity'`, as Grafana expands it for
/// a range that holds every row.
fn expand_time_filter(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$__timeFilter(".len()..];
        let end = after.find(')').expect("a closing parenthesis");
        out.push_str(&format!(
            "{} BETWEEN '-infinity'::timestamptz AND 'infinity'::timestamptz",
            &after[..end]
        ));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn serve_with_pg_has_its_jobs_mirror_to_postgresql() {
    let schema = Schema::new("serve_jobs");
    let tmp = tempfile::tempdir().unwrap();
    let d = crate::serve::demo(tmp.path());
    let (work, outbox) = (tmp.path().join("work"), tmp.path().join("pg-outbox"));
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (data, models, work_s, outbox_s) = (
        path(&d.join("data")),
        path(&d.join("models")),
        path(&work),
        path(&outbox),
    );
    let url = server();
    let served = crate::serve::serve(&[
        "--data",
        &data,
        "--models",
        &models,
        "--work",
        &work_s,
        "--pg",
        &url,
        "--pg-schema",
        &schema.name,
        "--pg-outbox",
        &outbox_s,
    ]);
    let job = crate::jobs::run_job(
        &served.base,
        serde_json::json!({"kind": "score", "args": {"data": "telemetry", "model": "hosts", "out": "s1"}}),
    )
    .await;
    assert!(
        !job["argv"].to_string().contains("postgres://"),
        "the URL stays out of the command line: {job}"
    );
    let ctx = tads_sql::session();
    crate::support::register_dir(&ctx, "a", &work.join("s1/alerts")).await;
    let alerts: i64 = crate::support::scalar(&ctx, "SELECT count(*) FROM a")
        .await
        .parse()
        .unwrap();
    assert!(alerts > 0);
    assert_eq!(schema.count("runs").await, 1, "the job's run, mirrored");
    assert_eq!(schema.count("alerts").await, alerts, "its alerts, mirrored");
}
