//! `tads import prometheus`: range queries from Prometheus's HTTP API into hive-partitioned
//! Parquet that `tads train`, `tads score` and `tads watch` read.
//!
//! Each `--query NAME=PROMQL` becomes the Float64 column NAME; each series' `--key` label (by
//! default `instance`) becomes `host_id`, and its samples' times `ts`. A query must give at most
//! one series per key (aggregate it `by (instance)` otherwise): two would be two values for
//! one cell, and the error says so. Files are `date=YYYY-MM-DD/part-<first time, µs>.parquet`,
//! sorted by host and time, written through the writer protocol (lock, in-progress marker,
//! manifest last). With `--follow` it keeps pulling each `--every` what has come since, one
//! file per pull, until Ctrl-C, then writes the manifest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use datafusion::arrow::array::TimestampMicrosecondArray;
use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use serde::Serialize;
use tads_store::{Location, Output};

use crate::{UserError, thousands};

/// `tads import`.
#[derive(Debug, Subcommand)]
pub(crate) enum ImportCommand {
    /// Pull Prometheus range queries into hive-partitioned Parquet (one column per query, host_id from a label)
    Prometheus(PrometheusArgs),
}

/// The ready query set for node_exporter (`--preset node`): CPU, memory, load, disk and
/// network of each instance.
pub(crate) const NODE_QUERIES: [(&str, &str); 7] = [
    (
        "cpu_busy_pct",
        r#"100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[1m])))"#,
    ),
    (
        "mem_used_pct",
        "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    ),
    ("load1", "node_load1"),
    (
        "disk_read_bps",
        "sum by (instance) (rate(node_disk_read_bytes_total[1m]))",
    ),
    (
        "disk_write_bps",
        "sum by (instance) (rate(node_disk_written_bytes_total[1m]))",
    ),
    (
        "net_rx_bps",
        r#"sum by (instance) (rate(node_network_receive_bytes_total{device!="lo"}[1m]))"#,
    ),
    (
        "net_tx_bps",
        r#"sum by (instance) (rate(node_network_transmit_bytes_total{device!="lo"}[1m]))"#,
    ),
];

/// Arguments of `tads import prometheus`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
tads import prometheus --url http://127.0.0.1:9090 --preset node --start -6h --step 15s --out ./data/node\n  \
tads import prometheus --url http://127.0.0.1:9090 --query 'load1=node_load1' \\\n      \
--query 'mem=100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)' --start -1h --out ./data/m --follow")]
pub(crate) struct PrometheusArgs {
    /// Prometheus's base URL
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9090")]
    url: String,
    /// A column and its PromQL range query, NAME=QUERY (repeatable; a bare metric name names itself)
    #[arg(long = "query", value_name = "NAME=QUERY")]
    queries: Vec<String>,
    /// A ready query set: `node` (node_exporter's CPU, memory, load, disk and network; see README)
    #[arg(long, value_name = "SET", value_parser = ["node"])]
    preset: Option<String>,
    /// The label whose value becomes host_id
    #[arg(long, value_name = "LABEL", default_value = "instance")]
    key: String,
    /// Resolution, e.g. 15s, 1m, 500ms
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_micros)]
    step: i64,
    /// First time: RFC 3339, or relative to now like -6h
    #[arg(
        long,
        value_name = "TIME",
        default_value = "-1h",
        allow_hyphen_values = true
    )]
    start: String,
    /// Last time: RFC 3339, relative like -5m, or now (ignored with --follow)
    #[arg(
        long,
        value_name = "TIME",
        default_value = "now",
        allow_hyphen_values = true
    )]
    end: String,
    /// Where to write: a directory or s3://bucket/prefix
    #[arg(long, value_name = "DIR|URL")]
    out: String,
    /// Keep pulling what comes, one file per --every, until Ctrl-C
    #[arg(long)]
    follow: bool,
    /// How often to pull with --follow
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_micros, requires = "follow")]
    every: i64,
    /// Replace an earlier TADS output at --out
    #[arg(long)]
    overwrite: bool,
    /// Remove the lock a writer that is gone left at --out
    #[arg(long)]
    break_lock: bool,
    /// Print nothing but errors
    #[arg(long, short)]
    quiet: bool,
}

/// A positive duration in microseconds.
fn parse_micros(text: &str) -> Result<i64, String> {
    match tads_jobs::config::parse_duration(text) {
        Some(us) if us > 0 => Ok(us),
        _ => Err(format!(
            "`{text}` is not a positive duration like 500ms, 15s or 1m"
        )),
    }
}

/// `now`, `-6h` (before now) or an RFC 3339 time.
fn parse_time(flag: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, UserError> {
    let bad = || {
        UserError(format!(
            "--{flag} {text}: not a time (write RFC 3339 like 2026-01-01T00:00:00Z, -6h or now)"
        ))
    };
    let t = text.trim();
    if t == "now" {
        return Ok(now);
    }
    if let Some(ago) = t.strip_prefix('-').or_else(|| t.strip_prefix("now-")) {
        let us = tads_jobs::config::parse_duration(ago).ok_or_else(bad)?;
        return Ok(now - chrono::Duration::microseconds(us));
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| bad())
}

/// The columns and their queries, checked.
fn queries(args: &PrometheusArgs) -> Result<Vec<(String, String)>, UserError> {
    let mut out: Vec<(String, String)> = Vec::new();
    if args.preset.is_some() {
        out.extend(
            NODE_QUERIES
                .iter()
                .map(|(n, q)| (n.to_string(), q.to_string())),
        );
    }
    for q in &args.queries {
        let named = q.split_once('=').filter(|(n, _)| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        let (name, query) = match named {
            Some((n, query)) => (n.to_string(), query.to_string()),
            None if !q.is_empty()
                && q.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') =>
            {
                (q.replace(':', "_"), q.clone())
            }
            None => {
                return Err(UserError(format!(
                    "--query {q}: name its column, NAME=QUERY (e.g. load1=node_load1)"
                )));
            }
        };
        out.push((name, query));
    }
    if out.is_empty() {
        return Err(UserError(
            "no query: give --query NAME=QUERY or --preset node".into(),
        ));
    }
    for (i, (name, _)) in out.iter().enumerate() {
        if ["ts", "host_id"].contains(&name.as_str()) || out[..i].iter().any(|(n, _)| n == name) {
            return Err(UserError(format!(
                "--query {name}=…: the column name is taken"
            )));
        }
    }
    Ok(out)
}

/// One pull's rows: (host, time in µs) → a value per query.
type Rows = BTreeMap<(String, i64), Vec<Option<f64>>>;

/// A Prometheus server.
struct Prometheus {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Prometheus {
    /// `query` over [start, end] at `step` (µs), into column `column` of `rows`; pieces of at
    /// most 10,000 steps (Prometheus refuses more than 11,000 points per series).
    async fn pull(
        &self,
        (column, name, query): (usize, &str, &str),
        (start, end, step): (i64, i64, i64),
        rows: &mut Rows,
        columns: usize,
    ) -> anyhow::Result<()> {
        let mut from = start;
        while from <= end {
            let to = end.min(from.saturating_add(step.saturating_mul(9_999)));
            self.piece((column, name, query), (from, to, step), rows, columns)
                .await?;
            from = to.saturating_add(step);
            if to == i64::MAX {
                break;
            }
        }
        Ok(())
    }

    async fn piece(
        &self,
        (column, name, query): (usize, &str, &str),
        (start, end, step): (i64, i64, i64),
        rows: &mut Rows,
        columns: usize,
    ) -> anyhow::Result<()> {
        let secs = |us: i64| format!("{:.6}", us as f64 / 1e6);
        let url = format!("{}/api/v1/query_range", self.url.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .query(&[
                ("query", query.to_string()),
                ("start", secs(start)),
                ("end", secs(end)),
                ("step", secs(step)),
            ])
            .send()
            .await
            .map_err(|e| UserError(format!("--url {}: {e}", self.url)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| UserError(format!("--url {}: {e}", self.url)))?;
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            UserError(format!(
                "{url}: answered {status} with no Prometheus JSON; is --url a Prometheus server?"
            ))
        })?;
        if json["status"] != "success" {
            return Err(UserError(format!(
                "--query {name}: Prometheus refused it: {}",
                json["error"].as_str().unwrap_or("(no message)")
            ))
            .into());
        }
        let Some(series) = json["data"]["result"].as_array() else {
            return Err(UserError(format!("--query {name}: not a range result")).into());
        };
        let mut seen = std::collections::BTreeSet::new();
        for s in series {
            let host = s["metric"][&self.key].as_str().unwrap_or("all").to_string();
            if !seen.insert(host.clone()) {
                return Err(UserError(format!(
                    "--query {name}: gives more than one series for {}=\"{host}\"; aggregate it, e.g. sum by ({}) (…)",
                    self.key, self.key
                ))
                .into());
            }
            for v in s["values"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let (Some(t), Some(x)) = (v[0].as_f64(), v[1].as_str()) else {
                    continue;
                };
                let ts = (t * 1e6).round() as i64;
                let value = x.parse::<f64>().ok().filter(|x| x.is_finite());
                rows.entry((host.clone(), ts))
                    .or_insert_with(|| vec![None; columns])[column] = value;
            }
        }
        Ok(())
    }
}

/// One row of [`Rows`]: (host, time) and the values.
type Row<'a> = (&'a (String, i64), &'a Vec<Option<f64>>);

/// The rows as one batch per UTC date: `ts`, `host_id`, one Float64 column per query.
fn batches(names: &[String], rows: &Rows) -> anyhow::Result<BTreeMap<String, RecordBatch>> {
    let mut fields = vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("host_id", DataType::Utf8, false),
    ];
    fields.extend(names.iter().map(|n| Field::new(n, DataType::Float64, true)));
    let schema = Arc::new(Schema::new(fields));
    let mut by_date: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for (key, values) in rows {
        let date = DateTime::from_timestamp_micros(key.1)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string();
        by_date.entry(date).or_default().push((key, values));
    }
    let mut out = BTreeMap::new();
    for (date, rows) in by_date {
        let ts = TimestampMicrosecondArray::from(rows.iter().map(|(k, _)| k.1).collect::<Vec<_>>())
            .with_timezone("UTC");
        let hosts: StringArray = rows.iter().map(|(k, _)| Some(k.0.as_str())).collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(ts), Arc::new(hosts)];
        for j in 0..names.len() {
            let values: Float64Array = rows.iter().map(|(_, v)| v[j]).collect();
            columns.push(Arc::new(values));
        }
        out.insert(date, RecordBatch::try_new(Arc::clone(&schema), columns)?);
    }
    Ok(out)
}

/// One written file, as listed in the manifest.
#[derive(Debug, Clone, Serialize)]
struct ImportedFile {
    path: String,
    rows: u64,
    bytes: u64,
}

/// `_manifest.json` of an import.
#[derive(Debug, Serialize)]
struct ImportManifest<'a> {
    kind: &'static str,
    format_version: u32,
    tads_version: &'static str,
    created_at: DateTime<Utc>,
    url: &'a str,
    key: &'a str,
    step_seconds: f64,
    queries: BTreeMap<&'a str, &'a str>,
    rows: u64,
    partitioning: [&'static str; 1],
    files: &'a [ImportedFile],
}

/// Pulls [start, end] and writes its files; returns them.
async fn pull_and_write(
    prom: &Prometheus,
    queries: &[(String, String)],
    (start, end, step): (i64, i64, i64),
    output: &Output,
) -> anyhow::Result<Vec<ImportedFile>> {
    let mut rows = Rows::new();
    for (j, (name, query)) in queries.iter().enumerate() {
        prom.pull(
            (j, name, query),
            (start, end, step),
            &mut rows,
            queries.len(),
        )
        .await?;
    }
    let names: Vec<String> = queries.iter().map(|(n, _)| n.clone()).collect();
    let mut files = Vec::new();
    for (date, batch) in batches(&names, &rows)? {
        // `part-<first time in µs>`: in time order within a date, and named as TADS names its
        // files (so a killed import's files may be replaced with --overwrite).
        let path = format!("date={date}/part-{start}.parquet");
        let props = tads_jobs::parquet_out::writer_properties(&batch.schema());
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))?;
        writer.write(&batch)?;
        let bytes = writer.into_inner()?;
        let len = bytes.len() as u64;
        output.put(&path, bytes).await?;
        files.push(ImportedFile {
            path,
            rows: batch.num_rows() as u64,
            bytes: len,
        });
    }
    Ok(files)
}

pub(crate) async fn run(cmd: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Prometheus(args) = cmd;
    let queries = queries(&args)?;
    let now = Utc::now();
    let start = parse_time("start", &args.start, now)?.timestamp_micros();
    let end = parse_time("end", &args.end, now)?.timestamp_micros();
    if end < start && !args.follow {
        return Err(UserError(format!(
            "--end {} is before --start {}",
            args.end, args.start
        ))
        .into());
    }
    let out = Location::parse(&args.out).map_err(|e| UserError(format!("--out {e}")))?;
    let prom = Prometheus {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        url: args.url.clone(),
        key: args.key.clone(),
    };
    let step = args.step;
    // Times on the step grid, so pulls join without gaps or overlaps.
    let align = |t: i64| t.div_euclid(step) * step;
    let id = format!("import-{}", now.format("%Y%m%dT%H%M%SZ"));
    let output = Output::begin(
        &out,
        args.overwrite,
        args.break_lock,
        "tads import prometheus",
        &id,
    )
    .await
    .map_err(|e| UserError(e.to_string()))?;
    let mut files = Vec::new();
    let mut from = align(start);
    let mut stop = crate::interrupted();
    let result: anyhow::Result<()> = async {
        loop {
            let until = if args.follow {
                align(Utc::now().timestamp_micros()).saturating_sub(step)
            } else {
                align(end)
            };
            if until >= from {
                let written = pull_and_write(&prom, &queries, (from, until, step), &output).await?;
                if !args.quiet {
                    for f in &written {
                        eprintln!("wrote {} ({} rows)", f.path, thousands(f.rows));
                    }
                }
                files.extend(written);
                from = until.saturating_add(step);
            }
            if !args.follow
                || crate::sleep_or_interrupted(Duration::from_micros(args.every as u64), &mut stop)
                    .await
            {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = result {
        output.abort().await;
        return Err(e);
    }
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let manifest = ImportManifest {
        kind: "tads-import",
        format_version: 1,
        tads_version: env!("CARGO_PKG_VERSION"),
        created_at: Utc::now(),
        url: &args.url,
        key: &args.key,
        step_seconds: step as f64 / 1e6,
        queries: queries
            .iter()
            .map(|(n, q)| (n.as_str(), q.as_str()))
            .collect(),
        rows,
        partitioning: ["date"],
        files: &files,
    };
    output.finish(serde_json::to_vec_pretty(&manifest)?).await?;
    if !args.quiet {
        println!(
            "imported {} rows of {} columns in {} files to {out}",
            thousands(rows),
            queries.len(),
            files.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_relative_absolute_and_now() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time("start", "now", now).unwrap(), now);
        assert_eq!(
            parse_time("start", "-6h", now).unwrap().to_rfc3339(),
            "2026-01-01T18:00:00+00:00"
        );
        assert_eq!(
            parse_time("start", "2026-01-01T00:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert!(parse_time("start", "yesterday", now).is_err());
    }
}
