//! Integration tests of the benchmark tools against real servers on
//! 127.0.0.1:0 and real processes.

mod cli;
mod fleet;
mod ingest;
mod overhead;
