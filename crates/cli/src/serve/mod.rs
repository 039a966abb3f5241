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
mod flight;
mod job_args;
mod jobs;
mod live;
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
registered by what it is (a dataset → telemetry, a score output → scored and alerts, a `tads watch` \
output → scored and alerts over its complete rounds, a model directory → models; later ones of a kind \
get _2, _3, …), and the models of --models are loaded.\n\n\
Live: the served score outputs are listed every --live-every; when one changes (a watch round \
committed, a score run written again), GET /api/live (Server-Sent Events) says so and the dashboard's \
pages read the API again.\n\n\
Routes: GET /api/health, /api/datasets, /api/datasets/{id}, /api/datasets/{id}/summary, \
/api/datasets/{id}/topk, /api/datasets/{id}/histogram, /api/datasets/{id}/timeseries, /api/runs, /api/runs/{id}/eval, /api/runs/{id}/errors, /api/models, /api/models/{name}, /api/alerts, \
/api/hosts/{host}/timeline; /api/openapi.json describes each with its parameters and responses; \
/metrics is for Prometheus. Errors are JSON {\"error\": \"…\"} with a 4xx code.\n\n\
Jobs (with --work DIR): POST /api/jobs {\"kind\": \"generate|train|score|eval\", \"args\": {…}} runs the \
command as a child process writing below DIR (at most --jobs at once); GET /api/jobs, /api/jobs/{id}, \
/api/jobs/{id}/events (Server-Sent Events) follow it; DELETE /api/jobs/{id} cancels it. A finished job's \
output is served at once.\n\n\
It listens on 127.0.0.1 only unless --token (or TADS_TOKEN) is set; with a token, starting and cancelling \
jobs need `Authorization: Bearer <token>`, and with --token-all every API route does. Ctrl-C stops it.\n\n\
With --pg (or TADS_PG_URL), the jobs mirror to PostgreSQL as the commands do.\n\n\
--flight ADDR also serves Arrow Flight SQL on the same session (every table and TADS function, for \
ADBC, JDBC or any Flight SQL client), read-only; with a token every call needs it.",
    after_help = "Examples:\n  tads serve --data tads-demo/data --data tads-demo/scores --models tads-demo/models\n  \
curl -s localhost:8080/api/alerts?severity=critical\n  \
tads serve --data tads-demo/data --models tads-demo/models --work /tmp/tads-work\n  \
curl -s -X POST localhost:8080/api/jobs -d '{\"kind\":\"score\",\"args\":{\"data\":\"telemetry\",\"model\":\"hosts\",\"out\":\"s1\"}}' -H 'Content-Type: application/json'\n  \
TADS_TOKEN=secret tads serve --listen 0.0.0.0:8080 --token-all --data scores/\n  \
tads serve --data tads-demo/watch --models tads-demo/models --flight 127.0.0.1:50051"
)]
pub(crate) struct ServeArgs {
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    listen: String,
    /// A location to serve (repeatable): a dataset → telemetry, a score or watch output → scored and alerts, a model directory → models (--scores is the same option)
    #[arg(long, visible_alias = "scores", value_name = "DIR|FILE|URL")]
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
    /// How often the served score outputs are listed for live updates (`GET /api/live`)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::watch::parse_interval)]
    live_every: std::time::Duration,
    /// Also serve Arrow Flight SQL (read-only; every call needs the token when one is set)
    #[arg(long, value_name = "ADDR:PORT")]
    flight: Option<String>,
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
    /// What changed last in the served score outputs (see [`live`]).
    live: tokio::sync::watch::Receiver<live::LiveView>,
    /// Turns true on Ctrl-C: endless streams end with it.
    stop: tokio::sync::watch::Receiver<bool>,
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

pub(crate) async fn run(args: ServeArgs, pg: &crate::pg::PgArgs) -> anyhow::Result<()> {
    // Checked now, so that a bad URL is an error at start rather than in every job.
    pg.target()?;
    let token = args.token.filter(|t| !t.is_empty());
    let addr = address("--listen", &args.listen, "127.0.0.1:8080", token.is_some())?;
    let flight_addr = args
        .flight
        .as_deref()
        .map(|f| address("--flight", f, "127.0.0.1:50051", token.is_some()))
        .transpose()?;
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
    let (ctx, registry, tables, lines) =
        session_for(&args.data, args.models.as_deref(), None).await?;
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("the metrics recorder: {e}"))?;
    let stop = crate::interrupted();
    let (live_tx, live_rx) = tokio::sync::watch::channel(live::LiveView::default());
    let state = Arc::new(AppState {
        ctx,
        registry,
        tables: std::sync::RwLock::new(tables),
        jobs: jobs::Jobs::new(work, job_models, args.job_slots, pg.child_env()),
        token,
        token_all: args.token_all,
        metrics,
        live: live_rx,
        stop: stop.clone(),
    });
    tokio::spawn(live::follow(
        Arc::clone(&state),
        live_tx,
        args.live_every,
        stop.clone(),
    ));
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
    let flight = match flight_addr {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| UserError(format!("--flight {at}: {e}")))?;
            // Printed before the HTTP line, which is the one a supervisor (or a test) waits for.
            println!("flight sql on grpc://{}", listener.local_addr()?);
            let service = flight::FlightSql::new(state.ctx.clone(), state.token.clone())?;
            Some(tokio::spawn(flight::serve(service, listener, stop.clone())))
        }
        None => None,
    };
    // The line a supervisor (or a test) waits for, with the port actually bound.
    println!("listening on http://{local}");
    let app = router(state);
    let mut http_stop = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        })
        .await?;
    if let Some(flight) = flight {
        flight.await??;
    }
    Ok(())
}

/// `given` (a `--listen` or `--flight` value) as an address; beyond loopback only with a token.
fn address(flag: &str, given: &str, example: &str, has_token: bool) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = given.parse().map_err(|_| {
        UserError(format!(
            "{flag} {given}: not an address and port such as {example}"
        ))
    })?;
    if !addr.ip().is_loopback() && !has_token {
        return Err(UserError(format!(
            "{flag} {addr}: listening beyond this machine needs --token (or TADS_TOKEN)"
        ))
        .into());
    }
    Ok(addr)
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
        .route("/api/live", get(live::events))
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
    same_secret(given, token)
}

/// Whether `given` is `token`, compared in time independent of where they differ.
fn same_secret(given: &str, token: &str) -> bool {
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
