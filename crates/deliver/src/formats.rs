//! The bodies each receiver gets, built from an [`AlertEvent`]. Public so that other tools
//! (and tests) build exactly what the outbox sends.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::{AlertEvent, EventKind};

/// The `alertname` label of every TADS alert.
pub const ALERTNAME: &str = "TadsAnomaly";

/// The `receiver` named in webhook messages.
pub const WEBHOOK_RECEIVER: &str = "tads";

/// Alertmanager's "no time" (Go's zero time), the `endsAt` of a firing alert in its webhooks.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A time as RFC 3339 in UTC, as Alertmanager writes them.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The alert's identifying labels: `alertname="TadsAnomaly"`, `alert_id`, `host`, `model`,
/// `severity`, and `region` and `project` when known (an empty value is left out, as
/// Alertmanager treats it as absent).
pub fn labels(ev: &AlertEvent) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut add = |name: &str, value: &str| {
        if !value.is_empty() {
            labels.insert(name.to_string(), value.to_string());
        }
    };
    add("alertname", ALERTNAME);
    add("alert_id", &ev.alert_id);
    add("host", &ev.host);
    add("model", &ev.model);
    add("severity", &ev.severity);
    add("region", ev.region.as_deref().unwrap_or(""));
    add("project", ev.project.as_deref().unwrap_or(""));
    labels
}

/// The labels' fingerprint as Alertmanager computes it (Prometheus's `LabelSet.Fingerprint`:
/// FNV-1a 64 over the sorted names and values, each followed by 0xff), as 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf29ce484222325;
    const PRIME: u64 = 0x100000001b3;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    // A BTreeMap iterates in byte order of the names, as Go's sort of label names does.
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{hash:016x}")
}

/// A number for people: at most three decimals, no trailing zeros, whole above 1000.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.abs() >= 1000.0 {
        return format!("{x:.0}");
    }
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// One line: "Anomaly on HOST (model M): peak score P over N points; top metrics: a, b".
pub fn summary(ev: &AlertEvent) -> String {
    let mut s = format!(
        "Anomaly on {} (model {}): peak score {} over {} points",
        ev.host,
        ev.model,
        num(ev.peak_score),
        ev.points
    );
    if !ev.top_metrics.is_empty() {
        s.push_str("; top metrics: ");
        s.push_str(&ev.top_metrics.join(", "));
    }
    s
}

/// "cpu: expected 0.41, actual 0.97; mem: …", or `None` when the model gives none.
pub fn expected_text(ev: &AlertEvent) -> Option<String> {
    (!ev.expected.is_empty()).then(|| {
        ev.expected
            .iter()
            .map(|e| {
                format!(
                    "{}: expected {}, actual {}",
                    e.metric,
                    num(e.expected),
                    num(e.actual)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The annotations: `summary`, `peak_score`, `points`, and `top_metrics` and `expected` when
/// given.
pub fn annotations(ev: &AlertEvent) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("summary".to_string(), summary(ev));
    a.insert("peak_score".to_string(), num(ev.peak_score));
    a.insert("points".to_string(), ev.points.to_string());
    if !ev.top_metrics.is_empty() {
        a.insert("top_metrics".to_string(), ev.top_metrics.join(", "));
    }
    if let Some(e) = expected_text(ev) {
        a.insert("expected".to_string(), e);
    }
    a
}

/// One alert of Alertmanager's API v2 (`POST /api/v2/alerts` takes an array of them), ending
/// at `ends_at` (in the future for a firing alert, so that Alertmanager resolves it by itself
/// if TADS stops re-sending).
pub fn alertmanager_alert(ev: &AlertEvent, ends_at: DateTime<Utc>) -> Value {
    let mut alert = Map::new();
    alert.insert("labels".into(), json!(labels(ev)));
    alert.insert("annotations".into(), json!(annotations(ev)));
    alert.insert("startsAt".into(), json!(rfc3339(ev.starts_at)));
    alert.insert("endsAt".into(), json!(rfc3339(ends_at)));
    if let Some(url) = &ev.generator_url {
        alert.insert("generatorURL".into(), json!(url));
    }
    Value::Object(alert)
}

/// `firing`, or `resolved` for a resolved event.
fn status(ev: &AlertEvent) -> &'static str {
    if ev.kind == EventKind::Resolved {
        "resolved"
    } else {
        "firing"
    }
}

/// Alertmanager's webhook message (version 4) for one event: a group of one alert, grouped by
/// `alert_id`, `firing` or `resolved`. A firing alert's `endsAt` is Go's zero time, as
/// Alertmanager sends it; the fingerprint is [`fingerprint`] of the labels.
pub fn webhook_message(ev: &AlertEvent) -> Value {
    let labels = labels(ev);
    let annotations = annotations(ev);
    let ends_at = match (ev.kind, ev.ends_at) {
        (EventKind::Resolved, Some(t)) => rfc3339(t),
        _ => ZERO_TIME.to_string(),
    };
    let generator = ev.generator_url.clone().unwrap_or_default();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alert_id={:?}}}", ev.alert_id),
        "truncatedAlerts": 0,
        "status": status(ev),
        "receiver": WEBHOOK_RECEIVER,
        "groupLabels": { "alert_id": ev.alert_id },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": generator,
        "alerts": [{
            "status": status(ev),
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(ev.starts_at),
            "endsAt": ends_at,
            "generatorURL": generator,
            "fingerprint": fingerprint(&labels),
        }],
    })
}

/// The text of a Slack message, or `None` for an [`EventKind::Updated`] event (Slack gets
/// only opened and resolved alerts).
pub fn slack_text(ev: &AlertEvent) -> Option<String> {
    let head = match ev.kind {
        EventKind::Opened => ":rotating_light: *TADS anomaly opened*",
        EventKind::Resolved => ":white_check_mark: *TADS anomaly resolved*",
        EventKind::Updated => return None,
    };
    let mut where_ = format!("host `{}`", ev.host);
    for (name, value) in [("region", &ev.region), ("project", &ev.project)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            where_.push_str(&format!(", {name} `{v}`"));
        }
    }
    let mut text = format!(
        "{head}: {where_}, model `{}`, severity *{}*\npeak score {} over {} points",
        ev.model,
        ev.severity,
        num(ev.peak_score),
        ev.points
    );
    if !ev.top_metrics.is_empty() {
        text.push_str(&format!("; top metrics: {}", ev.top_metrics.join(", ")));
    }
    if let Some(e) = expected_text(ev) {
        text.push_str(&format!("\n{e}"));
    }
    text.push_str(&format!("\nstarted {}", rfc3339(ev.starts_at)));
    if let (EventKind::Resolved, Some(end)) = (ev.kind, ev.ends_at) {
        text.push_str(&format!(", ended {}", rfc3339(end)));
    }
    if let Some(url) = &ev.generator_url {
        text.push_str(&format!("\n<{url}|details>"));
    }
    text.push_str(&format!(" (alert `{}`)", ev.alert_id));
    Some(text)
}

/// A Slack incoming webhook's body, `{"text": …}`, or `None` for an updated event.
pub fn slack_message(ev: &AlertEvent) -> Option<Value> {
    slack_text(ev).map(|text| json!({ "text": text }))
}

/// PagerDuty's severity for TADS's: `critical`, `error`, `warning` or `info` (anything
/// unknown is `warning`, so that it is seen).
pub fn pagerduty_severity(severity: &str) -> &'static str {
    match severity.to_ascii_lowercase().as_str() {
        "critical" | "crit" | "fatal" | "page" => "critical",
        "error" | "err" | "major" | "high" => "error",
        "info" | "informational" | "low" | "minor" | "none" => "info",
        _ => "warning",
    }
}

/// A PagerDuty Events API v2 event: `trigger` (opened or updated, with the details) or
/// `resolve`, under `dedup_key` = the alert id.
pub fn pagerduty_event(ev: &AlertEvent, routing_key: &str) -> Value {
    if ev.kind == EventKind::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": ev.alert_id,
        });
    }
    // PagerDuty truncates at 1024 characters; cut on a character boundary.
    let summary: String = summary(ev).chars().take(1024).collect();
    let mut details = Map::new();
    details.insert("alert_id".into(), json!(ev.alert_id));
    details.insert("severity".into(), json!(ev.severity));
    details.insert("peak_score".into(), json!(ev.peak_score));
    details.insert("points".into(), json!(ev.points));
    details.insert("starts_at".into(), json!(rfc3339(ev.starts_at)));
    details.insert("top_metrics".into(), json!(ev.top_metrics));
    if !ev.expected.is_empty() {
        details.insert("expected".into(), json!(ev.expected));
    }
    for (name, value) in [("region", &ev.region), ("project", &ev.project)] {
        if let Some(v) = value {
            details.insert(name.into(), json!(v));
        }
    }
    let mut payload = Map::new();
    payload.insert("summary".into(), json!(summary));
    payload.insert("source".into(), json!(ev.host));
    payload.insert("severity".into(), json!(pagerduty_severity(&ev.severity)));
    payload.insert("timestamp".into(), json!(rfc3339(ev.starts_at)));
    payload.insert("component".into(), json!(ev.model));
    if let Some(p) = &ev.project {
        payload.insert("group".into(), json!(p));
    }
    payload.insert("class".into(), json!("anomaly"));
    payload.insert("custom_details".into(), Value::Object(details));
    let mut event = Map::new();
    event.insert("routing_key".into(), json!(routing_key));
    event.insert("event_action".into(), json!("trigger"));
    event.insert("dedup_key".into(), json!(ev.alert_id));
    event.insert("payload".into(), Value::Object(payload));
    event.insert("client".into(), json!("TADS"));
    if let Some(url) = &ev.generator_url {
        event.insert("client_url".into(), json!(url));
    }
    Value::Object(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_prometheus_fnv1a() {
        // The empty label set hashes to the FNV-1a offset basis, as in Prometheus.
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        let one = BTreeMap::from([("a".to_string(), "b".to_string())]);
        assert_eq!(fingerprint(&one).len(), 16);
        assert_ne!(fingerprint(&one), fingerprint(&BTreeMap::new()));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(12.3), "12.3");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(0.41234), "0.412");
        assert_eq!(num(12345.6), "12346");
        assert_eq!(num(-0.0001), "0");
    }

    #[test]
    fn severities_map_to_pagerduty() {
        assert_eq!(pagerduty_severity("critical"), "critical");
        assert_eq!(pagerduty_severity("warning"), "warning");
        assert_eq!(pagerduty_severity("info"), "info");
        assert_eq!(pagerduty_severity("Error"), "error");
        assert_eq!(pagerduty_severity("weird"), "warning");
    }
}
