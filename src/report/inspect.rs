//! `tvck inspect`: one file, whole.

use serde::Serialize;

use crate::arch::VersionGuess;
use crate::fingerprint;
use crate::format::{Checkpoint, Format};
use crate::metrics::{self, StoredMetrics};

use super::{human_bytes, new_table, shape, thousands, tree};

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
    pub tree: serde_json::Value,
    pub findings: Vec<FindingRow>,
    #[serde(skip)]
    tree_text: String,
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
        tree: tree::to_json(&ckpt.root, &ckpt.tensors),
        findings,
        tree_text: tree::render(&ckpt.root, &ckpt.tensors),
    }
}

/// Human form: header lines, the tensor table, the tree, the findings.
pub fn render(r: &InspectReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("File:        {}\n", r.path));
    out.push_str(&format!(
        "Format:      {} ({})\n",
        r.format.label(),
        human_bytes(r.size)
    ));
    match &r.version {
        Some(v) => {
            out.push_str(&format!(
                "Version:     {} (confidence {:.0}%)  {}\n",
                v.display,
                v.confidence * 100.0,
                v.layout
            ));
            if let Some(note) = &v.note {
                out.push_str(&format!("             {note}\n"));
            }
        }
        None => out.push_str("Version:     unknown (not a TernaryVAE layout)\n"),
    }
    if let Some(k) = &r.model_state_key {
        let where_ = if k.is_empty() {
            "(bare state_dict)".to_string()
        } else {
            format!("`{k}`")
        };
        out.push_str(&format!("Model state: {where_}\n"));
    }
    out.push_str(&format!(
        "Tensors:     {} ({} parameters in the model state)\n",
        r.tensors.len(),
        thousands(r.parameters)
    ));
    if let Some(e) = r.epoch {
        out.push_str(&format!("Epoch:       {e}\n"));
    }
    match r.metrics.provenance {
        Some(crate::metrics::Provenance::NotMeasured) => {
            out.push_str(&format!(
                "Metrics:     none ({}; the source's are kept under migration.source_metrics)\n",
                crate::metrics::Provenance::NotMeasured.label()
            ));
        }
        Some(p) if !r.metrics.is_empty() => {
            out.push_str(&format!(
                "Metrics:     {} ({})\n",
                r.metrics.compact(),
                p.label()
            ));
        }
        _ => {}
    }
    if let Some(fp) = &r.fingerprint {
        out.push_str(&format!("Fingerprint: {fp}\n"));
    }

    let hashed = r
        .tensors
        .iter()
        .any(|t| t.sha256.is_some() || t.error.is_some());
    let mut header = vec!["Tensor", "DType", "Shape", "Layout"];
    if hashed {
        header.push("SHA-256");
    }
    let mut table = new_table(&header);
    for t in &r.tensors {
        let mut layout = Vec::new();
        if let Some(s) = &t.strides {
            layout.push(format!("strides {}", shape(s)));
        }
        if let Some(o) = t.storage_offset {
            layout.push(format!("offset {o}"));
        }
        let mut row = vec![
            t.name.clone(),
            t.dtype.clone(),
            shape(&t.shape),
            layout.join(", "),
        ];
        if hashed {
            row.push(match (&t.sha256, &t.error) {
                (Some(h), _) => h[..16].to_string(),
                (None, Some(e)) => format!("ERROR: {e}"),
                _ => String::new(),
            });
        }
        table.add_row(row);
    }
    if !r.tensors.is_empty() {
        out.push_str(&format!("\n{table}\n"));
    }
    out.push_str("\nContents:\n");
    for line in r.tree_text.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str("\nFindings:\n");
    if r.findings.is_empty() {
        out.push_str("  none\n");
    }
    for f in &r.findings {
        let tag = match f.kind {
            "note" => "note",
            NON_FINITE => "NON-FINITE",
            _ => "UNSAFE",
        };
        out.push_str(&format!("  {tag}: {}\n", f.message));
    }
    out
}
