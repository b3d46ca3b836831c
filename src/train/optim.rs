//! AdamW with per-part learning-rate groups, gradient clipping and the schedulers, written
//! over tensors so the update is exactly PyTorch's (`torch.optim.AdamW`, single-tensor
//! path: decoupled weight decay `p *= 1 − lr·wd`, then the bias-corrected Adam step).

use std::collections::HashMap;
use std::f64::consts::PI;

use serde::Serialize;
use tch::Tensor;

/// One parameter group: its name (`projection`, `encoder_A`, …), learning-rate scale
/// (relative to the scheduled base lr) and parameters (state_dict key, tensor).
pub struct Group {
    pub name: String,
    pub lr_scale: f64,
    pub params: Vec<(String, Tensor)>,
}

/// AdamW state.
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// key → (exp_avg, exp_avg_sq, step).
    pub state: HashMap<String, (Tensor, Tensor, u64)>,
}

impl AdamW {
    pub fn new(weight_decay: f64) -> AdamW {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            state: HashMap::new(),
        }
    }

    /// Forget the moments (what rebuilding a PyTorch optimizer does).
    pub fn reset(&mut self) {
        self.state.clear();
    }

    /// One step over `groups` with base learning rate `lr`.
    pub fn step(&mut self, groups: &[Group], lr: f64) {
        tch::no_grad(|| {
            for g in groups {
                let lr = lr * g.lr_scale;
                for (key, p) in &g.params {
                    let grad = p.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let (m, v, step) = self
                        .state
                        .entry(key.clone())
                        .or_insert_with(|| (p.zeros_like(), p.zeros_like(), 0));
                    *step += 1;
                    let mut p = p.shallow_clone();
                    let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                    let _ = m.g_mul_scalar_(self.beta1);
                    let _ = m.g_add_(&(&grad * (1.0 - self.beta1)));
                    let _ = v.g_mul_scalar_(self.beta2);
                    let _ = v.g_add_(&(&grad * &grad * (1.0 - self.beta2)));
                    let bc1 = 1.0 - self.beta1.powi(*step as i32);
                    let bc2 = 1.0 - self.beta2.powi(*step as i32);
                    let denom = v.sqrt() / bc2.sqrt() + self.eps;
                    let _ = p.g_add_(&(&*m / denom * (-lr / bc1)));
                }
            }
        })
    }
}

/// Zero every gradient of `groups`.
pub fn zero_grad(groups: &[Group]) {
    for g in groups {
        for (_, p) in &g.params {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
    }
}

/// `torch.nn.utils.clip_grad_norm_`: the total 2-norm of the gradients; when above
/// `max_norm` every gradient is scaled by max_norm / (norm + 1e-6). Returns the norm.
pub fn clip_grad_norm(groups: &[Group], max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = groups
            .iter()
            .flat_map(|g| g.params.iter())
            .map(|(_, p)| p.grad())
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
        let coef = (max_norm / (total + 1e-6)).min(1.0);
        if max_norm > 0.0 && coef < 1.0 {
            for g in &grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(coef);
            }
        }
        total
    })
}

/// The gradient norm of the parameters whose keys start with `prefix`.
pub fn grad_norm_of(groups: &[Group], prefix: &str) -> Option<f64> {
    let mut sq = 0.0;
    let mut any = false;
    for (k, p) in groups.iter().flat_map(|g| g.params.iter()) {
        if k.starts_with(prefix) {
            any = true;
            let g = p.grad();
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
}

impl Schedule {
    /// From `training.scheduler` (unknown types are constant, reported by the caller).
    pub fn from_config(
        s: Option<&crate::config::Scheduler>,
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
            } => {
                let (mut t_cur, mut t_i) = (epoch, t_0);
                while t_cur >= t_i {
                    t_cur -= t_i;
                    t_i *= t_mult;
                }
                eta_min + (base - eta_min) * (1.0 + (PI * t_cur as f64 / t_i as f64).cos()) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

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
        loss.backward();
        let groups = vec![Group {
            name: "g".into(),
            lr_scale: 1.0,
            params: vec![("p".into(), p.shallow_clone())],
        }];
        let mut opt = AdamW::new(0.1);
        opt.step(&groups, 0.01);
        let got: Vec<f32> = Vec::try_from(&p.detach().to_device(Device::Cpu)).unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let p = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        (&p * Tensor::from_slice(&[3.0f32, 4.0]))
            .sum(Kind::Float)
            .backward();
        let groups = vec![Group {
            name: "g".into(),
            lr_scale: 1.0,
            params: vec![("p".into(), p.shallow_clone())],
        }];
        let n = clip_grad_norm(&groups, 1.0);
        assert!((n - 5.0).abs() < 1e-6);
        assert!((p.grad().norm().double_value(&[]) - 1.0).abs() < 1e-5);
    }
}
