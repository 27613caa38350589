//! Wire protocol v1: the JSON bodies of `POST /v1/ingest` and `POST /v1/delete`,
//! their answers, and the error body every failure carries.
//!
//! One payload type serves every tier. Its tier-specific fields are optional
//! so that a payload claiming `aggregate` but carrying an `install_id` can still
//! be parsed and then *rejected with a reason* by [`crate::policy::validate`],
//! instead of failing as unreadable.
//!
//! Fields this version of the protocol does not define, at the top level, in
//! `context` or in an item, are ignored, so that a newer client can add
//! optional fields without its payloads being refused by an older collector.
//! An ignored field is never kept: it is not even deserialized into a value.
//! [`record_ignored`] lets the collector count them. Fields the protocol does
//! define stay held to their tier by [`crate::policy::validate`], so
//! forward compatibility never lets an `install_id` in at `aggregate`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::policy::Violation;
use crate::tier::Tier;
use crate::time::{Day, Timestamp};

/// The protocol version this crate speaks; it is also the path prefix.
pub const PROTOCOL_VERSION: u32 = 1;
/// Where clients send [`IngestPayload`]s.
pub const INGEST_PATH: &str = "/v1/ingest";
/// Where clients send [`DeleteRequest`]s.
pub const DELETE_PATH: &str = "/v1/delete";
/// The version of the toolkit that built this crate, sent as [`ClientContext::toolkit_version`].
pub const TOOLKIT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Event or counter properties: a prop name and its already-encoded value.
///
/// A `BTreeMap` keeps the keys sorted, so equal props serialize identically and
/// can be used as a counter key on both sides.
pub type Props = BTreeMap<String, PropValue>;

/// The body of `POST /v1/ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "WirePayload")]
pub struct IngestPayload {
    /// The project (tool) name, as declared in its manifest.
    pub project: String,
    /// The tier the client claims; the collector holds every other field to it.
    pub tier: Tier,
    /// What the client is running on; coarse by construction.
    pub context: ClientContext,
    /// `aggregate` only: a one-time random id that makes retries idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<Uuid>,
    /// `aggregate` only: daily counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Vec<Counter>>,
    /// `anonymous` and `full`: the random, resettable install id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_id: Option<Uuid>,
    /// `anonymous` and `full`: individual events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
    /// `full` only: the identity fields the user typed in, limited to those the manifest declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<BTreeMap<String, String>>,
}

/// What every payload says about the client, at every tier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "WireContext")]
pub struct ClientContext {
    /// The host tool's version.
    pub tool_version: String,
    /// The OS family, as Rust names it (`linux`, `macos`, `windows`, ...).
    pub os: String,
    /// The CPU architecture, as Rust names it (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// The version of this toolkit.
    pub toolkit_version: String,
}

impl ClientContext {
    /// The context of the running process for a tool at `tool_version`.
    pub fn current(tool_version: impl Into<String>) -> ClientContext {
        ClientContext {
            tool_version: tool_version.into(),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            toolkit_version: TOOLKIT_VERSION.to_owned(),
        }
    }
}

/// One `aggregate` counter: how many times an event with these props happened on a UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireCounter")]
pub struct Counter {
    /// The UTC day the events happened on.
    pub day: Day,
    /// The event name.
    pub event: String,
    /// The event's props, encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub props: Props,
    /// How many times it happened; at least 1.
    pub count: u64,
}

/// One `anonymous` or `full` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireEvent")]
pub struct Event {
    /// A random id, unique per event, that makes retries idempotent.
    pub id: Uuid,
    /// The event name.
    pub name: String,
    /// When it happened, in UTC.
    pub timestamp: Timestamp,
    /// The event's props, encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub props: Props,
}

/// An encoded prop value. Free text is not a prop kind, so a value is either a
/// boolean or a short token (an enum value, a bucket label or a version).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum PropValue {
    /// A `bool` prop.
    Bool(bool),
    /// An `enum` value, a `bucket` label or a `version`.
    Token(String),
}

/// By hand rather than `#[serde(untagged)]`, which buffers every value and
/// builds (and formats) an error for each variant it tries: a string prop
/// cost a failed `bool` attempt, a noticeable share of ingest time.
impl<'de> Deserialize<'de> for PropValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PropValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean or a short token string")
            }
            fn visit_bool<E>(self, b: bool) -> Result<PropValue, E> {
                Ok(PropValue::Bool(b))
            }
            fn visit_str<E>(self, s: &str) -> Result<PropValue, E> {
                Ok(PropValue::Token(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<PropValue, E> {
                Ok(PropValue::Token(s))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl fmt::Display for PropValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropValue::Bool(b) => write!(f, "{b}"),
            PropValue::Token(t) => f.write_str(t),
        }
    }
}

impl From<bool> for PropValue {
    fn from(b: bool) -> Self {
        PropValue::Bool(b)
    }
}

impl From<&str> for PropValue {
    fn from(s: &str) -> Self {
        PropValue::Token(s.to_owned())
    }
}

impl From<String> for PropValue {
    fn from(s: String) -> Self {
        PropValue::Token(s)
    }
}

/// Most refused items an [`IngestResponse`] lists one by one; the rest are
/// only counted, so that an answer never grows past a few KiB.
pub const MAX_REFUSED_ITEMS: usize = 20;
/// Most distinct ignored field names an [`IngestResponse`] (and
/// [`record_ignored`]) keeps; the rest are only counted.
pub const MAX_IGNORED_NAMES: usize = 20;

/// The body of a `2xx` answer to `POST /v1/ingest`.
///
/// Every field after `duplicates` is `#[serde(default)]`: an older collector
/// does not send them, and a client must not need them. A newer collector may
/// add reasons and fields; they are plain strings so that an older client
/// still reads the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Events or counters committed by this request.
    pub accepted: u64,
    /// Events or counters that had been committed before (a retry) and were not counted again.
    pub duplicates: u64,
    /// Events or counters refused on their own, for example because the
    /// collector's manifest does not declare them, or because their time is
    /// out of range. Retrying them cannot help. Identity fields dropped on
    /// their own count here too.
    ///
    /// Collectors before toolkit 0.2 never refuse single items and do not send
    /// this field, so it defaults to 0; it is left out when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused: u64,
    /// `refused`, by reason (a [`crate::policy::ViolationCode`] in snake case,
    /// such as `unknown_event` or `time_in_future`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused_by_reason: BTreeMap<String, u64>,
    /// The first [`MAX_REFUSED_ITEMS`] refused items, each named by its path
    /// in the payload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_items: Vec<RefusedItem>,
    /// Set when the payload's tier was above the project's `max_tier` and the
    /// data was stored at this tier instead (see docs/protocol.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgraded_to: Option<Tier>,
    /// How many fields this collector does not know were ignored (never stored).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ignored: u64,
    /// The first [`MAX_IGNORED_NAMES`] distinct ignored fields, by path, such
    /// as `events[].source` or `context.shell`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One item an ingest answer refused on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedItem {
    /// Where in the payload, e.g. `events[3]` or `counters[0].props.name`.
    pub path: String,
    /// Why, as a stable snake-case code (see [`IngestResponse::refused_by_reason`]).
    pub reason: String,
    /// A human-readable explanation, written by the collector.
    pub message: String,
}

/// The body of `POST /v1/delete`: forget everything stored under this install id.
///
/// Unknown fields are ignored here too, so a newer client's deletion request
/// is never refused by an older collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// The project the install belongs to.
    pub project: String,
    /// The install id whose rows are deleted.
    pub install_id: Uuid,
}

/// The JSON body of every error answer: `{"error": "<stable_code>", "message": "<human text>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code.
    pub error: ErrorCode,
    /// A human-readable explanation. It never echoes secrets or raw input.
    pub message: String,
    /// For `policy_violation`: each offending item, named by its path in the payload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

/// The stable codes carried by [`ErrorBody::error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the body is not valid JSON of the expected shape.
    MalformedPayload,
    /// 413: the body is over the size limit.
    PayloadTooLarge,
    /// 415: the content type is not `application/json`.
    UnsupportedMediaType,
    /// 422: the payload breaks the tier policy or the project's manifest.
    PolicyViolation,
    /// 429: the per-source rate limit was hit; see `Retry-After`.
    RateLimited,
    /// 503: the collector cannot take writes now; see `Retry-After`.
    Overloaded,
    /// 401: an admin endpoint was called without a valid token.
    Unauthorized,
    /// 404: no such route or project.
    NotFound,
    /// 500: something failed inside the collector.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedPayload => "malformed_payload",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PolicyViolation => "policy_violation",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fields a payload carried that this version of the protocol does not define.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredFields {
    /// How many were ignored in all.
    pub count: u64,
    /// The first [`MAX_IGNORED_NAMES`] distinct ones, by path
    /// (`source`, `context.shell`, `events[].source`, `counters[].unit`),
    /// made printable with [`crate::policy::printable`], each with how often
    /// it occurred. `count` minus their sum occurred under other names.
    pub names: Vec<(String, u64)>,
}

thread_local! {
    /// Where [`record_ignored`] collects what the `Wire*` types ignore while
    /// it runs. Deserializing is synchronous, so one thread sees one payload.
    static IGNORED: RefCell<Option<IgnoredFields>> = const { RefCell::new(None) };
}

/// Runs `parse` (a deserialization of an [`IngestPayload`]) and returns what
/// it returned with the fields it ignored. Outside this call, unknown fields
/// are ignored without being counted.
pub fn record_ignored<T>(parse: impl FnOnce() -> T) -> (T, IgnoredFields) {
    let outer = IGNORED.with(|cell| cell.replace(Some(IgnoredFields::default())));
    let result = parse();
    let ignored = IGNORED.with(|cell| cell.replace(outer)).unwrap_or_default();
    (result, ignored)
}

fn note_ignored(place: &str, keys: Unknown) {
    if keys.0.is_empty() {
        return;
    }
    IGNORED.with(|cell| {
        if let Some(ignored) = cell.borrow_mut().as_mut() {
            for key in keys.0 {
                ignored.count += 1;
                if key.is_empty() {
                    continue;
                }
                let name = format!("{place}{}", crate::policy::printable(&key));
                if let Some((_, n)) = ignored.names.iter_mut().find(|(n, _)| *n == name) {
                    *n += 1;
                } else if ignored.names.len() < MAX_IGNORED_NAMES {
                    ignored.names.push((name, 1));
                }
            }
        }
    });
}

/// The names of the unknown fields of one object, their values skipped
/// unparsed. Used with `#[serde(flatten)]`, which hands it only the keys no
/// other field took; for a payload without unknown fields it stays empty and
/// allocates nothing.
#[derive(Default)]
struct Unknown(Vec<String>);

impl<'de> Deserialize<'de> for Unknown {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Unknown;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Unknown, A::Error> {
                let mut keys = Vec::new();
                // Bounded by the body limit; only the first few are kept anyway.
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    // Past the first few only the number counts; an empty
                    // name (never a JSON key we keep) stands for one.
                    if keys.len() <= MAX_IGNORED_NAMES {
                        keys.push(key.into_owned());
                    } else {
                        keys.push(String::new());
                    }
                }
                Ok(Unknown(keys))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

// The `Wire*` types are what the JSON is read into: the public types' fields
// plus the unknown ones, which are counted and dropped in the conversion.

#[derive(Deserialize)]
struct WirePayload {
    project: String,
    tier: Tier,
    context: ClientContext,
    #[serde(default)]
    report_id: Option<Uuid>,
    #[serde(default)]
    counters: Option<Vec<Counter>>,
    #[serde(default)]
    install_id: Option<Uuid>,
    #[serde(default)]
    events: Option<Vec<Event>>,
    #[serde(default)]
    identity: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl From<WirePayload> for IngestPayload {
    fn from(w: WirePayload) -> Self {
        note_ignored("", w.unknown);
        IngestPayload {
            project: w.project,
            tier: w.tier,
            context: w.context,
            report_id: w.report_id,
            counters: w.counters,
            install_id: w.install_id,
            events: w.events,
            identity: w.identity,
        }
    }
}

#[derive(Deserialize)]
struct WireContext {
    tool_version: String,
    os: String,
    arch: String,
    toolkit_version: String,
    #[serde(flatten)]
    unknown: Unknown,
}

impl From<WireContext> for ClientContext {
    fn from(w: WireContext) -> Self {
        note_ignored("context.", w.unknown);
        ClientContext {
            tool_version: w.tool_version,
            os: w.os,
            arch: w.arch,
            toolkit_version: w.toolkit_version,
        }
    }
}

#[derive(Deserialize)]
struct WireCounter {
    day: Day,
    event: String,
    #[serde(default)]
    props: Props,
    count: u64,
    #[serde(flatten)]
    unknown: Unknown,
}

impl From<WireCounter> for Counter {
    fn from(w: WireCounter) -> Self {
        note_ignored("counters[].", w.unknown);
        Counter {
            day: w.day,
            event: w.event,
            props: w.props,
            count: w.count,
        }
    }
}

#[derive(Deserialize)]
struct WireEvent {
    id: Uuid,
    name: String,
    timestamp: Timestamp,
    #[serde(default)]
    props: Props,
    #[serde(flatten)]
    unknown: Unknown,
}

impl From<WireEvent> for Event {
    fn from(w: WireEvent) -> Self {
        note_ignored("events[].", w.unknown);
        Event {
            id: w.id,
            name: w.name,
            timestamp: w.timestamp,
            props: w.props,
        }
    }
}
