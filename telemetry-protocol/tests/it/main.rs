//! Integration tests for telemetry-protocol.

mod manifest;
