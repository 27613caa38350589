//! In-process counters and their Prometheus text rendering for `GET /metrics`.
//!
//! Only aggregate numbers live here: outcomes by reason, never anything about
//! who sent a request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::StoreStatus;

/// Counters the handlers update.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by endpoint and outcome (`accepted` or an error code).
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Items (events or counters) by outcome: `accepted` or `duplicate`.
    items: Mutex<BTreeMap<&'static str, u64>>,
    /// Items refused, downgraded or ignored by version skew, by (project,
    /// kind, reason); at most [`MAX_SKEW_SERIES`] series.
    skew: Mutex<BTreeMap<(String, &'static str, String), u64>>,
    /// Values folded into `(other)` (or, for projects, refused) by cardinality scope.
    cardinality_overflow: Mutex<BTreeMap<&'static str, u64>>,
    /// Whether the last write failed because the disk was full or failing;
    /// cleared by the next write that commits.
    storage_unavailable: AtomicBool,
}

/// Most (project, kind, reason) series of `telemetry_skew_items_total`;
/// past it new series count under project `(other)`, so open mode's
/// client-chosen project names cannot grow this map without bound.
pub const MAX_SKEW_SERIES: usize = 1000;

impl Metrics {
    /// Counts `n` items of `project` that version skew refused, downgraded
    /// or ignored (`kind`), for `reason`.
    pub fn skew(&self, project: &str, kind: &'static str, reason: &str, n: u64) {
        let mut skew = self.skew.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (project.to_owned(), kind, reason.to_owned());
        if !skew.contains_key(&key) && skew.len() >= MAX_SKEW_SERIES {
            key.0 = crate::cardinality::OTHER.to_owned();
        }
        *skew.entry(key).or_default() += n;
    }

    /// Counts one request to `endpoint` that ended with `outcome`.
    pub fn request(&self, endpoint: &'static str, outcome: &'static str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((endpoint, outcome))
            .or_default() += 1;
    }

    /// Counts stored and duplicate items.
    pub fn items(&self, accepted: u64, duplicates: u64) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        *items.entry("accepted").or_default() += accepted;
        *items.entry("duplicate").or_default() += duplicates;
    }

    /// Counts `n` values past the cap of `scope`.
    pub fn cardinality_overflow(&self, scope: crate::cardinality::Scope, n: u64) {
        *self
            .cardinality_overflow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(scope.as_str())
            .or_default() += n;
    }

    /// Records whether a write found the storage unable to take it.
    pub fn storage_unavailable(&self, unavailable: bool) {
        self.storage_unavailable
            .store(unavailable, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of these counters and `store`'s figures.
    pub fn render(&self, store: &StoreStatus) -> String {
        let mut out = String::new();
        out.push_str("# HELP telemetry_requests_total Requests by endpoint and outcome (accepted or the error code).\n");
        out.push_str("# TYPE telemetry_requests_total counter\n");
        for ((endpoint, outcome), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "telemetry_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP telemetry_items_total Events and counters stored (accepted) or recognised as replays (duplicate).\n");
        out.push_str("# TYPE telemetry_items_total counter\n");
        for (outcome, n) in self.items.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "telemetry_items_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str("# HELP telemetry_skew_items_total Items refused on their own, downgraded to the project's max_tier, or fields ignored, by project and reason.\n");
        out.push_str("# TYPE telemetry_skew_items_total counter\n");
        for ((project, kind, reason), n) in
            self.skew.lock().unwrap_or_else(|p| p.into_inner()).iter()
        {
            let _ = writeln!(
                out,
                "telemetry_skew_items_total{{project=\"{project}\",kind=\"{kind}\",reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP telemetry_cardinality_overflow_total Values past their daily cap, stored as (other); for scope=\"project\", requests refused.\n");
        out.push_str("# TYPE telemetry_cardinality_overflow_total counter\n");
        let overflow = self
            .cardinality_overflow
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for scope in crate::cardinality::Scope::ALL {
            let n = overflow.get(scope.as_str()).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "telemetry_cardinality_overflow_total{{scope=\"{}\"}} {n}",
                scope.as_str()
            );
        }
        drop(overflow);
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "telemetry_write_queue_depth",
            "Writes waiting for the database writer.",
            "gauge",
            store.queue_depth.to_string(),
        );
        gauge(
            &mut out,
            "telemetry_write_queue_capacity",
            "Writes that may wait before ingest answers 503.",
            "gauge",
            store.queue_capacity.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP telemetry_commit_seconds Time spent in write transactions (group commits).\n\
             # TYPE telemetry_commit_seconds summary\n\
             telemetry_commit_seconds_sum {}\n\
             telemetry_commit_seconds_count {}",
            store.commit_seconds_sum, store.commits
        );
        gauge(
            &mut out,
            "telemetry_commit_seconds_max",
            "The slowest commit since start.",
            "gauge",
            store.commit_seconds_max.to_string(),
        );
        gauge(
            &mut out,
            "telemetry_storage_unavailable",
            "1 while writes fail because the disk is full or failing (ingest answers 503); 0 once a write commits.",
            "gauge",
            u8::from(self.storage_unavailable.load(Ordering::Relaxed)).to_string(),
        );
        if let Some(size) = store.size_bytes {
            gauge(
                &mut out,
                "telemetry_database_bytes",
                "Bytes the database occupies on disk, write-ahead log included.",
                "gauge",
                size.to_string(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.request("ingest", "accepted");
        m.request("ingest", "accepted");
        m.request("ingest", "policy_violation");
        m.items(5, 2);
        m.skew("demo", "refused", "unknown_event", 3);
        m.skew("demo", "downgraded", "downgraded_full_to_anonymous", 2);
        m.storage_unavailable(true);
        let text = m.render(&StoreStatus {
            queue_depth: 3,
            queue_capacity: 8,
            commits: 4,
            size_bytes: Some(4096),
            ..StoreStatus::default()
        });
        for line in [
            "telemetry_requests_total{endpoint=\"ingest\",outcome=\"accepted\"} 2",
            "telemetry_requests_total{endpoint=\"ingest\",outcome=\"policy_violation\"} 1",
            "telemetry_items_total{outcome=\"accepted\"} 5",
            "telemetry_items_total{outcome=\"duplicate\"} 2",
            "telemetry_skew_items_total{project=\"demo\",kind=\"refused\",reason=\"unknown_event\"} 3",
            "telemetry_skew_items_total{project=\"demo\",kind=\"downgraded\",reason=\"downgraded_full_to_anonymous\"} 2",
            "telemetry_write_queue_depth 3",
            "telemetry_commit_seconds_count 4",
            "telemetry_database_bytes 4096",
            "telemetry_storage_unavailable 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
