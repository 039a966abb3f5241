//! Alerts, host timelines, score runs and their quality (eval, errors by group), and the gauges
//! `/metrics` reports of them.

use super::*;

/// The registered tables of a kind.
fn of_kind(state: &AppState, kind: &str) -> Vec<Registered> {
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
    files_gauges(state).await;
    super::super::live::watch_gauges(state).await;
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

/// `tads_files_served{table}`: the Parquet files each served table reads now (listed at each
/// scrape, so files a writer added since count).
async fn files_gauges(state: &AppState) {
    let tables: Vec<Registered> = state.tables().clone();
    for t in tables {
        let Ok(objects) = t.location.list_all().await else {
            continue;
        };
        // A watch output's tables share its rounds/ folder: each counts its own files.
        let own = format!(
            "/{}/",
            if t.kind == "alerts" {
                "alerts"
            } else {
                "scored"
            }
        );
        let watch = t.of_watch();
        let files = objects
            .iter()
            .map(|o| o.location.as_ref())
            .filter(|p| p.ends_with(".parquet") && (!watch || p.contains(&own)))
            .count();
        metrics::gauge!("tads_files_served", "table" => t.name).set(files as f64);
    }
}

/// The served score runs: each `scored` table's output folder with its manifest.
async fn runs_served(state: &AppState) -> Vec<(ScoreManifest, Registered)> {
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
