//! A pickle protocol 2 emitter that writes opcodes the way CPython's `pickle` (and so
//! `torch.save`) does: `BINUNICODE` strings, `BININT1/BININT2/BININT/LONG1` ints,
//! `BINFLOAT`, `EMPTY_DICT`/`EMPTY_LIST` followed by `SETITEM(S)`/`APPEND(S)` in batches
//! of 1000, `TUPLE1/2/3` or `MARK … TUPLE`, and a `BINPUT` after every object CPython
//! memoizes. Strings and globals are memoized by value, so a repeated key or global is
//! a `BINGET` (CPython does this by identity; for the interned names torch repeats —
//! `'storage'`, `'cpu'`, globals — the output is the same).
//!
//! This is the low-level part; [`super::pt`] walks a [`crate::format::Value`] tree with it.

use std::collections::HashMap;

use super::{WriteError, WriteLimit};

/// The opcodes, from the one table the reader uses too.
pub use crate::format::pickle::opcodes as op;

/// Why an int given as decimal text cannot be pickled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BigIntError {
    #[error("`{0}` is not a decimal integer")]
    NotDecimal(String),
    #[error("integer too large")]
    TooLarge,
}

/// CPython's `_BATCHSIZE` for SETITEMS/APPENDS.
pub const BATCH: usize = 1000;

/// Pickle bytes under construction.
#[derive(Debug, Default)]
pub struct Pickler {
    pub buf: Vec<u8>,
    memo_len: u32,
    strings: HashMap<String, u32>,
    globals: HashMap<(String, String), u32>,
}

impl Pickler {
    /// A pickler with the protocol 2 header written.
    pub fn new() -> Pickler {
        let mut p = Pickler::default();
        p.buf.extend_from_slice(&[op::PROTO, 2]);
        p
    }

    /// Write `STOP` and hand out the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(op::STOP);
        self.buf
    }

    pub fn op(&mut self, code: u8) {
        self.buf.push(code);
    }

    /// `BINPUT` the object on top of the stack; returns its memo index.
    pub fn memoize(&mut self) -> Result<u32, WriteError> {
        let idx = self.memo_len;
        self.memo_len = idx.checked_add(1).ok_or(WriteError::Limit {
            limit: WriteLimit::MemoEntries,
            max: u64::from(u32::MAX),
            found: u64::from(u32::MAX) + 1,
            at: String::new(),
        })?;
        match u8::try_from(idx) {
            Ok(i) => self.buf.extend_from_slice(&[op::BINPUT, i]),
            Err(_) => {
                self.buf.push(op::LONG_BINPUT);
                self.buf.extend_from_slice(&idx.to_le_bytes());
            }
        }
        Ok(idx)
    }

    /// Push memo entry `idx` (`BINGET` / `LONG_BINGET`).
    pub fn get(&mut self, idx: u32) {
        match u8::try_from(idx) {
            Ok(i) => self.buf.extend_from_slice(&[op::BINGET, i]),
            Err(_) => {
                self.buf.push(op::LONG_BINGET);
                self.buf.extend_from_slice(&idx.to_le_bytes());
            }
        }
    }

    pub fn none(&mut self) {
        self.op(op::NONE);
    }

    pub fn bool(&mut self, b: bool) {
        self.op(if b { op::NEWTRUE } else { op::NEWFALSE });
    }

    /// An int, in the smallest opcode CPython picks.
    pub fn int(&mut self, v: i64) {
        if (0..=0xff).contains(&v) {
            self.buf.extend_from_slice(&[op::BININT1, v as u8]);
        } else if (0..=0xffff).contains(&v) {
            self.buf.push(op::BININT2);
            self.buf.extend_from_slice(&(v as u16).to_le_bytes());
        } else if let Ok(v32) = i32::try_from(v) {
            self.buf.push(op::BININT);
            self.buf.extend_from_slice(&v32.to_le_bytes());
        } else {
            self.long(&long_bytes_i64(v));
        }
    }

    /// `LONG1`/`LONG4` with little-endian two's complement bytes.
    pub fn long(&mut self, bytes: &[u8]) {
        match u8::try_from(bytes.len()) {
            Ok(n) => self.buf.extend_from_slice(&[op::LONG1, n]),
            Err(_) => {
                self.buf.push(op::LONG4);
                self.buf
                    .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// An int given as decimal text (any size).
    pub fn big_int(&mut self, decimal: &str) -> Result<(), BigIntError> {
        let bytes = long_bytes_decimal(decimal)?;
        if bytes.len() > u32::MAX as usize {
            return Err(BigIntError::TooLarge);
        }
        match decode_small(&bytes) {
            Some(v) => self.int(v),
            None => self.long(&bytes),
        }
        Ok(())
    }

    /// `BINFLOAT` (big-endian IEEE 754; NaN payloads are kept).
    pub fn float(&mut self, f: f64) {
        self.buf.push(op::BINFLOAT);
        self.buf.extend_from_slice(&f.to_bits().to_be_bytes());
    }

    /// A `str`: `BINGET` if the same text was written before, else `BINUNICODE` + `BINPUT`.
    pub fn str(&mut self, s: &str) -> Result<(), WriteError> {
        if let Some(&idx) = self.strings.get(s) {
            self.get(idx);
            return Ok(());
        }
        let len = u32::try_from(s.len()).map_err(|_| WriteError::Limit {
            limit: WriteLimit::StringBytes,
            max: u64::from(u32::MAX),
            found: s.len() as u64,
            at: String::new(),
        })?;
        self.buf.push(op::BINUNICODE);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        let idx = self.memoize()?;
        self.strings.insert(s.to_string(), idx);
        Ok(())
    }

    /// `GLOBAL 'module name'` (memoized; a repeat is a `BINGET`).
    pub fn global(&mut self, module: &str, name: &str) -> Result<(), WriteError> {
        let key = (module.to_string(), name.to_string());
        if let Some(&idx) = self.globals.get(&key) {
            self.get(idx);
            return Ok(());
        }
        self.buf.push(op::GLOBAL);
        self.buf.extend_from_slice(module.as_bytes());
        self.buf.push(b'\n');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(b'\n');
        let idx = self.memoize()?;
        self.globals.insert(key, idx);
        Ok(())
    }

    /// Open a tuple of `n` items (`EMPTY_TUPLE` needs no items, 1–3 need no `MARK`).
    pub fn tuple_start(&mut self, n: usize) {
        if n > 3 {
            self.op(op::MARK);
        }
    }

    /// Close a tuple of `n` items opened with [`tuple_start`](Self::tuple_start) and
    /// memoize it (CPython memoizes every non-empty tuple).
    pub fn tuple_end(&mut self, n: usize) -> Result<(), WriteError> {
        match n {
            0 => {
                self.op(op::EMPTY_TUPLE);
                return Ok(());
            }
            1 => self.op(op::TUPLE1),
            2 => self.op(op::TUPLE2),
            3 => self.op(op::TUPLE3),
            _ => self.op(op::TUPLE),
        }
        self.memoize().map(|_| ())
    }

    /// A tuple of small non-negative ints (sizes, strides).
    pub fn int_tuple(&mut self, items: &[u64]) -> Result<(), WriteError> {
        self.tuple_start(items.len());
        for &v in items {
            let v = i64::try_from(v).map_err(|_| WriteError::Limit {
                limit: WriteLimit::Dimension,
                max: i64::MAX as u64,
                found: v,
                at: String::new(),
            })?;
            self.int(v);
        }
        self.tuple_end(items.len())
    }

    /// `bytes` the way CPython pickles them under protocol 2:
    /// `_codecs.encode('<latin-1 text>', 'latin1')` (also for `b''`, where CPython would
    /// use `builtins.bytes()`, which `torch.load(weights_only=True)` rejects).
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), WriteError> {
        self.global("_codecs", "encode")?;
        let text: String = b.iter().map(|&c| char::from(c)).collect();
        self.str(&text)?;
        self.str("latin1")?;
        self.op(op::TUPLE2);
        self.memoize()?;
        self.op(op::REDUCE);
        self.memoize().map(|_| ())
    }
}

/// Minimal little-endian two's complement of `v` (as CPython's `encode_long`).
pub fn long_bytes_i64(v: i64) -> Vec<u8> {
    if v == 0 {
        return Vec::new();
    }
    let mut b = v.to_le_bytes().to_vec();
    // Drop redundant sign-extension bytes.
    while b.len() > 1 {
        let last = b[b.len() - 1];
        let prev_sign = b[b.len() - 2] & 0x80;
        if (last == 0x00 && prev_sign == 0) || (last == 0xFF && prev_sign != 0) {
            b.pop();
        } else {
            break;
        }
    }
    b
}

/// The value of LONG bytes when they fit an i64.
fn decode_small(b: &[u8]) -> Option<i64> {
    if b.len() > 8 {
        return None;
    }
    if b.is_empty() {
        return Some(0);
    }
    let ext = if b[b.len() - 1] & 0x80 != 0 { 0xFF } else { 0 };
    let mut a = [ext; 8];
    a[..b.len()].copy_from_slice(b);
    Some(i64::from_le_bytes(a))
}

/// Minimal little-endian two's complement of a decimal integer (`-?[0-9]+`).
pub fn long_bytes_decimal(s: &str) -> Result<Vec<u8>, BigIntError> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(BigIntError::NotDecimal(s.to_string()));
    }
    // Magnitude, little-endian base 256.
    let mut mag: Vec<u8> = Vec::new();
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push(carry as u8);
            carry >>= 8;
        }
    }
    while mag.last() == Some(&0) {
        mag.pop();
    }
    if mag.is_empty() {
        return Ok(Vec::new());
    }
    if !neg {
        if mag[mag.len() - 1] & 0x80 != 0 {
            mag.push(0);
        }
        return Ok(mag);
    }
    // Two's complement of the magnitude.
    let mut carry = true;
    for x in mag.iter_mut() {
        *x = !*x;
        if carry {
            let (v, c) = x.overflowing_add(1);
            *x = v;
            carry = c;
        }
    }
    if mag[mag.len() - 1] & 0x80 == 0 {
        mag.push(0xFF);
    }
    // e.g. -128 → [0x80] (not [0x80, 0xFF])
    while mag.len() > 1 && mag[mag.len() - 1] == 0xFF && mag[mag.len() - 2] & 0x80 != 0 {
        mag.pop();
    }
    Ok(mag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_use_cpython_opcodes() {
        let mut p = Pickler::default();
        for v in [
            0,
            255,
            256,
            65535,
            65536,
            -1,
            i32::MIN as i64,
            i32::MAX as i64 + 1,
        ] {
            p.int(v);
        }
        assert_eq!(
            p.buf,
            [
                &[op::BININT1, 0][..],
                &[op::BININT1, 255],
                &[op::BININT2, 0, 1],
                &[op::BININT2, 255, 255],
                &[op::BININT, 0, 0, 1, 0],
                &[op::BININT, 255, 255, 255, 255],
                &[op::BININT, 0, 0, 0, 0x80],
                &[op::LONG1, 5, 0, 0, 0, 0x80, 0],
            ]
            .concat()
        );
    }

    #[test]
    fn long_encoding_matches_cpython() {
        // pickle.encode_long values
        let u64_max: Vec<u8> = [0xff; 8].iter().copied().chain([0]).collect();
        let cases: &[(&str, &[u8])] = &[
            ("0", &[]),
            ("255", &[0xff, 0x00]),
            ("-256", &[0x00, 0xff]),
            ("-128", &[0x80]),
            ("127", &[0x7f]),
            ("-1", &[0xff]),
            ("1180591620717411303424", &[0, 0, 0, 0, 0, 0, 0, 0, 0x40]),
            (
                "-9223372036854775809",
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff],
            ),
            ("18446744073709551615", &u64_max),
        ];
        for (s, want) in cases {
            assert_eq!(long_bytes_decimal(s).unwrap(), *want, "{s}");
        }
        for v in [0i64, 1, -1, 127, 128, -128, -129, i64::MIN, i64::MAX] {
            assert_eq!(
                long_bytes_i64(v),
                long_bytes_decimal(&v.to_string()).unwrap(),
                "{v}"
            );
        }
        assert!(long_bytes_decimal("12a").is_err());
        assert!(long_bytes_decimal("-").is_err());
        assert!(long_bytes_decimal("").is_err());
        assert_eq!(long_bytes_decimal("+0007").unwrap(), [7]);
    }

    #[test]
    fn big_ints_that_fit_use_small_opcodes() {
        let mut p = Pickler::default();
        p.big_int("-5").unwrap();
        assert_eq!(p.buf, [op::BININT, 0xfb, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn strings_and_globals_are_memoized_by_value() {
        let mut p = Pickler::default();
        p.str("ab").unwrap();
        p.global("collections", "OrderedDict").unwrap();
        p.str("ab").unwrap();
        p.global("collections", "OrderedDict").unwrap();
        let mut want = vec![
            op::BINUNICODE,
            2,
            0,
            0,
            0,
            b'a',
            b'b',
            op::BINPUT,
            0,
            op::GLOBAL,
        ];
        want.extend_from_slice(b"collections\nOrderedDict\n");
        want.extend_from_slice(&[op::BINPUT, 1, op::BINGET, 0, op::BINGET, 1]);
        assert_eq!(p.buf, want);
    }

    #[test]
    fn long_memo_indices() {
        let mut p = Pickler::default();
        for i in 0..300 {
            p.str(&i.to_string()).unwrap();
        }
        p.buf.clear();
        p.str("299").unwrap();
        assert_eq!(p.buf, [op::LONG_BINGET, 43, 1, 0, 0]);
        p.buf.clear();
        p.str("new").unwrap();
        assert_eq!(&p.buf[p.buf.len() - 5..], [op::LONG_BINPUT, 44, 1, 0, 0]);
    }

    #[test]
    fn floats_keep_their_bits() {
        let mut p = Pickler::default();
        let nan = f64::from_bits(0x7ff8_0000_0000_0001);
        p.float(nan);
        assert_eq!(p.buf, [op::BINFLOAT, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn bytes_go_through_codecs_encode() {
        let mut p = Pickler::default();
        p.bytes(&[b'a', 0xff]).unwrap();
        let mut want = vec![op::GLOBAL];
        want.extend_from_slice(b"_codecs\nencode\n");
        want.extend_from_slice(&[op::BINPUT, 0, op::BINUNICODE, 3, 0, 0, 0, b'a', 0xc3, 0xbf]);
        want.extend_from_slice(&[op::BINPUT, 1, op::BINUNICODE, 6, 0, 0, 0]);
        want.extend_from_slice(b"latin1");
        want.extend_from_slice(&[
            op::BINPUT,
            2,
            op::TUPLE2,
            op::BINPUT,
            3,
            op::REDUCE,
            op::BINPUT,
            4,
        ]);
        assert_eq!(p.buf, want);
    }

    #[test]
    fn tuples() {
        let mut p = Pickler::default();
        p.int_tuple(&[]).unwrap();
        p.int_tuple(&[1]).unwrap();
        p.int_tuple(&[1, 2, 3, 4]).unwrap();
        assert_eq!(
            p.buf,
            [
                op::EMPTY_TUPLE,
                op::BININT1,
                1,
                op::TUPLE1,
                op::BINPUT,
                0,
                op::MARK,
                op::BININT1,
                1,
                op::BININT1,
                2,
                op::BININT1,
                3,
                op::BININT1,
                4,
                op::TUPLE,
                op::BINPUT,
                1
            ]
        );
        assert!(p.int_tuple(&[u64::MAX]).is_err());
    }
}
