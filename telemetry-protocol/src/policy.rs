//! The tier policy: the one table that says which payload fields each tier may
//! carry, and [`validate`], which both the client (before sending) and the
//! collector (at ingest) call.
//!
//! [`validate`] checks everything that holds for every project: the field
//! table, the shape of names and values, and size limits. What a particular
//! project declares (its events, props and identity fields) is checked on top
//! of this by [`crate::manifest::Manifest::validate_payload`].

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::tier::Tier;
use crate::wire::{IngestPayload, PropValue, Props};

/// Size limits every payload must respect, whatever its project.
pub mod limits {
    /// Most events in one payload.
    pub const MAX_EVENTS: usize = 1000;
    /// Most counters in one payload.
    pub const MAX_COUNTERS: usize = 1000;
    /// Most props on one event or counter.
    pub const MAX_PROPS: usize = 16;
    /// Longest event, prop, identity-field or project name, in bytes.
    pub const MAX_NAME_LEN: usize = 64;
    /// Longest token prop value, in bytes.
    pub const MAX_TOKEN_LEN: usize = 64;
    /// Longest context value (versions, OS, arch), in bytes.
    pub const MAX_CONTEXT_LEN: usize = 64;
    /// Most identity fields in one payload.
    pub const MAX_IDENTITY_FIELDS: usize = 16;
    /// Longest identity value, in characters, when the manifest sets no cap of its own.
    pub const MAX_IDENTITY_VALUE_LEN: usize = 1024;
    /// Largest count one counter may carry. One install cannot plausibly run a
    /// command more often than this in a day; a larger number is an attempt to
    /// skew the stats.
    pub const MAX_COUNT: u64 = 1_000_000;
    /// How far ahead of the collector's clock an event's time or a counter's
    /// day may be, in days. Clocks drift and a UTC day starts at different
    /// local times, but not by more than this; anything later is refused, so
    /// the collector never stores a time that no purge would ever reach.
    pub const MAX_DAYS_AHEAD: i32 = 1;
}

/// A top-level payload field that the tier policy governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// `project`.
    Project,
    /// `tier`.
    Tier,
    /// `context`: tool version, OS, arch, toolkit version.
    Context,
    /// `report_id`.
    ReportId,
    /// `counters`.
    Counters,
    /// `install_id`.
    InstallId,
    /// `events`.
    Events,
    /// `identity`.
    Identity,
}

impl Field {
    /// Every governed field, in wire order.
    pub const ALL: [Field; 8] = [
        Field::Project,
        Field::Tier,
        Field::Context,
        Field::ReportId,
        Field::Counters,
        Field::InstallId,
        Field::Events,
        Field::Identity,
    ];

    /// The field's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Field::Project => "project",
            Field::Tier => "tier",
            Field::Context => "context",
            Field::ReportId => "report_id",
            Field::Counters => "counters",
            Field::InstallId => "install_id",
            Field::Events => "events",
            Field::Identity => "identity",
        }
    }

    /// Whether `payload` carries this field.
    pub fn is_present(self, payload: &IngestPayload) -> bool {
        match self {
            Field::Project | Field::Tier | Field::Context => true,
            Field::ReportId => payload.report_id.is_some(),
            Field::Counters => payload.counters.is_some(),
            Field::InstallId => payload.install_id.is_some(),
            Field::Events => payload.events.is_some(),
            Field::Identity => payload.identity.is_some(),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy says about one field at one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The field must be present.
    Required,
    /// The field may be present.
    Optional,
    /// The field must be absent.
    Forbidden,
}

/// **The tier policy.** Which fields a payload at `tier` may carry.
///
/// This is the single source of truth; the client, the collector, PRIVACY.md's
/// table (through a test) and the docs all derive from it.
pub const fn rule(tier: Tier, field: Field) -> Rule {
    use Field as F;
    use Rule::{Forbidden as No, Optional as Opt, Required as Req};
    match (tier, field) {
        // Nothing at all is sent at `off`; a payload claiming it is refused whole.
        (Tier::Off, _) => No,
        (_, F::Project | F::Tier | F::Context) => Req,
        (Tier::Aggregate, F::ReportId | F::Counters) => Req,
        (Tier::Aggregate, F::InstallId | F::Events | F::Identity) => No,
        (Tier::Anonymous, F::InstallId | F::Events) => Req,
        (Tier::Anonymous, F::ReportId | F::Counters | F::Identity) => No,
        (Tier::Full, F::InstallId | F::Events) => Req,
        (Tier::Full, F::Identity) => Opt,
        (Tier::Full, F::ReportId | F::Counters) => No,
    }
}

/// The lowest tier at which `field` may appear, or `None` if no tier allows it.
pub fn min_tier(field: Field) -> Option<Tier> {
    Tier::ALL
        .into_iter()
        .find(|tier| rule(*tier, field) != Rule::Forbidden)
}

/// The stable kind of a [`Violation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ViolationCode {
    /// The payload claims tier `off`, which sends nothing.
    TierOff,
    /// A field the claimed tier does not allow.
    FieldNotAllowed,
    /// A field the claimed tier requires is missing.
    MissingField,
    /// A name (project, event, prop, identity field) is not a lowercase identifier.
    InvalidName,
    /// A prop value, context value or count is malformed or out of range.
    InvalidValue,
    /// Too many items, or a value too long.
    TooLarge,
    /// The same event id, or the same counter key, appears twice in one payload.
    Duplicate,
    /// The payload names another project than the one it was checked against.
    WrongProject,
    /// The claimed tier is above the project's `max_tier`.
    TierAboveMax,
    /// The event is not declared in the manifest.
    UnknownEvent,
    /// The event's `min_tier` is above the claimed tier.
    EventAboveTier,
    /// The prop is not declared for this event.
    UnknownProp,
    /// The identity field is not declared in the manifest.
    UnknownIdentityField,
    /// An event's time or a counter's day is more than
    /// [`limits::MAX_DAYS_AHEAD`] ahead of the collector's clock. Refused per item.
    TimeInFuture,
    /// An event is older than the project's raw-event retention, or a counter's
    /// day is older than the window in which report ids are remembered: the
    /// collector could no longer recognise its replay. Refused per item.
    TimeTooOld,
}

impl ViolationCode {
    /// The code as it appears on the wire, e.g. `unknown_event`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ViolationCode::TierOff => "tier_off",
            ViolationCode::FieldNotAllowed => "field_not_allowed",
            ViolationCode::MissingField => "missing_field",
            ViolationCode::InvalidName => "invalid_name",
            ViolationCode::InvalidValue => "invalid_value",
            ViolationCode::TooLarge => "too_large",
            ViolationCode::Duplicate => "duplicate",
            ViolationCode::WrongProject => "wrong_project",
            ViolationCode::TierAboveMax => "tier_above_max",
            ViolationCode::UnknownEvent => "unknown_event",
            ViolationCode::EventAboveTier => "event_above_tier",
            ViolationCode::UnknownProp => "unknown_prop",
            ViolationCode::UnknownIdentityField => "unknown_identity_field",
            ViolationCode::TimeInFuture => "time_in_future",
            ViolationCode::TimeTooOld => "time_too_old",
        }
    }
}

impl fmt::Display for ViolationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a payload was refused, naming the offending item by its path in
/// the payload (for example `events[3].props.os`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Where in the payload, e.g. `install_id` or `counters[0].event`.
    pub path: String,
    /// What kind of violation.
    pub code: ViolationCode,
    /// A human-readable explanation.
    pub message: String,
}

impl Violation {
    /// A violation at `path`.
    pub fn new(path: impl Into<String>, code: ViolationCode, message: impl Into<String>) -> Self {
        Violation {
            path: path.into(),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every reason a payload was refused. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl Violations {
    /// `Ok` if `list` is empty, otherwise the violations.
    pub fn check(list: Vec<Violation>) -> Result<(), Violations> {
        if list.is_empty() {
            Ok(())
        } else {
            Err(Violations(list))
        }
    }
}

/// Whether `name` is a lowercase identifier: `[a-z][a-z0-9_]*`, at most
/// [`limits::MAX_NAME_LEN`] bytes. Event, prop and identity-field names use it.
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= limits::MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `name` is a valid project name: `[a-z0-9][a-z0-9_-]*`, at most
/// [`limits::MAX_NAME_LEN`] bytes, like a crate or package name.
pub fn is_project_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= limits::MAX_NAME_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `value` is a valid token prop value: non-empty, at most
/// [`limits::MAX_TOKEN_LEN`] bytes, and drawn from `[A-Za-z0-9._+<>=-]`.
///
/// The narrow alphabet is deliberate. It admits enum values, bucket labels such
/// as `>=1000` and versions such as `1.2.3-rc.1`, and it refuses spaces, `@`,
/// `/` and quotes, so an e-mail address, a path or a sentence cannot travel as a
/// prop even in open mode where no manifest is loaded.
pub fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= limits::MAX_TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+<>=_-".contains(&b))
}

/// Whether `value` is fit for a context field: a token, or `unknown`.
fn is_context_value(value: &str) -> bool {
    value.len() <= limits::MAX_CONTEXT_LEN && is_token(value)
}

/// **Validates a payload against the tier policy** and the limits that hold for
/// every project. Returns every violation found, not just the first.
pub fn validate(payload: &IngestPayload) -> Result<(), Violations> {
    let mut out = Vec::new();
    let tier = payload.tier;
    if tier == Tier::Off {
        out.push(Violation::new(
            "tier",
            ViolationCode::TierOff,
            "tier `off` sends nothing; a payload at `off` is never accepted",
        ));
        return Violations::check(out);
    }
    for field in Field::ALL {
        match (rule(tier, field), field.is_present(payload)) {
            (Rule::Forbidden, true) => out.push(Violation::new(
                field.as_str(),
                ViolationCode::FieldNotAllowed,
                match min_tier(field) {
                    Some(min) if min > tier => {
                        format!("`{field}` needs tier `{min}` or above; this payload is `{tier}`")
                    }
                    _ => format!("`{field}` is not allowed at tier `{tier}`"),
                },
            )),
            (Rule::Required, false) => out.push(Violation::new(
                field.as_str(),
                ViolationCode::MissingField,
                format!("`{field}` is required at tier `{tier}`"),
            )),
            _ => {}
        }
    }
    check_shapes(payload, &mut out);
    Violations::check(out)
}

/// The project-independent checks on names, values and sizes.
fn check_shapes(payload: &IngestPayload, out: &mut Vec<Violation>) {
    if !is_project_name(&payload.project) {
        out.push(Violation::new(
            "project",
            ViolationCode::InvalidName,
            "project must match [a-z0-9][a-z0-9_-]* and be at most 64 bytes",
        ));
    }
    let ctx = &payload.context;
    for (name, value) in [
        ("tool_version", &ctx.tool_version),
        ("os", &ctx.os),
        ("arch", &ctx.arch),
        ("toolkit_version", &ctx.toolkit_version),
    ] {
        if !is_context_value(value) {
            out.push(Violation::new(
                format!("context.{name}"),
                ViolationCode::InvalidValue,
                "context values must be short tokens of [A-Za-z0-9._+<>=-]",
            ));
        }
    }
    if let Some(counters) = &payload.counters {
        if counters.is_empty() || counters.len() > limits::MAX_COUNTERS {
            out.push(Violation::new(
                "counters",
                ViolationCode::TooLarge,
                format!("counters must hold 1 to {} items", limits::MAX_COUNTERS),
            ));
        }
        let mut keys = HashSet::new();
        for (i, c) in counters.iter().enumerate() {
            // Paths are formatted only for a violation: a valid payload of a
            // hundred counters would otherwise allocate hundreds of strings.
            let path = || format!("counters[{i}]");
            check_name(|| format!("{}.event", path()), &c.event, out);
            check_props(path, &c.props, out);
            if c.count == 0 || c.count > limits::MAX_COUNT {
                out.push(Violation::new(
                    format!("{}.count", path()),
                    ViolationCode::InvalidValue,
                    format!("count must be between 1 and {}", limits::MAX_COUNT),
                ));
            }
            if !keys.insert((c.day, &c.event, &c.props)) {
                out.push(Violation::new(
                    path(),
                    ViolationCode::Duplicate,
                    "the same day, event and props appear twice; sum them into one counter",
                ));
            }
        }
    }
    if let Some(events) = &payload.events {
        if events.is_empty() || events.len() > limits::MAX_EVENTS {
            out.push(Violation::new(
                "events",
                ViolationCode::TooLarge,
                format!("events must hold 1 to {} items", limits::MAX_EVENTS),
            ));
        }
        let mut ids = HashSet::new();
        for (i, e) in events.iter().enumerate() {
            let path = || format!("events[{i}]");
            check_name(|| format!("{}.name", path()), &e.name, out);
            check_props(path, &e.props, out);
            if !ids.insert(e.id) {
                out.push(Violation::new(
                    format!("{}.id", path()),
                    ViolationCode::Duplicate,
                    "event ids must be unique",
                ));
            }
        }
    }
    if let Some(identity) = &payload.identity {
        if identity.len() > limits::MAX_IDENTITY_FIELDS {
            out.push(Violation::new(
                "identity",
                ViolationCode::TooLarge,
                format!("at most {} identity fields", limits::MAX_IDENTITY_FIELDS),
            ));
        }
        for (key, value) in identity {
            let path = || format!("identity.{}", printable(key));
            check_name(path, key, out);
            if value.chars().count() > limits::MAX_IDENTITY_VALUE_LEN {
                out.push(Violation::new(
                    path(),
                    ViolationCode::TooLarge,
                    format!(
                        "identity values are at most {} characters",
                        limits::MAX_IDENTITY_VALUE_LEN
                    ),
                ));
            }
        }
    }
}

/// `path` names the field in a violation; it is only called for one.
fn check_name(path: impl Fn() -> String, name: &str, out: &mut Vec<Violation>) {
    if !is_identifier(name) {
        out.push(Violation::new(
            path(),
            ViolationCode::InvalidName,
            "names must match [a-z][a-z0-9_]* and be at most 64 bytes",
        ));
    }
}

fn check_props(path: impl Fn() -> String, props: &Props, out: &mut Vec<Violation>) {
    if props.len() > limits::MAX_PROPS {
        out.push(Violation::new(
            format!("{}.props", path()),
            ViolationCode::TooLarge,
            format!("at most {} props", limits::MAX_PROPS),
        ));
    }
    for (key, value) in props {
        let prop_path = || format!("{}.props.{}", path(), printable(key));
        check_name(prop_path, key, out);
        if let PropValue::Token(token) = value
            && !is_token(token)
        {
            out.push(Violation::new(
                prop_path(),
                ViolationCode::InvalidValue,
                "prop values must be booleans or short tokens of [A-Za-z0-9._+<>=-]; free text is not a prop kind",
            ));
        }
    }
}

/// A client-supplied key made safe to put in an error path: truncated and
/// stripped of anything but identifier characters, so an error message never
/// echoes raw hostile input.
pub fn printable(key: &str) -> String {
    let clean: String = key
        .chars()
        .take(limits::MAX_NAME_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if clean.is_empty() {
        "?".to_owned()
    } else {
        clean
    }
}
