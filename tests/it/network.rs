//! `tads generate --profile network` end to end: a link's columns and labels, then train →
//! score → eval with the default settings, each network event kind found.

use serde_json::Value;

use crate::support::{assert_ok, generate, scalar, score_cmd, tads, train_cmd};

/// 20 links × 7 days at one row a minute (201,600 rows, 140 link-days), about one labelled
/// event per link-day of the four network kinds, a fixed seed.
const NETWORK_ARGS: &[&str] = &[
    "--profile",
    "network",
    "--hosts",
    "20",
    "--duration",
    "7d",
    "--interval",
    "1m",
    "--anomaly-rate",
    "1",
    "--seed",
    "11",
];

/// Event recall each kind must keep with the default settings: floors below what this dataset
/// measured when the profile was built (1.00, 0.97, 0.81, 0.60; README, "Network links"), so
/// that a change to detection that loses a kind of network event fails here.
const TARGETS: &[(&str, f64)] = &[
    ("loss_burst", 0.95),
    ("jitter_storm", 0.90),
    ("bandwidth_collapse", 0.70),
    ("latency_step", 0.50),
];
/// The least point-wise precision (measured 0.999).
const MIN_PRECISION: f64 = 0.95;
/// The most false alerts per 100 link-days (measured 1.43).
const MAX_FALSE_ALERTS: f64 = 3.0;

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

#[tokio::test]
async fn network_links_are_generated_scored_and_their_events_found() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("links");
    assert_ok(&generate(data.to_str().unwrap(), NETWORK_ARGS));

    // The link's columns, keys and labels.
    let ctx = tads_sql::session();
    let loc = tads_store::Location::parse(data.to_str().unwrap()).unwrap();
    tads_sql::register_dataset(&ctx, "t", &loc).await.unwrap();
    let schema = ctx.table("t").await.unwrap().schema().as_arrow().clone();
    for col in [
        "bandwidth_mbps",
        "latency_ms",
        "packet_loss_pct",
        "jitter_ms",
        "retransmits",
    ] {
        assert!(schema.field_with_name(col).is_ok(), "no {col}");
    }
    assert!(schema.field_with_name("cpu_pct").is_err());
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(DISTINCT host_id) FILTER (WHERE host_id LIKE 'link-%') FROM t"
        )
        .await,
        "20"
    );
    // Packet loss is a percentage, mostly near 0 on normal rows; retransmits are whole counts.
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM t WHERE packet_loss_pct < 0 OR packet_loss_pct > 100 \
             OR retransmits <> round(retransmits) OR bandwidth_mbps < 0"
        )
        .await,
        "0"
    );
    let median_loss: f64 = scalar(
        &ctx,
        "SELECT median(packet_loss_pct) FROM t WHERE NOT is_anomaly",
    )
    .await
    .parse()
    .unwrap();
    assert!(median_loss < 0.05, "median packet loss {median_loss} %");
    assert_eq!(
        scalar(
            &ctx,
            "SELECT string_agg(DISTINCT CAST(anomaly_type AS VARCHAR), ',' ORDER BY CAST(anomaly_type AS VARCHAR)) FROM t"
        )
        .await,
        "bandwidth_collapse,jitter_storm,latency_step,loss_burst"
    );

    // Per-link models, the default score, and eval on the generator's labels.
    let models = tmp.path().join("models");
    assert_ok(&train_cmd(
        "links",
        &data,
        &models,
        &["--group-by", "host_id"],
    ));
    let scores = tmp.path().join("scores");
    assert_ok(&score_cmd("links", &data, &models, &scores, &["--quiet"]));
    let text = tads()
        .args(["eval", "--scored"])
        .arg(&scores)
        .output()
        .unwrap();
    assert_ok(&text);
    let table = String::from_utf8_lossy(&text.stdout);
    println!("{table}");
    let run = tads()
        .args(["eval", "--json", "--scored"])
        .arg(&scores)
        .output()
        .unwrap();
    assert_ok(&run);
    let r: Value = serde_json::from_slice(&run.stdout).unwrap();
    for (kind, target) in TARGETS {
        let events = f(&r, &["events", kind, "events"]);
        assert!(
            events >= 20.0,
            "only {events} {kind} events: too few to judge"
        );
        let recall = f(&r, &["events", kind, "recall"]);
        assert!(
            recall >= *target,
            "{kind}: event recall {recall} < {target}\n{table}"
        );
    }
    let precision = f(&r, &["point", "precision"]);
    assert!(
        precision >= MIN_PRECISION,
        "point precision {precision}\n{table}"
    );
    let fa = f(&r, &["false_alerts_per_100_host_days"]);
    assert!(
        fa <= MAX_FALSE_ALERTS,
        "{fa} false alerts per 100 link-days\n{table}"
    );
}
