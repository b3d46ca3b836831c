//! The machine: its state, errors and findings, and reading the input.

use super::*;

pub(super) struct Vm<'a, 'h> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) op_pos: usize,
    pub(super) op: Op,
    pub(super) nodes: Vec<Node<'a>>,
    /// The items of every tuple.
    pub(super) tuples: Vec<Id>,
    pub(super) stack: Vec<Id>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: Memo,
    pub(super) host: &'h mut dyn Host,
    pub(super) opts: &'h Options,
    pub(super) findings: Vec<Finding>,
    pub(super) flagged: HashSet<String>,
    pub(super) noted: HashSet<String>,
    /// Scratch space of `materialise`.
    pub(super) on_path: Vec<bool>,
    /// The node of each small int (0..256) once one was pushed (ints are immutable, so
    /// one node serves every push of the value).
    pub(super) small_ints: [Id; 256],
    /// Node creations saved that way.
    pub(super) shared: usize,
    /// Hashes dict keys (randomly keyed: pickles cannot choose colliding keys).
    pub(super) key_hasher: RandomState,
    pub(super) budget: Budget,
    /// Items copied and bytes cloned so far; bounded (linear in the input) so that
    /// re-using one big memoised value many times cannot take quadratic time or memory.
    pub(super) work: Cell<u64>,
    /// Whether the pickle needed bytes past the end of `data` (a prefix of the input:
    /// see [`run_prefix`]).
    pub(super) ran_out: Cell<bool>,
}

/// The opcode being executed, for messages.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    None,
    Code(u8),
    /// Past the last byte.
    End,
}

/// A little-endian integer of 1 to 4 bytes.
pub(super) fn le_u32(b: &[u8]) -> u32 {
    b.iter().rev().fold(0, |n, x| n << 8 | u32::from(*x))
}

impl<'a, 'h> Vm<'a, 'h> {
    pub(super) fn new(data: &'a [u8], host: &'h mut dyn Host, opts: &'h Options) -> Self {
        // About one node per four bytes of pickle; the arena still grows past this.
        let mut nodes = Vec::with_capacity((data.len() / 4).clamp(16, 1 << 13));
        nodes.extend([
            Node::Leaf(Value::None),
            Node::Leaf(Value::Bool(true)),
            Node::Leaf(Value::Bool(false)),
        ]);
        Vm {
            data,
            pos: 0,
            op_pos: 0,
            op: Op::None,
            nodes,
            tuples: Vec::with_capacity((data.len() / 4).clamp(16, 1 << 13)),
            stack: Vec::with_capacity(64),
            marks: Vec::new(),
            memo: Memo {
                // About one memo entry per 16 bytes of pickle (a hint only).
                dense: Vec::with_capacity((data.len() / 16).clamp(16, 1 << 12)),
                ..Memo::default()
            },
            host,
            opts,
            findings: Vec::new(),
            flagged: HashSet::new(),
            noted: HashSet::new(),
            on_path: Vec::new(),
            small_ints: [NO_ID; 256],
            shared: 0,
            key_hasher: RandomState::new(),
            budget: Budget::default(),
            work: Cell::new(0),
            ran_out: Cell::new(false),
        }
    }

    // ----- errors, findings -------------------------------------------------

    pub(super) fn err(&self, message: impl std::fmt::Display) -> FormatError {
        let (opcode, op) = match self.op {
            Op::None => (None, ""),
            Op::End => (None, "(end)"),
            Op::Code(c) => (Some(c), op::name(c).unwrap_or("?")),
        };
        FormatError::Pickle {
            offset: self.opts.base_offset + self.op_pos as u64,
            opcode,
            message: format!("{message} (in {}, opcode {op})", self.opts.location),
        }
    }

    pub(super) fn flag(&mut self, global: &str) {
        if self.flagged.insert(global.to_string()) {
            self.findings.push(Finding::UnsafeGlobal {
                global: global.to_string(),
                location: self.opts.location.clone(),
            });
        }
    }

    pub(super) fn note(&mut self, message: String) {
        if self.noted.insert(message.clone()) {
            self.findings.push(Finding::Note { message });
        }
    }

    // ----- input ------------------------------------------------------------

    #[inline]
    pub(super) fn take(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.cut_short(n));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    #[cold]
    #[inline(never)]
    pub(super) fn cut_short(&self, n: u64) -> FormatError {
        self.ran_out.set(true);
        let left = (self.data.len() - self.pos) as u64;
        self.err(format!(
            "pickle cut short: needs {n} bytes at byte {}, only {left} remain",
            self.opts.base_offset + self.pos as u64
        ))
    }

    /// The next `N` bytes.
    #[inline]
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        match self
            .data
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<N>())
        {
            Some(a) => {
                self.pos += N;
                Ok(*a)
            }
            None => Err(self.cut_short(N as u64)),
        }
    }

    #[inline]
    pub(super) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }
    #[inline]
    pub(super) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    #[inline]
    pub(super) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    #[inline]
    pub(super) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A protocol-0 text line, without its `\n`.
    pub(super) fn line(&mut self) -> Result<&'a [u8], FormatError> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => {
                self.ran_out.set(true);
                Err(self.err("pickle cut short: text line without a newline"))
            }
        }
    }

    /// The length of the whole input the limits scale with ([`Options::input_len`]).
    pub(super) fn input_len(&self) -> u64 {
        self.opts.input_len.unwrap_or(self.data.len() as u64)
    }

    pub(super) fn line_str(&mut self) -> Result<&'a str, FormatError> {
        let l = self.line()?;
        std::str::from_utf8(l).map_err(|_| self.err("text line is not UTF-8"))
    }
}
