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

/// A tar archive's members in order, as (name, data offset, length): plain ustar
/// headers (no PAX or GNU long names), up to the first header Python's `tarfile` would
/// not accept or a member running past the end of the file.
pub(crate) fn tar_members(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let mut members: Vec<(String, usize, usize)> = Vec::new();
    let mut at = 0usize;
    while tar_header_ok(bytes, at) && members.len() < 10_000 {
        let block = &bytes[at..at + TAR_BLOCK];
        let end = block[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&block[..end]).into_owned();
        let size = tar_number(&block[124..136]).unwrap_or(0);
        let data = at + TAR_BLOCK;
        let Some(len) = usize::try_from(size)
            .ok()
            .filter(|l| data.saturating_add(*l) <= bytes.len())
        else {
            break;
        };
        members.push((name, data, len));
        at = data + len.div_ceil(TAR_BLOCK) * TAR_BLOCK;
    }
    members
}
