//! The error type of the management API. Recording has none: it is infallible.

use std::path::PathBuf;
use std::time::Duration;

use telemetry_protocol::{ManifestError, Tier};

/// Why a management operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest compiled into the tool is invalid, so telemetry is disabled.
    #[error("the tool's telemetry manifest is invalid ({0}); telemetry is disabled")]
    Manifest(ManifestError),
    /// No home folder was found, so there is nowhere to keep consent or state.
    #[error("cannot find a home folder to keep telemetry settings in")]
    NoHome,
    /// A file or folder could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An identity field the manifest does not declare.
    #[error("`{0}` is not an identity field this tool asks for")]
    UnknownIdentityField(String),
    /// An identity value longer than the manifest allows.
    #[error("`{field}` is longer than {max_len} characters")]
    IdentityTooLong {
        /// The field.
        field: String,
        /// The manifest's limit.
        max_len: usize,
    },
    /// Identity fields were given for a level other than `full`.
    #[error("identity fields are only kept at level `full`")]
    IdentityNeedsFull,
    /// The operation needs an install id, which the current level does not have.
    #[error("there is no install id at level `{0}`; install ids exist at anonymous and full")]
    NoInstallId(Tier),
    /// The endpoint is not usable (not HTTPS and not loopback, or not a URL).
    #[error("{0}")]
    Endpoint(String),
    /// The collector could not be reached or kept failing; data stays queued.
    #[error("the collector could not be reached: {0}")]
    Unreachable(String),
    /// The operation did not finish in time; data stays queued.
    #[error("gave up after {0:?}; pending data stays queued")]
    Timeout(Duration),
    /// A tool name that cannot be a project name.
    #[error("`{0}` is not a valid tool name")]
    InvalidToolName(String),
}

impl Error {
    /// Wraps an I/O error with what was being done to which path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
