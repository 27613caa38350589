//! The README's quickstart for tool authors, tried as a new user would: a
//! crate made with `cargo new`, outside the workspace, given its
//! dependencies by the README's own `cargo add` lines, and nothing but the
//! README's `telemetry.toml` and `src/main.rs`, builds against this
//! checkout's telemetry-client; then the README's "try it" commands work
//! against a real collector that checks the README's manifest. Every command
//! comes from the README's text, so a step that breaks fails this test.

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

/// The fenced blocks tagged `lang` in `section`, in order, without the
/// indentation of the list item they sit in.
fn blocks(section: &str, lang: &str) -> Vec<String> {
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
    found
}

/// The one fenced block tagged `lang` in `section`.
fn block(section: &str, lang: &str) -> String {
    let mut found = blocks(section, lang);
    assert_eq!(found.len(), 1, "one ```{lang} block in the quickstart");
    found.remove(0)
}

/// The `sh` block whose commands start with `first`, one command a line,
/// each split into words, with `# comments` removed.
fn commands(section: &str, first: &str) -> Vec<Vec<String>> {
    let block = blocks(section, "sh")
        .into_iter()
        .find(|b| b.trim_start().starts_with(first))
        .unwrap_or_else(|| panic!("no ```sh block starting with `{first}` in the quickstart"));
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default())
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|words| !words.is_empty())
        .collect()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

/// Runs `cargo` with `args` in `dir`, failing the test with its output.
fn run_cargo(dir: &Path, target: &Path, args: &[String]) {
    let out = cargo()
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "the README's quickstart fails at `cargo {}`:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's step 1 as this test runs it. There is no network here,
/// only the registry cache, hence `--offline` on every cargo command; and
/// the crates are not on crates.io yet, so `cargo add telemetry-client` is
/// replaced by the command the README gives for that case, pointed at this
/// checkout.
fn step_one(section: &str) -> Vec<Vec<String>> {
    let checkout_add = section
        .split('`')
        .find(|s| s.starts_with("cargo add telemetry-client --path "))
        .expect("the README says how to add the client from a checkout");
    let mut lines = commands(section, "cargo add");
    assert!(
        lines
            .iter()
            .any(|l| l == &["cargo", "add", "telemetry-client"]),
        "step 1 adds the client: {lines:?}"
    );
    for line in &mut lines {
        if line == &["cargo", "add", "telemetry-client"] {
            *line = checkout_add.split_whitespace().map(str::to_owned).collect();
            let path = line.last_mut().expect("a path");
            let readme_path = Path::new(path.as_str());
            assert_eq!(
                readme_path.file_name().and_then(|n| n.to_str()),
                Some("telemetry-client"),
                "the README's path names the checkout's client folder"
            );
            *path = workspace_root()
                .join("telemetry-client")
                .to_string_lossy()
                .into_owned();
        }
        assert_eq!(line[..2], ["cargo", "add"], "step 1 only adds dependencies");
        line.push("--offline".to_owned());
    }
    lines
}

/// Makes the new user's crate in `dir`, runs the README's steps 1 to 3 in
/// it, builds it, and returns its binary.
fn build_quickstart_crate(dir: &Path) -> PathBuf {
    let section = quickstart();
    // Its own target folder inside the workspace's, kept between runs, so
    // only the first run compiles the dependencies.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("readme-quickstart");
    let parent = dir.parent().expect("a parent folder");
    let name = dir.file_name().and_then(|n| n.to_str()).expect("a name");
    run_cargo(
        parent,
        &target,
        &["new", "--vcs", "none", name].map(str::to_owned),
    );
    // An empty [workspace] keeps the crate its own workspace wherever the
    // temporary folder is (under a checkout's target folder, say), as a new
    // user's crate is.
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("reading Cargo.toml");
    std::fs::write(&manifest, text + "\n[workspace]\n").expect("writing Cargo.toml");
    // Step 1: the dependencies, by the README's `cargo add` lines. No
    // Cargo.lock is copied in: cargo resolves the versions a new user gets,
    // from the registry cache.
    for line in step_one(&section) {
        run_cargo(dir, &target, &line[1..]);
    }
    // Steps 2 and 3: the manifest and `src/main.rs`, word for word.
    std::fs::write(dir.join("telemetry.toml"), block(&section, "toml"))
        .expect("writing telemetry.toml");
    std::fs::write(dir.join("src/main.rs"), block(&section, "rust")).expect("writing main.rs");
    run_cargo(
        dir,
        &target,
        &["build", "--quiet", "--offline"].map(str::to_owned),
    );
    target.join("debug").join(name)
}

#[test]
fn the_readme_quickstart_builds_and_runs_against_a_collector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crate_dir = dir.path().join("my-tool");
    let binary = build_quickstart_crate(&crate_dir);
    let section = quickstart();

    // Step 4: an `export` of the endpoint variable, then `cargo run -- ...`
    // lines. The variable is pointed at this test's collector instead of
    // the README's port; the commands run the binary `cargo run` builds.
    let steps = commands(&section, "export");
    let (export, runs) = steps.split_first().expect("the try-it commands");
    let variable = export[1].split('=').next().expect("a variable");
    let prefix = variable
        .strip_suffix("_TELEMETRY_ENDPOINT")
        .unwrap_or_else(|| panic!("`{variable}` is not an endpoint variable"));
    let runs: Vec<Vec<&str>> = runs
        .iter()
        .map(|words| {
            assert_eq!(
                words[..3],
                ["cargo", "run", "--"],
                "a `cargo run -- ...` step"
            );
            words[3..].iter().map(String::as_str).collect()
        })
        .collect();
    assert!(runs.len() >= 5, "the README's try-it steps: {runs:?}");

    let collector = Collector::start_for("my-tool", &crate_dir.join("telemetry.toml"));
    let user = User::new(collector.url());
    let run = |args: &[&str]| -> Output { user.run_tool(&binary, prefix, args) };

    // The README's steps, in order, each checked for what the README says it
    // does.
    let mut builds = 0;
    for args in &runs {
        let out = run(args);
        match args.as_slice() {
            ["build"] => builds += 1,
            ["telemetry", "log"] => {
                // "the first upload starts at once, in the background", and
                // `log` shows it once it has happened.
                wait_for("the first upload, started in the background", || {
                    let log = run(&["telemetry", "log"]);
                    String::from_utf8_lossy(&log.stdout)
                        .contains("delivered")
                        .then_some(())
                });
            }
            ["telemetry", "show"] => {
                let show: Value = serde_json::from_slice(&out.stdout).expect("show prints JSON");
                // The second build is pending with both of its props: the
                // README's track() call fits the README's manifest (an
                // undeclared prop or value would be dropped silently).
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
            }
            _ => {}
        }
    }
    assert_eq!(
        runs.first().map(Vec::as_slice),
        Some(["telemetry", "enable", "aggregate"].as_slice()),
        "the steps start by opting in"
    );
    assert_eq!(
        runs.last().map(Vec::as_slice),
        Some(["telemetry", "flush"].as_slice()),
        "the steps end by sending what is pending"
    );

    let stats = collector.stats_of("my-tool");
    assert_eq!(stats["installs"], 1, "{stats}");
    assert_eq!(event_count(&stats, "command"), builds, "{stats}");
}
