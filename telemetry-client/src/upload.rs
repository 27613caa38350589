//! Packaging and sending: spool → outbox → collector, with timeouts, back-off
//! and an upload log.
//!
//! Runs in the detached uploader process, in `flush`, and (printing instead of
//! sending) in debug mode; never on the host's own path. Callers hold the
//! tool's uploader lock, so at most one of these runs per tool at a time.

#![allow(clippy::print_stderr)] // Debug mode prints payloads because the user asked for exactly that.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::time::{Duration, Instant};

use telemetry_protocol::manifest::Manifest;
use telemetry_protocol::policy::limits;
use telemetry_protocol::wire::{DELETE_PATH, INGEST_PATH};
use telemetry_protocol::{
    ClientContext, Counter, Day, DeleteRequest, Event, IngestPayload, Props, Tier, Timestamp, Uuid,
};

use crate::clock::Clock;
use crate::files::Lock;
use crate::folders::ToolPaths;
use crate::outbox::{self, Entry};
use crate::spool::{self, Record};
use crate::state::ToolState;
use crate::state::{HealthReport, reason};
use crate::upload_log::{self, LogEntry, UploadKind, UploadResult};
use telemetry_protocol::PropValue;
use telemetry_protocol::manifest::builtin;

/// How long one request may take in all.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest back-off, whatever the interval.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// How one request ended. Only a final answer ends a request: a 2xx, or a
/// 400 or 422, which say the request itself can never succeed. Everything
/// else (401, 403, 404, 405, 408, 409, 5xx, TLS and proxy errors, timeouts,
/// 429) can be a misrouted proxy, a firewall or a passing outage, so the
/// request stays queued and is retried with back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx; `refused` items of an ingest were refused on their own.
    Delivered {
        /// `IngestResponse::refused`, 0 for a deletion or an old collector.
        refused: u64,
    },
    /// 400 or 422: drop it, with the reason.
    Rejected(String),
    /// 413: the body is too large; split it and retry.
    TooLarge(String),
    /// 429 or 503, with the server's `Retry-After` if any.
    RetryAfter(Option<Duration>, String),
    /// Unreachable, timed out, or any other status.
    Failed(String),
}

/// The most bytes one ingest payload may have: the collector's body limit is
/// larger, and staying well under it leaves room for proxies that are
/// stricter.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Something that can deliver a JSON body to a collector path.
pub(crate) trait Transport {
    /// Posts `body` to `path` (`/v1/ingest` or `/v1/delete`).
    fn post(&self, path: &str, body: &[u8]) -> Outcome;
}

/// What a non-2xx status means for the request.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, detail: String) -> Outcome {
    match status {
        400 | 422 => Outcome::Rejected(detail),
        413 => Outcome::TooLarge(detail),
        429 | 503 => Outcome::RetryAfter(retry_after, detail),
        _ => Outcome::Failed(detail),
    }
}

/// What one upload run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct UploadReport {
    /// Payloads the collector acknowledged (or that were printed in debug mode).
    pub delivered_payloads: u64,
    /// Counters and events in those payloads.
    pub delivered_items: u64,
    /// Deletion requests acknowledged.
    pub deletions: u64,
    /// Payloads or deletions the collector refused for good and that were dropped.
    pub rejected: u64,
    /// Why the run stopped early, if it did; the rest stays queued.
    pub failure: Option<String>,
}

/// What [`Job::plan`] makes of the spool.
struct Plan {
    /// Payloads for the outbox.
    entries: Vec<Entry>,
    /// Records that stay in the spool (above this run's level).
    keep: Vec<Record>,
    /// Whether any record was taken out.
    changed: bool,
}

/// Everything an upload run needs to know about the tool.
pub(crate) struct Job<'a> {
    /// The manifest every payload is checked against.
    pub manifest: &'a Manifest,
    /// The host tool's version, for the context.
    pub tool_version: &'a str,
    /// The tool's state folder.
    pub paths: &'a ToolPaths,
    /// The level resolved in this process; nothing above it is packaged.
    pub level: Tier,
    /// Now.
    pub clock: &'a dyn Clock,
    /// The upload interval, which is also the back-off base.
    pub interval: Duration,
    /// Where to send.
    pub endpoint: &'a str,
    /// The outbox's bounds.
    pub outbox: OutboxLimits,
}

/// Bounds on the outbox, like the spool's: a long outage must not grow it
/// without limit.
///
/// Start from the defaults and change what you need, so that a bound added
/// later keeps its default:
///
/// ```
/// # use std::time::Duration;
/// let limits = telemetry_client::OutboxLimits::default()
///     .with_max_bytes(1024 * 1024)
///     .with_max_age(Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(limits.max_bytes, 1024 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxLimits {
    /// Largest total size of the payload files, in bytes.
    pub max_bytes: u64,
    /// How long a payload may wait before it is dropped.
    pub max_age: Duration,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_bytes: 4 * 1024 * 1024,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl OutboxLimits {
    /// These limits with another largest total size, in bytes.
    #[must_use]
    pub const fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// These limits with another longest wait before a payload is dropped.
    #[must_use]
    pub const fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }
}

impl Job<'_> {
    /// Moves eligible spool records into outbox payloads with fixed ids, then
    /// removes them from the spool. Takes the data lock.
    ///
    /// The host waits on that lock at the end of every run, so nothing here
    /// reads the outbox in the normal case: the ids a staging round consumes
    /// are written to a small journal first and removed once the spool is
    /// rewritten. A journal left by a crash lists what that round meant to
    /// package; the repair reads the outbox once to drop from the spool only
    /// the records a payload file really holds. The outbox's bounds are
    /// enforced after the lock is released.
    pub(crate) fn stage(&self) -> io::Result<()> {
        {
            let _lock = Lock::acquire(&self.paths.data_lock())?;
            self.stage_locked()?;
        }
        self.bound_outbox()
    }

    fn stage_locked(&self) -> io::Result<()> {
        let paths = self.paths;
        let state = ToolState::load(paths);
        let journal = paths.staging_journal();
        let contents = spool::read(paths)?;
        let mut changed = contents.torn > 0;
        let mut records = contents.records;
        if let Some(text) = crate::files::read_optional(&journal)? {
            // A crash cut a staging round short. The journal is written
            // before the outbox, so it lists what that round *meant* to
            // package: only the ids that also reached an outbox file were
            // packaged. The rest (killed before their payload was written)
            // must stay in the spool, or they are lost without a trace.
            // Reading the outbox costs only here, after a crash.
            let listed: HashSet<Uuid> = serde_json::from_str(&text).unwrap_or_default();
            let packaged: HashSet<Uuid> = outbox::list_read_only(paths)?
                .iter()
                .flat_map(|(_, e)| e.consumed.iter().copied())
                .filter(|id| listed.contains(id))
                .collect();
            records.retain(|r| !packaged.contains(&r.id()));
            // Settle the old round before this one writes its own journal,
            // which would otherwise replace the only record of it.
            spool::rewrite(paths, &contents.side, &records)?;
            crate::files::remove_if_exists(&journal)?;
            changed = false;
        }
        let now = self.clock.now();
        let plan = self.plan(records, &state);
        if !plan.entries.is_empty() {
            let ids: Vec<Uuid> = plan
                .entries
                .iter()
                .flat_map(|e| e.consumed.iter().copied())
                .collect();
            let bytes = serde_json::to_vec(&ids).map_err(io::Error::other)?;
            crate::files::write_atomic(&journal, &bytes)?;
        }
        let mut log = Vec::new();
        let mut invalid = 0;
        for entry in plan.entries {
            invalid += self.put_checked(entry, now, &mut log)?;
        }
        if changed || plan.changed || !contents.side.is_empty() {
            spool::rewrite(paths, &contents.side, &plan.keep)?;
        }
        crate::files::remove_if_exists(&journal)?;
        if invalid > 0 {
            let mut state = ToolState::load(paths);
            state.count_dropped(reason::REFUSED_PAYLOAD, invalid);
            state.save(paths)?;
        }
        upload_log::append(paths, &log)
    }

    /// Keeps the outbox within its bounds: payloads older than the age bound
    /// go, then the oldest until the folder is within the size bound. What
    /// goes is counted (`outbox_expired`, `outbox_full`). Only file names
    /// (which start with the creation time) and sizes are looked at, except
    /// for the payloads dropped, which are read to count what they held.
    /// Runs under the uploader lock only.
    pub(crate) fn bound_outbox(&self) -> io::Result<()> {
        let dir = match std::fs::read_dir(self.paths.outbox()) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut files: Vec<(std::path::PathBuf, i64, u64)> = dir
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                let name = path.file_name()?.to_str()?.to_owned();
                if !name.ends_with(".json") || name.starts_with('.') {
                    return None;
                }
                let created = name.split('-').next()?.parse().ok()?;
                let size = e.metadata().ok()?.len();
                Some((path, created, size))
            })
            .collect();
        files.sort();
        let now = self.clock.now().unix_millis();
        let max_age = i64::try_from(self.outbox.max_age.as_millis()).unwrap_or(i64::MAX);
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        let mut dropped: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (path, created, size) in files {
            let why = if now.saturating_sub(created) > max_age {
                reason::OUTBOX_EXPIRED
            } else if total > self.outbox.max_bytes {
                reason::OUTBOX_FULL
            } else {
                continue;
            };
            let lost = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
                .map_or(0, |e| e.occurrences());
            crate::log::debug!(reason = why, lost, "dropping an outbox payload");
            crate::files::remove_if_exists(&path)?;
            total = total.saturating_sub(size);
            *dropped.entry(why).or_default() += lost;
        }
        if !dropped.is_empty() {
            let _lock = Lock::acquire(&self.paths.data_lock())?;
            let mut state = ToolState::load(self.paths);
            for (why, n) in dropped {
                state.count_dropped(why, n);
            }
            state.save(self.paths)?;
        }
        Ok(())
    }

    /// Prints, for debug mode, exactly what the next upload would send: the
    /// outbox, the spool and `extra` (this run's unspooled records) packaged
    /// as `stage` would, and the queued deletions. Writes nothing, takes no
    /// lock and creates no file: debug mode must leave the spool, the outbox,
    /// the state and the deletion queue exactly as they were.
    pub(crate) fn preview(&self, extra: Vec<Record>) -> io::Result<UploadReport> {
        let paths = self.paths;
        let state = ToolState::load(paths);
        let mut report = UploadReport::default();
        let print = |path: &str, body: &[u8]| {
            eprintln!(
                "telemetry (debug, not sent): POST {path} {}",
                String::from_utf8_lossy(body)
            );
        };
        for install_id in &state.pending_deletions {
            let body = serde_json::to_vec(&DeleteRequest {
                project: self.manifest.project.clone(),
                install_id: *install_id,
            })
            .map_err(io::Error::other)?;
            print(DELETE_PATH, &body);
            report.deletions += 1;
        }
        if self.level == Tier::Off {
            return Ok(report);
        }
        let outbox = outbox::list_read_only(paths)?;
        let consumed: HashSet<Uuid> = outbox
            .iter()
            .flat_map(|(_, e)| e.consumed.iter().copied())
            .collect();
        let mut records: Vec<Record> = spool::read(paths)?
            .records
            .into_iter()
            .filter(|r| !consumed.contains(&r.id()))
            .collect();
        records.extend(extra);
        let planned = self.plan(records, &state).entries;
        for entry in outbox.into_iter().map(|(_, e)| e).chain(planned) {
            if entry.payload.tier > self.level {
                continue;
            }
            let body = serde_json::to_vec(&entry.payload).map_err(io::Error::other)?;
            print(INGEST_PATH, &body);
            report.delivered_payloads += 1;
            report.delivered_items += entry.items();
        }
        Ok(report)
    }

    /// Packages `records` into payloads: what to put in the outbox, what stays
    /// in the spool, and whether anything was taken out of it.
    fn plan(&self, records: Vec<Record>, state: &ToolState) -> Plan {
        let mut changed = false;
        let mut keep = Vec::new();
        let mut counts: BTreeMap<(Day, String, Props), (u64, Vec<Uuid>)> = BTreeMap::new();
        let mut events: BTreeMap<(Tier, Uuid), Vec<(Uuid, Event)>> = BTreeMap::new();
        // (Spool record id, event); they are equal, kept apart for clarity.
        for record in records {
            match record {
                Record::Count {
                    id,
                    day,
                    event,
                    props,
                    n,
                } if self.level >= Tier::Aggregate => {
                    let slot = counts.entry((day, event, props)).or_default();
                    slot.0 = slot.0.saturating_add(n);
                    slot.1.push(id);
                    changed = true;
                }
                Record::Event { install_id, .. } if state.install_id != Some(install_id) => {
                    // Recorded under an id that has since been reset or deleted;
                    // sending it under another id would link the two.
                    crate::log::debug!("dropping a spooled event of a retired install id");
                    changed = true;
                }
                Record::Event {
                    id,
                    tier,
                    install_id,
                    name,
                    ts,
                    props,
                } if tier <= self.level => {
                    events.entry((tier, install_id)).or_default().push((
                        id,
                        Event {
                            id,
                            name,
                            timestamp: ts,
                            props,
                        },
                    ));
                    changed = true;
                }
                other => keep.push(other),
            }
        }
        let mut entries = Vec::new();
        let context = ClientContext::current(self.tool_version);
        let counters: Vec<(Counter, Vec<Uuid>)> = counts
            .into_iter()
            .map(|((day, event, props), (n, from))| {
                let counter = Counter {
                    day,
                    event,
                    props,
                    count: n.min(limits::MAX_COUNT),
                };
                (counter, from)
            })
            .collect();
        let empty = IngestPayload {
            project: self.manifest.project.clone(),
            tier: Tier::Aggregate,
            context: context.clone(),
            report_id: Some(Uuid::nil()),
            counters: Some(Vec::new()),
            install_id: None,
            events: None,
            identity: None,
        };
        let budget = item_budget(&empty);
        let list: Vec<Counter> = counters.iter().map(|(c, _)| c.clone()).collect();
        let mut from = counters.into_iter().map(|(_, ids)| ids);
        for chunk in chunks_by_size(&list, limits::MAX_COUNTERS, budget) {
            let ids = from.by_ref().take(chunk.len()).flatten().collect();
            let payload = IngestPayload {
                report_id: Some(Uuid::new_v4()),
                counters: Some(chunk),
                ..empty.clone()
            };
            entries.push(Entry {
                consumed: ids,
                payload,
            });
        }
        for ((tier, install_id), list) in events {
            let identity =
                (tier == Tier::Full && !state.identity.is_empty()).then(|| state.identity.clone());
            let empty = IngestPayload {
                project: self.manifest.project.clone(),
                tier,
                context: context.clone(),
                report_id: None,
                counters: None,
                install_id: Some(install_id),
                events: Some(Vec::new()),
                identity,
            };
            let budget = item_budget(&empty);
            let list: Vec<Event> = list.into_iter().map(|(_, e)| e).collect();
            for chunk in chunks_by_size(&list, limits::MAX_EVENTS, budget) {
                // An event's id is the id of the spool record it came from.
                let consumed = chunk.iter().map(|e| e.id).collect();
                let payload = IngestPayload {
                    events: Some(chunk),
                    ..empty.clone()
                };
                entries.push(Entry { consumed, payload });
            }
        }
        Plan {
            entries,
            keep,
            changed,
        }
    }

    /// Writes `entry` to the outbox if it passes the same checks the collector
    /// applies; a payload that fails them would only be refused, so it is
    /// dropped here and logged. Returns the occurrences dropped.
    fn put_checked(
        &self,
        entry: Entry,
        now: Timestamp,
        log: &mut Vec<LogEntry>,
    ) -> io::Result<u64> {
        let checked = telemetry_protocol::validate(&entry.payload)
            .and_then(|()| self.manifest.validate_payload(&entry.payload));
        match checked {
            Ok(()) => outbox::put(self.paths, &entry, now).map(|_| 0),
            Err(violations) => {
                crate::log::debug!(%violations, "dropping a payload that fails the tier policy");
                log.push(LogEntry {
                    time: now,
                    kind: UploadKind::Ingest,
                    tier: Some(entry.payload.tier),
                    items: entry.items(),
                    result: UploadResult::Invalid,
                    detail: violations.to_string(),
                });
                Ok(entry.occurrences())
            }
        }
    }

    /// Sends the queued deletions, then the outbox, and schedules the next
    /// attempt. Deletions go first: an opt-out must not wait behind data.
    /// Stops at the first failure so that a dead collector costs one
    /// timeout, not one per payload.
    pub(crate) fn send(
        &self,
        transport: &dyn Transport,
        deadline: Option<Instant>,
    ) -> io::Result<UploadReport> {
        let paths = self.paths;
        let mut report = UploadReport::default();
        let mut log = Vec::new();
        let mut retry_after = None;
        // A drop is counted in the state before its payload leaves the
        // outbox, not at the end of the run: an uploader killed after a 2xx
        // (the drill kill -9s them at random moments) must not lose the
        // count of what the collector refused. A kill between the two resends
        // the payload, which the collector recognises by its ids.
        // Counted once per outbox file: a resend after such a kill is
        // answered with the same refusals, which were counted already.
        let count_now = |file: &std::path::Path, why: &'static str, n: u64| -> io::Result<()> {
            let _lock = Lock::acquire(&paths.data_lock())?;
            let mut state = ToolState::load(paths);
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if state.refusals_counted.contains(&name) {
                return Ok(());
            }
            state.count_dropped(why, n);
            state.refusals_counted.push(name);
            let excess = state
                .refusals_counted
                .len()
                .saturating_sub(crate::state::REFUSALS_COUNTED_KEPT);
            state.refusals_counted.drain(..excess);
            state.save(paths)
        };
        let out_of_time = || deadline.is_some_and(|d| Instant::now() >= d);
        let fail = |report: &mut UploadReport, why: String| {
            report.failure.get_or_insert(why);
        };

        let project = self.manifest.project.clone();
        for install_id in ToolState::load(paths).pending_deletions {
            if out_of_time() {
                fail(&mut report, "timed out".into());
                break;
            }
            let body = serde_json::to_vec(&DeleteRequest {
                project: project.clone(),
                install_id,
            })
            .map_err(io::Error::other)?;
            let outcome = transport.post(DELETE_PATH, &body);
            let (result, detail) = self.settle(&outcome, &mut report, &mut retry_after);
            log.push(LogEntry {
                time: self.clock.now(),
                kind: UploadKind::Delete,
                tier: None,
                items: 1,
                result,
                detail,
            });
            match outcome {
                Outcome::Delivered { .. } | Outcome::Rejected(_) => {
                    // A refused deletion (counted in `settle`) will never
                    // succeed, so it leaves the queue like a delivered one.
                    if !matches!(outcome, Outcome::Rejected(_)) {
                        report.deletions += 1;
                    }
                    let _lock = Lock::acquire(&paths.data_lock())?;
                    let mut state = ToolState::load(paths);
                    state.pending_deletions.retain(|id| *id != install_id);
                    state.save(paths)?;
                }
                Outcome::TooLarge(why) | Outcome::RetryAfter(_, why) | Outcome::Failed(why) => {
                    fail(&mut report, why);
                    break;
                }
            }
        }

        if report.failure.is_none()
            && self.level >= Tier::Aggregate
            && !out_of_time()
            && let Some(why) =
                self.send_health(transport, &mut report, &mut log, &mut retry_after)?
        {
            fail(&mut report, why);
        }

        let mut queue: std::collections::VecDeque<(std::path::PathBuf, Entry)> =
            if report.failure.is_none() {
                outbox::list(paths)?.into()
            } else {
                Default::default()
            };
        while let Some((path, entry)) = queue.pop_front() {
            if entry.payload.tier > self.level {
                // Packaged when the level was higher (an environment ceiling
                // may apply to this run only); it waits.
                continue;
            }
            if out_of_time() {
                fail(&mut report, "timed out".into());
                break;
            }
            let body = serde_json::to_vec(&entry.payload).map_err(io::Error::other)?;
            let outcome = transport.post(INGEST_PATH, &body);
            let (result, detail) = self.settle(&outcome, &mut report, &mut retry_after);
            log.push(LogEntry {
                time: self.clock.now(),
                kind: UploadKind::Ingest,
                tier: Some(entry.payload.tier),
                items: entry.items(),
                result,
                detail,
            });
            match outcome {
                Outcome::Delivered { refused } => {
                    report.delivered_payloads += 1;
                    report.delivered_items += entry.items();
                    if refused > 0 {
                        count_now(&path, reason::REFUSED_ITEMS, refused)?;
                    }
                    crate::files::remove_if_exists(&path)?;
                }
                Outcome::Rejected(_) => {
                    count_now(&path, reason::REFUSED_PAYLOAD, entry.occurrences())?;
                    crate::files::remove_if_exists(&path)?;
                }
                Outcome::TooLarge(why) => match split(&entry) {
                    // Data is never dropped for its size: the halves go to
                    // the front of the queue and are sent at once.
                    Some((first, second)) => {
                        let now = self.clock.now();
                        let second_path = outbox::put(paths, &second, now)?;
                        let first_path = outbox::put(paths, &first, now)?;
                        crate::files::remove_if_exists(&path)?;
                        queue.push_front((second_path, second));
                        queue.push_front((first_path, first));
                    }
                    None => {
                        fail(&mut report, why);
                        break;
                    }
                },
                Outcome::RetryAfter(_, why) | Outcome::Failed(why) => {
                    fail(&mut report, why);
                    break;
                }
            }
        }

        let _lock = Lock::acquire(&paths.data_lock())?;
        let mut state = ToolState::load(paths);
        let now = self.clock.now();
        state.last_attempt = Some(now);
        state.endpoint_last_used = Some(self.endpoint.to_owned());
        if report.delivered_payloads + report.deletions > 0 {
            state.last_upload = Some(now);
        }
        let wait = if report.failure.is_some() {
            state.failures = state.failures.saturating_add(1);
            backoff(self.interval, state.failures)
                .max(retry_after.unwrap_or_default())
                .min(MAX_BACKOFF)
        } else {
            state.failures = 0;
            self.interval
        };
        state.next_attempt = Some(later(now, wait));
        state.save(paths)?;
        upload_log::append(paths, &log)?;
        Ok(report)
    }

    /// Sends the drop counts as `telemetry_dropped` counters in an aggregate
    /// payload of their own (no install id), which every tier may send. The
    /// report is fixed in the state before it is sent, and the counts leave
    /// `dropped` only after a 2xx; a 400 or 422 drops them without counting
    /// them again, so a collector that refuses them cannot cause a loop.
    /// Returns why it failed, if it did.
    fn send_health(
        &self,
        transport: &dyn Transport,
        report: &mut UploadReport,
        log: &mut Vec<LogEntry>,
        retry_after: &mut Option<Duration>,
    ) -> io::Result<Option<String>> {
        let paths = self.paths;
        let health = {
            let _lock = Lock::acquire(&paths.data_lock())?;
            let mut state = ToolState::load(paths);
            if state.health.is_none() && state.dropped.values().any(|n| *n > 0) {
                state.health = Some(HealthReport {
                    report_id: Uuid::new_v4(),
                    day: self.clock.now().day(),
                    counts: state.dropped.clone(),
                });
                state.save(paths)?;
            }
            state.health
        };
        let Some(health) = health else {
            return Ok(None);
        };
        let counters: Vec<Counter> = health
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(why, n)| Counter {
                day: health.day,
                event: builtin::DROPPED.to_owned(),
                props: Props::from([(
                    builtin::DROPPED_REASON_PROP.to_owned(),
                    PropValue::Token(why.clone()),
                )]),
                count: (*n).min(limits::MAX_COUNT),
            })
            .collect();
        let payload = IngestPayload {
            project: self.manifest.project.clone(),
            tier: Tier::Aggregate,
            context: ClientContext::current(self.tool_version),
            report_id: Some(health.report_id),
            counters: Some(counters),
            install_id: None,
            events: None,
            identity: None,
        };
        let entry = Entry {
            consumed: Vec::new(),
            payload,
        };
        let checked = telemetry_protocol::validate(&entry.payload)
            .and_then(|()| self.manifest.validate_payload(&entry.payload));
        let outcome = match checked {
            Ok(()) => {
                let body = serde_json::to_vec(&entry.payload).map_err(io::Error::other)?;
                transport.post(INGEST_PATH, &body)
            }
            Err(violations) => Outcome::Rejected(format!("fails the client's check: {violations}")),
        };
        let (result, detail) = self.settle(&outcome, report, retry_after);
        log.push(LogEntry {
            time: self.clock.now(),
            kind: UploadKind::Ingest,
            tier: Some(Tier::Aggregate),
            items: entry.items(),
            result,
            detail,
        });
        match outcome {
            Outcome::Delivered { .. } | Outcome::Rejected(_) => {
                if matches!(outcome, Outcome::Delivered { .. }) {
                    report.delivered_payloads += 1;
                    report.delivered_items += entry.items();
                }
                let _lock = Lock::acquire(&paths.data_lock())?;
                let mut state = ToolState::load(paths);
                for (why, n) in &health.counts {
                    if let Some(left) = state.dropped.get_mut(why) {
                        *left = left.saturating_sub(*n);
                    }
                }
                state.dropped.retain(|_, n| *n > 0);
                state.health = None;
                state.save(paths)?;
                Ok(None)
            }
            Outcome::TooLarge(why) | Outcome::RetryAfter(_, why) | Outcome::Failed(why) => {
                Ok(Some(why))
            }
        }
    }

    /// Turns an outcome into a log result and detail, counting rejections.
    fn settle(
        &self,
        outcome: &Outcome,
        report: &mut UploadReport,
        retry_after: &mut Option<Duration>,
    ) -> (UploadResult, String) {
        match outcome {
            Outcome::Delivered { refused: 0 } => (UploadResult::Delivered, "2xx".into()),
            Outcome::Delivered { refused } => (
                UploadResult::Delivered,
                format!("2xx; the collector refused {refused} items on their own"),
            ),
            Outcome::TooLarge(why) => {
                crate::log::debug!(reason = %why, "payload too large; splitting it");
                (UploadResult::Deferred, format!("{why}; split in half"))
            }
            Outcome::Rejected(why) => {
                crate::log::debug!(reason = %why, "collector refused a payload; dropping it");
                report.rejected += 1;
                (UploadResult::Rejected, why.clone())
            }
            Outcome::RetryAfter(after, why) => {
                *retry_after = *after;
                (UploadResult::Deferred, why.clone())
            }
            Outcome::Failed(why) => {
                crate::log::debug!(reason = %why, "upload failed; will retry later");
                (UploadResult::Failed, why.clone())
            }
        }
    }
}

/// Sends the queued deletions of `project` on their own (for
/// `telemetry-consent`, which has no manifest), and schedules a retry with
/// back-off if one fails. Returns how many the collector acknowledged. The
/// caller holds the tool's uploader lock.
#[cfg_attr(not(any(feature = "cli", feature = "test-bins")), allow(dead_code))]
pub(crate) fn deliver_deletions(
    paths: &ToolPaths,
    project: &str,
    endpoint: &str,
    transport: &dyn Transport,
    clock: &dyn Clock,
    deadline: Option<Instant>,
) -> io::Result<u64> {
    let mut log = Vec::new();
    let mut delivered = 0;
    let mut failed = false;
    let mut retry_after = None;
    for install_id in ToolState::load(paths).pending_deletions {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            failed = true;
            break;
        }
        let body = serde_json::to_vec(&DeleteRequest {
            project: project.to_owned(),
            install_id,
        })
        .map_err(io::Error::other)?;
        let outcome = transport.post(DELETE_PATH, &body);
        let (result, detail) = match &outcome {
            Outcome::Delivered { .. } => (UploadResult::Delivered, "2xx".to_owned()),
            Outcome::Rejected(why) => (UploadResult::Rejected, why.clone()),
            Outcome::RetryAfter(after, why) => {
                retry_after = *after;
                (UploadResult::Deferred, why.clone())
            }
            Outcome::TooLarge(why) | Outcome::Failed(why) => (UploadResult::Failed, why.clone()),
        };
        log.push(LogEntry {
            time: clock.now(),
            kind: UploadKind::Delete,
            tier: None,
            items: 1,
            result,
            detail,
        });
        match outcome {
            Outcome::Delivered { .. } | Outcome::Rejected(_) => {
                delivered += u64::from(matches!(outcome, Outcome::Delivered { .. }));
                let _lock = Lock::acquire(&paths.data_lock())?;
                let mut state = ToolState::load(paths);
                state.pending_deletions.retain(|id| *id != install_id);
                state.save(paths)?;
            }
            _ => {
                failed = true;
                break;
            }
        }
    }
    let _lock = Lock::acquire(&paths.data_lock())?;
    let mut state = ToolState::load(paths);
    let now = clock.now();
    state.last_attempt = Some(now);
    state.endpoint_last_used = Some(endpoint.to_owned());
    if failed {
        state.failures = state.failures.saturating_add(1);
        // The tool's own interval is unknown here; the default one is the base.
        let wait = backoff(crate::DEFAULT_UPLOAD_INTERVAL, state.failures)
            .max(retry_after.unwrap_or_default())
            .min(MAX_BACKOFF);
        state.next_attempt = Some(later(now, wait));
    }
    state.save(paths)?;
    upload_log::append(paths, &log)?;
    Ok(delivered)
}

/// Splits a payload in half (counters or events), or `None` if it holds a
/// single item. Counter halves get fresh report ids: the collector refused
/// the whole, so neither half was counted under the old one.
fn split(entry: &Entry) -> Option<(Entry, Entry)> {
    let p = &entry.payload;
    let half = |payload: IngestPayload| Entry {
        consumed: entry.consumed.clone(),
        payload,
    };
    if let Some(counters) = p.counters.as_ref().filter(|c| c.len() > 1) {
        let (a, b) = counters.split_at(counters.len() / 2);
        let with = |list: &[Counter]| IngestPayload {
            counters: Some(list.to_vec()),
            report_id: Some(Uuid::new_v4()),
            ..p.clone()
        };
        return Some((half(with(a)), half(with(b))));
    }
    let events = p.events.as_ref().filter(|e| e.len() > 1)?;
    let (a, b) = events.split_at(events.len() / 2);
    let with = |list: &[Event]| IngestPayload {
        events: Some(list.to_vec()),
        ..p.clone()
    };
    Some((half(with(a)), half(with(b))))
}

/// Groups `items` so that each group has at most `max_count` items and its
/// JSON at most `budget` bytes (commas included). An item larger than the
/// budget goes alone.
fn chunks_by_size<T: serde::Serialize + Clone>(
    items: &[T],
    max_count: usize,
    budget: usize,
) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = serde_json::to_vec(item).map_or(0, |b| b.len()) + 1;
        if !current.is_empty() && (current.len() >= max_count || bytes + size > budget) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(item.clone());
        bytes += size;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The bytes left for items in a payload shaped like `empty`.
fn item_budget(empty: &IngestPayload) -> usize {
    let envelope = serde_json::to_vec(empty).map_or(0, |b| b.len());
    MAX_PAYLOAD_BYTES.saturating_sub(envelope + 64)
}

/// The wait after `failures` consecutive failures: the interval doubled per
/// failure, at most 16 intervals and at most a day.
pub(crate) fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(4);
    interval.saturating_mul(factor).min(MAX_BACKOFF)
}

/// `at` plus `wait`, never past the year 9999.
pub(crate) fn later(at: Timestamp, wait: Duration) -> Timestamp {
    let millis = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    crate::clock::bounded(Timestamp::from_unix_millis(
        at.unix_millis().saturating_add(millis),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_job<'a>(
        paths: &'a ToolPaths,
        manifest: &'a Manifest,
        clock: &'a crate::ManualClock,
    ) -> Job<'a> {
        Job {
            manifest,
            tool_version: "1.0.0",
            paths,
            level: Tier::Aggregate,
            clock,
            interval: Duration::from_secs(3600),
            endpoint: "http://127.0.0.1:9",
            outbox: OutboxLimits::default(),
        }
    }

    fn count_record(clock: &crate::ManualClock, n: u64) -> Record {
        count_record_days_ago(clock, 0, n)
    }

    /// A `command` count `days` before the clock's day: records of different
    /// days go into different payloads.
    fn count_record_days_ago(clock: &crate::ManualClock, days: i32, n: u64) -> Record {
        Record::Count {
            id: Uuid::new_v4(),
            day: Day::from_days_since_epoch(clock.now().day().days_since_epoch() - days),
            event: "command".into(),
            props: Props::new(),
            n,
        }
    }

    /// Writes the outbox file a staging round would have written for
    /// `records`, as a round killed after that `put` leaves it.
    fn put_packaged(job: &Job<'_>, records: Vec<Record>) {
        let state = ToolState::load(job.paths);
        for entry in job.plan(records, &state).entries {
            outbox::put(job.paths, &entry, job.clock.now()).unwrap();
        }
    }

    fn outbox_counts(paths: &ToolPaths) -> Vec<u64> {
        let mut counts: Vec<u64> = outbox::list(paths)
            .unwrap()
            .iter()
            .flat_map(|(_, e)| e.payload.counters.clone().unwrap_or_default())
            .map(|c| c.count)
            .collect();
        counts.sort_unstable();
        counts
    }

    /// A crash after the outbox was written but before the spool was
    /// rewritten leaves the journal; the next staging drops what it lists
    /// (and the outbox holds) from the spool instead of packaging it twice.
    #[test]
    fn a_staging_journal_left_by_a_crash_prevents_double_packaging() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ToolPaths {
            dir: dir.path().join("demo-cli"),
        };
        let manifest = Manifest::parse(crate::tests::MANIFEST).unwrap();
        let clock = crate::ManualClock::new("2026-11-18T10:00:00Z".parse().unwrap());
        let job = journal_job(&paths, &manifest, &clock);
        let (packaged, fresh) = (count_record(&clock, 2), count_record(&clock, 3));
        spool::append(
            &paths,
            &[packaged.clone(), fresh.clone()],
            Default::default(),
        )
        .unwrap();
        let journal = serde_json::to_vec(&[packaged.id()]).unwrap();
        crate::files::write_atomic(&paths.staging_journal(), &journal).unwrap();
        put_packaged(&job, vec![packaged]);
        job.stage().unwrap();
        assert!(!paths.staging_journal().exists());
        assert!(spool::is_empty(&paths));
        assert_eq!(
            outbox_counts(&paths),
            [2, 3],
            "the crashed round's payload once, and the record it did not package"
        );
    }

    /// The journal is written before the outbox, so an uploader killed
    /// between the two (or between two payloads) leaves a journal listing
    /// records that never reached the outbox. They must be packaged by the
    /// next round, not dropped from the spool as if they had been: that lost
    /// `command` counts in the fleet drill's kill slots with no drop counted.
    #[test]
    fn a_staging_journal_never_drops_what_did_not_reach_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ToolPaths {
            dir: dir.path().join("demo-cli"),
        };
        let manifest = Manifest::parse(crate::tests::MANIFEST).unwrap();
        let clock = crate::ManualClock::new("2026-11-18T10:00:00Z".parse().unwrap());
        let job = journal_job(&paths, &manifest, &clock);
        // Different days, so the crashed round would have made two payloads.
        let first = count_record(&clock, 2);
        let second = count_record_days_ago(&clock, 1, 5);
        spool::append(&paths, &[first.clone(), second.clone()], Default::default()).unwrap();
        let journal = serde_json::to_vec(&[first.id(), second.id()]).unwrap();
        crate::files::write_atomic(&paths.staging_journal(), &journal).unwrap();
        // Killed after the first payload's `put`, before the second's.
        put_packaged(&job, vec![first]);
        job.stage().unwrap();
        assert!(!paths.staging_journal().exists());
        assert!(spool::is_empty(&paths));
        assert_eq!(outbox_counts(&paths), [2, 5], "nothing lost, nothing twice");

        // Killed after the journal, before any payload: all of it stays.
        let third = count_record(&clock, 7);
        spool::append(&paths, std::slice::from_ref(&third), Default::default()).unwrap();
        let journal = serde_json::to_vec(&[third.id()]).unwrap();
        crate::files::write_atomic(&paths.staging_journal(), &journal).unwrap();
        job.stage().unwrap();
        assert_eq!(outbox_counts(&paths), [2, 5, 7]);
    }

    /// Answers the first ingest with a 2xx that refused one item, then
    /// "dies" (panics) on the next request, as an uploader killed mid-run.
    struct DiesOnSecond(std::cell::Cell<u32>);

    impl Transport for DiesOnSecond {
        fn post(&self, _path: &str, _body: &[u8]) -> Outcome {
            let n = self.0.get();
            self.0.set(n + 1);
            assert!(n == 0, "killed");
            Outcome::Delivered { refused: 1 }
        }
    }

    #[test]
    fn a_refusal_is_counted_before_a_later_kill() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ToolPaths {
            dir: dir.path().join("demo-cli"),
        };
        let manifest = Manifest::parse(crate::tests::MANIFEST).unwrap();
        let clock = crate::ManualClock::new("2026-11-18T10:00:00Z".parse().unwrap());
        let job = journal_job(&paths, &manifest, &clock);
        let first = count_record(&clock, 2);
        let second = count_record_days_ago(&clock, 1, 5);
        // Two payloads, as two staging rounds leave them.
        put_packaged(&job, vec![first]);
        put_packaged(&job, vec![second]);
        assert_eq!(outbox::list(&paths).unwrap().len(), 2);
        let transport = DiesOnSecond(std::cell::Cell::new(0));
        let died =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.send(&transport, None)));
        assert!(died.is_err());
        let state = ToolState::load(&paths);
        assert_eq!(
            state.dropped.get(reason::REFUSED_ITEMS).copied(),
            Some(1),
            "the refusal of the delivered payload survives the kill"
        );
        assert_eq!(outbox::list(&paths).unwrap().len(), 1);
    }

    /// Answers each data payload with a 2xx that refused one item, and adds
    /// up the `refused_items` that delivery-health payloads report.
    #[derive(Default)]
    struct RefusesOne {
        reported: std::cell::Cell<u64>,
    }

    impl Transport for RefusesOne {
        fn post(&self, _path: &str, body: &[u8]) -> Outcome {
            let payload: IngestPayload = serde_json::from_slice(body).unwrap();
            let health: Vec<_> = payload
                .counters
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.event == telemetry_protocol::manifest::builtin::DROPPED)
                .collect();
            if health.is_empty() {
                return Outcome::Delivered { refused: 1 };
            }
            for c in health {
                if c.props
                    .values()
                    .any(|v| v.to_string() == reason::REFUSED_ITEMS)
                {
                    self.reported.set(self.reported.get() + c.count);
                }
            }
            Outcome::Delivered { refused: 0 }
        }
    }

    #[test]
    fn a_payload_sent_again_after_a_kill_counts_its_refusals_once() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ToolPaths {
            dir: dir.path().join("demo-cli"),
        };
        let manifest = Manifest::parse(crate::tests::MANIFEST).unwrap();
        let clock = crate::ManualClock::new("2026-11-18T10:00:00Z".parse().unwrap());
        let job = journal_job(&paths, &manifest, &clock);
        put_packaged(&job, vec![count_record(&clock, 2)]);
        let (file, _) = outbox::list(&paths).unwrap().remove(0);
        let bytes = std::fs::read(&file).unwrap();
        let transport = RefusesOne::default();
        job.send(&transport, None).unwrap();
        // A kill between counting and removing the file leaves it in place:
        // the next uploader sends the same payload and gets the same answer.
        std::fs::write(&file, &bytes).unwrap();
        job.send(&transport, None).unwrap();
        job.send(&transport, None).unwrap();
        let state = ToolState::load(&paths);
        let kept = state
            .dropped
            .get(reason::REFUSED_ITEMS)
            .copied()
            .unwrap_or(0)
            + state
                .health
                .as_ref()
                .and_then(|h| h.counts.get(reason::REFUSED_ITEMS).copied())
                .unwrap_or(0);
        assert_eq!(
            transport.reported.get() + kept,
            1,
            "the collector refused one item once"
        );
        assert!(outbox::list(&paths).unwrap().is_empty());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(hour, 1), hour);
        assert_eq!(backoff(hour, 2), hour * 2);
        assert_eq!(backoff(hour, 5), hour * 16);
        assert_eq!(backoff(hour, 50), hour * 16);
        assert_eq!(backoff(hour * 6, 50), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(2), 30), Duration::from_secs(32));
    }
}
