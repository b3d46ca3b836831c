//! Reading a `torch.save` zip without the tensor bytes nobody will look at.
//!
//! `scan --hash` fingerprints the model state only, and a training checkpoint often holds
//! as many bytes again of optimizer state (Adam keeps two tensors per parameter). This
//! reader fills a file-sized buffer with everything except the stored `data/N` entries
//! (the *holes*): the central directory, `data.pkl` and the other small entries. The file
//! is parsed from that buffer as usual (stored storages are only located, not read, while
//! parsing), and [`Checkpoint::load_storages`](super::Checkpoint::load_storages) reads the
//! holes of the storages that are wanted afterwards. Bytes of a hole that is still unread
//! are refused by `storage_bytes`; they are never handed out.
//!
//! Only archives shaped the way `torch.save` writes them take this path; anything unusual
//! (not a zip, ZIP64 records, an end record outside the last [`TAIL`] bytes, entries out of
//! order, a storage entry at the start of the file, entries whose data runs into the next
//! one) is read whole by the caller instead, so the thorough checks of the full reader see
//! every odd file.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::zip::{self, Method, ZipArchive};

/// How much of the end of the file is read first, hoping to find the whole central
/// directory in it (a checkpoint's directory is about 100 bytes per tensor).
pub const TAIL: u64 = 16 << 10;

/// Holes closer than this are read together, with the bytes between them.
const MERGE_GAP: u64 = 64 << 10;

/// Unread byte ranges `[start, end)` of a file, sorted and disjoint; each is the whole
/// span of one stored storage entry, local header included, up to the next entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holes(Vec<(u64, u64)>);

impl Holes {
    /// Whether any byte of `[start, end)` is still unread.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        // The first hole ending after `start` is the only candidate.
        let i = self.0.partition_point(|&(_, e)| e <= start);
        start < end && self.0.get(i).is_some_and(|&(s, _)| s < end)
    }

    /// No hole left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Read the holes that start at the given offsets (the local header offsets of stored
    /// storage entries; others are ignored) from `file` into `buf`, together with
    /// anything between holes closer than `MERGE_GAP` (64 KiB), and forget every hole read.
    pub fn fill(&mut self, file: &File, buf: &mut [u8], starts: &[u64]) -> std::io::Result<()> {
        let mut wanted: Vec<(u64, u64)> = starts
            .iter()
            .filter_map(|&s| {
                let i = self.0.partition_point(|&(hs, _)| hs < s);
                self.0.get(i).copied().filter(|&(hs, _)| hs == s)
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (s, e) in wanted {
            match runs.last_mut() {
                Some(last) if s <= last.1 + MERGE_GAP => last.1 = last.1.max(e),
                _ => runs.push((s, e)),
            }
        }
        for &(s, e) in &runs {
            // Holes lie inside the file (checked when they were made) and `buf` is as long.
            file.read_exact_at(&mut buf[s as usize..e as usize], s)?;
        }
        self.0
            .retain(|&(s, e)| !runs.iter().any(|&(rs, re)| rs <= s && e <= re));
        Ok(())
    }
}

/// Read `file` (`len` bytes, no more than `buf` can be made to hold) into `buf`, leaving
/// out the stored storage entries. `Ok(None)`: the file is not a plain `torch.save` zip
/// (or has nothing to leave out) and `buf` holds nothing useful: read it whole instead.
///
/// `buf` becomes `len` bytes long; its old contents stay where the holes are (they are
/// initialised memory, and never handed out).
pub fn read(file: &File, len: u64, buf: &mut Vec<u8>) -> std::io::Result<Option<Holes>> {
    let Ok(n) = usize::try_from(len) else {
        return Ok(None);
    };
    if len < TAIL * 2 {
        return Ok(None); // small: reading it whole costs no more
    }
    if buf.len() >= n {
        buf.truncate(n);
    } else {
        buf.resize(n, 0);
    }
    let tail_start = len - TAIL;
    file.read_exact_at(&mut buf[tail_start as usize..], tail_start)?;
    let Some(directory) = zip::tail_directory(&buf[tail_start as usize..], len) else {
        return Ok(None);
    };
    let from = directory.min(tail_start);
    if from < tail_start {
        file.read_exact_at(&mut buf[from as usize..tail_start as usize], from)?;
    }
    // Only bytes from `from` on are read here (see `tail_directory`).
    let Ok(archive) = ZipArchive::parse(buf) else {
        return Ok(None);
    };
    let Some(prefix) = prefix(&archive) else {
        return Ok(None);
    };
    let ends = spans(&archive, directory);
    let Some(holes) = plan(&archive, &prefix, &ends) else {
        return Ok(None);
    };
    // The entries the parser reads (data.pkl, byteorder, compressed ones) must keep to
    // their own spans, or it would read into a hole: checked once their headers are in.
    let read_whole: Vec<(u64, String, u64, u64)> = archive
        .entries()
        .iter()
        .zip(&ends)
        .filter(|(e, _)| !is_hole(e, &prefix))
        .map(|(e, &end)| {
            (
                e.local_header_offset,
                e.name.clone(),
                e.compressed_size,
                end,
            )
        })
        .collect();
    drop(archive);
    // Everything below what is read already that is not a hole.
    let mut at = 0;
    for &(s, e) in holes.0.iter().chain([(from, from)].iter()) {
        let (s, e) = (s.min(from), e.min(from));
        if at < s {
            file.read_exact_at(&mut buf[at as usize..s as usize], at)?;
        }
        at = e;
    }
    for (lho, name, size, end) in read_whole {
        match zip::local_data_offset(buf, lho, &name, size) {
            Ok(d) if d.checked_add(size).is_some_and(|x| x <= end) => {}
            _ => return Ok(None),
        }
    }
    Ok(Some(holes))
}

/// The folder prefix of the archive's single `data.pkl`, as `read_zip` finds it.
fn prefix(archive: &ZipArchive<'_>) -> Option<String> {
    match super::torch::pickle_names(archive.entries()).as_slice() {
        [one] => Some(one.strip_suffix("data.pkl").unwrap_or("").to_string()),
        _ => None,
    }
}

fn is_hole(entry: &zip::Entry, prefix: &str) -> bool {
    entry.method == Method::Stored
        && !entry.is_encrypted()
        && entry
            .name
            .strip_prefix(prefix)
            .is_some_and(|n| n.starts_with("data/"))
}

/// Where each entry's span ends (central directory order): at the next local header in
/// file order, or at the directory for the last one.
fn spans(archive: &ZipArchive<'_>, directory: u64) -> Vec<u64> {
    let entries = archive.entries();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| entries[i].local_header_offset);
    let mut ends = vec![directory; entries.len()];
    for w in order.windows(2) {
        ends[w[0]] = entries[w[1]].local_header_offset;
    }
    ends
}

/// The holes of a sane archive: entries at distinct offsets below the directory, the
/// first one not a storage.
fn plan(archive: &ZipArchive<'_>, prefix: &str, ends: &[u64]) -> Option<Holes> {
    let mut holes = Vec::new();
    for (e, &end) in archive.entries().iter().zip(ends) {
        if e.local_header_offset >= end {
            return None; // two entries at one offset, or one at or past the directory
        }
        if is_hole(e, prefix) {
            if e.local_header_offset < 64 {
                return None; // the format is recognised by the first bytes
            }
            holes.push((e.local_header_offset, end));
        }
    }
    if holes.is_empty() {
        return None;
    }
    holes.sort_unstable();
    Some(Holes(holes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint;
    use crate::format::{Checkpoint, FormatError, Source};
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn overlap_queries() {
        let h = Holes(vec![(100, 200), (300, 400)]);
        assert!(!h.overlaps(0, 100));
        assert!(h.overlaps(0, 101));
        assert!(h.overlaps(199, 200));
        assert!(!h.overlaps(200, 300));
        assert!(h.overlaps(250, 350));
        assert!(!h.overlaps(400, 1000));
        assert!(!h.overlaps(150, 150), "an empty range reads nothing");
        assert!(h.overlaps(150, 151));
    }

    fn samples() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints");
        let mut out: Vec<PathBuf> = walkdir::WalkDir::new(root)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file() && crate::discover::is_checkpoint_path(e.path()))
            .map(|e| e.into_path())
            .collect();
        out.sort();
        out
    }

    fn is_sparse(c: &Checkpoint) -> bool {
        matches!(c.source, Source::Sparse { .. })
    }

    /// Every tensor's bytes, or the error text.
    fn all_bytes(c: &Checkpoint) -> Vec<Result<Vec<u8>, String>> {
        (0..c.tensors.len())
            .map(|i| {
                c.tensor_bytes(i)
                    .map(|b| b.into_owned())
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn samples_read_sparsely_match_whole_reads() {
        let mut sparse_files = 0;
        let mut skipped_storages = 0;
        for path in samples() {
            let whole = Checkpoint::open(&path).unwrap();
            let mut sp = Checkpoint::open_sparse_into(&path, Vec::new()).unwrap();
            assert_eq!(sp.tensors, whole.tensors, "{}", path.display());
            assert_eq!(sp.root, whole.root, "{}", path.display());
            assert_eq!(sp.findings, whole.findings, "{}", path.display());
            let ms = sp.model_state_ref();
            let wanted = fingerprint::fingerprint_storages(&sp, ms.as_ref());
            sp.load_storages(&wanted).unwrap();
            if is_sparse(&sp) {
                sparse_files += 1;
            }
            for (i, t) in whole.tensors.iter().enumerate() {
                match sp.tensor_bytes(i) {
                    Ok(b) => assert_eq!(b, whole.tensor_bytes(i).unwrap(), "{}", t.path),
                    Err(FormatError::NotLoaded(_)) => {
                        assert!(!wanted.contains(&t.storage), "{} was wanted", t.path);
                        skipped_storages += 1;
                    }
                    Err(e) => panic!("{}: {e}", t.path),
                }
            }
            assert_eq!(
                fingerprint::fingerprint(&sp).unwrap(),
                fingerprint::fingerprint(&whole).unwrap()
            );
            let every: Vec<usize> = (0..sp.storages.len()).collect();
            sp.load_storages(&every).unwrap();
            assert_eq!(all_bytes(&sp), all_bytes(&whole), "{}", path.display());
        }
        assert!(
            sparse_files >= 4,
            "the torch.save samples are read sparsely"
        );
        assert!(skipped_storages > 0, "optimizer storages are left unread");
    }

    #[test]
    fn small_and_other_files_are_read_whole() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints");
        for f in ["exports/v5_12_4.safetensors", "exports/v5_12_4_legacy.pt"] {
            let c = Checkpoint::open_sparse_into(root.join(f), Vec::new()).unwrap();
            assert!(!is_sparse(&c), "{f}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// Damage anywhere, mostly in the places the parser reads: the sparse reader
        /// (after loading every storage) agrees with the whole-file reader, byte for byte
        /// and error for error.
        #[test]
        fn damaged_files_read_the_same_sparsely(
            edits in proptest::collection::vec((0u8..4, any::<u32>(), any::<u8>()), 1..6),
            cut in proptest::option::weighted(0.15, any::<u32>()),
        ) {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/v5_11/best.pt");
            let mut bytes = std::fs::read(src).unwrap();
            let n = bytes.len();
            for (region, at, value) in edits {
                let at = at as usize;
                let pos = match region {
                    0 => at % 4096,                 // data.pkl and the first headers
                    1 => n - 1 - at % 20_000,        // directory and end records
                    _ => at % n,
                };
                bytes[pos] = value;
            }
            if let Some(c) = cut {
                bytes.truncate(n - 1 - c as usize % 4096);
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("damaged.pt");
            std::fs::write(&path, &bytes).unwrap();
            let whole = Checkpoint::open(&path);
            let sparse = Checkpoint::open_sparse_into(&path, Vec::new());
            match (whole, sparse) {
                (Err(a), Err((b, _))) => prop_assert_eq!(a.to_string(), b.to_string()),
                (Ok(a), Ok(mut b)) => {
                    prop_assert_eq!(&a.tensors, &b.tensors);
                    prop_assert_eq!(&a.root, &b.root);
                    prop_assert_eq!(&a.findings, &b.findings);
                    let every: Vec<usize> = (0..b.storages.len()).collect();
                    b.load_storages(&every).unwrap();
                    prop_assert_eq!(all_bytes(&a), all_bytes(&b));
                }
                (a, b) => prop_assert!(false, "whole {:?} but sparse {:?}", a.err(), b.err().map(|e| e.0)),
            }
        }
    }
}
