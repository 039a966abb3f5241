//! The web dashboard of `tads serve`: one page and its assets, embedded in the binary (no
//! Node.js at run time). Charts are uPlot 1.6.32 (MIT, `assets/uPlot.LICENSE`), committed as
//! npm publishes it.

use axum::extract::Path;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;

const INDEX: &str = include_str!("assets/index.html");

/// The embedded assets: name, content type, bytes.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("assets/uPlot.min.css"),
    ),
];

/// `GET /`: the dashboard (its pages are `#/`, `#/host/<host>`, `#/alerts`, `#/models`).
pub(crate) async fn index() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `GET /assets/{file}`.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => ([(CONTENT_TYPE, *kind)], *body).into_response(),
        None => ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no asset `{file}`"),
        )
        .into_response(),
    }
}
