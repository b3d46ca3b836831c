//! Version inference for an opened checkpoint: its model-state keys and shapes, with the
//! metadata it stores (`config.model`) as hints.

use serde::{Deserialize, Serialize};

use crate::format::{Checkpoint, ModelStateRef};

use super::infer::infer_best;
use super::{infer, Hints, Inference, KeyComparison, KeyShape};

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
    /// The layout's keys against the file's (JSON: `missing`, `unexpected` and
    /// `mismatched`, each left out when empty; not `matched`).
    #[serde(flatten, with = "differences")]
    pub keys: KeyComparison,
}

/// [`VersionGuess::keys`] in JSON: the three lists of differences (the reports' shape since
/// the first version); the matched count is not written and reads back as 0.
mod differences {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::arch::{KeyComparison, KeyShape, SizeMismatch};

    #[derive(Serialize)]
    struct Written<'a> {
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        missing: &'a [KeyShape],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        unexpected: &'a [KeyShape],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        mismatched: &'a [SizeMismatch],
    }

    #[derive(Deserialize)]
    struct Read {
        #[serde(default)]
        missing: Vec<KeyShape>,
        #[serde(default)]
        unexpected: Vec<KeyShape>,
        #[serde(default)]
        mismatched: Vec<SizeMismatch>,
    }

    pub fn serialize<S: Serializer>(k: &KeyComparison, s: S) -> Result<S::Ok, S::Error> {
        Written {
            missing: &k.missing,
            unexpected: &k.unexpected,
            mismatched: &k.mismatched,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyComparison, D::Error> {
        let x = Read::deserialize(d)?;
        Ok(KeyComparison {
            matched: 0,
            missing: x.missing,
            unexpected: x.unexpected,
            mismatched: x.mismatched,
        })
    }
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
        keys: best.keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::SizeMismatch;

    #[test]
    fn json_has_the_three_lists_only_when_not_empty() {
        let mut g = VersionGuess {
            version: "v5_12".into(),
            display: "v5.12".into(),
            confidence: 0.9,
            layout: "L16".into(),
            note: None,
            keys: KeyComparison {
                matched: 7,
                ..KeyComparison::default()
            },
        };
        let j = serde_json::to_value(&g).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"version": "v5_12", "display": "v5.12", "confidence": 0.9, "layout": "L16"})
        );
        g.keys.mismatched = vec![SizeMismatch::new("p", vec![64, 64], vec![16, 64])];
        g.keys.missing = vec![("m".into(), vec![2])];
        let j = serde_json::to_value(&g).unwrap();
        assert_eq!(
            j["mismatched"],
            serde_json::json!([["p", [64, 64], [16, 64]]])
        );
        assert_eq!(j["missing"], serde_json::json!([["m", [2]]]));
        assert!(j.get("unexpected").is_none() && j.get("matched").is_none());
        let back: VersionGuess = serde_json::from_value(j).unwrap();
        g.keys.matched = 0;
        assert_eq!(back, g);
    }
}
