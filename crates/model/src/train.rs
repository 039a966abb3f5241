//! Robust training from its parts, and an in-memory reference trainer.
//!
//! The algorithm (the DataFusion `train` job runs the same steps as SQL passes):
//! 1. per feature, the exact median and MAD (scaled by 1.4826) of its finite values;
//! 2. standardize `z = (x − median) / scale`, where `scale` is the MAD, or 1 for a constant
//!    feature (MAD 0: it is reported in `constant_features` and never divided by);
//! 3. leave out rows with a non-finite value or with |z| > `robust_z_cut` on any feature, so a
//!    few anomalies bend neither the components nor the limits;
//! 4. co-moments of the remaining z, PCA by eigendecomposition, k by explained variance or fixed;
//! 5. optionally drop the `trim` share of rows with the highest SPE and refit once;
//! 6. limits: Jackson–Mudholkar SPE limits and T² limits at 0.99 and 0.999, and the empirical
//!    0.99 / 0.999 quantiles of the SPE over the rows used.

use chrono::Utc;

use crate::artifact::{ModelArtifact, PcaParams, SCHEMA_VERSION, Thresholds, Training};
use crate::moments::CoMoments;
use crate::pca::{self, KRule, Pca};
use crate::robust::{RobustStats, SCALE_TAIL};
use crate::score::Scorer;
use crate::{Error, Result};

/// Choices of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// How many components to keep.
    pub k_rule: KRule,
    /// Rows with a robust |z| above this on any feature are left out of the covariance.
    pub robust_z_cut: f64,
    /// The share (0..0.5) of highest-SPE rows to drop before one refit.
    pub trim: Option<f64>,
    /// The quantile of each signal over every training row to store as the model's tail
    /// (`thresholds.tail`); `None` stores none.
    pub tail_quantile: Option<f64>,
    /// Look for a daily cycle in the training data (a timestamp column `ts`) and store it.
    pub seasonal: bool,
    /// Fit the k-means distance detector on a sample of the training rows and store it.
    pub kmeans: bool,
    /// Grow the Isolation Forest detector on a sample of the training rows and store it.
    pub iforest: bool,
    /// Fit the one-class SVM detector on a subsample of the training rows and store it.
    pub ocsvm: bool,
    /// Fit the seasonal baseline detector (per hour of the day or week) and store it.
    pub season_baseline: bool,
    /// Fit the forecast residual detector (MSTL of the hourly medians) and store it.
    pub forecast: bool,
    /// Floor each feature's scale by the range of its training quantiles
    /// ([`Standardizer::new`]).
    pub tail_scale: bool,
    /// Whether to measure the training signals in the space scoring measures rows in (each
    /// metric less its key's previous-day median and daily cycle), fit a second PCA there, and
    /// store both ([`crate::space`]), and when to keep them.
    pub scoring_space: crate::SpaceChoice,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            k_rule: KRule::Variance(0.95),
            robust_z_cut: 5.0,
            trim: None,
            tail_quantile: Some(0.95),
            seasonal: true,
            kmeans: false,
            iforest: false,
            ocsvm: false,
            season_baseline: false,
            forecast: false,
            tail_scale: true,
            scoring_space: crate::SpaceChoice::Auto,
        }
    }
}

/// Per-feature centre and scale: the first half of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Medians.
    pub median: Vec<f64>,
    /// MADs (scaled).
    pub mad: Vec<f64>,
    /// What z divides by: the MAD; where it is 0, the scaled mean absolute deviation (a sparse
    /// metric, mostly one value); where that is 0 too, 1 (a constant). With the tail floor, at
    /// least the range of the training values' 0.5 %–99.5 % quantiles over 4 Φ⁻¹(0.995) (half
    /// of σ on normal data, so only tails twice as wide as the MAD says raise it).
    pub scale: Vec<f64>,
    /// Per feature: its MAD is 0 but it varies, so its scale is the mean absolute deviation.
    pub sparse: Vec<bool>,
    /// Per feature: its scale was raised to the floor from its training quantiles.
    pub tail_scaled: Vec<bool>,
}

/// What a feature's 0.5 %–99.5 % range is divided by to floor its scale: 4 Φ⁻¹([`SCALE_TAIL`])
/// ≈ 10.3, half the σ that range implies for normal data. So only a metric whose tails are more
/// than twice as wide as its MAD says is floored: on normal data nothing changes, nor on the
/// generated metrics with their anomalies among the training rows (at most 1.55× there).
fn scale_floor_divisor() -> f64 {
    4.0 * crate::dist::normal_quantile(SCALE_TAIL)
}

impl Standardizer {
    /// From each feature's robust statistics; `tail_floor` raises each varying feature's scale
    /// to the range of its [`SCALE_TAIL`] quantiles over 4 Φ⁻¹(0.995) where that is larger:
    /// a heavy-tailed, quantized or bursty metric then measures its rows against the spread its
    /// training data really has, not against a MAD that only sees its bulk.
    pub fn new(stats: &[RobustStats], tail_floor: bool) -> Self {
        let base: Vec<f64> = stats
            .iter()
            .map(|s| {
                if s.mad > 0.0 {
                    s.mad
                } else if s.mean_ad > 0.0 {
                    s.mean_ad
                } else {
                    1.0
                }
            })
            .collect();
        let varies = |s: &RobustStats| s.mad > 0.0 || s.mean_ad > 0.0;
        let floor = |s: &RobustStats| {
            let f = (s.high - s.low) / scale_floor_divisor();
            if tail_floor && varies(s) && f.is_finite() {
                f
            } else {
                0.0
            }
        };
        Self {
            median: stats.iter().map(|s| s.median).collect(),
            mad: stats.iter().map(|s| s.mad).collect(),
            scale: stats
                .iter()
                .zip(&base)
                .map(|(s, b)| b.max(floor(s)))
                .collect(),
            sparse: stats
                .iter()
                .map(|s| s.mad <= 0.0 && s.mean_ad > 0.0)
                .collect(),
            tail_scaled: stats
                .iter()
                .zip(&base)
                .map(|(s, b)| floor(s) > *b)
                .collect(),
        }
    }

    /// Indices of the constant features: MAD 0 and no other spread.
    pub fn constant(&self) -> Vec<usize> {
        (0..self.mad.len())
            .filter(|&j| self.mad[j] <= 0.0 && !self.sparse.get(j).copied().unwrap_or(false))
            .collect()
    }

    /// Indices of the sparse features: MAD 0, scaled by their mean absolute deviation.
    pub fn sparse(&self) -> Vec<usize> {
        (0..self.sparse.len()).filter(|&j| self.sparse[j]).collect()
    }

    /// Indices of the features whose scale is their training quantiles' floor.
    pub fn tail_scaled(&self) -> Vec<usize> {
        (0..self.tail_scaled.len())
            .filter(|&j| self.tail_scaled[j])
            .collect()
    }
}

/// Everything the steps above produce besides the artifact's provenance.
pub struct Fitted {
    /// The centre and scale.
    pub standardizer: Standardizer,
    /// The PCA of the rows used.
    pub pca: Pca,
    /// Rows used in the final fit.
    pub rows_used: u64,
    /// Empirical SPE quantiles (0.99, 0.999) over the rows used.
    pub spe_quantiles: (Option<f64>, Option<f64>),
}

/// Assembles and seals the artifact.
pub fn artifact(
    name: &str,
    features: &[String],
    fitted: &Fitted,
    options: &TrainOptions,
    rows_seen: u64,
    data_uri: &str,
    filter: Option<String>,
) -> Result<ModelArtifact> {
    let p = &fitted.pca;
    let k = p.k();
    let n = fitted.rows_used;
    let model = ModelArtifact {
        schema_version: SCHEMA_VERSION,
        name: name.to_string(),
        features: features.to_vec(),
        median: fitted.standardizer.median.clone(),
        mad: fitted.standardizer.mad.clone(),
        scale: fitted.standardizer.scale.clone(),
        constant_features: fitted
            .standardizer
            .constant()
            .into_iter()
            .map(|j| features[j].clone())
            .collect(),
        sparse_features: fitted
            .standardizer
            .sparse()
            .into_iter()
            .map(|j| features[j].clone())
            .collect(),
        tail_scaled_features: fitted
            .standardizer
            .tail_scaled()
            .into_iter()
            .map(|j| features[j].clone())
            .collect(),
        robust_z_cut: options.robust_z_cut,
        pca: PcaParams::from_pca(p, options.k_rule),
        thresholds: Thresholds {
            spe_jm_99: pca::spe_limit(&p.eigenvalues, k, 0.99),
            spe_jm_999: pca::spe_limit(&p.eigenvalues, k, 0.999),
            spe_empirical_99: fitted.spe_quantiles.0.filter(|v| *v > 0.0),
            spe_empirical_999: fitted.spe_quantiles.1.filter(|v| *v > 0.0),
            t2_99: pca::t2_limit(k, n, 0.99),
            t2_999: pca::t2_limit(k, n, 0.999),
            mad_z: options.robust_z_cut,
            tail: None,
        },
        seasonal: None,
        kmeans: None,
        iforest: None,
        ocsvm: None,
        season: None,
        forecast: None,
        scoring_space: None,
        training: Training {
            rows_seen,
            rows_used: n,
            data_uri: data_uri.to_string(),
            filter,
            trimmed_fraction: options.trim,
            created_at: Utc::now(),
        },
        fingerprint: String::new(),
    }
    .seal();
    model.validate()?;
    Ok(model)
}

/// The median, the 0.999 quantile (the limit) and the `tail_quantile` of a sampled detector's
/// training `scores` (reordered); `None` when the limit is not above the median.
pub(crate) fn median_limit_tail(
    scores: &mut [f64],
    tail_quantile: Option<f64>,
) -> Option<(f64, f64, Option<f64>)> {
    let median = quantile_in_place(scores, 0.5)?;
    let limit = quantile_in_place(scores, 0.999)?;
    if limit.partial_cmp(&median) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let tail = tail_quantile
        .and_then(|q| quantile_in_place(scores, q))
        .filter(|t| t.is_finite());
    Some((median, limit, tail))
}

/// Checks a sampled detector's stored training median and limit (`what` names the section):
/// both finite, the limit above the median, as [`median_limit_tail`] makes them.
pub(crate) fn check_median_limit(what: &str, median: f64, limit: f64) -> Result<(), String> {
    if median.is_finite() && limit.is_finite() && limit > median {
        Ok(())
    } else {
        Err(format!(
            "{what}: limit {limit} is not above the median {median}"
        ))
    }
}

/// Checks a detector's stored limit (`what` names the section): a finite positive number.
pub(crate) fn check_positive_limit(what: &str, limit: f64) -> Result<(), String> {
    if limit.is_finite() && limit > 0.0 {
        Ok(())
    } else {
        Err(format!("{what}: limit {limit} is not a positive number"))
    }
}

/// The continuous q-quantile of `values` (reordered in place): linear interpolation at position
/// q·(n − 1), the definition of SQL's `percentile_cont` ([`crate::robust::quantile_select`]).
pub fn quantile_in_place(values: &mut [f64], q: f64) -> Option<f64> {
    crate::robust::quantile_select(values, q)
}

/// Trains on columns held in memory: the reference the DataFusion job is tested against.
pub fn fit_in_memory(columns: &[Vec<f64>], options: &TrainOptions) -> Result<Fitted> {
    let invalid = |message: String| Error::Invalid {
        field: "training data".into(),
        message,
    };
    let d = columns.len();
    let n = columns.first().map_or(0, Vec::len);
    let stats: Vec<RobustStats> = columns
        .iter()
        .map(|c| RobustStats::exact(&mut c.clone()))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("a feature has no finite value".into()))?;
    let standardizer = Standardizer::new(&stats, options.tail_scale);
    let cut = options.robust_z_cut;
    let keep: Vec<bool> = (0..n)
        .map(|i| {
            (0..d).all(|j| {
                let z = (columns[j][i] - standardizer.median[j]) / standardizer.scale[j];
                z.is_finite() && z.abs() <= cut
            })
        })
        .collect();
    let select = |keep: &[bool]| -> Vec<Vec<f64>> {
        (0..d)
            .map(|j| (0..n).filter(|&i| keep[i]).map(|i| columns[j][i]).collect())
            .collect()
    };
    let standardize = |raw: &[Vec<f64>]| -> Vec<Vec<f64>> {
        raw.iter()
            .enumerate()
            .map(|(j, c)| {
                c.iter()
                    .map(|x| (x - standardizer.median[j]) / standardizer.scale[j])
                    .collect()
            })
            .collect()
    };
    let moments_of = |z: &[Vec<f64>]| {
        let mut m = CoMoments::new(d);
        m.update(&z.iter().map(Vec::as_slice).collect::<Vec<_>>());
        m
    };
    let spe_of = |pca: &Pca, raw: &[Vec<f64>]| -> Vec<f64> {
        let scorer = Scorer::from_pca(standardizer.median.clone(), standardizer.scale.clone(), pca);
        let mut out = vec![0.0; raw.first().map_or(0, Vec::len)];
        scorer.spe(&raw.iter().map(Vec::as_slice).collect::<Vec<_>>(), &mut out);
        out
    };
    let mut raw = select(&keep);
    let mut pca = pca::fit(&moments_of(&standardize(&raw)), options.k_rule).map_err(invalid)?;
    if let Some(trim) = options.trim.filter(|t| *t > 0.0) {
        let spe = spe_of(&pca, &raw);
        let limit = quantile_in_place(&mut spe.clone(), 1.0 - trim).unwrap_or(f64::INFINITY);
        let kept: Vec<bool> = spe.iter().map(|s| *s <= limit).collect();
        raw = (0..d)
            .map(|j| {
                raw[j]
                    .iter()
                    .zip(&kept)
                    .filter(|(_, k)| **k)
                    .map(|(x, _)| *x)
                    .collect()
            })
            .collect();
        pca = pca::fit(&moments_of(&standardize(&raw)), options.k_rule).map_err(invalid)?;
    }
    let mut spe = spe_of(&pca, &raw);
    let rows_used = spe.len() as u64;
    let q99 = quantile_in_place(&mut spe, 0.99);
    let q999 = quantile_in_place(&mut spe, 0.999);
    Ok(Fitted {
        standardizer,
        pca,
        rows_used,
        spe_quantiles: (q99, q999),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Normal bulk (σ = 1, from a fixed sequence) plus `share` of the rows at `burst`.
    fn column(n: usize, share: f64, burst: f64) -> Vec<f64> {
        let bursts = (n as f64 * share) as usize;
        (0..n)
            .map(|i| {
                if i < bursts {
                    burst
                } else {
                    // Evenly spaced normal quantiles: a normal sample without randomness.
                    crate::dist::normal_quantile(
                        (i - bursts) as f64 / (n - bursts) as f64 * 0.998 + 0.001,
                    )
                }
            })
            .collect()
    }

    #[test]
    fn a_heavy_tailed_metric_is_scaled_by_its_quantile_range_and_a_normal_one_is_not() {
        let stats: Vec<RobustStats> = [column(10_000, 0.0, 0.0), column(10_000, 0.03, 40.0)]
            .into_iter()
            .map(|mut c| RobustStats::exact(&mut c).unwrap())
            .collect();
        let on = Standardizer::new(&stats, true);
        // Normal: the MAD's σ and the quantiles' agree within a few %; the MAD stays.
        assert!((on.scale[0] - 1.0).abs() < 0.05, "{}", on.scale[0]);
        assert_eq!(on.scale[0], stats[0].mad);
        // 3 % of the rows at 40: the 99.5 % quantile is 40, so the scale is about 42.6 / 10.3.
        let floor = (40.0 - stats[1].low) / (4.0 * 2.575_829);
        assert!(
            (on.scale[1] - floor).abs() < 1e-3,
            "{} {floor}",
            on.scale[1]
        );
        assert!(on.scale[1] > 3.5 * stats[1].mad);
        assert_eq!(on.tail_scaled(), vec![1]);
        // Off: the MAD, as before.
        let off = Standardizer::new(&stats, false);
        assert_eq!(off.scale, vec![stats[0].mad, stats[1].mad]);
        assert!(off.tail_scaled().is_empty());
        // A constant feature keeps scale 1 and is not tail-scaled.
        let constant = RobustStats::exact(&mut vec![3.0; 50]).unwrap();
        let c = Standardizer::new(&[constant], true);
        assert_eq!(
            (c.scale[0], c.constant(), c.tail_scaled()),
            (1.0, vec![0], vec![])
        );
    }
}
