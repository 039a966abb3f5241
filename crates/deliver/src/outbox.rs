//! The durable outbox: what must be sent waits on local disk until a receiver took it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alertmanager::ActiveSet;
use crate::formats::{pagerduty_event, slack_message, webhook_message};
use crate::http::{Outcome, post};
use crate::spool;
use crate::targets::delta;
use crate::{AlertEvent, Error, Result, Target, Targets, Timing};

/// The folder of enqueued batches not yet split into entries.
const BATCHES: &str = "batches";
/// Alertmanager's state file, in its folder.
const ACTIVE: &str = "active.json";

/// One `enqueue` call, written whole before it is split into one entry per receiver and
/// event: the commit point that makes an enqueue all or nothing.
#[derive(Debug, Serialize, Deserialize)]
struct Batch {
    enqueued_at: DateTime<Utc>,
    targets: Vec<Target>,
    events: Vec<AlertEvent>,
}

/// One event waiting for one receiver.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    event: AlertEvent,
    enqueued_at: DateTime<Utc>,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    next_try: Option<DateTime<Utc>>,
    #[serde(default)]
    last_error: Option<String>,
}

/// What one [`Outbox::deliver`] did, and what still waits.
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct DeliveryReport {
    /// Events a receiver took now (for Alertmanager: alerts whose latest state it took).
    pub sent: usize,
    /// Alertmanager's periodic re-sends of alerts it already had.
    pub resent: usize,
    /// Events still waiting (failed before, not due yet, behind an earlier event of the same
    /// alert, or their receiver is not configured).
    pub waiting: usize,
    /// Requests that failed in a way worth retrying (no answer, 5xx, 408, 429).
    pub failed_attempts: usize,
    /// Events a receiver refused for good (4xx): moved aside as `*.failed`.
    pub rejected: usize,
    /// Unreadable files moved aside as `*.bad`.
    pub set_aside: usize,
    /// When the oldest waiting event was enqueued.
    pub oldest_waiting: Option<DateTime<Utc>>,
    /// One line per failure or refusal, prefixed by the receiver (`slack: HTTP 500 …`).
    pub errors: Vec<String>,
}

impl DeliveryReport {
    fn wait(&mut self, enqueued_at: DateTime<Utc>) {
        self.waiting += 1;
        self.oldest_waiting = Some(
            self.oldest_waiting
                .map_or(enqueued_at, |o| o.min(enqueued_at)),
        );
    }
}

/// A durable queue of alert events for the configured receivers, in a local directory:
///
/// ```text
/// DIR/batches/NNNNNNNNNNNN.json        an enqueue, split into entries right away
/// DIR/{webhook,slack,pagerduty}/NNNNNNNNNNNN-IIIIIIIII.json   one event for one receiver
/// DIR/alertmanager/active.json         the alerts Alertmanager is told about
/// …/*.bad, …/*.failed                  unreadable, and refused for good: kept for a look
/// ```
///
/// One process uses a directory at a time.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    targets: Targets,
    timing: Timing,
    client: reqwest::Client,
    next_seq: u64,
    active: ActiveSet,
    /// When each receiver was last posted to (Slack's pacing).
    last_post: HashMap<Target, Instant>,
    /// A receiver's `Retry-After`, in real time.
    hold: HashMap<Target, Instant>,
}

/// The sequence number a batch or entry file name starts with.
fn seq_of(name: &str) -> Option<u64> {
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Outbox {
    /// Opens (creating it if needed) the outbox in `dir` for `targets`, with the default
    /// [`Timing`]. Removes temporary files a crash left and finishes splitting an enqueue a
    /// crash interrupted.
    pub fn open(dir: impl Into<PathBuf>, targets: Targets) -> Result<Self> {
        Self::open_with(dir, targets, Timing::default())
    }

    /// [`Outbox::open`] with other clocks.
    pub fn open_with(dir: impl Into<PathBuf>, targets: Targets, timing: Timing) -> Result<Self> {
        let dir = dir.into();
        targets.validate()?;
        let client = reqwest::Client::builder()
            .timeout(timing.http_timeout)
            .user_agent(concat!("tads/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build an HTTP client: {e}")))?;
        let mut outbox = Self {
            dir,
            targets,
            timing,
            client,
            next_seq: 1,
            active: ActiveSet::default(),
            last_post: HashMap::new(),
            hold: HashMap::new(),
        };
        let shown = outbox_dir(&outbox.dir);
        let io = |what: &str, e: std::io::Error| outbox_err(&shown, what, e);
        std::fs::create_dir_all(&outbox.dir).map_err(|e| io("cannot create it", e))?;
        let mut folders = vec![outbox.dir.join(BATCHES)];
        folders.extend(Target::ALL.iter().map(|t| outbox.dir.join(t.name())));
        for folder in &folders {
            spool::clean_temps(folder).map_err(|e| io("cannot clean it", e))?;
            // Files moved aside count too: a new entry never takes their names.
            for name in spool::names(folder).map_err(|e| io("cannot list it", e))? {
                outbox.next_seq = outbox.next_seq.max(seq_of(&name).unwrap_or(0) + 1);
            }
        }
        outbox.active = outbox.load_active()?;
        for path in spool::list_json(&folders[0]).map_err(|e| io("cannot list it", e))? {
            match spool::read_json::<Batch>(&path) {
                Ok(batch) => {
                    let name = path.file_name().unwrap_or_default().to_string_lossy();
                    let seq = seq_of(&name).unwrap_or(0);
                    outbox.split(seq, &path, &batch)?;
                }
                Err(why) => {
                    spool::set_aside(&path, "bad", &format!("not a TADS batch: {why}"))
                        .map_err(|e| io("cannot move a bad batch aside", e))?;
                }
            }
        }
        Ok(outbox)
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The receivers it delivers to.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        outbox_err(&outbox_dir(&self.dir), what, e)
    }

    fn load_active(&self) -> Result<ActiveSet> {
        let path = self.dir.join(Target::Alertmanager.name()).join(ACTIVE);
        if !path.exists() {
            return Ok(ActiveSet::default());
        }
        match spool::read_json(&path) {
            Ok(set) => Ok(set),
            Err(why) => {
                spool::set_aside(
                    &path,
                    "bad",
                    &format!("not TADS's Alertmanager state: {why}"),
                )
                .map_err(|e| self.err("cannot move a bad state aside", e))?;
                Ok(ActiveSet::default())
            }
        }
    }

    fn save_active(&self) -> Result<()> {
        let path = self.dir.join(Target::Alertmanager.name()).join(ACTIVE);
        spool::write_json(&path, &self.active)
            .map_err(|e| self.err("cannot write Alertmanager's state", e))
    }

    /// Keeps `events` for every configured receiver (Slack only opened and resolved ones):
    /// all of them or, after a crash, none. Returns how many deliveries were queued. With no
    /// receiver configured, nothing is kept.
    ///
    /// Events of one alert are delivered to each receiver in the order they were enqueued.
    pub fn enqueue(&mut self, events: &[AlertEvent]) -> Result<usize> {
        let targets = self.targets.configured();
        if events.is_empty() || targets.is_empty() {
            return Ok(0);
        }
        let batch = Batch {
            enqueued_at: Utc::now(),
            targets,
            events: events.to_vec(),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.dir.join(BATCHES).join(format!("{seq:012}.json"));
        spool::write_json(&path, &batch).map_err(|e| self.err("cannot write a batch", e))?;
        self.split(seq, &path, &batch)
    }

    /// Splits a committed batch into entries (and Alertmanager's state), then removes it. Doing
    /// it again after a crash writes the same entries under the same names.
    fn split(&mut self, seq: u64, path: &Path, batch: &Batch) -> Result<usize> {
        let mut queued = 0;
        let mut alertmanager = false;
        for &target in &batch.targets {
            for (i, event) in batch.events.iter().enumerate() {
                if !target.takes(event.kind) {
                    continue;
                }
                queued += 1;
                if target == Target::Alertmanager {
                    self.active.merge(event, batch.enqueued_at);
                    alertmanager = true;
                    continue;
                }
                let entry_path = self
                    .dir
                    .join(target.name())
                    .join(format!("{seq:012}-{i:09}.json"));
                if entry_path.exists() {
                    continue;
                }
                let entry = Entry {
                    event: event.clone(),
                    enqueued_at: batch.enqueued_at,
                    attempts: 0,
                    next_try: None,
                    last_error: None,
                };
                spool::write_json(&entry_path, &entry)
                    .map_err(|e| self.err("cannot write an entry", e))?;
            }
        }
        if alertmanager {
            self.save_active()?;
        }
        spool::remove(path).map_err(|e| self.err("cannot remove a split batch", e))?;
        if let Some(dir) = path.parent() {
            spool::sync_dir(dir).map_err(|e| self.err("cannot sync it", e))?;
        }
        Ok(queued)
    }

    /// What waits, without sending anything: events per receiver (for Alertmanager, alerts
    /// whose latest state it has not taken) and alerts Alertmanager is being reminded of.
    pub fn pending(&self) -> Result<Pending> {
        let mut pending = Pending {
            alertmanager_active: self.active.alerts.len(),
            ..Pending::default()
        };
        let changed = self.active.alerts.values().filter(|a| a.changed).count();
        if changed > 0 {
            pending.by_target.insert(Target::Alertmanager, changed);
        }
        for target in [Target::Webhook, Target::Slack, Target::Pagerduty] {
            let n = spool::list_json(&self.dir.join(target.name()))
                .map_err(|e| self.err("cannot list it", e))?
                .len();
            if n > 0 {
                pending.by_target.insert(target, n);
            }
        }
        Ok(pending)
    }

    /// Tries what is due at `now`: Alertmanager's alerts (new states, and the periodic
    /// re-sends), then each queue in order. A failure worth retrying keeps the entry with one
    /// more attempt and a next try after a backoff (or the receiver's `Retry-After`), and
    /// stops that receiver for this call; a refusal for good (4xx other than 408 and 429) moves
    /// the entry aside as `*.failed` with a warning; an unreadable entry is moved aside as
    /// `*.bad` with a warning and the rest go on. Nothing is dropped on failure.
    ///
    /// Only a local disk error is an error; receivers' failures are in the report.
    pub async fn deliver(&mut self, now: DateTime<Utc>) -> Result<DeliveryReport> {
        let mut report = DeliveryReport::default();
        self.deliver_alertmanager(now, &mut report).await?;
        for target in [Target::Webhook, Target::Slack, Target::Pagerduty] {
            self.deliver_queue(target, now, &mut report).await?;
        }
        Ok(report)
    }

    /// The receiver's `Retry-After` still runs.
    fn held(&self, target: Target) -> bool {
        self.hold.get(&target).is_some_and(|t| *t > Instant::now())
    }

    /// Waits until Slack may take another message.
    async fn pace(&self, target: Target) {
        if target != Target::Slack {
            return;
        }
        if let Some(last) = self.last_post.get(&target) {
            let next = *last + self.timing.slack_gap;
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
        }
    }

    /// Posts `body` to `target` at `url`, paced, noting the time and any `Retry-After`.
    async fn send(&mut self, target: Target, url: &str, body: &Value) -> Outcome {
        self.pace(target).await;
        let outcome = post(&self.client, url, body).await;
        self.last_post.insert(target, Instant::now());
        if let Outcome::Retry { after: Some(a), .. } = &outcome {
            self.hold.insert(target, Instant::now() + *a);
        }
        outcome
    }

    /// The next try after one more failure: the backoff, or longer if the receiver said so.
    fn next_try(
        &self,
        now: DateTime<Utc>,
        attempts: u32,
        after: Option<std::time::Duration>,
    ) -> DateTime<Utc> {
        let wait = self.timing.backoff(attempts).max(after.unwrap_or_default());
        now + delta(wait)
    }

    async fn deliver_queue(
        &mut self,
        target: Target,
        now: DateTime<Utc>,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        let paths = spool::list_json(&self.dir.join(target.name()))
            .map_err(|e| self.err("cannot list it", e))?;
        if paths.is_empty() {
            return Ok(());
        }
        let url = self.targets.url(target);
        let mut stopped = self.held(target);
        if url.is_none() {
            stopped = true;
            report.errors.push(format!(
                "{target}: {} events wait but no {target} URL is configured",
                paths.len()
            ));
        }
        // Alerts with an event still waiting: their later events wait behind it.
        let mut blocked: HashSet<String> = HashSet::new();
        for path in paths {
            let mut entry: Entry = match spool::read_json(&path) {
                Ok(e) => e,
                Err(why) => {
                    spool::set_aside(&path, "bad", &format!("not a TADS {target} entry: {why}"))
                        .map_err(|e| self.err("cannot move a bad entry aside", e))?;
                    report.set_aside += 1;
                    continue;
                }
            };
            let id = entry.event.alert_id.clone();
            if stopped || blocked.contains(&id) || entry.next_try.is_some_and(|t| t > now) {
                blocked.insert(id);
                report.wait(entry.enqueued_at);
                continue;
            }
            let body = match target {
                Target::Webhook => Some(webhook_message(&entry.event)),
                Target::Slack => slack_message(&entry.event),
                Target::Pagerduty => {
                    let key = self
                        .targets
                        .pagerduty
                        .as_ref()
                        .map(|p| p.routing_key.as_str());
                    Some(pagerduty_event(&entry.event, key.unwrap_or_default()))
                }
                Target::Alertmanager => None,
            };
            let Some(body) = body else {
                // Nothing to say to this receiver about this event.
                spool::remove(&path).map_err(|e| self.err("cannot remove an entry", e))?;
                continue;
            };
            let url = url.as_deref().unwrap_or_default();
            match self.send(target, url, &body).await {
                Outcome::Delivered => {
                    spool::remove(&path)
                        .map_err(|e| self.err("cannot remove a delivered entry", e))?;
                    report.sent += 1;
                }
                Outcome::Retry { why, after } => {
                    entry.attempts += 1;
                    let next = self.next_try(now, entry.attempts, after);
                    entry.next_try = Some(next);
                    entry.last_error = Some(why.clone());
                    spool::write_json(&path, &entry)
                        .map_err(|e| self.err("cannot update an entry", e))?;
                    report.failed_attempts += 1;
                    report.wait(entry.enqueued_at);
                    report.errors.push(format!(
                        "{target}: alert {id}: {why} (attempt {}, next try at {})",
                        entry.attempts,
                        crate::formats::rfc3339(next)
                    ));
                    blocked.insert(id);
                    stopped = true;
                }
                Outcome::Rejected { why } => self.refused(&path, target, &id, &why, report)?,
            }
        }
        Ok(())
    }

    async fn deliver_alertmanager(
        &mut self,
        now: DateTime<Utc>,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        if self.active.alerts.is_empty() {
            return Ok(());
        }
        let Some(url) = self.targets.url(Target::Alertmanager) else {
            let changed: Vec<_> = self
                .active
                .alerts
                .values()
                .filter(|a| a.changed)
                .map(|a| a.enqueued_at)
                .collect();
            if !changed.is_empty() {
                report.errors.push(format!(
                    "alertmanager: {} alerts wait but no Alertmanager URL is configured",
                    changed.len()
                ));
            }
            changed.into_iter().for_each(|t| report.wait(t));
            return Ok(());
        };
        for a in self.active.alerts.values_mut() {
            if a.resolved() && a.resolved_since.is_none() {
                a.resolved_since = Some(now);
            }
        }
        let due: Vec<String> = if self.held(Target::Alertmanager) {
            vec![]
        } else {
            self.active
                .alerts
                .iter()
                .filter(|(_, a)| a.due(now))
                .map(|(fp, _)| fp.clone())
                .collect()
        };
        if !due.is_empty() {
            let outcome = self.post_alerts(&url, &due, now).await;
            match outcome {
                Outcome::Delivered => due.iter().for_each(|fp| self.sent(fp, now, report)),
                Outcome::Retry { why, after } => {
                    self.retry(&due, now, after, &why, report);
                }
                Outcome::Rejected { why } if due.len() == 1 => {
                    self.reject(&due[0], &why, report)?
                }
                Outcome::Rejected { .. } => {
                    // One of them is refused: find which, one at a time.
                    for fp in &due {
                        match self.post_alerts(&url, std::slice::from_ref(fp), now).await {
                            Outcome::Delivered => self.sent(fp, now, report),
                            Outcome::Retry { why, after } => {
                                self.retry(std::slice::from_ref(fp), now, after, &why, report);
                            }
                            Outcome::Rejected { why } => self.reject(fp, &why, report)?,
                        }
                    }
                }
            }
        }
        let resolved_for = delta(self.timing.resolved_for);
        self.active.alerts.retain(|_, a| {
            let done = a.resolved()
                && !a.changed
                && a.resolved_since
                    .is_some_and(|since| now >= since + resolved_for);
            !done
        });
        for a in self.active.alerts.values().filter(|a| a.changed) {
            report.wait(a.enqueued_at);
        }
        self.save_active()
    }

    async fn post_alerts(&mut self, url: &str, fps: &[String], now: DateTime<Utc>) -> Outcome {
        let body = Value::Array(
            fps.iter()
                .filter_map(|fp| self.active.alerts.get(fp))
                .map(|a| a.postable(now, &self.timing))
                .collect(),
        );
        self.send(Target::Alertmanager, url, &body).await
    }

    fn sent(&mut self, fp: &str, now: DateTime<Utc>, report: &mut DeliveryReport) {
        let resend = delta(self.timing.resend_every);
        if let Some(a) = self.active.alerts.get_mut(fp) {
            if a.changed {
                report.sent += 1;
            } else {
                report.resent += 1;
            }
            a.changed = false;
            a.attempts = 0;
            a.last_sent = Some(now);
            a.next_send = Some(now + resend);
        }
    }

    fn retry(
        &mut self,
        fps: &[String],
        now: DateTime<Utc>,
        after: Option<std::time::Duration>,
        why: &str,
        report: &mut DeliveryReport,
    ) {
        report.failed_attempts += 1;
        let mut attempts = 0;
        for fp in fps {
            if let Some(a) = self.active.alerts.get(fp) {
                let n = a.attempts + 1;
                let next = self.next_try(now, n, after);
                attempts = attempts.max(n);
                if let Some(a) = self.active.alerts.get_mut(fp) {
                    a.attempts = n;
                    a.next_send = Some(next);
                }
            }
        }
        report.errors.push(format!(
            "alertmanager: {} alerts: {why} (attempt {attempts})",
            fps.len()
        ));
    }

    /// Alertmanager refuses this alert for good: it is written aside as
    /// `alertmanager/<seq>-<fingerprint>.json.failed` with a warning and forgotten.
    fn reject(&mut self, fp: &str, why: &str, report: &mut DeliveryReport) -> Result<()> {
        let Some(active) = self.active.alerts.remove(fp) else {
            return Ok(());
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self
            .dir
            .join(Target::Alertmanager.name())
            .join(format!("{seq:012}-{fp}.json"));
        spool::write_json(&path, &active)
            .map_err(|e| self.err("cannot keep a refused alert", e))?;
        let id = &active.event.alert_id;
        self.refused(&path, Target::Alertmanager, id, why, report)
    }

    /// `target` refused alert `id` for good: its file is moved aside as `*.failed`, with a
    /// warning, and the report says so.
    fn refused(
        &self,
        path: &Path,
        target: Target,
        id: &str,
        why: &str,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        spool::set_aside(
            path,
            "failed",
            &format!("{target} refused alert {id}: {why}"),
        )
        .map_err(|e| self.err("cannot move a refused entry aside", e))?;
        report.rejected += 1;
        report
            .errors
            .push(format!("{target}: alert {id} refused for good: {why}"));
        Ok(())
    }
}

/// What waits in an outbox ([`Outbox::pending`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Events waiting, per receiver with any.
    pub by_target: std::collections::BTreeMap<Target, usize>,
    /// Alerts Alertmanager is being told about (firing, or resolved less than
    /// [`Timing::resolved_for`] ago).
    pub alertmanager_active: usize,
}

impl Pending {
    /// Events waiting in all.
    pub fn total(&self) -> usize {
        self.by_target.values().sum()
    }
}

/// What an outbox holds for one receiver, read by [`inspect`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spooled {
    /// Events waiting to be delivered (for Alertmanager: alerts whose latest state it has not
    /// taken).
    pub waiting: usize,
    /// Events the receiver refused for good, moved aside as `*.failed`.
    pub failed: usize,
}

/// What the outbox in `dir` holds per receiver, read without changing anything (another process,
/// a watcher, may be delivering from it); receivers with nothing waiting or failed are left out.
/// A missing folder holds nothing.
pub fn inspect(dir: &Path) -> Result<std::collections::BTreeMap<Target, Spooled>> {
    let shown = outbox_dir(dir);
    let mut out = std::collections::BTreeMap::new();
    for target in Target::ALL {
        let folder = dir.join(target.name());
        if !folder.is_dir() {
            continue;
        }
        let names = spool::names(&folder).map_err(|e| outbox_err(&shown, "cannot list it", e))?;
        let failed = names.iter().filter(|n| n.ends_with(".failed")).count();
        let waiting = if target == Target::Alertmanager {
            spool::read_json::<ActiveSet>(&folder.join(ACTIVE))
                .map(|set| set.alerts.values().filter(|a| a.changed).count())
                .unwrap_or(0)
        } else {
            spool::list_json(&folder)
                .map_err(|e| outbox_err(&shown, "cannot list it", e))?
                .len()
        };
        if waiting + failed > 0 {
            out.insert(target, Spooled { waiting, failed });
        }
    }
    Ok(out)
}

fn outbox_dir(dir: &Path) -> String {
    dir.display().to_string()
}

fn outbox_err(dir: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Outbox(format!("outbox {dir}: {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_can_run_on_a_spawned_task() {
        fn is_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), Targets::default()).unwrap();
        is_send(&outbox.deliver(Utc::now()));
    }

    #[test]
    fn without_receivers_nothing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), Targets::default()).unwrap();
        let event: AlertEvent = serde_json::from_value(serde_json::json!({
            "alert_id": "a", "kind": "opened", "host": "h", "model": "m", "severity": "info",
            "starts_at": "2024-01-01T00:00:00Z", "peak_score": null, "points": 1
        }))
        .unwrap();
        assert!(event.peak_score.is_nan());
        assert_eq!(outbox.enqueue(&[event]).unwrap(), 0);
        assert_eq!(outbox.pending().unwrap(), Pending::default());
    }

    #[tokio::test]
    async fn inspect_counts_what_waits_and_what_was_refused_without_touching_it() {
        // A receiver that refuses for good (400) and one that is down (nothing listens).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refusing = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", l.local_addr().unwrap())
        };
        let dir = tempfile::tempdir().unwrap();
        assert!(inspect(&dir.path().join("none")).unwrap().is_empty());
        let targets = Targets {
            webhook: Some(refusing),
            slack: Some(down),
            ..Targets::default()
        };
        let mut outbox = Outbox::open(dir.path(), targets).unwrap();
        let event: AlertEvent = serde_json::from_value(serde_json::json!({
            "alert_id": "a", "kind": "opened", "host": "h", "model": "m", "severity": "info",
            "starts_at": "2024-01-01T00:00:00Z", "peak_score": 3.0, "points": 1
        }))
        .unwrap();
        outbox.enqueue(&[event]).unwrap();
        // (waiting, failed) of the webhook (it refuses) and of Slack (it is down).
        let counts = || {
            let seen = inspect(dir.path()).unwrap();
            let of = |t: Target| seen.get(&t).map(|s| (s.waiting, s.failed));
            (of(Target::Webhook), of(Target::Slack))
        };
        assert_eq!(counts(), (Some((1, 0)), Some((1, 0))));
        let report = outbox.deliver(Utc::now()).await.unwrap();
        assert_eq!(
            (report.rejected, report.failed_attempts),
            (1, 1),
            "{report:?}"
        );
        assert_eq!(counts(), (Some((0, 1)), Some((1, 0))));
        let after = inspect(dir.path()).unwrap();
        assert_eq!(
            inspect(dir.path()).unwrap(),
            after,
            "reading changes nothing"
        );
    }
}
