//! Following a run's `metrics.jsonl` incrementally: each poll reads the bytes after the
//! last offset, parses the complete lines and keeps a partial last line for the next
//! poll; a file that shrank or was replaced (a new run in the same folder) is read again
//! from the start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::line::EpochLine;
use super::MonitorError;

/// The metrics file of a run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// A line longer than this is not a metrics line: it is skipped.
pub const MAX_LINE: usize = 1 << 20;

/// Bytes of the file's start compared on each poll.
const HEAD: usize = 256;

/// What one poll found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Poll {
    /// The file was truncated or replaced: every line before is gone (the caller starts
    /// over with the lines returned).
    pub restarted: bool,
    pub lines: Vec<EpochLine>,
}

/// Follows one metrics.jsonl.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    identity: Option<(u64, u64)>,
    /// The file's first bytes (up to [`HEAD`]): a file rewritten in place differs there.
    head: Vec<u8>,
    /// The bytes just before `offset` (up to [`HEAD`]), compared the same way.
    tail: Vec<u8>,
    /// Lines that were not metrics lines (bad JSON, no epoch, too long).
    pub skipped: usize,
    /// When the file last grew (its modification time).
    pub modified: Option<SystemTime>,
}

#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl Follower {
    pub fn new(path: impl Into<PathBuf>) -> Follower {
        Follower {
            path: path.into(),
            offset: 0,
            pending: Vec::new(),
            skipping: false,
            identity: None,
            head: Vec::new(),
            tail: Vec::new(),
            skipped: 0,
            modified: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Read what was appended since the last poll. A missing file is no lines (a run
    /// that has not started yet).
    pub fn poll(&mut self) -> Result<Poll, MonitorError> {
        let io = |source| MonitorError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Poll::default()),
            Err(e) => return Err(io(e)),
        };
        let meta = f.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(MonitorError::NotAFile(self.path.clone()));
        }
        let id = identity(&meta);
        let mut out = Poll::default();
        let mut head = vec![0u8; self.head.len()];
        let mut tail = vec![0u8; self.tail.len()];
        let rewritten = !self.head.is_empty()
            && (f.read_exact(&mut head).is_err()
                || head != self.head
                || f.seek(SeekFrom::Start(self.offset - self.tail.len() as u64))
                    .and_then(|_| f.read_exact(&mut tail))
                    .is_err()
                || tail != self.tail);
        if rewritten || meta.len() < self.offset || (self.identity.is_some() && id != self.identity)
        {
            self.head.clear();
            self.tail.clear();
            self.offset = 0;
            self.pending.clear();
            self.skipping = false;
            self.skipped = 0;
            out.restarted = true;
        }
        self.identity = id;
        self.modified = meta.modified().ok();
        if meta.len() == self.offset {
            return Ok(out);
        }
        f.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut buf = Vec::new();
        // Only up to the length seen: a writer appending meanwhile is read next time.
        (&mut f)
            .take(meta.len() - self.offset)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if self.head.len() < HEAD {
            let want = (HEAD - self.head.len()).min(buf.len());
            self.head.extend_from_slice(&buf[..want]);
        }
        self.offset += buf.len() as u64;
        let keep = HEAD.min(buf.len());
        if keep == HEAD {
            self.tail = buf[buf.len() - keep..].to_vec();
        } else {
            self.tail.extend_from_slice(&buf);
            let excess = self.tail.len().saturating_sub(HEAD);
            self.tail.drain(..excess);
        }
        let mut start = 0;
        for (i, &b) in buf.iter().enumerate() {
            if b != b'\n' {
                continue;
            }
            let part = &buf[start..i];
            start = i + 1;
            if self.skipping {
                self.skipping = false;
                self.pending.clear();
                continue;
            }
            self.pending.extend_from_slice(part);
            let line = std::mem::take(&mut self.pending);
            self.take_line(&line, &mut out.lines);
        }
        if !self.skipping {
            self.pending.extend_from_slice(&buf[start..]);
            if self.pending.len() > MAX_LINE {
                self.pending.clear();
                self.skipping = true;
                self.skipped += 1;
            }
        }
        Ok(out)
    }

    fn take_line(&mut self, line: &[u8], out: &mut Vec<EpochLine>) {
        let s = String::from_utf8_lossy(line);
        if s.trim().is_empty() {
            return;
        }
        if line.len() > MAX_LINE {
            self.skipped += 1;
            return;
        }
        match EpochLine::parse(&s) {
            Ok(l) => out.push(l),
            Err(_) => self.skipped += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(p: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn follows_appends_partial_lines_and_restarts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(METRICS_FILE);
        let mut f = Follower::new(&p);
        assert_eq!(f.poll().unwrap(), Poll::default(), "no file yet");
        append(&p, "{\"epoch\":0}\n{\"epo");
        let r = f.poll().unwrap();
        assert_eq!(r.lines.len(), 1);
        assert!(!r.restarted);
        append(&p, "ch\":1}\nnot json\n");
        let r = f.poll().unwrap();
        assert_eq!(r.lines.iter().map(|l| l.epoch).collect::<Vec<_>>(), [1]);
        assert_eq!(f.skipped, 1);
        assert_eq!(f.poll().unwrap().lines.len(), 0, "nothing new");
        // A new run in the same folder: the file is rewritten shorter.
        std::fs::write(&p, "{\"epoch\":0}\n").unwrap();
        let r = f.poll().unwrap();
        assert!(r.restarted);
        assert_eq!(r.lines.len(), 1);
        assert_eq!(f.offset(), 12);
    }

    #[test]
    fn an_over_long_line_is_skipped_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(METRICS_FILE);
        let mut f = Follower::new(&p);
        append(&p, &"x".repeat(MAX_LINE + 10));
        assert!(f.poll().unwrap().lines.is_empty());
        append(&p, "yyy\n{\"epoch\":4}\n");
        let r = f.poll().unwrap();
        assert_eq!(r.lines.iter().map(|l| l.epoch).collect::<Vec<_>>(), [4]);
        assert_eq!(f.skipped, 1);
    }
}
