//! Jobs: `POST /api/jobs` runs `tads generate`, `train`, `score` or `eval` with the arguments of
//! the command line, and `GET /api/jobs/{id}/events` streams its progress.
//!
//! Each job is the `tads` binary itself, started as a child process with `TADS_PROGRESS=json` so
//! that its progress bar also writes machine-readable lines (see [`crate::progress`]). A child
//! rather than a task of the server: a job's memory, a panic or a kill cannot take the server
//! down, and cancelling is the same Ctrl-C (SIGINT) a user gives the command, after which the
//! writer protocol leaves nothing a reader would take as complete. At most `--jobs` run at once;
//! the others wait their turn.
//!
//! What a job may touch is bounded: it writes only below `--work`, reads a served table (by its
//! id) or a folder below `--work`, uses the server's models, and takes only the options of its
//! command listed in `job_args` (no receivers, no PostgreSQL, no configuration file). A finished
//! job's output is served at once: a dataset or a score output as new tables, a model by name.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{Notify, Semaphore, watch};

use super::Shared;
use super::api::ApiError;
use crate::progress::{PROGRESS_ENV, PROGRESS_PREFIX};

/// The commands a job can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// `tads generate`
    Generate,
    /// `tads train`
    Train,
    /// `tads score`
    Score,
    /// `tads eval`
    Eval,
}

impl Kind {
    pub(super) fn command(self) -> &'static str {
        match self {
            Self::Generate => "generate",
            Self::Train => "train",
            Self::Score => "score",
            Self::Eval => "eval",
        }
    }
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobState {
    /// Waiting for a free slot.
    Queued,
    /// Its process runs.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero (or could not start).
    Failed,
    /// Cancelled by `DELETE /api/jobs/{id}`.
    Cancelled,
}

impl JobState {
    fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What `POST /api/jobs` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobRequest {
    pub(super) kind: Kind,
    /// The command's options by their long name (`anomaly_rate` or `anomaly-rate`): a string
    /// or number is its value, `true` gives a flag, a list repeats the option.
    #[serde(default)]
    pub(super) args: Map<String, Value>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobView {
    id: String,
    kind: Kind,
    state: JobState,
    /// The command line run (`tads` and the command first).
    argv: Vec<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// The job's current phase (`scoring`, `finding alerts`, …), when it says.
    phase: Option<String>,
    rows_done: u64,
    rows_total: Option<u64>,
    rows_per_s: Option<f64>,
    eta_s: Option<f64>,
    /// What it writes (below `--work`), for generate, train and score.
    output: Option<String>,
    /// The table ids its output is served as, once it succeeded.
    served_as: Vec<String>,
    /// Why it failed: the command's one-line error.
    error: Option<String>,
    exit_code: Option<i32>,
    /// `tads eval`'s report (its `--json`), once it succeeded.
    result: Option<Value>,
    /// The last lines the command wrote to stderr (progress lines left out).
    log: Vec<String>,
}

/// A job and what controls it.
struct Entry {
    view: watch::Sender<JobView>,
    cancel: Arc<Notify>,
}

/// Every job of this server.
pub(crate) struct Jobs {
    pub(super) work: Option<PathBuf>,
    pub(super) models: String,
    slots: Arc<Semaphore>,
    entries: Mutex<BTreeMap<u64, Entry>>,
    /// Environment every job gets (the server's `--pg`, so that jobs mirror where it says).
    env: Vec<(String, String)>,
}

/// Lines of a job's stderr kept for its view.
const LOG_LINES: usize = 20;
/// The most of a job's stdout kept (`tads eval --json`'s report).
const MAX_STDOUT: usize = 4 << 20;
/// How long a cancelled job has to stop after its SIGINT before it is killed.
const GRACE: Duration = Duration::from_secs(10);

impl Jobs {
    /// Jobs that write below `work` (none without it), with the models at `models`, `slots` at
    /// a time.
    pub(crate) fn new(
        work: Option<PathBuf>,
        models: String,
        slots: usize,
        env: Vec<(String, String)>,
    ) -> Self {
        Self {
            work,
            models,
            slots: Arc::new(Semaphore::new(slots.max(1))),
            entries: Mutex::new(BTreeMap::new()),
            env,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, id: &str) -> Result<(watch::Receiver<JobView>, Arc<Notify>), ApiError> {
        let n: u64 = id
            .parse()
            .map_err(|_| ApiError::missing(format!("no job `{id}`")))?;
        let entries = self.entries();
        let e = entries
            .get(&n)
            .ok_or_else(|| ApiError::missing(format!("no job `{id}`")))?;
        Ok((e.view.subscribe(), Arc::clone(&e.cancel)))
    }
}

/// `POST /api/jobs`: starts a job; 202 with its view.
pub(crate) async fn create(
    State(state): State<Shared>,
    body: Result<Json<JobRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    // A body that is JSON but not a job request is a bad request like any other (400); too
    // large (413) and not JSON (415) keep their codes.
    let Json(req) = body.map_err(|e| {
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        ApiError::new(status, format!("the request body: {}", e.body_text()))
    })?;
    let jobs = &state.jobs;
    let (argv, output) = super::job_args::command_line(&state, jobs, &req)?;
    let cancel = Arc::new(Notify::new());
    let (tx, rx) = {
        let mut entries = jobs.entries();
        let n = entries.keys().next_back().map_or(1, |n| n + 1);
        let view = JobView {
            id: n.to_string(),
            kind: req.kind,
            state: JobState::Queued,
            argv: std::iter::once("tads".to_string())
                .chain(argv.iter().cloned())
                .collect(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            phase: None,
            rows_done: 0,
            rows_total: None,
            rows_per_s: None,
            eta_s: None,
            output: output.as_ref().map(|p| p.to_string_lossy().into_owned()),
            served_as: vec![],
            error: None,
            exit_code: None,
            result: None,
            log: vec![],
        };
        let (tx, rx) = watch::channel(view);
        entries.insert(
            n,
            Entry {
                view: tx.clone(),
                cancel: Arc::clone(&cancel),
            },
        );
        (tx, rx)
    };
    tokio::spawn(run(Arc::clone(&state), argv, output, tx, cancel));
    let view = rx.borrow().clone();
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// `GET /api/jobs`: every job, newest first.
pub(crate) async fn list(State(state): State<Shared>) -> Json<Vec<JobView>> {
    let entries = state.jobs.entries();
    Json(
        entries
            .values()
            .rev()
            .map(|e| e.view.borrow().clone())
            .collect(),
    )
}

/// `GET /api/jobs/{id}`.
pub(crate) async fn get(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let (rx, _) = state.jobs.find(&id)?;
    let view = rx.borrow().clone();
    Ok(Json(view))
}

/// `DELETE /api/jobs/{id}`: cancels a queued or running job (202 with its view); one already
/// finished is left as it is (409).
pub(crate) async fn cancel(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let (rx, cancel) = state.jobs.find(&id)?;
    let view = rx.borrow().clone();
    if view.state.is_final() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {id} has already {}", view.state.name()),
        ));
    }
    cancel.notify_one();
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// `GET /api/jobs/{id}/events`: Server-Sent Events, one `job` event with the job's view at
/// once and at every change, the last one in a final state; then the stream ends.
pub(crate) async fn events(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let (rx, _) = state.jobs.find(&id)?;
    let stream = futures::stream::unfold((rx, true, false), |(mut rx, first, done)| async move {
        if done {
            return None;
        }
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let view = rx.borrow_and_update().clone();
        let last = view.state.is_final();
        let event = Event::default().event("job").json_data(&view);
        Some((event, (rx, false, last)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Runs a job to its end: waits for a slot, starts the child, follows its progress, serves its
/// output when it succeeded.
async fn run(
    state: Shared,
    argv: Vec<String>,
    output: Option<PathBuf>,
    tx: watch::Sender<JobView>,
    cancel: Arc<Notify>,
) {
    let kind = tx.borrow().kind;
    let permit = tokio::select! {
        p = Arc::clone(&state.jobs.slots).acquire_owned() => p.ok(),
        () = cancel.notified() => None,
    };
    if permit.is_none() {
        finish(&tx, JobState::Cancelled, None);
        return;
    }
    let started = Instant::now();
    tx.send_modify(|v| {
        v.state = JobState::Running;
        v.started_at = Some(Utc::now());
    });
    let outcome = child(&argv, &state.jobs.env, &tx, &cancel).await;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(Outcome::Exited(0, stdout)) => {
            let served = serve_output(&state, kind, output.as_deref()).await;
            tx.send_modify(|v| {
                v.exit_code = Some(0);
                v.rows_done = v.rows_done.max(v.rows_total.unwrap_or(0));
                match served {
                    Ok(ids) => v.served_as = ids,
                    Err(e) => v.log.push(format!("not served: {e}")),
                }
                if kind == Kind::Eval {
                    v.result = serde_json::from_slice(&stdout).ok();
                }
            });
            finish(&tx, JobState::Succeeded, None);
        }
        Ok(Outcome::Exited(code, _)) => {
            let log = tx.borrow().log.clone();
            let error = log
                .iter()
                .rev()
                .find(|l| l.starts_with("error"))
                .or_else(|| log.last())
                .cloned()
                .unwrap_or_else(|| format!("exited with status {code}"));
            tx.send_modify(|v| v.exit_code = Some(code));
            finish(&tx, JobState::Failed, Some(error));
        }
        Ok(Outcome::Cancelled) => finish(&tx, JobState::Cancelled, None),
        Err(e) => finish(&tx, JobState::Failed, Some(e)),
    }
    let final_state = tx.borrow().state.name();
    metrics::counter!("tads_jobs_total", "kind" => kind.command(), "state" => final_state)
        .increment(1);
    metrics::histogram!("tads_job_duration_seconds", "kind" => kind.command()).record(seconds);
    metrics::counter!("tads_job_rows_total", "kind" => kind.command())
        .increment(tx.borrow().rows_done);
}

fn finish(tx: &watch::Sender<JobView>, state: JobState, error: Option<String>) {
    tx.send_modify(|v| {
        v.state = state;
        v.finished_at = Some(Utc::now());
        v.eta_s = None;
        if error.is_some() {
            v.error = error;
        }
    });
}

/// How a child ended.
enum Outcome {
    /// Its exit code (−1 for a signal) and its stdout.
    Exited(i32, Vec<u8>),
    Cancelled,
}

/// Runs `tads <argv>` as a child, following its stderr, until it exits or `cancel` fires.
async fn child(
    argv: &[String],
    env: &[(String, String)],
    tx: &watch::Sender<JobView>,
    cancel: &Notify,
) -> Result<Outcome, String> {
    let exe = std::env::current_exe().map_err(|e| format!("the tads binary: {e}"))?;
    let mut child = tokio::process::Command::new(exe)
        .args(argv)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(PROGRESS_ENV, "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not start tads: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let pid = child.id();
    let follow = follow_stderr(stderr, tx.clone());
    // Read to the end (a child must never block on a full pipe), keeping the first bytes.
    let collect = async move {
        let (mut out, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
        let mut stdout = stdout;
        while let Ok(n) = stdout.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let room = MAX_STDOUT.saturating_sub(out.len());
            out.extend_from_slice(&chunk[..n.min(room)]);
        }
        out
    };
    let mut wait = Box::pin(async {
        let (status, (), out) = tokio::join!(child.wait(), follow, collect);
        (status, out)
    });
    tokio::select! {
        (status, out) = &mut wait => {
            let status = status.map_err(|e| format!("waiting for tads: {e}"))?;
            return Ok(Outcome::Exited(status.code().unwrap_or(-1), out));
        }
        () = cancel.notified() => {}
    }
    // Cancelled: SIGINT, as Ctrl-C, so the command stops by its writer protocol; a kill if it
    // has not stopped after the grace period.
    if let Some(pid) = pid {
        let _ = tokio::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(GRACE, &mut wait).await.is_err() {
        drop(wait);
        let _ = child.kill().await;
    }
    Ok(Outcome::Cancelled)
}

/// Reads a child's stderr: progress lines update the view, the others are kept (the last
/// [`LOG_LINES`]).
async fn follow_stderr(stderr: tokio::process::ChildStderr, tx: watch::Sender<JobView>) {
    let mut lines = BufReader::new(stderr).lines();
    let mut log: VecDeque<String> = VecDeque::new();
    let mut phase_start = (Instant::now(), String::new());
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(p) = line.strip_prefix(PROGRESS_PREFIX) {
            let Ok(p) = serde_json::from_str::<Value>(p) else {
                continue;
            };
            let phase = p["phase"].as_str().unwrap_or_default().to_string();
            if phase != phase_start.1 {
                phase_start = (Instant::now(), phase.clone());
            }
            let rows = p["rows"].as_u64().unwrap_or(0);
            let total = p["total"].as_u64().filter(|t| *t > 0);
            let secs = phase_start.0.elapsed().as_secs_f64();
            let rate = (secs > 0.2 && rows > 0).then(|| rows as f64 / secs);
            tx.send_modify(|v| {
                v.phase = (!phase.is_empty()).then_some(phase);
                v.rows_done = rows;
                v.rows_total = total;
                v.rows_per_s = rate;
                v.eta_s = match (rate, total) {
                    (Some(r), Some(t)) if r > 0.0 => Some(t.saturating_sub(rows) as f64 / r),
                    _ => None,
                };
            });
        } else if !line.trim().is_empty() {
            log.push_back(line);
            if log.len() > LOG_LINES {
                log.pop_front();
            }
            let kept: Vec<String> = log.iter().cloned().collect();
            tx.send_modify(|v| v.log = kept);
        }
    }
}

/// Serves a finished job's output: a generated dataset or a score output as tables, a trained
/// model by name. Returns the new table ids.
async fn serve_output(
    state: &super::AppState,
    kind: Kind,
    output: Option<&Path>,
) -> Result<Vec<String>, String> {
    match kind {
        Kind::Generate | Kind::Score => {
            let Some(out) = output else { return Ok(vec![]) };
            let location = tads_store::Location::parse_data(&out.to_string_lossy())
                .map_err(|e| e.to_string())?;
            let what = if kind == Kind::Score {
                crate::sql::Kind::Scores
            } else {
                crate::sql::Kind::Telemetry
            };
            let added = crate::sql::register_location(&state.ctx, &location, what)
                .await
                .map_err(|e| e.to_string())?;
            let ids = added.iter().map(|t| t.name.clone()).collect();
            state
                .tables
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .extend(added);
            Ok(ids)
        }
        Kind::Train => {
            let models =
                tads_store::Location::parse(&state.jobs.models).map_err(|e| e.to_string())?;
            state
                .registry
                .load_dir(&models)
                .await
                .map_err(|e| e.to_string())?;
            Ok(vec![])
        }
        Kind::Eval => Ok(vec![]),
    }
}
