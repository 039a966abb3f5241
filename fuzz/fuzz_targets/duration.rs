//! The duration parsers: `alerts.cooldown`'s (`tads_jobs::config::parse_duration`, through
//! `CooldownSpec`) and `tads generate`'s `--duration`, `--interval`, `--min-gap` and
//! `--*-duration` ranges (`tads_gen::Span`, `SpanRange`).
//!
//! Properties: no panic; a parsed duration is never negative; `parse_duration` agrees with a
//! plain reading of `<digits><unit>`, and with `Span` where both accept the text; a `Span` and a
//! `SpanRange` print back to text that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tads_gen::{Span, SpanRange};
use tads_jobs::config::{CooldownSpec, parse_duration};

/// The scale of a unit `parse_duration` takes, in microseconds.
fn scale(unit: &str) -> Option<i64> {
    Some(match unit {
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" | "min" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // alerts.cooldown
    let parsed = parse_duration(text);
    if let Some(us) = parsed {
        assert!(us >= 0, "{text:?} parsed to {us} µs");
        assert_eq!(us % 1_000, 0, "{text:?}: finer than a millisecond");
    }
    // The reference reading: `0`, or digits and a unit, around whitespace.
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let expected = if t == "0" {
        Some(0)
    } else if digits == 0 {
        None
    } else {
        let (n, unit) = t.split_at(digits);
        match (n.parse::<i64>(), scale(unit)) {
            (Ok(n), Some(s)) => n.checked_mul(s),
            _ => None,
        }
    };
    assert_eq!(parsed, expected, "{text:?}");
    let spec = CooldownSpec::Span(text.to_string());
    match (spec.resolve(), parsed) {
        (Ok(tads_model::Cooldown::Micros(us)), Some(p)) => assert_eq!(us, p),
        (Err(message), None) => assert!(message.contains("alerts.cooldown")),
        (other, p) => panic!("{text:?}: resolve gave {other:?}, parse_duration {p:?}"),
    }

    // tads generate's spans
    if let Ok(span) = text.parse::<Span>() {
        assert!(span.micros() >= 0, "{text:?} parsed to {span:?}");
        let printed = span.to_string();
        assert_eq!(
            printed.parse::<Span>(),
            Ok(span),
            "{text:?} printed as {printed:?}"
        );
        // Where both parsers take the text, they agree.
        if let Some(us) = parsed {
            assert_eq!(
                span.micros(),
                us,
                "{text:?}: Span and parse_duration differ"
            );
        }
    }
    if let Ok(range) = text.parse::<SpanRange>() {
        assert!(range.min <= range.max && range.min.micros() >= 0);
        let printed = range.to_string();
        assert_eq!(
            printed.parse::<SpanRange>(),
            Ok(range),
            "{text:?} printed as {printed:?}"
        );
    }
});
