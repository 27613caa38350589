//! The guard of telemetry-client's `testing` feature, tried as Cargo
//! builds it: the test knobs (`Builder::dirs`, `system_policy`,
//! `interactive`, ...) must not reach a host's release binary by accident.
//! What the guard guarantees, and what it cannot, is in the `testing`
//! module's docs.

use std::path::Path;
use std::process::{Command, Output};

use e2e_tests::workspace_root;

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What `cargo tree` says enables telemetry-client's features when the
/// packages `select` are built without dev-dependencies, as `cargo build
/// --release` does.
fn client_features(select: &[&str]) -> String {
    let out = cargo()
        .args(["tree", "--offline", "-e", "features,no-dev"])
        .args(["-i", "telemetry-client"])
        .args(select)
        .current_dir(workspace_root())
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree failed:\n{}", text(&out));
    text(&out)
}

/// Features unify across everything one cargo command builds, so a
/// workspace member that enabled `testing` (and `testing-in-release`, as
/// the fleet drill's host needs) in its `[dependencies]` would put the
/// knobs into demo-cli's release binary, with no compile error for a host
/// that calls one. Only loadgen's `drill` feature, off by default, and
/// the dev-dependencies of tests turn them on.
#[test]
fn building_the_workspace_compiles_no_test_knob_into_its_hosts() {
    let tree = client_features(&["--workspace"]);
    for feature in ["testing", "testing-in-release", "test-bins"] {
        assert!(
            !tree.contains(&format!("telemetry-client feature \"{feature}\"")),
            "a workspace member turns on telemetry-client's `{feature}` outside \
             [dev-dependencies] and off-by-default features:\n{tree}"
        );
    }
    // The check sees the features when something does turn them on. (Not
    // `--workspace --features loadgen/drill`: cargo 1.95's `tree` panics on
    // that, with loadgen's dev-dependency on itself.)
    let drill = client_features(&["-p", "loadgen", "--features", "drill"]);
    assert!(
        drill.contains("telemetry-client feature \"testing-in-release\""),
        "{drill}"
    );
}

/// Writes a host crate into `dir` that (wrongly) enables `testing` in its
/// `[dependencies]`, plus `extra_features`, and calls a knob in `main`.
fn host_with_testing(dir: &Path, extra_features: &str) {
    std::fs::create_dir_all(dir.join("src")).expect("creating src");
    let manifest = format!(
        "[package]\nname = \"careless-host\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\ntelemetry-client = {{ path = {client:?}, default-features = false, \
         features = [\"testing\"{extra_features}] }}\n\n\
         # A release profile that keeps debug assertions, which alone used to\n\
         # let the knobs through.\n\
         [profile.release]\ndebug-assertions = true\n\n[workspace]\n",
        client = workspace_root().join("telemetry-client"),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("writing Cargo.toml");
    std::fs::write(
        dir.join("src/main.rs"),
        "fn main() {\n    let t = telemetry_client::Telemetry::builder(\"project = \\\"x\\\"\")\n        \
         .system_policy(None)\n        .build();\n    drop(t);\n}\n",
    )
    .expect("writing main.rs");
}

/// `cargo check` of the host in `dir` with `args`.
fn check(dir: &Path, args: &[&str]) -> Output {
    // Kept between runs, so only the first run checks the dependencies.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), Into::into)
        .join("testing-guard");
    cargo()
        .args(["check", "--quiet", "--offline"])
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("running cargo check")
}

#[test]
fn a_release_build_with_the_testing_feature_does_not_compile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = dir.path().join("careless-host");
    host_with_testing(&host, "");
    // A debug build is how tests use it: it compiles.
    let out = check(&host, &[]);
    assert!(out.status.success(), "{}", text(&out));
    // A release build stops, even though this release profile keeps debug
    // assertions on.
    let out = check(&host, &["--release"]);
    assert!(
        !out.status.success(),
        "the release build compiled the knobs"
    );
    assert!(
        text(&out).contains("telemetry-client's `testing` feature is for tests"),
        "{}",
        text(&out)
    );
    // Saying so on purpose still works (benchmarks, `cargo test --release`).
    host_with_testing(&host, ", \"testing-in-release\"");
    let out = check(&host, &["--release"]);
    assert!(out.status.success(), "{}", text(&out));
}
