//! `tvck eval`: build the model a checkpoint holds and measure it on all 19,683 operations.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::arch::{self, VersionId};
use crate::config::{ModelConfig, TrainingConfig};
use crate::format::{Checkpoint, Value};

use super::data::Dataset;
use super::metrics::{evaluate, EvalMetrics};
use super::model::{Model, ModelSpec};
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

/// Evaluate the checkpoint at `path`: the layout is inferred from its tensors; the
/// projection settings (curvature, learnable curvature, max radius) come from `config`
/// when given, else from the config the checkpoint stores, else the upstream defaults.
pub fn eval_checkpoint(
    path: &Path,
    config: Option<&Path>,
    device: tch::Device,
) -> Result<EvalReport, TrainError> {
    let ckpt = Checkpoint::open(path).map_err(|e| TrainError::Load(e.to_string()))?;
    if ckpt.has_unsafe_globals() {
        return Err(TrainError::Load(format!(
            "`{}` references unsafe pickle globals: not evaluated (see `tvck inspect`)",
            path.display()
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
            best.missing.len(),
            best.unexpected.len(),
            best.mismatched.len()
        )));
    }
    let model_cfg = match config {
        Some(c) => TrainingConfig::load(c)
            .map_err(|e| TrainError::Usage(e.to_string()))?
            .model
            .clone()
            .unwrap_or_default(),
        None => stored_model_config(&ckpt.root),
    };
    let spec = ModelSpec::new(best.version, best.params, Some(&model_cfg));
    let model = Model::new(spec, device)?;
    let loaded = load::load_strict(&model, &ckpt)?;
    let ds = Dataset::new(device);
    let metrics = evaluate(&model, &ds);
    Ok(EvalReport {
        checkpoint: path.to_path_buf(),
        version: best.version,
        layout: best.summary(),
        spec,
        loaded,
        metrics,
    })
}
