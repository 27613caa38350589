//! Integration tests of the collector: handlers in-process, a real server on
//! 127.0.0.1:0, and real collector processes for crash and privacy checks.
//! Every test uses real SQLite files in its own temporary directory, and
//! PostgreSQL where the machine has it.

mod backends;
mod breakdowns;
mod browser;
mod canary;
mod cardinality;
mod cli;
mod common;
mod connections;
mod crash;
mod dashboard;
mod deletion;
mod differential;
mod disk_full;
mod disk_full_postgres;
mod handlers;
mod hardening;
mod idempotency;
mod multi_collector;
mod panic;
mod public;
mod retention;
mod server;
mod skew;
