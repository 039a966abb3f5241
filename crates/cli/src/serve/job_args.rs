//! The command line of a job request: which options each command takes through the API, and
//! its paths kept below `--work` (see [`super::jobs`]).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use axum::http::StatusCode;
use serde_json::Value;

use super::api::ApiError;
use super::jobs::{JobRequest, Jobs, Kind};

/// Options each command may be given through the API, besides the paths [`paths`] maps.
fn allowed(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Generate => &[
            "hosts",
            "start",
            "duration",
            "interval",
            "seed",
            "anomaly-rate",
            "regions",
            "projects",
            "overwrite",
            "threads",
            "anomaly-types",
            "spike-magnitude",
            "spike-points",
            "burst-magnitude",
            "burst-duration",
            "trend-magnitude",
            "trend-duration",
            "break-duration",
            "shift-magnitude",
            "shift-duration",
            "min-gap",
        ],
        Kind::Train => &[
            "model",
            "features",
            "where",
            "k",
            "variance",
            "trim",
            "robust-z-cut",
            "tail-quantile",
            "no-seasonal",
            "group-by",
            "overwrite",
            "threads",
            "quantiles",
            "memory",
        ],
        Kind::Score => &[
            "model",
            "shard",
            "shard-by",
            "threads",
            "memory",
            "overwrite",
            "set",
            "no-alerts",
        ],
        Kind::Eval => &["label"],
    }
}

/// The path options of each command: (option, read: an input, else an output), required.
fn paths(kind: Kind) -> &'static [(&'static str, bool)] {
    match kind {
        Kind::Generate => &[("out", false)],
        Kind::Train => &[("data", true)],
        Kind::Score => &[("data", true), ("out", false)],
        Kind::Eval => &[("scored", true)],
    }
}

/// `rel` as a path below `work`: relative, without `..`, not empty.
fn below(work: &Path, name: &str, rel: &str) -> Result<PathBuf, ApiError> {
    let p = Path::new(rel);
    let plain = !rel.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !rel.contains('\\');
    if !plain {
        return Err(ApiError::bad(format!(
            "args.{name}: `{rel}` must be a relative path below the server's --work folder (no `..`, not absolute)"
        )));
    }
    Ok(work.join(p))
}

/// One option's values as text (a list repeats it).
fn values(name: &str, v: &Value) -> Result<Vec<Option<String>>, ApiError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(true) => Ok(None),
        _ => Err(ApiError::bad(format!(
            "args.{name}: expected a string, a number, true or a list of them"
        ))),
    };
    match v {
        Value::Bool(false) | Value::Null => Ok(vec![]),
        Value::Array(items) => items.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

/// The command line of a request (without the program), and the output folder it writes.
pub(super) fn command_line(
    state: &super::AppState,
    jobs: &Jobs,
    req: &JobRequest,
) -> Result<(Vec<String>, Option<PathBuf>), ApiError> {
    let work = jobs.work.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "jobs need a folder to write in: start tads serve with --work DIR",
        )
    })?;
    let mut argv = vec![req.kind.command().to_string()];
    let mut output = None;
    let mut given: BTreeMap<String, &Value> = BTreeMap::new();
    for (k, v) in &req.args {
        given.insert(k.replace('_', "-"), v);
    }
    for &(name, input) in paths(req.kind) {
        let Some(Value::String(v)) = given.remove(name) else {
            return Err(ApiError::bad(format!(
                "args.{name}: required, as a string ({})",
                if input {
                    "a served table's id or a folder below --work"
                } else {
                    "a folder below --work"
                }
            )));
        };
        let path = match super::api::find_table(state, v) {
            Some(t) if input => t.source.to_string(),
            _ => {
                let p = below(work, name, v)?;
                if input && !p.exists() {
                    return Err(ApiError::bad(format!(
                        "args.{name}: `{v}` is neither a served table nor a folder below --work"
                    )));
                }
                if !input {
                    output = Some(p.clone());
                }
                p.to_string_lossy().into_owned()
            }
        };
        argv.push(format!("--{name}={path}"));
    }
    for (name, v) in given {
        if !allowed(req.kind).contains(&name.as_str()) {
            return Err(ApiError::bad(format!(
                "args.{name}: not an option a {} job takes here (it takes: {})",
                req.kind.command(),
                paths(req.kind)
                    .iter()
                    .map(|(p, _)| *p)
                    .chain(allowed(req.kind).iter().copied())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for value in values(&name, v)? {
            argv.push(match value {
                Some(value) => format!("--{name}={value}"),
                None => format!("--{name}"),
            });
        }
    }
    match req.kind {
        Kind::Train | Kind::Score => argv.push(format!("--models={}", jobs.models)),
        Kind::Eval => argv.push("--json".into()),
        Kind::Generate => {}
    }
    // The command's own checks, before anything starts: a bad value is the request's fault.
    let mut full = vec!["tads".to_string()];
    full.extend(argv.iter().cloned());
    crate::check_command_line(&full).map_err(ApiError::bad)?;
    Ok((argv, output))
}
