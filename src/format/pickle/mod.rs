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

use super::{limits, DType, Finding, FormatError, Limit, Value};

mod allowlist;
mod arena;
mod construct;
mod decode;
mod dispatch;
mod materialise;
pub mod opcodes;
mod vm;

pub use allowlist::{allowlist, Ctor};
pub use decode::decode_numpy;

use arena::*;
use decode::*;
use materialise::*;
use opcodes as op;
use vm::*;

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

/// Why a host refused a persistent id or a tensor rebuild (the VM reports it as a
/// [`FormatError::Pickle`] at the opcode that asked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("persistent id in a plain pickle (not a torch checkpoint)")]
    PersistentIdOutsideTorch,
    #[error("tensor outside a torch checkpoint")]
    TensorOutsideTorch,
    #[error("no storage #{0}")]
    NoStorage(usize),
    #[error("{found} dimensions (limit {max})")]
    TooManyDims { found: usize, max: usize },
    #[error("shape {0:?} is impossibly large")]
    ImpossiblyLarge(Vec<u64>),
    #[error("a {0}, expected a tuple")]
    NotATuple(&'static str),
    #[error("no type name")]
    NoTypeName,
    #[error("unsupported persistent id type `{0}`")]
    UnsupportedType(String),
    #[error("storage id has {found} fields, expected {expected}")]
    StorageFields { found: usize, expected: usize },
    #[error("unknown storage type `{0}`")]
    UnknownStorageType(String),
    #[error("storage type is a {0}, expected a class")]
    StorageTypeNotAClass(&'static str),
    #[error("storage key is a {0}")]
    StorageKey(&'static str),
    #[error("bad storage size (of type {0})")]
    StorageSize(&'static str),
    #[error("bad storage view metadata")]
    ViewMetadata,
    #[error("view {0} overflows")]
    ViewOverflows(&'static str),
    /// Reading the storage ran into an inflation limit (the host keeps the error).
    #[error("an inflation limit")]
    InflationLimit,
    #[error("a persistent id that is a {0}")]
    PidKind(&'static str),
    #[error("persistent id `{0}` names no tensor or storage")]
    UnknownKey(String),
}

/// The VM's link to the outside: how globals are classified, what persistent ids
/// are, and where tensors go.
pub trait Host {
    /// Classify `module.name`; `None` means unsafe.
    fn resolve_global(&self, module: &str, name: &str) -> Option<Ctor> {
        allowlist(module, name)
    }
    /// Resolve a persistent id (`BINPERSID` / `PERSID`).
    fn persistent_load(&mut self, pid: Value) -> Result<Loaded, HostError>;
    /// Resolve a persistent id that is a tuple of strings, bytes, ints and globals (torch
    /// storages are), given borrowed: `items` are what [`persistent_load`] would get as a
    /// [`Value::Tuple`]. `None` (the default): the VM materialises the id and calls
    /// [`persistent_load`].
    ///
    /// [`persistent_load`]: Host::persistent_load
    fn persistent_load_items(
        &mut self,
        _items: &[PidItem<'_>],
    ) -> Option<Result<Loaded, HostError>> {
        None
    }
    /// Register a tensor and return its index.
    fn rebuild_tensor(&mut self, spec: TensorSpec) -> Result<usize, HostError>;
    /// `_rebuild_parameter*` on tensor `index`.
    fn set_requires_grad(&mut self, _index: usize, _requires_grad: bool) {}
}

/// A host for plain pickles: no persistent ids, no tensors.
#[derive(Debug, Default)]
pub struct PlainHost;

impl Host for PlainHost {
    fn persistent_load(&mut self, _pid: Value) -> Result<Loaded, HostError> {
        Err(HostError::PersistentIdOutsideTorch)
    }
    fn rebuild_tensor(&mut self, _spec: TensorSpec) -> Result<usize, HostError> {
        Err(HostError::TensorOutsideTorch)
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
    /// The length of the input the pickle starts (the rest of the file or member) when
    /// the VM is given a prefix of it ([`run_prefix`]): the work and byte budgets scale
    /// with it, so a prefix is read as the whole would be. `None`: the data given.
    pub input_len: Option<u64>,
}

impl Options {
    pub fn new(location: impl Into<String>) -> Options {
        Options {
            location: location.into(),
            base_offset: 0,
            max_values: limits::MAX_PICKLE_VALUES,
            max_depth: limits::MAX_DEPTH,
            input_len: None,
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

/// [`run`] on `data`, a prefix of the input (see [`Options::input_len`]): an error
/// comes with `true` when the pickle needed bytes past the end of `data`, so that a
/// longer prefix may read it.
pub fn run_prefix(
    data: &[u8],
    host: &mut dyn Host,
    opts: &Options,
) -> Result<Outcome, (FormatError, bool)> {
    let mut vm = Vm::new(data, host, opts);
    match vm.run() {
        Ok(value) => Ok(Outcome {
            value,
            end: vm.pos,
            findings: vm.findings,
        }),
        Err(e) => Err((e, vm.ran_out.get())),
    }
}

/// Parse a plain pickle (no persistent ids) with the default allowlist.
pub fn parse_plain(data: &[u8]) -> Result<Outcome, FormatError> {
    run(data, &mut PlainHost, &Options::new("pickle"))
}

#[cfg(test)]
mod tests;
