//! Small file primitives every other module builds on: atomic whole-file
//! writes, private directories and advisory locks.
//!
//! Everything the client stores can hold an install id or identity fields, so
//! every file and folder is created private (0600 / 0700 on Unix), and every
//! whole-file write goes through a temp file, an fsync and a rename so a crash
//! leaves either the old or the new contents, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Creates `dir` and its parents, private to the user on Unix.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Opens `path` with the given options, creating it with mode 0600 on Unix.
pub(crate) fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Replaces `path` with `bytes` atomically: temp file in the same folder,
/// fsync, rename, then an fsync of the folder so the rename itself is durable.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_through_temp(path, bytes, true)
}

/// Replaces `path` with `bytes` through a temp file and a rename, without
/// fsync: for files whose loss in a power cut costs nothing but a count.
pub(crate) fn write_replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_through_temp(path, bytes, false)
}

fn write_through_temp(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent folder"))?;
    create_private_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The random suffix keeps two processes writing the same file from
    // clobbering each other's temp file; the rename decides who wins.
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = open_private(&tmp, OpenOptions::new().write(true).create_new(true))?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable && let Ok(d) = File::open(dir) {
            // Some platforms cannot fsync a directory; the data itself is safe.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads `path` as UTF-8, or `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `path`, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An exclusive advisory lock on a lock file, released on drop.
///
/// Lock files are never renamed or deleted, unlike the data they guard: a
/// process that locks the data file itself could end up holding a lock on an
/// unlinked inode after another process atomically replaced it.
#[derive(Debug)]
pub(crate) struct Lock {
    file: File,
}

impl Lock {
    fn open(path: &Path) -> io::Result<File> {
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        open_private(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
    }

    /// Waits for the lock.
    pub(crate) fn acquire(path: &Path) -> io::Result<Lock> {
        let file = Self::open(path)?;
        file.lock()?;
        Ok(Lock { file })
    }

    /// Takes the lock if nobody holds it, else `None`.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<Lock>> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lock { file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_contents_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[cfg(unix)]
    #[test]
    fn files_and_folders_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.json");
        write_atomic(&path, b"{}").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        let lock = dir.path().join("a/x.lock");
        drop(Lock::acquire(&lock).unwrap());
        assert_eq!(mode(&lock), 0o600);
    }

    #[test]
    fn try_lock_sees_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.lock");
        let held = Lock::try_acquire(&path).unwrap().expect("free");
        assert!(Lock::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(Lock::try_acquire(&path).unwrap().is_some());
    }
}
