//! Finding checkpoint files in a tree: the one extension list and the one walk that
//! `scan`, `convert --recursive`, `check --auto-fix` and `check`'s suggestions for a
//! missing path share. Each caller chooses its bounds with [`Walk`]; the rules about what
//! a checkpoint is, and how links, loops, special files and depth are treated, are here.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::limits::MAX_SCAN_DEPTH;
use crate::format::loader::printable;

/// File endings of checkpoints (compared case-insensitively): torch.save files under the
/// names upstream and the Hugging Face hub use, and safetensors.
pub const CHECKPOINT_EXTENSIONS: [&str; 5] = ["pt", "pth", "ckpt", "bin", "safetensors"];

/// Folders a [`Walk::suggestions`] walk does not enter (besides hidden ones): build and
/// package caches that hold no checkpoints of the user's.
pub const SKIP_DIRS: [&str; 3] = ["node_modules", "target", "__pycache__"];

/// Whether a path has one of the [`CHECKPOINT_EXTENSIONS`].
pub fn is_checkpoint_path(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        CHECKPOINT_EXTENSIONS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(e))
    })
}

/// A path the walk met and did not read, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Relative to the root, `/`-separated, printable.
    pub path: String,
    pub reason: String,
}

/// How far and where a walk goes.
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    /// Folders deep below the root; deeper checkpoints and folders are [`Skipped`].
    pub max_depth: usize,
    /// Follow symbolic links (to files and folders; loops are detected and skipped).
    pub follow_links: bool,
    /// Do not enter hidden folders or [`SKIP_DIRS`].
    pub skip_caches: bool,
    /// Visit at most this many entries (a bound for walks that only suggest).
    pub max_entries: Option<usize>,
}

impl Walk {
    /// Every checkpoint a user pointed at: links followed, [`MAX_SCAN_DEPTH`] deep, every
    /// folder entered (`scan`, `convert --recursive`, `check --auto-fix`).
    pub const fn everything() -> Self {
        Walk {
            max_depth: MAX_SCAN_DEPTH,
            follow_links: true,
            skip_caches: false,
            max_entries: None,
        }
    }

    /// Candidates to suggest for a missing path, quickly: 8 folders deep, links not
    /// followed, caches and hidden folders left out, at most 50,000 entries.
    pub const fn suggestions() -> Self {
        Walk {
            max_depth: 8,
            follow_links: false,
            skip_caches: true,
            max_entries: Some(50_000),
        }
    }
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Checkpoint files, sorted by path.
    pub files: Vec<PathBuf>,
    /// Entries that could not be read (printable messages).
    pub errors: Vec<String>,
    /// What was met and not read: a broken or looping link, a FIFO, a socket, a device, a
    /// folder too deep.
    pub skipped: Vec<Skipped>,
}

/// Every checkpoint file under `root`, sorted; `root` itself when it is a file, whatever
/// its extension. Files with other extensions are not checkpoints and are passed over
/// silently; what is a checkpoint by name but cannot be read as a file is [`Skipped`].
pub fn discover(root: &Path, walk: Walk) -> Discovered {
    let mut out = Discovered::default();
    let max_depth = walk.max_depth;
    let skip = |skipped: &mut Vec<Skipped>, p: &Path, reason: String| {
        skipped.push(Skipped {
            path: printable(&relative(root, p)),
            reason,
        })
    };
    let entries = walkdir::WalkDir::new(root)
        .follow_links(walk.follow_links)
        .max_depth(max_depth + 1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            !walk.skip_caches
                || e.depth() == 0
                || !e.file_type().is_dir()
                || e.file_name()
                    .to_str()
                    .is_none_or(|n| !n.starts_with('.') && !SKIP_DIRS.contains(&n))
        })
        .take(walk.max_entries.unwrap_or(usize::MAX));
    for entry in entries {
        match entry {
            Ok(e) if e.depth() > max_depth => {
                if e.file_type().is_dir() || is_checkpoint_path(e.path()) {
                    let reason = format!("more than {max_depth} folders deep, not read");
                    skip(&mut out.skipped, e.path(), reason);
                }
            }
            Ok(e) if e.file_type().is_file() => {
                if e.depth() == 0 || is_checkpoint_path(e.path()) {
                    out.files.push(e.into_path())
                }
            }
            Ok(e) if e.file_type().is_dir() => {}
            // Not followed: a link is not a file of this walk.
            Ok(e) if e.file_type().is_symlink() => {}
            Ok(e) => {
                if e.depth() == 0 || is_checkpoint_path(e.path()) {
                    let what = crate::format::file_type_name(e.file_type());
                    skip(&mut out.skipped, e.path(), format!("{what}, not read"));
                }
            }
            Err(e) => {
                if let Some(anc) = e.loop_ancestor() {
                    let p = e.path().unwrap_or(anc);
                    let reason = format!(
                        "a symbolic link back to `{}` (a loop), not followed",
                        printable(&relative(root, anc))
                    );
                    skip(&mut out.skipped, p, reason);
                    continue;
                }
                match e.path() {
                    // A broken link: walkdir cannot follow it.
                    Some(p) if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_symlink()) => {
                        let reason = "a symbolic link to nothing (broken), not read".to_string();
                        skip(&mut out.skipped, p, reason);
                    }
                    _ => out.errors.push(printable(&e.to_string())),
                }
            }
        }
    }
    out
}

/// `found(path, metadata)` of each file [`discover`]`(root, Walk::everything())` finds,
/// for a tree of plain folders and regular files: the folders are read in parallel and
/// each file is `stat`ed relative to its folder (no path walked from the root per file).
/// `None` when the walk meets anything else (a symbolic link, a special file, an error, a
/// folder deeper than [`MAX_SCAN_DEPTH`]) or `root` is not a folder: the caller walks
/// with [`discover`] then, which has the rules for those. In no particular order.
pub fn discover_regular<T: Send>(
    root: &Path,
    found: impl Fn(PathBuf, &std::fs::Metadata) -> T + Sync,
) -> Option<Vec<T>> {
    fn walk<T: Send>(
        dir: &Path,
        depth: usize,
        found: &(impl Fn(PathBuf, &std::fs::Metadata) -> T + Sync),
    ) -> Option<Vec<T>> {
        use rayon::prelude::*;
        if depth > MAX_SCAN_DEPTH {
            return None;
        }
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for e in std::fs::read_dir(dir).ok()? {
            let e = e.ok()?;
            let ty = e.file_type().ok()?;
            if ty.is_dir() {
                dirs.push(e.path());
            } else if ty.is_file() {
                let p = e.path();
                if is_checkpoint_path(&p) {
                    // Relative to the folder (`statx` on its descriptor); a regular file
                    // is no link, so this is what following links gives too.
                    let m = e.metadata().ok()?;
                    files.push(found(p, &m));
                }
            } else {
                // A link (followed by `discover`), a FIFO, a socket, a device.
                return None;
            }
        }
        let below: Vec<Vec<T>> = dirs
            .par_iter()
            .map(|d| walk(d, depth + 1, found))
            .collect::<Option<_>>()?;
        files.reserve(below.iter().map(Vec::len).sum());
        files.extend(below.into_iter().flatten());
        Some(files)
    }
    if !std::fs::symlink_metadata(root).ok()?.is_dir() {
        return None;
    }
    walk(root, 1, &found)
}

/// `path` relative to `root`, `/`-separated (the file name when `path` is `root`).
pub fn relative(root: &Path, path: &Path) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_extension_list_for_every_walk() {
        for name in ["a.pt", "a.PTH", "a.ckpt", "model.bin", "x.safetensors"] {
            assert!(is_checkpoint_path(Path::new(name)), "{name}");
        }
        for name in ["a.yaml", "pt", "a.pt.bak", "truth.json"] {
            assert!(!is_checkpoint_path(Path::new(name)), "{name}");
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("a"), Path::new("a/b/c.pt")), "b/c.pt");
        assert_eq!(relative(Path::new("a/c.pt"), Path::new("a/c.pt")), "c.pt");
    }

    #[test]
    fn suggestions_leave_caches_out_and_everything_does_not() {
        let d = tempfile::tempdir().unwrap();
        for p in [
            "a/x.pt",
            "target/y.pt",
            ".hidden/z.bin",
            "node_modules/w.ckpt",
        ] {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        let names = |w| {
            discover(d.path(), w)
                .files
                .iter()
                .map(|p| relative(d.path(), p))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Walk::suggestions()), ["a/x.pt"]);
        let mut fast: Vec<String> = discover_regular(d.path(), |p, m| {
            assert!(m.is_file());
            relative(d.path(), &p)
        })
        .expect("folders and files only");
        fast.sort();
        assert_eq!(fast, names(Walk::everything()));
        assert_eq!(
            names(Walk::everything()),
            [
                ".hidden/z.bin",
                "a/x.pt",
                "node_modules/w.ckpt",
                "target/y.pt"
            ]
        );
    }
}
