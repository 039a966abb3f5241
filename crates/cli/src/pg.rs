//! The PostgreSQL mirror on the command line: the global `--pg` flags, mirroring after each job,
//! and `tads pg migrate | sync | status`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use tads_pg::{Batch, Mirrored, Outbox, Pg, Record, RunRow};

use crate::UserError;

/// Where to mirror (every subcommand takes these).
#[derive(Debug, Clone, Args)]
pub(crate) struct PgArgs {
    /// Mirror runs, models, datasets, alerts and eval results to this PostgreSQL URL, e.g.
    /// postgres://tads@127.0.0.1:5432/ops (sslmode=disable|prefer|require); none: no mirror
    #[arg(
        long = "pg",
        global = true,
        env = "TADS_PG_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    url: Option<String>,
    /// The schema TADS owns in that database
    #[arg(
        long = "pg-schema",
        global = true,
        env = "TADS_PG_SCHEMA",
        default_value = "tads",
        value_name = "NAME"
    )]
    schema: String,
    /// Where undelivered records wait while PostgreSQL is down [default: ~/.local/state/tads/pg-outbox]
    #[arg(
        long = "pg-outbox",
        global = true,
        env = "TADS_PG_OUTBOX",
        value_name = "DIR"
    )]
    outbox: Option<PathBuf>,
}

impl PgArgs {
    /// The target and the outbox, or `None` without `--pg`.
    pub(crate) fn target(&self) -> Result<Option<(Pg, Outbox)>, UserError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let pg = Pg::parse(url, &self.schema).map_err(|e| UserError(e.to_string()))?;
        Ok(Some((pg, self.outbox())))
    }

    /// The environment that gives a child `tads` these settings (the URL stays out of its
    /// command line, which `ps` shows); empty without `--pg`.
    pub(crate) fn child_env(&self) -> Vec<(String, String)> {
        let Some(url) = &self.url else {
            return Vec::new();
        };
        let mut env = vec![
            ("TADS_PG_URL".to_string(), url.clone()),
            ("TADS_PG_SCHEMA".to_string(), self.schema.clone()),
        ];
        if let Some(dir) = &self.outbox {
            env.push(("TADS_PG_OUTBOX".to_string(), dir.display().to_string()));
        }
        env
    }

    fn outbox(&self) -> Outbox {
        Outbox::new(self.outbox.clone().unwrap_or_else(Outbox::default_dir))
    }
}

/// Mirrors `batch` when `--pg` is set, and says what happened on stderr (one line). An
/// unreachable server is not an error: the batch waits in the outbox.
pub(crate) async fn mirror(pg: &PgArgs, batch: Batch, quiet: bool) -> anyhow::Result<()> {
    let Some((target, outbox)) = pg.target()? else {
        return Ok(());
    };
    match tads_pg::mirror(&target, &outbox, batch.clone()).await? {
        Mirrored::Delivered { synced, .. } => {
            if !quiet {
                let older = if synced > 0 {
                    format!(" (and {synced} older batches from the outbox)")
                } else {
                    String::new()
                };
                eprintln!(
                    "mirrored {} to {} (schema {}){older}",
                    batch.describe(),
                    target.shown(),
                    target.schema()
                );
            }
        }
        Mirrored::Queued { path, reason } => {
            eprintln!(
                "warning: PostgreSQL did not take {} ({reason}); kept in {}: `tads pg sync` delivers it",
                batch.describe(),
                path.display()
            );
        }
    }
    Ok(())
}

/// A run record.
pub(crate) struct Run<'a> {
    pub(crate) id: String,
    pub(crate) kind: &'a str,
    pub(crate) model: Option<String>,
    pub(crate) dataset: Option<String>,
    pub(crate) output: Option<String>,
    pub(crate) started_at: DateTime<Utc>,
}

impl Run<'_> {
    /// The record of this run, finished with `result` after `rows` rows and `files` files.
    pub(crate) fn finished(&self, result: Result<(), String>, rows: u64, files: u64) -> Record {
        let finished = Utc::now();
        let secs = (finished - self.started_at).as_seconds_f64().max(1e-9);
        let (status, error) = match result {
            Ok(()) => ("succeeded", None),
            Err(e) => ("failed", Some(e)),
        };
        Record::Run(RunRow {
            id: self.id.clone(),
            kind: self.kind.into(),
            model: self.model.clone(),
            dataset: self.dataset.clone(),
            output: self.output.clone(),
            status: status.into(),
            rows_done: rows as i64,
            files_done: files as i64,
            rows_per_second: Some(rows as f64 / secs),
            started_at: self.started_at,
            finished_at: Some(finished),
            error,
        })
    }

    /// The record of this run while it works.
    pub(crate) fn running(&self) -> RunRow {
        RunRow {
            id: self.id.clone(),
            kind: self.kind.into(),
            model: self.model.clone(),
            dataset: self.dataset.clone(),
            output: self.output.clone(),
            status: "running".into(),
            rows_done: 0,
            files_done: 0,
            rows_per_second: None,
            started_at: self.started_at,
            finished_at: None,
            error: None,
        }
    }
}

/// A run id for jobs that have none of their own: `<kind>-<time>-<8 hex>`.
pub(crate) fn run_id(kind: &str, started: DateTime<Utc>) -> String {
    let nanos = started.timestamp_nanos_opt().unwrap_or_default() as u64;
    let mix = nanos ^ (u64::from(std::process::id()) << 32);
    format!(
        "{kind}-{}-{:08x}",
        started.format("%Y%m%dT%H%M%SZ"),
        (mix ^ (mix >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
    )
}

/// Arguments of `tads pg`.
#[derive(Debug, Args)]
#[command(
    about = "The PostgreSQL mirror: apply the schema, deliver what waits in the outbox, show what is pending",
    long_about = "The PostgreSQL mirror. With --pg URL (or TADS_PG_URL), every command mirrors what it \
produces to PostgreSQL: generate its dataset, train its models, score its run (with progress while it \
works) and alerts, eval its numbers, all in the schema --pg-schema (default tads). Parquet stays the \
source of truth; PostgreSQL gets a copy. Writes are upserts on natural keys (dataset id, model \
fingerprint, run id, alert id), so mirroring twice changes nothing.\n\n\
When PostgreSQL is unreachable or drops, the job still finishes its Parquet outputs and keeps what it \
could not deliver in a local outbox (--pg-outbox, default ~/.local/state/tads/pg-outbox); every \
mirroring command delivers the outbox first, and `tads pg sync` does it on its own.\n\n\
The role needs: CREATE on the database (for the schema, once) or an existing schema it owns, and \
INSERT, UPDATE, SELECT on the schema's tables. Passwords are never printed: URLs are shown as \
postgres://user:***@host/db.",
    after_help = "Examples:\n  tads pg migrate --pg postgres://tads@127.0.0.1/ops\n  \
TADS_PG_URL=postgres://tads@127.0.0.1/ops tads pg status\n  tads pg sync --pg postgres://tads@127.0.0.1/ops"
)]
pub(crate) struct PgCommand {
    #[command(subcommand)]
    action: PgAction,
}

#[derive(Debug, Subcommand)]
enum PgAction {
    /// Create the schema and apply the migrations it lacks (safe to run twice, or at once)
    Migrate,
    /// Deliver every batch waiting in the outbox
    Sync,
    /// Show the schema's version and what waits in the outbox
    Status,
}

pub(crate) async fn run(cmd: PgCommand, pg: &PgArgs) -> anyhow::Result<()> {
    let outbox = pg.outbox();
    let pending = outbox.pending().map_err(|e| UserError(e.to_string()))?;
    if let PgAction::Status = cmd.action {
        let rows: usize = pending.iter().map(|p| p.batch.len()).sum();
        println!(
            "outbox {}: {} batches waiting ({rows} records)",
            outbox.dir().display(),
            pending.len()
        );
        for p in &pending {
            println!(
                "  {} ({}): {}",
                p.path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
                p.batch.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                p.batch.describe()
            );
        }
    }
    let Some((target, outbox)) = pg.target()? else {
        if let PgAction::Status = cmd.action {
            println!("no --pg URL (or TADS_PG_URL): nothing to compare with");
            return Ok(());
        }
        return Err(
            UserError("tads pg: give the server with --pg URL or TADS_PG_URL".into()).into(),
        );
    };
    let user = |e: tads_pg::Error| UserError(e.to_string());
    let mut client = target.connect().await.map_err(user)?;
    let applied = tads_pg::migrate(&target, &mut client).await.map_err(user)?;
    match cmd.action {
        PgAction::Migrate => {
            if applied.is_empty() {
                println!(
                    "{} (schema {}): up to date (version {})",
                    target.shown(),
                    target.schema(),
                    tads_pg::MIGRATIONS.last().map_or(0, |m| m.0)
                );
            } else {
                println!(
                    "{} (schema {}): applied migrations {:?}",
                    target.shown(),
                    target.schema(),
                    applied
                );
            }
        }
        PgAction::Sync => {
            let n = tads_pg::sync(&target, &mut client, &outbox)
                .await
                .map_err(user)?;
            let rows: usize = pending.iter().take(n).map(|p| p.batch.len()).sum();
            println!(
                "delivered {n} batches ({rows} records) to {} (schema {}); {} waiting",
                target.shown(),
                target.schema(),
                pending.len() - n
            );
        }
        PgAction::Status => {
            println!(
                "{} (schema {}): reachable, schema version {}",
                target.shown(),
                target.schema(),
                tads_pg::MIGRATIONS.last().map_or(0, |m| m.0)
            );
        }
    }
    Ok(())
}
