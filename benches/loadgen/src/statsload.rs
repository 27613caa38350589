//! Fills a collector database with a realistic, deterministic history of
//! anonymous installs, for the stats-latency benchmark (`statsbench`).
//!
//! The data goes in through the collector's own [`Store::ingest`], in process,
//! so what lands in the database is exactly what a collector would have stored
//! from the same uploads, whatever its schema is today. Nothing here writes
//! SQL.
//!
//! # The synthetic history
//!
//! `installs` installs are first seen on days spread evenly over `days` days
//! ending on `end`. Each has a fixed version (newer installs, newer versions),
//! OS and arch, a number of events (exponentially distributed around the
//! average, at least two, adjusted so the total is exactly `events`) and a
//! lifetime of a few weeks, clipped at `end`. Its events are:
//! - `install` and `active` on its first day, then `setup_started` and
//!   `setup_completed` for most installs, as the lifecycle events of
//!   [`builtin`] are sent;
//! - on random days of its lifetime, one `active` on the first use in each new
//!   ISO week (carrying the bucketed install age, as the client sends it), and
//!   otherwise `command`, `error` or `plugin_loaded` with a few props.
//!
//! Each install uploads what it recorded once every `days_per_upload` days
//! (and on the last day), and days are replayed in order, as a fleet of
//! clients would send them. The upload rhythm changes only how many ingest
//! calls the load takes, not what is stored: the same events land on the same
//! days either way. Event ids are random
//! UUIDv4-shaped values, like the client's, from a seeded generator, so the
//! same spec always gives the same database content.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use telemetry_collector::store::sqlite::SqliteStore;
use telemetry_collector::store::{
    BatchContext, BatchData, IngestBatch, InstallHash, Store, StoreError,
};
use telemetry_protocol::manifest::{bucket_label, builtin};
use telemetry_protocol::{Day, Event, PropValue, Props, Tier, Timestamp, Uuid};
use tokio::task::JoinSet;

use crate::Error;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// Every install sends at least `install` and one `active`.
const MIN_EVENTS_PER_INSTALL: u64 = 2;

/// Mean lifetime of an install, in days, before clipping at the last day.
const MEAN_LIFETIME_DAYS: f64 = 21.0;

/// What to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSpec {
    /// The project every batch belongs to.
    pub project: String,
    /// Exactly this many events are stored.
    pub events: u64,
    /// Exactly this many installs, each with one `install` event.
    pub installs: u64,
    /// The days over which installs are first seen, ending on `end`.
    pub days: u32,
    /// The last day with data.
    pub end: Day,
    /// Seeds every random choice.
    pub seed: u64,
}

impl LoadSpec {
    /// Checks the spec can be honoured exactly.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if self.installs == 0 || self.days == 0 {
            return bad("installs and days must be at least 1".into());
        }
        if self.installs > u64::from(u32::MAX) {
            return bad(format!("at most {} installs", u32::MAX));
        }
        if self.events < self.installs * MIN_EVENTS_PER_INSTALL {
            return bad(format!(
                "{} installs need at least {} events (`install` and `active` each)",
                self.installs,
                self.installs * MIN_EVENTS_PER_INSTALL
            ));
        }
        if self.events / self.installs > 10_000 {
            return bad("more than 10,000 events per install is not a realistic history".into());
        }
        Ok(())
    }

    /// The first day with data.
    pub fn start(&self) -> Day {
        self.end.add_days(1 - self.days as i32)
    }
}

/// What loading did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Events the store accepted as new.
    pub accepted: u64,
    /// Events the store reported as replays; 0 unless ids collided.
    pub duplicates: u64,
    /// Ingest batches (one install, one day) written.
    pub batches: u64,
    /// Installs whose events were all sent.
    pub installs: u64,
    /// Wall time of the load, commits included.
    pub elapsed_secs: f64,
    /// `accepted / elapsed_secs`.
    pub events_per_sec: f64,
    /// Write transactions the store committed (group commit folds many batches into one).
    pub commits: u64,
    /// False when the time limit stopped the load early.
    pub complete: bool,
}

/// A seeded SplitMix64 generator: tiny, fast, and the same on every platform.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(mix(seed ^ mix(stream.wrapping_add(0xA076_1D64_78BD_642F))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`; `n > 0`.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Exponentially distributed with the given mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -(1.0 - self.unit()).ln() * mean
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Picks from `(item, weight)` pairs.
    fn pick<T: Copy>(&mut self, table: &[(T, u32)]) -> T {
        let total: u32 = table.iter().map(|(_, w)| w).sum();
        let mut x = self.below(u64::from(total)) as u32;
        for (item, w) in table {
            if x < *w {
                return *item;
            }
            x -= w;
        }
        table[table.len() - 1].0
    }

    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// SplitMix64's output function: the golden-ratio step, then its finalizer.
fn mix(z: u64) -> u64 {
    crate::payload::mix(z.wrapping_add(0x9E37_79B9_7F4A_7C15))
}

/// How many events each install sends: at least two, exponentially spread
/// around the average, and summing to exactly `spec.events`.
fn event_counts(spec: &LoadSpec) -> Vec<u32> {
    let n = spec.installs as usize;
    let mut rng = Rng::new(spec.seed, u64::MAX);
    let mean_extra = (spec.events as f64 / spec.installs as f64) - MIN_EVENTS_PER_INSTALL as f64;
    let cap = (spec.events / spec.installs).max(1) * 20;
    let mut counts: Vec<u32> = (0..n)
        .map(|_| {
            let extra = rng.exp(mean_extra).round() as u64;
            (MIN_EVENTS_PER_INSTALL + extra.min(cap)) as u32
        })
        .collect();
    // Walk round the installs adding or removing one event at a time until the
    // total is exact; the draw above is within a fraction of a percent of it.
    let mut diff = spec.events as i64 - counts.iter().map(|c| i64::from(*c)).sum::<i64>();
    let mut i = 0usize;
    while diff != 0 {
        let c = &mut counts[i % n];
        if diff > 0 {
            *c += 1;
            diff -= 1;
        } else if u64::from(*c) > MIN_EVENTS_PER_INSTALL {
            *c -= 1;
            diff += 1;
        }
        i += 1;
    }
    counts
}

/// One install's fixed traits.
struct Install {
    hash: InstallHash,
    context: BatchContext,
    first: Day,
}

const VERSIONS: [&str; 6] = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"];
const COMMANDS: [(&str, u32); 6] = [
    ("build", 40),
    ("test", 25),
    ("run", 15),
    ("check", 10),
    ("fmt", 6),
    ("deploy", 4),
];
const ERROR_KINDS: [(&str, u32); 4] = [("io", 4), ("parse", 3), ("network", 2), ("config", 1)];
const PLUGINS: [(&str, u32); 4] = [("git", 5), ("docker", 3), ("lsp", 2), ("s3", 1)];

/// The install `index` of `spec`: its id, context and first day. Installs
/// are numbered in order of their first day.
fn install(spec: &LoadSpec, index: u64, rng: &mut Rng) -> Install {
    let mut hash = [0u8; 16];
    hash[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    hash[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    let offset = (index * u64::from(spec.days) / spec.installs) as i32;
    let first = spec.start().add_days(offset);
    // Newer installs mostly get the version current on their first day.
    let current = (offset as usize * VERSIONS.len()) / spec.days as usize;
    let version = if current > 0 && rng.chance(0.2) {
        current - 1
    } else {
        current
    };
    let os = rng.pick(&[("linux", 60), ("macos", 30), ("windows", 10)]);
    let arch = rng.pick(&[("x86_64", 75), ("aarch64", 25)]);
    Install {
        hash: InstallHash(hash),
        context: BatchContext {
            version: VERSIONS[version].to_owned(),
            os: os.to_owned(),
            arch: arch.to_owned(),
        },
        first,
    }
}

fn event(rng: &mut Rng, day: Day, name: &str, props: Props) -> Event {
    Event {
        id: rng.uuid(),
        name: name.to_owned(),
        timestamp: Timestamp::from_unix_millis(
            i64::from(day.days_since_epoch()) * MILLIS_PER_DAY
                + rng.below(MILLIS_PER_DAY as u64) as i64,
        ),
        props,
    }
}

fn active(rng: &mut Rng, day: Day, first: Day) -> Event {
    let age = f64::from(day.days_since_epoch() - first.days_since_epoch());
    let props = Props::from([(
        builtin::ACTIVE_AGE_PROP.to_owned(),
        PropValue::Token(bucket_label(&builtin::ACTIVE_AGE_BOUNDS, age)),
    )]);
    event(rng, day, builtin::ACTIVE, props)
}

fn usage(rng: &mut Rng, day: Day) -> Event {
    let token = |s: &str| PropValue::Token(s.to_owned());
    match rng.pick(&[(0u8, 85), (1, 10), (2, 5)]) {
        0 => {
            let props = Props::from([
                ("name".to_owned(), token(rng.pick(&COMMANDS))),
                ("ok".to_owned(), PropValue::Bool(rng.chance(0.95))),
            ]);
            event(rng, day, "command", props)
        }
        1 => {
            let props = Props::from([("kind".to_owned(), token(rng.pick(&ERROR_KINDS)))]);
            event(rng, day, "error", props)
        }
        _ => {
            let props = Props::from([("plugin".to_owned(), token(rng.pick(&PLUGINS)))]);
            event(rng, day, "plugin_loaded", props)
        }
    }
}

/// Every event of one install, in day order.
fn history(spec: &LoadSpec, inst: &Install, count: u32, rng: &mut Rng) -> VecDeque<Event> {
    let first = inst.first;
    let mut out = VecDeque::with_capacity(count as usize);
    out.push_back(event(rng, first, builtin::INSTALL, Props::new()));
    out.push_back(active(rng, first, first));
    let mut left = count - 2;
    if left > 0 && rng.chance(0.85) {
        out.push_back(event(rng, first, builtin::SETUP_STARTED, Props::new()));
        left -= 1;
        if left > 0 && rng.chance(0.8) {
            out.push_back(event(rng, first, builtin::SETUP_COMPLETED, Props::new()));
            left -= 1;
        }
    }
    let room = spec.end.days_since_epoch() - first.days_since_epoch();
    let lifetime = (rng.exp(MEAN_LIFETIME_DAYS) as i32).min(room);
    let mut days: Vec<Day> = (0..left)
        .map(|_| first.add_days(rng.below(lifetime as u64 + 1) as i32))
        .collect();
    days.sort_unstable();
    let mut weeks = BTreeSet::from([first.week_start()]);
    for day in days {
        // The client sends `active` on the first use in each ISO week.
        let e = if weeks.insert(day.week_start()) {
            active(rng, day, first)
        } else {
            usage(rng, day)
        };
        out.push_back(e);
    }
    out
}

/// An install still sending, with its remaining events in day order.
struct Live {
    install: Install,
    pending: VecDeque<Event>,
}

/// How the load runs.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Ingest calls in flight at once; below the store's queue capacity so
    /// none is refused, and high so the writer can group many per commit.
    pub in_flight: usize,
    /// The load stops sending new batches after this long.
    pub max_duration: Duration,
    /// Days between an install's uploads; 1 uploads every day it is used.
    pub days_per_upload: u32,
}

/// Loads `spec` into `store`, day by day, each install uploading its recorded
/// events every `options.days_per_upload` days, with `options.in_flight`
/// ingest calls outstanding.
pub async fn load(
    store: Arc<SqliteStore>,
    spec: &LoadSpec,
    options: LoadOptions,
) -> Result<LoadReport, Error> {
    spec.check()?;
    let started = Instant::now();
    let commits_before = store.status().commits;
    let counts = event_counts(spec);
    let mut report = LoadReport {
        accepted: 0,
        duplicates: 0,
        batches: 0,
        installs: 0,
        elapsed_secs: 0.0,
        events_per_sec: 0.0,
        commits: 0,
        complete: true,
    };
    let mut tasks: JoinSet<Result<(u64, u64), StoreError>> = JoinSet::new();
    let in_flight = options.in_flight.max(1);
    let mut live: Vec<Live> = Vec::new();
    let mut next_install = 0u64;
    let mut day = spec.start();
    'days: while day <= spec.end {
        while next_install < spec.installs {
            let mut rng = Rng::new(spec.seed, next_install);
            let inst = install(spec, next_install, &mut rng);
            if inst.first > day {
                break;
            }
            let pending = history(spec, &inst, counts[next_install as usize], &mut rng);
            live.push(Live {
                install: inst,
                pending,
            });
            next_install += 1;
        }
        let upload_day =
            day == spec.end || day.days_since_epoch() % options.days_per_upload.max(1) as i32 == 0;
        for l in live.iter_mut().filter(|_| upload_day) {
            let mut events = Vec::new();
            while l.pending.front().is_some_and(|e| e.timestamp.day() <= day) {
                events.extend(l.pending.pop_front());
            }
            if events.is_empty() {
                continue;
            }
            if l.pending.is_empty() {
                report.installs += 1;
            }
            let batch = IngestBatch {
                project: spec.project.clone(),
                tier: Tier::Anonymous,
                context: l.install.context.clone(),
                received: day,
                data: BatchData::Events {
                    install: l.install.hash,
                    events,
                    identity: None,
                },
            };
            while tasks.len() >= in_flight {
                collect(&mut tasks, &mut report).await?;
            }
            if started.elapsed() > options.max_duration {
                report.complete = false;
                break 'days;
            }
            let store = store.clone();
            tasks.spawn(async move { ingest_retrying(&store, batch).await });
            report.batches += 1;
        }
        live.retain(|l| !l.pending.is_empty());
        day = day.add_days(1);
    }
    while !tasks.is_empty() {
        collect(&mut tasks, &mut report).await?;
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    report.events_per_sec = report.accepted as f64 / report.elapsed_secs.max(1e-9);
    report.commits = store.status().commits - commits_before;
    Ok(report)
}

/// One ingest; a full queue (which `in_flight` below its capacity should
/// prevent) is retried for up to ten seconds rather than losing the batch.
async fn ingest_retrying(
    store: &SqliteStore,
    batch: IngestBatch,
) -> Result<(u64, u64), StoreError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.ingest(batch.clone()).await {
            Ok(o) => return Ok((o.accepted, o.duplicates)),
            Err(StoreError::QueueFull) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn collect(
    tasks: &mut JoinSet<Result<(u64, u64), StoreError>>,
    report: &mut LoadReport,
) -> Result<(), Error> {
    let Some(joined) = tasks.join_next().await else {
        return Ok(());
    };
    let (accepted, duplicates) = joined
        .map_err(|e| Error::InvalidArgument(format!("an ingest task failed: {e}")))?
        .map_err(|e| Error::Store(e.to_string()))?;
    report.accepted += accepted;
    report.duplicates += duplicates;
    Ok(())
}

/// Where the spec and report of a loaded database are kept: a file beside it,
/// so the collector's schema is left alone.
pub fn manifest_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".statsbench.json");
    p.into()
}

/// What [`manifest_path`] holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Loaded {
    /// The spec the database was loaded with.
    pub spec: LoadSpec,
    /// How the load went.
    pub report: LoadReport,
}

/// The load recorded beside `db`, if there is one, finished or cut short.
pub fn previous_load(db: &Path) -> Option<Loaded> {
    let text = std::fs::read_to_string(manifest_path(db)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Records a load beside `db`.
pub fn record_load(db: &Path, loaded: &Loaded) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(loaded)
        .map_err(|e| Error::InvalidArgument(format!("encoding the load record: {e}")))?;
    std::fs::write(manifest_path(db), text)
        .map_err(|e| Error::io(format!("writing {}", manifest_path(db).display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(events: u64, installs: u64) -> LoadSpec {
        LoadSpec {
            project: "p".into(),
            events,
            installs,
            days: 30,
            end: "2026-11-20".parse().unwrap(),
            seed: 7,
        }
    }

    #[test]
    fn counts_sum_exactly_and_respect_the_minimum() {
        for (events, installs) in [(2_000, 200), (400, 200), (100_003, 1_000)] {
            let counts = event_counts(&spec(events, installs));
            assert_eq!(counts.len() as u64, installs);
            assert_eq!(counts.iter().map(|c| u64::from(*c)).sum::<u64>(), events);
            assert!(counts.iter().all(|c| *c >= 2));
        }
    }

    #[test]
    fn histories_are_deterministic_and_stay_in_range() {
        let s = spec(2_000, 200);
        let counts = event_counts(&s);
        let run = || {
            let mut rng = Rng::new(s.seed, 5);
            let inst = install(&s, 5, &mut rng);
            history(&s, &inst, counts[5], &mut rng)
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        assert_eq!(a.len() as u32, counts[5]);
        assert_eq!(a[0].name, builtin::INSTALL);
        assert!(a.iter().all(|e| e.timestamp.day() <= s.end));
        assert!(
            a.iter()
                .zip(a.iter().skip(1))
                .all(|(x, y)| x.timestamp.day() <= y.timestamp.day())
        );
    }

    #[test]
    fn a_spec_that_cannot_be_honoured_is_refused() {
        assert!(spec(399, 200).check().is_err());
        assert!(spec(0, 0).check().is_err());
        assert!(spec(400, 200).check().is_ok());
    }
}
