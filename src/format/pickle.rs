//! A pickle VM (protocols 0–5) that never imports or calls anything.
//!
//! The VM builds an arena of nodes (so a dict put in the memo and mutated later shows
//! the mutation wherever it is referenced), then materialises the owned [`Value`] tree
//! at `STOP` under a budget (values, payload bytes, depth) so memo bombs and cycles
//! cannot blow up memory or recurse forever.
//!
//! Globals are classified by a [`Host`] (by default through [`allowlist`]): a known
//! safe constructor is interpreted by the VM into plain data; anything else is
//! recorded as a [`Finding::UnsafeGlobal`] and calling it yields [`Value::Blocked`].
//! Persistent ids (torch storages) and tensor rebuilds go to the host.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use super::PassThrough;
use std::rc::Rc;

use super::{limits, DType, Finding, FormatError, Value};

/// What a global is, as far as tvck is concerned. Globals without a `Ctor` are unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctor {
    /// Safe to reference as a value, not interpreted when called (torch dtypes,
    /// `builtins.object`, `numpy.ndarray`, `torch.Tensor`, …).
    Value,
    /// `collections.OrderedDict` / `collections.Counter` → [`Value::Dict`].
    OrderedDict,
    /// `builtins.set` → [`Value::List`].
    Set,
    /// `builtins.frozenset` → [`Value::List`].
    FrozenSet,
    /// `builtins.bytearray` / `builtins.bytes` → [`Value::Bytes`].
    ByteArray,
    /// `builtins.complex` → `Object { class: "builtins.complex", args: [re, im] }`.
    Complex,
    /// `builtins.slice` → `Object { class: "builtins.slice", args }`.
    Slice,
    /// `argparse.Namespace` → `Object` whose state is a dict of its attributes.
    Namespace,
    /// `copyreg._reconstructor(cls, base, state)`, only for an allowlisted `cls`.
    Reconstructor,
    /// `_codecs.encode(str, encoding)` → [`Value::Bytes`].
    CodecsEncode,
    /// `numpy.(_)core.multiarray.scalar(dtype, bytes)` → [`Value::NumpyScalar`].
    NumpyScalar,
    /// `numpy.dtype(descr, align, copy)` (+ BUILD state with the byte order).
    NumpyDtype,
    /// `numpy.(_)core.multiarray._reconstruct` → `Object { class: "numpy.ndarray" }`.
    NumpyReconstruct,
    /// `torch.Size` → [`Value::Tuple`].
    TorchSize,
    /// `torch.device` → [`Value::Str`] (`"cuda:0"`).
    TorchDevice,
    /// A storage class (`torch.FloatStorage`, `torch.UntypedStorage` → u8).
    Storage(DType),
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildParameterWithState,
    /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`.
    RebuildFromTypeV2,
    /// Allowed by `torch.load(weights_only=True)` but not interpreted by tvck (sparse,
    /// quantized, nested tensors…): kept as an `Object` with its arguments, plus a note.
    Uninterpreted,
}

/// The default classification: what `torch.load(weights_only=True)` would accept,
/// plus the numpy scalar/array and `argparse.Namespace` pieces checkpoints carry.
pub fn allowlist(module: &str, name: &str) -> Option<Ctor> {
    let ctor = match (module, name) {
        ("collections", "OrderedDict" | "Counter") => Ctor::OrderedDict,
        ("builtins", "set") => Ctor::Set,
        ("builtins", "frozenset") => Ctor::FrozenSet,
        ("builtins", "bytearray" | "bytes") => Ctor::ByteArray,
        ("builtins", "complex") => Ctor::Complex,
        ("builtins", "slice") => Ctor::Slice,
        ("builtins", "object") => Ctor::Value,
        ("argparse", "Namespace") => Ctor::Namespace,
        ("copyreg", "_reconstructor") => Ctor::Reconstructor,
        ("_codecs", "encode") => Ctor::CodecsEncode,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Ctor::NumpyScalar,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
            Ctor::NumpyReconstruct
        }
        ("numpy", "dtype") => Ctor::NumpyDtype,
        ("numpy", "ndarray") => Ctor::Value,
        ("torch", "Size") => Ctor::TorchSize,
        ("torch", "device") => Ctor::TorchDevice,
        ("torch", "Tensor") => Ctor::Value,
        ("torch.nn.parameter", "Parameter") => Ctor::Value,
        ("torch", "strided" | "sparse_coo" | "sparse_csr" | "_mkldnn") => Ctor::Value,
        ("torch", "UntypedStorage") | ("torch.storage", "UntypedStorage") => {
            Ctor::Storage(DType::U8)
        }
        ("torch._utils", "_rebuild_tensor") => Ctor::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => Ctor::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => Ctor::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter") => Ctor::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Ctor::RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => Ctor::RebuildFromTypeV2,
        (
            "torch._utils",
            "_rebuild_qtensor"
            | "_rebuild_sparse_tensor"
            | "_rebuild_nested_tensor"
            | "_rebuild_meta_tensor_no_storage"
            | "_rebuild_wrapper_subclass"
            | "_rebuild_device_tensor_from_numpy"
            | "_rebuild_device_tensor_from_cpu_tensor",
        )
        | ("torch.serialization", "_get_layout") => Ctor::Uninterpreted,
        ("torch", n) => {
            if let Some(d) = DType::from_storage_name(n) {
                Ctor::Storage(d)
            } else if DType::from_torch_name(n).is_some() {
                Ctor::Value
            } else if n
                .strip_suffix("Tensor")
                .is_some_and(|t| DType::from_storage_name(&format!("{t}Storage")).is_some())
            {
                // A legacy tensor type (`torch.FloatTensor`), named by old tar checkpoints.
                Ctor::Value
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(ctor)
}

/// What a persistent id resolves to.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    Value(Value),
    /// A storage, by index into the host's storage table.
    Storage(usize),
}

/// One item of a persistent id tuple, borrowed from the VM
/// ([`Host::persistent_load_items`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PidItem<'v> {
    Str(&'v str),
    Bytes(&'v [u8]),
    Int(i64),
    /// A global (`torch.FloatStorage`), as [`Value::Global`].
    Global(&'v str),
}

impl PidItem<'_> {
    /// The item as the materialised id would hold it.
    pub fn to_value(&self) -> Value {
        match *self {
            PidItem::Str(s) => Value::Str(s.to_string()),
            PidItem::Bytes(b) => Value::Bytes(b.to_vec()),
            PidItem::Int(i) => Value::Int(i),
            PidItem::Global(g) => Value::Global(g.to_string()),
        }
    }

    /// [`Value::kind`] of [`to_value`](Self::to_value).
    pub fn kind(&self) -> &'static str {
        match self {
            PidItem::Str(_) => "str",
            PidItem::Bytes(_) => "bytes",
            PidItem::Int(_) => "int",
            PidItem::Global(_) => "global",
        }
    }
}

/// The arguments of a tensor rebuild, checked (non-negative, ≤ MAX_DIMS dims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub storage: usize,
    pub storage_offset: u64,
    pub shape: Vec<u64>,
    pub strides: Vec<u64>,
    pub requires_grad: bool,
    /// Explicit dtype (`_rebuild_tensor_v3`); otherwise the storage's.
    pub dtype: Option<DType>,
}

/// The VM's link to the outside: how globals are classified, what persistent ids
/// are, and where tensors go.
pub trait Host {
    /// Classify `module.name`; `None` means unsafe.
    fn resolve_global(&self, module: &str, name: &str) -> Option<Ctor> {
        allowlist(module, name)
    }
    /// Resolve a persistent id (`BINPERSID` / `PERSID`).
    fn persistent_load(&mut self, pid: Value) -> Result<Loaded, String>;
    /// Resolve a persistent id that is a tuple of strings, bytes, ints and globals (torch
    /// storages are), given borrowed: `items` are what [`persistent_load`] would get as a
    /// [`Value::Tuple`]. `None` (the default): the VM materialises the id and calls
    /// [`persistent_load`].
    ///
    /// [`persistent_load`]: Host::persistent_load
    fn persistent_load_items(&mut self, _items: &[PidItem<'_>]) -> Option<Result<Loaded, String>> {
        None
    }
    /// Register a tensor and return its index.
    fn rebuild_tensor(&mut self, spec: TensorSpec) -> Result<usize, String>;
    /// `_rebuild_parameter*` on tensor `index`.
    fn set_requires_grad(&mut self, _index: usize, _requires_grad: bool) {}
}

/// A host for plain pickles: no persistent ids, no tensors.
#[derive(Debug, Default)]
pub struct PlainHost;

impl Host for PlainHost {
    fn persistent_load(&mut self, _pid: Value) -> Result<Loaded, String> {
        Err("persistent id in a plain pickle (not a torch checkpoint)".into())
    }
    fn rebuild_tensor(&mut self, _spec: TensorSpec) -> Result<usize, String> {
        Err("tensor outside a torch checkpoint".into())
    }
}

/// VM settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Which pickle this is, for findings and messages (`data.pkl`).
    pub location: String,
    /// Added to byte offsets in errors (the pickle's position in the file).
    pub base_offset: u64,
    /// Most arena nodes, and most materialised values.
    pub max_values: usize,
    /// Deepest nesting of the materialised tree.
    pub max_depth: usize,
}

impl Options {
    pub fn new(location: impl Into<String>) -> Options {
        Options {
            location: location.into(),
            base_offset: 0,
            max_values: limits::MAX_PICKLE_VALUES,
            max_depth: limits::MAX_DEPTH,
        }
    }
}

/// The result of running one pickle.
#[derive(Debug)]
pub struct Outcome {
    pub value: Value,
    /// Bytes consumed (the position after `STOP`).
    pub end: usize,
    pub findings: Vec<Finding>,
}

/// Run the pickle at the start of `data` up to its `STOP`.
pub fn run(data: &[u8], host: &mut dyn Host, opts: &Options) -> Result<Outcome, FormatError> {
    let mut vm = Vm::new(data, host, opts);
    let value = vm.run()?;
    Ok(Outcome {
        value,
        end: vm.pos,
        findings: vm.findings,
    })
}

/// Parse a plain pickle (no persistent ids) with the default allowlist.
pub fn parse_plain(data: &[u8]) -> Result<Outcome, FormatError> {
    run(data, &mut PlainHost, &Options::new("pickle"))
}

type Id = usize;

#[derive(Debug)]
enum Node<'a> {
    /// An immutable value (scalars, strings, tensors, blocked calls, numpy scalars).
    Leaf(Value),
    /// A string borrowed from the pickle (reads as `Leaf(Value::Str)`).
    Text(&'a str),
    List(Vec<Id>),
    /// Items in `Vm::tuples` (tuples never change, so they share one arena).
    Tuple(Span),
    Dict(DictNode),
    Set(Vec<Id>),
    Global {
        /// Shared: calls and references copy it often.
        name: Rc<str>,
        ctor: Option<Ctor>,
    },
    Storage(usize),
    Object {
        class: String,
        args: Vec<Id>,
        state: Option<Id>,
    },
    NumpyDtype {
        descr: String,
        order: char,
    },
}

/// Call arguments copied out of the arena (inline when there are few).
enum Args {
    Inline([Id; 8], usize),
    Heap(Vec<Id>),
}

impl Args {
    fn new(items: &[Id]) -> Args {
        if items.len() <= 8 {
            let mut a = [0; 8];
            a[..items.len()].copy_from_slice(items);
            Args::Inline(a, items.len())
        } else {
            Args::Heap(items.to_vec())
        }
    }
}

impl std::ops::Deref for Args {
    type Target = [Id];
    fn deref(&self) -> &[Id] {
        match self {
            Args::Inline(a, n) => &a[..*n],
            Args::Heap(v) => v,
        }
    }
}

/// A range of `Vm::tuples`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }
}

#[derive(Debug, Default)]
struct DictNode {
    items: Vec<(Id, Id)>,
    /// Key hash → position in `items` of the first key with that hash. Small dicts are
    /// searched linearly and get an index once they outgrow [`DICT_SCAN`] items.
    index: Option<HashMap<u64, usize, BuildHasherDefault<PassThrough>>>,
}

/// Dicts up to this many items are searched linearly (no hashing at all).
const DICT_SCAN: usize = 8;

/// A dict key as compared, with Python's equalities (True == 1 == 1.0), borrowed from
/// the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeyRef<'n> {
    None,
    Int(i64),
    Big(&'n str),
    Float(u64),
    Str(&'n str),
    Bytes(&'n [u8]),
    Global(&'n str),
    /// Compared item by item.
    Tuple(&'n [Id]),
    /// Compared by identity (objects, tensors).
    Ident(Id),
}

/// The memo: a dense table for the small keys pickles use (0, 1, 2, … in order), a map
/// for the rest. The table grows only to about twice the number of distinct keys, so
/// its size stays proportional to the input whatever keys a pickle claims.
#[derive(Debug, Default)]
struct Memo {
    dense: Vec<Id>,
    sparse: HashMap<u64, Id>,
    /// Distinct keys (`MEMOIZE` uses this as its key).
    len: usize,
}

/// A free slot of `Memo::dense`.
const NO_ID: Id = Id::MAX;

impl Memo {
    #[inline(always)]
    fn get(&self, key: u64) -> Option<Id> {
        match usize::try_from(key).ok().and_then(|k| self.dense.get(k)) {
            Some(&id) if id != NO_ID => Some(id),
            _ if self.sparse.is_empty() => None,
            _ => self.sparse.get(&key).copied(),
        }
    }

    #[inline(always)]
    fn insert(&mut self, key: u64, id: Id) {
        // The usual case: the next key in order.
        let next = self.dense.len();
        if key == next as u64
            && self.sparse.is_empty()
            && next < self.len.saturating_mul(2).saturating_add(1024)
        {
            self.dense.push(id);
            self.len += 1;
            return;
        }
        self.insert_any(key, id);
    }

    #[inline(never)]
    fn insert_any(&mut self, key: u64, id: Id) {
        let limit = self.len.saturating_mul(2).saturating_add(1024);
        match usize::try_from(key) {
            Ok(k) if k < self.dense.len() || k < limit => {
                if k >= self.dense.len() {
                    self.dense.resize(k + 1, NO_ID);
                }
                if self.dense[k] == NO_ID {
                    // A key stored while the table was shorter moves here.
                    if self.sparse.is_empty() || self.sparse.remove(&key).is_none() {
                        self.len += 1;
                    }
                }
                self.dense[k] = id;
            }
            _ => {
                if self.sparse.insert(key, id).is_none() {
                    self.len += 1;
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Materialisation budget, shared by every materialisation of one run.
#[derive(Debug, Default)]
struct Budget {
    values: usize,
    bytes: u64,
}

const NONE_ID: Id = 0;
const TRUE_ID: Id = 1;
const FALSE_ID: Id = 2;
/// Longest integer we turn into decimal (CPython's default int/str limit is 4300 digits).
const MAX_INT_DIGITS: usize = 4300;
const MAX_LONG_BYTES: usize = 1800;

struct Vm<'a, 'h> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    op: Op,
    nodes: Vec<Node<'a>>,
    /// The items of every tuple.
    tuples: Vec<Id>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: Memo,
    host: &'h mut dyn Host,
    opts: &'h Options,
    findings: Vec<Finding>,
    flagged: HashSet<String>,
    noted: HashSet<String>,
    /// Scratch space of `materialise`.
    on_path: Vec<bool>,
    /// The node of each small int (0..256) once one was pushed (ints are immutable, so
    /// one node serves every push of the value).
    small_ints: [Id; 256],
    /// Node creations saved that way.
    shared: usize,
    /// Hashes dict keys (randomly keyed: pickles cannot choose colliding keys).
    key_hasher: RandomState,
    budget: Budget,
    /// Items copied and bytes cloned so far; bounded (linear in the input) so that
    /// re-using one big memoised value many times cannot take quadratic time or memory.
    work: Cell<u64>,
}

/// The opcode being executed, for messages.
#[derive(Debug, Clone, Copy)]
enum Op {
    None,
    Code(u8),
    /// Past the last byte.
    End,
}

/// A little-endian integer of 1 to 4 bytes.
fn le_u32(b: &[u8]) -> u32 {
    b.iter().rev().fold(0, |n, x| n << 8 | u32::from(*x))
}

/// Which bytes are opcodes.
static KNOWN_OPCODES: [bool; 256] = {
    let mut known = [false; 256];
    let mut i = 0;
    while i < 256 {
        known[i] = opcode_name(i as u8).is_some();
        i += 1;
    }
    known
};

const fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

impl<'a, 'h> Vm<'a, 'h> {
    fn new(data: &'a [u8], host: &'h mut dyn Host, opts: &'h Options) -> Self {
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
        }
    }

    // ----- errors, findings -------------------------------------------------

    fn err(&self, message: impl std::fmt::Display) -> FormatError {
        let op = match self.op {
            Op::None => "",
            Op::End => "(end)",
            Op::Code(c) => opcode_name(c).unwrap_or("?"),
        };
        FormatError::Pickle {
            offset: self.opts.base_offset + self.op_pos as u64,
            message: format!("{message} (in {}, opcode {op})", self.opts.location),
        }
    }

    fn flag(&mut self, global: &str) {
        if self.flagged.insert(global.to_string()) {
            self.findings.push(Finding::UnsafeGlobal {
                global: global.to_string(),
                location: self.opts.location.clone(),
            });
        }
    }

    fn note(&mut self, message: String) {
        if self.noted.insert(message.clone()) {
            self.findings.push(Finding::Note { message });
        }
    }

    // ----- input ------------------------------------------------------------

    #[inline]
    fn take(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
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
    fn cut_short(&self, n: u64) -> FormatError {
        let left = (self.data.len() - self.pos) as u64;
        self.err(format!(
            "pickle cut short: needs {n} bytes at byte {}, only {left} remain",
            self.opts.base_offset + self.pos as u64
        ))
    }

    /// The next `N` bytes.
    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
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
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }
    #[inline]
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    #[inline]
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    #[inline]
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A protocol-0 text line, without its `\n`.
    fn line(&mut self) -> Result<&'a [u8], FormatError> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(self.err("pickle cut short: text line without a newline")),
        }
    }

    fn line_str(&mut self) -> Result<&'a str, FormatError> {
        let l = self.line()?;
        std::str::from_utf8(l).map_err(|_| self.err("text line is not UTF-8"))
    }

    // ----- stack ------------------------------------------------------------

    fn add(&mut self, node: Node<'a>) -> Result<Id, FormatError> {
        self.charge(node_weight(&node));
        if !self.has_room() {
            return Err(self.arena_limit());
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Whether another node may be created.
    #[inline]
    fn has_room(&self) -> bool {
        self.created() < self.opts.max_values
    }

    /// `add` after `has_room` said yes.
    #[inline]
    fn add_in_room(&mut self, node: Node<'a>) -> Id {
        self.charge(node_weight(&node));
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Nodes created, counting each use of a shared small int as a creation (so every
    /// limit reads as if each had its own node).
    fn created(&self) -> usize {
        self.nodes.len() + self.shared
    }

    #[cold]
    fn arena_limit(&self) -> FormatError {
        FormatError::Limit(format!(
            "pickle creates more than {} values ({})",
            self.opts.max_values, self.opts.location
        ))
    }

    /// Push the int `v` (0..256): one shared node per value, charged like a new one.
    fn push_small_int(&mut self, v: u8) -> Result<(), FormatError> {
        let slot = usize::from(v);
        match self.small_ints[slot] {
            NO_ID => {
                let id = self.add(Node::Leaf(Value::Int(i64::from(v))))?;
                self.small_ints[slot] = id;
                self.stack.push(id);
            }
            id => {
                self.charge(1);
                if self.created() >= self.opts.max_values {
                    return Err(self.arena_limit());
                }
                self.shared += 1;
                self.stack.push(id);
            }
        }
        Ok(())
    }

    /// A new tuple of `items`.
    fn tuple(&mut self, items: &[Id]) -> Result<Id, FormatError> {
        let start = self.tuples.len();
        self.tuples.extend_from_slice(items);
        self.add(Node::Tuple(Span {
            start,
            len: items.len(),
        }))
    }

    /// A new tuple of the stack items from `from` on (which leave the stack).
    fn tuple_from_stack(&mut self, from: usize) -> Result<Id, FormatError> {
        let start = self.tuples.len();
        self.tuples.extend_from_slice(&self.stack[from..]);
        self.stack.truncate(from);
        self.add(Node::Tuple(Span {
            start,
            len: self.tuples.len() - start,
        }))
    }

    /// `tuple_from_stack` after `has_room` said yes; the tuple is pushed.
    fn push_tuple_in_room(&mut self, from: usize) {
        let start = self.tuples.len();
        self.tuples.extend_from_slice(&self.stack[from..]);
        self.stack.truncate(from);
        let id = self.add_in_room(Node::Tuple(Span {
            start,
            len: self.tuples.len() - start,
        }));
        self.stack.push(id);
    }

    fn push_node(&mut self, node: Node<'a>) -> Result<(), FormatError> {
        let id = self.add(node)?;
        self.stack.push(id);
        Ok(())
    }

    fn push_value(&mut self, v: Value) -> Result<(), FormatError> {
        match v {
            Value::None => self.stack.push(NONE_ID),
            Value::Bool(true) => self.stack.push(TRUE_ID),
            Value::Bool(false) => self.stack.push(FALSE_ID),
            Value::Int(i @ 0..=255) => self.push_small_int(i as u8)?,
            v => self.push_node(Node::Leaf(v))?,
        }
        Ok(())
    }

    /// A UTF-8 string from the pickle (borrowed when it is valid UTF-8).
    fn push_text(&mut self, b: &'a [u8]) -> Result<(), FormatError> {
        match std::str::from_utf8(b) {
            Ok(s) => self.push_node(Node::Text(s)),
            Err(_) => self.push_value(Value::Str(utf8(b))),
        }
    }

    fn charge(&self, n: usize) {
        self.work.set(self.work.get().saturating_add(n as u64));
    }

    fn work_cap(&self) -> u64 {
        // Real checkpoints use about one unit per input byte.
        (self.data.len() as u64)
            .saturating_mul(8)
            .saturating_add(1 << 18)
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id, FormatError> {
        if self.stack.len() <= self.fence() {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&self) -> Result<Id, FormatError> {
        if self.stack.len() <= self.fence() {
            return Err(self.err("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, FormatError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn memo_get(&self, key: u64) -> Result<Id, FormatError> {
        self.memo
            .get(key)
            .ok_or_else(|| self.err(format!("memo key {key} not found")))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), FormatError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    // ----- node helpers -----------------------------------------------------

    fn kind(&self, id: Id) -> &'static str {
        match &self.nodes[id] {
            Node::Leaf(v) => v.kind(),
            Node::Text(_) => "str",
            Node::List(_) => "list",
            Node::Tuple(_) => "tuple",
            Node::Dict(_) => "dict",
            Node::Set(_) => "set",
            Node::Global { .. } => "global",
            Node::Storage(_) => "storage",
            Node::Object { .. } => "object",
            Node::NumpyDtype { .. } => "numpy dtype",
        }
    }

    fn as_str(&self, id: Id) -> Option<&str> {
        match &self.nodes[id] {
            Node::Leaf(Value::Str(s)) => Some(s),
            Node::Text(s) => Some(s),
            _ => None,
        }
    }

    fn as_int(&self, id: Id) -> Option<i64> {
        match &self.nodes[id] {
            Node::Leaf(Value::Int(i)) => Some(*i),
            Node::Leaf(Value::Bool(b)) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn as_bool(&self, id: Id) -> Option<bool> {
        match &self.nodes[id] {
            Node::Leaf(Value::Bool(b)) => Some(*b),
            Node::Leaf(Value::Int(i)) => Some(*i != 0),
            _ => None,
        }
    }

    /// Items of a tuple or list.
    fn seq(&self, id: Id) -> Option<&[Id]> {
        match &self.nodes[id] {
            Node::Tuple(t) => Some(&self.tuples[t.range()]),
            Node::List(v) | Node::Set(v) => Some(v),
            _ => None,
        }
    }

    /// Check that `id` can be a dict key (hashable, not nested too deeply) and charge
    /// the work of hashing it.
    fn check_key(&self, id: Id, depth: usize) -> Result<(), String> {
        if depth > self.opts.max_depth {
            return Err("dict key nested too deeply".into());
        }
        match &self.nodes[id] {
            Node::Leaf(Value::Str(s)) => self.charge(s.len()),
            Node::Text(s) => self.charge(s.len()),
            Node::Leaf(Value::Bytes(b)) => self.charge(b.len()),
            Node::Tuple(t) => {
                self.charge(t.len);
                for i in &self.tuples[t.range()] {
                    self.check_key(*i, depth + 1)?;
                }
            }
            Node::Global { name, .. } => self.charge(name.len()),
            Node::List(_) | Node::Dict(_) | Node::Set(_) => {
                return Err(format!("unhashable {} used as a dict key", self.kind(id)))
            }
            _ => {}
        }
        Ok(())
    }

    /// The comparable image of a key (checked with `check_key`).
    #[inline(always)]
    fn key_ref(&self, id: Id) -> KeyRef<'_> {
        match &self.nodes[id] {
            Node::Leaf(v) => match v {
                Value::None => KeyRef::None,
                Value::Bool(b) => KeyRef::Int(i64::from(*b)),
                Value::Int(i) => KeyRef::Int(*i),
                Value::BigInt(s) => KeyRef::Big(s),
                Value::Float(f) => {
                    if f.fract() == 0.0 && f.abs() < 9.0e18 {
                        KeyRef::Int(*f as i64)
                    } else {
                        KeyRef::Float(f.to_bits())
                    }
                }
                Value::Str(s) => KeyRef::Str(s),
                Value::Bytes(b) => KeyRef::Bytes(b),
                _ => KeyRef::Ident(id),
            },
            Node::Text(s) => KeyRef::Str(s),
            Node::Tuple(t) => KeyRef::Tuple(&self.tuples[t.range()]),
            Node::Global { name, .. } => KeyRef::Global(name),
            _ => KeyRef::Ident(id),
        }
    }

    /// Whether two (checked) keys are equal as dict keys.
    fn key_eq(&self, a: Id, b: Id) -> bool {
        if a == b {
            return true;
        }
        match (self.key_ref(a), self.key_ref(b)) {
            (KeyRef::Tuple(x), KeyRef::Tuple(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| self.key_eq(*p, *q))
            }
            (x, y) => x == y,
        }
    }

    /// A keyed hash of a (checked) key, consistent with `key_eq`.
    fn key_hash(&self, id: Id) -> u64 {
        let mut h = self.key_hasher.build_hasher();
        self.hash_key_into(id, &mut h);
        h.finish()
    }

    fn hash_key_into(&self, id: Id, h: &mut impl Hasher) {
        match self.key_ref(id) {
            KeyRef::Tuple(items) => {
                h.write_u8(0xff);
                h.write_usize(items.len());
                for i in items {
                    self.hash_key_into(*i, h);
                }
            }
            k => k.hash(h),
        }
    }

    fn dict_insert(&mut self, dict: Id, pairs: &[Id]) -> Result<(), FormatError> {
        self.charge(pairs.len());
        for pair in pairs.chunks_exact(2) {
            self.check_key(pair[0], 0).map_err(|m| self.err(m))?;
        }
        if !matches!(self.nodes[dict], Node::Dict(_)) {
            return Ok(());
        }
        // Keys are never the dict itself (it is unhashable), so it can be taken out of
        // the arena while they are compared.
        let Node::Dict(mut d) =
            std::mem::replace(&mut self.nodes[dict], Node::Dict(DictNode::default()))
        else {
            return Ok(());
        };
        for pair in pairs.chunks_exact(2) {
            self.dict_set(&mut d, pair[0], pair[1]);
        }
        self.nodes[dict] = Node::Dict(d);
        Ok(())
    }

    /// `d[k] = v`: a new key goes last, an existing one keeps its place (and key).
    fn dict_set(&self, d: &mut DictNode, k: Id, v: Id) {
        let Some(index) = d.index.as_mut() else {
            if let Some(i) = d.items.iter().position(|(e, _)| self.key_eq(*e, k)) {
                d.items[i].1 = v;
                return;
            }
            if d.items.len() >= DICT_SCAN {
                let mut index = HashMap::with_capacity_and_hasher(
                    d.items.len() * 2,
                    BuildHasherDefault::default(),
                );
                for (i, (e, _)) in d.items.iter().enumerate() {
                    index.entry(self.key_hash(*e)).or_insert(i);
                }
                index.entry(self.key_hash(k)).or_insert(d.items.len());
                d.index = Some(index);
            }
            d.items.push((k, v));
            return;
        };
        let h = self.key_hash(k);
        match index.get(&h) {
            Some(&i) if self.key_eq(d.items[i].0, k) => d.items[i].1 = v,
            // Two different keys with one 64-bit keyed hash: look at every key.
            Some(_) => match d.items.iter().position(|(e, _)| self.key_eq(*e, k)) {
                Some(i) => d.items[i].1 = v,
                None => d.items.push((k, v)),
            },
            None => {
                index.insert(h, d.items.len());
                d.items.push((k, v));
            }
        }
    }

    fn set_items(&mut self, target: Id, pairs: Vec<Id>) -> Result<(), FormatError> {
        if !pairs.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        match &self.nodes[target] {
            Node::Dict(_) => self.dict_insert(target, &pairs),
            Node::Leaf(Value::Blocked { .. }) => Ok(()),
            _ => Err(self.err(format!("cannot set items on a {}", self.kind(target)))),
        }
    }

    fn append_items(&mut self, target: Id, items: Vec<Id>) -> Result<(), FormatError> {
        let kind = self.kind(target);
        match &mut self.nodes[target] {
            Node::List(v) => {
                v.extend(items);
                Ok(())
            }
            Node::Leaf(Value::Blocked { .. }) => Ok(()),
            _ => Err(self.err(format!("cannot append to a {kind}"))),
        }
    }

    fn new_dict(&mut self, pairs: Vec<Id>) -> Result<Id, FormatError> {
        if !pairs.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        let id = self.add(Node::Dict(DictNode::default()))?;
        if !pairs.is_empty() {
            self.dict_insert(id, &pairs)?;
        }
        Ok(id)
    }

    fn str_node(&mut self, s: &str) -> Result<Id, FormatError> {
        self.add(Node::Leaf(Value::Str(s.to_string())))
    }

    /// Convert a host-produced value into nodes.
    fn intern(&mut self, v: Value) -> Result<Id, FormatError> {
        Ok(match v {
            Value::None => NONE_ID,
            Value::Bool(true) => TRUE_ID,
            Value::Bool(false) => FALSE_ID,
            Value::List(items) => {
                let ids = items
                    .into_iter()
                    .map(|v| self.intern(v))
                    .collect::<Result<_, _>>()?;
                self.add(Node::List(ids))?
            }
            Value::Tuple(items) => {
                let ids: Vec<Id> = items
                    .into_iter()
                    .map(|v| self.intern(v))
                    .collect::<Result<_, _>>()?;
                self.tuple(&ids)?
            }
            Value::Dict(items) => {
                let mut ids = Vec::with_capacity(items.len() * 2);
                for (k, v) in items {
                    ids.push(self.intern(k)?);
                    ids.push(self.intern(v)?);
                }
                self.new_dict(ids)?
            }
            Value::Global(name) => self.add(Node::Global {
                name: name.into(),
                ctor: None,
            })?,
            other => self.add(Node::Leaf(other))?,
        })
    }

    // ----- globals and calls ------------------------------------------------

    fn global(&mut self, module: &str, name: &str) -> Result<(), FormatError> {
        let module = match module {
            "__builtin__" => "builtins",
            "copy_reg" => "copyreg",
            m => m,
        };
        let full = format!("{module}.{name}");
        let ctor = self.host.resolve_global(module, name);
        if ctor.is_none() {
            self.flag(&full);
        }
        self.push_node(Node::Global {
            name: full.into(),
            ctor,
        })
    }

    fn blocked(&mut self, global: String) -> Result<Id, FormatError> {
        self.add(Node::Leaf(Value::Blocked { global }))
    }

    /// `callable(*args)` for REDUCE (and INST/OBJ).
    fn call(&mut self, callable: Id, args: &[Id], kwargs: Option<Id>) -> Result<Id, FormatError> {
        self.charge(args.len());
        match &self.nodes[callable] {
            Node::Global { name, ctor } => match ctor {
                None => {
                    let name = name.to_string();
                    self.blocked(name)
                }
                Some(c) => {
                    let (c, name) = (*c, name.clone());
                    self.construct(c, &name, args, kwargs)
                }
            },
            Node::Leaf(Value::Blocked { global }) => {
                let g = global.clone();
                self.blocked(g)
            }
            _ => Err(self.err(format!(
                "calling a {}, which is not callable",
                self.kind(callable)
            ))),
        }
    }

    fn uninterpreted(&mut self, name: &str, args: &[Id]) -> Result<Id, FormatError> {
        self.note(format!(
            "{}: call of `{name}` kept uninterpreted",
            self.opts.location
        ));
        self.add(Node::Object {
            class: name.to_string(),
            args: args.to_vec(),
            state: None,
        })
    }

    fn construct(
        &mut self,
        ctor: Ctor,
        name: &str,
        args: &[Id],
        kwargs: Option<Id>,
    ) -> Result<Id, FormatError> {
        self.charge(args.len());
        let kw_items: Vec<Id> = match kwargs.map(|k| &self.nodes[k]) {
            Some(Node::Dict(d)) => d.items.iter().flat_map(|(k, v)| [*k, *v]).collect(),
            _ => Vec::new(),
        };
        match ctor {
            Ctor::OrderedDict => {
                let mut pairs = Vec::new();
                if let Some(&src) = args.first() {
                    match &self.nodes[src] {
                        Node::Dict(d) => {
                            pairs = d.items.iter().flat_map(|(k, v)| [*k, *v]).collect();
                        }
                        Node::List(_) | Node::Tuple(_) => {
                            for &it in self.seq(src).unwrap_or(&[]) {
                                match self.seq(it) {
                                    Some([k, v]) => pairs.extend([*k, *v]),
                                    _ => return self.uninterpreted(name, args),
                                }
                            }
                        }
                        _ => return self.uninterpreted(name, args),
                    }
                }
                pairs.extend(kw_items);
                self.new_dict(pairs)
            }
            Ctor::Set | Ctor::FrozenSet => {
                let items = match args.first() {
                    None => Vec::new(),
                    Some(&src) => match &self.nodes[src] {
                        Node::List(_) | Node::Tuple(_) | Node::Set(_) => {
                            self.seq(src).unwrap_or(&[]).to_vec()
                        }
                        Node::Dict(d) => d.items.iter().map(|(k, _)| *k).collect(),
                        _ => return self.uninterpreted(name, args),
                    },
                };
                self.add(Node::Set(items))
            }
            Ctor::ByteArray => {
                let bytes = match args {
                    [] => Some(Vec::new()),
                    [b] => match &self.nodes[*b] {
                        Node::Leaf(Value::Bytes(b)) => Some(b.clone()),
                        _ => None,
                    },
                    [s, enc] => self.encode(*s, Some(*enc)),
                    _ => None,
                };
                match bytes {
                    Some(b) => self.add(Node::Leaf(Value::Bytes(b))),
                    None => self.uninterpreted(name, args),
                }
            }
            Ctor::CodecsEncode => {
                let enc = args.get(1).copied();
                match args.first().and_then(|s| self.encode(*s, enc)) {
                    Some(b) => self.add(Node::Leaf(Value::Bytes(b))),
                    None => self.uninterpreted(name, args),
                }
            }
            Ctor::Complex | Ctor::Slice | Ctor::Value | Ctor::Storage(_) => {
                if matches!(ctor, Ctor::Value | Ctor::Storage(_)) {
                    self.note(format!(
                        "{}: call of `{name}` kept uninterpreted",
                        self.opts.location
                    ));
                }
                self.add(Node::Object {
                    class: name.to_string(),
                    args: args.to_vec(),
                    state: None,
                })
            }
            Ctor::Namespace => {
                let state = if kw_items.is_empty() {
                    None
                } else {
                    Some(self.new_dict(kw_items)?)
                };
                self.add(Node::Object {
                    class: "argparse.Namespace".into(),
                    args: Vec::new(),
                    state,
                })
            }
            Ctor::Reconstructor => {
                // copyreg._reconstructor(cls, base, state): object.__new__(cls) (+ base init)
                let (cls, base, state) = match args {
                    [c, b, s] => (*c, *b, *s),
                    _ => return self.uninterpreted(name, args),
                };
                let (cls_name, cls_ctor) = match &self.nodes[cls] {
                    Node::Global { name, ctor } => (name.clone(), *ctor),
                    _ => return Err(self.err("copyreg._reconstructor: class is not a global")),
                };
                let base_ok = matches!(&self.nodes[base], Node::Global { ctor: Some(_), .. });
                match cls_ctor {
                    Some(c) if base_ok && c != Ctor::Reconstructor => {
                        let init = if state == NONE_ID {
                            vec![]
                        } else {
                            vec![state]
                        };
                        self.construct(c, &cls_name, &init, None)
                    }
                    _ => {
                        self.flag(&cls_name);
                        self.blocked(cls_name.to_string())
                    }
                }
            }
            Ctor::NumpyDtype => {
                let descr = args
                    .first()
                    .and_then(|a| self.as_str(*a))
                    .map(str::to_string);
                match descr {
                    Some(descr) => {
                        let (order, descr) = split_order(&descr);
                        self.add(Node::NumpyDtype {
                            descr: descr.to_string(),
                            order,
                        })
                    }
                    None => self.uninterpreted(name, args),
                }
            }
            Ctor::NumpyScalar => self.numpy_scalar(name, args),
            Ctor::NumpyReconstruct => self.add(Node::Object {
                class: "numpy.ndarray".into(),
                args: Vec::new(),
                state: None,
            }),
            Ctor::TorchSize => match args.first() {
                None => self.tuple(&[]),
                Some(&a) => match self.seq(a) {
                    Some(items) => {
                        let items = items.to_vec();
                        self.tuple(&items)
                    }
                    None => self.uninterpreted(name, args),
                },
            },
            Ctor::TorchDevice => {
                let ty = args
                    .first()
                    .and_then(|a| self.as_str(*a))
                    .map(str::to_string);
                let index = args.get(1).and_then(|a| self.as_int(*a));
                match (ty, index) {
                    (Some(t), Some(i)) => self.add(Node::Leaf(Value::Str(format!("{t}:{i}")))),
                    (Some(t), None) => self.add(Node::Leaf(Value::Str(t))),
                    _ => self.uninterpreted(name, args),
                }
            }
            Ctor::RebuildTensor | Ctor::RebuildTensorV2 | Ctor::RebuildTensorV3 => {
                if args.len() < 4 {
                    return Err(self.err(format!(
                        "{name} needs at least 4 arguments, got {}",
                        args.len()
                    )));
                }
                let requires_grad = match ctor {
                    Ctor::RebuildTensor => false,
                    _ => args.get(4).and_then(|a| self.as_bool(*a)).unwrap_or(false),
                };
                let dtype = if ctor == Ctor::RebuildTensorV3 {
                    let d = args.get(6).and_then(|a| match &self.nodes[*a] {
                        Node::Global { name, .. } => {
                            name.strip_prefix("torch.").and_then(DType::from_torch_name)
                        }
                        _ => None,
                    });
                    if d.is_none() {
                        return Err(self.err(format!("{name}: missing or unknown dtype argument")));
                    }
                    d
                } else {
                    None
                };
                let spec = self
                    .tensor_spec(&args[..4], requires_grad, dtype)
                    .map_err(|m| self.err(format!("{name}: {m}")))?;
                let index = self
                    .host
                    .rebuild_tensor(spec)
                    .map_err(|m| self.err(format!("{name}: {m}")))?;
                self.add(Node::Leaf(Value::Tensor(index)))
            }
            Ctor::RebuildParameter | Ctor::RebuildParameterWithState => {
                let Some(&data) = args.first() else {
                    return Err(self.err(format!("{name} needs arguments")));
                };
                let rg = args.get(1).and_then(|a| self.as_bool(*a)).unwrap_or(false);
                if let Node::Leaf(Value::Tensor(i)) = &self.nodes[data] {
                    self.host.set_requires_grad(*i, rg);
                }
                Ok(data)
            }
            Ctor::RebuildFromTypeV2 => {
                // (func, new_type, args, state): only an interpreted rebuild function.
                let (func, fargs) = match args {
                    [f, _t, a, ..] => (*f, *a),
                    _ => return self.uninterpreted(name, args),
                };
                let inner = self.seq(fargs).map(<[Id]>::to_vec);
                match (&self.nodes[func], inner) {
                    (
                        Node::Global {
                            ctor: Some(c),
                            name: fname,
                        },
                        Some(inner),
                    ) => {
                        let (c, fname) = (*c, fname.clone());
                        self.construct(c, &fname, &inner, None)
                    }
                    (
                        Node::Global {
                            ctor: None,
                            name: fname,
                        },
                        _,
                    ) => {
                        let fname = fname.to_string();
                        self.blocked(fname)
                    }
                    _ => self.uninterpreted(name, args),
                }
            }
            Ctor::Uninterpreted => self.uninterpreted(name, args),
        }
    }

    /// `str.encode(encoding)` for the encodings pickles use.
    fn encode(&self, s: Id, enc: Option<Id>) -> Option<Vec<u8>> {
        let enc = match enc {
            Some(e) => self.as_str(e)?,
            None => "utf-8",
        };
        encode_str(self.as_str(s)?, enc)
    }

    fn numpy_scalar(&mut self, name: &str, args: &[Id]) -> Result<Id, FormatError> {
        let (dt, data) = match args {
            [d, b] => (*d, *b),
            _ => return self.uninterpreted(name, args),
        };
        let (descr, order) = match &self.nodes[dt] {
            Node::NumpyDtype { descr, order } => (descr.clone(), *order),
            _ => return self.uninterpreted(name, args),
        };
        let raw: Vec<u8> = match &self.nodes[data] {
            Node::Leaf(Value::Bytes(b)) => b.clone(),
            // A Python 2 str (latin-1 characters).
            Node::Leaf(Value::Str(_)) | Node::Text(_) => {
                match self.as_str(data).and_then(|t| encode_str(t, "latin1")) {
                    Some(b) => b,
                    None => return self.uninterpreted(name, args),
                }
            }
            _ => return self.uninterpreted(name, args),
        };
        let value = decode_numpy(&descr, order, &raw).unwrap_or(Value::Bytes(raw));
        self.add(Node::Leaf(Value::NumpyScalar {
            dtype: descr,
            value: Box::new(value),
        }))
    }

    fn tensor_spec(
        &self,
        args: &[Id],
        requires_grad: bool,
        dtype: Option<DType>,
    ) -> Result<TensorSpec, String> {
        let storage = match &self.nodes[args[0]] {
            Node::Storage(i) => *i,
            _ => {
                return Err(format!(
                    "first argument is a {}, expected a storage",
                    self.kind(args[0])
                ))
            }
        };
        let storage_offset = self.as_int(args[1]).ok_or_else(|| {
            format!(
                "storage offset is a {}, expected an int",
                self.kind(args[1])
            )
        })?;
        let storage_offset = u64::try_from(storage_offset)
            .map_err(|_| format!("negative storage offset {storage_offset}"))?;
        let dims = |id: Id, what: &str| -> Result<Vec<u64>, String> {
            let items = self
                .seq(id)
                .ok_or_else(|| format!("{what} is a {}, expected a tuple", self.kind(id)))?;
            if items.len() > limits::MAX_DIMS {
                return Err(format!(
                    "{what} has {} dimensions (limit {})",
                    items.len(),
                    limits::MAX_DIMS
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                let v = self
                    .as_int(*i)
                    .ok_or_else(|| format!("{what} holds a {}, expected ints", self.kind(*i)))?;
                out.push(u64::try_from(v).map_err(|_| format!("negative {what} {v}"))?);
            }
            Ok(out)
        };
        let shape = dims(args[2], "size")?;
        let strides = dims(args[3], "stride")?;
        if shape.len() != strides.len() {
            return Err(format!(
                "size {shape:?} and stride {strides:?} differ in length"
            ));
        }
        Ok(TensorSpec {
            storage,
            storage_offset,
            shape,
            strides,
            requires_grad,
            dtype,
        })
    }

    /// BUILD: apply `state` to `inst` (in place, so memo references see it).
    fn build(&mut self, inst: Id, state: Id) -> Result<(), FormatError> {
        match &self.nodes[inst] {
            Node::Object { class, .. } if class == "numpy.ndarray" => {
                let Some(items) = self.seq(state).map(<[Id]>::to_vec) else {
                    return Ok(());
                };
                // (version, shape, dtype, is_fortran, rawdata) or without version
                let fields: &[&str] = match items.len() {
                    5 => &["version", "shape", "dtype", "fortran_order", "data"],
                    4 => &["shape", "dtype", "fortran_order", "data"],
                    _ => return Ok(()),
                };
                let mut pairs = Vec::with_capacity(10);
                for (f, v) in fields.iter().zip(items) {
                    if *f != "version" {
                        pairs.push(self.str_node(f)?);
                        pairs.push(v);
                    }
                }
                let d = self.new_dict(pairs)?;
                if let Node::Object { state, .. } = &mut self.nodes[inst] {
                    *state = Some(d);
                }
                Ok(())
            }
            Node::Object {
                state: existing, ..
            } => {
                // A (dict, slots) pair is merged; a dict is merged into the existing one.
                let mut parts = vec![state];
                if let Node::Tuple(t) = &self.nodes[state] {
                    if t.len == 2 {
                        parts = self.tuples[t.range()].to_vec();
                    }
                }
                let parts: Vec<Id> = parts.into_iter().filter(|p| *p != NONE_ID).collect();
                match *existing {
                    Some(ex) if matches!(self.nodes[ex], Node::Dict(_)) => {
                        for p in parts {
                            if let Node::Dict(d) = &self.nodes[p] {
                                let pairs: Vec<Id> =
                                    d.items.iter().flat_map(|(k, v)| [*k, *v]).collect();
                                self.dict_insert(ex, &pairs)?;
                            }
                        }
                    }
                    _ => {
                        let new_state = match parts.as_slice() {
                            [] => None,
                            [one] => Some(*one),
                            _ => {
                                let mut pairs = Vec::new();
                                for p in &parts {
                                    if let Node::Dict(d) = &self.nodes[*p] {
                                        pairs.extend(d.items.iter().flat_map(|(k, v)| [*k, *v]));
                                    }
                                }
                                Some(self.new_dict(pairs)?)
                            }
                        };
                        if let Node::Object { state, .. } = &mut self.nodes[inst] {
                            *state = new_state;
                        }
                    }
                }
                Ok(())
            }
            Node::NumpyDtype { .. } => {
                let order = self
                    .seq(state)
                    .and_then(|t| t.get(1).copied())
                    .and_then(|o| self.as_str(o))
                    .and_then(|s| s.chars().next());
                if let (Some(o), Node::NumpyDtype { order, .. }) = (order, &mut self.nodes[inst]) {
                    *order = o;
                }
                Ok(())
            }
            // OrderedDict attributes (`_metadata`), tensor state, blocked objects: nothing to keep.
            Node::Dict(_) | Node::Leaf(Value::Tensor(_) | Value::Blocked { .. }) => Ok(()),
            Node::Global { name, .. } => {
                // Setting attributes on a class or module: a known exploitation step.
                let name = name.clone();
                self.flag(&name);
                Ok(())
            }
            _ => Err(self.err(format!("BUILD on a {}", self.kind(inst)))),
        }
    }

    // ----- main loop --------------------------------------------------------

    fn run(&mut self) -> Result<Value, FormatError> {
        let work_cap = self.work_cap();
        loop {
            // (Checked before each opcode: the same as after each one, as nothing
            // charges work before the first opcode or after STOP.)
            if self.work.get() > work_cap {
                return Err(FormatError::Limit(format!(
                    "pickle does more than {} units of copying work ({}; a memo amplification?)",
                    self.work_cap(),
                    self.opts.location
                )));
            }
            self.op_pos = self.pos;
            let Some(&code) = self.data.get(self.pos) else {
                self.op = Op::End;
                return Err(self.err("pickle cut short: no STOP opcode"));
            };
            self.pos += 1;
            self.op = Op::Code(code);
            if self.fast_step(code) {
                continue;
            }
            // The commonest heavy opcodes, without going through `step`.
            match code {
                b'R' => {
                    self.reduce()?;
                    continue;
                }
                b'Q' => {
                    self.binpersid()?;
                    continue;
                }
                _ => {}
            }
            if !KNOWN_OPCODES[usize::from(code)] {
                return Err(FormatError::Pickle {
                    offset: self.opts.base_offset + self.op_pos as u64,
                    message: format!(
                        "unknown opcode 0x{code:02x} at byte {} (in {})",
                        self.opts.base_offset + self.op_pos as u64,
                        self.opts.location
                    ),
                });
            }
            if self.step(code)? {
                let top = self.pop()?;
                return self.materialise_root(top);
            }
        }
    }

    /// The commonest opcodes that cannot fail here and charge no work (memo access,
    /// MARK, constants), done without `step`. `false`: not done (`step` does it, and
    /// reports any error).
    #[inline]
    fn fast_step(&mut self, code: u8) -> bool {
        let arg = |n: usize| self.data.get(self.pos..self.pos + n);
        match code {
            b'h' | b'j' => {
                let n = if code == b'h' { 1 } else { 4 };
                let Some(key) = arg(n).map(le_u32) else {
                    return false;
                };
                let Some(id) = self.memo.get(u64::from(key)) else {
                    return false;
                };
                self.pos += n;
                self.stack.push(id);
            }
            b'q' | b'r' => {
                let n = if code == b'q' { 1 } else { 4 };
                let Some(key) = arg(n).map(le_u32) else {
                    return false;
                };
                if self.stack.len() <= self.fence() {
                    return false;
                }
                let Some(&top) = self.stack.last() else {
                    return false;
                };
                self.pos += n;
                self.memo.insert(u64::from(key), top);
            }
            b'(' => self.marks.push(self.stack.len()),
            b'N' => self.stack.push(NONE_ID),
            0x88 => self.stack.push(TRUE_ID),
            0x89 => self.stack.push(FALSE_ID),
            // BININT1 of an int already seen: its shared node.
            b'K' => {
                let Some(&v) = self.data.get(self.pos) else {
                    return false;
                };
                let id = self.small_ints[usize::from(v)];
                if id == NO_ID || !self.has_room() {
                    return false;
                }
                self.pos += 1;
                self.charge(1);
                self.shared += 1;
                self.stack.push(id);
            }
            b')' => {
                if !self.has_room() {
                    return false;
                }
                let id = self.add_in_room(Node::Tuple(Span { start: 0, len: 0 }));
                self.stack.push(id);
            }
            // BININT2 past the shared small ints
            b'M' => {
                let Some(v) = arg(2).map(le_u32) else {
                    return false;
                };
                if v < 256 || !self.has_room() {
                    return false;
                }
                self.pos += 2;
                let id = self.add_in_room(Node::Leaf(Value::Int(i64::from(v))));
                self.stack.push(id);
            }
            // TUPLE1..3, TUPLE
            0x85..=0x87 => {
                let n = usize::from(code - 0x84);
                if self.stack.len() < self.fence() + n || !self.has_room() {
                    return false;
                }
                self.push_tuple_in_room(self.stack.len() - n);
            }
            b't' => {
                let Some(&m) = self.marks.last() else {
                    return false;
                };
                if !self.has_room() {
                    return false;
                }
                self.marks.pop();
                self.push_tuple_in_room(m.min(self.stack.len()));
            }
            // BINUNICODE, SHORT_BINUNICODE of valid UTF-8
            b'X' | 0x8c => {
                let w = if code == b'X' { 4 } else { 1 };
                let Some(n) = arg(w).map(|b| le_u32(b) as usize) else {
                    return false;
                };
                let start = self.pos + w;
                let Some(text) = self
                    .data
                    .get(start..start.saturating_add(n))
                    .and_then(|b| std::str::from_utf8(b).ok())
                else {
                    return false;
                };
                if !self.has_room() {
                    return false;
                }
                self.pos = start + n;
                let id = self.add_in_room(Node::Text(text));
                self.stack.push(id);
            }
            _ => return false,
        }
        true
    }

    /// Execute one opcode; `true` on STOP.
    fn step(&mut self, code: u8) -> Result<bool, FormatError> {
        match code {
            0x80 => {
                let v = self.u8()?;
                if v > 5 {
                    return Err(self.err(format!("unsupported pickle protocol {v}")));
                }
            }
            0x95 => {
                let n = self.u64()?;
                let left = (self.data.len() - self.pos) as u64;
                if n > left {
                    return Err(self.err(format!(
                        "pickle cut short: frame of {n} bytes, only {left} remain"
                    )));
                }
            }
            b'.' => return Ok(true),
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                if self.stack.len() > self.fence() {
                    self.stack.pop();
                } else if self.marks.pop().is_none() {
                    return Err(self.err("stack underflow"));
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let t = self.top()?;
                self.stack.push(t);
            }
            // ----- numbers
            b'N' => self.stack.push(NONE_ID),
            0x88 => self.stack.push(TRUE_ID),
            0x89 => self.stack.push(FALSE_ID),
            b'I' => {
                let l = self.line()?;
                let v = match l {
                    b"00" => Value::Bool(false),
                    b"01" => Value::Bool(true),
                    _ => self.parse_int_text(l)?,
                };
                self.push_value(v)?;
            }
            b'L' => {
                let mut l = self.line()?;
                if let Some(rest) = l.strip_suffix(b"L") {
                    l = rest;
                }
                let v = self.parse_int_text(l)?;
                self.push_value(v)?;
            }
            b'J' => {
                let v = self.u32()? as i32;
                self.push_value(Value::Int(i64::from(v)))?;
            }
            b'K' => {
                let v = self.u8()?;
                self.push_value(Value::Int(i64::from(v)))?;
            }
            b'M' => {
                let v = self.u16()?;
                self.push_value(Value::Int(i64::from(v)))?;
            }
            0x8a => {
                let n = u64::from(self.u8()?);
                let b = self.take(n)?;
                let v = self.decode_long(b)?;
                self.push_value(v)?;
            }
            0x8b => {
                let n = self.u32()? as i32;
                if n < 0 {
                    return Err(self.err("negative LONG4 length"));
                }
                let b = self.take(n as u64)?;
                let v = self.decode_long(b)?;
                self.push_value(v)?;
            }
            b'F' => {
                let l = self.line()?;
                let s = std::str::from_utf8(l).unwrap_or("").trim();
                let f: f64 = s
                    .parse()
                    .map_err(|_| self.err(format!("bad float {:?}", String::from_utf8_lossy(l))))?;
                self.push_value(Value::Float(f))?;
            }
            b'G' => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.push_value(Value::Float(f64::from_be_bytes(a)))?;
            }
            // ----- strings and bytes
            b'S' => {
                let l = self.line()?;
                let inner = match l {
                    [q, inner @ .., q2] if (*q == b'\'' || *q == b'"') && q == q2 => inner,
                    _ => return Err(self.err("STRING argument is not quoted")),
                };
                let b = escape_decode(inner);
                self.push_value(py2_str(b))?;
            }
            b'T' => {
                let n = self.u32()? as i32;
                if n < 0 {
                    return Err(self.err("negative BINSTRING length"));
                }
                let b = self.take(n as u64)?.to_vec();
                self.push_value(py2_str(b))?;
            }
            b'U' => {
                let n = u64::from(self.u8()?);
                let b = self.take(n)?.to_vec();
                self.push_value(py2_str(b))?;
            }
            b'V' => {
                let l = self.line()?;
                self.push_value(Value::Str(raw_unicode_escape_decode(l)))?;
            }
            b'X' => {
                let n = u64::from(self.u32()?);
                let b = self.take(n)?;
                self.push_text(b)?;
            }
            0x8c => {
                let n = u64::from(self.u8()?);
                let b = self.take(n)?;
                self.push_text(b)?;
            }
            0x8d => {
                let n = self.u64()?;
                let b = self.take(n)?;
                self.push_text(b)?;
            }
            b'B' => {
                let n = u64::from(self.u32()?);
                let b = self.take(n)?.to_vec();
                self.push_value(Value::Bytes(b))?;
            }
            b'C' => {
                let n = u64::from(self.u8()?);
                let b = self.take(n)?.to_vec();
                self.push_value(Value::Bytes(b))?;
            }
            0x8e | 0x96 => {
                let n = self.u64()?;
                let b = self.take(n)?.to_vec();
                self.push_value(Value::Bytes(b))?;
            }
            0x97 | 0x98 => {
                return Err(self.err("out-of-band buffers (protocol 5) are not supported"));
            }
            // ----- containers
            b']' => self.push_node(Node::List(Vec::new()))?,
            b')' => self.push_node(Node::Tuple(Span { start: 0, len: 0 }))?,
            b'}' => self.push_node(Node::Dict(DictNode::default()))?,
            0x8f => self.push_node(Node::Set(Vec::new()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push_node(Node::List(items))?;
            }
            b't' => {
                let m = self
                    .marks
                    .pop()
                    .ok_or_else(|| self.err("no MARK on the stack"))?;
                let id = self.tuple_from_stack(m.min(self.stack.len()))?;
                self.stack.push(id);
            }
            0x85..=0x87 => {
                let n = usize::from(code - 0x84);
                if self.stack.len() < self.fence() + n {
                    return Err(self.err("stack underflow"));
                }
                let id = self.tuple_from_stack(self.stack.len() - n)?;
                self.stack.push(id);
            }
            b'd' => {
                let items = self.pop_mark()?;
                let id = self.new_dict(items)?;
                self.stack.push(id);
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push_node(Node::Set(items))?;
            }
            b'a' => {
                let v = self.pop()?;
                let list = self.top()?;
                self.append_items(list, vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                let list = self.top()?;
                self.append_items(list, items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let d = self.top()?;
                self.set_items(d, vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let d = self.top()?;
                self.set_items(d, items)?;
            }
            0x90 => {
                let items = self.pop_mark()?;
                let s = self.top()?;
                let kind = self.kind(s);
                match &mut self.nodes[s] {
                    Node::Set(v) => v.extend(items),
                    Node::Leaf(Value::Blocked { .. }) => {}
                    _ => return Err(self.err(format!("ADDITEMS on a {kind}"))),
                }
            }
            // ----- memo
            b'g' => {
                let l = self.line()?;
                let k = self.parse_memo_key(l)?;
                let id = self.memo_get(k)?;
                self.stack.push(id);
            }
            b'h' => {
                let k = u64::from(self.u8()?);
                let id = self.memo_get(k)?;
                self.stack.push(id);
            }
            b'j' => {
                let k = u64::from(self.u32()?);
                let id = self.memo_get(k)?;
                self.stack.push(id);
            }
            b'p' => {
                let l = self.line()?;
                let k = self.parse_memo_key(l)?;
                self.memo_put(k)?;
            }
            b'q' => {
                let k = u64::from(self.u8()?);
                self.memo_put(k)?;
            }
            b'r' => {
                let k = u64::from(self.u32()?);
                self.memo_put(k)?;
            }
            0x94 => {
                let k = self.memo.len() as u64;
                self.memo_put(k)?;
            }
            // ----- globals, objects
            b'c' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                self.global(module, name)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.as_str(module), self.as_str(name)) else {
                    return Err(self.err("STACK_GLOBAL needs two strings"));
                };
                let (m, n) = (m.to_string(), n.to_string());
                self.global(&m, &n)?;
            }
            0x82..=0x84 => {
                let code = match code {
                    0x82 => u32::from(self.u8()?),
                    0x83 => u32::from(self.u16()?),
                    _ => self.u32()?,
                };
                let g = format!("copyreg extension code {code}");
                self.flag(&g);
                let id = self.blocked(g)?;
                self.stack.push(id);
            }
            b'R' => self.reduce()?,
            0x81 => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = Args::new(self.seq(args).unwrap_or_default());
                let id = self.call(cls, &args, None)?;
                self.stack.push(id);
            }
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = Args::new(self.seq(args).unwrap_or_default());
                let id = self.call(cls, &args, Some(kwargs))?;
                self.stack.push(id);
            }
            b'i' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let args = self.pop_mark()?;
                self.global(module, name)?;
                let cls = self.pop()?;
                let id = self.call(cls, &args, None)?;
                self.stack.push(id);
            }
            b'o' => {
                let items = self.pop_mark()?;
                let Some((&cls, args)) = items.split_first() else {
                    return Err(self.err("stack underflow"));
                };
                let id = self.call(cls, args, None)?;
                self.stack.push(id);
            }
            b'b' => {
                let state = self.pop()?;
                let inst = self.top()?;
                self.build(inst, state)?;
            }
            // ----- persistent ids
            b'P' => {
                let l = self.line()?;
                let pid = Value::Str(utf8(l));
                self.persistent(pid)?;
            }
            b'Q' => self.binpersid()?,
            _ => return Err(self.err(format!("unknown opcode 0x{code:02x}"))),
        }
        Ok(false)
    }

    /// REDUCE.
    fn reduce(&mut self) -> Result<(), FormatError> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let args = match self.seq(args) {
            Some(a) if matches!(self.nodes[args], Node::Tuple(_)) => Args::new(a),
            _ => match &self.nodes[callable] {
                Node::Global { ctor: None, .. } | Node::Leaf(Value::Blocked { .. }) => {
                    Args::new(&[])
                }
                _ => {
                    return Err(self.err(format!(
                        "arguments are a {}, expected a tuple",
                        self.kind(args)
                    )))
                }
            },
        };
        let id = self.call(callable, &args, None)?;
        self.stack.push(id);
        Ok(())
    }

    /// BINPERSID.
    fn binpersid(&mut self) -> Result<(), FormatError> {
        let pid = self.pop()?;
        if !self.persistent_items(pid)? {
            let pid = self.materialise(pid)?;
            self.persistent(pid)?;
        }
        Ok(())
    }

    fn persistent(&mut self, pid: Value) -> Result<(), FormatError> {
        let loaded = self.host.persistent_load(pid);
        self.loaded(loaded)
    }

    /// A persistent id that is a short tuple of strings, ints and globals, offered to
    /// the host borrowed ([`Host::persistent_load_items`]). The materialisation budget
    /// is charged exactly as materialising it would. `false`: not such a tuple, or the
    /// host wants the value (nothing was charged).
    fn persistent_items(&mut self, pid: Id) -> Result<bool, FormatError> {
        const MAX_ITEMS: usize = 8;
        let Node::Tuple(t) = &self.nodes[pid] else {
            return Ok(false);
        };
        let ids = &self.tuples[t.range()];
        if ids.len() > MAX_ITEMS || self.opts.max_depth < 1 {
            return Ok(false);
        }
        let mut items = [PidItem::Int(0); MAX_ITEMS];
        for (slot, id) in items.iter_mut().zip(ids.iter()) {
            *slot = match &self.nodes[*id] {
                Node::Text(s) => PidItem::Str(s),
                Node::Leaf(Value::Str(s)) => PidItem::Str(s),
                Node::Leaf(Value::Bytes(b)) => PidItem::Bytes(b),
                Node::Leaf(Value::Int(i)) => PidItem::Int(*i),
                Node::Global { name, .. } => PidItem::Global(name),
                _ => return Ok(false),
            };
        }
        let items = &items[..ids.len()];
        // The budget as `materialise` charges it: the tuple, then each item.
        let (value_cap, byte_cap) = (self.value_cap(), self.byte_cap());
        let (mut values, mut bytes) = (self.budget.values + 1, self.budget.bytes);
        if values > value_cap {
            return Err(self.values_limit());
        }
        for item in items {
            values += 1;
            if values > value_cap {
                return Err(self.values_limit());
            }
            bytes += match item {
                PidItem::Str(s) => s.len() as u64,
                PidItem::Bytes(b) => b.len() as u64,
                _ => 0,
            };
            if bytes > byte_cap {
                return Err(self.bytes_limit());
            }
        }
        let Some(loaded) = self.host.persistent_load_items(items) else {
            return Ok(false);
        };
        self.budget.values = values;
        self.budget.bytes = bytes;
        self.loaded(loaded)?;
        Ok(true)
    }

    fn loaded(&mut self, loaded: Result<Loaded, String>) -> Result<(), FormatError> {
        let loaded = loaded.map_err(|m| self.err(format!("persistent id: {m}")))?;
        let id = match loaded {
            Loaded::Storage(i) => self.add(Node::Storage(i))?,
            Loaded::Value(v) => self.intern(v)?,
        };
        self.stack.push(id);
        Ok(())
    }

    fn parse_memo_key(&self, l: &[u8]) -> Result<u64, FormatError> {
        std::str::from_utf8(l)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| self.err(format!("bad memo key {:?}", String::from_utf8_lossy(l))))
    }

    fn parse_int_text(&self, l: &[u8]) -> Result<Value, FormatError> {
        let s = std::str::from_utf8(l).unwrap_or("").trim();
        if let Ok(i) = s.parse::<i64>() {
            return Ok(Value::Int(i));
        }
        let (neg, digits) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(format!("bad integer {:?}", String::from_utf8_lossy(l))));
        }
        let digits = digits.trim_start_matches('0');
        if digits.len() > MAX_INT_DIGITS {
            return Err(self.err(format!("integer of {} digits is too large", digits.len())));
        }
        if digits.is_empty() {
            return Ok(Value::Int(0));
        }
        Ok(Value::BigInt(format!(
            "{}{digits}",
            if neg { "-" } else { "" }
        )))
    }

    fn decode_long(&self, b: &[u8]) -> Result<Value, FormatError> {
        if b.len() > MAX_LONG_BYTES {
            return Err(self.err(format!("integer of {} bytes is too large", b.len())));
        }
        Ok(decode_long(b))
    }

    // ----- materialisation --------------------------------------------------

    fn materialise_root(&mut self, id: Id) -> Result<Value, FormatError> {
        self.materialise(id)
    }

    fn materialise(&mut self, id: Id) -> Result<Value, FormatError> {
        // Containers on the current path, by node id: reused between materialisations
        // (a finished materialisation leaves it all false).
        let mut on_path = std::mem::take(&mut self.on_path);
        if on_path.len() < self.nodes.len() {
            on_path.resize(self.nodes.len(), false);
        }
        let mut budget = std::mem::take(&mut self.budget);
        let r = self.mat(id, &mut budget, &mut on_path);
        self.budget = budget;
        if r.is_ok() {
            self.on_path = on_path;
        }
        r
    }

    /// Values the whole run may materialise: sharing may expand the arena, but only
    /// by a bounded factor (a memo bomb fails here instead of exhausting memory).
    fn value_cap(&self) -> usize {
        self.opts
            .max_values
            .min(self.created().saturating_mul(16).saturating_add(1 << 18))
    }

    #[cold]
    fn values_limit(&self) -> FormatError {
        FormatError::Limit(format!(
            "pickle expands to more than {} values through shared references ({})",
            self.value_cap(),
            self.opts.location
        ))
    }

    #[cold]
    fn bytes_limit(&self) -> FormatError {
        FormatError::Limit(format!(
            "pickle expands to more than {} bytes of strings through shared references ({})",
            self.byte_cap(),
            self.opts.location
        ))
    }

    fn byte_cap(&self) -> u64 {
        (self.data.len() as u64)
            .saturating_mul(16)
            .saturating_add(64 << 20)
    }

    /// Materialise node `root` without recursion (the nesting depth is bounded by
    /// `max_depth`, not by the thread's stack).
    fn mat(&self, root: Id, b: &mut Budget, on_path: &mut [bool]) -> Result<Value, FormatError> {
        let mut frames: Vec<Frame> = Vec::new();
        let mut visit = root;
        loop {
            // Start `visit`: a finished value, or a new open frame.
            let mut done = match self.start(visit, frames.len(), b, on_path)? {
                Started::Done(v) => Some(v),
                Started::Open(f) => {
                    frames.push(f);
                    None
                }
            };
            // Hand finished values up until some frame has another child to visit.
            loop {
                let Some(top) = frames.last_mut() else {
                    // Only reachable with a finished root.
                    return done.ok_or_else(|| self.err("internal: empty materialisation"));
                };
                if let Some(v) = done.take() {
                    top.push(v);
                }
                match self.child(top.id, top.done) {
                    Some(c) => {
                        visit = c;
                        break;
                    }
                    None => {
                        let f = frames.pop().ok_or_else(|| self.err("internal"))?;
                        on_path[f.id] = false;
                        done = Some(self.finish(f));
                        if frames.is_empty() {
                            return done.ok_or_else(|| self.err("internal"));
                        }
                    }
                }
            }
        }
    }

    /// The `n`th child of container `id` (dicts: key, value, key, …; objects: args, state).
    fn child(&self, id: Id, n: usize) -> Option<Id> {
        match &self.nodes[id] {
            Node::List(items) | Node::Set(items) => items.get(n).copied(),
            Node::Tuple(t) => self.tuples[t.range()].get(n).copied(),
            Node::Dict(d) => d
                .items
                .get(n / 2)
                .map(|(k, v)| if n.is_multiple_of(2) { *k } else { *v }),
            Node::Object { args, state, .. } => match n.cmp(&args.len()) {
                std::cmp::Ordering::Less => Some(args[n]),
                std::cmp::Ordering::Equal => *state,
                std::cmp::Ordering::Greater => None,
            },
            _ => None,
        }
    }

    fn finish(&self, f: Frame) -> Value {
        let mut out = f.out;
        match &self.nodes[f.id] {
            Node::Tuple(_) => Value::Tuple(out),
            Node::Dict(_) => Value::Dict(f.pairs),
            Node::Object { class, args, .. } => {
                let state = if out.len() > args.len() {
                    out.pop().map(Box::new)
                } else {
                    None
                };
                Value::Object {
                    class: class.clone(),
                    args: out,
                    state,
                }
            }
            _ => Value::List(out),
        }
    }

    fn start(
        &self,
        id: Id,
        depth: usize,
        b: &mut Budget,
        on_path: &mut [bool],
    ) -> Result<Started, FormatError> {
        if depth > self.opts.max_depth {
            return Err(FormatError::Limit(format!(
                "values nested more than {} deep ({})",
                self.opts.max_depth, self.opts.location
            )));
        }
        b.values += 1;
        if b.values > self.value_cap() {
            return Err(self.values_limit());
        }
        let v = match &self.nodes[id] {
            Node::Leaf(v) => {
                let bytes = match v {
                    Value::Str(s) | Value::BigInt(s) => s.len(),
                    Value::Bytes(x) => x.len(),
                    Value::NumpyScalar { value, .. } => match &**value {
                        Value::Bytes(x) => x.len(),
                        _ => 0,
                    },
                    _ => 0,
                };
                b.bytes += bytes as u64;
                if b.bytes > self.byte_cap() {
                    return Err(self.bytes_limit());
                }
                v.clone()
            }
            Node::Text(s) => {
                b.bytes += s.len() as u64;
                if b.bytes > self.byte_cap() {
                    return Err(self.bytes_limit());
                }
                Value::Str(s.to_string())
            }
            Node::Global { name, .. } => Value::Global(name.to_string()),
            Node::Storage(i) => Value::Object {
                class: "torch.storage".into(),
                args: vec![Value::Int(*i as i64)],
                state: None,
            },
            Node::NumpyDtype { descr, order } => Value::Object {
                class: "numpy.dtype".into(),
                args: vec![Value::Str(descr.clone())],
                state: Some(Box::new(Value::Str(order.to_string()))),
            },
            Node::List(items) | Node::Set(items) => return self.open(id, items.len(), on_path),
            Node::Tuple(t) => return self.open(id, t.len, on_path),
            Node::Dict(d) => return self.open(id, d.items.len() * 2, on_path),
            Node::Object { args, state, .. } => {
                return self.open(id, args.len() + usize::from(state.is_some()), on_path)
            }
        };
        Ok(Started::Done(v))
    }

    fn open(&self, id: Id, children: usize, on_path: &mut [bool]) -> Result<Started, FormatError> {
        if std::mem::replace(&mut on_path[id], true) {
            return Err(
                self.err("the pickle contains a reference cycle (a container inside itself)")
            );
        }
        let dict = matches!(self.nodes[id], Node::Dict(_));
        Ok(Started::Open(Frame {
            id,
            done: 0,
            dict,
            out: if dict {
                Vec::new()
            } else {
                Vec::with_capacity(children)
            },
            pairs: if dict {
                Vec::with_capacity(children / 2)
            } else {
                Vec::new()
            },
            key: None,
        }))
    }
}

/// A container being materialised: its node and the children done so far.
struct Frame {
    id: Id,
    /// Children done.
    done: usize,
    dict: bool,
    /// Their values (dicts: in `pairs`, the key waiting for its value in `key`).
    out: Vec<Value>,
    pairs: Vec<(Value, Value)>,
    key: Option<Value>,
}

impl Frame {
    fn push(&mut self, v: Value) {
        if self.dict {
            match self.key.take() {
                None => self.key = Some(v),
                Some(k) => self.pairs.push((k, v)),
            }
        } else {
            self.out.push(v);
        }
        self.done += 1;
    }
}

enum Started {
    Done(Value),
    Open(Frame),
}

/// What creating `node` costs in the work budget: its items or bytes.
fn node_weight(node: &Node<'_>) -> usize {
    1 + match node {
        Node::Text(s) => s.len(),
        Node::Leaf(v) => match v {
            Value::Str(s) | Value::BigInt(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Blocked { global } => global.len(),
            Value::NumpyScalar { dtype, value } => {
                dtype.len()
                    + match &**value {
                        Value::Bytes(b) => b.len(),
                        _ => 0,
                    }
            }
            _ => 0,
        },
        Node::List(v) | Node::Set(v) => v.len(),
        Node::Tuple(t) => t.len,
        Node::Dict(_) | Node::Storage(_) => 0,
        Node::Global { name, .. } => name.len(),
        Node::Object { class, args, .. } => class.len() + args.len(),
        Node::NumpyDtype { descr, .. } => descr.len(),
    }
}

/// `str.encode(encoding)` for the encodings pickles use.
fn encode_str(s: &str, enc: &str) -> Option<Vec<u8>> {
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
fn split_order(descr: &str) -> (char, &str) {
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

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Little-endian two's complement → Int or BigInt (decimal).
fn decode_long(b: &[u8]) -> Value {
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

fn utf8(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// A Python 2 `str`: text when it is UTF-8 (as `torch.load` decodes it), else bytes.
fn py2_str(b: Vec<u8>) -> Value {
    match String::from_utf8(b) {
        Ok(s) => Value::Str(s),
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

/// Python's `codecs.escape_decode` (the body of a protocol-0 `STRING`).
fn escape_decode(s: &[u8]) -> Vec<u8> {
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
fn raw_unicode_escape_decode(s: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! case {
        ($name:expr) => {
            include_bytes!(concat!("../../tests/fixtures/pickles/", $name))
        };
    }

    /// Every generated plain case, per protocol 0..=5.
    const INTS: [&[u8]; 6] = [
        case!("ints_p0.pkl"),
        case!("ints_p1.pkl"),
        case!("ints_p2.pkl"),
        case!("ints_p3.pkl"),
        case!("ints_p4.pkl"),
        case!("ints_p5.pkl"),
    ];
    const FLOATS: [&[u8]; 6] = [
        case!("floats_p0.pkl"),
        case!("floats_p1.pkl"),
        case!("floats_p2.pkl"),
        case!("floats_p3.pkl"),
        case!("floats_p4.pkl"),
        case!("floats_p5.pkl"),
    ];
    const STRS: [&[u8]; 6] = [
        case!("strs_p0.pkl"),
        case!("strs_p1.pkl"),
        case!("strs_p2.pkl"),
        case!("strs_p3.pkl"),
        case!("strs_p4.pkl"),
        case!("strs_p5.pkl"),
    ];
    const BYTES: [&[u8]; 6] = [
        case!("bytes_p0.pkl"),
        case!("bytes_p1.pkl"),
        case!("bytes_p2.pkl"),
        case!("bytes_p3.pkl"),
        case!("bytes_p4.pkl"),
        case!("bytes_p5.pkl"),
    ];
    const CONTAINERS: [&[u8]; 6] = [
        case!("containers_p0.pkl"),
        case!("containers_p1.pkl"),
        case!("containers_p2.pkl"),
        case!("containers_p3.pkl"),
        case!("containers_p4.pkl"),
        case!("containers_p5.pkl"),
    ];
    const SHARED: [&[u8]; 6] = [
        case!("shared_p0.pkl"),
        case!("shared_p1.pkl"),
        case!("shared_p2.pkl"),
        case!("shared_p3.pkl"),
        case!("shared_p4.pkl"),
        case!("shared_p5.pkl"),
    ];
    const ORDERED: [&[u8]; 6] = [
        case!("ordereddict_p0.pkl"),
        case!("ordereddict_p1.pkl"),
        case!("ordereddict_p2.pkl"),
        case!("ordereddict_p3.pkl"),
        case!("ordereddict_p4.pkl"),
        case!("ordereddict_p5.pkl"),
    ];
    const NAMESPACE: [&[u8]; 6] = [
        case!("namespace_p0.pkl"),
        case!("namespace_p1.pkl"),
        case!("namespace_p2.pkl"),
        case!("namespace_p3.pkl"),
        case!("namespace_p4.pkl"),
        case!("namespace_p5.pkl"),
    ];
    const BUILTINS: [&[u8]; 6] = [
        case!("builtins_p0.pkl"),
        case!("builtins_p1.pkl"),
        case!("builtins_p2.pkl"),
        case!("builtins_p3.pkl"),
        case!("builtins_p4.pkl"),
        case!("builtins_p5.pkl"),
    ];
    const NUMPY: [&[u8]; 6] = [
        case!("numpy_p0.pkl"),
        case!("numpy_p1.pkl"),
        case!("numpy_p2.pkl"),
        case!("numpy_p3.pkl"),
        case!("numpy_p4.pkl"),
        case!("numpy_p5.pkl"),
    ];
    const BIG_P4: &[u8] = case!("big_p4.pkl");
    const BYTEARRAY_P5: &[u8] = case!("bytearray_p5.pkl");

    fn all_cases() -> Vec<&'static [u8]> {
        let mut v: Vec<&[u8]> = Vec::new();
        for set in [
            INTS, FLOATS, STRS, BYTES, CONTAINERS, SHARED, ORDERED, NAMESPACE, BUILTINS, NUMPY,
        ] {
            v.extend(set);
        }
        v.push(BIG_P4);
        v.push(BYTEARRAY_P5);
        v
    }

    /// Parse a pickle that must be clean (no findings).
    fn clean(b: &[u8]) -> Value {
        let out = parse_plain(b).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert_eq!(out.end, b.len());
        out.value
    }

    fn err(b: &[u8]) -> String {
        parse_plain(b).unwrap_err().to_string()
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }
    fn i(x: i64) -> Value {
        Value::Int(x)
    }
    fn big(x: &str) -> Value {
        Value::BigInt(x.into())
    }
    fn unsafe_globals(out: &Outcome) -> Vec<String> {
        out.findings
            .iter()
            .filter_map(|f| match f {
                Finding::UnsafeGlobal { global, .. } => Some(global.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ints_and_longs_in_every_protocol() {
        let want = Value::List(vec![
            i(0),
            i(1),
            i(-1),
            i(255),
            i(256),
            i(65535),
            i(65536),
            i(-(1 << 31)),
            i(1 << 31),
            i(i64::MAX),
            i(i64::MIN),
            big("9223372036854775808"),
            big("-9223372036854775809"),
            big("1000000000000000000000000000000"),
            big("-1000000000000000000000000000000"),
            Value::Bool(true),
            Value::Bool(false),
        ]);
        for (p, b) in INTS.iter().enumerate() {
            assert_eq!(clean(b), want, "protocol {p}");
        }
    }

    #[test]
    fn long_decoding() {
        assert_eq!(decode_long(&[]), i(0));
        assert_eq!(decode_long(&[0xff]), i(-1));
        assert_eq!(decode_long(&[0xff; 9]), i(-1));
        assert_eq!(decode_long(&[0x00, 0x80]), i(-32768));
        let mut b = vec![0u8; 8];
        b.push(1);
        assert_eq!(decode_long(&b), big("18446744073709551616"));
        let mut b = vec![0u8; 8];
        b.push(0xff);
        assert_eq!(decode_long(&b), big("-18446744073709551616"));
        // text forms
        assert_eq!(
            clean(b"L12345678901234567890L\n."),
            big("12345678901234567890")
        );
        assert_eq!(clean(b"I-5\n."), i(-5));
        assert_eq!(clean(b"L-0000L\n."), i(0));
        assert_eq!(clean(b"\x80\x02\x8b\x02\x00\x00\x00\xff\x7f."), i(32767));
        assert!(err(b"I12x\n.").contains("bad integer"));
        // absurd LONG4 lengths are checked against the data
        assert!(err(b"\x80\x02\x8b\xff\xff\xff\x7f\x00.").contains("cut short"));
        let mut huge = b"\x80\x02\x8b\x10\x27\x00\x00".to_vec();
        huge.extend(vec![1u8; 10_000]);
        huge.push(b'.');
        assert!(err(&huge).contains("too large"));
    }

    #[test]
    fn floats_in_every_protocol() {
        let want = [
            0.0,
            -0.0,
            1.5,
            1e-08,
            -2.5e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for (p, b) in FLOATS.iter().enumerate() {
            let Value::List(items) = clean(b) else {
                panic!("not a list")
            };
            assert_eq!(items.len(), want.len());
            for (v, w) in items.iter().zip(want) {
                let Value::Float(f) = v else {
                    panic!("protocol {p}: {v:?}")
                };
                assert_eq!(f.to_bits(), w.to_bits(), "protocol {p}");
            }
        }
        assert!(matches!(clean(b"Fnan\n."), Value::Float(f) if f.is_nan()));
        assert!(err(b"Fxyz\n.").contains("bad float"));
    }

    #[test]
    fn strings_in_every_protocol() {
        let want = Value::List(vec![
            s(""),
            s("plain"),
            s("h\u{e9}llo\nworld\\u005c \u{1F600} \u{20ac}"),
        ]);
        for (p, b) in STRS.iter().enumerate() {
            assert_eq!(clean(b), want, "protocol {p}");
        }
        // Python 2 str opcodes: quoted + escaped, BINSTRING, SHORT_BINSTRING
        assert_eq!(clean(b"S'abc\\n\\x41\\101\\''\n."), s("abc\nAA'"));
        assert_eq!(clean(b"S\"q\"\n."), s("q"));
        assert!(err(b"Sabc\n.").contains("not quoted"));
        assert_eq!(clean(b"T\x03\x00\x00\x00abc."), s("abc"));
        assert_eq!(clean(b"U\x02\xff\xfe."), Value::Bytes(vec![0xff, 0xfe]));
        // protocol 4 long forms
        assert_eq!(
            clean(b"\x80\x04\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi."),
            s("hi")
        );
        assert_eq!(clean(b"\x80\x04\x8c\x02hi."), s("hi"));
        // raw-unicode-escape: surrogate pairs combine, lone ones are replaced
        assert_eq!(clean(b"V\\ud83d\\ude00\n."), s("\u{1F600}"));
        assert_eq!(clean(b"V\\ud800x\n."), s("\u{FFFD}x"));
        assert_eq!(clean(b"V\\\\u0041\n."), s("\\\\u0041"));
    }

    #[test]
    fn bytes_in_every_protocol() {
        let mut long = Vec::new();
        for _ in 0..2 {
            long.extend(0u8..=255);
        }
        let want = Value::List(vec![
            Value::Bytes(vec![]),
            Value::Bytes(b"\x00\xff abc".to_vec()),
            Value::Bytes(long),
        ]);
        // protocols 0–2 go through _codecs.encode(str, 'latin1') / builtins.bytes()
        for (p, b) in BYTES.iter().enumerate() {
            assert_eq!(clean(b), want, "protocol {p}");
        }
        assert_eq!(
            clean(b"\x80\x04\x8e\x01\x00\x00\x00\x00\x00\x00\x00Z."),
            Value::Bytes(b"Z".to_vec())
        );
        assert_eq!(clean(BYTEARRAY_P5), Value::Bytes(b"hello".to_vec()));
        assert!(BYTEARRAY_P5.contains(&0x96), "BYTEARRAY8 is exercised");
    }

    #[test]
    fn containers_in_every_protocol() {
        let want = Value::Dict(vec![
            (
                s("list"),
                Value::List(vec![i(1), Value::List(vec![i(2), i(3)])]),
            ),
            (s("tuple0"), Value::Tuple(vec![])),
            (s("tuple1"), Value::Tuple(vec![i(1)])),
            (s("tuple2"), Value::Tuple(vec![i(1), i(2)])),
            (s("tuple3"), Value::Tuple(vec![i(1), i(2), i(3)])),
            (
                s("tuple5"),
                Value::Tuple(vec![i(1), i(2), i(3), i(4), i(5)]),
            ),
            (
                s("dict"),
                Value::Dict(vec![(s("a"), Value::None), (i(7), s("seven"))]),
            ),
            (s("set"), Value::List(vec![i(42)])),
            (s("frozenset"), Value::List(vec![i(43)])),
            (
                s("nested"),
                Value::Dict(vec![(
                    s("x"),
                    Value::Dict(vec![(
                        s("y"),
                        Value::Dict(vec![(s("z"), Value::List(vec![]))]),
                    )]),
                )]),
            ),
        ]);
        for (p, b) in CONTAINERS.iter().enumerate() {
            assert_eq!(clean(b), want, "protocol {p}");
        }
        let shared = Value::List(vec![i(1), i(2)]);
        let want = Value::Dict(vec![
            (s("a"), shared.clone()),
            (s("b"), shared.clone()),
            (s("c"), Value::Tuple(vec![shared.clone(), shared])),
        ]);
        for (p, b) in SHARED.iter().enumerate() {
            assert_eq!(clean(b), want, "protocol {p}");
        }
    }

    #[test]
    fn memo_sees_mutation_after_put() {
        // outer = {}; d = {}; outer['a'] = d; outer['b'] = d; then d['k'] = 'v' via BINGET.
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00a}q\x01X\x01\x00\x00\x00bh\x01u\
                  h\x01X\x01\x00\x00\x00kX\x01\x00\x00\x00vs0.";
        let d = Value::Dict(vec![(s("k"), s("v"))]);
        assert_eq!(
            clean(p),
            Value::Dict(vec![(s("a"), d.clone()), (s("b"), d)])
        );
        // a list appended to after it was referenced
        let p = b"\x80\x02]q\x00(h\x00h\x00lq\x01h\x00K\x07a0.";
        let l = Value::List(vec![i(7)]);
        assert_eq!(clean(p), Value::List(vec![l.clone(), l]));
        // PUT/GET text forms, MEMOIZE
        assert_eq!(
            clean(b"(lp0\nI1\na(g0\nl."),
            Value::List(vec![Value::List(vec![i(1)])])
        );
        assert_eq!(
            clean(b"\x80\x04]\x94h\x00\x86."),
            Value::Tuple(vec![Value::List(vec![]), Value::List(vec![])])
        );
    }

    #[test]
    fn dict_semantics() {
        // later keys overwrite earlier ones in place; True == 1
        assert_eq!(
            clean(b"\x80\x02}(K\x01K\x02K\x05K\x06\x88K\x03u."),
            Value::Dict(vec![(i(1), i(3)), (i(5), i(6))])
        );
        assert_eq!(clean(b"(I1\nI2\nd."), Value::Dict(vec![(i(1), i(2))]));
        assert!(err(b"\x80\x02}(]K\x01u.").contains("unhashable"));
        assert!(err(b"\x80\x02(K\x01d.").contains("odd number"));
    }

    #[test]
    fn memo_keys_large_small_and_memoize() {
        // A huge key, a key stored before the dense table reaches it (and overwritten
        // after), thousands of small keys; MEMOIZE numbers by distinct keys (as CPython).
        let put = |k: u32| [&b"r"[..], &k.to_le_bytes()].concat();
        let get = |k: u32| [&b"j"[..], &k.to_le_bytes()].concat();
        let mut p = b"\x80\x04".to_vec();
        p.extend([&b"K\x07"[..], &put(u32::MAX), b"0"].concat());
        p.extend([&b"K\x09"[..], &put(4096), b"0"].concat());
        for k in 0..2100 {
            p.extend([&b"N"[..], &put(k), b"0"].concat());
        }
        p.extend([&b"K\x0a"[..], &put(4096), b"0"].concat());
        p.extend_from_slice(b"K\x0b\x940(");
        p.extend([get(u32::MAX), get(4096), get(2102)].concat());
        p.extend_from_slice(b"h\x05l.");
        assert_eq!(
            clean(&p),
            Value::List(vec![i(7), i(10), i(11), Value::None])
        );
    }

    #[test]
    fn dict_keys_compare_alike_in_small_and_big_dicts() {
        // The same updates on a dict of 4 and of 40 int keys (linear search vs index):
        // True == 1, 2.0 == 2, (True, 2.0) == (1, 2), str keys.
        for n in [4u8, 40] {
            let mut p = b"\x80\x02}(".to_vec();
            for k in 0..n {
                p.extend_from_slice(&[b'K', k, b'K', k]);
            }
            p.extend_from_slice(b"u(\x88Kd");
            p.push(b'G');
            p.extend_from_slice(&2.0f64.to_be_bytes());
            p.extend_from_slice(b"KfK\x01K\x02\x86K\x05\x88G");
            p.extend_from_slice(&2.0f64.to_be_bytes());
            p.extend_from_slice(b"\x86K\x06X\x01\x00\x00\x00aK\x07X\x01\x00\x00\x00aK\x08u.");
            let mut want: Vec<(Value, Value)> = (0..i64::from(n)).map(|k| (i(k), i(k))).collect();
            want[1].1 = i(100);
            want[2].1 = i(102);
            want.push((Value::Tuple(vec![i(1), i(2)]), i(6)));
            want.push((s("a"), i(8)));
            assert_eq!(clean(&p), Value::Dict(want), "{n} keys");
        }
    }

    #[test]
    fn mark_pop_dup() {
        assert_eq!(clean(b"\x80\x02K\x01K\x020."), i(1));
        assert_eq!(clean(b"\x80\x02K\x01(K\x02K\x031."), i(1));
        assert_eq!(clean(b"\x80\x02K\x01(0."), i(1)); // POP of a bare mark
        assert_eq!(
            clean(b"\x80\x02K\x012\x86."),
            Value::Tuple(vec![i(1), i(1)])
        );
        // items below a mark are out of reach
        assert!(err(b"\x80\x02K\x01(K\x02\x86.").contains("stack underflow"));
        assert!(err(b"\x80\x021.").contains("no MARK"));
    }

    #[test]
    fn protocol4_frames_stack_global_memoize() {
        for op in [0x95u8, 0x93, 0x94] {
            assert!(BIG_P4.contains(&op));
        }
        let Value::Dict(items) = clean(BIG_P4) else {
            panic!()
        };
        assert_eq!(items.len(), 50);
        assert_eq!(
            items[49],
            (
                s("key49"),
                Value::List(vec![i(49), Value::Float(49.0), s("49")])
            )
        );
        assert!(err(b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00.").contains("frame"));
        assert!(err(b"\x80\x04K\x01K\x02\x93.").contains("two strings"));
    }

    #[test]
    fn ordered_dict_namespace_builtins() {
        for (p, b) in ORDERED.iter().enumerate() {
            assert_eq!(
                clean(b),
                Value::Dict(vec![(s("w"), i(1)), (s("v"), i(2))]),
                "protocol {p}"
            );
        }
        for (p, b) in NAMESPACE.iter().enumerate() {
            let v = clean(b);
            let Value::Object { class, .. } = &v else {
                panic!("protocol {p}: {v:?}")
            };
            assert_eq!(class, "argparse.Namespace");
            assert_eq!(v.get("lr"), Some(&Value::Float(0.1)), "protocol {p}");
            assert_eq!(v.get("name"), Some(&s("run")));
            assert_eq!(v.get("layers"), Some(&Value::List(vec![i(64), i(64)])));
        }
        let obj = |class: &str, args: Vec<Value>| Value::Object {
            class: class.into(),
            args,
            state: None,
        };
        let want = Value::List(vec![
            obj(
                "builtins.complex",
                vec![Value::Float(1.5), Value::Float(-2.0)],
            ),
            obj("builtins.slice", vec![i(1), i(10), i(2)]),
            Value::Bytes(b"ab\x00".to_vec()),
            Value::List(vec![i(3)]),
            Value::List(vec![]),
        ]);
        for (p, b) in BUILTINS.iter().enumerate() {
            assert_eq!(clean(b), want, "protocol {p}");
        }
        // NEWOBJ_EX with keyword arguments
        let v = clean(b"\x80\x04cargparse\nNamespace\n)}X\x01\x00\x00\x00aK\x01s\x92.");
        assert_eq!(v.get("a"), Some(&i(1)));
        // INST and OBJ (protocol 0/1 instance creation) followed by BUILD
        let v = clean(b"(iargparse\nNamespace\n(dS'a'\nI1\nsb.");
        assert_eq!(v.get("a"), Some(&i(1)));
        let v = clean(b"(cargparse\nNamespace\no(dS'a'\nI1\nsb.");
        assert_eq!(v.get("a"), Some(&i(1)));
        // torch.Size, torch.device, torch dtypes
        assert_eq!(
            clean(b"\x80\x02ctorch\nSize\n]K\x02aK\x03a\x85R."),
            Value::Tuple(vec![i(2), i(3)])
        );
        assert_eq!(
            clean(b"\x80\x02ctorch\ndevice\nX\x04\x00\x00\x00cudaK\x00\x86R."),
            s("cuda:0")
        );
        assert_eq!(
            clean(b"\x80\x02ctorch\ndevice\nX\x03\x00\x00\x00cpu\x85R."),
            s("cpu")
        );
        assert_eq!(
            clean(b"\x80\x02ctorch\nbfloat16\n."),
            Value::Global("torch.bfloat16".into())
        );
    }

    #[test]
    fn numpy_scalars_in_every_protocol() {
        let ns = |d: &str, v: Value| Value::NumpyScalar {
            dtype: d.into(),
            value: Box::new(v),
        };
        let want = Value::Dict(vec![
            (s("f8"), ns("f8", Value::Float(-0.8318))),
            (s("f4"), ns("f4", Value::Float(f64::from(0.47f32)))),
            (s("i8"), ns("i8", i(-42))),
            (s("f8be"), ns("f8", Value::Float(2.5))),
            (s("b1"), ns("b1", Value::Bool(true))),
            (s("u1"), ns("u1", i(255))),
            (s("f2"), ns("f2", Value::Float(0.5))),
        ]);
        for (p, b) in NUMPY.iter().enumerate() {
            let v = clean(b);
            assert_eq!(v, want, "protocol {p}");
            assert_eq!(v.get("f8").and_then(Value::as_f64), Some(-0.8318));
        }
        assert_eq!(
            decode_numpy("u8", '<', &[0xff; 8]),
            Some(big("18446744073709551615"))
        );
        assert_eq!(decode_numpy("i2", '>', &[0xff, 0xfe]), Some(i(-2)));
        assert_eq!(decode_numpy("M8", '<', &[0; 8]), None);
        assert_eq!(decode_numpy("f8", '<', &[0; 4]), None);
    }

    #[test]
    fn unsafe_globals_are_blocked_and_reported_once() {
        // posix.system('ls') twice in a list: two Blocked values, one finding
        let p = b"\x80\x02(cposix\nsystem\nX\x02\x00\x00\x00ls\x85Rcposix\nsystem\nX\x02\x00\x00\x00ls\x85Rl.";
        let out = parse_plain(p).unwrap();
        let blocked = Value::Blocked {
            global: "posix.system".into(),
        };
        assert_eq!(out.value, Value::List(vec![blocked.clone(), blocked]));
        assert_eq!(unsafe_globals(&out), vec!["posix.system"]);
        // referenced, not called: still reported
        let out = parse_plain(b"\x80\x02cbuiltins\neval\n.").unwrap();
        assert_eq!(out.value, Value::Global("builtins.eval".into()));
        assert_eq!(unsafe_globals(&out), vec!["builtins.eval"]);
        // protocol-0 module names are mapped like Python's fix_imports
        let out = parse_plain(b"c__builtin__\ngetattr\n.").unwrap();
        assert_eq!(unsafe_globals(&out), vec!["builtins.getattr"]);
        // INST of an unsafe class, STACK_GLOBAL, EXT codes, NEWOBJ
        let out = parse_plain(b"(S'ls'\nios\nsystem\n.").unwrap();
        assert_eq!(
            out.value,
            Value::Blocked {
                global: "os.system".into()
            }
        );
        let out = parse_plain(b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x02ls\x85R.").unwrap();
        assert_eq!(unsafe_globals(&out), vec!["os.system"]);
        let out = parse_plain(b"\x80\x02\x82\x05.").unwrap();
        assert_eq!(unsafe_globals(&out), vec!["copyreg extension code 5"]);
        let out = parse_plain(b"\x80\x02csubprocess\nPopen\n)\x81.").unwrap();
        assert!(matches!(out.value, Value::Blocked { .. }));
        // copyreg._reconstructor only builds allowlisted classes
        let out =
            parse_plain(b"ccopy_reg\n_reconstructor\n(cos\nsystem\nc__builtin__\nobject\nNtR.")
                .unwrap();
        assert_eq!(
            out.value,
            Value::Blocked {
                global: "os.system".into()
            }
        );
        assert_eq!(unsafe_globals(&out), vec!["os.system"]);
        // calling the result of a blocked call stays blocked; BUILD/SETITEMS on it are ignored
        let out = parse_plain(b"\x80\x02cbuiltins\ngetattr\n)R)R}b(K\x01K\x02u(K\x03e.").unwrap();
        assert!(matches!(out.value, Value::Blocked { .. }));
        // BUILD on a global (attribute assignment on a class) is flagged
        let out = parse_plain(b"\x80\x02ctorch\nfloat32\n}b.").unwrap();
        assert_eq!(unsafe_globals(&out), vec!["torch.float32"]);
        // a safe-to-reference global that is called is kept uninterpreted, not run
        let out = parse_plain(b"\x80\x02ctorch\nTensor\n)R.").unwrap();
        assert!(matches!(out.value, Value::Object { .. }));
        assert!(unsafe_globals(&out).is_empty());
    }

    struct TestHost {
        pids: Vec<Value>,
    }

    impl Host for TestHost {
        fn persistent_load(&mut self, pid: Value) -> Result<Loaded, String> {
            self.pids.push(pid);
            if self.pids.len() == 1 {
                Ok(Loaded::Value(Value::List(vec![s("loaded")])))
            } else {
                Ok(Loaded::Storage(7))
            }
        }
        fn rebuild_tensor(&mut self, spec: TensorSpec) -> Result<usize, String> {
            assert_eq!(spec.storage, 7);
            Ok(spec.shape.len())
        }
    }

    /// Takes persistent ids borrowed (`items`) or as values, recording them as values.
    struct ItemsHost {
        borrowed: bool,
        pids: Vec<Value>,
    }

    impl Host for ItemsHost {
        fn persistent_load(&mut self, pid: Value) -> Result<Loaded, String> {
            self.pids.push(pid);
            Ok(Loaded::Storage(self.pids.len()))
        }
        fn persistent_load_items(
            &mut self,
            items: &[PidItem<'_>],
        ) -> Option<Result<Loaded, String>> {
            if !self.borrowed {
                return None;
            }
            self.pids
                .push(Value::Tuple(items.iter().map(PidItem::to_value).collect()));
            Some(Ok(Loaded::Storage(self.pids.len())))
        }
        fn rebuild_tensor(&mut self, _spec: TensorSpec) -> Result<usize, String> {
            Err("no tensors".into())
        }
    }

    #[test]
    fn borrowed_persistent_ids_match_materialised_ones() {
        // ('storage', torch.FloatStorage, '0', 'cpu', 5) memoised, then used n times; a
        // list id and a nested tuple id (not offered borrowed); bytes and long strings.
        let ids = |n: usize| {
            let mut p =
                b"\x80\x02(X\x07\x00\x00\x00storageq\x00ctorch\nFloatStorage\nq\x01".to_vec();
            p.extend_from_slice(b"X\x01\x00\x00\x000q\x02X\x03\x00\x00\x00cpuq\x03K\x05q\x040");
            for _ in 0..n {
                p.extend_from_slice(b"(h\x00h\x01h\x02h\x03h\x04tQ");
            }
            p.extend_from_slice(
                b"(h\x00h\x01]K\x01aK\x02tQ(h\x00lQ(C\x02abU\x01xJ\xff\xff\xff\xfftQl.",
            );
            p
        };
        for (n, max_values) in [(3, 10_000), (400, 1_000)] {
            let p = ids(n);
            let mut opts = Options::new("t");
            opts.max_values = max_values;
            let mut borrowed = ItemsHost {
                borrowed: true,
                pids: vec![],
            };
            let mut values = ItemsHost {
                borrowed: false,
                pids: vec![],
            };
            let a = run(&p, &mut borrowed, &opts).map(|o| o.value);
            let b = run(&p, &mut values, &opts).map(|o| o.value);
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b);
                    assert_eq!(borrowed.pids.len(), n + 3);
                }
                (Err(a), Err(b)) => {
                    assert!(n > 100 && matches!(a, FormatError::Limit(_)), "{a}");
                    assert!(a.to_string().contains("values through shared"), "{a}");
                    assert_eq!(a.to_string(), b.to_string());
                }
                (a, b) => panic!("{a:?} vs {b:?}"),
            }
            assert_eq!(borrowed.pids, values.pids, "{n} ids");
        }
    }

    #[test]
    fn persistent_ids_go_to_the_host() {
        let mut host = TestHost { pids: vec![] };
        let p = b"\x80\x02(Pabc\nX\x03\x00\x00\x00defQl.";
        let out = run(p, &mut host, &Options::new("t")).unwrap();
        assert_eq!(host.pids, vec![s("abc"), s("def")]);
        assert_eq!(
            out.value,
            Value::List(vec![
                Value::List(vec![s("loaded")]),
                Value::Object {
                    class: "torch.storage".into(),
                    args: vec![i(7)],
                    state: None
                }
            ])
        );
        // storage → _rebuild_tensor_v2
        let mut host = TestHost { pids: vec![s("x")] };
        let p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89}tR.";
        let out = run(p, &mut host, &Options::new("t")).unwrap();
        assert_eq!(out.value, Value::Tensor(2));
        // plain pickles refuse persistent ids
        assert!(err(b"Pabc\n.").contains("persistent id"));
    }

    /// Records every tensor spec; storages come from `BINPERSID` as storage #3.
    #[derive(Default)]
    struct SpecHost {
        specs: Vec<TensorSpec>,
        grads: Vec<(usize, bool)>,
    }

    impl Host for SpecHost {
        fn persistent_load(&mut self, _pid: Value) -> Result<Loaded, String> {
            Ok(Loaded::Storage(3))
        }
        fn rebuild_tensor(&mut self, spec: TensorSpec) -> Result<usize, String> {
            self.specs.push(spec);
            Ok(self.specs.len() - 1)
        }
        fn set_requires_grad(&mut self, index: usize, rg: bool) {
            self.grads.push((index, rg));
        }
    }

    #[test]
    fn rebuild_functions() {
        let storage = b"X\x01\x00\x00\x00sQ";
        let build = |func: &str, rest: &[u8]| {
            let mut p = b"\x80\x02".to_vec();
            p.extend_from_slice(format!("ctorch._utils\n{func}\n(").as_bytes());
            p.extend_from_slice(storage);
            p.extend_from_slice(rest);
            p.extend_from_slice(b"tR.");
            p
        };
        // _rebuild_tensor(storage, offset, size, stride): the old form
        let mut h = SpecHost::default();
        let p = build("_rebuild_tensor", b"K\x01K\x02K\x03\x86K\x01K\x02\x86");
        assert_eq!(
            run(&p, &mut h, &Options::new("t")).unwrap().value,
            Value::Tensor(0)
        );
        assert_eq!(
            h.specs[0],
            TensorSpec {
                storage: 3,
                storage_offset: 1,
                shape: vec![2, 3],
                strides: vec![1, 2],
                requires_grad: false,
                dtype: None
            }
        );
        // _rebuild_tensor_v3(..., requires_grad, hooks, dtype): explicit dtype
        let mut h = SpecHost::default();
        let p = build(
            "_rebuild_tensor_v3",
            b"K\x00K\x04\x85K\x01\x85\x88}ctorch\nfloat16\n",
        );
        run(&p, &mut h, &Options::new("t")).unwrap();
        assert_eq!(h.specs[0].dtype, Some(DType::F16));
        assert!(h.specs[0].requires_grad);
        // _rebuild_parameter_with_state(tensor, requires_grad, hooks, state)
        let mut h = SpecHost::default();
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_parameter_with_state\n(".to_vec();
        p.extend_from_slice(&build("_rebuild_tensor_v2", b"K\x00))\x89}")[2..]);
        p.pop(); // the inner STOP
        p.extend_from_slice(b"\x88}}tR.");
        let out = run(&p, &mut h, &Options::new("t")).unwrap();
        assert_eq!(out.value, Value::Tensor(0));
        assert_eq!(h.grads, vec![(0, true)]);
        // _rebuild_from_type_v2(func, type, args, state) unwraps to func(*args)
        let mut h = SpecHost::default();
        let mut p = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\nctorch\nTensor\n(".to_vec();
        p.extend_from_slice(storage);
        p.extend_from_slice(b"K\x00))\x89}t}tR.");
        assert_eq!(
            run(&p, &mut h, &Options::new("t")).unwrap().value,
            Value::Tensor(0)
        );
        assert!(out.findings.is_empty());
    }

    #[test]
    fn tensor_arguments_are_checked() {
        let bad: [(&[u8], &str); 4] = [
            (b"(K\x00K\x02\x85K\x01\x85\x89}t", "expected a storage"),
            (
                b"(X\x01\x00\x00\x00sQJ\xff\xff\xff\xff)K\x01\x85\x89}t",
                "negative storage offset",
            ),
            (
                b"(X\x01\x00\x00\x00sQK\x00J\xff\xff\xff\xff\x85K\x01\x85\x89}t",
                "negative size",
            ),
            (
                b"(X\x01\x00\x00\x00sQK\x00K\x02\x85)\x89}t",
                "differ in length",
            ),
        ];
        for (args, msg) in bad {
            let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n".to_vec();
            p.extend_from_slice(args);
            p.extend_from_slice(b"R.");
            let mut host = TestHost { pids: vec![s("x")] };
            let e = run(&p, &mut host, &Options::new("t"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(msg), "{e}");
        }
        // too many dimensions
        let mut p =
            b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sQK\x00(".to_vec();
        p.extend(std::iter::repeat_n(b"K\x01".as_slice(), 65).flatten());
        p.extend_from_slice(b"t)\x89}tR.");
        let mut host = TestHost { pids: vec![s("x")] };
        let e = run(&p, &mut host, &Options::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dimensions"), "{e}");
    }

    #[test]
    fn errors_name_the_opcode_and_offset() {
        match parse_plain(b"\x80\x02\xfe.").unwrap_err() {
            FormatError::Pickle { offset, message } => {
                assert_eq!(offset, 2);
                assert!(
                    message.contains("unknown opcode 0xfe at byte 2"),
                    "{message}"
                );
            }
            e => panic!("{e}"),
        }
        match parse_plain(b"\x80\x02(K\x01K\x02u.").unwrap_err() {
            FormatError::Pickle { offset, message } => {
                assert_eq!(offset, 7);
                assert!(message.contains("stack underflow"), "{message}");
                assert!(message.contains("SETITEMS"), "{message}");
            }
            e => panic!("{e}"),
        }
        let e = err(b"\x80\x02(u.");
        assert!(
            e.contains("stack underflow") && e.contains("SETITEMS"),
            "{e}"
        );
        assert!(err(b"\x80\x02h\x05.").contains("memo key 5 not found"));
        assert!(err(b"\x80\x02j\x05\x00\x00\x00.").contains("LONG_BINGET"));
        assert!(err(b"\x80\x02.").contains("stack underflow"));
        assert!(err(b"\x80\x02K\x01").contains("no STOP"));
        assert!(err(b"\x80\x06K\x01.").contains("protocol 6"));
        assert!(err(b"\x80\x05\x97.").contains("out-of-band"));
        assert!(err(b"\x80\x05\x98.").contains("out-of-band"));
        assert!(err(b"\x80\x02K\x01)R.").contains("not callable"));
        assert!(err(b"\x80\x02K\x01]b.").contains("BUILD on a int"));
        assert!(err(b"\x80\x02K\x01K\x02a.").contains("append"));
        assert!(err(b"Idone").contains("newline"));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for case in all_cases() {
            for cut in 0..case.len() {
                assert!(parse_plain(&case[..cut]).is_err(), "prefix {cut} parsed");
            }
        }
    }

    #[test]
    fn depth_bomb_is_bounded() {
        let n = 100_000;
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        let e = parse_plain(&p).unwrap_err();
        assert!(matches!(e, FormatError::Limit(_)), "{e}");
        assert!(e.to_string().contains("nested"), "{e}");
    }

    #[test]
    fn memo_and_dup_bombs_are_bounded() {
        // t0 = []; t(k) = (t(k-1), t(k-1)): 2^60 values once expanded.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for k in 1..=60u8 {
            p.extend_from_slice(&[b'h', k - 1, b'2', 0x86, b'q', k]);
        }
        p.push(b'.');
        let start = std::time::Instant::now();
        let e = parse_plain(&p).unwrap_err();
        assert!(matches!(e, FormatError::Limit(_)), "{e}");
        assert!(start.elapsed().as_secs() < 10);
        // the same through a persistent id (materialised for the host) is bounded too
        let mut p2 = p[..p.len() - 1].to_vec();
        p2.extend_from_slice(b"Q.");
        let mut host = TestHost { pids: vec![] };
        let mut small = Options::new("t");
        small.max_values = 10_000;
        let e = run(&p2, &mut host, &small).unwrap_err();
        assert!(matches!(e, FormatError::Limit(_)), "{e}");
        assert!(host.pids.is_empty());
        // strings shared a million times exceed the byte budget
        let mut p = b"\x80\x02B\x00\x00\x10\x00".to_vec();
        p.extend(vec![b'x'; 1 << 20]);
        p.extend_from_slice(b"q\x00(");
        p.extend(std::iter::repeat_n(b"h\x00".as_slice(), 200).flatten());
        p.extend_from_slice(b"l.");
        let e = parse_plain(&p).unwrap_err();
        assert!(matches!(e, FormatError::Limit(_)), "{e}");
        // the arena itself is capped
        let mut opts = Options::new("t");
        opts.max_values = 100;
        let e = run(BIG_P4, &mut PlainHost, &opts).unwrap_err();
        assert!(matches!(e, FormatError::Limit(_)), "{e}");
    }

    #[test]
    fn shared_small_ints_count_against_the_arena() {
        // 200 pushes of one small int: the arena limit counts each push, as before
        // small ints shared a node.
        let mut p = b"\x80\x02(".to_vec();
        p.extend(std::iter::repeat_n(b"K\x01".as_slice(), 200).flatten());
        p.extend_from_slice(b"l.");
        let mut opts = Options::new("t");
        opts.max_values = 100;
        let e = run(&p, &mut PlainHost, &opts).unwrap_err();
        assert!(
            e.to_string().contains("creates more than 100 values"),
            "{e}"
        );
        opts.max_values = 300;
        let out = run(&p, &mut PlainHost, &opts).unwrap();
        assert_eq!(out.value, Value::List(vec![i(1); 200]));
    }

    #[test]
    fn reusing_a_big_memoised_value_is_bounded() {
        // One 5k-entry dict, then OrderedDict(d) rebuilt from it again and again:
        // each copy is cheap to encode (5 bytes) but copies the whole dict.
        let mut p = b"\x80\x02}q\x00(".to_vec();
        for k in 0..5_000u32 {
            p.push(b'J');
            p.extend_from_slice(&k.to_le_bytes());
            p.push(b'N');
        }
        p.extend_from_slice(b"u");
        p.extend_from_slice(b"ccollections\nOrderedDict\nq\x01");
        for _ in 0..2_000 {
            p.extend_from_slice(b"h\x01h\x00\x85R0");
        }
        p.extend_from_slice(b"N.");
        let start = std::time::Instant::now();
        let e = parse_plain(&p).unwrap_err();
        assert!(matches!(e, FormatError::Limit(_)), "{e}");
        assert!(e.to_string().contains("copying work"), "{e}");
        assert!(start.elapsed().as_secs() < 10);
        // a huge name re-used by STACK_GLOBAL many times
        let mut p = b"\x80\x04\x8e\x00\x00\x10\x00\x00\x00\x00\x00".to_vec();
        p.extend(vec![b'x'; 1 << 20]);
        p.extend_from_slice(b"\x94");
        for _ in 0..10_000 {
            p.extend_from_slice(b"h\x00h\x00\x930");
        }
        p.extend_from_slice(b"N.");
        let e = parse_plain(&p).unwrap_err();
        assert!(
            e.to_string().contains("STACK_GLOBAL") || matches!(e, FormatError::Limit(_)),
            "{e}"
        );
    }

    #[test]
    fn cycles_are_errors_not_hangs() {
        let e = err(b"\x80\x02]q\x00h\x00a.");
        assert!(e.contains("cycle"), "{e}");
        let e = err(b"\x80\x02}q\x00K\x01h\x00s.");
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn escape_decoding() {
        assert_eq!(escape_decode(b"a\\tb\\\\c\\x4"), b"a\tb\\c\\x4".to_vec());
        assert_eq!(escape_decode(b"\\q\\"), b"\\q\\".to_vec());
        assert_eq!(raw_unicode_escape_decode(b"\\u00e9\\x"), "\u{e9}\\x");
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert!(f16_to_f64(0x7c00).is_infinite());
    }
}
