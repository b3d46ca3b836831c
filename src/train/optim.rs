//! Adam with per-part learning-rate groups, gradient clipping and the schedulers, written
//! over tensors. Two weight-decay semantics (training.md §4): geoopt's RiemannianAdam on
//! Euclidean parameters (`riemannian.enabled`, upstream's default: coupled L2, g ← g +
//! wd·p, then m, s, p ← p − lr·(m/bc1)/(√(s/bc2) + eps)), and `torch.optim.AdamW`
//! (`riemannian.enabled: false`: decoupled, p *= 1 − lr·wd, then the Adam step).

use std::collections::HashMap;
use std::f64::consts::PI;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tch::{Kind, Tensor};

/// One parameter group: its name (`projection`, `encoder_A`, …), learning-rate scale
/// (relative to the scheduled base lr) and parameters (state_dict key, tensor).
pub struct Group {
    pub name: String,
    pub lr_scale: f64,
    params: Vec<(String, Tensor)>,
    /// Where every parameter sits in the group's flat buffers, computed once.
    layout: FlatLayout,
    /// Tells this group from any other built in the process.
    id: u64,
}

impl Group {
    pub fn new(name: impl Into<String>, lr_scale: f64, params: Vec<(String, Tensor)>) -> Group {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let mut layout = Vec::with_capacity(params.len());
        let mut off = 0;
        for (key, p) in &params {
            let n = p.numel() as i64;
            layout.push((key.clone(), off, n, p.size()));
            off += n;
        }
        Group {
            name: name.into(),
            lr_scale,
            params,
            layout,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The parameters (state_dict key, tensor), in order.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }
}

/// Where each parameter sits in a group's flat buffers: (key, offset, numel, shape).
pub type FlatLayout = Vec<(String, i64, i64, Vec<i64>)>;

/// The layout of the parameters of a group that have a gradient, and their positions in
/// the group.
type Subset = (FlatLayout, Vec<usize>);

/// The moments of one parameter group, kept flat (the group's parameters concatenated in
/// order), so a step is a constant number of kernels per group plus one per parameter.
pub struct GroupState {
    pub layout: FlatLayout,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    pub step: u64,
    /// The [`Group`] whose whole layout `layout` is, when it is one: a step of that group
    /// with every gradient present needs no comparison.
    whole_of: Option<u64>,
}

impl GroupState {
    /// The moments of parameter `key`: (exp_avg, exp_avg_sq, step).
    pub fn of(&self, key: &str) -> Option<(Tensor, Tensor, u64)> {
        self.layout
            .iter()
            .find(|l| l.0 == key)
            .map(|(_, off, n, shape)| {
                (
                    self.exp_avg.narrow(0, *off, *n).view(shape.as_slice()),
                    self.exp_avg_sq.narrow(0, *off, *n).view(shape.as_slice()),
                    self.step,
                )
            })
    }
}

/// Adam state, by group name.
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Coupled L2 (RiemannianAdam) when true, decoupled (AdamW) otherwise.
    pub coupled: bool,
    pub state: HashMap<String, GroupState>,
}

impl AdamW {
    /// torch.optim.AdamW (decoupled weight decay).
    pub fn new(weight_decay: f64) -> AdamW {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            coupled: false,
            state: HashMap::new(),
        }
    }

    /// geoopt RiemannianAdam on Euclidean parameters (coupled L2 weight decay).
    pub fn riemannian(weight_decay: f64) -> AdamW {
        AdamW {
            coupled: true,
            ..AdamW::new(weight_decay)
        }
    }

    /// Forget the moments (what rebuilding a PyTorch optimizer does).
    pub fn reset(&mut self) {
        self.state.clear();
    }

    /// Set the moments of group `name` (a continued run): `moments` are (key, exp_avg,
    /// exp_avg_sq) of the parameters that have moments, in the group's order, all at
    /// `step`; the flat buffers are their concatenation, as [`AdamW::step`] keeps them.
    pub fn restore_group(&mut self, name: &str, moments: &[(String, Tensor, Tensor)], step: u64) {
        if moments.is_empty() {
            self.state.remove(name);
            return;
        }
        let mut layout = Vec::with_capacity(moments.len());
        let mut off = 0;
        for (key, m, _) in moments {
            let n = m.numel() as i64;
            layout.push((key.clone(), off, n, m.size()));
            off += n;
        }
        let flat = |pick: fn(&(String, Tensor, Tensor)) -> &Tensor| {
            let parts: Vec<Tensor> = moments.iter().map(|x| pick(x).reshape([-1])).collect();
            Tensor::cat(&parts, 0)
        };
        self.state.insert(
            name.to_string(),
            GroupState {
                layout,
                exp_avg: flat(|x| &x.1),
                exp_avg_sq: flat(|x| &x.2),
                step,
                whole_of: None,
            },
        );
    }

    /// The moments of parameter `key`, whatever its group.
    pub fn moments(&self, key: &str) -> Option<(Tensor, Tensor, u64)> {
        self.state.values().find_map(|g| g.of(key))
    }

    /// Clip the gradients of every group, together with `passive` (gradients of parameters
    /// in no group that PyTorch's `clip_grad_norm_(model.parameters())` also sees: the
    /// accumulated decoder_A gradient, stale gradients of frozen parts; scaled in place
    /// too), to a total 2-norm of `max_norm` (scaled by max_norm / (norm + 1e-6) when
    /// above; `max_norm <= 0` disables it), then one step with base learning rate `lr`
    /// (each group at `lr · lr_scale`). Parameters without a gradient are skipped, as in
    /// PyTorch. Returns the total gradient norm before clipping and the factor the
    /// gradients were scaled by (1 when not clipped).
    pub fn step(
        &mut self,
        groups: &[Group],
        grads: &[Vec<Tensor>],
        lr: f64,
        max_norm: f64,
        passive: &mut [Tensor],
    ) -> (f64, f64) {
        tch::no_grad(|| {
            // Flat gradients per group, with the layout of the parameters that have one
            // (and their positions in the group) unless all have: then the group's own.
            let mut flat: Vec<(usize, Option<Subset>, Tensor)> = Vec::new();
            for (gi, g) in groups.iter().enumerate() {
                let gr = &grads[gi];
                if gr.len() == g.params.len() && gr.iter().all(Tensor::defined) {
                    if !gr.is_empty() {
                        let parts: Vec<Tensor> = gr.iter().map(|t| t.reshape([-1])).collect();
                        flat.push((gi, None, Tensor::cat(&parts, 0)));
                    }
                    continue;
                }
                let mut layout = Vec::new();
                let mut positions = Vec::new();
                let mut parts = Vec::new();
                let mut off = 0;
                for (i, ((key, p), grad)) in g.params.iter().zip(gr).enumerate() {
                    if !grad.defined() {
                        continue;
                    }
                    let n = p.numel() as i64;
                    layout.push((key.clone(), off, n, p.size()));
                    positions.push(i);
                    parts.push(grad.reshape([-1]));
                    off += n;
                }
                if !parts.is_empty() {
                    flat.push((gi, Some((layout, positions)), Tensor::cat(&parts, 0)));
                }
            }
            let passive_defined: Vec<usize> = (0..passive.len())
                .filter(|&i| passive[i].defined())
                .collect();
            if flat.is_empty() && passive_defined.is_empty() {
                return (0.0, 1.0);
            }
            let sq: Vec<Tensor> = flat
                .iter()
                .map(|(_, _, g)| g.square().sum(Kind::Float))
                .chain(
                    passive_defined
                        .iter()
                        .map(|&i| passive[i].square().sum(Kind::Float)),
                )
                .collect();
            let total = Tensor::stack(&sq, 0)
                .sum(Kind::Float)
                .sqrt()
                .double_value(&[]);
            let coef = if max_norm > 0.0 {
                (max_norm / (total + 1e-6)).min(1.0)
            } else {
                1.0
            };
            if coef < 1.0 {
                for &i in &passive_defined {
                    let _ = passive[i].g_mul_scalar_(coef);
                }
            }
            for (gi, subset, mut grad) in flat {
                let g = &groups[gi];
                if coef < 1.0 {
                    let _ = grad.g_mul_scalar_(coef);
                }
                let lr = lr * g.lr_scale;
                let st = self
                    .state
                    .entry(g.name.clone())
                    .or_insert_with(|| GroupState {
                        layout: Vec::new(),
                        exp_avg: Tensor::new(),
                        exp_avg_sq: Tensor::new(),
                        step: 0,
                        whole_of: None,
                    });
                let (layout, positions) = subset.unzip();
                let same = match &layout {
                    None => st.whole_of == Some(g.id) || st.layout == g.layout,
                    Some(l) => st.layout == *l,
                };
                if !same {
                    // First step, or another set of parameters: fresh moments.
                    st.layout = layout.unwrap_or_else(|| g.layout.clone());
                    st.exp_avg = grad.zeros_like();
                    st.exp_avg_sq = grad.zeros_like();
                    st.step = 0;
                }
                st.whole_of = positions.is_none().then_some(g.id);
                if self.coupled && self.weight_decay != 0.0 {
                    // g ← g + wd·p over the parameters with a gradient.
                    let ps: Vec<Tensor> = st
                        .layout
                        .iter()
                        .enumerate()
                        .map(|(j, _)| {
                            let i = positions.as_ref().map_or(j, |p| p[j]);
                            g.params[i].1.reshape([-1])
                        })
                        .collect();
                    let _ = grad.g_add_(&(Tensor::cat(&ps, 0) * self.weight_decay));
                }
                st.step += 1;
                let _ = st.exp_avg.lerp_(&grad, 1.0 - self.beta1);
                let _ = st.exp_avg_sq.g_mul_scalar_(self.beta2);
                let _ = st.exp_avg_sq.g_add_(&(grad.square() * (1.0 - self.beta2)));
                let bc1 = 1.0 - self.beta1.powi(st.step as i32);
                let bc2 = 1.0 - self.beta2.powi(st.step as i32);
                let update = if self.coupled {
                    // geoopt: lr·(m/bc1) / (√(s/bc2) + eps)
                    let denom = (&st.exp_avg_sq / bc2).sqrt() + self.eps;
                    (&st.exp_avg / bc1) * (-lr) / denom
                } else {
                    let denom = st.exp_avg_sq.sqrt() / bc2.sqrt() + self.eps;
                    &st.exp_avg / denom * (-lr / bc1)
                };
                let decay = 1.0 - lr * self.weight_decay;
                for (j, (_, off, n, shape)) in st.layout.iter().enumerate() {
                    let i = positions.as_ref().map_or(j, |p| p[j]);
                    let mut p = g.params[i].1.shallow_clone();
                    if !self.coupled {
                        // Decoupled weight decay, then the Adam step.
                        let _ = p.g_mul_scalar_(decay);
                    }
                    let _ = p.g_add_(&update.narrow(0, *off, *n).view(shape.as_slice()));
                }
            }
            (total, coef)
        })
    }
}

/// The gradients of `loss` with respect to every parameter of `groups` (`autograd.grad`:
/// fresh tensors, nothing accumulated into `.grad`, so nothing to zero); a parameter the
/// loss does not depend on gets an undefined tensor.
pub fn gradients(loss: &Tensor, groups: &[Group]) -> Vec<Vec<Tensor>> {
    let params: Vec<&Tensor> = groups
        .iter()
        .flat_map(|g| g.params.iter().map(|(_, p)| p))
        .collect();
    let mut flat = if loss.requires_grad() && !params.is_empty() {
        Tensor::run_backward(&[loss], &params, false, false)
    } else {
        Vec::new()
    }
    .into_iter();
    groups
        .iter()
        .map(|g| {
            g.params
                .iter()
                .map(|_| flat.next().unwrap_or_default())
                .collect()
        })
        .collect()
}

/// The gradient norm of the parameters whose keys start with `prefix`.
pub fn grad_norm_of(groups: &[Group], grads: &[Vec<Tensor>], prefix: &str) -> Option<f64> {
    let mut sq = 0.0;
    let mut any = false;
    let pairs = groups
        .iter()
        .zip(grads)
        .flat_map(|(g, gr)| g.params.iter().map(|(k, _)| k).zip(gr));
    for (k, g) in pairs {
        if k.starts_with(prefix) {
            any = true;
            if g.defined() {
                let n = g.norm().double_value(&[]);
                sq += n * n;
            }
        }
    }
    any.then(|| sq.sqrt())
}

/// A learning-rate schedule, stepped once per epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// CosineAnnealingLR(T_max, eta_min).
    CosineAnnealing {
        t_max: u64,
        eta_min: f64,
    },
    /// CosineAnnealingWarmRestarts(T_0, T_mult, eta_min).
    CosineWarmRestarts {
        t_0: u64,
        t_mult: u64,
        eta_min: f64,
    },
    /// `multi_phase_cosine`: consecutive epoch ranges, each with its own scale of the base
    /// rate and its own annealing, restarted at the phase's first epoch.
    MultiPhase {
        phases: Vec<Phase>,
        eta_min: f64,
    },
}

/// One phase of a `multi_phase_cosine` schedule (`epoch_range: [start, end]`,
/// `base_lr_scale`, `annealing`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub name: String,
    pub start: u64,
    pub end: u64,
    pub scale: f64,
    pub annealing: Annealing,
}

/// How the rate moves within a phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Annealing {
    /// The phase's rate throughout.
    Constant,
    /// Cosine with warm restarts (`T_0`, `T_mult`) from the phase's start; with `T_max`
    /// and no `T_0`, one cosine over `T_max` epochs.
    Cosine { t_0: u64, t_mult: u64 },
    /// Straight down from the phase's rate to eta_min at the phase's end.
    LinearDecay,
}

/// What is wrong with `training.scheduler.phases` (`phase` is the index in the list).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhaseError {
    #[error("scheduler.phases is not a list")]
    NotAList,
    #[error("scheduler.phases[{phase}].epoch_range is not [start, end]")]
    EpochRange { phase: usize },
    #[error("scheduler.phases[{phase}].epoch_range is empty")]
    EmptyRange { phase: usize },
    #[error("scheduler.phases[{phase}] overlaps the phase before it")]
    Overlaps { phase: usize },
    #[error(
        "scheduler.phases[{phase}].annealing `{name}` is not one of constant, cosine, linear_decay"
    )]
    Annealing { phase: usize, name: String },
    #[error("scheduler.phases is empty")]
    Empty,
}

impl Phase {
    /// Phases from `training.scheduler.phases` (the raw YAML list).
    pub fn parse_list(v: &serde_yaml::Value) -> Result<Vec<Phase>, PhaseError> {
        let list = v.as_sequence().ok_or(PhaseError::NotAList)?;
        let mut out: Vec<Phase> = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let get = |k: &str| p.get(k);
            let range = get("epoch_range")
                .and_then(|r| r.as_sequence())
                .filter(|r| r.len() == 2)
                .and_then(|r| Some((r[0].as_u64()?, r[1].as_u64()?)))
                .ok_or(PhaseError::EpochRange { phase: i })?;
            if range.1 <= range.0 {
                return Err(PhaseError::EmptyRange { phase: i });
            }
            if let Some(prev) = out.last() {
                if range.0 < prev.end {
                    return Err(PhaseError::Overlaps { phase: i });
                }
            }
            let int = |k: &str| get(k).and_then(serde_yaml::Value::as_u64);
            let annealing = match get("annealing")
                .and_then(|a| a.as_str())
                .unwrap_or("constant")
            {
                "constant" | "none" => Annealing::Constant,
                "cosine" | "cosine_annealing" | "cosine_warmup_restart" => {
                    let t_0 = int("T_0").or(int("T_max")).unwrap_or(range.1 - range.0);
                    Annealing::Cosine {
                        t_0: t_0.max(1),
                        t_mult: int("T_mult").unwrap_or(1).max(1),
                    }
                }
                "linear" | "linear_decay" => Annealing::LinearDecay,
                other => {
                    return Err(PhaseError::Annealing {
                        phase: i,
                        name: other.to_string(),
                    })
                }
            };
            out.push(Phase {
                name: get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("")
                    .to_string(),
                start: range.0,
                end: range.1,
                scale: get("base_lr_scale")
                    .and_then(serde_yaml::Value::as_f64)
                    .unwrap_or(1.0),
                annealing,
            });
        }
        if out.is_empty() {
            return Err(PhaseError::Empty);
        }
        Ok(out)
    }
}

fn warm_restarts(base: f64, eta_min: f64, epoch: u64, t_0: u64, t_mult: u64) -> f64 {
    let (mut t_cur, mut t_i) = (epoch, t_0);
    while t_cur >= t_i {
        t_cur -= t_i;
        t_i = t_i.saturating_mul(t_mult);
    }
    eta_min + (base - eta_min) * (1.0 + (PI * t_cur as f64 / t_i as f64).cos()) / 2.0
}

impl Schedule {
    /// From `training.scheduler` (unknown types are constant, reported by the caller).
    pub fn from_config(
        s: Option<&crate::config::Scheduler>,
        phases: Option<&serde_yaml::Value>,
        epochs: u64,
    ) -> (Schedule, Option<String>) {
        let Some(s) = s else {
            return (Schedule::Constant, None);
        };
        let eta_min = s.eta_min.unwrap_or(0.0);
        match s.kind.as_deref() {
            Some("cosine" | "cosine_annealing" | "CosineAnnealingLR") => (
                Schedule::CosineAnnealing {
                    t_max: s.t_max.unwrap_or(epochs).max(1),
                    eta_min,
                },
                None,
            ),
            Some(
                "cosine_warmup_restart" | "cosine_warm_restarts" | "CosineAnnealingWarmRestarts",
            ) => (
                Schedule::CosineWarmRestarts {
                    t_0: s.t_0.unwrap_or(10).max(1),
                    t_mult: s.t_mult.unwrap_or(1).max(1),
                    eta_min,
                },
                None,
            ),
            Some("multi_phase_cosine" | "multi_phase") => match phases.map(Phase::parse_list) {
                Some(Ok(phases)) => (Schedule::MultiPhase { phases, eta_min }, None),
                Some(Err(e)) => (
                    Schedule::Constant,
                    Some(format!("{e}: constant learning rate")),
                ),
                None => (
                    Schedule::Constant,
                    Some("multi_phase_cosine without `phases`: constant learning rate".into()),
                ),
            },
            None | Some("none" | "constant") => (Schedule::Constant, None),
            Some(other) => (
                Schedule::Constant,
                Some(format!(
                    "scheduler type `{other}` is not implemented: constant learning rate"
                )),
            ),
        }
    }

    /// The learning rate of `epoch` (0-based) for base rate `base`.
    pub fn lr(&self, base: f64, epoch: u64) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::CosineAnnealing { t_max, eta_min } => {
                // The closed form PyTorch's recursive update follows (periodic past T_max).
                eta_min + (base - eta_min) * (1.0 + (PI * epoch as f64 / t_max as f64).cos()) / 2.0
            }
            Schedule::CosineWarmRestarts {
                t_0,
                t_mult,
                eta_min,
            } => warm_restarts(base, eta_min, epoch, t_0, t_mult),
            Schedule::MultiPhase {
                ref phases,
                eta_min,
            } => {
                // The phase holding the epoch; before the first, the first; after the last,
                // the last (held at its final rate).
                let p = phases
                    .iter()
                    .rev()
                    .find(|p| p.start <= epoch)
                    .unwrap_or(&phases[0]);
                let rate = base * p.scale;
                let t = epoch.saturating_sub(p.start).min(p.end - p.start);
                match p.annealing {
                    Annealing::Constant => rate,
                    Annealing::Cosine { t_0, t_mult } => {
                        warm_restarts(rate, eta_min, t, t_0, t_mult)
                    }
                    Annealing::LinearDecay => {
                        eta_min + (rate - eta_min) * (1.0 - t as f64 / (p.end - p.start) as f64)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Not;
    use tch::Device;

    #[test]
    fn multi_phase_schedule() {
        let yaml: serde_yaml::Value = serde_yaml::from_str(
            "- {name: a, epoch_range: [0, 150], base_lr_scale: 1.0, annealing: cosine, T_0: 25, T_mult: 2}\n- {name: b, epoch_range: [150, 350], base_lr_scale: 0.3, annealing: constant}\n- {name: c, epoch_range: [350, 500], base_lr_scale: 0.1, annealing: linear_decay}\n",
        )
        .unwrap();
        let phases = Phase::parse_list(&yaml).unwrap();
        let s = Schedule::MultiPhase {
            phases,
            eta_min: 0.0,
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(s.lr(1.0, 0), 1.0));
        assert!(close(s.lr(1.0, 25), 1.0)); // warm restart after T_0
        assert!(s.lr(1.0, 24) < 0.01);
        assert!(close(s.lr(1.0, 75), 1.0)); // then T_0·T_mult = 50 epochs
        assert!(close(s.lr(1.0, 200), 0.3));
        assert!(close(s.lr(1.0, 350), 0.1));
        assert!(close(s.lr(1.0, 425), 0.05));
        assert!(close(s.lr(1.0, 600), 0.0)); // past the last phase: its final rate
        let bad: serde_yaml::Value = serde_yaml::from_str("- {epoch_range: [5, 5]}").unwrap();
        assert!(Phase::parse_list(&bad)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let (sched, note) = Schedule::from_config(
            Some(&crate::config::Scheduler {
                kind: Some("multi_phase_cosine".into()),
                ..Default::default()
            }),
            Some(&yaml),
            500,
        );
        assert!(matches!(sched, Schedule::MultiPhase { .. }) && note.is_none());
    }

    #[test]
    fn schedules() {
        let c = Schedule::CosineAnnealing {
            t_max: 10,
            eta_min: 0.0,
        };
        assert_eq!(c.lr(1.0, 0), 1.0);
        assert!((c.lr(1.0, 5) - 0.5).abs() < 1e-12);
        let w = Schedule::CosineWarmRestarts {
            t_0: 2,
            t_mult: 2,
            eta_min: 0.0,
        };
        assert_eq!(w.lr(1.0, 0), 1.0);
        assert!((w.lr(1.0, 1) - 0.5).abs() < 1e-12);
        assert_eq!(w.lr(1.0, 2), 1.0); // restart, next period 4
        assert!((w.lr(1.0, 4) - 0.5).abs() < 1e-12);
        assert_eq!(w.lr(1.0, 6), 1.0);
    }

    #[test]
    fn adamw_first_step_is_lr_sign_of_grad() {
        // First Adam step: m̂/√v̂ = g/|g| → p -= lr·sign(g) (after weight decay).
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let loss = (&p * Tensor::from_slice(&[3.0f32, -0.5])).sum(Kind::Float);
        let groups = vec![Group::new("g", 1.0, vec![("p".into(), p.shallow_clone())])];
        let grads = gradients(&loss, &groups);
        let mut opt = AdamW::new(0.1);
        opt.step(&groups, &grads, 0.01, 0.0, &mut []);
        let got: Vec<f32> = Vec::try_from(&p.detach().to_device(Device::Cpu)).unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn moments_follow_the_parameters_with_a_gradient() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let q = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        let params = || {
            vec![
                ("p".into(), p.shallow_clone()),
                ("q".into(), q.shallow_clone()),
            ]
        };
        let groups = vec![Group::new("g", 1.0, params())];
        let only_p = || (&p * 3.0).sum(Kind::Float);
        let both = || (&p * 3.0).sum(Kind::Float) + (&q * &q).sum(Kind::Float);
        let mut opt = AdamW::new(0.0);
        let steps = |opt: &AdamW| {
            let s = |k| opt.moments(k).map(|(_, _, s)| s);
            (s("p"), s("q"))
        };
        // q without a gradient: skipped, p's moments alone.
        opt.step(&groups, &gradients(&only_p(), &groups), 0.1, 0.0, &mut []);
        assert_eq!(steps(&opt), (Some(1), None));
        // Another set of parameters: fresh moments for the group.
        opt.step(&groups, &gradients(&both(), &groups), 0.1, 0.0, &mut []);
        assert_eq!(steps(&opt), (Some(1), Some(1)));
        opt.step(&groups, &gradients(&both(), &groups), 0.1, 0.0, &mut []);
        assert_eq!(steps(&opt), (Some(2), Some(2)));
        // The same parameters in a rebuilt group keep their moments …
        let rebuilt = vec![Group::new("g", 1.0, params())];
        opt.step(&rebuilt, &gradients(&both(), &rebuilt), 0.1, 0.0, &mut []);
        assert_eq!(steps(&opt), (Some(3), Some(3)));
        // … and a subset again starts afresh.
        opt.step(&rebuilt, &gradients(&only_p(), &rebuilt), 0.1, 0.0, &mut []);
        assert_eq!(steps(&opt), (Some(1), None));
        let (m, v, _) = opt.moments("p").unwrap();
        let g = 3.0 * (1.0 - 0.9);
        assert!((m.double_value(&[0]) - g).abs() < 1e-6);
        assert!((v.double_value(&[0]) - 9.0 * (1.0 - 0.999)).abs() < 1e-6);
    }

    #[test]
    fn matches_torch_adamw_with_clipping_over_steps() {
        // PyTorch 2.13: torch.optim.AdamW([{p}, {q}], lr=0.1, weight_decay=0.01), each step
        // after clip_grad_norm_([p, q], 1.0); p0 = [1, -2], q0 = [0.5],
        // loss = 3·p0 − 0.5·p1 + 4·q0². Three steps give grad norms 5.02494, 4.41185,
        // 3.87158 and p = [0.69683611, -1.69383919], q = [0.20053607].
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let q = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        let groups = vec![
            Group::new("a", 1.0, vec![("p".into(), p.shallow_clone())]),
            Group::new("b", 1.0, vec![("q".into(), q.shallow_clone())]),
        ];
        let mut opt = AdamW::new(0.01);
        for want in [5.024_937_6, 4.411_85, 3.871_582_5] {
            let loss = (&p * Tensor::from_slice(&[3.0f32, -0.5])).sum(Kind::Float)
                + (&q * &q * 4.0).sum(Kind::Float);
            let grads = gradients(&loss, &groups);
            // d(4q²)/dq = 8q.
            let gq = grad_norm_of(&groups, &grads, "q").unwrap();
            assert!((gq - 8.0 * q.double_value(&[0]).abs()).abs() < 1e-5, "{gq}");
            assert!(p.grad().defined().not(), "nothing accumulates into .grad");
            let (n, _) = opt.step(&groups, &grads, 0.1, 1.0, &mut []);
            assert!((n - want).abs() < 1e-5, "{n} vs {want}");
        }
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        let gq: Vec<f32> = Vec::try_from(&q.detach()).unwrap();
        let want = [0.696_836_1f32, -1.693_839_2, 0.200_536_07];
        for (g, w) in got.iter().chain(&gq).zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} {gq:?}");
        }
        let (m, _, step) = opt.moments("q").unwrap();
        assert_eq!((m.size(), step), (vec![1], 3));
    }

    /// RiemannianAdam on Euclidean parameters: g ← g + wd·p (coupled L2), then
    /// p ← p − lr·(m/bc1)/(√(s/bc2) + eps); checked against the formula in f64 over steps
    /// of a linear loss (constant gradient c).
    #[test]
    fn riemannian_adam_couples_the_weight_decay() {
        let c = [3.0f64, -0.5];
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let groups = vec![Group::new("g", 1.0, vec![("p".into(), p.shallow_clone())])];
        let mut opt = AdamW::riemannian(0.1);
        let (lr, wd) = (0.01, 0.1);
        let mut want = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for t in 1..=4 {
            let loss = (&p * Tensor::from_slice(&[3.0f32, -0.5])).sum(Kind::Float);
            let grads = gradients(&loss, &groups);
            opt.step(&groups, &grads, lr, 0.0, &mut []);
            for k in 0..2 {
                let g = c[k] + wd * want[k];
                m[k] = 0.9 * m[k] + 0.1 * g;
                v[k] = 0.999 * v[k] + 0.001 * g * g;
                let bc1 = 1.0 - 0.9f64.powi(t);
                let bc2 = 1.0 - 0.999f64.powi(t);
                want[k] -= lr * (m[k] / bc1) / ((v[k] / bc2).sqrt() + 1e-8);
            }
        }
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        // The first step differs from AdamW's (decoupled: p·(1 − lr·wd) − lr·sign g).
        assert!((f64::from(got[0]) - (1.0 - 0.001 - 0.04)).abs() > 1e-5);
    }

    /// Moments restored from their per-parameter form (a continued run) give the same
    /// next steps, bit for bit, as the optimizer that made them; also for a group whose
    /// moments cover a subset of its parameters.
    #[test]
    fn restored_moments_continue_bit_for_bit() {
        let make = || {
            let p = Tensor::from_slice(&[1.0f32, -2.0, 0.25]).set_requires_grad(true);
            let q = Tensor::from_slice(&[0.5f32, 3.0]).set_requires_grad(true);
            (p, q)
        };
        let groups = |p: &Tensor, q: &Tensor| {
            vec![Group::new(
                "g",
                0.5,
                vec![
                    ("p".into(), p.shallow_clone()),
                    ("q".into(), q.shallow_clone()),
                ],
            )]
        };
        let loss = |p: &Tensor, q: &Tensor, both: bool| {
            let l = (p * p * Tensor::from_slice(&[3.0f32, -0.5, 2.0])).sum(Kind::Float);
            if both {
                l + (q * q * q).sum(Kind::Float)
            } else {
                l
            }
        };
        let values = |t: &Tensor| Vec::<f32>::try_from(&t.detach()).unwrap();
        for both in [true, false] {
            let (p, q) = make();
            let g = groups(&p, &q);
            let mut opt = AdamW::riemannian(0.01);
            for _ in 0..3 {
                opt.step(&g, &gradients(&loss(&p, &q, both), &g), 0.1, 1.0, &mut []);
            }
            // A second optimizer from the first one's per-parameter moments.
            let (p2, q2) = (p.detach().copy(), q.detach().copy());
            let (p2, q2) = (p2.set_requires_grad(true), q2.set_requires_grad(true));
            let g2 = groups(&p2, &q2);
            let mut opt2 = AdamW::riemannian(0.01);
            let mut moments = Vec::new();
            let mut step = 0;
            for k in ["p", "q"] {
                if let Some((m, v, s)) = opt.moments(k) {
                    moments.push((k.to_string(), m.copy(), v.copy()));
                    step = s;
                }
            }
            assert_eq!(moments.len(), if both { 2 } else { 1 });
            opt2.restore_group("g", &moments, step);
            for _ in 0..2 {
                opt.step(&g, &gradients(&loss(&p, &q, both), &g), 0.1, 1.0, &mut []);
                opt2.step(
                    &g2,
                    &gradients(&loss(&p2, &q2, both), &g2),
                    0.1,
                    1.0,
                    &mut [],
                );
            }
            assert_eq!(values(&p), values(&p2), "both {both}");
            assert_eq!(values(&q), values(&q2), "both {both}");
            assert_eq!(opt.moments("p").unwrap().2, opt2.moments("p").unwrap().2);
        }
    }

    /// Passive gradients (in no group) count in the clip norm and are scaled with the rest.
    #[test]
    fn passive_gradients_enter_the_clip_norm() {
        let p = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let groups = vec![Group::new("g", 1.0, vec![("p".into(), p.shallow_clone())])];
        let loss = (&p * 3.0).sum(Kind::Float); // grad 3
        let grads = gradients(&loss, &groups);
        let mut passive = vec![Tensor::from_slice(&[4.0f32]), Tensor::new()];
        let mut opt = AdamW::new(0.0);
        let (n, coef) = opt.step(&groups, &grads, 0.1, 1.0, &mut passive);
        assert!((n - 5.0).abs() < 1e-6, "{n}");
        assert!((coef - 1.0 / (5.0 + 1e-6)).abs() < 1e-9);
        assert!((passive[0].double_value(&[0]) - 4.0 * coef).abs() < 1e-6);
        assert!(!passive[1].defined());
    }
}
