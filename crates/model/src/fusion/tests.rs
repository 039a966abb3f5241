//! The fusion's unit tests.

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
        forecast: 0.0,
        residual: 0.0,
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
    // The scoring space's PCA's SPE joins the PCA signal by its maximum, over its own limit.
    let residual = Factors {
        residual: 0.25,
        ..k
    };
    let mut spe = vec![10.0, 5.0];
    let more = Sampled {
        residual: &[2.0, 12.0],
        ..Sampled::default()
    };
    f.combine(residual, &mut spe, &[0.0, 0.0], &[0.0, 0.0], more);
    assert_eq!(spe, vec![1.0, 3.0]);
    // The forecast |z| over its limit (2) alike.
    let mut spe = vec![0.5, 0.5, 0.5];
    let forecast = Factors { forecast: 0.5, ..k };
    let more = Sampled {
        forecast: &[3.0, 0.4, f64::NAN],
        ..Sampled::default()
    };
    f.combine(forecast, &mut spe, &[0.0; 3], &[0.0; 3], more);
    assert_eq!(spe, vec![1.5, 0.2, 0.05]);
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
        forecast: 0.0,
        residual: 0.0,
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
    assert!(Fusion { votes: 8, ..two }.validate().is_err());
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
        forecast: 0.0,
        residual: 0.0,
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
    let forecast = Factors { forecast: 1.0, ..f };
    let ahead = Sampled {
        seasonal: &[2.5],
        forecast: &[3.0],
        ..Sampled::default()
    };
    assert_eq!(w.lead(forecast, row, ahead, 0), Lead::Forecast);
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
