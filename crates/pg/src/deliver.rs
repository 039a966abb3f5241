//! The schema's migrations, and delivering a batch in one transaction.

use futures::pin_mut;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::{Batch, Pg, Record, Result};

/// The migrations, in order: (version, name, SQL with `{s}` for the quoted schema).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "tables and dashboard indexes",
    "
CREATE TABLE {s}.datasets (
  id text PRIMARY KEY, uri text NOT NULL, seed bigint NOT NULL, arguments jsonb NOT NULL,
  rows bigint NOT NULL, events_by_type jsonb NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE {s}.models (
  fingerprint text PRIMARY KEY, name text NOT NULL, kind text NOT NULL, features text[] NOT NULL,
  k integer, thresholds jsonb, rows bigint NOT NULL, training_data text NOT NULL,
  created_at timestamptz NOT NULL);
CREATE INDEX models_by_name ON {s}.models (name, created_at DESC);
CREATE TABLE {s}.runs (
  id text PRIMARY KEY, kind text NOT NULL, model text, dataset text, output text,
  status text NOT NULL, rows_done bigint NOT NULL DEFAULT 0, files_done bigint NOT NULL DEFAULT 0,
  rows_per_second double precision, started_at timestamptz NOT NULL, finished_at timestamptz,
  error text, updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX runs_by_status ON {s}.runs (status, started_at DESC);
CREATE TABLE {s}.alerts (
  alert_id text PRIMARY KEY, host_id text NOT NULL, region text, project_id text,
  start_ts timestamptz NOT NULL, end_ts timestamptz NOT NULL, opened_ts timestamptz NOT NULL,
  points bigint NOT NULL, peak_score double precision NOT NULL, severity text NOT NULL,
  top_metrics text[] NOT NULL, model text NOT NULL, model_fingerprint text NOT NULL,
  run_id text NOT NULL, open boolean NOT NULL);
CREATE INDEX alerts_recent ON {s}.alerts (start_ts DESC);
CREATE INDEX alerts_by_host ON {s}.alerts (host_id, start_ts DESC);
CREATE INDEX alerts_open ON {s}.alerts (host_id) WHERE open;
CREATE INDEX alerts_by_run ON {s}.alerts (run_id);
CREATE TABLE {s}.eval_results (
  run_id text NOT NULL, breakdown text NOT NULL, key text NOT NULL, metrics jsonb NOT NULL,
  PRIMARY KEY (run_id, breakdown, key));
",
)];

/// Applies the migrations this database lacks; returns the versions applied now. Runs in one
/// transaction under an advisory lock keyed by the schema, so concurrent callers wait for each
/// other and the second finds nothing left to do.
pub async fn migrate(pg: &Pg, client: &mut Client) -> Result<Vec<i32>> {
    let s = pg.schema_ident();
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg.error("migrate", &e))?;
    let lock = format!("tads-migrate:{}", pg.schema());
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock])
        .await
        .map_err(|e| pg.error("migrate: lock", &e))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
           version integer PRIMARY KEY, name text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .await
    .map_err(|e| pg.error("migrate: create schema", &e))?;
    let applied: Vec<i32> = tx
        .query(&format!("SELECT version FROM {s}.schema_migrations"), &[])
        .await
        .map_err(|e| pg.error("migrate", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut now = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(&sql.replace("{s}", &s))
            .await
            .map_err(|e| pg.error(&format!("migration {version} ({name})"), &e))?;
        tx.execute(
            &format!("INSERT INTO {s}.schema_migrations (version, name) VALUES ($1, $2)"),
            &[version, name],
        )
        .await
        .map_err(|e| pg.error("migrate", &e))?;
        now.push(*version);
    }
    tx.commit()
        .await
        .map_err(|e| pg.error("migrate: commit", &e))?;
    Ok(now)
}

/// Delivers `batch` in one transaction: upserts on the natural keys, alerts through binary COPY
/// into a temporary table and one `INSERT … ON CONFLICT`.
pub async fn deliver(pg: &Pg, client: &mut Client, batch: &Batch) -> Result<()> {
    let s = pg.schema_ident();
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg.error("deliver", &e))?;
    for record in &batch.records {
        match record {
            Record::Dataset(d) => {
                let events = serde_json::to_value(&d.events_by_type).unwrap_or_default();
                tx.execute(
                    &format!(
                        "INSERT INTO {s}.datasets (id, uri, seed, arguments, rows, events_by_type, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (id) DO UPDATE SET uri = EXCLUDED.uri, seed = EXCLUDED.seed,
                           arguments = EXCLUDED.arguments, rows = EXCLUDED.rows,
                           events_by_type = EXCLUDED.events_by_type, created_at = EXCLUDED.created_at"
                    ),
                    &[&d.id, &d.uri, &d.seed, &d.arguments, &d.rows, &events, &d.created_at],
                )
                .await
                .map_err(|e| pg.error("datasets", &e))?;
            }
            Record::Models(models) => {
                let upsert = tx
                    .prepare(&format!(
                        "INSERT INTO {s}.models (fingerprint, name, kind, features, k, thresholds, rows, training_data, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                         ON CONFLICT (fingerprint) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
                           features = EXCLUDED.features, k = EXCLUDED.k, thresholds = EXCLUDED.thresholds,
                           rows = EXCLUDED.rows, training_data = EXCLUDED.training_data,
                           created_at = EXCLUDED.created_at"
                    ))
                    .await
                    .map_err(|e| pg.error("models", &e))?;
                for m in models {
                    tx.execute(
                        &upsert,
                        &[
                            &m.fingerprint,
                            &m.name,
                            &m.kind,
                            &m.features,
                            &m.k,
                            &m.thresholds,
                            &m.rows,
                            &m.training_data,
                            &m.created_at,
                        ],
                    )
                    .await
                    .map_err(|e| pg.error("models", &e))?;
                }
            }
            Record::Run(r) => {
                tx.execute(
                    &format!(
                        "INSERT INTO {s}.runs (id, kind, model, dataset, output, status, rows_done, files_done,
                           rows_per_second, started_at, finished_at, error, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())
                         ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, model = EXCLUDED.model,
                           dataset = EXCLUDED.dataset, output = EXCLUDED.output, status = EXCLUDED.status,
                           rows_done = EXCLUDED.rows_done, files_done = EXCLUDED.files_done,
                           rows_per_second = EXCLUDED.rows_per_second, started_at = EXCLUDED.started_at,
                           finished_at = EXCLUDED.finished_at, error = EXCLUDED.error, updated_at = now()"
                    ),
                    &[
                        &r.id,
                        &r.kind,
                        &r.model,
                        &r.dataset,
                        &r.output,
                        &r.status,
                        &r.rows_done,
                        &r.files_done,
                        &r.rows_per_second,
                        &r.started_at,
                        &r.finished_at,
                        &r.error,
                    ],
                )
                .await
                .map_err(|e| pg.error("runs", &e))?;
            }
            Record::Alerts(alerts) => {
                if alerts.is_empty() {
                    continue;
                }
                const COLUMNS: &str = "alert_id, host_id, region, project_id, start_ts, end_ts, opened_ts, \
                    points, peak_score, severity, top_metrics, model, model_fingerprint, run_id, open";
                tx.batch_execute(&format!(
                    "CREATE TEMP TABLE IF NOT EXISTS tads_alerts_in (LIKE {s}.alerts) ON COMMIT DELETE ROWS"
                ))
                .await
                .map_err(|e| pg.error("alerts", &e))?;
                let sink = tx
                    .copy_in(&format!(
                        "COPY tads_alerts_in ({COLUMNS}) FROM STDIN BINARY"
                    ))
                    .await
                    .map_err(|e| pg.error("alerts: copy", &e))?;
                let types = [
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::INT8,
                    Type::FLOAT8,
                    Type::TEXT,
                    Type::TEXT_ARRAY,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::BOOL,
                ];
                let writer = BinaryCopyInWriter::new(sink, &types);
                pin_mut!(writer);
                for a in alerts {
                    let row: [&(dyn ToSql + Sync); 15] = [
                        &a.alert_id,
                        &a.host_id,
                        &a.region,
                        &a.project_id,
                        &a.start_ts,
                        &a.end_ts,
                        &a.opened_ts,
                        &a.points,
                        &a.peak_score,
                        &a.severity,
                        &a.top_metrics,
                        &a.model,
                        &a.model_fingerprint,
                        &a.run_id,
                        &a.open,
                    ];
                    writer
                        .as_mut()
                        .write(&row)
                        .await
                        .map_err(|e| pg.error("alerts: copy", &e))?;
                }
                writer
                    .finish()
                    .await
                    .map_err(|e| pg.error("alerts: copy", &e))?;
                let set = COLUMNS
                    .split(", ")
                    .skip(1)
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                tx.batch_execute(&format!(
                    "INSERT INTO {s}.alerts ({COLUMNS}) SELECT {COLUMNS} FROM tads_alerts_in
                     ON CONFLICT (alert_id) DO UPDATE SET {set}"
                ))
                .await
                .map_err(|e| pg.error("alerts", &e))?;
            }
            Record::Eval(rows) => {
                let upsert = tx
                    .prepare(&format!(
                        "INSERT INTO {s}.eval_results (run_id, breakdown, key, metrics) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (run_id, breakdown, key) DO UPDATE SET metrics = EXCLUDED.metrics"
                    ))
                    .await
                    .map_err(|e| pg.error("eval_results", &e))?;
                for r in rows {
                    tx.execute(&upsert, &[&r.run_id, &r.breakdown, &r.key, &r.metrics])
                        .await
                        .map_err(|e| pg.error("eval_results", &e))?;
                }
            }
        }
    }
    tx.commit()
        .await
        .map_err(|e| pg.error("deliver: commit", &e))?;
    Ok(())
}
