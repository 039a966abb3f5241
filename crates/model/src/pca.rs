//! PCA from co-moments, and the control limits of its two statistics.

use serde::{Deserialize, Serialize};

use crate::dist::{chi2_quantile, f_quantile, normal_quantile};
use crate::linalg::symmetric_eigen;
use crate::moments::CoMoments;

/// How many components to keep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KRule {
    /// The fewest components whose explained variance reaches this share (0 < v ≤ 1).
    Variance(f64),
    /// Exactly this many.
    Fixed(usize),
}

/// A fitted PCA: the training mean, all eigenvalues, and the retained components.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Mean of each feature in the training rows.
    pub mean: Vec<f64>,
    /// Every eigenvalue of the covariance, descending (tiny negative rounding clamped to 0).
    pub eigenvalues: Vec<f64>,
    /// Each eigenvalue's share of the total variance.
    pub explained_variance_ratio: Vec<f64>,
    /// The `k` retained unit eigenvectors, each of length d.
    pub components: Vec<Vec<f64>>,
}

impl Pca {
    /// Number of retained components.
    pub fn k(&self) -> usize {
        self.components.len()
    }
}

/// Fits a PCA to `moments`. With d ≥ 2, k stays below d so that a residual space (and an SPE)
/// remains. Errors name the problem.
pub fn fit(moments: &CoMoments, rule: KRule) -> Result<Pca, String> {
    let d = moments.dims();
    let cov = moments
        .covariance()
        .ok_or_else(|| format!("PCA needs at least 2 rows, got {}", moments.count()))?;
    let (values, vectors) = symmetric_eigen(&cov, d);
    let eigenvalues: Vec<f64> = values.iter().map(|v| v.max(0.0)).collect();
    let total: f64 = eigenvalues.iter().sum();
    if total <= 0.0 {
        return Err("every feature is constant in the training rows".into());
    }
    let ratio: Vec<f64> = eigenvalues.iter().map(|v| v / total).collect();
    let max_k = if d >= 2 { d - 1 } else { 1 };
    let k = match rule {
        KRule::Fixed(k) if k == 0 || k > max_k => {
            return Err(format!(
                "k must be between 1 and {max_k} for {d} features, got {k}"
            ));
        }
        KRule::Fixed(k) => k,
        KRule::Variance(v) if !(v > 0.0 && v <= 1.0) => {
            return Err(format!(
                "the explained-variance target must be in (0, 1], got {v}"
            ));
        }
        KRule::Variance(v) => {
            let mut cumulative = 0.0;
            let mut k = d;
            for (i, r) in ratio.iter().enumerate() {
                cumulative += r;
                if cumulative >= v - 1e-12 {
                    k = i + 1;
                    break;
                }
            }
            k.clamp(1, max_k)
        }
    };
    Ok(Pca {
        mean: moments.mean().to_vec(),
        eigenvalues,
        explained_variance_ratio: ratio,
        components: vectors.into_iter().take(k).collect(),
    })
}

/// The Jackson–Mudholkar upper control limit of the SPE at confidence `alpha` (e.g. 0.99), from
/// the discarded eigenvalues `eigenvalues[k..]`; `None` when nothing of substance is discarded.
pub fn spe_limit(eigenvalues: &[f64], k: usize, alpha: f64) -> Option<f64> {
    let rest = eigenvalues.get(k..)?;
    let theta = |p: i32| rest.iter().map(|l| l.powi(p)).sum::<f64>();
    let (t1, t2, t3) = (theta(1), theta(2), theta(3));
    if t1 <= 0.0 || t2 <= 0.0 {
        return None;
    }
    let h0 = 1.0 - 2.0 * t1 * t3 / (3.0 * t2 * t2);
    if h0 <= 1e-6 {
        // The approximation degenerates; fall back to its h0 → 0 limit, a log-normal form.
        return None;
    }
    let c = normal_quantile(alpha);
    let inner = c * (2.0 * t2 * h0 * h0).sqrt() / t1 + 1.0 + t2 * h0 * (h0 - 1.0) / (t1 * t1);
    (inner > 0.0).then(|| t1 * inner.powf(1.0 / h0))
}

/// The upper control limit of Hotelling's T² with `k` components from `n` training rows at
/// confidence `alpha`: k(n−1)/(n−k) · F(k, n−k). Above 100,000 degrees of freedom the F quantile
/// is replaced by its χ²_k/k limit (relative difference below 1e-4).
pub fn t2_limit(k: usize, n: u64, alpha: f64) -> Option<f64> {
    let (kf, nf) = (k as f64, n as f64);
    if n <= k as u64 + 1 || k == 0 {
        return None;
    }
    let scale = kf * (nf - 1.0) / (nf - kf);
    let f = if nf - kf > 1e5 {
        chi2_quantile(alpha, kf) / kf
    } else {
        f_quantile(alpha, kf, nf - kf)
    };
    Some(scale * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(rows: &[Vec<f64>]) -> CoMoments {
        let d = rows[0].len();
        let cols: Vec<Vec<f64>> = (0..d)
            .map(|j| rows.iter().map(|r| r[j]).collect())
            .collect();
        let mut m = CoMoments::new(d);
        m.update(&cols.iter().map(Vec::as_slice).collect::<Vec<_>>());
        m
    }

    #[test]
    fn k_by_variance_and_fixed() {
        // Three features, two of them nearly the same signal.
        let rows: Vec<Vec<f64>> = (0..500)
            .map(|i| {
                let t = f64::from(i) * 0.1;
                vec![
                    t.sin() * 10.0,
                    t.sin() * 10.0 + (t * 7.0).cos() * 0.1,
                    (t * 3.3).cos(),
                ]
            })
            .collect();
        let m = moments(&rows);
        let p = fit(&m, KRule::Variance(0.95)).unwrap();
        assert_eq!(p.k(), 1);
        assert!(p.explained_variance_ratio[0] > 0.95);
        assert!((p.explained_variance_ratio.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(fit(&m, KRule::Fixed(2)).unwrap().k(), 2);
        assert!(
            fit(&m, KRule::Fixed(3))
                .unwrap_err()
                .contains("between 1 and 2")
        );
        assert!(fit(&m, KRule::Variance(1.5)).is_err());
        // Asking for all the variance still leaves a residual space.
        assert_eq!(fit(&m, KRule::Variance(1.0)).unwrap().k(), 2);
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        assert!(
            fit(&CoMoments::new(2), KRule::Fixed(1))
                .unwrap_err()
                .contains("at least 2 rows")
        );
        let m = moments(&[vec![1.0, 2.0], vec![1.0, 2.0], vec![1.0, 2.0]]);
        assert!(fit(&m, KRule::Fixed(1)).unwrap_err().contains("constant"));
    }

    #[test]
    fn control_limits() {
        // With one discarded eigenvalue λ, SPE/λ is χ²_1, and Jackson–Mudholkar is close to it.
        let l = [5.0, 2.0];
        let jm = spe_limit(&l, 1, 0.99).unwrap();
        let exact = 2.0 * chi2_quantile(0.99, 1.0);
        assert!((jm / exact - 1.0).abs() < 0.05, "{jm} vs {exact}");
        assert!(spe_limit(&l, 2, 0.99).is_none());
        assert!(spe_limit(&l, 1, 0.999).unwrap() > jm);
        // T² tends to χ²_k for many rows.
        let t2 = t2_limit(3, 10_000_000, 0.99).unwrap();
        assert!((t2 - 11.344_866_730_144_373).abs() < 1e-3, "{t2}");
        let small = t2_limit(3, 50, 0.99).unwrap();
        assert!(small > t2);
        assert!(t2_limit(3, 4, 0.99).is_none());
    }
}
