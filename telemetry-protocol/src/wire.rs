//! Wire protocol v1: the JSON bodies of `POST /v1/ingest` and `POST /v1/delete`,
//! their answers, and the error body every failure carries.
//!
//! One payload type serves every tier. Its tier-specific fields are optional
//! so that a payload claiming `aggregate` but carrying an `install_id` can still
//! be parsed and then *rejected with a reason* by [`crate::policy::validate`],
//! instead of failing as unreadable. Unknown fields are refused outright
//! (`deny_unknown_fields`): a field the protocol does not define has no tier,
//! so it is never allowed.

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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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

/// The body of a `2xx` answer to `POST /v1/ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Events or counters committed by this request.
    pub accepted: u64,
    /// Events or counters that had been committed before (a retry) and were not counted again.
    pub duplicates: u64,
    /// Events or counters refused on their own, for example because the
    /// collector's manifest does not declare them. Retrying them cannot help.
    ///
    /// Collectors before toolkit 0.2 never refuse single items and do not send
    /// this field, so it defaults to 0; it is left out when 0, so that an
    /// answer with nothing refused reads the same as an older collector's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The body of `POST /v1/delete`: forget everything stored under this install id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
