//! The host's own reqwest (blocking client), for hosts that already link
//! it: no second HTTP or TLS stack. TLS, its roots and its crypto provider
//! are whatever the host's reqwest features chose.

use std::io::Read;

use super::{MAX_RESPONSE_BYTES, Route, USER_AGENT, outcome};
use crate::upload::{Outcome, Transport};

/// HTTPS (or loopback HTTP) through reqwest's blocking client.
pub(super) struct Reqwest {
    client: ::reqwest::blocking::Client,
    base: String,
}

impl Reqwest {
    /// A client for `route`. Callers are on a thread of their own: the
    /// blocking client must not be built or dropped inside an async runtime.
    pub(super) fn new(route: Route) -> Result<Reqwest, String> {
        // reqwest would read the proxy variables itself, differently; the
        // route already says which proxy, if any.
        let mut builder = ::reqwest::blocking::Client::builder().no_proxy();
        if let Some(url) = &route.proxy {
            let proxy = ::reqwest::Proxy::all(url).map_err(|e| format!("proxy {url}: {e}"))?;
            builder = builder.proxy(proxy);
        }
        let client = builder
            .connect_timeout(route.connect_timeout())
            .timeout(route.total)
            // A redirect could move a payload off HTTPS or off the
            // configured host; the collector never redirects.
            .redirect(::reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Reqwest {
            client,
            base: route.base,
        })
    }
}

impl Transport for Reqwest {
    fn post(&self, path: &str, body: &[u8]) -> Outcome {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send();
        let response = match response {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Outcome::Failed("timed out".into()),
            Err(e) if e.is_connect() => return Outcome::Failed("cannot connect".into()),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        let body = response
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut bytes)
            .ok()
            .map(|_| bytes);
        outcome(status, retry_after.as_deref(), body.as_deref())
    }
}
