//! The evaluation metrics (domain.md §6) over all 19,683 operations in eval mode.

use serde::Serialize;
use tch::{Kind, Tensor};

use super::data::{Dataset, N_LEVELS, N_OPS};
use super::model::{Mode, Model};

/// dist_corr uses every `DIST_STRIDE`-th operation (0, 40, …, 19,680: 493 points,
/// 121,278 pairs).
pub const DIST_STRIDE: usize = 40;

/// Clamp of √c·|x| below 1 in the Poincaré distance (keeps artanh finite).
pub const ARTANH_MAX: f64 = 1.0 - 1e-5;

/// Metrics of a model. Radius-based ones are `None` for v5.5 (no projection).
/// r_v0, r_v9, mean_radius and std_radius are those of z_B_hyp (the headline embedding).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct EvalMetrics {
    pub coverage: f64,
    /// Operations reconstructed exactly (of 19,683).
    pub covered: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hierarchy_a: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hierarchy_b: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub richness_a: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub richness_b: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dist_corr_a: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dist_corr_b: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r_v0: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r_v9: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_radius: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std_radius: Option<f64>,
    #[serde(rename = "Q", skip_serializing_if = "Option::is_none")]
    pub q: Option<f64>,
    /// The curvature the radii were measured with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curvature: Option<f64>,
}

/// Poincaré distance from the origin: (2/√c)·artanh(√c·|x|), float32 like the model.
pub fn poincare_radius(z: &Tensor, c: &Tensor) -> Tensor {
    let sc = c.sqrt();
    let n = z.norm_scalaropt_dim(2.0, [-1i64], false);
    let a = (&n * &sc).clamp(0.0, ARTANH_MAX);
    a.atanh() * 2.0 / sc
}

/// Ranks (1-based) with ties given their average rank, like `scipy.stats.rankdata`.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Pearson correlation; 0 when a side is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman rank correlation (average ranks for ties, as scipy).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Mean over the valuation levels of the (population) radius variance within the level.
pub fn richness(radii: &[f64], v: &[usize]) -> f64 {
    let mut sum = [0.0f64; N_LEVELS];
    let mut sq = [0.0f64; N_LEVELS];
    let mut n = [0usize; N_LEVELS];
    for (&r, &l) in radii.iter().zip(v) {
        sum[l] += r;
        n[l] += 1;
    }
    for (&r, &l) in radii.iter().zip(v) {
        let m = sum[l] / n[l] as f64;
        sq[l] += (r - m) * (r - m);
    }
    let levels: Vec<f64> = (0..N_LEVELS)
        .filter(|&l| n[l] > 0)
        .map(|l| sq[l] / n[l] as f64)
        .collect();
    levels.iter().sum::<f64>() / levels.len() as f64
}

/// Spearman between pairwise Euclidean distances of the sampled embeddings and |v_i − v_j|.
pub fn dist_corr(z: &[f32], dim: usize, v: &[usize]) -> f64 {
    let sample: Vec<usize> = (0..N_OPS).step_by(DIST_STRIDE).collect();
    let mut d = Vec::with_capacity(sample.len() * sample.len() / 2);
    let mut dv = Vec::with_capacity(d.capacity());
    for (a, &i) in sample.iter().enumerate() {
        for &j in &sample[a + 1..] {
            let s: f64 = (0..dim)
                .map(|k| {
                    let e = f64::from(z[i * dim + k]) - f64::from(z[j * dim + k]);
                    e * e
                })
                .sum();
            d.push(s.sqrt());
            dv.push(v[i].abs_diff(v[j]) as f64);
        }
    }
    spearman(&d, &dv)
}

/// Mean of the radii at level `l`.
fn level_mean(radii: &[f64], v: &[usize], l: usize) -> f64 {
    let (s, n) = radii
        .iter()
        .zip(v)
        .filter(|(_, &x)| x == l)
        .fold((0.0, 0usize), |(s, n), (r, _)| (s + r, n + 1));
    s / n as f64
}

/// Evaluate `model` on every operation, in eval mode, without gradients.
pub fn evaluate(model: &Model, ds: &Dataset) -> EvalMetrics {
    evaluate_with_radii(model, ds).0
}

/// [`evaluate`], also handing back z_B's Poincaré radii of every operation (float32 [N];
/// `None` without a projection), which the trainer's richness loss starts from.
pub fn evaluate_with_radii(model: &Model, ds: &Dataset) -> (EvalMetrics, Option<Tensor>) {
    tch::no_grad(|| {
        let out = model.forward(&ds.x, Mode::EVAL);
        let pred = out.logits_a.argmax(-1, false);
        let ok = pred.eq_tensor(&ds.targets).all_dim(-1, false);
        let covered = ok.sum(Kind::Int64).int64_value(&[]) as usize;
        let mut m = EvalMetrics {
            coverage: covered as f64 / N_OPS as f64,
            covered,
            ..EvalMetrics::default()
        };
        let (Some(za), Some(zb), Some(c)) = (&out.z_a_hyp, &out.z_b_hyp, &out.curvature) else {
            return (m, None);
        };
        // A tensor's values as float32 on the host (tch's conversion: to float, to the
        // CPU, contiguous).
        let host = |t: &Tensor| -> Vec<f32> {
            Vec::try_from(t.flatten(0, -1)).expect("a float tensor converts to Vec<f32>")
        };
        let v = &ds.v_host;
        let vf: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        let ra: Vec<f64> = host(&poincare_radius(za, c))
            .into_iter()
            .map(f64::from)
            .collect();
        let rb_tensor = poincare_radius(zb, c);
        let rb: Vec<f64> = host(&rb_tensor).into_iter().map(f64::from).collect();
        let dim = za.size()[1] as usize;
        let ha = spearman(&vf, &ra);
        let hb = spearman(&vf, &rb);
        m.hierarchy_a = Some(ha);
        m.hierarchy_b = Some(hb);
        m.richness_a = Some(richness(&ra, v));
        m.richness_b = Some(richness(&rb, v));
        m.dist_corr_a = Some(dist_corr(&host(za), dim, v));
        let dcb = dist_corr(&host(zb), dim, v);
        m.dist_corr_b = Some(dcb);
        m.r_v0 = Some(level_mean(&rb, v, 0));
        m.r_v9 = Some(level_mean(&rb, v, 9));
        let mean = rb.iter().sum::<f64>() / rb.len() as f64;
        let var = rb.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / rb.len() as f64;
        m.mean_radius = Some(mean);
        m.std_radius = Some(var.sqrt());
        m.q = Some(dcb + 1.5 * hb.abs());
        m.curvature = Some(c.double_value(&[]));
        (m, Some(rb_tensor))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties_like_scipy() {
        // scipy.stats.rankdata([10, 20, 20, 5]) = [2, 3.5, 3.5, 1]
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 5.0]),
            vec![2.0, 3.5, 3.5, 1.0]
        );
    }

    #[test]
    fn spearman_known_values() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1,2,3,4,5], [5,6,7,8,7]).correlation = 0.8207826816681233
        let r = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5.0, 6.0, 7.0, 8.0, 7.0]);
        assert!((r - 0.820_782_681_668_123_3).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn richness_is_mean_level_variance() {
        // level 0: {1, 3} var 1; level 1: {2} var 0 → mean 0.5
        assert_eq!(richness(&[1.0, 3.0, 2.0], &[0, 0, 1]), 0.5);
    }

    #[test]
    fn radius_from_origin() {
        let z = Tensor::from_slice(&[0.5f32, 0.0]).view([1, 2]);
        let c = Tensor::from(1.0f32);
        let r = poincare_radius(&z, &c).double_value(&[0]);
        // 2·artanh(0.5) = ln 3
        assert!((r - 3f64.ln()).abs() < 1e-6, "{r}");
    }
}
