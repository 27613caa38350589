//! Integration tests of telemetry-client: real HTTP on 127.0.0.1:0, real
//! files in isolated folders, and real processes (the `telemetry-client-probe`
//! binary) for concurrency, the detached uploader and kill -9.

#[cfg(feature = "cli")]
mod cli;
mod failures;
mod files;
mod http;
mod machine;
mod processes;
#[cfg(all(unix, feature = "cli"))]
mod pty;
mod support;
#[cfg(feature = "macros")]
mod typed;
