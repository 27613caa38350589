//! Integration tests of telemetry-macros: real compilations of host code
//! with `trybuild`, checking that a manifest typo and anything the manifest
//! does not declare fail the build with a message that names the problem.
//! The recording side is tested end to end in telemetry-client's
//! `tests/it/typed.rs`, against a real HTTP collector.

use std::path::{Path, PathBuf};

/// The manifests the cases name (`tests/ui/*.toml`), copied to where the
/// macro looks for them: the case crates trybuild builds have its project
/// folder as `CARGO_MANIFEST_DIR`.
fn place_manifests() {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .to_path_buf();
    let project: PathBuf = target.join("tests/trybuild/telemetry-macros/ui");
    std::fs::create_dir_all(&project).unwrap();
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    for entry in std::fs::read_dir(&ui).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, project.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn what_the_manifest_does_not_allow_does_not_compile() {
    place_manifests();
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
