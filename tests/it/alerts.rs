//! Alerts and evaluation, end to end with the real binary: generate → train → score → eval on
//! 210 host-days with the quality targets, MAD alone against PCA on correlation breaks, the
//! job's alerts against `alert_state` in SQL and against its own scored rows, the settings, and
//! what eval refuses.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use tads_jobs::score::ScoreManifest;
use tads_store::Location;

use crate::support::{
    SMALL, assert_ok, assert_user_error, files_below, generate, scalar, score_cmd, tads,
    tads_session, train_cmd,
};

/// 30 hosts × 7 days at one row a minute (302,400 rows, 210 host-days), about one labelled
/// event per host-day, a fixed seed; one model per host trained on all of it (anomalies
/// included: the training is robust), scored with the default settings.
struct Quality {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Quality {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn models(&self) -> PathBuf {
        self.dir.join("models")
    }
    /// The default score run.
    fn scores(&self) -> PathBuf {
        self.dir.join("scores")
    }
    fn score(&self, out: &Path, args: &[&str]) -> std::process::Output {
        score_cmd("hosts", &self.data(), &self.models(), out, args)
    }
}

const QUALITY_ARGS: &[&str] = &[
    "--hosts",
    "30",
    "--duration",
    "7d",
    "--interval",
    "1m",
    "--anomaly-rate",
    "1",
    "--seed",
    "11",
];

fn quality() -> &'static Quality {
    static Q: OnceLock<Quality> = OnceLock::new();
    Q.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let q = Quality {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        assert_ok(&generate(q.data().to_str().unwrap(), QUALITY_ARGS));
        assert_ok(&train_cmd(
            "hosts",
            &q.data(),
            &q.models(),
            &["--group-by", "host_id"],
        ));
        let run = q.score(&q.scores(), &[]);
        assert_ok(&run);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            stdout.contains("alerts to") && stdout.contains("top metric"),
            "{stdout}"
        );
        q
    })
}

fn eval_json(out: &Path) -> Value {
    let run = tads()
        .args(["eval", "--json", "--scored"])
        .arg(out)
        .output()
        .unwrap();
    assert_ok(&run);
    serde_json::from_slice(&run.stdout).expect("eval --json prints JSON")
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

#[test]
fn generate_train_score_eval_meets_the_quality_targets() {
    let q = quality();
    let text = tads()
        .args(["eval", "--scored"])
        .arg(q.scores())
        .output()
        .unwrap();
    assert_ok(&text);
    let table = String::from_utf8_lossy(&text.stdout);
    println!("{table}");
    for needle in [
        "point-wise",
        "point-adjusted",
        "correlation_break",
        "false alerts per 100 host-days",
        "region",
        "project",
    ] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }

    let r = eval_json(&q.scores());
    for key in [
        "point",
        "point_adjusted",
        "events",
        "false_alerts_per_100_host_days",
        "by_region",
        "by_project",
        "false_alerts_per_key_day",
        "event_recall",
        "normal_in_alert",
        "au_prc",
        "au_prc_mean_by_key",
        "fc1",
    ] {
        assert!(r.get(key).is_some(), "no `{key}` in {r}");
    }
    assert_eq!(r["label"], "is_anomaly");
    assert_eq!(r["events_from"], "anomaly_id");
    for key in ["event_recall", "normal_in_alert", "au_prc", "fc1"] {
        let v = f(&r, &[key]);
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    assert_eq!(f(&r, &["host_days"]), 210.0);
    for (kind, target) in [
        ("spike", 0.95),
        ("burst", 0.95),
        ("level_shift", 0.95),
        ("trend", 0.90),
        ("correlation_break", 0.90),
    ] {
        let events = f(&r, &["events", kind, "events"]);
        assert!(
            events >= 20.0,
            "only {events} {kind} events: too few to judge"
        );
        let recall = f(&r, &["events", kind, "recall"]);
        assert!(
            recall >= target,
            "{kind}: event recall {recall} < {target}\n{table}"
        );
        for k in ["ttd_median_s", "ttd_p90_s"] {
            assert!(f(&r, &["events", kind, k]) >= 0.0);
        }
    }
    let precision = f(&r, &["point", "precision"]);
    assert!(
        precision >= 0.90,
        "point-wise precision {precision}\n{table}"
    );
    let fa = f(&r, &["false_alerts_per_100_host_days"]);
    assert!(fa <= 1.0, "{fa} false alerts per 100 host-days\n{table}");
    // Point adjustment only ever adds credit.
    assert!(f(&r, &["point_adjusted", "f1"]) >= f(&r, &["point", "f1"]));
}

#[test]
fn mad_alone_misses_the_correlation_breaks_that_pca_catches() {
    let q = quality();
    let out = q.dir.join("mad-only");
    assert_ok(&q.score(
        &out,
        &[
            "--quiet",
            "--set",
            "fusion.rule=weighted",
            "--set",
            "fusion.pca_weight=0",
        ],
    ));
    let mad = eval_json(&out);
    let fused = eval_json(&q.scores());
    let (m, p) = (
        f(&mad, &["events", "correlation_break", "recall"]),
        f(&fused, &["events", "correlation_break", "recall"]),
    );
    assert!(
        m <= 0.2 && p >= 0.9,
        "correlation breaks: MAD alone {m}, with PCA {p}"
    );
}

#[tokio::test]
async fn alerts_agree_with_alert_state_in_sql_and_with_the_scored_rows() {
    let q = quality();
    agree(q, &q.scores(), ", 12, 0.8").await;
}

/// Without the hold (`alerts.hold_rows = 0`), the job's alerts are still exactly their rows and
/// those of `alert_state` without one; the default hold bridges dips, so it makes fewer alerts
/// with more rows in them.
#[tokio::test]
async fn alerts_without_the_hold_agree_with_alert_state_in_sql() {
    let q = quality();
    let out = q.dir.join("plain");
    assert_ok(&q.score(&out, &["--set", "alerts.hold_rows=0", "--quiet"]));
    let (held, plain) = (
        agree(q, &q.scores(), ", 12, 0.8").await,
        agree(q, &out, "").await,
    );
    assert!(
        held.0 < plain.0 && held.1 > plain.1,
        "held (alerts, rows in them) {held:?}, without the hold {plain:?}"
    );
}

/// Checks the score run at `out` against its own scored rows and against `alert_state` (with
/// `hold`, the hold's arguments after the adaptive ones, or nothing); returns its number of
/// alerts and of rows in them.
async fn agree(q: &Quality, out: &Path, hold: &str) -> (u64, u64) {
    let m = ScoreManifest::read(&Location::parse(out.to_str().unwrap()).unwrap())
        .await
        .unwrap()
        .unwrap();
    let summary = m.alerts.clone().expect("alerts were on");
    assert!(summary.count > 100, "{summary:?}");
    assert_eq!(m.config.alerts.enter, 0.8);

    let ctx = tads_session(&q.models()).await;
    for (name, dir) in [("scored", "scored"), ("alerts", "alerts")] {
        let loc = Location::parse(out.join(dir).to_str().unwrap()).unwrap();
        tads_sql::register_dataset(&ctx, name, &loc).await.unwrap();
    }
    let n = summary.count.to_string();
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM alerts").await, n);
    assert_eq!(
        scalar(&ctx, "SELECT count(DISTINCT alert_id) FROM scored").await,
        n
    );
    // Each alert is exactly its rows: first and last time, points, peak, severity, metrics.
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM alerts a JOIN (
                SELECT alert_id, count(*) AS n, min(ts) AS s, max(ts) AS e, max(score) AS peak
                FROM scored WHERE alert_id IS NOT NULL GROUP BY alert_id) r
              ON a.alert_id = r.alert_id
             WHERE a.points = r.n AND a.start_ts = r.s AND a.end_ts = r.e
               AND a.peak_score = r.peak AND a.opened_ts >= a.start_ts
               AND a.severity = CASE WHEN a.peak_score >= 4.0 THEN 'critical'
                                     WHEN a.peak_score >= 2.0 THEN 'warning' ELSE 'info' END
               AND cardinality(a.top_metrics) BETWEEN 1 AND 3
               AND a.model = 'hosts' AND a.run_id = '{run}'"
                .replace("{run}", &m.run_id)
                .as_str()
        )
        .await,
        n
    );
    // The window function over the scored rows, with the same settings, finds the same alerts.
    let sql_alerts = format!(
        "SELECT CAST(host_id AS VARCHAR) AS host, min(ts) AS start_ts, count(*) AS points FROM (
            SELECT host_id, ts, alert_state(score, 0.8, 0.5, 3, INTERVAL '30 minutes', ts, 2.0, 0.995, 3, 12{hold})
                   OVER (PARTITION BY host_id ORDER BY ts) AS k FROM scored)
          WHERE k IS NOT NULL GROUP BY host_id, k"
    );
    let job_alerts =
        "SELECT host_id AS host, start_ts, CAST(points AS BIGINT) AS points FROM alerts";
    for (a, b) in [(sql_alerts.as_str(), job_alerts), (job_alerts, &sql_alerts)] {
        assert_eq!(
            scalar(&ctx, &format!("SELECT count(*) FROM (({a}) EXCEPT ({b}))")).await,
            "0",
            "{a}\nEXCEPT\n{b}"
        );
    }
    let rows = scalar(
        &ctx,
        "SELECT count(*) FROM scored WHERE alert_id IS NOT NULL",
    )
    .await;
    (summary.count, rows.parse().unwrap())
}

/// Issue 19, item 13: the alert pass's sort in many partitions with a small memory pool (16 MiB
/// shared by 4 partitions a core) runs out of memory it cannot spill; the job says so, runs the
/// pass again in one partition, and finds exactly the alerts and scores of the default run. The
/// drift baseline's medians, which cannot spill either, are read in windows that fit.
///
/// The default run walks the generated files one after another (they are in time order per
/// key), the small one sorts (`alerts.walk = "sort"`): the two ways find the same alerts.
#[tokio::test]
async fn a_small_memory_pool_in_many_partitions_still_finds_every_alert() {
    let q = quality();
    let out = q.dir.join("small-pool");
    let most = (4 * std::thread::available_parallelism().unwrap().get()).to_string();
    let run = q.score(
        &out,
        &[
            "--threads",
            &most,
            "--memory",
            "16M",
            "--set",
            "alerts.walk=sort",
        ],
    );
    assert_ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("the alert pass ran out of memory") && stderr.contains("one partition"),
        "the pool was not small enough to test the fallback: {stderr}"
    );
    let ctx = tads_session(&q.models()).await;
    for (name, dir) in [
        ("a_small", out.join("alerts")),
        ("a_default", q.scores().join("alerts")),
        ("s_small", out.join("scored")),
        ("s_default", q.scores().join("scored")),
    ] {
        let loc = Location::parse(dir.to_str().unwrap()).unwrap();
        tads_sql::register_dataset(&ctx, name, &loc).await.unwrap();
    }
    let alerts = "alert_id, start_ts, end_ts, points, peak_score, severity";
    let rows = "host_id, ts, score, alert_id";
    for (cols, a, b) in [
        (alerts, "a_small", "a_default"),
        (alerts, "a_default", "a_small"),
        (rows, "s_small", "s_default"),
        (rows, "s_default", "s_small"),
    ] {
        let sql =
            format!("SELECT count(*) FROM (SELECT {cols} FROM {a} EXCEPT SELECT {cols} FROM {b})");
        assert_eq!(scalar(&ctx, &sql).await, "0", "{sql}");
    }
    assert_ne!(scalar(&ctx, "SELECT count(*) FROM a_small").await, "0");
    let pass = |dir: &Path| {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap();
        m["alert_pass"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(pass(&q.scores()), "files in time order, scored once");
    assert_eq!(pass(&out), "sorted");
}

#[test]
fn settings_come_from_defaults_a_file_the_environment_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let models = tmp.path().join("models");
    assert_ok(&generate(data.to_str().unwrap(), SMALL));
    assert_ok(&train_cmd("m", &data, &models, &["--group-by", "host_id"]));
    let config = tmp.path().join("tads.toml");
    std::fs::write(
        &config,
        "[alerts]\nenter = ${TADS_TEST_ENTER:1.5}\ncooldown = \"1h\"\n\n[severity]\ncritical = 6.0\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = tads()
        .args(["score", "--quiet", "--model", "m", "--data"])
        .arg(&data)
        .arg("--models")
        .arg(&models)
        .arg("--out")
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .args(["--set", "alerts.min_points=4"])
        .env("TADS_TEST_ENTER", "1.2")
        .output()
        .unwrap();
    assert_ok(&run);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
    let c = &manifest["config"];
    assert_eq!(c["alerts"]["enter"], 1.2, "{c}");
    assert_eq!(c["alerts"]["min_points"], 4);
    assert_eq!(c["alerts"]["cooldown"], "1h");
    assert_eq!(c["alerts"]["exit"], 0.5);
    assert_eq!(c["severity"]["critical"], 6.0);
    assert_eq!(c["fusion"]["spe_limit"], "jm_999");

    // Bad settings: one line naming the setting, exit 2, nothing written.
    let bad = tmp.path().join("bad");
    for (args, needle) in [
        (&["--set", "alerts.exit=5"][..], "alerts.exit"),
        (&["--set", "alerts.entr=1"][..], "entr"),
        (&["--set", "fusion.spe_limit=jm_5"][..], "jm_5"),
        (&["--set", "alerts.cooldown=soon"][..], "soon"),
        (&["--set", "alerts.hold_level=-1"][..], "alerts.hold_level"),
        (&["--set", "severity"][..], "key=value"),
        (&["--config", "/nonexistent/tads.toml"][..], "--config"),
    ] {
        assert_user_error(&score_cmd("m", &data, &models, &bad, args), needle);
        assert!(!bad.exists(), "{args:?} wrote something");
    }

    // Without alerts: no alerts file, alert_id all NULL, and eval says why it cannot evaluate.
    let plain = tmp.path().join("plain");
    assert_ok(&score_cmd(
        "m",
        &data,
        &models,
        &plain,
        &["--quiet", "--no-alerts"],
    ));
    assert!(!files_below(&plain).iter().any(|f| f.starts_with("alerts/")));
    let run = tads()
        .args(["eval", "--scored"])
        .arg(&plain)
        .output()
        .unwrap();
    assert_user_error(&run, "without alerts");
}

/// Real, labelled telemetry (`data/real/jumpstarter_d2/service0`, see `data/real/README.md`):
/// trained on its unlabelled training part, the test part scored with the defaults, and
/// evaluated with the label column (`label`, int8) found by itself; there is no `anomaly_id`,
/// region or project, so events are the runs of labelled rows.
#[test]
fn eval_on_real_labelled_data() {
    let series = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/real/jumpstarter_d2/service0");
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let out = tmp.path().join("scores");
    assert_ok(&train_cmd(
        "service0",
        &series.join("train.parquet"),
        &models,
        &[],
    ));
    // m00 sits near one level with a tiny MAD and moves between training days: its tails are
    // far wider than its MAD says, so its scale is the floor from its 0.5–99.5 % range.
    let model: Value =
        serde_json::from_slice(&std::fs::read(models.join("service0").join("model.json")).unwrap())
            .unwrap();
    let tailed = model["tail_scaled_features"].as_array().unwrap();
    assert!(tailed.iter().any(|f| f == "m00"), "{tailed:?}");
    let (scale, mad) = (
        model["scale"][0].as_f64().unwrap(),
        model["mad"][0].as_f64().unwrap(),
    );
    assert!(scale > 10.0 * mad, "m00: scale {scale}, MAD {mad}");
    assert_ok(&score_cmd(
        "service0",
        &series.join("test.parquet"),
        &models,
        &out,
        &["--quiet"],
    ));
    let r = eval_json(&out);
    assert_eq!(r["label"], "label", "{r}");
    assert_eq!(r["key"], "host_id");
    assert_eq!(r["events_from"], "runs");
    // The source's four labelled segments of service0 (shared/data/real/manifest.csv).
    assert_eq!(f(&r, &["event_count"]), 4.0, "{r}");
    assert_eq!(r["events"]["labelled"]["events"], 4);
    assert_eq!(f(&r, &["normal_rows"]), (7200 - 343) as f64);
    for key in [
        "event_recall",
        "normal_in_alert",
        "au_prc",
        "au_prc_mean_by_key",
        "fc1",
    ] {
        let v = f(&r, &[key]);
        assert!((0.0..=1.0).contains(&v), "{key} = {v} in {r}");
    }
    assert!(f(&r, &["false_alerts_per_key_day"]) >= 0.0);
    // The defaults hold on this real series: the training tails and the previous-day baseline
    // keep most normal time out of alerts, where the Gaussian limits against the training level
    // alone (the defaults before them) keep the service in alert all the time.
    let old = tmp.path().join("scores-old");
    assert_ok(&score_cmd(
        "service0",
        &series.join("test.parquet"),
        &models,
        &old,
        &[
            "--quiet",
            "--set",
            "drift.baseline=off",
            "--set",
            "fusion.tail=false",
        ],
    ));
    let o = eval_json(&old);
    let (now, before) = (f(&r, &["normal_in_alert"]), f(&o, &["normal_in_alert"]));
    assert!(before > 0.9, "before: {before}");
    assert!(now < 0.25 && now < before / 3.0, "{now} against {before}");
    // service0 is d2's noisiest series (its score's AU-PRC is 0.11): the fixed threshold raised
    // twelve alerts a day and so touched all four events; the adaptive threshold (the default)
    // with its scoring space (kept by default here) raises 1.4 a day (36 in 25 days) and still
    // finds one. The whole set's event recall is in benches/REAL.md.
    assert!(f(&r, &["events_detected"]) >= 1.0, "{r}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["drift"][0]["key"], "service0", "{manifest}");
    for path in [["point", "precision"], ["point", "recall"], ["point", "f1"]] {
        let v = f(&r, &path);
        assert!((0.0..=1.0).contains(&v), "{path:?} = {v}");
    }
    assert_eq!(f(&r, &["point", "tp"]) + f(&r, &["point", "fn"]), 343.0);
    // One series: the mean over keys is its own AU-PRC.
    assert_eq!(f(&r, &["au_prc_keys"]), 1.0);
    assert!((f(&r, &["au_prc"]) - f(&r, &["au_prc_mean_by_key"])).abs() < 1e-12);
    assert_eq!(f(&r, &["host_days"]), 25.0);
    assert!(r["by_region"].as_object().unwrap().is_empty());
    assert!(r["by_project"].as_object().unwrap().is_empty());

    // The same with --label named; the table has the new numbers and no region table.
    let text = tads()
        .args(["eval", "--label", "label", "--scored"])
        .arg(&out)
        .output()
        .unwrap();
    assert_ok(&text);
    let table = String::from_utf8_lossy(&text.stdout);
    println!("{table}");
    for needle in [
        "normal time in alert",
        "au-prc",
        "fc1",
        "per key-day",
        "labelled",
    ] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
    assert!(!table.contains("region"), "{table}");

    // A label column that is missing or of the wrong type: one line naming it, exit 2.
    for (label, needle) in [
        (
            "nope",
            "--label nope: the scored rows have no column `nope` (columns: ts, host_id",
        ),
        ("host_id", "boolean or an integer 0/1"),
        ("m00", "--label m00"),
        ("is_anomaly", "no column `is_anomaly`"),
    ] {
        let run = tads()
            .args(["eval", "--label", label, "--scored"])
            .arg(&out)
            .output()
            .unwrap();
        assert_user_error(&run, needle);
    }
}

#[test]
fn eval_refuses_what_is_not_a_finished_score_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tads()
        .args(["eval", "--scored"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_user_error(&run, "not the output of a finished `tads score` run");
}

/// Files that are not in time order per key are sorted for the alert pass, with the same
/// alerts as the walk over generated files in time order: one file whose rows run backwards in
/// time (the statistics cannot tell; the walk notices and sorts instead, saying so), and two
/// files that overlap in keys and time (the statistics tell: sorted at once).
#[tokio::test]
async fn files_out_of_time_order_are_sorted_and_give_the_same_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models) = (tmp.path().join("data"), tmp.path().join("models"));
    let (ctx, columns) = crate::support::generated_table(&data).await;
    assert_ok(&train_cmd("m", &data, &models, &[]));
    let write = |dir: &str, file: &str, filter: &str, order: &str| {
        let path = tmp.path().join(dir).join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        format!(
            "COPY (SELECT {columns} FROM t {filter} ORDER BY {order}) TO '{}' STORED AS PARQUET",
            path.display()
        )
    };
    for sql in [
        write("backwards", "all.parquet", "", "ts DESC, host_id"),
        write(
            "overlap",
            "even.parquet",
            "WHERE CAST(right(CAST(host_id AS VARCHAR), 1) AS INT) % 2 = 0",
            "host_id, ts",
        ),
        write(
            "overlap",
            "odd.parquet",
            "WHERE CAST(right(CAST(host_id AS VARCHAR), 1) AS INT) % 2 = 1",
            "host_id, ts",
        ),
    ] {
        crate::support::query(&ctx, &sql).await;
    }
    let alerts_of = |out: &Path| -> (String, Vec<String>) {
        let m: ScoreManifest =
            serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
        let file = std::fs::File::open(out.join("alerts/alerts.parquet")).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut rows = Vec::new();
        for batch in reader {
            let b = batch.unwrap();
            for i in 0..b.num_rows() {
                let cell = |c: &str| {
                    datafusion::arrow::util::display::array_value_to_string(
                        b.column_by_name(c).unwrap(),
                        i,
                    )
                    .unwrap()
                };
                rows.push(
                    ["alert_id", "end_ts", "points", "peak_score", "open"]
                        .map(cell)
                        .join(" "),
                );
            }
        }
        rows.sort();
        (m.alert_pass.unwrap_or_default(), rows)
    };
    let reference = tmp.path().join("reference");
    assert_ok(&score_cmd("m", &data, &models, &reference, &["--quiet"]));
    let (pass, expected) = alerts_of(&reference);
    assert_eq!(pass, "files in time order, scored once");
    assert!(!expected.is_empty());
    for (dir, note) in [("backwards", true), ("overlap", false)] {
        let out = tmp.path().join(format!("{dir}-out"));
        let run = score_cmd("m", &tmp.path().join(dir), &models, &out, &["--quiet"]);
        assert_ok(&run);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(
            stderr.contains("not in time order inside a file"),
            note,
            "{dir}: {stderr}"
        );
        let (pass, found) = alerts_of(&out);
        assert_eq!(pass, "sorted", "{dir}");
        assert_eq!(found, expected, "{dir}");
    }
}
