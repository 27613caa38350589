//! Every wire type survives a serde round-trip unchanged, and unknown fields
//! are ignored (and counted) for forward compatibility.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use telemetry_protocol::policy::{Field, Rule, Violation, ViolationCode};
use telemetry_protocol::wire::record_ignored;
use telemetry_protocol::{
    DeleteRequest, ErrorBody, ErrorCode, IngestPayload, IngestResponse, IsoWeek, PropValue,
    RefusedItem, Tier, Timestamp,
};

use crate::support::{context, counter, event, uuid, valid_payload};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, value, "{json}");
}

#[test]
fn every_type_round_trips() {
    for tier in Tier::ALL {
        round_trip(&tier);
        round_trip(&valid_payload(tier));
    }
    round_trip(&context());
    round_trip(&counter());
    round_trip(&event(1));
    round_trip(&PropValue::Bool(true));
    round_trip(&PropValue::from("1.2"));
    round_trip(&DeleteRequest {
        project: "demo-cli".into(),
        install_id: uuid(7),
    });
    round_trip(&IngestResponse {
        accepted: 3,
        duplicates: 1,
        refused: 2,
        ..IngestResponse::default()
    });
    round_trip(&IngestResponse {
        accepted: 3,
        duplicates: 1,
        refused: 2,
        refused_by_reason: [("unknown_event".to_owned(), 2)].into(),
        refused_items: vec![RefusedItem {
            path: "events[1]".into(),
            reason: "unknown_event".into(),
            message: "not declared".into(),
        }],
        downgraded_to: Some(Tier::Anonymous),
        ignored: 4,
        ignored_fields: vec!["events[].source".into()],
    });
    round_trip(&ErrorBody {
        error: ErrorCode::PolicyViolation,
        message: "no".into(),
        violations: vec![Violation::new(
            "install_id",
            ViolationCode::FieldNotAllowed,
            "no",
        )],
    });
    round_trip(&Timestamp::from_unix_millis(1_795_300_000_123));
    round_trip(&IsoWeek {
        year: 2026,
        week: 47,
    });
    round_trip(&Field::InstallId);
    round_trip(&Rule::Optional);
}

#[test]
fn prop_values_are_booleans_or_strings_only() {
    let parse = |v: &str| serde_json::from_str::<PropValue>(v);
    assert_eq!(parse("true").unwrap(), PropValue::Bool(true));
    assert_eq!(parse(r#""<10""#).unwrap(), PropValue::from("<10"));
    // Escaped strings take the owned path of the deserializer.
    assert_eq!(parse(r#""a\u0062c""#).unwrap(), PropValue::from("abc"));
    for bad in ["5", "1.5", "null", "[]", "{}", r#"{"a":"b"}"#] {
        assert!(parse(bad).is_err(), "{bad} was accepted as a prop value");
    }
}

#[test]
fn unknown_fields_are_ignored_and_counted_at_every_level() {
    let mut payload = valid_payload(Tier::Anonymous);
    payload.events.as_mut().unwrap().push(event(4));
    let mut json = serde_json::to_value(&payload).unwrap();
    json["source"] = "ci".into();
    json["events"][0]["user_hint"] = "x".into();
    json["events"][1]["user_hint"] = "y".into();
    json["context"]["shell"] = "zsh".into();
    let text = json.to_string();
    let (parsed, ignored) =
        record_ignored(|| serde_json::from_str::<IngestPayload>(&text).unwrap());
    // Nothing of the unknown fields survives parsing, so nothing can store it.
    assert_eq!(parsed, payload);
    assert_eq!(ignored.count, 4);
    assert_eq!(
        ignored.names,
        [
            ("context.shell".to_owned(), 1),
            ("events[].user_hint".to_owned(), 2),
            ("source".to_owned(), 1)
        ],
        "distinct paths, in the order the parser finished each object"
    );
    let mut json = serde_json::to_value(valid_payload(Tier::Aggregate)).unwrap();
    json["counters"][0]["unit"] = serde_json::json!({"nested": [1, 2, {"deep": true}]});
    let (parsed, ignored) =
        record_ignored(|| serde_json::from_value::<IngestPayload>(json).unwrap());
    assert_eq!(parsed, valid_payload(Tier::Aggregate));
    assert_eq!(ignored.names, [("counters[].unit".to_owned(), 1)]);
    // Outside `record_ignored` they are ignored all the same, uncounted.
    let mut json = serde_json::to_value(valid_payload(Tier::Full)).unwrap();
    json["new_field"] = 1.into();
    assert!(serde_json::from_value::<IngestPayload>(json).is_ok());
    // Hostile names are made printable and only the first few are kept.
    let mut json = serde_json::to_value(valid_payload(Tier::Anonymous)).unwrap();
    for i in 0..500 {
        json[format!("x{i}<script>")] = i.into();
    }
    let (_, ignored) = record_ignored(|| serde_json::from_value::<IngestPayload>(json).unwrap());
    assert_eq!(ignored.count, 500);
    assert_eq!(
        ignored.names.len(),
        telemetry_protocol::wire::MAX_IGNORED_NAMES
    );
    assert!(
        ignored.names.iter().all(|(n, _)| !n.contains('<')),
        "{:?}",
        ignored.names
    );
}

#[test]
fn an_old_collectors_answer_still_parses() {
    let old: IngestResponse = serde_json::from_str(r#"{"accepted": 2, "duplicates": 0}"#).unwrap();
    assert_eq!(old.refused, 0);
    assert!(old.refused_items.is_empty() && old.downgraded_to.is_none());
    // A newer collector's reasons are plain strings, so they never break parsing.
    let newer: IngestResponse = serde_json::from_str(
        r#"{"accepted": 1, "duplicates": 0, "refused": 1, "refused_by_reason": {"a_reason_from_2030": 1},
            "refused_items": [{"path": "events[0]", "reason": "a_reason_from_2030", "message": "m"}],
            "field_from_2030": true}"#,
    )
    .unwrap();
    assert_eq!(newer.refused_by_reason["a_reason_from_2030"], 1);
}

#[test]
fn violation_codes_print_as_they_serialize() {
    use ViolationCode as V;
    for code in [
        V::TierOff,
        V::FieldNotAllowed,
        V::MissingField,
        V::InvalidName,
        V::InvalidValue,
        V::TooLarge,
        V::Duplicate,
        V::WrongProject,
        V::TierAboveMax,
        V::UnknownEvent,
        V::EventAboveTier,
        V::UnknownProp,
        V::UnknownIdentityField,
        V::TimeInFuture,
        V::TimeTooOld,
    ] {
        assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
    }
}

#[test]
fn error_codes_are_stable_snake_case() {
    for (code, text) in [
        (ErrorCode::MalformedPayload, "malformed_payload"),
        (ErrorCode::PolicyViolation, "policy_violation"),
        (ErrorCode::RateLimited, "rate_limited"),
        (ErrorCode::Overloaded, "overloaded"),
    ] {
        assert_eq!(serde_json::to_value(code).unwrap(), text);
        assert_eq!(code.as_str(), text);
    }
}
