//! The event manifest: the `telemetry.toml` a tool author writes, compiles into
//! the tool, and gives to the collector.
//!
//! It declares the project, its default endpoint, every event with the lowest
//! tier it may be sent at, each event's props, and the identity fields asked
//! for at `full`. The client encodes props through it and the collector
//! validates payloads against it, so both sides read one declaration.
//!
//! ```toml
//! project = "demo-cli"
//! endpoint = "https://telemetry.example.org"
//!
//! [events.command]
//! description = "A command ran"
//! min_tier = "aggregate"
//! props.name = { kind = "enum", values = ["greet", "init"], description = "Which command" }
//! props.duration_ms = { kind = "bucket", bounds = [10, 100, 1000], description = "How long it took" }
//!
//! [identity.email]
//! description = "An address the maintainers may write to"
//! max_len = 254
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{
    self, Violation, ViolationCode, Violations, is_identifier, is_project_name, printable,
};
use crate::tier::Tier;
use crate::wire::{IngestPayload, PropValue, Props};

/// Names of the lifecycle events every manifest has without declaring them.
pub mod builtin {
    /// Sent once per install.
    pub const INSTALL: &str = "install";
    /// Sent once per ISO week, with the install's age as [`ACTIVE_AGE_PROP`].
    pub const ACTIVE: &str = "active";
    /// Sent once per install, when the tool's setup starts.
    pub const SETUP_STARTED: &str = "setup_started";
    /// Sent once per install, when the tool's setup completes.
    pub const SETUP_COMPLETED: &str = "setup_completed";
    /// The prop on `active` carrying the install's age in days, bucketed.
    pub const ACTIVE_AGE_PROP: &str = "install_age_days";
    /// The bucket bounds of [`ACTIVE_AGE_PROP`], in days.
    pub const ACTIVE_AGE_BOUNDS: [f64; 4] = [7.0, 30.0, 90.0, 365.0];
    /// Every lifecycle event name.
    pub const ALL: [&str; 4] = [INSTALL, ACTIVE, SETUP_STARTED, SETUP_COMPLETED];
    /// Delivery health: how many items a client had to drop, by [`DROPPED_REASON_PROP`].
    ///
    /// It is sent only as `aggregate` counters, in a payload of its own, so
    /// every tier may send it and it never carries an install id.
    pub const DROPPED: &str = "telemetry_dropped";
    /// The prop on [`DROPPED`] naming why the items were dropped.
    pub const DROPPED_REASON_PROP: &str = "reason";
    /// The values of [`DROPPED_REASON_PROP`].
    pub const DROPPED_REASONS: [&str; 6] = [
        "spool_full",
        "outbox_full",
        "outbox_expired",
        "refused_payload",
        "refused_items",
        "io_error",
    ];
    /// Every event name a manifest may not declare: the lifecycle events and [`DROPPED`].
    pub const RESERVED: [&str; 5] = [INSTALL, ACTIVE, SETUP_STARTED, SETUP_COMPLETED, DROPPED];
}

/// Most bucket bounds one prop may declare.
const MAX_BOUNDS: usize = 32;
/// Most enum values one prop may declare.
const MAX_ENUM_VALUES: usize = 256;
/// Largest `max_len` an identity field may declare.
const MAX_IDENTITY_LEN: usize = policy::limits::MAX_IDENTITY_VALUE_LEN;

/// A parsed, checked event manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The project name; payloads must carry exactly this.
    pub project: String,
    /// The collector URL the client sends to unless overridden.
    pub endpoint: String,
    /// Optional one-line descriptions of what each tier sends, shown in prompts.
    pub tier_text: BTreeMap<Tier, String>,
    /// Every event, the built-in lifecycle events included, by name.
    pub events: BTreeMap<String, EventSpec>,
    /// The identity fields asked for at `full`, by name.
    pub identity: BTreeMap<String, IdentityField>,
}

/// One declared event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    /// What the event means, in plain words for users.
    pub description: String,
    /// The lowest tier at which it may be sent.
    pub min_tier: Tier,
    /// Its props, by name.
    pub props: BTreeMap<String, PropSpec>,
    /// Whether this is a built-in lifecycle event.
    pub builtin: bool,
}

/// One declared prop.
#[derive(Debug, Clone, PartialEq)]
pub struct PropSpec {
    /// What the prop means, in plain words.
    pub description: String,
    /// Its kind, which decides what values it may take.
    pub kind: PropKind,
}

/// The kinds a prop may be. Free text is deliberately not one of them.
#[derive(Debug, Clone, PartialEq)]
pub enum PropKind {
    /// One of a closed list of values.
    Enum {
        /// The allowed values.
        values: Vec<String>,
    },
    /// `true` or `false`.
    Bool,
    /// A number, sent only as the bucket it falls in.
    Bucket {
        /// Strictly increasing bucket bounds.
        bounds: Vec<f64>,
        /// An optional unit for display, such as `ms`.
        unit: Option<String>,
    },
    /// A version, coarsened to `major.minor` at `aggregate`.
    Version,
}

/// One identity field asked for at `full`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityField {
    /// What it is and why it is asked for.
    pub description: String,
    /// The longest value accepted, in characters.
    pub max_len: usize,
}

/// A raw prop value as the host tool passes it, before [`PropSpec::encode`].
#[derive(Debug, Clone, PartialEq)]
pub enum PropInput {
    /// For `bool` props.
    Bool(bool),
    /// For `enum` and `version` props.
    Text(String),
    /// For `bucket` props.
    Number(f64),
}

impl From<bool> for PropInput {
    fn from(v: bool) -> Self {
        PropInput::Bool(v)
    }
}
impl From<&str> for PropInput {
    fn from(v: &str) -> Self {
        PropInput::Text(v.to_owned())
    }
}
impl From<String> for PropInput {
    fn from(v: String) -> Self {
        PropInput::Text(v)
    }
}
macro_rules! number_input {
    ($($t:ty),*) => {$(
        impl From<$t> for PropInput {
            fn from(v: $t) -> Self {
                PropInput::Number(v as f64)
            }
        }
    )*};
}
number_input!(
    f64, f32, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

/// A manifest that could not be read, with the line and column of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ManifestError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl ManifestError {
    fn at(src: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let offset = span.map_or(0, |s| s.start.min(src.len()));
        let before = &src[..floor_char_boundary(src, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ManifestError {
            line,
            column,
            message: message.into(),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    project: Spanned<String>,
    endpoint: Spanned<String>,
    #[serde(default)]
    tiers: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    events: BTreeMap<Spanned<String>, RawEvent>,
    #[serde(default)]
    identity: BTreeMap<Spanned<String>, RawIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    description: String,
    #[serde(default = "default_min_tier")]
    min_tier: Spanned<Tier>,
    #[serde(default)]
    props: BTreeMap<Spanned<String>, RawProp>,
}

fn default_min_tier() -> Spanned<Tier> {
    Spanned::new(0..0, Tier::Aggregate)
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Enum,
    Bool,
    Bucket,
    Version,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProp {
    description: String,
    kind: Spanned<RawKind>,
    values: Option<Spanned<Vec<String>>>,
    bounds: Option<Spanned<Vec<f64>>>,
    unit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    description: String,
    max_len: Spanned<usize>,
}

impl Manifest {
    /// Parses and checks a manifest. Errors carry the line and column.
    pub fn parse(src: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(src)
            .map_err(|e| ManifestError::at(src, e.span(), e.message().trim()))?;
        let err = |span: Range<usize>, msg: String| ManifestError::at(src, Some(span), msg);

        if !is_project_name(raw.project.get_ref()) {
            return Err(err(
                raw.project.span(),
                "project must match [a-z0-9][a-z0-9_-]* and be at most 64 bytes".into(),
            ));
        }
        let endpoint = raw.endpoint.get_ref();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(err(
                raw.endpoint.span(),
                "endpoint must be an http:// or https:// URL".into(),
            ));
        }

        let mut tier_text = BTreeMap::new();
        for (key, text) in raw.tiers {
            let tier = match key.get_ref().parse::<Tier>() {
                Ok(t) if t != Tier::Off => t,
                _ => {
                    return Err(err(
                        key.span(),
                        format!(
                            "`{}` is not a tier; use aggregate, anonymous or full",
                            key.get_ref()
                        ),
                    ));
                }
            };
            tier_text.insert(tier, text);
        }

        let mut events = builtin_events();
        for (name, event) in raw.events {
            let span = name.span();
            let name = name.into_inner();
            if builtin::RESERVED.contains(&name.as_str()) {
                return Err(err(
                    span,
                    format!("`{name}` is a built-in event and cannot be declared"),
                ));
            }
            if !is_identifier(&name) {
                return Err(err(
                    span,
                    format!("event name `{name}` must match [a-z][a-z0-9_]*"),
                ));
            }
            if *event.min_tier.get_ref() == Tier::Off {
                return Err(err(
                    event.min_tier.span(),
                    "min_tier cannot be `off`".into(),
                ));
            }
            if event.props.len() > policy::limits::MAX_PROPS {
                return Err(err(
                    span,
                    format!("at most {} props per event", policy::limits::MAX_PROPS),
                ));
            }
            let mut props = BTreeMap::new();
            for (prop_name, prop) in event.props {
                let span = prop_name.span();
                let prop_name = prop_name.into_inner();
                if !is_identifier(&prop_name) {
                    return Err(err(
                        span,
                        format!("prop name `{prop_name}` must match [a-z][a-z0-9_]*"),
                    ));
                }
                let spec = prop_spec(prop)
                    .map_err(|(span, msg)| err(span, format!("prop `{prop_name}`: {msg}")))?;
                props.insert(prop_name, spec);
            }
            events.insert(
                name,
                EventSpec {
                    description: event.description,
                    min_tier: event.min_tier.into_inner(),
                    props,
                    builtin: false,
                },
            );
        }

        let mut identity = BTreeMap::new();
        for (name, field) in raw.identity {
            let span = name.span();
            let name = name.into_inner();
            if !is_identifier(&name) {
                return Err(err(
                    span,
                    format!("identity field `{name}` must match [a-z][a-z0-9_]*"),
                ));
            }
            let max_len = *field.max_len.get_ref();
            if !(1..=MAX_IDENTITY_LEN).contains(&max_len) {
                return Err(err(
                    field.max_len.span(),
                    format!("max_len must be between 1 and {MAX_IDENTITY_LEN}"),
                ));
            }
            if identity.len() == policy::limits::MAX_IDENTITY_FIELDS {
                return Err(err(
                    span,
                    format!(
                        "at most {} identity fields",
                        policy::limits::MAX_IDENTITY_FIELDS
                    ),
                ));
            }
            identity.insert(
                name,
                IdentityField {
                    description: field.description,
                    max_len,
                },
            );
        }

        Ok(Manifest {
            project: raw.project.into_inner(),
            endpoint: raw.endpoint.into_inner(),
            tier_text,
            events,
            identity,
        })
    }

    /// The event named `name`, built-ins included.
    pub fn event(&self, name: &str) -> Option<&EventSpec> {
        self.events.get(name)
    }

    /// A one-line, plain-words summary of what `tier` sends for this tool: the
    /// author's own text from `[tiers]` if given, otherwise one derived from the
    /// declared events and identity fields.
    pub fn tier_summary(&self, tier: Tier) -> String {
        if let Some(text) = self.tier_text.get(&tier) {
            return text.clone();
        }
        let events_at = |t: Tier| -> Vec<&str> {
            self.events
                .iter()
                .filter(|(_, e)| e.min_tier <= t)
                .map(|(n, _)| n.as_str())
                .collect()
        };
        match tier {
            Tier::Off => "Nothing is recorded or sent.".to_owned(),
            Tier::Aggregate => format!(
                "Daily counts of {} with your tool version, OS and CPU type; no identifier and no times.",
                events_at(tier).join(", ")
            ),
            Tier::Anonymous => format!(
                "Individual events ({}) with times and a random install id you can reset.",
                events_at(tier).join(", ")
            ),
            Tier::Full => {
                let fields: Vec<&str> = self.identity.keys().map(String::as_str).collect();
                if fields.is_empty() {
                    "Everything anonymous sends; this tool asks for no identity fields.".to_owned()
                } else {
                    format!(
                        "Everything anonymous sends, plus what you type in for: {}.",
                        fields.join(", ")
                    )
                }
            }
        }
    }

    /// Checks one event's name and props at `tier`, appending violations
    /// under `path`, which is only called when there is one (so a valid
    /// payload formats no paths).
    pub fn check_event(
        &self,
        tier: Tier,
        path: impl Fn() -> String,
        name: &str,
        props: &Props,
        out: &mut Vec<Violation>,
    ) {
        let Some(spec) = self.events.get(name) else {
            out.push(Violation::new(
                path(),
                ViolationCode::UnknownEvent,
                format!(
                    "event `{}` is not declared in the manifest",
                    printable(name)
                ),
            ));
            return;
        };
        if spec.min_tier > tier {
            out.push(Violation::new(
                path(),
                ViolationCode::EventAboveTier,
                format!(
                    "event `{name}` needs tier `{}`; this payload is `{tier}`",
                    spec.min_tier
                ),
            ));
        }
        for (key, value) in props {
            let prop_path = || format!("{}.props.{}", path(), printable(key));
            match spec.props.get(key) {
                None => out.push(Violation::new(
                    prop_path(),
                    ViolationCode::UnknownProp,
                    format!(
                        "prop `{}` is not declared for event `{name}`",
                        printable(key)
                    ),
                )),
                Some(prop) => {
                    if let Err(msg) = prop.check(value, tier) {
                        out.push(Violation::new(
                            prop_path(),
                            ViolationCode::InvalidValue,
                            msg,
                        ));
                    }
                }
            }
        }
    }

    /// **Validates a payload against this manifest**: the project, every event
    /// or counter and its props, and the identity fields. Call
    /// [`policy::validate`] as well; this checks only what the manifest adds.
    pub fn validate_payload(&self, payload: &IngestPayload) -> Result<(), Violations> {
        let mut out = Vec::new();
        if payload.project != self.project {
            out.push(Violation::new(
                "project",
                ViolationCode::WrongProject,
                format!("this manifest is for project `{}`", self.project),
            ));
        }
        for (i, c) in payload.counters.iter().flatten().enumerate() {
            self.check_event(
                payload.tier,
                || format!("counters[{i}]"),
                &c.event,
                &c.props,
                &mut out,
            );
        }
        for (i, e) in payload.events.iter().flatten().enumerate() {
            self.check_event(
                payload.tier,
                || format!("events[{i}]"),
                &e.name,
                &e.props,
                &mut out,
            );
        }
        for (key, value) in payload.identity.iter().flatten() {
            let path = format!("identity.{}", printable(key));
            match self.identity.get(key) {
                None => out.push(Violation::new(
                    path,
                    ViolationCode::UnknownIdentityField,
                    format!(
                        "identity field `{}` is not declared in the manifest",
                        printable(key)
                    ),
                )),
                Some(field) if value.chars().count() > field.max_len => out.push(Violation::new(
                    path,
                    ViolationCode::TooLarge,
                    format!("at most {} characters", field.max_len),
                )),
                Some(_) => {}
            }
        }
        Violations::check(out)
    }
}

/// The project name of a manifest's text, found without parsing the TOML:
/// the value of a plain `project = "..."` line before the first table.
///
/// The client uses it to read the consent files, which are named after the
/// project, before deciding whether the manifest is needed at all; with
/// telemetry off it never is. `None` when the line is written any other way
/// (or cannot be told apart from text inside a multi-line string); the caller
/// then parses the whole manifest, so `None` only costs time. A name returned
/// is always what [`Manifest::parse`] would read, if it accepts the text.
pub fn peek_project(src: &str) -> Option<&str> {
    for line in src.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // A table header ends the top-level keys; a multi-line string could
        // hold a line that looks like the key.
        if line.starts_with('[') || line.contains("\"\"\"") || line.contains("'''") {
            return None;
        }
        let Some(rest) = line.strip_prefix("project") else {
            continue;
        };
        let rest = rest.trim_start().strip_prefix('=')?.trim_start();
        let value = rest.strip_prefix('"')?;
        let (name, after) = value.split_once('"')?;
        let after = after.trim_start();
        if !(after.is_empty() || after.starts_with('#')) || !is_project_name(name) {
            return None;
        }
        return Some(name);
    }
    None
}

fn prop_spec(raw: RawProp) -> Result<PropSpec, (Range<usize>, String)> {
    let kind_span = raw.kind.span();
    let extra = |what: &str| {
        (
            kind_span.clone(),
            format!("`{what}` does not apply to this kind"),
        )
    };
    let kind = match raw.kind.into_inner() {
        RawKind::Enum => {
            if raw.bounds.is_some() {
                return Err(extra("bounds"));
            }
            let values = raw
                .values
                .ok_or((kind_span.clone(), "an enum needs `values`".to_owned()))?;
            let span = values.span();
            let values = values.into_inner();
            if values.is_empty() || values.len() > MAX_ENUM_VALUES {
                return Err((span, format!("an enum needs 1 to {MAX_ENUM_VALUES} values")));
            }
            if let Some(bad) = values.iter().find(|v| !policy::is_token(v)) {
                return Err((
                    span,
                    format!("enum value `{bad}` must be a short token of [A-Za-z0-9._+<>=-]"),
                ));
            }
            PropKind::Enum { values }
        }
        RawKind::Bucket => {
            if raw.values.is_some() {
                return Err(extra("values"));
            }
            let bounds = raw
                .bounds
                .ok_or((kind_span.clone(), "a bucket needs `bounds`".to_owned()))?;
            let span = bounds.span();
            let bounds = bounds.into_inner();
            let increasing = bounds.windows(2).all(|w| w[0] < w[1]);
            if bounds.is_empty()
                || bounds.len() > MAX_BOUNDS
                || !increasing
                || bounds.iter().any(|b| !b.is_finite())
            {
                return Err((
                    span,
                    format!("bounds must be 1 to {MAX_BOUNDS} finite, strictly increasing numbers"),
                ));
            }
            PropKind::Bucket {
                bounds,
                unit: raw.unit,
            }
        }
        kind @ (RawKind::Bool | RawKind::Version) => {
            if raw.values.is_some() {
                return Err(extra("values"));
            }
            if raw.bounds.is_some() {
                return Err(extra("bounds"));
            }
            if matches!(kind, RawKind::Bool) {
                PropKind::Bool
            } else {
                PropKind::Version
            }
        }
    };
    Ok(PropSpec {
        description: raw.description,
        kind,
    })
}

pub(crate) fn builtin_events() -> BTreeMap<String, EventSpec> {
    let plain = |description: &str| EventSpec {
        description: description.to_owned(),
        min_tier: Tier::Aggregate,
        props: BTreeMap::new(),
        builtin: true,
    };
    let mut active = plain(
        "The tool was used this week (once per ISO week), with how long ago it was installed",
    );
    active.props.insert(
        builtin::ACTIVE_AGE_PROP.to_owned(),
        PropSpec {
            description: "Days since install, bucketed".to_owned(),
            kind: PropKind::Bucket {
                bounds: builtin::ACTIVE_AGE_BOUNDS.to_vec(),
                unit: Some("days".to_owned()),
            },
        },
    );
    let mut dropped = plain("Items this client had to drop before they were delivered, by reason");
    dropped.props.insert(
        builtin::DROPPED_REASON_PROP.to_owned(),
        PropSpec {
            description: "Why they were dropped".to_owned(),
            kind: PropKind::Enum {
                values: builtin::DROPPED_REASONS.map(str::to_owned).to_vec(),
            },
        },
    );
    BTreeMap::from([
        (builtin::DROPPED.to_owned(), dropped),
        (
            builtin::INSTALL.to_owned(),
            plain("The tool was installed (once per install)"),
        ),
        (builtin::ACTIVE.to_owned(), active),
        (
            builtin::SETUP_STARTED.to_owned(),
            plain("Setup started (once per install)"),
        ),
        (
            builtin::SETUP_COMPLETED.to_owned(),
            plain("Setup completed (once per install)"),
        ),
    ])
}

/// Formats a bucket bound: integers without a fraction, others as Rust prints them.
fn fmt_bound(b: f64) -> String {
    if b.fract() == 0.0 && b.abs() < 1e15 {
        format!("{}", b as i64)
    } else {
        format!("{b}")
    }
}

/// The bucket labels for `bounds`: `<b0`, `b0..b1`, ..., `>=bn`.
pub fn bucket_labels(bounds: &[f64]) -> Vec<String> {
    let mut labels = Vec::with_capacity(bounds.len() + 1);
    if let (Some(first), Some(last)) = (bounds.first(), bounds.last()) {
        labels.push(format!("<{}", fmt_bound(*first)));
        for w in bounds.windows(2) {
            labels.push(format!("{}..{}", fmt_bound(w[0]), fmt_bound(w[1])));
        }
        labels.push(format!(">={}", fmt_bound(*last)));
    }
    labels
}

/// The label of the bucket `value` falls in: buckets are half-open, `[b(i-1), b(i))`.
pub fn bucket_label(bounds: &[f64], value: f64) -> String {
    let i = bounds.partition_point(|b| *b <= value);
    if i == 0 {
        format!("<{}", fmt_bound(bounds.first().copied().unwrap_or(0.0)))
    } else if i == bounds.len() {
        format!(">={}", fmt_bound(bounds[i - 1]))
    } else {
        format!("{}..{}", fmt_bound(bounds[i - 1]), fmt_bound(bounds[i]))
    }
}

/// The words a version's pre-release suffix may be: `1.2.3-rc.1`,
/// `2.0.0-beta2`, `1.0.0-dev`. A closed list, so the suffix cannot carry a
/// branch name, a user name or any other free text.
pub const PRE_RELEASE_TAGS: [&str; 8] = [
    "alpha", "beta", "rc", "pre", "dev", "preview", "nightly", "canary",
];

/// A version's numeric components, or `None` if `v` is not
/// `N[.N[.N]][-tag]`, where the tag is one of [`PRE_RELEASE_TAGS`]
/// optionally followed by a number of at most four digits (`rc1`, `rc.1`).
fn parse_version(v: &str) -> Option<Vec<&str>> {
    let (core, suffix) = v.split_once('-').map_or((v, None), |(c, s)| (c, Some(s)));
    if suffix.is_some_and(|s| !is_pre_release_tag(s)) {
        return None;
    }
    version_core(core)
}

/// The numeric components of `N[.N[.N]]`.
fn version_core(core: &str) -> Option<Vec<&str>> {
    if !policy::is_token(core) {
        return None;
    }
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit());
    (parts.len() <= 3 && parts.iter().all(numeric)).then_some(parts)
}

fn is_pre_release_tag(suffix: &str) -> bool {
    let word_end = suffix
        .bytes()
        .position(|b| !b.is_ascii_lowercase())
        .unwrap_or(suffix.len());
    let (word, rest) = suffix.split_at(word_end);
    let number = rest.strip_prefix('.').unwrap_or(rest);
    PRE_RELEASE_TAGS.contains(&word)
        && (rest.is_empty()
            || (!number.is_empty()
                && number.len() <= 4
                && number.bytes().all(|b| b.is_ascii_digit())))
}

/// Coarsens a version to `major.minor`, as `aggregate` requires. `None` if
/// it is not a version. Any token suffix is accepted here, since it is
/// dropped.
pub fn coarsen_version(v: &str) -> Option<String> {
    if !policy::is_token(v) {
        return None;
    }
    let parts = version_core(v.split_once('-').map_or(v, |(core, _)| core))?;
    Some(format!(
        "{}.{}",
        parts[0],
        parts.get(1).copied().unwrap_or("0")
    ))
}

impl PropSpec {
    /// Encodes what the host passed into the value sent at `tier`: numbers
    /// become bucket labels and versions are coarsened at `aggregate`.
    pub fn encode(&self, input: &PropInput, tier: Tier) -> Result<PropValue, String> {
        match (&self.kind, input) {
            (PropKind::Bool, PropInput::Bool(b)) => Ok(PropValue::Bool(*b)),
            (PropKind::Enum { values }, PropInput::Text(t)) if values.contains(t) => {
                Ok(PropValue::Token(t.clone()))
            }
            (PropKind::Enum { .. }, PropInput::Text(_)) => {
                Err("value is not one of the declared enum values".into())
            }
            (PropKind::Bucket { bounds, .. }, PropInput::Number(n)) if n.is_finite() => {
                Ok(PropValue::Token(bucket_label(bounds, *n)))
            }
            (PropKind::Version, PropInput::Text(t)) => {
                let v = if tier == Tier::Aggregate {
                    coarsen_version(t)
                } else {
                    parse_version(t).map(|_| t.clone())
                };
                v.map(PropValue::Token)
                    .ok_or_else(|| "value is not a version".into())
            }
            _ => Err(format!("wrong value type for a {} prop", self.kind.name())),
        }
    }

    /// Checks an encoded value as the collector receives it at `tier`.
    pub fn check(&self, value: &PropValue, tier: Tier) -> Result<(), String> {
        let ok = match (&self.kind, value) {
            (PropKind::Bool, PropValue::Bool(_)) => true,
            (PropKind::Enum { values }, PropValue::Token(t)) => values.contains(t),
            (PropKind::Bucket { bounds, .. }, PropValue::Token(t)) => {
                bucket_labels(bounds).contains(t)
            }
            (PropKind::Version, PropValue::Token(t)) => {
                if tier == Tier::Aggregate {
                    coarsen_version(t).as_deref() == Some(t.as_str())
                } else {
                    parse_version(t).is_some()
                }
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(match &self.kind {
                PropKind::Version if tier == Tier::Aggregate => {
                    "a version prop must be coarsened to major.minor at aggregate".to_owned()
                }
                kind => format!("value is not a valid {} value", kind.name()),
            })
        }
    }
}

impl PropKind {
    /// The kind's name as written in the manifest.
    pub const fn name(&self) -> &'static str {
        match self {
            PropKind::Enum { .. } => "enum",
            PropKind::Bool => "bool",
            PropKind::Bucket { .. } => "bucket",
            PropKind::Version => "version",
        }
    }
}

impl fmt::Display for PropKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
