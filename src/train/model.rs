//! The TernaryVAE modules (domain.md §2, §3; training.md "Forward pass") built from a
//! version's [`LayoutParams`]. Every parameter is a variable of a tch [`VarStore`] named
//! exactly like its state_dict key (`encoder_A.encoder.0.weight`), created from
//! [`arch::expected_layout`], so the VarStore's named variables *are* the state_dict.
//!
//! Numerics follow PyTorch: float32, `Linear` through `at::linear` (addmm), `LayerNorm`
//! with eps 1e-5, `F.normalize` with eps 1e-12.

use std::collections::HashMap;

use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};

use crate::arch::{self, EncoderKind, LayoutParams, VersionId};
use crate::config::ModelConfig;

use super::TrainError;

/// LayerNorm epsilon (PyTorch's default).
pub const LN_EPS: f64 = 1e-5;

/// Everything besides the layout that the forward pass needs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ModelSpec {
    pub version: VersionId,
    pub params: LayoutParams,
    /// Radius scale of the projection (0.95).
    pub max_radius: f64,
    /// Curvature c when it is not learnable.
    pub curvature: f64,
    /// c = softplus(isp_c) when true.
    pub learnable_curvature: bool,
    /// Clamp of the improved encoders' logvar.
    pub logvar_min: f64,
    pub logvar_max: f64,
    /// Dropout probabilities (used only in training mode).
    pub encoder_dropout: f64,
    pub decoder_dropout: f64,
    pub projection_dropout: f64,
}

impl ModelSpec {
    /// The spec of `version`/`params`, the rest from a config's `model:` section (defaults
    /// of the upstream code where absent).
    pub fn new(version: VersionId, params: LayoutParams, model: Option<&ModelConfig>) -> Self {
        let m = model.cloned().unwrap_or_default();
        let proj_p = m.projection_dropout.unwrap_or(0.1);
        ModelSpec {
            version,
            params,
            max_radius: m.max_radius.unwrap_or(0.95),
            curvature: m.curvature.unwrap_or(1.0),
            learnable_curvature: m.learnable_curvature.unwrap_or(false),
            logvar_min: m.logvar_min.unwrap_or(-10.0),
            logvar_max: m.logvar_max.unwrap_or(2.0),
            encoder_dropout: m.encoder_dropout.unwrap_or(0.1),
            decoder_dropout: m.decoder_dropout.unwrap_or(0.1),
            projection_dropout: if params.projection_dropout {
                proj_p
            } else {
                0.0
            },
        }
    }

    /// Whether the model has a hyperbolic projection (every version but v5.5).
    pub fn has_projection(&self) -> bool {
        self.params.hidden_dim > 0
    }
}

/// Which parts run in training mode (dropout on), and whether z is sampled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    pub encoder_a: bool,
    pub encoder_b: bool,
    pub decoder_a: bool,
    pub projection: bool,
    /// z = mu + eps·exp(logvar/2) when true, z = mu otherwise.
    pub sample: bool,
    /// Compute `Output::logits_a` = decoder_A(mu_A) (the coverage metric's logits); the
    /// training forward does not need them (undefined tensor).
    pub logits_from_mu: bool,
}

impl Mode {
    /// Everything in eval mode, z = mu (tvck's deterministic evaluation).
    pub const EVAL: Mode = Mode {
        encoder_a: false,
        encoder_b: false,
        decoder_a: false,
        projection: false,
        sample: false,
        logits_from_mu: true,
    };
    /// Upstream's training forward (training.md §1): the whole model in train mode
    /// (dropout also in the frozen parts), z sampled.
    pub const TRAIN: Mode = Mode {
        encoder_a: true,
        encoder_b: true,
        decoder_a: true,
        projection: true,
        sample: true,
        logits_from_mu: false,
    };
    /// Upstream's evaluation forward: eval mode (no dropout), z still sampled.
    pub const EVAL_SAMPLED: Mode = Mode {
        encoder_a: false,
        encoder_b: false,
        decoder_a: false,
        projection: false,
        sample: true,
        logits_from_mu: true,
    };
}

/// What a forward pass yields.
pub struct Output {
    pub mu_a: Tensor,
    pub logvar_a: Tensor,
    pub mu_b: Tensor,
    pub logvar_b: Tensor,
    /// Decoder_A logits from mu_A, [B, 9, 3] (undefined unless `Mode::logits_from_mu`).
    pub logits_a: Tensor,
    /// Poincaré-ball embeddings (absent for v5.5, which has no projection).
    pub z_a_hyp: Option<Tensor>,
    pub z_b_hyp: Option<Tensor>,
    /// The curvature used (a scalar tensor; learnable → softplus(isp_c)).
    pub curvature: Option<Tensor>,
}

/// encoder_A's (mu, logvar) and decoder_A's logits from mu_A, computed without gradients.
pub struct FrozenA {
    pub mu: Tensor,
    pub logvar: Tensor,
    pub logits: Tensor,
}

impl FrozenA {
    /// The rows `idx`.
    pub fn rows(&self, idx: &Tensor) -> FrozenA {
        FrozenA {
            mu: self.mu.index_select(0, idx),
            logvar: self.logvar.index_select(0, idx),
            logits: self.logits.index_select(0, idx),
        }
    }
}

/// Clamp of the artanh argument in geoopt's log map and distances (±(1 − 1e-7)).
pub const GEOOPT_ARTANH_MAX: f64 = 1.0 - 1e-7;

/// geoopt's log map at 0: artanh(√c‖z‖)/√c · z/‖z‖ (‖z‖ clamped ≥ 1e-15, the artanh
/// argument to 1 − 1e-7), c a plain number.
pub fn log_map_zero(z: &Tensor, c: f64) -> Tensor {
    let sc = c.sqrt();
    let n = z.norm_scalaropt_dim(2.0, [-1i64], true).clamp_min(1e-15);
    let a = (&n * sc)
        .clamp(-GEOOPT_ARTANH_MAX, GEOOPT_ARTANH_MAX)
        .atanh();
    z * (a / (n * sc))
}

/// A model: its variables in a VarStore, named as the state_dict.
pub struct Model {
    pub vs: VarStore,
    pub spec: ModelSpec,
    /// state_dict keys with their shapes, in module order.
    pub keys: Vec<(String, Vec<i64>)>,
    vars: HashMap<String, Tensor>,
}

/// Dropout with probability `p` in training mode, an identity otherwise. Same function
/// as `F.dropout` (zero with probability p, survivors scaled by 1/(1 − p)), with a cheaper
/// mask: 16-bit uniform integers, four from each 64-bit random draw (libtorch's own
/// Bernoulli kernel draws 64 bits per element and dominated the epoch). p is rounded to a
/// multiple of 1/65536 (0.1 → 0.100006) and the scale uses that exact keep probability.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    let n = x.numel() as i64;
    let rows = (n + 3) / 4;
    // random_(from = i64::MIN, to = None): all 64 bits uniform.
    let mut bits = Tensor::empty([rows], (Kind::Int64, x.device()));
    let _ = bits.random_from_(i64::MIN, None);
    let u = bits
        .view_dtype(Kind::Int16)
        .narrow(0, 0, n)
        .view(x.size().as_slice());
    let t = (p * 65536.0).round().clamp(0.0, 65536.0) as i64;
    let keep = u.ge(-32768 + t);
    let q = (65536 - t) as f64 / 65536.0;
    if q <= 0.0 {
        return x.zeros_like();
    }
    x * keep * (1.0 / q)
}

/// The inverse softplus of `c` (what `manifold.isp_c` holds for curvature `c`).
pub fn inverse_softplus(c: f64) -> f64 {
    c.exp_m1().ln()
}

impl Model {
    /// Build the model with PyTorch's default initialisation (Linear: U(±1/√fan_in) for
    /// weight and bias; LayerNorm: 1 / 0; isp_c: inverse softplus of the curvature;
    /// buffers 0). Seed with `tch::manual_seed` first for a deterministic init.
    pub fn new(spec: ModelSpec, device: Device) -> Result<Model, TrainError> {
        arch::check_params(spec.version, &spec.params)?;
        let layout = arch::expected_layout(spec.version, &spec.params);
        let vs = VarStore::new(device);
        let root = vs.root();
        let shapes: HashMap<&str, &Vec<u64>> =
            layout.iter().map(|(k, s)| (k.as_str(), s)).collect();
        let mut keys = Vec::with_capacity(layout.len());
        let mut vars = HashMap::with_capacity(layout.len());
        for (key, shape) in &layout {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let mut parts: Vec<&str> = key.split('.').collect();
            let name = parts.pop().unwrap_or_default();
            let mut path = root.clone();
            for p in parts {
                path = path.sub(p);
            }
            let module = key.rsplit_once('.').map_or("", |(m, _)| m);
            let is_buffer = key.ends_with("_ema");
            let init = if name == "isp_c" {
                Init::Const(inverse_softplus(spec.curvature))
            } else if is_buffer {
                Init::Const(0.0)
            } else {
                // Linear when the module's weight is 2-D, LayerNorm when it is 1-D.
                let weight = shapes.get(format!("{module}.weight").as_str());
                match weight.map(|w| w.len()) {
                    Some(2) => {
                        let fan_in = weight.map_or(1, |w| w[1]).max(1) as f64;
                        let bound = 1.0 / fan_in.sqrt();
                        Init::Uniform {
                            lo: -bound,
                            up: bound,
                        }
                    }
                    _ if name == "weight" => Init::Const(1.0),
                    _ => Init::Const(0.0),
                }
            };
            let t = if is_buffer {
                path.f_zeros_no_train(name, &dims)
            } else {
                path.f_var(name, &dims, init)
            }
            .map_err(|e| TrainError::Model(format!("{key}: {e}")))?;
            vars.insert(key.clone(), t);
            keys.push((key.clone(), dims));
        }
        Ok(Model {
            vs,
            spec,
            keys,
            vars,
        })
    }

    /// The variable `key` (a shallow clone).
    pub fn var(&self, key: &str) -> Option<Tensor> {
        self.vars.get(key).map(Tensor::shallow_clone)
    }

    /// Every variable (state_dict key → tensor).
    pub fn vars(&self) -> &HashMap<String, Tensor> {
        &self.vars
    }

    fn w(&self, key: &str) -> &Tensor {
        // The layout comes from the catalog, so a missing key is a programming error.
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("model has no variable `{key}`"))
    }

    fn linear(&self, prefix: &str, x: &Tensor) -> Tensor {
        x.linear(
            self.w(&format!("{prefix}.weight")),
            Some(self.w(&format!("{prefix}.bias"))),
        )
    }

    fn layer_norm(&self, prefix: &str, x: &Tensor) -> Tensor {
        let dim = *x.size().last().unwrap_or(&1);
        x.layer_norm(
            [dim],
            Some(self.w(&format!("{prefix}.weight"))),
            Some(self.w(&format!("{prefix}.bias"))),
            LN_EPS,
            false,
        )
    }

    /// encoder → (mu, logvar).
    fn encode(&self, part: &str, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let h = match self.spec.params.encoder {
            EncoderKind::Frozen => {
                let h = self.linear(&format!("{part}.encoder.0"), x).relu();
                let h = self.linear(&format!("{part}.encoder.2"), &h).relu();
                self.linear(&format!("{part}.encoder.4"), &h).relu()
            }
            EncoderKind::Improved => {
                let p = self.spec.encoder_dropout;
                let mut h = x.shallow_clone();
                for (lin, ln) in [(0, 1), (4, 5), (8, 9)] {
                    h = self.linear(&format!("{part}.encoder.{lin}"), &h);
                    h = dropout(
                        &self.layer_norm(&format!("{part}.encoder.{ln}"), &h).silu(),
                        p,
                        train,
                    );
                }
                h
            }
        };
        let mu = self.linear(&format!("{part}.fc_mu"), &h);
        let mut logvar = self.linear(&format!("{part}.fc_logvar"), &h);
        if self.spec.params.encoder == EncoderKind::Improved {
            logvar = logvar.clamp(self.spec.logvar_min, self.spec.logvar_max);
        }
        (mu, logvar)
    }

    /// decoder_A → logits [B, 9, 3].
    fn decode_a(&self, z: &Tensor, train: bool) -> Tensor {
        let out = match self.spec.params.decoder {
            EncoderKind::Frozen => {
                let h = self.linear("decoder_A.decoder.0", z).relu();
                let h = self.linear("decoder_A.decoder.2", &h).relu();
                self.linear("decoder_A.decoder.4", &h)
            }
            EncoderKind::Improved => {
                let p = self.spec.decoder_dropout;
                let mut h = z.shallow_clone();
                for (lin, ln) in [(0, 1), (4, 5)] {
                    h = self.linear(&format!("decoder_A.decoder.{lin}"), &h);
                    h = dropout(
                        &self
                            .layer_norm(&format!("decoder_A.decoder.{ln}"), &h)
                            .silu(),
                        p,
                        train,
                    );
                }
                self.linear("decoder_A.decoder.8", &h)
            }
        };
        out.view([-1, 9, 3])
    }

    /// The Sequential indices of a projection network: (Linear, LayerNorm) pairs of the
    /// hidden blocks and the output Linear. `with_ln` is true for direction_net.
    fn seq_indices(&self, with_ln: bool) -> (Vec<(usize, Option<usize>)>, usize) {
        let drop = usize::from(self.spec.params.projection_dropout);
        let block = if with_ln { 3 } else { 2 } + drop;
        let n = self.spec.params.projection_layers.max(1) as usize;
        let hidden = (0..n)
            .map(|k| (k * block, with_ln.then_some(k * block + 1)))
            .collect();
        (hidden, n * block)
    }

    fn mlp(&self, prefix: &str, z: &Tensor, with_ln: bool, train: bool) -> Tensor {
        let p = self.spec.projection_dropout;
        let (hidden, out) = self.seq_indices(with_ln);
        let mut h = z.shallow_clone();
        for (lin, ln) in hidden {
            h = self.linear(&format!("{prefix}.{lin}"), &h);
            if let Some(ln) = ln {
                h = self.layer_norm(&format!("{prefix}.{ln}"), &h);
            }
            h = dropout(&h.silu(), p, train);
        }
        self.linear(&format!("{prefix}.{out}"), &h)
    }

    /// HyperbolicProjection `prefix` applied to z: direction = normalize(z + dir_net(z)),
    /// radius = sigmoid(radius_net(z)) · max_radius.
    fn project(&self, prefix: &str, radius_prefix: &str, z: &Tensor, train: bool) -> Tensor {
        let d = z + self.mlp(&format!("{prefix}.direction_net"), z, true, train);
        let norm = d.norm_scalaropt_dim(2.0, [-1i64], true).clamp_min(1e-12);
        let direction = d / norm;
        let radius = self
            .mlp(&format!("{radius_prefix}.radius_net"), z, false, train)
            .sigmoid()
            * self.spec.max_radius;
        direction * radius
    }

    /// The curvature of `proj` (`projection` or `projection.proj_A`).
    fn curvature_of(&self, proj: &str) -> Tensor {
        let device = self.vs.device();
        if self.spec.learnable_curvature {
            if let Some(isp) = self.vars.get(&format!("{proj}.manifold.isp_c")) {
                return isp.softplus();
            }
        }
        Tensor::from(self.spec.curvature as f32).to_device(device)
    }

    /// The curvature of the coverage loss's log map: softplus(isp_c) of proj_A (of the
    /// single projection) read as a plain number, no gradient (training.md §1).
    pub fn log_map_curvature(&self) -> f64 {
        let key = if self.spec.params.dual_projection {
            "projection.proj_A.manifold.isp_c"
        } else {
            "projection.manifold.isp_c"
        };
        match self.vars.get(key) {
            Some(isp) => tch::no_grad(|| isp.softplus().double_value(&[])),
            None => self.spec.curvature,
        }
    }

    /// The logits the coverage loss uses: decoder_A(log_map_zero(z_A_hyp)) with
    /// [`Model::log_map_curvature`], [B, 9, 3]; decoder_A's dropout on when `train`.
    pub fn coverage_logits(&self, z_a_hyp: &Tensor, train: bool) -> Tensor {
        let c = self.log_map_curvature();
        self.decode_a(&log_map_zero(z_a_hyp, c), train)
    }

    /// The forward pass. `mode` says which parts run in training mode; z is sampled
    /// (`mu + eps·exp(logvar/2)`) for an encoder in training mode, `mu` otherwise.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Output {
        self.forward_with(x, mode, None)
    }

    /// encoder_A (eval mode, no gradient) and decoder_A(mu_A) for every row of `x`: while
    /// a Frozen-style encoder_A (no dropout) is frozen it is a constant function, so the
    /// trainer computes it once and hands the rows of each batch to
    /// [`Model::forward_with`].
    pub fn frozen_a(&self, x: &Tensor) -> FrozenA {
        tch::no_grad(|| {
            let (mu, logvar) = self.encode("encoder_A", x, false);
            let logits = self.decode_a(&mu, false);
            FrozenA { mu, logvar, logits }
        })
    }

    /// [`Model::forward`] with encoder_A / decoder_A outputs given (the batch's rows of a
    /// [`FrozenA`]) instead of computed.
    pub fn forward_with(&self, x: &Tensor, mode: Mode, a: Option<FrozenA>) -> Output {
        let (mu_a, logvar_a, logits_a) = match a {
            Some(a) => (a.mu, a.logvar, a.logits),
            None => {
                let (mu, logvar) = self.encode("encoder_A", x, mode.encoder_a);
                let logits = if mode.logits_from_mu {
                    self.decode_a(&mu, mode.decoder_a)
                } else {
                    Tensor::new()
                };
                (mu, logvar, logits)
            }
        };
        let (mu_b, logvar_b) = self.encode("encoder_B", x, mode.encoder_b);
        let (z_a_hyp, z_b_hyp, curvature) = if self.spec.has_projection() {
            let sample = |mu: &Tensor, logvar: &Tensor, train: bool| {
                if train {
                    mu + Tensor::randn_like(mu) * (logvar * 0.5).exp()
                } else {
                    mu.shallow_clone()
                }
            };
            let z_a = sample(&mu_a, &logvar_a, mode.sample);
            let z_b = sample(&mu_b, &logvar_b, mode.sample);
            let p = &self.spec.params;
            let train = mode.projection;
            let (a, b, c) = if p.dual_projection {
                let b_radius = if p.share_direction {
                    "projection.proj_B_radius"
                } else {
                    "projection.proj_B"
                };
                let b_dir = if p.share_direction {
                    "projection.proj_A"
                } else {
                    "projection.proj_B"
                };
                (
                    self.project("projection.proj_A", "projection.proj_A", &z_a, train),
                    self.project(b_dir, b_radius, &z_b, train),
                    self.curvature_of("projection.proj_A"),
                )
            } else {
                (
                    self.project("projection", "projection", &z_a, train),
                    self.project("projection", "projection", &z_b, train),
                    self.curvature_of("projection"),
                )
            };
            (Some(a), Some(b), Some(c))
        } else {
            (None, None, None)
        };
        Output {
            mu_a,
            logvar_a,
            mu_b,
            logvar_b,
            logits_a,
            z_a_hyp,
            z_b_hyp,
            curvature,
        }
    }

    /// The state_dict keys of a part (`encoder_A`, `projection`, …).
    pub fn part_keys(&self, part: &str) -> Vec<String> {
        let prefix = format!("{part}.");
        self.keys
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Which part a state_dict key belongs to: `encoder_A`, `encoder_B`, `decoder_A`,
/// `projection`, `controller`, or its first component.
pub fn part_of(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: VersionId) -> ModelSpec {
        ModelSpec::new(v, arch::default_params(v), None)
    }

    #[test]
    fn variables_are_the_state_dict() {
        for v in [VersionId::V5_11, VersionId::V5_12_4, VersionId::V5_5] {
            let m = Model::new(spec(v), Device::Cpu).unwrap();
            let layout = arch::expected_layout(v, &m.spec.params);
            let named = m.vs.variables();
            assert_eq!(named.len(), layout.len(), "{v:?}");
            for (k, s) in &layout {
                let t = named.get(k).unwrap_or_else(|| panic!("{v:?}: no {k}"));
                let dims: Vec<u64> = t.size().iter().map(|&d| d as u64).collect();
                assert_eq!(&dims, s, "{k}");
            }
        }
    }

    #[test]
    fn forward_shapes_and_ball() {
        tch::manual_seed(1);
        let m = Model::new(spec(VersionId::V5_12_4), Device::Cpu).unwrap();
        let x = Tensor::randn([5, 9], (Kind::Float, Device::Cpu));
        let out = m.forward(&x, Mode::EVAL);
        assert_eq!(out.logits_a.size(), vec![5, 9, 3]);
        let z = out.z_b_hyp.unwrap();
        assert_eq!(z.size(), vec![5, 16]);
        let max_norm = z
            .norm_scalaropt_dim(2.0, [-1i64], false)
            .max()
            .double_value(&[]);
        assert!(max_norm < 0.95 + 1e-6, "{max_norm}");
        assert!((out.curvature.unwrap().double_value(&[]) - 1.0).abs() < 1e-4);
    }

    #[test]
    fn cached_frozen_a_gives_the_same_forward() {
        tch::manual_seed(2);
        let m = Model::new(spec(VersionId::V5_12_4), Device::Cpu).unwrap();
        let x = Tensor::randn([64, 9], (Kind::Float, Device::Cpu));
        let idx = Tensor::from_slice(&[3i64, 0, 63, 7]);
        let cache = m.frozen_a(&x);
        let a = m.forward(&x.index_select(0, &idx), Mode::EVAL);
        let b = m.forward_with(&x.index_select(0, &idx), Mode::EVAL, Some(cache.rows(&idx)));
        for (p, q) in [(&a.mu_a, &b.mu_a), (&a.logits_a, &b.logits_a)] {
            let d = (p - q).abs().max().double_value(&[]);
            assert!(d < 1e-5, "{d}");
        }
        let d = (a.z_b_hyp.unwrap() - b.z_b_hyp.unwrap())
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(d, 0.0);
    }

    #[test]
    fn dropout_drops_p_and_rescales() {
        tch::manual_seed(3);
        let x = Tensor::ones([1000, 101], (Kind::Float, Device::Cpu));
        let y = dropout(&x, 0.1, true);
        let zeros = y.eq(0.0).sum(Kind::Float).double_value(&[]) / x.numel() as f64;
        assert!((zeros - 0.1).abs() < 0.005, "{zeros}");
        // Survivors scaled by 1/q: the mean stays 1.
        assert!((y.mean(Kind::Float).double_value(&[]) - 1.0).abs() < 0.01);
        let kept: Vec<f32> = Vec::try_from(&y.flatten(0, -1)).unwrap();
        let scale = 65536.0 / (65536.0 - 6554.0);
        assert!(kept
            .iter()
            .all(|&v| v == 0.0 || (f64::from(v) - scale).abs() < 1e-6));
        assert_eq!(
            dropout(&x, 0.1, false).eq_tensor(&x).all().int64_value(&[]),
            1
        );
        // Gradients flow through the mask.
        let w = Tensor::ones([4, 6], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        dropout(&w, 0.5, true).sum(Kind::Float).backward();
        assert_eq!(w.grad().size(), vec![4, 6]);
    }

    #[test]
    fn isp_c_is_inverse_softplus() {
        assert!((inverse_softplus(1.0) - 0.5413).abs() < 1e-4);
    }
}
