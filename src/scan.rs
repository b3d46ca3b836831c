//! `tvck scan`: every checkpoint under a folder, summarised.
//!
//! Without hashing only the containers' headers and pickles are read (tensor data is
//! never touched), files in parallel (rayon). With hashing, each worker takes a small
//! batch of files at a time (up to [`BATCH_FILES`] files or [`BATCH_BYTES`] bytes), reads
//! them into recycled buffers (only the bytes the fingerprint needs, see
//! [`crate::format::sparse`]) and hashes all their tensors together, which the
//! multi-buffer SHA-256 engine ([`fingerprint::many`]) needs to be fast; memory stays
//! bounded by the batches in flight, not the tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::arch::VersionGuess;
use crate::fingerprint;
use crate::format::{Checkpoint, Format, ModelStateRef};
use crate::metrics::{self, StoredMetrics};

use crate::discover::relative;
pub use crate::discover::Skipped;

#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Compute tensor hashes and weights fingerprints.
    pub hash: bool,
}

/// One file's summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileSummary {
    /// Path relative to the scanned folder, `/`-separated.
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionGuess>,
    pub tensors: usize,
    pub parameters: u64,
    /// The top-level key the model state sits under (`""` for a bare state_dict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_state_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    #[serde(default)]
    pub metrics: StoredMetrics,
    /// Unsafe globals, and the tricks of ambiguous files (`ambiguous: …`, `TorchScript
    /// archive`).
    #[serde(default)]
    pub unsafe_globals: Vec<String>,
    /// The full message of each unsafe finding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    /// Weights fingerprint (hex), when hashing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Why the file could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FileSummary {
    /// The summary of a file that could not be read.
    pub fn unreadable(path: String, size: u64, error: String) -> FileSummary {
        FileSummary {
            path,
            size,
            format: None,
            version: None,
            tensors: 0,
            parameters: 0,
            model_state_key: None,
            epoch: None,
            metrics: StoredMetrics::default(),
            unsafe_globals: Vec::new(),
            findings: Vec::new(),
            fingerprint: None,
            error: Some(error),
        }
    }

    pub fn is_flagged(&self) -> bool {
        self.error.is_some() || !self.unsafe_globals.is_empty()
    }
}

/// Files sharing one weights fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct DuplicateGroup {
    pub fingerprint: String,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanTotals {
    pub files: usize,
    pub readable: usize,
    pub unreadable: usize,
    pub unsafe_files: usize,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes: u64,
    pub duplicate_groups: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub root: String,
    pub hashed: bool,
    pub files: Vec<FileSummary>,
    /// Paths not read (broken or looping links, FIFOs, sockets, devices, folders too deep).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    pub duplicates: Vec<DuplicateGroup>,
    pub totals: ScanTotals,
}

impl ScanReport {
    /// Whether any file is unreadable or carries unsafe globals (exit code 1).
    pub fn has_findings(&self) -> bool {
        self.files.iter().any(FileSummary::is_flagged)
    }
}

/// Summarise one opened checkpoint.
pub fn summarize(ckpt: &Checkpoint, display_path: String, opts: &ScanOptions) -> FileSummary {
    // Computed once and shared by everything below.
    let model_state = ckpt.model_state_ref();
    let mut summary = describe(ckpt, display_path, model_state.as_ref());
    if opts.hash {
        set_fingerprint(
            &mut summary,
            fingerprint::fingerprint_with(ckpt, model_state.as_ref()),
        );
    }
    summary
}

/// Everything but the fingerprint.
pub(crate) fn describe(
    ckpt: &Checkpoint,
    display_path: String,
    model_state: Option<&ModelStateRef<'_>>,
) -> FileSummary {
    FileSummary {
        path: display_path,
        size: ckpt.file_size,
        format: Some(ckpt.format),
        version: crate::arch::guess_checkpoint_with(ckpt, model_state),
        tensors: ckpt.tensors.len(),
        parameters: ckpt.parameter_count_of(model_state),
        model_state_key: model_state.map(|m| m.root_key.unwrap_or_default().to_string()),
        epoch: metrics::epoch(&ckpt.root),
        metrics: StoredMetrics::from_root(&ckpt.root),
        unsafe_globals: ckpt
            .findings
            .iter()
            .filter(|f| f.is_unsafe())
            .map(crate::format::Finding::label)
            .collect(),
        findings: ckpt
            .findings
            .iter()
            .filter(|f| f.is_unsafe())
            .map(crate::format::Finding::message)
            .collect(),
        fingerprint: None,
        error: None,
    }
}

pub(crate) fn set_fingerprint(
    summary: &mut FileSummary,
    fp: Result<fingerprint::Fingerprint, crate::format::FormatError>,
) {
    match fp {
        Ok(fp) => summary.fingerprint = Some(fingerprint::hex(&fp.weights)),
        Err(e) => summary.error = Some(format!("{HASHING_FAILED}: {}", e.message_without_file())),
    }
}

/// How the error of a file whose tensors could not be hashed begins.
pub const HASHING_FAILED: &str = "hashing failed";

/// Files up to this size are read into a recycled buffer when hashing (the storages the
/// fingerprint needs in one go); larger ones get a buffer of their own whose storages are
/// read tensor by tensor while hashing, so memory never grows with a huge checkpoint.
pub const READ_WHOLE_LIMIT: u64 = 64 << 20;

/// A hashing batch closes at this many files...
pub const BATCH_FILES: usize = 4;
/// ...or before it would pass this many bytes (a larger file makes a batch alone).
pub const BATCH_BYTES: u64 = 16 << 20;

pub(crate) fn unreadable(path: &Path, rel: String, e: &crate::format::ReadError) -> FileSummary {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    FileSummary::unreadable(rel, size, e.source.message_without_file())
}

fn summarize_path(root: &Path, path: &Path, opts: &ScanOptions) -> FileSummary {
    let rel = relative(root, path);
    // Only the headers and pickles are needed: read sparsely (storages stay unread).
    match Checkpoint::open_sparse_into(path, Vec::new()) {
        Ok(ckpt) => summarize(&ckpt, rel, opts),
        Err((e, _)) => unreadable(path, rel, &e),
    }
}

/// One hashing worker's read buffers, recycled from batch to batch: a fresh page costs
/// more than hashing its bytes (docs/benchmarks.md). At most one buffer larger than
/// [`BATCH_BYTES`] is kept, so a worker holds at most a batch plus the largest file read.
#[derive(Default)]
struct Pool {
    bufs: Vec<Vec<u8>>,
}

impl Pool {
    /// A buffer for a `size`-byte file: the smallest kept one that fits, else a new one
    /// (rounded up, so that it fits the next files too; a kept one is dropped for it).
    fn take(&mut self, size: u64) -> Vec<u8> {
        let fits = self
            .bufs
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() as u64 >= size)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match fits {
            Some(i) => self.bufs.swap_remove(i),
            None => {
                self.bufs.pop();
                let cap = usize::try_from(size.next_power_of_two()).unwrap_or(usize::MAX);
                Vec::with_capacity(cap.max(1 << 20))
            }
        }
    }

    fn give(&mut self, buf: Vec<u8>) {
        let large = |b: &Vec<u8>| b.capacity() as u64 > BATCH_BYTES;
        if buf.capacity() == 0 {
            return;
        }
        if large(&buf) {
            if let Some(i) = self.bufs.iter().position(large) {
                if self.bufs[i].capacity() >= buf.capacity() {
                    return;
                }
                self.bufs.swap_remove(i);
            }
        }
        self.bufs.push(buf);
    }
}

/// Open one file for hashing: read into a buffer from `pool` (sparsely: only what the
/// fingerprint needs, see [`Checkpoint::open_sparse_into`]) when at most
/// [`READ_WHOLE_LIMIT`] bytes, else into a fresh buffer without its storages.
fn open_for_hashing(
    path: &Path,
    size: u64,
    pool: &mut Pool,
) -> Result<Checkpoint, crate::format::ReadError> {
    // Larger files get a buffer of their own (never mapped: a file truncated while
    // mapped would kill the process); only the fingerprinted storages are read into it.
    let buf = if size > READ_WHOLE_LIMIT {
        Vec::new()
    } else {
        pool.take(size)
    };
    let mut ckpt = match Checkpoint::open_sparse_into(path, buf) {
        Ok(c) => c,
        Err((e, buf)) => {
            pool.give(buf);
            return Err(e);
        }
    };
    // A large file's storages are read tensor by tensor while hashing (memory stays
    // bounded); a small file's are read in one go, only those the fingerprint hashes
    // (not, say, the optimizer's).
    if size > READ_WHOLE_LIMIT {
        return Ok(ckpt);
    }
    let wanted = fingerprint::fingerprint_storages(&ckpt, ckpt.model_state_ref().as_ref());
    match ckpt.load_storages(&wanted) {
        Ok(()) => Ok(ckpt),
        Err(source) => {
            let path = path.to_path_buf();
            pool.give(ckpt.into_buffer());
            Err(crate::format::ReadError { path, source })
        }
    }
}

/// One file as the hashing workers hand it over: the opened checkpoint, its model state
/// and its fingerprint, or why it could not be read.
pub(crate) type Hashed<'a, 'c> = Result<
    (
        &'c Checkpoint,
        Option<&'a ModelStateRef<'c>>,
        Result<fingerprint::Fingerprint, crate::format::FormatError>,
    ),
    &'a crate::format::ReadError,
>;

/// `scan --hash`: workers take batches of files from a shared queue and hash each
/// batch's tensors together. Summaries come back in `paths` order.
fn scan_hashing(
    root: &Path,
    paths: &[PathBuf],
    on_file: &(impl Fn(&FileSummary) + Sync),
) -> Vec<FileSummary> {
    hash_files(paths, None, |i, r| {
        let rel = relative(root, &paths[i]);
        let summary = match r {
            Ok((ckpt, model_state, fp)) => {
                let mut s = describe(ckpt, rel, model_state);
                set_fingerprint(&mut s, fp);
                s
            }
            Err(e) => unreadable(&paths[i], rel, e),
        };
        on_file(&summary);
        summary
    })
}

/// Open and fingerprint every file of `paths` (workers take batches of files from a shared
/// queue and hash each batch's tensors together) and turn each into a `T` with `make`
/// (called with the file's index in `paths`). Results come back in `paths` order.
pub(crate) fn hash_files<T: Send>(
    paths: &[PathBuf],
    sizes: Option<&[u64]>,
    make: impl for<'a, 'c> Fn(usize, Hashed<'a, 'c>) -> T + Sync,
) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    // The sizes batch the files; a caller that stat'ed them already passes them.
    let size_of = |i: usize| match sizes.and_then(|s| s.get(i)) {
        Some(&n) => n,
        None => std::fs::metadata(&paths[i]).map(|m| m.len()).unwrap_or(0),
    };
    let per_worker = rayon::broadcast(|_| {
        let mut done: Vec<(usize, T)> = Vec::new();
        let mut pool = Pool::default();
        // A file taken from the queue that did not fit the previous batch.
        let mut carried: Option<(usize, u64)> = None;
        loop {
            let mut batch: Vec<(usize, Result<Checkpoint, crate::format::ReadError>)> = Vec::new();
            let mut bytes = 0u64;
            while batch.len() < BATCH_FILES {
                let (i, size) = match carried.take() {
                    Some(c) => c,
                    None => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= paths.len() {
                            break;
                        }
                        (i, size_of(i))
                    }
                };
                if !batch.is_empty() && bytes + size > BATCH_BYTES {
                    carried = Some((i, size));
                    break;
                }
                bytes += size;
                batch.push((i, open_for_hashing(&paths[i], size, &mut pool)));
            }
            if batch.is_empty() {
                break;
            }
            // Model states line up with the batch (none for an unreadable file).
            let states: Vec<Option<ModelStateRef<'_>>> = batch
                .iter()
                .map(|(_, r)| r.as_ref().ok().and_then(Checkpoint::model_state_ref))
                .collect();
            let items: Vec<_> = batch
                .iter()
                .zip(&states)
                .filter_map(|((_, r), m)| r.as_ref().ok().map(|c| (c, m.as_ref())))
                .collect();
            let mut fingerprints = fingerprint::fingerprint_batch(&items).into_iter();
            let mut made = Vec::with_capacity(batch.len());
            for ((i, r), model_state) in batch.iter().zip(&states) {
                let item = match r {
                    Ok(ckpt) => Ok((
                        ckpt,
                        model_state.as_ref(),
                        fingerprints.next().expect("one per file"),
                    )),
                    Err(e) => Err(e),
                };
                made.push((*i, make(*i, item)));
            }
            drop(items);
            drop(states);
            for (_, r) in batch {
                if let Ok(c) = r {
                    pool.give(c.into_buffer());
                }
            }
            done.extend(made);
        }
        done
    });
    let mut all: Vec<(usize, T)> = per_worker.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, s)| s).collect()
}

/// Scan a folder (or one file). `on_file` is called once per finished file (for progress).
pub fn scan(
    root: &Path,
    opts: &ScanOptions,
    on_start: impl FnOnce(usize),
    on_file: impl Fn(&FileSummary) + Sync,
) -> ScanReport {
    scan_cached(root, opts, |_| None, on_start, on_file)
}

/// [`scan`], with the summaries of the discovered files taken from `cached` when it has
/// every one of them (a cache such as the checkpoint index, which answers only when
/// every file is unchanged); the files are read otherwise.
pub fn scan_cached(
    root: &Path,
    opts: &ScanOptions,
    cached: impl FnOnce(&[PathBuf]) -> Option<Vec<FileSummary>>,
    on_start: impl FnOnce(usize),
    on_file: impl Fn(&FileSummary) + Sync,
) -> ScanReport {
    let crate::discover::Discovered {
        files: paths,
        errors: walk_errors,
        skipped,
    } = crate::discover::discover(root, crate::discover::Walk::everything());
    let from_cache = cached(&paths).filter(|c| c.len() == paths.len());
    on_start(if from_cache.is_some() { 0 } else { paths.len() });
    let mut files: Vec<FileSummary> = if let Some(c) = from_cache {
        c
    } else if opts.hash {
        scan_hashing(root, &paths, &on_file)
    } else {
        paths
            .par_iter()
            .map(|p| {
                let s = summarize_path(root, p, opts);
                on_file(&s);
                s
            })
            .collect()
    };
    for e in walk_errors {
        files.push(FileSummary::unreadable(
            e.clone(),
            0,
            format!("cannot list: {e}"),
        ));
    }
    let duplicates = duplicate_groups(&files);
    let totals = ScanTotals {
        files: files.len(),
        readable: files.iter().filter(|f| f.error.is_none()).count(),
        unreadable: files.iter().filter(|f| f.error.is_some()).count(),
        unsafe_files: files
            .iter()
            .filter(|f| !f.unsafe_globals.is_empty())
            .count(),
        tensors: files.iter().map(|f| f.tensors).sum(),
        parameters: files.iter().map(|f| f.parameters).sum(),
        bytes: files.iter().map(|f| f.size).sum(),
        duplicate_groups: duplicates.len(),
    };
    ScanReport {
        root: root.display().to_string(),
        hashed: opts.hash,
        files,
        skipped,
        duplicates,
        totals,
    }
}

/// Groups of two or more files with the same weights fingerprint.
pub fn duplicate_groups(files: &[FileSummary]) -> Vec<DuplicateGroup> {
    let mut by_fp: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for f in files {
        if let Some(fp) = &f.fingerprint {
            by_fp.entry(fp).or_default().push(f.path.clone());
        }
    }
    by_fp
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(fp, files)| DuplicateGroup {
            fingerprint: fp.to_string(),
            files,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_recycles_the_best_fit_and_keeps_one_large_buffer() {
        let mut pool = Pool::default();
        pool.give(Vec::new()); // nothing to keep
        assert!(pool.bufs.is_empty());
        pool.give(Vec::with_capacity(2 << 20));
        pool.give(Vec::with_capacity(1 << 20));
        let b = pool.take(500_000);
        assert_eq!(b.capacity(), 1 << 20, "the smallest that fits");
        pool.give(b);
        // None fits: a new rounded-up buffer, and one kept buffer is let go.
        let b = pool.take(3 << 20);
        assert_eq!(b.capacity(), 4 << 20);
        assert_eq!(pool.bufs.len(), 1);
        pool.give(b);
        let large = (BATCH_BYTES as usize) * 2;
        pool.give(Vec::with_capacity(large));
        pool.give(Vec::with_capacity(large * 2));
        pool.give(Vec::with_capacity(large));
        let big: Vec<usize> = pool
            .bufs
            .iter()
            .map(|b| b.capacity())
            .filter(|&c| c as u64 > BATCH_BYTES)
            .collect();
        assert_eq!(big, vec![large * 2], "only the largest large buffer stays");
    }
}
