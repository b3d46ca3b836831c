//! `tvck inspect`: one file, whole — every tensor (with its SHA-256), the non-tensor
//! tree, the findings. Rendered by [`crate::report::inspect`].

use serde::Serialize;

use crate::arch::VersionGuess;
use crate::fingerprint;
use crate::format::value::value_json;
use crate::format::{Checkpoint, Format, TensorInfo, Value};
use crate::metrics::{self, StoredMetrics};

/// The non-tensor tree of the checkpoint (JSON: [`value_json`]; text:
/// `report::tree::render`).
#[derive(Debug, Clone)]
pub struct ValueTree {
    pub root: Value,
    /// The checkpoint's tensors, which the tree's `Tensor` values index.
    pub tensors: Vec<TensorInfo>,
}

impl Serialize for ValueTree {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        value_json(&self.root, &self.tensors).serialize(s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    /// Path in the checkpoint tree.
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Present only when the tensor is not row-major contiguous.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strides: Option<Vec<u64>>,
    /// Present only when non-zero (elements).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_offset: Option<u64>,
    pub storage: String,
    pub nbytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// [`FindingRow::kind`] of a model-state tensor holding NaN or infinite values.
pub const NON_FINITE: &str = "non_finite";

#[derive(Debug, Clone, Serialize)]
pub struct FindingRow {
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: String,
    pub format: Format,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionGuess>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_state_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    pub metrics: StoredMetrics,
    pub parameters: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub tensors: Vec<TensorRow>,
    pub tree: ValueTree,
    pub findings: Vec<FindingRow>,
}

impl InspectReport {
    pub fn has_findings(&self) -> bool {
        self.findings.iter().any(|f| f.kind != "note")
            || self.tensors.iter().any(|t| t.error.is_some())
    }
}

/// Build the report for one checkpoint (hashing every tensor when `hash`).
pub fn build(ckpt: &Checkpoint, display_path: &str, hash: bool) -> InspectReport {
    let mut tensors = Vec::with_capacity(ckpt.tensors.len());
    let mut hashes = Vec::with_capacity(ckpt.tensors.len());
    let all: Vec<usize> = if hash {
        (0..ckpt.tensors.len()).collect()
    } else {
        Vec::new()
    };
    let mut results = fingerprint::tensor_hashes(ckpt, &all).into_iter();
    for t in &ckpt.tensors {
        let (sha256, error) = match results.next() {
            Some(Ok(h)) => {
                hashes.push(Some(h));
                (Some(fingerprint::hex(&h)), None)
            }
            Some(Err(e)) => {
                hashes.push(None);
                (None, Some(e.to_string()))
            }
            None => (None, None),
        };
        tensors.push(TensorRow {
            name: t.path.clone(),
            dtype: t.dtype.to_string(),
            shape: t.shape.clone(),
            strides: (!t.is_contiguous()).then(|| t.strides.clone()),
            storage_offset: (t.storage_offset != 0).then_some(t.storage_offset),
            storage: ckpt
                .storages
                .get(t.storage)
                .map(|s| s.key.clone())
                .unwrap_or_default(),
            nbytes: t.nbytes(),
            sha256,
            error,
        });
    }
    let fingerprint = if hash {
        // Each tensor is hashed once: the fingerprint reuses the hashes above.
        fingerprint::fingerprint_reusing(ckpt, &hashes)
            .ok()
            .map(|f| fingerprint::hex(&f.weights))
    } else {
        None
    };
    let mut findings: Vec<FindingRow> = ckpt
        .findings
        .iter()
        .map(|f| FindingRow {
            kind: f.kind(),
            message: f.message(),
        })
        .collect();
    findings.extend(
        crate::format::finite::non_finite(ckpt)
            .into_iter()
            .map(|n| FindingRow {
                kind: NON_FINITE,
                message: format!("{n}: the model computes NaN wherever they reach"),
            }),
    );
    let model_state = ckpt.model_state_ref();
    InspectReport {
        path: display_path.to_string(),
        format: ckpt.format,
        size: ckpt.file_size,
        version: crate::arch::guess_checkpoint_with(ckpt, model_state.as_ref()),
        model_state_key: model_state
            .as_ref()
            .map(|m| m.root_key.unwrap_or_default().to_string()),
        epoch: metrics::epoch(&ckpt.root),
        metrics: StoredMetrics::from_root(&ckpt.root),
        parameters: ckpt.parameter_count_of(model_state.as_ref()),
        fingerprint,
        tensors,
        tree: ValueTree {
            root: ckpt.root.clone(),
            tensors: ckpt.tensors.clone(),
        },
        findings,
    }
}
