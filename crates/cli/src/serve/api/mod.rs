//! The handlers of `tads serve`'s JSON API. Every query runs in the shared DataFusion session;
//! values from the request reach SQL only as checked identifiers (columns of the table's own
//! schema) or as quoted literals. This module holds the errors, the request's parameters, the
//! tables and the datasets' and models' routes; [`analytics`] the datasets' analytics, [`runs`]
//! the alerts, host timelines, runs and their quality.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::DateTime;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use serde_json::{Value, json};

use tads_jobs::eval::evaluate;
use tads_jobs::score::ScoreManifest;

use super::{AppState, Registered, Shared};

mod analytics;
mod runs;

pub(crate) use analytics::{histogram, summary, timeseries, topk};
pub(crate) use runs::{alerts, errors, eval, refresh_gauges, runs, timeline};

/// An error answer: `{"error": "…"}` with its status.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with this status.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn missing(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A failure of the server itself (500).
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<DataFusionError> for ApiError {
    fn from(e: DataFusionError) -> Self {
        let text = e.strip_backtrace().replace('\n', " ");
        match e {
            DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..) => Self::bad(text),
            _ => Self::internal(text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Any path no route matches.
pub(crate) async fn not_found() -> ApiError {
    ApiError::missing("no such route (GET /api/openapi.json lists them)")
}

/// The query string's parameters (the last value of a repeated one).
fn params(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// An integer parameter within `range`, or `default` when absent.
fn int_param(
    p: &HashMap<String, String>,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    let Some(text) = p.get(name) else {
        return Ok(default);
    };
    match text.parse::<i64>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(ApiError::bad(format!(
            "{name}={text}: expected an integer from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

/// A time parameter (RFC 3339) as microseconds.
fn time_param(p: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    p.get(name)
        .map(|t| {
            // RFC 3339 allows a lower-case `t` and `z`.
            DateTime::parse_from_rfc3339(&t.to_ascii_uppercase())
                .map(|d| d.timestamp_micros())
                .map_err(|_| {
                    ApiError::bad(format!(
                        "{name}={t}: expected an RFC 3339 time such as 2026-01-01T00:00:00Z"
                    ))
                })
        })
        .transpose()
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Batches as a JSON array of objects (NULLs as `null`).
fn to_json(batches: &[RecordBatch]) -> Result<Vec<Value>, ApiError> {
    let mut buf = Vec::new();
    {
        let mut writer = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::JsonArray>(&mut buf);
        for b in batches {
            writer.write(b).map_err(ApiError::internal)?;
        }
        writer.finish().map_err(ApiError::internal)?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(ApiError::internal)
}

async fn query(state: &AppState, sql: &str) -> Result<Vec<Value>, ApiError> {
    let batches = state.ctx.sql(sql).await?.collect().await?;
    to_json(&batches)
}

/// The registered table `id`, if there is one.
pub(crate) fn find_table(state: &AppState, id: &str) -> Option<Registered> {
    state.tables().iter().find(|t| t.name == id).cloned()
}

/// The registered table `id`, or a 404 naming the ones there are.
fn table(state: &AppState, id: &str) -> Result<Registered, ApiError> {
    let tables = state.tables();
    tables
        .iter()
        .find(|t| t.name == id)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            ApiError::missing(format!(
                "no dataset `{id}` (datasets: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
}

/// The columns of table `name` with their types.
async fn columns(state: &AppState, name: &str) -> Result<Vec<(String, DataType)>, ApiError> {
    let df = state.ctx.table(name).await?;
    Ok(df
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect())
}

/// `column` if table `name` has it, else a 400 naming the columns it has (those `ok` allows).
async fn column_of(
    state: &AppState,
    name: &str,
    param: &str,
    column: Option<&String>,
    ok: fn(&DataType) -> bool,
) -> Result<String, ApiError> {
    let cols = columns(state, name).await?;
    let allowed: Vec<&str> = cols
        .iter()
        .filter(|(_, t)| ok(t))
        .map(|(c, _)| c.as_str())
        .collect();
    match column {
        Some(c) if allowed.contains(&c.as_str()) => Ok(c.clone()),
        given => Err(ApiError::bad(format!(
            "{param}={}: expected one of {}",
            given.map_or("(missing)", |s| s.as_str()),
            allowed.join(", ")
        ))),
    }
}

/// `GET /api/health`.
pub(crate) async fn health(State(state): State<Shared>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "datasets": state.tables().len(),
        "models": state.registry.names().len(),
    }))
}

/// `GET /api/datasets`.
pub(crate) async fn datasets(State(state): State<Shared>) -> Json<Value> {
    Json(Value::Array(
        state
            .tables()
            .iter()
            .map(|t| {
                json!({
                    "id": t.name,
                    "kind": t.kind,
                    "location": t.location.to_string(),
                    "partitions": t.partitions,
                })
            })
            .collect(),
    ))
}

/// `GET /api/datasets/{id}`: what it is, its columns and its rows.
pub(crate) async fn dataset(State(state): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let t = table(&state, &id)?;
    let cols = columns(&state, &t.name).await?;
    let rows = state.ctx.table(t.name.as_str()).await?.count().await?;
    Ok(Json(json!({
        "id": t.name,
        "kind": t.kind,
        "location": t.location.to_string(),
        "partitions": t.partitions,
        "rows": rows,
        "columns": cols.iter().map(|(n, ty)| json!({"name": n, "type": ty.to_string()})).collect::<Vec<_>>(),
    })))
}

/// `GET /api/models`.
pub(crate) async fn models(State(state): State<Shared>) -> Json<Value> {
    let list = state
        .registry
        .names()
        .iter()
        .filter_map(|n| state.registry.get(n))
        .map(|m| {
            let a = &m.artifact;
            json!({
                "name": a.name,
                "features": a.features,
                "k": a.pca.k,
                "fingerprint": a.fingerprint,
                "seasonal": a.seasonal.is_some(),
                "scoring_space": a.scoring_space.is_some(),
            })
        })
        .collect();
    Json(Value::Array(list))
}

/// `GET /api/models/{name}`: the model as `model.json` has it (group members: `group/member`).
pub(crate) async fn model(State(state): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let m = state
        .registry
        .get(&name)
        .ok_or_else(|| ApiError::missing(format!("no model `{name}` is loaded")))?;
    serde_json::to_value(&m.artifact)
        .map(Json)
        .map_err(ApiError::internal)
}
