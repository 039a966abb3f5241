//! Webhook, Slack, PagerDuty and Alertmanager's re-sends against a local receiver that fails
//! some requests on purpose.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tads_deliver::formats::{ZERO_TIME, fingerprint, labels, rfc3339};
use tads_deliver::{EventKind, Outbox, PagerDuty, Targets};

use crate::common::{Receiver, Reply, event, fast, files, plus};

fn ids(bodies: &[Value], pointer: &str) -> Vec<String> {
    bodies
        .iter()
        .map(|b| {
            b.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

/// No body was taken twice.
fn all_distinct(bodies: &[Value]) {
    let set: HashSet<String> = bodies.iter().map(Value::to_string).collect();
    assert_eq!(
        set.len(),
        bodies.len(),
        "a body was delivered twice: {bodies:#?}"
    );
}

#[tokio::test]
async fn webhook_slack_and_pagerduty_get_their_formats_in_order_through_failures() {
    let rx = Receiver::start().await;
    rx.plan("/hook", [Reply::status(500, "boom")]);
    rx.plan("/slack", [Reply::too_many(1)]);
    let dir = tempfile::tempdir().unwrap();
    let targets = Targets {
        webhook: Some(rx.url("/hook")),
        slack: Some(rx.url("/slack")),
        pagerduty: Some(PagerDuty {
            routing_key: "R0UT1NG".into(),
            url: rx.url("/pd"),
        }),
        ..Targets::default()
    };
    let mut outbox = Outbox::open_with(dir.path(), targets, fast()).unwrap();
    let events = [
        event("a1", EventKind::Opened),
        event("a2", EventKind::Opened),
        event("a1", EventKind::Updated),
        event("a1", EventKind::Resolved),
    ];
    // 4 for the webhook, 3 for Slack (no update), 4 for PagerDuty.
    assert_eq!(outbox.enqueue(&events).unwrap(), 11);

    // 1. The webhook answers 500 and Slack 429: both wait; PagerDuty takes all four.
    let now = Utc::now();
    let r = outbox.deliver(now).await.unwrap();
    assert_eq!((r.sent, r.failed_attempts, r.waiting), (4, 2, 7), "{r:#?}");
    assert!(r.oldest_waiting.is_some());
    assert!(
        r.errors
            .iter()
            .any(|e| e.starts_with("webhook:") && e.contains("500")),
        "{r:#?}"
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.starts_with("slack:") && e.contains("429")),
        "{r:#?}"
    );
    let pd = rx.accepted("/pd");
    assert_eq!(
        ids(&pd, "/event_action"),
        ["trigger", "trigger", "trigger", "resolve"]
    );
    assert_eq!(ids(&pd, "/dedup_key"), ["a1", "a2", "a1", "a1"]);
    let trigger = &pd[0];
    assert_eq!(trigger["routing_key"], "R0UT1NG");
    assert_eq!(trigger["payload"]["source"], "host-0007");
    assert_eq!(trigger["payload"]["component"], "fleet-pca");
    assert_eq!(trigger["payload"]["severity"], "warning");
    assert_eq!(trigger["payload"]["timestamp"], "2024-05-01T10:00:00Z");
    assert!(
        trigger["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("host-0007")
    );
    assert_eq!(trigger["payload"]["custom_details"]["peak_score"], 7.5);
    assert_eq!(
        pd[3],
        json!({"routing_key": "R0UT1NG", "event_action": "resolve", "dedup_key": "a1"})
    );

    // 2. Soon after: a1's first webhook event is not due yet, so a1 waits behind it; a2 goes.
    // Slack is held by its Retry-After.
    let r = outbox.deliver(plus(now, 100)).await.unwrap();
    assert_eq!((r.sent, r.failed_attempts, r.waiting), (1, 0, 6), "{r:#?}");
    assert_eq!(ids(&rx.accepted("/hook"), "/groupLabels/alert_id"), ["a2"]);
    assert_eq!(rx.requests("/slack").len(), 1);

    // 3. After the Retry-After: everything goes, in order per alert, Slack one a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = outbox.deliver(plus(now, 1500)).await.unwrap();
    assert_eq!((r.sent, r.failed_attempts, r.waiting), (6, 0, 0), "{r:#?}");
    assert_eq!(r.oldest_waiting, None);
    assert_eq!(outbox.pending().unwrap().total(), 0);

    let hooks = rx.accepted("/hook");
    assert_eq!(
        ids(&hooks, "/groupLabels/alert_id"),
        ["a2", "a1", "a1", "a1"]
    );
    assert_eq!(
        ids(&hooks, "/status"),
        ["firing", "firing", "firing", "resolved"]
    );
    let h = &hooks[1];
    assert_eq!(h["version"], "4");
    assert_eq!(h["receiver"], "tads");
    assert_eq!(h["groupKey"], "{}:{alert_id=\"a1\"}");
    assert_eq!(h["truncatedAlerts"], 0);
    assert_eq!(h["externalURL"], "http://tads.example/alerts/a1");
    assert_eq!(h["commonLabels"]["alertname"], "TadsAnomaly");
    assert_eq!(h["commonLabels"]["region"], "eu-west");
    assert_eq!(h["commonLabels"]["project"], "checkout");
    assert_eq!(h["commonAnnotations"]["top_metrics"], "cpu_user, mem_used");
    assert_eq!(
        h["commonAnnotations"]["expected"],
        "cpu_user: expected 0.21, actual 0.97"
    );
    let alert = &h["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["startsAt"], "2024-05-01T10:00:00Z");
    assert_eq!(alert["endsAt"], ZERO_TIME);
    assert_eq!(alert["generatorURL"], "http://tads.example/alerts/a1");
    let fp = fingerprint(&labels(&event("a1", EventKind::Opened)));
    assert_eq!(alert["fingerprint"], fp);
    assert_eq!(alert["labels"], h["commonLabels"]);
    let resolved = &hooks[3]["alerts"][0];
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["endsAt"], "2024-05-01T10:30:00Z");
    assert_eq!(resolved["annotations"]["peak_score"], "9.25");

    let slack = rx.requests("/slack");
    let texts: Vec<&str> = slack
        .iter()
        .skip(1)
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 3, "{texts:#?}");
    assert!(
        texts[0].contains("opened") && texts[0].contains("`a1`"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].contains("opened") && texts[1].contains("`a2`"),
        "{}",
        texts[1]
    );
    assert!(
        texts[2].contains("resolved") && texts[2].contains("`a1`"),
        "{}",
        texts[2]
    );
    for needle in [
        "host-0007",
        "fleet-pca",
        "warning",
        "peak score 7.5",
        "cpu_user",
        "2024-05-01T10:00:00Z",
    ] {
        assert!(texts[0].contains(needle), "{needle} not in {}", texts[0]);
    }
    assert!(
        texts[2].contains("ended 2024-05-01T10:30:00Z"),
        "{}",
        texts[2]
    );
    for pair in slack.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "two Slack posts {gap:?} apart"
        );
    }

    // Nothing twice; the failed requests were the planned ones only.
    for path in ["/hook", "/slack", "/pd"] {
        all_distinct(&rx.accepted(path));
    }
    assert_eq!(rx.requests("/hook").len(), 5);
    assert_eq!(rx.requests("/pd").len(), 4);

    // 4. Nothing is left to send.
    let r = outbox.deliver(plus(now, 60_000)).await.unwrap();
    assert_eq!((r.sent, r.resent, r.waiting), (0, 0, 0), "{r:#?}");
    assert_eq!(rx.requests("/hook").len() + rx.requests("/slack").len(), 9);
    for sub in ["webhook", "slack", "pagerduty", "batches"] {
        assert!(
            files(&dir.path().join(sub)).is_empty(),
            "{sub}: {:?}",
            files(&dir.path().join(sub))
        );
    }
}

#[tokio::test]
async fn a_refusal_for_good_moves_the_entry_aside_and_the_rest_go_on() {
    let rx = Receiver::start().await;
    rx.plan("/hook", [Reply::status(400, "bad payload: no such field")]);
    // Alertmanager refuses the batch of two; one at a time, it refuses the first only.
    rx.plan(
        "/am/api/v2/alerts",
        [
            Reply::status(400, "bad"),
            Reply::status(400, "start time must be before end time"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let targets = Targets {
        webhook: Some(rx.url("/hook")),
        alertmanager: Some(rx.url("/am")),
        ..Targets::default()
    };
    let mut outbox = Outbox::open_with(dir.path(), targets, fast()).unwrap();
    outbox
        .enqueue(&[
            event("a1", EventKind::Opened),
            event("a1", EventKind::Resolved),
        ])
        .unwrap();
    outbox.enqueue(&[event("b1", EventKind::Opened)]).unwrap();
    let r = outbox.deliver(Utc::now()).await.unwrap();
    // The webhook: a1 opened refused, a1 resolved and b1 opened taken. Alertmanager: one of
    // a1 and b1 refused, the other taken.
    assert_eq!(
        (r.sent, r.rejected, r.waiting, r.failed_attempts),
        (3, 2, 0, 0),
        "{r:#?}"
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("bad payload: no such field")),
        "{r:#?}"
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("start time must be before end time")),
        "{r:#?}"
    );
    let failed = files(&dir.path().join("webhook"));
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].ends_with(".json.failed"), "{failed:?}");
    let hooks = rx.accepted("/hook");
    assert_eq!(ids(&hooks, "/status"), ["resolved", "firing"]);
    let am = rx.accepted("/am/api/v2/alerts");
    assert_eq!(am.len(), 1);
    assert_eq!(am[0].as_array().unwrap().len(), 1);
    let taken = am[0][0]["labels"]["alert_id"].as_str().unwrap();
    let refused = if taken == "a1" { "b1" } else { "a1" };
    let aside: Vec<String> = files(&dir.path().join("alertmanager"))
        .into_iter()
        .filter(|f| f.ends_with(".json.failed"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let kept = std::fs::read_to_string(dir.path().join("alertmanager").join(&aside[0])).unwrap();
    assert!(
        kept.contains(&format!("\"alert_id\":\"{refused}\"")),
        "{kept}"
    );
    assert_eq!(outbox.pending().unwrap().alertmanager_active, 1);
    // A refused entry is never tried again.
    let before = rx.requests("/hook").len();
    let r = outbox.deliver(plus(Utc::now(), 10_000)).await.unwrap();
    assert_eq!((r.sent, r.rejected), (0, 0), "{r:#?}");
    assert_eq!(rx.requests("/hook").len(), before);
}

#[tokio::test]
async fn alertmanager_hears_firing_alerts_every_interval_and_resolved_ones_for_a_while() {
    let rx = Receiver::start().await;
    let path = "/am/api/v2/alerts";
    rx.plan(path, [Reply::status(503, "not ready")]);
    let dir = tempfile::tempdir().unwrap();
    let targets = Targets {
        alertmanager: Some(rx.url("/am/")),
        ..Targets::default()
    };
    let mut outbox = Outbox::open_with(dir.path(), targets.clone(), fast()).unwrap();
    outbox.enqueue(&[event("a1", EventKind::Opened)]).unwrap();
    let t = Utc::now();

    // A 503 first: it waits, then goes after the backoff (200 ms).
    let r = outbox.deliver(t).await.unwrap();
    assert_eq!((r.sent, r.failed_attempts, r.waiting), (0, 1, 1), "{r:#?}");
    let r = outbox.deliver(plus(t, 100)).await.unwrap();
    assert_eq!((r.sent, r.waiting), (0, 1), "{r:#?}");
    assert_eq!(rx.requests(path).len(), 1);
    let r = outbox.deliver(plus(t, 200)).await.unwrap();
    assert_eq!((r.sent, r.resent, r.waiting), (1, 0, 0), "{r:#?}");
    let firing = &rx.accepted(path)[0][0];
    assert_eq!(firing["labels"]["alertname"], "TadsAnomaly");
    assert_eq!(firing["labels"]["alert_id"], "a1");
    assert_eq!(firing["startsAt"], "2024-05-01T10:00:00Z");
    // Firing: it ends 4 re-send intervals ahead, so Alertmanager resolves it if TADS stops.
    assert_eq!(firing["endsAt"], rfc3339(plus(t, 200 + 800)));
    assert_eq!(firing["generatorURL"], "http://tads.example/alerts/a1");
    assert_eq!(firing["annotations"]["points"], "3");

    // Re-sent every 200 ms, not before.
    let r = outbox.deliver(plus(t, 300)).await.unwrap();
    assert_eq!((r.sent, r.resent), (0, 0));
    let r = outbox.deliver(plus(t, 400)).await.unwrap();
    assert_eq!((r.sent, r.resent), (0, 1));

    // A reopened outbox remembers what Alertmanager is told about.
    drop(outbox);
    let mut outbox = Outbox::open_with(dir.path(), targets, fast()).unwrap();
    assert_eq!(outbox.pending().unwrap().alertmanager_active, 1);

    // The severity rises: the alert under the old labels is resolved, the new one fires.
    let mut critical = event("a1", EventKind::Updated);
    critical.severity = "critical".into();
    outbox.enqueue(&[critical.clone()]).unwrap();
    let r = outbox.deliver(plus(t, 450)).await.unwrap();
    assert_eq!((r.sent, r.resent), (2, 0), "{r:#?}");
    let both = rx.accepted(path).pop().unwrap();
    let by_severity = |s: &str| {
        both.as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["severity"] == s)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_severity("warning")["endsAt"], rfc3339(plus(t, 450)));
    assert_eq!(
        by_severity("critical")["endsAt"],
        rfc3339(plus(t, 450 + 800))
    );

    // Resolved: sent at once, then every 200 ms for 600 ms, then forgotten.
    let mut resolved = event("a1", EventKind::Resolved);
    resolved.severity = "critical".into();
    outbox.enqueue(&[resolved]).unwrap();
    let before = rx.requests(path).len();
    let r = outbox.deliver(plus(t, 500)).await.unwrap();
    assert_eq!((r.sent, r.resent), (1, 0), "{r:#?}");
    let last = rx.accepted(path).pop().unwrap();
    assert_eq!(last.as_array().unwrap().len(), 1, "{last:#}");
    assert_eq!(last[0]["endsAt"], "2024-05-01T10:30:00Z");
    // The old labels, resolved at 450, are forgotten after 1050; the new ones after 1100.
    let mut resent = 0;
    for ms in [700, 900, 1100, 1300, 1500, 3000] {
        let r = outbox.deliver(plus(t, ms)).await.unwrap();
        assert_eq!(r.sent, 0);
        resent += r.resent;
    }
    // 700: both; 900: both; 1100: both (the last time); nothing after.
    assert_eq!(resent, 6);
    assert_eq!(rx.requests(path).len(), before + 4);
    assert_eq!(outbox.pending().unwrap().alertmanager_active, 0);
}
