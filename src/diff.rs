//! `tvck diff`: two checkpoints, or a checkpoint and a layout, key by key.
//!
//! Lists keys only in A, only in B, shape and dtype mismatches, and for tensors present
//! in both with the same shape and dtype whether the values are identical (SHA-256 of
//! the logical bytes) or changed (with max |a - b|).

use serde::Serialize;

use crate::arch::{self, KeyShape};
use crate::format::dtype::{bf16_to_f64, f16_to_f64};
use crate::format::{Checkpoint, DType, FormatError};

/// One side of a diff.
pub enum Side<'a> {
    /// A checkpoint's model state (tensor values available).
    Checkpoint(&'a Checkpoint),
    /// A layout: keys and shapes only (from the catalog or a config).
    Layout { label: String, keys: Vec<KeyShape> },
}

impl Side<'_> {
    pub fn label(&self) -> String {
        match self {
            Side::Checkpoint(c) => c.path.display().to_string(),
            Side::Layout { label, .. } => label.clone(),
        }
    }

    fn entries(&self) -> Vec<Entry> {
        match self {
            Side::Checkpoint(c) => c
                .model_state()
                .map(|ms| {
                    ms.entries
                        .into_iter()
                        .map(|(key, i)| Entry {
                            key,
                            shape: c.tensors[i].shape.clone(),
                            dtype: Some(c.tensors[i].dtype),
                            index: Some(i),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Side::Layout { keys, .. } => keys
                .iter()
                .map(|(key, shape)| Entry {
                    key: key.clone(),
                    shape: shape.clone(),
                    dtype: None,
                    index: None,
                })
                .collect(),
        }
    }

    fn checkpoint(&self) -> Option<&Checkpoint> {
        match self {
            Side::Checkpoint(c) => Some(c),
            Side::Layout { .. } => None,
        }
    }
}

struct Entry {
    key: String,
    shape: Vec<u64>,
    dtype: Option<DType>,
    index: Option<usize>,
}

/// What differs for one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum KeyStatus {
    OnlyInA {
        shape: Vec<u64>,
    },
    OnlyInB {
        shape: Vec<u64>,
    },
    ShapeMismatch {
        a: Vec<u64>,
        b: Vec<u64>,
    },
    DtypeMismatch {
        a: String,
        b: String,
        shape: Vec<u64>,
    },
    Identical {
        shape: Vec<u64>,
    },
    Changed {
        shape: Vec<u64>,
        max_abs_diff: Option<f64>,
    },
    /// Same key and shape; one side is a layout, so values are not compared.
    ShapeMatch {
        shape: Vec<u64>,
    },
    /// The bytes could not be read on one side.
    Unreadable {
        shape: Vec<u64>,
        error: String,
    },
}

impl KeyStatus {
    pub fn is_difference(&self) -> bool {
        !matches!(
            self,
            KeyStatus::Identical { .. } | KeyStatus::ShapeMatch { .. }
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyDiff {
    pub key: String,
    #[serde(flatten)]
    pub status: KeyStatus,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffCounts {
    pub identical: usize,
    pub changed: usize,
    pub shape_match: usize,
    pub only_in_a: usize,
    pub only_in_b: usize,
    pub shape_mismatch: usize,
    pub dtype_mismatch: usize,
    pub unreadable: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
    pub keys: Vec<KeyDiff>,
    pub counts: DiffCounts,
    /// Unsafe findings of side A (globals, ambiguities, TorchScript): weights that compare
    /// equal say nothing about what loading the file runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsafe_a: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsafe_b: Vec<String>,
}

impl DiffReport {
    pub fn has_differences(&self) -> bool {
        self.keys.iter().any(|k| k.status.is_difference())
    }

    /// Whether either side is unsafe to `torch.load(weights_only=False)`.
    pub fn is_unsafe(&self) -> bool {
        !self.unsafe_a.is_empty() || !self.unsafe_b.is_empty()
    }
}

/// Whether `key` is selected by `--only PREFIX` (a whole dotted component prefix:
/// `encoder_A` selects `encoder_A.fc_mu.weight`, not `encoder_AB.x`).
pub fn matches_prefix(key: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('.');
    key == prefix || (key.starts_with(prefix) && key.as_bytes().get(prefix.len()) == Some(&b'.'))
}

/// Compare two sides.
pub fn diff(a: &Side, b: &Side, only: Option<&str>) -> DiffReport {
    let keep = |k: &str| only.is_none_or(|p| matches_prefix(k, p));
    let ea: Vec<Entry> = a.entries().into_iter().filter(|e| keep(&e.key)).collect();
    let eb: Vec<Entry> = b.entries().into_iter().filter(|e| keep(&e.key)).collect();
    // Which keys are on one side only and which have other shapes: the one key comparison
    // (B as the expected side: `missing` = only in B, `unexpected` = only in A).
    fn shapes(es: &[Entry]) -> Vec<(&str, &[u64])> {
        es.iter()
            .map(|e| (e.key.as_str(), e.shape.as_slice()))
            .collect()
    }
    let cmp = crate::arch::compare_layout(&shapes(&eb), &shapes(&ea));
    let only_a: std::collections::HashSet<&str> =
        cmp.unexpected.iter().map(|(k, _)| k.as_str()).collect();
    let other_shape: std::collections::HashMap<&str, &crate::arch::SizeMismatch> =
        cmp.mismatched.iter().map(|m| (m.key.as_str(), m)).collect();
    let b_index: std::collections::HashMap<&str, &Entry> =
        eb.iter().map(|e| (e.key.as_str(), e)).collect();

    let mut keys = Vec::new();
    for x in &ea {
        let k = x.key.as_str();
        let status = match (other_shape.get(k), b_index.get(k)) {
            _ if only_a.contains(k) => KeyStatus::OnlyInA {
                shape: x.shape.clone(),
            },
            (Some(m), _) => KeyStatus::ShapeMismatch {
                a: m.found.clone(),
                b: m.expected.clone(),
            },
            // A repeated key of A (the comparison looks at its first occurrence).
            (None, None) => KeyStatus::OnlyInA {
                shape: x.shape.clone(),
            },
            (None, Some(y)) => match (x.dtype, y.dtype) {
                (Some(da), Some(db)) if da != db => KeyStatus::DtypeMismatch {
                    a: da.to_string(),
                    b: db.to_string(),
                    shape: x.shape.clone(),
                },
                _ => compare_values(a, b, x, y),
            },
        };
        keys.push(KeyDiff {
            key: x.key.clone(),
            status,
        });
    }
    for (key, shape) in &cmp.missing {
        keys.push(KeyDiff {
            key: key.clone(),
            status: KeyStatus::OnlyInB {
                shape: shape.clone(),
            },
        });
    }
    let mut counts = DiffCounts::default();
    for k in &keys {
        match k.status {
            KeyStatus::OnlyInA { .. } => counts.only_in_a += 1,
            KeyStatus::OnlyInB { .. } => counts.only_in_b += 1,
            KeyStatus::ShapeMismatch { .. } => counts.shape_mismatch += 1,
            KeyStatus::DtypeMismatch { .. } => counts.dtype_mismatch += 1,
            KeyStatus::Identical { .. } => counts.identical += 1,
            KeyStatus::Changed { .. } => counts.changed += 1,
            KeyStatus::ShapeMatch { .. } => counts.shape_match += 1,
            KeyStatus::Unreadable { .. } => counts.unreadable += 1,
        }
    }
    let unsafe_of = |s: &Side| {
        s.checkpoint()
            .map(Checkpoint::unsafe_global_messages)
            .unwrap_or_default()
    };
    DiffReport {
        a: a.label(),
        b: b.label(),
        only: only.map(str::to_string),
        keys,
        counts,
        unsafe_a: unsafe_of(a),
        unsafe_b: unsafe_of(b),
    }
}

fn compare_values(a: &Side, b: &Side, x: &Entry, y: &Entry) -> KeyStatus {
    let shape = x.shape.clone();
    let (Some(ca), Some(cb), Some(ia), Some(ib)) =
        (a.checkpoint(), b.checkpoint(), x.index, y.index)
    else {
        return KeyStatus::ShapeMatch { shape };
    };
    let read = |c: &Checkpoint, i| c.tensor_bytes(i).map(|b| b.into_owned());
    let (ba, bb) = match (read(ca, ia), read(cb, ib)) {
        (Ok(ba), Ok(bb)) => (ba, bb),
        (Err(e), _) | (_, Err(e)) => {
            return KeyStatus::Unreadable {
                shape,
                error: e.to_string(),
            }
        }
    };
    // Equal logical bytes is what equal SHA-256 fingerprints would tell, without hashing.
    if ba == bb {
        return KeyStatus::Identical { shape };
    }
    let dtype = ca.tensors[ia].dtype;
    let max_abs_diff = match (to_f64(&ba, dtype), to_f64(&bb, dtype)) {
        (Ok(va), Ok(vb)) => Some(va.iter().zip(&vb).map(|(p, q)| (p - q).abs()).fold(
            0.0f64,
            |m, d| {
                if m.is_nan() || d.is_nan() {
                    f64::NAN
                } else {
                    m.max(d)
                }
            },
        )),
        _ => None,
    };
    KeyStatus::Changed {
        shape,
        max_abs_diff,
    }
}

/// Decode little-endian logical bytes of a real dtype into f64s.
pub fn to_f64(bytes: &[u8], dtype: DType) -> Result<Vec<f64>, FormatError> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            bytes
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")) as f64)
                .collect()
        };
    }
    Ok(match dtype {
        DType::F64 => conv!(f64, 8),
        DType::F32 => conv!(f32, 4),
        DType::I64 => conv!(i64, 8),
        DType::I32 => conv!(i32, 4),
        DType::I16 => conv!(i16, 2),
        DType::I8 => bytes.iter().map(|b| *b as i8 as f64).collect(),
        DType::U8 => bytes.iter().map(|b| *b as f64).collect(),
        DType::U16 => conv!(u16, 2),
        DType::U32 => conv!(u32, 4),
        DType::U64 => conv!(u64, 8),
        DType::Bool => bytes.iter().map(|b| f64::from(u8::from(*b != 0))).collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16_to_f64(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f64(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => {
            return Err(FormatError::Tensor {
                tensor: String::new(),
                problem: Box::new(crate::format::TensorIssue::NotNumeric(other.to_string())),
            })
        }
    })
}

/// The layout of a catalog version for `diff A --arch V`: the version's defaults, with
/// latent and hidden sizes taken from `like` when it is a TernaryVAE checkpoint (sizes are
/// not what a version is about).
pub fn arch_side(version: arch::VersionId, like: Option<&Checkpoint>) -> Side<'static> {
    let mut params = arch::default_params(version);
    if let Some(best) = like.and_then(|c| arch::infer_checkpoint(c).best) {
        if best.params.latent_dim > 0 {
            params.latent_dim = best.params.latent_dim;
        }
        if best.params.hidden_dim > 0 && params.hidden_dim > 0 {
            params.hidden_dim = best.params.hidden_dim;
        }
    }
    Side::Layout {
        label: format!(
            "layout {} ({})",
            arch::version(version).display,
            params.summary()
        ),
        keys: arch::expected_layout(version, &params),
    }
}

/// The layout a training config builds, for `diff A --config X.yaml`. `None` when the
/// config names no model class tvck knows.
pub fn config_side(cfg: &crate::config::TrainingConfig) -> Option<Side<'static>> {
    let layout = arch::resolve_config(&cfg.hints())?;
    Some(Side::Layout {
        label: format!(
            "{} → {} ({})",
            cfg.path.display(),
            layout.version.display_name(),
            layout.params.summary()
        ),
        keys: arch::expected_layout(layout.version, &layout.params),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching() {
        assert!(matches_prefix("encoder_A.fc_mu.weight", "encoder_A"));
        assert!(matches_prefix("encoder_A.fc_mu.weight", "encoder_A."));
        assert!(matches_prefix("encoder_A.fc_mu.weight", "encoder_A.fc_mu"));
        assert!(!matches_prefix("encoder_AB.x", "encoder_A"));
        assert!(matches_prefix("x", "x"));
    }

    #[test]
    fn half_precision_decoding() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert!(f16_to_f64(0x7c00).is_infinite());
        assert!(f16_to_f64(0x7e00).is_nan());
        let bf = to_f64(&[0x80, 0x3f], DType::BF16).unwrap();
        assert_eq!(bf, vec![1.0]);
        assert!(to_f64(&[0; 8], DType::C64).is_err());
    }

    #[test]
    fn layouts_compare_by_shape() {
        let a = Side::Layout {
            label: "a".into(),
            keys: vec![
                ("x".into(), vec![2]),
                ("y".into(), vec![3]),
                ("z".into(), vec![1]),
            ],
        };
        let b = Side::Layout {
            label: "b".into(),
            keys: vec![
                ("x".into(), vec![2]),
                ("y".into(), vec![4]),
                ("w".into(), vec![1]),
            ],
        };
        let r = diff(&a, &b, None);
        assert_eq!(r.counts.shape_match, 1);
        assert_eq!(r.counts.shape_mismatch, 1);
        assert_eq!(r.counts.only_in_a, 1);
        assert_eq!(r.counts.only_in_b, 1);
        assert!(r.has_differences());
        let r = diff(&a, &b, Some("x"));
        assert_eq!(r.keys.len(), 1);
        assert!(!r.has_differences());
    }
}
