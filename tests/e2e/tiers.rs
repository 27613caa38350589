//! For each tier: consent, several invocations, exact numbers from
//! `telemetry-collector stats --format json`, and a scan of the database that
//! finds nothing above the tier.

use e2e_tests::{Collector, User, event_count, wait_for};
use serde_json::Value;

/// A name given on the command line; it is free text and must never be stored.
const NAME_CANARY: &str = "Zelda-name-canary-7f3a";
const EMAIL: &str = "dev-canary@example.org";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Opts in at `tier`, runs setup and three greetings, flushes, and returns the
/// collector and the user's install id (if the tier has one).
fn run_session(tier: &str) -> (Collector, User, Option<String>) {
    let collector = Collector::start();
    let user = User::new(collector.url());
    user.enable(tier, EMAIL);
    user.run(&["init", "--default-name", "Ada"]);
    user.run(&["greet"]);
    user.run(&["greet", "--name", NAME_CANARY]);
    user.run(&["greet"]);
    user.run(&["telemetry", "flush"]);
    let install_id = user.status()["install_id"].as_str().map(str::to_owned);
    (collector, user, install_id)
}

fn check_numbers(collector: &Collector, tier: &str) -> Value {
    let stats = wait_for("all events to be counted", || {
        let s = collector.stats();
        (event_count(&s, "command") >= 4).then_some(s)
    });
    assert_eq!(stats["installs"], 1, "{tier}: {stats:#}");
    assert_eq!(stats["active_installs"], 1, "{tier}");
    assert_eq!(stats["setup_started"], 1, "{tier}");
    assert_eq!(stats["setup_completed"], 1, "{tier}");
    assert_eq!(stats["setup_completion_rate"], 1.0, "{tier}");
    assert_eq!(
        event_count(&stats, "command"),
        4,
        "{tier}: init and three greetings"
    );
    let named = if tier == "aggregate" { 0 } else { 1 };
    assert_eq!(
        event_count(&stats, "greet_named"),
        named,
        "{tier}: greet_named needs anonymous"
    );
    stats
}

#[test]
fn aggregate_sends_counts_only() {
    let (collector, user, install_id) = run_session("aggregate");
    assert_eq!(install_id, None, "no install id below anonymous");
    check_numbers(&collector, "aggregate");
    for table in ["events", "installs", "install_weeks", "identities"] {
        assert_eq!(collector.rows(table), 0, "aggregate must not fill {table}");
    }
    assert!(collector.rows("daily_counters") > 0);
    let raw = collector.raw_bytes();
    assert!(!contains(&raw, NAME_CANARY.as_bytes()));
    assert!(!contains(&raw, EMAIL.as_bytes()));
    drop(user);
}

#[test]
fn anonymous_stores_events_under_a_pseudonym() {
    let (collector, _user, install_id) = run_session("anonymous");
    let install_id = install_id.expect("anonymous has an install id");
    check_numbers(&collector, "anonymous");
    assert_eq!(collector.rows("installs"), 1);
    assert_eq!(
        collector.rows("events"),
        9,
        "install, active, two setup events, four commands, greet_named"
    );
    assert_eq!(collector.rows("identities"), 0, "identity needs full");
    let raw = collector.raw_bytes();
    let id = uuid_bytes(&install_id);
    assert!(
        !contains(&raw, install_id.as_bytes()),
        "the raw install id is never stored"
    );
    assert!(
        !contains(&raw, &id),
        "the raw install id bytes are never stored"
    );
    assert!(!contains(&raw, NAME_CANARY.as_bytes()));
    assert!(!contains(&raw, EMAIL.as_bytes()));
}

#[test]
fn full_adds_exactly_the_declared_identity() {
    let (collector, _user, install_id) = run_session("full");
    assert!(install_id.is_some());
    check_numbers(&collector, "full");
    assert_eq!(collector.rows("identities"), 1);
    let raw = collector.raw_bytes();
    assert!(
        contains(&raw, EMAIL.as_bytes()),
        "full stores the e-mail the user typed"
    );
    assert!(
        !contains(&raw, NAME_CANARY.as_bytes()),
        "free text never travels as a prop"
    );
}

/// The 16 bytes of a hyphenated UUID.
fn uuid_bytes(text: &str) -> Vec<u8> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    (0..16)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect()
}
