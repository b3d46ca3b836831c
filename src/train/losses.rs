//! The training losses (training.md "Losses"), each enabled and weighted by the config.

use serde::Serialize;
use tch::{Kind, Reduction, Tensor};

use crate::config::LossConfig;

use super::data::{Batch, N_LEVELS};
use super::metrics::{poincare_radius, ARTANH_MAX};

/// The loss settings resolved from the config's `loss:` block (upstream defaults where a
/// key is absent; a section that is absent or has `enabled: false` is off).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossSettings {
    pub inner: f64,
    pub outer: f64,
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
    pub weight: f64,
    pub margin_weight: f64,
    pub valuation_weighting: bool,
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
    pub phase_start_epoch: u64,
    pub max_target_distance: f64,
    pub valuation_scale: f64,
    pub n_pairs: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeroSettings {
    pub weight: f64,
    pub valuation_weight: f64,
    pub sparsity_weight: f64,
}

impl LossSettings {
    pub fn from_config(cfg: Option<&LossConfig>) -> LossSettings {
        let cfg = cfg.cloned().unwrap_or_default();
        let on = |present: bool, enabled: Option<bool>| present && enabled != Some(false);
        let radial = cfg.radial.clone().unwrap_or_default();
        LossSettings {
            inner: radial.inner_radius.unwrap_or(0.1),
            outer: radial.outer_radius.unwrap_or(0.85),
            rich: cfg
                .rich_hierarchy
                .as_ref()
                .filter(|r| on(true, r.enabled))
                .map(|r| RichSettings {
                    hierarchy_weight: r.hierarchy_weight.unwrap_or(5.0),
                    coverage_weight: r.coverage_weight.unwrap_or(1.0),
                    richness_weight: r.richness_weight.unwrap_or(2.5),
                    separation_weight: r.separation_weight.unwrap_or(3.0),
                    min_richness_ratio: r.min_richness_ratio.unwrap_or(0.5),
                }),
            radial: on(cfg.radial.is_some(), radial.enabled).then(|| RadialSettings {
                weight: radial.radial_weight.unwrap_or(1.0),
                margin_weight: radial.margin_weight.unwrap_or(0.5),
                valuation_weighting: radial.valuation_weighting.unwrap_or(true),
            }),
            rank: cfg
                .rank
                .as_ref()
                .filter(|r| on(true, r.enabled))
                .map(|r| RankSettings {
                    weight: r.weight.unwrap_or(1.0),
                    temperature: r.temperature.unwrap_or(0.1),
                    n_pairs: r.n_pairs.unwrap_or(2000) as i64,
                }),
            geodesic: cfg
                .geodesic
                .as_ref()
                .filter(|g| on(true, g.enabled))
                .map(|g| GeodesicSettings {
                    weight: g.weight.unwrap_or(1.0),
                    phase_start_epoch: g.phase_start_epoch.unwrap_or(0),
                    max_target_distance: g.max_target_distance.unwrap_or(3.0),
                    valuation_scale: g.valuation_scale.unwrap_or(3.0),
                    n_pairs: g.n_pairs.unwrap_or(2000) as i64,
                }),
            zero: cfg
                .zero_structure
                .as_ref()
                .filter(|z| on(true, z.enabled))
                .map(|z| ZeroSettings {
                    weight: 1.0,
                    valuation_weight: z.valuation_weight.unwrap_or(0.5),
                    sparsity_weight: z.sparsity_weight.unwrap_or(0.3),
                }),
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

/// The loss values of a batch (or their epoch means).
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
    pub fn add(&mut self, o: &LossValues) {
        self.total += o.total;
        self.rich += o.rich;
        self.rich_hierarchy += o.rich_hierarchy;
        self.rich_coverage += o.rich_coverage;
        self.rich_richness += o.rich_richness;
        self.rich_separation += o.rich_separation;
        self.radial += o.radial;
        self.rank += o.rank;
        self.geodesic += o.geodesic;
        self.zero_structure += o.zero_structure;
    }

    pub fn scale(&mut self, k: f64) {
        for x in [
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
        ] {
            *x *= k;
        }
    }
}

/// Poincaré distance d(x, y) = (2/√c)·artanh(√c‖(−x) ⊕_c y‖), rows of x and y.
pub fn poincare_distance(x: &Tensor, y: &Tensor, c: &Tensor) -> Tensor {
    let mx = -x;
    let xy = (&mx * y).sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
    let x2 = (&mx * &mx).sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
    let y2 = (y * y).sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
    let num: Tensor = (1.0 + 2.0 * c * &xy + c * &y2) * &mx + (1.0 - c * &x2) * y;
    let den: Tensor = 1.0 + 2.0 * c * &xy + c * c * &x2 * &y2;
    let m = num / den.clamp_min(1e-15);
    let sc = c.sqrt();
    let n = m.norm_scalaropt_dim(2.0, [-1i64], false);
    (&n * &sc).clamp(0.0, ARTANH_MAX).atanh() * 2.0 / sc
}

/// Per-level statistics of radii r over the batch: (counts [10], means [10]).
fn level_stats(r: &Tensor, onehot: &Tensor) -> (Tensor, Tensor) {
    let counts = onehot.sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
    let sums = (onehot * r.unsqueeze(1)).sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
    let means = &sums / counts.clamp_min(1.0);
    (counts, means)
}

/// Everything the losses need besides the batch.
pub struct LossInputs<'a> {
    pub settings: &'a LossSettings,
    /// Target radius per level [10].
    pub targets: &'a Tensor,
    /// Per-level radius variance of z_B at the start of training [10] (richness).
    pub var_orig: &'a Tensor,
    /// Valuation of every index 0..19682 (for |i − j| in the geodesic loss).
    pub valuations: &'a Tensor,
    pub epoch: u64,
}

/// Unbiased per-level variance [10] of r (0 where a level has < 2 samples).
pub fn level_variance(r: &Tensor, onehot: &Tensor) -> (Tensor, Tensor) {
    let (counts, means) = level_stats(r, onehot);
    let centred = r.unsqueeze(1) - means.unsqueeze(0);
    let ss = (onehot * &centred * &centred).sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
    let var = ss / (&counts - 1.0).clamp_min(1.0);
    (var, counts)
}

fn pairs(n: i64, k: i64, device: tch::Device) -> (Tensor, Tensor) {
    let k = k.max(1);
    (
        Tensor::randint(n, [k], (Kind::Int64, device)),
        Tensor::randint(n, [k], (Kind::Int64, device)),
    )
}

// The per-embedding losses below take both embeddings at once: `r2` [2, B] holds the
// radii of z_A (row 0) and z_B (row 1), `z2` [2, B, L] the points, and each returns
// loss(A) + loss(B), computed with one set of kernels for both (the same random pairs
// serve both rows).

fn radial_loss(s: &RadialSettings, r2: &Tensor, v: &Tensor, inp: &LossInputs) -> Tensor {
    let vf = v.to_kind(Kind::Float);
    let t = inp.targets.index_select(0, v);
    let n = r2.size()[1];
    let sq = (r2 - &t).square();
    let weighted = if s.valuation_weighting {
        sq * ((&vf * 0.4).exp() + 1.0)
    } else {
        sq
    };
    // Σ over both rows / B = mean(A) + mean(B).
    let primary = weighted.sum(Kind::Float) / n as f64;
    let (i, j) = pairs(n, n.min(1000), r2.device());
    let (vi, vj) = (vf.index_select(0, &i), vf.index_select(0, &j));
    let (ri, rj) = (r2.index_select(1, &i), r2.index_select(1, &j));
    let step = (inp.settings.outer - inp.settings.inner) / 9.0;
    let mask = vi.gt_tensor(&vj).to_kind(Kind::Float);
    let viol = ((&vi - &vj) * (step * 0.5) - (rj - ri)).relu() * &mask;
    let margin = viol.sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0);
    primary + margin * s.margin_weight
}

fn rank_loss(s: &RankSettings, r2: &Tensor, v: &Tensor) -> Tensor {
    let n = r2.size()[1];
    let vf = v.to_kind(Kind::Float);
    let (i, j) = pairs(n, s.n_pairs, r2.device());
    let dv = vf.index_select(0, &i) - vf.index_select(0, &j);
    let dr = r2.index_select(1, &j) - r2.index_select(1, &i);
    let p = (-dv.sign() * dr / s.temperature).sigmoid();
    let w = dv.abs();
    (p * &w).sum(Kind::Float) / w.sum(Kind::Float).clamp_min(1e-8)
}

fn geodesic_loss(
    s: &GeodesicSettings,
    z2: &Tensor,
    idx: &Tensor,
    c: &Tensor,
    inp: &LossInputs,
) -> Tensor {
    let n = z2.size()[1];
    let (i, j) = pairs(n, s.n_pairs, z2.device());
    let diff = (idx.index_select(0, &i) - idx.index_select(0, &j)).abs();
    let vdiff = inp.valuations.index_select(0, &diff).to_kind(Kind::Float);
    let target = (-vdiff / s.valuation_scale).exp() * s.max_target_distance;
    let d = poincare_distance(&z2.index_select(1, &i), &z2.index_select(1, &j), c);
    // mean over the rows × rows = Σ of the per-row means
    let rows = z2.size()[0] as f64;
    d.smooth_l1_loss(&target.expand_as(&d), Reduction::Mean, 1.0) * rows
}

fn zero_loss(s: &ZeroSettings, r2: &Tensor, zero_v: &Tensor, inp: &LossInputs) -> Tensor {
    let t = inp.targets.index_select(0, zero_v);
    let rows = r2.size()[0] as f64;
    let val = r2.smooth_l1_loss(&t.expand_as(r2), Reduction::Mean, 1.0) * rows;
    let zf = zero_v.to_kind(Kind::Float);
    let dz = &zf - zf.mean(Kind::Float);
    let dr = r2 - r2.mean_dim([1i64].as_slice(), true, Kind::Float);
    let cov = (&dr * &dz).mean_dim([1i64].as_slice(), false, Kind::Float);
    let var_r = dr.square().mean_dim([1i64].as_slice(), false, Kind::Float);
    let corr = cov / ((var_r * dz.square().mean(Kind::Float)).sqrt() + 1e-8);
    let sparsity = (corr + 0.3).square().sum(Kind::Float);
    val * s.valuation_weight + sparsity * s.sparsity_weight
}

/// The rich-hierarchy loss on z_B radii: (total, [hierarchy, coverage, richness, separation]).
fn rich_loss(
    s: &RichSettings,
    rb: &Tensor,
    batch: &Batch,
    logits_a: &Tensor,
    inp: &LossInputs,
) -> (Tensor, [Tensor; 4]) {
    let onehot = batch.v.one_hot(N_LEVELS as i64).to_kind(Kind::Float);
    let (counts, means) = level_stats(rb, &onehot);
    let present = counts.gt(0.0).to_kind(Kind::Float);
    let hierarchy = ((&means - inp.targets).square() * &present).sum(Kind::Float)
        / present.sum(Kind::Float).clamp_min(1.0);
    let coverage = logits_a.view([-1, 3]).cross_entropy_loss::<Tensor>(
        &batch.targets.view([-1]),
        None,
        Reduction::Mean,
        -100,
        0.0,
    );
    let (var_new, _) = level_variance(rb, &onehot);
    let has_var = counts.ge(2.0).to_kind(Kind::Float);
    let ratio = var_new / inp.var_orig.clamp_min(1e-12);
    let short = (-ratio + s.min_richness_ratio).relu().square() * &has_var;
    let richness = short.sum(Kind::Float) / has_var.sum(Kind::Float).clamp_min(1.0);
    // Consecutive present levels, ascending v: the higher level must lie further in.
    let host: Vec<f32> = {
        let mut h = vec![0f32; N_LEVELS];
        counts
            .to_device(tch::Device::Cpu)
            .copy_data(&mut h, N_LEVELS);
        h
    };
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

/// The total loss of a batch and its parts. `z_a`, `z_b` are the Poincaré embeddings.
#[allow(clippy::too_many_arguments)]
pub fn total_loss(
    inp: &LossInputs,
    batch: &Batch,
    z_a: &Tensor,
    z_b: &Tensor,
    c: &Tensor,
    logits_a: &Tensor,
) -> (Tensor, LossValues) {
    let s = inp.settings;
    let z2 = Tensor::stack(&[z_a, z_b], 0);
    let r2 = poincare_radius(&z2, c);
    let rb = r2.get(1);
    let mut total = rb.sum(Kind::Float) * 0.0;
    let mut vals = LossValues::default();
    if let Some(rs) = &s.rich {
        let (t, parts) = rich_loss(rs, &rb, batch, logits_a, inp);
        vals.rich = t.double_value(&[]);
        vals.rich_hierarchy = parts[0].double_value(&[]);
        vals.rich_coverage = parts[1].double_value(&[]);
        vals.rich_richness = parts[2].double_value(&[]);
        vals.rich_separation = parts[3].double_value(&[]);
        total += t;
    }
    if let Some(rs) = &s.radial {
        let l = radial_loss(rs, &r2, &batch.v, inp);
        vals.radial = l.double_value(&[]);
        total += l * rs.weight;
    }
    if let Some(rs) = &s.rank {
        let l = rank_loss(rs, &r2, &batch.v);
        vals.rank = l.double_value(&[]);
        total += l * rs.weight;
    }
    if let Some(zs) = &s.zero {
        let l = zero_loss(zs, &r2, &batch.zero_v, inp);
        vals.zero_structure = l.double_value(&[]);
        total += l * zs.weight;
    }
    if let Some(gs) = &s.geodesic {
        if inp.epoch >= gs.phase_start_epoch {
            let l = geodesic_loss(gs, &z2, &batch.idx, c, inp);
            vals.geodesic = l.double_value(&[]);
            total += l * gs.weight;
        }
    }
    vals.total = total.double_value(&[]);
    (total, vals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn distance_from_origin_matches_radius() {
        let c = Tensor::from(1.0f32);
        let x = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0.3f32, 0.4]).view([1, 2]);
        let d = poincare_distance(&x, &y, &c).double_value(&[0]);
        let r = poincare_radius(&y, &c).double_value(&[0]);
        assert!((d - r).abs() < 1e-6 && (r - 2.0 * 0.5f64.atanh()).abs() < 1e-5);
        // symmetric
        let z = Tensor::from_slice(&[-0.2f32, 0.1]).view([1, 2]);
        let a = poincare_distance(&y, &z, &c).double_value(&[0]);
        let b = poincare_distance(&z, &y, &c).double_value(&[0]);
        assert!((a - b).abs() < 1e-5, "{a} {b}");
    }

    /// Each per-embedding loss of [A; B] equals loss(A) + loss(B) with the same pairs.
    #[test]
    fn stacked_losses_are_the_sum_of_the_rows() {
        let cfg = crate::config::TrainingConfig::from_str(
            "loss:\n  radial: {}\n  rank: {n_pairs: 300}\n  geodesic: {n_pairs: 300}\n  zero_structure: {}\n",
            "x.yaml",
        )
        .unwrap();
        let s = LossSettings::from_config(cfg.loss.as_ref());
        let ds = crate::train::data::Dataset::new(Device::Cpu);
        let idx = Tensor::arange_start(100, 356, (Kind::Int64, Device::Cpu));
        let batch = ds.batch(&idx);
        let targets = s.targets(Device::Cpu);
        let ones = Tensor::ones([10], (Kind::Float, Device::Cpu));
        let inp = LossInputs {
            settings: &s,
            targets: &targets,
            var_orig: &ones,
            valuations: &ds.v,
            epoch: 0,
        };
        tch::manual_seed(9);
        let z2 = Tensor::rand([2, 256, 4], (Kind::Float, Device::Cpu)) * 0.4;
        let c = Tensor::from(1.0f32);
        let r2 = poincare_radius(&z2, &c);
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
                "zero",
                Box::new(|r, _| zero_loss(s.zero.as_ref().unwrap(), r, &batch.zero_v, &inp)),
            ),
            (
                "geodesic",
                Box::new(|_, z| {
                    geodesic_loss(s.geodesic.as_ref().unwrap(), z, &batch.idx, &c, &inp)
                }),
            ),
        ];
        for (name, f) in losses {
            tch::manual_seed(1);
            let both = f(&r2, &z2).double_value(&[]);
            let mut rows = 0.0;
            for k in 0..2 {
                tch::manual_seed(1);
                rows += f(&r2.narrow(0, k, 1), &z2.narrow(0, k, 1)).double_value(&[]);
            }
            assert!(
                (both - rows).abs() < 1e-5 * rows.abs().max(1.0),
                "{name}: {both} vs {rows}"
            );
        }
    }

    #[test]
    fn settings_follow_the_config() {
        let cfg = crate::config::TrainingConfig::from_str(
            "loss:\n  radial: {inner_radius: 0.08, outer_radius: 0.9}\n  rank: {enabled: false}\n  geodesic: {phase_start_epoch: 3}\n",
            "x.yaml",
        )
        .unwrap();
        let s = LossSettings::from_config(cfg.loss.as_ref());
        assert!(s.rank.is_none() && s.rich.is_none() && s.zero.is_none());
        assert_eq!(s.geodesic.unwrap().phase_start_epoch, 3);
        assert_eq!(s.radial.unwrap().weight, 1.0);
        let targets: Vec<f32> = {
            let s = LossSettings::from_config(cfg.loss.as_ref());
            let t = s.targets(Device::Cpu);
            let mut v = vec![0f32; 10];
            t.copy_data(&mut v, 10);
            v
        };
        assert!((targets[0] - 0.9).abs() < 1e-6 && (targets[9] - 0.08).abs() < 1e-6);
    }
}
