//! The allow-list: which globals tvck interprets (what `torch.load(weights_only=True)`
//! accepts, plus the numpy and `argparse` pieces checkpoints carry). Everything else is unsafe.

use super::DType;

/// What a global is, as far as tvck is concerned. Globals without a `Ctor` are unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctor {
    /// Safe to reference as a value, not interpreted when called (torch dtypes,
    /// `builtins.object`, `numpy.ndarray`, `torch.Tensor`, …).
    Value,
    /// `collections.OrderedDict` / `collections.Counter` → [`Value::Dict`](super::Value::Dict).
    OrderedDict,
    /// `builtins.set` → [`Value::List`](super::Value::List).
    Set,
    /// `builtins.frozenset` → [`Value::List`](super::Value::List).
    FrozenSet,
    /// `builtins.bytearray` / `builtins.bytes` → [`Value::Bytes`](super::Value::Bytes).
    ByteArray,
    /// `builtins.complex` → `Object { class: "builtins.complex", args: [re, im] }`.
    Complex,
    /// `builtins.slice` → `Object { class: "builtins.slice", args }`.
    Slice,
    /// `argparse.Namespace` → `Object` whose state is a dict of its attributes.
    Namespace,
    /// `copyreg._reconstructor(cls, base, state)`, only for an allowlisted `cls`.
    Reconstructor,
    /// `_codecs.encode(str, encoding)` → [`Value::Bytes`](super::Value::Bytes).
    CodecsEncode,
    /// `numpy.(_)core.multiarray.scalar(dtype, bytes)` → [`Value::NumpyScalar`](super::Value::NumpyScalar).
    NumpyScalar,
    /// `numpy.dtype(descr, align, copy)` (+ BUILD state with the byte order).
    NumpyDtype,
    /// `numpy.(_)core.multiarray._reconstruct` → `Object { class: "numpy.ndarray" }`.
    NumpyReconstruct,
    /// `torch.Size` → [`Value::Tuple`](super::Value::Tuple).
    TorchSize,
    /// `torch.device` → [`Value::Str`](super::Value::Str) (`"cuda:0"`).
    TorchDevice,
    /// A storage class (`torch.FloatStorage`, `torch.UntypedStorage` → u8).
    Storage(DType),
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    /// `torch._utils._rebuild_qtensor(storage, offset, size, stride, quantizer, …)`: read as
    /// a tensor of its quantized integers (dtype `qint8`, `quint8`, …); the quantizer
    /// (scheme, scale, zero point) is not kept.
    RebuildQTensor,
    RebuildParameter,
    RebuildParameterWithState,
    /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`.
    RebuildFromTypeV2,
    /// Allowed by `torch.load(weights_only=True)` but not interpreted by tvck (sparse,
    /// nested and meta tensors, wrapper subclasses…): kept as an `Object` with its arguments, plus a note.
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
        ("torch._utils", "_rebuild_qtensor") => Ctor::RebuildQTensor,
        ("torch._utils", "_rebuild_parameter") => Ctor::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Ctor::RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => Ctor::RebuildFromTypeV2,
        (
            "torch._utils",
            "_rebuild_sparse_tensor"
            | "_rebuild_nested_tensor"
            | "_rebuild_meta_tensor_no_storage"
            | "_rebuild_wrapper_subclass"
            | "_rebuild_device_tensor_from_numpy"
            | "_rebuild_device_tensor_from_cpu_tensor",
        )
        | ("torch.serialization", "_get_layout") => Ctor::Uninterpreted,
        ("torch.storage", "TypedStorage") => Ctor::Value,
        // Quantization schemes, the first quantizer argument of `_rebuild_qtensor`.
        (
            "torch",
            "per_tensor_affine"
            | "per_tensor_symmetric"
            | "per_channel_affine"
            | "per_channel_symmetric"
            | "per_channel_affine_float_qparams",
        ) => Ctor::Value,
        // The sub-byte integer dtypes torch allows as names (no storage holds them).
        ("torch", n) if sub_byte_int(n) => Ctor::Value,
        // A CUDA legacy storage names the same bytes as its CPU class.
        ("torch" | "torch.cuda", n) if DType::from_storage_name(n).is_some() => {
            match DType::from_storage_name(n) {
                Some(d) if module == "torch" || !d.is_quantized() => Ctor::Storage(d),
                _ => return None,
            }
        }
        ("torch", n) if DType::from_torch_name(n).is_some() => Ctor::Value,
        // A legacy tensor type (`torch.FloatTensor`, `torch.cuda.FloatTensor`,
        // `torch.sparse.FloatTensor`), named by old checkpoints.
        ("torch" | "torch.cuda" | "torch.sparse" | "torch.cuda.sparse", n)
            if legacy_tensor_type(module, n) =>
        {
            Ctor::Value
        }
        _ => return None,
    };
    Some(ctor)
}

/// `int1`…`int7`, `uint1`…`uint7`.
fn sub_byte_int(name: &str) -> bool {
    let digits = name
        .strip_prefix("uint")
        .or_else(|| name.strip_prefix("int"));
    matches!(digits, Some(d) if d.len() == 1 && ("1"..="7").contains(&d))
}

/// A legacy tensor type torch defines: `<Storage class without "Storage">Tensor` for the
/// plain dtypes; the sparse modules have no Bool or Complex ones.
fn legacy_tensor_type(module: &str, name: &str) -> bool {
    let Some(base) = name.strip_suffix("Tensor") else {
        return false;
    };
    let Some(d) = DType::from_storage_name(&format!("{base}Storage")) else {
        return false;
    };
    if d.is_quantized() {
        return false;
    }
    let complex = matches!(d, DType::C64 | DType::C128);
    let sparse_bool = module.ends_with("sparse") && d == DType::Bool;
    !(complex || sparse_bool)
}
