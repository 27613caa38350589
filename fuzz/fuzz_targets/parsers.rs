//! The small text parsers that see outside input: days, ISO weeks,
//! timestamps, tiers, ids, tokens and versions. Whatever the bytes, each
//! returns a value or an error and never panics, and what parses prints back
//! to text that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_protocol::manifest::coarsen_version;
use telemetry_protocol::policy::{is_identifier, is_project_name, is_token, printable};
use telemetry_protocol::{Day, IsoWeek, Tier, Timestamp, Uuid};

fn round_trips<T>(text: &str)
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = text.parse::<T>() {
        let again: T = value.to_string().parse().ok().expect("printed form parses");
        assert_eq!(again, value, "{text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    // Lossy decoding keeps the non-UTF-8 inputs too, as replacement characters.
    let text = String::from_utf8_lossy(data);
    round_trips::<Day>(&text);
    round_trips::<IsoWeek>(&text);
    round_trips::<Timestamp>(&text);
    round_trips::<Tier>(&text);
    round_trips::<Uuid>(&text);
    if let Ok(day) = text.parse::<Day>() {
        let _ = (day.iso_week(), day.week_start(), day.ymd());
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        assert_eq!(ts.day(), ts.to_string()[..10].parse::<Day>().unwrap());
    }
    let _ = (is_identifier(&text), is_project_name(&text), printable(&text));
    if let Some(coarse) = coarsen_version(&text) {
        assert!(is_token(&coarse), "{coarse:?}");
    }
    // The same parsers behind serde, as the ingest route reaches them.
    let _ = serde_json::from_slice::<Day>(data);
    let _ = serde_json::from_slice::<Timestamp>(data);
    let _ = serde_json::from_slice::<IsoWeek>(data);
    let _ = serde_json::from_slice::<Uuid>(data);
});
