//! The tier policy, checked as a table: for every tier and every field,
//! whether a payload carrying (or lacking) it is accepted.

use std::collections::BTreeMap;

use proptest::prelude::*;
use telemetry_protocol::policy::{self, Field, Rule, rule};
use telemetry_protocol::{IngestPayload, PropValue, Tier, ViolationCode, validate};

use crate::support::{counter, event, uuid, valid_payload};

/// Sets or clears one field on a payload.
fn with_field(mut p: IngestPayload, field: Field, present: bool) -> IngestPayload {
    match field {
        Field::ReportId => p.report_id = present.then(|| uuid(10)),
        Field::Counters => p.counters = present.then(|| vec![counter()]),
        Field::InstallId => p.install_id = present.then(|| uuid(11)),
        Field::Events => p.events = present.then(|| vec![event(12)]),
        Field::Identity => {
            p.identity = present.then(|| BTreeMap::from([("email".into(), "a@b.c".into())]))
        }
        Field::Project | Field::Tier | Field::Context => {}
    }
    p
}

/// The expected table, written out by hand so a change to `policy::rule`
/// must be made twice, on purpose.
const EXPECTED: [(Field, [Rule; 4]); 8] = {
    use Rule::{Forbidden as N, Optional as O, Required as R};
    [
        // field              off  aggregate anonymous full
        (Field::Project, [N, R, R, R]),
        (Field::Tier, [N, R, R, R]),
        (Field::Context, [N, R, R, R]),
        (Field::ReportId, [N, R, N, N]),
        (Field::Counters, [N, R, N, N]),
        (Field::InstallId, [N, N, R, R]),
        (Field::Events, [N, N, R, R]),
        (Field::Identity, [N, N, N, O]),
    ]
};

#[test]
fn the_rule_table_is_exactly_as_documented() {
    for (field, rules) in EXPECTED {
        for (tier, expected) in Tier::ALL.into_iter().zip(rules) {
            assert_eq!(rule(tier, field), expected, "{field} at {tier}");
        }
    }
}

#[test]
fn every_field_at_every_tier_is_accepted_or_rejected_as_the_table_says() {
    for tier in [Tier::Aggregate, Tier::Anonymous, Tier::Full] {
        assert_eq!(
            validate(&valid_payload(tier)),
            Ok(()),
            "base payload at {tier}"
        );
        for field in Field::ALL {
            for present in [true, false] {
                let p = with_field(valid_payload(tier), field, present);
                let verdict = validate(&p);
                let expect_ok = !matches!(
                    (rule(tier, field), present),
                    (Rule::Forbidden, true) | (Rule::Required, false)
                );
                // Project, tier and context are always present on the type.
                if matches!(field, Field::Project | Field::Tier | Field::Context) {
                    assert!(verdict.is_ok());
                    continue;
                }
                assert_eq!(
                    verdict.is_ok(),
                    expect_ok,
                    "{field} present={present} at {tier}: {verdict:?}"
                );
                if let Err(v) = verdict {
                    assert!(v.0.iter().any(|v| v.path == field.as_str()), "{v}");
                }
            }
        }
    }
}

#[test]
fn an_install_id_at_aggregate_is_rejected_with_a_reason() {
    let p = with_field(valid_payload(Tier::Aggregate), Field::InstallId, true);
    let err = validate(&p).unwrap_err();
    let v = &err.0[0];
    assert_eq!(v.path, "install_id");
    assert_eq!(v.code, ViolationCode::FieldNotAllowed);
    assert!(
        v.message.contains("needs tier `anonymous`"),
        "{}",
        v.message
    );
}

#[test]
fn tier_off_is_never_accepted() {
    for tier_shape in [Tier::Aggregate, Tier::Anonymous, Tier::Full] {
        let mut p = valid_payload(tier_shape);
        p.tier = Tier::Off;
        let err = validate(&p).unwrap_err();
        assert_eq!(err.0[0].code, ViolationCode::TierOff);
    }
}

#[test]
fn shape_checks_name_each_offending_item() {
    let mut p = valid_payload(Tier::Anonymous);
    let mut bad = event(20);
    bad.name = "Not A Name".into();
    bad.props
        .insert("email".into(), PropValue::from("someone@example.org"));
    let dup = event(3);
    p.events.as_mut().unwrap().extend([bad, dup]);
    p.context.os = "linux; rm -rf".into();
    let err = validate(&p).unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|v| v.path.as_str()).collect();
    assert!(paths.contains(&"events[1].name"), "{paths:?}");
    assert!(paths.contains(&"events[1].props.email"), "{paths:?}");
    assert!(paths.contains(&"events[2].id"), "{paths:?}");
    assert!(paths.contains(&"context.os"), "{paths:?}");
}

#[test]
fn counters_must_be_positive_bounded_and_unique() {
    let mut p = valid_payload(Tier::Aggregate);
    let mut zero = counter();
    zero.count = 0;
    zero.event = "other".into();
    p.counters.as_mut().unwrap().extend([counter(), zero]);
    let err = validate(&p).unwrap_err();
    let codes: Vec<_> = err.0.iter().map(|v| (v.path.as_str(), v.code)).collect();
    assert!(
        codes.contains(&("counters[1]", ViolationCode::Duplicate)),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("counters[2].count", ViolationCode::InvalidValue)),
        "{codes:?}"
    );
}

#[test]
fn hostile_keys_are_not_echoed_back() {
    let mut p = valid_payload(Tier::Anonymous);
    p.events.as_mut().unwrap()[0]
        .props
        .insert("<script>alert(1)</script>".into(), PropValue::Bool(true));
    let err = validate(&p).unwrap_err().to_string();
    assert!(!err.contains('<'), "{err}");
}

#[test]
fn min_tier_is_derived_from_the_table() {
    assert_eq!(policy::min_tier(Field::Counters), Some(Tier::Aggregate));
    assert_eq!(policy::min_tier(Field::InstallId), Some(Tier::Anonymous));
    assert_eq!(policy::min_tier(Field::Identity), Some(Tier::Full));
}

fn arb_tier() -> impl Strategy<Value = Tier> {
    prop::sample::select(Tier::ALL.to_vec())
}

prop_compose! {
    /// Any combination of optional fields, at any claimed tier.
    fn arb_payload()(
        tier in arb_tier(),
        shape in arb_tier(),
        report in any::<bool>(),
        counters in any::<bool>(),
        install in any::<bool>(),
        events in any::<bool>(),
        identity in any::<bool>(),
    ) -> IngestPayload {
        let mut p = valid_payload(shape);
        p.tier = tier;
        p = with_field(p, Field::ReportId, report);
        p = with_field(p, Field::Counters, counters);
        p = with_field(p, Field::InstallId, install);
        p = with_field(p, Field::Events, events);
        with_field(p, Field::Identity, identity)
    }
}

proptest! {
    /// No payload accepted at tier T carries a field whose lowest tier is above T,
    /// or any field the table forbids at T.
    #[test]
    fn accepted_payloads_never_carry_a_field_above_their_tier(p in arb_payload()) {
        if validate(&p).is_ok() {
            for field in Field::ALL {
                if field.is_present(&p) {
                    prop_assert_ne!(rule(p.tier, field), Rule::Forbidden, "{} at {}", field, p.tier);
                    let min = policy::min_tier(field).expect("present fields are allowed somewhere");
                    prop_assert!(min <= p.tier, "{} needs {} but payload is {}", field, min, p.tier);
                }
            }
        }
    }

    /// Whatever JSON arrives, parsing then validating never panics.
    #[test]
    fn parsing_arbitrary_json_never_panics(s in ".{0,200}") {
        if let Ok(p) = serde_json::from_str::<IngestPayload>(&s) {
            let _ = validate(&p);
        }
    }
}
