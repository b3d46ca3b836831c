//! Checkpoint → model: tensors read by tvck's own reader (libtorch cannot read a pickled
//! OrderedDict state_dict) and copied into the model's VarStore variables.

use std::collections::HashMap;

use tch::{Kind, Tensor};

use crate::arch;
use crate::arch::LoadPlan;
use crate::format::write::TensorData;
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
    let bytes = ckpt.tensor_bytes(index)?;
    let dims: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
    let t = Tensor::f_from_data_size(&bytes, &dims, kind)
        .map_err(|e| TrainError::Load(format!("tensor `{}`: {e}", info.path)))?;
    Ok(t.to_kind(Kind::Float))
}

/// The checkpoint's model state: key → tensor index.
fn state_index(ckpt: &Checkpoint) -> Result<HashMap<&str, usize>, TrainError> {
    let ms = ckpt.model_state_ref().ok_or_else(|| {
        TrainError::Load(format!(
            "`{}` holds no model state (no model_state_dict / model_state / model, not a bare state_dict)",
            ckpt.path.display()
        ))
    })?;
    Ok(ms.entries.into_iter().collect())
}

/// Copy `(from, to)` pairs: checkpoint key → model key.
fn copy_pairs(
    model: &Model,
    ckpt: &Checkpoint,
    index: &HashMap<&str, usize>,
    pairs: &[(String, String)],
) -> Result<(), TrainError> {
    let device = model.vs.device();
    tch::no_grad(|| {
        for (from, to) in pairs {
            let i = index
                .get(from.as_str())
                .ok_or_else(|| TrainError::Load(format!("checkpoint has no `{from}`")))?;
            let src = tensor_of(ckpt, *i)?.to_device(device);
            let mut dst = model
                .var(to)
                .ok_or_else(|| TrainError::Load(format!("model has no `{to}`")))?;
            if dst.size() != src.size() {
                let dims = |t: &Tensor| t.size().iter().map(|&d| d as u64).collect();
                return Err(TrainError::Load(
                    arch::SizeMismatch::new(to.clone(), dims(&dst), dims(&src)).pytorch_text(),
                ));
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
    let index = state_index(ckpt)?;
    require_fit(model, &arch::state_shapes(ckpt), "checkpoint")?;
    let pairs: Vec<(String, String)> = model
        .keys
        .iter()
        .map(|(k, _)| (k.clone(), k.clone()))
        .collect();
    copy_pairs(model, ckpt, &index, &pairs)?;
    Ok(pairs.len())
}

/// Every model key present with its shape and nothing else (PyTorch's strict load), or an
/// error listing each difference; `what` names the source (`checkpoint`, `model state`).
fn require_fit(model: &Model, shapes: &[(String, Vec<u64>)], what: &str) -> Result<(), TrainError> {
    let expected: Vec<(&str, Vec<u64>)> = model
        .keys
        .iter()
        .map(|(k, dims)| (k.as_str(), dims.iter().map(|&d| d as u64).collect()))
        .collect();
    let diff = arch::compare_layout(&expected, shapes);
    if diff.is_exact() {
        return Ok(());
    }
    Err(TrainError::Load(format!(
        "the {what} does not fit the model: {}",
        diff.pytorch_error_lines().join(" ")
    )))
}

/// The tch kind of a tensor dtype the trainer loads.
fn kind_of(dtype: DType) -> Option<Kind> {
    Some(match dtype {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        _ => return None,
    })
}

/// [`load_strict`] from an in-memory model state ((key, tensor) pairs, e.g. a converted
/// state before it is written): every model key must be there with its shape, nothing
/// else may be.
pub fn load_state(model: &Model, state: &[(String, TensorData<'_>)]) -> Result<usize, TrainError> {
    let shapes: Vec<(String, Vec<u64>)> = state
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone()))
        .collect();
    require_fit(model, &shapes, "model state")?;
    let device = model.vs.device();
    tch::no_grad(|| {
        for (key, t) in state {
            let kind = kind_of(t.dtype).ok_or_else(|| {
                TrainError::Load(format!(
                    "tensor `{key}` has dtype {}, which the trainer does not load",
                    t.dtype
                ))
            })?;
            let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            let src = Tensor::f_from_data_size(&t.bytes, &dims, kind)
                .map_err(|e| TrainError::Load(format!("tensor `{key}` {:?}: {e}", t.shape)))?
                .to_kind(Kind::Float)
                .to_device(device);
            let mut dst = model
                .var(key)
                .ok_or_else(|| TrainError::Load(format!("model has no `{key}`")))?;
            dst.f_copy_(&src)
                .map_err(|e| TrainError::Load(format!("{key}: {e}")))?;
        }
        Ok(state.len())
    })
}

/// A model variable's values as the bytes of `dtype` (row-major, little-endian), for a
/// state written back in its own dtypes.
pub fn var_bytes(model: &Model, key: &str, dtype: DType) -> Result<Vec<u8>, TrainError> {
    let kind = kind_of(dtype).ok_or_else(|| {
        TrainError::Save(format!(
            "`{key}`: dtype {dtype} cannot be written by the trainer"
        ))
    })?;
    let t = model
        .var(key)
        .ok_or_else(|| TrainError::Save(format!("model has no `{key}`")))?
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(kind)
        .contiguous();
    let n = t.numel();
    let mut out = vec![0u8; n * kind.elt_size_in_bytes()];
    t.f_copy_data_u8(&mut out, n)
        .map_err(|e| TrainError::Save(format!("`{key}`: {e}")))?;
    Ok(out)
}

/// What [`load_frozen`] did.
#[derive(Debug, Clone)]
pub struct FrozenLoad {
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
    if !plan.keys.mismatched.is_empty() {
        let only_sizes = arch::KeyComparison {
            mismatched: plan.keys.mismatched.clone(),
            ..Default::default()
        };
        return Err(TrainError::Load(only_sizes.pytorch_error_lines().join(" ")));
    }
    let index = state_index(ckpt)?;
    let copied: Vec<(String, String)> = plan
        .mapped
        .iter()
        .cloned()
        .chain(plan.loaded.iter().map(|k| (k.clone(), k.clone())))
        .collect();
    copy_pairs(model, ckpt, &index, &copied)?;
    Ok(FrozenLoad { copied })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::VersionId;
    use crate::format::Value;
    use crate::train::model::ModelSpec;
    use crate::train::save::{self, TreeBuilder};
    use tch::Device;

    fn model(seed: i64) -> Model {
        tch::manual_seed(seed);
        let v = VersionId::V5_11;
        Model::new(
            ModelSpec::new(v, arch::default_params(v), None),
            Device::Cpu,
        )
        .unwrap()
    }

    /// A checkpoint of `m`'s state, its (key, tensor) list edited first.
    fn checkpoint(m: &Model, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> Checkpoint {
        let mut items: Vec<(String, Tensor)> = m
            .keys
            .iter()
            .map(|(k, _)| (k.clone(), m.var(k).unwrap()))
            .collect();
        edit(&mut items);
        let mut tb = TreeBuilder::default();
        let sd = Value::Dict(
            items
                .iter()
                .map(|(k, t)| (Value::Str(k.clone()), tb.tensor(t)))
                .collect(),
        );
        let root = save::dict(vec![("model_state_dict", sd)]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pt");
        save::write_checkpoint(&path, &root, &tb.tensors).unwrap();
        Checkpoint::open(&path).unwrap()
    }

    #[test]
    fn load_strict_copies_an_exact_state() {
        let src = model(1);
        let ckpt = checkpoint(&src, |_| {});
        let dst = model(2);
        let k = &src.keys[0].0;
        assert_ne!(src.var(k).unwrap(), dst.var(k).unwrap());
        assert_eq!(load_strict(&dst, &ckpt).unwrap(), src.keys.len());
        for (k, _) in &src.keys {
            assert_eq!(src.var(k).unwrap(), dst.var(k).unwrap(), "{k}");
        }
    }

    fn tvck_shape(s: &[u64]) -> String {
        crate::format::shape_text(s)
    }

    #[test]
    fn load_strict_names_every_difference() {
        let src = model(1);
        let (k0, k1) = (src.keys[0].0.clone(), src.keys[1].0.clone());
        let want1: Vec<u64> = src.keys[1].1.iter().map(|&d| d as u64).collect();
        let ckpt = checkpoint(&src, |items| {
            let _ = items.remove(0);
            items[0].1 = Tensor::zeros([3], (Kind::Float, Device::Cpu));
            items.push((
                "extra.weight".into(),
                Tensor::zeros([2], (Kind::Float, Device::Cpu)),
            ));
        });
        let err = load_strict(&model(2), &ckpt).unwrap_err().to_string();
        assert!(
            err.contains("the checkpoint does not fit the model"),
            "{err}"
        );
        let want1 = tvck_shape(&want1);
        assert!(
            err.contains(&format!(
                "size mismatch for {k1}: copying a param with shape [3] from checkpoint, the shape in current model is {want1}."
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("Missing key(s) in state_dict: \"{k0}\".")),
            "{err}"
        );
        assert!(
            err.contains("Unexpected key(s) in state_dict: \"extra.weight\"."),
            "{err}"
        );
    }
}
