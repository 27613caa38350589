//! The shared language of the telemetry toolkit: consent tiers, wire types,
//! the tier policy and the event manifest.
//!
//! Both the client that CLIs embed and the self-hosted collector depend on this
//! crate and nothing else of each other, so what a tier may carry is decided in
//! exactly one place. It does no I/O and has no async dependency.
//!
//! # Layout
//!
//! - [`tier`]: [`Tier`], the ordered consent levels.
//! - [`wire`]: the JSON bodies of protocol v1 (`/v1/ingest`, `/v1/delete`, errors).
//! - [`policy`]: **the tier policy** ([`policy::rule`]) and [`policy::validate`].
//! - [`manifest`]: the `telemetry.toml` event manifest, prop encoding and checks.
//! - [`time`]: UTC days, ISO weeks and timestamps.
//! - `compiled` (hidden): the pre-validated manifest `telemetry-macros` embeds.

#[doc(hidden)]
pub mod compiled;
pub mod manifest;
pub mod policy;
pub mod tier;
pub mod time;
pub mod wire;

pub use manifest::{Manifest, ManifestError, PropInput};
pub use policy::{Violation, ViolationCode, Violations, validate};
pub use tier::{ParseTierError, Tier};
pub use time::{Day, IsoWeek, Timestamp};
pub use uuid::Uuid;
pub use wire::{
    ClientContext, Counter, DeleteRequest, ErrorBody, ErrorCode, Event, IgnoredFields,
    IngestPayload, IngestResponse, PropValue, Props, RefusedItem,
};
