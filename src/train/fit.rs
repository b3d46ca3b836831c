//! `tvck convert --measure` and `--fit` (docs/migrations.md, "`--fit` and `--measure`"):
//! the [`Refine`] implementation of the trainer.
//!
//! * **Measure**: build the converted model from the structural state, evaluate it on all
//!   19,683 operations (eval mode, z = mu) and hand back the metrics `tvck train` writes.
//! * **Fit**: distil the source model into the converted one on every operation. The
//!   source's outputs are computed once; Adam on shuffled batches (the fit's own seeded
//!   generator; the worst operations of the last pass added to each) then minimises a
//!   weighted sum of MSEs of mu / logvar (both encoders) and decoder_A's logits, each
//!   column normalised by its own spread, a cross-entropy against the source's predicted
//!   digits (again on the deciding digits not yet won by a margin), and, when the source
//!   has a projection, z_A_hyp / z_B_hyp (per column), their Poincaré radii (mean and max
//!   error) and the distances of pairs of operations in each. Tensors the conversion
//!   created (inserted LayerNorms and layers, …) move alone for the first steps, then every
//!   parameter of the matched parts does. The fit stops when the converted model
//!   reconstructs exactly the operations the source reconstructs and the geometry is within
//!   [`Tolerances`]; when the budget runs out first it fails with the best values reached.
//!   A conversion that already preserves the function (max |Δ| ≤ [`EXACT`] on every
//!   matched output) is measured, not fitted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value as Json};
use tch::{Device, Kind, Tensor};

use crate::arch::{self, Hints};
use crate::format::{Checkpoint, Value};
use crate::metrics::{key, Provenance};
use crate::migrate::plan::Action;
use crate::migrate::{MigrateError, Plan, Refine, RefineInput, Refined};

use super::data::Dataset;
use super::eval::stored_model_config;
use super::load;
use super::metrics::{evaluate, poincare_radius, EvalMetrics};
use super::model::{part_of, Mode, Model, ModelSpec};
use super::TrainError;

/// A conversion preserves the function when no matched output moves by more than this.
pub const EXACT: f64 = 1e-6;

/// The default step budget of `--fit`. The slowest sample, `v5_5_early/latest.pt` (a
/// source whose decisions are knife-edge), reaches the source's set at about step 2,300
/// (docs/benchmarks.md, "convert --fit"); the budget leaves room above that. A fit that
/// meets its tolerances stops there: the budget only bounds how long a failing fit runs.
pub const DEFAULT_MAX_STEPS: usize = 4000;

/// Adam's learning rate.
const LR: f64 = 3e-3;
/// Steps in which only the tensors the conversion created move.
const NEW_ONLY_STEPS: usize = 30;
/// Weight of the Poincaré-radius terms (the slowest outputs to match).
const RADIUS_WEIGHT: f64 = 4.0;
/// The extra cross-entropy on the deciding digits ([`deciding_digits`]) whose margin
/// (logit of the source's digit minus the largest other) is below [`STRAGGLER_MARGIN`] is
/// their sum over at least this many digits (a few stragglers get weight without
/// dominating the step).
const STRAGGLER_FLOOR: f64 = 256.0;
/// A digit counts as settled once the source's digit leads by this much (logits): a digit
/// predicted right by a hair flips back under the next update's noise.
const STRAGGLER_MARGIN: f64 = 1.0;
/// Adam's rate falls by [`LR_DECAY`] every pass once at most this many operations are
/// reconstructed differently from the source: down to LR / [`LR_FLOOR`] when the radii are
/// within their tolerances, and only to LR / [`RADIUS_LR_FLOOR`] while they are not (at
/// LR / 16 the radii of `v5_11_homeostasis/best.pt` converged too slowly for the budget;
/// the lower rate is what lets the rank metrics settle once the radii are in).
const SETTLE_DIFFERING: i64 = 16;
const LR_DECAY: f64 = 0.8;
const LR_FLOOR: f64 = 16.0;
const RADIUS_LR_FLOOR: f64 = 4.0;
/// Once the batches of a pass reconstructed exactly the source's set, the radius terms
/// weigh this many times as much (what is left to fit is mostly the geometry).
const SET_RADIUS_BOOST: f64 = 4.0;
/// Weight of the logvar terms (mu drives every output, logvar none in eval mode).
const LOGVAR_WEIGHT: f64 = 0.1;
/// Operations per step (a step is one Adam update; the standing is checked on all
/// operations once per pass over them).
const BATCH: i64 = 1024;
/// Weight of the pairwise-distance terms of z_A_hyp and z_B_hyp (dist_corr and the
/// hierarchies are functions of those distances and radii, not of single outputs).
const PAIR_WEIGHT: f64 = 1.0;
/// Weight of the radius max-error term (the mean square of the largest |Δ radius| of a
/// batch: max |Δ radius| is bounded, the mean terms do not see a few far-off operations).
const RADIUS_MAX_WEIGHT: f64 = 1.0;
/// The largest |Δ radius| of a batch that the max-error term averages: 1 in this many.
const RADIUS_TOP_FRACTION: i64 = 64;
/// Operations added to every batch of a pass: the ones the last standing found worst (largest
/// |Δ radius| of A and of B, each this many; and every operation reconstructed differently
/// from the source, up to this many).
const HARD_ROWS: i64 = 128;
/// Floor of a column's variance in the normalised MSEs (a constant column of the source
/// is matched in absolute terms).
const VAR_FLOOR: f64 = 1e-6;
/// The pairs of the pairwise-distance terms: operation i with operation i + PAIR_SHIFT of
/// the (shuffled) batch; the source's spread of pairwise distances from all operations
/// paired with i + PAIR_SPREAD_SHIFT (mod N), a fixed sample of 19,683 pairs.
const PAIR_SHIFT: i64 = 1;
const PAIR_SPREAD_SHIFT: i64 = 7919;

/// How close the fitted geometry must come to the source's (absolute differences).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerances {
    /// Max |Δ radius| over the operations, for z_A_hyp and z_B_hyp (Poincaré radius).
    pub max_radius: f64,
    /// Mean |Δ radius|, A and B.
    pub mean_radius: f64,
    /// |Δ hierarchy_A|, |Δ hierarchy_B|.
    pub hierarchy: f64,
    /// |Δ richness_A|, |Δ richness_B|.
    pub richness: f64,
    /// |Δ dist_corr_A|, |Δ dist_corr_B|.
    pub dist_corr: f64,
    /// |Δ Q|.
    #[serde(rename = "Q")]
    pub q: f64,
}

impl Tolerances {
    /// The bound on |Δ| of a stored metric, `None` for those the fit does not bound.
    fn of(&self, stored: &str) -> Option<f64> {
        match stored {
            key::HIERARCHY_A | key::HIERARCHY_B => Some(self.hierarchy),
            key::RICHNESS_A | key::RICHNESS_B => Some(self.richness),
            key::DIST_CORR_A | key::DIST_CORR_B => Some(self.dist_corr),
            key::Q => Some(self.q),
            _ => None,
        }
    }
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            max_radius: 0.1,
            mean_radius: 0.01,
            hierarchy: 0.02,
            richness: 0.005,
            dist_corr: 0.03,
            q: 0.06,
        }
    }
}

/// What the refiner does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RefineMode {
    /// Evaluate the structural conversion.
    Measure,
    /// Fit the converted model to the source, then evaluate it.
    Fit {
        seed: u64,
        max_steps: usize,
        tolerances: Tolerances,
    },
}

/// The trainer's [`Refine`]: `--measure` or `--fit` on a device.
#[derive(Debug, Clone, Copy)]
pub struct ConvertRefiner {
    pub mode: RefineMode,
    pub device: Device,
}

fn refine_err(what: &str, e: impl std::fmt::Display) -> MigrateError {
    MigrateError::Refine {
        message: format!("{what}: {e}"),
    }
}

fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Every metric `tvck train` writes, under its stored name.
pub fn metric_pairs(m: &EvalMetrics) -> Vec<(&'static str, Option<f64>)> {
    vec![
        (key::COVERAGE, Some(m.coverage)),
        (key::HIERARCHY_A, m.hierarchy_a),
        (key::HIERARCHY_B, m.hierarchy_b),
        (key::RICHNESS_A, m.richness_a),
        (key::RICHNESS_B, m.richness_b),
        (key::DIST_CORR_A, m.dist_corr_a),
        (key::DIST_CORR_B, m.dist_corr_b),
        (key::R_V0, m.r_v0),
        (key::R_V9, m.r_v9),
        (key::MEAN_RADIUS, m.mean_radius),
        (key::STD_RADIUS, m.std_radius),
        (key::Q, m.q),
    ]
}

/// The target state's keys that the conversion created or transformed (through every
/// step of the plan: a key initialised in step 1 and copied in step 2 is new).
pub fn new_keys(plan: &Plan) -> BTreeSet<String> {
    let mut new = BTreeSet::new();
    for step in &plan.steps {
        let mut next = BTreeSet::new();
        for row in &step.rows {
            let Some((k, _)) = &row.to else { continue };
            let is_new = match &row.action {
                Action::Same => row.from.as_ref().is_some_and(|(f, _)| new.contains(f)),
                Action::Drop => false,
                Action::Init(_) | Action::Slice(_) | Action::Pad(..) | Action::Transpose(_) => true,
            };
            if is_new {
                next.insert(k.clone());
            }
        }
        new = next;
    }
    new
}

/// What is matched and what is only initialised, for a source with or without a
/// projection and a target layout.
struct Targets {
    /// The outputs compared with the source's.
    outputs: Vec<&'static str>,
    /// The parts that may be tuned.
    parts: Vec<&'static str>,
    /// The target's parts that are only initialised, with why.
    initialised_only: Vec<String>,
    projection: bool,
}

fn targets(source_proj: bool, target: &arch::LayoutParams) -> Targets {
    let target_proj = target.hidden_dim > 0;
    let projection = source_proj && target_proj;
    let mut outputs = vec!["mu_A", "logvar_A", "mu_B", "logvar_B", "logits_A"];
    let mut parts = vec!["encoder_A", "encoder_B", "decoder_A"];
    if projection {
        outputs.extend(["z_A_hyp", "z_B_hyp"]);
        parts.push("projection");
    }
    let mut initialised_only = Vec::new();
    if target_proj && !source_proj {
        initialised_only.push(
            "projection: the source has none, so it stays as the conversion initialised it (train it with `tvck train`)"
                .to_string(),
        );
    }
    if target.controller {
        initialised_only
            .push("controller: not part of the forward pass; kept as converted".to_string());
    }
    Targets {
        outputs,
        parts,
        initialised_only,
        projection,
    }
}

/// The source checkpoint as a model (layout inferred from its tensors, settings from its
/// stored config, as `tvck eval` builds it).
fn source_model(ckpt: &Checkpoint, device: Device) -> Result<Model, MigrateError> {
    let inf = arch::infer_checkpoint(ckpt);
    let best = inf
        .best
        .filter(|b| b.is_exact())
        .ok_or_else(|| MigrateError::Refine {
            message: format!(
                "`{}`: no TernaryVAE layout fits its tensors exactly, so the source model cannot be built to measure against",
                ckpt.path.display()
            ),
        })?;
    let cfg = stored_model_config(&ckpt.root);
    let spec = ModelSpec::new(best.version, best.params, Some(&cfg));
    let model = Model::new(spec, device).map_err(|e| refine_err("source model", e))?;
    load::load_strict(&model, ckpt).map_err(|e| {
        refine_err(
            &format!("loading `{}` into its model", ckpt.path.display()),
            e,
        )
    })?;
    Ok(model)
}

/// The converted state as a model: the layout inferred from its shapes with the converted
/// file's config (the source's with the plan's entries applied) as hints, as `tvck eval`
/// will build the written file.
fn target_model(
    input: &RefineInput<'_, '_>,
    device: Device,
) -> Result<(Model, Value), MigrateError> {
    let mut root = input.source.root.clone();
    for step in &input.plan.steps {
        crate::migrate::tree::apply_entries(&mut root, &step.entries);
    }
    let shapes: Vec<(&str, &[u64])> = input
        .state
        .iter()
        .map(|(k, t)| (k.as_str(), t.shape.as_slice()))
        .collect();
    let inf = arch::infer(&shapes, &Hints::from_checkpoint(&root));
    let best = inf
        .best
        .filter(|b| b.is_exact())
        .ok_or_else(|| MigrateError::Refine {
            message: format!(
                "the converted state ({}) fits no TernaryVAE layout exactly, so it cannot be evaluated",
                input.plan.target_layout
            ),
        })?;
    let cfg = stored_model_config(&root);
    let spec = ModelSpec::new(best.version, best.params, Some(&cfg));
    let model = Model::new(spec, device).map_err(|e| refine_err("converted model", e))?;
    load::load_state(&model, input.state).map_err(|e| refine_err("converted state", e))?;
    Ok((model, root))
}

/// A model's outputs on every operation, eval mode.
struct Outputs {
    named: Vec<(&'static str, Tensor)>,
    logits: Tensor,
    /// Poincaré radii of z_A_hyp, z_B_hyp.
    radii: Option<(Tensor, Tensor)>,
}

impl Outputs {
    fn of(model: &Model, x: &Tensor, projection: bool) -> Outputs {
        let o = model.forward(x, Mode::EVAL);
        let mut named = vec![
            ("mu_A", o.mu_a),
            ("logvar_A", o.logvar_a),
            ("mu_B", o.mu_b),
            ("logvar_B", o.logvar_b),
            ("logits_A", o.logits_a.shallow_clone()),
        ];
        let mut radii = None;
        if projection {
            if let (Some(a), Some(b), Some(c)) = (o.z_a_hyp, o.z_b_hyp, o.curvature) {
                radii = Some((poincare_radius(&a, &c), poincare_radius(&b, &c)));
                named.push(("z_A_hyp", a));
                named.push(("z_B_hyp", b));
            }
        }
        Outputs {
            named,
            logits: o.logits_a,
            radii,
        }
    }

    fn get(&self, name: &str) -> Option<&Tensor> {
        self.named.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Per-operation "reconstructed exactly" flags.
fn reconstructed(logits: &Tensor, ds: &Dataset) -> Tensor {
    reconstructed_of(logits, &ds.targets)
}

/// "Reconstructed exactly" flags of logits [B, 9, 3] against targets [B, 9].
fn reconstructed_of(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits
        .argmax(-1, false)
        .eq_tensor(targets)
        .all_dim(-1, false)
}

/// What the batches of a pass saw, per operation: reconstructed exactly, and the radii.
struct Seen<'a> {
    ok: &'a Tensor,
    radii: Option<&'a (Tensor, Tensor)>,
}

impl Seen<'_> {
    /// Operations reconstructed differently from the source, |Δ radius|, and the worst
    /// operations (those differing, up to [`HARD_ROWS`], and the [`HARD_ROWS`] largest
    /// |Δ radius| of A and of B).
    fn against(
        &self,
        src: &Outputs,
        src_ok: &Tensor,
        n: i64,
    ) -> (i64, Option<RadiusDelta>, Tensor) {
        let differs = self.ok.ne_tensor(src_ok);
        let differing = differs.sum(Kind::Int64).int64_value(&[]);
        let mut rows = vec![differs
            .nonzero()
            .view([-1])
            .narrow(0, 0, differing.min(HARD_ROWS))];
        let mut radius = None;
        if let (Some((ta, tb)), Some((sa, sb))) = (self.radii, &src.radii) {
            let (da, db) = ((ta - sa).abs(), (tb - sb).abs());
            radius = Some(RadiusDelta::of(&da, &db));
            for d in [da, db] {
                rows.push(d.topk(HARD_ROWS.min(n), 0, true, false).1);
            }
        }
        (differing, radius, Tensor::cat(&rows, 0))
    }
}

/// max and mean |Δ radius| of A and B.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RadiusDelta {
    pub max_a: f64,
    pub mean_a: f64,
    pub max_b: f64,
    pub mean_b: f64,
}

impl RadiusDelta {
    /// From |Δ radius| of A and B over the operations.
    fn of(da: &Tensor, db: &Tensor) -> RadiusDelta {
        RadiusDelta {
            max_a: da.max().double_value(&[]),
            mean_a: da.mean(Kind::Double).double_value(&[]),
            max_b: db.max().double_value(&[]),
            mean_b: db.mean(Kind::Double).double_value(&[]),
        }
    }
}

fn radius_delta(t: &Outputs, s: &Outputs) -> Option<RadiusDelta> {
    let ((ta, tb), (sa, sb)) = (t.radii.as_ref()?, s.radii.as_ref()?);
    Some(RadiusDelta::of(&(ta - sa).abs(), &(tb - sb).abs()))
}

fn radius_json(d: Option<RadiusDelta>) -> Json {
    match d {
        Some(d) => json!({
            "A": {"max": d.max_a, "mean": d.mean_a},
            "B": {"max": d.max_b, "mean": d.mean_b},
        }),
        None => Json::Null,
    }
}

/// |Δ| of the geometry metrics the tolerances bound: (name, |Δ|, tolerance), in
/// [`metric_pairs`] order.
fn geometry_deltas(
    t: &EvalMetrics,
    s: &EvalMetrics,
    tol: &Tolerances,
) -> Vec<(&'static str, f64, f64)> {
    metric_pairs(t)
        .into_iter()
        .zip(metric_pairs(s))
        .filter_map(|((k, a), (_, b))| Some((k, (a? - b?).abs(), tol.of(k)?)))
        .collect()
}

/// One evaluation of the target against the source during the fit.
#[derive(Debug, Clone, Default)]
struct Standing {
    step: usize,
    /// Operations whose "reconstructed exactly" differs from the source's.
    differing: i64,
    covered: i64,
    radius: Option<RadiusDelta>,
    /// Filled when the cheap checks passed.
    geometry: Vec<(&'static str, f64, f64)>,
    /// Evaluated on every operation at once (else: what the last pass's batches saw).
    measured: bool,
}

impl Standing {
    fn radius_ok(&self, tol: &Tolerances) -> bool {
        Standing::radius_within(self.radius, tol)
    }

    fn radius_within(radius: Option<RadiusDelta>, tol: &Tolerances) -> bool {
        radius.is_none_or(|r| {
            r.max_a <= tol.max_radius
                && r.max_b <= tol.max_radius
                && r.mean_a <= tol.mean_radius
                && r.mean_b <= tol.mean_radius
        })
    }

    /// Worse-is-larger key for keeping the best standing.
    fn rank(&self) -> (i64, f64) {
        let r = self.radius.map_or(0.0, |r| r.max_a.max(r.max_b));
        (self.differing, r)
    }

    fn describe(&self, source_covered: i64) -> String {
        let mut parts = vec![format!(
            "step {}: {} operations reconstructed differently from the source (coverage {} vs the source's {} of 19683)",
            self.step, self.differing, self.covered, source_covered
        )];
        if let Some(r) = self.radius {
            parts.push(format!(
                "max |Δ radius| A {:.4} B {:.4}, mean A {:.5} B {:.5}",
                r.max_a, r.max_b, r.mean_a, r.mean_b
            ));
        }
        for (k, v, t) in &self.geometry {
            parts.push(format!("|Δ {k}| {v:.4} (tolerance {t})"));
        }
        parts.join("; ")
    }
}

/// Adam on a chosen set of tensors, bias-corrected per tensor.
struct Adam {
    params: Vec<(Tensor, bool)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: Vec<i32>,
    lr: f64,
}

impl Adam {
    fn new(params: Vec<(Tensor, bool)>, lr: f64) -> Adam {
        let m = params.iter().map(|(p, _)| p.zeros_like()).collect();
        let v = params.iter().map(|(p, _)| p.zeros_like()).collect();
        let t = vec![0; params.len()];
        Adam {
            params,
            m,
            v,
            t,
            lr,
        }
    }

    fn zero_grad(&mut self) {
        for (p, _) in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update; with `only_new`, only the tensors flagged new move.
    fn step(&mut self, only_new: bool) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        tch::no_grad(|| {
            for i in 0..self.params.len() {
                let (p, new) = &self.params[i];
                if only_new && !new {
                    continue;
                }
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                self.t[i] += 1;
                self.m[i] = &self.m[i] * b1 + &g * (1.0 - b1);
                self.v[i] = &self.v[i] * b2 + g.square() * (1.0 - b2);
                let bc1 = 1.0 - b1.powi(self.t[i]);
                let bc2 = 1.0 - b2.powi(self.t[i]);
                let update = (&self.m[i] / bc1) / ((&self.v[i] / bc2).sqrt() + eps) * self.lr;
                let mut p = p.shallow_clone();
                let _ = p.g_sub_(&update);
            }
        });
    }
}

/// splitmix64: the fit's own generator, so that nothing else drawing from libtorch's
/// global one (another thread, a test) changes the batches.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 0..n shuffled (Fisher–Yates).
fn shuffled(n: usize, state: &mut u64) -> Vec<i64> {
    let mut v: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        let j = (splitmix(state) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Normalised MSE: mean squared error over the target's variance.
fn nmse(a: &Tensor, b: &Tensor, var: f64) -> Tensor {
    (a - b).square().mean(Kind::Float) / var
}

fn variance(t: &Tensor) -> f64 {
    t.var(false).double_value(&[]).max(VAR_FLOOR)
}

/// 1 / the variance of each column of `t` over the operations (dim 0), floored: [D…], so
/// that every column of an output weighs the same in [`nmse_cols`] whatever its spread.
fn inverse_column_variance(t: &Tensor) -> Tensor {
    t.var_dim(0, false, false).clamp_min(VAR_FLOOR).reciprocal()
}

/// Normalised MSE per column: the mean over rows and columns of the squared error times the
/// column's inverse variance.
fn nmse_cols(a: &Tensor, b: &Tensor, inv_var: &Tensor) -> Tensor {
    ((a - b).square() * inv_var).mean(Kind::Float)
}

/// Euclidean distances between row i and row i + `shift` (cyclically) of `z` [B, D].
fn pair_distances(z: &Tensor, shift: i64) -> Tensor {
    (z - z.roll([shift], [0])).norm_scalaropt_dim(2.0, [-1i64], false)
}

/// Each digit's margin: the logit (last dimension) of the digit `pred` names minus the
/// largest other.
fn margins(logits: &Tensor, pred: &Tensor) -> Tensor {
    let g = pred.unsqueeze(-1);
    let own = logits.gather(-1, &g, false).squeeze_dim(-1);
    let other = logits
        .scatter_value(-1, &g, f64::NEG_INFINITY)
        .amax([-1i64], false);
    own - other
}

/// The digits that decide whether an operation counts as reconstructed, as 1 / 0 [N, 9]:
/// all nine of an operation the source reconstructs; of one it does not, only the wrong
/// digit the source is surest of (keeping that one wrong keeps the operation out of the
/// set, whatever its near-ties elsewhere do). A source that reconstructs every operation
/// has every digit deciding.
fn deciding_digits(logits: &Tensor, pred: &Tensor, targets: &Tensor, ok: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let margin = margins(logits, pred);
        let wrong = pred.ne_tensor(targets);
        let surest = margin
            .where_self(&wrong, &margin.full_like(f64::NEG_INFINITY))
            .argmax(-1, true);
        let one = margin.zeros_like().scatter_value(-1, &surest, 1.0);
        margin.ones_like().where_self(&ok.unsqueeze(-1), &one)
    })
}

impl ConvertRefiner {
    fn plan_json(&self, source_proj: bool, plan: &Plan) -> Json {
        let Some(last) = plan.steps.last() else {
            return json!({"mode": "none"});
        };
        let tg = targets(source_proj, &last.to_params);
        let new = new_keys(plan);
        let mut by_part: BTreeMap<&str, usize> = BTreeMap::new();
        for k in &new {
            *by_part.entry(part_of(k)).or_default() += 1;
        }
        match self.mode {
            RefineMode::Measure => json!({
                "mode": "measure",
                "device": device_name(self.device),
                "how": "the converted weights are evaluated on all 19,683 operations (eval mode, z = mu); nothing is fitted",
            }),
            RefineMode::Fit {
                seed,
                max_steps,
                tolerances,
            } => json!({
                "mode": "fit",
                "device": device_name(self.device),
                "seed": seed,
                "max_steps": max_steps,
                "tolerances": tolerances,
                "matched": tg.outputs,
                "tuned_parts": tg.parts,
                "initialised_only": tg.initialised_only,
                "new_tensors": by_part,
                "how": format!(
                    "distillation on all 19,683 operations in eval mode (z = mu), Adam (lr {LR}, batches of {BATCH} operations shuffled by the seed); the {} tensors the conversion created move alone for the first {NEW_ONLY_STEPS} steps, then every parameter of the tuned parts; if the conversion already preserves every matched output (max |Δ| ≤ {EXACT}) the model is measured, not fitted",
                    new.len()
                ),
                "stop": "the converted model reconstructs exactly the operations the source reconstructs, and the geometry is within the tolerances",
            }),
        }
    }

    fn run(&self, input: RefineInput<'_, '_>) -> Result<Refined, MigrateError> {
        let t0 = Instant::now();
        let device = self.device;
        if let RefineMode::Fit { seed, .. } = self.mode {
            tch::manual_seed(seed as i64);
        }
        let ds = Dataset::new(device);
        let source = source_model(input.source, device)?;
        let source_proj = source.spec.has_projection();
        let (target, _) = target_model(&input, device)?;
        let tg = targets(source_proj, &target.spec.params);

        // The source, once.
        let src = tch::no_grad(|| Outputs::of(&source, &ds.x, tg.projection));
        let src_metrics = evaluate(&source, &ds);
        let src_ok = reconstructed(&src.logits, &ds);
        let src_pred = src.logits.argmax(-1, false);
        let source_s = t0.elapsed().as_secs_f64();

        // The structural conversion.
        let t1 = Instant::now();
        let structural = tch::no_grad(|| Outputs::of(&target, &ds.x, tg.projection));
        let structural_metrics = evaluate(&target, &ds);
        let mut max_diff = serde_json::Map::new();
        let mut exact = true;
        for name in &tg.outputs {
            if let (Some(a), Some(b)) = (structural.get(name), src.get(name)) {
                let d = max_abs(a, b);
                exact &= d <= EXACT;
                max_diff.insert((*name).to_string(), json!(d));
            }
        }
        let structural_radius = radius_delta(&structural, &src);
        let structural_s = t1.elapsed().as_secs_f64();

        let mut report = serde_json::Map::new();
        report.insert(
            "tool".into(),
            json!(format!("tvck {} (libtorch)", env!("CARGO_PKG_VERSION"))),
        );
        report.insert("device".into(), json!(device_name(device)));
        report.insert(
            "evaluated_on".into(),
            json!("all 19,683 operations, eval mode (z = mu, no dropout)"),
        );
        report.insert("matched".into(), json!(tg.outputs));
        report.insert("initialised_only".into(), json!(tg.initialised_only));
        report.insert("structural_max_abs_diff".into(), Json::Object(max_diff));
        report.insert(
            "structural_radius_delta".into(),
            radius_json(structural_radius),
        );

        let (status, final_metrics, fitted) = match self.mode {
            RefineMode::Measure => {
                report.insert("mode".into(), json!("measure"));
                report.insert(
                    "how".into(),
                    json!("measured on the converted weights; not fitted"),
                );
                (Provenance::Measured, structural_metrics.clone(), None)
            }
            RefineMode::Fit { .. } if exact => {
                report.insert("mode".into(), json!("fit"));
                report.insert("steps".into(), json!(0));
                report.insert(
                    "how".into(),
                    json!(format!(
                        "measured, not fitted: the conversion preserves the function exactly (max |Δ| ≤ {EXACT} on every matched output)"
                    )),
                );
                (Provenance::Measured, structural_metrics.clone(), None)
            }
            RefineMode::Fit {
                seed,
                max_steps,
                tolerances,
            } => {
                let t2 = Instant::now();
                let standing = self.fit(
                    &target,
                    &input,
                    &ds,
                    &src,
                    &src_ok,
                    &src_pred,
                    &src_metrics,
                    &tg,
                    max_steps,
                    seed,
                    &tolerances,
                )?;
                let fit_s = t2.elapsed().as_secs_f64();
                let t3 = Instant::now();
                let fitted_out = tch::no_grad(|| Outputs::of(&target, &ds.x, tg.projection));
                let fitted_metrics = evaluate(&target, &ds);
                let bytes = input
                    .state
                    .iter()
                    .map(|(k, t)| load::var_bytes(&target, k, t.dtype))
                    .collect::<Result<Vec<_>, TrainError>>()
                    .map_err(|e| refine_err("the fitted state", e))?;
                let final_s = t3.elapsed().as_secs_f64();
                report.insert("mode".into(), json!("fit"));
                report.insert(
                    "how".into(),
                    json!(
                        "distilled from the source model on all 19,683 operations, then measured"
                    ),
                );
                report.insert("seed".into(), json!(seed));
                report.insert("steps".into(), json!(standing.step));
                report.insert("max_steps".into(), json!(max_steps));
                report.insert("tolerances".into(), json!(tolerances));
                report.insert(
                    "radius_delta".into(),
                    radius_json(radius_delta(&fitted_out, &src)),
                );
                report.insert(
                    "geometry_delta".into(),
                    Json::Object(
                        geometry_deltas(&fitted_metrics, &src_metrics, &tolerances)
                            .into_iter()
                            .map(|(k, v, _)| (k.to_string(), json!(v)))
                            .collect(),
                    ),
                );
                report.insert(
                    "time_s".into(),
                    json!({
                        "source": source_s,
                        "structural": structural_s,
                        "fit": fit_s,
                        "final_eval": final_s,
                    }),
                );
                (
                    Provenance::Fitted,
                    fitted_metrics.clone(),
                    Some((fitted_metrics, bytes)),
                )
            }
        };
        report.insert("status".into(), json!(status.as_str()));
        let mut values = serde_json::Map::new();
        let fitted_pairs = fitted.as_ref().map(|(m, _)| metric_pairs(m));
        for (i, ((k, s), (_, st))) in metric_pairs(&src_metrics)
            .into_iter()
            .zip(metric_pairs(&structural_metrics))
            .enumerate()
        {
            let f = fitted_pairs.as_ref().and_then(|p| p[i].1);
            values.insert(
                k.to_string(),
                json!({"source": s, "structural": st, "fitted": f}),
            );
        }
        report.insert("values".into(), Json::Object(values));
        report.insert("wall_s".into(), json!(t0.elapsed().as_secs_f64()));
        let metrics = metric_pairs(&final_metrics)
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        Ok(Refined {
            state: fitted.map(|(_, b)| b),
            status,
            metrics,
            report: Json::Object(report),
        })
    }

    /// Distil `src` into `target`; the standing that met the tolerances, or the budget
    /// error with the best one.
    #[allow(clippy::too_many_arguments)]
    fn fit(
        &self,
        target: &Model,
        input: &RefineInput<'_, '_>,
        ds: &Dataset,
        src: &Outputs,
        src_ok: &Tensor,
        src_pred: &Tensor,
        src_metrics: &EvalMetrics,
        tg: &Targets,
        max_steps: usize,
        seed: u64,
        tol: &Tolerances,
    ) -> Result<Standing, MigrateError> {
        let new = new_keys(input.plan);
        let mut params = Vec::new();
        for (k, _) in &target.keys {
            let Some(t) = target.var(k) else { continue };
            let tuned =
                tg.parts.contains(&part_of(k)) && !k.ends_with("isp_c") && !k.ends_with("_ema");
            if tuned {
                params.push((t, new.contains(k)));
            } else {
                let _ = t.set_requires_grad(false);
            }
        }
        let any_new = params.iter().any(|(_, n)| *n);
        let mut adam = Adam::new(params, LR);
        let logvar_clamp = (target.spec.params.encoder == arch::EncoderKind::Improved)
            .then_some((target.spec.logvar_min, target.spec.logvar_max));
        // The source's outputs as targets (logvar within the converted encoder's clamp),
        // each column weighted by 1 / its variance over the operations.
        let goals: Vec<(&'static str, Tensor, Tensor, f64)> = tg
            .outputs
            .iter()
            .filter_map(|name| {
                let t = src.get(name)?;
                let t = match (name.starts_with("logvar"), logvar_clamp) {
                    (true, Some((lo, hi))) => t.clamp(lo, hi),
                    _ => t.shallow_clone(),
                };
                let w = if name.starts_with("logvar") {
                    LOGVAR_WEIGHT
                } else {
                    1.0
                };
                let inv_var = inverse_column_variance(&t);
                Some((*name, t, inv_var, w))
            })
            .collect();
        // The radii: each scaled by the smaller of its spread and the square of the mean
        // tolerance (the tolerances are absolute: an error as large as the tolerance
        // weighs at least 1 even where the source's radii spread widely).
        let radius_scale = |r: &Tensor| variance(r).min(tol.mean_radius * tol.mean_radius);
        let radius_goals = src.radii.as_ref().map(|(a, b)| {
            (
                (a.shallow_clone(), radius_scale(a)),
                (b.shallow_clone(), radius_scale(b)),
            )
        });
        // The pairwise distances of z_A_hyp / z_B_hyp: the source's spread of them.
        let pair_goals: Vec<(&'static str, Tensor, f64)> = if tg.projection {
            ["z_A_hyp", "z_B_hyp"]
                .into_iter()
                .filter_map(|name| {
                    let z = src.get(name)?;
                    let var = variance(&pair_distances(z, PAIR_SPREAD_SHIFT));
                    Some((name, z.shallow_clone(), var))
                })
                .collect()
        } else {
            Vec::new()
        };
        let pred_rows = src_pred.shallow_clone();
        let deciding = deciding_digits(&src.logits, src_pred, &ds.targets, src_ok);
        let source_covered = src_ok.sum(Kind::Int64).int64_value(&[]);

        // TVCK_FIT_TRACE=1: the standing every pass on stderr (benchmarks).
        let trace = std::env::var_os("TVCK_FIT_TRACE").is_some();
        let started = Instant::now();
        let mut standing_s = 0.0;
        let mut best: Option<Standing> = None;
        let n = ds.x.size()[0];
        let batch = BATCH.min(n).max(1);
        let per_epoch = ((n + batch - 1) / batch) as usize;
        let device = target.vs.device();
        let mut perm = Tensor::zeros([n], (Kind::Int64, device));
        let mut hard = Tensor::zeros([0], (Kind::Int64, device));
        // What the batches of the last pass saw, per operation (before each step's update):
        // reconstructed exactly, and the radii. A whole-set evaluation (a standing) runs
        // only when these pass the cheap checks, and at the end of the budget.
        let mut seen_ok = src_ok.logical_not();
        let mut seen_radii = src
            .radii
            .as_ref()
            .map(|(a, b)| (a.zeros_like(), b.zeros_like()));
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        // Whether the last pass's batches reconstructed exactly the source's set.
        let mut set_seen = false;
        for step in 0..=max_steps {
            let pos = step % per_epoch;
            if pos == 0 || step == max_steps {
                let t_standing = Instant::now();
                let seen = Seen {
                    ok: &seen_ok,
                    radii: seen_radii.as_ref(),
                };
                let (differing, radius, mut worst) = tch::no_grad(|| seen.against(src, src_ok, n));
                let cheap_ok = differing == 0 && Standing::radius_within(radius, tol) && step > 0;
                // Once (almost) the source's set is reconstructed and the radii are within
                // their tolerances, what remains (the rank metrics) is held off by Adam's
                // noise at a fixed rate: lower the rate every pass so the geometry settles
                // onto the source's.
                set_seen = differing == 0;
                if step > 0 && differing <= SETTLE_DIFFERING {
                    let floor = if Standing::radius_within(radius, tol) {
                        LR_FLOOR
                    } else {
                        RADIUS_LR_FLOOR
                    };
                    adam.lr = (adam.lr * LR_DECAY).max(LR / floor);
                }
                let mut standing = Standing {
                    step,
                    differing,
                    covered: seen_ok.sum(Kind::Int64).int64_value(&[]),
                    radius,
                    geometry: Vec::new(),
                    measured: false,
                };
                // Once the batches saw the source's set, every pass is measured on all
                // operations (the geometry is what is left; its hard operations then come
                // from the whole set).
                let set_pass = tg.projection && differing == 0 && step > 0;
                if step == 0 || cheap_ok || set_pass || step == max_steps {
                    // Where the model stands, on every operation, before this step's update.
                    let out = tch::no_grad(|| Outputs::of(target, &ds.x, tg.projection));
                    let ok = reconstructed(&out.logits, ds);
                    let all = Seen {
                        ok: &ok,
                        radii: out.radii.as_ref(),
                    };
                    (standing.differing, standing.radius, worst) =
                        tch::no_grad(|| all.against(src, src_ok, n));
                    standing.covered = ok.sum(Kind::Int64).int64_value(&[]);
                    standing.measured = true;
                    if standing.differing == 0 && standing.radius_ok(tol) {
                        let m = evaluate(target, ds);
                        standing.geometry = geometry_deltas(&m, src_metrics, tol);
                        if standing.geometry.iter().all(|(_, v, t)| v <= t) {
                            return Ok(standing);
                        }
                    }
                }
                // The next pass adds the worst operations to every batch: those
                // reconstructed differently, and the largest |Δ radius| of A and B.
                hard = worst;
                standing_s += t_standing.elapsed().as_secs_f64();
                if trace {
                    eprintln!(
                        "fit step {step}: {} differing, radius {:?}, geometry {:?}, {}, lr {:.2e}, {:.1} s ({:.1} s in standings)",
                        standing.differing,
                        standing.radius,
                        standing.geometry,
                        if standing.measured { "measured" } else { "from the batches" },
                        adam.lr,
                        started.elapsed().as_secs_f64(),
                        standing_s
                    );
                }
                if standing.measured && best.as_ref().is_none_or(|b| standing.rank() < b.rank()) {
                    best = Some(standing);
                }
                if step == max_steps {
                    break;
                }
                perm = Tensor::from_slice(&shuffled(n as usize, &mut rng)).to_device(device);
            }
            let lo = pos as i64 * batch;
            let rows = perm.narrow(0, lo, batch.min(n - lo));
            let b = rows.size()[0];
            let idx = Tensor::cat(&[rows.shallow_clone(), hard.shallow_clone()], 0);
            let out = Outputs::of(target, &ds.x.index_select(0, &idx), tg.projection);
            // What this batch sees (its own rows, not the added ones), for the standing.
            tch::no_grad(|| {
                let ok = reconstructed_of(
                    &out.logits.narrow(0, 0, b),
                    &ds.targets.index_select(0, &rows),
                );
                let _ = seen_ok.index_copy_(0, &rows, &ok);
                if let (Some((sa, sb)), Some((ta, tb))) = (seen_radii.as_mut(), &out.radii) {
                    let _ = sa.index_copy_(0, &rows, &ta.narrow(0, 0, b));
                    let _ = sb.index_copy_(0, &rows, &tb.narrow(0, 0, b));
                }
            });
            let mut terms: Vec<Tensor> = Vec::new();
            for (name, goal, inv_var, w) in &goals {
                if let Some(t) = out.get(name) {
                    terms.push(nmse_cols(t, &goal.index_select(0, &idx), inv_var) * *w);
                }
            }
            // Pairwise distances (row i with row i + PAIR_SHIFT of this batch).
            for (name, z, var) in &pair_goals {
                if let Some(t) = out.get(name) {
                    let want = pair_distances(&z.index_select(0, &idx), PAIR_SHIFT);
                    terms.push(nmse(&pair_distances(t, PAIR_SHIFT), &want, *var) * PAIR_WEIGHT);
                }
            }
            // Cross-entropy on every digit, and again on the deciding digits not yet won
            // by a margin (the last few operations would otherwise weigh nothing in the
            // mean).
            let logits = out.logits.view([-1, 3]);
            let goal_pred = pred_rows.index_select(0, &idx).view([-1]);
            let ce = logits.cross_entropy_loss::<Tensor>(
                &goal_pred,
                None,
                tch::Reduction::None,
                -100,
                0.0,
            );
            let low = tch::no_grad(|| {
                margins(&logits, &goal_pred)
                    .lt(STRAGGLER_MARGIN)
                    .to_kind(Kind::Float)
                    * deciding.index_select(0, &idx).view([-1])
            });
            let n_low = low.sum(Kind::Float).clamp_min(STRAGGLER_FLOOR);
            terms.push(ce.mean(Kind::Float) + (ce * low).sum(Kind::Float) / n_low);
            if let (Some((ta, tb)), Some(((ga, va), (gb, vb)))) = (&out.radii, &radius_goals) {
                let top = (idx.size()[0] / RADIUS_TOP_FRACTION).max(1);
                let boost = if set_seen { SET_RADIUS_BOOST } else { 1.0 };
                for (t, g, var) in [(ta, ga, *va), (tb, gb, *vb)] {
                    let d = t - g.index_select(0, &idx);
                    let worst = d.abs().topk(top, 0, true, false).0;
                    terms.push(
                        (d.square().mean(Kind::Float) * RADIUS_WEIGHT
                            + worst.square().mean(Kind::Float) * RADIUS_MAX_WEIGHT)
                            * (boost / var),
                    );
                }
            }
            let loss = terms
                .into_iter()
                .fold(Tensor::zeros([], (Kind::Float, device)), |acc, t| acc + t);
            adam.zero_grad();
            loss.backward();
            adam.step(any_new && step < NEW_ONLY_STEPS);
        }
        let best = best.unwrap_or_default();
        Err(MigrateError::Refine {
            message: format!(
                "the fit did not reach its tolerances within {max_steps} steps; nothing was written. Best reached at {}",
                best.describe(source_covered)
            ),
        })
    }
}

impl Refine for ConvertRefiner {
    fn describe(&self, source: &Checkpoint, plan: &Plan) -> Result<Json, MigrateError> {
        let source_proj = arch::infer_checkpoint(source)
            .best
            .is_some_and(|b| b.params.hidden_dim > 0);
        Ok(self.plan_json(source_proj, plan))
    }

    fn refine(&self, input: RefineInput<'_, '_>) -> Result<Refined, MigrateError> {
        self.run(input)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::arch::VersionId;
    use crate::migrate::{execute, plan_checkpoint, SpecSet};

    fn open(rel: &str) -> Checkpoint {
        Checkpoint::open(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
    }

    fn plan(ckpt: &Checkpoint, to: VersionId) -> Plan {
        plan_checkpoint(ckpt, to, &SpecSet::embedded().unwrap()).unwrap()
    }

    #[test]
    fn new_keys_follow_the_plan_through_its_steps() {
        let ckpt = open("checkpoints/v5_11/best.pt");
        let new = new_keys(&plan(&ckpt, VersionId::V5_12_4));
        assert!(new.contains("encoder_A.encoder.1.weight"));
        assert!(new.contains("decoder_A.decoder.5.bias"));
        assert!(new.contains("projection.proj_A.direction_net.4.weight"));
        assert!(!new.contains("encoder_A.encoder.0.weight"));
        assert!(!new.contains("projection.proj_B.direction_net.0.weight"));
        // v5.5 → v5.11 → v5.12.4: the projection is initialised in step 1, copied in step 2.
        let ckpt = open("checkpoints/v5_5/latest.pt");
        let p = plan(&ckpt, VersionId::V5_12_4);
        assert_eq!(p.steps.len(), 2);
        let new = new_keys(&p);
        assert!(new.contains("projection.proj_B.direction_net.0.weight"));
        assert!(!new.contains("encoder_B.fc_mu.weight"));
        let tg = targets(false, &p.steps[1].to_params);
        assert!(!tg.projection);
        assert!(!tg.outputs.contains(&"z_A_hyp"));
        assert!(tg.initialised_only[0].starts_with("projection"));
    }

    #[test]
    fn deciding_digits_are_all_of_a_reconstructed_operation_and_the_surest_wrong_one() {
        // Two operations of 9 digits; the targets are all digit 0.
        let mut logits = vec![0f32; 2 * 9 * 3];
        for op in 0..2 {
            for d in 0..9 {
                logits[(op * 9 + d) * 3] = 1.0; // digit 0 predicted everywhere …
            }
        }
        // … except op 1's digits 2 (by a margin of 0.5) and 6 (by 3.0).
        logits[(9 + 2) * 3 + 1] = 1.5;
        logits[(9 + 6) * 3 + 2] = 4.0;
        let logits = Tensor::from_slice(&logits).view([2, 9, 3]);
        let pred = logits.argmax(-1, false);
        let targets = Tensor::zeros([2, 9], (Kind::Int64, Device::Cpu));
        let ok = reconstructed_of(&logits, &targets);
        let d: Vec<f32> =
            Vec::try_from(deciding_digits(&logits, &pred, &targets, &ok).view([-1])).unwrap();
        assert!(d[..9].iter().all(|&x| x == 1.0), "{d:?}");
        let op1: Vec<f32> = d[9..].to_vec();
        assert_eq!(op1, vec![0., 0., 0., 0., 0., 0., 1., 0., 0.]);
    }

    #[test]
    fn the_fit_plan_names_targets_and_tolerances() {
        let ckpt = open("checkpoints/v5_11/best.pt");
        let p = plan(&ckpt, VersionId::V5_12_4);
        let r = ConvertRefiner {
            mode: RefineMode::Fit {
                seed: 9,
                max_steps: 7,
                tolerances: Tolerances::default(),
            },
            device: Device::Cpu,
        };
        let d = r.describe(&ckpt, &p).unwrap();
        assert_eq!(d["seed"], 9);
        assert_eq!(d["max_steps"], 7);
        assert_eq!(d["matched"][5], "z_A_hyp");
        assert_eq!(
            d["tolerances"]["max_radius"],
            Tolerances::default().max_radius
        );
        assert!(d["new_tensors"]["projection"].as_u64() > Some(0));
    }

    /// Runs the fit twice for `steps` steps from the same converted state and keeps
    /// (structural, first, second) bytes.
    struct Twice {
        steps: usize,
        seen: RefCell<Vec<Vec<Vec<u8>>>>,
    }

    impl Refine for Twice {
        fn describe(&self, _: &Checkpoint, _: &Plan) -> Result<Json, MigrateError> {
            Ok(Json::Null)
        }

        fn refine(&self, input: RefineInput<'_, '_>) -> Result<Refined, MigrateError> {
            let tol = Tolerances::default();
            let r = ConvertRefiner {
                mode: RefineMode::Fit {
                    seed: 4,
                    max_steps: self.steps,
                    tolerances: tol,
                },
                device: Device::Cpu,
            };
            self.seen
                .borrow_mut()
                .push(input.state.iter().map(|(_, t)| t.bytes.to_vec()).collect());
            for _ in 0..2 {
                tch::manual_seed(4);
                let ds = Dataset::new(Device::Cpu);
                let source = source_model(input.source, Device::Cpu)?;
                let (target, _) = target_model(&input, Device::Cpu)?;
                let tg = targets(true, &target.spec.params);
                let src = tch::no_grad(|| Outputs::of(&source, &ds.x, tg.projection));
                let ok = reconstructed(&src.logits, &ds);
                let pred = src.logits.argmax(-1, false);
                let m = evaluate(&source, &ds);
                let err = r
                    .fit(
                        &target, &input, &ds, &src, &ok, &pred, &m, &tg, self.steps, 4, &tol,
                    )
                    .unwrap_err();
                assert!(err.to_string().contains("Best reached at step"), "{err}");
                self.seen.borrow_mut().push(
                    input
                        .state
                        .iter()
                        .map(|(k, t)| load::var_bytes(&target, k, t.dtype).unwrap())
                        .collect(),
                );
            }
            Ok(Refined {
                state: None,
                status: Provenance::Measured,
                metrics: Vec::new(),
                report: Json::Null,
            })
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let ckpt = open("checkpoints/v5_11_homeostasis/best.pt");
        let p = plan(&ckpt, VersionId::V5_12_4);
        let twice = Twice {
            steps: 3,
            seen: RefCell::new(Vec::new()),
        };
        execute(&ckpt, &p, Some(&twice)).unwrap();
        let seen = twice.seen.into_inner();
        assert_eq!(seen.len(), 3);
        assert_ne!(seen[0], seen[1], "the fit moved nothing");
        assert!(seen[1] == seen[2], "two fits with one seed differ");
    }
}
