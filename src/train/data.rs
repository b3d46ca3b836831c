//! The data: the 3^9 = 19,683 ternary operations, their digits and valuations
//! (domain.md §1), as plain Rust values and as tensors.

use tch::{Device, Tensor};

/// Number of operations.
pub const N_OPS: usize = 19_683;
/// Digits per operation.
pub const N_DIGITS: usize = 9;
/// Valuation levels 0..=9.
pub const N_LEVELS: usize = 10;

/// Digit `d` (0..9) of operation `i`: `((i / 3^d) mod 3) - 1`.
pub fn digit(i: usize, d: usize) -> i8 {
    ((i / 3usize.pow(d as u32)) % 3) as i8 - 1
}

/// 3-adic valuation: the largest k with 3^k | i; v(0) = 9.
pub fn valuation(i: usize) -> usize {
    if i == 0 {
        return 9;
    }
    let (mut i, mut k) = (i, 0);
    while i % 3 == 0 && k < 9 {
        i /= 3;
        k += 1;
    }
    k
}

/// "Zero valuation": the number of consecutive digits equal to 0 from digit 0 on
/// (0..=9), the radius target of the zero_structure loss.
pub fn zero_valuation(i: usize) -> usize {
    (0..N_DIGITS).take_while(|&d| digit(i, d) == 0).count()
}

/// Every operation as tensors on `device`.
pub struct Dataset {
    /// Inputs, float32 [N, 9].
    pub x: Tensor,
    /// Targets of the reconstruction (digit + 1), int64 [N, 9].
    pub targets: Tensor,
    /// Valuations, int64 [N].
    pub v: Tensor,
    /// Zero valuations, int64 [N].
    pub zero_v: Tensor,
    /// Valuations on the host.
    pub v_host: Vec<usize>,
}

impl Dataset {
    pub fn new(device: Device) -> Dataset {
        let mut x = Vec::with_capacity(N_OPS * N_DIGITS);
        let mut t = Vec::with_capacity(N_OPS * N_DIGITS);
        for i in 0..N_OPS {
            for d in 0..N_DIGITS {
                let v = digit(i, d);
                x.push(f32::from(v));
                t.push(i64::from(v) + 1);
            }
        }
        let v_host: Vec<usize> = (0..N_OPS).map(valuation).collect();
        let v: Vec<i64> = v_host.iter().map(|&v| v as i64).collect();
        let zv: Vec<i64> = (0..N_OPS).map(|i| zero_valuation(i) as i64).collect();
        let n = N_OPS as i64;
        Dataset {
            x: Tensor::from_slice(&x).view([n, 9]).to_device(device),
            targets: Tensor::from_slice(&t).view([n, 9]).to_device(device),
            v: Tensor::from_slice(&v).to_device(device),
            zero_v: Tensor::from_slice(&zv).to_device(device),
            v_host,
        }
    }

    /// The rows `idx` (int64 indices) of every tensor.
    pub fn batch(&self, idx: &Tensor) -> Batch {
        Batch {
            x: self.x.index_select(0, idx),
            targets: self.targets.index_select(0, idx),
            v: self.v.index_select(0, idx),
            zero_v: self.zero_v.index_select(0, idx),
            idx: idx.shallow_clone(),
        }
    }
}

/// A batch of operations.
pub struct Batch {
    pub x: Tensor,
    pub targets: Tensor,
    pub v: Tensor,
    pub zero_v: Tensor,
    /// The operation indices (int64).
    pub idx: Tensor,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_least_significant_first() {
        assert_eq!((0..9).map(|d| digit(0, d)).collect::<Vec<_>>(), vec![-1; 9]);
        assert_eq!(digit(1, 0), 0);
        assert_eq!(digit(2, 0), 1);
        assert_eq!(digit(3, 0), -1);
        assert_eq!(digit(3, 1), 0);
        assert_eq!(digit(N_OPS - 1, 8), 1);
    }

    #[test]
    fn valuations() {
        assert_eq!(valuation(0), 9);
        assert_eq!(valuation(1), 0);
        assert_eq!(valuation(9), 2);
        assert_eq!(valuation(3usize.pow(8)), 8);
        assert_eq!(valuation(2 * 3usize.pow(8)), 8);
        let counts = (0..N_OPS).fold([0usize; 10], |mut c, i| {
            c[valuation(i)] += 1;
            c
        });
        // 2·3^(8-k) operations have valuation k < 9; only 0 has 9.
        assert_eq!(counts[0], 13_122);
        assert_eq!(counts[8], 2);
        assert_eq!(counts[9], 1);
    }

    #[test]
    fn zero_valuations() {
        assert_eq!(zero_valuation(0), 0);
        // All digits 0 ↔ every base-3 digit 1: sum of 3^d.
        let all_zero: usize = (0..9).map(|d| 3usize.pow(d)).sum();
        assert_eq!(zero_valuation(all_zero), 9);
        assert_eq!(zero_valuation(1), 1);
        assert_eq!(zero_valuation(4), 2);
    }

    #[test]
    fn dataset_tensors() {
        let ds = Dataset::new(Device::Cpu);
        assert_eq!(ds.x.size(), vec![N_OPS as i64, 9]);
        assert_eq!(ds.targets.int64_value(&[5, 0]), 2); // digit 1 + 1
        assert_eq!(ds.v.int64_value(&[0]), 9);
    }
}
