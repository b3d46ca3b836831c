//! Writing checkpoints: torch zip (`.pt`) and `.safetensors`, plus an atomic file helper.
//!
//! * [`pt::write_pt`] writes a value tree and its tensors exactly in the layout
//!   `torch.save` uses (PyTorch ≥ 1.6 zip format, pickle protocol 2), loadable with
//!   `torch.load(path, weights_only=True)`.
//! * [`safetensors::write_safetensors`] writes named tensors and string metadata the way
//!   the reference `safetensors` implementation does.
//! * [`write_atomic`] writes a file through a temporary file in the same folder, so a
//!   reader never sees a half-written checkpoint.
//!
//! Tensors are given as [`TensorData`]: dtype, shape and *logical* bytes (row-major,
//! little-endian), which is what [`Checkpoint::tensor_bytes`] yields. Whatever the
//! source layout was (views, storage offsets, shared or big-endian storages), every
//! tensor is written contiguous in a storage of its own.
//!
//! Re-writing a checkpoint that was read:
//!
//! ```no_run
//! use tvck::format::Checkpoint;
//! use tvck::format::write::{self, pt};
//!
//! let ckpt = Checkpoint::open("in.pt")?;
//! let tensors = write::tensors_from_checkpoint(&ckpt)?;
//! write::write_atomic("out.pt", false, |w| {
//!     pt::write_pt(&ckpt.root, &tensors, &pt::PtOptions::default(), w)
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod pickle;
pub mod pt;
pub mod safetensors;
pub mod zip;

use std::borrow::Cow;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{limits, Checkpoint, DType, FormatError};

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing to the output stream failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// A file-system step of [`write_atomic`] failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The target exists and overwriting was not asked for.
    #[error("`{}` already exists (not overwritten)", .0.display())]
    Exists(PathBuf),
    /// A value of the tree cannot be written (e.g. an object that
    /// `torch.load(weights_only=True)` would reject).
    #[error("cannot write the value at `{path}`: {message}")]
    Value { path: String, message: String },
    /// A tensor's description is inconsistent or unsupported by the target format.
    #[error("cannot write tensor `{tensor}`: {problem}")]
    Tensor {
        tensor: String,
        problem: TensorProblem,
    },
    /// Something exceeds what the format (or tvck's reader) can hold: which limit, its
    /// value, what was found, and where in the tree (empty when it is not about a place).
    #[error("limit exceeded: {}", limit.describe(*max, *found, at))]
    Limit {
        limit: WriteLimit,
        max: u64,
        found: u64,
        at: String,
    },
    /// Bad arguments (names, options).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// Which limit of a written format a value ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteLimit {
    /// [`limits::MAX_DEPTH`]: nesting of the `.pt` tree.
    Depth,
    /// Nesting of the tree written as safetensors JSON metadata.
    JsonDepth,
    /// [`limits::MAX_SAFETENSORS_HEADER`]
    SafetensorsHeader,
    /// Memo entries of one pickle (`LONG_BINPUT` takes a u32).
    MemoEntries,
    /// Bytes of one pickled string (`BINUNICODE` takes a u32 length).
    StringBytes,
    /// A dimension written as a Python int (an i64 for torch).
    Dimension,
    /// Bytes of a zip entry name (a u16).
    ZipName,
}

impl WriteLimit {
    fn describe(self, max: u64, found: u64, at: &str) -> String {
        match self {
            WriteLimit::Depth => format!("the tree nests deeper than {max} levels at `{at}`"),
            WriteLimit::JsonDepth => {
                format!("the tree nests deeper than {max} levels (for JSON metadata) at `{at}`")
            }
            WriteLimit::SafetensorsHeader => {
                format!("safetensors header of {found} bytes (limit {max})")
            }
            WriteLimit::MemoEntries => "more than 2^32 memoized pickle objects".into(),
            WriteLimit::StringBytes => format!("string of {found} bytes"),
            WriteLimit::Dimension => format!("dimension {found} does not fit an i64"),
            WriteLimit::ZipName => format!("zip entry name of {found} bytes"),
        }
    }
}

/// What is wrong with a [`TensorData`] ([`TensorData::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorProblem {
    #[error("{found} dimensions (limit {max})")]
    TooManyDims { found: usize, max: usize },
    #[error("shape {0:?} overflows")]
    Overflows(Vec<u64>),
    #[error("shape {0:?} is too large")]
    TooLarge(Vec<u64>),
    #[error("shape {shape:?} of {dtype} needs {need} bytes but {given} were given")]
    ByteLength {
        shape: Vec<u64>,
        dtype: DType,
        need: u64,
        given: usize,
    },
    #[error("requires_grad is set on a {0} tensor (only float16/bfloat16/float32/float64 and complex tensors can be written requiring grad; torch.load cannot rebuild a float8 tensor that requires grad)")]
    RequiresGrad(DType),
    #[error("`__metadata__` is reserved for the header's metadata")]
    ReservedName,
    #[error("the name is used twice")]
    DuplicateName,
    #[error("safetensors has no {0} dtype")]
    NoSafetensorsDtype(DType),
    #[error("a quantized {0} tensor: its scale and zero point are not part of its data, so it cannot be written as a plain tensor")]
    Quantized(DType),
}

/// A write error as an I/O error: an I/O failure as it is; a file-system step's text with
/// the kind of the error that stopped it (so a full disk or a read-only folder is still
/// recognised); anything else as `Other`.
impl From<WriteError> for std::io::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Io(io) => io,
            WriteError::File { ref source, .. } => {
                std::io::Error::new(source.kind(), e.to_string())
            }
            other => std::io::Error::other(other.to_string()),
        }
    }
}

/// One tensor to write: dtype, shape and its logical bytes (row-major contiguous,
/// little-endian; `numel × dtype.size()` bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorData<'a> {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub bytes: Cow<'a, [u8]>,
    /// Written as the `requires_grad` flag of the rebuilt tensor (`.pt` only; only
    /// float16/bfloat16/float32/float64 and complex tensors may set it).
    pub requires_grad: bool,
}

impl<'a> TensorData<'a> {
    pub fn new(dtype: DType, shape: Vec<u64>, bytes: impl Into<Cow<'a, [u8]>>) -> Self {
        TensorData {
            dtype,
            shape,
            bytes: bytes.into(),
            requires_grad: false,
        }
    }

    /// Number of elements, `None` on overflow.
    pub fn numel(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, d| a.checked_mul(*d))
    }

    /// Check shape, byte length and flags.
    pub fn validate(&self) -> Result<(), TensorProblem> {
        if self.shape.len() > limits::MAX_DIMS {
            return Err(TensorProblem::TooManyDims {
                found: self.shape.len(),
                max: limits::MAX_DIMS,
            });
        }
        let need = self
            .numel()
            .and_then(|n| n.checked_mul(self.dtype.size() as u64))
            .ok_or_else(|| TensorProblem::Overflows(self.shape.clone()))?;
        if need > i64::MAX as u64 {
            return Err(TensorProblem::TooLarge(self.shape.clone()));
        }
        if need != self.bytes.len() as u64 {
            return Err(TensorProblem::ByteLength {
                shape: self.shape.clone(),
                dtype: self.dtype,
                need,
                given: self.bytes.len(),
            });
        }
        if self.requires_grad && !can_require_grad(self.dtype) {
            return Err(TensorProblem::RequiresGrad(self.dtype));
        }
        if self.dtype.is_quantized() {
            return Err(TensorProblem::Quantized(self.dtype));
        }
        Ok(())
    }

    /// Borrow as a `TensorData` with the same bytes.
    pub fn borrowed(&self) -> TensorData<'_> {
        TensorData {
            dtype: self.dtype,
            shape: self.shape.clone(),
            bytes: Cow::Borrowed(&self.bytes),
            requires_grad: self.requires_grad,
        }
    }
}

/// Dtypes whose tensors `torch.load` can rebuild with `requires_grad=True` (float8
/// goes through `_rebuild_tensor_v3`, which fails on a leaf that requires grad).
fn can_require_grad(d: DType) -> bool {
    matches!(
        d,
        DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::C64 | DType::C128
    )
}

/// Every tensor of a checkpoint (index `i` for `Value::Tensor(i)`), as logical bytes:
/// borrowed from the file where the tensor is already contiguous little-endian,
/// gathered otherwise. `write_pt(&ckpt.root, &tensors_from_checkpoint(&ckpt)?, …)`
/// re-writes a checkpoint 1:1.
pub fn tensors_from_checkpoint(ckpt: &Checkpoint) -> Result<Vec<TensorData<'_>>, FormatError> {
    (0..ckpt.tensors.len())
        .map(|i| {
            let t = &ckpt.tensors[i];
            Ok(TensorData {
                dtype: t.dtype,
                shape: t.shape.clone(),
                bytes: ckpt.tensor_bytes(i)?,
                requires_grad: t.requires_grad,
            })
        })
        .collect()
}

/// Every tensor of a checkpoint named by its path in the tree
/// (`model_state_dict.encoder.0.weight`), in tensor order.
pub fn path_tensors(ckpt: &Checkpoint) -> Result<Vec<(String, TensorData<'_>)>, FormatError> {
    Ok(ckpt
        .tensors
        .iter()
        .map(|t| t.path.clone())
        .zip(tensors_from_checkpoint(ckpt)?)
        .collect())
}

/// The tensors a weights fingerprint covers, named as the fingerprint names them: the
/// model state dict by its keys (`encoder.0.weight`) when the checkpoint has one, else
/// every tensor by path. Written to safetensors they give the same
/// weights fingerprint as the source ([`Checkpoint::weight_tensors`]).
pub fn state_dict_tensors(ckpt: &Checkpoint) -> Result<Vec<(String, TensorData<'_>)>, FormatError> {
    ckpt.weight_tensors(ckpt.model_state_ref().as_ref())
        .into_iter()
        .map(|(name, i)| {
            let t = &ckpt.tensors[i];
            Ok((
                name.to_string(),
                TensorData {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    bytes: ckpt.tensor_bytes(i)?,
                    requires_grad: false,
                },
            ))
        })
        .collect()
}

/// Removes the temporary file unless the write was committed (also on panic).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Write `path` atomically: `write` fills a temporary file in the same folder (through
/// a `BufWriter`), which is flushed, fsynced and renamed over `path`; then the folder
/// is fsynced. On any error (or panic) the temporary file is removed and `path` is left
/// as it was. Without `force` an existing `path` is never replaced
/// ([`WriteError::Exists`]; checked again at the final link, so a file created
/// meanwhile is not clobbered either). With `force` a replaced file keeps its
/// permissions.
pub fn write_atomic<T, F>(path: impl AsRef<Path>, force: bool, write: F) -> Result<T, WriteError>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<T, WriteError>,
{
    write_atomic_verified(path, force, write, |_| Ok(()))
}

/// [`write_atomic`] with a check of the finished temporary file (re-read it, compare
/// hashes…) before it takes `path`'s name: when `verify` fails, the temporary file is
/// removed and `path` is left as it was.
pub fn write_atomic_verified<T, F, V>(
    path: impl AsRef<Path>,
    force: bool,
    write: F,
    verify: V,
) -> Result<T, WriteError>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<T, WriteError>,
    V: FnOnce(&Path) -> Result<(), WriteError>,
{
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let file_name = path
        .file_name()
        .ok_or_else(|| WriteError::Invalid(format!("`{}` names no file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let existing = std::fs::symlink_metadata(path).ok();
    if existing.is_some() && !force {
        return Err(WriteError::Exists(path.to_path_buf()));
    }
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(WriteError::Invalid(format!(
            "`{}` is a folder",
            path.display()
        )));
    }
    let tmp = dir.join(format!(
        ".{}.tvck-{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|source| WriteError::File {
            action: "create a temporary file",
            path: tmp.clone(),
            source,
        })?;
    let mut guard = TempGuard {
        path: tmp.clone(),
        armed: true,
    };
    let fs_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| WriteError::File {
            action,
            path: p,
            source,
        }
    };
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let value = write(&mut w)?;
    let file = w
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(fs_err("write", &tmp))?;
    if let Some(meta) = existing.as_ref().filter(|m| m.is_file()) {
        let _ = file.set_permissions(meta.permissions());
    }
    file.sync_all().map_err(fs_err("fsync", &tmp))?;
    drop(file);
    verify(&tmp)?;
    if force {
        std::fs::rename(&tmp, path).map_err(fs_err("rename the temporary file onto", path))?;
    } else {
        // A hard link fails if the target appeared meanwhile: no check-then-clobber race.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&tmp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(WriteError::Exists(path.to_path_buf()));
            }
            Err(_) => {
                // File systems without hard links: check again, then rename.
                if std::fs::symlink_metadata(path).is_ok() {
                    return Err(WriteError::Exists(path.to_path_buf()));
                }
                std::fs::rename(&tmp, path)
                    .map_err(fs_err("rename the temporary file onto", path))?;
            }
        }
    }
    guard.armed = false;
    if let Ok(d) = File::open(&dir) {
        // Not every platform/file system can fsync a folder; the data itself is synced.
        let _ = d.sync_all();
    }
    Ok(value)
}

/// Dotted path of a value in the tree, for messages.
pub(crate) fn join_path(segments: &[String]) -> String {
    if segments.is_empty() {
        "<root>".into()
    } else {
        segments.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tvck-"))
            .collect()
    }

    #[test]
    fn atomic_write_creates_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.pt");
        let n = write_atomic(&p, false, |w| {
            w.write_all(b"one")?;
            Ok(3)
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let e = write_atomic(&p, false, |w| Ok(w.write_all(b"two")?)).unwrap_err();
        assert!(matches!(&e, WriteError::Exists(q) if q == &p), "{e}");
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_atomic(&p, true, |w| Ok(w.write_all(b"two")?)).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn atomic_write_cleans_up_on_error_and_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.pt");
        let e = write_atomic(&p, false, |w| {
            w.write_all(&[0u8; 5000])?;
            Err::<(), _>(WriteError::Invalid("boom".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("boom"));
        assert!(!p.exists());
        assert!(leftovers(dir.path()).is_empty());
        std::fs::write(&p, b"keep").unwrap();
        let r = std::panic::catch_unwind(|| {
            let _ = write_atomic(&p, true, |_| -> Result<(), WriteError> { panic!("inside") });
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"keep");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn atomic_write_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_atomic(dir.path().join("no/such/x.pt"), false, |_| Ok(())).unwrap_err();
        assert!(
            matches!(e, WriteError::File { .. }) && e.to_string().contains("no/such"),
            "{e}"
        );
        let e = write_atomic(dir.path(), true, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("folder"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn forced_replace_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.pt");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, true, |w| Ok(w.write_all(b"y")?)).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn tensor_data_validation() {
        let ok = TensorData::new(DType::F32, vec![2, 3], vec![0u8; 24]);
        assert!(ok.validate().is_ok());
        let short = TensorData::new(DType::F32, vec![2, 3], vec![0u8; 23]);
        assert!(short
            .validate()
            .unwrap_err()
            .to_string()
            .contains("needs 24 bytes"));
        let huge = TensorData::new(DType::F32, vec![u64::MAX, 2], vec![]);
        assert!(huge
            .validate()
            .unwrap_err()
            .to_string()
            .contains("overflows"));
        let mut int_grad = TensorData::new(DType::I64, vec![1], vec![0u8; 8]);
        int_grad.requires_grad = true;
        assert!(int_grad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("requires_grad"));
        let mut f8_grad = TensorData::new(DType::F8E4M3, vec![1], vec![0u8; 1]);
        f8_grad.requires_grad = true;
        assert!(f8_grad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("float8"));
        let dims = TensorData::new(DType::U8, vec![1; 65], vec![0u8; 1]);
        assert!(dims
            .validate()
            .unwrap_err()
            .to_string()
            .contains("dimensions"));
        assert_eq!(
            TensorData::new(DType::U8, vec![], vec![7u8]).numel(),
            Some(1)
        );
    }
}
