//! Builders for valid payloads at each tier, and the repository files some
//! tests check, shared by the test modules.

use std::collections::BTreeMap;
use std::path::Path;

use telemetry_protocol::{
    ClientContext, Counter, Day, Event, IngestPayload, PropValue, Tier, Timestamp, Uuid,
};

/// A file of the repository this crate lives in, read at run time, with
/// `path` relative to the repository root.
///
/// PRIVACY.md, docs/protocol.md and the demo's manifest are outside this
/// crate, so they are not in its published package and cannot be compiled in.
/// Run from such a package, this returns `None` and the caller skips, saying
/// why: `Cargo.toml.orig` is the file `cargo package` puts beside the manifest,
/// and a checkout never has one. In the repository a missing file fails the test.
#[allow(clippy::print_stderr)]
pub(crate) fn repo_file(path: &str) -> Option<String> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    if crate_dir.join("Cargo.toml.orig").exists() {
        eprintln!("skipped: {path} is checked in the repository, not in the published package");
        return None;
    }
    let file = crate_dir.join("..").join(path);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    Some(text)
}

/// The demo's manifest, examples/demo-cli/telemetry.toml (see [`repo_file`]).
pub(crate) fn demo_manifest() -> Option<String> {
    repo_file("examples/demo-cli/telemetry.toml")
}

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
