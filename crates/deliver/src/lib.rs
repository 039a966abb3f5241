//! TADS's alert delivery: alert events go to the receivers people already use, through a
//! durable local outbox, at least once and in order per alert.
//!
//! * [`AlertEvent`]: one event of an alert ([`EventKind::Opened`], [`EventKind::Updated`],
//!   [`EventKind::Resolved`]) with its host, model, severity, region and project, times, peak
//!   score, points, top metrics and expected-against-actual values. The alert id is stable
//!   over the alert's life and is every receiver's deduplication key.
//! * [`Targets`]: where they go, each optional: an Alertmanager, a webhook taking
//!   Alertmanager's webhook JSON, a Slack incoming webhook, a PagerDuty integration
//!   ([`PagerDuty`], its URL overridable).
//! * [`Outbox`]: [`Outbox::open`]`(dir, targets)`, then [`Outbox::enqueue`]`(&events)` (durable,
//!   all or nothing) and [`Outbox::deliver`]`(now)` → [`DeliveryReport`] (sent, re-sent,
//!   waiting, failed attempts, refused, set aside, the oldest waiting). [`Outbox::pending`]
//!   tells what waits without sending. [`Timing`] holds the clocks (re-send every 60 s,
//!   resolved alerts for 5 min, Slack at most one message a second, backoff 1 s doubling to
//!   5 min, 10 s per request).
//! * [`formats`]: the bodies, public so that other tools build the same ones.
//!
//! # Receivers
//!
//! * **Alertmanager** (API v2): `POST {url}/api/v2/alerts` with an array of
//!   `{labels, annotations, startsAt, endsAt, generatorURL}`. Labels `alertname="TadsAnomaly"`,
//!   `alert_id`, `host`, `model`, `severity`, and `region` and `project` when known;
//!   annotations `summary`, `peak_score`, `points`, `top_metrics`, `expected`. As Alertmanager's
//!   clients must, every firing alert is re-sent every [`Timing::resend_every`] (its `endsAt`
//!   4 times that ahead, so Alertmanager resolves it if TADS stops), and a resolved one (its
//!   `endsAt` its end) for [`Timing::resolved_for`], then forgotten. That set of alerts is kept
//!   in the outbox too. An update that changes the labels (a higher severity) resolves the
//!   alert under its old labels.
//! * **Webhook**: Alertmanager's webhook message, `"version": "4"`, one alert per message,
//!   grouped by `alert_id`, `firing` or `resolved`, with Alertmanager's own fingerprint of the
//!   labels, so receivers that parse Alertmanager's webhooks work unchanged.
//! * **Slack**: `{"text": …}`, a readable message per opened or resolved alert (updates are
//!   not sent), at most one per [`Timing::slack_gap`].
//! * **PagerDuty** (Events API v2): `trigger` for opened and updated alerts, `resolve` for
//!   resolved ones, `dedup_key` = the alert id; TADS's severity mapped to PagerDuty's.
//!
//! # Failures
//!
//! 2xx is delivered. No answer, 5xx, 408 and 429 are retried: the entry stays with one more
//! attempt and a next try after a backoff, or after the receiver's `Retry-After` if longer;
//! that receiver is left alone for the rest of the call, and an alert's later events wait
//! behind its failed one. Any other 4xx is a refusal for good: the entry is moved aside as
//! `*.failed` with the answer in a warning. An entry that cannot be read is moved aside as
//! `*.bad` with a warning, and the others go on. Nothing is dropped because a receiver failed.
//!
//! # Durability
//!
//! Every file is written to a temporary name, flushed, renamed and its directory flushed, so
//! a crash leaves the whole file or none; leftover temporary files are removed at
//! [`Outbox::open`]. An enqueue is written as one batch file first, then split into one entry
//! per receiver and event; an interrupted split is finished at the next open. A crash after a
//! receiver took an event and before the outbox noted it sends that event again: receivers
//! deduplicate by alert id (Alertmanager by labels, PagerDuty by `dedup_key`, webhooks by
//! fingerprint); Slack would show the message twice.

mod alertmanager;
mod event;
pub mod formats;
mod http;
mod outbox;
pub mod spool;
mod targets;

pub use event::{AlertEvent, EventKind, Expected};
pub use outbox::{DeliveryReport, Outbox, Pending, Spooled, inspect};
pub use targets::{PAGERDUTY_URL, PagerDuty, Target, Targets, Timing};

/// Errors of delivery: a wrong setting, or the local outbox cannot be read or written. A
/// receiver's failure is never an error (it is in the [`DeliveryReport`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL or a setting is wrong.
    #[error("{0}")]
    Config(String),
    /// The outbox's directory could not be read or written.
    #[error("{0}")]
    Outbox(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
