//! Tensor element types, with their torch / safetensors / numpy names.

use serde::Serialize;

/// Every torch dtype a checkpoint may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    U64,
    Bool,
    C64,
    C128,
    F8E4M3,
    F8E5M2,
    /// `complex32` (two float16 halves).
    C32,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    /// `float8_e8m0fnu` (exponent-only scale type).
    F8E8M0,
    /// `float4_e2m1fn_x2`: two 4-bit floats packed in one byte.
    F4E2M1X2,
    /// Uninterpreted bit containers.
    Bits8,
    Bits16,
    Bits1x8,
    Bits2x4,
    Bits4x2,
    /// Quantized integers: the stored integers, without their scale and zero point (which
    /// the quantizer arguments of `_rebuild_qtensor` carry).
    QInt8,
    QUInt8,
    QInt32,
    QUInt4x2,
    QUInt2x4,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 8,
            DType::C128 => 16,
            DType::F32 | DType::I32 | DType::U32 | DType::C32 | DType::QInt32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 | DType::Bits16 => 2,
            DType::I8
            | DType::U8
            | DType::Bool
            | DType::F8E4M3
            | DType::F8E5M2
            | DType::F8E4M3Fnuz
            | DType::F8E5M2Fnuz
            | DType::F8E8M0
            | DType::F4E2M1X2
            | DType::Bits8
            | DType::Bits1x8
            | DType::Bits2x4
            | DType::Bits4x2
            | DType::QInt8
            | DType::QUInt8
            | DType::QUInt4x2
            | DType::QUInt2x4 => 1,
        }
    }

    /// Size of one scalar component for byte swapping (complex types swap per half).
    pub fn swap_unit(self) -> usize {
        match self {
            DType::C32 => 2,
            DType::C64 => 4,
            DType::C128 => 8,
            other => other.size(),
        }
    }

    /// torch name, e.g. `float32`.
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
            DType::F8E4M3 => "float8_e4m3fn",
            DType::F8E5M2 => "float8_e5m2",
            DType::C32 => "complex32",
            DType::F8E4M3Fnuz => "float8_e4m3fnuz",
            DType::F8E5M2Fnuz => "float8_e5m2fnuz",
            DType::F8E8M0 => "float8_e8m0fnu",
            DType::F4E2M1X2 => "float4_e2m1fn_x2",
            DType::Bits8 => "bits8",
            DType::Bits16 => "bits16",
            DType::Bits1x8 => "bits1x8",
            DType::Bits2x4 => "bits2x4",
            DType::Bits4x2 => "bits4x2",
            DType::QInt8 => "qint8",
            DType::QUInt8 => "quint8",
            DType::QInt32 => "qint32",
            DType::QUInt4x2 => "quint4x2",
            DType::QUInt2x4 => "quint2x4",
        }
    }

    /// Whether this is a quantized dtype (its tensors are rebuilt by `_rebuild_qtensor`
    /// with a quantizer, and cannot be written as plain tensors).
    pub fn is_quantized(self) -> bool {
        matches!(
            self,
            DType::QInt8 | DType::QUInt8 | DType::QInt32 | DType::QUInt4x2 | DType::QUInt2x4
        )
    }

    /// The legacy storage class name, e.g. `FloatStorage` (`torch.FloatStorage`); `None`
    /// for the dtypes torch 2.13 has no such class for (it saves them through
    /// `_rebuild_tensor_v3` over an untyped storage).
    pub fn storage_name(self) -> Option<&'static str> {
        Some(match self {
            DType::F64 => "DoubleStorage",
            DType::F32 => "FloatStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::I64 => "LongStorage",
            DType::I32 => "IntStorage",
            DType::I16 => "ShortStorage",
            DType::I8 => "CharStorage",
            DType::U8 => "ByteStorage",
            DType::Bool => "BoolStorage",
            DType::C64 => "ComplexFloatStorage",
            DType::C128 => "ComplexDoubleStorage",
            DType::QInt8 => "QInt8Storage",
            DType::QUInt8 => "QUInt8Storage",
            DType::QInt32 => "QInt32Storage",
            DType::QUInt4x2 => "QUInt4x2Storage",
            DType::QUInt2x4 => "QUInt2x4Storage",
            DType::U16
            | DType::U32
            | DType::U64
            | DType::F8E4M3
            | DType::F8E5M2
            | DType::C32
            | DType::F8E4M3Fnuz
            | DType::F8E5M2Fnuz
            | DType::F8E8M0
            | DType::F4E2M1X2
            | DType::Bits8
            | DType::Bits16
            | DType::Bits1x8
            | DType::Bits2x4
            | DType::Bits4x2 => return None,
        })
    }

    /// From a legacy storage class name (`FloatStorage`, `cuda.FloatStorage` is not accepted here:
    /// pass the last path component): the inverse of [`DType::storage_name`].
    pub fn from_storage_name(name: &str) -> Option<DType> {
        Self::ALL
            .into_iter()
            .find(|d| d.storage_name() == Some(name))
    }

    /// From a torch dtype attribute name (`torch.float32` → `float32`); accepts aliases.
    pub fn from_torch_name(name: &str) -> Option<DType> {
        let alias = match name {
            "float" => "float32",
            "double" => "float64",
            "half" => "float16",
            "long" => "int64",
            "int" => "int32",
            "short" => "int16",
            "cfloat" => "complex64",
            "cdouble" => "complex128",
            other => other,
        };
        Self::ALL.into_iter().find(|d| d.torch_name() == alias)
    }

    /// safetensors dtype tag, e.g. `F32`; `None` for the dtypes safetensors has no tag for.
    pub fn safetensors_name(self) -> Option<&'static str> {
        Some(match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::U16 => "U16",
            DType::U32 => "U32",
            DType::U64 => "U64",
            DType::Bool => "BOOL",
            DType::C64 => "C64",
            DType::C128 => "C128",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            DType::F8E8M0 => "F8_E8M0",
            _ => return None,
        })
    }

    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        Self::ALL
            .into_iter()
            .find(|d| d.safetensors_name() == Some(name))
    }

    pub const ALL: [DType; 32] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
        DType::C64,
        DType::C128,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::C32,
        DType::F8E4M3Fnuz,
        DType::F8E5M2Fnuz,
        DType::F8E8M0,
        DType::F4E2M1X2,
        DType::Bits8,
        DType::Bits16,
        DType::Bits1x8,
        DType::Bits2x4,
        DType::Bits4x2,
        DType::QInt8,
        DType::QUInt8,
        DType::QInt32,
        DType::QUInt4x2,
        DType::QUInt2x4,
    ];
}

/// IEEE 754 half precision bits to f64 (subnormals, infinities and NaN included).
pub fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// bfloat16 bits to f64.
pub fn bf16_to_f64(h: u16) -> f64 {
    f64::from(f32::from_bits(u32::from(h) << 16))
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.torch_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            if let Some(n) = d.storage_name() {
                assert_eq!(DType::from_storage_name(n), Some(d));
            }
            assert_eq!(DType::from_torch_name(d.torch_name()), Some(d));
            if let Some(n) = d.safetensors_name() {
                assert_eq!(DType::from_safetensors_name(n), Some(d));
            }
        }
        // Every legacy class is a quantized dtype or one torch had before 1.13.
        assert_eq!(DType::from_storage_name("UInt16Storage"), None);
        assert_eq!(
            DType::from_storage_name("QUInt8Storage"),
            Some(DType::QUInt8)
        );
        assert_eq!(DType::from_torch_name("float"), Some(DType::F32));
        assert_eq!(DType::from_storage_name("NopeStorage"), None);
    }
}
