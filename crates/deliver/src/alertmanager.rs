//! Alertmanager's side: not a queue but the set of alerts it must keep hearing about.
//!
//! Alertmanager's clients re-send every firing alert periodically and a resolved one for a while
//! (so that a restarted or newly clustered Alertmanager learns it). The outbox keeps that set
//! durably in `alertmanager/active.json`, keyed by the labels' fingerprint: an event replaces
//! its alert's state, and the next [`crate::Outbox::deliver`] sends it at once; then every
//! [`crate::Timing::resend_every`] while firing, and for [`crate::Timing::resolved_for`] after
//! it resolved, after which it is forgotten.
//!
//! An update that changes the labels (the severity rises) is a new Alertmanager alert: the
//! alert under the old labels is resolved at the next delivery, so it does not linger.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::formats::{alertmanager_alert, fingerprint, labels};
use crate::targets::delta;
use crate::{AlertEvent, EventKind, Timing};

/// One alert Alertmanager is told about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Active {
    /// The latest event.
    pub event: AlertEvent,
    /// A later event of the same alert came with other labels: this labelset is resolved.
    #[serde(default)]
    pub superseded: bool,
    /// Since when it is resolved (set at the first delivery that sees it resolved).
    #[serde(default)]
    pub resolved_since: Option<DateTime<Utc>>,
    /// Its latest state has not reached Alertmanager yet.
    pub changed: bool,
    /// When the latest state was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// Failed sends in a row.
    #[serde(default)]
    pub attempts: u32,
    /// When it is next due (`None`: now).
    #[serde(default)]
    pub next_send: Option<DateTime<Utc>>,
    /// When Alertmanager last took it.
    #[serde(default)]
    pub last_sent: Option<DateTime<Utc>>,
}

impl Active {
    /// Resolved, by its event or because its labels were superseded.
    pub fn resolved(&self) -> bool {
        self.superseded || self.event.kind == EventKind::Resolved
    }

    /// What is posted at `now`: a firing alert ends `4 × resend_every` ahead (as Prometheus
    /// does), a resolved one at its end (never later than now, never before its start).
    pub fn postable(&self, now: DateTime<Utc>, timing: &Timing) -> Value {
        let start = self.event.starts_at;
        let ends_at = if self.resolved() {
            let since = self.resolved_since.unwrap_or(now);
            let end = match (self.superseded, self.event.ends_at) {
                (false, Some(end)) => end.min(now),
                _ => since,
            };
            end.max(start)
        } else {
            now.max(start) + delta(timing.resend_every * 4)
        };
        alertmanager_alert(&self.event, ends_at)
    }

    /// Due at `now`.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        self.next_send.is_none_or(|t| t <= now)
    }
}

/// The alerts Alertmanager is told about, by fingerprint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ActiveSet {
    pub alerts: BTreeMap<String, Active>,
}

impl ActiveSet {
    /// Takes an event in: it replaces its alert's state and is due now; the same alert under
    /// other labels, still firing, is resolved.
    pub fn merge(&mut self, ev: &AlertEvent, enqueued_at: DateTime<Utc>) {
        let fp = fingerprint(&labels(ev));
        for (other, a) in self.alerts.iter_mut() {
            if *other != fp && a.event.alert_id == ev.alert_id && !a.resolved() {
                a.superseded = true;
                a.changed = true;
                a.next_send = None;
                a.enqueued_at = enqueued_at;
            }
        }
        let fresh = Active {
            event: ev.clone(),
            superseded: false,
            resolved_since: None,
            changed: true,
            enqueued_at,
            attempts: 0,
            next_send: None,
            last_sent: None,
        };
        match self.alerts.get_mut(&fp) {
            Some(a) => {
                let was_resolved = a.resolved();
                a.event = ev.clone();
                a.superseded = false;
                a.changed = true;
                a.next_send = None;
                a.enqueued_at = enqueued_at;
                if was_resolved && !a.resolved() {
                    a.resolved_since = None;
                }
            }
            None => {
                self.alerts.insert(fp, fresh);
            }
        }
    }
}
