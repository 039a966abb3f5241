//! The settings of `tads score` (`ScoreConfig::load`): a TOML file with `${VAR}` and
//! `${VAR:default}` substitution, then `--set key=value` overrides.
//!
//! Input: the file's text, then each override, separated by NUL bytes (an empty file part means
//! no file). A few variables are set for `${VAR}` to find (`TADS_FUZZ_*`, see `env`).
//!
//! Properties: no panic and no stack overflow (deep brackets, deep dotted keys); settings that
//! load are valid, and survive the trips they take in TADS: to JSON and back (the run's
//! manifest), and to TOML and back through `load` (a settings file written from them). Text
//! without `${` is left alone by the substitution.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use tads_jobs::config::{ScoreConfig, substitute};

/// Variables the corpus refers to; anything else named `${…}` is unset.
fn env() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        for (k, v) in [
            ("TADS_FUZZ_ENTER", "1.5"),
            ("TADS_FUZZ_COOLDOWN", "\"10m\""),
            ("TADS_FUZZ_KEY", "host_id"),
            ("TADS_FUZZ_EMPTY", ""),
            ("TADS_FUZZ_NESTED", "${TADS_FUZZ_ENTER}"),
        ] {
            // SAFETY: set once, before anything reads the environment, on the fuzzer's thread.
            unsafe { std::env::set_var(k, v) };
        }
    });
}

fuzz_target!(|data: &[u8]| {
    env();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let file = parts.next().filter(|f| !f.is_empty());
    let overrides: Vec<String> = parts.map(str::to_string).collect();

    if let Some(f) = file
        && !f.contains("${")
    {
        assert_eq!(substitute(f).as_deref(), Ok(f), "text without ${{ changed");
    }

    let Ok(config) = ScoreConfig::load(file.map(|f| ("fuzz.toml", f)), &overrides) else {
        return;
    };
    config.validate().expect("loaded settings are valid");
    config
        .alerts
        .cooldown
        .resolve()
        .expect("a loaded cooldown resolves");

    // The manifest's copy.
    let json = serde_json::to_vec(&config).expect("settings serialize to JSON");
    let back: ScoreConfig = serde_json::from_slice(&json).expect("settings read back from JSON");
    assert_eq!(back, config, "settings changed through JSON");

    // A settings file written from them. The substitution would expand a `${` that a value
    // holds (a variable's value or default may hold one), so such files are read unsubstituted.
    let toml_text = toml::to_string(&config).expect("settings serialize to TOML");
    let back = if toml_text.contains("${") {
        toml::from_str::<ScoreConfig>(&toml_text).map_err(|e| e.to_string())
    } else {
        ScoreConfig::load(Some(("round-trip.toml", &toml_text)), &[]).map_err(|e| e.to_string())
    };
    assert_eq!(
        back,
        Ok(config),
        "settings changed through TOML:\n{toml_text}"
    );
});
