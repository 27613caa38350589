//! The realistic host of issue 17, `benches/peers/hook-cli`: a shell-hook CLI
//! whose build script includes its clap definition to write completions.
//! With the client on, the build script depends on telemetry-args only, so
//! `cargo tree` shows no transport, TLS or client code among its
//! build-dependencies, while the binary itself does link the transport.

use std::process::Command;

use e2e_tests::workspace_root;

/// `cargo tree` of hook-cli with `features`, split into the crates under the
/// root's normal dependencies and those under its `[build-dependencies]`.
fn tree(features: &str) -> (Vec<String>, Vec<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["tree", "--locked", "-p", "hook-cli", "--features", features])
        .args(["-e", "normal,build", "--no-dedupe", "--charset", "ascii"])
        .arg("--manifest-path")
        .arg(workspace_root().join("benches/peers/Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The root is the first line; its build-dependencies follow a
    // `[build-dependencies]` line at column 0, and every crate line is the
    // tree drawing (`|-- `, `` `-- ``, `|   `) then `name version`.
    let (mut normal, mut build) = (Vec::new(), Vec::new());
    let mut in_build = false;
    for line in text.lines().skip(1) {
        if line.starts_with('[') {
            in_build = line == "[build-dependencies]";
            continue;
        }
        let name = line
            .trim_start_matches(['|', '`', '-', ' '])
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        if in_build {
            build.push(name);
        } else {
            normal.push(name);
        }
    }
    (normal, build)
}

#[test]
fn a_host_build_script_with_the_subcommand_compiles_no_transport() {
    for (features, transport) in [("ureq", "ureq"), ("curl", "telemetry-client")] {
        let (normal, build) = tree(features);
        assert!(
            normal.iter().any(|c| c == transport) && normal.iter().any(|c| c == "telemetry-client"),
            "the binary links the client and its transport ({features}): {normal:?}"
        );
        assert!(
            build.iter().any(|c| c == "telemetry-args")
                && build.iter().any(|c| c == "clap_complete"),
            "the build script has the subcommand's definition ({features}): {build:?}"
        );
        let runtime = [
            "telemetry-client",
            "telemetry-protocol",
            "ureq",
            "rustls",
            "ring",
            "reqwest",
        ];
        let leaked: Vec<&String> = build
            .iter()
            .filter(|c| runtime.contains(&c.as_str()))
            .collect();
        assert!(
            leaked.is_empty(),
            "the build script compiles client runtime ({features}): {leaked:?} in {build:?}"
        );
    }
}
