//! `tads generate` into S3 (a real S3-compatible server on 127.0.0.1), read back by DataFusion.

use crate::support::{assert_ok, assert_user_error, generate_with_env, s3, scalar, tads};

#[tokio::test]
async fn generates_into_s3_and_datafusion_reads_it_back_with_pruning() {
    let s3 = s3();
    let bucket = s3.bucket("tads-gen-e2e");
    let url = format!("s3://{bucket}/telemetry/v1");
    let out = tads()
        .args(["generate", "--quiet", "--out", &url])
        .args([
            "--hosts",
            "4",
            "--duration",
            "2d",
            "--interval",
            "1m",
            "--seed",
            "3",
        ])
        .envs(s3.env())
        .output()
        .unwrap();
    assert_ok(&out);

    let loc = s3.location(&url);
    let m = tads_gen::Manifest::read(&loc)
        .await
        .unwrap()
        .expect("manifest in S3");
    assert_eq!(m.rows, 4 * 2 * 1440);
    let listed: Vec<String> = loc
        .list_all()
        .await
        .unwrap()
        .iter()
        .filter_map(|o| loc.relative(&o.location))
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(!listed.iter().any(|p| p == tads_store::IN_PROGRESS));

    let ctx = tads_sql::session();
    tads_sql::register_dataset(&ctx, "t", &loc).await.unwrap();
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM t").await,
        m.rows.to_string()
    );
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(cpu_pct) FROM t WHERE date = '2026-01-02'"
        )
        .await,
        "5760"
    );
    let plan = crate::support::query(
        &ctx,
        "EXPLAIN SELECT avg(cpu_pct) FROM t WHERE date = '2026-01-02'",
    )
    .await;
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    assert!(
        plan.contains("date=2026-01-02") && !plan.contains("date=2026-01-01"),
        "{plan}"
    );

    // Same refusal and overwrite rules as locally.
    let again = tads()
        .args([
            "generate",
            "--quiet",
            "--out",
            &url,
            "--hosts",
            "1",
            "--duration",
            "1d",
        ])
        .envs(s3.env())
        .output()
        .unwrap();
    assert_user_error(&again, "is not empty");
}

#[test]
fn unreachable_s3_and_missing_credentials_are_one_line_errors() {
    // Nothing listens on port 9 of the loopback address.
    let dead = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ACCESS_KEY_ID", "a"),
        ("AWS_SECRET_ACCESS_KEY", "b"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let out = generate_with_env(
        "s3://nowhere/x",
        &["--hosts", "1", "--duration", "1h"],
        &dead,
    );
    assert_user_error(&out, "s3://nowhere/x");
    // A variable that is not UTF-8 elsewhere in the environment: the same error, no panic.
    let out = crate::support::tads()
        .args([
            "generate",
            "--out",
            "s3://nowhere/x",
            "--hosts",
            "1",
            "--duration",
            "1h",
        ])
        .envs(dead)
        .env(
            "TADS_TEST_NOT_UTF8",
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff\xfe"),
        )
        .output()
        .unwrap();
    assert_user_error(&out, "s3://nowhere/x");
    let out = generate_with_env("s3://nowhere/x", &["--hosts", "1"], &[]);
    assert_user_error(&out, "no S3 credentials");
}

#[test]
fn a_missing_bucket_is_named() {
    let s3 = s3();
    let out = tads()
        .args([
            "generate",
            "--quiet",
            "--out",
            "s3://no-such-bucket-tads/x",
            "--hosts",
            "1",
            "--duration",
            "1h",
        ])
        .envs(s3.env())
        .output()
        .unwrap();
    assert_user_error(&out, "s3://no-such-bucket-tads/x");
}

/// One writer per output on S3 too: the lock is a create-only put (`If-None-Match: *`), so of
/// eight writers starting at once on one prefix exactly one gets it, the others are refused
/// naming its holder, and once it is done the next writer gets it.
#[tokio::test]
async fn an_s3_output_has_one_writer_even_when_eight_start_at_once() {
    let s3 = s3();
    let bucket = s3.bucket("tads-locks");
    let out = s3.location(&format!("s3://{bucket}/out"));
    let attempts = (0..8).map(|i| {
        let out = out.clone();
        async move {
            tads_store::Output::begin(&out, true, false, "tads score", &format!("run-{i}")).await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let (won, lost): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
    assert_eq!(won.len(), 1, "writers that got the lock: {}", won.len());
    for r in &lost {
        let err = r.as_ref().err().unwrap().to_string();
        assert!(err.contains("is locked by tads score run run-"), "{err}");
    }
    let winner = won.into_iter().next().unwrap().unwrap();
    winner.finish(b"{}".to_vec()).await.unwrap();
    let next = tads_store::Output::begin(&out, true, false, "tads score", "run-next")
        .await
        .unwrap();
    next.abort().await;
}

/// The watch checkpoint's conditional replace (`Location::put_if`): of eight writers that read
/// the same version and race to replace it, exactly one wins; a stale version never overwrites
/// a newer object. On S3 (`If-Match` / `If-None-Match: *` against the real server) and on a
/// local disk (the version compared, then a rename).
#[tokio::test]
async fn a_conditional_replace_lets_one_of_eight_writers_win_and_never_overwrites_a_newer_object() {
    let s3 = s3();
    let bucket = s3.bucket("tads-cas");
    let tmp = tempfile::tempdir().unwrap();
    let local = tads_store::Location::parse(tmp.path().to_str().unwrap()).unwrap();
    // A prefix of this run's own: the server outlives test runs.
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    for at in [s3.location(&format!("s3://{bucket}/w-{run}")), local] {
        let first = at.put_if("c.json", b"v1".to_vec(), None).await.unwrap();
        let v1 = first.expect("the first create wins");
        assert!(
            at.put_if("c.json", b"again".to_vec(), None)
                .await
                .unwrap()
                .is_none(),
            "{at}: a second create must not replace the object"
        );
        let (bytes, read) = at.get_versioned("c.json").await.unwrap().unwrap();
        assert_eq!((&bytes[..], &read), (&b"v1"[..], &v1), "{at}");
        // Local writers are kept apart by the lock: there, one after another suffices.
        let racers = (0..8).map(|i| {
            let (at, read) = (at.clone(), read.clone());
            async move {
                at.put_if("c.json", format!("w{i}").into_bytes(), Some(&read))
                    .await
                    .unwrap()
                    .map(|v| (i, v))
            }
        });
        let won: Vec<_> = if at.scheme() == tads_store::Scheme::S3 {
            futures::future::join_all(racers).await
        } else {
            let mut out = Vec::new();
            for r in racers {
                out.push(r.await);
            }
            out
        }
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(won.len(), 1, "{at}: writers that replaced v1: {won:?}");
        let (winner, v2) = &won[0];
        let (bytes, now) = at.get_versioned("c.json").await.unwrap().unwrap();
        assert_eq!(&bytes[..], format!("w{winner}").as_bytes(), "{at}");
        assert_eq!(&now, v2, "{at}");
        // The stale version still loses after the race.
        assert!(
            at.put_if("c.json", b"late".to_vec(), Some(&read))
                .await
                .unwrap()
                .is_none(),
            "{at}"
        );
        assert!(
            at.put_if("c.json", b"next".to_vec(), Some(v2))
                .await
                .unwrap()
                .is_some(),
            "{at}"
        );
    }
}
