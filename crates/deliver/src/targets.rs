//! Where alerts go, and the clocks of delivery.

use std::time::Duration;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use crate::{Error, EventKind, Result};

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// A PagerDuty Events API v2 integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagerDuty {
    /// The integration's routing key.
    pub routing_key: String,
    /// The endpoint; [`PAGERDUTY_URL`] unless overridden (tests).
    pub url: String,
}

impl PagerDuty {
    /// The integration `routing_key` at PagerDuty's endpoint.
    pub fn new(routing_key: impl Into<String>) -> Self {
        Self {
            routing_key: routing_key.into(),
            url: PAGERDUTY_URL.to_string(),
        }
    }
}

/// The receivers alerts are delivered to; each is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// An Alertmanager's base URL (`http://host:9093`); alerts go to `{url}/api/v2/alerts`.
    pub alertmanager: Option<String>,
    /// A URL that takes Alertmanager's webhook JSON.
    pub webhook: Option<String>,
    /// A Slack incoming webhook URL.
    pub slack: Option<String>,
    /// A PagerDuty integration.
    pub pagerduty: Option<PagerDuty>,
}

/// One kind of receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Alertmanager's API v2.
    Alertmanager,
    /// Alertmanager's webhook JSON.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty's Events API v2.
    Pagerduty,
}

impl Target {
    /// Every kind, in delivery order.
    pub const ALL: [Target; 4] = [
        Target::Alertmanager,
        Target::Webhook,
        Target::Slack,
        Target::Pagerduty,
    ];

    /// Its name, also its folder in the outbox.
    pub fn name(self) -> &'static str {
        match self {
            Target::Alertmanager => "alertmanager",
            Target::Webhook => "webhook",
            Target::Slack => "slack",
            Target::Pagerduty => "pagerduty",
        }
    }

    /// Whether this receiver gets events of this kind (Slack gets no updates).
    pub fn takes(self, kind: EventKind) -> bool {
        !(self == Target::Slack && kind == EventKind::Updated)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Targets {
    /// The URL each configured receiver is posted to (Alertmanager's with `/api/v2/alerts`).
    pub fn url(&self, target: Target) -> Option<String> {
        match target {
            Target::Alertmanager => self
                .alertmanager
                .as_ref()
                .map(|u| format!("{}/api/v2/alerts", u.trim_end_matches('/'))),
            Target::Webhook => self.webhook.clone(),
            Target::Slack => self.slack.clone(),
            Target::Pagerduty => self.pagerduty.as_ref().map(|p| p.url.clone()),
        }
    }

    /// The configured receivers.
    pub fn configured(&self) -> Vec<Target> {
        Target::ALL
            .into_iter()
            .filter(|t| self.url(*t).is_some())
            .collect()
    }

    /// Checks that every URL is an http(s) URL and the routing key is not empty.
    pub fn validate(&self) -> Result<()> {
        for target in self.configured() {
            let url = self.url(target).unwrap_or_default();
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| Error::Config(format!("{target}: {url:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Error::Config(format!(
                    "{target}: {url:?} is not an http or https URL"
                )));
            }
        }
        if self
            .pagerduty
            .as_ref()
            .is_some_and(|p| p.routing_key.trim().is_empty())
        {
            return Err(Error::Config("pagerduty: the routing key is empty".into()));
        }
        Ok(())
    }
}

/// The clocks of delivery; the defaults suit production, tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How often a firing alert is re-sent to Alertmanager (default 60 s). A firing alert's
    /// `endsAt` is 4 times this ahead, so Alertmanager resolves it by itself if TADS stops.
    pub resend_every: Duration,
    /// How long a resolved alert keeps being re-sent to Alertmanager (default 5 min).
    pub resolved_for: Duration,
    /// The least time between two Slack messages to one URL (default 1 s).
    pub slack_gap: Duration,
    /// The wait after a first failure; it doubles with each failure (default 1 s)…
    pub backoff_first: Duration,
    /// …up to this (default 5 min).
    pub backoff_max: Duration,
    /// The time limit of one HTTP request (default 10 s).
    pub http_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            resend_every: Duration::from_secs(60),
            resolved_for: Duration::from_secs(5 * 60),
            slack_gap: Duration::from_secs(1),
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// A std duration as chrono's (saturating).
pub(crate) fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl Timing {
    /// The wait before the next try after `attempts` failures: `backoff_first` doubling, capped
    /// at `backoff_max`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.backoff_first
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let t = Timing::default();
        let secs: Vec<u64> = [1, 2, 3, 9, 10, 100]
            .into_iter()
            .map(|a| t.backoff(a).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 256, 300, 300]);
    }

    #[test]
    fn urls_are_checked() {
        let mut t = Targets {
            alertmanager: Some("http://127.0.0.1:9093/".into()),
            ..Targets::default()
        };
        assert_eq!(
            t.url(Target::Alertmanager).unwrap(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        t.validate().unwrap();
        t.slack = Some("ftp://x".into());
        assert!(t.validate().is_err());
        t.slack = None;
        t.pagerduty = Some(PagerDuty::new(" "));
        assert!(t.validate().is_err());
    }
}
