//! Where the client keeps things: the toolkit-wide consent folder and the
//! per-tool state folders.
//!
//! Consent lives under the platform config directory so a user (or the
//! machine-wide consent tool) finds every tool's choice in one place. State
//! (ids, spool, outbox, logs) lives under the platform state directory, falling
//! back to the local data directory, because it is data the client manages
//! rather than configuration a user edits.

use std::path::PathBuf;

/// The folder name used under both the config and the state roots.
pub(crate) const TOOLKIT_DIR: &str = "telemetry-toolkit";
/// The system-wide policy file on Unix, a ceiling administrators set.
pub(crate) const SYSTEM_POLICY_PATH: &str = "/etc/telemetry-toolkit/policy.toml";

/// The two folders the toolkit uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))] // Re-exported by `testing`.
pub struct Folders {
    /// The consent folder: `global.toml` and `tools/<tool>.toml`.
    pub config: PathBuf,
    /// The state folder: one sub-folder per tool.
    pub state: PathBuf,
}

#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
impl Folders {
    /// The platform folders of the current user (honouring `HOME` and
    /// `XDG_CONFIG_HOME`/`XDG_STATE_HOME`/`XDG_DATA_HOME`), or `None` when no
    /// home folder can be found.
    pub fn from_env() -> Option<Folders> {
        let base = directories::BaseDirs::new()?;
        let state_root = base
            .state_dir()
            .unwrap_or_else(|| base.data_local_dir())
            .to_path_buf();
        Some(Folders {
            config: base.config_dir().join(TOOLKIT_DIR),
            state: state_root.join(TOOLKIT_DIR),
        })
    }

    /// Explicit folders, for tests. These are the toolkit folders
    /// themselves, not their parents.
    #[cfg(any(test, feature = "testing"))]
    pub fn new(config: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Folders {
        Folders {
            config: config.into(),
            state: state.into(),
        }
    }

    /// The user's global ceiling file.
    pub fn global_file(&self) -> PathBuf {
        self.config.join("global.toml")
    }

    /// The folder holding one consent file per tool.
    pub fn tools_dir(&self) -> PathBuf {
        self.config.join("tools")
    }

    /// The consent file of `tool`.
    pub fn tool_file(&self, tool: &str) -> PathBuf {
        self.tools_dir().join(format!("{tool}.toml"))
    }

    /// The state folder of `tool`.
    pub fn tool_state(&self, tool: &str) -> ToolPaths {
        ToolPaths {
            dir: self.state.join(tool),
        }
    }
}

/// The files inside one tool's state folder. Its layout is no part of the
/// API; this crate's own tests look inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub struct ToolPaths {
    /// The folder itself.
    pub dir: PathBuf,
}

#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
impl ToolPaths {
    /// Ids, identity, lifecycle flags, upload schedule and queued deletions.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The last good copy of the state file, to recover from if it is damaged.
    pub fn state_backup(&self) -> PathBuf {
        self.dir.join("state.json.bak")
    }
    /// The spool record ids the staging round in progress means to package;
    /// only present after a crash before the spool was rewritten.
    pub fn staging_journal(&self) -> PathBuf {
        self.dir.join("staging.json")
    }
    /// Recorded but not yet packaged events and counts.
    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool.jsonl")
    }
    /// Records a host wrote while the data lock was taken (see
    /// [`crate::spool`]), one file per run.
    pub fn spool_side(&self) -> PathBuf {
        self.dir.join("spool.d")
    }
    /// The author's mistakes seen in earlier runs (see [`crate::mistakes`]).
    pub fn diagnostics(&self) -> PathBuf {
        self.dir.join("diagnostics.json")
    }
    /// Payloads with fixed ids, waiting to be sent.
    pub fn outbox(&self) -> PathBuf {
        self.dir.join("outbox")
    }
    /// The last uploads and their results.
    pub fn upload_log(&self) -> PathBuf {
        self.dir.join("upload-log.json")
    }
    /// Guards the spool, state, outbox and log against concurrent writers.
    pub fn data_lock(&self) -> PathBuf {
        self.dir.join("data.lock")
    }
    /// Held by the one uploader allowed to run for this tool.
    pub fn uploader_lock(&self) -> PathBuf {
        self.dir.join("uploader.lock")
    }
    /// The time until which a host has claimed the current upload slot (it
    /// started an uploader); not durable, see [`crate::detach`].
    pub fn upload_claim(&self) -> PathBuf {
        self.dir.join("upload.claim")
    }
}
