//! The datasets' analytics: a summary, the top values of a column, a histogram and time series,
//! as the ready queries in `sql/analytics/` compute them.

use super::*;

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
