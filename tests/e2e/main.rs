//! End-to-end tests: the real `telemetry-collector` binary and real `demo-cli`
//! processes, each user in an isolated home folder, and the README's
//! quickstart built as a crate of its own.

mod compat;
mod consent;
mod delivery;
mod hook_host;
mod readme;
mod testing_guard;
mod tiers;
mod transports;
