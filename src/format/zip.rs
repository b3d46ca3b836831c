//! Defensive reader for the zip container written by `torch.save`.
//!
//! Works on the whole file as a byte slice (the mmap). Every offset and length read
//! from the archive is checked against the slice before use, and nothing is allocated
//! from a count the archive claims before that count has been checked. `Stored`
//! entries are handed out as ranges of the slice (zero copy); `Deflate` entries are
//! inflated with a hard bound on the output.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::io::Read;

use super::{limits, FormatError, Limit, PassThrough};

pub const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_EOCD64: u32 = 0x0606_4b50;
const SIG_EOCD64_LOCATOR: u32 = 0x0706_4b50;

const EOCD_LEN: usize = 22;
const EOCD64_LOCATOR_LEN: usize = 20;
const EOCD64_LEN: usize = 56;
const CENTRAL_LEN: usize = 46;
/// Fixed part of a local header (the name and extra field follow).
pub const LOCAL_LEN: usize = 30;
/// Largest zip comment (the EOCD is within the last 64 KiB + 22 bytes).
const MAX_COMMENT: usize = 0xFFFF;
/// How far from the end of a file end records are looked for.
pub const EOCD_SEARCH: u64 = (EOCD_LEN + MAX_COMMENT) as u64;

/// Compression method of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Stored,
    Deflate,
    /// Any other method (read as an error).
    Other(u16),
}

impl Method {
    fn from_u16(m: u16) -> Method {
        match m {
            0 => Method::Stored,
            8 => Method::Deflate,
            other => Method::Other(other),
        }
    }
}

/// One central-directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub method: Method,
    /// General purpose flags (bit 0: encrypted, bit 3: sizes in a data descriptor).
    pub flags: u16,
    pub crc32: u32,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    /// Offset of the entry's local header in the file.
    pub local_header_offset: u64,
}

impl Entry {
    pub fn is_encrypted(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// A parsed zip archive over a byte slice.
#[derive(Debug)]
pub struct ZipArchive<'a> {
    bytes: &'a [u8],
    entries: Vec<Entry>,
    by_name: NameIndex,
}

/// Entries by name: the (randomly keyed) hash of a name → the entry. Names whose hash
/// another name already has (never seen in practice) are searched linearly.
#[derive(Debug)]
struct NameIndex {
    hasher: RandomState,
    by_hash: HashMap<u64, usize, BuildHasherDefault<PassThrough>>,
    collided: Vec<usize>,
}

impl NameIndex {
    fn new(capacity: usize) -> NameIndex {
        NameIndex {
            hasher: RandomState::new(),
            by_hash: HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            collided: Vec::new(),
        }
    }

    fn get(&self, entries: &[Entry], name: &str) -> Option<usize> {
        let h = self.hasher.hash_one(name);
        match self.by_hash.get(&h) {
            Some(&i) if entries[i].name == name => Some(i),
            Some(_) => self
                .collided
                .iter()
                .copied()
                .find(|i| entries[*i].name == name),
            None => None,
        }
    }

    /// Index `entries[index]`; `false` when its name is already taken.
    fn insert(&mut self, entries: &[Entry], index: usize) -> bool {
        let name = entries[index].name.as_str();
        let h = self.hasher.hash_one(name);
        match self.by_hash.get(&h) {
            None => {
                self.by_hash.insert(h, index);
                true
            }
            Some(&i) if entries[i].name == name => false,
            Some(_) => {
                if self.collided.iter().any(|i| entries[*i].name == name) {
                    return false;
                }
                self.collided.push(index);
                true
            }
        }
    }
}

/// Little-endian field reads over a checked slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.buf[at], self.buf[at + 1]])
    }
    fn u32(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buf[at..at + 4]);
        u32::from_le_bytes(b)
    }
    fn u64(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buf[at..at + 8]);
        u64::from_le_bytes(b)
    }
}

/// `len` bytes at `offset`, or `None` when they are not all inside `bytes`.
fn slice_at(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let end = offset.checked_add(len)?;
    if end > bytes.len() as u64 {
        return None;
    }
    Some(&bytes[offset as usize..end as usize])
}

impl<'a> ZipArchive<'a> {
    /// Parse the central directory of the archive in `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<ZipArchive<'a>, FormatError> {
        let (eocd_pos, _) = find_eocd(bytes)?;
        Self::parse_at(bytes, eocd_pos, false)
    }

    /// Parse the central directory that the end record at `eocd_pos` describes. With
    /// `allow_duplicates`, entries whose names repeat are kept (the index finds the
    /// first): for looking at an archive the way another reader would.
    pub fn parse_at(
        bytes: &'a [u8],
        eocd_pos: usize,
        allow_duplicates: bool,
    ) -> Result<ZipArchive<'a>, FormatError> {
        let file_len = bytes.len() as u64;
        if eocd_pos
            .checked_add(EOCD_LEN)
            .is_none_or(|e| e > bytes.len())
        {
            return Err(FormatError::Truncated(format!(
                "zip cut short: no room for an end record at byte {eocd_pos}"
            )));
        }
        let EndRecords {
            total_entries,
            cd_size,
            cd_offset,
            ..
        } = end_records(bytes, file_len, eocd_pos)?;
        if total_entries > limits::MAX_ZIP_ENTRIES as u64 {
            return Err(FormatError::Limit {
                limit: Limit::ZipEntries,
                max: limits::MAX_ZIP_ENTRIES as u64,
                found: total_entries,
                at: String::new(),
            });
        }
        if cd_offset > file_len {
            return Err(FormatError::Truncated(format!(
                "zip cut short: central directory at {cd_offset} lies past the end of the {file_len}-byte file"
            )));
        }
        let cd = slice_at(bytes, cd_offset, cd_size).ok_or_else(|| {
            FormatError::Truncated(format!(
                "zip cut short: central directory at {cd_offset} ({cd_size} bytes) runs past the end of the {file_len}-byte file"
            ))
        })?;
        // Each entry takes at least 46 bytes, which bounds the claimed count.
        if total_entries > (cd.len() / CENTRAL_LEN) as u64 {
            return Err(FormatError::Zip(format!(
                "zip claims {total_entries} entries but its {cd_size}-byte central directory holds at most {}",
                cd.len() / CENTRAL_LEN
            )));
        }
        let count = total_entries as usize;
        let mut entries: Vec<Entry> = Vec::with_capacity(count.min(4096));
        let mut by_name = NameIndex::new(count.min(4096));
        let mut pos = 0usize;
        for i in 0..count {
            entries.push(parse_central(cd, &mut pos, i, cd_offset)?);
            if !by_name.insert(&entries, i) && !allow_duplicates {
                return Err(FormatError::Zip(format!(
                    "entry name `{}` appears twice (ambiguous archive)",
                    entries[i].name
                )));
            }
        }
        Ok(ZipArchive {
            bytes,
            entries,
            by_name,
        })
    }

    /// All entries, in central-directory order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.by_name
            .get(&self.entries, name)
            .map(|i| &self.entries[i])
    }

    /// Offset of the entry's (compressed) data in the file, through its local header.
    pub fn data_offset(&self, entry: &Entry) -> Result<u64, FormatError> {
        self.data_offset_with(entry, true)
    }

    fn data_offset_with(&self, entry: &Entry, check_name: bool) -> Result<u64, FormatError> {
        let bytes = self.bytes;
        let (lho, size) = (entry.local_header_offset, entry.compressed_size);
        local_data_offset_at(
            bytes,
            0,
            bytes.len() as u64,
            lho,
            &entry.name,
            size,
            check_name,
        )
    }

    /// The name the entry's local header gives, when there is a local header where the
    /// directory says (torch's reader never compares it with the directory's name).
    pub fn local_name(&self, entry: &Entry) -> Option<&'a [u8]> {
        let lho = entry.local_header_offset;
        let head = slice_at(self.bytes, lho, LOCAL_LEN as u64)?;
        let r = Reader { buf: head };
        if r.u32(0) != SIG_LOCAL {
            return None;
        }
        slice_at(self.bytes, lho + LOCAL_LEN as u64, u64::from(r.u16(26)))
    }

    /// The entry's bytes as torch's zip reader (miniz) reads them: like
    /// [`read_unchecked`](Self::read_unchecked), but whatever name the local header gives
    /// (its lengths are used to find the data; the directory's sizes are used).
    pub fn read_as_torch(&self, entry: &Entry, max_len: u64) -> Result<Cow<'a, [u8]>, FormatError> {
        self.read_inner(entry, max_len, false)
    }

    /// For a `Stored` entry, its `(offset, len)` in the file; `None` if compressed.
    pub fn stored_range(&self, entry: &Entry) -> Result<Option<(u64, u64)>, FormatError> {
        let Some(len) = stored_len(entry)? else {
            return Ok(None);
        };
        let off = self.data_offset(entry)?;
        Ok(Some((off, len)))
    }

    /// The entry's bytes: borrowed if stored, inflated if deflated. The uncompressed
    /// size must not exceed `max_len`; the CRC-32 is checked.
    pub fn read(&self, entry: &Entry, max_len: u64) -> Result<Cow<'a, [u8]>, FormatError> {
        let data = self.read_unchecked(entry, max_len)?;
        let crc = crc32(&data);
        if crc != entry.crc32 {
            return Err(FormatError::Zip(format!(
                "CRC-32 mismatch in `{}`: stored {:08x}, computed {crc:08x}",
                entry.name, entry.crc32
            )));
        }
        Ok(data)
    }

    /// Like [`read`](Self::read) without the CRC check (for large storages).
    pub fn read_unchecked(
        &self,
        entry: &Entry,
        max_len: u64,
    ) -> Result<Cow<'a, [u8]>, FormatError> {
        self.read_inner(entry, max_len, true)
    }

    fn read_inner(
        &self,
        entry: &Entry,
        max_len: u64,
        check_name: bool,
    ) -> Result<Cow<'a, [u8]>, FormatError> {
        if entry.is_encrypted() {
            return Err(FormatError::Zip(format!("`{}` is encrypted", entry.name)));
        }
        if entry.uncompressed_size > max_len {
            return Err(FormatError::Limit {
                limit: Limit::ZipEntrySize,
                max: max_len,
                found: entry.uncompressed_size,
                at: entry.name.clone(),
            });
        }
        match entry.method {
            Method::Stored => {
                let len = stored_len(entry)?
                    .ok_or_else(|| FormatError::Zip(format!("`{}` is not stored", entry.name)))?;
                let off = self.data_offset_with(entry, check_name)?;
                // stored_range checked the range against the file.
                Ok(Cow::Borrowed(
                    &self.bytes[off as usize..(off + len) as usize],
                ))
            }
            Method::Deflate => {
                let off = self.data_offset_with(entry, check_name)?;
                let raw = &self.bytes[off as usize..(off + entry.compressed_size) as usize];
                let out = inflate(
                    raw,
                    entry.compressed_size,
                    &entry.name,
                    entry.uncompressed_size,
                )?;
                Ok(Cow::Owned(out))
            }
            Method::Other(m) => Err(FormatError::Zip(format!(
                "`{}` uses unsupported compression method {m}",
                entry.name
            ))),
        }
    }
}

/// Inflate the deflate stream `raw` (`compressed_size` bytes) of the entry `name`, which
/// declares `declared` bytes: never more than `declared + 1` bytes are produced, and any
/// other length than `declared` is an error. The caller has checked `declared` against
/// the inflation limits.
pub fn inflate(
    raw: impl Read,
    compressed_size: u64,
    name: &str,
    declared: u64,
) -> Result<Vec<u8>, FormatError> {
    // Reserve at most what the compressed data could plausibly expand to.
    let cap = declared
        .min(compressed_size.saturating_mul(1032).saturating_add(64))
        .min(64 << 20) as usize;
    let mut out = Vec::with_capacity(cap);
    let mut dec = flate2::read::DeflateDecoder::new(raw).take(declared.saturating_add(1));
    dec.read_to_end(&mut out)
        .map_err(|e| FormatError::Zip(format!("cannot inflate `{name}`: {e}")))?;
    if out.len() as u64 != declared {
        return Err(FormatError::Zip(format!(
            "`{name}` inflates to {}{} bytes but its header declares {declared}",
            if out.len() as u64 > declared {
                "more than "
            } else {
                ""
            },
            (out.len() as u64).min(declared),
        )));
    }
    Ok(out)
}

/// For a `Stored` (unencrypted) entry, its length, checked from the central directory
/// alone (where its data starts needs the local header: [`local_data_offset`]); `None` if
/// compressed or encrypted.
pub fn stored_len(entry: &Entry) -> Result<Option<u64>, FormatError> {
    if entry.method != Method::Stored || entry.is_encrypted() {
        return Ok(None);
    }
    if entry.compressed_size != entry.uncompressed_size {
        return Err(FormatError::Zip(format!(
            "stored entry `{}` has compressed size {} but uncompressed size {}",
            entry.name, entry.compressed_size, entry.uncompressed_size
        )));
    }
    Ok(Some(entry.compressed_size))
}

/// CRC-32 (IEEE) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// Every End Of Central Directory signature in the last 64 KiB + 22 bytes with room for
/// a record after it, highest first. The first is the one miniz (PyTorch's zip reader)
/// uses: it takes the last signature without checking that its comment reaches the end.
pub fn eocd_candidates(bytes: &[u8]) -> Vec<usize> {
    let len = bytes.len();
    if len < EOCD_LEN {
        return Vec::new();
    }
    let lowest = len.saturating_sub(EOCD_LEN + MAX_COMMENT);
    (lowest..=len - EOCD_LEN)
        .rev()
        .filter(|&p| bytes[p..p + 4] == SIG_EOCD.to_le_bytes())
        .collect()
}

/// The end record [`ZipArchive::parse`] uses.
pub fn tvck_eocd(bytes: &[u8]) -> Option<usize> {
    find_eocd(bytes).ok().map(|(p, _)| p)
}

/// Position of the End Of Central Directory record, and whether its comment reaches
/// exactly the end of `bytes` (else it is the highest record that at least fits).
fn find_eocd(bytes: &[u8]) -> Result<(usize, bool), FormatError> {
    let len = bytes.len();
    if len < EOCD_LEN {
        return Err(FormatError::Truncated(format!(
            "zip cut short: {len} bytes is too small for a zip end record"
        )));
    }
    let lowest = len.saturating_sub(EOCD_LEN + MAX_COMMENT);
    let mut pos = len - EOCD_LEN;
    let mut fallback = None;
    loop {
        if bytes[pos..pos + 4] == SIG_EOCD.to_le_bytes() {
            let comment_len = usize::from(u16::from_le_bytes([bytes[pos + 20], bytes[pos + 21]]));
            let end = pos + EOCD_LEN + comment_len;
            if end == len {
                return Ok((pos, true));
            }
            if end < len && fallback.is_none() {
                fallback = Some(pos);
            }
        }
        if pos == lowest {
            break;
        }
        pos -= 1;
    }
    fallback.map(|pos| (pos, false)).ok_or_else(|| {
        FormatError::Truncated(format!(
            "zip cut short: no end-of-central-directory record in the last {} bytes of the {len}-byte file",
            len - lowest
        ))
    })
}

/// For a reader that has only the last bytes of a file (`tail`, the file being `file_len`
/// bytes long): the offset of the central directory, if the archive ends the plain way.
/// That is: an end record found by the same backward search as [`ZipArchive::parse`]'s
/// (the highest one whose comment reaches exactly the end of the file), inside `tail`,
/// a ZIP64 end record (if a locator points at one) also inside `tail`, and a directory
/// that ends before the end record. `None` for anything else: the caller then reads the
/// whole file.
/// The returned offset is where the directory (or the ZIP64 end record before it)
/// starts: the end of the entries' data. [`ZipArchive::parse`] on a buffer whose bytes
/// from there (or from the start of `tail`, if lower) to the end are the file's reads
/// nothing below that.
pub fn tail_directory(tail: &[u8], file_len: u64) -> Option<u64> {
    if tail.len() as u64 > file_len {
        return None;
    }
    let (eocd, exact) = find_eocd(tail).ok()?;
    if !exact {
        return None; // `parse` would look further down for an exact one
    }
    let r = end_records(tail, file_len, eocd).ok()?;
    let eocd_at = file_len - tail.len() as u64 + eocd as u64;
    // The directory must end at or before the end record.
    match r.cd_offset.checked_add(r.cd_size) {
        Some(end) if end <= eocd_at => Some(
            r.zip64_record
                .map_or(r.cd_offset, |rec| rec.min(r.cd_offset)),
        ),
        _ => None,
    }
}

/// What the end records say.
struct EndRecords {
    total_entries: u64,
    cd_size: u64,
    cd_offset: u64,
    /// Offset of the ZIP64 end record, when a locator points at one.
    zip64_record: Option<u64>,
}

/// Read the end record at `eocd` in `window`, the last bytes of a `file_len`-byte file
/// (the whole file for [`ZipArchive::parse`]), with the ZIP64 records it leads to. A
/// record outside `window` is an error.
fn end_records(window: &[u8], file_len: u64, eocd: usize) -> Result<EndRecords, FormatError> {
    let base = file_len - window.len() as u64;
    let r = Reader {
        buf: &window[eocd..eocd + EOCD_LEN],
    };
    let disk = r.u16(4);
    let cd_disk = r.u16(6);
    let mut out = EndRecords {
        total_entries: u64::from(r.u16(10)),
        cd_size: u64::from(r.u32(12)),
        cd_offset: u64::from(r.u32(16)),
        zip64_record: None,
    };
    // ZIP64: a locator right before the EOCD points at the EOCD64 record.
    if base + eocd as u64 >= EOCD64_LOCATOR_LEN as u64 {
        let loc_pos = eocd.checked_sub(EOCD64_LOCATOR_LEN).ok_or_else(|| {
            FormatError::Truncated("the bytes before the zip end record were not read".into())
        })?;
        let loc = Reader {
            buf: &window[loc_pos..eocd],
        };
        if loc.u32(0) == SIG_EOCD64_LOCATOR {
            let rec_off = loc.u64(8);
            let in_window = rec_off.checked_sub(base).ok_or_else(|| {
                FormatError::Truncated(format!(
                    "the ZIP64 end record at {rec_off} lies before the bytes read"
                ))
            })?;
            let rec = slice_at(window, in_window, EOCD64_LEN as u64).ok_or_else(|| {
                FormatError::Truncated(format!(
                    "zip cut short: the ZIP64 end record at {rec_off} lies past the end of the {file_len}-byte file"
                ))
            })?;
            let rec = Reader { buf: rec };
            if rec.u32(0) != SIG_EOCD64 {
                return Err(FormatError::Zip(format!(
                    "no ZIP64 end record at offset {rec_off} (the locator points there)"
                )));
            }
            if rec.u32(16) != 0 || rec.u32(20) != 0 {
                return Err(FormatError::Zip(
                    "multi-disk (split) archives are not supported".into(),
                ));
            }
            out.total_entries = rec.u64(32);
            out.cd_size = rec.u64(40);
            out.cd_offset = rec.u64(48);
            out.zip64_record = Some(rec_off);
        } else if out.total_entries == 0xFFFF
            || out.cd_size == 0xFFFF_FFFF
            || out.cd_offset == 0xFFFF_FFFF
        {
            return Err(FormatError::Zip(
                "the end record needs ZIP64 values but there is no ZIP64 locator".into(),
            ));
        }
    }
    if disk != 0 || cd_disk != 0 {
        return Err(FormatError::Zip(
            "multi-disk (split) archives are not supported".into(),
        ));
    }
    Ok(out)
}

/// Parse the central entry at `*pos` of `cd` and advance `*pos`.
fn parse_central(
    cd: &[u8],
    pos: &mut usize,
    index: usize,
    cd_offset: u64,
) -> Result<Entry, FormatError> {
    let at = *pos;
    let bad = |what: &str| {
        FormatError::Zip(format!(
            "central directory entry #{index} at {}: {what}",
            cd_offset + at as u64
        ))
    };
    if cd.len() - at < CENTRAL_LEN {
        return Err(bad("runs past the end of the central directory"));
    }
    let r = Reader {
        buf: &cd[at..at + CENTRAL_LEN],
    };
    if r.u32(0) != SIG_CENTRAL {
        return Err(bad("bad signature"));
    }
    let flags = r.u16(8);
    let method = Method::from_u16(r.u16(10));
    let crc32 = r.u32(16);
    let mut compressed_size = u64::from(r.u32(20));
    let mut uncompressed_size = u64::from(r.u32(24));
    let name_len = usize::from(r.u16(28));
    let extra_len = usize::from(r.u16(30));
    let comment_len = usize::from(r.u16(32));
    let disk_start = r.u16(34);
    let mut local_header_offset = u64::from(r.u32(42));
    let var_len = name_len + extra_len + comment_len;
    if cd.len() - at - CENTRAL_LEN < var_len {
        return Err(bad(
            "its name/extra/comment run past the end of the central directory",
        ));
    }
    let name_start = at + CENTRAL_LEN;
    let name_bytes = &cd[name_start..name_start + name_len];
    let name = match std::str::from_utf8(name_bytes) {
        Ok(s) => s.to_string(),
        Err(_) => String::from_utf8_lossy(name_bytes).into_owned(),
    };
    let extra = &cd[name_start + name_len..name_start + name_len + extra_len];

    // ZIP64 extended information: present fields are those set to all-ones above.
    let need_u = uncompressed_size == 0xFFFF_FFFF;
    let need_c = compressed_size == 0xFFFF_FFFF;
    let need_o = local_header_offset == 0xFFFF_FFFF;
    if need_u || need_c || need_o {
        let z64 = find_extra(extra, 0x0001)
            .ok_or_else(|| bad("sizes need a ZIP64 extra field but there is none"))?;
        let mut p = 0usize;
        let mut take = |what: &str| -> Result<u64, FormatError> {
            if z64.len() < p + 8 {
                return Err(bad(&format!("ZIP64 extra field too short for the {what}")));
            }
            let v = Reader { buf: z64 }.u64(p);
            p += 8;
            Ok(v)
        };
        if need_u {
            uncompressed_size = take("uncompressed size")?;
        }
        if need_c {
            compressed_size = take("compressed size")?;
        }
        if need_o {
            local_header_offset = take("local header offset")?;
        }
    }
    if disk_start != 0 && disk_start != 0xFFFF {
        return Err(bad(
            "entry on another disk (split archives are not supported)",
        ));
    }
    *pos = name_start + var_len;
    Ok(Entry {
        name,
        method,
        flags,
        crc32,
        compressed_size,
        uncompressed_size,
        local_header_offset,
    })
}

/// The data of the extra field with header id `id`.
fn find_extra(extra: &[u8], id: u16) -> Option<&[u8]> {
    let mut p = 0usize;
    while extra.len() - p >= 4 {
        let hid = u16::from_le_bytes([extra[p], extra[p + 1]]);
        let len = usize::from(u16::from_le_bytes([extra[p + 2], extra[p + 3]]));
        let start = p + 4;
        if extra.len() - start < len {
            return None;
        }
        if hid == id {
            return Some(&extra[start..start + len]);
        }
        p = start + len;
    }
    None
}

/// A minimal zip writer for tests (stored or deflated entries, optional ZIP64 records).
/// Where a stored entry's data starts: read its local header at `lho` in `bytes` (signature,
/// name = `name`, lengths) and check that `size` bytes fit in the file. Readers call this
/// lazily, for the entries whose bytes they actually need.
pub fn local_data_offset(
    bytes: &[u8],
    lho: u64,
    name: &str,
    size: u64,
) -> Result<u64, FormatError> {
    local_data_offset_at(bytes, 0, bytes.len() as u64, lho, name, size, true)
}

/// [`local_data_offset`] given only `head`, the file's bytes from `lho` on (at least
/// the local header's fixed part and the name it gives, or up to the end of the
/// `file_len`-byte file): the same checks and the same errors.
pub fn local_data_offset_in(
    head: &[u8],
    lho: u64,
    file_len: u64,
    name: &str,
    size: u64,
) -> Result<u64, FormatError> {
    local_data_offset_at(head, lho, file_len, lho, name, size, true)
}

/// `window` holds the file's bytes from `base` on.
fn local_data_offset_at(
    window: &[u8],
    base: u64,
    file_len: u64,
    lho: u64,
    name: &str,
    size: u64,
    check_name: bool,
) -> Result<u64, FormatError> {
    let at = |off: u64, len: u64| off.checked_sub(base).and_then(|o| slice_at(window, o, len));
    let head = at(lho, LOCAL_LEN as u64).ok_or_else(|| {
        FormatError::Truncated(format!(
            "zip cut short: local header of `{name}` at {lho} lies past the end of the {file_len}-byte file"
        ))
    })?;
    let r = Reader { buf: head };
    if r.u32(0) != SIG_LOCAL {
        return Err(FormatError::Zip(format!(
            "no local header at offset {lho} for `{name}`"
        )));
    }
    let name_len = u64::from(r.u16(26));
    let extra_len = u64::from(r.u16(28));
    let name_off = lho + LOCAL_LEN as u64;
    let local_name = at(name_off, name_len).ok_or_else(|| {
        FormatError::Truncated(format!(
            "zip cut short: local header of `{name}` runs past the end of the {file_len}-byte file"
        ))
    })?;
    if check_name && local_name != name.as_bytes() {
        return Err(FormatError::Zip(format!(
            "local header at {lho} names `{}` but the central directory says `{name}`",
            String::from_utf8_lossy(local_name),
        )));
    }
    let data = name_off + name_len + extra_len;
    match data.checked_add(size) {
        Some(end) if end <= file_len => Ok(data),
        _ => Err(FormatError::Truncated(format!(
            "zip cut short: `{name}` needs {size} bytes at {data} but the file has {file_len}"
        ))),
    }
}

#[cfg(test)]
pub(crate) mod build {
    use std::io::Write;

    pub struct Spec<'a> {
        pub name: &'a str,
        pub data: &'a [u8],
        pub deflate: bool,
    }

    /// Build an archive; `zip64` writes ZIP64 extras in every central entry and a
    /// ZIP64 end record + locator. `align` pads local headers' extra so data starts at
    /// a multiple of 64 (as torch does).
    pub fn zip(entries: &[Spec<'_>], zip64: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in entries {
            let payload = if e.deflate {
                let mut enc =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(e.data).unwrap();
                enc.finish().unwrap()
            } else {
                e.data.to_vec()
            };
            let crc = super::crc32(e.data);
            let offset = out.len() as u64;
            let method: u16 = if e.deflate { 8 } else { 0 };
            // local header (torch style: flag 0x0808 would put sizes in a descriptor;
            // here the sizes are in the header)
            out.extend_from_slice(&super::SIG_LOCAL.to_le_bytes());
            out.extend_from_slice(&20u16.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            let pad = (64 - (out.len() + 2 + e.name.len() + 4) % 64) % 64;
            out.extend_from_slice(&((pad + 4) as u16).to_le_bytes());
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(&0x4246u16.to_le_bytes()); // "FB" padding field
            out.extend_from_slice(&(pad as u16).to_le_bytes());
            out.extend(std::iter::repeat_n(b'Z', pad));
            out.extend_from_slice(&payload);

            let mut extra = Vec::new();
            if zip64 {
                extra.extend_from_slice(&1u16.to_le_bytes());
                extra.extend_from_slice(&24u16.to_le_bytes());
                extra.extend_from_slice(&(e.data.len() as u64).to_le_bytes());
                extra.extend_from_slice(&(payload.len() as u64).to_le_bytes());
                extra.extend_from_slice(&offset.to_le_bytes());
            }
            let (cs, us, off) = if zip64 {
                (u32::MAX, u32::MAX, u32::MAX)
            } else {
                (payload.len() as u32, e.data.len() as u32, offset as u32)
            };
            central.extend_from_slice(&super::SIG_CENTRAL.to_le_bytes());
            central.extend_from_slice(&45u16.to_le_bytes());
            central.extend_from_slice(&45u16.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&[0; 4]);
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&cs.to_le_bytes());
            central.extend_from_slice(&us.to_le_bytes());
            central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 10]); // comment len, disk, int attr, ext attr
            central.extend_from_slice(&off.to_le_bytes());
            central.extend_from_slice(e.name.as_bytes());
            central.extend_from_slice(&extra);
        }
        let cd_offset = out.len() as u64;
        out.extend_from_slice(&central);
        let n = entries.len() as u64;
        if zip64 {
            let rec = out.len() as u64;
            out.extend_from_slice(&super::SIG_EOCD64.to_le_bytes());
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&45u16.to_le_bytes());
            out.extend_from_slice(&45u16.to_le_bytes());
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(central.len() as u64).to_le_bytes());
            out.extend_from_slice(&cd_offset.to_le_bytes());
            out.extend_from_slice(&super::SIG_EOCD64_LOCATOR.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&rec.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(&super::SIG_EOCD.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let (n16, cs32, co32) = if zip64 {
            (0xFFFFu16, u32::MAX, u32::MAX)
        } else {
            (n as u16, central.len() as u32, cd_offset as u32)
        };
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&cs32.to_le_bytes());
        out.extend_from_slice(&co32.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::{zip, Spec};
    use super::*;

    fn specs<'a>(deflate: bool, big: &'a [u8]) -> Vec<Spec<'a>> {
        vec![
            Spec {
                name: "archive/data.pkl",
                data: b"\x80\x02}q\x00.",
                deflate,
            },
            Spec {
                name: "archive/data/0",
                data: big,
                deflate,
            },
        ]
    }

    #[test]
    fn stored_entries_are_zero_copy() {
        let big: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let z = zip(&specs(false, &big), false);
        let a = ZipArchive::parse(&z).unwrap();
        assert_eq!(a.entries().len(), 2);
        let e = a.find("archive/data/0").unwrap();
        assert_eq!(e.method, Method::Stored);
        let (off, len) = a.stored_range(e).unwrap().unwrap();
        assert_eq!(off % 64, 0, "data aligned like torch");
        assert_eq!(&z[off as usize..(off + len) as usize], &big[..]);
        let data = a.read(e, 1 << 20).unwrap();
        assert!(matches!(data, Cow::Borrowed(_)));
        assert_eq!(&*data, &big[..]);
    }

    #[test]
    fn deflate_entries_are_inflated() {
        let big = vec![7u8; 100_000];
        let z = zip(&specs(true, &big), false);
        assert!(z.len() < 10_000);
        let a = ZipArchive::parse(&z).unwrap();
        let e = a.find("archive/data/0").unwrap();
        assert_eq!(e.method, Method::Deflate);
        assert_eq!(a.stored_range(e).unwrap(), None);
        assert_eq!(&*a.read(e, 1 << 20).unwrap(), &big[..]);
        // bounded by the caller's limit
        assert!(matches!(
            a.read(e, 1000),
            Err(FormatError::Limit {
                limit: Limit::ZipEntrySize,
                ..
            })
        ));
    }

    #[test]
    fn deflate_output_never_exceeds_declared_size() {
        let big = vec![7u8; 100_000];
        let mut z = zip(&specs(true, &big), false);
        // Lower the declared uncompressed size of data/0 in the central directory.
        let a = ZipArchive::parse(&z).unwrap();
        let _ = a;
        let cd_pos = find_sig(&z, SIG_CENTRAL, 1);
        z[cd_pos + 24..cd_pos + 28].copy_from_slice(&1000u32.to_le_bytes());
        let a = ZipArchive::parse(&z).unwrap();
        let e = a.find("archive/data/0").unwrap();
        let err = a.read(e, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("more than 1000"), "{err}");
        // and a too-large declaration is caught as well
        z[cd_pos + 24..cd_pos + 28].copy_from_slice(&200_000u32.to_le_bytes());
        let a = ZipArchive::parse(&z).unwrap();
        let e = a.find("archive/data/0").unwrap();
        assert!(a.read(e, 1 << 20).is_err());
    }

    /// Position of the `nth` (0-based) occurrence of a signature.
    fn find_sig(z: &[u8], sig: u32, nth: usize) -> usize {
        z.windows(4)
            .enumerate()
            .filter(|(_, w)| *w == sig.to_le_bytes())
            .nth(nth)
            .unwrap()
            .0
    }

    #[test]
    fn zip64_records_and_extras() {
        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for deflate in [false, true] {
            let z = zip(&specs(deflate, &big), true);
            let a = ZipArchive::parse(&z).unwrap();
            assert_eq!(a.entries().len(), 2);
            let e = a.find("archive/data/0").unwrap();
            assert_eq!(e.uncompressed_size, 5000);
            assert_eq!(&*a.read(e, 1 << 20).unwrap(), &big[..]);
        }
    }

    #[test]
    fn comment_after_eocd() {
        let mut z = zip(&specs(false, b"abc"), false);
        let n = z.len();
        z[n - 2..].copy_from_slice(&5u16.to_le_bytes());
        z.extend_from_slice(b"hello");
        let a = ZipArchive::parse(&z).unwrap();
        assert_eq!(
            &*a.read(a.find("archive/data/0").unwrap(), 10).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn truncated_archives_fail_cleanly() {
        let big = vec![1u8; 700];
        let z = zip(&specs(false, &big), false);
        let half = &z[..z.len() / 2];
        let err = ZipArchive::parse(half).unwrap_err();
        assert!(matches!(err, FormatError::Truncated(_)), "{err}");
        // Every prefix: an error or (impossible here) a parse, never a panic.
        for cut in 0..z.len() {
            let _ = ZipArchive::parse(&z[..cut]);
        }
        // Cut just the tail of the central directory: EOCD still found elsewhere? no;
        // cut off only the last byte: the EOCD no longer fits.
        assert!(ZipArchive::parse(&z[..z.len() - 1]).is_err());
    }

    #[test]
    fn central_directory_past_end_is_reported() {
        let mut z = zip(&specs(false, b"abc"), false);
        let n = z.len();
        z[n - 6..n - 2].copy_from_slice(&1234u32.to_le_bytes());
        let z = &z[..];
        let short: Vec<u8> = z.to_vec();
        // move the claimed central directory past the end
        let mut s = short.clone();
        let len = s.len() as u32;
        s[n - 6..n - 2].copy_from_slice(&(len + 10).to_le_bytes());
        let msg = ZipArchive::parse(&s).unwrap_err().to_string();
        assert!(msg.contains("lies past the end"), "{msg}");
        assert!(ZipArchive::parse(&short).is_err());
    }

    #[test]
    fn bad_offsets_and_counts() {
        let big = vec![1u8; 100];
        let base = zip(&specs(false, &big), false);
        let n = base.len();
        // absurd entry count
        let mut z = base.clone();
        z[n - 12..n - 10].copy_from_slice(&0xFFF0u16.to_le_bytes());
        assert!(ZipArchive::parse(&z).is_err());
        // local header offset beyond the file
        let mut z = base.clone();
        let cd = find_sig(&z, SIG_CENTRAL, 1);
        z[cd + 42..cd + 46].copy_from_slice(&(n as u32 + 5).to_le_bytes());
        let a = ZipArchive::parse(&z).unwrap();
        let e = a.find("archive/data/0").unwrap();
        assert!(matches!(a.read(e, 1 << 20), Err(FormatError::Truncated(_))));
        // local header offset pointing at the wrong place
        let mut z = base.clone();
        z[cd + 42..cd + 46].copy_from_slice(&3u32.to_le_bytes());
        let a = ZipArchive::parse(&z).unwrap();
        assert!(a.read(a.find("archive/data/0").unwrap(), 1 << 20).is_err());
        // compressed size beyond the file
        let mut z = base.clone();
        z[cd + 20..cd + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        z[cd + 24..cd + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        // needs zip64 extra now: error at parse time
        assert!(ZipArchive::parse(&z).is_err());
        let mut z = base.clone();
        z[cd + 20..cd + 24].copy_from_slice(&(n as u32).to_le_bytes());
        z[cd + 24..cd + 28].copy_from_slice(&(n as u32).to_le_bytes());
        let a = ZipArchive::parse(&z).unwrap();
        assert!(a.read(a.find("archive/data/0").unwrap(), u64::MAX).is_err());
        // name length running past the central directory
        let mut z = base.clone();
        z[cd + 28..cd + 30].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(ZipArchive::parse(&z).is_err());
        // corrupted data: CRC mismatch
        let mut z = base;
        let a = ZipArchive::parse(&z).unwrap();
        let (off, _) = a
            .stored_range(a.find("archive/data/0").unwrap())
            .unwrap()
            .unwrap();
        z[off as usize] ^= 0xFF;
        let a = ZipArchive::parse(&z).unwrap();
        let msg = a
            .read(a.find("archive/data/0").unwrap(), 1000)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("CRC"), "{msg}");
    }

    #[test]
    fn torch_reads_entries_whatever_their_local_header_names() {
        let mut z = zip(
            &[Spec {
                name: "a/data.pkl",
                data: b"payload",
                deflate: false,
            }],
            false,
        );
        // The local header (at 0) now says `a/zzzz.pkl`; the directory still `a/data.pkl`.
        z[30..40].copy_from_slice(b"a/zzzz.pkl");
        let a = ZipArchive::parse(&z).unwrap();
        let e = a.find("a/data.pkl").unwrap();
        assert_eq!(a.local_name(e), Some(&b"a/zzzz.pkl"[..]));
        assert!(a
            .read_unchecked(e, 100)
            .unwrap_err()
            .to_string()
            .contains("a/zzzz.pkl"));
        assert_eq!(&*a.read_as_torch(e, 100).unwrap(), b"payload");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let z = zip(
            &[
                Spec {
                    name: "a/data.pkl",
                    data: b"1",
                    deflate: false,
                },
                Spec {
                    name: "a/data.pkl",
                    data: b"2",
                    deflate: false,
                },
            ],
            false,
        );
        assert!(ZipArchive::parse(&z)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn python_written_zip() {
        // zipfile.ZipFile(..., 'w') with one stored entry "a/x" = b"hi", one deflated
        // "a/y" = b"hello hello hello hello" (written by CPython's zipfile).
        let z = PY_ZIP;
        let a = ZipArchive::parse(z).unwrap();
        assert_eq!(&*a.read(a.find("a/x").unwrap(), 100).unwrap(), b"hi");
        assert_eq!(
            &*a.read(a.find("a/y").unwrap(), 100).unwrap(),
            b"hello hello hello hello"
        );
    }

    #[test]
    fn python_written_zip64_local_headers() {
        // The same entries written with force_zip64=True (ZIP64 extras in local headers).
        let a = ZipArchive::parse(PY_ZIP64).unwrap();
        assert_eq!(&*a.read(a.find("a/x").unwrap(), 100).unwrap(), b"hi");
        assert_eq!(
            &*a.read(a.find("a/y").unwrap(), 100).unwrap(),
            b"hello hello hello hello"
        );
    }

    #[test]
    fn tail_directory_is_all_parse_reads() {
        let big = vec![7u8; 3000];
        for zip64 in [false, true] {
            let z = build::zip(&specs(false, &big), zip64);
            let whole = ZipArchive::parse(&z).unwrap().entries().to_vec();
            let cd = find_sig(&z, SIG_CENTRAL, 0) as u64;
            for t in [22, 100, 200, 400, 1000, z.len()] {
                let tail_start = z.len() - t;
                // The end record and the 20 bytes before it (or the ZIP64 records).
                let needs = if zip64 { 98 } else { 42 };
                let Some(dir) = tail_directory(&z[tail_start..], z.len() as u64) else {
                    assert!(t < needs, "zip64 {zip64}, tail {t}");
                    continue;
                };
                assert_eq!(dir, cd, "zip64 {zip64}, tail {t}");
                // Garbage below what parse needs changes nothing.
                let from = (dir as usize).min(tail_start);
                let mut holey = z.clone();
                holey[..from].fill(0xAA);
                let parsed = ZipArchive::parse(&holey).unwrap();
                assert_eq!(parsed.entries(), &whole[..], "zip64 {zip64}, tail {t}");
            }
        }
    }

    #[test]
    fn tail_directory_declines_what_it_cannot_vouch_for() {
        let big = vec![7u8; 3000];
        let z = build::zip(&specs(false, &big), false);
        let n = z.len() as u64;
        assert_eq!(tail_directory(&z[z.len() - 21..], n), None, "too short");
        assert_eq!(tail_directory(&[], n), None);
        assert_eq!(tail_directory(&z, n - 1), None, "longer than the file");
        // An end record whose comment does not reach the end is not the one parse takes.
        let mut commented = z.clone();
        commented.extend_from_slice(b"trailing");
        let len = commented.len() as u64;
        assert_eq!(
            tail_directory(&commented[commented.len() - 200..], len),
            None
        );
        // With a matching comment length it is found again.
        let at = find_sig(&commented, SIG_EOCD, 0);
        commented[at + 20..at + 22].copy_from_slice(&8u16.to_le_bytes());
        assert!(tail_directory(&commented[commented.len() - 200..], len).is_some());
        assert!(ZipArchive::parse(&commented).is_ok());
        // A directory claimed to run into the end record.
        let mut bad = z.clone();
        let at = find_sig(&bad, SIG_EOCD, 0);
        bad[at + 12..at + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(tail_directory(&bad[bad.len() - 200..], n), None);
        // ZIP64 with the end record outside the tail.
        let z64 = build::zip(&specs(false, &big), true);
        let n64 = z64.len() as u64;
        assert_eq!(tail_directory(&z64[z64.len() - 40..], n64), None);
        assert!(tail_directory(&z64[z64.len() - 98..], n64).is_some());
    }

    const PY_ZIP: &[u8] = include_bytes!("../../tests/fixtures/zip/python.zip");
    const PY_ZIP64: &[u8] = include_bytes!("../../tests/fixtures/zip/python64.zip");
}
