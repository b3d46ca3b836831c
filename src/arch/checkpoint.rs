//! Version inference for an opened checkpoint: its model-state keys and shapes, with the
//! metadata it stores (`config.model`) as hints.

use serde::{Deserialize, Serialize};

use crate::format::{Checkpoint, ModelStateRef};

use super::infer::infer_best;
use super::{infer, Hints, Inference, KeyShape, Mismatch};

/// The version inferred for a checkpoint, as reports show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionGuess {
    /// Catalog id (`v5_12_4`).
    pub version: String,
    /// Display name (`v5.12.4`).
    pub display: String,
    /// 0..1; 1.0 when every key and shape fits the layout.
    pub confidence: f64,
    /// Hyper-parameters read back from the shapes (`L16 H64 dual 2L drop ctrl improved`).
    pub layout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Keys the layout has and the file lacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<KeyShape>,
    /// Keys the file has and the layout lacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unexpected: Vec<KeyShape>,
    /// (key, expected shape, actual shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatched: Vec<Mismatch>,
}

/// The model state's (key, shape) list, in file order.
pub fn state_shapes(ckpt: &Checkpoint) -> Vec<KeyShape> {
    borrowed_shapes(ckpt, ckpt.model_state_ref().as_ref())
        .into_iter()
        .map(|(k, s)| (k.to_string(), s.to_vec()))
        .collect()
}

/// The model state's (key, shape) list borrowed from the checkpoint.
fn borrowed_shapes<'a>(
    ckpt: &'a Checkpoint,
    model_state: Option<&ModelStateRef<'a>>,
) -> Vec<(&'a str, &'a [u64])> {
    model_state
        .map(|ms| {
            ms.entries
                .iter()
                .map(|&(k, i)| (k, ckpt.tensors[i].shape.as_slice()))
                .collect()
        })
        .unwrap_or_default()
}

/// Full inference for a checkpoint.
pub fn infer_checkpoint(ckpt: &Checkpoint) -> Inference {
    infer_checkpoint_with(ckpt, ckpt.model_state_ref().as_ref())
}

fn infer_checkpoint_with(ckpt: &Checkpoint, model_state: Option<&ModelStateRef<'_>>) -> Inference {
    infer(
        &borrowed_shapes(ckpt, model_state),
        &Hints::from_checkpoint(&ckpt.root),
    )
}

/// The best version for a checkpoint, or `None` when no TernaryVAE layout fits.
pub fn guess_checkpoint(ckpt: &Checkpoint) -> Option<VersionGuess> {
    guess_checkpoint_with(ckpt, ckpt.model_state_ref().as_ref())
}

/// [`guess_checkpoint`] for an already computed model state.
pub fn guess_checkpoint_with(
    ckpt: &Checkpoint,
    model_state: Option<&ModelStateRef<'_>>,
) -> Option<VersionGuess> {
    let inf = infer_best(
        &borrowed_shapes(ckpt, model_state),
        &Hints::from_checkpoint(&ckpt.root),
    );
    let note = inf.note();
    let best = inf.best?;
    Some(VersionGuess {
        version: best.version.as_str().to_string(),
        display: best.display.to_string(),
        confidence: best.confidence,
        layout: best.summary(),
        note,
        missing: best.missing,
        unexpected: best.unexpected,
        mismatched: best.mismatched,
    })
}
