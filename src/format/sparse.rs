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
//! (not a zip, an end record or ZIP64 end record outside the last [`TAIL`] bytes, entries out of
//! order, a storage entry at the start of the file, entries whose data runs into the next
//! one) is read whole by the caller instead (up to `MAX_WHOLE_READ`), so the thorough checks of the full reader see
//! every odd file.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::zip::{self, Method, ZipArchive};
use super::FormatError;

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
    /// The whole of a `len`-byte file, unread.
    pub fn whole(len: u64) -> Holes {
        Holes(if len > 0 { vec![(0, len)] } else { Vec::new() })
    }

    /// Forget the holes inside `[start, end)`: the parts of it that were unread, to be
    /// read now, in order.
    pub fn take(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let mut i = self.0.partition_point(|&(_, e)| e <= start);
        while let Some(&(s, e)) = self.0.get(i).filter(|&&(s, _)| s < end) {
            let (a, b) = (s.max(start), e.min(end));
            out.push((a, b));
            let rest: Vec<(u64, u64)> = [(s, a), (b, e)]
                .into_iter()
                .filter(|(x, y)| x < y)
                .collect();
            let kept = rest.len();
            self.0.splice(i..=i, rest);
            i += kept;
        }
        out
    }

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

    /// Read every hole.
    pub fn fill_all(&mut self, file: &File, buf: &mut [u8]) -> Result<(), FormatError> {
        let opened = buf.len() as u64;
        for &(s, e) in &self.0 {
            read_at(file, &mut buf[s as usize..e as usize], s, opened)?;
        }
        self.0.clear();
        Ok(())
    }

    /// Read the holes of the storage entries whose local headers are at the given offsets
    /// (others are ignored) from `file` into `buf`, together with
    /// anything between holes closer than `MERGE_GAP` (64 KiB), and forget every hole read.
    pub fn fill(&mut self, file: &File, buf: &mut [u8], starts: &[u64]) -> Result<(), FormatError> {
        // A storage's hole starts at its data, after the local header at `s` (read).
        let opened = buf.len() as u64;
        let mut wanted: Vec<(u64, u64)> = starts
            .iter()
            .filter(|&&s| s.saturating_add(zip::LOCAL_LEN as u64) <= opened)
            .filter_map(|&s| {
                let d = data_start(buf, s);
                let i = self.0.partition_point(|&(hs, _)| hs < d);
                self.0.get(i).copied().filter(|&(hs, _)| hs == d)
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
            read_at(file, &mut buf[s as usize..e as usize], s, opened)?;
        }
        self.0
            .retain(|&(s, e)| !runs.iter().any(|&(rs, re)| rs <= s && e <= re));
        Ok(())
    }
}

/// Read `out.len()` bytes at `at` of `file`, which was `opened` bytes long when it was
/// opened: a file cut short or grown since is a [`FormatError::Changed`], not bytes of
/// another file.
pub fn read_at(file: &File, out: &mut [u8], at: u64, opened: u64) -> Result<(), FormatError> {
    let changed = |file: &File| FormatError::Changed {
        opened,
        now: file.metadata().map(|m| m.len()).unwrap_or(0),
    };
    match file.read_exact_at(out, at) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(changed(file)),
        Err(e) => return Err(e.into()),
    }
    if file.metadata()?.len() != opened {
        return Err(changed(file));
    }
    Ok(())
}

/// Make `buf` a `len`-byte buffer for `file`, none of it read, if the file is to be read
/// lazily (see [`super::input`]): anything but a zip (whose directory tells where its
/// storages are, see [`read`]) of at least `2 * TAIL` bytes. `Ok(None)`: read it whole.
pub fn lazy(file: &File, len: u64, buf: &mut Vec<u8>) -> std::io::Result<Option<Holes>> {
    let Ok(n) = usize::try_from(len) else {
        return Ok(None);
    };
    if len < TAIL * 2 {
        return Ok(None);
    }
    let mut magic = [0u8; 2];
    file.read_exact_at(&mut magic, 0)?;
    if &magic == b"PK" {
        return Ok(None);
    }
    size(buf, n);
    Ok(Some(Holes::whole(len)))
}

/// Make `buf` `n` bytes long without touching the pages of a fresh allocation.
fn size(buf: &mut Vec<u8>, n: usize) {
    if buf.len() >= n {
        buf.truncate(n);
    } else if buf.capacity() >= n {
        buf.resize(n, 0);
    } else {
        // Zeroed by the allocator: pages of the holes are never touched, so they take no
        // memory (a resize would write every byte).
        *buf = vec![0u8; n];
    }
}

/// Read `file` (`len` bytes, no more than `buf` can be made to hold) into `buf`, leaving
/// out the stored storage entries. `Ok(Err(why))`: the file is not a plain `torch.save`
/// zip (or has nothing to leave out) and `buf` holds nothing useful: read it whole (or
/// lazily, if it is no zip) instead; `why` says what is unusual, for messages.
///
/// `buf` becomes `len` bytes long; its old contents stay where the holes are (they are
/// initialised memory, and never handed out).
pub fn read(
    file: &File,
    len: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<Result<Holes, &'static str>> {
    let Ok(n) = usize::try_from(len) else {
        return Ok(Err("larger than this machine's address space"));
    };
    if len < TAIL * 2 {
        return Ok(Err("small: reading it whole costs no more"));
    }
    size(buf, n);
    let tail_start = len - TAIL;
    file.read_exact_at(&mut buf[tail_start as usize..], tail_start)?;
    let Some(directory) = zip::tail_directory(&buf[tail_start as usize..], len) else {
        return Ok(Err("no single end record and central directory at its end"));
    };
    let from = directory.min(tail_start);
    if from < tail_start {
        file.read_exact_at(&mut buf[from as usize..tail_start as usize], from)?;
    }
    // Only bytes from `from` on are read here (see `tail_directory`).
    let Ok(archive) = ZipArchive::parse(buf) else {
        return Ok(Err("a central directory that does not parse"));
    };
    let Some(prefix) = prefix(&archive) else {
        return Ok(Err("not exactly one data.pkl"));
    };
    let ends = spans(&archive, directory);
    let Some(holes) = plan(&archive, &prefix, &ends, len) else {
        return Ok(Err(
            "entries sharing an offset, past the directory or a storage first",
        ));
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
            _ => return Ok(Err("an entry whose data runs into the next one")),
        }
    }
    // A storage's local header (and the name and extra field it gives) is read too, so
    // that what is checked of it at open time (the name torch never compares, see the
    // loader) is the file's bytes, never a hole's: a hole starts at its entry's data.
    let mut holes = holes;
    for hole in holes.0.iter_mut() {
        let (start, end) = *hole;
        let fixed = (start + zip::LOCAL_LEN as u64).min(end);
        file.read_exact_at(&mut buf[start as usize..fixed as usize], start)?;
        let data = if fixed == end {
            end
        } else {
            data_start(buf, start).min(end)
        };
        file.read_exact_at(&mut buf[fixed as usize..data as usize], fixed)?;
        *hole = (data, end);
    }
    holes.0.retain(|(s, e)| s < e);
    if holes.0.is_empty() {
        return Ok(Err("no storage to leave out"));
    }
    Ok(Ok(holes))
}

/// Where the data of the entry whose local header is at `lho` starts, from the header's
/// bytes in `buf` (read): after its fixed part, name and extra field; after the fixed part
/// alone when there is no local header signature there. A storage's hole starts there.
fn data_start(buf: &[u8], lho: u64) -> u64 {
    let fixed = lho + zip::LOCAL_LEN as u64;
    let at = |i: u64| {
        let i = (lho + i) as usize;
        u64::from(u16::from_le_bytes([buf[i], buf[i + 1]]))
    };
    if buf[lho as usize..lho as usize + 4] == zip::SIG_LOCAL.to_le_bytes() {
        fixed + at(26) + at(28)
    } else {
        fixed
    }
}

/// The folder prefix of the archive's single `data.pkl`, as `read_zip` finds it.
fn prefix(archive: &ZipArchive<'_>) -> Option<String> {
    match super::torch::pickle_names(archive.entries()).as_slice() {
        [one] => Some(one.strip_suffix("data.pkl").unwrap_or("").to_string()),
        _ => None,
    }
}

/// A storage entry, stored or deflated (not a pickle: a TorchScript reading sweeps every
/// `.pkl`).
fn is_hole(entry: &zip::Entry, prefix: &str) -> bool {
    matches!(entry.method, Method::Stored | Method::Deflate)
        && !entry.is_encrypted()
        && entry
            .name
            .strip_prefix(prefix)
            .is_some_and(|n| n.starts_with("data/") && !n.ends_with(".pkl"))
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
/// first one not a storage. No hole reaches into the last 64 KiB + 22 bytes of the
/// `len`-byte file, where the end records torch could take are looked for.
fn plan(archive: &ZipArchive<'_>, prefix: &str, ends: &[u64], len: u64) -> Option<Holes> {
    let tail = len.saturating_sub(zip::EOCD_SEARCH);
    let mut holes = Vec::new();
    for (e, &end) in archive.entries().iter().zip(ends) {
        if e.local_header_offset >= end {
            return None; // two entries at one offset, or one at or past the directory
        }
        if is_hole(e, prefix) {
            if e.local_header_offset < 64 {
                return None; // the format is recognised by the first bytes
            }
            let end = end.min(tail);
            if e.local_header_offset < end {
                holes.push((e.local_header_offset, end));
            }
        }
    }
    if holes.is_empty() {
        return None;
    }
    holes.sort_unstable();
    Some(Holes(holes))
}

/// A reader over `[pos, end)` of a file, by positioned reads.
pub struct RangeReader<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl<'f> RangeReader<'f> {
    pub fn new(file: &'f File, start: u64, end: u64) -> RangeReader<'f> {
        RangeReader {
            file,
            pos: start,
            end,
        }
    }
}

impl std::io::Read for RangeReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let n = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut out[..n], self.pos)?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than when it was opened",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
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

    /// A buffer handed from one file to the next (as `scan` recycles them) holds the
    /// first file's bytes in the second's holes: nothing checked at open time may read
    /// them (a storage's local header is read, its hole starts at its data).
    #[test]
    fn a_recycled_buffer_leaves_no_trace_in_the_next_file() {
        let files = samples();
        for a in &files {
            for b in &files {
                let first = Checkpoint::open_sparse_into(a, Vec::new()).unwrap();
                let next = Checkpoint::open_sparse_into(b, first.into_buffer()).unwrap();
                let fresh = Checkpoint::open_sparse_into(b, Vec::new()).unwrap();
                assert_eq!(
                    next.findings,
                    fresh.findings,
                    "{} after {}",
                    b.display(),
                    a.display()
                );
                assert_eq!(next.root, fresh.root);
            }
        }
    }

    /// Found by the `sparse_zip` fuzz campaign (2026-12-04): a pickle holding a NaN reads
    /// the same whole and sparsely, and the comparison has to say so (`==` on the roots
    /// said a NaN differs from itself; `Value::identical` compares float bits).
    #[test]
    fn a_pickle_holding_a_nan_reads_the_same_sparsely() {
        // The fuzzer's input: EMPTY_LIST, BINPUT 0, MARK, BINFLOAT (a subnormal), BINFLOAT
        // 0x7ffffa0000008071 (a NaN), STOP: the root is the NaN.
        let bytes = b"]q\x00(G\x00\x00\x00\x25\x00\x00\x00\x00G\x7f\xff\xfa\x00\x00\x00\x80q.";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.pt");
        std::fs::write(&path, bytes).unwrap();
        let whole = Checkpoint::open_into(&path, Vec::new()).map_err(|e| e.0);
        let sparse = Checkpoint::open_sparse_into(&path, Vec::new()).map_err(|e| e.0);
        match (whole, sparse) {
            (Ok(a), Ok(b)) => {
                assert!(format!("{:?}", a.root).contains("NaN"), "{:?}", a.root);
                assert_ne!(a.root, b.root, "== calls a NaN unequal to itself");
                assert!(a.root.identical(&b.root), "{:?} != {:?}", a.root, b.root);
            }
            (a, b) => panic!("whole {:?}, sparse {:?}", a.err(), b.err()),
        }
    }

    #[test]
    fn samples_read_sparsely_match_whole_reads() {
        let mut sparse_files = 0;
        let mut skipped_storages = 0;
        for path in samples() {
            let whole = Checkpoint::open_into(&path, Vec::new()).unwrap();
            assert!(!is_sparse(&whole));
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
                // Loaded storages are borrowed; the others are read from the file for
                // the call, with the same bytes.
                let b = sp
                    .tensor_bytes(i)
                    .unwrap_or_else(|e| panic!("{}: {e}", t.path));
                assert_eq!(b, whole.tensor_bytes(i).unwrap(), "{}", t.path);
                if !sp.storage_in_memory(t.storage) {
                    assert!(!wanted.contains(&t.storage), "{} was wanted", t.path);
                    assert!(matches!(b, std::borrow::Cow::Owned(_)));
                    skipped_storages += 1;
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

    /// How many bytes of the file are still unread.
    fn unread_bytes(c: &Checkpoint) -> u64 {
        match &c.source {
            Source::Sparse { holes, .. } => holes.0.iter().map(|(s, e)| e - s).sum(),
            _ => 0,
        }
    }

    /// The samples that are no zip: a safetensors file, a legacy stream, and the legacy
    /// tar fixture padded past the size read whole (zero blocks end a tar archive).
    fn other_samples(dir: &Path) -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut tar = std::fs::read(root.join("tests/fixtures/legacy/legacy_tar.pt")).unwrap();
        tar.extend(vec![0u8; 64 << 10]);
        let padded = dir.join("legacy_tar.pt");
        std::fs::write(&padded, tar).unwrap();
        vec![
            root.join("checkpoints/exports/v5_12_4.safetensors"),
            root.join("checkpoints/exports/v5_12_4_legacy.pt"),
            padded,
        ]
    }

    #[test]
    fn other_files_are_read_lazily_like_whole_reads() {
        let dir = tempfile::tempdir().unwrap();
        for path in other_samples(dir.path()) {
            let p = path.display().to_string();
            let whole = Checkpoint::open_into(&path, Vec::new()).unwrap();
            let mut lazy = Checkpoint::open_sparse_into(&path, Vec::new()).unwrap();
            assert!(is_sparse(&lazy), "{p}");
            // Headers and pickles only: the tensor data is still on disk.
            let unread = unread_bytes(&lazy);
            assert!(unread > 0, "{p}");
            if !p.ends_with("legacy_tar.pt") {
                assert!(unread > whole.file_size / 2, "{p}: {unread} unread");
            }
            assert_eq!(lazy.format, whole.format, "{p}");
            assert_eq!(lazy.tensors, whole.tensors, "{p}");
            assert_eq!(lazy.root, whole.root, "{p}");
            assert_eq!(lazy.findings, whole.findings, "{p}");
            assert_eq!(all_bytes(&lazy), all_bytes(&whole), "{p}");
            assert_eq!(
                fingerprint::fingerprint(&lazy).unwrap(),
                fingerprint::fingerprint(&whole).unwrap()
            );
            // Loading the storages reads them into memory, once.
            let every: Vec<usize> = (0..lazy.storages.len()).collect();
            lazy.load_storages(&every).unwrap();
            for i in 0..lazy.storages.len() {
                assert!(lazy.storage_in_memory(i), "{p}: storage {i}");
            }
            assert_eq!(all_bytes(&lazy), all_bytes(&whole), "{p}");
        }
    }

    #[test]
    fn a_file_cut_short_or_grown_after_opening_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // (The tar fixture's data all lies in the first window read.)
        for src in other_samples(dir.path()).into_iter().take(2) {
            for grow in [false, true] {
                let path = dir.path().join(format!(
                    "changed-{grow}-{}",
                    src.file_name().unwrap().to_string_lossy()
                ));
                std::fs::copy(&src, &path).unwrap();
                let c = Checkpoint::open_sparse_into(&path, Vec::new()).unwrap();
                let i = (0..c.tensors.len())
                    .rev()
                    .find(|&i| !c.storage_in_memory(c.tensors[i].storage))
                    .expect("a tensor still on disk");
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                let len = c.file_size;
                f.set_len(if grow { len + 4096 } else { len / 2 }).unwrap();
                let e = c.tensor_bytes(i).unwrap_err();
                assert!(
                    matches!(e, FormatError::Changed { opened, now } if opened == len && now != len),
                    "{}: {e}",
                    path.display()
                );
                assert!(e.hint().is_some());
            }
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
            let whole = Checkpoint::open_into(&path, Vec::new()).map_err(|e| e.0);
            let sparse = Checkpoint::open_sparse_into(&path, Vec::new());
            match (whole, sparse) {
                (Err(a), Err((b, _))) => prop_assert_eq!(a.to_string(), b.to_string()),
                (Ok(a), Ok(mut b)) => {
                    prop_assert_eq!(&a.tensors, &b.tensors);
                    prop_assert!(a.root.identical(&b.root), "{:?} != {:?}", a.root, b.root);
                    prop_assert_eq!(&a.findings, &b.findings);
                    // Read from the file on demand, then loaded: the same bytes and errors.
                    prop_assert_eq!(all_bytes(&a), all_bytes(&b));
                    let every: Vec<usize> = (0..b.storages.len()).collect();
                    b.load_storages(&every).unwrap();
                    prop_assert_eq!(all_bytes(&a), all_bytes(&b));
                }
                (a, b) => prop_assert!(false, "whole {:?} but sparse {:?}", a.err(), b.err().map(|e| e.0)),
            }
        }

        /// The same for the files read lazily (a legacy stream, a safetensors file, a
        /// tar checkpoint):
        /// damage in the pickles, headers or counts reads the same as a whole read.
        #[test]
        fn damaged_files_read_the_same_lazily(
            which in 0usize..3,
            edits in proptest::collection::vec((0u8..4, any::<u32>(), any::<u8>()), 1..6),
            cut in proptest::option::weighted(0.15, any::<u32>()),
        ) {
            let f = [
                "checkpoints/exports/v5_12_4_legacy.pt",
                "checkpoints/exports/v5_12_4.safetensors",
                "tests/fixtures/legacy/legacy_tar.pt",
            ][which];
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            let mut bytes = std::fs::read(src).unwrap();
            if which == 2 {
                bytes.extend(vec![0u8; 64 << 10]); // past the size read whole
            }
            let n = bytes.len();
            for (region, at, value) in edits {
                let at = at as usize;
                let pos = match region {
                    0 | 1 => at % 8192,                 // pickles, the header
                    _ => at % n,
                };
                bytes[pos] = value;
            }
            if let Some(c) = cut {
                bytes.truncate(n - 1 - c as usize % (n / 2));
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(f.rsplit('/').next().unwrap());
            std::fs::write(&path, &bytes).unwrap();
            let whole = Checkpoint::open_into(&path, Vec::new()).map_err(|e| e.0);
            let lazy = Checkpoint::open_sparse_into(&path, Vec::new());
            match (whole, lazy) {
                (Err(a), Err((b, _))) => prop_assert_eq!(a.to_string(), b.to_string()),
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(a.format, b.format);
                    prop_assert_eq!(&a.tensors, &b.tensors);
                    prop_assert!(a.root.identical(&b.root), "{:?} != {:?}", a.root, b.root);
                    prop_assert_eq!(&a.findings, &b.findings);
                    prop_assert_eq!(all_bytes(&a), all_bytes(&b));
                }
                (a, b) => prop_assert!(false, "whole {:?} but lazy {:?}", a.err(), b.err().map(|e| e.0)),
            }
        }
    }
}
