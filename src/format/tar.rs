//! The tar archives of pre-1.0 torch checkpoints: headers as Python's `tarfile` accepts
//! them, and the members in order (read by `loader` for findings and `torch` for tensors).

const TAR_BLOCK: usize = 512;

/// Python's `tarfile` octal field (`nti`), enough for checksums and sizes.
fn tar_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| *b == 0o200 || *b == 0o377) {
        // base-256
        let mut v: u64 = 0;
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let s = std::str::from_utf8(&field[..end]).ok()?.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Whether `tarfile.open(mode="r:")` accepts the header at `at` (its checksum matches).
fn tar_header_ok(bytes: &[u8], at: usize) -> bool {
    let Some(block) = bytes.get(at..at + TAR_BLOCK) else {
        return false;
    };
    if block.iter().all(|b| *b == 0) {
        return false;
    }
    let Some(chk) = tar_number(&block[148..156]) else {
        return false;
    };
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(*b as i8)
            }
        })
        .sum();
    chk == unsigned || i64::try_from(chk).is_ok_and(|c| c == signed)
}

/// Whether torch's `_legacy_load` takes the file for a (pre-1.0) tar checkpoint.
pub fn is_tar(bytes: &[u8]) -> bool {
    tar_header_ok(bytes, 0)
}

/// One member of a tar archive as Python's `tarfile` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TarMember {
    /// The name `tarfile` gives it: a PAX `path` record or a GNU long name if there is
    /// one, else the ustar prefix (if any) + `/` + the name field.
    pub name: String,
    /// Where its bytes are: for a hard or symbolic link, the bytes of the member it links
    /// to inside the archive (what `tarfile.extractfile`, and `extract` of a hard link
    /// whose target is not on disk, give).
    pub data: usize,
    pub len: usize,
    /// For a link, the name of the member whose bytes `data` are.
    pub link_to: Option<String>,
}

/// Most links followed from one member (a chain longer than this is not resolved).
const MAX_LINK_HOPS: usize = 8;

/// PAX records (`"%d %s=%s\n"`): the values of `path`, `linkpath` and `size`.
fn pax_records(data: &[u8], out: &mut [Option<String>; 3]) {
    let mut rest = data;
    while let Some(sp) = rest.iter().position(|b| *b == b' ') {
        let Some(n) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
        else {
            return;
        };
        if n <= sp + 1 || n > rest.len() {
            return;
        }
        let record = &rest[sp + 1..n];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            let value = String::from_utf8_lossy(&record[eq + 1..]).into_owned();
            match &record[..eq] {
                b"path" => out[0] = Some(value),
                b"linkpath" => out[1] = Some(value),
                b"size" => out[2] = Some(value),
                _ => {}
            }
        }
        rest = &rest[n..];
    }
}

/// A NUL-terminated header field, as text.
fn nts(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// `os.path.normpath` for the relative names of tar members (enough to match links).
fn normpath(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if name.starts_with('/') {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

/// A tar archive's members in order, named as Python's `tarfile` names them (PAX
/// `path`/`linkpath`/`size` records, GNU long names, ustar prefixes), with links resolved
/// to the bytes of their targets; up to the first header `tarfile` would not accept or a
/// member running past the end of the file.
pub(crate) fn tar_entries(bytes: &[u8]) -> Vec<TarMember> {
    // (name, type, linkname, data, len)
    let mut raw: Vec<(String, u8, String, usize, usize)> = Vec::new();
    let mut at = 0usize;
    let mut global = [None, None, None];
    let mut next = [None, None, None];
    let (mut long_name, mut long_link): (Option<String>, Option<String>) = (None, None);
    let mut headers = 0usize;
    while tar_header_ok(bytes, at) && headers < 20_000 {
        headers += 1;
        let block = &bytes[at..at + TAR_BLOCK];
        let kind = block[156];
        let mut size = tar_number(&block[124..136]).unwrap_or(0);
        let data = at + TAR_BLOCK;
        let extended = matches!(kind, b'x' | b'g' | b'L' | b'K');
        if !extended {
            if let Some(s) = next[2]
                .as_ref()
                .or(global[2].as_ref())
                .and_then(|s: &String| s.parse().ok())
            {
                size = s;
            }
        }
        let Some(len) = usize::try_from(size)
            .ok()
            .filter(|l| data.saturating_add(*l) <= bytes.len())
        else {
            break;
        };
        let body = &bytes[data..data + len];
        at = data + len.div_ceil(TAR_BLOCK) * TAR_BLOCK;
        match kind {
            b'x' => pax_records(body, &mut next),
            b'g' => pax_records(body, &mut global),
            b'L' => long_name = Some(nts(body)),
            b'K' => long_link = Some(nts(body)),
            _ => {
                let mut name = nts(&block[..100]);
                let prefix = nts(&block[345..500]);
                if kind == b'5' || (kind == 0 && name.ends_with('/')) {
                    name = name.trim_end_matches('/').to_string();
                }
                if !prefix.is_empty() && !matches!(kind, b'L' | b'K' | b'S') {
                    name = format!("{prefix}/{name}");
                }
                let mut link = nts(&block[157..257]);
                if let Some(n) = long_name.take() {
                    name = n;
                }
                if let Some(l) = long_link.take() {
                    link = l;
                }
                if let Some(p) = next[0].take().or_else(|| global[0].clone()) {
                    name = p;
                }
                if let Some(l) = next[1].take().or_else(|| global[1].clone()) {
                    link = l;
                }
                next = [None, None, None];
                raw.push((name, kind, link, data, len));
            }
        }
    }
    let find = |name: &str, before: Option<usize>| -> Option<usize> {
        let want = normpath(name);
        let end = before.unwrap_or(raw.len());
        (0..end).rev().find(|i| normpath(&raw[*i].0) == want)
    };
    (0..raw.len())
        .map(|i| {
            let (name, _, _, mut data, mut len) = raw[i].clone();
            let mut link_to = None;
            let mut cur = i;
            for _ in 0..MAX_LINK_HOPS {
                let (ref n, kind, ref link, ..) = raw[cur];
                let target = match kind {
                    // hard link: an earlier member of that name
                    b'1' => find(link, Some(cur)),
                    // symbolic link: relative to the link's folder, any member
                    b'2' => {
                        let dir = n.rsplit_once('/').map_or("", |(d, _)| d);
                        let joined = [dir, link.as_str()]
                            .iter()
                            .filter(|s| !s.is_empty())
                            .copied()
                            .collect::<Vec<_>>()
                            .join("/");
                        find(&joined, None).filter(|t| *t != cur)
                    }
                    _ => break,
                };
                let Some(t) = target else { break };
                cur = t;
                (data, len) = (raw[t].3, raw[t].4);
                link_to = Some(raw[t].0.clone());
            }
            TarMember {
                name,
                data,
                len,
                link_to,
            }
        })
        .collect()
}

/// [`tar_entries`] as (name, data offset, length).
pub(crate) fn tar_members(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    tar_entries(bytes)
        .into_iter()
        .map(|m| (m.name, m.data, m.len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One ustar header + data, as Python's tarfile writes it.
    fn member(name: &str, kind: u8, link: &str, prefix: &str, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; TAR_BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut out = h;
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(TAR_BLOCK) * TAR_BLOCK, 0);
        out
    }

    fn names_and_data(bytes: &[u8]) -> Vec<(String, Vec<u8>, Option<String>)> {
        tar_entries(bytes)
            .into_iter()
            .map(|m| (m.name, bytes[m.data..m.data + m.len].to_vec(), m.link_to))
            .collect()
    }

    #[test]
    fn members_are_named_as_tarfile_names_them() {
        let pax = b"12 path=pkl\n";
        let mut t = member("a", b'0', "", "", b"A");
        t.extend(member("././@PaxHeader", b'x', "", "", pax));
        t.extend(member("decoy", b'0', "", "", b"P"));
        t.extend(member("././@LongLink", b'L', "", "", b"long/name\0"));
        t.extend(member("short", b'0', "", "", b"L"));
        t.extend(member("pickle", b'0', "", "x", b"X"));
        t.extend(vec![0u8; 2 * TAR_BLOCK]);
        let m = names_and_data(&t);
        let names: Vec<&str> = m.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names, ["a", "pkl", "long/name", "x/pickle"]);
        assert_eq!(m[1].1, b"P");
        // The (name, offset, len) view agrees.
        assert_eq!(tar_members(&t).len(), 4);
    }

    #[test]
    fn links_resolve_to_their_targets_bytes() {
        let mut t = member("dir/s", b'0', "", "", b"payload");
        t.extend(member("storages", b'1', "dir/s", "", b""));
        t.extend(member("dir/pickle", b'2', "./s", "", b""));
        t.extend(member("loop", b'2', "loop", "", b""));
        t.extend(member("dangling", b'2', "nowhere", "", b""));
        // A hard link only reaches members before it.
        t.extend(member("early", b'1', "late", "", b""));
        t.extend(member("late", b'0', "", "", b"late"));
        let m = names_and_data(&t);
        assert_eq!(
            m[1],
            ("storages".into(), b"payload".to_vec(), Some("dir/s".into()))
        );
        assert_eq!(
            m[2],
            (
                "dir/pickle".into(),
                b"payload".to_vec(),
                Some("dir/s".into())
            )
        );
        assert_eq!(m[3], ("loop".into(), vec![], None));
        assert_eq!(m[4], ("dangling".into(), vec![], None));
        assert_eq!(m[5], ("early".into(), vec![], None));
        assert_eq!(normpath("a/./b/../c"), "a/c");
    }
}
