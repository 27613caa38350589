//! The `telemetry` subcommand and `telemetry-consent`, run as real processes
//! in isolated `HOME`/`XDG_*` folders: every subcommand and flag, exit codes,
//! the environment rules, and a non-terminal run that must never prompt.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::assert::Assert;
use serde_json::Value;
use telemetry_protocol::{IngestPayload, Uuid};

use crate::processes::snapshot;
use crate::support::{Collector, Home, Mode, wait_until};

pub(crate) const HOST: &str = env!("CARGO_BIN_EXE_telemetry-client-host");
const CONSENT: &str = env!("CARGO_BIN_EXE_telemetry-consent");

/// A process with only the variables a test sets: no CI markers, no
/// `DO_NOT_TRACK`, no colour settings leaking in from the test runner.
pub(crate) fn isolated(home: &Home, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path("home"))
        .env("XDG_CONFIG_HOME", home.path("config"))
        .env("XDG_STATE_HOME", home.path("state"))
        .env("XDG_DATA_HOME", home.path("data"))
        .env("XDG_CACHE_HOME", home.path("cache"));
    cmd
}

fn host(home: &Home, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::from_std(isolated(home, HOST));
    cmd.args(args).timeout(Duration::from_secs(60));
    cmd
}

fn consent(home: &Home, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::from_std(isolated(home, CONSENT));
    cmd.args(args).timeout(Duration::from_secs(60));
    cmd
}

fn stdout(assert: &Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

fn stderr(assert: &Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

pub(crate) fn status_json(home: &Home, envs: &[(&str, &str)]) -> Value {
    let mut cmd = host(home, &["telemetry", "status", "--json"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.assert().success();
    serde_json::from_str(&stdout(&out)).expect("status --json prints one JSON object")
}

fn show(home: &Home) -> Vec<Value> {
    let out = host(home, &["telemetry", "show"]).assert().success();
    serde_json::from_str(&stdout(&out)).expect("show prints a JSON array")
}

fn tool_file(home: &Home) -> PathBuf {
    home.folders().tool_file("host-cli")
}

#[test]
fn status_shows_level_rule_paths_and_what_the_tier_sends() {
    let home = Home::new();
    let out = host(&home, &["telemetry", "status"]).assert().success();
    let text = stdout(&out);
    for needle in [
        "host-cli telemetry",
        "level ",
        "off",
        "the default: you have not opted in",
        &tool_file(&home).display().to_string(),
        "install id       none",
        "pending          0 items",
        "last upload      never",
        "Nothing is recorded or sent.",
        "email, organization",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(!text.contains('\x1b'), "no colour when stdout is a pipe");

    // The bare subcommand is `status`.
    let bare = host(&home, &["telemetry"]).assert().success();
    assert_eq!(stdout(&bare), text);

    // At aggregate the author's line from the manifest is shown.
    host(&home, &["telemetry", "enable", "aggregate"])
        .assert()
        .success();
    let text = stdout(&host(&home, &["telemetry", "status"]).assert().success());
    assert!(
        text.contains("Daily counts of the commands you run."),
        "{text}"
    );
    assert!(text.contains("your choice ("), "{text}");
}

#[test]
fn status_json_has_the_documented_keys() {
    let home = Home::new();
    let v = status_json(&home, &[]);
    assert_eq!(v["level"], "off");
    assert_eq!(v["source"], "default");
    assert_eq!(v["config_file"], tool_file(&home).display().to_string());
    assert_eq!(v["install_id"], Value::Null);
    assert_eq!(v["pending"], 0);

    host(&home, &["telemetry", "enable", "anonymous"])
        .assert()
        .success();
    let v = status_json(&home, &[]);
    assert_eq!(
        (v["level"].as_str(), v["source"].as_str()),
        (Some("anonymous"), Some("tool_file"))
    );
    let id: Uuid = v["install_id"].as_str().unwrap().parse().unwrap();
    assert!(!id.is_nil());
}

/// `telemetry status --verbose` names the mistakes of the runs before it
/// (an author runs `my-tool build`, then asks), and an ordinary run prints
/// nothing about them.
#[test]
fn status_verbose_names_an_earlier_run_s_undeclared_event() {
    let home = Home::new();
    // The host tracks `command` with a `name` prop; this manifest declares
    // neither, as after a typo in `telemetry.toml`.
    let manifest = home.path("telemetry.toml");
    std::fs::write(
        &manifest,
        "project = \"host-cli\"\nendpoint = \"http://127.0.0.1:9\"\n\n[events.comand]\ndescription = \"A command ran\"\n",
    )
    .unwrap();
    let with_manifest = |args: &[&str]| {
        let mut cmd = host(&home, args);
        cmd.env("HOST_MANIFEST", &manifest);
        cmd
    };
    with_manifest(&["telemetry", "enable", "anonymous"])
        .assert()
        .success();
    for _ in 0..2 {
        let out = with_manifest(&["greet"]).assert().success();
        assert_eq!(
            (stdout(&out).as_str(), stderr(&out).as_str()),
            ("hello\n", "")
        );
    }
    let text = stdout(
        &with_manifest(&["telemetry", "status", "--verbose"])
            .assert()
            .success(),
    );
    assert!(text.contains("undeclared events"), "{text}");
    assert!(text.contains("`command` ×2"), "{text}");
    assert!(text.contains("version 1.0.0"), "{text}");
    let plain = stdout(&with_manifest(&["telemetry", "status"]).assert().success());
    assert!(!plain.contains("command"), "{plain}");
    let mut json = with_manifest(&["telemetry", "status", "--json", "--verbose"]);
    let v: Value = serde_json::from_str(&stdout(&json.assert().success())).unwrap();
    assert_eq!(v["earlier_runs"]["undeclared_events"]["command"], 2);
    // A new version starts afresh: the author fixed it there.
    let mut fixed = with_manifest(&["greet"]);
    fixed.env("HOST_TOOL_VERSION", "1.0.1");
    fixed.assert().success();
    let mut status = with_manifest(&["telemetry", "status", "--json", "--verbose"]);
    status.env("HOST_TOOL_VERSION", "1.0.1");
    let v: Value = serde_json::from_str(&stdout(&status.assert().success())).unwrap();
    assert_eq!(v["earlier_runs"]["tool_version"], "1.0.1");
    assert_eq!(v["earlier_runs"]["undeclared_events"]["command"], 1);
}

#[test]
fn a_bad_tool_version_is_shown_only_by_status_verbose() {
    let home = Home::new();
    host(&home, &["telemetry", "enable", "aggregate"])
        .assert()
        .success();
    let bad = [("HOST_TOOL_VERSION", "1.0 beta")];
    // An ordinary run says nothing about it.
    let mut greet = host(&home, &["greet"]);
    greet.envs(bad);
    let out = greet.assert().success();
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("hello\n", "")
    );
    let mut plain = host(&home, &["telemetry", "status"]);
    plain.envs(bad);
    let text = stdout(&plain.assert().success());
    assert!(!text.contains("tool version"), "{text}");

    let mut verbose = host(&home, &["telemetry", "status", "--verbose"]);
    verbose.envs(bad);
    let text = stdout(&verbose.assert().success());
    assert!(text.contains("tool version"), "{text}");
    assert!(
        text.contains("unknown (the version the tool gave"),
        "{text}"
    );
    assert!(text.contains("0 recorded, nothing dropped"), "{text}");

    let mut json = host(&home, &["telemetry", "status", "--json", "--verbose"]);
    json.envs(bad);
    let v: Value = serde_json::from_str(&stdout(&json.assert().success())).unwrap();
    assert_eq!(v["tool_version"], "unknown");
    assert_eq!(v["diagnostics"]["unknown_tool_version"], true);
    // A good version is shown as it is sent.
    let text = stdout(
        &host(&home, &["telemetry", "status", "-v"])
            .assert()
            .success(),
    );
    assert!(text.contains("1.0.0"), "{text}");
    assert!(!text.contains("unknown ("), "{text}");
}

#[test]
fn full_is_not_offered_by_a_tool_without_identity_fields() {
    let home = Home::new();
    let manifest = home.path("no-identity.toml");
    std::fs::write(
        &manifest,
        "project = \"host-cli\"\nendpoint = \"http://127.0.0.1:9\"\n\
         [events.command]\ndescription = \"A command ran\"\n",
    )
    .unwrap();
    for args in [
        &["telemetry", "enable", "full"][..],
        &["telemetry", "enable", "full", "--yes"][..],
    ] {
        let out = host(&home, args)
            .env("HOST_MANIFEST", &manifest)
            .assert()
            .code(2);
        let err = stderr(&out);
        assert!(err.contains("host-cli does not offer `full`"), "{err}");
        assert!(err.contains("telemetry enable anonymous"), "{err}");
    }
    assert!(!tool_file(&home).exists(), "nothing stored");
    // The same tool with identity fields names them in the `--yes` hint,
    // with no stray space before the closing quote.
    let err = stderr(
        &host(&home, &["telemetry", "enable", "full"])
            .assert()
            .code(2),
    );
    assert!(
        err.contains(
            "`host-cli telemetry enable full --yes --identity email=... --identity organization=...`"
        ),
        "{err}"
    );
}

#[test]
fn do_not_track_reports_off_from_the_environment() {
    let home = Home::new();
    host(&home, &["telemetry", "enable", "full", "--yes"])
        .assert()
        .success();
    let v = status_json(&home, &[("DO_NOT_TRACK", "1")]);
    assert_eq!(v["level"], "off");
    assert_eq!(v["source"], "environment");
    assert_eq!(
        v["install_id"],
        Value::Null,
        "no id is shown below anonymous"
    );
    let text = stdout(
        &host(&home, &["telemetry", "status"])
            .env("DO_NOT_TRACK", "1")
            .assert()
            .success(),
    );
    assert!(text.contains("the environment (DO_NOT_TRACK)"), "{text}");
    assert!(text.contains("full (lowered by the rule above)"), "{text}");

    // The tool's own variable is a ceiling too.
    let v = status_json(&home, &[("HOST_CLI_TELEMETRY", "aggregate")]);
    assert_eq!(
        (v["level"].as_str(), v["source"].as_str()),
        (Some("aggregate"), Some("environment"))
    );
}

#[test]
fn enable_each_level_from_a_script() {
    let home = Home::new();
    let out = host(&home, &["telemetry", "enable", "aggregate"])
        .assert()
        .success();
    assert!(stdout(&out).contains("Telemetry for host-cli is now aggregate."));
    let v = status_json(&home, &[]);
    assert_eq!(
        (v["level"].as_str(), &v["install_id"]),
        (Some("aggregate"), &Value::Null)
    );

    host(&home, &["telemetry", "enable", "anonymous"])
        .assert()
        .success();
    assert_eq!(status_json(&home, &[])["level"], "anonymous");

    // `full` from a script: --yes plus one --identity per field.
    host(
        &home,
        &[
            "telemetry",
            "enable",
            "full",
            "-y",
            "--identity",
            "email=me@example.org",
            "--identity",
            "organization=Acme",
        ],
    )
    .assert()
    .success();
    assert_eq!(status_json(&home, &[])["level"], "full");
    host(&home, &["greet"]).assert().success().stdout("hello\n");
    let payloads = show(&home);
    let ingest: Vec<IngestPayload> = payloads
        .iter()
        .filter(|p| p["path"] == "/v1/ingest")
        .map(|p| serde_json::from_value(p["body"].clone()).unwrap())
        .collect();
    let identity = ingest
        .iter()
        .find_map(|p| p.identity.clone())
        .expect("a full payload carries the identity");
    assert_eq!(identity["email"], "me@example.org");
    assert_eq!(identity["organization"], "Acme");

    // A ceiling is explained, not hidden.
    let out = host(&home, &["telemetry", "enable", "anonymous"])
        .env("HOST_CLI_TELEMETRY", "aggregate")
        .assert()
        .success();
    assert!(
        stdout(&out).contains("keeps it at aggregate"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_enable_usage_exits_2_and_says_what_to_do() {
    let home = Home::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["telemetry", "enable", "everything"],
            "valid levels are: off, aggregate, anonymous, full",
        ),
        (&["telemetry", "enable", "off"], "telemetry disable"),
        (
            &["telemetry", "enable", "full"],
            "--yes --identity email=... --identity organization=...",
        ),
        (
            &[
                "telemetry",
                "enable",
                "full",
                "--yes",
                "--identity",
                "phone=1",
            ],
            "identity fields of host-cli (with `full`): email, organization",
        ),
        (
            &[
                "telemetry",
                "enable",
                "anonymous",
                "--identity",
                "email=a@b.c",
            ],
            "only kept at level `full`",
        ),
        (
            &[
                "telemetry",
                "enable",
                "full",
                "--yes",
                "--identity",
                "email",
            ],
            "expected FIELD=VALUE",
        ),
        (&["telemetry", "enable"], "no terminal to ask on"),
        (&["telemetry", "frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let out = host(&home, args).assert().code(2);
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let long = format!("email={}", "x".repeat(65));
    let out = host(
        &home,
        &["telemetry", "enable", "full", "--yes", "--identity", &long],
    )
    .assert()
    .code(2);
    assert!(stderr(&out).contains("longer than 64"), "{}", stderr(&out));
    assert!(!tool_file(&home).exists(), "bad usage stores nothing");

    let help = stdout(
        &host(&home, &["telemetry", "enable", "--help"])
            .assert()
            .success(),
    );
    assert!(
        help.contains("--identity <FIELD=VALUE>") && help.contains("--yes"),
        "{help}"
    );
}

#[test]
fn disable_runs_the_opt_out_path() {
    let home = Home::new();
    host(&home, &["telemetry", "enable", "anonymous"])
        .assert()
        .success();
    host(&home, &["greet"]).assert().success();
    let id = status_json(&home, &[])["install_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let spool = home.folders().tool_state("host-cli").spool();
    assert!(spool.exists());

    let out = host(&home, &["telemetry", "disable"]).assert().success();
    assert!(
        stdout(&out).contains(&id),
        "names the id whose deletion is queued"
    );
    let v = status_json(&home, &[]);
    assert_eq!(
        (v["level"].as_str(), v["source"].as_str()),
        (Some("off"), Some("tool_file"))
    );
    assert_eq!(v["install_id"], Value::Null);
    assert_eq!(v["pending"], 1, "only the deletion request is pending");
    assert!(!spool.exists(), "local events are deleted");
    let payloads = show(&home);
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    assert_eq!(payloads[0]["path"], "/v1/delete");
    assert_eq!(payloads[0]["body"]["install_id"], id.as_str());
    assert_eq!(payloads[0]["body"]["project"], "host-cli");
}

#[test]
fn at_off_runs_and_flush_write_nothing_but_the_consent_files() {
    // Never opted in: no state folder appears, whatever runs.
    let home = Home::new();
    let state = home.path("state");
    for args in [
        &["greet"][..],
        &["telemetry", "status"][..],
        &["telemetry", "show"][..],
        &["telemetry", "log"][..],
        &["telemetry", "flush"][..],
    ] {
        host(&home, args).assert().success();
    }
    assert!(!state.exists(), "a state folder at off");

    // Opted in, then out, and the deletion delivered: from then on the
    // state folder does not change, not even its lock files.
    let collector = Collector::start(Mode::Ok);
    let endpoint = [("HOST_CLI_TELEMETRY_ENDPOINT", collector.url.as_str())];
    for args in [
        &["telemetry", "enable", "anonymous"][..],
        &["greet"][..],
        &["telemetry", "disable"][..],
        &["telemetry", "flush"][..],
    ] {
        host(&home, args).envs(endpoint).assert().success();
    }
    assert_eq!(status_json(&home, &[])["pending_deletions"], 0);
    let before = snapshot(&state);
    for args in [
        &["greet"][..],
        &["hook"][..],
        &["telemetry", "status"][..],
        &["telemetry", "show"][..],
        &["telemetry", "flush"][..],
    ] {
        host(&home, args).envs(endpoint).assert().success();
    }
    let after = snapshot(&state);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "files appeared or went"
    );
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed at off", path.display());
    }
}

#[test]
fn show_prints_exactly_what_flush_then_sends() {
    let home = Home::new();
    let out = host(&home, &["telemetry", "show"]).assert().success();
    assert_eq!(stdout(&out).trim(), "[]");
    assert!(stderr(&out).contains("Nothing is waiting to be sent."));

    host(&home, &["telemetry", "enable", "aggregate"])
        .assert()
        .success();
    host(&home, &["greet"]).assert().success();
    host(&home, &["greet"]).assert().success();
    let payloads = show(&home);
    assert_eq!(payloads.len(), 1, "{payloads:#?}");
    assert_eq!(payloads[0]["path"], "/v1/ingest");
    let shown: IngestPayload = serde_json::from_value(payloads[0]["body"].clone()).unwrap();
    let greets: u64 = shown
        .counters
        .iter()
        .flatten()
        .filter(|c| c.event == "command")
        .map(|c| c.count)
        .sum();
    assert_eq!(greets, 2);

    let collector = Collector::start(Mode::Ok);
    let out = host(&home, &["telemetry", "flush"])
        .env("HOST_CLI_TELEMETRY_ENDPOINT", &collector.url)
        .assert()
        .success();
    assert!(stdout(&out).contains("Sent 1 payloads"), "{}", stdout(&out));
    let received = collector.seen(|s| s.ingests.clone());
    assert_eq!(
        received,
        vec![shown],
        "the collector got exactly what show printed"
    );
    assert!(show(&home).is_empty());
    assert_ne!(status_json(&home, &[])["last_upload"], Value::Null);
    let text = stdout(&host(&home, &["telemetry", "status"]).assert().success());
    assert!(!text.contains("last upload      never"), "{text}");
    let out = host(&home, &["telemetry", "flush"])
        .env("HOST_CLI_TELEMETRY_ENDPOINT", &collector.url)
        .assert()
        .success();
    assert!(stdout(&out).contains("Nothing to send."));
}

#[test]
fn flush_fails_with_exit_1_when_the_collector_is_unreachable() {
    let home = Home::new();
    host(&home, &["telemetry", "enable", "aggregate"])
        .assert()
        .success();
    host(&home, &["greet"]).assert().success();
    // The manifest's endpoint is port 9 on loopback, which refuses.
    let out = host(&home, &["telemetry", "flush"]).assert().code(1);
    let err = stderr(&out);
    assert!(
        err.contains("could not be reached") && err.contains("stays queued"),
        "{err}"
    );
    assert_eq!(show(&home).len(), 1, "the data stays queued");

    // A collector that accepts and never answers: --timeout bounds the wait.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", blackhole.local_addr().unwrap());
    let out = host(&home, &["telemetry", "flush", "--timeout", "1"])
        .env("HOST_CLI_TELEMETRY_ENDPOINT", &url)
        .assert()
        .code(1);
    assert!(stderr(&out).contains("queued"), "{}", stderr(&out));
    drop(blackhole);
    assert_eq!(show(&home).len(), 1);
}

#[test]
fn log_lists_uploads_and_results() {
    let home = Home::new();
    let out = host(&home, &["telemetry", "log"]).assert().success();
    assert_eq!(stdout(&out), "No uploads yet.\n");
    let out = host(&home, &["telemetry", "log", "--json"])
        .assert()
        .success();
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out)).unwrap(),
        Value::Array(vec![])
    );

    host(&home, &["telemetry", "enable", "aggregate"])
        .assert()
        .success();
    host(&home, &["greet"]).assert().success();
    host(&home, &["telemetry", "flush"]).assert().code(1);
    let collector = Collector::start(Mode::Ok);
    host(&home, &["telemetry", "flush"])
        .env("HOST_CLI_TELEMETRY_ENDPOINT", &collector.url)
        .assert()
        .success();
    let text = stdout(&host(&home, &["telemetry", "log"]).assert().success());
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("RESULT"),
        "{text}"
    );
    assert!(lines[1].contains("delivered"), "newest first: {text}");
    assert!(lines[2].contains("failed"), "{text}");
    let out = host(&home, &["telemetry", "log", "--json"])
        .assert()
        .success();
    let entries: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let results: Vec<&str> = entries
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["failed", "delivered"]);
}

#[test]
fn reset_id_starts_a_new_id_and_queues_deletion_of_the_old() {
    let home = Home::new();
    let out = host(&home, &["telemetry", "reset-id"]).assert().code(1);
    assert!(
        stderr(&out).contains("enable anonymous"),
        "{}",
        stderr(&out)
    );

    host(&home, &["telemetry", "enable", "anonymous"])
        .assert()
        .success();
    let old = status_json(&home, &[])["install_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = host(&home, &["telemetry", "reset-id"]).assert().success();
    let text = stdout(&out);
    let new = status_json(&home, &[])["install_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(old, new);
    assert!(text.contains(&format!("New install id: {new}")), "{text}");
    assert!(text.contains(&old), "{text}");
    let deletes: Vec<Value> = show(&home)
        .into_iter()
        .filter(|p| p["path"] == "/v1/delete")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["body"]["install_id"], old.as_str());
}

#[test]
fn an_unwritable_config_names_the_path_and_the_os_error() {
    let home = Home::new();
    // A file where the tools folder should be: fails even for root.
    let tools = home.folders().tools_dir();
    std::fs::create_dir_all(tools.parent().unwrap()).unwrap();
    std::fs::write(&tools, "not a folder").unwrap();
    let out = host(&home, &["telemetry", "enable", "aggregate"])
        .assert()
        .code(1);
    let err = stderr(&out);
    assert!(
        err.contains(&tool_file(&home).display().to_string()),
        "{err}"
    );
    assert!(err.contains("os error"), "{err}");
    assert!(err.contains("can be written"), "{err}");
}

/// Runs the host with stdin a pipe that is never written or closed, and
/// waits for it to exit on its own.
fn run_with_open_stdin(home: &Home, args: &[&str]) -> (i32, String, String) {
    let mut child = isolated(home, HOST)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take(); // held open for the whole run
    let mut status = None;
    wait_until(
        "the host to exit without input",
        Duration::from_secs(30),
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.unwrap().code().unwrap(), out, err)
}

#[test]
fn without_a_terminal_nothing_prompts_or_waits_for_stdin() {
    let home = Home::new();
    let (code, out, err) = run_with_open_stdin(&home, &["greet"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "hello\n", ""));
    assert!(!tool_file(&home).exists(), "no prompt, so no answer stored");
    let (code, _, err) = run_with_open_stdin(&home, &["telemetry", "enable"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_with_open_stdin(&home, &["telemetry", "enable", "full"]);
    assert_eq!(code, 2, "{err}");
    assert!(!tool_file(&home).exists());
}

#[test]
fn consent_tool_lists_sets_and_disables_every_tool() {
    let home = Home::new();
    let out = consent(&home, &["list"]).assert().success();
    assert!(stdout(&out).contains("No tool on this machine"));

    host(&home, &["telemetry", "enable", "anonymous"])
        .assert()
        .success();
    consent(&home, &["set", "other-cli", "aggregate"])
        .assert()
        .success()
        .stdout("other-cli is now aggregate.\n");
    let text = stdout(&consent(&home, &["list"]).assert().success());
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("TOOL") && lines[0].contains("LAST UPLOAD"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("host-cli") && lines[1].contains("anonymous"),
        "{text}"
    );
    assert!(
        lines[1].contains("tool choice") && lines[1].contains("never"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("other-cli") && lines[2].contains("aggregate"),
        "{text}"
    );
    // Columns line up.
    assert_eq!(
        lines[1].find("anonymous"),
        lines[2].find("aggregate"),
        "{text}"
    );

    let out = consent(&home, &["list", "--json"]).assert().success();
    let tools: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(
        (tools[0]["tool"].as_str(), tools[0]["source"].as_str()),
        (Some("host-cli"), Some("tool_file"))
    );

    consent(&home, &["set", "host-cli", "aggregate"])
        .assert()
        .success();
    assert_eq!(status_json(&home, &[])["level"], "aggregate");
    consent(&home, &["set", "host-cli", "anonymous"])
        .assert()
        .success();
    let id = status_json(&home, &[])["install_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = consent(&home, &["disable"]).assert().code(2);
    assert!(stderr(&out).contains("--all"));
    let out = consent(&home, &["disable", "--all"]).assert().success();
    assert!(
        stdout(&out).contains("host-cli, other-cli"),
        "{}",
        stdout(&out)
    );
    let v = status_json(&home, &[]);
    assert_eq!(v["level"], "off");
    let deletes: Vec<Value> = show(&home)
        .into_iter()
        .filter(|p| p["path"] == "/v1/delete")
        .collect();
    assert!(
        deletes
            .iter()
            .any(|d| d["body"]["install_id"] == id.as_str()),
        "deletion queued for the tool: {deletes:?}"
    );
}

#[test]
fn consent_tool_rejects_bad_levels_and_names_with_exit_2() {
    let home = Home::new();
    let out = consent(&home, &["set", "host-cli", "most"])
        .assert()
        .code(2);
    assert!(stderr(&out).contains("valid levels are: off, aggregate, anonymous, full"));
    let out = consent(&home, &["set", "../etc", "off"]).assert().code(2);
    assert!(
        stderr(&out).contains("not a valid tool name"),
        "{}",
        stderr(&out)
    );
    let out = consent(&home, &["global", "some"]).assert().code(2);
    assert!(stderr(&out).contains("`none` to lift"), "{}", stderr(&out));
    consent(&home, &[]).assert().code(2);
    let out = consent(&home, &["set", "new-cli", "off"])
        .assert()
        .success();
    assert!(stderr(&out).contains("has not run on this machine yet"));
}

#[test]
fn the_global_ceiling_holds_every_tool_until_lifted() {
    let home = Home::new();
    host(&home, &["telemetry", "enable", "anonymous"])
        .assert()
        .success();
    let out = consent(&home, &["global", "off"]).assert().success();
    assert!(stdout(&out).contains("including tools installed later"));
    let v = status_json(&home, &[]);
    assert_eq!(
        (v["level"].as_str(), v["source"].as_str()),
        (Some("off"), Some("global_file"))
    );
    // A tool that first runs after the ceiling was set is off too.
    consent(&home, &["set", "later-cli", "full"])
        .assert()
        .success();
    let tools: Vec<Value> = serde_json::from_str(&stdout(
        &consent(&home, &["list", "--json"]).assert().success(),
    ))
    .unwrap();
    assert!(tools.iter().all(|t| t["level"] == "off"), "{tools:?}");
    let text = stdout(&consent(&home, &["list"]).assert().success());
    assert!(text.starts_with("Global ceiling: off"), "{text}");

    consent(&home, &["global", "aggregate"]).assert().success();
    assert_eq!(status_json(&home, &[])["level"], "aggregate");
    consent(&home, &["global", "none"]).assert().success();
    let v = status_json(&home, &[]);
    assert_eq!(
        (v["level"].as_str(), v["source"].as_str()),
        (Some("anonymous"), Some("tool_file"))
    );
}

#[test]
fn consent_tool_where_prints_the_folders_in_use() {
    let home = Home::new();
    let text = stdout(&consent(&home, &["where"]).assert().success());
    let folders = home.folders();
    for (label, path) in [
        ("consent folder", folders.config.clone()),
        ("global file", folders.global_file()),
        ("tool files", folders.tools_dir()),
        ("state folder", folders.state.clone()),
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in {text}"));
        assert!(line.contains(&path.display().to_string()), "{line}");
    }
    assert!(text.contains("system policy"), "{text}");
    consent(&home, &["--help"]).assert().success();
}

#[test]
fn a_corrupt_consent_file_fails_closed_with_one_warning() {
    let home = Home::new();
    let file = tool_file(&home);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "level = [not toml").unwrap();
    let out = host(&home, &["telemetry", "status", "--json"])
        .assert()
        .success();
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (v["level"].as_str(), v["source"].as_str()),
        (Some("off"), Some("tool_file"))
    );
    assert!(v["unreadable"].is_string(), "{v}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&file.display().to_string()) && err.contains("telemetry is off"),
        "{err}"
    );
    let text = stdout(&host(&home, &["telemetry", "status"]).assert().success());
    assert!(text.contains("unreadable"), "{text}");
    // Enabling again replaces the corrupt file.
    host(&home, &["telemetry", "enable", "aggregate"])
        .assert()
        .success();
    assert_eq!(status_json(&home, &[])["level"], "aggregate");
}

#[test]
fn help_lists_every_subcommand() {
    let home = Home::new();
    let help = stdout(&host(&home, &["telemetry", "--help"]).assert().success());
    for sub in [
        "status", "enable", "disable", "show", "log", "reset-id", "flush",
    ] {
        assert!(help.contains(sub), "{sub} missing from\n{help}");
    }
    let help = stdout(&consent(&home, &["--help"]).assert().success());
    for sub in ["list", "set", "disable", "global", "where"] {
        assert!(help.contains(sub), "{sub} missing from\n{help}");
    }
    let help = stdout(
        &host(&home, &["telemetry", "flush", "--help"])
            .assert()
            .success(),
    );
    assert!(help.contains("--timeout <SECONDS>"), "{help}");
}

/// Case 4 of issue 13: `telemetry disable` queued the deletion until the next
/// upload slot (an hour, or a day after failures), so a user who then
/// uninstalled the tool never deleted. Now it starts the uploader at once.
#[test]
fn disable_deletes_within_seconds_without_another_run() {
    let collector = Collector::start(Mode::Ok);
    let home = Home::new();
    let run = |args: &[&str]| {
        host(home_ref(&home), args)
            .env("HOST_CLI_TELEMETRY_ENDPOINT", &collector.url)
            .env("HOST_DETACHED_UPLOAD", "1")
            .assert()
            .success();
    };
    run(&["telemetry", "enable", "anonymous"]);
    run(&["greet"]);
    // The first upload lands and schedules the next one an hour later.
    wait_until("the first upload", Duration::from_secs(20), || {
        collector.seen(|s| !s.ingests.is_empty())
    });
    let id = status_json(&home, &[])["install_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    run(&["telemetry", "disable"]);
    wait_until("the deletion", Duration::from_secs(10), || {
        collector.seen(|s| s.deletes.iter().any(|d| d.install_id == id))
    });
    wait_until("the queue to empty", Duration::from_secs(10), || {
        status_json(&home, &[])["pending_deletions"] == 0
    });
}

fn home_ref(home: &Home) -> &Home {
    home
}

/// Where the collector cannot be reached the request stays queued, and
/// `telemetry status` says so.
#[test]
fn an_unsent_deletion_is_shown_as_pending() {
    let home = Home::new();
    host(&home, &["telemetry", "enable", "anonymous"])
        .assert()
        .success();
    host(&home, &["telemetry", "disable"])
        .env("HOST_DETACHED_UPLOAD", "1")
        .assert()
        .success();
    assert_eq!(status_json(&home, &[])["pending_deletions"], 1);
    let out = host(&home, &["telemetry", "status"]).assert().success();
    assert!(
        stdout(&out).contains("deletion pending"),
        "{}",
        stdout(&out)
    );
}

/// `telemetry-consent disable --all` and `global off` sent no deletion at
/// all. Now they send every tool's queued deletions to its stored endpoint,
/// without running the tools.
#[test]
fn the_consent_tool_sends_deletions_without_running_the_tools() {
    for args in [&["disable", "--all"][..], &["global", "off"][..]] {
        let collector = Collector::start(Mode::Ok);
        let home = Home::new();
        host(&home, &["telemetry", "enable", "anonymous"])
            .env("HOST_CLI_TELEMETRY_ENDPOINT", &collector.url)
            .assert()
            .success();
        if args[0] == "global" {
            // A deletion already queued (the tool's uploader never ran).
            host(&home, &["telemetry", "reset-id"])
                .env("HOST_CLI_TELEMETRY_ENDPOINT", &collector.url)
                .assert()
                .success();
        }
        consent(&home, args).assert().success();
        wait_until("the deletion", Duration::from_secs(10), || {
            collector.seen(|s| !s.deletes.is_empty())
        });
        wait_until("the queue to empty", Duration::from_secs(10), || {
            status_json(&home, &[])["pending_deletions"] == 0
        });
    }
}
