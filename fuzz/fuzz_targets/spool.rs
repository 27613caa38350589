//! Spool reading: whatever bytes a torn write, a full disk or another program
//! left in the spool, parsing never panics, and every line is either an intact
//! record or counted as torn.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (records, torn) = telemetry_client::fuzz_spool(data);
    let lines = data.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(records + torn, lines);
});
