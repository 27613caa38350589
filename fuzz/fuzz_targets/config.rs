//! The collector's config file: any text either parses and validates, or
//! yields an error, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_collector::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text) {
        let _ = config.validate();
        let _ = (config.pseudonym_key_path(), config.default_admin_token_path());
        // Debug output hides the token, so it must never print it.
        if let Some(token) = config.admin_token.as_deref().filter(|t| t.len() >= 8) {
            assert!(!format!("{config:?}").contains(token));
        }
    }
});
