//! Parses every example in docs/protocol.md, so the document cannot drift
//! from the types and the policy.

use telemetry_protocol::{
    DeleteRequest, ErrorBody, IngestPayload, IngestResponse, Manifest, Tier, ViolationCode,
    validate,
};

use crate::support::repo_file;

/// docs/protocol.md, or `None` in a published package (see `repo_file`).
fn doc() -> Option<String> {
    repo_file("docs/protocol.md")
}

/// Every fenced block of `doc` as (info string, body).
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            out.push((info.trim().to_owned(), body.join("\n")));
        }
    }
    out
}

#[test]
fn every_example_parses_and_matches_the_policy() {
    let Some(doc) = doc() else { return };
    let blocks = blocks(&doc);
    let manifest_src = &blocks
        .iter()
        .find(|(info, _)| info == "toml manifest")
        .expect("a manifest block")
        .1;
    let manifest = Manifest::parse(manifest_src).unwrap();
    let mut tiers_seen = Vec::new();
    let mut checked = 0;
    for (info, body) in &blocks {
        let Some(kind) = info.strip_prefix("json ") else {
            assert!(
                info.starts_with("toml"),
                "untagged code block `{info}` in docs/protocol.md"
            );
            continue;
        };
        checked += 1;
        match kind {
            "payload-aggregate" | "payload-anonymous" | "payload-full" => {
                let p: IngestPayload =
                    serde_json::from_str(body).unwrap_or_else(|e| panic!("{kind}: {e}"));
                assert_eq!(format!("payload-{}", p.tier), kind);
                validate(&p).unwrap_or_else(|e| panic!("{kind}: {e}"));
                manifest
                    .validate_payload(&p)
                    .unwrap_or_else(|e| panic!("{kind}: {e}"));
                tiers_seen.push(p.tier);
            }
            "rejected-payload" => {
                let p: IngestPayload = serde_json::from_str(body).unwrap();
                let err = validate(&p).unwrap_err();
                assert!(err.0.iter().any(|v| v.path == "install_id" && v.code == ViolationCode::FieldNotAllowed));
            }
            "delete" => {
                serde_json::from_str::<DeleteRequest>(body).unwrap();
            }
            "error" => {
                serde_json::from_str::<ErrorBody>(body).unwrap();
            }
            "ingest-response" => {
                serde_json::from_str::<IngestResponse>(body).unwrap();
            }
            other => panic!("unknown example kind `{other}` in docs/protocol.md"),
        }
    }
    assert_eq!(
        tiers_seen,
        [Tier::Aggregate, Tier::Anonymous, Tier::Full],
        "one example per tier"
    );
    assert!(checked >= 7);
}

#[test]
fn the_documented_policy_table_matches_the_code() {
    use telemetry_protocol::policy::{Field, Rule, rule};
    let Some(doc) = doc() else { return };
    let table: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| field "))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(table.len(), Field::ALL.len());
    for (line, field) in table.iter().zip(Field::ALL) {
        let cells: Vec<&str> = line
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cells[0], format!("`{field}`"));
        for (cell, tier) in cells[1..].iter().zip(Tier::ALL) {
            let expected = match rule(tier, field) {
                Rule::Required => "R",
                Rule::Optional => "O",
                Rule::Forbidden => "-",
            };
            assert_eq!(*cell, expected, "{field} at {tier}");
        }
    }
}
