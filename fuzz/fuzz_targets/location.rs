//! Locations (`tads_store::Location::parse` and `parse_data`): a local path, `file://` or
//! `s3://bucket/prefix`, as `--data`, `--out` and `--models` take them.
//!
//! Properties: no panic; a location that parses has a URL ending in `/` whose path names the
//! same key as the location's store prefix (DataFusion reads by the URL, TADS lists and writes
//! by the prefix, so the two must be one place), parses again from its own URL to itself, and
//! prints as the path or URL it is; `parse_data` differs from `parse` only for a single file.
//!
//! `AWS_SKIP_SIGNATURE` is set, so `s3://` locations are built (no request is made).
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use tads_store::{Location, Scheme};

fn env() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        // SAFETY: set once, before anything reads the environment, on the fuzzer's thread.
        unsafe {
            std::env::set_var("AWS_SKIP_SIGNATURE", "true");
            std::env::set_var("AWS_REGION", "us-east-1");
        }
    });
}

fn check(text: &str, loc: &Location) {
    let url = loc.url();
    assert!(url.as_str().ends_with('/'), "{text:?}: {url}");
    let from_url = object_store::path::Path::from_url_path(url.path());
    assert_eq!(
        from_url.as_ref().ok(),
        Some(loc.prefix()),
        "{text:?}: the URL {url} and the store prefix {} are not one place",
        loc.prefix()
    );
    match loc.scheme() {
        Scheme::Local => {
            assert_eq!(url.scheme(), "file", "{text:?}");
            let path = url.to_file_path().expect("a local URL is a path");
            assert!(path.is_absolute());
            assert_eq!(
                loc.to_string().trim_end_matches('/'),
                path.display().to_string().trim_end_matches('/'),
                "{text:?}: a local location prints as another path"
            );
        }
        Scheme::S3 => {
            assert_eq!(url.scheme(), "s3", "{text:?}");
            assert_eq!(loc.to_string(), url.as_str());
        }
    }
    let again = Location::parse(url.as_str())
        .unwrap_or_else(|e| panic!("{text:?}: its own URL {url} does not parse: {e}"));
    assert_eq!(again.url(), url, "{text:?}");
    assert_eq!(again.prefix(), loc.prefix(), "{text:?}");
    // Children stay below.
    let child = loc.child("date=2026-01-01/part-00000.parquet");
    assert_eq!(
        loc.relative(&child).as_deref(),
        Some("date=2026-01-01/part-00000.parquet"),
        "{text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    env();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = Location::parse(text);
    if let Ok(loc) = &dir {
        check(text, loc);
        assert_eq!(loc.file(), None);
    }
    match Location::parse_data(text) {
        Ok(loc) => {
            check(text, &loc);
            match loc.file() {
                Some(name) => {
                    assert!(
                        !name.is_empty() && !name.contains('/'),
                        "{text:?}: file {name:?}"
                    );
                    // The file's folder is where the text says: an s3:// file is on S3.
                    if let Ok(d) = &dir {
                        assert_eq!(d.scheme(), loc.scheme(), "{text:?}");
                    }
                }
                None => assert_eq!(
                    dir.as_ref().map(|d| d.url().clone()).ok(),
                    Some(loc.url().clone()),
                    "{text:?}: parse_data took a directory parse did not"
                ),
            }
        }
        Err(_) => {
            // A directory parse that succeeds is a data location too, unless the text names
            // a file (then parse refuses it: a file is not a directory).
            assert!(dir.is_err(), "{text:?}: parse took it, parse_data did not");
        }
    }
});
