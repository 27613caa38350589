//! How a request reaches the collector: the transport the host chose with a
//! cargo feature (ureq, the host's reqwest, or the system's curl), the proxy
//! it goes through, and what its answer means.
//!
//! [`crate::upload`] only sees [`Transport`]: "send this body to this path,
//! tell me how it ended". Every transport maps statuses the same way
//! ([`outcome`]) and gets its proxy from [`proxy::choose`], so switching
//! transports changes neither what is sent nor how failures are retried.

#[cfg(any(feature = "curl", test))]
mod curl;
mod proxy;
#[cfg(any(feature = "reqwest", test))]
mod reqwest;
#[cfg(any(feature = "ureq", feature = "ureq-aws-lc-rs"))]
mod ureq;

use std::net::IpAddr;
use std::time::Duration;

use telemetry_protocol::{ErrorBody, IngestResponse};

use crate::upload::{MAX_BACKOFF, Outcome, Transport, classify};

/// How long to wait for a TCP (and TLS) connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The user agent of every transport: the toolkit's version, nothing about
/// the host or the machine.
const USER_AGENT: &str = concat!("telemetry-toolkit/", env!("CARGO_PKG_VERSION"));

/// The most bytes of a response body read: collector answers are small.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// The transport this build has, set up for one endpoint.
pub(crate) struct Http(Box<dyn Transport + Send + Sync>);

impl Http {
    /// A client for `endpoint`, whose requests give up after `total`. Errs
    /// if this build has no transport, or the proxy setting is unusable.
    pub(crate) fn new(endpoint: &str, total: Duration) -> Result<Http, String> {
        let route = Route::new(endpoint, total, |name| std::env::var(name).ok())?;
        connect(route).map(Http)
    }
}

impl Transport for Http {
    fn post(&self, path: &str, body: &[u8]) -> Outcome {
        self.0.post(path, body)
    }
}

/// Where and how one transport sends: the endpoint (without a trailing
/// slash), the proxy, if any, and the time budget.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    base: String,
    proxy: Option<String>,
    total: Duration,
}

impl Route {
    /// The route to `endpoint`, with the proxy that the environment (read
    /// through `var`) names for it.
    fn new(
        endpoint: &str,
        total: Duration,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Route, String> {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("invalid endpoint: {e}"))?;
        Ok(Route {
            base: endpoint.trim_end_matches('/').to_owned(),
            proxy: proxy::choose(&uri, var)?,
            total,
        })
    }

    /// How long a connection may take.
    fn connect_timeout(&self) -> Duration {
        CONNECT_TIMEOUT.min(self.total)
    }
}

/// The transport that the enabled features select: `curl` over `reqwest`
/// over ureq, because the first two are only ever turned on deliberately,
/// while ureq may come in through default features.
#[cfg(feature = "curl")]
fn connect(route: Route) -> Result<Box<dyn Transport + Send + Sync>, String> {
    Ok(Box::new(curl::Curl::new(route)))
}

#[cfg(all(feature = "reqwest", not(feature = "curl")))]
fn connect(route: Route) -> Result<Box<dyn Transport + Send + Sync>, String> {
    Ok(Box::new(reqwest::Reqwest::new(route)?))
}

#[cfg(all(
    any(feature = "ureq", feature = "ureq-aws-lc-rs"),
    not(feature = "curl"),
    not(feature = "reqwest")
))]
fn connect(route: Route) -> Result<Box<dyn Transport + Send + Sync>, String> {
    Ok(Box::new(ureq::Ureq::new(route)?))
}

#[cfg(not(any(
    feature = "ureq",
    feature = "ureq-aws-lc-rs",
    feature = "curl",
    feature = "reqwest"
)))]
fn connect(_route: Route) -> Result<Box<dyn Transport + Send + Sync>, String> {
    // Not an error: the uploader then records why nothing was sent, in the
    // upload log that `status` reads, and the data stays queued.
    Ok(Box::new(Unavailable))
}

/// The transport of a build without one: every request fails, saying why.
#[cfg(not(any(
    feature = "ureq",
    feature = "ureq-aws-lc-rs",
    feature = "curl",
    feature = "reqwest"
)))]
struct Unavailable;

#[cfg(not(any(
    feature = "ureq",
    feature = "ureq-aws-lc-rs",
    feature = "curl",
    feature = "reqwest"
)))]
impl Transport for Unavailable {
    fn post(&self, _path: &str, _body: &[u8]) -> Outcome {
        Outcome::Failed(
            "this build has no transport: enable the `ureq`, `reqwest` or `curl` feature".into(),
        )
    }
}

/// What a response means, from its status, its `Retry-After` header and its
/// body (if it could be read), whichever transport got it.
fn outcome(status: u16, retry_after: Option<&str>, body: Option<&[u8]>) -> Outcome {
    if (200..300).contains(&status) {
        // A 2xx is delivered whatever its body says; `refused` counts the
        // items the collector refused on their own.
        let refused = body
            .and_then(|b| serde_json::from_slice::<IngestResponse>(b).ok())
            .map_or(0, |r| r.refused);
        return Outcome::Delivered { refused };
    }
    let retry_after = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(MAX_BACKOFF));
    let code = body
        .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
        .map(|b| format!(" {}: {}", b.error, b.message))
        .unwrap_or_default();
    classify(status, retry_after, format!("HTTP {status}{code}"))
}

/// Checks that `endpoint` may carry payloads: HTTPS, or HTTP to a loopback host.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("invalid endpoint: {e}"))?;
    let loopback = host_is_loopback(url.host().unwrap_or_default());
    match url.scheme_str().unwrap_or_default() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("refusing plain http:// to a non-loopback host; use https://".into()),
        other => Err(format!("unsupported endpoint scheme `{other}`")),
    }
}

/// Whether `host` (as in a URL, IPv6 in brackets) is this machine:
/// `localhost`, 127.0.0.0/8 or ::1.
fn host_is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;
