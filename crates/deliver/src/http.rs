//! One POST and what its answer means for the entry.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::Value;

/// What came of one POST.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 2xx: delivered.
    Delivered,
    /// 5xx, 408, 429, anything not 2xx or 4xx, or no answer: try again later, not before
    /// `after` when the receiver said so (`Retry-After`).
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Any other 4xx: the receiver refuses this body and always will.
    Rejected { why: String },
}

/// The most of a response body quoted in a message.
const BODY_QUOTE: usize = 300;

/// POSTs `body` as JSON to `url`.
pub(crate) async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Outcome {
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Rejected {
                why: format!("cannot encode the body: {e}"),
            };
        }
    };
    let response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(bytes)
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                why: error_chain(&e),
                after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let after = retry_after(response.headers(), Utc::now());
    let text = response.text().await.unwrap_or_default();
    let mut quoted: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if quoted.chars().count() > BODY_QUOTE {
        quoted = quoted.chars().take(BODY_QUOTE).collect::<String>() + "…";
    }
    let why = if quoted.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {quoted}")
    };
    let permanent = status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS;
    if permanent {
        Outcome::Rejected { why }
    } else {
        Outcome::Retry { why, after }
    }
}

/// An error and its causes on one line ("error sending request …: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

/// `Retry-After` as a wait: delay-seconds, or an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`).
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    (date.with_timezone(&Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(60)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }
}
