//! Files that hold identities and raw events are created readable by their
//! owner only (`0600`), whatever the umask, and an existing one that others
//! can read is reported at start-up.
//!
//! SQLite creates a database with mode `0644` less the umask, and gives its
//! `-wal`, `-shm` and journal files the mode of the database file. Creating
//! the database file empty with `0600` before SQLite opens it therefore makes
//! every file of the database private. An existing file's mode is left alone:
//! the operator may have chosen it (a backup group, say), so start-up warns
//! instead of changing it.

use std::io;
use std::path::Path;

/// Creates `path` empty with mode `0600` if it does not exist. With `new`,
/// fails if it exists (for a backup, which must never overwrite).
pub(crate) fn create(path: &Path, new: bool) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if new {
        options.create_new(true);
    } else {
        options.create(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// Logs a warning if the existing file at `path` can be read or written by
/// users other than its owner.
pub(crate) fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by other users (mode {mode:03o}); it holds identities and \
                     raw events: run `chmod 600` on it and on its -wal and -shm files",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_files_are_0600_and_backups_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        create(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        create(&path, false).unwrap();
        assert_eq!(
            create(&path, true).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    }
}
