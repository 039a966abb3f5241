//! `tads cluster`: a Ballista scheduler or executor with every TADS function, for
//! `--cluster df://host:port` on `tads sql` and `tads train`. Each logs to stderr, warnings
//! and errors by default (`RUST_LOG=info` for more).

use clap::{Args, Subcommand};

use crate::UserError;

/// `tads cluster`.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Run a Ballista scheduler with the TADS functions (until Ctrl-C)
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor with the TADS functions, registered with a scheduler (until Ctrl-C)
    Executor(ExecutorArgs),
}

/// Arguments of `tads cluster scheduler`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  tads cluster scheduler --bind 127.0.0.1 --port 50050\n  \
tads cluster executor --scheduler df://127.0.0.1:50050 --port 50051 --grpc-port 50052\n  \
tads sql --cluster df://127.0.0.1:50050 --data data/generated/telemetry -c 'SELECT count(*) FROM telemetry'"
)]
pub(crate) struct SchedulerArgs {
    /// The address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// The gRPC port clients (--cluster) and executors connect to
    #[arg(long, default_value_t = tads_cluster::DEFAULT_PORT)]
    port: u16,
    /// Load models from here instead of from the location each client loaded them from (a shared directory or s3://)
    #[arg(long, value_name = "DIR|URL")]
    models: Option<String>,
}

/// Arguments of `tads cluster executor`.
#[derive(Debug, Args)]
pub(crate) struct ExecutorArgs {
    /// The scheduler to register with
    #[arg(long, value_name = "URL", default_value = "df://127.0.0.1:50050")]
    scheduler: String,
    /// The address to listen on and to advertise to the scheduler and the other executors
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// The Arrow Flight port (results and shuffle data)
    #[arg(long, default_value_t = 50051)]
    port: u16,
    /// The gRPC port
    #[arg(long, default_value_t = 50052)]
    grpc_port: u16,
    /// Tasks run at once [default: one per core]
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    concurrent_tasks: usize,
    /// Where shuffle files are written [default: a temporary directory]
    #[arg(long, value_name = "DIR")]
    work_dir: Option<String>,
    /// Load models from here instead of from the location each client loaded them from (a shared directory or s3://)
    #[arg(long, value_name = "DIR|URL")]
    models: Option<String>,
}

/// Runs a cluster process until it fails or Ctrl-C.
pub(crate) async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    // Ballista's own log: what the processes do, and why a task failed.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Functions a client made from its data (a score run's drift shifts) travel with its plans.
    tads_jobs::carry_on_clusters();
    let process = async {
        match cmd {
            ClusterCommand::Scheduler(a) => {
                eprintln!("tads cluster scheduler: listening on {}:{}", a.bind, a.port);
                tads_cluster::run_scheduler(tads_cluster::SchedulerOptions {
                    bind: a.bind,
                    port: a.port,
                    models: a.models,
                })
                .await
            }
            ClusterCommand::Executor(a) => {
                eprintln!(
                    "tads cluster executor: flight on {}:{}, gRPC on {}:{}, scheduler {}",
                    a.bind, a.port, a.bind, a.grpc_port, a.scheduler
                );
                tads_cluster::run_executor(tads_cluster::ExecutorOptions {
                    scheduler: a.scheduler,
                    bind: a.bind,
                    port: a.port,
                    grpc_port: a.grpc_port,
                    concurrent_tasks: a.concurrent_tasks,
                    work_dir: a.work_dir,
                    models: a.models,
                })
                .await
            }
        }
    };
    tokio::select! {
        r = process => r.map_err(|e| UserError(e.to_string()).into()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
