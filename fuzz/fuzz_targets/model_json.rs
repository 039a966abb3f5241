//! `model.json` loading (`ModelArtifact::from_json`): any bytes give a model or an error, never
//! a panic; a model that loads round-trips through its JSON and scores without NaN.
//!
//! A fuzzer cannot forge the SHA-256 fingerprint, so most mutated documents stop at the
//! fingerprint check. The same bytes are therefore also parsed without checks and resealed
//! (fingerprint recomputed) before loading, which reaches every other check of `validate`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tads_model::ModelArtifact;

mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = ModelArtifact::from_json(data) {
        common::round_trip(&model);
        common::scores(&model);
    }
    let Ok(unchecked) = serde_json::from_slice::<ModelArtifact>(data) else {
        return;
    };
    let sealed = unchecked.seal();
    match ModelArtifact::from_json(&sealed.to_json()) {
        Ok(model) => {
            assert_eq!(model, sealed);
            common::round_trip(&model);
            common::scores(&model);
        }
        // Refused: then `validate` refuses the same value, for the same reason.
        Err(e) => {
            let direct = sealed
                .validate()
                .expect_err("from_json refused what validate accepts");
            assert_eq!(direct.to_string(), e.to_string());
        }
    }
});
