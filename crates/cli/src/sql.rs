//! `tads sql`: datafusion-cli's REPL (line editing, history, output formats, backslash
//! commands) on a session with every TADS function and the given datasets registered.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use datafusion::prelude::SessionContext;
use datafusion_cli::exec::{exec_from_commands, exec_from_repl};
use datafusion_cli::object_storage::instrumented::InstrumentedObjectStoreRegistry;
use datafusion_cli::print_format::PrintFormat;
use datafusion_cli::print_options::{MaxRows, PrintOptions};
use tads_jobs::score::ScoreManifest;
use tads_sql::ModelRegistry;
use tads_store::Location;

use crate::UserError;

/// Output formats of `tads sql`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// Aligned table.
    Table,
    /// Comma-separated values with a header.
    Csv,
    /// Tab-separated values with a header.
    Tsv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// Arguments of `tads sql`.
#[derive(Debug, Args)]
#[command(
    about = "SQL over telemetry, scores, alerts and models, with every TADS function: a REPL, or -c/-f",
    long_about = "An interactive SQL shell (datafusion-cli's: line editing, history in ./.history, \
\\? for its commands, \\q to quit) on a session with every TADS function registered: pca_score, \
pca_t2, pca_contrib, pca_top_metric, pca_top_deviation, kmeans_distance, iforest_score, ocsvm_score, seasonal_zmax, forecast_zmax, \
seasonal_zscore, pca_scores, anomaly_score, anomaly_top_metric, anomaly_top_deviation, mad_zscore, mad_zmax, robust_stats, \
pca_fit, sketch_quantile, alert_state, shard_of. `SELECT * FROM tads_help()` lists them with their syntax and an \
example; `SELECT * FROM tads_help('pca_score')` shows one; `SHOW FUNCTIONS LIKE 'pca%'` and \
information_schema.routines work too.\n\n\
--data registers each location by what it is: a generated dataset or any Parquet as `telemetry`, \
the output of `tads score` as `scored` and `alerts`, a `tads watch` output as `scored` (every complete \
round) and `alerts` (each alert's latest record), a model directory as `models` (later ones of a \
kind get _2, _3, …). Hive partitions (date=…) become columns. s3:// locations use the usual AWS \
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).\n\n\
With -c or -f, runs the statements and exits (exit 2 if any failed); otherwise opens the REPL, \
where an error is printed and the session goes on. The queries in sql/analytics/ and sql/eval/ run \
here as they are.",
    after_help = "Examples:\n  tads sql --data tads-demo/data --data tads-demo/scores --models tads-demo/models\n  \
tads sql --data data/generated/telemetry -c 'SELECT count(*) FROM telemetry'\n  \
tads sql --data tads-demo/data -f sql/analytics/summary.sql --format csv\n  \
tads sql -c \"SELECT name, syntax FROM tads_help()\""
)]
pub(crate) struct SqlArgs {
    /// A location to register (repeatable): a dataset → telemetry, a score output → scored and alerts, a model directory → models
    #[arg(long, value_name = "DIR|FILE|URL")]
    data: Vec<String>,
    /// Where models live, for the `models` table and the scoring functions [default: ./models when it exists]
    #[arg(long, value_name = "DIR|URL")]
    models: Option<String>,
    /// Run this SQL and exit (repeatable; in order, before -f)
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    command: Vec<String>,
    /// Run the SQL statements in this file and exit (repeatable)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Vec<String>,
    /// How results are printed
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// At most this many rows of a result in table format (0: all; the other formats print all)
    #[arg(long, default_value_t = 40)]
    maxrows: usize,
    /// Print results only: no banner, no row counts and timings
    #[arg(long, short)]
    quiet: bool,
    /// Run the queries on a Ballista cluster of `tads cluster` processes (df://host:port); locations must be readable by its executors
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
}

/// What a location turned out to be.
pub(crate) enum Kind {
    /// Telemetry (Parquet files, hive-partitioned or not).
    Telemetry,
    /// A `tads score` output.
    Scores,
    /// A `tads watch` output: its complete rounds, read as one score output.
    Watch,
    /// A directory of models.
    Models,
}

/// What `location` holds; an error naming it when it is none of the kinds.
pub(crate) async fn kind_of(location: &Location) -> Result<Kind, UserError> {
    let bad = |e: String| UserError(format!("--data {location}: {e}"));
    if location.file().is_some() {
        return Ok(Kind::Telemetry);
    }
    if ScoreManifest::read(location).await.ok().flatten().is_some() {
        return Ok(Kind::Scores);
    }
    let checkpoint = location.child(tads_jobs::watch::CHECKPOINT);
    if datafusion::object_store::ObjectStoreExt::head(location.store(), &checkpoint)
        .await
        .is_ok()
    {
        return Ok(Kind::Watch);
    }
    let objects = location.list_all().await.map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = objects
        .iter()
        .filter_map(|o| location.relative(&o.location))
        .collect();
    if names.iter().any(|n| n.ends_with(".parquet")) {
        Ok(Kind::Telemetry)
    } else if names
        .iter()
        .any(|n| n.ends_with("/model.json") || n.ends_with("/group.json"))
    {
        Ok(Kind::Models)
    } else if names.is_empty() {
        Err(bad("is empty or does not exist".into()))
    } else {
        Err(bad(
            "holds neither Parquet files, a score output nor models".into(),
        ))
    }
}

/// `name`, or `name_2`, `name_3`, … when taken.
fn free_name(ctx: &SessionContext, name: &str) -> String {
    let taken = |n: &str| ctx.table_exist(n).unwrap_or(false);
    if !taken(name) {
        return name.to_string();
    }
    (2..)
        .map(|i| format!("{name}_{i}"))
        .find(|n| !taken(n))
        .unwrap_or_else(|| name.to_string())
}

/// A table [`session`] registered.
#[derive(Clone)]
pub(crate) struct Registered {
    /// Its name in the session (`telemetry`, `scored`, `alerts`, `telemetry_2`, …).
    pub name: String,
    /// `telemetry`, `scored` or `alerts`.
    pub kind: &'static str,
    /// Where its files are.
    pub location: Location,
    /// The `--data` location it came from (a score output's folder for `scored` and `alerts`).
    pub source: Location,
    /// Its hive partition columns.
    pub partitions: Vec<String>,
}

impl Registered {
    /// Whether it reads the rounds of a `tads watch` output (see [`register_watch`]).
    pub(crate) fn of_watch(&self) -> bool {
        self.kind != "telemetry" && self.location.url() == self.source.sub("rounds").url()
    }
}

/// A session with every TADS function and the locations of `args` registered; returns it and a
/// line per table registered.
async fn session(args: &SqlArgs) -> anyhow::Result<(SessionContext, Vec<String>)> {
    let (ctx, _, tables, mut lines) =
        session_for(&args.data, args.models.as_deref(), args.cluster.as_deref()).await?;
    if let Some(url) = &args.cluster {
        lines.push(format!("cluster: {url}"));
    }
    lines.extend(tables.iter().map(|t| {
        let by = if t.partitions.is_empty() {
            String::new()
        } else {
            format!(", partitioned by {}", t.partitions.join(", "))
        };
        format!("{}: {}{by}", t.name, t.location)
    }));
    Ok((ctx, lines))
}

/// A session with every TADS function, the models of `models` (default `./models` when it
/// exists) and each location of `data` registered by what it is (a dataset → `telemetry`, a
/// score output → `scored` and `alerts`, a model directory → more models). Returns the session,
/// its models, the tables and a line per model directory loaded.
pub(crate) async fn session_for(
    data: &[String],
    models: Option<&str>,
    cluster: Option<&str>,
) -> anyhow::Result<(SessionContext, ModelRegistry, Vec<Registered>, Vec<String>)> {
    let user = |e: String| UserError(e);
    let registry = ModelRegistry::new();
    let mut lines = Vec::new();
    let mut model_dirs: Vec<Location> = Vec::new();
    match models {
        Some(m) => model_dirs.push(Location::parse(m).map_err(|e| user(format!("--models {e}")))?),
        None if std::path::Path::new("models").is_dir() => {
            model_dirs.push(Location::parse("models").map_err(|e| user(e.to_string()))?);
        }
        None => {}
    }
    let mut datasets: Vec<(Location, Kind)> = Vec::new();
    for d in data {
        let location = Location::parse_data(d).map_err(|e| user(format!("--data {e}")))?;
        match kind_of(&location).await? {
            Kind::Models => model_dirs.push(location),
            kind => datasets.push((location, kind)),
        }
    }
    for dir in &model_dirs {
        let n = registry
            .load_dir(dir)
            .await
            .map_err(|e| user(format!("--models {dir}: {e}")))?;
        lines.push(format!("models: {n} loaded from {dir}"));
    }
    let ctx = match cluster {
        None => tads_sql::session(),
        Some(url) => tads_cluster::connect(url, tads_sql::session().state())
            .await
            .map_err(|e| user(e.to_string()))?,
    };
    tads_sql::register_all(&ctx, &registry).map_err(|e| user(e.to_string()))?;
    let mut tables = Vec::new();
    for (location, kind) in datasets {
        tables.extend(register_location(&ctx, &location, kind).await?);
    }
    Ok((ctx, registry, tables, lines))
}

/// Registers the tables of `location` (a dataset, or a score output's `scored` and `alerts`)
/// under free names in `ctx`; a model directory registers none.
pub(crate) async fn register_location(
    ctx: &SessionContext,
    location: &Location,
    kind: Kind,
) -> Result<Vec<Registered>, UserError> {
    let parts: Vec<(&str, Location)> = match kind {
        Kind::Telemetry => vec![("telemetry", location.clone())],
        Kind::Scores => {
            let mut p = vec![("scored", location.sub("scored"))];
            if location
                .get_opt("alerts/alerts.parquet")
                .await
                .ok()
                .flatten()
                .is_some()
            {
                p.push(("alerts", location.sub("alerts")));
            }
            p
        }
        Kind::Watch => {
            let names = (free_name(ctx, "scored"), free_name(ctx, "alerts"));
            return register_watch(ctx, location, &names).await;
        }
        Kind::Models => vec![],
    };
    let mut tables = Vec::new();
    for (kind, loc) in parts {
        let name = free_name(ctx, kind);
        let partitions = tads_sql::register_dataset(ctx, &name, &loc)
            .await
            .map_err(|e| UserError(format!("--data {e}")))?;
        tables.push(Registered {
            name,
            kind,
            location: loc,
            source: location.clone(),
            partitions,
        });
    }
    Ok(tables)
}

/// The complete rounds of the `tads watch` output `location` (those with their manifest; a round
/// being written has none yet), in order.
pub(crate) async fn watch_rounds(location: &Location) -> Result<Vec<String>, UserError> {
    let rounds = location.sub("rounds");
    let objects = rounds
        .list_all()
        .await
        .map_err(|e| UserError(format!("--data {location}: {e}")))?;
    let mut done: Vec<String> = objects
        .iter()
        .filter_map(|o| rounds.relative(&o.location))
        .filter_map(|r| r.strip_suffix("/_manifest.json").map(str::to_string))
        .filter(|r| !r.contains('/'))
        .collect();
    done.sort();
    Ok(done)
}

/// Registers the complete rounds of the `tads watch` output `location` as one score output:
/// `names.0` over every round's scored rows, `names.1` the latest record of each alert (a round's
/// alerts file holds the alerts that opened, went on or closed in it: the record with the latest
/// end, a closed one before an open one, is the alert's state).
pub(crate) async fn register_watch(
    ctx: &SessionContext,
    location: &Location,
    names: &(String, String),
) -> Result<Vec<Registered>, UserError> {
    let user = |e: String| UserError(format!("--data {location}: {e}"));
    let rounds = watch_rounds(location).await?;
    if rounds.is_empty() {
        return Err(user(
            "is a `tads watch` output without a complete round yet".into(),
        ));
    }
    let scored_dirs: Vec<String> = rounds
        .iter()
        .map(|r| format!("rounds/{r}/scored"))
        .collect();
    let partitions = tads_sql::register_dirs(ctx, &names.0, location, &scored_dirs)
        .await
        .map_err(|e| user(e.to_string()))?;
    let alert_files: Vec<String> = rounds
        .iter()
        .map(|r| format!("rounds/{r}/alerts/alerts.parquet"))
        .collect();
    // The rounds' records under a name of their own only while the view over them is planned:
    // the view holds the table itself, so the name is dropped again.
    let raw = format!("{}__rounds", names.1);
    tads_sql::register_file_list(ctx, &raw, location, &alert_files)
        .await
        .map_err(|e| user(e.to_string()))?;
    let latest = ctx
        .sql(&format!(
            "SELECT * EXCLUDE (__latest) FROM (SELECT *, row_number() OVER (PARTITION BY alert_id              ORDER BY end_ts DESC, \"open\" ASC) AS __latest FROM \"{raw}\") WHERE __latest = 1"
        ))
        .await
        .map_err(|e| user(format!("its alerts: {e}")));
    let _ = ctx.deregister_table(raw.as_str());
    ctx.register_table(names.1.as_str(), latest?.into_view())
        .map_err(|e| user(e.to_string()))?;
    Ok(vec![
        Registered {
            name: names.0.clone(),
            kind: "scored",
            location: location.sub("rounds"),
            source: location.clone(),
            partitions,
        },
        Registered {
            name: names.1.clone(),
            kind: "alerts",
            location: location.sub("rounds"),
            source: location.clone(),
            partitions: vec![],
        },
    ])
}

pub(crate) async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let (ctx, tables) = session(&args).await?;
    let format = match args.format {
        Format::Table => PrintFormat::Table,
        Format::Csv => PrintFormat::Csv,
        Format::Tsv => PrintFormat::Tsv,
        Format::Json => PrintFormat::Json,
        Format::Ndjson => PrintFormat::NdJson,
    };
    let mut options = PrintOptions {
        format,
        quiet: args.quiet,
        // A limit for reading in a terminal: the other formats feed other tools, every row.
        maxrows: if args.maxrows == 0 || !matches!(args.format, Format::Table) {
            MaxRows::Unlimited
        } else {
            MaxRows::Limited(args.maxrows)
        },
        color: false,
        instrumented_registry: Arc::new(InstrumentedObjectStoreRegistry::new()),
    };
    if args.command.is_empty() && args.file.is_empty() {
        if !args.quiet {
            println!("TADS {} SQL on DataFusion", env!("CARGO_PKG_VERSION"));
            for t in &tables {
                println!("  {t}");
            }
            println!(
                "TADS functions: SELECT name, syntax FROM tads_help();  help on one: SELECT * FROM tads_help('pca_score');  \\? commands, \\q quit"
            );
        }
        exec_from_repl(&ctx, &mut options)
            .await
            .map_err(|e| anyhow::anyhow!("the REPL failed: {e}"))?;
        return Ok(());
    }
    let mut failed = 0;
    for sql in &args.command {
        if let Err(e) = tads_sql::depth::check_sql_depth("-c", sql) {
            eprintln!("error: {e}");
            failed += 1;
        } else if let Err(e) = exec_from_commands(&ctx, vec![sql.clone()], &options).await {
            eprintln!("error: {}", explain(&args, &e.strip_backtrace()));
            failed += 1;
        }
    }
    for file in &args.file {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: -f {file}: {e}");
                failed += 1;
                continue;
            }
        };
        for statement in statements(&text) {
            if let Err(e) = tads_sql::depth::check_sql_depth(file, &statement) {
                eprintln!("error: {e}");
                failed += 1;
            } else if let Err(e) = exec_from_commands(&ctx, vec![statement], &options).await {
                eprintln!("error: {file}: {}", explain(&args, &e.strip_backtrace()));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        // Each failure was reported on its own line already.
        return Err(crate::Reported.into());
    }
    Ok(())
}

/// An error of a statement on one line; on a cluster, with what to start where it lacks the
/// TADS functions.
fn explain(args: &SqlArgs, e: &str) -> String {
    match &args.cluster {
        Some(url) => tads_cluster::explain(url, &e),
        None => e.replace('\n', " "),
    }
}

/// The statements of a SQL file, split as datafusion-cli splits them (a statement ends with a
/// line ending in `;`; lines starting with `--` or `#!` are skipped), so that each one can be
/// run on its own and its failure counted.
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut query = String::new();
    for line in text.lines() {
        if line.starts_with("--") || line.starts_with("#!") {
            continue;
        }
        let line = line.trim_end();
        query.push_str(line);
        if line.ends_with(';') {
            out.push(std::mem::take(&mut query));
        } else {
            query.push('\n');
        }
    }
    if query.contains(|c| c != '\n') {
        out.push(query);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_splits_into_statements_as_datafusion_cli_splits_it() {
        let text = "-- a comment\nSELECT 1;\nSELECT\n  2;\n\nSELECT 3";
        assert_eq!(
            super::statements(text),
            ["SELECT 1;", "SELECT\n  2;", "\nSELECT 3\n"]
        );
        assert!(super::statements("-- only\n\n").is_empty());
    }
}
