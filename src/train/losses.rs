//! The training losses (training.md "Losses"), each enabled and weighted by the config.

use serde::Serialize;
use tch::{Kind, Reduction, Tensor};

use crate::config::LossConfig;

use super::data::{Batch, N_LEVELS};
use super::model::GEOOPT_ARTANH_MAX;

/// The loss settings resolved from the config's `loss:` block, with upstream's defaults
/// where a key is absent (training.md §2). A section absent from the config is off
/// (upstream raises KeyError); `enabled: false` turns off rank, geodesic and
/// zero_structure; rich_hierarchy.enabled and radial.enabled are not read (as upstream).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossSettings {
    pub inner: f64,
    pub outer: f64,
    /// Phase 2 ⇔ epoch ≥ loss.geodesic.phase_start_epoch [50] (also when geodesic is off).
    pub phase_start_epoch: u64,
    pub rich: Option<RichSettings>,
    pub radial: Option<RadialSettings>,
    pub rank: Option<RankSettings>,
    pub geodesic: Option<GeodesicSettings>,
    pub zero: Option<ZeroSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RichSettings {
    pub hierarchy_weight: f64,
    pub coverage_weight: f64,
    pub richness_weight: f64,
    pub separation_weight: f64,
    pub min_richness_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RadialSettings {
    /// radial_weight; halved in phase 2.
    pub weight: f64,
    pub margin_weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankSettings {
    pub weight: f64,
    pub temperature: f64,
    pub n_pairs: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeodesicSettings {
    pub weight: f64,
    pub curvature: f64,
    pub max_target_distance: f64,
    pub n_pairs: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeroSettings {
    /// valuation_weight: the outer weight and the valuation part's weight.
    pub valuation_weight: f64,
    pub sparsity_weight: f64,
}

/// The outer weights of the per-embedding terms at one epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Weights {
    pub phase: u8,
    pub radial: f64,
    pub rank: f64,
    pub zero_structure: f64,
    pub geodesic: f64,
}

impl LossSettings {
    pub fn from_config(cfg: Option<&LossConfig>) -> LossSettings {
        let cfg = cfg.cloned().unwrap_or_default();
        let on = |enabled: Option<bool>| enabled != Some(false);
        let radial = cfg.radial.clone().unwrap_or_default();
        LossSettings {
            inner: radial.inner_radius.unwrap_or(0.08),
            outer: radial.outer_radius.unwrap_or(0.90),
            phase_start_epoch: cfg
                .geodesic
                .as_ref()
                .and_then(|g| g.phase_start_epoch)
                .unwrap_or(50),
            rich: cfg.rich_hierarchy.as_ref().map(|r| RichSettings {
                hierarchy_weight: r.hierarchy_weight.unwrap_or(5.0),
                coverage_weight: r.coverage_weight.unwrap_or(1.0),
                richness_weight: r.richness_weight.unwrap_or(2.0),
                separation_weight: r.separation_weight.unwrap_or(3.0),
                min_richness_ratio: r.min_richness_ratio.unwrap_or(0.5),
            }),
            radial: cfg.radial.as_ref().map(|r| RadialSettings {
                weight: r.radial_weight.unwrap_or(1.0),
                margin_weight: r.margin_weight.unwrap_or(0.5),
            }),
            rank: cfg
                .rank
                .as_ref()
                .filter(|r| on(r.enabled))
                .map(|r| RankSettings {
                    weight: r.weight.unwrap_or(0.5),
                    temperature: r.temperature.unwrap_or(0.1),
                    n_pairs: r.n_pairs.unwrap_or(2000).min(i64::MAX as u64) as i64,
                }),
            geodesic: cfg
                .geodesic
                .as_ref()
                .filter(|g| on(g.enabled))
                .map(|g| GeodesicSettings {
                    weight: g.weight.unwrap_or(0.3),
                    curvature: g.curvature.unwrap_or(1.0),
                    max_target_distance: g.max_target_distance.unwrap_or(3.0),
                    n_pairs: g.n_pairs.unwrap_or(2000).min(i64::MAX as u64) as i64,
                }),
            zero: cfg
                .zero_structure
                .as_ref()
                .filter(|z| on(z.enabled))
                .map(|z| ZeroSettings {
                    valuation_weight: z.valuation_weight.unwrap_or(0.5),
                    sparsity_weight: z.sparsity_weight.unwrap_or(0.3),
                }),
        }
    }

    /// The outer weights at 0-based `epoch`: radial_weight (halved in phase 2), rank.weight,
    /// zero_structure.valuation_weight, geodesic.weight (phase 2 only); 0 for a term off.
    pub fn weights(&self, epoch: u64) -> Weights {
        let phase2 = epoch >= self.phase_start_epoch;
        Weights {
            phase: if phase2 { 2 } else { 1 },
            radial: self.radial.as_ref().map_or(0.0, |r| {
                if phase2 {
                    r.weight * 0.5
                } else {
                    r.weight
                }
            }),
            rank: self.rank.as_ref().map_or(0.0, |r| r.weight),
            zero_structure: self.zero.as_ref().map_or(0.0, |z| z.valuation_weight),
            geodesic: match &self.geodesic {
                Some(g) if phase2 => g.weight,
                _ => 0.0,
            },
        }
    }

    /// Target radius per level v: outer − (v/9)(outer − inner), [10] float32.
    pub fn targets(&self, device: tch::Device) -> Tensor {
        let t: Vec<f32> = (0..N_LEVELS)
            .map(|v| (self.outer - (v as f64 / 9.0) * (self.outer - self.inner)) as f32)
            .collect();
        Tensor::from_slice(&t).to_device(device)
    }
}

/// The loss values of a batch (or their epoch means): the rich-hierarchy parts and
/// total, each per-embedding term as loss(A) + loss(B) before its outer weight, and the
/// weighted total.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LossValues {
    pub total: f64,
    pub rich: f64,
    pub rich_hierarchy: f64,
    pub rich_coverage: f64,
    pub rich_richness: f64,
    pub rich_separation: f64,
    pub radial: f64,
    pub rank: f64,
    pub geodesic: f64,
    pub zero_structure: f64,
}

impl LossValues {
    fn fields(&mut self) -> [&mut f64; 10] {
        [
            &mut self.total,
            &mut self.rich,
            &mut self.rich_hierarchy,
            &mut self.rich_coverage,
            &mut self.rich_richness,
            &mut self.rich_separation,
            &mut self.radial,
            &mut self.rank,
            &mut self.geodesic,
            &mut self.zero_structure,
        ]
    }

    pub fn add(&mut self, o: &LossValues) {
        let mut o = o.clone();
        for (a, b) in self.fields().into_iter().zip(o.fields()) {
            *a += *b;
        }
    }

    pub fn scale(&mut self, k: f64) {
        for x in self.fields() {
            *x *= k;
        }
    }
}

/// Poincaré distance with curvature c (geoopt): d(x, y) = (2/√c)·artanh(√c‖(−x) ⊕_c y‖),
/// rows of x and y, the artanh argument clamped to 1 − 1e-7.
pub fn poincare_distance(x: &Tensor, y: &Tensor, c: f64) -> Tensor {
    let mx = -x;
    let xy = (&mx * y).sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
    let x2 = (&mx * &mx).sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
    let y2 = (y * y).sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
    let num: Tensor = (2.0 * c * &xy + c * &y2 + 1.0) * &mx + (1.0 - c * &x2) * y;
    let den: Tensor = 2.0 * c * &xy + c * c * &x2 * &y2 + 1.0;
    let m = num / den.clamp_min(1e-15);
    let sc = c.sqrt();
    let n = m.norm_scalaropt_dim(2.0, [-1i64], false);
    (&n * sc)
        .clamp(-GEOOPT_ARTANH_MAX, GEOOPT_ARTANH_MAX)
        .atanh()
        * (2.0 / sc)
}

/// The losses' radius: d(0, z) = 2·artanh(‖z‖) (c = 1.0, the loss classes' default;
/// artanh argument clamped to 1 − 1e-7).
pub fn loss_radius(z: &Tensor) -> Tensor {
    z.norm_scalaropt_dim(2.0, [-1i64], false)
        .clamp(-GEOOPT_ARTANH_MAX, GEOOPT_ARTANH_MAX)
        .atanh()
        * 2.0
}

/// Per-level statistics of radii r over the batch: (counts [10], means [10]).
fn level_stats(r: &Tensor, onehot: &Tensor) -> (Tensor, Tensor) {
    let counts = onehot.sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
    let sums = (onehot * r.unsqueeze(1)).sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
    let means = &sums / counts.clamp_min(1.0);
    (counts, means)
}

/// Unbiased per-level variance [10] of r (0 where a level has < 2 samples), and counts.
pub fn level_variance(r: &Tensor, onehot: &Tensor) -> (Tensor, Tensor) {
    let (counts, means) = level_stats(r, onehot);
    let centred = r.unsqueeze(1) - means.unsqueeze(0);
    let ss = (onehot * &centred * &centred).sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
    let var = ss / (&counts - 1.0).clamp_min(1.0);
    (var, counts)
}

/// Everything the losses need besides the batch.
pub struct LossInputs<'a> {
    pub settings: &'a LossSettings,
    /// Target radius per level [10].
    pub targets: &'a Tensor,
    /// The richness baseline of every operation [N]: the Euclidean norm ‖z_B_hyp‖ of the
    /// starting model (training.md §2), taken by batch position.
    pub orig: &'a Tensor,
    /// Valuation of every index 0..19682 (for |i − j| in the geodesic loss).
    pub valuations: &'a Tensor,
    /// 0-based epoch (phase, weights).
    pub epoch: u64,
}

/// `rows` independent pair draws over a batch of `n`: (i, j) int64 [rows, k], i drawn
/// first, then j; where i = j, j ← (j + 1) mod n (training.md §2).
fn pairs(rows: i64, n: i64, k: i64, device: tch::Device) -> (Tensor, Tensor) {
    let k = k.max(0);
    let n = n.max(1);
    let i = Tensor::randint(n, [rows, k], (Kind::Int64, device));
    let j = Tensor::randint(n, [rows, k], (Kind::Int64, device));
    let j = j.where_self(&i.ne_tensor(&j), &((&j + 1).remainder(n)));
    (i, j)
}

/// `x` [n] (or [rows, n]) at the positions `p` [rows, k] of each row.
fn take(x: &Tensor, p: &Tensor) -> Tensor {
    if x.dim() == 1 {
        x.index_select(0, &p.flatten(0, -1))
            .view(p.size().as_slice())
    } else {
        x.gather(1, p, false)
    }
}

/// Σ over rows of the mean of `x` [rows, k] where `mask`, 0 for a row without any.
fn masked_row_means(x: &Tensor, mask: &Tensor) -> Tensor {
    let cnt = mask.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let s = (x * mask).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    (s / cnt.clamp_min(1.0)).sum(Kind::Float)
}

// The per-embedding losses below take both embeddings at once: `r2` [2, B] holds the
// radii of z_A (row 0) and z_B (row 1), `z2` [2, B, L] the points, and each returns
// loss(A) + loss(B), computed with one set of kernels for both; each row draws its own
// pairs (upstream draws them per loss call).

/// RadialHierarchyLoss: mean((r − t(v))²·(1 + e^{0.4v})) + margin_weight · the mean
/// violation over min(1000, B(B−1)/2) random pairs with v_i > v_j.
fn radial_loss(s: &RadialSettings, r2: &Tensor, v: &Tensor, inp: &LossInputs) -> Tensor {
    let vf = v.to_kind(Kind::Float);
    let t = inp.targets.index_select(0, v);
    let n = r2.size()[1];
    let rows = r2.size()[0];
    let primary = ((r2 - &t).square() * ((&vf * 0.4).exp() + 1.0)).sum(Kind::Float) / n as f64;
    let (i, j) = pairs(rows, n, (n * (n - 1) / 2).min(1000), r2.device());
    let (vi, vj) = (take(&vf, &i), take(&vf, &j));
    let (ri, rj) = (take(r2, &i), take(r2, &j));
    let step = (inp.settings.outer - inp.settings.inner) / 9.0;
    let mask = vi.gt_tensor(&vj).to_kind(Kind::Float);
    let viol = ((&vi - &vj) * (step * 0.5) - (rj - ri)).relu();
    primary + masked_row_means(&viol, &mask) * s.margin_weight
}

/// GlobalRankLoss: over min(n_pairs, B(B−1)) random pairs with Δv = v_i − v_j ≠ 0, the
/// mean of |Δv|·sigmoid(−sign(Δv)·(r_j − r_i)/τ); 0 without such a pair.
fn rank_loss(s: &RankSettings, r2: &Tensor, v: &Tensor) -> Tensor {
    let n = r2.size()[1];
    let rows = r2.size()[0];
    let vf = v.to_kind(Kind::Float);
    let (i, j) = pairs(rows, n, s.n_pairs.min(n * (n - 1)), r2.device());
    let dv = take(&vf, &i) - take(&vf, &j);
    let dr = take(r2, &j) - take(r2, &i);
    let p = (-dv.sign() * dr / s.temperature).sigmoid();
    let keep = dv.ne(0.0).to_kind(Kind::Float);
    masked_row_means(&(p * dv.abs()), &keep)
}

/// PAdicGeodesicLoss: smooth-L1 (β 1) of d_c(z_i, z_j) against
/// max_target_distance·exp(−v(|idx_i − idx_j|)/3) over min(n_pairs, B(B−1)/2) pairs.
fn geodesic_loss(s: &GeodesicSettings, z2: &Tensor, idx: &Tensor, inp: &LossInputs) -> Tensor {
    let (rows, n, dim) = (z2.size()[0], z2.size()[1], z2.size()[2]);
    let (i, j) = pairs(rows, n, s.n_pairs.min(n * (n - 1) / 2), z2.device());
    let k = i.size()[1];
    if k == 0 {
        return z2.sum(Kind::Float) * 0.0;
    }
    let diff = (take(idx, &i) - take(idx, &j)).abs();
    let vdiff = take(inp.valuations, &diff).to_kind(Kind::Float);
    let target = (-vdiff / 3.0).exp() * s.max_target_distance;
    let g = |p: &Tensor| z2.gather(1, &p.unsqueeze(-1).expand([rows, k, dim], false), false);
    let d = poincare_distance(&g(&i), &g(&j), s.curvature);
    // mean over rows × pairs · rows = Σ of the per-row means
    d.smooth_l1_loss(&target, Reduction::Mean, 1.0) * rows as f64
}

/// Standardised rows: (x − mean)/(std₁ + 1e-8), along the last dimension.
fn standardise(x: &Tensor) -> Tensor {
    let m = x.mean_dim([-1i64].as_slice(), true, Kind::Float);
    let sd = x.std_correction([-1i64].as_slice(), 1, true);
    (x - m) / (sd + 1e-8)
}

/// CombinedZeroStructureLoss: valuation_weight·smoothL1(r, t(zero valuation)) +
/// sparsity_weight·(ρ + 0.3)², ρ = mean(ẑ·r̂) of the standardised count of zero digits and
/// radius (0 for a batch of one operation, whose std₁ is undefined).
fn zero_loss(s: &ZeroSettings, r2: &Tensor, batch: &Batch, inp: &LossInputs) -> Tensor {
    let t = inp.targets.index_select(0, &batch.zero_v);
    let rows = r2.size()[0] as f64;
    let val = r2.smooth_l1_loss(&t.expand_as(r2), Reduction::Mean, 1.0) * rows;
    let sparsity = if r2.size()[1] >= 2 {
        let rho = (standardise(&batch.zero_count) * standardise(r2)).mean_dim(
            [-1i64].as_slice(),
            false,
            Kind::Float,
        );
        (rho + 0.3).square().sum(Kind::Float)
    } else {
        r2.sum(Kind::Float) * 0.0
    };
    val * s.valuation_weight + sparsity * s.sparsity_weight
}

/// The rich-hierarchy loss on z_B's radii `rb`: (total, [hierarchy, coverage, richness,
/// separation]); `coverage_logits` = decoder_A(log_map_zero(z_A_hyp)).
fn rich_loss(
    s: &RichSettings,
    rb: &Tensor,
    batch: &Batch,
    coverage_logits: &Tensor,
    inp: &LossInputs,
) -> (Tensor, [Tensor; 4]) {
    let onehot = batch.v.one_hot(N_LEVELS as i64).to_kind(Kind::Float);
    let (counts, means) = level_stats(rb, &onehot);
    let present = counts.gt(0.0).to_kind(Kind::Float);
    let n_present = present.sum(Kind::Float).clamp_min(1.0);
    let hierarchy = ((&means - inp.targets).square() * &present).sum(Kind::Float) / &n_present;
    let coverage = coverage_logits.view([-1, 3]).cross_entropy_loss::<Tensor>(
        &batch.targets.view([-1]),
        None,
        Reduction::Mean,
        -100,
        0.0,
    );
    let (var_new, _) = level_variance(rb, &onehot);
    let orig = inp.orig.index_select(0, &batch.idx);
    let (var_orig, _) = level_variance(&orig, &onehot);
    let has_var = counts.ge(2.0).to_kind(Kind::Float);
    let ratio = var_new / (var_orig + 1e-8);
    let short = (-ratio + s.min_richness_ratio).relu().square() * &has_var;
    let richness = short.sum(Kind::Float) / &n_present;
    // Consecutive present levels, ascending v (gaps skipped): relu(r̄_next − r̄ + 0.01).
    let mut host = [0f32; N_LEVELS];
    counts
        .to_device(tch::Device::Cpu)
        .copy_data(&mut host, N_LEVELS);
    let levels: Vec<i64> = (0..N_LEVELS as i64)
        .filter(|&l| host[l as usize] > 0.0)
        .collect();
    let separation = if levels.len() >= 2 {
        let lo = Tensor::from_slice(&levels[..levels.len() - 1]).to_device(rb.device());
        let hi = Tensor::from_slice(&levels[1..]).to_device(rb.device());
        (means.index_select(0, &hi) - means.index_select(0, &lo) + 0.01)
            .relu()
            .sum(Kind::Float)
    } else {
        rb.sum(Kind::Float) * 0.0
    };
    let total = &hierarchy * s.hierarchy_weight
        + &coverage * s.coverage_weight
        + &richness * s.richness_weight
        + &separation * s.separation_weight;
    (total, [hierarchy, coverage, richness, separation])
}

/// The total loss of a batch and its parts (training.md §2): rich(z_B) + w_rad·radial +
/// w_rank·rank + w_zero·zero + w_geo·geodesic, each per-embedding term on z_A and z_B.
/// `z_a`, `z_b` are the Poincaré embeddings, `coverage_logits` decoder_A's logits of the
/// log map of z_A.
pub fn total_loss(
    inp: &LossInputs,
    batch: &Batch,
    z_a: &Tensor,
    z_b: &Tensor,
    coverage_logits: &Tensor,
) -> (Tensor, LossValues) {
    let s = inp.settings;
    let w = s.weights(inp.epoch);
    let z2 = Tensor::stack(&[z_a, z_b], 0);
    // The radius of each loss call, c = 1.0 (recomputed from z by each loss upstream).
    let r2 = loss_radius(&z2);
    let rb = r2.get(1);
    let mut parts: Vec<Tensor> = Vec::new();
    let mut vals = LossValues::default();
    if let Some(rs) = &s.rich {
        let (t, p) = rich_loss(rs, &rb, batch, coverage_logits, inp);
        let [h, c, r, sep] = p.map(|x| x.double_value(&[]));
        (
            vals.rich_hierarchy,
            vals.rich_coverage,
            vals.rich_richness,
            vals.rich_separation,
        ) = (h, c, r, sep);
        vals.rich = t.double_value(&[]);
        parts.push(t);
    }
    if let Some(rs) = &s.radial {
        let l = radial_loss(rs, &r2, &batch.v, inp);
        vals.radial = l.double_value(&[]);
        parts.push(l * w.radial);
    }
    if let Some(rs) = &s.rank {
        let l = rank_loss(rs, &r2, &batch.v);
        vals.rank = l.double_value(&[]);
        parts.push(l * w.rank);
    }
    if let Some(zs) = &s.zero {
        let l = zero_loss(zs, &r2, batch, inp);
        vals.zero_structure = l.double_value(&[]);
        parts.push(l * w.zero_structure);
    }
    if let (Some(gs), 2) = (&s.geodesic, w.phase) {
        let l = geodesic_loss(gs, &z2, &batch.idx, inp);
        vals.geodesic = l.double_value(&[]);
        parts.push(l * w.geodesic);
    }
    let total = parts
        .into_iter()
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| rb.sum(Kind::Float) * 0.0);
    vals.total = total.double_value(&[]);
    (total, vals)
}

/// The geodesic term (loss(z_A) + loss(z_B), before its weight) whatever the phase:
/// `None` when the config turns it off. `tvck eval --losses` shows it in phase 1 too.
pub fn geodesic_value(inp: &LossInputs, batch: &Batch, z_a: &Tensor, z_b: &Tensor) -> Option<f64> {
    let gs = inp.settings.geodesic.as_ref()?;
    let z2 = Tensor::stack(&[z_a, z_b], 0);
    Some(geodesic_loss(gs, &z2, &batch.idx, inp).double_value(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn distance_from_origin_matches_radius() {
        let x = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0.3f32, 0.4]).view([1, 2]);
        let d = poincare_distance(&x, &y, 1.0).double_value(&[0]);
        let r = loss_radius(&y).double_value(&[0]);
        assert!((d - r).abs() < 1e-6 && (r - 2.0 * 0.5f64.atanh()).abs() < 1e-5);
        // symmetric
        let z = Tensor::from_slice(&[-0.2f32, 0.1]).view([1, 2]);
        let a = poincare_distance(&y, &z, 1.0).double_value(&[0]);
        let b = poincare_distance(&z, &y, 1.0).double_value(&[0]);
        assert!((a - b).abs() < 1e-5, "{a} {b}");
    }

    fn settings(yaml: &str) -> LossSettings {
        let cfg = crate::config::TrainingConfig::from_str(yaml, "x.yaml").unwrap();
        LossSettings::from_config(cfg.loss.as_ref())
    }

    /// Each per-embedding loss of [A; B] equals loss(A) + loss(B) for the deterministic
    /// parts; the random-pair losses draw their own pairs per row, so for a row repeated
    /// twice the stacked value is the sum of two single-row draws in that order.
    #[test]
    fn stacked_losses_are_the_sum_of_the_rows() {
        let s = settings(
            "loss:\n  radial: {}\n  rank: {n_pairs: 300}\n  geodesic: {n_pairs: 300}\n  zero_structure: {}\n",
        );
        let ds = crate::train::data::Dataset::new(Device::Cpu);
        let idx = Tensor::arange_start(100, 356, (Kind::Int64, Device::Cpu));
        let batch = ds.batch(&idx);
        let targets = s.targets(Device::Cpu);
        let orig = Tensor::ones([19683], (Kind::Float, Device::Cpu));
        let inp = LossInputs {
            settings: &s,
            targets: &targets,
            orig: &orig,
            valuations: &ds.v,
            epoch: 0,
        };
        tch::manual_seed(9);
        let z2 = Tensor::rand([2, 256, 4], (Kind::Float, Device::Cpu)) * 0.4;
        let r2 = loss_radius(&z2);
        // zero_structure: deterministic, the sum of the rows.
        let zs = s.zero.as_ref().unwrap();
        let both = zero_loss(zs, &r2, &batch, &inp).double_value(&[]);
        let rows: f64 = (0..2)
            .map(|k| zero_loss(zs, &r2.narrow(0, k, 1), &batch, &inp).double_value(&[]))
            .sum();
        assert!(
            (both - rows).abs() < 1e-5 * rows.abs().max(1.0),
            "{both} {rows}"
        );
        // The random-pair losses: independent draws per row have the same mean as one
        // row's; over 40 seeds the stacked mean is twice the single-row mean.
        type F<'a> = Box<dyn Fn(&Tensor, &Tensor) -> Tensor + 'a>;
        let losses: Vec<(&str, F)> = vec![
            (
                "radial",
                Box::new(|r, _| radial_loss(s.radial.as_ref().unwrap(), r, &batch.v, &inp)),
            ),
            (
                "rank",
                Box::new(|r, _| rank_loss(s.rank.as_ref().unwrap(), r, &batch.v)),
            ),
            (
                "geodesic",
                Box::new(|_, z| geodesic_loss(s.geodesic.as_ref().unwrap(), z, &batch.idx, &inp)),
            ),
        ];
        let same_r = Tensor::stack(&[r2.get(1), r2.get(1)], 0);
        let same_z = Tensor::stack(&[z2.get(1), z2.get(1)], 0);
        for (name, f) in losses {
            let (mut both, mut one) = (0.0, 0.0);
            for seed in 0..40 {
                tch::manual_seed(seed);
                both += f(&same_r, &same_z).double_value(&[]);
                tch::manual_seed(seed + 1000);
                one += f(&r2.narrow(0, 1, 1), &z2.narrow(0, 1, 1)).double_value(&[]);
            }
            assert!(
                (both / 2.0 - one).abs() < 0.05 * one.abs().max(1e-3),
                "{name}: {both} vs 2·{one}"
            );
        }
    }

    /// Pairs never pair a row with itself (j ← j + 1 mod B where i = j).
    #[test]
    fn pairs_skip_self() {
        tch::manual_seed(4);
        let (i, j) = pairs(2, 3, 5000, Device::Cpu);
        assert_eq!(i.size(), vec![2, 5000]);
        assert_eq!(i.eq_tensor(&j).sum(Kind::Int64).int64_value(&[]), 0);
        let (i, j) = pairs(1, 1, 4, Device::Cpu);
        assert_eq!(i.eq_tensor(&j).sum(Kind::Int64).int64_value(&[]), 4);
    }

    /// rank = mean over the kept pairs of |Δv|·p (not Σ|Δv|p / Σ|Δv|).
    #[test]
    fn rank_is_the_mean_over_kept_pairs() {
        let s = RankSettings {
            weight: 0.5,
            temperature: 0.1,
            n_pairs: 2,
        };
        // B = 2: the pairs are (0, 1) or (1, 0); v = [0, 2], r = [0.5, 0.5] → p = 1/2,
        // |Δv| = 2 for each pair: the mean is 1 (Σ|Δv|p/Σ|Δv| would give 1/2).
        let r = Tensor::from_slice(&[0.5f32, 0.5]).view([1, 2]);
        let v = Tensor::from_slice(&[0i64, 2]);
        tch::manual_seed(0);
        let l = rank_loss(&s, &r, &v).double_value(&[]);
        assert!((l - 1.0).abs() < 1e-6, "{l}");
        // no pair with Δv ≠ 0: 0
        let v = Tensor::from_slice(&[3i64, 3]);
        assert_eq!(rank_loss(&s, &r, &v).double_value(&[]), 0.0);
    }

    #[test]
    fn settings_and_weights_follow_the_config() {
        let s = settings(
            "loss:\n  radial: {inner_radius: 0.08, outer_radius: 0.9, enabled: false}\n  rank: {enabled: false}\n  geodesic: {phase_start_epoch: 3, weight: 0.5}\n  zero_structure: {valuation_weight: 0.4}\n",
        );
        assert!(s.rank.is_none() && s.rich.is_none());
        // radial.enabled is not read (as upstream).
        assert_eq!(s.radial.as_ref().unwrap().weight, 1.0);
        assert_eq!(s.phase_start_epoch, 3);
        let w1 = s.weights(2);
        assert_eq!(
            (w1.phase, w1.radial, w1.geodesic, w1.rank),
            (1, 1.0, 0.0, 0.0)
        );
        assert_eq!(w1.zero_structure, 0.4);
        let w2 = s.weights(3);
        assert_eq!((w2.phase, w2.radial, w2.geodesic), (2, 0.5, 0.5));
        let mut t = [0f32; 10];
        s.targets(Device::Cpu).copy_data(&mut t, 10);
        assert!((t[0] - 0.9).abs() < 1e-6 && (t[9] - 0.08).abs() < 1e-6);
        // upstream defaults
        let d = settings("loss:\n  rich_hierarchy: {}\n  radial: {}\n  rank: {}\n  geodesic: {}\n  zero_structure: {}\n");
        assert_eq!((d.inner, d.outer, d.phase_start_epoch), (0.08, 0.90, 50));
        assert_eq!(d.rich.as_ref().unwrap().richness_weight, 2.0);
        let w = d.weights(0);
        assert_eq!((w.radial, w.rank, w.zero_structure), (1.0, 0.5, 0.5));
        assert_eq!(d.weights(50).geodesic, 0.3);
    }
}
