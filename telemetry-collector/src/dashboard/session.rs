//! Sign-in sessions for the dashboard: the maintainer types the admin token
//! once into the sign-in form and gets a session cookie.
//!
//! - **Ids** are 256 random bits from the OS. The store keeps only their SHA-256,
//!   so a memory dump does not hand out live sessions, and looking a session
//!   up by the digest of what the browser sent leaks nothing useful through
//!   timing: the attacker does not control the digest. The found entry is
//!   still compared in constant time.
//! - **Memory only.** Sessions live in this process; a restart signs everyone
//!   out, which is acceptable for a one-maintainer tool and means nothing
//!   about sessions ever touches the disk.
//! - **Expiry.** A session ends [`SESSION_TTL`] after sign-in, or at sign-out.
//! - **Cookie.** `HttpOnly` (no script can read it), `SameSite=Strict` (no other
//!   site can make the browser send it, which is also the CSRF defence of the
//!   sign-out form), `Path=/dashboard`, and `Secure` when the request came over
//!   TLS. The collector itself speaks plain HTTP and is meant to sit behind a
//!   TLS reverse proxy, so "over TLS" means: the dashboard is configured with
//!   `secure_cookies`, or the request carries `X-Forwarded-Proto: https`. A
//!   forged header can only make the cookie `Secure`, which at worst stops the
//!   forger's own browser from sending it over plain HTTP.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE_NAME: &str = "telemetry_session";
/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// At most this many live sessions; signing in beyond it ends the oldest.
/// Only someone with the admin token can create sessions, so this bounds a
/// script stuck in a sign-in loop rather than an attacker.
pub const MAX_SESSIONS: usize = 256;

type Digest32 = [u8; 32];

fn digest(id: &str) -> Digest32 {
    Sha256::digest(id.as_bytes()).into()
}

/// The live sessions of this process.
#[derive(Debug)]
pub struct Sessions {
    /// SHA-256 of each session id, with when it was created.
    live: Mutex<HashMap<Digest32, Instant>>,
    /// How long a session lasts.
    ttl: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(SESSION_TTL)
    }
}

impl Sessions {
    /// An empty store whose sessions last `ttl`.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            live: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest32, Instant>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is a single insert or remove), so poisoning is ignored.
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session and returns its id, or `None` if the OS has no randomness to give.
    pub fn create(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, created| now.duration_since(*created) < self.ttl);
        while live.len() >= MAX_SESSIONS {
            let Some(oldest) = live.iter().min_by_key(|(_, c)| **c).map(|(k, _)| *k) else {
                break;
            };
            live.remove(&oldest);
        }
        live.insert(digest(&id), now);
        Some(id)
    }

    /// Whether `id` names a live, unexpired session.
    pub fn is_valid(&self, id: &str) -> bool {
        let wanted = digest(id);
        let live = self.lock();
        match live.get_key_value(&wanted) {
            Some((stored, created)) => {
                bool::from(stored.ct_eq(&wanted)) && created.elapsed() < self.ttl
            }
            None => false,
        }
    }

    /// Ends the session `id`, if it exists.
    pub fn remove(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    /// How many sessions are live (expired ones included until the next sign-in prunes them).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id the request's `Cookie` header carries, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Whether the request reached the proxy in front of the collector over TLS.
pub fn request_is_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

fn cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{COOKIE_NAME}={value}; Path=/dashboard; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    // Only hex ids and fixed text go in, which are always valid header bytes.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` value that starts session `id`.
pub fn set_cookie(id: &str, ttl: Duration, secure: bool) -> HeaderValue {
    cookie(id, ttl.as_secs(), secure)
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    cookie("", 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_created_checked_and_ended() {
        let sessions = Sessions::default();
        let id = sessions.create().unwrap();
        assert_eq!(id.len(), 64);
        assert!(sessions.is_valid(&id));
        assert!(!sessions.is_valid("0000"));
        assert!(!sessions.is_valid(&id[..63]));
        let other = sessions.create().unwrap();
        assert_ne!(id, other);
        sessions.remove(&id);
        assert!(!sessions.is_valid(&id));
        assert!(sessions.is_valid(&other));
    }

    #[test]
    fn sessions_expire() {
        let sessions = Sessions::new(Duration::ZERO);
        let id = sessions.create().unwrap();
        assert!(!sessions.is_valid(&id));
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::default();
        let first = sessions.create().unwrap();
        for _ in 0..MAX_SESSIONS {
            sessions.create().unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(!sessions.is_valid(&first), "the oldest session was ended");
    }

    #[test]
    fn cookies_are_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; telemetry_session=abc ; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("telemetry_session="),
        );
        assert_eq!(session_cookie(&headers), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn cookie_attributes() {
        let plain = set_cookie("ab12", SESSION_TTL, false);
        assert_eq!(
            plain.to_str().unwrap(),
            "telemetry_session=ab12; Path=/dashboard; Max-Age=43200; HttpOnly; SameSite=Strict"
        );
        let secure = set_cookie("ab12", SESSION_TTL, true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
        assert!(clear_cookie(false).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn tls_is_recognized_from_the_proxy_header() {
        let mut headers = HeaderMap::new();
        assert!(!request_is_tls(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(request_is_tls(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http, https"));
        assert!(!request_is_tls(&headers));
    }
}
