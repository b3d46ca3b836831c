//! One training process per run folder: `tvck train` (a new run or a continued one) holds
//! an exclusive advisory lock on `RUN_DIR/.tvck-train.lock` from the moment it starts
//! writing the folder until it exits. A second process on the same folder is refused
//! before it writes anything, so two `--resume` runs can never interleave their
//! checkpoints and metrics lines. The lock is the operating system's (`flock` on Unix):
//! it goes with the process, so a run killed by SIGKILL or an out-of-memory kill leaves
//! no stale lock behind; the file itself stays and is harmless.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run folder.
pub const LOCK_NAME: &str = ".tvck-train.lock";

/// Why the run folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{}: another tvck train{} is writing this run folder", dir.display(), holder_text(*pid))]
    Busy { dir: PathBuf, pid: Option<u32> },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (process {p})")).unwrap_or_default()
}

impl LockError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            LockError::Busy { .. } => {
                "wait for that run to end (an interrupt makes it finish the current epoch and write \
                 latest.pt), then continue it from its latest.pt; or train into another folder"
            }
            LockError::Io { .. } => {
                "the run folder must be writable and on a file system that supports file locks"
            }
        }
    }
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Take the lock of run folder `dir` (which exists), without waiting.
    pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
        let path = dir.join(LOCK_NAME);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder wrote its process id after locking; best effort.
                let _ = (&file).take(32).read_to_string(&mut text);
                return Err(LockError::Busy {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Record who holds it, for the message a second process shows.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(RunLock { file, path })
    }

    /// Where the lock file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Clear the process id; the lock itself goes with the file handle.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_folder_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join(LOCK_NAME));
        // Another open file description of the same file conflicts, as a second process's does.
        match RunLock::acquire(dir.path()) {
            Err(LockError::Busy { dir: d, pid }) => {
                assert_eq!(d, dir.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        // Released: the next run takes it.
        let again = RunLock::acquire(dir.path()).unwrap();
        drop(again);
    }

    #[test]
    fn the_message_names_the_folder_and_the_process() {
        let e = LockError::Busy {
            dir: PathBuf::from("runs/a"),
            pid: Some(42),
        };
        assert_eq!(
            e.to_string(),
            "runs/a: another tvck train (process 42) is writing this run folder"
        );
        let e = LockError::Busy {
            dir: PathBuf::from("runs/a"),
            pid: None,
        };
        assert_eq!(
            e.to_string(),
            "runs/a: another tvck train is writing this run folder"
        );
    }
}
