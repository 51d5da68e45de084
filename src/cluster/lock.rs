//! One process per data dir: an exclusive `flock` on `<data dir>/wasup.lock`,
//! held for the life of the process (the kernel drops it when the process
//! ends, `kill -9` included, so a stale file never blocks a start). A second
//! process on the same data dir refuses to start with one line.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "wasup.lock";

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data directory {0} is in use by another wasup process (it holds {1}); one process per data dir")]
    Held(String, String),
    #[error("cannot lock {0}: {1}")]
    Io(String, std::io::Error),
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path: PathBuf = data_dir.join(LOCK_FILE);
        let shown = || path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| LockError::Io(shown(), e))?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => LockError::Held(data_dir.display().to_string(), shown()),
                _ => LockError::Io(shown(), err),
            });
        }
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, LockError::Held(..)), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
