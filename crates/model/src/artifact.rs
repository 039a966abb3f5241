//! `model.json`: a trained model as a plain, versioned JSON document any language can read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pca::KRule;
use crate::{Error, Result};

/// The version of the `model.json` format this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The PCA part of a model, in the standardized space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcaParams {
    /// Mean of each standardized feature over the training rows used (the PCA centre).
    pub mean: Vec<f64>,
    /// Loadings, d rows (features) × k columns (components), unit columns.
    pub components: Vec<Vec<f64>>,
    /// Every eigenvalue of the standardized covariance, descending.
    pub eigenvalues: Vec<f64>,
    /// Each eigenvalue's share of the total variance.
    pub explained_variance_ratio: Vec<f64>,
    /// Number of retained components.
    pub k: usize,
    /// How k was chosen.
    pub k_rule: KRule,
}

/// Alarm limits derived at training time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// SPE limit by Jackson–Mudholkar at α = 0.99 (absent when the residual space is empty).
    pub spe_jm_99: Option<f64>,
    /// SPE limit by Jackson–Mudholkar at α = 0.999.
    pub spe_jm_999: Option<f64>,
    /// The 0.99 quantile of the SPE over the training rows used.
    pub spe_empirical_99: Option<f64>,
    /// The 0.999 quantile of the SPE over the training rows used.
    pub spe_empirical_999: Option<f64>,
    /// Hotelling's T² limit at α = 0.99.
    pub t2_99: Option<f64>,
    /// Hotelling's T² limit at α = 0.999.
    pub t2_999: Option<f64>,
    /// The robust |z| above which a metric counts as anomalous on its own.
    pub mad_z: f64,
    /// The training tail of each signal, if measured: its `quantile` over every training row
    /// (anomalies and heavy tails included, unlike the rows the limits above come from). The
    /// fusion raises each limit to at least its tail (`fusion.tail`), so that a metric whose
    /// normal behaviour has heavier tails than a Gaussian does not alert all the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Tail>,
}

/// The `quantile` of the SPE, T² and largest robust |z| over every training row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tail {
    /// The quantile, in (0, 1).
    pub quantile: f64,
    /// The SPE's (absent when the model has no residual space or the SPE is 0 there).
    pub spe: Option<f64>,
    /// Hotelling's T² (absent without components).
    pub t2: Option<f64>,
    /// The largest robust |z|.
    pub zmax: Option<f64>,
}

impl Tail {
    /// Checks the values: each signal's tail a positive number, the quantile in (0, 1); the
    /// error is (field under the tail's own, message).
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        for (field, v) in [("spe", self.spe), ("t2", self.t2), ("zmax", self.zmax)] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err((field.into(), format!("{v} is not a positive number")));
            }
        }
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err((
                "quantile".into(),
                format!("{} is not in (0, 1)", self.quantile),
            ));
        }
        Ok(())
    }
}

/// A daily cycle: per UTC hour of the day and feature, the median of the feature's distance from
/// its own day's median over the training rows. Scoring subtracts the row's hour from its
/// value, so a host that is always busy at 15:00 is not anomalous at 15:00. Only features whose
/// cycle swings by at least one scale between the hours have one (the others hold 0): the cycle
/// is found in the data, not assumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seasonal {
    /// The time column the hours come from.
    pub time: String,
    /// 24 rows (UTC hours 0–23) of d values (the features, in order).
    pub profile: Vec<Vec<f64>>,
    /// The features with a cycle.
    pub features: Vec<String>,
}

/// Where and how the model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Rows read (after the filter).
    pub rows_seen: u64,
    /// Rows that entered the covariance (finite, inside the robust cut, not trimmed).
    pub rows_used: u64,
    /// URI of the training data.
    pub data_uri: String,
    /// The SQL predicate applied, if any.
    pub filter: Option<String>,
    /// The share of highest-SPE rows dropped before the refit, if one was made.
    pub trimmed_fraction: Option<f64>,
    /// When training finished.
    pub created_at: DateTime<Utc>,
}

/// A trained robust-PCA model. Fields are public for writers; readers go through
/// [`ModelArtifact::from_json`], which checks every one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelArtifact {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The model's name (its directory under the models location).
    pub name: String,
    /// Feature (column) names, in the order every function takes them.
    pub features: Vec<String>,
    /// Per-feature median over the training rows.
    pub median: Vec<f64>,
    /// Per-feature MAD, scaled by 1.4826.
    pub mad: Vec<f64>,
    /// What each feature is divided by after subtracting its median: the MAD, or for a
    /// constant feature (MAD 0) its fallback (see `constant_features`).
    pub scale: Vec<f64>,
    /// Features with no spread at all (MAD and mean absolute deviation 0); their `scale` is 1
    /// in the feature's own unit.
    pub constant_features: Vec<String>,
    /// Features whose MAD was 0 but which vary (sparse: mostly one value, e.g. a counter that is
    /// mostly 0); their `scale` is the mean absolute deviation from the median times √(π/2),
    /// so that a burst is not measured against a scale of 1 in the metric's own unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sparse_features: Vec<String>,
    /// Features whose scale is the floor from their training values' 0.5 % and 99.5 % quantiles
    /// (their range over 4 Φ⁻¹(0.995) ≈ 10.3): heavy-tailed, quantized or bursty metrics whose
    /// MAD sees only their bulk. Empty when trained with `--no-tail-scale`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail_scaled_features: Vec<String>,
    /// Rows with a robust |z| above this on any feature were left out of the covariance.
    pub robust_z_cut: f64,
    /// The PCA.
    pub pca: PcaParams,
    /// Alarm limits.
    pub thresholds: Thresholds,
    /// The daily cycle found in the training data, if any (`seasonal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seasonal: Option<Seasonal>,
    /// The k-means distance detector's centroids and limits, if trained (`kmeans`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmeans: Option<crate::KMeansParams>,
    /// The Isolation Forest detector's trees and limits, if trained (`iforest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iforest: Option<crate::IForestParams>,
    /// The one-class SVM detector's support vectors and limits, if trained (`ocsvm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsvm: Option<crate::OcsvmParams>,
    /// The seasonal baseline detector's slots and limits, if trained (`season`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season: Option<crate::SeasonParams>,
    /// The forecast residual detector's forecast and intervals, if trained (`forecast`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::ForecastParams>,
    /// The training signals in the space scoring measures rows in, and the PCA fitted there
    /// (see [`crate::space`]), if measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_space: Option<crate::ScoringSpace>,
    /// Provenance.
    pub training: Training,
    /// `sha256:` and the hex SHA-256 of the parameters (everything but `training` and the
    /// fingerprint itself): equal fingerprints, equal scores.
    pub fingerprint: String,
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub(crate) fn sha256_tag(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Parses a TADS JSON document; a syntax or shape error is reported against `file`.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], file: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Invalid {
        field: file.into(),
        message: e.to_string(),
    })
}

/// Pretty JSON with a final newline, as TADS writes its documents.
pub(crate) fn pretty_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(value).unwrap_or_default();
    v.push(b'\n');
    v
}

#[derive(Serialize)]
struct Parameters<'a> {
    schema_version: u32,
    name: &'a str,
    features: &'a [String],
    median: &'a [f64],
    mad: &'a [f64],
    scale: &'a [f64],
    robust_z_cut: f64,
    pca: &'a PcaParams,
    thresholds: &'a Thresholds,
    #[serde(skip_serializing_if = "Option::is_none")]
    seasonal: &'a Option<Seasonal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kmeans: &'a Option<crate::KMeansParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iforest: &'a Option<crate::IForestParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ocsvm: &'a Option<crate::OcsvmParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    season: &'a Option<crate::SeasonParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forecast: &'a Option<crate::ForecastParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scoring_space: &'a Option<crate::ScoringSpace>,
}

impl ModelArtifact {
    /// Number of features.
    pub fn dims(&self) -> usize {
        self.features.len()
    }

    /// The fingerprint of the current parameters.
    pub fn compute_fingerprint(&self) -> String {
        let p = Parameters {
            schema_version: self.schema_version,
            name: &self.name,
            features: &self.features,
            median: &self.median,
            mad: &self.mad,
            scale: &self.scale,
            robust_z_cut: self.robust_z_cut,
            pca: &self.pca,
            thresholds: &self.thresholds,
            seasonal: &self.seasonal,
            kmeans: &self.kmeans,
            iforest: &self.iforest,
            ocsvm: &self.ocsvm,
            season: &self.season,
            forecast: &self.forecast,
            scoring_space: &self.scoring_space,
        };
        sha256_tag(&serde_json::to_vec(&p).unwrap_or_default())
    }

    /// Sets the fingerprint from the parameters (call after the last change).
    pub fn seal(mut self) -> Self {
        self.fingerprint = self.compute_fingerprint();
        self
    }

    /// The pretty JSON document.
    pub fn to_json(&self) -> Vec<u8> {
        pretty_json(self)
    }

    /// Parses and checks a `model.json`. Errors name the bad field.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let model: Self = parse_json(bytes, "model.json")?;
        model.validate()?;
        Ok(model)
    }

    /// Checks that `name` can name a model (and a directory): letters, digits, `_`, `-`, `.`,
    /// not starting with a dot.
    pub fn check_name(name: &str) -> Result<()> {
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(Error::Invalid {
                field: "name".into(),
                message: format!(
                    "`{name}` is not a model name (letters, digits, _ - ., not starting with .)"
                ),
            });
        }
        Ok(())
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(Error::Invalid {
                field: field.to_string(),
                message,
            })
        };
        if self.schema_version != SCHEMA_VERSION {
            return bad(
                "schema_version",
                format!(
                    "is {}, this TADS reads version {SCHEMA_VERSION}",
                    self.schema_version
                ),
            );
        }
        match self.name.split_once('/') {
            // A member of a group: `<group>/<value>`.
            Some((group, key)) => {
                Self::check_name(group)?;
                if key.is_empty() || key.chars().any(char::is_control) {
                    return bad(
                        "name",
                        format!("`{}` has an empty or unprintable group value", self.name),
                    );
                }
            }
            None => Self::check_name(&self.name)?,
        }
        let d = self.features.len();
        if d == 0 {
            return bad("features", "is empty".into());
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.features {
            if f.is_empty() || !seen.insert(f) {
                return bad("features", format!("`{f}` is empty or repeated"));
            }
        }
        // Which values a per-feature vector may hold.
        #[derive(Clone, Copy)]
        enum Allowed {
            Any,
            NonNegative,
            Positive,
        }
        let vector = |field: &str, v: &[f64], allowed: Allowed| -> Result<()> {
            if v.len() != d {
                return bad(field, format!("has {} values for {d} features", v.len()));
            }
            let ok = |x: f64| {
                x.is_finite()
                    && match allowed {
                        Allowed::Any => true,
                        Allowed::NonNegative => x >= 0.0,
                        Allowed::Positive => x > 0.0,
                    }
            };
            if let Some(x) = v.iter().find(|x| !ok(**x)) {
                let what = match allowed {
                    Allowed::Any => "finite",
                    Allowed::NonNegative => "finite non-negative",
                    Allowed::Positive => "finite positive",
                };
                return bad(field, format!("holds {x}, not a {what} number"));
            }
            Ok(())
        };
        vector("median", &self.median, Allowed::Any)?;
        vector("mad", &self.mad, Allowed::NonNegative)?;
        vector("scale", &self.scale, Allowed::Positive)?;
        for c in &self.constant_features {
            if !self.features.contains(c) {
                return bad("constant_features", format!("`{c}` is not a feature"));
            }
        }
        if !(self.robust_z_cut.is_finite() && self.robust_z_cut > 0.0) {
            return bad(
                "robust_z_cut",
                format!("{} is not positive", self.robust_z_cut),
            );
        }
        let p = &self.pca;
        if let Err((field, message)) = p.check(&self.features) {
            return bad(&format!("pca.{field}"), message);
        }
        // Scoring standardizes by `x / scale − (median / scale + pca.mean)` and weighs T² by
        // `1 / λ`: each of these must be a number, or every row scores NaN (a value that is
        // finite on its own, like a scale of 1e-320 or a median of 1e300 over a scale of 1e-10,
        // can only come from an edited file).
        for (j, ((m, s), c)) in self.median.iter().zip(&self.scale).zip(&p.mean).enumerate() {
            let a = 1.0 / s;
            if !(a.is_finite() && (m * a + c).is_finite()) {
                return bad(
                    "scale",
                    format!(
                        "{s} ({}) makes the standardized median {m} / {s} + {c} overflow",
                        self.features[j]
                    ),
                );
            }
        }
        let t = &self.thresholds;
        for (field, v) in [
            ("thresholds.spe_jm_99", t.spe_jm_99),
            ("thresholds.spe_jm_999", t.spe_jm_999),
            ("thresholds.spe_empirical_99", t.spe_empirical_99),
            ("thresholds.spe_empirical_999", t.spe_empirical_999),
            ("thresholds.t2_99", t.t2_99),
            ("thresholds.t2_999", t.t2_999),
            ("thresholds.mad_z", Some(t.mad_z)),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return bad(field, format!("{v} is not a positive number"));
            }
        }
        if let Some(Err((field, message))) = t.tail.map(|t| t.check()) {
            return bad(&format!("thresholds.tail.{field}"), message);
        }
        if let Some(c) = &self.seasonal {
            if c.profile.len() != 24 {
                return bad(
                    "seasonal.profile",
                    format!("has {} hours, not 24", c.profile.len()),
                );
            }
            for row in &c.profile {
                vector("seasonal.profile", row, Allowed::Any)?;
            }
            if let Some(f) = c.features.iter().find(|f| !self.features.contains(f)) {
                return bad("seasonal.features", format!("`{f}` is not a feature"));
            }
        }
        if let Some(k) = &self.kmeans {
            k.check(self.dims()).or_else(|e| bad("kmeans", e))?;
        }
        if let Some(f) = &self.iforest {
            f.check(self.dims()).or_else(|e| bad("iforest", e))?;
        }
        if let Some(o) = &self.ocsvm {
            o.check(self.dims()).or_else(|e| bad("ocsvm", e))?;
        }
        if let Some(s) = &self.season {
            s.check(self.dims()).or_else(|e| bad("season", e))?;
        }
        if let Some(f) = &self.forecast {
            f.check(self.dims()).or_else(|e| bad("forecast", e))?;
        }
        if let Some(r) = &self.scoring_space
            && let Err((field, message)) = r.check(&self.features)
        {
            return bad(&format!("scoring_space.{field}"), message);
        }
        if self.training.rows_used > self.training.rows_seen {
            return bad(
                "training.rows_used",
                "is more than training.rows_seen".into(),
            );
        }
        let expected = self.compute_fingerprint();
        if self.fingerprint != expected {
            return bad(
                "fingerprint",
                format!(
                    "{} does not match the parameters ({expected}): the file was changed after training",
                    self.fingerprint
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AllScores, Scorer, TrainOptions};

    fn model() -> ModelArtifact {
        let (d, n) = (3, 400);
        let columns: Vec<Vec<f64>> = (0..d)
            .map(|j| {
                (0..n)
                    .map(|i| (i as f64 * 0.05).sin() * (j + 1) as f64 + (i as f64 * 0.37).cos())
                    .collect()
            })
            .collect();
        let options = TrainOptions::default();
        let fitted = crate::train::fit_in_memory(&columns, &options).unwrap();
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        crate::train::artifact("m", &names, &fitted, &options, n as u64, "", None).unwrap()
    }

    /// The T² of one row at the model's median.
    fn t2_at_median(model: &ModelArtifact) -> f64 {
        let values: Vec<Vec<f64>> = model.median.iter().map(|m| vec![*m]).collect();
        let columns: Vec<&[f64]> = values.iter().map(Vec::as_slice).collect();
        let (mut spe, mut t2, mut zmax, mut top) = ([0.0], [0.0], [0.0], [None]);
        Scorer::new(model).all(
            &columns,
            AllScores {
                spe: &mut spe,
                t2: &mut t2,
                zmax: &mut zmax,
                top: &mut top,
            },
        );
        t2[0]
    }

    #[test]
    fn a_model_that_loads_scores_numbers() {
        // Found with the model_json fuzz target's scoring check (fuzz/corpus/model_json/
        // regression-*): models with a scale of 5e-324, or a median of 1e300 over a scale of
        // 1e-10, passed every check (resealed) and scored NaN.
        let good = model();
        assert!(t2_at_median(&good).is_finite());
        let mut tiny_scale = good.clone();
        tiny_scale.scale[0] = 5e-324;
        let mut far_median = good.clone();
        far_median.median[1] = 1e300;
        far_median.scale[1] = 1e-10;
        for edited in [tiny_scale, far_median] {
            assert!(t2_at_median(&edited).is_nan());
            let err = ModelArtifact::from_json(&edited.seal().to_json())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("model.json: scale:"), "{err}");
        }
        let mut tiny_eigenvalue = good.clone();
        tiny_eigenvalue.pca.eigenvalues[0] = 5e-324;
        for l in &mut tiny_eigenvalue.pca.eigenvalues[1..] {
            *l = 0.0;
        }
        let err = ModelArtifact::from_json(&tiny_eigenvalue.seal().to_json())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("model.json: pca.eigenvalues:"), "{err}");
    }
}
