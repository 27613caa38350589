//! The typed API `manifest!` generates (tests/it/typed/telemetry.toml):
//! what it records reaches a real HTTP collector with the right events and
//! props, the embedded manifest is the one the parser reads, and the bridge
//! to a host's clap-style enum converts by variant name.

use std::collections::BTreeMap;
use std::time::Duration;

use telemetry_client::{Manifest, Telemetry, Tier};
use telemetry_protocol::{PropValue, Props};

use crate::support::{Collector, Home, Mode};

/// A host's own enum, as clap's `ValueEnum` derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Greet,
    DryRun,
}

/// A host's subcommands, with one the manifest does not list.
#[derive(Debug)]
#[allow(dead_code)] // Only matched on.
enum Subcommand {
    Greet { name: Option<String> },
    DryRun(u8),
    Telemetry,
}

mod events {
    telemetry_client::manifest!(
        "tests/it/typed/telemetry.toml",
        command.name = super::Action,
        try command.name = super::Subcommand,
    );
}

use events::command::Name;

const FLUSH: Duration = Duration::from_secs(10);

fn typed(home: &Home, endpoint: &str) -> Telemetry {
    events::builder()
        .tool_version("2.0.1")
        .folders(home.folders())
        .endpoint(endpoint)
        .system_policy(None)
        .interactive(false)
        .detached_upload(false)
        .build()
}

#[test]
fn the_embedded_manifest_is_the_parsed_one() {
    let text = include_str!("typed/telemetry.toml");
    assert_eq!(
        Manifest::from_compiled(&events::MANIFEST).unwrap(),
        Manifest::parse(text).unwrap()
    );
    assert_eq!(events::command::NAME, "command");
    assert_eq!(events::r#type::MIN_TIER, Tier::Anonymous);
    assert_eq!(
        Name::ALL.map(Name::as_str),
        ["greet", "dry-run"],
        "variants follow the manifest's values"
    );
}

#[test]
fn bridges_convert_by_variant_name() {
    assert_eq!(Name::from(Action::DryRun), Name::DryRun);
    assert_eq!(Name::from(&Action::Greet), Name::Greet);
    assert_eq!(
        Name::try_from(&Subcommand::Greet { name: None }),
        Ok(Name::Greet)
    );
    assert_eq!(Name::try_from(&Subcommand::DryRun(1)), Ok(Name::DryRun));
    assert!(Name::try_from(&Subcommand::Telemetry).is_err());
}

#[test]
fn typed_events_reach_the_collector_with_their_props() {
    let collector = Collector::start(Mode::Ok);
    let home = Home::new();
    let t = typed(&home, &collector.url);
    t.control()
        .unwrap()
        .set_level(Tier::Anonymous, BTreeMap::new())
        .unwrap();
    drop(t);
    let t = typed(&home, &collector.url);
    assert_eq!(t.level(), Tier::Anonymous);
    events::command(&t)
        .name(Action::DryRun)
        .duration_ms(55_u128)
        .tty(true)
        .rust("1.89.0")
        .record();
    events::command(&t).name(Name::Greet).record();
    events::r#type(&t).record();
    assert_eq!(t.diagnostics().recorded, 3);
    assert_eq!(t.diagnostics().dropped_props, 0);
    t.persist();
    let report = t.control().unwrap().flush(FLUSH).unwrap();
    assert!(report.failure.is_none(), "{report:?}");
    let mut seen: Vec<(String, Props)> = collector.seen(|s| {
        s.ingests
            .iter()
            .flat_map(|p| p.events.iter().flatten())
            .filter(|e| e.name == "command" || e.name == "type")
            .map(|e| (e.name.clone(), e.props.clone()))
            .collect()
    });
    seen.sort_by_key(|(name, props)| (name.clone(), props.len()));
    let token = |s: &str| PropValue::Token(s.to_owned());
    assert_eq!(
        seen,
        [
            (
                "command".to_owned(),
                Props::from([("name".to_owned(), token("greet"))])
            ),
            (
                "command".to_owned(),
                Props::from([
                    ("duration_ms".to_owned(), token("10..100")),
                    ("name".to_owned(), token("dry-run")),
                    ("rust".to_owned(), token("1.89.0")),
                    ("tty".to_owned(), PropValue::Bool(true)),
                ])
            ),
            ("type".to_owned(), Props::new()),
        ]
    );
}

#[test]
fn typed_events_at_off_write_nothing() {
    let home = Home::new();
    let t = typed(&home, "https://unused.invalid");
    events::command(&t)
        .name(Name::Greet)
        .duration_ms(3)
        .record();
    assert_eq!(t.level(), Tier::Off);
    assert_eq!(t.diagnostics().recorded, 0);
    drop(t);
    assert!(!home.path("state").exists());
}
