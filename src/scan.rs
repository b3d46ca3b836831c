//! `tvck scan`: every checkpoint under a folder, summarised.
//!
//! Without hashing only the containers' headers and pickles are read (tensor data is
//! never touched). With hashing, files are hashed in parallel (rayon), each mapped,
//! hashed and unmapped in turn, so memory stays bounded by the files in flight.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::arch::VersionGuess;
use crate::fingerprint;
use crate::format::{Checkpoint, Format};
use crate::metrics::{self, StoredMetrics};

/// File endings `scan` looks at (case-insensitive).
pub const CHECKPOINT_EXTENSIONS: [&str; 5] = ["pt", "pth", "ckpt", "bin", "safetensors"];

#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Compute tensor hashes and weights fingerprints.
    pub hash: bool,
}

/// One file's summary.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    /// Path relative to the scanned folder, `/`-separated.
    pub path: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionGuess>,
    pub tensors: usize,
    pub parameters: u64,
    /// The top-level key the model state sits under (`""` for a bare state_dict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_state_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    pub metrics: StoredMetrics,
    pub unsafe_globals: Vec<String>,
    /// Weights fingerprint (hex), when hashing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Why the file could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
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
    pub duplicates: Vec<DuplicateGroup>,
    pub totals: ScanTotals,
}

impl ScanReport {
    /// Whether any file is unreadable or carries unsafe globals (exit code 1).
    pub fn has_findings(&self) -> bool {
        self.files.iter().any(FileSummary::is_flagged)
    }
}

/// Whether a path has one of the checkpoint extensions.
pub fn is_checkpoint_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            CHECKPOINT_EXTENSIONS
                .iter()
                .any(|c| c.eq_ignore_ascii_case(e))
        })
        .unwrap_or(false)
}

/// Every checkpoint file under `root` (or `root` itself if it is a file), sorted.
/// Unreadable directory entries are returned as errors, not skipped silently.
pub fn discover(root: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        match entry {
            Ok(e) if e.file_type().is_file() && is_checkpoint_path(e.path()) => {
                files.push(e.into_path())
            }
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    (files, errors)
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let s = if rel.as_os_str().is_empty() {
        path.file_name().map(Path::new).unwrap_or(path)
    } else {
        rel
    };
    s.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Summarise one opened checkpoint.
pub fn summarize(ckpt: &Checkpoint, display_path: String, opts: &ScanOptions) -> FileSummary {
    // Computed once and shared by everything below.
    let model_state = ckpt.model_state_ref();
    let mut summary = FileSummary {
        path: display_path,
        size: ckpt.file_size,
        format: Some(ckpt.format),
        version: crate::arch::guess_checkpoint_with(ckpt, model_state.as_ref()),
        tensors: ckpt.tensors.len(),
        parameters: ckpt.parameter_count_of(model_state.as_ref()),
        model_state_key: model_state
            .as_ref()
            .map(|m| m.root_key.unwrap_or_default().to_string()),
        epoch: metrics::epoch(&ckpt.root),
        metrics: StoredMetrics::from_root(&ckpt.root),
        unsafe_globals: ckpt
            .findings
            .iter()
            .filter_map(|f| match f {
                crate::format::Finding::UnsafeGlobal { global, .. } => Some(global.clone()),
                _ => None,
            })
            .collect(),
        fingerprint: None,
        error: None,
    };
    if opts.hash {
        match fingerprint::fingerprint_with(ckpt, model_state.as_ref()) {
            Ok(fp) => summary.fingerprint = Some(fingerprint::hex(&fp.weights)),
            Err(e) => summary.error = Some(format!("hashing failed: {e}")),
        }
    }
    summary
}

/// Files up to this size are read whole into a recycled buffer when hashing; larger ones
/// are mapped, so memory never grows with a huge checkpoint.
pub const READ_WHOLE_LIMIT: u64 = 64 << 20;

thread_local! {
    /// Each worker's read buffer, reused file after file when hashing.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn summarize_path(root: &Path, path: &Path, opts: &ScanOptions) -> FileSummary {
    let rel = relative(root, path);
    let unreadable = |rel: String, e: crate::format::ReadError| {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        FileSummary::unreadable(rel, size, e.source.to_string())
    };
    let small = std::fs::metadata(path).is_ok_and(|m| m.len() <= READ_WHOLE_LIMIT);
    if opts.hash && small {
        // Every byte of the model state is read: one read() into a recycled buffer beats
        // mapping the pages (docs/benchmarks.md). Memory: one such file per worker; larger
        // files are mapped.
        let buf = BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let (summary, buf) = match Checkpoint::open_into(path, buf) {
            Ok(ckpt) => {
                let s = summarize(&ckpt, rel, opts);
                (s, ckpt.into_buffer())
            }
            Err((e, buf)) => (unreadable(rel, e), buf),
        };
        BUFFER.with(|b| *b.borrow_mut() = buf);
        return summary;
    }
    match Checkpoint::open(path) {
        Ok(ckpt) => summarize(&ckpt, rel, opts),
        Err(e) => unreadable(rel, e),
    }
}

/// Scan a folder (or one file). `on_file` is called once per finished file (for progress).
pub fn scan(
    root: &Path,
    opts: &ScanOptions,
    on_start: impl FnOnce(usize),
    on_file: impl Fn(&FileSummary) + Sync,
) -> ScanReport {
    let (paths, walk_errors) = discover(root);
    on_start(paths.len());
    let mut files: Vec<FileSummary> = paths
        .par_iter()
        .map(|p| {
            let s = summarize_path(root, p, opts);
            on_file(&s);
            s
        })
        .collect();
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
    fn extensions() {
        for ok in ["a.pt", "b/c.PTH", "x.ckpt", "m.bin", "w.safetensors"] {
            assert!(is_checkpoint_path(Path::new(ok)), "{ok}");
        }
        for no in ["a.yaml", "pt", "a.pt.bak", "truth.json"] {
            assert!(!is_checkpoint_path(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("a"), Path::new("a/b/c.pt")), "b/c.pt");
        assert_eq!(relative(Path::new("a/c.pt"), Path::new("a/c.pt")), "c.pt");
    }
}
