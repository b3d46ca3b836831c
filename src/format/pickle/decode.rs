//! Text and number codecs of pickles: numpy scalars, LONG, Python 2 strings, escape codecs.

use super::*;
use crate::format::dtype::f16_to_f64;

/// `str.encode(encoding)` for the encodings pickles use.
pub(super) fn encode_str(s: &str, enc: &str) -> Option<Vec<u8>> {
    let enc = enc.to_ascii_lowercase().replace('_', "-");
    match enc.as_str() {
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => {
            s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
        }
        "ascii" | "us-ascii" => s.is_ascii().then(|| s.as_bytes().to_vec()),
        "utf-8" | "utf8" => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// Split a numpy byte-order prefix off a dtype descr (`<f8` → ('<', "f8")).
pub(super) fn split_order(descr: &str) -> (char, &str) {
    match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('|', descr),
    }
}

/// Decode a numpy scalar's raw bytes; `None` for kinds kept as bytes.
pub fn decode_numpy(descr: &str, order: char, raw: &[u8]) -> Option<Value> {
    let (prefix, descr) = split_order(descr);
    let order = if prefix != '|' { prefix } else { order };
    let big = order == '>';
    let kind = descr.chars().next()?;
    let size: usize = descr.get(1..)?.parse().ok()?;
    if raw.len() != size || !matches!(size, 1 | 2 | 4 | 8 | 16) {
        return None;
    }
    let mut le = raw.to_vec();
    if big {
        le.reverse();
    }
    let u = |n: usize| -> u64 {
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(&le[..n]);
        u64::from_le_bytes(a)
    };
    Some(match (kind, size) {
        ('f', 2) => Value::Float(f16_to_f64(u(2) as u16)),
        ('f', 4) => Value::Float(f64::from(f32::from_bits(u(4) as u32))),
        ('f', 8) => Value::Float(f64::from_bits(u(8))),
        ('i', 1) => Value::Int(i64::from(le[0] as i8)),
        ('i', 2) => Value::Int(i64::from(u(2) as u16 as i16)),
        ('i', 4) => Value::Int(i64::from(u(4) as u32 as i32)),
        ('i', 8) => Value::Int(u(8) as i64),
        ('u', 1 | 2 | 4) => Value::Int(u(size) as i64),
        ('u', 8) => match i64::try_from(u(8)) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(u(8).to_string()),
        },
        ('b', 1) => Value::Bool(le[0] != 0),
        ('c', 8 | 16) => {
            let half = size / 2;
            let part = |s: &[u8]| -> f64 {
                if half == 4 {
                    f64::from(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                } else {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    f64::from_le_bytes(a)
                }
            };
            // complex is stored (re, im), each swapped separately for big-endian
            let mut re = raw[..half].to_vec();
            let mut im = raw[half..].to_vec();
            if big {
                re.reverse();
                im.reverse();
            }
            Value::Object {
                class: "builtins.complex".into(),
                args: vec![Value::Float(part(&re)), Value::Float(part(&im))],
                state: None,
            }
        }
        _ => return None,
    })
}

/// Little-endian two's complement → Int or BigInt (decimal).
pub(super) fn decode_long(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    // Fits i64 when all bytes past the 8th are sign extension.
    let ext = if neg { 0xFF } else { 0x00 };
    if b.len() <= 8 || b[8..].iter().all(|x| *x == ext) && (b[7] & 0x80 != 0) == neg {
        let mut a = [ext; 8];
        let n = b.len().min(8);
        a[..n].copy_from_slice(&b[..n]);
        return Value::Int(i64::from_le_bytes(a));
    }
    // Magnitude (two's complement negation for negatives), as base-2^32 limbs.
    let mut mag: Vec<u8> = b.to_vec();
    if neg {
        let mut carry = true;
        for x in mag.iter_mut() {
            *x = !*x;
            if carry {
                let (v, c) = x.overflowing_add(1);
                *x = v;
                carry = c;
            }
        }
    }
    let mut limbs: Vec<u32> = mag
        .chunks(4)
        .map(|c| {
            let mut a = [0u8; 4];
            a[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(a)
        })
        .collect();
    let mut chunks = Vec::new();
    while limbs.iter().any(|l| *l != 0) {
        let mut rem = 0u64;
        for l in limbs.iter_mut().rev() {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    for (i, c) in chunks.iter().rev().enumerate() {
        if i == 0 {
            s.push_str(&c.to_string());
        } else {
            s.push_str(&format!("{c:09}"));
        }
    }
    Value::BigInt(s)
}

pub(super) fn utf8(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// A Python 2 `str`: text when it is UTF-8 (as `torch.load` decodes it), else bytes.
pub(super) fn py2_str(b: Vec<u8>) -> Value {
    match String::from_utf8(b) {
        Ok(s) => Value::Str(s),
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

/// Python's `codecs.escape_decode` (the body of a protocol-0 `STRING`).
pub(crate) fn escape_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'\\' || i + 1 >= s.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = s[i + 1];
        i += 2;
        match e {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 && i < s.len() && (b'0'..=b'7').contains(&s[i]) {
                    v = v * 8 + u32::from(s[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' => {
                let hex = s.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    out
}

/// Python's `raw-unicode-escape` decoding (protocol-0 `UNICODE`).
pub(crate) fn raw_unicode_escape_decode(s: &[u8]) -> String {
    let mut units: Vec<u32> = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            // Count the run of backslashes; only an odd run escapes a following u/U.
            let start = i;
            while i < s.len() && s[i] == b'\\' {
                i += 1;
            }
            let run = i - start;
            let esc = run % 2 == 1 && i < s.len() && (s[i] == b'u' || s[i] == b'U');
            let keep = if esc { run - 1 } else { run };
            units.extend(std::iter::repeat_n(u32::from(b'\\'), keep));
            if esc {
                let n = if s[i] == b'u' { 4 } else { 8 };
                let hex = s
                    .get(i + 1..i + 1 + n)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u32::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        units.push(v);
                        i += 1 + n;
                    }
                    None => units.push(u32::from(b'\\')),
                }
            }
        } else {
            units.push(u32::from(s[i]));
            i += 1;
        }
    }
    // Combine surrogate pairs; lone surrogates become U+FFFD.
    let mut out = String::with_capacity(units.len());
    let mut j = 0;
    while j < units.len() {
        let u = units[j];
        if (0xD800..0xDC00).contains(&u)
            && j + 1 < units.len()
            && (0xDC00..0xE000).contains(&units[j + 1])
        {
            let c = 0x10000 + ((u - 0xD800) << 10) + (units[j + 1] - 0xDC00);
            out.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
            j += 2;
        } else {
            out.push(char::from_u32(u).unwrap_or('\u{FFFD}'));
            j += 1;
        }
    }
    out
}
