//! Ties PRIVACY.md's field table to the protocol types: every field a payload
//! can carry must have a row, and every row must name a real field whose
//! "sent" cells agree with the tier policy.

use std::collections::BTreeSet;

use serde_json::Value;
use telemetry_protocol::policy::{Field, Rule, rule};
use telemetry_protocol::{DeleteRequest, Tier};

use crate::support::{counter, event, repo_file, uuid, valid_payload};

/// Every key path in `value`, with arrays written `[]`. Maps whose keys are
/// data (props, identity) are not descended into.
fn paths(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                out.insert(path.clone());
                if !matches!(key.as_str(), "props" | "identity") {
                    paths(&path, v, out);
                }
            }
        }
        Value::Array(items) => {
            out.remove(prefix);
            for item in items {
                paths(&format!("{prefix}[]"), item, out);
            }
        }
        _ => {}
    }
}

/// Every field the protocol can send, found by serializing fully populated values.
fn protocol_fields() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut everything = valid_payload(Tier::Full);
    everything.report_id = Some(uuid(9));
    everything.counters = Some(vec![counter()]);
    everything.events = Some(vec![event(1)]);
    paths("", &serde_json::to_value(&everything).unwrap(), &mut out);
    // `counters` and `events` are containers; their items' fields have rows.
    out.remove("context");
    let delete = DeleteRequest {
        project: "p".into(),
        install_id: uuid(1),
    };
    paths("delete", &serde_json::to_value(&delete).unwrap(), &mut out);
    out
}

fn table_rows(privacy: &str) -> Vec<Vec<String>> {
    privacy
        .lines()
        .skip_while(|l| !l.starts_with("| field |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.split('|')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

#[test]
fn every_protocol_field_has_exactly_one_row() {
    let Some(privacy) = repo_file("PRIVACY.md") else {
        return;
    };
    let rows = table_rows(&privacy);
    let documented: BTreeSet<String> = rows
        .iter()
        .map(|r| r[0].trim_matches('`').to_owned())
        .collect();
    let actual = protocol_fields();
    let missing: Vec<_> = actual.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&actual).collect();
    assert!(
        missing.is_empty(),
        "fields missing from PRIVACY.md's table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "PRIVACY.md's table lists fields the protocol no longer has: {stale:?}"
    );
    assert_eq!(rows.len(), documented.len(), "a field has two rows");
}

#[test]
fn sent_cells_agree_with_the_tier_policy() {
    let Some(privacy) = repo_file("PRIVACY.md") else {
        return;
    };
    for row in table_rows(&privacy) {
        let name = row[0].trim_matches('`');
        let top = name.split(['.', '[']).next().unwrap();
        let Some(field) = Field::ALL.into_iter().find(|f| f.as_str() == top) else {
            assert!(
                name.starts_with("delete."),
                "{name} is neither a payload field nor a delete field"
            );
            continue;
        };
        for (cell, tier) in row[1..4]
            .iter()
            .zip([Tier::Aggregate, Tier::Anonymous, Tier::Full])
        {
            let sent = rule(tier, field) != Rule::Forbidden;
            assert_eq!(
                cell == "sent",
                sent,
                "PRIVACY.md says `{cell}` for {name} at {tier}"
            );
        }
    }
}
