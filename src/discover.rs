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

/// A file's identity for re-indexing, what a walk learns of it without opening it:
/// (size, mtime in ns, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
}

impl Stat {
    /// The stat of `path` (links followed).
    pub fn of(path: &Path) -> std::io::Result<Stat> {
        Ok(Stat::from_metadata(&std::fs::metadata(path)?))
    }

    /// The stat a file's metadata gives.
    pub fn from_metadata(m: &std::fs::Metadata) -> Stat {
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let inode = 0;
        Stat {
            size: m.len(),
            mtime_ns,
            inode,
        }
    }

    /// The stat of a `statx` answer, as [`Stat::from_metadata`] makes it (a time before
    /// 1970 is 0).
    #[cfg(target_os = "linux")]
    fn from_statx(x: &rustix::fs::Statx) -> Stat {
        let t = &x.stx_mtime;
        let mtime_ns = if t.tv_sec < 0 {
            0
        } else {
            i64::try_from(i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec))
                .unwrap_or(i64::MAX)
        };
        Stat {
            size: x.stx_size,
            mtime_ns,
            inode: x.stx_ino,
        }
    }
}

/// `found(path, stat)` of each file [`discover`]`(root, Walk::everything())` finds,
/// for a tree of plain folders and regular files: the folders are read in parallel and
/// each file is `stat`ed relative to its folder (no path walked from the root per file).
/// `None` when the walk meets anything else (a symbolic link, a special file, an error, a
/// folder deeper than [`MAX_SCAN_DEPTH`]) or `root` is not a folder: the caller walks
/// with [`discover`] then, which has the rules for those. In no particular order.
pub fn discover_regular<T: Send>(
    root: &Path,
    found: impl Fn(PathBuf, Stat) -> T + Sync,
) -> Option<Vec<T>> {
    #[cfg(target_os = "linux")]
    {
        // (Opening it as a folder, not through a link, is the check that it is one.)
        use std::os::unix::ffi::OsStrExt;
        let fd = regular::open_dir(rustix::fs::CWD, root.as_os_str().as_bytes())?;
        regular::walk(&fd, root.as_os_str().as_bytes(), 1, &found)
    }
    #[cfg(not(target_os = "linux"))]
    {
        if !std::fs::symlink_metadata(root).ok()?.is_dir() {
            return None;
        }
        portable_walk(root, 1, &found)
    }
}

/// A folder's `files`, then what the walks of its subfolders `dirs` found, walked in
/// parallel; `None` when one of them gave up.
fn with_below<T: Send, D: Sync>(
    mut files: Vec<T>,
    dirs: &[D],
    walk: impl Fn(&D) -> Option<Vec<T>> + Sync,
) -> Option<Vec<T>> {
    use rayon::prelude::*;
    let below: Vec<Vec<T>> = dirs.par_iter().map(&walk).collect::<Option<_>>()?;
    files.reserve(below.iter().map(Vec::len).sum());
    files.extend(below.into_iter().flatten());
    Some(files)
}

/// [`discover_regular`] with the standard library's directory reading.
#[cfg(not(target_os = "linux"))]
fn portable_walk<T: Send>(
    dir: &Path,
    depth: usize,
    found: &(impl Fn(PathBuf, Stat) -> T + Sync),
) -> Option<Vec<T>> {
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
                // A regular file is no link, so this is what following links gives too.
                let m = e.metadata().ok()?;
                files.push(found(p, Stat::from_metadata(&m)));
            }
        } else {
            // A link (followed by `discover`), a FIFO, a socket, a device.
            return None;
        }
    }
    with_below(files, &dirs, |d| portable_walk(d, depth + 1, found))
}

/// [`discover_regular`] on Linux, in system calls: each folder is opened relative to its
/// parent's descriptor and read with `getdents64` into one buffer, each file `statx`ed
/// relative to its folder for the three fields a [`Stat`] holds, and a file's path is
/// made once, from the folder's and its name's bytes. (The standard library's walk
/// opens each folder by its whole path, `fstat`s it, allocates each entry's name, and
/// asks `statx` for every field.)
#[cfg(target_os = "linux")]
mod regular {
    use std::ffi::{CStr, OsStr, OsString};
    use std::mem::MaybeUninit;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use rustix::fd::{AsFd, OwnedFd};
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, StatxFlags};

    use super::{is_checkpoint_path, with_below, Stat, MAX_SCAN_DEPTH};

    /// The folder `name` (relative to `at`), read-only, never through a link.
    pub(super) fn open_dir<P: rustix::path::Arg>(at: impl AsFd, name: P) -> Option<OwnedFd> {
        rustix::fs::openat(
            at,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
    }

    /// What [`stat_at`] asks `statx` for: the type and a [`Stat`]'s fields.
    const WANTED: StatxFlags = StatxFlags::TYPE
        .union(StatxFlags::SIZE)
        .union(StatxFlags::MTIME)
        .union(StatxFlags::INO);

    /// `statx` of `name` in the folder `dir`, not following a link: its type and stat.
    fn stat_at(dir: &OwnedFd, name: &CStr) -> Option<(FileType, Stat)> {
        let x = rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, WANTED).ok()?;
        if !StatxFlags::from_bits_retain(x.stx_mask).contains(WANTED) {
            return None;
        }
        Some((
            FileType::from_raw_mode(u32::from(x.stx_mode)),
            Stat::from_statx(&x),
        ))
    }

    /// `dir`'s path followed by `/` and `name`.
    fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
        p.extend_from_slice(dir);
        if !dir.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        p
    }

    /// Bytes of directory entries read per `getdents64`.
    const DIR_BUFFER: usize = 32 * 1024;

    pub(super) fn walk<T: Send>(
        fd: &OwnedFd,
        path: &[u8],
        depth: usize,
        found: &(impl Fn(PathBuf, Stat) -> T + Sync),
    ) -> Option<Vec<T>> {
        if depth > MAX_SCAN_DEPTH {
            return None;
        }
        let mut files = Vec::new();
        let mut dirs: Vec<Vec<u8>> = Vec::new();
        {
            let mut buf: Vec<MaybeUninit<u8>> = Vec::with_capacity(DIR_BUFFER);
            buf.resize(DIR_BUFFER, MaybeUninit::uninit());
            let mut entries = RawDir::new(fd, &mut buf);
            while let Some(e) = entries.next() {
                let e = e.ok()?;
                let name = e.file_name();
                let bytes = name.to_bytes();
                if bytes == b"." || bytes == b".." {
                    continue;
                }
                let mut ty = e.file_type();
                let mut stat = None;
                if ty == FileType::Unknown {
                    // A file system that does not say the type in its entries.
                    let (t, s) = stat_at(fd, name)?;
                    (ty, stat) = (t, Some(s));
                }
                match ty {
                    FileType::Directory => dirs.push(bytes.to_vec()),
                    FileType::RegularFile => {
                        if is_checkpoint_path(Path::new(OsStr::from_bytes(bytes))) {
                            let s = match stat {
                                Some(s) => s,
                                None => match stat_at(fd, name)? {
                                    // Replaced since the folder was read: the slow walk.
                                    (FileType::RegularFile, s) => s,
                                    _ => return None,
                                },
                            };
                            let p = OsString::from_vec(join(path, bytes));
                            files.push(found(PathBuf::from(p), s));
                        }
                    }
                    // A link (followed by `discover`), a FIFO, a socket, a device.
                    _ => return None,
                }
            }
        }
        with_below(files, &dirs, |name| {
            let sub = open_dir(fd, name.as_slice())?;
            walk(&sub, &join(path, name), depth + 1, found)
        })
    }
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
        let mut fast: Vec<String> = discover_regular(d.path(), |p, stat| {
            assert_eq!(stat, Stat::of(&p).unwrap());
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

    /// The walk of plain folders finds what the general walk finds, deep folders and names
    /// that are not UTF-8 included, each with the stat `stat` gives; a link or a FIFO
    /// anywhere makes it give up (the caller then walks the general way).
    #[test]
    #[cfg(target_os = "linux")]
    fn the_walk_of_plain_folders_is_the_walk_and_gives_up_on_anything_else() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.pt");
        let mut expected = Vec::new();
        for (i, rel) in [
            "a.pt",
            "x/b.PTH",
            "x/y/z/c.ckpt",
            "x/y/notes.txt",
            "w/v/u/t/s/d.bin",
        ]
        .iter()
        .enumerate()
        {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, vec![7u8; i * 100]).unwrap();
            if is_checkpoint_path(&p) {
                expected.push(p);
            }
        }
        let p = d.path().join("x").join(odd);
        std::fs::write(&p, b"12").unwrap();
        expected.push(p);
        std::fs::create_dir_all(d.path().join("empty/folder")).unwrap();
        expected.sort();
        let walk = || {
            discover_regular(d.path(), |p, stat| (p, stat)).map(|mut f: Vec<_>| {
                f.sort_by(|a: &(PathBuf, Stat), b| a.0.cmp(&b.0));
                f
            })
        };
        let found = walk().expect("plain folders and files");
        let paths: Vec<PathBuf> = found.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(paths, expected);
        let mut general = discover(d.path(), Walk::everything()).files;
        general.sort();
        assert_eq!(paths, general);
        for (p, stat) in &found {
            assert_eq!(*stat, Stat::of(p).unwrap(), "{}", p.display());
        }
        // A file given as the root is not a folder.
        assert!(discover_regular(&expected[0], |p, _| p).is_none());
        // A link to a file, then a FIFO, deep down.
        let link = d.path().join("x/y/link.pt");
        std::os::unix::fs::symlink(&expected[0], &link).unwrap();
        assert!(walk().is_none());
        std::fs::remove_file(&link).unwrap();
        assert!(walk().is_some());
        let fifo = d.path().join("w/v/u/pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        assert!(walk().is_none());
    }
}
