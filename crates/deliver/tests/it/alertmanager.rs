//! A real Alertmanager (Debian's `prometheus-alertmanager`, which `scripts/test.sh` installs)
//! on 127.0.0.1: a TADS alert fires there, then resolves. Alertmanager's own webhook, pointed
//! at a local receiver, shows both, and its message has the keys of TADS's webhook format.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use tads_deliver::formats::{fingerprint, labels, rfc3339, webhook_message};
use tads_deliver::{EventKind, Outbox, Targets};

use crate::common::{Receiver, event};

fn binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus-alertmanager"))
            .find(|p| p.is_file())
    });
    let bin = found.unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus-alertmanager"));
    assert!(
        bin.is_file(),
        "prometheus-alertmanager is not installed; run scripts/test.sh, which installs it \
         (apt-get install -y prometheus-alertmanager)"
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// TADS's alerts Alertmanager lists (it lists only those not resolved).
async fn tads_alerts(base: &str) -> Vec<Value> {
    let (status, body) = get(&format!("{base}/api/v2/alerts")).await;
    assert_eq!(status, 200, "{body}");
    let all: Vec<Value> = serde_json::from_str(&body).unwrap();
    all.into_iter()
        .filter(|a| a["labels"]["alertname"] == "TadsAnomaly")
        .collect()
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
}

#[tokio::test]
async fn a_real_alertmanager_sees_a_tads_alert_fire_then_resolve() {
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start().await;
    let config = format!(
        "route:\n  receiver: local\n  group_by: ['alert_id']\n  group_wait: 100ms\n  \
         group_interval: 500ms\n  repeat_interval: 1h\n\
         receivers:\n  - name: local\n    webhook_configs:\n      - url: '{}'\n        send_resolved: true\n",
        hook.url("/am-hook")
    );
    std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
    let mut child = tokio::process::Command::new(&bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("alertmanager.yml").display()
        ))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if get(&format!("{base}/-/ready")).await.0 == 200 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("alertmanager exited ({status}):\n{}", log_of(dir.path()));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "alertmanager not ready after 30 s:\n{}",
            log_of(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let targets = Targets {
        alertmanager: Some(base.clone()),
        ..Targets::default()
    };
    let mut outbox = Outbox::open(dir.path().join("outbox"), targets).unwrap();
    let mut opened = event("am-1", EventKind::Opened);
    opened.starts_at = Utc::now() - TimeDelta::minutes(10);
    outbox.enqueue(std::slice::from_ref(&opened)).unwrap();
    let r = outbox.deliver(Utc::now()).await.unwrap();
    assert_eq!((r.sent, r.waiting), (1, 0), "{r:#?}");

    // Firing, with TADS's labels and annotations and Alertmanager's own fingerprint.
    let listed = tads_alerts(&base).await;
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
        .unwrap_or_else(|| panic!("no firing notification:\n{}", log_of(dir.path())));
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
    let listed = tads_alerts(&base).await;
    assert!(
        listed.is_empty(),
        "still listed after resolution: {listed:#?}"
    );
    let done = hook
        .wait_for("/am-hook", Duration::from_secs(10), |b| {
            b["status"] == "resolved"
        })
        .await
        .unwrap_or_else(|| panic!("no resolved notification:\n{}", log_of(dir.path())));
    let a = &done["alerts"][0];
    assert_eq!(a["labels"]["alert_id"], "am-1");
    assert_eq!(a["status"], "resolved");
    assert_eq!(
        a["endsAt"].as_str().map(|s| &s[..19]),
        Some(&rfc3339(resolved.ends_at.unwrap())[..19])
    );

    child.kill().await.unwrap();
}
