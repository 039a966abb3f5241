//! `kill -9` at moments spread over a run: no reader takes a killed run's output for a finished
//! one, the input is never touched, and a plain rerun with `--overwrite` (the dead run's lock is
//! taken over: its process is gone) gives exactly what an uninterrupted run gives.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tads_store::Location;

use crate::support::{SMALL, assert_ok, files_below, generate, scalar, tads, train_cmd};

/// Starts `cmd`, kills it with SIGKILL after `after` unless it finished first; whether it was
/// killed.
fn kill_after(mut cmd: Command, after: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tads");
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().expect("poll tads").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("kill tads");
    child.wait().expect("reap tads");
    true
}

/// Each file below `dir` with its bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files_below(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(dir.join(&p)).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Whether a reader accepts `dir` as a dataset.
async fn readable(dir: &Path) -> bool {
    let ctx = tads_sql::session();
    let loc = Location::parse_data(dir.to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "t", &loc).await.is_ok()
}

/// Moments spread over a run of about `full`: early, during and near the end.
fn moments(full: Duration) -> Vec<Duration> {
    [0.02, 0.15, 0.35, 0.55, 0.75, 0.95]
        .iter()
        .map(|f| full.mul_f64(*f))
        .collect()
}

fn score(data: &Path, models: &Path, out: &Path, rerun: bool) -> Command {
    let mut cmd = tads();
    cmd.args(["score", "--quiet", "--model", "m", "--data"])
        .arg(data)
        .arg("--models")
        .arg(models)
        .arg("--out")
        .arg(out);
    if rerun {
        cmd.arg("--overwrite");
    }
    cmd
}

#[tokio::test]
async fn a_killed_score_is_never_read_as_finished_and_a_rerun_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models) = (tmp.path().join("data"), tmp.path().join("models"));
    assert_ok(&generate(data.to_str().unwrap(), SMALL));
    assert_ok(&train_cmd("m", &data, &models, &[]));
    let input = contents(&data);
    let reference = tmp.path().join("reference");
    let started = Instant::now();
    assert_ok(&score(&data, &models, &reference, false).output().unwrap());
    let full = started.elapsed();

    let mut killed = 0;
    for (i, after) in moments(full).into_iter().enumerate() {
        let out = tmp.path().join(format!("killed-{i}"));
        if kill_after(score(&data, &models, &out, false), after) {
            killed += 1;
        }
        let finished = out.join("_manifest.json").exists();
        if out.join("scored").exists() {
            assert_eq!(
                readable(&out.join("scored")).await,
                finished,
                "kill at {after:?}: the scored rows are readable only when the run finished"
            );
        }
        assert_eq!(
            contents(&data),
            input,
            "kill at {after:?} touched the input"
        );
        assert_ok(&score(&data, &models, &out, true).output().unwrap());
        let ctx = tads_sql::session();
        for (name, dir) in [("a", &reference), ("b", &out)] {
            let loc = Location::parse_data(dir.join("scored").to_str().unwrap()).unwrap();
            tads_sql::register_dataset(&ctx, name, &loc).await.unwrap();
        }
        let cols = "host_id, ts, pca_spe, pca_t2, mad_zmax, score, alert_id";
        for (x, y) in [("a", "b"), ("b", "a")] {
            let differing = scalar(
                &ctx,
                &format!(
                    "SELECT count(*) FROM (SELECT {cols} FROM {x} EXCEPT SELECT {cols} FROM {y})"
                ),
            )
            .await;
            assert_eq!(differing, "0", "kill at {after:?}: the rerun differs");
        }
    }
    assert!(
        killed >= 2,
        "only {killed} of the runs were killed before finishing"
    );
}

#[tokio::test]
async fn a_killed_generate_is_never_read_as_finished_and_a_rerun_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let started = Instant::now();
    assert_ok(&generate(reference.to_str().unwrap(), SMALL));
    let full = started.elapsed();
    let expected = contents(&reference);

    let mut killed = 0;
    for (i, after) in moments(full).into_iter().enumerate() {
        let out = tmp.path().join(format!("killed-{i}"));
        let mut cmd = tads();
        cmd.args(["generate", "--quiet", "--out"])
            .arg(&out)
            .args(SMALL);
        if kill_after(cmd, after) {
            killed += 1;
        }
        if out.exists() {
            assert_eq!(
                readable(&out).await,
                out.join("_manifest.json").exists() && !out.join("_tads_in_progress.json").exists(),
                "kill at {after:?}: the dataset is readable only when the run finished"
            );
        }
        let rerun = generate(out.to_str().unwrap(), &[SMALL, &["--overwrite"]].concat());
        assert_ok(&rerun);
        // A lock's staging file (`_tads_lock.json#N`) left by the killed run stays until it is
        // a minute old: until then it may be another writer's put in flight.
        let got: Vec<(String, Vec<u8>)> = contents(&out)
            .into_iter()
            .filter(|(p, _)| p != "_manifest.json" && !p.starts_with("_tads_lock.json#"))
            .collect();
        let want: Vec<(String, Vec<u8>)> = expected
            .iter()
            .filter(|(p, _)| p != "_manifest.json")
            .cloned()
            .collect();
        let names = |files: &[(String, Vec<u8>)]| -> Vec<String> {
            files.iter().map(|(p, _)| p.clone()).collect()
        };
        assert!(
            got == want,
            "kill at {after:?}: the rerun's files differ: {:?} against {:?}",
            names(&got),
            names(&want)
        );
    }
    assert!(
        killed >= 2,
        "only {killed} of the runs were killed before finishing"
    );
}

#[tokio::test]
async fn a_killed_training_never_loses_the_model_it_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models) = (tmp.path().join("data"), tmp.path().join("models"));
    assert_ok(&generate(data.to_str().unwrap(), SMALL));
    let started = Instant::now();
    assert_ok(&train_cmd("m", &data, &models, &[]));
    let full = started.elapsed();
    let file = models.join("m").join("model.json");
    // A complete model that passes its own checks (fingerprint included), and what it learnt.
    // (Not the fingerprint itself: partitions merge their co-moments in any order, so the last
    // bits of a retraining may differ.)
    let fingerprint = |path: &Path| -> (Vec<String>, usize) {
        let model = tads_model::ModelArtifact::from_json(&std::fs::read(path).unwrap())
            .expect("a complete, valid model");
        (model.features, model.pca.k)
    };
    let reference = fingerprint(&file);

    let mut killed = 0;
    for after in moments(full) {
        let mut cmd = tads();
        cmd.args(["train", "--quiet", "--model", "m", "--overwrite", "--data"])
            .arg(&data)
            .arg("--models")
            .arg(&models);
        if kill_after(cmd, after) {
            killed += 1;
        }
        // The model is always there and whole: the old one or the new one, never a part.
        assert_eq!(fingerprint(&file), reference, "kill at {after:?}");
        assert_ok(&train_cmd(
            "m",
            &data,
            &models,
            &["--overwrite", "--break-lock"],
        ));
        assert_eq!(
            fingerprint(&file),
            reference,
            "rerun after a kill at {after:?}"
        );
    }
    assert!(
        killed >= 2,
        "only {killed} of the runs were killed before finishing"
    );
}

/// A dataset replaced (`generate --overwrite`, another seed) while `tads score` reads it: the
/// score run either finishes with rows of one version of the data, or is refused naming the
/// change; never a silent mix of the two.
#[tokio::test]
async fn a_dataset_replaced_under_a_running_score_is_never_scored_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models) = (tmp.path().join("data"), tmp.path().join("models"));
    // SMALL with another seed.
    let version = |seed: &'static str| -> Vec<&'static str> {
        let mut args: Vec<&'static str> = SMALL.to_vec();
        let at = args.iter().position(|a| *a == "--seed").unwrap();
        args[at + 1] = seed;
        args
    };
    assert_ok(&generate(data.to_str().unwrap(), &version("7")));
    assert_ok(&train_cmd("m", &data, &models, &[]));
    // What each version of the data scores as on its own.
    let mut references = Vec::new();
    for seed in ["7", "8"] {
        let dir = tmp.path().join(format!("data-{seed}"));
        assert_ok(&generate(dir.to_str().unwrap(), &version(seed)));
        let out = tmp.path().join(format!("reference-{seed}"));
        assert_ok(&score(&dir, &models, &out, false).output().unwrap());
        references.push(out);
    }
    let (mut refused, mut finished) = (0, 0);
    for (i, delay) in [0u64, 20, 60, 120, 200].into_iter().enumerate() {
        let seed = if i % 2 == 0 { "8" } else { "7" };
        let out = tmp.path().join(format!("out-{i}"));
        let scoring = score(&data, &models, &out, false)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let replaced = generate(
            data.to_str().unwrap(),
            &[version(seed), vec!["--overwrite"]].concat(),
        );
        let scored = scoring.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&scored.stderr);
        if !scored.status.success() {
            refused += 1;
            assert_eq!(scored.status.code(), Some(2), "{stderr}");
            assert!(
                !out.join("_manifest.json").exists(),
                "a refused run left a manifest"
            );
            continue;
        }
        finished += 1;
        assert!(replaced.status.code().is_some(), "generate did not finish");
        // A finished run is one version's scores, row for row.
        let ctx = tads_sql::session();
        let loc = Location::parse_data(out.join("scored").to_str().unwrap()).unwrap();
        tads_sql::register_dataset(&ctx, "got", &loc).await.unwrap();
        let mut matches = 0;
        for (j, reference) in references.iter().enumerate() {
            let loc = Location::parse_data(reference.join("scored").to_str().unwrap()).unwrap();
            tads_sql::register_dataset(&ctx, &format!("r{j}"), &loc)
                .await
                .unwrap();
            let cols = "host_id, ts, cpu_pct, score";
            let differing = scalar(
                &ctx,
                &format!(
                    "SELECT (SELECT count(*) FROM (SELECT {cols} FROM got EXCEPT SELECT {cols} FROM r{j})) \
                          + (SELECT count(*) FROM (SELECT {cols} FROM r{j} EXCEPT SELECT {cols} FROM got))"
                ),
            )
            .await;
            if differing == "0" {
                matches += 1;
            }
        }
        assert_eq!(
            matches, 1,
            "run {i} (delay {delay} ms) scored a mix of two datasets"
        );
    }
    eprintln!("{refused} refused, {finished} finished with one version");
    assert_eq!(refused + finished, 5);
}
