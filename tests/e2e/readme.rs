//! The README's quickstart for tool authors, tried as a new user would: a
//! crate outside the workspace, made of nothing but the README's
//! `telemetry.toml` and `src/main.rs` and the dependencies its `cargo add`
//! lines name, builds against this checkout's telemetry-client, and the
//! README's "try it" steps work against a real collector that checks the
//! README's manifest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2e_tests::{Collector, User, event_count, wait_for, workspace_root};
use serde_json::Value;

/// The README's "Quickstart for tool authors" section.
fn quickstart() -> String {
    let readme =
        std::fs::read_to_string(workspace_root().join("README.md")).expect("reading README.md");
    let start = readme
        .find("## Quickstart for tool authors")
        .expect("the README has a quickstart for tool authors");
    let section = &readme[start..];
    let end = section[2..].find("\n## ").map_or(section.len(), |i| i + 2);
    section[..end].to_owned()
}

/// The one fenced block tagged `lang` in `section`, without the indentation
/// of the list item it sits in.
fn block(section: &str, lang: &str) -> String {
    let mut found = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let body = line.trim_start();
        let Some(info) = body.strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - body.len();
        let text: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.trim_start() != "```")
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect();
        if info == lang {
            found.push(text.join("\n") + "\n");
        }
    }
    assert_eq!(found.len(), 1, "one ```{lang} block in the quickstart");
    found.remove(0)
}

/// Writes the new user's crate into `dir`, builds it, and returns its binary.
fn build_quickstart_crate(dir: &Path) -> PathBuf {
    let section = quickstart();
    std::fs::create_dir_all(dir.join("src")).expect("creating src");
    // What `cargo new my-tool`, then `cargo add telemetry-client --path ...`
    // and `cargo add clap --features derive` write. The empty [workspace]
    // keeps the crate its own workspace wherever the temporary folder is.
    let manifest = format!(
        "[package]\nname = \"my-tool\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\ntelemetry-client = {{ path = {client:?} }}\n\
         clap = {{ version = \"4\", features = [\"derive\"] }}\n\n[workspace]\n",
        client = workspace_root().join("telemetry-client"),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("writing Cargo.toml");
    std::fs::write(dir.join("telemetry.toml"), block(&section, "toml"))
        .expect("writing telemetry.toml");
    std::fs::write(dir.join("src/main.rs"), block(&section, "rust")).expect("writing main.rs");
    // The workspace's lock, so that the crate builds with the versions the
    // workspace was tested with, and cargo only adds what clap's default
    // features need.
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock"))
        .expect("copying Cargo.lock");
    // Its own target folder inside the workspace's, kept between runs, so
    // only the first run compiles the dependencies.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("readme-quickstart");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["build", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("running cargo build");
    assert!(
        out.status.success(),
        "the README's quickstart does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug/my-tool")
}

#[test]
fn the_readme_quickstart_builds_and_runs_against_a_collector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crate_dir = dir.path().join("my-tool");
    let binary = build_quickstart_crate(&crate_dir);

    let collector = Collector::start_for("my-tool", &crate_dir.join("telemetry.toml"));
    let user = User::new(collector.url());
    let run = |args: &[&str]| -> Output { user.run_tool(&binary, "MY_TOOL", args) };

    // The README's steps, in order.
    run(&["telemetry", "enable", "aggregate"]);
    run(&["build"]);
    wait_for("the first upload, started in the background", || {
        let log = run(&["telemetry", "log"]);
        String::from_utf8_lossy(&log.stdout)
            .contains("delivered")
            .then_some(())
    });
    run(&["build"]);
    let show: Value =
        serde_json::from_slice(&run(&["telemetry", "show"]).stdout).expect("show prints JSON");
    // The second build is pending with both of its props: the README's
    // track() call fits the README's manifest (an undeclared prop or value
    // would be dropped silently).
    let pending_build = show.as_array().into_iter().flatten().any(|payload| {
        payload["body"]["counters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["event"] == "command"
                    && c["props"]["name"] == "build"
                    && c["props"]["duration_ms"].is_string()
            })
    });
    assert!(
        pending_build,
        "no pending `command` with name=build: {show}"
    );
    run(&["telemetry", "flush"]);

    let stats = collector.stats_of("my-tool");
    assert_eq!(stats["installs"], 1, "{stats}");
    assert_eq!(event_count(&stats, "command"), 2, "{stats}");
}
