//! The tensor operations of migration rules, on logical bytes (row-major, little-endian):
//! initialisers (constant, identity, seeded random), slice, pad, reshape and transpose.
//!
//! Seeded initialisers are reproducible everywhere: the stream is xoshiro256** seeded through
//! SplitMix64 from the rule's seed and the first 8 bytes of SHA-256(target key), so two
//! tensors of one rule differ and a re-run gives the same bytes; normals use Box–Muller in
//! f64, then the value is rounded to the tensor's dtype.

use sha2::{Digest, Sha256};

use crate::format::{logical_bytes, DType, FormatError, TensorInfo};

/// How a new tensor is filled.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Every element `value` (`ones` = 1, `zeros` = 0).
    Fill(f64),
    /// Ones on the main diagonal of a 2-D tensor, zeros elsewhere (`torch.nn.init.eye_`).
    Identity,
    /// N(mean, std²).
    Normal { mean: f64, std: f64, seed: u64 },
    /// U(low, high).
    Uniform { low: f64, high: f64, seed: u64 },
    /// `xavier_uniform_`: U(±gain·√(6 / (fan_in + fan_out))).
    XavierUniform { gain: f64, seed: u64 },
    /// `xavier_normal_`: N(0, (gain·√(2 / (fan_in + fan_out)))²).
    XavierNormal { gain: f64, seed: u64 },
    /// PyTorch's default for `nn.Linear` weight and bias: U(±1/√fan_in).
    LinearDefault { fan_in: u64, seed: u64 },
}

impl Init {
    /// A short description for plans: `ones`, `xavier_uniform(gain 1) seed 7`.
    pub fn describe(&self) -> String {
        match self {
            Init::Fill(v) if *v == 1.0 => "ones".into(),
            Init::Fill(v) if *v == 0.0 => "zeros".into(),
            Init::Fill(v) => format!("fill {v}"),
            Init::Identity => "identity".into(),
            Init::Normal { mean, std, seed } => format!("normal({mean}, {std}) seed {seed}"),
            Init::Uniform { low, high, seed } => format!("uniform({low}, {high}) seed {seed}"),
            Init::XavierUniform { gain, seed } => {
                format!("xavier_uniform(gain {gain}) seed {seed}")
            }
            Init::XavierNormal { gain, seed } => format!("xavier_normal(gain {gain}) seed {seed}"),
            Init::LinearDefault { fan_in, seed } => {
                format!("linear_default(fan_in {fan_in}) seed {seed}")
            }
        }
    }
}

/// Whether values can be encoded in `dtype` by [`encode`].
pub fn numeric(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F64
            | DType::F32
            | DType::F16
            | DType::BF16
            | DType::I64
            | DType::I32
            | DType::I16
            | DType::I8
            | DType::U8
            | DType::U16
            | DType::U32
            | DType::U64
            | DType::Bool
    )
}

/// A shape expression that gives a negative size for some layout
/// ([`super::spec::ShapeExpr::eval`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shape `{shape}` gives a negative size {size}")]
pub struct NegativeSize {
    pub shape: String,
    pub size: i64,
}

/// Why a tensor operation of a migration cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("shape {0:?} has too many elements")]
    TooManyElements(Vec<u64>),
    #[error("cannot write values of dtype {0}")]
    Dtype(DType),
    #[error("xavier initialisation needs a tensor of 2 or more dimensions, not {0:?}")]
    XavierDims(Vec<u64>),
    #[error("{0:?} is too large to initialise")]
    TooLargeToInit(Vec<u64>),
    #[error("identity needs a 2-D tensor, not {0:?}")]
    IdentityDims(Vec<u64>),
    #[error("linear_default needs fan_in > 0")]
    ZeroFanIn,
    #[error("slice gives {ranges} ranges for a {}-D tensor {shape:?}", shape.len())]
    SliceRanks { ranges: usize, shape: Vec<u64> },
    #[error("slice range {start}:{end} does not fit dimension {dim} of {shape:?}")]
    SliceRange {
        start: u64,
        end: u64,
        dim: usize,
        shape: Vec<u64>,
    },
    #[error("pad gives {pairs} pairs for a {}-D tensor {shape:?}", shape.len())]
    PadRanks { pairs: usize, shape: Vec<u64> },
    #[error("pad overflows")]
    PadOverflows,
    #[error("padded shape {0:?} is too large")]
    PaddedTooLarge(Vec<u64>),
    #[error("transpose order {perm:?} is not a permutation of the {} dimensions of {shape:?}", shape.len())]
    NotAPermutation { perm: Vec<usize>, shape: Vec<u64> },
    #[error("reshape {from:?} -> {to:?} changes the element count")]
    Reshape { from: Vec<u64>, to: Vec<u64> },
    #[error("bound {0} is negative")]
    NegativeBound(i64),
    #[error(transparent)]
    NegativeSize(#[from] NegativeSize),
    #[error("its source tensor is missing")]
    SourceMissing,
    #[error("produced {produced:?}, the plan says {planned:?}")]
    ShapeDiffers {
        produced: Vec<u64>,
        planned: Vec<u64>,
    },
    /// The source bytes do not hold the view (the reader's check).
    #[error("{0}")]
    View(Box<FormatError>),
}

/// Element count of a shape, refusing overflow.
pub fn numel(shape: &[u64]) -> Result<u64, OpError> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| OpError::TooManyElements(shape.to_vec()))
}

/// Append `v` to `out` in `dtype` (floats rounded to nearest even; integers truncated
/// toward zero and saturated; bool is `v != 0`).
pub fn encode(dtype: DType, v: f64, out: &mut Vec<u8>) -> Result<(), OpError> {
    match dtype {
        DType::F64 => out.extend_from_slice(&v.to_le_bytes()),
        DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        DType::F16 => out.extend_from_slice(&f32_to_f16(v as f32).to_le_bytes()),
        DType::BF16 => out.extend_from_slice(&f32_to_bf16(v as f32).to_le_bytes()),
        DType::I64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
        DType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
        DType::I16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
        DType::I8 => out.extend_from_slice(&(v as i8).to_le_bytes()),
        DType::U8 => out.push(v as u8),
        DType::U16 => out.extend_from_slice(&(v as u16).to_le_bytes()),
        DType::U32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
        DType::U64 => out.extend_from_slice(&(v as u64).to_le_bytes()),
        DType::Bool => out.push(u8::from(v != 0.0)),
        other => return Err(OpError::Dtype(other)),
    }
    Ok(())
}

/// f32 → IEEE half, round to nearest even (subnormals, overflow to infinity, NaN kept).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |half: u32, rem: u32, halfway: u32| {
        if rem > halfway || (rem == halfway && half & 1 == 1) {
            half + 1
        } else {
            half
        }
    };
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        return sign | round(half, rem, 1 << (shift - 1)) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    sign | round(half, man & 0x1fff, 0x1000) as u16
}

/// f32 → bfloat16, round to nearest even (NaN kept quiet).
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// xoshiro256** seeded through SplitMix64.
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64, key: &str) -> Rng {
        let digest = Sha256::digest(key.as_bytes());
        let mut stream = [0u8; 8];
        stream.copy_from_slice(&digest[..8]);
        let mut x = seed ^ u64::from_le_bytes(stream);
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Standard normal (Box–Muller, one value per pair of uniforms).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// `fan_in`, `fan_out` as torch computes them (dims 1 and 0 times the receptive field).
fn fans(shape: &[u64]) -> Result<(f64, f64), OpError> {
    if shape.len() < 2 {
        return Err(OpError::XavierDims(shape.to_vec()));
    }
    let receptive: u64 = shape[2..].iter().product();
    Ok(((shape[1] * receptive) as f64, (shape[0] * receptive) as f64))
}

/// The logical bytes of a new tensor of `dtype` and `shape` filled by `init`; `key` is the
/// target key (it selects the random stream of seeded initialisers).
pub fn init_tensor(
    init: &Init,
    dtype: DType,
    shape: &[u64],
    key: &str,
) -> Result<Vec<u8>, OpError> {
    let n = numel(shape)?;
    if n > crate::format::limits::MAX_EXPANDED_VIEW_BYTES / dtype.size() as u64 {
        return Err(OpError::TooLargeToInit(shape.to_vec()));
    }
    let n = n as usize;
    let mut out = Vec::with_capacity(n * dtype.size());
    let mut values: Box<dyn FnMut(usize) -> f64> = match *init {
        Init::Fill(v) => Box::new(move |_| v),
        Init::Identity => {
            if shape.len() != 2 {
                return Err(OpError::IdentityDims(shape.to_vec()));
            }
            let cols = shape[1] as usize;
            Box::new(move |i| if i / cols == i % cols { 1.0 } else { 0.0 })
        }
        Init::Normal { mean, std, seed } => {
            let mut r = Rng::new(seed, key);
            Box::new(move |_| mean + std * r.normal())
        }
        Init::Uniform { low, high, seed } => {
            let mut r = Rng::new(seed, key);
            Box::new(move |_| r.uniform(low, high))
        }
        Init::XavierUniform { gain, seed } => {
            let (fi, fo) = fans(shape)?;
            let a = gain * (6.0 / (fi + fo)).sqrt();
            let mut r = Rng::new(seed, key);
            Box::new(move |_| r.uniform(-a, a))
        }
        Init::XavierNormal { gain, seed } => {
            let (fi, fo) = fans(shape)?;
            let std = gain * (2.0 / (fi + fo)).sqrt();
            let mut r = Rng::new(seed, key);
            Box::new(move |_| std * r.normal())
        }
        Init::LinearDefault { fan_in, seed } => {
            if fan_in == 0 {
                return Err(OpError::ZeroFanIn);
            }
            let a = 1.0 / (fan_in as f64).sqrt();
            let mut r = Rng::new(seed, key);
            Box::new(move |_| r.uniform(-a, a))
        }
    };
    for i in 0..n {
        encode(dtype, values(i), &mut out)?;
    }
    Ok(out)
}

/// Visit every index of `shape` in row-major order.
fn for_each_index(shape: &[u64], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if (idx[d] as u64) < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The shape `slice` makes of `shape`, or why the ranges do not fit it.
pub fn slice_shape(shape: &[u64], ranges: &[(u64, u64)]) -> Result<Vec<u64>, OpError> {
    if ranges.len() != shape.len() {
        return Err(OpError::SliceRanks {
            ranges: ranges.len(),
            shape: shape.to_vec(),
        });
    }
    for (d, (&(a, b), &n)) in ranges.iter().zip(shape).enumerate() {
        if a > b || b > n {
            return Err(OpError::SliceRange {
                start: a,
                end: b,
                dim: d,
                shape: shape.to_vec(),
            });
        }
    }
    Ok(ranges.iter().map(|&(a, b)| b - a).collect())
}

/// The shape `pad` makes of `shape`, or why the pairs do not fit it.
pub fn pad_shape(shape: &[u64], pads: &[(u64, u64)]) -> Result<Vec<u64>, OpError> {
    if pads.len() != shape.len() {
        return Err(OpError::PadRanks {
            pairs: pads.len(),
            shape: shape.to_vec(),
        });
    }
    shape
        .iter()
        .zip(pads)
        .map(|(&n, &(a, b))| n.checked_add(a).and_then(|x| x.checked_add(b)))
        .collect::<Option<_>>()
        .ok_or(OpError::PadOverflows)
}

/// The shape `transpose` makes of `shape`, or why `perm` is not a permutation of its
/// dimensions.
pub fn transpose_shape(shape: &[u64], perm: &[usize]) -> Result<Vec<u64>, OpError> {
    let mut seen = vec![false; shape.len()];
    if perm.len() != shape.len()
        || perm
            .iter()
            .any(|&p| p >= shape.len() || std::mem::replace(&mut seen[p], true))
    {
        return Err(OpError::NotAPermutation {
            perm: perm.to_vec(),
            shape: shape.to_vec(),
        });
    }
    Ok(perm.iter().map(|&p| shape[p]).collect())
}

/// `tensor[r0.0..r0.1, r1.0..r1.1, …]`: one range per dimension.
pub fn slice(
    dtype: DType,
    shape: &[u64],
    bytes: &[u8],
    ranges: &[(u64, u64)],
) -> Result<(Vec<u64>, Vec<u8>), OpError> {
    let out_shape = slice_shape(shape, ranges)?;
    // A slice is a view with the source's strides, starting at the ranges' corner.
    let strides = TensorInfo::contiguous_strides(shape);
    let offset = ranges.iter().zip(&strides).map(|(&(a, _), s)| a * s).sum();
    let bytes = gather(dtype, &out_shape, strides, offset, bytes)?;
    Ok((out_shape, bytes))
}

/// The row-major bytes of a strided view of `storage` (the reader's gather).
fn gather(
    dtype: DType,
    shape: &[u64],
    strides: Vec<u64>,
    offset: u64,
    storage: &[u8],
) -> Result<Vec<u8>, OpError> {
    let view = TensorInfo {
        path: String::new(),
        dtype,
        shape: shape.to_vec(),
        strides,
        storage_offset: offset,
        storage: 0,
        requires_grad: false,
    };
    logical_bytes(&view, storage, false)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| OpError::View(Box::new(e)))
}

/// Pad each dimension with `before`/`after` elements of `value`.
pub fn pad(
    dtype: DType,
    shape: &[u64],
    bytes: &[u8],
    pads: &[(u64, u64)],
    value: f64,
) -> Result<(Vec<u64>, Vec<u8>), OpError> {
    let out_shape = pad_shape(shape, pads)?;
    let total = numel(&out_shape)?;
    if total > crate::format::limits::MAX_EXPANDED_VIEW_BYTES / dtype.size() as u64 {
        return Err(OpError::PaddedTooLarge(out_shape));
    }
    let es = dtype.size();
    let mut fill = Vec::new();
    encode(dtype, value, &mut fill)?;
    let mut out = Vec::with_capacity(total as usize * es);
    let st = TensorInfo::contiguous_strides(shape);
    for_each_index(&out_shape, |idx| {
        let mut off = 0usize;
        let mut inside = true;
        for ((&i, &(a, _)), (&n, &s)) in idx.iter().zip(pads).zip(shape.iter().zip(&st)) {
            let a = a as usize;
            if i < a || i >= a + n as usize {
                inside = false;
                break;
            }
            off += (i - a) * s as usize;
        }
        if inside {
            out.extend_from_slice(&bytes[off * es..(off + 1) * es]);
        } else {
            out.extend_from_slice(&fill);
        }
    });
    Ok((out_shape, out))
}

/// Permute the dimensions (`perm[k]` = the source dimension that becomes dimension k).
pub fn transpose(
    dtype: DType,
    shape: &[u64],
    bytes: &[u8],
    perm: &[usize],
) -> Result<(Vec<u64>, Vec<u8>), OpError> {
    let out_shape = transpose_shape(shape, perm)?;
    // A transpose is a view with permuted strides.
    let src = TensorInfo::contiguous_strides(shape);
    let strides = perm.iter().map(|&p| src[p]).collect();
    let bytes = gather(dtype, &out_shape, strides, 0, bytes)?;
    Ok((out_shape, bytes))
}

/// Check a reshape keeps the element count (the bytes do not change).
pub fn reshape(from: &[u64], to: &[u64]) -> Result<(), OpError> {
    if numel(from)? == numel(to)? {
        Ok(())
    } else {
        Err(OpError::Reshape {
            from: from.to_vec(),
            to: to.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn back(b: &[u8]) -> Vec<f32> {
        b.chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn constants_and_identity() {
        let ones = init_tensor(&Init::Fill(1.0), DType::F32, &[3], "k").unwrap();
        assert_eq!(back(&ones), [1.0, 1.0, 1.0]);
        let eye = init_tensor(&Init::Identity, DType::F32, &[2, 3], "k").unwrap();
        assert_eq!(back(&eye), [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let scalar = init_tensor(&Init::Fill(0.5413), DType::F32, &[], "k").unwrap();
        assert_eq!(back(&scalar), [0.5413]);
        assert!(init_tensor(&Init::Identity, DType::F32, &[3], "k").is_err());
    }

    #[test]
    fn seeded_inits_are_reproducible_and_keyed() {
        let i = Init::XavierUniform { gain: 1.0, seed: 7 };
        let a = init_tensor(&i, DType::F32, &[32, 8], "controller.net.0.weight").unwrap();
        let b = init_tensor(&i, DType::F32, &[32, 8], "controller.net.0.weight").unwrap();
        let c = init_tensor(&i, DType::F32, &[32, 8], "controller.net.3.weight").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let bound = (6.0f32 / 40.0).sqrt();
        assert!(back(&a).iter().all(|v| v.abs() <= bound));
        let other_seed = Init::XavierUniform { gain: 1.0, seed: 8 };
        assert_ne!(
            a,
            init_tensor(&other_seed, DType::F32, &[32, 8], "controller.net.0.weight").unwrap()
        );
    }

    #[test]
    fn normal_has_the_asked_moments() {
        let i = Init::Normal {
            mean: 2.0,
            std: 0.5,
            seed: 1,
        };
        let v = back(&init_tensor(&i, DType::F32, &[20000], "k").unwrap());
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        assert!((mean - 2.0).abs() < 0.02, "{mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "{var}");
    }

    #[test]
    fn slice_pad_transpose() {
        // [[0,1,2],[3,4,5]]
        let t = f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let (s, b) = slice(DType::F32, &[2, 3], &t, &[(0, 2), (1, 3)]).unwrap();
        assert_eq!(s, [2, 2]);
        assert_eq!(back(&b), [1.0, 2.0, 4.0, 5.0]);
        let (s, b) = pad(DType::F32, &[2, 3], &t, &[(1, 0), (0, 1)], 9.0).unwrap();
        assert_eq!(s, [3, 4]);
        assert_eq!(
            back(&b),
            [9.0, 9.0, 9.0, 9.0, 0.0, 1.0, 2.0, 9.0, 3.0, 4.0, 5.0, 9.0]
        );
        let (s, b) = transpose(DType::F32, &[2, 3], &t, &[1, 0]).unwrap();
        assert_eq!(s, [3, 2]);
        assert_eq!(back(&b), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert!(slice(DType::F32, &[2, 3], &t, &[(0, 3), (0, 1)]).is_err());
        assert!(transpose(DType::F32, &[2, 3], &t, &[0, 0]).is_err());
        assert!(reshape(&[2, 3], &[3, 2]).is_ok());
        assert!(reshape(&[2, 3], &[4]).is_err());
    }

    #[test]
    fn half_precision_rounding() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(5.960_464_5e-8), 0x0001);
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        for h in [0x3c00u16, 0x0001, 0x3555, 0x7bff, 0x8400] {
            let x = crate::format::dtype::f16_to_f64(h) as f32;
            assert_eq!(f32_to_f16(x), h);
        }
    }
}
