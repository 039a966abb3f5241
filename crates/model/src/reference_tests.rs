//! The PCA and the trainer checked against independent implementations: linfa-reduction's PCA
//! (an SVD of the centred data) and plain matrix formulas.

use linfa::DatasetBase;
use linfa::traits::Fit;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::moments::CoMoments;
use crate::pca::{KRule, fit};
use crate::train::{TrainOptions, fit_in_memory};

/// Rows from 2 latent factors mixed into 5 features plus noise: distinct eigenvalues.
fn data(n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mix = [[3.0, 0.5], [2.0, -1.0], [-1.5, 2.0], [0.5, 0.3], [1.0, 1.0]];
    let noise = [0.3, 0.5, 0.2, 0.8, 0.4];
    (0..n)
        .map(|_| {
            let f: [f64; 2] = [rng.sample(StandardNormal), rng.sample(StandardNormal)];
            (0..5)
                .map(|j| {
                    10.0 * j as f64
                        + mix[j][0] * f[0]
                        + mix[j][1] * f[1]
                        + noise[j] * rng.sample::<f64, _>(StandardNormal)
                })
                .collect()
        })
        .collect()
}

#[test]
fn components_and_eigenvalues_match_linfa() {
    let rows = data(3_000, 1);
    let (n, d) = (rows.len(), 5);
    let cols: Vec<Vec<f64>> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).collect())
        .collect();
    let mut m = CoMoments::new(d);
    m.update(&cols.iter().map(Vec::as_slice).collect::<Vec<_>>());
    // TADS keeps at most d - 1 components (so that an SPE exists).
    let ours = fit(&m, KRule::Fixed(d - 1)).unwrap();

    // linfa is asked for every component: without its `blas` feature it uses a randomized
    // truncated SVD (LOBPCG), which on this data does not converge when asked for fewer than d
    // (its top component explained 13.1 of a true 16.3 with k = 3); the full fit is exact.
    let records = Array2::from_shape_fn((n, d), |(i, j)| rows[i][j]);
    let theirs = linfa_reduction::Pca::params(d)
        .fit(&DatasetBase::from(records))
        .unwrap();
    // linfa's `explained_variance` divides by k - 1; the covariance eigenvalues are s² / (n - 1).
    let sigma = theirs.singular_values();
    let components = theirs.components(); // k × d
    for i in 0..d {
        let lambda = sigma[i] * sigma[i] / (n as f64 - 1.0);
        let rel = (ours.eigenvalues[i] - lambda).abs() / lambda;
        assert!(
            rel < 1e-9,
            "eigenvalue {i}: {} vs {lambda} (relative {rel:e})",
            ours.eigenvalues[i]
        );
    }
    for i in 0..d - 1 {
        // Equal up to sign.
        let dot: f64 = (0..d)
            .map(|j| ours.components[i][j] * components[[i, j]])
            .sum();
        let sign = dot.signum();
        for j in 0..d {
            let diff = (ours.components[i][j] - sign * components[[i, j]]).abs();
            assert!(
                diff < 1e-9,
                "component {i}[{j}]: {} vs {}",
                ours.components[i][j],
                components[[i, j]]
            );
        }
    }
    for j in 0..d {
        assert!((ours.mean[j] - theirs.mean()[j]).abs() < 1e-9);
    }
}

#[test]
fn robust_training_ignores_a_few_gross_anomalies() {
    let clean = data(5_000, 2);
    let mut dirty = clean.clone();
    // 1% of rows get a huge value on one feature, each feature in turn (0.2 % of its rows:
    // under the 0.5 % that the scale's tail floor would take for a heavy tail).
    for (i, row) in dirty.iter_mut().enumerate().filter(|(i, _)| i % 100 == 0) {
        row[(i / 100) % 5] += 500.0;
    }
    let cols = |rows: &[Vec<f64>]| -> Vec<Vec<f64>> {
        (0..5)
            .map(|j| rows.iter().map(|r| r[j]).collect())
            .collect()
    };
    let options = TrainOptions {
        k_rule: KRule::Fixed(2),
        ..TrainOptions::default()
    };
    let a = fit_in_memory(&cols(&clean), &options).unwrap();
    let b = fit_in_memory(&cols(&dirty), &options).unwrap();
    assert!(
        b.rows_used < 4_960,
        "the anomalies were left out: {}",
        b.rows_used
    );
    for i in 0..2 {
        let dot: f64 = (0..5)
            .map(|j| a.pca.components[i][j] * b.pca.components[i][j])
            .sum();
        assert!(
            dot.abs() > 0.999,
            "component {i} bent: |cos| = {}",
            dot.abs()
        );
    }
    // Without the robust cut the same anomalies take over the first component.
    let loose = TrainOptions {
        robust_z_cut: 1e9,
        ..options
    };
    let c = fit_in_memory(&cols(&dirty), &loose).unwrap();
    let dot: f64 = (0..5)
        .map(|j| a.pca.components[0][j] * c.pca.components[0][j])
        .sum();
    assert!(
        dot.abs() < 0.99,
        "expected the non-robust fit to bend, |cos| = {}",
        dot.abs()
    );
    // 1 % of the rows at +500 on one feature is that feature's normal tail to the tail floor
    // (its scale grows ~15-fold and the rows fall inside the cut); with MAD scales alone the cut
    // leaves them out and the components stay.
    let mut one = clean.clone();
    for row in one.iter_mut().step_by(100) {
        row[0] += 500.0;
    }
    let floored = fit_in_memory(&cols(&one), &options).unwrap();
    assert!(floored.standardizer.scale[0] > 10.0 * a.standardizer.scale[0]);
    assert_eq!(floored.standardizer.tail_scaled(), vec![0]);
    let mad_only = TrainOptions {
        tail_scale: false,
        ..options
    };
    let d = fit_in_memory(&cols(&one), &mad_only).unwrap();
    assert!(d.rows_used < 4_960, "{}", d.rows_used);
    for i in 0..2 {
        let dot: f64 = (0..5)
            .map(|j| a.pca.components[i][j] * d.pca.components[i][j])
            .sum();
        assert!(
            dot.abs() > 0.999,
            "component {i} bent: |cos| = {}",
            dot.abs()
        );
    }
}

#[test]
fn trimmed_refit_and_constant_features() {
    let mut rows = data(2_000, 3);
    for r in &mut rows {
        r.push(42.0); // a constant sixth feature
    }
    let cols: Vec<Vec<f64>> = (0..6)
        .map(|j| rows.iter().map(|r| r[j]).collect())
        .collect();
    let options = TrainOptions {
        k_rule: KRule::Variance(0.9),
        trim: Some(0.01),
        ..TrainOptions::default()
    };
    let fitted = fit_in_memory(&cols, &options).unwrap();
    assert_eq!(fitted.standardizer.constant(), vec![5]);
    assert_eq!(fitted.standardizer.scale[5], 1.0);
    assert!(
        fitted.rows_used < 2_000 && fitted.rows_used >= 1_970,
        "{}",
        fitted.rows_used
    );
    let names: Vec<String> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let model =
        crate::train::artifact("m1", &names, &fitted, &options, 2_000, "file:///x", None).unwrap();
    assert_eq!(model.constant_features, ["f"]);
    assert!(model.thresholds.spe_jm_99.unwrap() < model.thresholds.spe_jm_999.unwrap());
    assert!(
        model.thresholds.spe_empirical_99.unwrap() <= model.thresholds.spe_empirical_999.unwrap()
    );
    // The artifact round-trips and a changed parameter is caught by the fingerprint.
    let back = crate::ModelArtifact::from_json(&model.to_json()).unwrap();
    assert_eq!(back, model);
    let mut edited = model.clone();
    edited.median[0] += 1.0;
    let err = crate::ModelArtifact::from_json(&edited.to_json())
        .unwrap_err()
        .to_string();
    assert!(err.contains("fingerprint"), "{err}");
    let mut broken = model;
    broken.scale[2] = 0.0;
    let err = crate::ModelArtifact::from_json(&broken.to_json())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("model.json: scale:"), "{err}");
    let err = crate::ModelArtifact::from_json(br#"{"schema_version": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field"), "{err}");
}
