//! Reading (and later writing) checkpoint files without executing anything.
//!
//! * [`zip`]: a defensive reader for the zip container `torch.save` writes.
//! * [`pickle`]: a pickle VM (protocols 2–5) that builds plain [`Value`]s and never
//!   imports or calls anything; unknown globals become findings.
//! * [`torch`]: maps pickled torch objects (storages, `_rebuild_tensor_v2`, …) onto
//!   [`TensorInfo`]s for both the zip and the legacy (non-zip) layout.
//! * [`safetensors`]: `.safetensors` headers, with explicit limits.

pub mod dtype;
pub mod finite;
pub mod input;
pub mod loader;
pub mod pickle;
pub mod safetensors;
#[cfg(unix)]
pub mod sparse;
pub mod tar;
pub mod torch;
pub mod value;
pub mod write;
pub mod zip;

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use dtype::DType;
pub use value::Value;

/// Limits applied to untrusted input. Nothing is allocated from a size a header claims
/// before it has been checked against these and against the real file size.
pub mod limits {
    /// Largest pickle we decode or sweep (a zip's `data.pkl`, a pickle of a legacy
    /// stream or of a tar member): what tvck reads into memory for one pickle at most.
    pub const MAX_PICKLE_BYTES: u64 = 1 << 30;
    /// Most values the pickle VM may create (guards against memo/dup bombs).
    pub const MAX_PICKLE_VALUES: usize = 50_000_000;
    /// Deepest nesting of containers.
    pub const MAX_DEPTH: usize = 512;
    /// Most dimensions of a tensor.
    pub const MAX_DIMS: usize = 64;
    /// Largest safetensors JSON header (the safetensors crate uses 100 MB).
    pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;
    /// Largest logical size of a view that is bigger than its storage (stride-0 expansion).
    pub const MAX_EXPANDED_VIEW_BYTES: u64 = 1 << 30;
    /// Most zip entries.
    pub const MAX_ZIP_ENTRIES: usize = 10_000_000;
    /// Most bytes one deflated zip entry (a pickle or a storage) may inflate to: what
    /// tvck holds in memory for it at once. `MAX_INFLATED_ENTRY`.
    pub const MAX_INFLATED_ENTRY: u64 = 256 << 20;
    /// Most bytes all the deflated entries of one file may inflate to, by their declared
    /// sizes, checked when the file is opened (pickles are counted each time they are
    /// read, storages once, before any is inflated). `MAX_INFLATED_PER_FILE`.
    pub const MAX_INFLATED_PER_FILE: u64 = 1 << 30;
    /// Most bytes inflated over a whole run (every file of a `scan` together, counted as
    /// they are inflated): bounds the time a tree of deflate bombs can cost.
    /// `MAX_INFLATED_PER_RUN`.
    pub const MAX_INFLATED_PER_RUN: u64 = 4 << 30;
    /// Deepest folder nesting `scan` walks into (symlinked folders included).
    pub const MAX_SCAN_DEPTH: usize = 64;
    /// Most bytes of tensors read (or inflated) from a file and held at once while
    /// hashing; tensors already in memory do not count.
    pub const MAX_HASH_BATCH_BYTES: u64 = 64 << 20;
    /// Longest integer the pickle VM turns into decimal (CPython's default int/str
    /// limit is 4300 digits).
    pub const MAX_INT_DIGITS: usize = 4300;
    /// Longest `LONG1`/`LONG4` payload the pickle VM decodes (about 4300 digits).
    pub const MAX_LONG_BYTES: usize = 1800;
    /// Largest PAX extended header or GNU long name (`././@LongLink`) member of a tar
    /// archive tvck reads (Python's `tarfile` has no limit).
    pub const MAX_TAR_EXTENDED_HEADER: u64 = 1 << 20;
    /// Most members of a tar archive (extended headers and long names included), and
    /// most extended headers in front of one member.
    pub const MAX_TAR_MEMBERS: usize = 10_000;
    /// Largest file tvck reads whole. Files are read in parts (a `torch.save` zip but for
    /// its storages, anything but a zip lazily: see `sparse` and `input`), except a zip
    /// shaped unlike `torch.save`'s (storages out of order, several end records, ...),
    /// which is read whole so that every check sees every byte; a larger one is refused,
    /// so that no file costs more memory than this.
    pub const MAX_WHOLE_READ: u64 = 1 << 30;
}

/// Which limit on untrusted input (see [`limits`]) an input ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// A range of the file larger than this machine's address space.
    AddressSpace,
    /// [`limits::MAX_SAFETENSORS_HEADER`]
    SafetensorsHeader,
    /// [`limits::MAX_DIMS`]
    Dims,
    /// [`limits::MAX_ZIP_ENTRIES`]
    ZipEntries,
    /// The most bytes one zip entry may hold uncompressed when read.
    ZipEntrySize,
    /// [`limits::MAX_PICKLE_VALUES`] (or the VM's `max_values`): values created.
    PickleValues,
    /// The copying work of a pickle (linear in its size).
    PickleWork,
    /// Values materialised through shared (memo) references (a bounded factor of those created).
    SharedValues,
    /// String bytes materialised through shared references.
    SharedBytes,
    /// [`limits::MAX_DEPTH`]: nesting of values.
    Depth,
    /// [`limits::MAX_PICKLE_BYTES`]: one pickle's length.
    PickleBytes,
    /// [`limits::MAX_TAR_EXTENDED_HEADER`]: a PAX header or GNU long name.
    TarExtendedHeader,
    /// [`limits::MAX_WHOLE_READ`]: a file that would be read whole.
    WholeRead,
}

impl Limit {
    /// The name of the limit (the constant in [`limits`] where there is one).
    pub fn name(self) -> &'static str {
        match self {
            Limit::AddressSpace => "address space",
            Limit::SafetensorsHeader => "MAX_SAFETENSORS_HEADER",
            Limit::Dims => "MAX_DIMS",
            Limit::ZipEntries => "MAX_ZIP_ENTRIES",
            Limit::ZipEntrySize => "zip entry size",
            Limit::PickleValues => "MAX_PICKLE_VALUES",
            Limit::PickleWork => "pickle work",
            Limit::SharedValues => "shared values",
            Limit::SharedBytes => "shared bytes",
            Limit::Depth => "MAX_DEPTH",
            Limit::PickleBytes => "MAX_PICKLE_BYTES",
            Limit::TarExtendedHeader => "MAX_TAR_EXTENDED_HEADER",
            Limit::WholeRead => "MAX_WHOLE_READ",
        }
    }

    /// The message: what passed the limit, where.
    fn describe(self, max: u64, found: u64, at: &str) -> String {
        match self {
            Limit::AddressSpace => "a range too large for this machine".into(),
            Limit::SafetensorsHeader => {
                format!("safetensors header length {found} exceeds the {max} byte limit")
            }
            Limit::Dims => format!("tensor `{at}` has {found} dimensions (limit {max})"),
            Limit::ZipEntries => format!("zip claims {found} entries (limit {max})"),
            Limit::ZipEntrySize => format!("`{at}` is {found} bytes uncompressed (limit {max})"),
            Limit::PickleValues => format!("pickle creates more than {max} values ({at})"),
            Limit::PickleWork => format!(
                "pickle does more than {max} units of copying work ({at}; a memo amplification?)"
            ),
            Limit::SharedValues => {
                format!("pickle expands to more than {max} values through shared references ({at})")
            }
            Limit::SharedBytes => format!(
                "pickle expands to more than {max} bytes of strings through shared references ({at})"
            ),
            Limit::Depth => format!("values nested more than {max} deep ({at})"),
            Limit::PickleBytes => format!("the pickle of {at} is longer than {max} bytes"),
            Limit::TarExtendedHeader => {
                format!("tar {at} of {found} bytes (limit {max})")
            }
            Limit::WholeRead => format!(
                "a zip archive shaped unlike torch.save's ({at}) is read whole, and this one is {found} bytes (limit MAX_WHOLE_READ, {max} bytes)"
            ),
        }
    }
}

/// Which inflation limit (see [`limits`]) a deflated zip entry ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InflateLimit {
    /// [`limits::MAX_INFLATED_ENTRY`]
    Entry,
    /// [`limits::MAX_INFLATED_PER_FILE`]
    File,
    /// [`limits::MAX_INFLATED_PER_RUN`]
    Run,
}

impl InflateLimit {
    pub fn name(self) -> &'static str {
        match self {
            InflateLimit::Entry => "MAX_INFLATED_ENTRY",
            InflateLimit::File => "MAX_INFLATED_PER_FILE",
            InflateLimit::Run => "MAX_INFLATED_PER_RUN",
        }
    }

    pub fn bytes(self) -> u64 {
        match self {
            InflateLimit::Entry => limits::MAX_INFLATED_ENTRY,
            InflateLimit::File => limits::MAX_INFLATED_PER_FILE,
            InflateLimit::Run => limits::MAX_INFLATED_PER_RUN,
        }
    }

    fn what(self) -> &'static str {
        match self {
            InflateLimit::Entry => "the most tvck inflates of one zip entry",
            InflateLimit::File => "the most tvck inflates from one file",
            InflateLimit::Run => "the most tvck inflates in one run",
        }
    }
}

/// What inflating the deflated zip entries of one file may still cost: each entry is
/// checked against [`limits::MAX_INFLATED_ENTRY`] and the file's total against
/// [`limits::MAX_INFLATED_PER_FILE`] by declared size, before anything is inflated
/// ([`InflateBudget::declare`]); every inflation is also charged to the run's
/// [`limits::MAX_INFLATED_PER_RUN`] as it happens ([`InflateBudget::charge_run`]).
#[derive(Debug, Default)]
pub struct InflateBudget {
    /// The file, for messages.
    file: String,
    declared: std::cell::Cell<u64>,
}

static INFLATED_THIS_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl InflateBudget {
    /// The budget of the file `file` (named in the errors).
    pub fn new(file: impl Into<String>) -> InflateBudget {
        InflateBudget {
            file: file.into(),
            declared: std::cell::Cell::new(0),
        }
    }

    /// Check a deflated entry declaring `size` inflated bytes against the entry and file
    /// limits, and count it in the file's total; an error names the file, the entry, the
    /// limit and the size found.
    pub fn declare(&self, entry: &str, size: u64) -> Result<(), FormatError> {
        let fail = |limit, found| FormatError::Inflate {
            file: self.file.clone(),
            entry: entry.to_string(),
            limit,
            found,
        };
        if size > limits::MAX_INFLATED_ENTRY {
            return Err(fail(InflateLimit::Entry, size));
        }
        let total = self.declared.get().saturating_add(size);
        if total > limits::MAX_INFLATED_PER_FILE {
            return Err(fail(InflateLimit::File, total));
        }
        self.declared.set(total);
        Ok(())
    }

    /// [`declare`](Self::declare) and [`charge_run`](Self::charge_run): an entry about
    /// to be inflated now.
    pub fn charge(&self, entry: &str, size: u64) -> Result<(), FormatError> {
        self.declare(entry, size)?;
        Self::charge_run(&self.file, entry, size)
    }

    /// Reserve `size` bytes of the run's budget before inflating them.
    pub fn charge_run(file: &str, entry: &str, size: u64) -> Result<(), FormatError> {
        use std::sync::atomic::Ordering;
        let before = INFLATED_THIS_RUN.fetch_add(size, Ordering::Relaxed);
        let total = before.saturating_add(size);
        if total > limits::MAX_INFLATED_PER_RUN {
            INFLATED_THIS_RUN.fetch_sub(size, Ordering::Relaxed);
            return Err(FormatError::Inflate {
                file: file.to_string(),
                entry: entry.to_string(),
                limit: InflateLimit::Run,
                found: total,
            });
        }
        Ok(())
    }
}

/// A hasher for keys that already are (keyed, random) hashes.
#[derive(Debug, Default)]
pub(crate) struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Which container a checkpoint came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `torch.save` zip archive (PyTorch ≥ 1.6 default).
    TorchZip,
    /// Legacy `torch.save(..., _use_new_zipfile_serialization=False)` pickle stream.
    TorchLegacy,
    /// Pre-1.0 `torch.save` tar archive (`storages`, `tensors` and `pickle` members).
    TorchLegacyTar,
    /// A plain pickle with no torch framing (no tensors).
    Pickle,
    Safetensors,
}

impl Format {
    pub fn label(self) -> &'static str {
        match self {
            Format::TorchZip => "pt-zip",
            Format::TorchLegacy => "pt-legacy",
            Format::TorchLegacyTar => "pt-legacy-tar",
            Format::Pickle => "pickle",
            Format::Safetensors => "safetensors",
        }
    }
}

/// Where a storage's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageData {
    /// `len` bytes at `offset` in the file (read in place through the mmap).
    Mapped { offset: u64, len: u64 },
    /// The first `len` bytes of a stored (uncompressed) zip entry, read in place. Where its
    /// data starts is only known from its local header, which is read (and checked) when the
    /// bytes are first needed: `scan` without hashing never touches it.
    ZipEntry {
        /// Offset of the entry's local header.
        local_header_offset: u64,
        /// The entry's name (the local header must repeat it).
        name: String,
        /// The entry's size in the archive.
        entry_size: u64,
        len: u64,
    },
    /// The first `len` bytes of a deflated zip entry, inflated only when they are read
    /// (and dropped after use): nothing is inflated while a file is opened.
    Deflated {
        /// Offset of the entry's local header.
        local_header_offset: u64,
        /// The entry's name (the local header must repeat it).
        name: String,
        compressed_size: u64,
        /// Its declared inflated size (checked against the limits when it was located;
        /// inflation stops there).
        uncompressed_size: u64,
        len: u64,
    },
    /// Bytes held in memory.
    Owned(Vec<u8>),
    /// The pickle references a storage the file does not contain.
    Missing,
}

/// One storage (a flat buffer that tensors view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Its key in the file (`data/<key>` in a zip).
    pub key: String,
    pub dtype: DType,
    /// Device it was saved from (`cpu`, `cuda:0`).
    pub location: String,
    /// Number of elements the pickle declares.
    pub numel: u64,
    pub data: StorageData,
}

/// A tensor shape as text: `[256, 9]` (every message and table writes shapes this way).
pub fn shape_text(dims: &[u64]) -> String {
    let inner: Vec<String> = dims.iter().map(u64::to_string).collect();
    format!("[{}]", inner.join(", "))
}

/// One tensor of a checkpoint: a strided view into a storage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    /// Path in the checkpoint tree, dict keys joined by `.` (`model_state_dict.encoder_A.encoder.0.weight`).
    pub path: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Strides in elements.
    pub strides: Vec<u64>,
    /// Offset into the storage, in elements.
    pub storage_offset: u64,
    /// Index into `Checkpoint::storages`.
    #[serde(skip)]
    pub storage: usize,
    pub requires_grad: bool,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Row-major contiguous strides for `shape`.
    pub fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
        let mut strides = vec![1u64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
        }
        strides
    }

    /// Whether the view is row-major contiguous (size-1 dims ignore their stride; an empty
    /// tensor is contiguous, as in PyTorch).
    pub fn is_contiguous(&self) -> bool {
        if self.shape.contains(&0) {
            return true;
        }
        let mut expected = 1u64;
        for (dim, stride) in self.shape.iter().zip(&self.strides).rev() {
            if *dim != 1 && *stride != expected {
                return false;
            }
            expected = expected.saturating_mul(*dim);
        }
        true
    }

    pub fn nbytes(&self) -> u64 {
        self.numel().saturating_mul(self.dtype.size() as u64)
    }
}

/// Something worth reporting about a file that is not a read error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The pickle references a global that tvck does not know to be safe. Nothing was
    /// imported or called; `torch.load(weights_only=False)` would have called it.
    UnsafeGlobal {
        global: String,
        /// Which pickle inside the file (`data.pkl`, `legacy pickle #3`).
        location: String,
    },
    /// The file can be read two ways (a polyglot, two zip directories, entry names that
    /// differ only in case…), and `torch.load` may take the one tvck did not: the trick
    /// is named, whatever either reading holds.
    Ambiguous { trick: String, detail: String },
    /// A TorchScript archive: `torch.load` hands it to `torch.jit.load`, which runs its
    /// `constants.pkl` and compiles and runs its `code/`.
    TorchScript {
        /// What it would execute (entry names).
        executes: Vec<String>,
    },
    /// A harmless oddity (e.g. a storage entry no tensor uses).
    Note { message: String },
}

impl Finding {
    /// Whether the file is unsafe to `torch.load(weights_only=False)` by this finding.
    pub fn is_unsafe(&self) -> bool {
        !matches!(self, Finding::Note { .. })
    }

    /// The finding's kind as the reports name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::UnsafeGlobal { .. } => "unsafe_global",
            Finding::Ambiguous { .. } => "ambiguous",
            Finding::TorchScript { .. } => "torchscript",
            Finding::Note { .. } => "note",
        }
    }

    /// A short label for tables: the global, or the trick.
    pub fn label(&self) -> String {
        match self {
            Finding::UnsafeGlobal { global, .. } => global.clone(),
            Finding::Ambiguous { trick, .. } => format!("ambiguous: {trick}"),
            Finding::TorchScript { .. } => "TorchScript archive".into(),
            Finding::Note { message } => message.clone(),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Finding::UnsafeGlobal { global, location } => format!(
                "unsafe pickle global `{global}` in {location} (not executed; torch.load(weights_only=False) would run it)"
            ),
            Finding::Ambiguous { trick, detail } => format!(
                "ambiguous file ({trick}): {detail} (torch.load may read what tvck's own reading does not)"
            ),
            Finding::TorchScript { executes } => format!(
                "TorchScript archive: torch.load hands it to torch.jit.load, which would run {} (not executed)",
                executes.join(", ")
            ),
            Finding::Note { message } => message.clone(),
        }
    }
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("not a checkpoint: {0}")]
    NotACheckpoint(String),
    #[error("truncated: {0}")]
    Truncated(String),
    /// The file is not as long as when it was opened (cut short or grown since): its
    /// bytes are read when they are needed, and these may no longer be the same file's.
    #[error("the file changed while it was read: {opened} bytes when opened, {now} now")]
    Changed { opened: u64, now: u64 },
    #[error("corrupt zip archive: {0}")]
    Zip(String),
    /// A pickle that breaks the format: at byte `offset` (of the file, where the VM knows
    /// it), while executing `opcode` (none before the first or past the last byte).
    #[error("corrupt pickle at byte {offset}: {message}")]
    Pickle {
        offset: u64,
        opcode: Option<u8>,
        message: String,
    },
    #[error("corrupt safetensors file: {0}")]
    Safetensors(String),
    #[error("{what} claims {claimed} bytes but {available} are available")]
    SizeClaim {
        what: String,
        claimed: u64,
        available: u64,
    },
    /// Past one of tvck's limits on untrusted input: which, its value, what was found
    /// (a count past the limit: where a limit is checked as it is reached, `max + 1`),
    /// and where (a pickle's location, a tensor or a zip entry; empty when nothing more
    /// is known).
    #[error("limit exceeded: {}", limit.describe(*max, *found, at))]
    Limit {
        limit: Limit,
        max: u64,
        found: u64,
        at: String,
    },
    /// A tensor (or storage) whose description cannot be read: which one, and what is
    /// wrong with it.
    #[error("tensor `{tensor}`: {problem}")]
    Tensor {
        tensor: String,
        /// Boxed: the error stays small on the paths that do not fail.
        problem: Box<TensorIssue>,
    },
    /// A deflated zip entry past one of the inflation limits (nothing was inflated past it).
    #[error("{file}: {}", inflate_text(entry, *limit, *found))]
    Inflate {
        file: String,
        entry: String,
        limit: InflateLimit,
        /// The entry's declared size ([`InflateLimit::Entry`]), or the total it brings
        /// the file or the run to.
        found: u64,
    },
}

/// [`FormatError::Inflate`]'s message after the file name.
fn inflate_text(entry: &str, limit: InflateLimit, found: u64) -> String {
    format!(
        "`{entry}` would inflate {found} bytes, past {} ({} bytes, {})",
        limit.name(),
        limit.bytes(),
        limit.what()
    )
}

/// What is wrong with a tensor's description ([`FormatError::Tensor`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorIssue {
    #[error("no such storage")]
    NoSuchStorage,
    #[error("its data is missing from the file")]
    DataMissing,
    #[error("no such tensor")]
    NoSuchTensor,
    #[error("shape {shape:?} and strides {strides:?} differ in length")]
    RankMismatch { shape: Vec<u64>, strides: Vec<u64> },
    #[error("shape {shape:?} overflows")]
    ShapeOverflow { shape: Vec<u64> },
    #[error("strides overflow")]
    StridesOverflow,
    #[error("size overflows")]
    SizeOverflow,
    /// The highest element the view reads lies past its storage.
    #[error("view needs {need} bytes of its storage but the storage holds {have}")]
    PastStorage { need: u64, have: u64 },
    /// A stride-0 (expanded) view larger than [`limits::MAX_EXPANDED_VIEW_BYTES`].
    #[error("view of shape {shape:?} expands its {storage}-byte storage to {bytes} bytes (limit {limit})")]
    ExpandedPastLimit {
        shape: Vec<u64>,
        storage: u64,
        bytes: u64,
        limit: u64,
    },
    #[error("too large for this machine")]
    TooLarge,
    #[error("dtype {0} is not supported by tvck")]
    UnsupportedDtype(String),
    #[error("{0} values cannot be compared numerically")]
    NotNumeric(String),
}

impl FormatError {
    /// The message for a place that names the file already (a report's row, a
    /// [`ReadError`]): the same text without the file name the message carries itself.
    pub fn message_without_file(&self) -> String {
        match self {
            FormatError::Inflate {
                entry,
                limit,
                found,
                ..
            } => inflate_text(entry, *limit, *found),
            other => other.to_string(),
        }
    }

    /// What to do about it, where there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            FormatError::Inflate { .. } => Some(
                "the file is a zip whose compressed entries claim more data than tvck inflates (torch.load would inflate it all into memory: a decompression bomb?); if it is yours, re-save it with torch.save, which stores tensors uncompressed",
            ),
            FormatError::Truncated(_) => Some("the file is cut short: copy it again or re-save it"),
            FormatError::Limit {
                limit: Limit::WholeRead,
                ..
            } => Some(
                "torch.save does not write zips like this one: if it is yours, load it with torch.load(weights_only=True) and save it again with torch.save",
            ),
            FormatError::Changed { .. } => Some(
                "something wrote to the file while tvck read it (a training run saving it?): run again once it is written",
            ),
            _ => None,
        }
    }
}

/// A [`FormatError`] with the file it came from.
#[derive(Debug, thiserror::Error)]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: FormatError,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.path.display(),
            self.source.message_without_file()
        )
    }
}

/// Whether a `len`-byte file may be read whole ([`limits::MAX_WHOLE_READ`]); `why` says
/// why it is not read in parts.
fn whole_read_allowed(len: u64, why: &str) -> Result<(), FormatError> {
    if len > limits::MAX_WHOLE_READ {
        return Err(FormatError::Limit {
            limit: Limit::WholeRead,
            max: limits::MAX_WHOLE_READ,
            found: len,
            at: why.to_string(),
        });
    }
    Ok(())
}

/// The bytes of a file: memory-mapped, owned (read whole, or in memory for tests), or
/// owned with holes (read sparsely, see [`sparse`]).
pub enum Source {
    Owned(Vec<u8>),
    #[cfg(unix)]
    Sparse {
        /// File-sized; the bytes in `holes` are not the file's.
        buf: Vec<u8>,
        file: File,
        holes: sparse::Holes,
    },
}

impl Source {
    /// The file's bytes (for a sparse source, only those outside its holes are).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Source::Owned(v) => v,
            #[cfg(unix)]
            Source::Sparse { buf, .. } => buf,
        }
    }

    /// Whether any byte of `[start, end)` is unread.
    fn unread(&self, start: u64, end: u64) -> bool {
        match self {
            #[cfg(unix)]
            Source::Sparse { holes, .. } => holes.overlaps(start, end),
            _ => false,
        }
    }
}

impl Source {
    /// The file's bytes `[start, end)`, read from the file (for a range of a sparse
    /// source's holes; the range lies inside the file).
    fn read_range(&self, start: u64, end: u64) -> Result<Vec<u8>, FormatError> {
        let len = usize::try_from(end - start).map_err(|_| FormatError::Limit {
            limit: Limit::AddressSpace,
            max: usize::MAX as u64,
            found: end - start,
            at: String::new(),
        })?;
        match self {
            #[cfg(unix)]
            Source::Sparse { file, buf, .. } => {
                let mut out = vec![0u8; len];
                sparse::read_at(file, &mut out, start, buf.len() as u64)?;
                Ok(out)
            }
            _ => Ok(self.bytes()[start as usize..start as usize + len].to_vec()),
        }
    }

    /// A reader over the file's bytes `[start, end)` (from memory where they are there).
    fn reader(&self, start: u64, end: u64) -> Box<dyn std::io::Read + '_> {
        match self {
            #[cfg(unix)]
            Source::Sparse { file, .. } => Box::new(sparse::RangeReader::new(file, start, end)),
            _ => Box::new(&self.bytes()[start as usize..end as usize]),
        }
    }

    /// [`zip::local_data_offset`] of an entry, its local header read from the file when
    /// it lies in a hole.
    fn local_data_offset(&self, lho: u64, name: &str, size: u64) -> Result<u64, FormatError> {
        let bytes = self.bytes();
        let file_len = bytes.len() as u64;
        let header_end = lho.saturating_add((zip::LOCAL_LEN + name.len()) as u64);
        if !self.unread(lho, header_end.min(file_len)) {
            return zip::local_data_offset(bytes, lho, name, size);
        }
        // The fixed part, then the name it gives (as many bytes as the file has).
        let fixed_end = lho.saturating_add(zip::LOCAL_LEN as u64).min(file_len);
        let mut head = self.read_range(lho, fixed_end.max(lho))?;
        if head.len() == zip::LOCAL_LEN {
            let name_len = u64::from(u16::from_le_bytes([head[26], head[27]]));
            let name_end = fixed_end.saturating_add(name_len).min(file_len);
            head.extend(self.read_range(fixed_end, name_end)?);
        }
        zip::local_data_offset_in(&head, lho, file_len, name, size)
    }
}

impl input::Input for Source {
    fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    fn get(&mut self, start: u64, end: u64) -> Result<&[u8], FormatError> {
        #[cfg(unix)]
        if let Source::Sparse { buf, file, holes } = self {
            let len = buf.len() as u64;
            for (s, e) in holes.take(start.min(len), end.min(len)) {
                sparse::read_at(file, &mut buf[s as usize..e as usize], s, len)?;
            }
        }
        Ok(input::clamp(self.bytes(), start, end))
    }

    fn all(&self) -> &[u8] {
        self.bytes()
    }

    fn unread(&self, start: u64, end: u64) -> bool {
        Source::unread(self, start, end)
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({} bytes)", self.bytes().len())
    }
}

/// What a format parser produces from a file's bytes.
#[derive(Debug, Default)]
pub struct Parsed {
    pub root: Value,
    pub tensors: Vec<TensorInfo>,
    pub storages: Vec<Storage>,
    pub findings: Vec<Finding>,
    /// Storage bytes are big-endian (zip `byteorder` = `big`, or legacy sys_info).
    pub big_endian: bool,
}

/// A checkpoint file, read without executing anything.
#[derive(Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub format: Format,
    pub file_size: u64,
    /// The whole decoded tree (tensors as `Value::Tensor(index)`).
    pub root: Value,
    pub tensors: Vec<TensorInfo>,
    pub storages: Vec<Storage>,
    pub findings: Vec<Finding>,
    pub big_endian: bool,
    source: Source,
}

/// Keys under which a checkpoint dict keeps its model state, in order of preference.
pub const MODEL_STATE_KEYS: [&str; 3] = ["model_state_dict", "model_state", "model"];

/// The model's state_dict inside a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ModelState {
    /// The top-level key it was found under; `None` for a bare state_dict.
    pub root_key: Option<String>,
    /// (state_dict key, index into `Checkpoint::tensors`), in file order.
    pub entries: Vec<(String, usize)>,
}

impl Checkpoint {
    /// Open and parse a checkpoint (format detected from the content, not the extension).
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, ReadError> {
        let path = path.as_ref();
        Self::open_inner(path).map_err(|source| ReadError {
            path: path.to_path_buf(),
            source,
        })
    }

    fn open_inner(path: &Path) -> Result<Checkpoint, FormatError> {
        // Read, not mapped: a file truncated while mapped would kill the process (SIGBUS).
        // A torch.save zip is read without its storages, which are read when wanted;
        // other files (but odd zips) lazily, tensor data when wanted.
        Self::open_sparse_into(path, Vec::new()).map_err(|(e, _)| e.source)
    }

    /// Open and parse a checkpoint by reading it whole into `buf` (cleared first; its
    /// capacity is reused): for callers that read every byte anyway (hashing), one `read`
    /// into a recycled buffer costs less than mapping and unmapping the file's pages
    /// (docs/benchmarks.md). The buffer comes back with [`Checkpoint::into_buffer`], or
    /// with the error.
    pub fn open_into(
        path: impl AsRef<Path>,
        buf: Vec<u8>,
    ) -> Result<Checkpoint, (ReadError, Vec<u8>)> {
        let path = path.as_ref();
        match open_regular(path) {
            Ok((file, len)) => Self::read_whole(path, file, len, buf),
            Err(source) => {
                let path = path.to_path_buf();
                Err((ReadError { path, source }, buf))
            }
        }
    }

    /// Read the opened `file` (`len` bytes by its metadata) whole into `buf` and parse it.
    fn read_whole(
        path: &Path,
        mut file: File,
        len: u64,
        mut buf: Vec<u8>,
    ) -> Result<Checkpoint, (ReadError, Vec<u8>)> {
        use std::io::Read;
        buf.clear();
        buf.reserve(usize::try_from(len).unwrap_or(0));
        // No more than the file held when opened (one still being written stops there).
        match (&mut file).take(len).read_to_end(&mut buf) {
            Err(e) => Err(Self::io_failure(path, e, buf)),
            Ok(0) => {
                let path = path.to_path_buf();
                Err((
                    ReadError {
                        path,
                        source: FormatError::Empty,
                    },
                    buf,
                ))
            }
            Ok(_) => Self::from_source(path.to_path_buf(), Source::Owned(buf)).map_err(|source| {
                // from_source consumed the buffer: hand back a fresh one.
                let path = path.to_path_buf();
                (ReadError { path, source }, Vec::new())
            }),
        }
    }

    fn io_failure(path: &Path, e: std::io::Error, buf: Vec<u8>) -> (ReadError, Vec<u8>) {
        let path = path.to_path_buf();
        let source = FormatError::Io(e);
        (ReadError { path, source }, buf)
    }

    /// The buffer of a checkpoint read with [`Checkpoint::open_into`] (empty for a mapped one).
    pub fn into_buffer(self) -> Vec<u8> {
        match self.source {
            Source::Owned(v) => v,
            #[cfg(unix)]
            Source::Sparse { buf, .. } => buf,
        }
    }

    /// Like [`Checkpoint::open_into`], but a `torch.save` zip is read without its storage
    /// entries (stored or deflated): the directory, the pickles and the small entries are
    /// read, and a storage's bytes are read from the file (or inflated) when a tensor of
    /// it is read, for that read only, unless [`Checkpoint::load_storages`] has loaded
    /// them (`scan --hash` loads the model state's and skips, say, the optimizer's).
    /// Any other file but a zip (safetensors, legacy streams, tar archives) is read
    /// lazily: its headers and pickles as the parsers ask for them, its tensor data when
    /// wanted (see [`input`]). Zips shaped unlike `torch.save`'s, and files under 32 KiB,
    /// are read whole. `buf` becomes as long as the file, but the holes of a fresh buffer
    /// are never touched, so they take no memory.
    pub fn open_sparse_into(
        path: impl AsRef<Path>,
        mut buf: Vec<u8>,
    ) -> Result<Checkpoint, (ReadError, Vec<u8>)> {
        let path = path.as_ref();
        let (file, len) = match open_regular(path) {
            Ok(opened) => opened,
            Err(source) => {
                let path = path.to_path_buf();
                return Err((ReadError { path, source }, buf));
            }
        };
        #[cfg(unix)]
        let mut odd = "";
        #[cfg(unix)]
        let planned = match sparse::read(&file, len, &mut buf) {
            // Not a plain torch.save zip: anything else but a zip is read lazily.
            Ok(Err(why)) => {
                odd = why;
                sparse::lazy(&file, len, &mut buf)
            }
            Ok(Ok(holes)) => Ok(Some(holes)),
            Err(e) => Err(e),
        };
        #[cfg(unix)]
        match planned {
            Err(e) => return Err(Self::io_failure(path, e, buf)),
            Ok(None) => {}
            Ok(Some(holes)) => {
                let source = Source::Sparse { buf, file, holes };
                return Self::from_source(path.to_path_buf(), source).map_err(|source| {
                    let path = path.to_path_buf();
                    (ReadError { path, source }, Vec::new())
                });
            }
        }
        // Not read sparsely (`sparse::read` only used positioned reads): read it whole.
        #[cfg(not(unix))]
        let odd = "not read in parts on this platform";
        if let Err(source) = whole_read_allowed(len, odd) {
            let path = path.to_path_buf();
            return Err((ReadError { path, source }, buf));
        }
        Self::read_whole(path, file, len, buf)
    }

    /// Read the bytes of these storages if the checkpoint was opened sparsely (else there
    /// is nothing to do).
    pub fn load_storages(&mut self, storages: &[usize]) -> Result<(), FormatError> {
        #[cfg(unix)]
        if let Source::Sparse { buf, file, holes } = &mut self.source {
            if holes.is_empty() {
                return Ok(());
            }
            let mut starts = Vec::new();
            let mut ranges = Vec::new();
            for s in storages.iter().filter_map(|&i| self.storages.get(i)) {
                match &s.data {
                    StorageData::ZipEntry {
                        local_header_offset,
                        ..
                    }
                    | StorageData::Deflated {
                        local_header_offset,
                        ..
                    } => starts.push(*local_header_offset),
                    StorageData::Mapped { offset, len } => {
                        ranges.push((*offset, offset.saturating_add(*len)));
                    }
                    _ => {}
                }
            }
            holes.fill(file, buf, &starts)?;
            let opened = buf.len() as u64;
            ranges.sort_unstable();
            for (s, e) in ranges {
                for (a, b) in holes.take(s.min(opened), e.min(opened)) {
                    sparse::read_at(file, &mut buf[a as usize..b as usize], a, opened)?;
                }
            }
        }
        let _ = storages;
        Ok(())
    }

    /// Parse bytes already in memory (`path` is only used in messages).
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Checkpoint, ReadError> {
        let path = path.into();
        if bytes.is_empty() {
            return Err(ReadError {
                path,
                source: FormatError::Empty,
            });
        }
        Self::from_source(path.clone(), Source::Owned(bytes))
            .map_err(|source| ReadError { path, source })
    }

    fn from_source(path: PathBuf, mut source: Source) -> Result<Checkpoint, FormatError> {
        #[cfg(unix)]
        if let Source::Sparse { buf, file, holes } = &mut source {
            // More than one end record: torch's reading may use a directory whose entries
            // lie in the holes. Such a file is read whole. (A file read lazily has its
            // first byte unread: it is no zip.)
            if !holes.overlaps(0, 1) && zip::eocd_candidates(buf).len() > 1 {
                whole_read_allowed(buf.len() as u64, "more than one end record")?;
                holes.fill_all(file, buf)?;
            }
        }
        let file_size = source.bytes().len() as u64;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let budget = InflateBudget::new(path.display().to_string());
        let torch = loader::torch_reading(&name, &mut source, &budget)?;
        let (format, mut parsed) = match detect_and_parse_with(&name, &mut source, &budget) {
            Ok(read) => read,
            // A payload found is a finding, whatever else fails to parse.
            Err(e) if torch.findings.iter().any(Finding::is_unsafe) => {
                let format = match torch.loader {
                    loader::Loader::Zip | loader::Loader::TorchScript => Format::TorchZip,
                    loader::Loader::Safetensors => Format::Safetensors,
                    loader::Loader::Tar => Format::TorchLegacyTar,
                    loader::Loader::Pickle => Format::Pickle,
                };
                let mut parsed = Parsed::default();
                parsed.findings.push(Finding::Note {
                    message: format!("the rest of the file cannot be read: {e}"),
                });
                (format, parsed)
            }
            Err(e) => return Err(e),
        };
        merge_findings(&mut parsed.findings, torch.findings);
        Ok(Checkpoint {
            path,
            format,
            file_size,
            root: parsed.root,
            tensors: parsed.tensors,
            storages: parsed.storages,
            findings: parsed.findings,
            big_endian: parsed.big_endian,
            source,
        })
    }

    /// The raw file bytes. For a checkpoint from [`Checkpoint::open_sparse_into`], the
    /// storages not loaded yet are not among them (their places hold other bytes): go
    /// through [`Checkpoint::tensor_bytes`], which refuses them.
    pub fn bytes(&self) -> &[u8] {
        self.source.bytes()
    }

    pub fn has_unsafe_globals(&self) -> bool {
        self.findings.iter().any(Finding::is_unsafe)
    }

    /// Each unsafe-global finding's message (the global and where it was met).
    pub fn unsafe_global_messages(&self) -> Vec<String> {
        self.findings
            .iter()
            .filter(|f| f.is_unsafe())
            .map(Finding::message)
            .collect()
    }

    /// The bytes of a storage: borrowed when they are in memory, else read (a storage of
    /// a sparsely opened file) or inflated (a deflated one) for this call only.
    pub fn storage_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let storage = self
            .storages
            .get(index)
            .ok_or_else(|| FormatError::Tensor {
                tensor: format!("storage #{index}"),
                problem: Box::new(TensorIssue::NoSuchStorage),
            })?;
        match &storage.data {
            StorageData::Owned(v) => Ok(Cow::Borrowed(v)),
            StorageData::Mapped { offset, len } => {
                let bytes = self.bytes();
                let end = offset
                    .checked_add(*len)
                    .filter(|e| *e <= bytes.len() as u64);
                match end {
                    Some(end) if !self.source.unread(*offset, end) => {
                        Ok(Cow::Borrowed(&bytes[*offset as usize..end as usize]))
                    }
                    Some(end) => self.source.read_range(*offset, end).map(Cow::Owned),
                    None => Err(FormatError::SizeClaim {
                        what: format!("storage `{}`", storage.key),
                        claimed: *len,
                        available: (bytes.len() as u64).saturating_sub(*offset),
                    }),
                }
            }
            StorageData::ZipEntry {
                local_header_offset,
                name,
                entry_size,
                len,
            } => {
                let offset =
                    self.source
                        .local_data_offset(*local_header_offset, name, *entry_size)?;
                // local_data_offset checked offset + entry_size <= file length.
                let end = offset + (*len).min(*entry_size);
                if self.source.unread(offset, end) {
                    return self.source.read_range(offset, end).map(Cow::Owned);
                }
                Ok(Cow::Borrowed(&self.bytes()[offset as usize..end as usize]))
            }
            StorageData::Deflated {
                local_header_offset,
                name,
                compressed_size,
                uncompressed_size,
                len,
            } => {
                let file = self.path.display().to_string();
                InflateBudget::charge_run(&file, name, *uncompressed_size)?;
                let offset =
                    self.source
                        .local_data_offset(*local_header_offset, name, *compressed_size)?;
                let end = offset + compressed_size;
                let mut out = if self.source.unread(offset, end) {
                    let reader = self.source.reader(offset, end);
                    zip::inflate(reader, *compressed_size, name, *uncompressed_size)?
                } else {
                    let raw = &self.bytes()[offset as usize..end as usize];
                    zip::inflate(raw, *compressed_size, name, *uncompressed_size)?
                };
                out.truncate(usize::try_from(*len).unwrap_or(usize::MAX));
                Ok(Cow::Owned(out))
            }
            StorageData::Missing => Err(FormatError::Tensor {
                tensor: format!("storage `{}`", storage.key),
                problem: Box::new(TensorIssue::DataMissing),
            }),
        }
    }

    /// Whether reading storage `index` needs no file read and no inflation.
    pub fn storage_in_memory(&self, index: usize) -> bool {
        match self.storages.get(index).map(|s| &s.data) {
            Some(StorageData::Owned(_) | StorageData::Missing) | None => true,
            Some(StorageData::Deflated { .. }) => false,
            Some(StorageData::Mapped { offset, len }) => {
                !self.source.unread(*offset, offset.saturating_add(*len))
            }
            Some(StorageData::ZipEntry {
                local_header_offset: lho,
                name,
                entry_size,
                len,
            }) => {
                let header_end = lho.saturating_add((zip::LOCAL_LEN + name.len()) as u64);
                if self.source.unread(*lho, header_end) {
                    return false;
                }
                match zip::local_data_offset(self.bytes(), *lho, name, *entry_size) {
                    Ok(at) => !self.source.unread(at, at + (*len).min(*entry_size)),
                    Err(_) => true, // an error, read from memory
                }
            }
        }
    }

    /// A tensor's logical bytes: row-major contiguous, little-endian. Borrowed from the
    /// file when the tensor already is that and its bytes are in memory; otherwise read,
    /// inflated or gathered into a new buffer.
    pub fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let t = self.tensors.get(index).ok_or_else(|| FormatError::Tensor {
            tensor: format!("#{index}"),
            problem: Box::new(TensorIssue::NoSuchTensor),
        })?;
        match self.storage_bytes(t.storage)? {
            Cow::Borrowed(storage) => logical_bytes(t, storage, self.big_endian),
            Cow::Owned(storage) => {
                let view = logical_bytes(t, &storage, self.big_endian)?;
                // The whole storage as it is: hand it over without a copy.
                let whole = matches!(&view, Cow::Borrowed(b) if b.len() == storage.len());
                Ok(Cow::Owned(if whole {
                    drop(view);
                    storage
                } else {
                    view.into_owned()
                }))
            }
        }
    }

    /// The model state dict: under `model_state_dict`, `model_state`, `model`, or the
    /// root itself when the file is a bare state_dict.
    pub fn model_state(&self) -> Option<ModelState> {
        self.model_state_ref().map(|ms| ModelState {
            root_key: ms.root_key.map(str::to_string),
            entries: ms
                .entries
                .into_iter()
                .map(|(k, i)| (k.to_string(), i))
                .collect(),
        })
    }

    /// The tensors that stand for the model's weights (what a weights fingerprint covers
    /// and a state-dict export writes): the model state's, by state_dict key, when there is
    /// one (`model_state`, computed once by the caller), else every tensor by path.
    pub fn weight_tensors<'a>(
        &'a self,
        model_state: Option<&ModelStateRef<'a>>,
    ) -> Vec<(&'a str, usize)> {
        match model_state {
            Some(ms) => ms.entries.clone(),
            None => self
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.path.as_str(), i))
                .collect(),
        }
    }

    /// [`model_state`](Self::model_state) borrowing its keys from the tree.
    pub fn model_state_ref(&self) -> Option<ModelStateRef<'_>> {
        for key in MODEL_STATE_KEYS {
            if let Some(v @ Value::Dict(_)) = self.root.get(key) {
                let entries = state_entries(v);
                if !entries.is_empty() {
                    return Some(ModelStateRef {
                        root_key: Some(key),
                        entries,
                    });
                }
            }
        }
        let entries = state_entries(&self.root);
        if entries.is_empty() {
            None
        } else {
            Some(ModelStateRef {
                root_key: None,
                entries,
            })
        }
    }

    /// Total number of elements over all tensors of the model state (or all tensors).
    pub fn parameter_count(&self) -> u64 {
        self.parameter_count_of(self.model_state_ref().as_ref())
    }

    /// [`parameter_count`](Self::parameter_count) for an already computed model state.
    pub fn parameter_count_of(&self, model_state: Option<&ModelStateRef<'_>>) -> u64 {
        match model_state {
            Some(ms) => ms
                .entries
                .iter()
                .map(|(_, i)| self.tensors[*i].numel())
                .sum(),
            None => self.tensors.iter().map(TensorInfo::numel).sum(),
        }
    }
}

/// [`ModelState`] borrowing from its checkpoint.
#[derive(Debug, Clone)]
pub struct ModelStateRef<'a> {
    /// The top-level key it was found under; `None` for a bare state_dict.
    pub root_key: Option<&'static str>,
    /// (state_dict key, index into `Checkpoint::tensors`), in file order.
    pub entries: Vec<(&'a str, usize)>,
}

/// The direct tensor entries of a state-dict-like dict.
fn state_entries(v: &Value) -> Vec<(&str, usize)> {
    match v {
        Value::Dict(items) => items
            .iter()
            .filter_map(|(k, v)| match (k, v) {
                (Value::Str(k), Value::Tensor(i)) => Some((k.as_str(), *i)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Add the findings of torch's reading that tvck's own reading lacks (one finding per
/// unsafe global, the first location kept).
fn merge_findings(into: &mut Vec<Finding>, extra: Vec<Finding>) {
    for f in extra {
        let dup = into.iter().any(|g| match (g, &f) {
            (Finding::UnsafeGlobal { global: a, .. }, Finding::UnsafeGlobal { global: b, .. }) => {
                a == b
            }
            _ => *g == f,
        });
        if !dup {
            into.push(f);
        }
    }
}

/// Open `path` for reading only if it is a regular file: a FIFO, socket or device is
/// refused before it is opened (opening a FIFO blocks), and the opened file is checked
/// again (it may have been swapped in between; it was opened non-blocking).
pub fn open_regular(path: &Path) -> Result<(File, u64), FormatError> {
    let not_regular = |ft: std::fs::FileType| {
        FormatError::NotACheckpoint(format!("not a regular file ({})", file_type_name(ft)))
    };
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK (Linux, macOS and the BSDs agree on 0o4000 only on Linux).
        #[cfg(target_os = "linux")]
        opts.custom_flags(0o4000);
        #[cfg(any(target_os = "macos", target_os = "freebsd"))]
        opts.custom_flags(0x0004);
    }
    let file = opts.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let len = meta.len();
    if len == 0 {
        return Err(FormatError::Empty);
    }
    Ok((file, len))
}

/// What kind of non-regular file this is, in words.
pub fn file_type_name(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    if ft.is_dir() {
        "a folder"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Detect the container from the first bytes and parse it (as a file not named
/// `.safetensors`: see [`detect_and_parse_named`]).
pub fn detect_and_parse(bytes: &[u8]) -> Result<(Format, Parsed), FormatError> {
    detect_and_parse_named("", bytes)
}

/// Detect the container the way `torch.load` picks its loader for a file called `name`
/// (see [`loader`]) and parse it.
pub fn detect_and_parse_named(name: &str, bytes: &[u8]) -> Result<(Format, Parsed), FormatError> {
    detect_and_parse_with(name, &mut input::Whole(bytes), &InflateBudget::default())
}

/// How much of a file's start tells its container (a tar header is 512 bytes).
const HEAD: u64 = 512;

fn detect_and_parse_with(
    name: &str,
    input: &mut dyn input::Input,
    budget: &InflateBudget,
) -> Result<(Format, Parsed), FormatError> {
    let len = input.len();
    if len == 0 {
        return Err(FormatError::Empty);
    }
    // torch.load hands a path ending in .safetensors to safetensors, whatever it holds.
    if name.ends_with(".safetensors") {
        return Ok((Format::Safetensors, safetensors::read_input(input)?));
    }
    let head = input.get(0, HEAD)?.to_vec();
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        // A zip is in memory (read whole, or all but its storages: see `sparse`).
        return Ok((Format::TorchZip, torch::read_zip_with(input.all(), budget)?));
    }
    if loader::is_tar(&head) {
        return Ok((Format::TorchLegacyTar, torch::read_tar_input(input)?));
    }
    // torch unpickles anything else from byte 0, whatever the protocol.
    let pickled = torch::read_legacy_input(input);
    match pickled {
        Ok(parsed) => {
            let format = if parsed.storages.is_empty() && !torch::is_legacy_torch(&head) {
                Format::Pickle
            } else {
                Format::TorchLegacy
            };
            Ok((format, parsed))
        }
        // A safetensors file with another name: torch.load could not read it, tvck can.
        Err(_) if safetensors::looks_like_safetensors_head(&head, len) => {
            Ok((Format::Safetensors, safetensors::read_input(input)?))
        }
        Err(e) if head[0] == pickle::opcodes::PROTO => Err(e),
        Err(e) if loader::sweep_at(input, 0, len)?.0.end.is_some() => Err(e),
        Err(_) => Err(FormatError::NotACheckpoint(describe_magic(&head))),
    }
}

fn describe_magic(bytes: &[u8]) -> String {
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let printable = bytes
        .iter()
        .take(64)
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    format!(
        "unrecognised content (first bytes {}{}); expected a torch zip (PK..), a pickle (0x80) or safetensors",
        head.join(" "),
        if printable { ", looks like text" } else { "" }
    )
}

/// Gather a strided view of `storage` into row-major little-endian bytes.
pub fn logical_bytes<'a>(
    t: &TensorInfo,
    storage: &'a [u8],
    big_endian: bool,
) -> Result<Cow<'a, [u8]>, FormatError> {
    let esize = t.dtype.size() as u64;
    let err = |problem: TensorIssue| FormatError::Tensor {
        tensor: t.path.clone(),
        problem: Box::new(problem),
    };
    if t.shape.len() != t.strides.len() {
        return Err(err(TensorIssue::RankMismatch {
            shape: t.shape.clone(),
            strides: t.strides.clone(),
        }));
    }
    let overflow = || {
        err(TensorIssue::ShapeOverflow {
            shape: t.shape.clone(),
        })
    };
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |a, d| a.checked_mul(*d))
        .ok_or_else(overflow)?;
    // Highest element index touched, checked against the storage.
    if numel > 0 {
        let mut last = t.storage_offset;
        for (d, s) in t.shape.iter().zip(&t.strides) {
            last = (d - 1)
                .checked_mul(*s)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| err(TensorIssue::StridesOverflow))?;
        }
        let need = last
            .checked_add(1)
            .and_then(|n| n.checked_mul(esize))
            .ok_or_else(|| err(TensorIssue::SizeOverflow))?;
        if need > storage.len() as u64 {
            return Err(err(TensorIssue::PastStorage {
                need,
                have: storage.len() as u64,
            }));
        }
    }
    let nbytes64 = numel.checked_mul(esize).ok_or_else(overflow)?;
    // A view may be larger than its storage only through stride-0 (expanded) dimensions.
    // Never let an untrusted header size a huge buffer: refuse expansions past the limit.
    if nbytes64 > storage.len() as u64 && nbytes64 > limits::MAX_EXPANDED_VIEW_BYTES {
        return Err(err(TensorIssue::ExpandedPastLimit {
            shape: t.shape.clone(),
            storage: storage.len() as u64,
            bytes: nbytes64,
            limit: limits::MAX_EXPANDED_VIEW_BYTES,
        }));
    }
    let nbytes = usize::try_from(nbytes64).map_err(|_| err(TensorIssue::TooLarge))?;
    if numel == 0 {
        // An empty view reads nothing, whatever its offset says.
        return Ok(Cow::Borrowed(&[]));
    }
    let out: Cow<'a, [u8]> = if t.is_contiguous() {
        let start = (t.storage_offset * esize) as usize;
        Cow::Borrowed(&storage[start..start + nbytes])
    } else {
        let mut out = Vec::with_capacity(nbytes);
        let ndim = t.shape.len();
        let mut idx = vec![0u64; ndim];
        let es = esize as usize;
        for _ in 0..numel {
            let off: u64 =
                t.storage_offset + idx.iter().zip(&t.strides).map(|(i, s)| i * s).sum::<u64>();
            let b = (off * esize) as usize;
            out.extend_from_slice(&storage[b..b + es]);
            for d in (0..ndim).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Cow::Owned(out)
    };
    let unit = t.dtype.swap_unit();
    if big_endian && unit > 1 {
        let mut owned = out.into_owned();
        for chunk in owned.chunks_exact_mut(unit) {
            chunk.reverse();
        }
        return Ok(Cow::Owned(owned));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn a_zip_read_whole_past_the_limit_is_refused_unread() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.pt");
        let mut f = File::create(&path).unwrap();
        // A zip's first bytes and no end record: not torch.save's shape, so read whole.
        f.write_all(b"PK\x03\x04").unwrap();
        // A hole: no disk, and no memory unless read.
        f.set_len(limits::MAX_WHOLE_READ + 1).unwrap();
        drop(f);
        let (e, _) = Checkpoint::open_sparse_into(&path, Vec::new()).unwrap_err();
        assert_eq!(e.path, path);
        match &e.source {
            FormatError::Limit {
                limit: Limit::WholeRead,
                max,
                found,
                at,
            } => {
                assert_eq!((*max, *found), (1 << 30, (1 << 30) + 1));
                assert!(at.contains("end record"), "{at}");
            }
            other => panic!("{other:?}"),
        }
        let text = e.to_string();
        for w in [
            "odd.pt",
            "read whole",
            "1073741825",
            "MAX_WHOLE_READ, 1073741824",
        ] {
            assert!(text.contains(w), "no `{w}` in {text}");
        }
        assert!(e.source.hint().unwrap().contains("torch.save"));
        // The limit is inclusive (a file of exactly MAX_WHOLE_READ bytes is read).
        assert!(whole_read_allowed(limits::MAX_WHOLE_READ, "").is_ok());
    }

    #[test]
    fn open_into_reads_like_open_and_recycles_its_buffer() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints");
        let mut buf = Vec::new();
        for f in [
            "v5_11/best.pt",
            "exports/v5_12_4.safetensors",
            "exports/v5_12_4_legacy.pt",
        ] {
            let mapped = Checkpoint::open(root.join(f)).unwrap();
            let read = Checkpoint::open_into(root.join(f), buf).unwrap();
            assert_eq!(read.tensors, mapped.tensors, "{f}");
            assert_eq!(read.root, mapped.root, "{f}");
            for i in 0..mapped.tensors.len() {
                assert_eq!(
                    read.tensor_bytes(i).unwrap(),
                    mapped.tensor_bytes(i).unwrap()
                );
            }
            buf = read.into_buffer();
            assert_eq!(buf.len() as u64, mapped.file_size);
        }
        let cap = buf.capacity();
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pt");
        std::fs::write(&empty, b"").unwrap();
        let (e, buf) = Checkpoint::open_into(&empty, buf).unwrap_err();
        assert!(matches!(e.source, FormatError::Empty));
        assert_eq!(buf.capacity(), cap, "the buffer comes back with the error");
        let (e, _) = Checkpoint::open_into(dir.path().join("missing.pt"), buf).unwrap_err();
        assert!(matches!(e.source, FormatError::Io(_)));
    }

    #[test]
    fn a_corrupt_local_header_is_found_when_the_bytes_are_read() {
        use crate::format::write::{pt, TensorData};
        let root = Value::Dict(vec![(Value::Str("w".into()), Value::Tensor(0))]);
        let t = [TensorData::new(DType::F32, vec![2], vec![0u8; 8])];
        let mut bytes = Vec::new();
        pt::write_pt(&root, &t, &pt::PtOptions::default(), &mut bytes).unwrap();
        let lho = zip::ZipArchive::parse(&bytes)
            .unwrap()
            .find("archive/data/0")
            .unwrap()
            .local_header_offset as usize;
        bytes[lho] = b'X';
        // Opening reads headers and the pickle only: fine.
        let c = Checkpoint::from_bytes("c.pt", bytes).unwrap();
        assert_eq!(c.tensors.len(), 1);
        // Reading the tensor finds the damage, with the entry named.
        let e = c.tensor_bytes(0).unwrap_err().to_string();
        assert!(
            e.contains("no local header") && e.contains("archive/data/0"),
            "{e}"
        );
    }

    fn tensor(shape: &[u64], strides: &[u64], offset: u64) -> TensorInfo {
        TensorInfo {
            path: "t".into(),
            dtype: DType::U8,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            storage_offset: offset,
            storage: 0,
            requires_grad: false,
        }
    }

    #[test]
    fn contiguous_is_borrowed() {
        let storage: Vec<u8> = (0..12).collect();
        let t = tensor(&[3, 4], &[4, 1], 0);
        let b = logical_bytes(&t, &storage, false).unwrap();
        assert!(matches!(b, Cow::Borrowed(_)));
        assert_eq!(&*b, &storage[..]);
    }

    #[test]
    fn transposed_view_is_gathered() {
        let storage: Vec<u8> = (0..6).collect(); // [[0,1,2],[3,4,5]]
        let t = tensor(&[3, 2], &[1, 3], 0); // its transpose
        let b = logical_bytes(&t, &storage, false).unwrap();
        assert_eq!(&*b, &[0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn offset_and_bounds() {
        let storage: Vec<u8> = (0..6).collect();
        let t = tensor(&[2], &[1], 4);
        assert_eq!(&*logical_bytes(&t, &storage, false).unwrap(), &[4, 5]);
        let t = tensor(&[3], &[1], 4);
        assert!(logical_bytes(&t, &storage, false).is_err());
        let t = tensor(&[u64::MAX, 2], &[2, 1], 0);
        assert!(logical_bytes(&t, &storage, false).is_err());
    }

    #[test]
    fn big_endian_is_swapped() {
        let storage = vec![0x3f, 0x80, 0x00, 0x00];
        let mut t = tensor(&[1], &[1], 0);
        t.dtype = DType::F32;
        let b = logical_bytes(&t, &storage, true).unwrap();
        assert_eq!(f32::from_le_bytes(b[..4].try_into().unwrap()), 1.0);
    }

    #[test]
    fn huge_expanded_view_is_refused_without_allocating() {
        let storage = vec![0u8; 4];
        let t = tensor(&[1 << 40], &[0], 0);
        let e = logical_bytes(&t, &storage, false).unwrap_err();
        assert!(e.to_string().contains("expands"), "{e}");
        // A small expansion is fine.
        let t = tensor(&[3, 4], &[0, 1], 0);
        assert_eq!(logical_bytes(&t, &storage, false).unwrap().len(), 12);
    }

    #[test]
    fn empty_tensor() {
        let t = tensor(&[0, 3], &[3, 1], 0);
        assert!(logical_bytes(&t, &[], false).unwrap().is_empty());
        // An empty view whose offset lies past its storage reads nothing (no panic).
        let t = tensor(&[0, 2], &[0, 0], 5);
        assert!(logical_bytes(&t, &[0u8; 4], false).unwrap().is_empty());
        assert!(t.is_contiguous());
    }

    #[test]
    fn contiguity() {
        assert!(tensor(&[2, 3], &[3, 1], 0).is_contiguous());
        assert!(!tensor(&[2, 3], &[1, 2], 0).is_contiguous());
        assert!(tensor(&[1, 3], &[99, 1], 0).is_contiguous());
        assert_eq!(TensorInfo::contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
    }
}
