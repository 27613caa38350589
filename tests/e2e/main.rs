//! End-to-end tests: the real `telemetry-collector` binary and real `demo-cli`
//! processes, each user in an isolated home folder.

mod consent;
mod delivery;
mod tiers;
