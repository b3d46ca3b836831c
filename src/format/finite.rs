//! NaN and infinite values in a checkpoint's model state: a model with them computes NaN
//! for every input they reach, and training from it is a silent NaN run. `inspect` reports
//! them as a finding, `check` refuses such a frozen checkpoint (and so `train` does), `eval`
//! refuses to load one, and `train --resume` refuses to continue from one.

use serde::Serialize;

use super::dtype::{bf16_to_f64, f16_to_f64};
use super::{Checkpoint, DType};

/// One model-state tensor holding non-finite values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NonFinite {
    /// The state_dict key.
    pub key: String,
    pub nan: u64,
    pub inf: u64,
    pub elements: u64,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` holds {} NaN and {} infinite of {} values",
            self.key, self.nan, self.inf, self.elements
        )
    }
}

/// Count NaN and infinite values of one tensor's little-endian bytes; `None` for dtypes
/// that cannot hold them (integers, bool) and for complex or float8 ones, which the
/// TernaryVAE models never store.
pub fn count(dtype: DType, bytes: &[u8]) -> Option<(u64, u64)> {
    let mut nan = 0u64;
    let mut inf = 0u64;
    let mut see = |v: f64| {
        if v.is_nan() {
            nan += 1;
        } else if v.is_infinite() {
            inf += 1;
        }
    };
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .for_each(|c| see(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)),
        DType::F64 => bytes
            .chunks_exact(8)
            .for_each(|c| see(f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))),
        DType::F16 => bytes
            .chunks_exact(2)
            .for_each(|c| see(f16_to_f64(u16::from_le_bytes([c[0], c[1]])))),
        DType::BF16 => bytes
            .chunks_exact(2)
            .for_each(|c| see(bf16_to_f64(u16::from_le_bytes([c[0], c[1]])))),
        _ => return None,
    }
    Some((nan, inf))
}

/// Every model-state tensor of `ckpt` with NaN or infinite values, in state order
/// (tensors whose bytes cannot be read are left to the reader's own errors).
pub fn non_finite(ckpt: &Checkpoint) -> Vec<NonFinite> {
    let Some(ms) = ckpt.model_state_ref() else {
        return Vec::new();
    };
    ms.entries
        .iter()
        .filter_map(|&(key, i)| {
            let t = &ckpt.tensors[i];
            let bytes = ckpt.tensor_bytes(i).ok()?;
            let (nan, inf) = count(t.dtype, &bytes)?;
            (nan + inf > 0).then(|| NonFinite {
                key: key.to_string(),
                nan,
                inf,
                elements: t.numel(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_float_width() {
        let f32s: Vec<u8> = [1.0f32, f32::NAN, f32::INFINITY, -f32::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(count(DType::F32, &f32s), Some((1, 2)));
        let f64s: Vec<u8> = [f64::NAN, 0.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(count(DType::F64, &f64s), Some((1, 0)));
        // f16: 0x7e00 NaN, 0x7c00 +inf, 0x3c00 1.0; bf16: 0x7fc0 NaN, 0xff80 -inf.
        let f16s: Vec<u8> = [0x7e00u16, 0x7c00, 0x3c00]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(count(DType::F16, &f16s), Some((1, 1)));
        let bf16s: Vec<u8> = [0x7fc0u16, 0xff80, 0x3f80]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(count(DType::BF16, &bf16s), Some((1, 1)));
        assert_eq!(count(DType::I64, &[0; 8]), None);
    }

    #[test]
    fn the_samples_are_finite() {
        for p in [
            "checkpoints/v5_12_4/best_Q.pt",
            "checkpoints/v5_5/latest.pt",
        ] {
            let c = Checkpoint::open(p).unwrap();
            assert_eq!(non_finite(&c), Vec::new(), "{p}");
        }
    }
}
