//! `tads score` delivers its alerts, with real receivers on 127.0.0.1: a real Alertmanager lists
//! the run's open alerts (and not its closed ones); a webhook that is down does not fail the run,
//! its deliveries wait in the outbox, and `tads alerts deliver` sends them once it is up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use datafusion::arrow::util::display::array_value_to_string;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::support::{SMALL, assert_ok, generate, score_cmd, tads, train_cmd};

/// tads-deliver's test receiver and Alertmanager start-up, shared rather than copied.
#[path = "../../crates/deliver/tests/it/common.rs"]
#[allow(dead_code)]
mod receivers;

use receivers::{Alertmanager, Receiver, dead_url};

/// The small dataset and a model `fleet` trained on it, made once for these tests.
struct Trained {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Trained {
    /// Scores the first day alone: its last alert (host-0004's, from 23:05) is still open
    /// when the data ends, the 13 before it are closed.
    fn score(&self, out: &Path, args: &[&str]) -> std::process::Output {
        score_cmd(
            "fleet",
            &self.dir.join("data/date=2026-01-01/part-00000.parquet"),
            &self.dir.join("models"),
            out,
            args,
        )
    }
}

fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let data = dir.join("data");
        assert_ok(&generate(data.to_str().unwrap(), SMALL));
        assert_ok(&train_cmd("fleet", &data, &dir.join("models"), &[]));
        Trained { _tmp: tmp, dir }
    })
}

/// One alert of a run's `alerts/alerts.parquet`.
#[derive(Debug)]
struct Row {
    host: String,
    severity: String,
    open: bool,
}

/// The run's alerts by id.
fn alerts_of(out: &Path) -> BTreeMap<String, Row> {
    let file = std::fs::File::open(out.join("alerts/alerts.parquet")).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = BTreeMap::new();
    for b in reader {
        let b = b.unwrap();
        let s = |c: &str, i: usize| array_value_to_string(b.column_by_name(c).unwrap(), i).unwrap();
        for i in 0..b.num_rows() {
            let row = Row {
                host: s("host_id", i),
                severity: s("severity", i),
                open: s("open", i) == "true",
            };
            out.insert(s("alert_id", i), row);
        }
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The JSON entries waiting in `dir` (not `*.bad` or `*.failed`).
fn waiting(dir: &Path) -> usize {
    receivers::files(dir)
        .iter()
        .filter(|n| n.ends_with(".json"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_delivers_its_open_alerts_to_a_real_alertmanager() {
    let t = trained();
    let am = Alertmanager::start(None).await;
    let out = am.dir().join("scores");
    let outbox = am.dir().join("outbox");
    let run = t.score(
        &out,
        &[
            "--alertmanager",
            &am.base,
            "--outbox",
            outbox.to_str().unwrap(),
        ],
    );
    assert_ok(&run);
    let stdout = text(&run.stdout);
    assert!(
        stdout.contains(&format!(
            "to alertmanager (0 waiting in {})",
            outbox.display()
        )),
        "{stdout}"
    );

    let alerts = alerts_of(&out);
    let open: BTreeSet<&String> = alerts
        .iter()
        .filter(|(_, a)| a.open)
        .map(|(id, _)| id)
        .collect();
    assert!(
        !open.is_empty(),
        "no alert open at the end of the data: {alerts:#?}"
    );
    assert!(
        alerts.values().any(|a| !a.open),
        "no closed alert: {alerts:#?}"
    );
    let listed = am.tads_alerts().await;
    let ids: BTreeSet<&str> = listed
        .iter()
        .map(|a| a["labels"]["alert_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        open.iter().map(|s| s.as_str()).collect(),
        "Alertmanager lists exactly the open alerts (closed ones are resolved):\n{listed:#?}\n{}",
        am.log()
    );
    for a in &listed {
        let l = &a["labels"];
        let row = &alerts[l["alert_id"].as_str().unwrap()];
        assert_eq!(l["alertname"], "TadsAnomaly", "{a:#}");
        assert_eq!(l["host"], row.host.as_str(), "{a:#}");
        assert_eq!(l["model"], "fleet", "{a:#}");
        assert_eq!(l["severity"], row.severity.as_str(), "{a:#}");
        assert_eq!(a["status"]["state"], "active", "{a:#}");
        assert!(
            a["generatorURL"]
                .as_str()
                .unwrap()
                .ends_with("/scores/alerts/alerts.parquet"),
            "{a:#}"
        );
    }

    // Each alert's top metric at its peak row, expected against actual: the metric and the
    // value are the peak row's in the scored output.
    let ctx = tads_sql::session();
    crate::support::register_dir(&ctx, "scored", &out.join("scored")).await;
    for a in &listed {
        let id = a["labels"]["alert_id"].as_str().unwrap();
        let note = a["annotations"]["expected"].as_str().unwrap_or_else(|| {
            panic!("no expected value in the annotations: {a:#}");
        });
        let (metric, rest) = note.split_once(": expected ").expect(note);
        let (expected, actual) = rest.split_once(", actual ").expect(note);
        let peak = ctx
            .sql(&format!(
                "SELECT top_metric, CAST(\"{metric}\" AS VARCHAR) AS v FROM scored \
                 WHERE alert_id = '{id}' ORDER BY score DESC, ts LIMIT 1"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let cell = |c: usize| array_value_to_string(peak[0].column(c), 0).unwrap();
        assert_eq!(cell(0), metric, "{a:#}");
        let seen: f64 = cell(1).parse().unwrap();
        let (expected, actual): (f64, f64) = (expected.parse().unwrap(), actual.parse().unwrap());
        assert!(
            (actual - seen).abs() <= 5e-4 * seen.abs().max(1.0),
            "{note}: peak row {seen}"
        );
        assert!(expected.is_finite() && expected != actual, "{note}");
    }

    // The same run again: Alertmanager deduplicates by labels (the alert id among them).
    let rerun = t.score(
        &out,
        &[
            "--overwrite",
            "--alertmanager",
            &am.base,
            "--outbox",
            outbox.to_str().unwrap(),
        ],
    );
    assert_ok(&rerun);
    assert_eq!(am.tads_alerts().await.len(), listed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_leaves_the_alerts_in_the_outbox_until_it_is_up() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    let (out, outbox) = (tmp.path().join("scores"), tmp.path().join("outbox"));
    let down = dead_url().await;
    let run = t.score(
        &out,
        &["--webhook", &down, "--outbox", outbox.to_str().unwrap()],
    );
    assert_ok(&run);
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains(&format!("wait in the outbox {}", outbox.display())),
        "{stderr}"
    );
    assert!(stderr.contains("webhook: "), "{stderr}");
    let alerts = alerts_of(&out);
    let closed = alerts.values().filter(|a| !a.open).count();
    let events = alerts.len() + closed;
    assert!(events > 0);
    assert_eq!(waiting(&outbox.join("webhook")), events, "{stderr}");

    // The receiver is up: the next delivery, after the first backoff (1 s), sends them all.
    let hook = Receiver::start().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = tads()
        .args(["alerts", "deliver", "--outbox"])
        .arg(&outbox)
        .args(["--webhook", &hook.url("/hook")])
        .output()
        .unwrap();
    assert_ok(&again);
    assert_eq!(
        text(&again.stdout).trim(),
        format!(
            "delivered {events} alert events to webhook (0 waiting in {})",
            outbox.display()
        )
    );
    assert_eq!(waiting(&outbox.join("webhook")), 0);
    let got = hook.accepted("/hook");
    assert_eq!(got.len(), events);
    let mut firing = BTreeSet::new();
    let mut resolved = BTreeSet::new();
    for body in &got {
        assert_eq!(body["version"], "4", "{body:#}");
        let id = body["alerts"][0]["labels"]["alert_id"]
            .as_str()
            .unwrap()
            .to_string();
        match body["status"].as_str().unwrap() {
            "firing" => firing.insert(id),
            _ => resolved.insert(id),
        };
    }
    assert_eq!(firing, alerts.keys().cloned().collect());
    let want: BTreeSet<String> = alerts
        .iter()
        .filter(|(_, a)| !a.open)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(resolved, want);
}

/// `tads watch` tells a real Alertmanager of an alert that opens in one file and closes in the
/// next: firing after the first round, resolved (no longer listed) after the second, under the
/// same alert id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fires_an_alert_in_one_round_and_resolves_it_in_the_next() {
    let t = trained();
    let am = Alertmanager::start(None).await;
    let (data, out, outbox) = (
        am.dir().join("watched"),
        am.dir().join("watch"),
        am.dir().join("outbox"),
    );
    let watch_once = || {
        tads()
            .args([
                "watch", "--once", "--settle", "50ms", "--model", "fleet", "--data",
            ])
            .arg(&data)
            .arg("--models")
            .arg(t.dir.join("models"))
            .arg("--out")
            .arg(&out)
            .args(["--alertmanager", &am.base, "--outbox"])
            .arg(&outbox)
            .output()
            .unwrap()
    };
    let land = |day: &str| {
        let rel = format!("date={day}/part-00000.parquet");
        std::fs::create_dir_all(data.join(format!("date={day}"))).unwrap();
        std::fs::copy(t.dir.join("data").join(&rel), data.join(&rel)).unwrap();
    };
    // The first day ends inside host-0004's alert from 23:05.
    land("2026-01-01");
    assert_ok(&watch_once());
    let carried = "fleet/host-0004/2026-01-01T23:05:00Z";
    let firing = am.tads_alerts().await;
    assert!(
        firing.iter().any(|a| a["labels"]["alert_id"] == carried),
        "{firing:#?}\n{}",
        am.log()
    );
    // The second day closes it: the next round resolves it.
    land("2026-01-02");
    assert_ok(&watch_once());
    let after = am.tads_alerts().await;
    assert!(
        !after.iter().any(|a| a["labels"]["alert_id"] == carried),
        "{after:#?}"
    );
    let round2 = alerts_of(&out.join("rounds/000002"));
    assert!(!round2[carried].open, "{round2:#?}");
}
