//! Model → `.pt`: the upstream checkpoint dict (`model_state_dict`, `optimizer_state_dict`,
//! `epoch`, `metrics`, `config`, `homeostasis_state`) written by tvck's own torch-zip
//! writer, loadable by `torch.load(weights_only=True)` and by `tvck scan`.

use std::path::Path;

use tch::{Kind, Tensor};

use crate::format::write::{pt, write_atomic, TensorData};
use crate::format::{DType, Value};

use super::model::Model;
use super::TrainError;

/// A float32 tensor's logical bytes (row-major, little-endian) and shape.
pub fn tensor_data(t: &Tensor) -> TensorData<'static> {
    let t = t
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let n = t.numel();
    let mut v = vec![0f32; n];
    t.copy_data(&mut v, n);
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    TensorData::new(
        DType::F32,
        t.size().iter().map(|&d| d as u64).collect(),
        bytes,
    )
}

/// Builds a value tree and its tensor list.
#[derive(Default)]
pub struct TreeBuilder {
    pub tensors: Vec<TensorData<'static>>,
}

impl TreeBuilder {
    /// Add a tensor; returns its `Value::Tensor`.
    pub fn tensor(&mut self, t: &Tensor) -> Value {
        self.tensors.push(tensor_data(t));
        Value::Tensor(self.tensors.len() - 1)
    }

    /// The model's state_dict (in module order) as a dict of tensors.
    pub fn state_dict(&mut self, model: &Model) -> Value {
        let items = model
            .keys
            .iter()
            .map(|(k, _)| {
                let t = model.var(k).expect("model key");
                (Value::Str(k.clone()), self.tensor(&t))
            })
            .collect();
        Value::Dict(items)
    }
}

/// A string-keyed dict.
pub fn dict(items: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        items
            .into_iter()
            .map(|(k, v)| (Value::Str(k.to_string()), v))
            .collect(),
    )
}

/// Write `root` with `tensors` to `path` atomically (replacing it).
pub fn write_checkpoint(
    path: &Path,
    root: &Value,
    tensors: &[TensorData<'_>],
) -> Result<(), TrainError> {
    let opts = pt::PtOptions {
        archive_name: path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or("archive")
            .to_string(),
        ..pt::PtOptions::default()
    };
    write_atomic(path, true, |w| pt::write_pt(root, tensors, &opts, w))
        .map(|_| ())
        .map_err(|source| TrainError::Write {
            path: path.to_path_buf(),
            source,
        })
}
