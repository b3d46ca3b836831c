//! `tvck eval`: build the model a checkpoint holds and measure it on all 19,683 operations.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::arch::{self, VersionId};
use crate::config::{ModelConfig, TrainingConfig};
use crate::format::{Checkpoint, Value};
use tch::Tensor;

use super::data::{Dataset, N_OPS};
use super::losses::{self, LossInputs, LossSettings, LossValues, Weights};
use super::metrics::{evaluate, EvalMetrics};
use super::model::{Mode, Model, ModelSpec};
use super::{load, TrainError};

/// The result of `tvck eval`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub checkpoint: PathBuf,
    pub version: VersionId,
    pub layout: String,
    /// The model built (layout parameters, curvature, max radius, …).
    pub spec: ModelSpec,
    /// Tensors loaded into the model.
    pub loaded: usize,
    pub metrics: EvalMetrics,
}

/// The `model:` settings a checkpoint stores under `config.model` (curvature, …).
pub(crate) fn stored_model_config(root: &Value) -> ModelConfig {
    let m = root.get_path("config.model");
    let f = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_f64);
    let b = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_bool);
    ModelConfig {
        max_radius: f("max_radius"),
        curvature: f("curvature"),
        learnable_curvature: b("learnable_curvature"),
        projection_dropout: f("projection_dropout"),
        logvar_min: f("logvar_min"),
        logvar_max: f("logvar_max"),
        ..ModelConfig::default()
    }
}

/// A checkpoint's model, built from its inferred layout and loaded strictly.
struct Loaded {
    version: VersionId,
    layout: String,
    spec: ModelSpec,
    loaded: usize,
    model: Model,
}

/// Build and load the model of the checkpoint at `path`: the layout is inferred from its
/// tensors; the projection settings come from `config` when given, else from the config
/// the checkpoint stores, else the upstream defaults.
fn load_model(
    path: &Path,
    config: Option<&TrainingConfig>,
    device: tch::Device,
) -> Result<Loaded, TrainError> {
    let ckpt = Checkpoint::open(path)?;
    if ckpt.has_unsafe_globals() {
        return Err(TrainError::Load(format!(
            "`{}` references unsafe pickle globals: not evaluated (see `tvck inspect`)",
            path.display()
        )));
    }
    let non_finite = crate::format::finite::non_finite(&ckpt);
    if !non_finite.is_empty() {
        return Err(TrainError::Load(format!(
            "`{}` holds NaN or infinite weights: {}",
            path.display(),
            non_finite
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let inf = arch::infer_checkpoint(&ckpt);
    let best = inf.best.ok_or_else(|| {
        TrainError::Load(format!(
            "`{}`: no TernaryVAE layout fits its tensors",
            path.display()
        ))
    })?;
    if !best.is_exact() {
        return Err(TrainError::Load(format!(
            "`{}`: closest layout {} {} does not fit exactly ({} missing, {} unexpected, {} mismatched keys)",
            path.display(),
            best.display,
            best.summary(),
            best.keys.missing.len(),
            best.keys.unexpected.len(),
            best.keys.mismatched.len()
        )));
    }
    let model_cfg = match config {
        Some(c) => c.model.clone().unwrap_or_default(),
        None => stored_model_config(&ckpt.root),
    };
    let spec = ModelSpec::new(best.version, best.params, Some(&model_cfg));
    let model = Model::new(spec, device)?;
    let loaded = load::load_strict(&model, &ckpt)?;
    Ok(Loaded {
        version: best.version,
        layout: best.summary(),
        spec,
        loaded,
        model,
    })
}

fn load_config(config: &Path) -> Result<TrainingConfig, TrainError> {
    TrainingConfig::load(config).map_err(|e| TrainError::Usage(e.to_string()))
}

/// Evaluate the checkpoint at `path` (see [`load_model`] for where the settings come from).
pub fn eval_checkpoint(
    path: &Path,
    config: Option<&Path>,
    device: tch::Device,
) -> Result<EvalReport, TrainError> {
    let cfg = config.map(load_config).transpose()?;
    let m = load_model(path, cfg.as_ref(), device)?;
    let ds = Dataset::new(device);
    let metrics = evaluate(&m.model, &ds);
    Ok(EvalReport {
        checkpoint: path.to_path_buf(),
        version: m.version,
        layout: m.layout,
        spec: m.spec,
        loaded: m.loaded,
        metrics,
    })
}

/// The rich-hierarchy parts of `tvck eval --losses`.
#[derive(Debug, Clone, Serialize)]
pub struct RichParts {
    pub hierarchy: f64,
    pub coverage: f64,
    pub richness: f64,
    pub separation: f64,
    pub total: f64,
}

/// Every loss term of `tvck eval --losses`: the rich-hierarchy parts, each
/// per-embedding term as loss(z_A) + loss(z_B) before its outer weight, and the total as
/// the trainer weights the terms at the epoch. A term the config turns off is 0.
#[derive(Debug, Clone, Serialize)]
pub struct LossTerms {
    pub rich_hierarchy: RichParts,
    pub radial: f64,
    pub rank: f64,
    pub zero_structure: f64,
    /// Also computed in phase 1 (where its weight is 0 and the trainer skips it).
    pub geodesic: f64,
    pub total: f64,
}

/// The result of `tvck eval --losses`.
#[derive(Debug, Clone, Serialize)]
pub struct LossReport {
    pub checkpoint: PathBuf,
    pub config: PathBuf,
    pub version: VersionId,
    pub layout: String,
    pub epoch: u64,
    pub seed: u64,
    /// Operations in the batch (all 19,683).
    pub batch: usize,
    /// The outer weights at `epoch` (phase 1 or 2).
    pub weights: Weights,
    /// The settings the terms were computed with (upstream defaults filled in).
    pub settings: LossSettings,
    pub losses: LossTerms,
}

/// Every loss term of the checkpoint at `path` for the full batch of 19,683 operations in
/// deterministic mode (eval mode, z = mu), with the loss settings of `config` and the
/// outer weights at 0-based `epoch`; the random pairs are drawn after seeding the torch
/// generator with `seed`. The richness baseline is ‖z_B_hyp‖ of the same forward.
pub fn eval_losses(
    path: &Path,
    config: &Path,
    epoch: u64,
    seed: u64,
    device: tch::Device,
) -> Result<LossReport, TrainError> {
    let cfg = load_config(config)?;
    let m = load_model(path, Some(&cfg), device)?;
    if !m.spec.has_projection() {
        return Err(TrainError::Model(format!(
            "`{}` is a v5.5 model: it has no hyperbolic projection, so none of the losses applies",
            path.display()
        )));
    }
    let settings = LossSettings::from_config(cfg.loss.as_ref());
    let ds = Dataset::new(device);
    let terms = tch::no_grad(|| -> Result<(LossValues, f64), TrainError> {
        let out = m.model.forward(&ds.x, Mode::EVAL);
        let (Some(za), Some(zb)) = (&out.z_a_hyp, &out.z_b_hyp) else {
            return Err(TrainError::Model("the model yields no embeddings".into()));
        };
        let orig = zb.norm_scalaropt_dim(2.0, [-1i64], false);
        let targets = settings.targets(device);
        let inp = LossInputs {
            settings: &settings,
            targets: &targets,
            orig: &orig,
            valuations: &ds.v,
            epoch,
        };
        let idx = Tensor::arange(N_OPS as i64, (tch::Kind::Int64, device));
        let batch = ds.batch(&idx);
        let logits = m.model.coverage_logits(za, false);
        tch::manual_seed(seed as i64);
        let (_, vals) = losses::total_loss(&inp, &batch, za, zb, &logits);
        let geodesic = match settings.weights(epoch).phase {
            2 => vals.geodesic,
            _ => losses::geodesic_value(&inp, &batch, za, zb).unwrap_or(0.0),
        };
        Ok((vals, geodesic))
    })?;
    let (v, geodesic) = terms;
    Ok(LossReport {
        checkpoint: path.to_path_buf(),
        config: config.to_path_buf(),
        version: m.version,
        layout: m.layout,
        epoch,
        seed,
        batch: N_OPS,
        weights: settings.weights(epoch),
        losses: LossTerms {
            rich_hierarchy: RichParts {
                hierarchy: v.rich_hierarchy,
                coverage: v.rich_coverage,
                richness: v.rich_richness,
                separation: v.rich_separation,
                total: v.rich,
            },
            radial: v.radial,
            rank: v.rank,
            zero_structure: v.zero_structure,
            geodesic,
            total: v.total,
        },
        settings,
    })
}
