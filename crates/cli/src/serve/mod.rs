//! `tads serve`: an HTTP API over the same DataFusion session as `tads sql` (datasets, scores,
//! alerts and models as tables), its OpenAPI document and Prometheus metrics.
//!
//! Jobs (`POST /api/jobs`, see [`jobs`]) run the `generate`, `train`, `score` and `eval`
//! commands as child processes that write below `--work`.
//!
//! Security: it listens on 127.0.0.1 by default; any other address needs `--token`. With a
//! token, the mutating routes (starting and cancelling jobs) need `Authorization: Bearer
//! <token>`, and with `--token-all` so does every route but the health check and `/metrics`.
//! Request bodies are bounded, path parameters only ever name a registered table, a loaded model
//! or a job (no path reaches the file system; a job's paths stay below `--work`), and the token
//! is never logged.

mod api;
mod dashboard;
mod job_args;
mod jobs;
mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use datafusion::prelude::SessionContext;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tads_sql::ModelRegistry;

use crate::UserError;
use crate::sql::{Registered, session_for};

/// Arguments of `tads serve`.
#[derive(Debug, Args)]
#[command(
    about = "An HTTP API over datasets, scores, alerts and models, with its OpenAPI document and Prometheus metrics",
    long_about = "Serves a JSON API over the same DataFusion session as `tads sql`: each --data location is \
registered by what it is (a dataset → telemetry, a score output → scored and alerts, a model directory \
→ models; later ones of a kind get _2, _3, …), and the models of --models are loaded.\n\n\
Routes: GET /api/health, /api/datasets, /api/datasets/{id}, /api/datasets/{id}/summary, \
/api/datasets/{id}/topk, /api/datasets/{id}/histogram, /api/datasets/{id}/timeseries, /api/runs, /api/runs/{id}/eval, /api/runs/{id}/errors, /api/models, /api/models/{name}, /api/alerts, \
/api/hosts/{host}/timeline; /api/openapi.json describes each with its parameters and responses; \
/metrics is for Prometheus. Errors are JSON {\"error\": \"…\"} with a 4xx code.\n\n\
Jobs (with --work DIR): POST /api/jobs {\"kind\": \"generate|train|score|eval\", \"args\": {…}} runs the \
command as a child process writing below DIR (at most --jobs at once); GET /api/jobs, /api/jobs/{id}, \
/api/jobs/{id}/events (Server-Sent Events) follow it; DELETE /api/jobs/{id} cancels it. A finished job's \
output is served at once.\n\n\
It listens on 127.0.0.1 only unless --token (or TADS_TOKEN) is set; with a token, starting and cancelling \
jobs need `Authorization: Bearer <token>`, and with --token-all every API route does. Ctrl-C stops it.",
    after_help = "Examples:\n  tads serve --data tads-demo/data --data tads-demo/scores --models tads-demo/models\n  \
curl -s localhost:8080/api/alerts?severity=critical\n  \
tads serve --data tads-demo/data --models tads-demo/models --work /tmp/tads-work\n  \
curl -s -X POST localhost:8080/api/jobs -d '{\"kind\":\"score\",\"args\":{\"data\":\"telemetry\",\"model\":\"hosts\",\"out\":\"s1\"}}' -H 'Content-Type: application/json'\n  \
TADS_TOKEN=secret tads serve --listen 0.0.0.0:8080 --token-all --data scores/"
)]
pub(crate) struct ServeArgs {
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    listen: String,
    /// A location to serve (repeatable): a dataset → telemetry, a score output → scored and alerts, a model directory → models
    #[arg(long, value_name = "DIR|FILE|URL")]
    data: Vec<String>,
    /// Where models live [default: ./models when it exists]
    #[arg(long, value_name = "DIR|URL")]
    models: Option<String>,
    /// The bearer token; needed to listen on anything but a loopback address
    #[arg(long, env = "TADS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Require the token on every API route, not only on mutating ones
    #[arg(long)]
    token_all: bool,
    /// The folder jobs (POST /api/jobs) write in; without it, jobs are refused
    #[arg(long, value_name = "DIR")]
    work: Option<std::path::PathBuf>,
    /// Jobs that run at once; the others wait
    #[arg(long = "jobs", default_value_t = 1, value_name = "N")]
    job_slots: usize,
}

/// What every handler shares.
pub(crate) struct AppState {
    ctx: SessionContext,
    registry: ModelRegistry,
    tables: std::sync::RwLock<Vec<Registered>>,
    jobs: jobs::Jobs,
    token: Option<String>,
    token_all: bool,
    metrics: PrometheusHandle,
}

type Shared = Arc<AppState>;

impl AppState {
    /// The tables served now (a finished job's output joins them).
    fn tables(&self) -> std::sync::RwLockReadGuard<'_, Vec<Registered>> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The largest request body accepted (no route takes a large one).
const MAX_BODY: usize = 64 * 1024;

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = args.listen.parse().map_err(|_| {
        UserError(format!(
            "--listen {}: not an address and port such as 127.0.0.1:8080",
            args.listen
        ))
    })?;
    let token = args.token.filter(|t| !t.is_empty());
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(UserError(format!(
            "--listen {addr}: listening beyond this machine needs --token (or TADS_TOKEN)"
        ))
        .into());
    }
    let work = match args.work {
        Some(dir) if dir.exists() && !dir.is_dir() => {
            return Err(UserError(format!(
                "--work {}: is a file, not a folder jobs can write in",
                dir.display()
            ))
            .into());
        }
        Some(dir) => std::fs::create_dir_all(&dir)
            .and_then(|()| dir.canonicalize())
            .map(Some)
            .map_err(|e| UserError(format!("--work {}: {e}", dir.display())))?,
        None => None,
    };
    // Jobs train into and score with --models, else <work>/models.
    let job_models = match (&args.models, &work) {
        (Some(m), _) => m.clone(),
        (None, Some(w)) => w.join("models").to_string_lossy().into_owned(),
        (None, None) => "models".to_string(),
    };
    let (ctx, registry, tables, lines) = session_for(&args.data, args.models.as_deref()).await?;
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("the metrics recorder: {e}"))?;
    let state = Arc::new(AppState {
        ctx,
        registry,
        tables: std::sync::RwLock::new(tables),
        jobs: jobs::Jobs::new(work, job_models, args.job_slots),
        token,
        token_all: args.token_all,
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| UserError(format!("--listen {addr}: {e}")))?;
    let local = listener.local_addr()?;
    for l in &lines {
        eprintln!("{l}");
    }
    for t in state.tables().iter() {
        eprintln!("{}: {}", t.name, t.location);
    }
    // The line a supervisor (or a test) waits for, with the port actually bound.
    println!("listening on http://{local}");
    let app = router(state);
    let mut stop = crate::interrupted();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

/// Every route, with the metrics and token layers.
fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/health", get(api::health))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/datasets", get(api::datasets))
        .route("/api/datasets/{id}", get(api::dataset))
        .route("/api/datasets/{id}/summary", get(api::summary))
        .route("/api/datasets/{id}/topk", get(api::topk))
        .route("/api/datasets/{id}/histogram", get(api::histogram))
        .route("/api/datasets/{id}/timeseries", get(api::timeseries))
        .route("/api/models", get(api::models))
        .route("/api/models/{*name}", get(api::model))
        .route("/api/alerts", get(api::alerts))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{id}/eval", get(api::eval))
        .route("/api/runs/{id}/errors", get(api::errors))
        .route("/api/hosts/{host}/timeline", get(api::timeline))
        .route("/api/jobs", get(jobs::list).post(jobs::create))
        .route("/api/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/api/jobs/{id}/events", get(jobs::events))
        .route("/metrics", get(prometheus))
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            guard_and_count,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Whether `headers` carry the bearer token.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compared in time independent of where they differ.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Checks the token where one is needed, then counts the request by route and status.
async fn guard_and_count(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let started = Instant::now();
    // The dashboard's page and assets hold no data: the API calls they make need the token.
    let open = matches!(
        route.as_str(),
        "/api/health" | "/metrics" | "/" | "/assets/{file}"
    );
    let needs = !open && (state.token_all || request.method() != Method::GET);
    let response = match &state.token {
        Some(token) if needs && !has_token(request.headers(), token) => api::ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this route needs `Authorization: Bearer <token>` with the server's token",
        )
        .into_response(),
        _ => next.run(request).await,
    };
    let status = response.status().as_u16().to_string();
    metrics::counter!("tads_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("tads_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: the Prometheus text format; the gauges of the served data are read now.
async fn prometheus(State(state): State<Shared>) -> Response {
    api::refresh_gauges(&state).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
