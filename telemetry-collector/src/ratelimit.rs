//! The per-source rate limiter in front of `/v1/ingest` and `/v1/delete`.
//!
//! A token bucket per source address, held in memory only: the address is a
//! map key and nothing else, it is never logged or stored. IPv6 sources are
//! keyed by their /64 prefix, since one host usually owns a whole /64.
//!
//! The map is bounded whatever the sources do. Every source sits once in a
//! queue; each request looks at the two sources at its front, forgets each
//! whose bucket has refilled (it has gone quiet, so a fresh bucket is the
//! same) and moves the others to the back. That is constant work per request,
//! never a scan of the whole map. At [`MAX_SOURCES`] a new source pushes out
//! the one at the front, so a flood of addresses, say every /64 of an IPv6
//! allocation, costs at most that many buckets; a source pushed out early
//! only gets a fresh bucket, which is the price of the bound.

use std::collections::{HashMap, VecDeque};
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

/// Most sources remembered at once; about 100 bytes each.
pub const MAX_SOURCES: usize = 50_000;

/// Queue entries examined per request to forget quiet sources.
const FORGET_PER_REQUEST: usize = 2;

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
    buckets: Mutex<Buckets>,
}

/// The buckets and the queue that bounds them.
#[derive(Debug, Default)]
struct Buckets {
    /// The bucket of each remembered source.
    map: HashMap<IpAddr, Bucket>,
    /// Every key of `map` exactly once, in the order they are looked at.
    queue: VecDeque<IpAddr>,
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
            buckets: Mutex::default(),
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
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Buckets { map, queue } = &mut *guard;
        for _ in 0..FORGET_PER_REQUEST {
            let Some(front) = queue.pop_front() else {
                break;
            };
            let quiet = map
                .get(&front)
                .is_none_or(|b| b.refilled(now, self.rate, self.burst) >= self.burst);
            if quiet {
                map.remove(&front);
            } else {
                queue.push_back(front);
            }
        }
        if !map.contains_key(&key) {
            if map.len() >= MAX_SOURCES
                && let Some(oldest) = queue.pop_front()
            {
                map.remove(&oldest);
            }
            queue.push_back(key);
        }
        let bucket = map.entry(key).or_insert(Bucket {
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

impl RateLimiter {
    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

/// The key of a source: an IPv4 address (IPv4-mapped IPv6 included), or an
/// IPv6 address's /64 prefix.
pub(crate) fn normalize(ip: IpAddr) -> IpAddr {
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
    fn memory_stays_bounded_with_100k_distinct_sources() {
        // Every source sends once and stays within its bucket, so none of them
        // may be forgotten as idle: the bound must hold all the same.
        let l = limiter(60, 10);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let ip = if i % 2 == 0 {
                IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
            } else {
                // Distinct /64 prefixes, as an IPv6 attacker would rotate them.
                IpAddr::V6(std::net::Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    (i >> 16) as u16,
                    i as u16,
                    0,
                    0,
                    0,
                    1,
                ))
            };
            assert!(l.check(ip, t0).is_ok());
            assert!(l.len() <= MAX_SOURCES, "after {i} sources: {}", l.len());
        }
        assert!(
            l.len() > MAX_SOURCES / 2,
            "it still remembers recent sources"
        );
    }

    #[test]
    fn quiet_sources_are_forgotten_a_few_at_a_time() {
        let l = limiter(60, 2);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            l.check(IpAddr::V4(std::net::Ipv4Addr::from(i)), t0)
                .unwrap();
        }
        // Two seconds later every bucket is full again; each request forgets
        // a few of them, so the map shrinks without ever being scanned whole.
        let later = t0 + Duration::from_secs(2);
        let probe: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..1000 {
            let _ = l.check(probe, later);
        }
        assert!(l.len() <= 2, "{}", l.len());
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
