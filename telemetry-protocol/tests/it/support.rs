//! Builders for valid payloads at each tier, shared by the test modules.

use std::collections::BTreeMap;

use telemetry_protocol::{
    ClientContext, Counter, Day, Event, IngestPayload, PropValue, Tier, Timestamp, Uuid,
};

pub(crate) const DEMO_MANIFEST: &str = include_str!("../../../examples/demo-cli/telemetry.toml");

pub(crate) fn context() -> ClientContext {
    ClientContext {
        tool_version: "1.4.2".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        toolkit_version: "0.1.0".into(),
    }
}

pub(crate) fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub(crate) fn counter() -> Counter {
    Counter {
        day: Day::from_ymd(2026, 11, 21).unwrap(),
        event: "command".into(),
        props: BTreeMap::from([("name".into(), PropValue::from("greet"))]),
        count: 3,
    }
}

pub(crate) fn event(n: u128) -> Event {
    Event {
        id: uuid(n),
        name: "command".into(),
        timestamp: Timestamp::from_unix_millis(1_795_300_000_000),
        props: BTreeMap::from([("name".into(), PropValue::from("greet"))]),
    }
}

/// A payload that is valid at `tier` (for `off`, the anonymous shape).
pub(crate) fn valid_payload(tier: Tier) -> IngestPayload {
    let mut p = IngestPayload {
        project: "demo-cli".into(),
        tier,
        context: context(),
        report_id: None,
        counters: None,
        install_id: None,
        events: None,
        identity: None,
    };
    match tier {
        Tier::Aggregate => {
            p.report_id = Some(uuid(1));
            p.counters = Some(vec![counter()]);
        }
        Tier::Off | Tier::Anonymous => {
            p.install_id = Some(uuid(2));
            p.events = Some(vec![event(3)]);
        }
        Tier::Full => {
            p.install_id = Some(uuid(2));
            p.events = Some(vec![event(3)]);
            p.identity = Some(BTreeMap::from([("email".into(), "dev@example.org".into())]));
        }
    }
    p
}
