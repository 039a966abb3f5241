//! `tads score --shard i/n` (`tads_jobs::score::Shard`).
//!
//! Properties: no panic; a shard that parses has 1 <= i <= n, prints as `i/n` and parses back
//! to itself; surrounding spaces around either number do not change it; text that is refused
//! gets a message naming it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tads_jobs::score::Shard;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<Shard>() {
        Ok(shard) => {
            assert!(
                1 <= shard.index && shard.index <= shard.count,
                "{text:?}: {shard:?}"
            );
            let printed = shard.to_string();
            assert_eq!(printed, format!("{}/{}", shard.index, shard.count));
            assert_eq!(printed.parse::<Shard>(), Ok(shard));
            // The manifest's copy.
            let json = serde_json::to_string(&shard).expect("a shard serializes");
            assert_eq!(serde_json::from_str::<Shard>(&json).ok(), Some(shard));
        }
        Err(message) => assert!(message.contains("is not a shard"), "{text:?}: {message}"),
    }
});
