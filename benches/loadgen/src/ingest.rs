//! The ingest load generator: `concurrency` workers POST payloads to
//! `/v1/ingest` on a loopback collector until `requests` have been sent or
//! `duration` has passed, whichever comes first.
//!
//! Every request is timed from just before the send to the end of the answer
//! body. The run is bounded in wall time even if the collector stops
//! answering: an unanswered request is abandoned at the deadline and counted
//! as unfinished, never waited for.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use telemetry_protocol::IngestResponse;
use telemetry_protocol::wire::INGEST_PATH;
use tokio::time::Instant;

use crate::Error;
use crate::payload::{PayloadFactory, PayloadSpec};
use crate::stats::percentile;

/// One load-generator run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The collector's base URL, e.g. `http://127.0.0.1:8750`; must be loopback.
    pub url: String,
    /// What the payloads look like.
    pub spec: PayloadSpec,
    /// The most requests to send.
    pub requests: u64,
    /// How many requests are in flight at once (one connection each).
    pub concurrency: usize,
    /// The longest the run may take.
    pub duration: Duration,
    /// The longest one request may take before it counts as a transport error.
    pub request_timeout: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// The tier of every payload.
    pub tier: String,
    /// Events (or counters) per request.
    pub batch: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests that got an answer or failed (not counting unfinished ones).
    pub completed: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Answers other than 2xx, by status code.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Requests that failed without an HTTP answer (refused, reset, timed out).
    pub transport_errors: u64,
    /// Requests still in flight when the time limit hit.
    pub unfinished: u64,
    /// Events (or counters) in requests answered 2xx.
    pub events_ok: u64,
    /// The sum of `accepted` over 2xx answers that carried an [`IngestResponse`].
    pub accepted: u64,
    /// The sum of `duplicates` over those answers; should be 0.
    pub duplicates: u64,
    /// Wall time from the first send to the last answer, in seconds.
    pub elapsed_secs: f64,
    /// Events (or counters) committed per second: `events_ok / elapsed`.
    pub events_per_sec: f64,
    /// Completed requests per second.
    pub requests_per_sec: f64,
    /// Median request latency, in milliseconds.
    pub latency_p50_ms: f64,
    /// 99th-percentile request latency, in milliseconds.
    pub latency_p99_ms: f64,
    /// Whether the time limit, not the request count, ended the run.
    pub hit_time_limit: bool,
}

/// Refuses any URL whose host is not a loopback address. `localhost` is
/// resolved and every address it yields must be loopback.
pub async fn require_loopback(url: &reqwest::Url) -> Result<(), Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_owned(),
    };
    if url.scheme() != "http" {
        return Err(invalid("only plain http to loopback is supported"));
    }
    let host = url.host_str().ok_or_else(|| invalid("no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return if ip.is_loopback() {
            Ok(())
        } else {
            Err(Error::NotLoopback(host.to_owned()))
        };
    }
    if host != "localhost" {
        return Err(Error::NotLoopback(host.to_owned()));
    }
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::io("resolving localhost", e))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(Error::NotLoopback(host.to_owned()));
    }
    Ok(())
}

/// The ingest URL for a collector base URL: `/v1/ingest` is appended unless
/// the URL already ends with it.
pub fn ingest_url(base: &str) -> Result<reqwest::Url, Error> {
    let trimmed = base.trim_end_matches('/');
    let full = if trimmed.ends_with(INGEST_PATH) {
        trimmed.to_owned()
    } else {
        format!("{trimmed}{INGEST_PATH}")
    };
    reqwest::Url::parse(&full).map_err(|e| Error::InvalidUrl {
        url: base.to_owned(),
        reason: e.to_string(),
    })
}

/// What one worker saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    non_2xx: BTreeMap<u16, u64>,
    transport_errors: u64,
    unfinished: u64,
    events_ok: u64,
    accepted: u64,
    duplicates: u64,
    /// Latencies of completed requests, in microseconds.
    latencies_us: Vec<u32>,
    last_answer: Option<Instant>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        for (status, n) in other.non_2xx {
            *self.non_2xx.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.unfinished += other.unfinished;
        self.events_ok += other.events_ok;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.latencies_us.extend(other.latencies_us);
        self.last_answer = self.last_answer.max(other.last_answer);
    }
}

/// Runs the load and reports what it measured.
pub async fn run(config: LoadConfig) -> Result<LoadReport, Error> {
    if config.concurrency == 0 {
        return Err(Error::InvalidArgument(
            "concurrency must be at least 1".into(),
        ));
    }
    let url = ingest_url(&config.url)?;
    require_loopback(&url).await?;
    let factory = Arc::new(PayloadFactory::new(config.spec.clone())?);
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .pool_max_idle_per_host(config.concurrency)
        // Never leave loopback, whatever a proxy variable says.
        .no_proxy()
        .build()
        .map_err(Error::Client)?;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + config.duration;
    let workers: Vec<_> = (0..config.concurrency)
        .map(|_| {
            let (client, url, factory, next) =
                (client.clone(), url.clone(), factory.clone(), next.clone());
            let requests = config.requests;
            tokio::spawn(worker(client, url, factory, next, requests, deadline))
        })
        .collect();
    let mut total = Tally::default();
    for w in workers {
        // A worker only ends by returning its tally; a panic there is a bug.
        total.merge(w.await.expect("load worker panicked"));
    }
    let end = total.last_answer.unwrap_or(start).max(start);
    let elapsed = (end - start).as_secs_f64().max(1e-9);
    let completed = total.ok + total.non_2xx.values().sum::<u64>() + total.transport_errors;
    total.latencies_us.sort_unstable();
    let pct = |p| percentile(&total.latencies_us, p).map_or(0.0, |us| f64::from(us) / 1000.0);
    Ok(LoadReport {
        tier: config.spec.tier.to_string(),
        batch: config.spec.batch,
        concurrency: config.concurrency,
        completed,
        ok: total.ok,
        non_2xx: total.non_2xx,
        transport_errors: total.transport_errors,
        unfinished: total.unfinished,
        events_ok: total.events_ok,
        accepted: total.accepted,
        duplicates: total.duplicates,
        elapsed_secs: elapsed,
        events_per_sec: total.events_ok as f64 / elapsed,
        requests_per_sec: completed as f64 / elapsed,
        latency_p50_ms: pct(50.0),
        latency_p99_ms: pct(99.0),
        hit_time_limit: next.load(Ordering::Relaxed) < config.requests || total.unfinished > 0,
    })
}

async fn worker(
    client: reqwest::Client,
    url: reqwest::Url,
    factory: Arc<PayloadFactory>,
    next: Arc<AtomicU64>,
    requests: u64,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let batch = factory.spec().batch as u64;
    while Instant::now() < deadline {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= requests {
            // Undo the overshoot so the caller can tell count from time limits.
            next.fetch_sub(1, Ordering::Relaxed);
            break;
        }
        // Serialize before starting the clock: the figure is the collector's.
        // Protocol types always serialize; an empty body would show up as 400s.
        let body = serde_json::to_vec(&factory.payload(i)).unwrap_or_default();
        let sent = Instant::now();
        let request = async {
            let response = client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        };
        match tokio::time::timeout_at(deadline, request).await {
            Err(_) => {
                tally.unfinished += 1;
                break;
            }
            Ok(Err(_)) => tally.transport_errors += 1,
            Ok(Ok((status, bytes))) => {
                if status.is_success() {
                    tally.ok += 1;
                    tally.events_ok += batch;
                    if let Ok(answer) = serde_json::from_slice::<IngestResponse>(&bytes) {
                        tally.accepted += answer.accepted;
                        tally.duplicates += answer.duplicates;
                    }
                } else {
                    *tally.non_2xx.entry(status.as_u16()).or_default() += 1;
                }
            }
        }
        let now = Instant::now();
        let us = (now - sent).as_micros().min(u128::from(u32::MAX)) as u32;
        tally.latencies_us.push(us);
        tally.last_answer = Some(now);
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_path_is_appended_once() {
        let cases = [
            ("http://127.0.0.1:8750", "http://127.0.0.1:8750/v1/ingest"),
            ("http://127.0.0.1:8750/", "http://127.0.0.1:8750/v1/ingest"),
            (
                "http://127.0.0.1:1/v1/ingest",
                "http://127.0.0.1:1/v1/ingest",
            ),
        ];
        for (base, want) in cases {
            assert_eq!(ingest_url(base).unwrap().as_str(), want);
        }
        assert!(ingest_url("not a url").is_err());
    }

    #[tokio::test]
    async fn only_loopback_targets_are_allowed() {
        for ok in [
            "http://127.0.0.1:1/",
            "http://[::1]:1/",
            "http://localhost:1/",
        ] {
            let url = reqwest::Url::parse(ok).unwrap();
            require_loopback(&url)
                .await
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://10.0.0.1:1/",
            "http://example.invalid/",
            "https://127.0.0.1/",
        ] {
            let url = reqwest::Url::parse(bad).unwrap();
            assert!(require_loopback(&url).await.is_err(), "{bad}");
        }
    }
}
