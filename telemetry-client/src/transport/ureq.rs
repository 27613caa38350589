//! The default transport: ureq (blocking, no async runtime) over rustls,
//! with the crypto provider named explicitly, never taken from or installed
//! as the process default, so a host's own rustls set-up is left alone.

use std::io;
use std::sync::Arc;

use ::ureq::tls::{RootCerts, TlsConfig, TlsProvider};

use super::{MAX_RESPONSE_BYTES, Route, USER_AGENT, outcome};
use crate::upload::{Outcome, Transport};

/// HTTPS (or loopback HTTP) through ureq.
pub(super) struct Ureq {
    agent: ::ureq::Agent,
    base: String,
}

impl Ureq {
    /// A client for `route`.
    pub(super) fn new(route: Route) -> Result<Ureq, String> {
        let proxy = match &route.proxy {
            Some(url) => Some(::ureq::Proxy::new(url).map_err(|e| format!("proxy {url}: {e}"))?),
            None => None,
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(root_certs())
            .unversioned_rustls_crypto_provider(crypto_provider())
            .build();
        let agent = ::ureq::Agent::config_builder()
            .proxy(proxy)
            .tls_config(tls)
            .timeout_connect(Some(route.connect_timeout()))
            .timeout_global(Some(route.total))
            // Statuses are outcomes here, not errors.
            .http_status_as_error(false)
            // A redirect could move a payload off HTTPS or off the
            // configured host; the collector never redirects.
            .max_redirects(0)
            .user_agent(USER_AGENT)
            .build()
            .into();
        Ok(Ureq {
            agent,
            base: route.base,
        })
    }
}

/// The provider this build's rustls was given: aws-lc-rs when the host
/// asked for it (`ureq-aws-lc-rs`), else ring.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "ureq-aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "ureq-aws-lc-rs"))]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// The platform's certificate store with `platform-verifier`, else the
/// bundled webpki roots.
fn root_certs() -> RootCerts {
    if cfg!(feature = "platform-verifier") {
        RootCerts::PlatformVerifier
    } else {
        RootCerts::WebPki
    }
}

impl Transport for Ureq {
    fn post(&self, path: &str, body: &[u8]) -> Outcome {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body);
        let mut response = match response {
            Ok(r) => r,
            Err(::ureq::Error::Timeout(_)) => return Outcome::Failed("timed out".into()),
            Err(::ureq::Error::ConnectionFailed | ::ureq::Error::HostNotFound) => {
                return Outcome::Failed("cannot connect".into());
            }
            Err(::ureq::Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Outcome::Failed("cannot connect".into());
            }
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .ok();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok());
        outcome(status, retry_after, body.as_deref())
    }
}
