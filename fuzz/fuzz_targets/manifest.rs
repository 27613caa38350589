//! Manifest parsing: any text either parses or yields an error whose line and
//! column lie inside the input, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_protocol::{Manifest, Tier};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match Manifest::parse(src) {
        Ok(m) => {
            for tier in Tier::ALL {
                let _ = m.tier_summary(tier);
            }
        }
        Err(e) => {
            assert!(e.line >= 1 && e.line <= src.lines().count().max(1) + 1, "{e}");
            assert!(e.column >= 1);
        }
    }
});
