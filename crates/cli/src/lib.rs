//! The `tads` command line.
//!
//! One clap subcommand per job. Each turns its flags into the configuration of a library crate,
//! runs it on a tokio runtime, and reports: a progress bar on a terminal, a summary line at the
//! end, and on failure one line `error: ...` naming the flag or target at fault.
//!
//! Exit codes: 0 success; 2 bad input (a flag, a target, a store that cannot be reached);
//! 1 anything else (a bug: please report it).
#![deny(missing_docs)]

mod cluster;
mod deliver;
mod demo;
mod eval;
mod generate;
mod import;
mod pg;
mod progress;
mod score;
mod serve;
mod sql;
mod train;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// TADS, the Telemetry Anomaly Detection System: anomaly detection over Parquet telemetry,
/// embedded, on Apache DataFusion.
#[derive(Debug, Parser)]
#[command(name = "tads", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    pg: pg::PgArgs,
}

// A variant's doc comment would replace its command's `long_about` (clap resets it for a
// one-paragraph doc comment), so the commands whose arguments carry `about` and `long_about`
// have plain comments here.
#[derive(Debug, Subcommand)]
enum Command {
    // Generate seeded synthetic host telemetry with labelled anomalies as hive-partitioned Parquet
    Generate(generate::GenerateArgs),
    // Train a robust PCA model on a Parquet dataset and write models/<name>/model.json
    Train(train::TrainArgs),
    // Score every row of a Parquet dataset with a model and find its alerts; write <out>/scored/, <out>/alerts/, <out>/_manifest.json
    Score(score::ScoreArgs),
    // Measure the detection quality of a score run against the labels in its rows
    Eval(eval::EvalArgs),
    /// The PostgreSQL mirror: apply the schema, deliver the outbox, show what is pending
    Pg(pg::PgCommand),
    // SQL over telemetry, scores, alerts and models with every TADS function: a REPL, or -c/-f
    Sql(sql::SqlArgs),
    /// Import telemetry: Prometheus range queries into hive-partitioned Parquet
    #[command(subcommand)]
    Import(import::ImportCommand),
    // Follow a dataset as files land: score each new file, carry alert state, deliver alerts
    Watch(watch::WatchArgs),
    /// Alerts: deliver what waits in an alert outbox (after a receiver was down)
    #[command(subcommand)]
    Alerts(deliver::AlertsCommand),
    // Generate, train, score and evaluate a small dataset in a local folder, and print the results
    Demo(demo::DemoArgs),
    // An HTTP API over datasets, scores, alerts and models, with OpenAPI and Prometheus metrics
    Serve(serve::ServeArgs),
    /// A Ballista cluster with the TADS functions: run a scheduler or an executor (see --cluster)
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// Ctrl-C (SIGINT), as a flag that turns true once it comes: one listener for the whole run, so
/// a signal that arrives between two waits is not lost.
pub(crate) fn interrupted() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
        }
    });
    rx
}

/// Waits for `duration`; `true` if Ctrl-C came first (or had come before).
pub(crate) async fn sleep_or_interrupted(
    duration: std::time::Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// An error the user can fix (exit code 2), as opposed to a failure of TADS itself (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// A failure already reported to the user (one line per problem): exit 2, print nothing more.
#[derive(Debug, thiserror::Error)]
#[error("reported")]
pub struct Reported;

/// Whether `argv` (the program first) is a command line `tads` accepts: clap's one-line
/// message otherwise (what `tads serve` answers a job request with).
pub(crate) fn check_command_line(argv: &[String]) -> Result<(), String> {
    Cli::try_parse_from(argv)
        .map(|_| ())
        .map_err(|e| clap_error_line(&e.render().to_string()))
}

/// A reader that goes away (`tads eval | head -3`) makes `println!` panic on the broken pipe:
/// end the process quietly then, with the shell's code for SIGPIPE (141), as command-line tools
/// do, instead of printing a panic and a backtrace. Any other panic is reported as before.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

/// Turns off transparent huge pages for this process, unless `MIMALLOC_ALLOW_THP` is set (then
/// mimalloc's own option decides).
///
/// mimalloc asks the kernel for huge pages on the memory it maps (`madvise`). Each first touch
/// of such a 2 MiB region then has the kernel zero all of it, and compact memory to find one:
/// on 10M rows (2 cores) `tads train` spent 8.7 s in the kernel with them and 4.7 s without
/// (11.6 s against 9.3 s in all), and `tads score` 2.1 s against 1.4 s. This is what mimalloc's
/// `MIMALLOC_ALLOW_THP=0` does; a binary has no other way to set it before mimalloc starts.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // Best effort: a kernel without the setting keeps its huge pages.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

/// Runs the command line in `std::env::args` and returns the process exit code.
pub fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || matches!(
                    e.kind(),
                    ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                )
            {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            eprintln!("{}", clap_error_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    quiet_on_closed_stdout();
    // Deep input is refused before planning (`tads_sql::depth`); the big stacks are the margin
    // for what DataFusion still does by recursion (planning, dropping and printing plans).
    let spawned = std::thread::Builder::new()
        .name("tads".into())
        .stack_size(MAIN_STACK_BYTES)
        .spawn(move || run(cli));
    match spawned.map(|t| t.join()) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => ExitCode::FAILURE, // a panic, already reported on stderr
        Err(e) => {
            eprintln!("error: cannot start a thread: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The stack of the thread that runs a command (and plans its SQL): address space, of which only
/// what is touched is used.
const MAIN_STACK_BYTES: usize = 256 << 20;
/// The stack of each of the runtime's threads, which run DataFusion's streams.
const WORKER_STACK_BYTES: usize = 16 << 20;

/// Runs the command on a tokio runtime and turns its result into the exit code.
fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args, &cli.pg).await,
            other => dispatch(other, &cli.pg).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Reported>().is_some() => ExitCode::from(2),
        Err(e) => {
            let user = e.downcast_ref::<UserError>().is_some();
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}

/// Runs one subcommand (any but `demo`, which runs the others through this).
async fn dispatch(command: Command, pg: &pg::PgArgs) -> anyhow::Result<()> {
    match command {
        Command::Generate(args) => generate::run(args, pg).await,
        Command::Train(args) => train::run(args, pg).await,
        Command::Score(args) => score::run(args, pg).await,
        Command::Eval(args) => eval::run(args, pg).await,
        Command::Pg(cmd) => pg::run(cmd, pg).await,
        Command::Sql(args) => sql::run(args).await,
        Command::Serve(args) => serve::run(args, pg).await,
        Command::Alerts(cmd) => deliver::run(cmd).await,
        Command::Watch(args) => watch::run(args, pg).await,
        Command::Import(cmd) => import::run(cmd).await,
        Command::Cluster(cmd) => cluster::run(cmd).await,
        Command::Demo(_) => Err(anyhow::anyhow!("tads demo cannot run inside itself")),
    }
}

/// Threads per core that `--threads` may ask for at most: more only adds switching and memory.
const THREADS_PER_CORE: usize = 4;

/// Parses `--threads`: 0 (one per core) up to [`THREADS_PER_CORE`] per available core.
pub(crate) fn parse_threads(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| "not a whole number of threads".to_string())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = THREADS_PER_CORE * cores;
    if n > max {
        return Err(format!(
            "at most {max} ({THREADS_PER_CORE} per core, {cores} cores here); 0 means one per core"
        ));
    }
    Ok(n)
}

/// The least `--memory` accepted: below it a sort cannot hold even one batch per partition.
const MIN_MEMORY: usize = 16 << 20;

/// Parses a size such as `512M`, `4G`, `1GiB` or `1073741824` (bytes; K, M, G and T are powers
/// of 1024), at least [`MIN_MEMORY`].
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 512M or 4G"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("`{text}`: unknown unit (use K, M, G or T)")),
    };
    let bytes = number
        .checked_mul(1usize << shift)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes < MIN_MEMORY {
        return Err(format!("`{text}` is too small: at least 16M"));
    }
    Ok(bytes)
}

/// clap's message on one line: the lines before its usage block, which name the flag and the
/// problem (`error: the following required arguments were not provided: --out <DIR|URL>`).
fn clap_error_line(text: &str) -> String {
    let line = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        "error: invalid arguments".into()
    } else {
        line
    }
}

/// The error and its causes on one line, without repeating a cause the message already holds.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out.replace('\n', " ")
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate or count in the largest unit that keeps it above one: `5.02M`, `812.3k`.
pub(crate) fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// Bytes in MiB or GiB.
pub(crate) fn mib(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(100), "100");
        assert_eq!(si(5_020_000.0), "5.02M");
        assert_eq!(si(812.0), "812");
        assert_eq!(mib(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn the_alert_outbox_does_not_hide_the_global_pg_outbox() {
        for command in [
            &["tads", "score", "--data", "d", "--model", "m", "--out", "o"][..],
            &["tads", "alerts", "deliver", "--out", "o"][..],
        ] {
            let mut args = command.to_vec();
            args.extend(["--outbox", "a", "--pg-outbox", "p"]);
            Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("16777216"), Ok(16 << 20));
        for bad in ["", "G", "1.5G", "12Q", "-1G", "1M", "99999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clap_errors_become_one_line_naming_the_flag() {
        let err = Cli::try_parse_from(["tads", "generate"]).unwrap_err();
        let line = clap_error_line(&err.render().to_string());
        assert!(
            line.starts_with("error: ") && line.contains("--out"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let err = Cli::try_parse_from(["tads", "generate", "--out", "x", "--duration", "7x"])
            .unwrap_err();
        let line = clap_error_line(&err.render().to_string());
        assert!(
            line.contains("--duration") && line.contains("not a duration"),
            "{line}"
        );
    }

    #[test]
    fn one_line_joins_causes_once() {
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&e), "outer: inner");
    }
}
