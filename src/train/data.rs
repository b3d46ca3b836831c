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

/// The number of digits equal to 0 among the 9 (the zero_structure loss's sparsity
/// correlation counts these, not the leading ones).
pub fn zero_count(i: usize) -> usize {
    (0..N_DIGITS).filter(|&d| digit(i, d) == 0).count()
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
    /// Number of zero digits, float32 [N].
    pub zero_count: Tensor,
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
        let zc: Vec<f32> = (0..N_OPS).map(|i| zero_count(i) as f32).collect();
        let n = N_OPS as i64;
        Dataset {
            x: Tensor::from_slice(&x).view([n, 9]).to_device(device),
            targets: Tensor::from_slice(&t).view([n, 9]).to_device(device),
            v: Tensor::from_slice(&v).to_device(device),
            zero_v: Tensor::from_slice(&zv).to_device(device),
            zero_count: Tensor::from_slice(&zc).to_device(device),
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
            zero_count: self.zero_count.index_select(0, idx),
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
    pub zero_count: Tensor,
    /// The operation indices (int64).
    pub idx: Tensor,
}

/// Upstream's stratified batches (training.md §3, `create_stratified_indices`): the
/// operation indices of each level, levels in first-appearance order (9, 0, 1, …, 8).
pub struct Stratified {
    /// (level, its operation indices ascending, int64 on the device).
    levels: Vec<(usize, Tensor)>,
    /// Operations at levels 0–3 (19,440).
    n_low: usize,
    counts: [usize; N_LEVELS],
    device: Device,
}

impl Stratified {
    pub fn new(ds: &Dataset) -> Stratified {
        let mut order: Vec<usize> = Vec::new();
        let mut members: Vec<Vec<i64>> = vec![Vec::new(); N_LEVELS];
        for (i, &v) in ds.v_host.iter().enumerate() {
            if members[v].is_empty() {
                order.push(v);
            }
            members[v].push(i as i64);
        }
        let device = ds.v.device();
        let mut counts = [0; N_LEVELS];
        for (l, m) in members.iter().enumerate() {
            counts[l] = m.len();
        }
        let n_low = (0..4).map(|l| counts[l]).sum();
        Stratified {
            levels: order
                .into_iter()
                .map(|l| (l, Tensor::from_slice(&members[l]).to_device(device)))
                .collect(),
            n_low,
            counts,
            device,
        }
    }

    /// How many draws each level gets in a batch of `batch` with `high_ratio` of it for
    /// the levels ≥ 4, in the order they are drawn.
    pub fn draws(&self, batch: i64, high_ratio: f64) -> Vec<(usize, i64)> {
        let h = (batch as f64 * high_ratio) as i64;
        let low_budget = batch - h;
        let high = self.levels.iter().filter(|(l, _)| *l >= 4);
        let low = self.levels.iter().filter(|(l, _)| *l < 4);
        high.map(|(l, _)| (*l, (h / 6).max(1)))
            .chain(low.map(|(l, _)| {
                let k = (low_budget * self.counts[*l] as i64) as f64 / self.n_low.max(1) as f64;
                (*l, (k as i64).max(1))
            }))
            .collect()
    }

    /// One epoch's batches, all drawn before the first step: ⌈19683/B⌉ batches of B
    /// indices each (with replacement, not a permutation).
    pub fn epoch(&self, batch: i64, high_ratio: f64) -> Vec<Tensor> {
        let batch = batch.max(1);
        let n_batches = (N_OPS as i64 + batch - 1) / batch;
        let draws = self.draws(batch, high_ratio);
        let opts = (tch::Kind::Int64, self.device);
        (0..n_batches)
            .map(|_| {
                let parts: Vec<Tensor> = draws
                    .iter()
                    .filter_map(|&(l, k)| {
                        let (_, members) = self.levels.iter().find(|(m, _)| *m == l)?;
                        let pos = Tensor::randint(self.counts[l] as i64, [k], opts);
                        Some(members.index_select(0, &pos))
                    })
                    .collect();
                let all = Tensor::cat(&parts, 0);
                let len = all.size()[0];
                if len > batch {
                    let keep = Tensor::randperm(len, opts).narrow(0, 0, batch);
                    all.index_select(0, &keep)
                } else if len < batch {
                    let extra = Tensor::randint(N_OPS as i64, [batch - len], opts);
                    Tensor::cat(&[all, extra], 0)
                } else {
                    all
                }
            })
            .collect()
    }
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

    #[test]
    fn zero_counts() {
        assert_eq!(zero_count(0), 0);
        assert_eq!(zero_count(1), 1);
        let all_zero: usize = (0..9).map(|d| 3usize.pow(d)).sum();
        assert_eq!(zero_count(all_zero), 9);
        // digits of 3 + 1 = 4: [0, 0, -1, …]; of 10 = 1 + 9: [0, -1, 0, -1, …]
        assert_eq!(zero_count(10), 2);
    }

    /// training.md §3: at B 512 each batch holds 21 of each level 4–9, 259/86/28/9 of
    /// levels 0–3 plus 4 uniform extras; ratio 0 still takes one per high level.
    #[test]
    fn stratified_batches_as_upstream() {
        let ds = Dataset::new(Device::Cpu);
        let st = Stratified::new(&ds);
        let d = st.draws(512, 0.25);
        let levels: Vec<usize> = d.iter().map(|x| x.0).collect();
        assert_eq!(levels, vec![9, 4, 5, 6, 7, 8, 0, 1, 2, 3]);
        let counts: Vec<i64> = d.iter().map(|x| x.1).collect();
        assert_eq!(counts, vec![21, 21, 21, 21, 21, 21, 259, 86, 28, 9]);
        assert!(st.draws(100, 0.0)[..6].iter().all(|x| x.1 == 1));
        tch::manual_seed(0);
        let batches = st.epoch(512, 0.25);
        assert_eq!(batches.len(), 39);
        for b in &batches {
            assert_eq!(b.size(), vec![512]);
            let v: Vec<i64> = Vec::try_from(&ds.v.index_select(0, b)).unwrap();
            // the first 508 rows: the strata in order
            assert!(v[..21].iter().all(|&x| x == 9));
            assert!(v[21..42].iter().all(|&x| x == 4));
            assert!(v[126..385].iter().all(|&x| x == 0));
            assert!(v[499..508].iter().all(|&x| x == 3));
        }
        // B = 8: 6 high draws + 7 low > 8 → a random subset of 8.
        let small = st.epoch(8, 0.25);
        assert_eq!(small.len(), 2461);
        assert!(small.iter().all(|b| b.size() == vec![8]));
    }
}
