//! `GET /api/openapi.json`: the OpenAPI 3.0 document of every route, its parameters and
//! responses. The test suite drives it with schemathesis against a running server.

use axum::Json;
use serde_json::{Map, Value, json};

fn error() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": { "error": { "type": "string" } }
    })
}

fn string_or_null() -> Value {
    json!({ "type": "string", "nullable": true })
}

fn int_or_null() -> Value {
    json!({ "type": "integer", "nullable": true })
}

fn dataset_ref() -> Value {
    json!({
        "type": "object",
        "required": ["id", "kind", "location", "partitions"],
        "properties": {
            "id": { "type": "string" },
            "kind": { "type": "string", "enum": ["telemetry", "scored", "alerts"] },
            "location": { "type": "string" },
            "partitions": { "type": "array", "items": { "type": "string" } }
        }
    })
}

fn dataset() -> Value {
    let mut d = dataset_ref();
    d["required"] = json!(["id", "kind", "location", "partitions", "rows", "columns"]);
    d["properties"]["rows"] = json!({ "type": "integer", "minimum": 0 });
    d["properties"]["columns"] = json!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "type"],
            "properties": { "name": { "type": "string" }, "type": { "type": "string" } }
        }
    });
    d
}

fn summary() -> Value {
    json!({
        "type": "object",
        "required": ["rows", "first_ts", "last_ts", "hosts", "labelled_rows", "alerts"],
        "properties": {
            "rows": { "type": "integer" },
            "first_ts": string_or_null(),
            "last_ts": string_or_null(),
            "hosts": int_or_null(),
            "labelled_rows": int_or_null(),
            "alerts": int_or_null()
        }
    })
}

fn alert() -> Value {
    json!({
        "type": "object",
        "required": ["alert_id", "host_id", "start_ts", "end_ts", "opened_ts", "points",
                     "peak_score", "severity", "top_metrics", "model", "open"],
        "properties": {
            "alert_id": { "type": "string" },
            "host_id": { "type": "string" },
            "region": string_or_null(),
            "project_id": string_or_null(),
            "start_ts": { "type": "string" },
            "end_ts": { "type": "string" },
            "opened_ts": { "type": "string" },
            "points": { "type": "integer", "minimum": 0 },
            "peak_score": { "type": "number", "nullable": true },
            "severity": { "type": "string", "enum": ["info", "warning", "critical"] },
            "top_metrics": { "type": "array", "items": { "type": "string", "nullable": true } },
            "model": { "type": "string" },
            "open": { "type": "boolean" }
        }
    })
}

fn timeline() -> Value {
    json!({
        "type": "object",
        "required": ["host", "threshold", "rows", "alerts"],
        "properties": {
            "host": { "type": "string" },
            "threshold": { "type": "number" },
            "rows": { "type": "array", "items": {
                "type": "object",
                "required": ["ts", "score", "alert_id"],
                "properties": {
                    "ts": { "type": "string" },
                    "score": { "type": "number", "nullable": true },
                    "alert_id": string_or_null()
                },
                "additionalProperties": { "type": "number", "nullable": true }
            }},
            "alerts": { "type": "array", "items": { "$ref": "#/components/schemas/Alert" } }
        }
    })
}

fn schemas() -> Value {
    json!({
        "Error": error(),
        "Health": {
            "type": "object",
            "required": ["status", "version", "datasets", "models"],
            "properties": {
                "status": { "type": "string", "enum": ["ok"] },
                "version": { "type": "string" },
                "datasets": { "type": "integer" },
                "models": { "type": "integer" }
            }
        },
        "DatasetRef": dataset_ref(),
        "Dataset": dataset(),
        "Summary": summary(),
        "TopK": {
            "type": "object",
            "required": ["column", "values"],
            "properties": {
                "column": { "type": "string" },
                "values": { "type": "array", "items": {
                    "type": "object",
                    "required": ["value", "count"],
                    "properties": { "value": string_or_null(), "count": { "type": "integer" } }
                }}
            }
        },
        "Histogram": {
            "type": "object",
            "required": ["metric", "count", "bins"],
            "properties": {
                "metric": { "type": "string" },
                "count": { "type": "integer" },
                "bins": { "type": "array", "items": {
                    "type": "object",
                    "required": ["lo", "hi", "count"],
                    "properties": {
                        "lo": { "type": "number" }, "hi": { "type": "number" },
                        "count": { "type": "integer" }
                    }
                }}
            }
        },
        "TimeSeries": {
            "type": "object",
            "required": ["metrics", "agg", "bucket_seconds", "points"],
            "properties": {
                "metrics": { "type": "array", "items": { "type": "string" } },
                "agg": { "type": "string", "enum": ["mean", "p95"] },
                "bucket_seconds": { "type": "integer" },
                "points": { "type": "array", "items": {
                    "type": "object",
                    "required": ["bucket", "rows"],
                    "properties": { "bucket": { "type": "string" }, "rows": { "type": "integer" } },
                    "additionalProperties": { "type": "number", "nullable": true }
                }}
            }
        },
        "ModelSummary": {
            "type": "object",
            "required": ["name", "features", "k", "fingerprint", "seasonal", "scoring_space"],
            "properties": {
                "name": { "type": "string" },
                "features": { "type": "array", "items": { "type": "string" } },
                "k": { "type": "integer" },
                "fingerprint": { "type": "string" },
                "seasonal": { "type": "boolean" },
                "scoring_space": { "type": "boolean", "description": "holds a scoring space section: measured on its training rows as scoring measures them, and kept (by default where its limits do not hold there; always with --scoring-space)" }
            }
        },
        "Model": {
            "type": "object",
            "required": ["name", "features", "fingerprint"],
            "properties": {
                "name": { "type": "string" },
                "features": { "type": "array", "items": { "type": "string" } },
                "fingerprint": { "type": "string" }
            }
        },
        "Alert": alert(),
        "Run": {
            "type": "object",
            "required": ["id", "model", "data", "location", "rows", "alerts", "started_at", "finished_at"],
            "properties": {
                "id": { "type": "string" }, "model": { "type": "string" },
                "data": { "type": "string" }, "location": { "type": "string" },
                "rows": { "type": "integer" }, "alerts": int_or_null(),
                "started_at": { "type": "string" }, "finished_at": { "type": "string" }
            }
        },
        "Eval": {
            "type": "object",
            "required": ["run_id", "model", "point", "point_adjusted", "events", "alerts", "false_alerts"],
            "properties": {
                "run_id": { "type": "string" }, "model": { "type": "string" },
                "point": { "type": "object" }, "point_adjusted": { "type": "object" },
                "events": { "type": "object" }, "alerts": { "type": "integer" },
                "false_alerts": { "type": "integer" }
            }
        },
        "Errors": {
            "type": "object",
            "required": ["group_by", "groups"],
            "properties": {
                "group_by": { "type": "string", "enum": ["anomaly_type", "region", "project_id"] },
                "groups": { "type": "object" }
            }
        },
        "Timeline": timeline(),
        "JobRequest": job_request(),
        "Job": job()
    })
}

fn job_request() -> Value {
    json!({
        "type": "object",
        "required": ["kind"],
        "additionalProperties": false,
        "properties": {
            "kind": { "type": "string", "enum": ["generate", "train", "score", "eval"] },
            "args": {
                "type": "object",
                "description": "the command's options by long name: out (generate, score: a folder below --work), data (train, score) and scored (eval): a served table id or a folder below --work; model, hosts, duration, set, … as on the command line; true for a flag, a list to repeat",
                "additionalProperties": {
                    "oneOf": [
                        { "type": "string" }, { "type": "number" }, { "type": "boolean" },
                        { "type": "array", "items": { "oneOf": [{ "type": "string" }, { "type": "number" }] } }
                    ]
                }
            }
        }
    })
}

fn job() -> Value {
    json!({
        "type": "object",
        "required": ["id", "kind", "state", "argv", "created_at", "rows_done", "served_as", "log"],
        "properties": {
            "id": { "type": "string" },
            "kind": { "type": "string", "enum": ["generate", "train", "score", "eval"] },
            "state": { "type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"] },
            "argv": { "type": "array", "items": { "type": "string" } },
            "created_at": { "type": "string" },
            "started_at": string_or_null(),
            "finished_at": string_or_null(),
            "phase": string_or_null(),
            "rows_done": { "type": "integer", "minimum": 0 },
            "rows_total": int_or_null(),
            "rows_per_s": { "type": "number", "nullable": true },
            "eta_s": { "type": "number", "nullable": true },
            "output": string_or_null(),
            "served_as": { "type": "array", "items": { "type": "string" } },
            "error": string_or_null(),
            "exit_code": int_or_null(),
            "result": { "nullable": true },
            "log": { "type": "array", "items": { "type": "string" } }
        }
    })
}

/// The routes of jobs.
fn job_paths(p: &mut Map<String, Value>) {
    let id = || {
        param(
            "id",
            "path",
            json!({"type": "string"}),
            "a job id from /api/jobs",
        )
    };
    let missing = ("404", "no such job");
    // A job as the answer, with 202 Accepted instead of 200.
    let accepted = |what: &str, errors: &[(&str, &str)]| {
        let mut r = responses(ok(what, reference("Job")), errors);
        if let Some(m) = r.as_object_mut() {
            let body = m.remove("200");
            m.insert("202".into(), body.unwrap_or_default());
        }
        r
    };
    let post = accepted(
        "the job, queued",
        &[
            ("400", "the request or one of its options is wrong"),
            ("409", "the server has no --work folder"),
            ("415", "the body is not JSON"),
            ("413", "the body is too large"),
        ],
    );
    p.insert(
        "/api/jobs".into(),
        json!({
            "get": { "summary": "every job, newest first", "parameters": [],
                     "responses": responses(ok("jobs", array_of("Job")), &[]) },
            "post": {
                "summary": "start a generate, train, score or eval job",
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": reference("JobRequest") } } },
                "responses": post
            }
        }),
    );
    let mut cancel = accepted("the job, being cancelled", &[missing]);
    cancel["409"] = ok("the job has already ended", reference("Error"));
    p.insert(
        "/api/jobs/{id}".into(),
        json!({
            "get": { "summary": "one job", "parameters": [id()],
                     "responses": responses(ok("the job", reference("Job")), &[missing]) },
            "delete": { "summary": "cancel a queued or running job", "parameters": [id()],
                        "responses": cancel }
        }),
    );
    let mut events = responses(
        json!({ "description": "Server-Sent Events: `job` events with the Job as data, the last in a final state",
                "content": { "text/event-stream": { "schema": { "type": "string" } } } }),
        &[missing],
    );
    events["200"]["x-stream"] = json!(true);
    p.insert(
        "/api/jobs/{id}/events".into(),
        json!({ "get": { "summary": "a job's progress as it happens", "parameters": [id()],
                         "responses": events } }),
    );
    let mut live = responses(
        json!({ "description": "Server-Sent Events: a `hello` event, then a `scores` event whenever a served score output changes (a `tads watch` round committed); data {version, tables, at}; the stream ends when the server stops",
                "content": { "text/event-stream": { "schema": { "type": "string" } } } }),
        &[],
    );
    live["200"]["x-stream"] = json!(true);
    p.insert(
        "/api/live".into(),
        json!({ "get": { "summary": "changes of the served score outputs as they happen",
                         "responses": live } }),
    );
}

/// A JSON response of `schema` (a name under components, or an inline schema).
fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": reference(name) })
}

/// The answers of a route: 200 with `body`, and the error codes it can give.
fn responses(body: Value, errors: &[(&str, &str)]) -> Value {
    let mut r = Map::new();
    r.insert("200".into(), body);
    for (code, what) in errors.iter().chain(&[("401", "a token is needed")]) {
        r.insert((*code).into(), ok(what, reference("Error")));
    }
    Value::Object(r)
}

fn param(name: &str, place: &str, schema: Value, description: &str) -> Value {
    json!({
        "name": name, "in": place, "required": place == "path",
        "schema": schema, "description": description
    })
}

/// A query parameter that must be given.
fn required(name: &str, schema: Value, description: &str) -> Value {
    let mut p = param(name, "query", schema, description);
    p["required"] = json!(true);
    p
}

fn get(summary: &str, params: Vec<Value>, responses: Value) -> Value {
    json!({ "get": { "summary": summary, "parameters": params, "responses": responses } })
}

fn paths() -> Value {
    let id = || {
        param(
            "id",
            "path",
            json!({"type": "string"}),
            "a dataset id from /api/datasets",
        )
    };
    let bad = ("400", "a parameter is wrong");
    let missing = ("404", "no such dataset, model or host data");
    let int = |min: i64, max: i64| json!({"type": "integer", "minimum": min, "maximum": max});
    let time = |what: &str| {
        param(
            what,
            "query",
            json!({"type": "string", "format": "date-time"}),
            "an RFC 3339 time",
        )
    };
    let name = json!({"type": "string", "minLength": 1});
    let mut p = Map::new();
    p.insert(
        "/api/health".into(),
        get(
            "liveness and what is served",
            vec![],
            responses(ok("ok", reference("Health")), &[]),
        ),
    );
    p.insert(
        "/api/datasets".into(),
        get(
            "the served tables",
            vec![],
            responses(ok("datasets", array_of("DatasetRef")), &[]),
        ),
    );
    p.insert(
        "/api/datasets/{id}".into(),
        get(
            "one table: kind, columns, rows",
            vec![id()],
            responses(ok("the dataset", reference("Dataset")), &[missing]),
        ),
    );
    p.insert(
        "/api/datasets/{id}/summary".into(),
        get(
            "rows, time span, hosts, labelled rows, alerts",
            vec![id()],
            responses(ok("the summary", reference("Summary")), &[bad, missing]),
        ),
    );
    p.insert(
        "/api/datasets/{id}/topk".into(),
        get(
            "the most frequent values of a column",
            vec![
                id(),
                required(
                    "column",
                    name.clone(),
                    "a column of the dataset (region, project_id, host_id, anomaly_type, …)",
                ),
                param("k", "query", int(1, 1000), "how many values (default 10)"),
            ],
            responses(ok("the values", reference("TopK")), &[bad, missing]),
        ),
    );
    p.insert(
        "/api/datasets/{id}/histogram".into(),
        get(
            "equal-width histogram of a numeric column",
            vec![
                id(),
                required("metric", name.clone(), "a numeric column"),
                param("bins", "query", int(1, 200), "how many bins (default 20)"),
            ],
            responses(ok("the bins", reference("Histogram")), &[bad, missing]),
        ),
    );
    p.insert(
        "/api/models".into(),
        get(
            "the loaded models",
            vec![],
            responses(ok("models", array_of("ModelSummary")), &[]),
        ),
    );
    p.insert(
        "/api/models/{name}".into(),
        get(
            "one model, as its model.json",
            vec![param(
                "name",
                "path",
                json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}),
                "a model name (a group member: group/member)",
            )],
            responses(ok("the model", reference("Model")), &[missing]),
        ),
    );
    p.insert(
        "/api/alerts".into(),
        get(
            "alerts of the served score outputs, newest first",
            vec![
                param("host", "query", json!({"type": "string"}), "only this host"),
                param(
                    "severity",
                    "query",
                    json!({"type": "string", "enum": ["info", "warning", "critical"]}),
                    "only this severity",
                ),
                time("since"),
                time("until"),
                param(
                    "open",
                    "query",
                    json!({"type": "boolean"}),
                    "only open (true) or closed (false) alerts",
                ),
                param(
                    "limit",
                    "query",
                    int(1, 10000),
                    "at most this many (default 100)",
                ),
            ],
            responses(ok("alerts", array_of("Alert")), &[bad]),
        ),
    );
    p.insert(
        "/api/hosts/{host}/timeline".into(),
        get(
            "a host's scored rows and alerts in time order",
            vec![
                param(
                    "host",
                    "path",
                    json!({"type": "string"}),
                    "the host (alerts.key)",
                ),
                time("from"),
                time("to"),
                param(
                    "metrics",
                    "query",
                    json!({"type": "string"}),
                    "comma-separated numeric columns to include",
                ),
                param(
                    "limit",
                    "query",
                    int(1, 100000),
                    "at most this many rows (default 5000)",
                ),
            ],
            responses(ok("the timeline", reference("Timeline")), &[bad, missing]),
        ),
    );
    job_paths(&mut p);
    p.insert("/metrics".into(), json!({ "get": { "summary": "Prometheus metrics", "responses": {
        "200": { "description": "the text format", "content": { "text/plain": { "schema": { "type": "string" } } } }
    }}}));
    Value::Object(p)
}

/// `GET /api/openapi.json`.
pub(crate) async fn document() -> Json<Value> {
    Json(json!({
        "openapi": "3.0.3",
        "info": {
            "title": "TADS",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of `tads serve`: datasets, scores, alerts and models of the TADS telemetry anomaly detector. Errors are {\"error\": \"…\"}."
        },
        "servers": [{ "url": "/" }],
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    }))
}
