//! `tads watch`: following a folder as files land gives the scores and the alerts of one
//! `tads score` over all the files, also when the watcher is killed with SIGKILL at random
//! moments and restarted; a second watcher, another dataset's checkpoint and a corrupt file are
//! handled as the README says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use tads_store::Location;

use crate::support::{assert_ok, generate, interrupt, query, score_cmd, tads, train_cmd};

/// Any string column as `Utf8` (DataFusion reads Parquet strings as views).
fn text(column: &ArrayRef) -> StringArray {
    cast(column, &DataType::Utf8)
        .unwrap()
        .as_string::<i32>()
        .clone()
}

/// One alert as compared: start, end, opened (seconds), points, peak, severity, open.
pub(crate) type AlertRow = (i64, i64, i64, u64, String, String, bool);

/// What a score run (or a watcher's rounds) produced.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// (host, time in seconds) → (score, alert id).
    pub(crate) rows: BTreeMap<(String, i64), (String, Option<String>)>,
    /// alert id → the alert (a later round's record replaces an earlier one's).
    pub(crate) alerts: BTreeMap<String, AlertRow>,
    /// (host, time in seconds) → which output added the row (0, 1, …: a watcher's round).
    round: BTreeMap<(String, i64), usize>,
    /// How many outputs were added.
    outputs: usize,
}

impl Outcome {
    /// Adds the output of one score run (a `tads score` --out, or a round's folder).
    async fn add(&mut self, out: &Path) {
        let ctx = tads_sql::session();
        let scored = Location::parse(out.join("scored").to_str().unwrap()).unwrap();
        tads_sql::register_dataset(&ctx, "s", &scored)
            .await
            .unwrap();
        let sql = "SELECT host_id, to_unixtime(ts), score, alert_id FROM s";
        for b in query(&ctx, sql).await {
            let (hosts, times) = (text(b.column(0)), b.column(1));
            let times = times.as_primitive::<Int64Type>();
            let scores = b.column(2).as_primitive::<Float64Type>();
            let ids = text(b.column(3));
            for i in 0..b.num_rows() {
                let score = format!("{:?}", scores.is_valid(i).then(|| scores.value(i)));
                let id = ids.is_valid(i).then(|| ids.value(i).to_string());
                let key = (hosts.value(i).to_string(), times.value(i));
                self.round.insert(key.clone(), self.outputs);
                assert!(
                    self.rows.insert(key.clone(), (score, id)).is_none(),
                    "{key:?} scored twice"
                );
            }
        }
        self.outputs += 1;
        let file = out.join("alerts/alerts.parquet");
        if !file.exists() {
            return;
        }
        let alerts = Location::parse_data(file.to_str().unwrap()).unwrap();
        tads_sql::register_dataset(&ctx, "a", &alerts)
            .await
            .unwrap();
        let sql = "SELECT alert_id, to_unixtime(start_ts), to_unixtime(end_ts), \
                   to_unixtime(opened_ts), points, peak_score, severity, open FROM a";
        for b in query(&ctx, sql).await {
            let col = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
            let (start, end, opened) = (col(1), col(2), col(3));
            let points = b.column(4).as_primitive::<UInt64Type>();
            let peak = b.column(5).as_primitive::<Float64Type>();
            let severity = text(b.column(6));
            let open = b.column(7).as_boolean();
            let ids = text(b.column(0));
            for i in 0..b.num_rows() {
                self.alerts.insert(
                    ids.value(i).to_string(),
                    (
                        start.value(i),
                        end.value(i),
                        opened.value(i),
                        points.value(i),
                        format!("{:.12}", peak.value(i)),
                        severity.value(i).to_string(),
                        open.value(i),
                    ),
                );
            }
        }
    }

    /// Every round of a watcher's output, in order.
    async fn of_watch(out: &Path) -> Self {
        let mut rounds: Vec<PathBuf> = std::fs::read_dir(out.join("rounds"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        rounds.sort();
        let mut outcome = Self::default();
        for round in rounds {
            assert!(
                round.join("_manifest.json").exists(),
                "{} is not complete",
                round.display()
            );
            outcome.add(&round).await;
        }
        outcome
    }

    /// Asserts the watcher's outcome is the reference's: the same rows with the same scores,
    /// the same alerts. A row's alert id may be missing only where its round was written while
    /// the row's alert could not be known yet: the row came before its alert opened, in an
    /// earlier round than the one that opened it, or the hold kept it after a dip that a later
    /// round bridged (then no row of its key after it in its round has the id either).
    fn assert_same_as(&self, reference: &Outcome) {
        assert_eq!(self.rows.len(), reference.rows.len(), "rows");
        assert!(!reference.alerts.is_empty(), "the reference has alerts");
        assert_eq!(self.alerts, reference.alerts, "alerts");
        let (mut late, mut held) = (0, 0);
        for (key, (score, id)) in &reference.rows {
            let (w_score, w_id) = self.rows.get(key).unwrap_or_else(|| panic!("{key:?}"));
            assert_eq!(w_score, score, "score of {key:?}");
            if w_id != id {
                let id = id.as_ref().unwrap_or_else(|| panic!("{key:?}: {w_id:?}"));
                assert!(w_id.is_none(), "{key:?}: {w_id:?} vs {id}");
                if key.1 >= reference.alerts[id].2 {
                    // Held: the rest of its round on its key is undecided too.
                    let round = self.round[key];
                    let rest = (key.0.clone(), key.1)..(key.0.clone(), i64::MAX);
                    for (k, (_, i)) in self.rows.range(rest) {
                        if self.round[k] == round {
                            assert!(
                                i.is_none(),
                                "{key:?} held, but {k:?} of its round is in {i:?}"
                            );
                        }
                    }
                    held += 1;
                } else {
                    late += 1;
                }
            }
        }
        eprintln!(
            "{} rows, {} alerts alike; {late} rows before an alert opened in a later round and \
             {held} rows held at the end of a round lack its id",
            reference.rows.len(),
            reference.alerts.len()
        );
    }
}

/// The generated SMALL dataset cut into files of `hours` hours each (`date=D/part-HHMM.parquet`
/// below `to`), each sorted by host and time; their paths in time order.
async fn sliced(tmp: &Path, to: &Path, hours: i64) -> Vec<String> {
    let (ctx, columns) = crate::support::generated_table(&tmp.join("full")).await;
    let span = query(
        &ctx,
        "SELECT min(to_unixtime(ts)), max(to_unixtime(ts)) FROM t",
    )
    .await;
    let (first, last) = (
        span[0].column(0).as_primitive::<Int64Type>().value(0),
        span[0].column(1).as_primitive::<Int64Type>().value(0),
    );
    let mut paths = Vec::new();
    let mut from = first;
    while from <= last {
        let until = from + hours * 3600;
        let at = chrono::DateTime::from_timestamp(from, 0).unwrap();
        let rel = format!(
            "date={}/part-{}.parquet",
            at.format("%F"),
            at.format("%H%M")
        );
        let path = to.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let sql = format!(
            "COPY (SELECT {} FROM t WHERE to_unixtime(ts) >= {from} AND to_unixtime(ts) < {until} \
             ORDER BY host_id, ts) TO '{}' STORED AS PARQUET",
            columns,
            path.display()
        );
        query(&ctx, &sql).await;
        paths.push(rel);
        from = until;
    }
    paths
}

/// Copies `rel` from `from` to `to` the way a writer should: staged under a hidden name, then
/// renamed.
pub(crate) fn land(from: &Path, to: &Path, rel: &str) {
    let target = to.join(rel);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let staged = target.with_file_name(format!(".{}.tmp", rel.replace('/', "_")));
    std::fs::copy(from.join(rel), &staged).unwrap();
    std::fs::rename(&staged, &target).unwrap();
}

/// `tads watch` on `data` into `out` with model `m`, and `args`.
pub(crate) fn watch(data: &Path, models: &Path, out: &Path, args: &[&str]) -> Command {
    let mut cmd = tads();
    cmd.args(["watch", "--model", "m", "--settle", "50ms", "--data"])
        .arg(data)
        .arg("--models")
        .arg(models)
        .arg("--out")
        .arg(out)
        .args(args);
    cmd
}

/// The sliced dataset, a model trained on it, and the reference: one `tads score` over all of
/// it.
pub(crate) async fn setup(tmp: &Path) -> (PathBuf, PathBuf, Vec<String>, Outcome) {
    let (all, models) = (tmp.join("all"), tmp.join("models"));
    let files = sliced(tmp, &all, 6).await;
    assert_ok(&train_cmd("m", &all, &models, &[]));
    let reference_out = tmp.join("reference");
    assert_ok(&score_cmd("m", &all, &models, &reference_out, &["--quiet"]));
    let mut reference = Outcome::default();
    reference.add(&reference_out).await;
    (all, models, files, reference)
}

#[tokio::test]
async fn watching_files_land_round_by_round_gives_the_scores_and_alerts_of_one_score_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, models, files, reference) = setup(tmp.path()).await;
    let (data, out) = (tmp.path().join("watched"), tmp.path().join("out"));
    std::fs::create_dir_all(&data).unwrap();
    // Files land three at a time; each --once run scores them in rounds of at most two.
    for chunk in files.chunks(3) {
        for rel in chunk {
            land(&all, &data, rel);
        }
        let run = watch(&data, &models, &out, &["--once", "--max-files", "2"])
            .output()
            .unwrap();
        assert_ok(&run);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(stdout.lines().any(|l| l.starts_with("round ")), "{stdout}");
    }
    // Nothing new: a further run does no round.
    let idle = watch(&data, &models, &out, &["--once"]).output().unwrap();
    assert_ok(&idle);
    let stdout = String::from_utf8_lossy(&idle.stdout);
    assert!(!stdout.lines().any(|l| l.starts_with("round ")), "{stdout}");
    Outcome::of_watch(&out).await.assert_same_as(&reference);
    // Some alerts run across files (of 6 hours), so the carried state was put to the test.
    let across = reference
        .alerts
        .values()
        .filter(|a| a.0.div_euclid(6 * 3600) != a.1.div_euclid(6 * 3600))
        .count();
    assert!(across >= 2, "{across} alerts across files");
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_watch/checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(checkpoint["files"].as_object().unwrap().len(), files.len());
    // The previous days' levels are kept (the rounds of the last day did not read them again).
    assert_eq!(checkpoint["levels_through"], 20_455, "{checkpoint}");
    assert!(
        !out.join("_watch/lock.json").exists(),
        "the lock is released"
    );
}

/// A small deterministic generator for the kill moments (its seed is printed).
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[tokio::test]
async fn a_watcher_killed_at_random_moments_and_restarted_scores_every_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, models, files, reference) = setup(tmp.path()).await;
    let (data, out) = (tmp.path().join("watched"), tmp.path().join("out"));
    std::fs::create_dir_all(&data).unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill moments from seed {seed}");
    // Files land while watchers run and are killed.
    let writer = {
        let (all, data, files) = (all.clone(), data.clone(), files.clone());
        std::thread::spawn(move || {
            for rel in &files {
                land(&all, &data, rel);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let committed = || {
        std::fs::read(out.join("_watch/checkpoint.json"))
            .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap()["rounds"].as_u64())
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    // Six kills at least, and on until the killed watchers have committed two rounds: a loaded
    // machine slows a debug watcher's start, so a fixed number of kills may all come too early.
    let (mut kills, mut mid_round) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    while (kills < 6 || committed() < 2) && Instant::now() < deadline {
        let mut child = watch(&data, &models, &out, &["--every", "100ms", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Past six kills without two rounds, each watcher is given half a second more.
        let patience = 500 * (kills as u64).saturating_sub(5);
        std::thread::sleep(Duration::from_millis(
            100 + next(&mut seed) % 900 + patience,
        ));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // Killed inside a round: its folder is unfinished (the next watcher replaces it).
        let unfinished = std::fs::read_dir(out.join("rounds"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().join("_tads_in_progress.json").exists())
            })
            .unwrap_or(false);
        mid_round += usize::from(unfinished);
    }
    writer.join().unwrap();
    assert!(kills >= 3, "only {kills} watchers were killed");
    let committed = committed();
    eprintln!(
        "{kills} watchers killed, {committed} rounds committed by them, {mid_round} kills inside a round"
    );
    assert!(
        committed >= 2,
        "the killed watchers committed {committed} rounds"
    );
    // A last run scores what is left, taking over the dead watcher's lock.
    let last = watch(&data, &models, &out, &["--once"]).output().unwrap();
    assert_ok(&last);
    Outcome::of_watch(&out).await.assert_same_as(&reference);
}

#[tokio::test]
async fn a_second_watcher_another_dataset_and_a_corrupt_file_are_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, models) = (tmp.path().join("all"), tmp.path().join("models"));
    let files = sliced(tmp.path(), &all, 24).await;
    assert_ok(&train_cmd("m", &all, &models, &[]));
    let (data, out) = (tmp.path().join("watched"), tmp.path().join("out"));
    land(&all, &data, &files[0]);
    // A corrupt file is reported once and skipped; the good one is scored.
    let bad = data.join("date=2026-01-01/part-bad.parquet");
    std::fs::write(&bad, b"not parquet at all").unwrap();
    let run = watch(&data, &models, &out, &["--once"]).output().unwrap();
    assert_ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("skipped date=2026-01-01/part-bad.parquet"),
        "{stderr}"
    );
    let checkpoint = std::fs::read_to_string(out.join("_watch/checkpoint.json")).unwrap();
    assert!(
        checkpoint.contains("not a readable Parquet file"),
        "{checkpoint}"
    );
    let again = watch(&data, &models, &out, &["--once"]).output().unwrap();
    assert_ok(&again);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("skipped"));

    // A second watcher on the same output is refused while the first runs.
    let mut first = watch(&data, &models, &out, &["--every", "1s", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join("_watch/lock.json");
    let start = Instant::now();
    while !lock.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // It beats: the lock says when, and how long it may be silent.
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|l| l.contains("heartbeat_at"))
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let held = std::fs::read_to_string(&lock).unwrap();
    assert!(held.contains("\"stale_after_secs\": 60"), "{held}");
    let second = watch(&data, &models, &out, &["--once"]).output().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(2));
    let refused = String::from_utf8_lossy(&second.stderr);
    assert!(
        refused.contains("tads watch") && refused.contains("last heartbeat"),
        "{refused}"
    );

    // The checkpoint belongs to `watched`: another --data on the same output is refused.
    let other = tmp.path().join("other");
    land(&all, &other, &files[1]);
    let refused = watch(&other, &models, &out, &["--once"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("follows") && stderr.contains("watched"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_watcher_follows_generate_follow_as_it_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models, out) = (
        tmp.path().join("live"),
        tmp.path().join("models"),
        tmp.path().join("out"),
    );
    // A model trained on a day of the same kind of telemetry.
    let history = tmp.path().join("history");
    let base = ["--hosts", "4", "--interval", "1m"];
    assert_ok(&generate(
        history.to_str().unwrap(),
        &[
            &base[..],
            &["--duration", "2d", "--seed", "11", "--anomaly-rate", "1"],
        ]
        .concat(),
    ));
    assert_ok(&train_cmd("m", &history, &models, &[]));
    // Six hours of data at 7200 times real time: a file of 20 minutes every 0.17 s, 3 s in all.
    let writer = tads()
        .args(["generate", "--follow", "--flush", "20m", "--speed", "7200"])
        .args(["--anomaly-rate", "16"])
        .args([
            "--duration",
            "6h",
            "--start",
            "2026-02-01T21:00:00Z",
            "--out",
        ])
        .arg(&data)
        .args(base)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watcher = watch(&data, &models, &out, &["--every", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let written = writer.wait_with_output().unwrap();
    assert!(written.status.success());
    let stderr = String::from_utf8_lossy(&written.stderr);
    // 21:00 to 03:00 in windows of 20 minutes, cut at midnight: 18 files.
    assert_eq!(stderr.matches("wrote date=").count(), 18, "{stderr}");
    assert!(stderr.contains("wrote date=2026-02-02/part-000000.parquet"));
    std::thread::sleep(Duration::from_millis(1500));
    // Ctrl-C: the watcher stops between rounds.
    interrupt(watcher.id());
    let watched = watcher.wait_with_output().unwrap();
    assert!(watched.status.success());
    let stdout = String::from_utf8_lossy(&watched.stdout);
    assert!(
        stdout.lines().filter(|l| l.starts_with("round ")).count() >= 2,
        "{stdout}"
    );
    // Whatever the rounds missed, a last --once run takes; then the whole is one score run's.
    assert_ok(&watch(&data, &models, &out, &["--once"]).output().unwrap());
    let reference_out = tmp.path().join("reference");
    assert_ok(&score_cmd(
        "m",
        &data,
        &models,
        &reference_out,
        &["--quiet"],
    ));
    let mut reference = Outcome::default();
    reference.add(&reference_out).await;
    Outcome::of_watch(&out).await.assert_same_as(&reference);
}

/// Every object below `from` copied into the local folder `to`.
async fn download(from: &Location, to: &Path) {
    for object in from.list_all().await.unwrap() {
        let rel = from.relative(&object.location).unwrap();
        let bytes = from.get_opt(&rel).await.unwrap().unwrap();
        let path = to.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

#[tokio::test]
async fn a_watcher_follows_an_s3_prefix_into_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, models, files, reference) = setup(tmp.path()).await;
    let s3 = crate::support::s3();
    let bucket = s3.bucket(&format!("watch-{}", std::process::id()));
    let (data_url, out_url) = (format!("s3://{bucket}/in/"), format!("s3://{bucket}/out/"));
    let data = s3.location(&data_url);
    for chunk in files.chunks(5) {
        for rel in chunk {
            data.put(rel, std::fs::read(all.join(rel)).unwrap())
                .await
                .unwrap();
        }
        let run = tads()
            .args([
                "watch", "--once", "--settle", "50ms", "--model", "m", "--models",
            ])
            .arg(&models)
            .args(["--data", &data_url, "--out", &out_url])
            .envs(s3.env())
            .output()
            .unwrap();
        assert_ok(&run);
    }
    let local = tmp.path().join("out-from-s3");
    download(&s3.location(&out_url), &local).await;
    Outcome::of_watch(&local).await.assert_same_as(&reference);
}

/// The files done, by the checkpoint at `out` (0 before the first).
fn files_done(out: &Path) -> usize {
    std::fs::read(out.join("_watch/checkpoint.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| c["files"].as_object().map(|f| f.len()))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_file_landing_late_under_an_earlier_name_is_still_found() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, models) = (tmp.path().join("all"), tmp.path().join("models"));
    let files = sliced(tmp.path(), &all, 12).await;
    assert_ok(&train_cmd("m", &all, &models, &[]));
    let (data, out) = (tmp.path().join("watched"), tmp.path().join("out"));
    for rel in &files[2..4] {
        land(&all, &data, rel);
    }
    let mut watcher = watch(&data, &models, &out, &["--every", "100ms", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |n: usize| {
        let start = Instant::now();
        while files_done(&out) < n && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        files_done(&out)
    };
    assert_eq!(wait_for(2), 2);
    // Most listings start after the last file done; the periodic full one finds these.
    for rel in &files[..2] {
        land(&all, &data, rel);
    }
    let found = wait_for(4);
    interrupt(watcher.id());
    watcher.wait().unwrap();
    assert_eq!(found, 4);
}
