//! Checkpoint → model: tensors read by tvck's own reader (libtorch cannot read a pickled
//! OrderedDict state_dict) and copied into the model's VarStore variables.

use std::collections::{HashMap, HashSet};

use tch::{Kind, Tensor};

use crate::arch::KeyShape;
use crate::check::LoadPlan;
use crate::format::{Checkpoint, DType};

use super::model::Model;
use super::TrainError;

/// A checkpoint tensor as a float32 tch tensor (on the CPU).
pub fn tensor_of(ckpt: &Checkpoint, index: usize) -> Result<Tensor, TrainError> {
    let info = &ckpt.tensors[index];
    let kind = match info.dtype {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        other => {
            return Err(TrainError::Load(format!(
                "tensor `{}` has dtype {other}, which the trainer does not load",
                info.path
            )))
        }
    };
    let bytes = ckpt
        .tensor_bytes(index)
        .map_err(|e| TrainError::Load(e.to_string()))?;
    let dims: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
    let t = Tensor::f_from_data_size(&bytes, &dims, kind)
        .map_err(|e| TrainError::Load(format!("tensor `{}`: {e}", info.path)))?;
    Ok(t.to_kind(Kind::Float))
}

/// The checkpoint's model state: key → tensor index, and its (key, shape) list.
pub fn model_state(
    ckpt: &Checkpoint,
) -> Result<(HashMap<String, usize>, Vec<KeyShape>), TrainError> {
    let ms = ckpt.model_state().ok_or_else(|| {
        TrainError::Load(format!(
            "`{}` holds no model state (no model_state_dict / model_state / model, not a bare state_dict)",
            ckpt.path.display()
        ))
    })?;
    let shapes = ms
        .entries
        .iter()
        .map(|(k, i)| (k.clone(), ckpt.tensors[*i].shape.clone()))
        .collect();
    Ok((ms.entries.into_iter().collect(), shapes))
}

/// Copy `(from, to)` pairs: checkpoint key → model key.
fn copy_pairs(
    model: &Model,
    ckpt: &Checkpoint,
    index: &HashMap<String, usize>,
    pairs: &[(String, String)],
) -> Result<(), TrainError> {
    let device = model.vs.device();
    tch::no_grad(|| {
        for (from, to) in pairs {
            let i = index
                .get(from)
                .ok_or_else(|| TrainError::Load(format!("checkpoint has no `{from}`")))?;
            let src = tensor_of(ckpt, *i)?.to_device(device);
            let mut dst = model
                .var(to)
                .ok_or_else(|| TrainError::Load(format!("model has no `{to}`")))?;
            if dst.size() != src.size() {
                return Err(TrainError::Load(format!(
                    "size mismatch for {to}: copying a param with shape {:?} from checkpoint, the shape in current model is {:?}",
                    src.size(),
                    dst.size()
                )));
            }
            dst.f_copy_(&src)
                .map_err(|e| TrainError::Load(format!("{to}: {e}")))?;
        }
        Ok(())
    })
}

/// Load the whole model state (`load_state_dict(strict=True)`): every model key must be
/// in the checkpoint with its shape, and nothing else may be there.
pub fn load_strict(model: &Model, ckpt: &Checkpoint) -> Result<usize, TrainError> {
    let (index, shapes) = model_state(ckpt)?;
    let src: HashMap<&str, &Vec<u64>> = shapes.iter().map(|(k, s)| (k.as_str(), s)).collect();
    let mut problems = Vec::new();
    let mut pairs = Vec::new();
    let model_keys: HashSet<&str> = model.keys.iter().map(|(k, _)| k.as_str()).collect();
    for (key, dims) in &model.keys {
        let want: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        match src.get(key.as_str()) {
            Some(s) if **s == want => pairs.push((key.clone(), key.clone())),
            Some(s) => problems.push(format!(
                "size mismatch for {key}: checkpoint {s:?}, model {want:?}"
            )),
            None => problems.push(format!("missing key {key}")),
        }
    }
    for (k, _) in &shapes {
        if !model_keys.contains(k.as_str()) {
            problems.push(format!("unexpected key {k}"));
        }
    }
    if !problems.is_empty() {
        return Err(TrainError::Load(format!(
            "the checkpoint does not fit the model: {}",
            problems.join("; ")
        )));
    }
    copy_pairs(model, ckpt, &index, &pairs)?;
    Ok(pairs.len())
}

/// What [`load_frozen`] did.
#[derive(Debug, Clone)]
pub struct FrozenLoad {
    pub plan: LoadPlan,
    /// (checkpoint key, model key) pairs copied.
    pub copied: Vec<(String, String)>,
}

/// Load `frozen_checkpoint` as the trainer does (domain.md §7), following `plan` (the
/// load plan `tvck check` made for this config and checkpoint, [`crate::check::load_plan`]):
/// from a v5.5 checkpoint the parts named by encoder_to_load / decoder_to_load (Frozen →
/// improved through the Linear index map 0→0, 2→4, 4→8; LayerNorms left at 1 / 0), from a
/// v5.11-family checkpoint the whole model state (`strict=False`, but a size mismatch is an
/// error as in PyTorch).
pub fn load_frozen(
    model: &Model,
    ckpt: &Checkpoint,
    plan: &LoadPlan,
) -> Result<FrozenLoad, TrainError> {
    if !plan.size_mismatch.is_empty() {
        let list: Vec<String> = plan
            .size_mismatch
            .iter()
            .map(|(k, c, m)| format!("size mismatch for {k}: checkpoint {c:?}, model {m:?}"))
            .collect();
        return Err(TrainError::Load(list.join("; ")));
    }
    let (index, _) = model_state(ckpt)?;
    let copied: Vec<(String, String)> = plan
        .mapped
        .iter()
        .cloned()
        .chain(plan.loaded.iter().map(|k| (k.clone(), k.clone())))
        .collect();
    copy_pairs(model, ckpt, &index, &copied)?;
    Ok(FrozenLoad {
        plan: plan.clone(),
        copied,
    })
}
