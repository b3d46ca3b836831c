//! The tar archives of pre-1.0 torch checkpoints, read the way Python's `tarfile` (3.11,
//! which torch's `legacy_load` opens them with) reads them: ustar headers with their
//! `prefix` field, GNU long names and link names (`././@LongLink`, types `L` and `K`),
//! PAX extended and global headers (types `x`, `X` and `g`: `path=` and `size=` records),
//! GNU sparse headers; the members in order (read by `loader` for findings and `torch`
//! for tensors). Headers are read one by one from the file, extended headers up to
//! [`limits::MAX_TAR_EXTENDED_HEADER`] bytes; member data is not read here.
//!
//! Where `tarfile` would raise `ReadError` (a header after a long name or extended header
//! that is not valid, data running past the end of the file), torch gives up on the tar
//! reading and unpickles the file from byte 0: [`TarArchive::broken`] says why.

use std::collections::BTreeMap;

use super::input::Input;
use super::{limits, FormatError, Limit};

const TAR_BLOCK: u64 = 512;

/// One member as `tarfile` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarMember {
    /// Its name after long names and PAX records (bytes, as `tarfile`'s surrogateescape
    /// decoding keeps them).
    pub name: Vec<u8>,
    /// The name its own header gives (`prefix/name`): what a reader that ignores
    /// extended headers calls it.
    pub header_name: Vec<u8>,
    /// Its type flag.
    pub kind: u8,
    /// Where its data starts in the file, and its size (after PAX `size=` records).
    pub data: u64,
    pub len: u64,
}

/// A tar archive's members, as `tarfile` reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarArchive {
    pub members: Vec<TarMember>,
    /// The header names of the extended headers and long-name members (which `tarfile`
    /// does not list; a reader that ignores them lists them as members).
    pub extended_names: Vec<Vec<u8>>,
    /// Why `tarfile` raises `ReadError` reading the archive through (torch then reads the
    /// file as a pickle from byte 0), if it does.
    pub broken: Option<String>,
}

impl TarArchive {
    /// The last member called `name` (`tar.extract(name)` takes the last one).
    pub fn member(&self, name: &str) -> Option<&TarMember> {
        self.members
            .iter()
            .rev()
            .find(|m| m.name == name.as_bytes())
    }
}

/// Python's `nti`: an octal (or base-256) number field. `None`: `InvalidHeaderError`.
fn nti(field: &[u8]) -> Option<i128> {
    if field.first().is_some_and(|b| *b == 0o200 || *b == 0o377) {
        let mut v: i128 = 0;
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(i128::from(*b))?;
        }
        if field[0] == 0o377 {
            v -= 1i128 << (8 * (field.len() - 1));
        }
        return Some(v);
    }
    let s = nts(field);
    if !s.is_ascii() {
        return None;
    }
    let t = std::str::from_utf8(s).ok()?.trim();
    if t.is_empty() {
        return Some(0);
    }
    python_int(t, 8)
}

/// Python's `int(text, radix)` for the digits tar fields hold (a sign, underscores
/// between digits).
fn python_int(t: &str, radix: u32) -> Option<i128> {
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if !clean.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let v = i128::from_str_radix(&clean, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// Python's `nts`: up to the first NUL.
fn nts(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Python's `calc_chksums`: the header's checksum matches (unsigned or signed).
fn checksum_ok(block: &[u8]) -> Option<bool> {
    let chk = nti(&block[148..156])?;
    let unsigned: i128 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i128::from(*b)
            }
        })
        .sum();
    let signed: i128 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i128::from(*b as i8)
            }
        })
        .sum();
    Some(chk == unsigned || chk == signed)
}

/// Whether `tarfile.open(mode="r:")` accepts the header at the start of `bytes`.
fn tar_header_ok(bytes: &[u8]) -> bool {
    matches!(Header::parse(bytes), Ok(Some(_)))
}

/// Whether torch's `_legacy_load` takes the file for a (pre-1.0) tar checkpoint (the
/// first bytes, at least 512 of them).
pub fn is_tar(bytes: &[u8]) -> bool {
    tar_header_ok(bytes)
}

/// A header block as `TarInfo.frombuf` reads it.
struct Header {
    name: Vec<u8>,
    size: i128,
    kind: u8,
    /// GNU sparse: the extended flag and the real size.
    sparse: Option<(bool, i128)>,
}

/// Types `tarfile` knows (`SUPPORTED_TYPES`) and those it treats as regular files.
const SUPPORTED: &[u8] = b"0\x0012567 34LKS";
const REGULAR: &[u8] = b"0\x007S";

impl Header {
    /// `Ok(None)`: the end of the archive (a zero block, or a short one); `Err(why)`:
    /// `InvalidHeaderError`.
    fn parse(block: &[u8]) -> Result<Option<Header>, &'static str> {
        if block.len() < TAR_BLOCK as usize {
            return Ok(None);
        }
        let block = &block[..TAR_BLOCK as usize];
        if block.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        if checksum_ok(block) != Some(true) {
            return Err("bad checksum");
        }
        let invalid = "invalid header";
        for (a, b) in [
            (100, 108),
            (108, 116),
            (116, 124),
            (136, 148),
            (329, 337),
            (337, 345),
        ] {
            nti(&block[a..b]).ok_or(invalid)?;
        }
        let size = nti(&block[124..136]).ok_or(invalid)?;
        let mut kind = block[156];
        let mut name = nts(&block[..100]).to_vec();
        let prefix = nts(&block[345..500]).to_vec();
        if kind == 0 && name.ends_with(b"/") {
            kind = b'5';
        }
        let sparse = if kind == b'S' {
            Some((block[482] != 0, nti(&block[483..495]).ok_or(invalid)?))
        } else {
            None
        };
        if kind == b'5' {
            while name.ends_with(b"/") {
                name.pop();
            }
        }
        if !prefix.is_empty() && !b"LKS".contains(&kind) {
            let mut full = prefix;
            full.push(b'/');
            full.extend(name);
            name = full;
        }
        Ok(Some(Header {
            name,
            size,
            kind,
            sparse,
        }))
    }
}

/// `TarInfo._block`: a size rounded up to whole blocks (0 for a negative one).
fn blocks(size: i128) -> u64 {
    u64::try_from(size.max(0))
        .unwrap_or(u64::MAX)
        .div_ceil(TAR_BLOCK)
        .saturating_mul(TAR_BLOCK)
}

/// PAX records (`tarfile` 3.11's parser: `(\d+) ([^=]+)=`, the value up to the record's
/// length minus its newline), into `into`.
fn pax_records(buf: &[u8], into: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), &'static str> {
    let mut pos = 0usize;
    loop {
        let digits = buf[pos.min(buf.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || buf.get(pos + digits) != Some(&b' ') {
            return Ok(());
        }
        let kw_start = pos + digits + 1;
        let kw_len = buf[kw_start..].iter().take_while(|b| **b != b'=').count();
        if kw_len == 0 || kw_start + kw_len >= buf.len() {
            return Ok(()); // no `=`: the regex does not match
        }
        let length: u64 = std::str::from_utf8(&buf[pos..pos + digits])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(u64::MAX);
        if length == 0 {
            return Err("invalid header");
        }
        let keyword = buf[kw_start..kw_start + kw_len].to_vec();
        // buf[match.end(2) + 1 : match.start(1) + length - 1], with Python's slicing.
        let v_start = kw_start + kw_len + 1;
        let v_end = usize::try_from(length)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .and_then(|e| e.checked_sub(1))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let value = if v_start < v_end {
            buf[v_start..v_end].to_vec()
        } else {
            Vec::new()
        };
        into.insert(keyword, value);
        match usize::try_from(length)
            .ok()
            .and_then(|l| pos.checked_add(l))
        {
            Some(p) if p <= buf.len() => pos = p,
            _ => return Ok(()),
        }
    }
}

/// Python's `int(value)` of a PAX number (0 when it does not parse, as `tarfile` does).
fn pax_number(value: &[u8]) -> i128 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|t| python_int(t.trim(), 10))
        .unwrap_or(0)
}

/// The PAX fields `tarfile` applies to a member (`_apply_pax_info`: `path`, `size`).
fn apply_pax(m: &mut Pending, pax: &BTreeMap<Vec<u8>, Vec<u8>>) {
    if let Some(p) = pax.get(b"path".as_slice()) {
        let mut p = p.clone();
        while p.ends_with(b"/") {
            p.pop();
        }
        m.name = p;
    }
    if let Some(s) = pax.get(b"size".as_slice()) {
        m.size = pax_number(s);
    }
}

/// A member being put together from its headers.
struct Pending {
    name: Vec<u8>,
    header_name: Vec<u8>,
    size: i128,
    kind: u8,
    data: u64,
    /// Where `tarfile` looks for the next header.
    next: u64,
}

impl Pending {
    fn skips_data(&self) -> bool {
        REGULAR.contains(&self.kind) || !SUPPORTED.contains(&self.kind)
    }
}

/// What went wrong reading one member.
enum Stop {
    /// The archive ends here, silently (`tarfile` returns no more members).
    End,
    /// `tarfile` raises `ReadError`.
    Broken(String),
    /// One of tvck's limits, or an I/O error.
    Error(FormatError),
}

impl From<FormatError> for Stop {
    fn from(e: FormatError) -> Stop {
        Stop::Error(e)
    }
}

/// Read the tar archive at the start of `input` as `tarfile` lists it.
pub fn tar_archive(input: &mut dyn Input) -> Result<TarArchive, FormatError> {
    let mut out = TarArchive::default();
    let mut global: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut at = 0u64;
    let file_len = input.len();
    while out.members.len() < limits::MAX_TAR_MEMBERS {
        match member(input, at, &mut global, &mut out.extended_names) {
            Ok(m) => {
                let next = m.next;
                out.members.push(TarMember {
                    name: m.name,
                    header_name: m.header_name,
                    kind: m.kind,
                    data: m.data,
                    len: u64::try_from(m.size.max(0)).unwrap_or(u64::MAX),
                });
                // `next()` checks that the byte before the next header exists.
                if next > file_len {
                    out.broken = Some("unexpected end of data".into());
                    break;
                }
                at = next;
            }
            Err(Stop::End) => break,
            Err(Stop::Broken(why)) => {
                out.broken = Some(why);
                break;
            }
            Err(Stop::Error(e)) => return Err(e),
        }
    }
    Ok(out)
}

/// One member from the header at `at` (`TarInfo.fromtarfile`, with the long names and
/// extended headers in front of it).
fn member(
    input: &mut dyn Input,
    at: u64,
    global: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    extended_names: &mut Vec<Vec<u8>>,
) -> Result<Pending, Stop> {
    // The extended headers met, in order: a long name (`L`), a long link (`K`: nothing
    // tvck uses) or a PAX header's records (`x`/`X`: local; `g`: merged into `global`).
    enum Ext {
        LongName(Vec<u8>),
        Pax(BTreeMap<Vec<u8>, Vec<u8>>),
        Other,
    }
    let mut chain: Vec<Ext> = Vec::new();
    let mut pos = at;
    let mut m = loop {
        let block = input.get(pos, pos + TAR_BLOCK)?.to_vec();
        let header = match Header::parse(&block) {
            Ok(Some(h)) => h,
            // Past an extended header, any header error is a `SubsequentHeaderError`.
            Ok(None) if chain.is_empty() => return Err(Stop::End),
            Err(why) if chain.is_empty() => {
                return Err(if at == 0 {
                    Stop::Broken(why.into())
                } else {
                    Stop::End
                })
            }
            Ok(None) => return Err(Stop::Broken("truncated or empty header".into())),
            Err(why) => return Err(Stop::Broken(why.into())),
        };
        let data = pos + TAR_BLOCK;
        match header.kind {
            b'L' | b'K' | b'x' | b'X' | b'g' => {
                if chain.len() >= limits::MAX_TAR_MEMBERS {
                    return Err(Stop::Broken("too many extended headers".into()));
                }
                let n = blocks(header.size);
                if n > limits::MAX_TAR_EXTENDED_HEADER {
                    return Err(Stop::Error(FormatError::Limit {
                        limit: Limit::TarExtendedHeader,
                        max: limits::MAX_TAR_EXTENDED_HEADER,
                        found: n,
                        at: format!(
                            "extended header `{}` at byte {pos}",
                            String::from_utf8_lossy(&header.name)
                        ),
                    }));
                }
                let buf = input.get(data, data + n)?.to_vec();
                extended_names.push(header.name.clone());
                chain.push(match header.kind {
                    b'L' => Ext::LongName(nts(&buf).to_vec()),
                    b'K' => Ext::Other,
                    kind => {
                        let mut records = if kind == b'g' {
                            BTreeMap::new()
                        } else {
                            global.clone()
                        };
                        let parsed = pax_records(&buf, &mut records);
                        if let Err(why) = parsed {
                            return Err(if chain.is_empty() && at != 0 {
                                Stop::End
                            } else {
                                Stop::Broken(why.into())
                            });
                        }
                        if kind == b'g' {
                            global.extend(records);
                            Ext::Other
                        } else {
                            Ext::Pax(records)
                        }
                    }
                });
                pos = data + n;
            }
            kind => {
                // `_proc_sparse` (extension blocks) or `_proc_builtin`.
                let mut data = data;
                let mut size = header.size;
                if let Some((mut extended, real)) = header.sparse {
                    while extended {
                        let b = input.get(data, data + TAR_BLOCK)?;
                        extended = b.get(504).is_some_and(|x| *x != 0);
                        if b.len() < TAR_BLOCK as usize {
                            break;
                        }
                        data += TAR_BLOCK;
                    }
                    let next = data.saturating_add(blocks(size));
                    size = real;
                    break Pending {
                        name: header.name.clone(),
                        header_name: header.name,
                        size,
                        kind,
                        data,
                        next,
                    };
                }
                let mut p = Pending {
                    name: header.name.clone(),
                    header_name: header.name,
                    size,
                    kind,
                    data,
                    next: data,
                };
                if p.skips_data() {
                    p.next = data.saturating_add(blocks(size));
                }
                apply_pax(&mut p, global);
                if kind == b'5' {
                    while p.name.ends_with(b"/") {
                        p.name.pop();
                    }
                }
                break p;
            }
        }
    };
    // Each extended header patches what the headers after it made, the first one last.
    for ext in chain.iter().rev() {
        match ext {
            Ext::LongName(name) => {
                m.name = name.clone();
                if m.kind == b'5' && m.name.ends_with(b"/") {
                    m.name.pop();
                }
            }
            Ext::Pax(records) => {
                apply_pax(&mut m, records);
                if records.contains_key(b"size".as_slice()) {
                    m.next = if m.skips_data() {
                        m.data.saturating_add(blocks(m.size))
                    } else {
                        m.data
                    };
                }
            }
            Ext::Other => {}
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::input::Whole;

    /// A ustar header block for `name` (type `kind`, `size` bytes), checksummed.
    pub(crate) fn header(name: &[u8], kind: u8, size: usize) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut d = data.to_vec();
        d.resize(data.len().div_ceil(512) * 512, 0);
        d
    }

    fn entry(name: &[u8], kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = header(name, kind, data.len());
        out.extend(padded(data));
        out
    }

    fn pax(records: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in records {
            let body = format!(" {k}={v}\n");
            let mut n = body.len() + 1;
            while format!("{n}{body}").len() != n {
                n += 1;
            }
            out.extend(format!("{n}{body}").bytes());
        }
        out
    }

    fn names(a: &TarArchive) -> Vec<String> {
        a.members
            .iter()
            .map(|m| String::from_utf8_lossy(&m.name).into_owned())
            .collect()
    }

    #[test]
    fn headers_follow_python() {
        let mut h = header(b"storages", b'0', 0);
        assert!(is_tar(&h));
        h[0] = b'S';
        assert!(!is_tar(&h));
        assert!(!is_tar(&[0u8; 1024]));
        // A bad number field makes the header invalid.
        let mut h = header(b"storages", b'0', 0);
        h[100] = b'9';
        assert!(!is_tar(&h));
    }

    #[test]
    fn long_names_and_pax_records_rename_members() {
        let long = "a/".repeat(80) + "storages";
        let mut t = entry(b"././@LongLink", b'L', format!("{long}\0").as_bytes());
        t.extend(entry(b"short", b'0', b"xyz"));
        t.extend(entry(
            b"PaxHeaders/x",
            b'x',
            &pax(&[("path", "pickle"), ("mtime", "1")]),
        ));
        t.extend(entry(b"plain", b'0', b"12345"));
        t.extend(entry(b"g", b'g', &pax(&[("comment", "hi")])));
        t.extend(entry(b"tensors", b'0', b""));
        t.extend(vec![0u8; 1024]);
        let a = tar_archive(&mut Whole(&t)).unwrap();
        assert_eq!(names(&a), vec![long.as_str(), "pickle", "tensors"]);
        assert_eq!(a.members[0].header_name, b"short");
        assert_eq!(a.members[1].header_name, b"plain");
        assert_eq!(&t[a.members[1].data as usize..][..5], b"12345");
        assert_eq!(a.extended_names.len(), 3);
        assert_eq!(a.broken, None);
        assert_eq!(a.member("pickle").unwrap().len, 5);
    }

    #[test]
    fn a_pax_size_moves_the_next_header() {
        let mut t = entry(b"PaxHeaders/x", b'x', &pax(&[("size", "1024")]));
        t.extend(header(b"storages", b'0', 0));
        t.extend(vec![7u8; 1024]);
        t.extend(entry(b"pickle", b'0', b"."));
        t.extend(vec![0u8; 1024]);
        let a = tar_archive(&mut Whole(&t)).unwrap();
        assert_eq!(names(&a), vec!["storages", "pickle"]);
        assert_eq!(a.members[0].len, 1024);
    }

    #[test]
    fn a_bad_header_after_a_long_name_breaks_the_archive() {
        let mut t = entry(b"ok", b'0', b"1");
        t.extend(entry(b"././@LongLink", b'L', b"storages\0"));
        t.extend(vec![1u8; 512]);
        let a = tar_archive(&mut Whole(&t)).unwrap();
        assert_eq!(names(&a), vec!["ok"]);
        assert!(a.broken.is_some());
        // A plain bad header ends the archive quietly.
        let mut t = entry(b"ok", b'0', b"1");
        t.extend(vec![1u8; 512]);
        let a = tar_archive(&mut Whole(&t)).unwrap();
        assert_eq!(a.broken, None);
        // Data past the end of the file.
        let t = header(b"storages", b'0', 4096);
        let a = tar_archive(&mut Whole(&t)).unwrap();
        assert_eq!(names(&a), vec!["storages"]);
        assert_eq!(a.broken.as_deref(), Some("unexpected end of data"));
    }

    #[test]
    fn huge_extended_headers_are_refused() {
        let mut t = header(b"././@LongLink", b'L', 8 << 20);
        t.extend(vec![b'a'; 4096]);
        let e = tar_archive(&mut Whole(&t)).unwrap_err();
        assert!(
            matches!(
                e,
                FormatError::Limit {
                    limit: Limit::TarExtendedHeader,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn directories_do_not_skip_data() {
        // A directory's size is not skipped (tarfile reads the next header right after).
        let mut t = header(b"dir/", b'5', 512);
        t.extend(entry(b"pickle", b'0', b"."));
        t.extend(vec![0u8; 1024]);
        let a = tar_archive(&mut Whole(&t)).unwrap();
        assert_eq!(names(&a), vec!["dir", "pickle"]);
    }
}
