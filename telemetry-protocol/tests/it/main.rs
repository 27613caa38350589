//! Integration tests for telemetry-protocol: the tier policy as a table, a
//! property test of that policy, serde round-trips, manifest errors, and the
//! examples in docs/protocol.md.

mod docs;
mod manifest;
mod policy;
mod privacy;
mod roundtrip;
mod support;
