//! Checks shared by the model targets.

use tads_model::{AllScores, ModelArtifact, Scorer};

/// A model that loaded (passed `validate`) must survive the trip through its own JSON: it
/// serializes, loads again equal, and serializes again to the same bytes.
pub fn round_trip(model: &ModelArtifact) {
    let json = model.to_json();
    let back = ModelArtifact::from_json(&json)
        .unwrap_or_else(|e| panic!("a loaded model does not load again: {e}"));
    assert_eq!(&back, model, "a model changed through its own JSON");
    assert_eq!(back.to_json(), json, "a model's JSON is not stable");
    assert_eq!(back.compute_fingerprint(), model.fingerprint);
}

/// A model that loaded must score: every score of a few rows (at the median, at the PCA centre,
/// at 0, one scale out, far out) is a number (not NaN) and not negative, and the top feature is a feature.
pub fn scores(model: &ModelArtifact) {
    let scorer = Scorer::new(model);
    let d = model.dims();
    assert_eq!(scorer.dims(), d);
    let rows: Vec<Vec<f64>> = vec![
        model.median.clone(),
        // The PCA centre, where every component score is 0.
        model
            .median
            .iter()
            .zip(&model.scale)
            .zip(&model.pca.mean)
            .map(|((m, s), c)| m + c * s)
            .collect(),
        vec![0.0; d],
        model
            .median
            .iter()
            .zip(&model.scale)
            .map(|(m, s)| m + s)
            .collect(),
        vec![1e300; d],
        vec![-1e300; d],
    ];
    let n = rows.len();
    let columns: Vec<Vec<f64>> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).collect())
        .collect();
    let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
    let (mut spe, mut t2, mut zmax, mut top) =
        (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![None; n]);
    scorer.all(
        &refs,
        AllScores {
            spe: &mut spe,
            t2: &mut t2,
            zmax: &mut zmax,
            top: &mut top,
        },
    );
    for i in 0..n {
        for (what, v) in [("spe", spe[i]), ("t2", t2[i]), ("zmax", zmax[i])] {
            assert!(
                !v.is_nan() && v >= 0.0,
                "{}: row {i} ({:?}) has {what} {v}",
                model.name,
                rows[i]
            );
        }
        if let Some(j) = top[i] {
            assert!((j as usize) < d, "top feature {j} of {d}");
        }
        let shares = scorer.contributions(&rows[i]);
        assert_eq!(shares.len(), d);
    }
}
