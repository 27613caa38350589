//! Ingest parsing and validation: whatever bytes arrive, parsing, the tier
//! policy and manifest validation never panic, and an accepted payload never
//! carries a field its tier forbids.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use telemetry_protocol::policy::{Field, Rule, rule};
use telemetry_protocol::{IngestPayload, Manifest, validate};

static MANIFEST: LazyLock<Manifest> =
    LazyLock::new(|| Manifest::parse(include_str!("../../examples/demo-cli/telemetry.toml")).expect("demo manifest"));

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<IngestPayload>(data) else {
        return;
    };
    if validate(&payload).is_ok() {
        for field in Field::ALL {
            assert!(!(field.is_present(&payload) && rule(payload.tier, field) == Rule::Forbidden));
        }
        let _ = MANIFEST.validate_payload(&payload);
        // Whatever was accepted must serialize and parse back to itself.
        let again: IngestPayload = serde_json::from_slice(&serde_json::to_vec(&payload).unwrap()).unwrap();
        assert_eq!(again, payload);
    }
});
