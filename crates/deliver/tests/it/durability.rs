//! The outbox on disk: reopened, it still holds what waits; damaged files and a crash's
//! leftovers do not stop the rest.

use chrono::Utc;
use serde_json::json;
use tads_deliver::{EventKind, Outbox, Target, Targets};

use crate::common::{Receiver, dead_url, event, fast, files, plus};

#[tokio::test]
async fn an_outbox_reopened_from_disk_still_holds_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    let down = dead_url().await;
    let targets = Targets {
        webhook: Some(down.clone()),
        alertmanager: Some(down),
        ..Targets::default()
    };
    let mut outbox = Outbox::open_with(dir.path(), targets, fast()).unwrap();
    let events = [
        event("a1", EventKind::Opened),
        event("a2", EventKind::Opened),
        event("a1", EventKind::Resolved),
    ];
    assert_eq!(outbox.enqueue(&events).unwrap(), 6);
    let t = Utc::now();
    let r = outbox.deliver(t).await.unwrap();
    // The webhook stops at its first failure; Alertmanager's one post of two alerts fails.
    assert_eq!((r.sent, r.failed_attempts, r.waiting), (0, 2, 5), "{r:#?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.to_lowercase().contains("connect")),
        "{r:#?}"
    );
    drop(outbox);

    // Reopened, with the receivers up now.
    let rx = Receiver::start().await;
    let targets = Targets {
        webhook: Some(rx.url("/hook")),
        alertmanager: Some(rx.url("/am")),
        ..Targets::default()
    };
    let mut outbox = Outbox::open_with(dir.path(), targets, fast()).unwrap();
    let pending = outbox.pending().unwrap();
    assert_eq!(pending.by_target[&Target::Webhook], 3);
    assert_eq!(pending.by_target[&Target::Alertmanager], 2);
    assert_eq!(pending.total(), 5);
    // The failed entry's backoff (200 ms) still holds it, a1's resolution behind it, and
    // Alertmanager's alerts.
    let r = outbox.deliver(plus(t, 100)).await.unwrap();
    assert_eq!((r.sent, r.waiting), (1, 4), "{r:#?}");
    let r = outbox.deliver(plus(t, 200)).await.unwrap();
    assert_eq!((r.sent, r.waiting), (4, 0), "{r:#?}");
    let hooks = rx.accepted("/hook");
    let order: Vec<_> = hooks
        .iter()
        .map(|h| format!("{} {}", h["groupLabels"]["alert_id"], h["status"]))
        .collect();
    assert_eq!(
        order,
        [r#""a2" "firing""#, r#""a1" "firing""#, r#""a1" "resolved""#]
    );
    let am = rx.accepted("/am/api/v2/alerts");
    assert_eq!(am.len(), 1);
    assert_eq!(am[0].as_array().unwrap().len(), 2);
    assert_eq!(outbox.pending().unwrap().total(), 0);
}

#[tokio::test]
async fn damaged_files_are_moved_aside_and_the_rest_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let targets = Targets {
        webhook: Some(dead_url().await),
        ..Targets::default()
    };
    let mut outbox = Outbox::open_with(dir.path(), targets, fast()).unwrap();
    let events = [
        event("a1", EventKind::Opened),
        event("a2", EventKind::Opened),
        event("a3", EventKind::Opened),
    ];
    outbox.enqueue(&events).unwrap();
    drop(outbox);

    let queue = dir.path().join("webhook");
    let entries = files(&queue);
    assert_eq!(entries.len(), 3, "{entries:?}");
    // A torn entry, garbage in Alertmanager's state, a crash's temporary file, and a batch
    // a crash left before it was split.
    let torn = queue.join(&entries[1]);
    let bytes = std::fs::read(&torn).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::create_dir_all(dir.path().join("alertmanager")).unwrap();
    std::fs::write(
        dir.path().join("alertmanager/active.json"),
        b"\x00\x01garbage",
    )
    .unwrap();
    std::fs::write(queue.join(".000000000009-000000.json.4242.tmp"), b"{\"ev").unwrap();
    let batch = json!({
        "enqueued_at": Utc::now(),
        "targets": ["webhook"],
        "events": [event("a4", EventKind::Opened)],
    });
    std::fs::write(
        dir.path().join("batches/000000000007.json"),
        serde_json::to_vec(&batch).unwrap(),
    )
    .unwrap();

    let rx = Receiver::start().await;
    let targets = Targets {
        webhook: Some(rx.url("/hook")),
        ..Targets::default()
    };
    let mut outbox = Outbox::open_with(dir.path(), targets, fast()).unwrap();
    assert!(files(&dir.path().join("batches")).is_empty());
    assert!(!queue.join(".000000000009-000000.json.4242.tmp").exists());
    assert!(dir.path().join("alertmanager/active.json.bad").exists());
    let r = outbox.deliver(Utc::now()).await.unwrap();
    assert_eq!((r.sent, r.set_aside, r.waiting), (3, 1, 0), "{r:#?}");
    let order: Vec<_> = rx
        .accepted("/hook")
        .iter()
        .map(|h| h["groupLabels"]["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, ["a1", "a3", "a4"]);
    assert_eq!(files(&queue), [format!("{}.bad", entries[1])]);
    // A new enqueue does not reuse the recovered batch's number.
    outbox.enqueue(&[event("a5", EventKind::Opened)]).unwrap();
    let names = files(&queue);
    assert!(
        names.iter().any(|n| n.starts_with("000000000008-")),
        "{names:?}"
    );
}
