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
    /// How many detectors must agree under [`Rule::Vote`], 1 to 7.
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
    /// With `tail`, also raise each limit to the model's training tail in the scoring space
    /// (`scoring_space.tail`, when the model has one): the signals' quantile over the training
    /// rows as scoring measures them, after the drift baseline and the daily cycle.
    pub scoring_tail: bool,
    /// Take the SPE of the PCA fitted in the scoring space (`scoring_space.residual`, when the
    /// model has one) into the PCA signal: the larger of the two SPEs, each over its own limit.
    pub residual_pca: bool,
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
            scoring_tail: true,
            residual_pca: true,
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
        self.scoring_tail.hash(state);
        self.residual_pca.hash(state);
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
        let space = model.scoring_space.as_ref();
        let scoring = space
            .map(|s| s.tail)
            .filter(|_| self.tail && self.scoring_tail);
        // The larger of a signal's two training tails.
        let tail_of = |f: fn(&crate::Tail) -> Option<f64>| {
            let (a, b) = (tail.as_ref().and_then(f), scoring.as_ref().and_then(f));
            a.into_iter().chain(b).reduce(f64::max)
        };
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
                inv(raise(self.spe_limit.of(model), tail_of(|t| t.spe))),
            ),
            t2: on(
                d.pca,
                inv(raise(self.t2_limit.of(model), tail_of(|t| t.t2))),
            ),
            mad: on(
                d.mad,
                inv(raise(
                    Some(self.mad_cut.unwrap_or(model.thresholds.mad_z)),
                    tail_of(|t| t.zmax),
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
            forecast: on(
                d.forecast,
                inv(model.forecast.as_ref().map(|f| own(f.limit, f.tail))),
            ),
            residual: on(
                d.pca && self.residual_pca,
                inv(space.and_then(|s| s.residual.as_ref()).map(|r| r.limit)),
            ),
        }
    }

    /// Combines the signals in place: `spe[i]` becomes the fused score of row `i`, from
    /// `spe[i]`, `t2[i]` and `zmax[i]` scaled by `f`, and with the sampled detectors' values of
    /// `more` (empty slices where a detector is left out), which join by their maximum under
    /// either rule: the k-means distance over its limit, the Isolation Forest and one-class SVM
    /// scores put at 0 at their training median and 1.0 at their limit (never below 0), and the
    /// largest seasonal and forecast |z| over their limits (a NaN, a row without a time, leaves
    /// it out).
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
        for (i, ((s, t), z)) in spe.iter_mut().zip(t2).zip(zmax).enumerate() {
            let pca = f.pca(*s, *t, more.residual.get(i).copied());
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
        for (factor, values) in [(f.seasonal, more.seasonal), (f.forecast, more.forecast)] {
            if factor > 0.0 {
                for (s, z) in spe.iter_mut().zip(values) {
                    *s = s.max(timed_signal(*z, factor));
                }
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
    /// (on a tie too), the seasonal baseline, the forecast, or another (the MAD signal, and
    /// k-means and the forest and the one-class SVM, which name no metric: the metric with the
    /// largest robust |z| explains them).
    pub fn lead(&self, f: Factors, row: Signals, more: Sampled<'_>, i: usize) -> Lead {
        let s = f.signals(row.spe, row.t2, row.zmax, more, i);
        let (pca, seasonal, forecast) = (s[0], s[4], s[6]);
        let others = s[1].max(s[2]).max(s[3]).max(s[5]);
        if pca >= seasonal && pca >= forecast && pca >= others {
            Lead::Pca
        } else if seasonal >= forecast && seasonal >= others {
            Lead::Seasonal
        } else if forecast >= others {
            Lead::Forecast
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

    /// Whether [`Fusion::combine`] needs the forecast |z| of rows scored with `model` (and
    /// their times).
    pub fn needs_forecast(&self, model: &ModelArtifact) -> bool {
        self.detectors.forecast && model.forecast.is_some()
    }

    /// Whether the residual-space PCA's SPE takes part (the PCA detector on, the setting on and
    /// the model with one).
    pub fn needs_residual(&self, model: &ModelArtifact) -> bool {
        self.detectors.pca
            && self.residual_pca
            && model
                .scoring_space
                .as_ref()
                .is_some_and(|s| s.residual.is_some())
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
    /// The forecast residual: the metric with the largest forecast |z|.
    Forecast,
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
    /// 1 / the forecast |z| limit (0: left out).
    pub forecast: f64,
    /// 1 / the residual-space PCA's SPE limit (0: left out).
    pub residual: f64,
}

impl Factors {
    /// The PCA signal of an SPE, a T² and the residual-space PCA's SPE (if scored).
    fn pca(&self, spe: f64, t2: f64, residual: Option<f64>) -> f64 {
        let r = residual.map_or(0.0, |r| r * self.residual);
        (spe * self.spe).max(t2 * self.t2).max(r)
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
            self.forecast > 0.0 && !more.forecast.is_empty(),
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
            self.pca(spe, t2, more.residual.get(i).copied()),
            zmax * self.mad,
            more.kmeans.get(i).map_or(0.0, |d| self.kmeans_signal(*d)),
            more.iforest
                .get(i)
                .map_or(0.0, |v| above_median(*v, self.iforest)),
            more.seasonal
                .get(i)
                .map_or(0.0, |z| timed_signal(*z, self.seasonal)),
            more.ocsvm
                .get(i)
                .map_or(0.0, |v| above_median(*v, self.ocsvm)),
            more.forecast
                .get(i)
                .map_or(0.0, |z| timed_signal(*z, self.forecast)),
        ]
    }
}

/// The seasonal or forecast signal of a largest |z| with the factor 1 / limit: 0 where it is
/// NaN (a row without a time).
fn timed_signal(z: f64, factor: f64) -> f64 {
    if z.is_nan() { 0.0 } else { z * factor }
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
    /// The largest forecast |z|.
    pub forecast: &'a [f64],
    /// The residual-space PCA's SPE.
    pub residual: &'a [f64],
}

#[cfg(test)]
mod tests;
