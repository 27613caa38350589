//! The detached uploader, after the Go toolchain's design: when an upload is
//! due, the host re-executes its own binary with a marker variable, without
//! waiting for it, and [`crate::Builder::build`] in that child sends and exits.
//!
//! The host pays for one `stat` of the spool and a read of the state file on
//! most runs; it spawns at most once per upload interval, and never while
//! another uploader holds the tool's uploader lock, so a hundred quick runs
//! against a dead collector leave at most one process behind.

use std::process::{Command, Stdio};

use telemetry_protocol::Tier;

use crate::env::UPLOADER_MARKER;
use crate::files::Lock;
use crate::state::ToolState;
use crate::transport::{self, Http};
use crate::upload::{self, Job, REQUEST_TIMEOUT};
use crate::{Core, outbox, spool};

impl Core {
    /// The upload job for this tool and level.
    pub(crate) fn job<'a>(&'a self, paths: &'a crate::folders::ToolPaths) -> Job<'a> {
        Job {
            manifest: &self.manifest,
            tool_version: &self.tool_version,
            paths,
            level: self.level(),
            clock: self.clock.as_ref(),
            interval: self.interval,
            endpoint: &self.endpoint,
            outbox: self.outbox_limits,
        }
    }
}

/// End-of-run check on the host: start the uploader if one is due.
pub(crate) fn after_run(core: &Core) {
    let Some(paths) = &core.paths else { return };
    if core.dry {
        // The user asked to see payloads instead of sending them; doing it
        // in-process is the only way they reach this terminal. Nothing on
        // disk changes.
        if let Err(e) = core.job(paths).preview(core.drain_buffer()) {
            crate::log::debug!(error = %e, "debug print failed");
        }
        return;
    }
    let now = core.clock.now();
    if !core.detach || claimed_until(paths).is_some_and(|t| t > now) {
        return;
    }
    let state = ToolState::load(paths);
    let has_data = core.level() > Tier::Off && !(spool::is_empty(paths) && outbox::is_empty(paths));
    if !has_data && state.pending_deletions.is_empty() {
        return;
    }
    if state.next_attempt.is_some_and(|t| t > now) {
        return;
    }
    if let Err(why) = transport::check_endpoint(&core.endpoint) {
        crate::log::debug!(endpoint = %core.endpoint, "not uploading: {why}");
        return;
    }
    match Lock::try_acquire(&paths.uploader_lock()) {
        Ok(Some(free)) => drop(free),
        _ => return,
    }
    // Claim this interval before spawning, so concurrent hosts do not all
    // spawn. The claim is a file of its own, written without fsync: the
    // state file's durable write (two fsyncs, and the same for its backup)
    // cost the host about a millisecond, and a claim lost in a crash only
    // means that one more uploader may start, which finds the uploader lock
    // held or the outbox empty. It is overwritten in place at a fixed width,
    // never truncated: on ext4 mounted with `discard`, truncating a file
    // that has a block waits for the disk to discard it. Where the data lock
    // is taken (an uploader packaging), this run does not wait for it; that
    // uploader looks at the spool again when it is done.
    let claimed = match Lock::try_acquire(&paths.data_lock()) {
        Ok(Some(_lock)) => {
            if claimed_until(paths).is_some_and(|t| t > now) {
                Ok(false)
            } else {
                write_claim(paths, upload::later(now, core.interval)).map(|()| true)
            }
        }
        Ok(None) => Ok(false),
        Err(e) => Err(e),
    };
    match claimed {
        Ok(true) => spawn(&core.manifest.project),
        Ok(false) => {}
        Err(e) => crate::log::debug!(error = %e, "cannot schedule an upload"),
    }
}

/// Writes the claim: the slot's end in Unix milliseconds, zero-padded to
/// [`CLAIM_WIDTH`] digits, over whatever the file held.
fn write_claim(
    paths: &crate::folders::ToolPaths,
    until: telemetry_protocol::Timestamp,
) -> std::io::Result<()> {
    let mut file = crate::files::open_private(
        &paths.upload_claim(),
        std::fs::OpenOptions::new().write(true).create(true),
    )?;
    let text = format!(
        "{:0width$}",
        until.unix_millis().max(0),
        width = CLAIM_WIDTH
    );
    std::io::Write::write_all(&mut file, text.as_bytes())
}

/// The claim file's fixed width: any `i64` fits.
const CLAIM_WIDTH: usize = 20;

/// The end of the upload slot a host last claimed, if the claim file holds
/// one. Total on any content: a damaged or missing claim means no claim.
fn claimed_until(paths: &crate::folders::ToolPaths) -> Option<telemetry_protocol::Timestamp> {
    let text = std::fs::read(paths.upload_claim()).ok()?;
    let millis: i64 = std::str::from_utf8(&text).ok()?.trim().parse().ok()?;
    Some(telemetry_protocol::Timestamp::from_unix_millis(millis))
}

/// Starts the detached uploader now, whatever the schedule says: a deletion
/// was just queued (opt-out, reset, downgrade), and it must reach the
/// collector within seconds, not at the next upload slot, even if the user
/// never runs the tool again.
pub(crate) fn start_now(core: &Core) {
    if !core.detach || core.dry {
        return;
    }
    if let Err(why) = transport::check_endpoint(&core.endpoint) {
        crate::log::debug!(endpoint = %core.endpoint, "not uploading: {why}");
        return;
    }
    spawn(&core.manifest.project);
}

/// Starts this binary as the detached uploader and does not wait for it.
pub(crate) fn spawn(tool: &str) {
    spawn_with(tool, &[]);
}

/// [`spawn`] with arguments, for a binary that must parse its command line
/// before it can see the marker (`telemetry-consent`).
pub(crate) fn spawn_with(tool: &str, args: &[&str]) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            crate::log::debug!(error = %e, "cannot find the host binary to start the uploader");
            return;
        }
    };
    // Cargo puts test harnesses in `target/<profile>/deps/`. Re-executing one
    // would run the host's whole test suite again instead of an upload, so a
    // host's own tests never start the uploader (they can call `flush`).
    if exe
        .parent()
        .and_then(|dir| dir.file_name())
        .is_some_and(|name| name == "deps")
    {
        crate::log::debug!("running inside a test harness; not starting the uploader");
        return;
    }
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(UPLOADER_MARKER, tool)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    #[cfg(unix)]
    {
        // Its own process group: a Ctrl-C aimed at the host's terminal job
        // does not kill an upload half-way (which would be safe, but wasteful).
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    // A host that outlives its uploader must reap it, or it stays a zombie.
    // Waiting in a thread of its own cost a thread's creation on every
    // spawn; instead the children are kept and reaped without blocking at
    // the next spawn, so a long-running host holds at most the zombies of
    // one upload interval, and a short one (the usual host) exits first and
    // leaves its child to init.
    let mut children = CHILDREN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    children.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
    match cmd.spawn() {
        Ok(child) => {
            lower_priority_of(&child);
            children.push(child);
        }
        Err(e) => crate::log::debug!(error = %e, "cannot start the uploader"),
    }
}

/// The nice value an uploader runs at: the lowest priority there is.
pub(crate) const UPLOADER_NICE: i32 = 19;

/// Puts the uploader just started at the lowest CPU priority. The spawn
/// returns once the child has exec'd, and the child then often runs on the
/// host's core; at the host's priority it kept that core while the host
/// exited and its caller woke, which made a due run's cost swing between
/// +0.6 and +1.4 ms (docs/benchmarks.md, "upload every run, settled").
/// Lowered here, it steadied at +0.7 ms. std has no hook before `exec`
/// without `unsafe`, so this is the earliest the host can do it.
fn lower_priority_of(child: &std::process::Child) {
    #[cfg(unix)]
    {
        let pid = rustix::process::Pid::from_child(child);
        if let Err(e) = rustix::process::setpriority_process(Some(pid), UPLOADER_NICE) {
            crate::log::debug!(error = %e, "cannot lower the uploader's priority");
        }
    }
}

/// Puts this process (the uploader, as its first act) at the lowest CPU
/// priority, so that it runs on time the user's own programs leave idle,
/// also where its parent could not set it. It runs before any thread
/// starts, because Linux keeps the value per thread and new threads inherit
/// it. Where it fails, the upload goes on at normal priority.
pub(crate) fn lower_priority() {
    #[cfg(unix)]
    if let Err(e) = rustix::process::setpriority_process(None, UPLOADER_NICE) {
        crate::log::debug!(error = %e, "cannot lower the uploader's priority");
    }
}

/// When this uploader's budget ends: set once, when it first holds the lock.
static DEADLINE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Starts the budget on first call: sets [`DEADLINE`] (no request starts
/// after it) and a watchdog thread that ends the process then, for the
/// request that is still hanging.
fn arm_budget() {
    let mut armed = false;
    DEADLINE.get_or_init(|| {
        armed = true;
        std::time::Instant::now() + UPLOADER_BUDGET
    });
    if armed {
        let spawned = std::thread::Builder::new()
            .name("uploader-budget".to_owned())
            .spawn(|| {
                std::thread::sleep(UPLOADER_BUDGET);
                crate::log::debug!("the uploader's time is up; what is left goes with a later one");
                std::process::exit(0);
            });
        if let Err(e) = spawned {
            crate::log::debug!(error = %e, "cannot start the uploader's watchdog");
        }
    }
}

/// Uploaders this process started and has not reaped yet.
static CHILDREN: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

/// How long an uploader works in all, from the moment it holds the uploader
/// lock: when it is up, it exits, whatever it was doing (a blackholed
/// collector leaves a request hanging). Stopping there is as safe as a
/// `kill -9`, which the spool, outbox and state survive by design; what was
/// not acknowledged is sent by a later uploader. A detached process that
/// lingers for many seconds is what users notice in `ps`.
pub(crate) const UPLOADER_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// How long an uploader started for a deletion waits for a running one, which
/// its own budget ends sooner than this.
const DELETION_WAIT: std::time::Duration = std::time::Duration::from_secs(6);

/// Most packaging rounds one uploader runs before it leaves the rest to the
/// next interval.
const MAX_ROUNDS: u32 = 5;

/// The uploader process's whole job: take the lock, package, send, exit.
///
/// Hosts that finish while it runs see the lock held and do not start
/// another uploader, so after releasing the lock it looks at the spool once
/// more and goes round again if they left records: each host appends before
/// it checks the lock, and this checks the spool after releasing it, so one
/// of the two always notices.
pub(crate) fn run_uploader(core: &Core) {
    // A host with `#[tokio::main]` calls `build()` inside its runtime, where
    // the blocking HTTP client must not be created or dropped; a plain thread
    // of our own is always a safe place for it.
    std::thread::scope(|scope| {
        let _ = scope.spawn(|| upload_rounds(core)).join();
    });
}

fn upload_rounds(core: &Core) {
    let Some(paths) = &core.paths else { return };
    if let Err(why) = transport::check_endpoint(&core.endpoint) {
        crate::log::debug!(endpoint = %core.endpoint, "not uploading: {why}");
        return;
    }
    let http = match Http::new(&core.endpoint, REQUEST_TIMEOUT.min(UPLOADER_BUDGET)) {
        Ok(http) => http,
        Err(e) => {
            crate::log::debug!(error = %e, "cannot build the HTTP client");
            return;
        }
    };
    let job = core.job(paths);
    let started = std::time::Instant::now();
    for _ in 0..MAX_ROUNDS {
        let guard = loop {
            match Lock::try_acquire(&paths.uploader_lock()) {
                Ok(Some(guard)) => break guard,
                // Another uploader is running. It will send what is pending,
                // unless a deletion was queued after it passed its own; for
                // those, wait for it (bounded) and go after it.
                Ok(None)
                    if !ToolState::load(paths).pending_deletions.is_empty()
                        && started.elapsed() < DELETION_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                _ => return,
            }
        };
        arm_budget();
        if core.level() > Tier::Off
            && let Err(e) = job.stage()
        {
            crate::log::debug!(error = %e, "cannot package the spool");
        }
        let report = job.send(&http, DEADLINE.get().copied());
        drop(guard);
        match report {
            Ok(report) if report.failure.is_none() => {}
            Ok(_) => return,
            Err(e) => {
                crate::log::debug!(error = %e, "upload failed");
                return;
            }
        }
        let deletions = !ToolState::load(paths).pending_deletions.is_empty();
        if !deletions && (core.level() == Tier::Off || spool::is_empty(paths)) {
            return;
        }
    }
}
