//! The per-source rate limiter in front of `/v1/ingest` and `/v1/delete`.
//!
//! A token bucket per source address, held in memory only: the address is a
//! map key and nothing else, it is never logged or stored, and the map is
//! pruned so it forgets sources that have gone quiet. IPv6 sources are keyed
//! by their /64 prefix, since one host usually owns a whole /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

/// The address a reverse proxy appended to `X-Forwarded-For`: the last entry
/// of the last such header. Entries before it were written by the client and
/// cannot be trusted.
pub fn forwarded_source(headers: &axum::http::HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Buckets kept before idle ones are pruned.
const PRUNE_AT: usize = 10_000;

/// A token-bucket limiter keyed by source address.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size.
    burst: f64,
    /// Whether the source is taken from `X-Forwarded-For`.
    behind_proxy: bool,
    /// Buckets by source; the address lives only here, in memory.
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter with `config`'s rate and burst; a zero rate disables it.
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        RateLimiter {
            rate: f64::from(config.requests_per_minute) / 60.0,
            burst: f64::from(config.burst.max(1)),
            behind_proxy: config.behind_proxy,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether sources come from `X-Forwarded-For` (see [`RateLimitConfig::behind_proxy`]).
    pub fn behind_proxy(&self) -> bool {
        self.behind_proxy
    }

    /// Takes one token for `source` at `now`; `Err` holds how long to wait.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let key = normalize(source);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= PRUNE_AT {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = bucket.refilled(now, self.rate, self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            requests_per_minute: per_minute,
            burst,
            behind_proxy: false,
        })
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let l = limiter(60, 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(ip, t0).is_ok());
        }
        let wait = l.check(ip, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // One token per second at 60 per minute: injected time, no sleeping.
        assert!(l.check(ip, t0 + Duration::from_secs(1)).is_ok());
        assert!(l.check(ip, t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn sources_are_independent_and_ipv6_is_keyed_by_prefix() {
        let l = limiter(60, 1);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let other: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(l.check(a, t0).is_ok());
        assert!(l.check(same_64, t0).is_err());
        assert!(l.check(other, t0).is_ok());
    }

    #[test]
    fn forwarded_source_takes_the_entry_the_proxy_appended() {
        use axum::http::{HeaderMap, HeaderValue};
        let table: [(&[&str], Option<&str>); 6] = [
            (&[], None),
            (&["203.0.113.9"], Some("203.0.113.9")),
            (&["1.1.1.1, 203.0.113.9"], Some("203.0.113.9")),
            (&["1.1.1.1", "203.0.113.9"], Some("203.0.113.9")),
            (&["[2001:db8::1]:443"], Some("2001:db8::1")),
            (&["not an address"], None),
        ];
        for (values, expected) in table {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("x-forwarded-for", HeaderValue::from_static(v));
            }
            let expected = expected.map(|e| e.parse::<IpAddr>().unwrap());
            assert_eq!(forwarded_source(&headers), expected, "{values:?}");
        }
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        let l = limiter(0, 1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(l.check(ip, Instant::now()).is_ok());
        }
    }
}
