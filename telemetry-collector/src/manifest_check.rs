//! `check-manifest OLD NEW`: which changes from one version of a tool's
//! manifest to the next would lose or split data.
//!
//! A tool and its collector hold separate copies of the manifest and are
//! upgraded at different times, and users keep old tool versions for years.
//! So a manifest may only grow: events, props, enum values and identity
//! fields may be added, descriptions edited and `min_tier` lowered. Removing
//! or retyping anything, or raising a `min_tier`, makes a collector with the
//! new manifest refuse what released tools still send (or split one number
//! into two), so each such change is reported; docs/integrating.md has the
//! rules and the rollout order.

use telemetry_protocol::Manifest;
use telemetry_protocol::manifest::PropKind;

/// Every change from `old` to `new` that breaks the evolution rules, one
/// plain sentence each, in a stable order. Empty if `new` is compatible.
pub fn incompatible_changes(old: &Manifest, new: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    if old.project != new.project {
        out.push(format!(
            "the project was renamed from `{}` to `{}`",
            old.project, new.project
        ));
    }
    for (name, before) in &old.events {
        let Some(after) = new.events.get(name) else {
            out.push(format!("event `{name}` was removed"));
            continue;
        };
        if after.min_tier > before.min_tier {
            out.push(format!(
                "event `{name}`: min_tier was raised from `{}` to `{}`",
                before.min_tier, after.min_tier
            ));
        }
        for (prop, spec) in &before.props {
            let Some(now) = after.props.get(prop) else {
                out.push(format!("prop `{name}.{prop}` was removed"));
                continue;
            };
            match (&spec.kind, &now.kind) {
                (PropKind::Enum { values: old_values }, PropKind::Enum { values }) => {
                    for value in old_values.iter().filter(|v| !values.contains(v)) {
                        out.push(format!(
                            "prop `{name}.{prop}`: enum value `{value}` was removed"
                        ));
                    }
                }
                (
                    PropKind::Bucket {
                        bounds: old_bounds, ..
                    },
                    PropKind::Bucket { bounds, .. },
                ) if old_bounds != bounds => {
                    out.push(format!(
                        "prop `{name}.{prop}`: its bucket bounds changed from {old_bounds:?} to \
                         {bounds:?}, which would split its numbers"
                    ));
                }
                (a, b) if a.name() != b.name() => out.push(format!(
                    "prop `{name}.{prop}`: its kind changed from `{a}` to `{b}`"
                )),
                _ => {}
            }
        }
    }
    for (field, before) in &old.identity {
        match new.identity.get(field) {
            None => out.push(format!("identity field `{field}` was removed")),
            Some(after) if after.max_len < before.max_len => out.push(format!(
                "identity field `{field}`: max_len was lowered from {} to {}",
                before.max_len, after.max_len
            )),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = r#"
project = "demo"
endpoint = "https://t.example.org"
[events.command]
description = "A command ran"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which" }
props.ms = { kind = "bucket", bounds = [10, 100], description = "How long" }
props.ok = { kind = "bool", description = "Whether it worked" }
[events.crash]
description = "A crash"
min_tier = "anonymous"
[identity.email]
description = "Where to write"
max_len = 254
"#;

    fn check(new: &str) -> Vec<String> {
        incompatible_changes(
            &Manifest::parse(OLD).unwrap(),
            &Manifest::parse(new).unwrap(),
        )
    }

    #[test]
    fn additions_and_edits_of_words_are_compatible() {
        let new = OLD
            .replace(r#"["greet", "init"]"#, r#"["greet", "init", "deploy"]"#)
            .replace("A crash", "The tool crashed")
            .replace("min_tier = \"anonymous\"", "min_tier = \"aggregate\"")
            + "[events.lint]\ndescription = \"Lint ran\"\n[identity.team]\ndescription = \"Team\"\nmax_len = 64\n";
        assert_eq!(check(&new), Vec::<String>::new());
        assert_eq!(check(OLD), Vec::<String>::new());
    }

    #[test]
    fn each_incompatible_change_is_named() {
        // (edit of OLD, the sentence expected)
        let table: [(&str, &str, &str); 8] = [
            (
                "[events.crash]\ndescription = \"A crash\"\nmin_tier = \"anonymous\"\n",
                "",
                "event `crash` was removed",
            ),
            (
                "min_tier = \"anonymous\"",
                "min_tier = \"full\"",
                "event `crash`: min_tier was raised from `anonymous` to `full`",
            ),
            (
                "props.ok = { kind = \"bool\", description = \"Whether it worked\" }\n",
                "",
                "prop `command.ok` was removed",
            ),
            (
                r#"["greet", "init"]"#,
                r#"["greet"]"#,
                "prop `command.name`: enum value `init` was removed",
            ),
            (
                "bounds = [10, 100]",
                "bounds = [10, 1000]",
                "prop `command.ms`: its bucket bounds changed from [10.0, 100.0] to [10.0, 1000.0], which would split its numbers",
            ),
            (
                "kind = \"bool\"",
                "kind = \"version\"",
                "prop `command.ok`: its kind changed from `bool` to `version`",
            ),
            (
                "[identity.email]\ndescription = \"Where to write\"\nmax_len = 254\n",
                "",
                "identity field `email` was removed",
            ),
            (
                "max_len = 254",
                "max_len = 100",
                "identity field `email`: max_len was lowered from 254 to 100",
            ),
        ];
        for (from, to, expected) in table {
            assert!(OLD.contains(from), "{from}");
            assert_eq!(check(&OLD.replace(from, to)), [expected], "{from} -> {to}");
        }
    }
}
