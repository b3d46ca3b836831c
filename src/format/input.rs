//! What the parsers read a file through: ranges, read from the file when first wanted.
//!
//! A file opened from disk is not read whole. Its bytes live in a file-sized buffer whose
//! pages are only touched where something was read (a fresh, zeroed allocation takes no
//! memory until written), and a parser asks for the ranges it reads ([`Input::get`]):
//! headers, pickles, the count before a storage. Tensor data is never asked for while
//! parsing; it stays on disk until a tensor's bytes are wanted
//! ([`Checkpoint::storage_bytes`](super::Checkpoint::storage_bytes)). A pickle's length
//! is only known once it is parsed, so pickles (and the loader's sweeps) are read in
//! growing windows ([`pickle_at`], and the loader's `sweep_at`): from 64 KiB, doubling, until the
//! pickle ends inside the window, the input ends, or [`limits::MAX_PICKLE_BYTES`].
//! Bytes in memory for tests and fuzzing are an [`Input`] too ([`Whole`]).

use super::pickle::{self, Host, Options, Outcome};
use super::{limits, FormatError, Limit};

/// A file's bytes, as the parsers read them.
pub trait Input {
    /// The file's length (when it was opened).
    fn len(&self) -> u64;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The file's bytes `[start, end)`, cut at the end of the file (so possibly shorter,
    /// or empty), read from the file first where they are not in memory yet.
    fn get(&mut self, start: u64, end: u64) -> Result<&[u8], FormatError>;
    /// The file-sized buffer: only the ranges [`get`](Input::get) returned, and those
    /// read before parsing (see [`unread`](Input::unread)), hold the file's bytes.
    fn all(&self) -> &[u8];
    /// Whether any byte of `[start, end)` of [`all`](Input::all) is not the file's.
    fn unread(&self, start: u64, end: u64) -> bool;
}

/// Bytes held whole in memory.
pub struct Whole<'a>(pub &'a [u8]);

impl Input for Whole<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn get(&mut self, start: u64, end: u64) -> Result<&[u8], FormatError> {
        Ok(clamp(self.0, start, end))
    }
    fn all(&self) -> &[u8] {
        self.0
    }
    fn unread(&self, _start: u64, _end: u64) -> bool {
        false
    }
}

/// `bytes[start..end]`, cut at the end of `bytes`.
pub(crate) fn clamp(bytes: &[u8], start: u64, end: u64) -> &[u8] {
    let len = bytes.len() as u64;
    let (s, e) = (start.min(len), end.min(len).max(start.min(len)));
    &bytes[s as usize..e as usize]
}

/// The first window a pickle or sweep is read in.
const FIRST_WINDOW: u64 = 64 << 10;

/// What a parse of one window says.
pub(crate) enum Window<T> {
    /// Read inside the window (or failed for a reason a longer window would not change).
    Done(T),
    /// Needed bytes past the window's end.
    More(T),
}

/// Run `f` on growing windows `[start, start + w)` of `[start, end)` until it is done
/// inside one, the window reaches `end`, or it reaches `cap` bytes; `true` with the
/// result when it stopped at `cap` with more wanted.
pub(crate) fn windowed<T>(
    input: &mut dyn Input,
    start: u64,
    end: u64,
    cap: u64,
    mut f: impl FnMut(&[u8]) -> Window<T>,
) -> Result<(T, bool), FormatError> {
    let end = end.min(input.len());
    let avail = end.saturating_sub(start);
    let limit = avail.min(cap);
    let mut w = limit.min(FIRST_WINDOW);
    loop {
        let data = input.get(start, start + w)?;
        match f(data) {
            Window::Done(t) => return Ok((t, false)),
            Window::More(t) if w >= limit => return Ok((t, w < avail)),
            Window::More(_) => w = w.saturating_mul(2).min(limit),
        }
    }
}

/// Run the pickle at `start` (it may run up to `end`) with a host made by `host` for
/// each window tried; the pickle is read in growing windows, at most
/// [`limits::MAX_PICKLE_BYTES`]. The host that read it comes back with the outcome.
pub fn pickle_at<H: Host>(
    input: &mut dyn Input,
    start: u64,
    end: u64,
    opts: &Options,
    mut host: impl FnMut() -> H,
) -> Result<(Outcome, H), FormatError> {
    let mut opts = opts.clone();
    opts.input_len = Some(end.min(input.len()).saturating_sub(start));
    let (result, capped) = windowed(input, start, end, limits::MAX_PICKLE_BYTES, |data| {
        let mut h = host();
        match pickle::run_prefix(data, &mut h, &opts) {
            Ok(o) => Window::Done(Ok((o, h))),
            Err((e, true)) => Window::More(Err(e)),
            Err((e, false)) => Window::Done(Err(e)),
        }
    })?;
    if capped {
        return Err(FormatError::Limit {
            limit: Limit::PickleBytes,
            max: limits::MAX_PICKLE_BYTES,
            found: limits::MAX_PICKLE_BYTES + 1,
            at: opts.location.clone(),
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::loader::sweep_at;
    use crate::format::pickle::PlainHost;

    /// An input that counts what it was asked for.
    struct Counting<'a> {
        bytes: &'a [u8],
        asked: u64,
    }

    impl Input for Counting<'_> {
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn get(&mut self, start: u64, end: u64) -> Result<&[u8], FormatError> {
            let s = clamp(self.bytes, start, end);
            self.asked = self.asked.max(start + s.len() as u64);
            Ok(s)
        }
        fn all(&self) -> &[u8] {
            self.bytes
        }
        fn unread(&self, _: u64, _: u64) -> bool {
            false
        }
    }

    /// A protocol-2 pickle of one `n`-byte string.
    fn long_pickle(n: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'X'];
        p.extend((n as u32).to_le_bytes());
        p.extend(std::iter::repeat_n(b'a', n));
        p.push(b'.');
        p
    }

    #[test]
    fn a_pickle_is_read_in_windows_that_end_near_it() {
        // A short pickle followed by 1 MiB of other bytes: one 64 KiB window.
        let mut bytes = long_pickle(10);
        let end = bytes.len();
        bytes.extend(vec![0xffu8; 1 << 20]);
        let mut input = Counting {
            bytes: &bytes,
            asked: 0,
        };
        let len = input.len();
        let (o, _) = pickle_at(&mut input, 0, len, &Options::new("p"), || PlainHost).unwrap();
        assert_eq!(o.end, end);
        assert_eq!(input.asked, FIRST_WINDOW);
        // A 300 KiB pickle: windows of 64, 128, 256 and 512 KiB.
        let mut bytes = long_pickle(300 << 10);
        bytes.extend(vec![0xffu8; 4 << 20]);
        let mut input = Counting {
            bytes: &bytes,
            asked: 0,
        };
        let len = input.len();
        let (o, _) = pickle_at(&mut input, 0, len, &Options::new("p"), || PlainHost).unwrap();
        assert_eq!(o.value, crate::format::Value::Str("a".repeat(300 << 10)));
        assert_eq!(input.asked, 512 << 10);
        // The same through the sweep.
        let mut input = Counting {
            bytes: &bytes,
            asked: 0,
        };
        let (s, capped) = sweep_at(&mut input, 0, len).unwrap();
        assert!(s.end.is_some() && !capped);
        assert_eq!(input.asked, 512 << 10);
    }

    #[test]
    fn windows_stop_at_their_cap() {
        let mut bytes = long_pickle(300 << 10);
        bytes.extend(vec![0xffu8; 1 << 20]);
        let len = bytes.len() as u64;
        let run = |data: &[u8]| match pickle::run_prefix(data, &mut PlainHost, &Options::new("p")) {
            Ok(o) => Window::Done(Ok(o.end)),
            Err((e, true)) => Window::More(Err(e.to_string())),
            Err((e, false)) => Window::Done(Err(e.to_string())),
        };
        let (r, capped) = windowed(&mut Whole(&bytes), 0, len, 128 << 10, run).unwrap();
        assert!(capped && r.is_err(), "{r:?}");
        let (r, capped) = windowed(&mut Whole(&bytes), 0, len, 1 << 20, run).unwrap();
        assert_eq!((r, capped), (Ok((300 << 10) + 8), false));
        // At the end of the input, more wanted is not a cap.
        let (r, capped) = windowed(&mut Whole(&bytes[..1000]), 0, 1000, 1 << 20, run).unwrap();
        assert!(!capped && r.is_err());
    }

    #[test]
    fn a_pickle_cut_by_its_end_fails_as_a_whole_read_does() {
        let p = long_pickle(100 << 10);
        for cut in [10, 70 << 10, p.len() - 1] {
            let whole = pickle::run(&p[..cut], &mut PlainHost, &Options::new("p")).unwrap_err();
            let mut input = Whole(&p);
            let e =
                pickle_at(&mut input, 0, cut as u64, &Options::new("p"), || PlainHost).unwrap_err();
            assert_eq!(e.to_string(), whole.to_string());
        }
        // A corrupt opcode early on is not retried with longer windows.
        let mut bad = vec![0x80, 2, 0xff];
        bad.extend(vec![0u8; 1 << 20]);
        let mut input = Counting {
            bytes: &bad,
            asked: 0,
        };
        let len = input.len();
        assert!(pickle_at(&mut input, 0, len, &Options::new("p"), || PlainHost).is_err());
        assert_eq!(input.asked, FIRST_WINDOW);
    }
}
