//! The one-class SVM detector (Schölkopf et al., 2001), fitted with `linfa-svm`: a Gaussian-kernel
//! boundary around the bulk of the training rows in the robustly standardized space; rows far
//! outside it are anomalous.
//!
//! Its kernel matrix is n × n, so it is fitted on a bounded subsample: the first [`ROWS`] rows of
//! the deterministic sample k-means and the Isolation Forest use (the rows with the smallest hash
//! of their values, the same on any thread count). The fit is deterministic (SMO from a fixed
//! start), so the same data gives the same boundary.
//!
//! A row's raw score is `ρ − Σ αᵢ·exp(−‖svᵢ − z‖² / ε)`: 0 on the boundary, positive outside. As
//! a fused signal it is put on the scale of the others, 0 at the training median and 1.0 at the
//! limit (the 0.999 quantile over the whole sample, most of it not fitted on):
//! `(s − median) / (limit − median)`.

use linfa::prelude::*;
use linfa_svm::Svm;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::score::Z_LIMIT;
use crate::train::{check_median_limit, median_limit_tail};

/// The most sampled rows the boundary is fitted on (the kernel matrix holds `ROWS²` values).
pub const ROWS: usize = 1_000;

/// ν: an upper bound on the share of training rows left outside the boundary and a lower bound
/// on the share of support vectors.
pub const NU: f64 = 0.05;

/// The one-class SVM section of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcsvmParams {
    /// The support vectors, standardized rows of the sample, one per entry of `alpha`.
    pub support: Vec<Vec<f64>>,
    /// Their weights (they sum to ν times the rows fitted).
    pub alpha: Vec<f64>,
    /// The offset ρ: a row with `Σ αᵢ K(svᵢ, z) < ρ` lies outside the boundary.
    pub rho: f64,
    /// The Gaussian kernel's width ε in `exp(−‖a − b‖² / ε)`: the number of features, so that
    /// in the standardized space it is the usual `1 / (d · variance)`.
    pub eps: f64,
    /// ν.
    pub nu: f64,
    /// The median raw score over the sampled rows: the signal's 0.
    pub median: f64,
    /// The 0.999 quantile of the raw score over the sampled rows: the signal's 1.0.
    pub limit: f64,
    /// The score's `tail_quantile` over the sampled rows; `fusion.tail` raises the limit to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<f64>,
    /// The rows the boundary was fitted on.
    pub sample_rows: u64,
}

impl OcsvmParams {
    /// Checks the shapes and values against `d` features; the message names what is wrong.
    pub fn check(&self, d: usize) -> Result<(), String> {
        if self.support.is_empty() || self.support.len() != self.alpha.len() {
            return Err(format!(
                "ocsvm: {} support vectors for {} weights",
                self.support.len(),
                self.alpha.len()
            ));
        }
        if let Some(v) = self.support.iter().find(|v| v.len() != d) {
            return Err(format!(
                "ocsvm: a support vector has {} values for {d} features",
                v.len()
            ));
        }
        let finite = self
            .support
            .iter()
            .flatten()
            .chain(&self.alpha)
            .chain([&self.rho, &self.eps])
            .all(|x| x.is_finite());
        if !finite || self.eps <= 0.0 {
            return Err(
                "ocsvm: a support vector, weight, rho or eps is not a finite number".into(),
            );
        }
        check_median_limit("ocsvm", self.median, self.limit)
    }

    /// The raw score `ρ − Σ αᵢ K(svᵢ, z)` of a standardized row (clamped as training was).
    pub fn score(&self, z: &[f64]) -> f64 {
        let mut out = [0.0];
        self.scores(z, z.len(), &mut out);
        out[0]
    }

    /// The raw scores of `out.len()` standardized rows stored row after row in `z` (`d` values
    /// each).
    pub fn scores(&self, z: &[f64], d: usize, out: &mut [f64]) {
        let inv = 1.0 / self.eps;
        for (o, row) in out.iter_mut().zip(z.chunks_exact(d.max(1))) {
            let mut sum = 0.0;
            for (sv, a) in self.support.iter().zip(&self.alpha) {
                let dist: f64 = sv
                    .iter()
                    .zip(row)
                    .map(|(s, x)| {
                        let t = s - x.clamp(-Z_LIMIT, Z_LIMIT);
                        t * t
                    })
                    .sum();
                sum += a * (-dist * inv).exp();
            }
            *o = self.rho - sum;
        }
    }
}

/// The boundary fitted on the first [`ROWS`] rows of a sample of standardized training rows,
/// with the median, limit and tail of the scores of every row of the sample. `None` for fewer than ten rows, when the
/// solver fails, or when every row scores alike.
pub fn train(sample: &[Vec<f64>], tail_quantile: Option<f64>) -> Option<OcsvmParams> {
    let rows: Vec<&Vec<f64>> = sample.iter().take(ROWS).collect();
    let d = rows.first()?.len();
    if rows.len() < 10 || d == 0 {
        return None;
    }
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|z| z.clamp(-Z_LIMIT, Z_LIMIT)))
        .collect();
    let records = Array2::from_shape_vec((rows.len(), d), flat).ok()?;
    let targets = Array2::from_elem((rows.len(), 1), ());
    let dataset = DatasetBase::new(records.clone(), targets);
    let eps = d as f64;
    let svm: Svm<f64, bool> = Svm::<f64, Pr>::params()
        .nu_weight(NU)
        .gaussian_kernel(eps)
        .fit(&dataset)
        .ok()?;
    // The support vectors are the rows with a weight, in row order, as linfa keeps them.
    let tiny = 100.0 * f64::EPSILON;
    let (support, alpha): (Vec<Vec<f64>>, Vec<f64>) = records
        .outer_iter()
        .zip(&svm.alpha)
        .filter(|(_, a)| a.abs() > tiny)
        .map(|(r, a)| (r.to_vec(), *a))
        .unzip();
    let mut p = OcsvmParams {
        support,
        alpha,
        rho: svm.rho,
        eps,
        nu: NU,
        median: 0.0,
        limit: 0.0,
        tail: None,
        sample_rows: rows.len() as u64,
    };
    if p.support.is_empty() || !p.rho.is_finite() {
        return None;
    }
    // The limits from every sampled row, most of them not fitted on.
    let mut scores: Vec<f64> = sample.iter().map(|r| p.score(r)).collect();
    (p.median, p.limit, p.tail) = median_limit_tail(&mut scores, tail_quantile)?;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmeans::SplitMix;

    fn cloud(n: usize) -> Vec<Vec<f64>> {
        let mut rng = SplitMix::new(5);
        (0..n)
            .map(|_| (0..3).map(|_| 2.0 * (rng.unit() - 0.5)).collect())
            .collect()
    }

    #[test]
    fn an_outlying_row_scores_above_the_limit_and_the_score_is_linfas() {
        let rows = cloud(400);
        let p = train(&rows, Some(0.95)).unwrap();
        p.check(3).unwrap();
        assert!(
            p.support.len() >= (NU * 400.0) as usize,
            "{}",
            p.support.len()
        );
        assert!(p.score(&[0.0, 0.0, 0.0]) < p.median);
        assert!(p.score(&[4.0, -4.0, 4.0]) > p.limit);
        assert!(p.tail.unwrap() < p.limit);
        // The stored boundary is linfa's: the same decision value on fresh rows.
        let records = Array2::from_shape_vec((400, 3), rows.concat()).unwrap();
        let dataset = DatasetBase::new(records, Array2::from_elem((400, 1), ()));
        let svm: Svm<f64, bool> = Svm::<f64, Pr>::params()
            .nu_weight(NU)
            .gaussian_kernel(3.0)
            .fit(&dataset)
            .unwrap();
        for x in [[0.1, 0.2, -0.3], [1.5, 0.0, 0.9], [3.0, 3.0, -3.0]] {
            let theirs = svm.rho - svm.weighted_sum(&ndarray::arr1(&x));
            assert!((p.score(&x) - theirs).abs() < 1e-9, "{x:?}");
        }
        // Deterministic.
        assert_eq!(train(&rows, Some(0.95)).unwrap(), p);
    }

    #[test]
    fn too_few_rows_or_a_bad_section_are_refused() {
        assert!(train(&cloud(5), None).is_none());
        let mut p = train(&cloud(200), None).unwrap();
        assert!(p.check(2).unwrap_err().contains("3 values for 2 features"));
        p.alpha.pop();
        assert!(p.check(3).unwrap_err().contains("support vectors"));
    }
}
