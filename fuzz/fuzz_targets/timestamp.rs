//! `tads generate --start` (`tads_gen::config::parse_start`): RFC 3339 or a date, and the
//! dataset it starts (`GenConfig::validate`, the row count, the last row's time).
//!
//! Properties: no panic; a parsed start prints (RFC 3339) and parses back to the same instant,
//! and goes through JSON (the manifest) unchanged; a date is its own midnight UTC; a start that validates, with the default span and interval,
//! leaves every row's timestamp (start + i × interval) representable.
#![no_main]

use chrono::{Datelike, SecondsFormat, Timelike};
use libfuzzer_sys::fuzz_target;
use tads_gen::GenConfig;
use tads_gen::config::parse_start;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(start) = parse_start(text) else {
        return;
    };
    // RFC 3339 has four-digit years; a later start (from a date like +12345-01-01) prints
    // with a sign that only the manifest's reader takes.
    if (0..=9999).contains(&start.year()) {
        let printed = start.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        assert_eq!(
            parse_start(&printed),
            Ok(start),
            "{text:?} printed as {printed:?}"
        );
    }
    // The manifest's copy (`start` in `_manifest.json`).
    let json = serde_json::to_string(&start).expect("a start serializes");
    let back: chrono::DateTime<chrono::Utc> =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{text:?} as {json}: {e}"));
    assert_eq!(back, start, "{text:?} changed through JSON");
    if chrono::DateTime::parse_from_rfc3339(text).is_err() {
        // A date: midnight UTC.
        assert_eq!(
            (start.hour(), start.minute(), start.second()),
            (0, 0, 0),
            "{text:?}"
        );
        assert_eq!(start.nanosecond(), 0, "{text:?}");
    }
    let config = GenConfig {
        start,
        ..GenConfig::default()
    };
    if config.validate().is_ok() {
        assert!(start.timestamp() >= 0);
        let points = config.points_per_host();
        assert!(points > 0);
        let last = (points - 1) as i64 * config.interval.micros();
        let end = config
            .start_micros()
            .checked_add(last)
            .expect("the last row's time overflows");
        assert!(chrono::DateTime::from_timestamp_micros(end).is_some());
    }
});
