//! The pre-validated form of a manifest that `telemetry-macros` embeds in a
//! host binary, so that the host never runs the TOML parser (or the checks in
//! [`Manifest::parse`]) for its manifest at run time.
//!
//! The macro parses and checks `telemetry.toml` with [`Manifest::parse`] at
//! compile time and writes the result out as a `static` of these types;
//! [`Manifest::from_compiled`] turns it back into a [`Manifest`] without
//! parsing anything. The types are public only for that generated code and
//! are not part of the API: their shape may change in any release, which is
//! why [`CompiledManifest::format`] is checked.

use std::collections::BTreeMap;

use crate::manifest::{
    EventSpec, IdentityField, Manifest, ManifestError, PropKind, PropSpec, builtin_events,
};
use crate::tier::Tier;

/// The version of this layout. Generated code stores the value of the
/// `telemetry-protocol` it was generated with; a mismatch disables the handle
/// instead of misreading the static.
pub const FORMAT: u32 = 1;

/// A checked manifest as a `static`.
#[derive(Debug)]
pub struct CompiledManifest {
    /// [`FORMAT`] when generated.
    pub format: u32,
    /// [`Manifest::project`].
    pub project: &'static str,
    /// [`Manifest::endpoint`].
    pub endpoint: &'static str,
    /// [`Manifest::tier_text`].
    pub tiers: &'static [(Tier, &'static str)],
    /// The declared events (not the built-in ones).
    pub events: &'static [CompiledEvent],
    /// [`Manifest::identity`]: name, description and `max_len`.
    pub identity: &'static [(&'static str, &'static str, usize)],
}

/// A declared event, as in [`EventSpec`].
#[derive(Debug)]
pub struct CompiledEvent {
    /// Its name.
    pub name: &'static str,
    /// [`EventSpec::description`].
    pub description: &'static str,
    /// [`EventSpec::min_tier`].
    pub min_tier: Tier,
    /// [`EventSpec::props`].
    pub props: &'static [CompiledProp],
}

/// A declared prop, as in [`PropSpec`].
#[derive(Debug)]
pub struct CompiledProp {
    /// Its name.
    pub name: &'static str,
    /// [`PropSpec::description`].
    pub description: &'static str,
    /// [`PropSpec::kind`].
    pub kind: CompiledKind,
}

/// [`PropKind`] with borrowed data.
#[derive(Debug)]
pub enum CompiledKind {
    /// [`PropKind::Enum`].
    Enum(&'static [&'static str]),
    /// [`PropKind::Bool`].
    Bool,
    /// [`PropKind::Bucket`].
    Bucket {
        /// Strictly increasing bounds.
        bounds: &'static [f64],
        /// The display unit.
        unit: Option<&'static str>,
    },
    /// [`PropKind::Version`].
    Version,
}

impl Manifest {
    /// The manifest a `telemetry-macros` static describes, built without
    /// parsing: its contents were checked by [`Manifest::parse`] when the host
    /// was compiled. Fails only when the static was generated for another
    /// layout ([`FORMAT`]).
    pub fn from_compiled(compiled: &CompiledManifest) -> Result<Manifest, ManifestError> {
        if compiled.format != FORMAT {
            return Err(ManifestError {
                line: 1,
                column: 1,
                message: format!(
                    "the compiled manifest has layout {}, this telemetry-protocol reads {FORMAT}; \
                     rebuild the tool",
                    compiled.format
                ),
            });
        }
        let mut events = builtin_events();
        for event in compiled.events {
            let props = event
                .props
                .iter()
                .map(|p| {
                    let kind = match &p.kind {
                        CompiledKind::Enum(values) => PropKind::Enum {
                            values: values.iter().map(|v| (*v).to_owned()).collect(),
                        },
                        CompiledKind::Bool => PropKind::Bool,
                        CompiledKind::Bucket { bounds, unit } => PropKind::Bucket {
                            bounds: bounds.to_vec(),
                            unit: unit.map(str::to_owned),
                        },
                        CompiledKind::Version => PropKind::Version,
                    };
                    let spec = PropSpec {
                        description: p.description.to_owned(),
                        kind,
                    };
                    (p.name.to_owned(), spec)
                })
                .collect();
            let spec = EventSpec {
                description: event.description.to_owned(),
                min_tier: event.min_tier,
                props,
                builtin: false,
            };
            events.insert(event.name.to_owned(), spec);
        }
        let identity = compiled
            .identity
            .iter()
            .map(|(name, description, max_len)| {
                let field = IdentityField {
                    description: (*description).to_owned(),
                    max_len: *max_len,
                };
                ((*name).to_owned(), field)
            })
            .collect();
        Ok(Manifest {
            project: compiled.project.to_owned(),
            endpoint: compiled.endpoint.to_owned(),
            tier_text: compiled
                .tiers
                .iter()
                .map(|(t, text)| (*t, (*text).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            events,
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static DEMO: CompiledManifest = CompiledManifest {
        format: FORMAT,
        project: "demo-cli",
        endpoint: "https://t.example.org",
        tiers: &[(Tier::Aggregate, "Counts")],
        events: &[CompiledEvent {
            name: "command",
            description: "A command ran",
            min_tier: Tier::Aggregate,
            props: &[
                CompiledProp {
                    name: "name",
                    description: "Which",
                    kind: CompiledKind::Enum(&["greet", "init"]),
                },
                CompiledProp {
                    name: "ms",
                    description: "How long",
                    kind: CompiledKind::Bucket {
                        bounds: &[10.0, 100.0],
                        unit: Some("ms"),
                    },
                },
                CompiledProp {
                    name: "tty",
                    description: "Terminal",
                    kind: CompiledKind::Bool,
                },
                CompiledProp {
                    name: "rust",
                    description: "Rust",
                    kind: CompiledKind::Version,
                },
            ],
        }],
        identity: &[("email", "An address", 254)],
    };

    const DEMO_TOML: &str = r#"
project = "demo-cli"
endpoint = "https://t.example.org"
tiers.aggregate = "Counts"
[events.command]
description = "A command ran"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which" }
props.ms = { kind = "bucket", bounds = [10, 100], unit = "ms", description = "How long" }
props.tty = { kind = "bool", description = "Terminal" }
props.rust = { kind = "version", description = "Rust" }
[identity.email]
description = "An address"
max_len = 254
"#;

    #[test]
    fn the_compiled_form_is_the_parsed_manifest() {
        assert_eq!(
            Manifest::from_compiled(&DEMO).unwrap(),
            Manifest::parse(DEMO_TOML).unwrap()
        );
    }

    #[test]
    fn another_layout_is_refused() {
        let other = CompiledManifest {
            format: FORMAT + 1,
            events: &[],
            ..DEMO
        };
        let err = Manifest::from_compiled(&other).unwrap_err();
        assert!(err.message.contains("rebuild the tool"), "{err}");
    }
}
