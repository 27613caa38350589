//! Manifest parsing: the demo manifest, every built-in event, prop encoding,
//! validation that names the offending item, and parse errors with line and column.

use std::collections::BTreeMap;

use telemetry_protocol::manifest::{
    PropKind, bucket_label, bucket_labels, builtin, coarsen_version,
};
use telemetry_protocol::{Manifest, PropInput, PropValue, Tier, ViolationCode};

use crate::support::{demo_manifest, valid_payload};

/// The demo's manifest, or `None` in a published package (see `repo_file`).
fn demo() -> Option<Manifest> {
    demo_manifest().map(|text| Manifest::parse(&text).unwrap())
}

#[test]
fn the_demo_manifest_parses_with_its_built_ins() {
    let Some(m) = demo() else { return };
    assert_eq!(m.project, "demo-cli");
    assert_eq!(m.endpoint, "http://127.0.0.1:8750");
    let command = m.event("command").unwrap();
    assert_eq!(command.min_tier, Tier::Aggregate);
    assert_eq!(command.props.len(), 4);
    assert_eq!(m.event("greet_named").unwrap().min_tier, Tier::Anonymous);
    for name in builtin::ALL {
        let e = m.event(name).unwrap();
        assert!(e.builtin && e.min_tier == Tier::Aggregate, "{name}");
    }
    let age = &m.event(builtin::ACTIVE).unwrap().props[builtin::ACTIVE_AGE_PROP];
    assert!(matches!(age.kind, PropKind::Bucket { .. }));
    assert_eq!(m.identity["email"].max_len, 254);
    assert!(m.tier_summary(Tier::Full).contains("e-mail"));
}

#[test]
fn derived_tier_summaries_name_events_and_identity_fields() {
    let m = Manifest::parse(
        "project = \"x\"\nendpoint = \"https://t.example\"\n[events.run]\ndescription = \"r\"\n[identity.team]\ndescription = \"t\"\nmax_len = 10\n",
    )
    .unwrap();
    assert!(m.tier_summary(Tier::Aggregate).contains("run"));
    assert!(m.tier_summary(Tier::Aggregate).contains("no identifier"));
    assert!(m.tier_summary(Tier::Full).contains("team"));
}

#[test]
fn buckets_are_half_open_and_labelled_consistently() {
    let bounds = [10.0, 100.0, 1000.0];
    assert_eq!(
        bucket_labels(&bounds),
        ["<10", "10..100", "100..1000", ">=1000"]
    );
    for (value, label) in [
        (0.0, "<10"),
        (9.99, "<10"),
        (10.0, "10..100"),
        (999.0, "100..1000"),
        (1000.0, ">=1000"),
        (1e9, ">=1000"),
    ] {
        assert_eq!(bucket_label(&bounds, value), label, "{value}");
        assert!(bucket_labels(&bounds).contains(&bucket_label(&bounds, value)));
    }
    assert_eq!(bucket_labels(&[0.5, 2.0]), ["<0.5", "0.5..2", ">=2"]);
}

#[test]
fn versions_are_coarsened_at_aggregate_only() {
    assert_eq!(coarsen_version("1.84.1").as_deref(), Some("1.84"));
    assert_eq!(coarsen_version("2").as_deref(), Some("2.0"));
    assert_eq!(coarsen_version("1.2.3-rc.1").as_deref(), Some("1.2"));
    assert_eq!(coarsen_version("one.two"), None);
    let Some(m) = demo() else { return };
    let spec = &m.event("command").unwrap().props["rust_version"];
    let input = PropInput::from("1.84.1");
    assert_eq!(
        spec.encode(&input, Tier::Aggregate),
        Ok(PropValue::from("1.84"))
    );
    assert_eq!(
        spec.encode(&input, Tier::Anonymous),
        Ok(PropValue::from("1.84.1"))
    );
    assert!(
        spec.check(&PropValue::from("1.84.1"), Tier::Aggregate)
            .is_err()
    );
    assert!(
        spec.check(&PropValue::from("1.84"), Tier::Aggregate)
            .is_ok()
    );
    assert!(spec.check(&PropValue::from("1.84.1"), Tier::Full).is_ok());
}

#[test]
fn a_version_suffix_is_a_short_pre_release_tag_not_free_text() {
    let Some(m) = demo() else { return };
    let spec = &m.event("command").unwrap().props["rust_version"];
    for (value, ok) in [
        ("1.2.3", true),
        ("1.2.3-rc.1", true),
        ("1.2.3-beta.2", true),
        ("1.2.3-alpha", true),
        ("1.2.3-rc1", true),
        ("2.0.0-dev", true),
        ("1.2.3-nightly.20261121", false),
        ("1.2.3-jane-doe", false),
        ("1.2.3-mybranch", false),
        ("1.2.3-rc.1.2", false),
        ("1.2.3-", false),
        ("1.2.3-RC.1", false),
        ("1.2.3+build.5", false),
    ] {
        let input = PropInput::from(value);
        for tier in [Tier::Anonymous, Tier::Full] {
            assert_eq!(
                spec.check(&PropValue::from(value), tier).is_ok(),
                ok,
                "{value} at {tier}"
            );
            assert_eq!(spec.encode(&input, tier).is_ok(), ok, "{value} at {tier}");
        }
    }
    // At aggregate the suffix is dropped anyway, so any token suffix coarsens.
    assert_eq!(coarsen_version("1.2.3-mybranch").as_deref(), Some("1.2"));
}

#[test]
fn encoding_refuses_values_of_the_wrong_kind() {
    let Some(m) = demo() else { return };
    let props = &m.event("command").unwrap().props;
    assert_eq!(
        props["duration_ms"].encode(&PropInput::from(42_u32), Tier::Aggregate),
        Ok(PropValue::from("10..100"))
    );
    assert_eq!(
        props["name"].encode(&"greet".into(), Tier::Aggregate),
        Ok(PropValue::from("greet"))
    );
    assert!(
        props["name"]
            .encode(&"rm -rf".into(), Tier::Aggregate)
            .is_err()
    );
    assert!(
        props["interactive"]
            .encode(&"yes".into(), Tier::Aggregate)
            .is_err()
    );
    assert!(
        props["duration_ms"]
            .encode(&PropInput::Number(f64::NAN), Tier::Aggregate)
            .is_err()
    );
}

#[test]
fn validation_names_the_unknown_event_prop_and_value() {
    let Some(m) = demo() else { return };
    let mut p = valid_payload(Tier::Anonymous);
    let events = p.events.as_mut().unwrap();
    events[0]
        .props
        .insert("name".into(), PropValue::from("delete"));
    events[0]
        .props
        .insert("colour".into(), PropValue::from("red"));
    let mut unknown = events[0].clone();
    unknown.id = telemetry_protocol::Uuid::from_u128(99);
    unknown.name = "launch_missiles".into();
    unknown.props.clear();
    events.push(unknown);
    let err = m.validate_payload(&p).unwrap_err();
    let found: Vec<_> = err.0.iter().map(|v| (v.path.as_str(), v.code)).collect();
    assert!(
        found.contains(&("events[0].props.name", ViolationCode::InvalidValue)),
        "{found:?}"
    );
    assert!(
        found.contains(&("events[0].props.colour", ViolationCode::UnknownProp)),
        "{found:?}"
    );
    assert!(
        found.contains(&("events[1]", ViolationCode::UnknownEvent)),
        "{found:?}"
    );
    assert!(err.to_string().contains("launch_missiles"), "{err}");
}

#[test]
fn validation_enforces_event_min_tier_identity_and_project() {
    let Some(m) = demo() else { return };
    let mut p = valid_payload(Tier::Aggregate);
    p.counters.as_mut().unwrap()[0].event = "greet_named".into();
    p.counters.as_mut().unwrap()[0].props.clear();
    p.project = "other".into();
    let err = m.validate_payload(&p).unwrap_err();
    let codes: Vec<_> = err.0.iter().map(|v| v.code).collect();
    assert!(codes.contains(&ViolationCode::EventAboveTier), "{codes:?}");
    assert!(codes.contains(&ViolationCode::WrongProject), "{codes:?}");

    let mut p = valid_payload(Tier::Full);
    p.identity = Some(BTreeMap::from([
        ("email".into(), "x".repeat(255)),
        ("phone".into(), "555".into()),
    ]));
    let err = m.validate_payload(&p).unwrap_err();
    let found: Vec<_> = err.0.iter().map(|v| (v.path.as_str(), v.code)).collect();
    assert!(
        found.contains(&("identity.email", ViolationCode::TooLarge)),
        "{found:?}"
    );
    assert!(
        found.contains(&("identity.phone", ViolationCode::UnknownIdentityField)),
        "{found:?}"
    );

    assert_eq!(m.validate_payload(&valid_payload(Tier::Full)), Ok(()));
}

/// Parses `src`, expecting an error at `line`, with `needle` in its message.
fn check_error(src: &str, line: usize, needle: &str) {
    let err = Manifest::parse(src).unwrap_err();
    assert_eq!(err.line, line, "wrong line for {needle:?}: {err}");
    assert!(err.column >= 1);
    assert!(
        err.to_string().contains(needle),
        "{err} should mention {needle:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("line {line}, column ")),
        "{err}"
    );
}

const HEAD: &str = "project = \"demo\"\nendpoint = \"https://t.example\"\n";

#[test]
fn parse_errors_report_line_and_column() {
    let cases: &[(&str, usize, &str)] = &[
        // TOML syntax.
        ("project = \"demo\"\nendpoint = \n", 2, ""),
        // Unknown top-level key.
        (
            "project = \"demo\"\nendpoint = \"https://t.example\"\ncolour = 1\n",
            3,
            "colour",
        ),
        // Missing endpoint.
        ("project = \"demo\"\n", 1, "endpoint"),
        // Bad project name.
        (
            "\nproject = \"Demo Tool\"\nendpoint = \"https://t.example\"\n",
            2,
            "project must match",
        ),
        // Endpoint not a URL.
        ("project = \"demo\"\n\nendpoint = \"ftp://x\"\n", 3, "http"),
    ];
    for (src, line, needle) in cases {
        check_error(src, *line, needle);
    }
}

#[test]
fn semantic_errors_point_at_the_offending_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("[events.install]\ndescription = \"x\"\n", 3, "built-in"),
        ("[events.Bad-Name]\ndescription = \"x\"\n", 3, "event name"),
        (
            "[events.run]\ndescription = \"x\"\nmin_tier = \"off\"\n",
            5,
            "min_tier",
        ),
        (
            "[events.run]\ndescription = \"x\"\nmin_tier = \"most\"\n",
            5,
            "most",
        ),
        (
            "[events.run]\ndescription = \"x\"\n[events.run.props.n]\ndescription = \"d\"\nkind = \"text\"\n",
            7,
            "text",
        ),
        (
            "[events.run]\ndescription = \"x\"\n[events.run.props.n]\ndescription = \"d\"\nkind = \"bucket\"\nbounds = [5, 1]\n",
            8,
            "strictly increasing",
        ),
        (
            "[events.run]\ndescription = \"x\"\n[events.run.props.n]\ndescription = \"d\"\nkind = \"enum\"\n",
            7,
            "needs `values`",
        ),
        (
            "[events.run]\ndescription = \"x\"\n[events.run.props.n]\ndescription = \"d\"\nkind = \"enum\"\nvalues = [\"a b\"]\n",
            8,
            "a b",
        ),
        (
            "[events.run]\ndescription = \"x\"\n[events.run.props.n]\ndescription = \"d\"\nkind = \"bool\"\nbounds = [1]\n",
            7,
            "does not apply",
        ),
        (
            "[events.run]\ndescription = \"x\"\n[events.run.props.Name]\ndescription = \"d\"\nkind = \"bool\"\n",
            5,
            "prop name",
        ),
        (
            "[identity.email]\ndescription = \"x\"\nmax_len = 0\n",
            5,
            "max_len",
        ),
        ("[tiers]\neverything = \"x\"\n", 4, "not a tier"),
    ];
    for (body, line, needle) in cases {
        check_error(&format!("{HEAD}{body}"), *line, needle);
    }
}

#[test]
fn the_project_is_peeked_only_from_a_plain_top_level_line() {
    use telemetry_protocol::manifest::peek_project;
    let tail = "endpoint = \"https://t.example\"\n[events.run]\ndescription = \"r\"\n";
    let cases: &[(&str, Option<&str>)] = &[
        ("project = \"demo-cli\"\n", Some("demo-cli")),
        (
            "# a comment\n\n  project=\"x_1\"  # trailing\n",
            Some("x_1"),
        ),
        (
            "endpoint = \"https://e\"\nproject = \"late\"\n",
            Some("late"),
        ),
        // Everything else falls back to a full parse.
        ("\"project\" = \"quoted\"\n", None),
        ("project = 'literal'\n", None),
        ("project = \"Upper\"\n", None),
        ("project = \"a\" \"b\"\n", None),
        (
            "x = \"\"\"\nproject = \"inside\"\n\"\"\"\nproject = \"real\"\n",
            None,
        ),
        ("[tiers]\nproject = \"in-a-table\"\n", None),
        ("", None),
    ];
    for (head, expected) in cases {
        let text = format!("{head}{tail}");
        assert_eq!(peek_project(&text), *expected, "{text}");
        // Whenever a name is peeked, it is the one the parser reads.
        if let (Some(name), Ok(parsed)) = (expected, Manifest::parse(&text)) {
            assert_eq!(parsed.project, *name);
        }
    }
    let Some(text) = demo_manifest() else { return };
    assert_eq!(peek_project(&text), Some("demo-cli"));
}
