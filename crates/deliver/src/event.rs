//! What is delivered: one event in an alert's life.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The alert opened: its first hot rows.
    Opened,
    /// The alert is still open and changed (peak, points, severity).
    Updated,
    /// The alert closed.
    Resolved,
}

impl EventKind {
    /// `opened`, `updated` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Updated => "updated",
            EventKind::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric's expected value (from the model) against what was seen, at the alert's peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// The metric's column name.
    pub metric: String,
    /// What the model expected.
    #[serde(deserialize_with = "number_or_nan")]
    pub expected: f64,
    /// What was seen.
    #[serde(deserialize_with = "number_or_nan")]
    pub actual: f64,
}

/// One event of one alert, as `tads watch` produces them. The alert id is stable over the
/// alert's life and is every receiver's deduplication key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The alert's id (stable from opened to resolved).
    pub alert_id: String,
    /// What happened.
    pub kind: EventKind,
    /// The host (the alert's key).
    pub host: String,
    /// The model that scored it.
    pub model: String,
    /// TADS's severity: `info`, `warning` or `critical`.
    pub severity: String,
    /// The host's region, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The host's project, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The first hot row's time.
    pub starts_at: DateTime<Utc>,
    /// The last row's time, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// The peak fused score so far.
    #[serde(deserialize_with = "number_or_nan")]
    pub peak_score: f64,
    /// Rows in the alert so far.
    pub points: u64,
    /// The metrics that contributed most, first the largest.
    #[serde(default)]
    pub top_metrics: Vec<String>,
    /// Expected against actual values, where the model gives them.
    #[serde(default)]
    pub expected: Vec<Expected>,
    /// A link back to what produced the alert (a dashboard, a notebook), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// JSON has no NaN: serde_json writes a non-finite number as `null`, read back here as NaN, so
/// that such an entry stays readable.
fn number_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
