//! The handlers of `tads serve`'s JSON API. Every query runs in the shared DataFusion session;
//! values from the request reach SQL only as checked identifiers (columns of the table's own
//! schema) or as quoted literals.

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

use super::{AppState, Shared};

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
pub(crate) fn find_table(state: &AppState, id: &str) -> Option<super::Registered> {
    state.tables().iter().find(|t| t.name == id).cloned()
}

/// The registered table `id`, or a 404 naming the ones there are.
fn table(state: &AppState, id: &str) -> Result<super::Registered, ApiError> {
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

fn is_time(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(..))
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric()
}

fn is_groupable(t: &DataType) -> bool {
    !t.is_floating() && !matches!(t, DataType::List(_) | DataType::Struct(_))
}

/// `GET /api/datasets/{id}/summary`: rows, time span, keys, labelled rows, alerts.
pub(crate) async fn summary(State(state): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let t = table(&state, &id)?;
    let cols = columns(&state, &t.name).await?;
    let has =
        |name: &str, ok: fn(&DataType) -> bool| cols.iter().any(|(c, ty)| c == name && ok(ty));
    let null = "CAST(NULL AS BIGINT)";
    let (first, last) = match ["ts", "start_ts"].into_iter().find(|c| has(c, is_time)) {
        Some(c) => (
            format!("CAST(min({c}) AS VARCHAR)"),
            format!("CAST(max({c}) AS VARCHAR)"),
        ),
        None => (
            "CAST(NULL AS VARCHAR)".into(),
            "CAST(NULL AS VARCHAR)".into(),
        ),
    };
    let hosts = if has("host_id", |_| true) {
        "count(DISTINCT host_id)".to_string()
    } else {
        null.to_string()
    };
    let labelled = if has("is_anomaly", |t| t == &DataType::Boolean) {
        "sum(CASE WHEN is_anomaly THEN 1 ELSE 0 END)".to_string()
    } else {
        null.to_string()
    };
    let alerts = if has("alert_id", |_| true) {
        "count(DISTINCT alert_id)".to_string()
    } else {
        null.to_string()
    };
    let sql = format!(
        "SELECT count(*) AS \"rows\", {first} AS first_ts, {last} AS last_ts, \
         CAST({hosts} AS BIGINT) AS hosts, CAST({labelled} AS BIGINT) AS labelled_rows, \
         CAST({alerts} AS BIGINT) AS alerts FROM {}",
        ident(&t.name)
    );
    let mut rows = query(&state, &sql).await?;
    Ok(Json(rows.pop().unwrap_or(Value::Null)))
}

/// The query parameters, the table `id` and its column named by parameter `param` (one `ok`
/// allows).
async fn table_column(
    state: &AppState,
    id: &str,
    raw: Option<String>,
    param: &str,
    ok: fn(&DataType) -> bool,
) -> Result<(HashMap<String, String>, String, String), ApiError> {
    let p = params(raw);
    let t = table(state, id)?;
    let column = column_of(state, &t.name, param, p.get(param), ok).await?;
    Ok((p, t.name.clone(), column))
}

/// `GET /api/datasets/{id}/topk?column=&k=`: the most frequent values of a column.
pub(crate) async fn topk(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let (p, name, column) = table_column(&state, &id, raw, "column", is_groupable).await?;
    let k = int_param(&p, "k", 10, 1..=1000)?;
    let sql = format!(
        "SELECT CAST({c} AS VARCHAR) AS value, count(*) AS count FROM {t} GROUP BY 1 \
         ORDER BY count DESC, value LIMIT {k}",
        c = ident(&column),
        t = ident(&name)
    );
    Ok(Json(
        json!({ "column": column, "values": query(&state, &sql).await? }),
    ))
}

/// `GET /api/datasets/{id}/histogram?metric=&bins=`: equal-width bins over the finite values.
pub(crate) async fn histogram(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let (p, table_name, metric) = table_column(&state, &id, raw, "metric", is_number).await?;
    let bins = int_param(&p, "bins", 20, 1..=200)?;
    let (m, name) = (
        format!("CAST({} AS DOUBLE)", ident(&metric)),
        ident(&table_name),
    );
    let finite = format!("{m} > -1.7e308 AND {m} < 1.7e308");
    let range = query(
        &state,
        &format!("SELECT min({m}) AS lo, max({m}) AS hi, count(*) AS n FROM {name} WHERE {finite}"),
    )
    .await?;
    let r = range.first().cloned().unwrap_or(Value::Null);
    let (Some(lo), Some(hi)) = (r["lo"].as_f64(), r["hi"].as_f64()) else {
        return Ok(Json(json!({ "metric": metric, "count": 0, "bins": [] })));
    };
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let sql = format!(
        "SELECT least(CAST(floor(({m} - {lo:?}) / {width:?}) AS BIGINT), {last}) AS bin, count(*) AS count \
         FROM {name} WHERE {finite} GROUP BY 1 ORDER BY 1",
        last = if hi > lo { bins - 1 } else { 0 },
    );
    let counts = query(&state, &sql).await?;
    let out: Vec<Value> = counts
        .iter()
        .filter_map(|c| {
            let b = c["bin"].as_i64()?;
            Some(json!({
                "lo": lo + b as f64 * width,
                "hi": if hi > lo { lo + (b + 1) as f64 * width } else { hi },
                "count": c["count"].as_i64()?,
            }))
        })
        .collect();
    Ok(Json(json!({
        "metric": metric,
        "count": r["n"].as_i64().unwrap_or(0),
        "bins": out,
    })))
}

/// `GET /api/datasets/{id}/timeseries?metrics=&agg=mean|p95&bucket=1h&from=&to=&host=`: each
/// metric's mean or 95th percentile per time bucket, oldest first (at most 10,000 buckets).
pub(crate) async fn timeseries(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let p = params(raw);
    let t = table(&state, &id)?;
    let cols = columns(&state, &t.name).await?;
    if !cols.iter().any(|(c, ty)| c == "ts" && is_time(ty)) {
        return Err(ApiError::bad(format!(
            "dataset `{id}` has no time column ts"
        )));
    }
    let list = p.get("metrics").map(String::as_str).unwrap_or_default();
    let metrics: Vec<&str> = list.split(',').filter(|m| !m.is_empty()).collect();
    if metrics.is_empty() || metrics.len() > 20 {
        return Err(ApiError::bad(
            "metrics: expected 1 to 20 comma-separated numeric columns",
        ));
    }
    for m in &metrics {
        if !cols.iter().any(|(c, ty)| c == m && ty.is_numeric()) {
            return Err(ApiError::bad(format!(
                "metrics: `{m}` is not a numeric column of `{id}`"
            )));
        }
    }
    let agg = p.get("agg").map_or("mean", String::as_str);
    let of = |m: &str| match agg {
        "p95" => Ok(format!(
            "approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY CAST({c} AS DOUBLE))",
            c = ident(m)
        )),
        "mean" => Ok(format!("avg(CAST({} AS DOUBLE))", ident(m))),
        other => Err(ApiError::bad(format!("agg={other}: expected mean or p95"))),
    };
    let bucket = p.get("bucket").map_or("1h", String::as_str);
    let seconds = tads_jobs::config::parse_duration(bucket)
        .filter(|us| *us % 1_000_000 == 0 && (1_000_000..=30 * 86_400_000_000).contains(us))
        .map(|us| us / 1_000_000)
        .ok_or_else(|| {
            ApiError::bad(format!(
                "bucket={bucket}: expected a span of whole seconds from 1s to 30d, such as 90s, 5m, 1h or 1d"
            ))
        })?;
    let mut filters = vec!["ts IS NOT NULL".to_string()];
    if let Some(h) = p.get("host") {
        filters.push(format!("CAST(host_id AS VARCHAR) = {}", literal(h)));
    }
    if let Some(us) = time_param(&p, "from")? {
        filters.push(format!("ts >= to_timestamp_micros({us})"));
    }
    if let Some(us) = time_param(&p, "to")? {
        filters.push(format!("ts < to_timestamp_micros({us})"));
    }
    let mut select = Vec::new();
    for m in &metrics {
        select.push(format!("{} AS {}", of(m)?, ident(m)));
    }
    let sql = format!(
        "SELECT CAST(b AS VARCHAR) AS bucket, \"rows\", {names} FROM (\
         SELECT date_bin(INTERVAL '{seconds} seconds', ts, TIMESTAMP '2000-01-01T00:00:00') AS b, \
         count(*) AS \"rows\", {select} FROM {t} WHERE {filters} GROUP BY 1) ORDER BY b LIMIT 10000",
        names = metrics
            .iter()
            .map(|m| ident(m))
            .collect::<Vec<_>>()
            .join(", "),
        select = select.join(", "),
        t = ident(&t.name),
        filters = filters.join(" AND "),
    );
    Ok(Json(json!({
        "metrics": metrics,
        "agg": agg,
        "bucket_seconds": seconds,
        "points": query(&state, &sql).await?,
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

/// The registered tables of a kind.
fn of_kind(state: &AppState, kind: &str) -> Vec<super::Registered> {
    state
        .tables()
        .iter()
        .filter(|t| t.kind == kind)
        .cloned()
        .collect()
}

/// The filters of alerts that overlap `[from, to)`.
fn overlapping(from: Option<i64>, to: Option<i64>) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(t) = from {
        f.push(format!("__end >= to_timestamp_micros({t})"));
    }
    if let Some(t) = to {
        f.push(format!("__start < to_timestamp_micros({t})"));
    }
    f
}

/// The alerts of every served score output, as one `UNION ALL` (None without any).
fn alerts_sql(state: &AppState) -> Option<String> {
    let tables = of_kind(state, "alerts");
    (!tables.is_empty()).then(|| {
        tables
            .iter()
            .map(|t| {
                format!(
                    "SELECT alert_id, host_id, region, project_id, CAST(start_ts AS VARCHAR) AS start_ts, \
                     CAST(end_ts AS VARCHAR) AS end_ts, CAST(opened_ts AS VARCHAR) AS opened_ts, \
                     CAST(points AS BIGINT) AS points, peak_score, severity, top_metrics, model, \
                     \"open\", start_ts AS __start, end_ts AS __end FROM {}",
                    ident(&t.name)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    })
}

const ALERT_COLUMNS: &str = "alert_id, host_id, region, project_id, start_ts, end_ts, opened_ts, \
                             points, peak_score, severity, top_metrics, model, \"open\"";

/// `GET /api/alerts?host=&severity=&since=&until=&open=&limit=`: newest first.
pub(crate) async fn alerts(State(state): State<Shared>, RawQuery(raw): RawQuery) -> ApiResult {
    let p = params(raw);
    let mut filters = Vec::new();
    if let Some(h) = p.get("host") {
        filters.push(format!("host_id = {}", literal(h)));
    }
    if let Some(s) = p.get("severity") {
        if !matches!(s.as_str(), "info" | "warning" | "critical") {
            return Err(ApiError::bad(format!(
                "severity={s}: expected info, warning or critical"
            )));
        }
        filters.push(format!("severity = {}", literal(s)));
    }
    filters.extend(overlapping(
        time_param(&p, "since")?,
        time_param(&p, "until")?,
    ));
    if let Some(o) = p.get("open") {
        let open = match o.as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(ApiError::bad(format!("open={o}: expected true or false"))),
        };
        filters.push(format!("\"open\" = {open}"));
    }
    let limit = int_param(&p, "limit", 100, 1..=10_000)?;
    let Some(all) = alerts_sql(&state) else {
        return Ok(Json(json!([])));
    };
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM ({all}){filter} ORDER BY __start DESC, alert_id LIMIT {limit}"
    );
    Ok(Json(Value::Array(query(&state, &sql).await?)))
}

/// `GET /api/hosts/{host}/timeline?from=&to=&metrics=&limit=`: the host's scored rows in time
/// order (time, fused score, alert id, the metrics asked for) and its alerts in that span.
pub(crate) async fn timeline(
    State(state): State<Shared>,
    Path(host): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let p = params(raw);
    let scored = of_kind(&state, "scored");
    let Some(first) = scored.first() else {
        return Err(ApiError::missing(
            "no score output is served (--data <out of tads score>)",
        ));
    };
    let cols = columns(&state, &first.name).await?;
    let mut metrics = Vec::new();
    if let Some(list) = p.get("metrics").filter(|l| !l.is_empty()) {
        for m in list.split(',') {
            if !cols.iter().any(|(c, t)| c == m && t.is_numeric()) {
                return Err(ApiError::bad(format!(
                    "metrics: `{m}` is not a numeric column of the scored rows"
                )));
            }
            metrics.push(ident(m));
        }
    }
    let (from, to) = (time_param(&p, "from")?, time_param(&p, "to")?);
    let limit = int_param(&p, "limit", 5000, 1..=100_000)?;
    let mut filters = vec![format!("CAST(host_id AS VARCHAR) = {}", literal(&host))];
    if let Some(t) = from {
        filters.push(format!("ts >= to_timestamp_micros({t})"));
    }
    if let Some(t) = to {
        filters.push(format!("ts < to_timestamp_micros({t})"));
    }
    let extra: String = metrics.iter().map(|m| format!(", {m}")).collect();
    let union = scored
        .iter()
        .map(|t| {
            format!(
                "SELECT CAST(ts AS VARCHAR) AS ts, ts AS __t, score, alert_id{extra} FROM {} WHERE {}",
                ident(&t.name),
                filters.join(" AND ")
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = query(
        &state,
        &format!("SELECT ts, score, alert_id{extra} FROM ({union}) ORDER BY __t LIMIT {limit}"),
    )
    .await?;
    let alerts = match alerts_sql(&state) {
        None => Vec::new(),
        Some(all) => {
            let mut f = vec![format!("host_id = {}", literal(&host))];
            f.extend(overlapping(from, to));
            query(
                &state,
                &format!(
                    "SELECT {ALERT_COLUMNS} FROM ({all}) WHERE {} ORDER BY __start",
                    f.join(" AND ")
                ),
            )
            .await?
        }
    };
    Ok(Json(json!({
        "host": host,
        "threshold": 1.0,
        "rows": rows,
        "alerts": alerts,
    })))
}

/// Sets the gauges `/metrics` reports about the served data: open alerts by severity, models.
pub(crate) async fn refresh_gauges(state: &AppState) {
    metrics::gauge!("tads_models_loaded").set(state.registry.names().len() as f64);
    metrics::gauge!("tads_datasets_served").set(state.tables().len() as f64);
    let Some(all) = alerts_sql(state) else {
        return;
    };
    let sql = format!("SELECT severity, count(*) AS n FROM ({all}) WHERE \"open\" GROUP BY 1");
    let counts = query(state, &sql).await.unwrap_or_default();
    for severity in ["info", "warning", "critical"] {
        let n = counts
            .iter()
            .find(|c| c["severity"] == severity)
            .and_then(|c| c["n"].as_f64())
            .unwrap_or(0.0);
        metrics::gauge!("tads_alerts_open", "severity" => severity).set(n);
    }
}

/// The served score runs: each `scored` table's output folder with its manifest.
async fn runs_served(state: &AppState) -> Vec<(ScoreManifest, super::Registered)> {
    let mut runs = Vec::new();
    for t in of_kind(state, "scored") {
        if let Ok(Some(m)) = ScoreManifest::read(&t.source).await {
            runs.push((m, t));
        }
    }
    runs
}

/// `GET /api/runs`: the served score runs.
pub(crate) async fn runs(State(state): State<Shared>) -> Json<Value> {
    Json(Value::Array(
        runs_served(&state)
            .await
            .into_iter()
            .map(|(m, t)| {
                json!({
                    "id": m.run_id,
                    "model": m.model.name,
                    "data": m.data,
                    "location": t.source.to_string(),
                    "rows": m.rows,
                    "alerts": m.alerts.as_ref().map(|a| a.count),
                    "started_at": m.started_at.to_rfc3339(),
                    "finished_at": m.finished_at.to_rfc3339(),
                })
            })
            .collect(),
    ))
}

/// The evaluation of run `id` against its labels (`label=` names the column).
async fn run_eval(state: &AppState, id: &str, label: Option<&str>) -> Result<Value, ApiError> {
    let runs = runs_served(state).await;
    let (_, t) = runs
        .iter()
        .find(|(m, _)| m.run_id == id)
        .ok_or_else(|| ApiError::missing(format!("no served score run `{id}`")))?;
    let report = evaluate(&t.source, label).await.map_err(|e| match e {
        tads_jobs::Error::Input(m) | tads_jobs::Error::Data(m) => ApiError::bad(m),
        other => ApiError::internal(other),
    })?;
    serde_json::to_value(report).map_err(ApiError::internal)
}

/// `GET /api/runs/{id}/eval?label=`: what `tads eval --json` reports for the run.
pub(crate) async fn eval(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let p = params(raw);
    Ok(Json(
        run_eval(&state, &id, p.get("label").map(String::as_str)).await?,
    ))
}

/// `GET /api/runs/{id}/errors?group_by=anomaly_type|region|project_id&label=`: the run's
/// quality per group (per anomaly type: events, detected, recall, time to detect; per region or
/// project: point counts and events).
pub(crate) async fn errors(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let p = params(raw);
    let by = p.get("group_by").map_or("anomaly_type", String::as_str);
    let field = match by {
        "anomaly_type" => "events",
        "region" => "by_region",
        "project_id" => "by_project",
        other => {
            return Err(ApiError::bad(format!(
                "group_by={other}: expected anomaly_type, region or project_id"
            )));
        }
    };
    let report = run_eval(&state, &id, p.get("label").map(String::as_str)).await?;
    Ok(Json(json!({ "group_by": by, "groups": report[field] })))
}
