//! TADS on a Ballista cluster.
//!
//! - [`run_scheduler`] and [`run_executor`] start a Ballista scheduler and executor (the
//!   processes behind `tads cluster scheduler` and `tads cluster executor`) with every TADS
//!   scalar, aggregate and window function registered: in the scheduler's session builder,
//!   and in the executor's function registry.
//! - [`connect`] makes a client session whose plans run on the cluster; the caller registers
//!   the TADS functions on it after (the upgrade to a Ballista session replaces its function
//!   lists).
//! - Models travel with the plan by name and fingerprint ([`codec`]): each process loads them
//!   from the shared models location (the client's, or the process's own `--models`) and refuses
//!   a model whose fingerprint differs from the client's.
//! - S3 buckets are opened on first use from the `AWS_*` environment ([`stores`]).
#![deny(missing_docs)]

pub mod codec;
pub mod stores;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::common::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use tads_sql::ModelRegistry;

use crate::codec::{Models, TadsLogicalCodec, TadsPhysicalCodec};
use crate::stores::TadsStores;

/// Errors of this crate: one line each, naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cluster process or the client cannot start or connect.
    #[error("{0}")]
    Cluster(String),
    /// DataFusion or Ballista failed.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The largest gRPC message the processes and clients take (Ballista's default is 16 MiB).
const MAX_MESSAGE: u32 = 256 << 20;

/// The Ballista scheduler's default port.
pub const DEFAULT_PORT: u16 = 50050;

/// A scheduler URL (`df://host:port`, port 50050 when left out) as `(host, port)`.
pub fn parse_url(url: &str) -> Result<(String, u16)> {
    let bad =
        |why: &str| Error::Cluster(format!("--cluster {url}: {why} (expected df://host:port)"));
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "df" | "http" | "grpc") {
        return Err(bad(&format!("unknown scheme `{}://`", parsed.scheme())));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    Ok((host.to_string(), parsed.port().unwrap_or(DEFAULT_PORT)))
}

/// A runtime whose object stores are TADS's: local files and any S3 bucket.
fn runtime() -> datafusion::common::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(TadsStores::default()))
        .build_arc()
}

/// A cluster process's session: Ballista's defaults, TADS's stores, every TADS function
/// scoring with `registry`.
fn process_state(
    config: SessionConfig,
    registry: &ModelRegistry,
) -> datafusion::common::Result<SessionState> {
    let base = ballista_core::utils::default_session_builder(config)?;
    let state = SessionStateBuilder::new_from_existing(base)
        .with_runtime_env(runtime()?)
        .build();
    let ctx = SessionContext::new_with_state(state);
    tads_sql::register_all(&ctx, registry).map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(ctx.state())
}

/// The session config every TADS cluster process and client shares: Ballista's, with the TADS
/// codecs.
fn cluster_config(models: &Arc<Models>) -> SessionConfig {
    // Plans that carry a score run's drift shifts (see `tads_jobs`) outgrow Ballista's 16 MiB.
    SessionConfig::new_with_ballista()
        .with_ballista_grpc_client_max_message_size(MAX_MESSAGE as usize)
        .with_information_schema(true)
        .with_extension(Arc::new(tads_sql::PlainDictionaries))
        .with_ballista_logical_extension_codec(Arc::new(TadsLogicalCodec::new(Arc::clone(models))))
        .with_ballista_physical_extension_codec(Arc::new(TadsPhysicalCodec::new(Arc::clone(
            models,
        ))))
}

/// The models of a process's own `--models`, if given (by-name calls without a client's
/// payload score with these).
async fn own_models(models: Option<&str>) -> Result<ModelRegistry> {
    let registry = ModelRegistry::new();
    if let Some(m) = models {
        let location = tads_store::Location::parse(m)
            .map_err(|e| Error::Cluster(format!("--models {m}: {e}")))?;
        registry
            .load_dir(&location)
            .await
            .map_err(|e| Error::Cluster(format!("--models {m}: {e}")))?;
    }
    Ok(registry)
}

/// How to start a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// The address to listen on.
    pub bind: String,
    /// The gRPC port.
    pub port: u16,
    /// A models location searched instead of each client's.
    pub models: Option<String>,
}

/// Runs a Ballista scheduler with the TADS functions until the process ends.
pub async fn run_scheduler(opts: SchedulerOptions) -> Result<()> {
    let models = Arc::new(Models::new(opts.models.clone()));
    let registry = own_models(opts.models.as_deref()).await?;
    let addr: SocketAddr = format!("{}:{}", opts.bind, opts.port)
        .parse()
        .map_err(|e| Error::Cluster(format!("--bind {}: {e}", opts.bind)))?;
    let producer_models = Arc::clone(&models);
    let mut config = SchedulerConfig::default()
        .with_hostname(opts.bind.clone())
        .with_port(opts.port)
        .with_override_session_builder(Arc::new(move |config| process_state(config, &registry)))
        .with_override_config_producer(Arc::new(move || cluster_config(&producer_models)));
    config.bind_host = opts.bind.clone();
    config.grpc_server_max_decoding_message_size = MAX_MESSAGE;
    config.grpc_server_max_encoding_message_size = MAX_MESSAGE;
    config.override_logical_codec = Some(Arc::new(TadsLogicalCodec::new(Arc::clone(&models))));
    config.override_physical_codec = Some(Arc::new(TadsPhysicalCodec::new(Arc::clone(&models))));
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| Error::Cluster(format!("scheduler: {e}")))?;
    start_server(cluster, addr, Arc::new(config))
        .await
        .map_err(|e| Error::Cluster(format!("scheduler on {addr}: {e}")))
}

/// How to start an executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `df://host:port`.
    pub scheduler: String,
    /// The address to listen on (and to advertise).
    pub bind: String,
    /// The Arrow Flight port (results and shuffles).
    pub port: u16,
    /// The gRPC port.
    pub grpc_port: u16,
    /// Tasks run at once (0: one per core).
    pub concurrent_tasks: usize,
    /// Where shuffle files go (default: a temporary directory).
    pub work_dir: Option<String>,
    /// A models location searched instead of each client's.
    pub models: Option<String>,
}

/// Runs a Ballista executor with the TADS functions until the process ends.
pub async fn run_executor(opts: ExecutorOptions) -> Result<()> {
    let (scheduler_host, scheduler_port) = parse_url(&opts.scheduler)?;
    let models = Arc::new(Models::new(opts.models.clone()));
    let registry = own_models(opts.models.as_deref()).await?;
    let state = process_state(cluster_config(&models), &registry)?;
    let vcores = if opts.concurrent_tasks == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.concurrent_tasks
    };
    let producer_models = Arc::clone(&models);
    // Ballista logs why a service failed (a port in use) and returns as if stopped on purpose:
    // check the ports first, and take a return without a signal for the failure it is.
    for (flag, port) in [("--port", opts.port), ("--grpc-port", opts.grpc_port)] {
        port_is_free(flag, &opts.bind, port)?;
    }
    let signalled = stop_signal_seen();
    let config = ExecutorProcessConfig {
        bind_host: opts.bind.clone(),
        external_host: Some(opts.bind.clone()),
        port: opts.port,
        grpc_port: opts.grpc_port,
        scheduler_host,
        scheduler_port,
        vcores,
        work_dir: opts.work_dir.clone(),
        grpc_max_decoding_message_size: MAX_MESSAGE,
        grpc_max_encoding_message_size: MAX_MESSAGE,
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(&state))),
        override_runtime_producer: Some(Arc::new(|_| runtime())),
        override_config_producer: Some(Arc::new(move || cluster_config(&producer_models))),
        override_logical_codec: Some(Arc::new(TadsLogicalCodec::new(Arc::clone(&models)))),
        override_physical_codec: Some(Arc::new(TadsPhysicalCodec::new(Arc::clone(&models)))),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| {
            Error::Cluster(format!(
                "executor with the scheduler at {}: {e}",
                opts.scheduler
            ))
        })?;
    if !signalled.load(Ordering::Acquire) {
        // The signal's own listener may not have run yet.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if signalled.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(Error::Cluster(format!(
            "executor on {}:{}: its services stopped (the line above says why; RUST_LOG=info for more)",
            opts.bind, opts.port
        )))
    }
}

/// One line naming `flag` when nothing can listen on `bind:port`.
fn port_is_free(flag: &str, bind: &str, port: u16) -> Result<()> {
    std::net::TcpListener::bind((bind, port))
        .map(drop)
        .map_err(|e| {
            Error::Cluster(format!(
                "{flag} {port}: cannot listen on {bind}:{port}: {e}"
            ))
        })
}

/// A flag set once the process receives Ctrl-C or SIGTERM, the stops Ballista's executor
/// takes as a request.
fn stop_signal_seen() -> Arc<AtomicBool> {
    let seen = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&seen);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        flag.store(true, Ordering::Release);
    });
    seen
}

/// A client session on the cluster at `url` (`df://host:port`), from `state` (its config and
/// runtime). The scheduler is probed first, so an unreachable one is one line naming the URL.
/// Register the TADS functions on the result.
pub async fn connect(url: &str, state: SessionState) -> Result<SessionContext> {
    let (host, port) = parse_url(url)?;
    probe(url, &host, port).await?;
    let models = Arc::new(Models::new(None));
    let config = state.config().clone();
    let mut tads = cluster_config(&models);
    tads.options_mut().execution = config.options().execution.clone();
    let state = SessionStateBuilder::new_from_existing(state)
        .with_config(tads)
        .with_runtime_env(runtime()?)
        .build();
    Ok(SessionContext::remote_with_state(&format!("df://{host}:{port}"), state).await?)
}

/// A standalone cluster in this process (a scheduler and an executor on loopback) and a
/// client session on it, for tests and trials. Register the TADS functions on the result.
pub async fn standalone(registry: &ModelRegistry) -> Result<SessionContext> {
    let models = Arc::new(Models::new(None));
    let state = process_state(cluster_config(&models), registry)?;
    let ctx = SessionContext::standalone_with_state(state).await?;
    // The processes' own table, not the client's: the caller registers its own.
    ctx.deregister_table("models")?;
    Ok(ctx)
}

/// Fails with one line naming `url` when nothing answers there.
async fn probe(url: &str, host: &str, port: u16) -> Result<()> {
    let addr = format!("{host}:{port}");
    let connect = tokio::net::TcpStream::connect(&addr);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Cluster(format!(
            "cannot reach the Ballista scheduler at {url}: {e} (start one with `tads cluster scheduler`)"
        ))),
        Err(_) => Err(Error::Cluster(format!(
            "cannot reach the Ballista scheduler at {url}: no answer in 10 s"
        ))),
    }
}

/// A user's message for an error from a cluster at `url`: where the cluster lacks the TADS
/// functions (plain Ballista processes), what to start instead; otherwise the error itself.
pub fn explain(url: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let missing = [
        "no UDF named",
        "no UDAF named",
        "no UDWF named",
        "not provided for scalar function",
        "not provided for aggregate function",
        "not provided for window function",
    ];
    if missing.iter().any(|m| text.contains(m)) {
        let function = text
            .split(['"', '`'])
            .nth(1)
            .filter(|f| !f.is_empty())
            .map(|f| format!(" (`{f}`)"))
            .unwrap_or_default();
        return format!(
            "the cluster at {url} lacks the TADS functions{function}: start its scheduler and executors with `tads cluster scheduler` and `tads cluster executor`, not plain Ballista"
        );
    }
    // A task's error comes back wrapped in Ballista's debug format: its own message is the
    // innermost `Execution("…")`.
    if let Some(i) = text.rfind("Execution(\"") {
        let rest = &text[i + "Execution(\"".len()..];
        if let Some(j) = rest.find("\")") {
            let inner = rest[..j].replace("\\\"", "\"").replace("\\'", "'");
            return format!("on the cluster at {url}: {inner}");
        }
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduler_url_is_host_and_port_with_ballistas_default() {
        assert_eq!(
            parse_url("df://10.0.0.5:6000").unwrap(),
            ("10.0.0.5".into(), 6000)
        );
        assert_eq!(
            parse_url("df://sched").unwrap(),
            ("sched".into(), DEFAULT_PORT)
        );
        for bad in ["http2://x", "df://", "not a url"] {
            let e = parse_url(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--cluster {bad}: ")), "{e}");
        }
    }

    #[test]
    fn clients_and_processes_take_messages_of_256_mib() {
        let config = cluster_config(&Arc::new(Models::default()));
        assert_eq!(config.ballista_grpc_client_max_message_size(), 256 << 20);
    }

    #[test]
    fn a_tasks_error_is_its_own_message_and_missing_functions_say_what_to_start() {
        let wrapped = "Execution error: Job 1 failed: Task failed due to runtime execution error: \
                       DataFusionError(Shared(External(DataFusionError(Execution(\"model `m` at \\\"x\\\" is gone\")))))";
        assert_eq!(
            explain("df://h:1", &wrapped),
            "on the cluster at df://h:1: model `m` at \"x\" is gone"
        );
        let missing = "Error during planning: There is no UDF named \"pca_score\" in the registry";
        let m = explain("df://h:1", &missing);
        assert!(m.contains("lacks the TADS functions (`pca_score`)"), "{m}");
        assert_eq!(explain("df://h:1", &"a\nb"), "a b");
    }
}
