//! TADS models: robust statistics, PCA and the `model.json` artifact, with no query engine.
//!
//! A TADS model standardizes each feature robustly, `z = (x − median) / (1.4826 · MAD)`, and
//! fits a PCA to the standardized rows that lie inside a robust cut, so that a few anomalies in
//! the training data bend neither the scale nor the components. Rows are then scored by their
//! squared prediction error (SPE, the part of `z` the retained components do not explain) and by
//! Hotelling's T² (how far they lie along the components), against limits fitted at training
//! time ([`pca::spe_limit`], [`pca::t2_limit`]).
//!
//! The pieces are independent of DataFusion so that they can be tested against reference
//! implementations and reused: [`robust`] (exact median and MAD), [`moments`] (mergeable
//! co-moments, the state of the `pca_fit` aggregate), [`linalg`] (symmetric eigendecomposition),
//! [`dist`] (normal, χ² and F quantiles), [`pca`] and [`artifact`].
#![deny(missing_docs)]

pub mod adapt;
pub mod alert;
pub mod artifact;
pub mod dist;
pub mod forecast;
pub mod fusion;
pub mod group;
pub mod hash;
pub mod iforest;
pub mod kmeans;
pub mod linalg;
pub mod moments;
pub mod ocsvm;
pub mod pca;
pub mod robust;
pub mod score;
pub mod season;
pub mod space;
pub mod train;

#[cfg(test)]
mod reference_tests;

/// A fixed pseudo-random sequence for tests: uniform values in [0, 1) from a 64-bit linear
/// congruential generator seeded with `seed` (the top 53 bits of each state).
#[cfg(test)]
pub(crate) fn test_uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub use adapt::{AdaptState, Adaptive, push_adaptive};
pub use alert::{AlertMachine, Cooldown, Event, Hold, Numbering, Step};
pub use artifact::{
    ModelArtifact, PcaParams, SCHEMA_VERSION, Seasonal, Tail, Thresholds, Training,
};
pub use forecast::ForecastParams;
pub use fusion::{
    Factors, Fusion, Lead, Rule, Sampled, Severity, Signals, SpeLimit, T2Limit, Weights,
};
pub use group::{ModelGroup, SkippedMember};
pub use iforest::IForestParams;
pub use kmeans::KMeansParams;
pub use moments::CoMoments;
pub use ocsvm::OcsvmParams;
pub use pca::{KRule, Pca};
pub use robust::{MAD_SCALE, MEAN_AD_SCALE, RobustStats};
pub use score::{AllScores, Scorer};
pub use season::SeasonParams;
pub use space::{ResidualFit, ScoringSpace, SpaceChoice, Verdict};
pub use train::{Standardizer, TrainOptions};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model field is missing, malformed or inconsistent.
    #[error("model.json: {field}: {message}")]
    Invalid {
        /// The field, as a JSON path (`pca.components`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
