//! Live updates: the served score outputs are listed every `--live-every`, and when one changed
//! (a `tads watch` round committed, a score run written again) every open page hears of it over
//! `GET /api/live` (Server-Sent Events) and reads the API again.
//!
//! A plain score output needs nothing more: its tables list their files on every query. A
//! `tads watch` output's tables are registered over its complete rounds, so when a round is
//! committed they are registered again (built under other names first, then swapped in, so a
//! query in between still finds them).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tads_store::Location;
use tokio::sync::watch;

use super::{AppState, Shared};
use crate::sql::{Registered, register_watch};

/// What `GET /api/live` sends: a counter of changes and what changed last.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct LiveView {
    /// Changes seen since the server started.
    pub(crate) version: u64,
    /// The tables whose files changed last.
    pub(crate) tables: Vec<String>,
    /// When that change was seen (RFC 3339).
    pub(crate) at: Option<String>,
}

/// A fingerprint of what is complete in `source`: its manifests and the watch checkpoint, each
/// written when what it covers is (so a change is never seen half-written; the lock, whose
/// heartbeat changes while nothing else does, is not looked at).
async fn fingerprint(source: &Location) -> Option<u64> {
    let mut files: Vec<(String, u64, i64)> = source
        .list_all()
        .await
        .ok()?
        .into_iter()
        .filter(|o| {
            let p = o.location.as_ref();
            p.ends_with("_manifest.json") || p.ends_with("checkpoint.json")
        })
        .map(|o| {
            (
                o.location.to_string(),
                o.size,
                o.last_modified.timestamp_nanos_opt().unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    Some(h.finish())
}

/// The served score outputs: each source with its tables.
fn sources(state: &AppState) -> Vec<(Location, Vec<Registered>)> {
    let mut by: Vec<(Location, Vec<Registered>)> = Vec::new();
    for t in state.tables().iter().filter(|t| t.kind != "telemetry") {
        match by.iter_mut().find(|(s, _)| s.url() == t.source.url()) {
            Some((_, ts)) => ts.push(t.clone()),
            None => by.push((t.source.clone(), vec![t.clone()])),
        }
    }
    by
}

/// Registers a watch output's tables again over its complete rounds, under the same names.
async fn reregister(state: &AppState, source: &Location, tables: &[Registered]) {
    let name = |kind: &str| {
        tables
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| t.name.clone())
    };
    let (Some(scored), Some(alerts)) = (name("scored"), name("alerts")) else {
        return;
    };
    let next = (format!("{scored}__next"), format!("{alerts}__next"));
    for leftover in [&next.0, &next.1] {
        let _ = state.ctx.deregister_table(leftover.as_str());
    }
    let fresh = match register_watch(&state.ctx, source, &next).await {
        Ok(fresh) => fresh,
        Err(e) => {
            eprintln!("live: {source}: {e}");
            return;
        }
    };
    for (from, to) in [(&next.0, &scored), (&next.1, &alerts)] {
        if let Ok(Some(provider)) = state.ctx.deregister_table(from.as_str()) {
            let _ = state.ctx.deregister_table(to.as_str());
            let _ = state.ctx.register_table(to.as_str(), provider);
        }
    }
    let mut served = state.tables.write().unwrap_or_else(|e| e.into_inner());
    for mut t in fresh {
        t.name = if t.kind == "scored" {
            scored.clone()
        } else {
            alerts.clone()
        };
        if let Some(old) = served.iter_mut().find(|o| o.name == t.name) {
            *old = t;
        }
    }
}

/// Lists the served score outputs every `every` until `stop`, and tells `tx` what changed.
pub(crate) async fn follow(
    state: Shared,
    tx: watch::Sender<LiveView>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut first = true;
    loop {
        let mut changed = Vec::new();
        for (source, tables) in sources(&state) {
            let Some(now) = fingerprint(&source).await else {
                continue;
            };
            let before = seen.insert(source.url().to_string(), now);
            if first || before == Some(now) {
                continue;
            }
            if tables.iter().any(Registered::of_watch) {
                reregister(&state, &source, &tables).await;
            }
            changed.extend(tables.iter().map(|t| t.name.clone()));
        }
        if !changed.is_empty() {
            metrics::counter!("tads_live_updates_total").increment(1);
            tx.send_modify(|v| {
                v.version += 1;
                v.tables = changed;
                v.at = Some(chrono::Utc::now().to_rfc3339());
            });
        }
        first = false;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// `GET /api/live`: a `hello` event with the current state, then a `scores` event whenever the
/// served score outputs change; the stream ends when the server stops.
pub(crate) async fn events(State(state): State<Shared>) -> Response {
    let rx = state.live.clone();
    let stop = state.stop.clone();
    let stream =
        futures::stream::unfold((rx, stop, true), |(mut rx, mut stop, first)| async move {
            if !first {
                tokio::select! {
                    r = rx.changed() => r.ok()?,
                    _ = stop.wait_for(|s| *s) => return None,
                }
            }
            let view = rx.borrow_and_update().clone();
            let kind = if first { "hello" } else { "scores" };
            let event = Event::default().event(kind).json_data(&view);
            Some((event, (rx, stop, false)))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The watch outputs' state for `/metrics`: seconds since each one's last committed round (its
/// lag), its rounds, and per receiver the alert events waiting in its outbox and those refused
/// for good.
pub(crate) async fn watch_gauges(state: &AppState) {
    for (source, tables) in sources(state) {
        let Ok(Some(bytes)) = source.get_opt(tads_jobs::watch::CHECKPOINT).await else {
            continue;
        };
        let Ok(checkpoint) = serde_json::from_slice::<tads_jobs::watch::Checkpoint>(&bytes) else {
            continue;
        };
        let table = tables
            .iter()
            .find(|t| t.kind == "scored")
            .map_or_else(|| source.to_string(), |t| t.name.clone());
        let age = (chrono::Utc::now() - checkpoint.updated_at).as_seconds_f64();
        metrics::gauge!("tads_watch_last_round_age_seconds", "table" => table.clone()).set(age);
        metrics::gauge!("tads_watch_rounds", "table" => table.clone())
            .set(checkpoint.rounds as f64);
        // The watcher's alert outbox (the default one of its output), as it stands now.
        let outbox = crate::deliver::default_outbox(source.url().as_str());
        let Ok(spooled) = tads_deliver::inspect(&outbox) else {
            continue;
        };
        for target in tads_deliver::Target::ALL {
            let s = spooled.get(&target).copied().unwrap_or_default();
            let (t, r) = (table.clone(), target.name());
            metrics::gauge!("tads_delivery_waiting", "table" => t.clone(), "target" => r)
                .set(s.waiting as f64);
            metrics::gauge!("tads_delivery_failed", "table" => t, "target" => r)
                .set(s.failed as f64);
        }
    }
}
