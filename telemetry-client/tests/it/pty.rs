//! The first-run prompt and `enable full` in a real pseudo-terminal, with
//! every wait bounded by rexpect's timeout.

use rexpect::process::WaitStatus;
use rexpect::session::{PtySession, spawn_command};
use telemetry_client::testing::for_own_tests_only::{self as internal, Record};

use crate::cli::{HOST, isolated, status_json};
use crate::support::Home;

/// Every `exp_*` gives up after this long, so a missing prompt fails the test
/// instead of hanging it.
const TIMEOUT_MS: u64 = 30_000;

fn spawn(home: &Home, args: &[&str], envs: &[(&str, &str)]) -> PtySession {
    let mut cmd = isolated(home, HOST);
    cmd.args(args).env("TERM", "xterm");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    spawn_command(cmd, Some(TIMEOUT_MS)).expect("spawn in a pty")
}

/// Reads to the end and returns the output and the exit code.
fn finish(mut p: PtySession) -> (String, i32) {
    let rest = p.exp_eof().expect("the process exits");
    match p.process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => (rest, code),
        other => panic!("unexpected exit: {other:?}"),
    }
}

fn tool_file(home: &Home) -> std::path::PathBuf {
    home.folders().tool_file("host-cli")
}

#[test]
fn first_run_prompt_defaults_to_no_stores_off_and_is_shown_once() {
    let home = Home::new();
    let mut p = spawn(&home, &["greet"], &[]);
    let intro = p.exp_string("Share usage data?").unwrap();
    // One line per tier, from the manifest.
    for needle in [
        "host-cli",
        "Nothing is recorded or sent. (default)",
        "Daily counts of the commands you run. No identifier, no times.",
        "random install id you can reset",
        "what you type in for: email, organization",
    ] {
        assert!(intro.contains(needle), "missing {needle:?} in {intro}");
    }
    p.send_line("").unwrap();
    p.exp_string("Telemetry stays off").unwrap();
    p.exp_string("hello").unwrap();
    let (_, code) = finish(p);
    assert_eq!(code, 0);
    let stored = std::fs::read_to_string(tool_file(&home)).unwrap();
    assert!(stored.contains("level = \"off\""), "{stored}");

    // Never again.
    let p = spawn(&home, &["greet"], &[]);
    let (text, code) = finish(p);
    assert_eq!(code, 0);
    assert!(
        text.contains("hello") && !text.contains("Share usage data"),
        "{text}"
    );
}

/// Case 2 of issue 13: the run that showed the prompt recorded nothing,
/// whatever the answer, so the setup run (usually the first) was never
/// counted. Now opting in applies to the rest of that run.
#[test]
fn opting_in_at_the_prompt_counts_the_rest_of_that_run() {
    let home = Home::new();
    let mut p = spawn(&home, &["init"], &[]);
    p.exp_string("Share usage data?").unwrap();
    p.send_line("anonymous").unwrap();
    p.exp_string("from now on").unwrap();
    let (_, code) = finish(p);
    assert_eq!(code, 0);
    let paths = home.folders().tool_state("host-cli");
    let state = internal::state(&paths);
    let id = state.install_id.expect("an install id");
    let mut names: Vec<String> = internal::spool(&paths)
        .unwrap()
        .records
        .into_iter()
        .map(|r| match r {
            Record::Event {
                name, install_id, ..
            } => {
                assert_eq!(install_id, id);
                name
            }
            Record::Count { event, .. } => panic!("a count at anonymous: {event}"),
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["active", "install", "setup_completed", "setup_started"]
    );
    let v = status_json(&home, &[]);
    assert_eq!(
        (v["level"].as_str(), v["source"].as_str()),
        (Some("anonymous"), Some("tool_file"))
    );

    // The next run does not ask again, and the setup is not counted twice.
    let (text, _) = finish(spawn(&home, &["init"], &[]));
    assert!(!text.contains("Share usage data"), "{text}");
    assert_eq!(internal::spool(&paths).unwrap().records.len(), 4);
}

/// Answering `aggregate` counts the command that asked.
#[test]
fn opting_in_to_aggregate_counts_the_command_that_asked() {
    let home = Home::new();
    let mut p = spawn(&home, &["greet"], &[]);
    p.exp_string("Share usage data?").unwrap();
    p.send_line("aggregate").unwrap();
    p.exp_string("hello").unwrap();
    let (_, code) = finish(p);
    assert_eq!(code, 0);
    let paths = home.folders().tool_state("host-cli");
    let events: Vec<String> = internal::spool(&paths)
        .unwrap()
        .records
        .into_iter()
        .map(|r| match r {
            Record::Count { event, .. } => event,
            Record::Event { name, .. } => panic!("an event at aggregate: {name}"),
        })
        .collect();
    assert!(events.contains(&"command".to_owned()), "{events:?}");
    assert!(events.contains(&"install".to_owned()), "{events:?}");
}

#[test]
fn no_prompt_in_ci_even_on_a_terminal() {
    let home = Home::new();
    let p = spawn(&home, &["greet"], &[("CI", "true")]);
    let (text, code) = finish(p);
    assert_eq!(code, 0);
    assert!(
        text.contains("hello") && !text.contains("Share usage data"),
        "{text}"
    );
    assert!(!tool_file(&home).exists());
}

#[test]
fn first_run_prompt_full_asks_identity_and_needs_yes() {
    let home = Home::new();
    let mut p = spawn(&home, &["greet"], &[]);
    p.exp_string("Share usage data?").unwrap();
    p.send_line("full").unwrap();
    p.exp_string("email").unwrap();
    p.send_line("me@example.org").unwrap();
    p.exp_string("organization").unwrap();
    p.send_line("").unwrap();
    p.exp_string("Type `yes` to confirm").unwrap();
    p.send_line("no").unwrap();
    p.exp_string("Not confirmed").unwrap();
    let (_, code) = finish(p);
    assert_eq!(code, 0);
    assert_eq!(
        status_json(&home, &[])["level"],
        "off",
        "unconfirmed full is a no"
    );
}

#[test]
fn enable_full_interactively_asks_each_identity_field_and_confirms() {
    let home = Home::new();
    let mut p = spawn(&home, &["telemetry", "enable", "full"], &[]);
    p.exp_string("email").unwrap();
    p.exp_string("An address to write to, at most 64 characters")
        .unwrap();
    p.send_line("me@example.org").unwrap();
    p.exp_string("organization").unwrap();
    p.send_line("").unwrap();
    let summary = p.exp_string("Type `yes` to confirm").unwrap();
    assert!(summary.contains("email = \"me@example.org\""), "{summary}");
    assert!(summary.contains("organization = (not sent)"), "{summary}");
    p.send_line("yes").unwrap();
    p.exp_regex(r"is now \S*full").unwrap();
    let (_, code) = finish(p);
    assert_eq!(code, 0);
    let v = status_json(&home, &[]);
    assert_eq!(v["level"], "full");

    // A preset field is not asked again; anything but `yes` changes nothing.
    let home = Home::new();
    let mut p = spawn(
        &home,
        &["telemetry", "enable", "full", "--identity", "email=a@b.c"],
        &[],
    );
    p.exp_string("organization").unwrap();
    p.send_line("Acme").unwrap();
    let summary = p.exp_string("Type `yes` to confirm").unwrap();
    assert!(summary.contains("email = \"a@b.c\""), "{summary}");
    p.send_line("sure").unwrap();
    p.exp_string("not confirmed; nothing changed").unwrap();
    let (_, code) = finish(p);
    assert_eq!(code, 1);
    assert!(!tool_file(&home).exists());
}

#[test]
fn enable_without_a_level_asks_for_one() {
    let home = Home::new();
    let mut p = spawn(&home, &["telemetry", "enable"], &[]);
    p.exp_string("Level to enable").unwrap();
    p.send_line("anonymous").unwrap();
    p.exp_regex(r"is now \S*anonymous").unwrap();
    let (_, code) = finish(p);
    assert_eq!(code, 0);
    assert_eq!(status_json(&home, &[])["level"], "anonymous");
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let home = Home::new();
    let (text, code) = finish(spawn(&home, &["telemetry", "status"], &[]));
    assert_eq!(code, 0);
    assert!(text.contains("\x1b["), "colour on a terminal: {text:?}");
    let (text, _) = finish(spawn(&home, &["telemetry", "status"], &[("NO_COLOR", "1")]));
    assert!(!text.contains("\x1b["), "NO_COLOR: {text:?}");
    assert!(text.contains("level"), "{text}");
}

/// Case 1 of issue 13: an author's "aggregate after a notice" default
/// (which the host turned on with `HOST_AGGREGATE_NOTICE`) counted users who
/// never chose, and its uploader then never sent. Now nothing is recorded
/// without a stored choice, however many interactive runs there are.
#[test]
fn nothing_is_recorded_without_a_stored_choice() {
    let home = Home::new();
    let notice = [("HOST_AGGREGATE_NOTICE", "1")];
    for _ in 0..3 {
        let (text, code) = finish(spawn(&home, &["telemetry", "status"], &notice));
        assert_eq!(code, 0, "{text}");
        assert!(!text.contains("from the next run on"), "{text}");
    }
    let paths = home.folders().tool_state("host-cli");
    assert!(!paths.spool().exists(), "recorded without a choice");
    assert!(!paths.outbox().exists());
    let v = status_json(&home, &notice);
    assert_eq!(
        (v["level"].as_str(), v["source"].as_str()),
        (Some("off"), Some("default"))
    );
}

/// Runs `script` in `sh` (`bash` for job control) inside a pty, with `$HOST`
/// set to the host binary.
fn spawn_shell(home: &Home, script: &str, envs: &[(&str, &str)]) -> PtySession {
    let mut cmd = isolated(home, "bash");
    cmd.args(["--norc", "--noprofile", "-c", script])
        .env("HOST", HOST)
        .env("TERM", "xterm");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    spawn_command(cmd, Some(TIMEOUT_MS)).expect("spawn in a pty")
}

/// Case 9 of issue 13: `eval "$(tool init bash)"` runs the tool with stdout
/// captured while the shell starts; a prompt there blocked the shell.
#[test]
fn no_prompt_when_stdout_is_captured() {
    let home = Home::new();
    let (text, code) = finish(spawn_shell(
        &home,
        r#"out="$("$HOST" greet)"; echo "got:$out""#,
        &[],
    ));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("got:hello"), "{text}");
    assert!(!text.contains("Share usage data"), "{text}");
    assert!(!tool_file(&home).exists());
}

/// A background job shares the terminal with the shell; a prompt there would
/// read the commands typed at the shell.
#[test]
fn no_prompt_in_a_background_job() {
    let home = Home::new();
    let (text, code) = finish(spawn_shell(
        &home,
        r#"set -m; "$HOST" greet & wait; echo done"#,
        &[],
    ));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("hello") && text.contains("done"), "{text}");
    assert!(!text.contains("Share usage data"), "{text}");
    assert!(!tool_file(&home).exists());
}

/// A command the author did not name (here what a `cd` hook runs) never
/// prompts, even with a person at the terminal.
#[test]
fn no_prompt_for_a_command_not_named() {
    let home = Home::new();
    let (text, code) = finish(spawn(&home, &["hook"], &[]));
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("Share usage data"), "{text}");
    assert!(!tool_file(&home).exists());
}

/// No answer in time ends the prompt: nothing stored, the run goes on, and
/// the next run does not ask again (for a week).
#[test]
fn an_unanswered_prompt_ends_stores_nothing_and_stays_quiet() {
    let home = Home::new();
    let quick = [("HOST_PROMPT_TIMEOUT_MS", "300")];
    let mut p = spawn(&home, &["greet"], &quick);
    p.exp_string("Share usage data?").unwrap();
    p.exp_string("will not ask again this week").unwrap();
    p.exp_string("hello").unwrap();
    let (_, code) = finish(p);
    assert_eq!(code, 0);
    assert!(!tool_file(&home).exists());
    let state = internal::state(&home.folders().tool_state("host-cli"));
    assert!(state.prompt_asked_at.is_some());
    let (text, _) = finish(spawn(&home, &["greet"], &quick));
    assert!(
        text.contains("hello") && !text.contains("Share usage data"),
        "{text}"
    );
}

/// Text that is not a level (a command typed ahead) ends the prompt at once
/// instead of asking again and eating more input.
#[test]
fn an_answer_that_is_not_a_level_ends_the_prompt_at_once() {
    let home = Home::new();
    let mut p = spawn(&home, &["greet"], &[]);
    p.exp_string("Share usage data?").unwrap();
    p.send_line("cd /tmp").unwrap();
    p.exp_string("will not ask again this week").unwrap();
    let (text, code) = finish(p);
    assert_eq!(code, 0);
    assert!(
        text.contains("hello") && !text.contains("Share usage data"),
        "{text}"
    );
    assert!(!tool_file(&home).exists());
}
