//! Severity bands on an alert's peak fused score.

use serde::{Deserialize, Serialize};

/// Severity bands on an alert's peak fused score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Severity {
    /// Peaks at or above this are `warning`.
    pub warning: f64,
    /// Peaks at or above this are `critical`.
    pub critical: f64,
}

impl Default for Severity {
    fn default() -> Self {
        Self {
            warning: 2.0,
            critical: 4.0,
        }
    }
}

impl Severity {
    /// The names, lowest first.
    pub const NAMES: [&'static str; 3] = ["info", "warning", "critical"];

    /// Checks that the bands are finite and ordered.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.warning.is_finite() && self.critical.is_finite()) {
            return Err("severity: warning and critical must be numbers".into());
        }
        if self.critical < self.warning {
            return Err(format!(
                "severity: critical ({}) is below warning ({})",
                self.critical, self.warning
            ));
        }
        Ok(())
    }

    /// The band of a peak score.
    pub fn of(&self, peak: f64) -> &'static str {
        if peak >= self.critical {
            "critical"
        } else if peak >= self.warning {
            "warning"
        } else {
            "info"
        }
    }
}
