//! Every wire type survives a serde round-trip unchanged, and unknown fields are refused.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use telemetry_protocol::policy::{Field, Rule, Violation, ViolationCode};
use telemetry_protocol::{
    DeleteRequest, ErrorBody, ErrorCode, IngestResponse, IsoWeek, PropValue, Tier, Timestamp,
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
fn unknown_fields_are_refused_at_every_level() {
    let mut json = serde_json::to_value(valid_payload(Tier::Anonymous)).unwrap();
    json["ip"] = "203.0.113.9".into();
    assert!(serde_json::from_value::<telemetry_protocol::IngestPayload>(json).is_err());

    let mut json = serde_json::to_value(valid_payload(Tier::Anonymous)).unwrap();
    json["events"][0]["user"] = "x".into();
    assert!(serde_json::from_value::<telemetry_protocol::IngestPayload>(json).is_err());

    let mut json = serde_json::to_value(valid_payload(Tier::Aggregate)).unwrap();
    json["context"]["hostname"] = "box".into();
    assert!(serde_json::from_value::<telemetry_protocol::IngestPayload>(json).is_err());
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
