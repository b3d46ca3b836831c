//! A streaming zip writer for torch checkpoints: `Stored` entries only, each entry's
//! data starting at a 64-byte aligned file offset, ZIP64 records where needed.
//!
//! Alignment is done the way PyTorch's `PyTorchStreamWriter` does it: every local
//! header carries an extra field with header id `0x4246` ("FB") whose payload is
//! `'Z'` padding, sized so that the entry's data starts at a multiple of 64.
//!
//! Unlike miniz (which torch uses) the CRC-32 and sizes go straight into the local
//! header (no data descriptors): the whole entry is in memory before it is written.
//! Like torch, the archive always ends with a ZIP64 end record and locator before
//! the classic end record (whose fields hold the real values when they fit, else
//! all-ones); entries get ZIP64 extra fields only when a size or offset needs them
//! (`>= 0xFFFF_FFFF`), or always with [`ZipWriter::force_zip64`] (for tests).

use std::collections::HashSet;
use std::io::Write;

use super::{WriteError, WriteLimit};
use crate::format::zip::crc32;

/// Where entry data is aligned (torch's `kFieldAlignment`).
pub const ALIGNMENT: u64 = 64;

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_EOCD64: u32 = 0x0606_4b50;
const SIG_EOCD64_LOCATOR: u32 = 0x0706_4b50;
/// A 32-bit field at or above this value needs ZIP64 (the all-ones value is reserved).
const MAX32: u64 = 0xFFFF_FFFF;
const MAX16: u64 = 0xFFFF;
const LOCAL_LEN: u64 = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;
const PAD_EXTRA_ID: u16 = 0x4246; // "FB"
/// General purpose flag bit 11: names are UTF-8.
const FLAG_UTF8: u16 = 0x0800;
/// 1980-01-01 00:00 in MS-DOS format (fixed, for reproducible files).
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1;
const VERSION_DEFAULT: u16 = 20;
const VERSION_ZIP64: u16 = 45;

/// What the central directory needs to know about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    pub name: String,
    pub crc32: u32,
    pub size: u64,
    /// Offset of the local header.
    pub header_offset: u64,
    /// Offset of the data (a multiple of [`ALIGNMENT`]).
    pub data_offset: u64,
}

/// Writes a zip archive to any `Write`, tracking the position itself (no `Seek`).
pub struct ZipWriter<W: Write> {
    out: W,
    pos: u64,
    entries: Vec<EntryRecord>,
    names: HashSet<String>,
    force_zip64: bool,
}

impl<W: Write> ZipWriter<W> {
    pub fn new(out: W) -> Self {
        ZipWriter {
            out,
            pos: 0,
            entries: Vec::new(),
            names: HashSet::new(),
            force_zip64: false,
        }
    }

    /// Write ZIP64 extras in every entry and all-ones values in the classic end record,
    /// even when nothing needs them (exercises the ZIP64 paths with small files).
    pub fn force_zip64(mut self, yes: bool) -> Self {
        self.force_zip64 = yes;
        self
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The entries written so far.
    pub fn entries(&self) -> &[EntryRecord] {
        &self.entries
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Add a stored entry; returns its record (CRC, offsets).
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<&EntryRecord, WriteError> {
        if !self.names.insert(name.to_string()) {
            return Err(WriteError::Invalid(format!(
                "zip entry `{name}` written twice"
            )));
        }
        let crc = crc32(data);
        let size = data.len() as u64;
        let header_offset = self.pos;
        let header = local_header(name, crc, size, header_offset, self.force_zip64)?;
        self.emit(&header)?;
        let data_offset = self.pos;
        debug_assert_eq!(data_offset % ALIGNMENT, 0);
        self.emit(data)?;
        self.entries.push(EntryRecord {
            name: name.to_string(),
            crc32: crc,
            size,
            header_offset,
            data_offset,
        });
        Ok(self.entries.last().expect("just pushed"))
    }

    /// Write the central directory and end records; returns the inner writer (flushed)
    /// and the archive's size.
    pub fn finish(mut self) -> Result<(W, u64), WriteError> {
        let cd_offset = self.pos;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let rec = central_header(e, self.force_zip64)?;
            self.emit(&rec)?;
        }
        let cd_size = self.pos - cd_offset;
        let tail = end_records(
            entries.len() as u64,
            cd_offset,
            cd_size,
            self.pos,
            self.force_zip64,
        );
        self.emit(&tail)?;
        self.out.flush()?;
        Ok((self.out, self.pos))
    }
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// A 32-bit field: the value, or all-ones when it goes to the ZIP64 extra.
fn field32(v: u64, zip64: bool) -> u32 {
    if zip64 {
        u32::MAX
    } else {
        v as u32
    }
}

fn check_name(name: &str) -> Result<u16, WriteError> {
    u16::try_from(name.len()).map_err(|_| WriteError::Limit {
        limit: WriteLimit::ZipName,
        max: u64::from(u16::MAX),
        found: name.len() as u64,
        at: String::new(),
    })
}

/// The local header of an entry at `offset` (signature … name, extra), with the
/// padding field that puts the data at a multiple of [`ALIGNMENT`].
pub fn local_header(
    name: &str,
    crc: u32,
    size: u64,
    offset: u64,
    force_zip64: bool,
) -> Result<Vec<u8>, WriteError> {
    let name_len = check_name(name)?;
    let zip64 = force_zip64 || size >= MAX32;
    // ZIP64 local extra: both sizes (APPNOTE 4.5.3).
    let z64_len: u64 = if zip64 { 4 + 16 } else { 0 };
    let start = offset + LOCAL_LEN + u64::from(name_len) + z64_len + 4;
    let pad = (ALIGNMENT - start % ALIGNMENT) % ALIGNMENT;
    let extra_len = z64_len + 4 + pad;
    let mut h = Vec::with_capacity((LOCAL_LEN + u64::from(name_len) + extra_len) as usize);
    put32(&mut h, SIG_LOCAL);
    put16(
        &mut h,
        if zip64 {
            VERSION_ZIP64
        } else {
            VERSION_DEFAULT
        },
    );
    put16(&mut h, FLAG_UTF8);
    put16(&mut h, 0); // stored
    put16(&mut h, DOS_TIME);
    put16(&mut h, DOS_DATE);
    put32(&mut h, crc);
    put32(&mut h, field32(size, zip64));
    put32(&mut h, field32(size, zip64));
    put16(&mut h, name_len);
    put16(&mut h, extra_len as u16);
    h.extend_from_slice(name.as_bytes());
    if zip64 {
        put16(&mut h, ZIP64_EXTRA_ID);
        put16(&mut h, 16);
        put64(&mut h, size);
        put64(&mut h, size);
    }
    put16(&mut h, PAD_EXTRA_ID);
    put16(&mut h, pad as u16);
    h.extend(std::iter::repeat_n(b'Z', pad as usize));
    Ok(h)
}

/// The central directory record of an entry.
pub fn central_header(e: &EntryRecord, force_zip64: bool) -> Result<Vec<u8>, WriteError> {
    let name_len = check_name(&e.name)?;
    let big_size = force_zip64 || e.size >= MAX32;
    let big_offset = force_zip64 || e.header_offset >= MAX32;
    let mut extra = Vec::new();
    if big_size || big_offset {
        let n = if big_size { 16 } else { 0 } + if big_offset { 8 } else { 0 };
        put16(&mut extra, ZIP64_EXTRA_ID);
        put16(&mut extra, n);
        if big_size {
            put64(&mut extra, e.size); // uncompressed
            put64(&mut extra, e.size); // compressed
        }
        if big_offset {
            put64(&mut extra, e.header_offset);
        }
    }
    let version = if extra.is_empty() {
        VERSION_DEFAULT
    } else {
        VERSION_ZIP64
    };
    let mut h = Vec::with_capacity(46 + e.name.len() + extra.len());
    put32(&mut h, SIG_CENTRAL);
    put16(&mut h, version); // made by (MS-DOS, spec version)
    put16(&mut h, version); // needed
    put16(&mut h, FLAG_UTF8);
    put16(&mut h, 0); // stored
    put16(&mut h, DOS_TIME);
    put16(&mut h, DOS_DATE);
    put32(&mut h, e.crc32);
    put32(&mut h, field32(e.size, big_size));
    put32(&mut h, field32(e.size, big_size));
    put16(&mut h, name_len);
    put16(&mut h, extra.len() as u16);
    put16(&mut h, 0); // comment length
    put16(&mut h, 0); // disk number start
    put16(&mut h, 0); // internal attributes
    put32(&mut h, 0); // external attributes
    put32(&mut h, field32(e.header_offset, big_offset));
    h.extend_from_slice(e.name.as_bytes());
    h.extend_from_slice(&extra);
    Ok(h)
}

/// ZIP64 end record + locator + classic end record, for a central directory of
/// `count` entries at `cd_offset` (`cd_size` bytes) ending at `pos`.
pub fn end_records(
    count: u64,
    cd_offset: u64,
    cd_size: u64,
    pos: u64,
    force_zip64: bool,
) -> Vec<u8> {
    let mut t = Vec::with_capacity(56 + 20 + 22);
    let eocd64_offset = pos;
    put32(&mut t, SIG_EOCD64);
    put64(&mut t, 44); // size of the rest of this record
    put16(&mut t, VERSION_ZIP64);
    put16(&mut t, VERSION_ZIP64);
    put32(&mut t, 0); // this disk
    put32(&mut t, 0); // disk with the central directory
    put64(&mut t, count);
    put64(&mut t, count);
    put64(&mut t, cd_size);
    put64(&mut t, cd_offset);
    put32(&mut t, SIG_EOCD64_LOCATOR);
    put32(&mut t, 0); // disk with the ZIP64 end record
    put64(&mut t, eocd64_offset);
    put32(&mut t, 1); // total disks
    put32(&mut t, SIG_EOCD);
    put16(&mut t, 0);
    put16(&mut t, 0);
    let n16 = if force_zip64 || count >= MAX16 {
        u16::MAX
    } else {
        count as u16
    };
    put16(&mut t, n16);
    put16(&mut t, n16);
    put32(&mut t, field32(cd_size, force_zip64 || cd_size >= MAX32));
    put32(
        &mut t,
        field32(cd_offset, force_zip64 || cd_offset >= MAX32),
    );
    put16(&mut t, 0); // comment length
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::zip::{Method, ZipArchive};

    fn build(entries: &[(&str, &[u8])], force: bool) -> Vec<u8> {
        let mut z = ZipWriter::new(Vec::new()).force_zip64(force);
        for (n, d) in entries {
            z.add(n, d).unwrap();
        }
        let (bytes, size) = z.finish().unwrap();
        assert_eq!(size, bytes.len() as u64);
        bytes
    }

    fn sample() -> Vec<(String, Vec<u8>)> {
        // Names and sizes that hit every padding length.
        (0..70)
            .map(|i| {
                (
                    format!("archive/{}{i}", "n".repeat(i % 7)),
                    (0..(i * 13) as u32)
                        .map(|x| (x * 7 + i as u32) as u8)
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn every_entry_is_aligned_and_crc_checked() {
        for force in [false, true] {
            let s = sample();
            let refs: Vec<(&str, &[u8])> = s.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
            let z = build(&refs, force);
            let a = ZipArchive::parse(&z).unwrap();
            assert_eq!(a.entries().len(), s.len());
            for ((name, data), e) in s.iter().zip(a.entries()) {
                assert_eq!(&e.name, name);
                assert_eq!(e.method, Method::Stored);
                let (off, len) = a.stored_range(e).unwrap().unwrap();
                assert_eq!(off % ALIGNMENT, 0, "{name} at {off}");
                assert_eq!(len, data.len() as u64);
                // read() verifies the CRC-32
                assert_eq!(&*a.read(e, 1 << 20).unwrap(), &data[..]);
            }
        }
    }

    #[test]
    fn padding_field_is_torch_style() {
        let h = local_header("archive/data.pkl", 0, 10, 0, false).unwrap();
        // 30 + 16 name + 4 FB header + 14 pad = 64
        assert_eq!(h.len(), 64);
        assert_eq!(&h[46..48], b"FB");
        assert_eq!(u16::from_le_bytes([h[48], h[49]]), 14);
        assert!(h[50..].iter().all(|b| *b == b'Z'));
        // Already aligned: an empty FB field is still written (as torch does).
        let h = local_header(&"x".repeat(30), 0, 0, 0, false).unwrap();
        assert_eq!(h.len(), 64);
        assert_eq!(u16::from_le_bytes([h[62], h[63]]), 0);
    }

    #[test]
    fn zip64_fields_for_large_sizes_and_offsets() {
        // Logic level: a 5 GiB entry at a 6 GiB offset.
        let size = 5u64 << 30;
        let off = 6u64 << 30;
        let h = local_header("archive/data/0", 1, size, off, false).unwrap();
        assert_eq!(u16::from_le_bytes([h[4], h[5]]), VERSION_ZIP64);
        assert_eq!(&h[18..26], &[0xFF; 8]);
        let extra = &h[30 + 14..];
        assert_eq!(u16::from_le_bytes([extra[0], extra[1]]), ZIP64_EXTRA_ID);
        assert_eq!(u16::from_le_bytes([extra[2], extra[3]]), 16);
        assert_eq!(u64::from_le_bytes(extra[4..12].try_into().unwrap()), size);
        assert_eq!(u64::from_le_bytes(extra[12..20].try_into().unwrap()), size);
        assert_eq!(&extra[20..22], b"FB");
        assert_eq!((off + h.len() as u64) % ALIGNMENT, 0);

        let rec = EntryRecord {
            name: "archive/data/0".into(),
            crc32: 1,
            size,
            header_offset: off,
            data_offset: off + h.len() as u64,
        };
        let c = central_header(&rec, false).unwrap();
        assert_eq!(&c[20..28], &[0xFF; 8]);
        assert_eq!(&c[42..46], &[0xFF; 4]);
        let extra = &c[46 + 14..];
        assert_eq!(u16::from_le_bytes([extra[2], extra[3]]), 24);
        assert_eq!(u64::from_le_bytes(extra[4..12].try_into().unwrap()), size);
        assert_eq!(u64::from_le_bytes(extra[20..28].try_into().unwrap()), off);

        // Only the offset is large: the extra holds just the offset.
        let small = EntryRecord {
            size: 10,
            ..rec.clone()
        };
        let c = central_header(&small, false).unwrap();
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 10);
        let extra = &c[46 + 14..];
        assert_eq!(u16::from_le_bytes([extra[2], extra[3]]), 8);
        assert_eq!(u64::from_le_bytes(extra[4..12].try_into().unwrap()), off);
        // Exactly 0xFFFF_FFFF bytes is a ZIP64 size (the all-ones value is reserved).
        let edge = EntryRecord {
            size: MAX32,
            header_offset: 0,
            ..rec.clone()
        };
        let c = central_header(&edge, false).unwrap();
        assert_eq!(&c[20..28], &[0xFF; 8]);
        // Nothing large: no extra.
        let plain = EntryRecord {
            size: 10,
            header_offset: 100,
            ..rec
        };
        assert_eq!(central_header(&plain, false).unwrap().len(), 46 + 14);

        // End records: counts/sizes/offsets that overflow the classic fields.
        let t = end_records(70_000, 5 << 32, 10, (5 << 32) + 10, false);
        let eocd = &t[t.len() - 22..];
        assert_eq!(&eocd[8..12], &[0xFF; 4]); // entry counts
        assert_eq!(u32::from_le_bytes(eocd[12..16].try_into().unwrap()), 10);
        assert_eq!(&eocd[16..20], &[0xFF; 4]); // cd offset
        assert_eq!(u64::from_le_bytes(t[24..32].try_into().unwrap()), 70_000);
        assert_eq!(u64::from_le_bytes(t[48..56].try_into().unwrap()), 5 << 32);
        let loc = &t[56..76];
        assert_eq!(
            u64::from_le_bytes(loc[8..16].try_into().unwrap()),
            (5 << 32) + 10
        );
    }

    #[test]
    fn more_than_65535_entries() {
        let mut z = ZipWriter::new(Vec::new());
        for i in 0..70_000u32 {
            z.add(&format!("a/{i}"), &i.to_le_bytes()).unwrap();
        }
        let (bytes, _) = z.finish().unwrap();
        let eocd = &bytes[bytes.len() - 22..];
        assert_eq!(&eocd[8..12], &[0xFF; 4]);
        let a = ZipArchive::parse(&bytes).unwrap();
        assert_eq!(a.entries().len(), 70_000);
        let e = a.find("a/69999").unwrap();
        assert_eq!(&*a.read(e, 10).unwrap(), &69_999u32.to_le_bytes());
    }

    #[test]
    fn empty_archive_and_duplicates() {
        let (z, _) = ZipWriter::new(Vec::new()).finish().unwrap();
        assert!(ZipArchive::parse(&z).unwrap().entries().is_empty());
        let mut z = ZipWriter::new(Vec::new());
        z.add("a", b"1").unwrap();
        assert!(matches!(z.add("a", b"2"), Err(WriteError::Invalid(_))));
        assert!(matches!(
            z.add(&"x".repeat(70_000), b""),
            Err(WriteError::Limit { .. })
        ));
    }

    #[test]
    fn write_errors_are_reported() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk full"));
                }
                let n = b.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut z = ZipWriter::new(Full(100));
        let e = z.add("a", &[0u8; 200]).err().unwrap();
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
