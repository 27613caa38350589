//! The management API: what the `telemetry` subcommand and the machine-wide
//! consent tool call. Nothing here prints; callers format the results.
//!
//! [`Control`] manages the running tool (status, enable/disable with the
//! opt-out path, reset id, show pending payloads, upload log, flush, the
//! first-run prompt decision). [`Machine`] manages every tool on the machine
//! through the shared consent folder (list, set a tool's level, the global
//! ceiling), without needing those tools' manifests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use telemetry_protocol::wire::{DELETE_PATH, INGEST_PATH};
use telemetry_protocol::{DeleteRequest, Manifest, Tier, Timestamp, Uuid};

use crate::Core;
use crate::clock::{Clock, SystemClock};
use crate::consent::{
    self, ConsentFile, ConsentInput, DefaultLevel, FileInput, Resolution, Source,
};
use crate::env::EnvSnapshot;
use crate::error::Error;
use crate::files::{self, Lock};
use crate::folders::{Folders, ToolPaths};
use crate::outbox;
use crate::spool::{self, Record};
use crate::state::ToolState;
use crate::transport::{self, Http};
use crate::upload::{self, Job, UploadReport};
use crate::upload_log::{self, LogEntry, UploadResult};

/// How long an unanswered first-run prompt stays quiet: a week.
const PROMPT_QUIET_MILLIS: i64 = 7 * 24 * 3600 * 1000;

/// What `telemetry status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The tool (manifest project).
    pub tool: String,
    /// The effective level.
    pub level: Tier,
    /// The rule that decided it.
    pub source: Source,
    /// The per-tool consent file.
    pub config_file: Option<PathBuf>,
    /// The install id; `None` below `anonymous`.
    pub install_id: Option<Uuid>,
    /// Items waiting to be sent: spooled records, packaged counters and
    /// events, and deletion requests.
    pub pending: u64,
    /// When data was last delivered.
    pub last_upload: Option<Timestamp>,
    /// What the current level sends, in plain words from the manifest.
    pub summary: String,
    /// Where data goes.
    pub endpoint: String,
    /// The level the user chose in the tool file, if any.
    pub choice: Option<Tier>,
    /// A consent file that could not be read, with the reason.
    pub unreadable: Option<String>,
    /// Deletion requests the collector has not acknowledged yet; they are
    /// retried until it does.
    pub pending_deletions: usize,
    /// The tool version payloads carry: `unknown` when the host gave none,
    /// or one that is not a token of at most 64 bytes.
    pub tool_version: String,
    /// Occurrences dropped locally (a full spool or outbox, an I/O error, a
    /// refusal) that are not yet reported to the collector, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Why the last attempt to send did not deliver (unreachable, deferred,
    /// no `curl` for the curl transport), if it did not.
    pub last_failure: Option<String>,
}

/// One request that would be sent next, exactly as it would be sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PendingPayload {
    /// `/v1/ingest` or `/v1/delete`.
    pub path: &'static str,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// The management API for the running tool. Get one from
/// [`crate::Telemetry::control`].
#[derive(Debug, Clone, Copy)]
pub struct Control<'a> {
    core: &'a Core,
}

impl<'a> Control<'a> {
    pub(crate) fn new(core: &'a Core) -> Control<'a> {
        Control { core }
    }

    /// The tool's name (its manifest project).
    pub fn tool(&self) -> &str {
        &self.core.manifest.project
    }

    /// The tool's manifest: events, identity fields, tier texts.
    pub fn manifest(&self) -> &Manifest {
        &self.core.manifest
    }

    fn folders(&self) -> Result<&Folders, Error> {
        self.core.folders.as_ref().ok_or(Error::NoHome)
    }

    fn paths(&self) -> Result<&ToolPaths, Error> {
        self.core.paths.as_ref().ok_or(Error::NoHome)
    }

    /// Resolves the level again from the files as they are now (they may
    /// have changed since start, for example by [`Control::set_level`]).
    pub(crate) fn resolve(&self) -> Resolution {
        let core = self.core;
        let read = |p: Option<PathBuf>| p.map_or(FileInput::Missing, |p| FileInput::read(&p));
        let folders = core.folders.as_ref();
        let mut r = consent::resolve(&ConsentInput {
            env: core.env.clone(),
            system_policy: read(core.system_policy.clone()),
            global: read(folders.map(Folders::global_file)),
            tool: read(folders.map(|f| f.tool_file(self.tool()))),
            default: core.default_level,
        });
        if folders.is_none() {
            r.level = Tier::Off;
        }
        r
    }

    /// The effective level and where it comes from, ids, pending items and
    /// the last upload.
    pub fn status(&self) -> Result<Status, Error> {
        let r = self.resolve();
        let paths = self.paths()?;
        let state = ToolState::load(paths);
        Ok(Status {
            tool: self.tool().to_owned(),
            level: r.level,
            source: r.source,
            config_file: self.core.folders.as_ref().map(|f| f.tool_file(self.tool())),
            install_id: state.install_id.filter(|_| r.level.has_install_id()),
            pending: pending_count(paths),
            last_upload: state.last_upload,
            summary: self.core.manifest.tier_summary(r.level),
            endpoint: self.core.endpoint.clone(),
            choice: r.choice,
            unreadable: r.unreadable.map(|(_, why)| why),
            pending_deletions: state.pending_deletions.len(),
            tool_version: self.core.tool_version.clone(),
            dropped: state.dropped,
            last_failure: upload_log::read(paths)
                .pop()
                .filter(|e| matches!(e.result, UploadResult::Failed | UploadResult::Deferred))
                .map(|e| e.detail),
        })
    }

    /// Whether the first-run prompt should be shown now: a person at the
    /// terminal (the checks `cli::prompt_if_needed` lists), no choice stored for this
    /// tool, no ceiling or environment variable that rules telemetry out
    /// anyway, not asked before in this run, and not left unanswered in the
    /// last week.
    pub fn should_prompt(&self) -> bool {
        let Some(folders) = &self.core.folders else {
            return false;
        };
        if !self.core.interactive || self.core.prompted.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        let r = self.resolve();
        let asked = self
            .core
            .paths
            .as_ref()
            .and_then(|p| ToolState::load(p).prompt_asked_at);
        let now = self.core.clock.now().unix_millis();
        let recently = asked.is_some_and(|t| {
            let since = now.saturating_sub(t.unix_millis());
            (0..PROMPT_QUIET_MILLIS).contains(&since)
        });
        r.unreadable.is_none()
            && r.ceiling > Tier::Off
            && !recently
            && FileInput::read(&folders.tool_file(self.tool())) == FileInput::Missing
    }

    /// Remembers that the prompt went unanswered (no answer in time, or one
    /// that is not a level), so it is not shown again for a week.
    // The first-run prompt is part of feature `cli`.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) fn note_unanswered(&self) -> Result<(), Error> {
        let paths = self.paths()?;
        let _lock =
            Lock::acquire(&paths.data_lock()).map_err(Error::io("lock", paths.data_lock()))?;
        let mut state = ToolState::load(paths);
        state.prompt_asked_at = Some(self.core.clock.now());
        state
            .save(paths)
            .map_err(Error::io("update", paths.state_file()))
    }

    /// Stores the prompt's answer; "no" is `Tier::Off`, which is stored too
    /// so the prompt is never shown again.
    pub fn store_prompt_answer(
        &self,
        tier: Tier,
        identity: BTreeMap<String, String>,
    ) -> Result<(), Error> {
        self.set_level(tier, identity)
    }

    /// Checks identity fields against the manifest: declared, and no longer
    /// than its `max_len`. Empty values are dropped.
    pub fn check_identity(
        &self,
        tier: Tier,
        identity: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let identity: BTreeMap<String, String> = identity
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        if tier != Tier::Full && !identity.is_empty() {
            return Err(Error::IdentityNeedsFull);
        }
        for (key, value) in &identity {
            let field = self
                .core
                .manifest
                .identity
                .get(key)
                .ok_or_else(|| Error::UnknownIdentityField(key.clone()))?;
            if value.chars().count() > field.max_len {
                return Err(Error::IdentityTooLong {
                    field: key.clone(),
                    max_len: field.max_len,
                });
            }
        }
        Ok(identity)
    }

    /// Stores the user's choice for this tool. Lowering from `anonymous` or
    /// `full` runs the opt-out path: the install id, identity and spooled
    /// events are deleted locally and a deletion request is queued; `full` →
    /// `anonymous` also starts a fresh id. `identity` is only for `full`.
    pub fn set_level(&self, tier: Tier, identity: BTreeMap<String, String>) -> Result<(), Error> {
        let identity = self.check_identity(tier, identity)?;
        let folders = self.folders()?;
        let now = self.core.clock.now();
        change_level(
            folders,
            self.tool(),
            tier,
            (tier == Tier::Full).then_some(identity),
            now,
        )?;
        self.core.changed(Some(tier));
        self.deletions_queued();
        Ok(())
    }

    /// After an opt-out, a reset or a downgrade that retired an id: stores
    /// where deletions go and starts the detached uploader at once, so that a
    /// reachable collector has deleted within seconds, with no further run.
    fn deletions_queued(&self) {
        let Some(paths) = &self.core.paths else {
            return;
        };
        let stored = Lock::acquire(&paths.data_lock()).and_then(|_lock| {
            let mut state = ToolState::load(paths);
            if state.pending_deletions.is_empty() && state.install_id.is_none() {
                return Ok(false);
            }
            // Stored with an id too: `telemetry-consent disable --all` may
            // retire it later, without this tool's manifest at hand.
            if state.endpoint.as_deref() != Some(self.core.endpoint.as_str()) {
                state.endpoint = Some(self.core.endpoint.clone());
                state.save(paths)?;
            }
            Ok(!state.pending_deletions.is_empty())
        });
        match stored {
            Ok(true) => crate::detach::start_now(self.core),
            Ok(false) => {}
            Err(e) => crate::log::debug!(error = %e, "cannot store the deletion endpoint"),
        }
    }

    /// Starts a new install id and queues deletion of the old one.
    pub fn reset_id(&self) -> Result<Uuid, Error> {
        let paths = self.paths()?;
        let level = self.resolve().level;
        let io = Error::io("update", paths.dir.clone());
        let _lock =
            Lock::acquire(&paths.data_lock()).map_err(Error::io("lock", paths.data_lock()))?;
        let mut state = ToolState::load(paths);
        let Some(old) = state.install_id else {
            return Err(Error::NoInstallId(level));
        };
        state.queue_deletion(old);
        let fresh = Uuid::new_v4();
        state.install_id = Some(fresh);
        purge(paths, true).map_err(Error::io("update", paths.dir.clone()))?;
        state.save(paths).map_err(io)?;
        drop(_lock);
        self.core.changed(None);
        self.deletions_queued();
        Ok(fresh)
    }

    fn job(&self, paths: &'a ToolPaths, level: Tier) -> Job<'a> {
        Job {
            level,
            ..self.core.job(paths)
        }
    }

    /// Exactly the requests that would be sent next: packaged payloads (the
    /// spool is packaged first, fixing their ids) and deletion requests.
    pub fn pending_payloads(&self) -> Result<Vec<PendingPayload>, Error> {
        let paths = self.paths()?;
        let level = self.resolve().level;
        if level > Tier::Off {
            self.job(paths, level)
                .stage()
                .map_err(Error::io("package", paths.spool()))?;
        }
        let mut out = Vec::new();
        for (_, entry) in outbox::list(paths).map_err(Error::io("read", paths.outbox()))? {
            if entry.payload.tier <= level {
                out.push(PendingPayload {
                    path: INGEST_PATH,
                    body: serde_json::to_value(&entry.payload).unwrap_or_default(),
                });
            }
        }
        for install_id in ToolState::load(paths).pending_deletions {
            let request = DeleteRequest {
                project: self.tool().to_owned(),
                install_id,
            };
            out.push(PendingPayload {
                path: DELETE_PATH,
                body: serde_json::to_value(&request).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The last uploads, oldest first.
    pub fn upload_log(&self) -> Result<Vec<LogEntry>, Error> {
        Ok(upload_log::read(self.paths()?))
    }

    /// Sends everything pending now, in this process, giving up after
    /// `timeout`. Waits for a running uploader to finish first. Errs if the
    /// collector could not be reached; the data then stays queued.
    pub fn flush(&self, timeout: Duration) -> Result<UploadReport, Error> {
        let paths = self.paths()?;
        let deadline = Instant::now() + timeout;
        let level = self.resolve().level;
        if self.core.dry {
            // Debug mode prints and changes nothing; see `Job::preview`.
            return self
                .job(paths, level)
                .preview(Vec::new())
                .map_err(Error::io("read", paths.dir.clone()));
        }
        if level == Tier::Off && ToolState::load(paths).pending_deletions.is_empty() {
            // At `off` only deletions are ever sent; with none queued there
            // is nothing to do, and nothing may be written but the consent
            // files (PRIVACY.md): no state, no schedule, no lock files.
            return Ok(UploadReport::default());
        }
        let _guard = loop {
            match Lock::try_acquire(&paths.uploader_lock()) {
                Ok(Some(guard)) => break guard,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25))
                }
                Ok(None) => return Err(Error::Timeout(timeout)),
                Err(e) => return Err(Error::io("lock", paths.uploader_lock())(e)),
            }
        };
        let job = self.job(paths, level);
        if level > Tier::Off {
            job.stage().map_err(Error::io("package", paths.spool()))?;
        }
        let report = {
            transport::check_endpoint(&self.core.endpoint).map_err(Error::Endpoint)?;
            let left = deadline.saturating_duration_since(Instant::now());
            // Its own thread: the blocking HTTP client must not run inside a
            // host's async runtime.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let http =
                            Http::new(&self.core.endpoint, left.min(upload::REQUEST_TIMEOUT))
                                .map_err(std::io::Error::other)?;
                        job.send(&http, Some(deadline))
                    })
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the upload thread failed")))
            })
        }
        .map_err(Error::io("update", paths.dir.clone()))?;
        match &report.failure {
            Some(why) if why == "timed out" => Err(Error::Timeout(timeout)),
            Some(why) => Err(Error::Unreachable(why.clone())),
            None => Ok(report),
        }
    }
}

/// Spooled records (counters count as their occurrences), packaged items and
/// queued deletions.
fn pending_count(paths: &ToolPaths) -> u64 {
    let spooled: u64 = spool::read(paths)
        .map(|c| {
            c.records
                .iter()
                .map(|r| match r {
                    Record::Count { n, .. } => *n,
                    Record::Event { .. } => 1,
                })
                .sum()
        })
        .unwrap_or(0);
    let packaged: u64 = outbox::list(paths)
        .map(|l| l.iter().map(|(_, e)| e.items()).sum())
        .unwrap_or(0);
    spooled + packaged + ToolState::load(paths).pending_deletions.len() as u64
}

/// Deletes spooled and packaged events (keeping aggregate counts when
/// `keep_counts`). The caller holds the data lock.
fn purge(paths: &ToolPaths, keep_counts: bool) -> std::io::Result<()> {
    if keep_counts {
        let contents = spool::read(paths)?;
        let kept: Vec<Record> = contents
            .records
            .into_iter()
            .filter(|r| matches!(r, Record::Count { .. }))
            .collect();
        spool::rewrite(paths, &contents.side, &kept)?;
    } else {
        spool::clear(paths)?;
    }
    for (path, entry) in outbox::list(paths)? {
        if !keep_counts || entry.payload.install_id.is_some() {
            files::remove_if_exists(&path)?;
        }
    }
    Ok(())
}

/// Applies a new level to a tool's local data (the opt-out path). `identity`
/// replaces the stored identity when given (only for `full`).
fn apply_change(
    paths: &ToolPaths,
    old: Option<Tier>,
    new: Tier,
    identity: Option<BTreeMap<String, String>>,
) -> std::io::Result<()> {
    let _lock = Lock::acquire(&paths.data_lock())?;
    let mut state = ToolState::load(paths);
    let before = state.clone();
    let was_full = old == Some(Tier::Full) || !state.identity.is_empty();
    match new {
        Tier::Off | Tier::Aggregate => {
            if let Some(id) = state.install_id.take() {
                state.queue_deletion(id);
            }
            state.identity.clear();
            if before.install_id.is_some() || new == Tier::Off {
                purge(paths, new == Tier::Aggregate)?;
            }
        }
        Tier::Anonymous => {
            if was_full {
                // The anonymous stream must not be linkable to the identity
                // the operator saw: forget the old id everywhere.
                if let Some(id) = state.install_id.take() {
                    state.queue_deletion(id);
                    purge(paths, true)?;
                }
                state.identity.clear();
            }
            state.install_id.get_or_insert_with(Uuid::new_v4);
        }
        Tier::Full => {
            state.install_id.get_or_insert_with(Uuid::new_v4);
            if let Some(identity) = identity {
                state.identity = identity;
            }
        }
    }
    if state != before {
        state.save(paths)?;
    }
    Ok(())
}

/// Writes a tool's consent file, then applies the change to its local data.
fn change_level(
    folders: &Folders,
    tool: &str,
    tier: Tier,
    identity: Option<BTreeMap<String, String>>,
    now: Timestamp,
) -> Result<(), Error> {
    let file = folders.tool_file(tool);
    let old = consent::file_level(&FileInput::read(&file)).ok().flatten();
    // The file first: if this fails nothing is deleted, and if we crash after
    // it, the next run finishes the opt-out (see `reconcile`).
    ConsentFile::write(&file, Some(tier), now).map_err(Error::io("write", file.clone()))?;
    let paths = folders.tool_state(tool);
    apply_change(&paths, old, tier, identity).map_err(Error::io("update", paths.dir.clone()))
}

/// Makes local data agree with the tool file's choice at start-up, finishing
/// an opt-out that was interrupted or done by editing the file by hand.
/// Returns whether it changed anything (a deletion may then be queued).
pub(crate) fn reconcile(paths: &ToolPaths, choice: Option<Tier>) -> std::io::Result<bool> {
    let stale = is_stale(&ToolState::load(paths), choice);
    if stale {
        apply_change(paths, None, choice.unwrap_or(Tier::Off), None)?;
    }
    Ok(stale)
}

/// Whether `state` holds data `choice` no longer allows, which
/// [`reconcile`] deletes.
pub(crate) fn is_stale(state: &ToolState, choice: Option<Tier>) -> bool {
    match choice {
        None | Some(Tier::Off | Tier::Aggregate) => {
            state.install_id.is_some() || !state.identity.is_empty()
        }
        Some(Tier::Anonymous) => !state.identity.is_empty(),
        Some(Tier::Full) => false,
    }
}

/// One tool found on this machine.
// Only `telemetry-consent` (feature `cli`) and this crate's tests use the
// machine-wide view.
#[cfg_attr(not(any(feature = "cli", feature = "test-bins")), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolSummary {
    /// The tool's name.
    pub tool: String,
    /// Its effective level in this environment, assuming no author default
    /// (this crate cannot see other tools' defaults) and no terminal.
    pub level: Tier,
    /// The rule that decided it.
    pub source: Source,
    /// The level stored in its consent file, if any.
    pub choice: Option<Tier>,
    /// Its consent file.
    pub config_file: PathBuf,
    /// When it last delivered data.
    pub last_upload: Option<Timestamp>,
    /// Deletion requests it has not delivered yet.
    pub pending_deletions: usize,
}

/// The machine-wide view: every tool that uses this toolkit, for this user.
#[cfg_attr(not(any(feature = "cli", feature = "test-bins")), allow(dead_code))]
#[derive(Debug, Clone)]
pub struct Machine {
    pub(crate) folders: Folders,
    system_policy: Option<PathBuf>,
    clock: Arc<dyn Clock>,
}

#[cfg_attr(not(any(feature = "cli", feature = "test-bins")), allow(dead_code))]
impl Machine {
    /// The current user's platform folders and the system policy file.
    pub fn new() -> Result<Machine, Error> {
        Folders::from_env().map(Machine::at).ok_or(Error::NoHome)
    }

    /// Explicit folders.
    ///
    /// **This crate's own tests only** (feature `test-bins`).
    #[cfg(feature = "test-bins")]
    pub fn with_folders(folders: Folders) -> Machine {
        Machine::at(folders)
    }

    fn at(folders: Folders) -> Machine {
        Machine {
            folders,
            system_policy: cfg!(unix).then(|| PathBuf::from(crate::folders::SYSTEM_POLICY_PATH)),
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads the system policy from `path` instead (or from nowhere).
    ///
    /// **This crate's own tests only** (feature `test-bins`).
    #[cfg(feature = "test-bins")]
    pub fn system_policy(mut self, path: Option<PathBuf>) -> Machine {
        self.system_policy = path;
        self
    }

    /// Uses `clock` for the `updated` stamps.
    ///
    /// **This crate's own tests only** (feature `test-bins`).
    #[cfg(feature = "test-bins")]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Machine {
        self.clock = clock;
        self
    }

    /// The folders in use.
    ///
    /// **This crate's own tests only** (feature `test-bins`).
    #[cfg(feature = "test-bins")]
    pub fn folders(&self) -> &Folders {
        &self.folders
    }

    /// The user's global ceiling, if set.
    pub fn global_ceiling(&self) -> Result<Option<Tier>, Error> {
        let path = self.folders.global_file();
        consent::file_level(&FileInput::read(&path)).map_err(|why| Error::Io {
            action: "read",
            path,
            source: std::io::Error::other(why),
        })
    }

    /// Sets (or with `None`, lifts) the ceiling for every tool of this user.
    /// Lowering it never deletes data: it is lifted as easily as it is set.
    pub fn set_global_ceiling(&self, ceiling: Option<Tier>) -> Result<(), Error> {
        let path = self.folders.global_file();
        match ceiling {
            Some(tier) => ConsentFile::write(&path, Some(tier), self.clock.now()),
            None => files::remove_if_exists(&path),
        }
        .map_err(Error::io("write", path))
    }

    /// Every tool with a consent file or a state folder.
    pub fn list_tools(&self) -> Result<Vec<ToolSummary>, Error> {
        let mut names = std::collections::BTreeSet::new();
        let tools_dir = self.folders.tools_dir();
        for (dir, want_file) in [(&tools_dir, true), (&self.folders.state, false)] {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", dir.clone())(e)),
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                let name = if want_file {
                    if path.extension().is_none_or(|x| x != "toml") {
                        continue;
                    }
                    path.file_stem()
                } else if path == tools_dir {
                    // Where config and state are one folder (macOS), the
                    // consent files' `tools` folder sits among the state
                    // folders; it is not a tool.
                    continue;
                } else {
                    path.is_dir().then(|| path.file_name()).flatten()
                };
                if let Some(name) = name.and_then(|n| n.to_str())
                    && telemetry_protocol::policy::is_project_name(name)
                {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names.into_iter().map(|tool| self.summary(tool)).collect())
    }

    fn summary(&self, tool: String) -> ToolSummary {
        let read = |p: Option<PathBuf>| p.map_or(FileInput::Missing, |p| FileInput::read(&p));
        let config_file = self.folders.tool_file(&tool);
        let r = consent::resolve(&ConsentInput {
            env: EnvSnapshot::capture(&tool),
            system_policy: read(self.system_policy.clone()),
            global: read(Some(self.folders.global_file())),
            tool: read(Some(config_file.clone())),
            default: DefaultLevel::Off,
        });
        let state = ToolState::load(&self.folders.tool_state(&tool));
        ToolSummary {
            level: r.level,
            source: r.source,
            choice: r.choice,
            config_file,
            last_upload: state.last_upload,
            pending_deletions: state.pending_deletions.len(),
            tool,
        }
    }

    /// Sets another tool's level. On a downgrade its local id, identity and
    /// events are deleted now, and the deletion request is queued in its state
    /// so that the tool's next run sends it.
    pub fn set_tool_level(&self, tool: &str, tier: Tier) -> Result<(), Error> {
        if !telemetry_protocol::policy::is_project_name(tool) {
            return Err(Error::InvalidToolName(tool.to_owned()));
        }
        change_level(&self.folders, tool, tier, None, self.clock.now())
    }

    /// Sends every tool's queued deletion requests to the endpoint stored in
    /// its state, without running the tools, giving up after `timeout`.
    /// A tool whose uploader is running is waited for (within `timeout`),
    /// then sent to. What cannot be sent
    /// stays queued with back-off; returns how many were acknowledged.
    pub fn deliver_deletions(&self, timeout: Duration) -> Result<u64, Error> {
        let deadline = Instant::now() + timeout;
        let mut delivered = 0;
        for tool in self.list_tools()? {
            if tool.pending_deletions == 0 || Instant::now() >= deadline {
                continue;
            }
            let paths = self.folders.tool_state(&tool.tool);
            let state = ToolState::load(&paths);
            let Some(endpoint) = state.endpoint.or(state.endpoint_last_used) else {
                continue;
            };
            if transport::check_endpoint(&endpoint).is_err() {
                continue;
            }
            // A running uploader may have read the deletion queue before
            // this opt-out, and it gives up on its first failed request, so
            // leaving the tool to it can leave the deletion unsent for good
            // (a user who uninstalls never runs the tool again). Wait for it
            // instead, within the deadline.
            let guard = loop {
                match Lock::try_acquire(&paths.uploader_lock()) {
                    Ok(Some(guard)) => break Some(guard),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => break None,
                }
            };
            let Some(_guard) = guard else { continue };
            let left = deadline.saturating_duration_since(Instant::now());
            let tool_name = tool.tool.clone();
            let clock = self.clock.clone();
            let sent = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let http = Http::new(&endpoint, left.min(upload::REQUEST_TIMEOUT))
                            .map_err(std::io::Error::other)?;
                        upload::deliver_deletions(
                            &paths,
                            &tool_name,
                            &endpoint,
                            &http,
                            clock.as_ref(),
                            Some(deadline),
                        )
                    })
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the upload thread failed")))
            });
            match sent {
                Ok(n) => delivered += n,
                Err(e) => {
                    crate::log::debug!(tool = %tool.tool, error = %e, "cannot send deletions")
                }
            }
        }
        Ok(delivered)
    }

    /// Whether any tool has a deletion request queued that is due: at once
    /// when `now_anyway` (right after an opt-out), else once its back-off
    /// has passed.
    pub fn deletions_due(&self, now_anyway: bool) -> bool {
        let now = self.clock.now();
        self.list_tools().is_ok_and(|tools| {
            tools.iter().filter(|t| t.pending_deletions > 0).any(|t| {
                now_anyway
                    || ToolState::load(&self.folders.tool_state(&t.tool))
                        .next_attempt
                        .is_none_or(|at| at <= now)
            })
        })
    }

    /// Sets every listed tool to `off`; returns their names.
    pub fn disable_all(&self) -> Result<Vec<String>, Error> {
        let tools = self.list_tools()?;
        for t in &tools {
            self.set_tool_level(&t.tool, Tier::Off)?;
        }
        Ok(tools.into_iter().map(|t| t.tool).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_folder_for_config_and_state_lists_no_phantom_tool() {
        // The macOS layout: both are `~/Library/Application Support/telemetry-toolkit`.
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path(), dir.path());
        let machine = Machine::at(folders.clone());
        machine.set_tool_level("chosen-cli", Tier::Off).unwrap();
        std::fs::create_dir_all(folders.tool_state("ran-cli").dir).unwrap();
        machine.set_global_ceiling(Some(Tier::Aggregate)).unwrap();
        assert!(folders.tools_dir().is_dir() && folders.global_file().is_file());
        let names: Vec<String> = machine
            .list_tools()
            .unwrap()
            .into_iter()
            .map(|t| t.tool)
            .collect();
        assert_eq!(names, ["chosen-cli", "ran-cli"]);
    }
}
