//! One anomaly score from the detectors' signals (`fusion/detectors.rs` says which), and
//! severity bands on it (`fusion/severity.rs`).
//!
//! The PCA signal is the SPE divided by the model's SPE limit, or Hotelling's T² divided by its
//! limit where that is larger; the MAD signal is the largest robust |z| divided by its cut; the
//! k-means, Isolation Forest and seasonal signals are their own statistics over their limits.
//! Each is 1.0 exactly at its threshold, so they can be combined: by their maximum (a row is as
//! anomalous as its worse signal), by a weighted mean, or by a vote.
//!
//! Why T² too: the components a model keeps (by explained variance) include directions that
//! belong to single metrics, so a step or a drift on one metric moves a row along a kept
//! component, where the SPE does not see it and T² does. On generated data, T² is what finds
//! level shifts and trends; the SPE is what finds correlation breaks.

use serde::{Deserialize, Serialize};

use crate::ModelArtifact;

mod detectors;
mod severity;

pub use detectors::{Detectors, Weights};
pub use severity::Severity;

/// Which of the model's SPE limits divides the SPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SpeLimit {
    /// Jackson–Mudholkar at α = 0.99.
    #[serde(rename = "jm_99")]
    Jm99,
    /// Jackson–Mudholkar at α = 0.999: the default, because it comes from the model's
    /// eigenvalues, where the empirical quantiles also count the anomalies in the training data.
    #[default]
    #[serde(rename = "jm_999")]
    Jm999,
    /// The 0.99 quantile of the training SPE.
    #[serde(rename = "empirical_99")]
    Empirical99,
    /// The 0.999 quantile of the training SPE.
    #[serde(rename = "empirical_999")]
    Empirical999,
}

impl SpeLimit {
    /// The limit in `model`, if the model has it (a model without residual space has none).
    pub fn of(self, model: &ModelArtifact) -> Option<f64> {
        let t = &model.thresholds;
        match self {
            Self::Jm99 => t.spe_jm_99,
            Self::Jm999 => t.spe_jm_999,
            Self::Empirical99 => t.spe_empirical_99,
            Self::Empirical999 => t.spe_empirical_999,
        }
        .filter(|l| l.is_finite() && *l > 0.0)
    }
}

/// Which of the model's T² limits divides T² in the PCA signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum T2Limit {
    /// The F-distribution limit at α = 0.99.
    #[serde(rename = "t2_99")]
    T2_99,
    /// The limit at α = 0.999.
    #[default]
    #[serde(rename = "t2_999")]
    T2_999,
    /// Leave T² out: the PCA signal is the SPE alone.
    #[serde(rename = "off")]
    Off,
}

impl T2Limit {
    /// The limit in `model`, if any.
    pub fn of(self, model: &ModelArtifact) -> Option<f64> {
        let t = &model.thresholds;
        match self {
            Self::T2_99 => t.t2_99,
            Self::T2_999 => t.t2_999,
            Self::Off => None,
        }
        .filter(|l| l.is_finite() && *l > 0.0)
    }
}

/// How the two signals combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The larger of the two.
    #[default]
    Max,
    /// With `weights`, the weighted mean of the signals of the detectors present; without,
    /// `pca_weight · pca + (1 − pca_weight) · mad` (the other detectors joining by maximum).
    Weighted,
    /// The `votes`-th largest signal of the detectors: at or above 1.0 exactly where `votes`
    /// of them are at or above their thresholds (all of them where fewer are present).
    Vote,
}

/// The fusion settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fusion {
    /// The detectors whose signals make the score.
    pub detectors: Detectors,
    /// How the signals combine.
    pub rule: Rule,
    /// The PCA signal's weight under [`Rule::Weighted`], in [0, 1] (without `weights`).
    pub pca_weight: f64,
    /// Each detector's weight under [`Rule::Weighted`] (`fusion.weights = { pca = 2, mad = 1 }`,
    /// or `--set fusion.weights.iforest=1`); a detector left out weighs 0.
    pub weights: Option<Weights>,
    /// How many detectors must agree under [`Rule::Vote`], 1 to 6.
    pub votes: usize,
    /// The SPE limit the SPE is divided by.
    pub spe_limit: SpeLimit,
    /// The T² limit T² is divided by (or `off`).
    pub t2_limit: T2Limit,
    /// The |z| the largest robust z is divided by; `None`: the model's own cut
    /// (`thresholds.mad_z`).
    pub mad_cut: Option<f64>,
    /// Raise each limit to at least the model's training tail of that signal
    /// (`thresholds.tail`, when the model has one): limits derived for Gaussian noise are kept
    /// where the training data follows them and widened where its normal behaviour has heavier
    /// tails (real telemetry: quantized, sparse and bursty metrics).
    pub tail: bool,
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            detectors: Detectors::default(),
            rule: Rule::Max,
            pca_weight: 0.5,
            weights: None,
            votes: 2,
            spe_limit: SpeLimit::default(),
            t2_limit: T2Limit::default(),
            mad_cut: None,
            tail: true,
        }
    }
}

impl Eq for Fusion {}
impl std::hash::Hash for Fusion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.detectors.hash(state);
        self.rule.hash(state);
        self.pca_weight.to_bits().hash(state);
        self.weights
            .map(|w| w.values().map(f64::to_bits))
            .hash(state);
        self.votes.hash(state);
        self.spe_limit.hash(state);
        self.t2_limit.hash(state);
        self.mad_cut.map(f64::to_bits).hash(state);
        self.tail.hash(state);
    }
}

impl Fusion {
    /// Checks the values; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.pca_weight) {
            return Err(format!(
                "fusion.pca_weight: {} is not in [0, 1]",
                self.pca_weight
            ));
        }
        if let Some(w) = self.weights {
            if let Some((name, v)) = Detectors::NAMES
                .iter()
                .zip(w.values())
                .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
            {
                return Err(format!(
                    "fusion.weights.{name}: {v} is not a number of 0 or more"
                ));
            }
            let used = self.detectors.flags();
            if !w.values().iter().zip(used).any(|(v, on)| on && *v > 0.0) {
                return Err(format!(
                    "fusion.weights: no detector of fusion.detectors ({}) has a weight above 0",
                    self.detectors.names().join(", ")
                ));
            }
        }
        if !(1..=Detectors::NAMES.len()).contains(&self.votes) {
            return Err(format!(
                "fusion.votes: {} is not from 1 to {}",
                self.votes,
                Detectors::NAMES.len()
            ));
        }
        if let Some(c) = self.mad_cut
            && !(c.is_finite() && c > 0.0)
        {
            return Err(format!("fusion.mad_cut: {c} is not a positive number"));
        }
        Ok(())
    }

    /// The factors that turn a model's SPE, T², largest |z| and k-means distance into signals
    /// (1.0 at threshold): `1 / spe_limit`, `1 / t2_limit`, `1 / mad_cut` and `1 / the
    /// distance limit`; 0 for a limit the model lacks (or T² off) and for a detector not in
    /// `detectors`, which leaves that signal out.
    pub fn factors(&self, model: &ModelArtifact) -> Factors {
        let inv = |l: Option<f64>| {
            l.filter(|l| l.is_finite() && *l > 0.0)
                .map_or(0.0, |l| 1.0 / l)
        };
        let tail = model.thresholds.tail.filter(|_| self.tail);
        // A limit raised to the signal's training tail; a signal left out stays out.
        let raise = |limit: Option<f64>, tail: Option<f64>| match (limit, tail) {
            (Some(l), Some(t)) if t.is_finite() => Some(l.max(t)),
            (l, _) => l,
        };
        let on = |used: bool, f: f64| if used { f } else { 0.0 };
        let d = self.detectors;
        // A sampled detector's limit, raised to its own training tail.
        let own = |limit: f64, tail: Option<f64>| {
            raise(Some(limit), tail.filter(|_| self.tail)).unwrap_or(limit)
        };
        let kmeans = model.kmeans.as_ref().map(|k| own(k.limit, k.tail));
        Factors {
            spe: on(
                d.pca,
                inv(raise(self.spe_limit.of(model), tail.and_then(|t| t.spe))),
            ),
            t2: on(
                d.pca,
                inv(raise(self.t2_limit.of(model), tail.and_then(|t| t.t2))),
            ),
            mad: on(
                d.mad,
                inv(raise(
                    Some(self.mad_cut.unwrap_or(model.thresholds.mad_z)),
                    tail.and_then(|t| t.zmax),
                )),
            ),
            kmeans: on(d.kmeans, inv(kmeans)),
            iforest: model
                .iforest
                .as_ref()
                .filter(|_| d.iforest)
                .map_or((0.0, 0.0), |f| {
                    (f.median, 1.0 / (own(f.limit, f.tail) - f.median))
                }),
            seasonal: on(
                d.seasonal,
                inv(model.season.as_ref().map(|s| own(s.limit, s.tail))),
            ),
            ocsvm: model
                .ocsvm
                .as_ref()
                .filter(|_| d.ocsvm)
                .map_or((0.0, 0.0), |o| {
                    (o.median, 1.0 / (own(o.limit, o.tail) - o.median))
                }),
        }
    }

    /// Combines the signals in place: `spe[i]` becomes the fused score of row `i`, from
    /// `spe[i]`, `t2[i]` and `zmax[i]` scaled by `f`, and with the sampled detectors' values of
    /// `more` (empty slices where a detector is left out), which join by their maximum under
    /// either rule: the k-means distance over its limit, the Isolation Forest and one-class SVM
    /// scores put at 0 at their training median and 1.0 at their limit (never below 0), and the
    /// largest seasonal |z| over its limit (a NaN, a row without a time, leaves it out).
    pub fn combine(
        &self,
        f: Factors,
        spe: &mut [f64],
        t2: &[f64],
        zmax: &[f64],
        more: Sampled<'_>,
    ) {
        if self.rule == Rule::Vote {
            return self.vote(f, spe, t2, zmax, more);
        }
        if let (Rule::Weighted, Some(w)) = (self.rule, self.weights) {
            return weighted_mean(w, f, spe, t2, zmax, more);
        }
        let (w, v) = match self.rule {
            Rule::Weighted => (self.pca_weight, 1.0 - self.pca_weight),
            _ => (1.0, 1.0),
        };
        for ((s, t), z) in spe.iter_mut().zip(t2).zip(zmax) {
            let pca = f.pca(*s, *t);
            let mad = z * f.mad;
            *s = match self.rule {
                Rule::Weighted => w * pca + v * mad,
                _ => pca.max(mad),
            };
        }
        if f.kmeans > 0.0 {
            for (s, d) in spe.iter_mut().zip(more.kmeans) {
                *s = s.max(f.kmeans_signal(*d));
            }
        }
        for (factor, values) in [(f.iforest, more.iforest), (f.ocsvm, more.ocsvm)] {
            if factor.1 > 0.0 {
                for (s, v) in spe.iter_mut().zip(values) {
                    *s = s.max(above_median(*v, factor));
                }
            }
        }
        if f.seasonal > 0.0 {
            for (s, z) in spe.iter_mut().zip(more.seasonal) {
                *s = s.max(f.seasonal_signal(*z));
            }
        }
    }

    /// [`Rule::Vote`]: each row's `votes`-th largest signal among the detectors present.
    fn vote(&self, f: Factors, spe: &mut [f64], t2: &[f64], zmax: &[f64], more: Sampled<'_>) {
        let present = f.present(more);
        for i in 0..spe.len() {
            let candidates = present
                .into_iter()
                .zip(f.signals(spe[i], t2[i], zmax[i], more, i));
            let mut signals = [0.0f64; Detectors::NAMES.len()];
            let mut n = 0;
            for (present, value) in candidates {
                if present {
                    signals[n] = value;
                    n += 1;
                }
            }
            let present = &mut signals[..n];
            present.sort_by(|a, b| b.total_cmp(a));
            spe[i] = present
                .get(self.votes.min(n).saturating_sub(1))
                .copied()
                .unwrap_or(0.0);
        }
    }

    /// Which signal of row `i` is the largest, for naming the metric that explains the row: PCA
    /// (on a tie too), the seasonal baseline, or another (the MAD signal, and k-means and the
    /// forest and the one-class SVM, which name no metric: the metric with the largest robust
    /// |z| explains them).
    pub fn lead(&self, f: Factors, row: Signals, more: Sampled<'_>, i: usize) -> Lead {
        let s = f.signals(row.spe, row.t2, row.zmax, more, i);
        let (pca, seasonal, others) = (s[0], s[4], s[1].max(s[2]).max(s[3]).max(s[5]));
        if pca >= seasonal && pca >= others {
            Lead::Pca
        } else if seasonal >= others {
            Lead::Seasonal
        } else {
            Lead::Z
        }
    }

    /// Whether [`Fusion::combine`] needs the Isolation Forest scores of rows scored with `model`.
    pub fn needs_iforest(&self, model: &ModelArtifact) -> bool {
        self.detectors.iforest && model.iforest.is_some()
    }

    /// Whether [`Fusion::combine`] needs the one-class SVM scores of rows scored with `model`.
    pub fn needs_ocsvm(&self, model: &ModelArtifact) -> bool {
        self.detectors.ocsvm && model.ocsvm.is_some()
    }

    /// Whether [`Fusion::combine`] needs the seasonal |z| of rows scored with `model` (and
    /// their times).
    pub fn needs_seasonal(&self, model: &ModelArtifact) -> bool {
        self.detectors.seasonal && model.season.is_some()
    }

    /// Whether [`Fusion::combine`] needs the k-means distances of rows scored with `model`.
    pub fn needs_kmeans(&self, model: &ModelArtifact) -> bool {
        self.detectors.kmeans && model.kmeans.is_some()
    }
}

/// [`Rule::Weighted`] with `weights`: each row's weighted mean of the signals of the detectors
/// present (1.0 where every one is at its threshold).
fn weighted_mean(
    w: Weights,
    f: Factors,
    spe: &mut [f64],
    t2: &[f64],
    zmax: &[f64],
    more: Sampled<'_>,
) {
    let present = f.present(more);
    let weights = w.values();
    let all = 0..Detectors::NAMES.len();
    let total: f64 = all
        .clone()
        .filter(|d| present[*d])
        .map(|d| weights[d])
        .sum();
    if total <= 0.0 {
        spe.fill(0.0);
        return;
    }
    for i in 0..spe.len() {
        let signals = f.signals(spe[i], t2[i], zmax[i], more, i);
        spe[i] = all
            .clone()
            .filter(|d| present[*d])
            .map(|d| weights[d] * signals[d])
            .sum::<f64>()
            / total;
    }
}

/// A row's SPE, T² and largest robust |z|.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    /// The SPE.
    pub spe: f64,
    /// Hotelling's T².
    pub t2: f64,
    /// The largest robust |z|.
    pub zmax: f64,
}

/// The detector a row's largest signal comes from, as [`Fusion::lead`] tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// PCA: its top metric (the largest share of the SPE) explains the row.
    Pca,
    /// The seasonal baseline: the metric with the largest seasonal |z|.
    Seasonal,
    /// Another: the metric with the largest robust |z|.
    Z,
}

/// What [`Fusion::combine`] multiplies each statistic by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factors {
    /// 1 / SPE limit.
    pub spe: f64,
    /// 1 / T² limit (0: T² left out).
    pub t2: f64,
    /// 1 / the |z| cut.
    pub mad: f64,
    /// 1 / the k-means distance limit (0: k-means left out).
    pub kmeans: f64,
    /// The Isolation Forest score's training median and 1 / (limit − median) (0: left out).
    pub iforest: (f64, f64),
    /// 1 / the seasonal |z| limit (0: left out).
    pub seasonal: f64,
    /// The one-class SVM score's training median and 1 / (limit − median) (0: left out).
    pub ocsvm: (f64, f64),
}

impl Factors {
    /// The PCA signal of an SPE and a T².
    fn pca(&self, spe: f64, t2: f64) -> f64 {
        (spe * self.spe).max(t2 * self.t2)
    }

    /// The k-means signal of a distance.
    fn kmeans_signal(&self, distance: f64) -> f64 {
        distance * self.kmeans
    }

    /// Which detectors give row signals, in the order of [`Detectors::NAMES`]: those with a
    /// factor (and values, for the ones `more` carries).
    fn present(&self, more: Sampled<'_>) -> [bool; Detectors::NAMES.len()] {
        [
            self.spe > 0.0 || self.t2 > 0.0,
            self.mad > 0.0,
            self.kmeans > 0.0 && !more.kmeans.is_empty(),
            self.iforest.1 > 0.0 && !more.iforest.is_empty(),
            self.seasonal > 0.0 && !more.seasonal.is_empty(),
            self.ocsvm.1 > 0.0 && !more.ocsvm.is_empty(),
        ]
    }

    /// Row `i`'s signals, in the order of [`Detectors::NAMES`] (0 where a value is missing).
    fn signals(
        &self,
        spe: f64,
        t2: f64,
        zmax: f64,
        more: Sampled<'_>,
        i: usize,
    ) -> [f64; Detectors::NAMES.len()] {
        [
            self.pca(spe, t2),
            zmax * self.mad,
            more.kmeans.get(i).map_or(0.0, |d| self.kmeans_signal(*d)),
            more.iforest
                .get(i)
                .map_or(0.0, |v| above_median(*v, self.iforest)),
            more.seasonal
                .get(i)
                .map_or(0.0, |z| self.seasonal_signal(*z)),
            more.ocsvm
                .get(i)
                .map_or(0.0, |v| above_median(*v, self.ocsvm)),
        ]
    }

    /// The seasonal signal of a largest |z|: 0 where it is NaN (a row without a time).
    fn seasonal_signal(&self, z: f64) -> f64 {
        if z.is_nan() { 0.0 } else { z * self.seasonal }
    }
}

/// The signal of an Isolation Forest or one-class SVM score with its training `(median, 1 /
/// (limit − median))`: 0 at the median, never below, 1.0 at the limit.
fn above_median(score: f64, (median, scale): (f64, f64)) -> f64 {
    (score - median).max(0.0) * scale
}

/// The values of the detectors fitted on a training sample, one per row (empty where left out).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sampled<'a> {
    /// The k-means distances.
    pub kmeans: &'a [f64],
    /// The Isolation Forest scores.
    pub iforest: &'a [f64],
    /// The largest seasonal |z|.
    pub seasonal: &'a [f64],
    /// The one-class SVM scores.
    pub ocsvm: &'a [f64],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_one_at_threshold_and_combine() {
        let f = Fusion::default();
        let k = Factors {
            spe: 0.1,
            t2: 0.5,
            mad: 0.25,
            kmeans: 0.0,
            iforest: (0.0, 0.0),
            seasonal: 0.0,
            ocsvm: (0.0, 0.0),
        };
        let mut spe = vec![10.0, 5.0, 0.0, 0.0];
        let none = Sampled::default();
        f.combine(
            k,
            &mut spe,
            &[0.0, 0.0, 0.0, 6.0],
            &[2.0, 8.0, 4.0, 0.0],
            none,
        );
        assert_eq!(spe, vec![1.0, 2.0, 1.0, 3.0]);
        // k-means joins by its maximum.
        let mut spe = vec![10.0, 5.0];
        let km = Factors { kmeans: 0.5, ..k };
        let more = Sampled {
            kmeans: &[6.0, 2.0],
            ..Sampled::default()
        };
        f.combine(km, &mut spe, &[0.0, 0.0], &[2.0, 8.0], more);
        assert_eq!(spe, vec![3.0, 2.0]);
        // The forest's score: 0 at its median (0.5), 1 at its limit (0.7), never below 0.
        let mut spe = vec![0.0, 0.0, 0.0];
        let forest = Factors {
            iforest: (0.5, 5.0),
            ..k
        };
        let more = Sampled {
            iforest: &[0.4, 0.7, 0.9],
            ..Sampled::default()
        };
        f.combine(forest, &mut spe, &[0.0; 3], &[0.0; 3], more);
        assert!(
            (spe[0] - 0.0).abs() < 1e-12 && (spe[1] - 1.0).abs() < 1e-12,
            "{spe:?}"
        );
        assert!((spe[2] - 2.0).abs() < 1e-12, "{spe:?}");
        // The one-class SVM's score alike: 0 at its median (−0.1), 1 at its limit (0.1).
        let mut spe = vec![0.0, 0.0];
        let svm = Factors {
            ocsvm: (-0.1, 5.0),
            ..k
        };
        let more = Sampled {
            ocsvm: &[-0.3, 0.1],
            ..Sampled::default()
        };
        f.combine(svm, &mut spe, &[0.0; 2], &[0.0; 2], more);
        assert!(spe[0] == 0.0 && (spe[1] - 1.0).abs() < 1e-12, "{spe:?}");
        // The seasonal |z| over its limit (4): a row without a time (NaN) leaves it out.
        let mut spe = vec![0.5, 0.5, 0.5];
        let seasonal = Factors {
            seasonal: 0.25,
            ..k
        };
        let more = Sampled {
            seasonal: &[8.0, 1.0, f64::NAN],
            ..Sampled::default()
        };
        f.combine(seasonal, &mut spe, &[0.0; 3], &[0.0; 3], more);
        assert_eq!(spe, vec![2.0, 0.25, 0.05]);
        let w = Fusion {
            rule: Rule::Weighted,
            pca_weight: 0.75,
            ..f
        };
        let mut spe = vec![10.0];
        w.combine(k, &mut spe, &[1.0], &[8.0], none);
        assert_eq!(spe, vec![0.75 + 0.5]);
        assert!(
            Fusion {
                pca_weight: 1.5,
                ..f
            }
            .validate()
            .is_err()
        );
    }

    /// A model of three small periodic metrics.
    fn small_model() -> ModelArtifact {
        let columns: Vec<Vec<f64>> = (0..3)
            .map(|j| {
                (0..200)
                    .map(|i| ((i * (j + 3)) % 17) as f64 + j as f64)
                    .collect()
            })
            .collect();
        let options = crate::TrainOptions::default();
        let fitted = crate::train::fit_in_memory(&columns, &options).unwrap();
        let names = ["a", "b", "c"].map(String::from);
        crate::train::artifact("m", &names, &fitted, &options, 200, "mem", None).unwrap()
    }

    #[test]
    fn a_training_tail_raises_a_limit_and_never_lowers_it() {
        let model = small_model();
        let f = Fusion::default();
        let base = Fusion { tail: false, ..f }.factors(&model);
        let mut m = model.clone();
        let t = &m.thresholds;
        m.thresholds.tail = Some(crate::Tail {
            quantile: 0.95,
            spe: t.spe_jm_999.map(|l| l * 4.0),
            t2: t.t2_999.map(|l| l / 4.0),
            zmax: Some(10.0),
        });
        let raised = f.factors(&m);
        assert!((raised.spe - base.spe / 4.0).abs() < 1e-12);
        assert_eq!(raised.t2, base.t2);
        assert!((raised.mad - 0.1).abs() < 1e-12);
        let off = Fusion { tail: false, ..f }.factors(&m);
        assert_eq!(off, base);
    }

    #[test]
    fn a_vote_is_the_kth_largest_signal_of_the_detectors_present() {
        let f = Factors {
            spe: 1.0,
            t2: 0.0,
            mad: 1.0,
            kmeans: 1.0,
            iforest: (0.0, 0.0),
            seasonal: 1.0,
            ocsvm: (0.0, 0.0),
        };
        let two = Fusion {
            rule: Rule::Vote,
            ..Fusion::default()
        };
        // Rows: one detector high; two high; none.
        let mut spe = vec![3.0, 2.0, 0.1];
        let more = Sampled {
            kmeans: &[0.2, 1.5, 0.3],
            ..Sampled::default()
        };
        two.combine(f, &mut spe, &[0.0; 3], &[0.5, 0.4, 0.2], more);
        assert_eq!(spe, vec![0.5, 1.5, 0.2]);
        // The seasonal signal votes too.
        let mut spe = vec![3.0];
        let more = Sampled {
            kmeans: &[0.2],
            seasonal: &[2.5],
            ..Sampled::default()
        };
        two.combine(f, &mut spe, &[0.0], &[0.5], more);
        assert_eq!(spe, vec![2.5]);
        // More votes than detectors present: all must agree (the smallest).
        let mut spe = vec![3.0];
        let all = Fusion { votes: 5, ..two };
        all.combine(f, &mut spe, &[0.0], &[2.0], Sampled::default());
        assert_eq!(spe, vec![2.0]);
        assert!(Fusion { votes: 0, ..two }.validate().is_err());
        assert!(Fusion { votes: 7, ..two }.validate().is_err());
    }

    #[test]
    fn weights_make_a_weighted_mean_of_the_signals_present_and_are_checked() {
        let f = Factors {
            spe: 1.0,
            t2: 0.0,
            mad: 1.0,
            kmeans: 0.0,
            iforest: (0.0, 0.0),
            seasonal: 1.0,
            ocsvm: (0.0, 0.0),
        };
        let w = Fusion {
            rule: Rule::Weighted,
            weights: Some(Weights {
                pca: 3.0,
                mad: 1.0,
                seasonal: 4.0,
                ..Weights::default()
            }),
            ..Fusion::default()
        };
        // With the seasonal values: (3·2 + 1·1 + 4·0.5) / 8; without them (a row set without
        // times), the seasonal weight leaves the total too: (3·2 + 1·1) / 4.
        let mut spe = vec![2.0];
        let more = Sampled {
            seasonal: &[0.5],
            ..Sampled::default()
        };
        w.combine(f, &mut spe, &[0.0], &[1.0], more);
        assert_eq!(spe, vec![9.0 / 8.0]);
        let mut spe = vec![2.0];
        w.combine(f, &mut spe, &[0.0], &[1.0], Sampled::default());
        assert_eq!(spe, vec![7.0 / 4.0]);
        // The largest signal names the metric: the seasonal one here.
        let row = Signals {
            spe: 2.0,
            t2: 0.0,
            zmax: 1.0,
        };
        let high = Sampled {
            seasonal: &[2.5],
            ..Sampled::default()
        };
        assert_eq!(w.lead(f, row, high, 0), Lead::Seasonal);
        assert_eq!(w.lead(f, row, more, 0), Lead::Pca);
        let z = Signals { zmax: 4.0, ..row };
        assert_eq!(w.lead(f, z, more, 0), Lead::Z);
        // Checked: no negative weight, and some detector in use weighs more than 0.
        let bad = |weights: Weights| {
            Fusion {
                weights: Some(weights),
                ..w
            }
            .validate()
            .unwrap_err()
        };
        let e = bad(Weights {
            mad: -1.0,
            ..Weights::default()
        });
        assert!(e.contains("fusion.weights.mad: -1"), "{e}");
        let e = bad(Weights {
            kmeans: 1.0,
            ..Weights::default()
        });
        assert!(
            e.contains("no detector of fusion.detectors (pca, mad)"),
            "{e}"
        );
        assert!(w.validate().is_ok());
    }

    #[test]
    fn detectors_read_as_a_list_or_comma_separated_and_leave_signals_out() {
        let read = |v: serde_json::Value| serde_json::from_value::<Detectors>(v);
        let d = read(serde_json::json!(["pca", "kmeans"])).unwrap();
        assert_eq!((d.pca, d.mad, d.kmeans), (true, false, true));
        assert_eq!(
            read(serde_json::json!("mad, kmeans")).unwrap().names(),
            ["mad", "kmeans"]
        );
        let e = read(serde_json::json!(["pca", "lstm"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown detector `lstm`"), "{e}");
        assert!(read(serde_json::json!([])).is_err());
        assert_eq!(
            serde_json::to_value(Detectors::default()).unwrap(),
            serde_json::json!(["pca", "mad"])
        );
        let mad_only = Fusion {
            detectors: Detectors::from_names(["mad"]).unwrap(),
            ..Fusion::default()
        };
        let model = small_model();
        let got = mad_only.factors(&model);
        assert_eq!((got.spe, got.t2, got.kmeans), (0.0, 0.0, 0.0));
        assert!(got.mad > 0.0);
        assert!(!Fusion::default().needs_kmeans(&model));
    }

    #[test]
    fn severity_bands_include_their_lower_edge() {
        let s = Severity::default();
        assert_eq!(
            [s.of(1.0), s.of(2.0), s.of(3.9), s.of(4.0)],
            ["info", "warning", "warning", "critical"]
        );
        assert!(
            Severity {
                warning: 3.0,
                critical: 2.0
            }
            .validate()
            .is_err()
        );
    }
}
