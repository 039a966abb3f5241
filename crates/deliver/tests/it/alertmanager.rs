//! A real Alertmanager (Debian's `prometheus-alertmanager`, which `scripts/test.sh` installs)
//! on 127.0.0.1: a TADS alert fires there, then resolves. Alertmanager's own webhook, pointed
//! at a local receiver, shows both, and its message has the keys of TADS's webhook format.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use tads_deliver::formats::{fingerprint, labels, rfc3339, webhook_message};
use tads_deliver::{EventKind, Outbox, Targets};

use crate::common::{Alertmanager, Receiver, event};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn a_real_alertmanager_sees_a_tads_alert_fire_then_resolve() {
    let hook = Receiver::start().await;
    let am = Alertmanager::start(Some(&hook.url("/am-hook"))).await;
    let base = am.base.clone();

    let targets = Targets {
        alertmanager: Some(base.clone()),
        ..Targets::default()
    };
    let mut outbox = Outbox::open(am.dir().join("outbox"), targets).unwrap();
    let mut opened = event("am-1", EventKind::Opened);
    opened.starts_at = Utc::now() - TimeDelta::minutes(10);
    outbox.enqueue(std::slice::from_ref(&opened)).unwrap();
    let r = outbox.deliver(Utc::now()).await.unwrap();
    assert_eq!((r.sent, r.waiting), (1, 0), "{r:#?}");

    // Firing, with TADS's labels and annotations and Alertmanager's own fingerprint.
    let listed = am.tads_alerts().await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let alert = &listed[0];
    let want = labels(&opened);
    for (k, v) in &want {
        assert_eq!(alert["labels"][k], v.as_str(), "label {k}: {alert:#}");
    }
    assert_eq!(keys(&alert["labels"]).len(), want.len(), "{alert:#}");
    assert_eq!(alert["labels"]["region"], "eu-west");
    assert_eq!(alert["status"]["state"], "active", "{alert:#}");
    assert_eq!(alert["fingerprint"], fingerprint(&want), "{alert:#}");
    assert_eq!(
        alert["startsAt"].as_str().map(|s| &s[..19]),
        Some(&rfc3339(opened.starts_at)[..19])
    );
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("host-0007")
    );
    assert_eq!(alert["annotations"]["top_metrics"], "cpu_user, mem_used");
    assert_eq!(
        alert["annotations"]["expected"],
        "cpu_user: expected 0.21, actual 0.97"
    );
    assert_eq!(alert["generatorURL"], "http://tads.example/alerts/am-1");

    // Alertmanager notifies its webhook: the same keys as TADS's webhook message.
    let firing = hook
        .wait_for("/am-hook", Duration::from_secs(10), |b| {
            b["status"] == "firing"
        })
        .await
        .unwrap_or_else(|| panic!("no firing notification:\n{}", am.log()));
    let ours = webhook_message(&opened);
    assert_eq!(keys(&firing), keys(&ours), "{firing:#}");
    assert_eq!(
        keys(&firing["alerts"][0]),
        keys(&ours["alerts"][0]),
        "{firing:#}"
    );
    assert_eq!(
        firing["alerts"][0]["fingerprint"],
        ours["alerts"][0]["fingerprint"]
    );
    assert_eq!(firing["alerts"][0]["labels"], ours["alerts"][0]["labels"]);
    assert_eq!(firing["version"], "4");

    // Resolved: Alertmanager no longer lists it as active, and notifies the resolution.
    let mut resolved = event("am-1", EventKind::Resolved);
    resolved.starts_at = opened.starts_at;
    resolved.ends_at = Some(Utc::now() - TimeDelta::minutes(1));
    outbox.enqueue(std::slice::from_ref(&resolved)).unwrap();
    let r = outbox.deliver(Utc::now()).await.unwrap();
    assert_eq!((r.sent, r.waiting), (1, 0), "{r:#?}");
    let listed = am.tads_alerts().await;
    assert!(
        listed.is_empty(),
        "still listed after resolution: {listed:#?}"
    );
    let done = hook
        .wait_for("/am-hook", Duration::from_secs(10), |b| {
            b["status"] == "resolved"
        })
        .await
        .unwrap_or_else(|| panic!("no resolved notification:\n{}", am.log()));
    let a = &done["alerts"][0];
    assert_eq!(a["labels"]["alert_id"], "am-1");
    assert_eq!(a["status"], "resolved");
    assert_eq!(
        a["endsAt"].as_str().map(|s| &s[..19]),
        Some(&rfc3339(resolved.ends_at.unwrap())[..19])
    );
}
