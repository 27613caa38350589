//! Tells the crate whether it is built in a release profile, for the guard
//! of the `testing` feature (see `src/testing.rs`, "What the guard
//! guarantees").
//!
//! The guard used to look at `debug_assertions` alone, which a release
//! profile can turn on (`[profile.release] debug-assertions = true`): the
//! test knobs then compiled into a release binary without a word. Cargo
//! tells build scripts which profile family a build belongs to, and nothing
//! else does: `PROFILE` is `release` for `--release`, `cargo bench`, and
//! every custom profile that inherits from `release`, and `debug` for the
//! rest. (Cargo's docs warn against reading `PROFILE` for optimisation
//! settings, for which `OPT_LEVEL` is right; here the family is the point,
//! as a dev profile with `opt-level = 3` for dependencies is common and must
//! keep running tests with the knobs.)

// A build script talks to Cargo on stdout.
#![allow(clippy::print_stdout)]

fn main() {
    println!("cargo::rustc-check-cfg=cfg(telemetry_release_profile)");
    println!("cargo::rerun-if-changed=build.rs");
    let testing = std::env::var_os("CARGO_FEATURE_TESTING").is_some();
    if testing && std::env::var("PROFILE").as_deref() == Ok("release") {
        println!("cargo::rustc-cfg=telemetry_release_profile");
    }
}
