//! A one-line host CLI for the client's transport tests and sizes. Its
//! features choose the client's transport and what the host links itself
//! (see Cargo.toml); the program is the same for all of them.
//!
//! Without arguments it does what the one-line peers do: print a greeting
//! and record one event; the detached uploader, a re-execution of this
//! binary, sends it. The test commands:
//! - `enable`: opt in at `aggregate`, as a user would.
//! - `flush`: send what is pending now, in this process.
//! - `status`: why the last attempt did not deliver, if it did not.
//! - `tls-check`: (own-rustls) a TLS round trip of the host's own, on
//!   loopback, with `ClientConfig::builder()`, the process-default
//!   provider that panics if rustls cannot pick one.
//! - `tls-check-and-flush`: both, in one process.
//! - `tls-front <upstream> <ca-file>`: (own-rustls) a TLS front for
//!   `collector.invalid` with a private CA, written to `<ca-file>`, that
//!   passes requests to the collector at `<upstream>`.
//!
//! `HOST_UPLOAD_INTERVAL_SECS` sets the upload interval, and
//! `HOST_NO_DETACH` keeps a run from starting the uploader.
//!
//! The endpoint comes from `TRANSPORT_HOST_TELEMETRY_ENDPOINT`, the
//! client's own override, which the detached uploader inherits.

// Printing is this program's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "own-rustls")]
mod tls;

use std::process::ExitCode;

// With `typed`, the manifest compiled into a typed API; the program still
// records through the string `track`, so both builds do the same work.
// The typed event functions go unused here.
#[cfg(feature = "typed")]
#[allow(dead_code)]
mod telemetry {
    telemetry_client::manifest!("telemetry.toml");
}

fn main() -> ExitCode {
    #[cfg(feature = "client")]
    let telemetry = {
        #[cfg(not(feature = "typed"))]
        let builder = telemetry_client::Telemetry::builder(include_str!("../telemetry.toml"));
        #[cfg(feature = "typed")]
        let builder = telemetry::builder();
        let mut builder = builder.tool_version(env!("CARGO_PKG_VERSION"));
        if let Some(secs) = std::env::var("HOST_UPLOAD_INTERVAL_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            builder = builder.upload_interval(std::time::Duration::from_secs(secs));
        }
        // The tests that flush in this process keep the run itself from
        // starting an uploader that would race them.
        if std::env::var_os("HOST_NO_DETACH").is_some() {
            builder = builder.detached_upload(false);
        }
        // First thing in `main`: in the detached uploader this sends and exits.
        builder.build()
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] => {
            println!("Hello, world!");
            own_work();
            #[cfg(feature = "client")]
            telemetry.track("command", [("name", "greet".into())]);
            Ok(())
        }
        #[cfg(feature = "client")]
        ["enable"] => telemetry
            .control()
            .and_then(|c| c.set_level(telemetry_client::Tier::Aggregate, Default::default()))
            .map_err(|e| e.to_string()),
        #[cfg(feature = "client")]
        ["flush"] => flush(&telemetry),
        #[cfg(feature = "client")]
        ["status"] => status(&telemetry),
        #[cfg(feature = "own-rustls")]
        ["tls-check"] => tls::check(),
        #[cfg(all(feature = "own-rustls", feature = "client"))]
        ["tls-check-and-flush"] => tls::check().and_then(|()| flush(&telemetry)),
        #[cfg(feature = "own-rustls")]
        ["tls-front", upstream, ca_file] => tls::front(upstream, ca_file),
        _ => Err(format!("unknown command {args:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transport-host: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the host does with the libraries it links itself, so that the
/// baseline's size holds their code: a GET with its own reqwest, a TLS
/// round trip with its own rustls, each when asked by a variable.
fn own_work() {
    #[cfg(feature = "own-reqwest")]
    if let Ok(url) = std::env::var("HOST_GET_URL") {
        match reqwest::blocking::get(&url) {
            Ok(r) => println!("GET {url}: {}", r.status()),
            Err(e) => eprintln!("GET {url}: {e}"),
        }
    }
    #[cfg(feature = "own-rustls")]
    if std::env::var_os("HOST_TLS_CHECK").is_some()
        && let Err(e) = tls::check()
    {
        eprintln!("tls: {e}");
    }
}

#[cfg(feature = "client")]
fn flush(telemetry: &telemetry_client::Telemetry) -> Result<(), String> {
    let report = telemetry
        .control()
        .and_then(|c| c.flush(std::time::Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    println!(
        "delivered {} payloads, {} items",
        report.delivered_payloads, report.delivered_items
    );
    Ok(())
}

#[cfg(feature = "client")]
fn status(telemetry: &telemetry_client::Telemetry) -> Result<(), String> {
    let status = telemetry
        .control()
        .and_then(|c| c.status())
        .map_err(|e| e.to_string())?;
    println!("pending: {}", status.pending);
    match status.last_failure {
        Some(why) => println!("last attempt: {why}"),
        None => println!("last attempt: delivered or none"),
    }
    Ok(())
}
