//! Benchmark tools for the telemetry toolkit (issue 8): the ingest load
//! generator, the client wall-time overhead harness, the raw-SQLite baseline,
//! the crash drill and the stats-latency benchmark.
//!
//! Both tools only ever talk to loopback addresses and bound every loop by a
//! count *and* a time limit, so `scripts/bench.sh` can promise to finish in
//! minutes on a 2-core machine whatever the thing under test does.
//!
//! # Layout
//!
//! - [`payload`]: builds valid protocol-v1 [`IngestPayload`]s with unique ids.
//! - [`ingest`]: the load generator: concurrent POSTs to `/v1/ingest`, with
//!   events/s, requests/s, latency percentiles and non-2xx counts.
//! - [`endpoint`]: the fake endpoints the overhead harness points a CLI at: a
//!   stub answering 200, a refused port, and two kinds of blackhole.
//! - [`overhead`]: runs two commands alternately, many times, and reports the
//!   median wall time of each and their median difference.
//! - [`linger`]: finds the processes (children included) a run left behind.
//! - [`raw`]: the raw-SQLite baseline: the collector's rows written directly.
//! - [`rawpg`]: the same for PostgreSQL: the PostgreSQL collector's rows
//!   written straight through `tokio-postgres` in batched transactions.
//! - [`stats`]: medians and percentiles.
//! - [`crash`]: the crash drill: SIGKILLs a collector under load, restarts
//!   it, and checks nothing acknowledged is lost or counted twice.
//! - [`statsload`]: fills a collector database, through the collector's own
//!   store, with a deterministic history of installs and their events.
//! - [`statsquery`]: times the collector's stats path, each of its SQL parts
//!   and the naive `GROUP BY` over raw events, with their query plans.
//! - [`statsbench`]: the stats-latency benchmark: load or reuse, time, report.
//! - [`faultproxy`]: a loopback HTTP proxy that injects faults in phases.
//! - `fleet` (feature `drill`): the fleet drill: hundreds of real client
//!   processes over simulated days behind the fault proxy, checked against
//!   ground truth.
//!
//! The binaries `loadgen`, `overhead`, `rawsqlite`, `rawpostgres`, `crashdrill`,
//! `statsbench` and `fleetdrill` are thin command-line wrappers; `drillhost`
//! is the fleet drill's host CLI. `fleetdrill` and `drillhost` need the
//! `drill` feature, the only one that turns on telemetry-client's test knobs.
//!
//! [`IngestPayload`]: telemetry_protocol::IngestPayload

pub mod cli;
pub mod crash;
pub mod endpoint;
pub mod faultproxy;
#[cfg(feature = "drill")]
pub mod fleet;
pub mod ingest;
pub mod linger;
pub mod overhead;
pub mod payload;
pub mod raw;
pub mod rawpg;
pub mod stats;
pub mod statsbench;
pub mod statsload;
pub mod statsquery;

/// Everything that can stop a benchmark tool before it has a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target URL could not be parsed.
    #[error("invalid url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The target is not a loopback address; the tools never leave the machine.
    #[error("`{0}` is not a loopback address; benchmarks only target 127.0.0.1, ::1 or localhost")]
    NotLoopback(String),
    /// An argument is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A socket, process or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The collector's store refused or failed an operation.
    #[error("store: {0}")]
    Store(String),
    /// A query on the collector's database failed.
    #[error("database: {0}")]
    Database(String),
    /// The HTTP client could not be built.
    #[error("building the http client: {0}")]
    Client(#[source] reqwest::Error),
    /// The crash drill could not run (the collector did not start, or stopped
    /// answering after a restart).
    #[error("crash drill: {0}")]
    Drill(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
