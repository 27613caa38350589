//! The disk-full drill: a real collector process runs out of room under
//! concurrent ingest. Every request is answered `200` only once committed,
//! otherwise `503` with `Retry-After` and a JSON reason, never `500`; after
//! room is made the same process takes writes again, and the batches it
//! refused count exactly once when retried.
//!
//! Two real mechanisms, one per way SQLite reports it:
//! - **A full disk** (ENOSPC, `SQLITE_FULL`): the collector runs in a private
//!   mount namespace (`unshare --mount --propagation private`) with a 3 MiB
//!   tmpfs mounted over its data folder, two thirds of it taken by a filler
//!   file. The mount is invisible outside the collector and disappears with
//!   it, even if the test dies. The test reaches the collector's files
//!   through `/proc/<pid>/root`, which resolves paths in that process's mount
//!   namespace, to delete the filler. Mounting needs root (`CAP_SYS_ADMIN`).
//!   A loop-mounted image was not used: it would leave a system-wide mount
//!   behind a crashed test.
//! - **A write error** (EFBIG, `SQLITE_IOERR`): the collector runs under a
//!   512 KiB `RLIMIT_FSIZE` soft limit (`prlimit`) with SIGXFSZ ignored (an
//!   ignored signal stays ignored across `exec`), so a write past the limit
//!   fails instead of killing the process. `prlimit --pid` lifts it later.
//!
//! With `CI=true` a mechanism that cannot be set up fails its test; elsewhere
//! the test is skipped with a printed reason.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telemetry_protocol::Uuid;

use crate::common::*;

/// The tmpfs size and how much of it the filler takes, in 64 KiB blocks.
const TMPFS_SIZE: &str = "3m";
const FILLER_BLOCKS: u32 = 32;
/// The `RLIMIT_FSIZE` soft limit, in bytes.
const FILE_SIZE_LIMIT: u64 = 512 * 1024;
pub(crate) const WRITERS: usize = 4;
const EVENTS_PER_BATCH: usize = 10;
/// Every fifth batch is an `aggregate` report of one counter this large.
const COUNTER: u64 = 3;
/// Refusals seen before the fill phase stops.
pub(crate) const ENOUGH_REFUSALS: usize = 8;
/// Bounds of the fill phase, whatever the filesystem does.
const MAX_REQUESTS_PER_WRITER: usize = 2000;
const MAX_FILL_TIME: Duration = Duration::from_secs(120);

/// One request the test sent.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) payload: Value,
    /// `true` for `aggregate`, `false` for `anonymous`.
    pub(crate) aggregate: bool,
    /// Events, or the counter's count: what stats add up.
    pub(crate) items: u64,
    /// Events or counters: what `accepted` and `duplicates` count.
    pub(crate) records: u64,
}

/// An answer: status, `Retry-After`, JSON body.
pub(crate) type Answer = (u16, Option<String>, Value);

pub(crate) fn batch(install: Uuid, n: usize) -> Sent {
    if n % 5 == 4 {
        let payload = json!({
            "project": "demo",
            "tier": "aggregate",
            "context": context(),
            "report_id": new_id(),
            "counters": [{"day": today(), "event": "command", "props": {"name": "init"}, "count": COUNTER}],
        });
        return Sent {
            payload,
            aggregate: true,
            items: COUNTER,
            records: 1,
        };
    }
    let events = (0..EVENTS_PER_BATCH)
        .map(|_| json!({"id": new_id(), "name": "command", "timestamp": now_ts(), "props": {"name": "greet"}}))
        .collect();
    Sent {
        payload: anonymous(install, events),
        aggregate: false,
        items: EVENTS_PER_BATCH as u64,
        records: EVENTS_PER_BATCH as u64,
    }
}

pub(crate) async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Answer {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the collector answers every request, full disk or not");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, retry_after, body)
}

/// Checks a refusal: 503, a whole number of seconds to wait, the protocol's
/// What [`fill`] got back: the batches acknowledged, those refused with
/// their answers, and any other answer (which the drills fail on).
pub(crate) struct Fill {
    pub(crate) acked: Vec<Sent>,
    pub(crate) refused: Vec<(Sent, Answer)>,
    pub(crate) others: Vec<Answer>,
}

/// Fills the store through `ingest_url`: [`WRITERS`] concurrent writers, so
/// refusals hit group commits too, each sending up to `max_requests`
/// batches, until [`ENOUGH_REFUSALS`] 503s, any other answer, or `max_time`.
pub(crate) async fn fill(ingest_url: &str, max_requests: usize, max_time: Duration) -> Fill {
    let acked: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let refused: Arc<Mutex<Vec<(Sent, Answer)>>> = Arc::default();
    let refusals = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (acked, refused, refusals, stop, url) = (
            acked.clone(),
            refused.clone(),
            refusals.clone(),
            stop.clone(),
            ingest_url.to_owned(),
        );
        writers.spawn(async move {
            let client = client();
            let install = new_id();
            let mut others = Vec::new();
            for n in 0..max_requests {
                if stop.load(Ordering::SeqCst) || started.elapsed() > max_time {
                    break;
                }
                let sent = batch(install, n);
                let answer = post(&client, &url, &sent.payload).await;
                match answer.0 {
                    200 => {
                        assert_eq!(answer.2, json!({"accepted": sent.records, "duplicates": 0}));
                        acked.lock().unwrap().push(sent);
                    }
                    503 => {
                        refused.lock().unwrap().push((sent, answer));
                        if refusals.fetch_add(1, Ordering::SeqCst) + 1 >= ENOUGH_REFUSALS {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    _ => {
                        others.push(answer);
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            }
            others
        });
    }
    let mut others = Vec::new();
    while let Some(result) = writers.join_next().await {
        others.extend(result.unwrap());
    }
    let acked = acked.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    Fill {
        acked,
        refused,
        others,
    }
}

/// JSON error body.
pub(crate) fn assert_refusal((status, retry_after, body): &Answer) {
    assert_eq!(*status, 503, "{body}");
    let secs: u64 = retry_after
        .as_deref()
        .expect("a 503 carries Retry-After")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(secs >= 1);
    assert_eq!(body["error"], "overloaded", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// (anonymous events, aggregate counts) the collector reports for today.
pub(crate) async fn counted(client: &reqwest::Client, url: &str) -> (u64, u64) {
    let text = http_admin_get(client, &format!("{url}/api/v1/projects/demo/stats")).await;
    let stats: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("stats: {text}"));
    let tier = |name: &str| {
        stats["tiers"]
            .as_array()
            .expect("stats list tiers")
            .iter()
            .filter(|t| t["tier"] == name)
            .map(|t| t["events"].as_u64().unwrap())
            .sum::<u64>()
    };
    (tier("anonymous"), tier("aggregate"))
}

pub(crate) fn totals<'a>(sent: impl IntoIterator<Item = &'a Sent>) -> (u64, u64) {
    sent.into_iter().fold((0, 0), |(events, counts), s| {
        if s.aggregate {
            (events, counts + s.items)
        } else {
            (events + s.items, counts)
        }
    })
}

/// The `telemetry_storage_unavailable` gauge from `/metrics`.
pub(crate) async fn storage_unavailable(client: &reqwest::Client, url: &str) -> String {
    let text = http_admin_get(client, &format!("{url}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix("telemetry_storage_unavailable "))
        .unwrap_or_else(|| panic!("no storage gauge in\n{text}"))
        .to_owned()
}

/// How the drill takes room away from the collector and gives it back.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// A tiny tmpfs, mostly taken by a filler file: ENOSPC.
    FullDisk,
    /// `RLIMIT_FSIZE` with SIGXFSZ ignored: EFBIG.
    FileSize,
}

impl Limit {
    /// Whether the mechanism can be set up here.
    fn available(self, dir: &Path) -> Result<(), String> {
        match self {
            Limit::FullDisk => can_mount(dir),
            Limit::FileSize => {
                let status = Command::new("prlimit")
                    .args(["--fsize=1000000:unlimited", "true"])
                    .status()
                    .map_err(|e| format!("cannot run prlimit: {e}"))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("`prlimit --fsize` failed ({status})"))
                }
            }
        }
    }

    /// The wrapper that sets the limit up and then execs the collector
    /// (appended by [`Collector::spawn`]), so its pid is the collector's.
    fn wrapper(self, data: &Path) -> Command {
        let mut command;
        match self {
            Limit::FullDisk => {
                command = Command::new("unshare");
                command
                    .args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(format!(
                        "mount -t tmpfs -o size={TMPFS_SIZE} tmpfs \"$1\" \
                         && dd if=/dev/zero of=\"$1/filler\" bs=64k count={FILLER_BLOCKS} status=none \
                         && shift && exec \"$@\""
                    ))
                    .arg("sh")
                    .arg(data);
            }
            Limit::FileSize => {
                command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!(
                        "trap '' XFSZ && exec prlimit --fsize={FILE_SIZE_LIMIT}:unlimited -- \"$@\""
                    ))
                    .arg("sh");
            }
        }
        command.arg(Collector::BIN);
        command
    }

    /// Gives the collector room again.
    fn lift(self, pid: u32, data: &Path) {
        match self {
            Limit::FullDisk => {
                // The filler as the collector's own mount namespace sees it.
                let filler = format!("/proc/{pid}/root{}/filler", data.display());
                std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("removing {filler}: {e}"));
            }
            Limit::FileSize => {
                let status = Command::new("prlimit")
                    .args(["--pid", &pid.to_string(), "--fsize=unlimited:unlimited"])
                    .status()
                    .unwrap();
                assert!(status.success(), "prlimit --pid lifts the limit");
            }
        }
    }
}

/// Whether this process may mount a tmpfs in a private mount namespace.
fn can_mount(dir: &Path) -> Result<(), String> {
    let probe = dir.join("probe");
    std::fs::create_dir(&probe).unwrap();
    let output = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
        ])
        .args(["-o", "size=64k", "tmpfs"])
        .arg(&probe)
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`unshare --mount` + `mount -t tmpfs` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503_and_nothing_unwritten_is_acknowledged() {
    drill(Limit::FullDisk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_gets_503_and_nothing_unwritten_is_acknowledged() {
    drill(Limit::FileSize).await;
}

// A skip, and the figures of a run, must be visible in the test output.
#[allow(clippy::print_stderr)]
async fn drill(limit: Limit) {
    let dir = tempfile::tempdir().unwrap();
    if let Err(why) = limit.available(dir.path()) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but the {limit:?} drill cannot be set up: {why}");
        }
        // The skip must be visible in the test output, not a silent pass.
        eprintln!("{limit:?} drill skipped: {why} (a private tmpfs needs root)");
        return;
    }
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = config_file_at(dir.path(), &data.join("telemetry.db"), "");
    let log = dir.path().join("collector.log");

    let collector = Collector::spawn(
        limit.wrapper(&data),
        &config,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let url = collector.url.clone();
    let ingest_url = format!("{url}/v1/ingest");
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };

    // Fill the disk: concurrent writers, so refusals hit group commits too.
    let Fill {
        acked,
        refused,
        others,
    } = fill(&ingest_url, MAX_REQUESTS_PER_WRITER, MAX_FILL_TIME).await;
    assert!(
        others.is_empty(),
        "only 200 and 503 are acceptable answers, got {others:?}\ncollector log:\n{}",
        log_tail()
    );
    assert!(
        !refused.is_empty(),
        "the disk never filled: {} batches acknowledged",
        acked.len()
    );
    assert!(
        !acked.is_empty(),
        "nothing was stored before the disk filled"
    );
    eprintln!(
        "{limit:?} drill: {} batches acknowledged, {} refused before making room",
        acked.len(),
        refused.len()
    );
    for (_, answer) in &refused {
        assert_refusal(answer);
    }

    // Exactly what was acknowledged is counted: nothing refused slipped in.
    let client = client();
    assert_eq!(
        counted(&client, &url).await,
        totals(&acked),
        "counted == acknowledged while writes fail"
    );

    // While the disk stays full, writes keep failing and /metrics says so. A
    // small write may still fit, so probe a few times.
    let (mut acked, mut refused) = (acked, refused);
    let mut flagged = false;
    for n in 0..5 {
        let probe = batch(new_id(), n);
        let answer = post(&client, &ingest_url, &probe.payload).await;
        if answer.0 == 200 {
            acked.push(probe);
            continue;
        }
        assert_refusal(&answer);
        assert_eq!(storage_unavailable(&client, &url).await, "1");
        refused.push((probe, answer));
        flagged = true;
        break;
    }
    assert!(flagged, "writes still fail before room is made");
    assert_eq!(counted(&client, &url).await, totals(&acked));

    limit.lift(collector.child.id(), &data);

    // Every refused batch is stored now, whole and once: none of it had been.
    for (sent, _) in &refused {
        let answer = post(&client, &ingest_url, &sent.payload).await;
        assert_eq!(
            (answer.0, &answer.2),
            (200, &json!({"accepted": sent.records, "duplicates": 0})),
            "a refused batch is accepted in full once there is room\ncollector log:\n{}",
            log_tail()
        );
    }
    assert_eq!(
        storage_unavailable(&client, &url).await,
        "0",
        "a committed write clears the gauge"
    );
    // New data flows again.
    let install = new_id();
    let fresh: Vec<Sent> = (0..10).map(|n| batch(install, n)).collect();
    for sent in &fresh {
        let answer = post(&client, &ingest_url, &sent.payload).await;
        assert_eq!(
            (answer.0, &answer.2),
            (200, &json!({"accepted": sent.records, "duplicates": 0}))
        );
    }
    // Replaying everything stores nothing twice.
    let everything: Vec<&Sent> = acked
        .iter()
        .chain(refused.iter().map(|(s, _)| s))
        .chain(&fresh)
        .collect();
    for sent in &everything {
        let answer = post(&client, &ingest_url, &sent.payload).await;
        assert_eq!(
            (answer.0, &answer.2),
            (200, &json!({"accepted": 0, "duplicates": sent.records}))
        );
    }
    assert_eq!(
        counted(&client, &url).await,
        totals(everything.iter().copied()),
        "every batch counted exactly once"
    );
    assert!(collector.terminate(), "SIGTERM stops the collector cleanly");
}
