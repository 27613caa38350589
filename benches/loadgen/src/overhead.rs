//! The wall-time overhead harness: runs command A (with telemetry) and command
//! B (the reference) alternately, many times, against one endpoint, and
//! reports the median wall time of each and the median of their paired
//! differences.
//!
//! # Why this shape
//!
//! - **Alternating, in flipped order** (A B, B A, A B, ...): slow drifts of the
//!   machine (thermal, page cache, a neighbour's load) hit both sides equally,
//!   and neither side always runs second.
//! - **Whole processes, spawn to exit**: the host's user waits for exactly
//!   that. Standard streams are null, stdin is not a TTY (so nothing prompts).
//! - **Medians**: process wall times have a long right tail.
//! - **Bounded**: every run has a timeout after which the harness kills it
//!   (by its pid), and the whole series stops at `max_time` even if fewer than
//!   `runs` pairs were done.
//!
//! Afterwards it reports the processes the A runs left alive (detached
//! uploaders, say) and, in a separate linger phase, how long one invocation of
//! A keeps any process alive: see [`crate::linger`].

use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Error;
use crate::endpoint::{Endpoint, EndpointMode};
use crate::linger::{self, MARKER_VAR};
use crate::stats::{Summary, median_ms, ms};

/// The placeholder replaced by the endpoint URL in arguments and env values.
pub const ENDPOINT_PLACEHOLDER: &str = "{endpoint}";

/// A command to run: a program, its arguments and extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program to run.
    pub program: String,
    /// Its arguments; [`ENDPOINT_PLACEHOLDER`] is replaced by the endpoint URL.
    pub args: Vec<String>,
    /// Extra environment variables; [`ENDPOINT_PLACEHOLDER`] in a value is replaced.
    pub env: Vec<(String, String)>,
}

impl CommandSpec {
    /// A command from a whitespace-separated line (no quoting: paths with
    /// spaces are not supported) and `KEY=VALUE` environment entries.
    pub fn parse(line: &str, env: &[String]) -> Result<CommandSpec, Error> {
        let mut words = line.split_whitespace().map(str::to_owned);
        let program = words
            .next()
            .ok_or_else(|| Error::InvalidArgument("empty command".into()))?;
        let env = env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| Error::InvalidArgument(format!("`{kv}` is not KEY=VALUE")))
            })
            .collect::<Result<_, _>>()?;
        Ok(CommandSpec {
            program,
            args: words.collect(),
            env,
        })
    }

    /// The command, ready to spawn, with the endpoint filled in and `marker` set.
    pub fn command(&self, endpoint: &str, marker: &str) -> Command {
        let fill = |s: &str| s.replace(ENDPOINT_PLACEHOLDER, endpoint);
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args.iter().map(|a| fill(a)))
            .envs(self.env.iter().map(|(k, v)| (k, fill(v))))
            .env(MARKER_VAR, marker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }
}

/// One harness run.
#[derive(Debug, Clone)]
pub struct OverheadConfig {
    /// The command with telemetry.
    pub a: CommandSpec,
    /// The reference command (telemetry off, or the baseline CLI).
    pub b: CommandSpec,
    /// The endpoint both commands are given.
    pub endpoint: EndpointMode,
    /// How many A/B pairs to time, at most.
    pub runs: usize,
    /// Untimed pairs run first, to warm the page cache.
    pub warmup: usize,
    /// The longest the timed series may take; it stops early after that.
    pub max_time: Duration,
    /// The longest one run may take before it is killed.
    pub run_timeout: Duration,
    /// How long a blackhole or the stub keeps one connection.
    pub hold_limit: Duration,
    /// How many single invocations of A to watch until every process they
    /// started is gone; 0 skips the linger phase.
    pub linger_runs: usize,
    /// The longest to wait for those processes before killing them.
    pub linger_limit: Duration,
    /// After each timed pair, wait (untimed) up to this long until no
    /// process A or B started is left, so that a detached child of one run
    /// (an uploader) does not compete with the runs timed after it: a run
    /// whose upload is due is then timed as it happens on a real machine,
    /// where the next upload is an interval away. `None` runs pairs back to
    /// back, the stress case.
    pub settle: Option<Duration>,
}

/// How long single invocations of A kept processes alive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LingerReport {
    /// Invocations watched.
    pub runs: usize,
    /// The longest time from spawn until A itself exited, in milliseconds.
    pub max_exit_ms: f64,
    /// The longest time from spawn until no process carrying A's marker was
    /// left (A and any child), in milliseconds.
    pub max_all_gone_ms: f64,
    /// Whether some process outlived `linger_limit` and had to be killed; then
    /// `max_all_gone_ms` is a lower bound.
    pub hit_limit: bool,
}

/// What the harness measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverheadReport {
    /// The endpoint mode's name.
    pub endpoint: String,
    /// The endpoint URL the commands were given.
    pub endpoint_url: String,
    /// Timed pairs completed.
    pub pairs: usize,
    /// Wall time of A, milliseconds.
    pub a: Summary,
    /// Wall time of B, milliseconds.
    pub b: Summary,
    /// The paired differences A − B, milliseconds; `diff.median` is the headline figure.
    pub diff: Summary,
    /// median(A) − median(B), milliseconds, for comparison with `diff.median`.
    pub diff_of_medians: f64,
    /// Runs of A that exited unsuccessfully.
    pub a_failures: usize,
    /// Runs of B that exited unsuccessfully.
    pub b_failures: usize,
    /// Runs of A killed at the run timeout.
    pub a_timeouts: usize,
    /// Runs of B killed at the run timeout.
    pub b_timeouts: usize,
    /// Processes started by the A runs still alive right after the series.
    pub a_left_alive: usize,
    /// Processes started by the B runs still alive right after the series.
    pub b_left_alive: usize,
    /// Connections the endpoint accepted during the whole harness run.
    pub endpoint_connections: u64,
    /// Requests the stub endpoint answered during the whole harness run.
    pub endpoint_requests: u64,
    /// Whether `max_time` ended the series before `runs` pairs.
    pub hit_time_limit: bool,
    /// The linger phase, if run.
    pub linger: Option<LingerReport>,
}

/// One timed run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ms: f64,
    success: bool,
    timed_out: bool,
}

/// Runs the harness.
pub fn run(config: &OverheadConfig) -> Result<OverheadReport, Error> {
    if config.runs == 0 {
        return Err(Error::InvalidArgument("runs must be at least 1".into()));
    }
    let endpoint = Endpoint::start(config.endpoint.clone(), config.hold_limit)?;
    let url = endpoint.url().to_owned();
    let watchdog = Watchdog::start()?;
    let marker_a = linger::new_marker("a");
    let marker_b = linger::new_marker("b");
    let run_one = |spec: &CommandSpec, marker: &str| {
        timed(
            &mut spec.command(&url, marker),
            &watchdog,
            config.run_timeout,
        )
    };

    for _ in 0..config.warmup {
        run_one(&config.a, &marker_a)?;
        run_one(&config.b, &marker_b)?;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let series_start = Instant::now();
    for i in 0..config.runs {
        if series_start.elapsed() >= config.max_time {
            break;
        }
        if i % 2 == 0 {
            a.push(run_one(&config.a, &marker_a)?);
            b.push(run_one(&config.b, &marker_b)?);
        } else {
            b.push(run_one(&config.b, &marker_b)?);
            a.push(run_one(&config.a, &marker_a)?);
        }
        if let Some(limit) = config.settle {
            for marker in [&marker_a, &marker_b] {
                linger::wait_gone(marker, limit, POLL);
            }
        }
    }
    let a_left_alive = linger::alive_with_marker(&marker_a).len();
    let b_left_alive = linger::alive_with_marker(&marker_b).len();
    // Leave a clean machine for the linger phase and for whatever runs next.
    for marker in [&marker_a, &marker_b] {
        let (_, left) = linger::wait_gone(marker, config.linger_limit, POLL);
        linger::kill_all(&left);
    }

    let linger = (config.linger_runs > 0)
        .then(|| measure_linger(config, &url, &watchdog))
        .transpose()?;

    let wall = |s: &[Sample]| s.iter().map(|s| s.ms).collect::<Vec<_>>();
    let (wall_a, wall_b) = (wall(&a), wall(&b));
    let diffs: Vec<f64> = wall_a.iter().zip(&wall_b).map(|(a, b)| a - b).collect();
    let summary = |v: &[f64]| {
        Summary::of(v)
            .ok_or_else(|| Error::InvalidArgument("no pair finished within max_time".into()))
    };
    let count = |s: &[Sample], f: fn(&Sample) -> bool| s.iter().filter(|s| f(s)).count();
    Ok(OverheadReport {
        endpoint: config.endpoint.name().to_owned(),
        endpoint_url: url.clone(),
        pairs: a.len(),
        a: summary(&wall_a)?,
        b: summary(&wall_b)?,
        diff: summary(&diffs)?,
        diff_of_medians: median_ms(&wall_a).unwrap_or(0.0) - median_ms(&wall_b).unwrap_or(0.0),
        a_failures: count(&a, |s| !s.success),
        b_failures: count(&b, |s| !s.success),
        a_timeouts: count(&a, |s| s.timed_out),
        b_timeouts: count(&b, |s| s.timed_out),
        a_left_alive,
        b_left_alive,
        endpoint_connections: endpoint.connections(),
        endpoint_requests: endpoint.requests(),
        hit_time_limit: a.len() < config.runs,
        linger,
    })
}

/// How often the linger phase looks for surviving processes.
const POLL: Duration = Duration::from_millis(5);

fn measure_linger(
    config: &OverheadConfig,
    url: &str,
    watchdog: &Watchdog,
) -> Result<LingerReport, Error> {
    let mut report = LingerReport {
        runs: 0,
        max_exit_ms: 0.0,
        max_all_gone_ms: 0.0,
        hit_limit: false,
    };
    for _ in 0..config.linger_runs {
        let marker = linger::new_marker("linger");
        let sample = timed(
            &mut config.a.command(url, &marker),
            watchdog,
            config.run_timeout,
        )?;
        let (waited, left) = linger::wait_gone(&marker, config.linger_limit, POLL);
        if !left.is_empty() {
            linger::kill_all(&left);
            report.hit_limit = true;
        }
        report.runs += 1;
        report.max_exit_ms = report.max_exit_ms.max(sample.ms);
        report.max_all_gone_ms = report.max_all_gone_ms.max(sample.ms + ms(waited));
    }
    Ok(report)
}

fn timed(cmd: &mut Command, watchdog: &Watchdog, timeout: Duration) -> Result<Sample, Error> {
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {:?}", cmd.get_program()), e))?;
    watchdog.arm(child.id(), start + timeout);
    let status = child.wait();
    let elapsed = start.elapsed();
    let timed_out = watchdog.disarm();
    let status = status.map_err(|e| Error::io("waiting for the command", e))?;
    Ok(Sample {
        ms: ms(elapsed),
        success: status.success(),
        timed_out,
    })
}

/// Kills a run that outlives its timeout. One long-lived thread rather than a
/// thread per run, so arming it costs a channel send inside the timed region.
struct Watchdog {
    tx: Option<Sender<Msg>>,
    fired: Receiver<bool>,
    thread: Option<JoinHandle<()>>,
}

enum Msg {
    Arm(u32, Instant),
    Disarm,
}

impl Watchdog {
    fn start() -> Result<Watchdog, Error> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (fired_tx, fired) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("run-watchdog".into())
            .spawn(move || {
                while let Ok(msg) = rx.recv() {
                    let Msg::Arm(pid, deadline) = msg else {
                        continue;
                    };
                    let wait = deadline.saturating_duration_since(Instant::now());
                    let fired = match rx.recv_timeout(wait) {
                        Ok(_) => false,
                        Err(RecvTimeoutError::Timeout) => {
                            linger::kill_all(&[pid]);
                            // The main thread's wait returns now; take its disarm.
                            let _ = rx.recv();
                            true
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    };
                    if fired_tx.send(fired).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("starting the watchdog", e))?;
        Ok(Watchdog {
            tx: Some(tx),
            fired,
            thread: Some(thread),
        })
    }

    fn arm(&self, pid: u32, deadline: Instant) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Arm(pid, deadline));
        }
    }

    /// Disarms the watchdog; `true` if it had fired.
    fn disarm(&self) -> bool {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Disarm);
        }
        self.fired.recv().unwrap_or(false)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_and_env_parse_and_fill_the_endpoint() {
        let spec = CommandSpec::parse(
            "  /bin/demo-cli greet --to {endpoint}/x ",
            &["E={endpoint}".into(), "LEVEL=a=b".into()],
        )
        .unwrap();
        assert_eq!(spec.program, "/bin/demo-cli");
        assert_eq!(spec.args, ["greet", "--to", "{endpoint}/x"]);
        let cmd = spec.command("http://127.0.0.1:9", "m");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["greet", "--to", "http://127.0.0.1:9/x"]);
        let envs: Vec<_> = cmd.get_envs().map(|(k, v)| (k, v.unwrap())).collect();
        assert!(envs.contains(&("E".as_ref(), "http://127.0.0.1:9".as_ref())));
        assert!(envs.contains(&("LEVEL".as_ref(), "a=b".as_ref())));
        assert!(envs.contains(&(MARKER_VAR.as_ref(), "m".as_ref())));

        assert!(CommandSpec::parse("   ", &[]).is_err());
        assert!(CommandSpec::parse("true", &["NOEQUALS".into()]).is_err());
        assert!(CommandSpec::parse("true", &["=v".into()]).is_err());
    }

    #[test]
    fn the_watchdog_kills_a_run_past_its_timeout_and_not_before() {
        let watchdog = Watchdog::start().unwrap();
        let sample = timed(
            Command::new("sleep").arg("30"),
            &watchdog,
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(sample.timed_out && !sample.success);
        let sample = timed(
            &mut Command::new("true"),
            &watchdog,
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(!sample.timed_out && sample.success);
    }
}
