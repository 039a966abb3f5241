//! `group.json` loading (`ModelGroup::from_json`): any bytes give a group or an error, never a
//! panic; a group that loads round-trips through its JSON, names its members `<group>/<value>`,
//! and each member loads on its own and scores without NaN.
//!
//! As for `model.json`, the bytes are also parsed without checks and resealed (each member's
//! fingerprint, then the group's) so that the checks behind the fingerprints are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tads_model::{ModelArtifact, ModelGroup};

mod common;

fn check(group: &ModelGroup) {
    let json = group.to_json();
    let back = ModelGroup::from_json(&json)
        .unwrap_or_else(|e| panic!("a loaded group does not load again: {e}"));
    assert_eq!(&back, group, "a group changed through its own JSON");
    assert_eq!(back.to_json(), json, "a group's JSON is not stable");
    for m in &group.members {
        let key = group.key_of(m);
        assert_eq!(ModelGroup::member_name(&group.name, key), m.name);
        assert_eq!(m.features, group.features);
        // A member loads as a model of its own too.
        common::round_trip(m);
        common::scores(m);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(group) = ModelGroup::from_json(data) {
        check(&group);
    }
    let Ok(mut unchecked) = serde_json::from_slice::<ModelGroup>(data) else {
        return;
    };
    unchecked.members = unchecked
        .members
        .into_iter()
        .map(ModelArtifact::seal)
        .collect();
    let sealed = unchecked.seal();
    match ModelGroup::from_json(&sealed.to_json()) {
        Ok(group) => {
            assert_eq!(group, sealed);
            check(&group);
        }
        Err(e) => {
            let direct = sealed
                .validate()
                .expect_err("from_json refused what validate accepts");
            assert_eq!(direct.to_string(), e.to_string());
        }
    }
});
