//! The crash drill of issue 8: `kill -9` the collector repeatedly under load,
//! restart it on the same database each time, and check that no acknowledged
//! event was lost and none was counted twice.
//!
//! How it works:
//! 1. The collector binary is started on a fresh data folder in open mode with
//!    the rate limit off, listening on `127.0.0.1:0` (a new port each start).
//! 2. Each round, `writers` concurrent writers post batches with unique ids,
//!    half at `anonymous` (events with event ids), half at `aggregate`
//!    (counters under report ids). A writer first resends the batches it has
//!    not had acknowledged yet, as a real client's spool would.
//! 3. After a random number of acknowledgements (or a time limit, whichever
//!    comes first) the collector gets SIGKILL; requests in flight fail and
//!    stay unacknowledged. The collector is restarted on the same database,
//!    and its stats must already count every acknowledged event.
//! 4. After the last kill, every batch never acknowledged is resent until it
//!    is. Only then, with no acknowledged batch ever resent, the stats must
//!    equal the distinct events sent: a lost acknowledged event would be
//!    missing, a double count would show as a surplus. Finally every batch is
//!    replayed once more and must be answered `accepted: 0`.
//!
//! Counts come only from the collector's public stats API
//! (`/api/v1/projects/{project}/stats`), so the drill does not depend on how
//! the tables are laid out.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use telemetry_protocol::{IngestResponse, Tier};

use crate::Error;
use crate::payload::{PayloadFactory, PayloadSpec};

/// The admin token the drill's collector is configured with (loopback only).
const ADMIN_TOKEN: &str = "crashdrill-admin-token-0123456789abcdef";

/// One drill.
#[derive(Debug, Clone)]
pub struct DrillConfig {
    /// The collector binary (a release build).
    pub collector: PathBuf,
    /// A folder for the database, config and log; created if missing. Use a
    /// fresh one: the counts assume an empty database.
    pub dir: PathBuf,
    /// How many times to SIGKILL the collector.
    pub kills: u32,
    /// Concurrent writers; even ones send `anonymous`, odd ones `aggregate`.
    pub writers: usize,
    /// Events or counters per batch.
    pub batch: usize,
    /// Each round is killed after a random number of acknowledged requests in
    /// this range (inclusive)...
    pub kill_after_acks: (u64, u64),
    /// ...or after this long, whichever comes first.
    pub round_limit: Duration,
    /// The timeout of one request.
    pub request_timeout: Duration,
    /// Attempts per batch in the final resend before the drill gives up.
    pub resend_attempts: u32,
    /// The project name in every payload.
    pub project: String,
}

/// What a drill measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DrillReport {
    /// SIGKILLs delivered under load.
    pub kills: u32,
    /// Requests acknowledged with 2xx during the killed rounds.
    pub acked_requests: u64,
    /// Events and counter increments in those requests.
    pub acked_events: u64,
    /// Requests that failed because the collector died under them.
    pub transport_errors: u64,
    /// Of the batches cut off by a kill, those the collector had committed
    /// anyway: their resend was answered as all duplicates.
    pub committed_unacked: u64,
    /// Batches still unacknowledged after the last kill, resent until acknowledged.
    pub resent_batches: u64,
    /// Distinct batches sent over the whole drill.
    pub batches: u64,
    /// Distinct events and counter increments sent: what must be counted.
    pub expected: u64,
    /// What the collector's stats count at the end.
    pub counted: u64,
    /// `expected - counted` when positive: acknowledged data that vanished.
    pub lost: u64,
    /// `counted - expected` when positive: data counted twice.
    pub double_counted: u64,
    /// The largest shortfall seen right after a restart: acknowledged data
    /// the restarted collector did not count. Must be 0.
    pub lost_after_restart: u64,
    /// `accepted` summed over the final replay of every batch; must be 0.
    pub replay_accepted: u64,
    /// `duplicates` summed over that replay; must equal the records sent.
    pub replay_duplicates: u64,
    /// Events and counters in every batch, what the replay must call duplicates.
    pub records: u64,
    /// Wall time of the whole drill, in seconds.
    pub elapsed_secs: f64,
}

impl DrillReport {
    /// Whether the drill passed: nothing lost, nothing counted twice, and the
    /// replay stored nothing.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.double_counted == 0
            && self.lost_after_restart == 0
            && self.replay_accepted == 0
            && self.replay_duplicates == self.records
            && self.kills > 0
    }
}

/// One batch of the drill, kept for resends and the replay.
#[derive(Debug)]
struct Batch {
    /// The JSON body, byte for byte what every resend posts.
    body: Vec<u8>,
    tier: Tier,
    /// Events or counters in it.
    records: u64,
    /// Whether a 2xx has been seen for it.
    acked: AtomicBool,
}

/// Every batch sent so far, shared by the writers.
#[derive(Debug, Default)]
struct Ledger {
    batches: Mutex<Vec<Arc<Batch>>>,
}

impl Ledger {
    fn push(&self, batch: Arc<Batch>) {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(batch);
    }

    fn all(&self) -> Vec<Arc<Batch>> {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// (anonymous, aggregate) records of the batches `keep` selects. Each
    /// aggregate counter counts 1, so records are what stats add up.
    fn totals(&self, keep: impl Fn(&Batch) -> bool) -> (u64, u64) {
        self.all()
            .iter()
            .filter(|b| keep(b))
            .fold((0, 0), |(anon, agg), b| match b.tier {
                Tier::Aggregate => (anon, agg + b.records),
                _ => (anon + b.records, agg),
            })
    }
}

/// A running collector; SIGKILLed when dropped.
struct Collector {
    child: Child,
    url: String,
}

impl Collector {
    fn start(config: &DrillConfig, config_file: &Path) -> Result<Collector, Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.dir.join("collector.log"))
            .map_err(|e| Error::io("opening the collector log", e))?;
        let mut child = Command::new(&config.collector)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config_file)
            .env_remove("TELEMETRY_COLLECTOR_DB")
            .env_remove("TELEMETRY_COLLECTOR_LISTEN")
            .env_remove("TELEMETRY_COLLECTOR_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", config.collector.display()), e))?;
        let stdout = child.stdout.take().ok_or_else(|| drill("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = match lines.next() {
            Some(Ok(line)) => line,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(drill(format!(
                    "the collector exited before listening; see {}",
                    config.dir.join("collector.log").display()
                )));
            }
        };
        let Some(url) = first.strip_prefix("telemetry-collector listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(drill(format!("unexpected first line: {first}")));
        };
        let url = url.to_owned();
        // Keep draining stdout so the collector never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Collector { child, url })
    }

    /// SIGKILL: no chance to flush, drain or checkpoint.
    fn kill(mut self) -> Result<(), Error> {
        self.child
            .kill()
            .map_err(|e| Error::io("killing the collector", e))?;
        self.child
            .wait()
            .map_err(|e| Error::io("waiting for the collector", e))?;
        Ok(())
    }

    /// SIGTERM, then wait: the normal stop, used once at the end.
    fn terminate(mut self) -> Result<(), Error> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|e| Error::io("running kill", e))?;
        if !status.success() {
            return Err(drill("kill -TERM failed"));
        }
        self.child
            .wait()
            .map_err(|e| Error::io("waiting for the collector", e))?;
        Ok(())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drill(message: impl Into<String>) -> Error {
    Error::Drill(message.into())
}

/// How a post ended.
enum Posted {
    /// 2xx with the collector's counts.
    Acked(IngestResponse),
    /// Another status; the batch stays unacknowledged.
    Refused(u16),
    /// No answer: the collector died under the request.
    NoAnswer,
}

async fn post(client: &reqwest::Client, url: &str, body: &[u8]) -> Posted {
    let response = match client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return Posted::NoAnswer,
    };
    let status = response.status();
    let Ok(bytes) = response.bytes().await else {
        return Posted::NoAnswer;
    };
    if !status.is_success() {
        return Posted::Refused(status.as_u16());
    }
    match serde_json::from_slice::<IngestResponse>(&bytes) {
        Ok(r) => Posted::Acked(r),
        // A 2xx the drill cannot read is still a broken promise; surface it.
        Err(_) => Posted::Refused(status.as_u16()),
    }
}

/// (anonymous, aggregate) counts from the collector's stats API.
async fn counted(client: &reqwest::Client, base: &str, project: &str) -> Result<(u64, u64), Error> {
    let url = format!("{base}/api/v1/projects/{project}/stats");
    let response = client
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .map_err(|e| drill(format!("reading stats: {e}")))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| drill(format!("reading stats: {e}")))?;
    if !status.is_success() {
        return Err(drill(format!("stats answered {status}: {text}")));
    }
    let stats: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| drill(format!("stats are not JSON: {e}")))?;
    let tiers = stats["tiers"]
        .as_array()
        .ok_or_else(|| drill("stats carry no `tiers`"))?;
    let tier = |name: &str| {
        tiers
            .iter()
            .filter(|t| t["tier"] == name)
            .filter_map(|t| t["events"].as_u64())
            .sum::<u64>()
    };
    Ok((tier("anonymous"), tier("aggregate")))
}

fn client(timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // Never leave loopback, whatever a proxy variable says.
        .no_proxy()
        .build()
        .map_err(Error::Client)
}

/// A uniformly random number in `lo..=hi`.
fn random_in(lo: u64, hi: u64) -> u64 {
    let span = hi.saturating_sub(lo).saturating_add(1);
    lo + getrandom::u64().unwrap_or(0) % span
}

/// What one round of writers did.
#[derive(Debug, Default)]
struct RoundTally {
    acked_requests: u64,
    acked_records: u64,
    transport_errors: u64,
    committed_unacked: u64,
}

/// What the writers of one round share.
#[derive(Clone)]
struct Round {
    client: reqwest::Client,
    /// This start's `/v1/ingest` URL.
    url: String,
    ledger: Arc<Ledger>,
    /// Set right after the kill.
    stop: Arc<AtomicBool>,
    /// Acknowledgements this round, which decide when to kill.
    acks: Arc<AtomicU64>,
    deadline: Instant,
}

/// One writer: resends its unacknowledged batches, then sends new ones, until
/// `stop` is set, the collector stops answering, or the round's bounds hit.
async fn writer(
    round: Round,
    factory: Arc<PayloadFactory>,
    mut pending: Vec<Arc<Batch>>,
) -> (RoundTally, Vec<Arc<Batch>>) {
    let Round {
        client,
        url,
        ledger,
        stop,
        acks,
        deadline,
    } = round;
    let mut tally = RoundTally::default();
    let mut request = 0u64;
    // A hard cap besides the deadline, so a collector answering instantly
    // without being killed cannot keep the loop going.
    while request < 100_000 && !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let batch = match pending.pop() {
            Some(b) => b,
            None => {
                let payload = factory.payload(request);
                let body = match serde_json::to_vec(&payload) {
                    Ok(b) => b,
                    Err(_) => break,
                };
                let records = payload
                    .events
                    .as_ref()
                    .map(Vec::len)
                    .or(payload.counters.as_ref().map(Vec::len))
                    .unwrap_or(0) as u64;
                let batch = Arc::new(Batch {
                    body,
                    tier: payload.tier,
                    records,
                    acked: AtomicBool::new(false),
                });
                ledger.push(batch.clone());
                batch
            }
        };
        request += 1;
        match post(&client, &url, &batch.body).await {
            Posted::Acked(r) => {
                batch.acked.store(true, Ordering::SeqCst);
                // Ids are unique, so duplicates on a first acknowledgement
                // mean an earlier, cut-off attempt had committed.
                tally.committed_unacked += u64::from(r.duplicates > 0);
                tally.acked_requests += 1;
                tally.acked_records += batch.records;
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Posted::Refused(_) => {
                // Back-pressure (503) or a bug; either way it is retried later.
                pending.push(batch);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Posted::NoAnswer => {
                tally.transport_errors += 1;
                pending.push(batch);
                // The collector is gone; wait for the next round.
                break;
            }
        }
    }
    (tally, pending)
}

/// Runs the drill. An `Err` means it could not run; a run that found lost or
/// double-counted data returns `Ok` with a report that does not pass.
pub async fn run(config: DrillConfig) -> Result<DrillReport, Error> {
    if config.writers == 0 || config.kills == 0 {
        return Err(Error::InvalidArgument(
            "writers and kills must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| Error::io(format!("creating {}", config.dir.display()), e))?;
    let config_file = config.dir.join("collector.toml");
    let db = config.dir.join("telemetry.db");
    if db.exists() {
        return Err(drill(format!(
            "{} exists; the drill needs a fresh folder",
            db.display()
        )));
    }
    std::fs::write(
        &config_file,
        format!(
            "db = {db:?}\nadmin_token = {ADMIN_TOKEN:?}\n\n[rate_limit]\nrequests_per_minute = 0\n",
            db = db.to_string_lossy()
        ),
    )
    .map_err(|e| Error::io("writing the collector config", e))?;

    let factory = |tier| {
        PayloadFactory::new(PayloadSpec {
            project: config.project.clone(),
            tier,
            events: vec!["command".into()],
            batch: config.batch,
            installs: 50,
        })
        .map(Arc::new)
    };
    let factories = [factory(Tier::Anonymous)?, factory(Tier::Aggregate)?];
    let ledger = Arc::new(Ledger::default());
    let mut pending: Vec<Vec<Arc<Batch>>> = vec![Vec::new(); config.writers];
    let mut report = DrillReport::default();

    for round in 0..config.kills {
        let collector = Collector::start(&config, &config_file)?;
        let client = client(config.request_timeout)?;
        if round > 0 {
            report.lost_after_restart = report
                .lost_after_restart
                .max(shortfall(&client, &collector.url, &config.project, &ledger).await?);
        }
        let url = format!("{}/v1/ingest", collector.url);
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + config.round_limit;
        let shared = Round {
            client: client.clone(),
            url,
            ledger: ledger.clone(),
            stop: stop.clone(),
            acks: acks.clone(),
            deadline,
        };
        let mut writers = tokio::task::JoinSet::new();
        for (i, own) in pending.iter_mut().enumerate() {
            writers.spawn(writer(
                shared.clone(),
                factories[i % 2].clone(),
                std::mem::take(own),
            ));
        }
        // Kill at a random point under load: after this many acknowledgements
        // or at the round's time limit.
        let target = random_in(config.kill_after_acks.0, config.kill_after_acks.1);
        while acks.load(Ordering::SeqCst) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        collector.kill()?;
        report.kills += 1;
        stop.store(true, Ordering::SeqCst);
        let mut i = 0;
        while let Some(done) = writers.join_next().await {
            let (tally, left) = done.map_err(|e| drill(format!("a writer failed: {e}")))?;
            report.acked_requests += tally.acked_requests;
            report.acked_events += tally.acked_records;
            report.transport_errors += tally.transport_errors;
            report.committed_unacked += tally.committed_unacked;
            // Which writer a leftover batch goes back to does not matter.
            pending[i % config.writers].extend(left);
            i += 1;
        }
    }

    // The last restart: resend what was never acknowledged, then count.
    let collector = Collector::start(&config, &config_file)?;
    let client = client(config.request_timeout)?;
    report.lost_after_restart = report
        .lost_after_restart
        .max(shortfall(&client, &collector.url, &config.project, &ledger).await?);
    let url = format!("{}/v1/ingest", collector.url);
    let all = ledger.all();
    for batch in all.iter().filter(|b| !b.acked.load(Ordering::SeqCst)) {
        report.resent_batches += 1;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match post(&client, &url, &batch.body).await {
                Posted::Acked(r) => {
                    batch.acked.store(true, Ordering::SeqCst);
                    report.committed_unacked += u64::from(r.duplicates > 0);
                    break;
                }
                _ if attempts < config.resend_attempts => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Posted::Refused(status) => {
                    return Err(drill(format!("a resend kept getting {status}")));
                }
                Posted::NoAnswer => return Err(drill("the restarted collector stopped answering")),
            }
        }
    }
    let (anon, agg) = ledger.totals(|_| true);
    let (counted_anon, counted_agg) = counted(&client, &collector.url, &config.project).await?;
    report.batches = all.len() as u64;
    report.expected = anon + agg;
    report.counted = counted_anon + counted_agg;
    // Per tier, so a loss in one cannot hide behind a double count in the other.
    report.lost = anon.saturating_sub(counted_anon) + agg.saturating_sub(counted_agg);
    report.double_counted = counted_anon.saturating_sub(anon) + counted_agg.saturating_sub(agg);

    // Replay everything once more: nothing may be stored again.
    for batch in &all {
        report.records += batch.records;
        match post(&client, &url, &batch.body).await {
            Posted::Acked(r) => {
                report.replay_accepted += r.accepted;
                report.replay_duplicates += r.duplicates;
            }
            Posted::Refused(status) => return Err(drill(format!("a replay got {status}"))),
            Posted::NoAnswer => return Err(drill("the collector stopped answering the replay")),
        }
    }
    // A replay that stores what was lost is already reported as lost; only
    // counts beyond what was sent are double.
    let after = counted(&client, &collector.url, &config.project).await?;
    report.double_counted = report
        .double_counted
        .max(after.0.saturating_sub(anon) + after.1.saturating_sub(agg));
    collector.terminate()?;
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// How much acknowledged data a freshly restarted collector does not count
/// (0 when everything acknowledged so far is there).
async fn shortfall(
    client: &reqwest::Client,
    base: &str,
    project: &str,
    ledger: &Ledger,
) -> Result<u64, Error> {
    let (acked_anon, acked_agg) = ledger.totals(|b| b.acked.load(Ordering::SeqCst));
    if acked_anon + acked_agg == 0 {
        return Ok(0);
    }
    let (anon, agg) = counted(client, base, project).await?;
    Ok(acked_anon.saturating_sub(anon) + acked_agg.saturating_sub(agg))
}

/// The Markdown table header for [`row`].
pub const HEADER: &str = "| kills | acked requests | acked events | requests cut off by a kill | of them committed | lost | double-counted | replay: accepted / duplicates of records | time s |\n|---|---|---|---|---|---|---|---|---|";

/// One Markdown table row.
pub fn row(r: &DrillReport) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} / {} of {} | {:.1} |",
        r.kills,
        r.acked_requests,
        r.acked_events,
        r.transport_errors,
        r.committed_unacked,
        r.lost.max(r.lost_after_restart),
        r.double_counted,
        r.replay_accepted,
        r.replay_duplicates,
        r.records,
        r.elapsed_secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> DrillReport {
        DrillReport {
            kills: 10,
            acked_requests: 100,
            acked_events: 1000,
            records: 1200,
            replay_duplicates: 1200,
            expected: 1200,
            counted: 1200,
            ..DrillReport::default()
        }
    }

    #[test]
    fn only_an_exact_count_passes() {
        assert!(clean().passed());
        let failing = [
            DrillReport { lost: 1, ..clean() },
            DrillReport {
                lost_after_restart: 1,
                ..clean()
            },
            DrillReport {
                double_counted: 1,
                ..clean()
            },
            DrillReport {
                replay_accepted: 1,
                ..clean()
            },
            DrillReport {
                replay_duplicates: 1199,
                ..clean()
            },
            DrillReport {
                kills: 0,
                ..clean()
            },
        ];
        for report in failing {
            assert!(!report.passed(), "{report:?}");
        }
    }

    #[test]
    fn the_row_has_one_cell_per_header_column() {
        let header_cells = HEADER.lines().next().unwrap().matches('|').count();
        assert_eq!(row(&clean()).matches('|').count(), header_cells);
    }

    #[test]
    fn random_kill_points_stay_in_range() {
        for _ in 0..1000 {
            let n = random_in(50, 60);
            assert!((50..=60).contains(&n), "{n}");
        }
        assert_eq!(random_in(7, 7), 7);
    }
}
