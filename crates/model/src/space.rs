//! The model measured in the space scoring measures rows in (`scoring_space` in `model.json`).
//!
//! Scoring takes each row's drift baseline (its key's previous-day level) and daily cycle out
//! before the model sees it, but the model is fitted on the training rows as they are: each
//! metric less its median, over its scale. Where a series' level moves from day to day (real
//! telemetry does), two things then do not carry from training to scoring:
//!
//! - **The limits.** A row measured from yesterday's level lies in another distribution than
//!   one measured from the training median, so the training tails (`thresholds.tail`, taken
//!   over the raw rows) do not keep the rate they were measured at: on JumpStarter's services a
//!   tenth to a fifth of the normal test rows were above them. So the `quantile` of the SPE, T²
//!   and largest |z| is also taken over the training rows as scoring measures them (`tail`),
//!   and the fusion raises each limit to the larger of the two tails.
//! - **The components.** The main fit's components describe the day-to-day moves of the
//!   training period, not how the metrics vary together inside a day, which is what scoring
//!   sees. So a second PCA is fitted on those rows (`residual`), and the PCA signal takes the
//!   larger of the two SPEs, each over its own limit. The main fit stays: on generated data it
//!   is what finds correlation breaks, since the metrics there move together through the load
//!   they share, which the baseline and the cycle carry.
//!
//! The rows are the training rows from the second UTC day on (the first has no previous day),
//! each metric less its previous day's median and the cycle at the row's hour, over `scale`.

use serde::{Deserialize, Serialize};

use crate::artifact::{PcaParams, Tail};
use crate::pca::{KRule, Pca};

/// The default quantile of the training signals in the scoring space.
pub const DEFAULT_QUANTILE: f64 = 0.99;

/// Whether training measures a model in the scoring space, and when it keeps the section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpaceChoice {
    /// Never measured (`tads train --no-scoring-space`).
    Never,
    /// Measured where the training rows span [`AUTO_DAYS`] days after the first, and kept where
    /// [`ScoringSpace::auto_verdict`] says the model's own limits do not hold there (the
    /// default).
    #[default]
    Auto,
    /// Measured and kept wherever it can be (`tads train --scoring-space`).
    Always,
}

/// Days after the first (a day's rows are measured from the day before) that the automatic
/// choice needs: with fewer, a few days that hold anomalies make up more than the 1 % of rows
/// the quantile leaves above it (the demo's three-day hosts, one anomaly a day).
pub const AUTO_DAYS: u64 = 7;

/// How many times the same quantile over the raw rows (`thresholds.spe_empirical_99`) the main
/// fit's SPE tail in the scoring space must be for the automatic choice to keep the section.
/// Measured (README, "Quality on real telemetry"): on JumpStarter's services a median 11.6×
/// (d2) and 16.7× (d3); on generated data with a week of history or more at most 6.2× (median
/// about 1.1: its 0.99 quantiles lie inside its anomalies in both spaces alike).
pub const AUTO_RATIO: f64 = 10.0;

/// The training signals in the scoring space, and the PCA fitted there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringSpace {
    /// Training rows measured (after the first day).
    pub rows: u64,
    /// The UTC days those rows lie on (0 in models from before it was stored).
    #[serde(default)]
    pub days: u64,
    /// The `quantile` of the main fit's SPE and T² and of the largest |z| over those rows.
    pub tail: Tail,
    /// The PCA fitted on those rows (absent for a model of one feature, or where the rows do
    /// not vary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual: Option<ResidualFit>,
}

/// A PCA fitted in the scoring space, and the limit of its SPE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidualFit {
    /// The PCA, in the model's standardized units (each metric over its `scale`), centred on
    /// the mean of the rows.
    pub pca: PcaParams,
    /// The tail's `quantile` of its SPE over the rows: the SPE is divided by it.
    pub limit: f64,
}

/// What the automatic choice made of a model's scoring space, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Whether the section is kept.
    pub keep: bool,
    /// The main fit's SPE tail in the scoring space over the same quantile over the raw rows,
    /// when the model has both.
    pub ratio: Option<f64>,
    /// Days measured.
    pub days: u64,
}

impl ScoringSpace {
    /// The automatic choice ([`SpaceChoice::Auto`]) for this section of a model whose SPE has
    /// the 0.99 quantile `raw_99` over its raw training rows (`thresholds.spe_empirical_99`):
    /// keep it where the rows span [`AUTO_DAYS`] days after the first and the main fit's SPE
    /// tail here is at least [`AUTO_RATIO`] times `raw_99`. Then the model's components and
    /// limits describe the day-to-day moves of its training period, not the rows scoring
    /// measures, and the section's own limits and PCA rank those rows better (JumpStarter);
    /// where the two quantiles are alike, the section mostly raises limits into anomalies the
    /// training rows hold (generated data).
    pub fn auto_verdict(&self, raw_99: Option<f64>) -> Verdict {
        let ratio = self
            .tail
            .spe
            .zip(raw_99)
            .map(|(here, there)| here / there)
            .filter(|r| r.is_finite());
        Verdict {
            keep: self.days >= AUTO_DAYS && ratio.is_some_and(|r| r >= AUTO_RATIO),
            ratio,
            days: self.days,
        }
    }

    /// Checks the section against a model of `features`; the error is (field under
    /// `scoring_space`, message).
    pub(crate) fn check(&self, features: &[String]) -> Result<(), (String, String)> {
        self.tail
            .check()
            .map_err(|(f, m)| (format!("tail.{f}"), m))?;
        if let Some(r) = &self.residual {
            r.pca
                .check(features)
                .map_err(|(f, m)| (format!("residual.pca.{f}"), m))?;
            if !(r.limit.is_finite() && r.limit > 0.0) {
                return Err((
                    "residual.limit".into(),
                    format!("{} is not a positive number", r.limit),
                ));
            }
        }
        Ok(())
    }
}

impl PcaParams {
    /// A fitted PCA as stored: the loadings turned feature-major.
    pub fn from_pca(p: &Pca, k_rule: KRule) -> Self {
        let d = p.mean.len();
        Self {
            mean: p.mean.clone(),
            components: (0..d)
                .map(|j| p.components.iter().map(|c| c[j]).collect())
                .collect(),
            eigenvalues: p.eigenvalues.clone(),
            explained_variance_ratio: p.explained_variance_ratio.clone(),
            k: p.k(),
            k_rule,
        }
    }

    /// The stored PCA as fitted: the loadings turned component-major.
    pub fn to_pca(&self) -> Pca {
        Pca {
            mean: self.mean.clone(),
            eigenvalues: self.eigenvalues.clone(),
            explained_variance_ratio: self.explained_variance_ratio.clone(),
            components: (0..self.k)
                .map(|i| self.components.iter().map(|row| row[i]).collect())
                .collect(),
        }
    }

    /// Checks the PCA against a model of `features`; the error is (field, message), the field
    /// under the PCA's own (`mean`, `components`).
    pub(crate) fn check(&self, features: &[String]) -> Result<(), (String, String)> {
        let d = features.len();
        let bad = |field: &str, message: String| Err((field.to_string(), message));
        let vector = |field: &str, v: &[f64], non_negative: bool| {
            if v.len() != d {
                return bad(field, format!("has {} values for {d} features", v.len()));
            }
            match v
                .iter()
                .find(|x| !(x.is_finite() && (!non_negative || **x >= 0.0)))
            {
                Some(x) if non_negative => bad(
                    field,
                    format!("holds {x}, not a finite non-negative number"),
                ),
                Some(x) => bad(field, format!("holds {x}, not a finite number")),
                None => Ok(()),
            }
        };
        vector("mean", &self.mean, false)?;
        vector("eigenvalues", &self.eigenvalues, true)?;
        vector(
            "explained_variance_ratio",
            &self.explained_variance_ratio,
            true,
        )?;
        if self.eigenvalues.windows(2).any(|w| w[0] < w[1]) {
            return bad("eigenvalues", "are not in descending order".into());
        }
        let sum: f64 = self.explained_variance_ratio.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return bad("explained_variance_ratio", format!("sums to {sum}, not 1"));
        }
        if self.k == 0 || self.k > d {
            return bad("k", format!("{} is not between 1 and {d}", self.k));
        }
        if self.components.len() != d {
            return bad(
                "components",
                format!("has {} rows for {d} features", self.components.len()),
            );
        }
        for (i, row) in self.components.iter().enumerate() {
            if row.len() != self.k || row.iter().any(|x| !x.is_finite()) {
                return bad(
                    "components",
                    format!("row {i} ({}) is not {} finite numbers", features[i], self.k),
                );
            }
        }
        for j in 0..self.k {
            let norm: f64 = self.components.iter().map(|r| r[j] * r[j]).sum();
            if (norm - 1.0).abs() > 1e-6 {
                return bad(
                    "components",
                    format!("column {j} has length {}, not 1", norm.sqrt()),
                );
            }
        }
        if let Some(l) = self.eigenvalues[..self.k]
            .iter()
            .find(|l| **l > 0.0 && !(1.0 / **l).is_finite())
        {
            return bad(
                "eigenvalues",
                format!("{l} is too small to divide by (a retained eigenvalue is 0 or normal)"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelArtifact, Scorer, TrainOptions};

    /// A model of three metrics, with a scoring space whose PCA is fitted on other rows.
    fn model_with_residual() -> (ModelArtifact, Pca) {
        let columns = |shift: f64| -> Vec<Vec<f64>> {
            (0..3)
                .map(|j| {
                    (0..300)
                        .map(|i| {
                            let t = i as f64 * 0.1 + shift;
                            t.sin() * (j + 1) as f64 + (t * (2.0 + j as f64)).cos()
                        })
                        .collect()
                })
                .collect()
        };
        let options = TrainOptions::default();
        let fitted = crate::train::fit_in_memory(&columns(0.0), &options).unwrap();
        let names = ["a", "b", "c"].map(String::from);
        let mut model =
            crate::train::artifact("m", &names, &fitted, &options, 300, "mem", None).unwrap();
        let other = crate::train::fit_in_memory(&columns(1.7), &options).unwrap();
        model.scoring_space = Some(ScoringSpace {
            rows: 300,
            days: 1,
            tail: Tail {
                quantile: DEFAULT_QUANTILE,
                spe: Some(1.0),
                t2: Some(9.0),
                zmax: None,
            },
            residual: Some(ResidualFit {
                pca: PcaParams::from_pca(&other.pca, options.k_rule),
                limit: 2.5,
            }),
        });
        (model.seal(), other.pca)
    }

    /// Kept only with both: a week of days after the first, and the main fit's SPE tail there
    /// at least [`AUTO_RATIO`] times the raw rows' quantile; never without both to compare.
    #[test]
    fn the_automatic_choice_needs_a_week_and_an_spe_tail_far_above_the_raw_one() {
        let (model, _) = model_with_residual();
        let mut s = model.scoring_space.clone().unwrap();
        s.days = AUTO_DAYS;
        s.tail.spe = Some(42.0);
        let v = s.auto_verdict(Some(4.0));
        assert!(v.keep);
        assert_eq!((v.ratio, v.days), (Some(10.5), AUTO_DAYS));
        assert!(!s.auto_verdict(Some(4.4)).keep, "under the ratio");
        assert!(!s.auto_verdict(None).keep, "no raw SPE quantile");
        assert_eq!(s.auto_verdict(None).ratio, None);
        s.days = AUTO_DAYS - 1;
        assert!(!s.auto_verdict(Some(0.1)).keep, "too few days");
        s.days = AUTO_DAYS;
        s.tail.spe = None;
        assert!(!s.auto_verdict(Some(0.1)).keep, "no SPE tail here");
    }

    #[test]
    fn the_residual_spe_is_the_second_fits_spe_of_the_same_standardized_row() {
        let (model, second) = model_with_residual();
        let rows = [[1.0, -2.0, 0.5], [0.0, 0.3, 4.0], [10.0, 1.0, -3.0]];
        let columns: Vec<Vec<f64>> = (0..3)
            .map(|j| rows.iter().map(|r| r[j]).collect())
            .collect();
        let slices: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
        let mut out = [0.0; 3];
        assert!(Scorer::new(&model).residual_spe(&slices, &mut out));
        for (r, got) in rows.iter().zip(out) {
            // z less the second fit's mean, less its projection on the kept components.
            let y: Vec<f64> = (0..3)
                .map(|j| (r[j] - model.median[j]) / model.scale[j] - second.mean[j])
                .collect();
            let mut left = y.clone();
            for c in &second.components {
                let t: f64 = c.iter().zip(&y).map(|(a, b)| a * b).sum();
                left.iter_mut().zip(c).for_each(|(l, a)| *l -= t * a);
            }
            let want: f64 = left.iter().map(|v| v * v).sum();
            assert!((got - want).abs() < 1e-9 * want.max(1.0), "{got} vs {want}");
        }
        let mut without = model.clone();
        without.scoring_space.as_mut().unwrap().residual = None;
        assert!(!Scorer::new(&without.seal()).residual_spe(&slices, &mut out));
    }

    #[test]
    fn a_bad_scoring_space_is_refused_naming_its_field() {
        let (model, _) = model_with_residual();
        assert!(ModelArtifact::from_json(&model.to_json()).is_ok());
        fn space(m: &mut ModelArtifact) -> &mut ScoringSpace {
            m.scoring_space.as_mut().unwrap()
        }
        let mut bad_limit = model.clone();
        space(&mut bad_limit).residual.as_mut().unwrap().limit = 0.0;
        let mut short = model.clone();
        space(&mut short).residual.as_mut().unwrap().pca.mean.pop();
        let mut bad_tail = model.clone();
        space(&mut bad_tail).tail.t2 = Some(-1.0);
        for (edited, field) in [
            (bad_limit, "scoring_space.residual.limit:"),
            (short, "scoring_space.residual.pca.mean:"),
            (bad_tail, "scoring_space.tail.t2:"),
        ] {
            let err = ModelArtifact::from_json(&edited.seal().to_json())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("model.json: {field}")), "{err}");
        }
    }
}
